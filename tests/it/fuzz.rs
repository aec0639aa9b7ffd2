//! Property tests that run in CI: at least 100,000 generated inputs per target (the envelope parser with the
//! interface parser, the gateway-event parser with the runtime reply, the decryptor, API security's reply parser). Inputs are seeded
//! mutations of valid samples plus random JSON, from a fixed-seed generator so any failure reproduces.
//! The same targets exist for coverage-guided fuzzing under `fuzz/` (cargo-fuzz).

use base64::Engine;
use serde_json::{json, Value};
use wafer_scf::envelope::{self, Envelope, Para, ReturnCode};
use wafer_scf::handlers::Interface;

const INPUTS: usize = 100_000;

/// xorshift64*: small, fast, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const ATOMS: &[&str] = &[
    "\"\"",
    "\"x\"",
    "0",
    "-1",
    "1e309",
    "18446744073709551616",
    "true",
    "false",
    "null",
    "[]",
    "{}",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"小😀\"",
    "\"' or 1=1 #\"",
    "\"qcloud.cam.auth\"",
    "\"wx1\"",
    "[[[[[]]]]]",
];
const KEYS: &[&str] = &[
    "interface",
    "interfaceName",
    "para",
    "appid",
    "code",
    "id",
    "skey",
    "encrypt_data",
    "iv",
    "force",
    "access_token",
    "corpid",
    "agentid",
    "agentsecret",
    "url",
    "noncestr",
    "timestamp",
    "type",
    "bucket",
    "sid",
    "expiration",
    "filepath",
    "region",
    "method",
    "path",
    "query",
    "headers",
    "expires",
    "admin_token",
    "body",
    "httpMethod",
    "requestContext",
    "isBase64Encoded",
    "queryString",
];

fn random_json(rng: &mut Rng, depth: usize) -> String {
    match if depth > 4 { 0 } else { rng.below(4) } {
        0 => rng.pick(ATOMS).to_string(),
        1 => {
            let n = rng.below(4);
            let items: Vec<String> = (0..n).map(|_| random_json(rng, depth + 1)).collect();
            format!("[{}]", items.join(","))
        }
        _ => {
            let n = rng.below(5);
            let items: Vec<String> =
                (0..n).map(|_| format!("\"{}\":{}", rng.pick(KEYS), random_json(rng, depth + 1))).collect();
            format!("{{{}}}", items.join(","))
        }
    }
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(v.len() + 1);
                v.insert(i, rng.next() as u8);
            }
            2 if !v.is_empty() => {
                let i = rng.below(v.len());
                v.remove(i);
            }
            3 if !v.is_empty() => {
                let i = rng.below(v.len());
                v.truncate(i);
            }
            4 => {
                let i = rng.below(v.len() + 1);
                let atom = rng.pick(ATOMS).as_bytes().to_vec();
                v.splice(i..i, atom);
            }
            _ => {
                let i = rng.below(v.len() + 1);
                let j = (i + rng.below(16)).min(v.len());
                let s = random_json(rng, 3).into_bytes();
                v.splice(i..j, s);
            }
        }
    }
    v
}

fn envelope_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    // Every interface of the one table, each with a para shaped for sessions/credentials and one for COS, so the
    // mutations reach every parser's deeper checks.
    for name in wafer_scf::handlers::interface_names() {
        let wx = json!({"appid": "wx1", "code": "c", "id": "i", "skey": "s", "encrypt_data": "AAAA", "iv": "r7BXXKkLb8qrSNn05n0qiA==",
            "corpid": "ww", "agentid": 1000002, "agentsecret": "x", "url": "https://a/", "force": "true", "bucket": "b-1",
            "region": "ap-beijing", "method": "GET", "path": "/a", "expiration": 1, "query": {"a": "b"}, "headers": {"h": "v"}});
        let cos = json!({"appid": "1250000000", "sid": "AKIDx", "skey": "k", "bucket": "b-1250000000", "filepath": "a/b.jpg",
            "region": "ap-guangzhou", "method": "PUT", "path": "/a b.jpg", "expires": 600, "access_token": "t"});
        for para in [wx, cos] {
            seeds.push(crate::helpers::envelope(name, para).to_string().into_bytes());
        }
    }
    assert_eq!(seeds.len(), 2 * wafer_scf::handlers::interface_names().count(), "every interface is fuzzed");
    seeds
}

#[test]
fn envelope_and_interface_parsers_never_panic() {
    let mut rng = Rng(0x5eed_0001);
    let seeds = envelope_seeds();
    let known: Vec<i64> = ReturnCode::ALL.iter().map(|c| c.code()).collect();
    for i in 0..INPUTS {
        let input = if i % 4 == 0 {
            random_json(&mut rng, 0).into_bytes()
        } else {
            let seed = rng.pick(&seeds).clone();
            mutate(&mut rng, &seed)
        };
        match envelope::parse_request(&input) {
            Ok(req) => match Interface::parse(&req.interface_name, Para(&req.para)) {
                Ok(iface) => {
                    let _ = iface.access();
                    assert!(!iface.name().is_empty());
                }
                Err(e) => assert!(known.contains(&e.code.code())),
            },
            Err(e) => {
                assert!(known.contains(&e.code.code()));
                let bytes = Envelope::error(&e).to_bytes();
                let v: Value = serde_json::from_slice(&bytes).unwrap();
                assert_eq!(v["returnData"], "");
            }
        }
    }
}

#[test]
fn the_gateway_event_parser_never_panics() {
    let mut rng = Rng(0x5eed_0002);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut seeds: Vec<Vec<u8>> =
        std::fs::read_dir(dir).unwrap().map(|e| std::fs::read(e.unwrap().path()).unwrap()).collect();
    seeds.extend(envelope_seeds());
    for i in 0..INPUTS {
        let input = if i % 5 == 0 {
            random_json(&mut rng, 0).into_bytes()
        } else {
            let seed = rng.pick(&seeds).clone();
            mutate(&mut rng, &seed)
        };
        match wafer_scf::scf::event::parse(&input, "rt") {
            wafer_scf::scf::event::Parsed::Request(r) => assert!(!r.method.is_empty()),
            wafer_scf::scf::event::Parsed::Timer => {}
            wafer_scf::scf::event::Parsed::Reject { origin, status, error } => {
                let reply = wafer_scf::scf::event::reply(&origin, status, &Envelope::error(&error));
                let _: Value = serde_json::from_slice(&reply).unwrap();
            }
        }
    }
}

#[test]
fn the_decryptor_never_panics() {
    let mut rng = Rng(0x5eed_0003);
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = "tiihtNczf5v6AKRyjwEUhQ==";
    let iv = "r7BXXKkLb8qrSNn05n0qiA==";
    let valid =
        crate::helpers::encrypt_for_tests(key, iv, br#"{"a":1,"watermark":{"appid":"wx1","timestamp":1}}"#)
            .unwrap();
    let raw = b64.decode(&valid).unwrap();
    let mut ok = 0;
    for i in 0..INPUTS {
        let (k, v, d) = match i % 4 {
            // Mutated ciphertext bytes, re-encoded: exercises padding and JSON checks.
            0 => (key.to_owned(), iv.to_owned(), b64.encode(mutate(&mut rng, &raw))),
            // Mutated base64 text.
            1 => (
                key.to_owned(),
                iv.to_owned(),
                String::from_utf8_lossy(&mutate(&mut rng, valid.as_bytes())).into_owned(),
            ),
            2 => (
                String::from_utf8_lossy(&mutate(&mut rng, key.as_bytes())).into_owned(),
                iv.to_owned(),
                valid.clone(),
            ),
            _ => (
                key.to_owned(),
                String::from_utf8_lossy(&mutate(&mut rng, iv.as_bytes())).into_owned(),
                valid.clone(),
            ),
        };
        if wafer_scf::crypto::wxdata::decrypt(&k, &d, &v, "wx1").is_ok() {
            ok += 1;
        }
    }
    assert!(wafer_scf::crypto::wxdata::decrypt(key, &valid, iv, "wx1").is_ok());
    assert!(ok < INPUTS / 2, "mutations mostly fail: {ok}");
}

#[test]
fn the_log_formatter_and_request_ids_never_let_a_value_break_a_line() {
    use wafer_scf::request::{log_safe, safe_request_id};
    let mut rng = Rng(0x5eed_0004);
    let specials = ['\n', '\r', '\u{1b}', '\u{202e}', ' ', '=', '"', '\\', '\u{0}', '\t', 'é', '中'];
    for _ in 0..INPUTS {
        let len = rng.below(80);
        let s: String =
            (0..len)
                .map(|_| {
                    if rng.below(3) == 0 {
                        *rng.pick(&specials)
                    } else {
                        (b'!' + rng.below(94) as u8) as char
                    }
                })
                .collect();
        let safe = log_safe(&s, 64);
        assert!(safe.bytes().all(|b| b.is_ascii_graphic() && b != b'"'), "{safe:?}");
        if let Some(id) = safe_request_id(&s) {
            assert!(
                id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)),
                "{id:?}"
            );
        }
    }
}

/// The refused list as a property: whatever a caller writes as an API path — through `qcloud.mimi.call`'s `path`,
/// the `/wechat/{appid}/…` pass-through or the token host — either it is refused, or the URL the HTTP client
/// sends has exactly the checked path (nothing resolved, decoded or re-hosted on the way) and that path is not a
/// credential path, in any case or encoding.
#[test]
fn no_api_path_reaches_a_credential_path() {
    use wafer_scf::handlers::http::{self, HttpInterface};
    use wafer_scf::request::{HttpCall, RequestMeta};
    use wafer_scf::wechat::path::{under, ApiPath, REFUSED};
    let mut rng = Rng(0x5eed_0005);
    let segments = [
        "cgi-bin",
        "CGI-BIN",
        "token",
        "Token",
        "stable_token",
        "gettoken",
        "sns",
        "jscode2session",
        "wxa",
        "message",
        ".",
        "..",
        "...",
        "",
        "%2e",
        "%2E%2E",
        "%2F",
        "%5C",
        "%74oken",
        "\\",
        "@evil.example",
        "evil.example:80",
        "x?y",
        "x#y",
        ";",
        "%00",
        "ｔoken",
        "token%20",
        "token.",
    ];
    let separators = ["/", "/", "/", "//", "\\", "%2F", "/./", "/../"];
    let seeds: Vec<&str> = REFUSED.to_vec();
    let meta = RequestMeta::default();
    let (mut accepted, mut tried) = (0usize, 0usize);
    for _ in 0..INPUTS {
        let path = if rng.below(3) == 0 {
            let seed = format!("{}/x", rng.pick(&seeds));
            String::from_utf8_lossy(&mutate(&mut rng, seed.as_bytes())).into_owned()
        } else {
            let mut p = String::from(*rng.pick(&["/", "/", "//", "", "/./"]));
            for i in 0..=rng.below(4) {
                if i > 0 {
                    let sep: &&str = rng.pick(&separators);
                    p.push_str(sep);
                }
                let seg: &&str = rng.pick(&segments);
                p.push_str(seg);
            }
            p
        };
        tried += 1;
        // The pass-through, the token host and qcloud.mimi.call all take the path through ApiPath::parse.
        let direct = ApiPath::parse(&path);
        let call =
            HttpCall { method: "POST".into(), path: format!("/wechat/wx1{path}"), ..HttpCall::default() };
        let passed = match http::parse(&call, &meta) {
            Ok(HttpInterface::Pass(p)) => Some(p.path),
            _ => None,
        };
        if path.starts_with('/') {
            assert_eq!(
                passed.as_ref().map(ApiPath::as_str),
                direct.as_ref().ok().map(ApiPath::as_str),
                "{path:?}"
            );
        }
        let Ok(api) = direct else { continue };
        accepted += 1;
        let url = reqwest::Url::parse(&format!("http://127.0.0.1:9{}", api.as_str())).unwrap();
        assert_eq!(url.host_str(), Some("127.0.0.1"), "{path:?}");
        assert_eq!(url.path(), api.as_str(), "the client sends the checked path unchanged: {path:?}");
        let lower = url.path().to_ascii_lowercase();
        assert!(!REFUSED.iter().any(|r| under(&lower, r)), "{path:?} reaches {lower}");
    }
    assert!(accepted > 1_000 && accepted < tried, "the generator reaches both sides: {accepted} of {tried}");
}

/// WeChat's guide example (its published keys and reply), for the API-security reply parser.
fn guide_keys() -> wafer_scf::wechat::secure::SecureKeys {
    let file = |name: &str| {
        std::fs::read_to_string(format!(
            "{}/src/wechat/secure/guide_example/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    };
    let certs = [("79ba700ea147819f640941bceb38b1d1".to_owned(), file("platform_cert.pem"))];
    wafer_scf::wechat::secure::SecureKeys::parse(
        "wxba6223c06417af7b",
        "otUpngOjU+nVQaWJIC3D/yMLV17RKaP6t4Ot9tbnzLY=",
        "fa05fe1e5bcc79b81ad5ad4b58acf787",
        &file("private_key.pem"),
        "97845f6ed842ea860df6fdf65941ff56",
        &certs,
    )
    .unwrap()
}

#[test]
fn the_api_security_reply_parser_never_panics() {
    use wafer_scf::wechat::secure::{open_reply, open_signed, ReplyHeaders};
    const URLPATH: &str = "https://api.weixin.qq.com/wxa/getuserriskrank";
    const TS: i64 = 1635927956;
    let keys = guide_keys();
    let body = std::fs::read(format!(
        "{}/src/wechat/secure/guide_example/reply_body.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let signature = std::fs::read_to_string(format!(
        "{}/src/wechat/secure/guide_example/reply_signature.txt",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let appid = Some("wxba6223c06417af7b");
    assert!(open_signed(&keys, URLPATH, appid, TS, &body, TS).is_ok());
    // After the signature: every stage (JSON, base64, lengths, AES-GCM, the decrypted object and its checks).
    let mut rng = Rng(0x5eed_0007);
    let mut ok = 0;
    for i in 0..INPUTS {
        let input = if i % 8 == 0 { random_json(&mut rng, 0).into_bytes() } else { mutate(&mut rng, &body) };
        if open_signed(&keys, URLPATH, appid, TS, &input, TS).is_ok() {
            ok += 1;
        }
    }
    assert!(ok < INPUTS / 100, "a mutated reply almost never opens: {ok}");
    // The whole reply, headers included (fewer: each one verifies an RSA signature).
    let headers = ReplyHeaders {
        appid: appid.map(str::to_owned),
        timestamp: Some(TS.to_string()),
        serial: Some("79ba700ea147819f640941bceb38b1d1".into()),
        signature: Some(signature.clone()),
        ..Default::default()
    };
    assert!(open_reply(&keys, URLPATH, &headers, &body, TS).is_ok());
    let mutated = |rng: &mut Rng, s: &Option<String>| {
        s.as_ref().map(|s| String::from_utf8_lossy(&mutate(rng, s.as_bytes())).into_owned())
    };
    let mut opened = 0;
    for i in 0..2_000 {
        let mut h = headers.clone();
        match i % 5 {
            0 => h.timestamp = mutated(&mut rng, &h.timestamp),
            1 => h.serial = mutated(&mut rng, &h.serial),
            2 => h.signature = mutated(&mut rng, &h.signature),
            3 => {
                h.serial_deprecated = h.serial.take();
                h.signature_deprecated = mutated(&mut rng, &h.signature);
            }
            _ => h.appid = mutated(&mut rng, &h.appid),
        }
        let input = if i % 7 == 0 { mutate(&mut rng, &body) } else { body.clone() };
        if open_reply(&keys, URLPATH, &h, &input, TS).is_ok() {
            opened += 1;
        }
    }
    assert!(opened < 200, "mutated headers almost never verify: {opened}");
}
