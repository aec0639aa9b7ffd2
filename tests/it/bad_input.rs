//! A table of hostile and malformed requests: each gets the right return code in a well-formed envelope,
//! nothing panics, and storage is unchanged afterwards.

use crate::both_backends;
use crate::helpers::{code, Backend, TestApp};
use serde_json::{json, Value};

const APP: &str = "wx_bad_input";

const INJECTIONS: &[&str] = &[
    "\" or 1=1 #",
    "' OR '1'='1",
    "1; DROP TABLE wafer_sessions; --",
    "') UNION SELECT secret FROM wafer_apps -- ",
    "\\'; DELETE FROM wafer_apps; #",
    "%' OR 1=1 LIMIT 1 -- ",
];

fn envelope(iface: &str, para: Value) -> Vec<u8> {
    crate::helpers::envelope(iface, para).to_string().into_bytes()
}

async fn every_bad_input_gets_its_code_and_storage_is_unchanged(b: Backend) {
    let t = TestApp::new(b).await;
    t.add_app(APP, "the-secret").await;
    let live = t.login(APP, "kim").await;
    let apps_before = t.store.registry.list_apps().await.unwrap();
    let session_before = t.store.sessions.get_session(live["id"].as_str().unwrap()).await.unwrap();

    let mut cases: Vec<(String, Vec<u8>, i64)> = vec![
        ("empty body".into(), b"".to_vec(), 1009),
        ("not json".into(), b"hello".to_vec(), 1009),
        ("truncated json".into(), b"{\"interface\":".to_vec(), 1009),
        ("invalid utf-8".into(), vec![b'{', 0xff, 0xfe, b'}'], 1009),
        ("null".into(), b"null".to_vec(), 1009),
        ("array".into(), b"[1,2,3]".to_vec(), 1009),
        ("number".into(), b"42".to_vec(), 1009),
        ("string".into(), b"\"qcloud.cam.auth\"".to_vec(), 1009),
        ("no interface".into(), b"{\"version\":1}".to_vec(), 1002),
        ("interface not object".into(), b"{\"interface\":\"qcloud.cam.auth\"}".to_vec(), 1002),
        ("interfaceName missing".into(), b"{\"interface\":{\"para\":{}}}".to_vec(), 1002),
        ("interfaceName number".into(), b"{\"interface\":{\"interfaceName\":7,\"para\":{}}}".to_vec(), 1002),
        (
            "interfaceName empty".into(),
            b"{\"interface\":{\"interfaceName\":\"\",\"para\":{}}}".to_vec(),
            1002,
        ),
        ("para missing".into(), b"{\"interface\":{\"interfaceName\":\"qcloud.cam.auth\"}}".to_vec(), 1011),
        (
            "para string".into(),
            b"{\"interface\":{\"interfaceName\":\"qcloud.cam.auth\",\"para\":\"x\"}}".to_vec(),
            1011,
        ),
        (
            "para array".into(),
            b"{\"interface\":{\"interfaceName\":\"qcloud.cam.auth\",\"para\":[]}}".to_vec(),
            1011,
        ),
        ("unknown interface".into(), envelope("qcloud.cam.nope", json!({})), 1010),
        ("code missing".into(), envelope("qcloud.cam.id_skey", json!({"appid": APP})), 1003),
        ("code empty".into(), envelope("qcloud.cam.id_skey", json!({"appid": APP, "code": ""})), 1003),
        ("code number".into(), envelope("qcloud.cam.id_skey", json!({"appid": APP, "code": 123})), 1003),
        ("code object".into(), envelope("qcloud.cam.id_skey", json!({"appid": APP, "code": {"a": 1}})), 1003),
        (
            "code too long".into(),
            envelope("qcloud.cam.id_skey", json!({"appid": APP, "code": "c".repeat(5000)})),
            1003,
        ),
        ("appid array".into(), envelope("qcloud.cam.id_skey", json!({"appid": [APP], "code": "c"})), 1003),
        (
            "appid with a trailing space".into(),
            envelope("qcloud.cam.id_skey", json!({"appid": format!("{APP} "), "code": "c"})),
            1003,
        ),
        (
            "id with a newline".into(),
            envelope(
                "qcloud.cam.auth",
                json!({"id": format!("{}\n", live["id"].as_str().unwrap()), "skey": live["skey"]}),
            ),
            1003,
        ),
        (
            "appid too long".into(),
            envelope("qcloud.cam.id_skey", json!({"appid": "w".repeat(65), "code": "c"})),
            1003,
        ),
        ("id missing".into(), envelope("qcloud.cam.auth", json!({"skey": "s"})), 1003),
        ("skey missing".into(), envelope("qcloud.cam.auth", json!({"id": "i"})), 1003),
        ("id number".into(), envelope("qcloud.cam.auth", json!({"id": 5, "skey": "s"})), 1003),
        ("skey null".into(), envelope("qcloud.cam.auth", json!({"id": "i", "skey": null})), 1003),
        (
            "skey too long".into(),
            envelope("qcloud.cam.auth", json!({"id": "i", "skey": "s".repeat(10_000)})),
            1003,
        ),
        (
            "decrypt without iv".into(),
            envelope(
                "qcloud.cam.decrypt",
                json!({"id": live["id"], "skey": live["skey"], "encrypt_data": "x"}),
            ),
            1003,
        ),
        (
            "userinfo without data".into(),
            envelope("qcloud.cam.userinfo", json!({"id": live["id"], "skey": live["skey"], "iv": "x"})),
            1003,
        ),
        (
            "decrypt garbage".into(),
            envelope(
                "qcloud.cam.decrypt",
                json!({"id": live["id"], "skey": live["skey"], "encrypt_data": "!!!", "iv": "???"}),
            ),
            60021,
        ),
        (
            "deep nesting".into(),
            format!("{{\"interface\":{}{}}}", "[".repeat(5000), "]".repeat(5000)).into_bytes(),
            1020,
        ),
        (
            "body over the limit".into(),
            envelope("qcloud.cam.auth", json!({"id": "i", "skey": "s", "pad": "p".repeat(70_000)})),
            1020,
        ),
    ];
    for (i, inj) in INJECTIONS.iter().enumerate() {
        // Identifiers with spaces are refused at the edge (1003); space-free ones reach storage as bound
        // parameters and simply match nothing.
        let ident_code = |unknown: i64| if inj.contains(' ') { 1003 } else { unknown };
        cases.push((format!("injection {i} as interfaceName"), envelope(inj, json!({})), 1010));
        cases.push((
            format!("injection {i} in id"),
            envelope("qcloud.cam.auth", json!({"id": inj, "skey": live["skey"]})),
            ident_code(60012),
        ));
        cases.push((
            format!("injection {i} in skey"),
            envelope("qcloud.cam.auth", json!({"id": live["id"], "skey": inj})),
            ident_code(60012),
        ));
        cases.push((
            format!("injection {i} in auth appid"),
            envelope("qcloud.cam.auth", json!({"id": live["id"], "skey": live["skey"], "appid": inj})),
            ident_code(60012),
        ));
        cases.push((
            format!("injection {i} in login appid"),
            envelope("qcloud.cam.id_skey", json!({"appid": inj, "code": "c"})),
            ident_code(1012),
        ));
        cases.push((
            format!("injection {i} in code"),
            envelope("qcloud.cam.id_skey", json!({"appid": APP, "code": inj})),
            ident_code(40029),
        ));
        cases.push((
            format!("injection {i} in encrypt_data"),
            envelope(
                "qcloud.cam.decrypt",
                json!({"id": live["id"], "skey": live["skey"], "encrypt_data": inj, "iv": inj}),
            ),
            60021,
        ));
        cases.push((
            format!("injection {i} in userinfo id"),
            envelope("qcloud.cam.userinfo", json!({"id": inj, "skey": inj, "encrypt_data": inj, "iv": inj})),
            ident_code(60012),
        ));
    }

    for (name, body, want) in &cases {
        let r = t.raw(body).await;
        assert_eq!(code(&r), *want, "{name}: {r}");
        assert_eq!(r["returnData"], "", "{name}: error data is the empty string");
        assert_eq!(r["version"], 1);
        assert_eq!(r["componentName"], "MA");
        assert!(r["returnMessage"].is_string());
        let msg = r["returnMessage"].as_str().unwrap();
        for inj in INJECTIONS {
            assert!(!msg.contains(inj), "{name}: the message must not echo the request");
        }
    }

    assert_eq!(t.store.registry.list_apps().await.unwrap(), apps_before, "apps unchanged");
    let session_after = t.store.sessions.get_session(live["id"].as_str().unwrap()).await.unwrap();
    assert_eq!(session_after, session_before, "the live session unchanged");
    assert_eq!(code(&t.auth(&live).await), 0, "and still valid");
}

both_backends!(every_bad_input_gets_its_code_and_storage_is_unchanged);
