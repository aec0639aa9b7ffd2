//! The READMEs' shell examples, run as a reader would: every `curl` line of both READMEs (continuations joined),
//! against a real server process and the fake WeChat, with only the README's CAPITALISED placeholders and
//! `localhost:8080/8081` replaced. Each must answer success — an envelope with `returnCode` 0, WeChat's JSON with
//! no error, or the file it names.

use crate::cli::{run_ok, spawn_server, terminate, wafer};
use crate::fake_wechat::FakeWeChat;
use crate::helpers::{encrypt_for_tests, post_envelope};
use serde_json::{json, Value};

const APPID: &str = "wx1234567890abcdef";
const CORPID: &str = "ww0123456789abcdef";
const SECRET: &str = "readme-app-secret";
const AGENT_SECRET: &str = "readme-agent-secret";
const ADMIN: &str = "readme-admin-token-0123456789abcdef";
const IV: &str = "r7BXXKkLb8qrSNn05n0qiA==";

/// The `curl` commands in a README's `sh` blocks.
fn curl_examples(readme: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in readme.lines() {
        if line.starts_with("```") {
            in_sh = line.trim() == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        let joined = if pending.is_empty() { line.to_owned() } else { format!("{pending} {}", line.trim()) };
        if let Some(head) = joined.strip_suffix('\\') {
            pending = head.trim_end().to_owned();
            continue;
        }
        pending.clear();
        if joined.trim_start().starts_with("curl ") {
            out.push(joined.trim().to_owned());
        }
    }
    out
}

#[tokio::test]
async fn every_curl_example_in_both_readmes_works() {
    let wx = FakeWeChat::start().await;
    wx.register(APPID, SECRET);
    wx.register(CORPID, AGENT_SECRET);
    let dir = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| run_ok(wafer(dir.path()).args(args));
    cli(&["app", "add", "--appid", APPID, "--secret", SECRET]);
    cli(&["agent", "add", "--corpid", CORPID, "--agentid", "1000002", "--secret", AGENT_SECRET]);
    cli(&[
        "cos",
        "add",
        "--appid",
        "1250000000",
        "--secret-id",
        "AKIDreadme",
        "--secret-key",
        "readme-cos-key",
    ]);
    let out = cli(&["key", "add", "--name", "web", "--all"]);
    let key = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(key.starts_with("wk_"), "key add prints the key alone on stdout (KEY=$(…) works): {key}");
    let env = [
        ("WAFER_WECHAT_BASE_URL", wx.base_url.as_str()),
        ("WAFER_WECOM_BASE_URL", wx.base_url.as_str()),
        ("WAFER_ADMIN_TOKEN", ADMIN),
        ("WAFER_TOKEN_HOST", "1"),
    ];
    let (mut server, url) = spawn_server(dir.path(), &env, false).await;
    let host = url.trim_start_matches("http://").trim_end_matches('/').to_owned();

    // What a reader has at hand: a session, a WeRun blob for it, the current token.
    let http = reqwest::Client::new();
    let login =
        post_envelope(&http, &url, "qcloud.cam.id_skey", json!({"code": wx.code_for("o_readme")})).await;
    assert_eq!(login["returnCode"], 0, "{login}");
    let (id, skey) =
        (login["returnData"]["id"].as_str().unwrap(), login["returnData"]["skey"].as_str().unwrap());
    let werun = json!({"stepInfoList": [{"timestamp": 1, "step": 100}], "watermark": {"appid": APPID, "timestamp": 1}});
    let blob = encrypt_for_tests(&wx.session_key("o_readme"), IV, werun.to_string().as_bytes()).unwrap();
    let token = http
        .post(&url)
        .header("X-Wafer-Key", &key)
        .json(&crate::helpers::envelope("qcloud.mimi.access_token", json!({"appid": APPID})))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["returnData"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut ran = 0;
    for readme in ["README.md", "README.zh-CN.md"] {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/").to_owned() + readme).unwrap();
        let examples = curl_examples(&text);
        assert!(examples.len() >= 3, "{readme}: examples found: {examples:?}");
        for example in examples {
            let command = example
                .replace("localhost:8080", &host)
                .replace("localhost:8081", &host)
                .replace("CODE_FROM_WX_LOGIN", &wx.code_for("o_readme_example"))
                .replace("ID_FROM_LOGIN", id)
                .replace("SKEY_FROM_LOGIN", skey)
                .replace("ENCRYPTED_DATA", &blob)
                .replace("\"IV\"", &format!("\"{IV}\""))
                .replace("THE_BAD_TOKEN", &token)
                .replace("AGENT_SECRET", AGENT_SECRET);
            let work = dir.path().to_owned();
            let (key, command2) = (key.clone(), command.clone());
            let out = tokio::task::spawn_blocking(move || {
                std::process::Command::new("bash")
                    .arg("-c")
                    .arg(&command2)
                    .current_dir(work)
                    .env("KEY", key)
                    .env("SECRET", SECRET)
                    .env("WAFER_ADMIN_TOKEN", ADMIN)
                    .output()
                    .unwrap()
            })
            .await
            .unwrap();
            assert!(out.status.success(), "{readme}: {example}\n{}", String::from_utf8_lossy(&out.stderr));
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            if let Some(file) = command.split(" -o ").nth(1).and_then(|r| r.split_whitespace().next()) {
                let bytes = std::fs::read(dir.path().join(file)).unwrap();
                assert!(bytes.starts_with(b"\x89PNG"), "{readme}: {example}: the file WeChat sent");
            } else {
                let reply: Value = serde_json::from_str(&stdout)
                    .unwrap_or_else(|_| panic!("{readme}: {example}\nnot JSON: {stdout}"));
                let failed = reply.get("returnCode").is_some_and(|c| c != 0)
                    || reply.get("errcode").is_some_and(|c| c != 0);
                assert!(!failed, "{readme}: {example}\n→ {reply}");
            }
            ran += 1;
        }
    }
    assert!(ran >= 15, "{ran} examples run");
    assert!(terminate(&mut server).success());
}
