//! HTTP mode over a real socket: any path, POST only, body limit, keep-alive, graceful shutdown.

use crate::helpers::{Backend, TestApp};
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::oneshot;

struct Running {
    url: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(svc: Arc<wafer_scf::service::Service>) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(wafer_scf::serve::serve(listener, svc, async {
        let _ = rx.await;
    }));
    Running { url: format!("http://{addr}"), stop: Some(tx), task }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_are_answered_on_any_path_over_a_real_socket() {
    let t = TestApp::new(Backend::Sqlite).await;
    t.add_app("wx_http", "s").await;
    let mut running = start(t.svc.clone()).await;
    let client = reqwest::Client::new();

    let login_body = json!({"version": 1, "componentName": "MA",
        "interface": {"interfaceName": "qcloud.cam.id_skey", "para": {"appid": "wx_http", "code": t.wx.code_for("lee")}}});
    let resp =
        client.post(format!("{}/release/mina_auth/", running.url)).json(&login_body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let text = resp.text().await.unwrap();
    assert!(
        text.starts_with(r#"{"returnCode":0,"returnMessage":"NEW_SESSION_SUCCESS","returnData":{"id":"#),
        "{text}"
    );
    let login: Value = serde_json::from_str(&text).unwrap();

    // Same dispatcher, same bytes: an auth through HTTP equals one through the service directly.
    let auth_body = json!({"interface": {"interfaceName": "qcloud.cam.auth",
        "para": {"id": login["returnData"]["id"], "skey": login["returnData"]["skey"]}}});
    for path in ["/", "/mina_auth", "/a/b/c?x=1"] {
        let r =
            client.post(format!("{}{path}", running.url)).body(auth_body.to_string()).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let direct = t.svc.handle(auth_body.to_string().as_bytes(), &Default::default()).await;
        assert_eq!(r.bytes().await.unwrap().to_vec(), direct.to_bytes(), "path {path}");
    }

    // COS signatures answer over HTTP too (v4 with caller keys, v5 with server-held keys).
    t.store
        .put_cos_key(&wafer_scf::store::CosKeyRecord {
            appid: "1250000000".into(),
            secret_id: "AKIDhttp".into(),
            secret_key: "http-secret".into(),
            created_at: 0,
            updated_at: 0,
        })
        .await
        .unwrap();
    let v4 = crate::helpers::post_envelope(
        &client,
        &running.url,
        "qcloud.cos.auth.nonreusable",
        json!({"appid": "1250000000", "sid": "AKIDx", "skey": "k", "bucket": "photos", "filepath": "a.jpg"}),
    )
    .await;
    assert_eq!(v4["returnCode"], 0, "{v4}");
    assert!(v4["returnData"].as_str().unwrap().len() > 40);
    let v5 = crate::helpers::post_envelope(
        &client,
        &running.url,
        "qcloud.cos.auth.v5",
        json!({"appid": "1250000000", "bucket": "photos-1250000000", "region": "ap-guangzhou", "method": "GET", "path": "/a.jpg"}),
    )
    .await;
    assert_eq!(v5["returnCode"], 0, "{v5}");
    assert!(v5["returnData"]["url"]
        .as_str()
        .unwrap()
        .starts_with("https://photos-1250000000.cos.ap-guangzhou.myqcloud.com/a.jpg?"));

    // Business errors are HTTP 200 with an envelope.
    let r = client.post(&running.url).body("not json").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["returnCode"], 1009);

    // Wrong method: 405 with an envelope body.
    let r = client.get(format!("{}/mina_auth", running.url)).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.json::<Value>().await.unwrap()["returnCode"], 1009);
    assert_eq!(client.get(format!("{}/healthz", running.url)).send().await.unwrap().status(), 200);

    // Over the body limit: 413 with an envelope, and the server is still healthy.
    let big = "x".repeat(200 * 1024);
    let r = client.post(&running.url).body(big).send().await.unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers()["connection"], "close", "the socket is not reused after an oversized body");
    assert_eq!(r.json::<Value>().await.unwrap()["returnCode"], 1020);

    // Many concurrent keep-alive requests.
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let (client, url, body) = (client.clone(), running.url.clone(), auth_body.to_string());
        tasks.push(tokio::spawn(async move {
            client.post(url).body(body).send().await.unwrap().json::<Value>().await.unwrap()["returnCode"]
                .as_i64()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), Some(0));
    }

    running.stop.take().unwrap().send(()).unwrap();
    running.task.await.unwrap().unwrap();
    assert!(client.post(&running.url).body("{}").send().await.is_err(), "closed after shutdown");
}
