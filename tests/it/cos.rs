//! COS signatures through the dispatcher on both backends: v4 byte layout and HMAC, fileid encoding, every
//! validation error, server-held keys, and v5 presigned URLs.

use crate::both_backends;
use crate::helpers::{code, Backend, TestApp, T0};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::json;
use wafer_scf::store::CosKeyRecord;

const TAPPID: &str = "1250000000";
const SID: &str = "AKIDexampleSecretId0000000000000000";
const SKEY: &str = "exampleSecretKey0000000000000000";

fn decode(sig: &str) -> (Vec<u8>, String) {
    let raw = base64::engine::general_purpose::STANDARD.decode(sig).unwrap();
    (raw[..20].to_vec(), String::from_utf8(raw[20..].to_vec()).unwrap())
}

fn hmac_ok(mac: &[u8], key: &str, original: &str) -> bool {
    let mut m = Hmac::<sha1::Sha1>::new_from_slice(key.as_bytes()).unwrap();
    m.update(original.as_bytes());
    m.verify_slice(mac).is_ok()
}

async fn hold_keys(t: &TestApp) {
    t.store
        .registry
        .put_cos_key(&CosKeyRecord {
            appid: TAPPID.parse().unwrap(),
            secret_id: SID.into(),
            secret_key: SKEY.into(),
            created_at: T0,
            updated_at: T0,
        })
        .await
        .unwrap();
}

async fn v4_signatures_have_the_seed_layout(b: Backend) {
    let t = TestApp::new(b).await;
    let r = t
        .call(
            "qcloud.cos.auth.reusable",
            json!({"appid": TAPPID, "sid": SID, "skey": SKEY, "bucket": "photos", "expiration": T0 + 3600}),
        )
        .await;
    assert_eq!(code(&r), 0, "{r}");
    assert_eq!(r["returnMessage"], "OK");
    let (mac, original) = decode(r["returnData"].as_str().unwrap());
    let prefix = format!("a={TAPPID}&b=photos&k={SID}&e={}&t={T0}&r=", T0 + 3600);
    assert!(original.starts_with(&prefix), "{original}");
    let rand = original[prefix.len()..].strip_suffix("&f=").unwrap();
    assert!(!rand.is_empty() && rand.len() <= 10 && rand.bytes().all(|c| c.is_ascii_digit()), "{rand}");
    assert!(hmac_ok(&mac, SKEY, &original));

    let r = t
        .call("qcloud.cos.auth.nonreusable", json!({"appid": TAPPID, "sid": SID, "skey": SKEY, "bucket": "photos", "filepath": "用户/头像 1.png"}))
        .await;
    assert_eq!(code(&r), 0, "{r}");
    let (mac, original) = decode(r["returnData"].as_str().unwrap());
    assert!(original.contains("&e=0&"), "{original}");
    assert!(
        original.ends_with(&format!("&f=/{TAPPID}/photos/%E7%94%A8%E6%88%B7/%E5%A4%B4%E5%83%8F%201.png")),
        "{original}"
    );
    assert!(hmac_ok(&mac, SKEY, &original));

    // Reusable bound to a file.
    let r = t
        .call("qcloud.cos.auth.reusable", json!({"appid": TAPPID, "sid": SID, "skey": SKEY, "bucket": "photos", "expiration": (T0 + 60).to_string(), "filepath": "/a.jpg"}))
        .await;
    let (_, original) = decode(r["returnData"].as_str().unwrap());
    assert!(original.ends_with(&format!("&f=/{TAPPID}/photos/a.jpg")), "{original}");
}

async fn server_held_keys_sign_when_the_caller_sends_none(b: Backend) {
    let t = TestApp::new(b).await;
    let para = json!({"appid": TAPPID, "bucket": "photos", "expiration": T0 + 60});
    let r = t.call("qcloud.cos.auth.reusable", para.clone()).await;
    assert_eq!(code(&r), -1, "no keys held yet: {r}");
    hold_keys(&t).await;
    let r = t.call("qcloud.cos.auth.reusable", para).await;
    assert_eq!(code(&r), 0, "{r}");
    let (mac, original) = decode(r["returnData"].as_str().unwrap());
    assert!(original.contains(&format!("&k={SID}&")));
    assert!(hmac_ok(&mac, SKEY, &original));
    assert!(!r.to_string().contains(SKEY));

    // A Host header from the caller does not change the signed host.
    let mut p = json!({"appid": TAPPID, "bucket": "examplebucket-1250000000", "region": "ap-beijing", "method": "GET", "path": "/a"});
    p["headers"] = json!({"Host": "attacker.example.com"});
    let r = t.call("qcloud.cos.auth.v5", p).await;
    assert_eq!(code(&r), 0, "{r}");
    let url = r["returnData"]["url"].as_str().unwrap();
    assert!(url.starts_with("https://examplebucket-1250000000.cos.ap-beijing.myqcloud.com/a?"), "{url}");
    let own = [("host".to_string(), "examplebucket-1250000000.cos.ap-beijing.myqcloud.com".to_string())];
    let expected = wafer_scf::crypto::cos::v5_sign(
        SID,
        SKEY,
        &wafer_scf::crypto::cos::V5 {
            method: "GET",
            path: "/a",
            params: &[],
            headers: &own,
            start: T0 as u64,
            end: T0 as u64 + 600,
        },
    );
    assert_eq!(
        r["returnData"]["authorization"],
        expected.authorization.as_str(),
        "signed for the derived host"
    );
}

async fn every_bad_cos_parameter_is_minus_one(b: Backend) {
    let t = TestApp::new(b).await;
    let base = json!({"appid": TAPPID, "sid": SID, "skey": SKEY, "bucket": "photos", "expiration": T0 + 60});
    let with = |k: &str, v: serde_json::Value| {
        let mut p = base.clone();
        p[k] = v;
        p
    };
    let without = |k: &str| {
        let mut p = base.clone();
        p.as_object_mut().unwrap().remove(k);
        p
    };
    let cases = vec![
        ("expiration in the past", with("expiration", json!(T0 - 1))),
        ("expiration now", with("expiration", json!(T0))),
        ("expiration over 90 days", with("expiration", json!(T0 + 90 * 86_400 + 1))),
        ("expiration missing", without("expiration")),
        ("expiration not a number", with("expiration", json!("soon"))),
        ("appid not numeric", with("appid", json!("wx123"))),
        ("appid missing", without("appid")),
        ("bucket missing", without("bucket")),
        ("bucket with a slash", with("bucket", json!("a/b"))),
        ("bucket with a space", with("bucket", json!("a b"))),
        ("sid without skey", without("skey")),
        ("skey without sid", without("sid")),
        ("sid not a string", with("sid", json!(5))),
        ("filepath with a control char", with("filepath", json!("a\u{7}b"))),
        ("filepath too long", with("filepath", json!("x".repeat(2000)))),
    ];
    for (name, para) in cases {
        let r = t.call("qcloud.cos.auth.reusable", para).await;
        assert_eq!(code(&r), -1, "{name}: {r}");
        assert_eq!(r["returnData"], "");
        assert!(r["returnMessage"].as_str().unwrap().contains("para."), "{name}: names the field");
    }
    let r = t
        .call(
            "qcloud.cos.auth.nonreusable",
            json!({"appid": TAPPID, "sid": SID, "skey": SKEY, "bucket": "photos"}),
        )
        .await;
    assert_eq!(code(&r), -1, "a one-time signature needs a file");
    assert!(r["returnMessage"].as_str().unwrap().contains("filepath"));
    // The maximum lifetime itself is fine.
    assert_eq!(
        code(&t.call("qcloud.cos.auth.reusable", with("expiration", json!(T0 + 90 * 86_400))).await),
        0
    );
}

async fn v5_presigned_urls_use_server_held_keys(b: Backend) {
    let t = TestApp::new(b).await;
    let para = json!({"appid": TAPPID, "bucket": "examplebucket-1250000000", "region": "ap-beijing", "method": "put",
        "path": "/uploads/照片 1.jpg", "query": {"uploadId": "abc"}, "headers": {"Content-Type": "image/jpeg"}, "expires": 900});
    let r = t.call("qcloud.cos.auth.v5", para.clone()).await;
    assert_eq!(code(&r), -1, "server-held keys only: {r}");
    hold_keys(&t).await;
    let r = t.call("qcloud.cos.auth.v5", para).await;
    assert_eq!(code(&r), 0, "{r}");
    let d = &r["returnData"];
    assert_eq!(d["expires_at"], T0 + 900);
    let auth = d["authorization"].as_str().unwrap();
    assert!(
        auth.starts_with(&format!("q-sign-algorithm=sha1&q-ak={SID}&q-sign-time={T0};{}&", T0 + 900)),
        "{auth}"
    );
    assert!(auth.contains("&q-header-list=content-type;host&q-url-param-list=uploadid&"), "{auth}");
    let headers = vec![
        ("Content-Type".to_string(), "image/jpeg".to_string()),
        ("host".to_string(), "examplebucket-1250000000.cos.ap-beijing.myqcloud.com".to_string()),
    ];
    let expected = wafer_scf::crypto::cos::v5_sign(
        SID,
        SKEY,
        &wafer_scf::crypto::cos::V5 {
            method: "PUT",
            path: "/uploads/照片 1.jpg",
            params: &[("uploadId".into(), "abc".into())],
            headers: &headers,
            start: T0 as u64,
            end: T0 as u64 + 900,
        },
    );
    assert_eq!(auth, expected.authorization);
    let url = d["url"].as_str().unwrap();
    assert!(url.starts_with("https://examplebucket-1250000000.cos.ap-beijing.myqcloud.com/uploads/%E7%85%A7%E7%89%87%201.jpg?uploadId=abc&q-sign-algorithm=sha1&"), "{url}");
    assert!(url.contains(&format!("&q-signature={}", expected.signature)));
    assert!(!r.to_string().contains(SKEY));

    for (name, k, v) in [
        ("bucket without appid suffix", "bucket", json!("examplebucket")),
        ("bad method", "method", json!("PATCH")),
        ("zero expiry", "expires", json!(0)),
        ("expiry over 7 days", "expires", json!(7 * 86_400 + 1)),
        ("query not an object", "query", json!("a=b")),
        ("header value not a string", "headers", json!({"x": {"y": 1}})),
        ("region with a slash", "region", json!("ap/beijing")),
        ("another APPID's bucket", "bucket", json!("victim-1250000001")),
        ("a .. segment", "path", json!("/uploads/../secret.txt")),
        ("a . segment", "path", json!("/./a")),
    ] {
        let mut p = json!({"appid": TAPPID, "bucket": "examplebucket-1250000000", "region": "ap-beijing", "method": "GET", "path": "/a"});
        p[k] = v;
        assert_eq!(code(&t.call("qcloud.cos.auth.v5", p).await), -1, "{name}");
    }
}

both_backends!(
    v4_signatures_have_the_seed_layout,
    server_held_keys_sign_when_the_caller_sends_none,
    every_bad_cos_parameter_is_minus_one,
    v5_presigned_urls_use_server_held_keys,
);
