//! WeChat's own example (its guide's section 7, in `guide_example/`) in both directions, byte for byte where the
//! scheme is deterministic, and the reply checks one by one.

use super::*;
use crate::crypto::pki::RsaSigner;

const APPID: &str = "wxba6223c06417af7b";
const SYM_KEY: &str = "otUpngOjU+nVQaWJIC3D/yMLV17RKaP6t4Ot9tbnzLY=";
const SYM_SN: &str = "fa05fe1e5bcc79b81ad5ad4b58acf787";
const KEY_SN: &str = "97845f6ed842ea860df6fdf65941ff56";
const CERT_SN: &str = "79ba700ea147819f640941bceb38b1d1";
const URLPATH: &str = "https://api.weixin.qq.com/wxa/getuserriskrank";
const REQUEST_TS: i64 = 1635927954;
const REPLY_TS: i64 = 1635927956;
const PRIVATE_KEY: &str = include_str!("guide_example/private_key.pem");
const CERT: &str = include_str!("guide_example/platform_cert.pem");
const REQUEST_PLAIN: &str = include_str!("guide_example/request_plain.json");
const REQUEST_BODY: &str = include_str!("guide_example/request_body.json");
const REQUEST_SIGNATURE: &str = include_str!("guide_example/request_signature.txt");
const REPLY_BODY: &str = include_str!("guide_example/reply_body.json");
const REPLY_SIGNATURE: &str = include_str!("guide_example/reply_signature.txt");
const REPLY_PLAIN: &str = include_str!("guide_example/reply_plain.json");

fn keys() -> SecureKeys {
    let certs = [(CERT_SN.to_owned(), CERT.to_owned())];
    SecureKeys::parse(APPID, SYM_KEY, SYM_SN, PRIVATE_KEY, KEY_SN, &certs).unwrap()
}

fn reply_headers() -> ReplyHeaders {
    ReplyHeaders {
        appid: Some(APPID.into()),
        timestamp: Some(REPLY_TS.to_string()),
        serial: Some(CERT_SN.into()),
        signature: Some(REPLY_SIGNATURE.into()),
        ..Default::default()
    }
}

#[test]
fn the_guides_request_is_reproduced_byte_for_byte() {
    let keys = keys();
    let plain: Map<String, Value> = serde_json::from_str(REQUEST_PLAIN).unwrap();
    let nonce = plain["_n"].as_str().unwrap();
    let iv: [u8; 12] = STANDARD.decode("fmW/zNxXlytUZBgj").unwrap().try_into().unwrap();
    // The API's own fields; the scheme's are added by seal_request (a caller's own `_appid` is dropped).
    let mut fields = plain.clone();
    fields.insert("_appid".into(), Value::from("wx_forged"));
    let sealed = seal_request(&keys, URLPATH, &fields, REQUEST_TS, nonce, &iv).unwrap();
    assert_eq!(String::from_utf8(sealed.body.clone()).unwrap(), REQUEST_BODY);
    assert_eq!(sealed.body.len(), 324);
    // PSS is randomised: ours verifies with the key's public half, and so does the guide's.
    let signed = signed_string(URLPATH, APPID, REQUEST_TS, REQUEST_BODY.as_bytes());
    let public = RsaSigner::from_pem(PRIVATE_KEY).unwrap().public_key();
    let header = |name: &str| sealed.headers.iter().find(|(n, _)| *n == name).unwrap().1.clone();
    assert!(public.verify_pss(&signed, &STANDARD.decode(header("Wechatmp-Signature")).unwrap()));
    assert!(public.verify_pss(&signed, &STANDARD.decode(REQUEST_SIGNATURE).unwrap()));
    assert_eq!(header("Wechatmp-TimeStamp"), "1635927954");
    assert_eq!(header("Wechatmp-Appid"), APPID);
    assert_eq!(header("Wechatmp-Serial"), KEY_SN);
    assert!(!String::from_utf8_lossy(&signed).contains(KEY_SN), "no SN in the signed string");
}

#[test]
fn the_guides_reply_verifies_and_decrypts() {
    let keys = keys();
    let opened = open_reply(&keys, URLPATH, &reply_headers(), REPLY_BODY.as_bytes(), REPLY_TS + 10).unwrap();
    let mut expected: Map<String, Value> = serde_json::from_str(REPLY_PLAIN).unwrap();
    for k in ["_n", "_appid", "_timestamp"] {
        expected.remove(k);
    }
    assert_eq!(serde_json::from_slice::<Value>(&opened.body).unwrap(), Value::Object(expected));
    assert_eq!(opened.rotated_to, None);
    let digest = crate::crypto::sha256_hex(&signed_string(URLPATH, APPID, REPLY_TS, REPLY_BODY.as_bytes()));
    assert_eq!(digest, "f797cafd9e323df336fb427569fbe67e20d5bc96dd68a3f54d66b54e6e08bb27");
}

#[test]
fn a_reply_that_does_not_check_out_is_refused() {
    let keys = keys();
    let open = |h: &ReplyHeaders, body: &str, now: i64| open_reply(&keys, URLPATH, h, body.as_bytes(), now);
    let now = REPLY_TS;
    let tampered = REPLY_BODY.replacen("r2WDQt56", "r2WDQt57", 1);
    assert!(open(&reply_headers(), &tampered, now).unwrap_err().contains("does not verify"));
    let other_ts = ReplyHeaders { timestamp: Some((REPLY_TS + 1).to_string()), ..reply_headers() };
    assert!(open(&other_ts, REPLY_BODY, now).unwrap_err().contains("does not verify"));
    let unknown = ReplyHeaders { serial: Some("0".repeat(32)), ..reply_headers() };
    assert!(open(&unknown, REPLY_BODY, now).unwrap_err().contains("not registered"));
    let other_app = ReplyHeaders { appid: Some("wx_other".into()), ..reply_headers() };
    assert!(open(&other_app, REPLY_BODY, now).unwrap_err().contains("another app"));
    assert!(open(&reply_headers(), REPLY_BODY, now + 301).unwrap_err().contains("301 s"));
    assert!(open(&reply_headers(), REPLY_BODY, now - 301).is_err());
    let ms = ReplyHeaders { timestamp: Some("1635927956000".into()), ..reply_headers() };
    assert!(open(&ms, REPLY_BODY, now).is_err());
    // Another urlpath: the signature (and the AAD) bind the path.
    let err = open_reply(
        &keys,
        "https://api.weixin.qq.com/wxa/other",
        &reply_headers(),
        REPLY_BODY.as_bytes(),
        now,
    );
    assert!(err.is_err());
}

#[test]
fn a_rotation_accepts_the_deprecated_pair_and_names_the_new_certificate() {
    let keys = keys();
    let new_sn = "0123456789abcdef0123456789abcdef";
    let h = ReplyHeaders {
        serial: Some(new_sn.into()),
        signature: Some("bm90IGEgc2lnbmF0dXJl".into()),
        serial_deprecated: Some(CERT_SN.into()),
        signature_deprecated: Some(REPLY_SIGNATURE.into()),
        ..reply_headers()
    };
    let opened = open_reply(&keys, URLPATH, &h, REPLY_BODY.as_bytes(), REPLY_TS).unwrap();
    assert_eq!(opened.rotated_to.as_deref(), Some(new_sn));
    let bad = ReplyHeaders { signature_deprecated: Some(REQUEST_SIGNATURE.into()), ..h };
    assert!(open_reply(&keys, URLPATH, &bad, REPLY_BODY.as_bytes(), REPLY_TS).is_err());
}

#[test]
fn bad_key_material_names_the_part() {
    let certs = [(CERT_SN.to_owned(), CERT.to_owned())];
    let parse = |sym: &str, pem: &str, certs: &[(String, String)]| {
        SecureKeys::parse(APPID, sym, SYM_SN, pem, KEY_SN, certs).unwrap_err()
    };
    let short = STANDARD.encode([1u8; 16]);
    let e = parse(&short, PRIVATE_KEY, &certs);
    assert_eq!((e.part, e.reason.as_str()), (KeyPart::SymKey, "16 bytes where AES-256 takes 32"));
    assert_eq!(parse("not base64!", PRIVATE_KEY, &certs).part, KeyPart::SymKey);
    assert_eq!(parse(SYM_KEY, CERT, &certs).part, KeyPart::PrivateKey, "a certificate is not a key");
    let garbled = PRIVATE_KEY.replace("MIIEowIBAAKCAQEA3FoQ", "MIIEowIBAAKCAQEA3FoR");
    assert_eq!(parse(SYM_KEY, &garbled, &certs).part, KeyPart::PrivateKey);
    let not_cert = [(CERT_SN.to_owned(), PRIVATE_KEY.to_owned())];
    assert_eq!(parse(SYM_KEY, PRIVATE_KEY, &not_cert).part, KeyPart::Cert(0));
    let bad_sn = [(CERT_SN.to_owned(), CERT.to_owned()), ("xyz".to_owned(), CERT.to_owned())];
    assert_eq!(parse(SYM_KEY, PRIVATE_KEY, &bad_sn).part, KeyPart::CertSn(1));
    assert_eq!(parse(SYM_KEY, PRIVATE_KEY, &[]).part, KeyPart::Cert(0));
    let e = parse(&short, PRIVATE_KEY, &certs).to_string();
    assert!(e.starts_with("the symmetric key: "), "{e}");
    assert!(format!("{:?}", keys()).contains(SYM_SN) && !format!("{:?}", keys()).contains(SYM_KEY));
}

#[test]
fn the_platform_certificate_is_read() {
    let keys = keys();
    assert_eq!(keys.certs[0].cert.not_after, 1_820_047_162, "2027-09-04T08:39:22Z");
}

#[test]
fn security_layer_errors_get_a_hint() {
    let body = br#"{"errcode":40234,"errmsg":"invalid signature rid: 1"}"#;
    let hinted: Value = serde_json::from_slice(&reply::with_hint(body, 40234).unwrap()).unwrap();
    assert_eq!(hinted["errcode"], 40234);
    let msg = hinted["errmsg"].as_str().unwrap();
    assert!(msg.starts_with("invalid signature rid: 1 (wafer-scf: the signature is invalid"), "{msg}");
    assert!(reply::with_hint(br#"{"errcode":40001}"#, 40001).is_none());
    for code in (40230..=40240).chain([934011]) {
        assert!(hint(code).is_some(), "{code}");
    }
}

/// The calling thread's CPU time so far (`CLOCK_THREAD_CPUTIME_ID`): what it ran, not how long it waited.
fn thread_cpu() -> std::time::Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec through a valid pointer to a local.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0);
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The request's RSA signature is made off the calling thread, so a single-threaded runtime (an HTTP-mode lane)
/// goes on serving its other connections meanwhile. Measured in the calling thread's CPU time, which waiting and
/// preemption do not add to: sealed inline, every call would cost the thread a whole signature and the rest of the
/// call; of five calls, the cheapest must cost less than the signature alone.
#[tokio::test(flavor = "current_thread")]
async fn sealing_leaves_the_calling_thread_free() {
    let keys = Arc::new(keys());
    let fields: Map<String, Value> = serde_json::from_str(REQUEST_PLAIN).unwrap();
    // One signature's CPU time here, the least of three.
    let sign = (0..3)
        .map(|_| {
            let t = thread_cpu();
            seal_request(&keys, URLPATH, &fields, REQUEST_TS, "nonce", &[0; 12]).unwrap();
            thread_cpu() - t
        })
        .min()
        .unwrap();
    // An upstream that refuses at once (a port just freed on loopback): each call ends after sealing.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    let http = crate::wechat::relay::Relay::new(crate::wechat::UpstreamTimeouts::default()).unwrap();
    let body = serde_json::to_value(&fields).unwrap();
    let mut least = std::time::Duration::MAX;
    for _ in 0..5 {
        let out = Outgoing {
            method: &reqwest::Method::POST,
            path: "/wxa/getuserriskrank",
            query: &[],
            body: Body::Json(&body),
            headers: &[],
        };
        let t = thread_cpu();
        let result = call(&http, &base, out, "token", &keys, REQUEST_TS, "test").await;
        least = least.min(thread_cpu() - t);
        assert!(matches!(result, Err(SecureError::Upstream(_))), "{result:?}");
    }
    assert!(least < sign, "every call cost the thread {least:?} or more, against a signature's {sign:?}");
}
