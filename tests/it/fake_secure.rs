//! WeChat's API security on the fake WeChat: a layer in front of every fake route that enforces the scheme as
//! WeChat does — a signed request is verified with the app's public key (40234 when it does not), decrypted
//! (40235), checked (40237 another app's token, 40240 an old timestamp) and handed to the route as a plain JSON
//! body; a plain call to an API that needs it is refused (934011); a reply to a signed call is encrypted and signed
//! with a platform key pair the fake mints (`openssl`), with the `-Deprecated` pair during a rotation. Tests can
//! make it tamper with its replies.

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use wafer_scf::crypto::pki::{gcm_open, gcm_seal, RsaPublic, RsaSigner};
use wafer_scf::wechat::secure::signed_string;

/// A key pair minted by `openssl` (PKCS#1 with `traditional`, else PKCS#8) and a self-signed certificate.
pub struct Minted {
    pub key_pem: String,
    pub cert_pem: String,
}

pub fn mint(traditional: bool) -> Minted {
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).output().expect("openssl is needed");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let key_s = key.to_str().unwrap();
    let mut genrsa = vec!["genrsa", "-out", key_s];
    if traditional {
        genrsa.push("-traditional");
    }
    genrsa.push("2048");
    run(&genrsa);
    run(&[
        "req",
        "-x509",
        "-new",
        "-key",
        key_s,
        "-out",
        cert.to_str().unwrap(),
        "-days",
        "3650",
        "-subj",
        "/CN=fake WeChat platform",
    ]);
    Minted {
        key_pem: std::fs::read_to_string(key).unwrap(),
        cert_pem: std::fs::read_to_string(cert).unwrap(),
    }
}

/// One app's API security as set in the fake console.
#[derive(Clone)]
pub struct ConsoleKeys {
    pub sym_key: [u8; 32],
    pub sym_sn: String,
    pub public_key: RsaPublic,
    pub key_sn: String,
}

/// A platform key pair with its certificate's SN.
pub struct PlatformKey {
    pub signer: RsaSigner,
    pub sn: String,
}

/// What the fake does to its next replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    /// Flip a byte of the encrypted body after signing.
    Body,
    /// Name another app in `Wechatmp-Appid` (and sign that).
    Appid,
    /// A timestamp ten minutes old (signed).
    OldTimestamp,
    /// Drop the signature headers, keep the encrypted body.
    Unsigned,
    /// Sign with a key whose certificate is not registered.
    UnknownCert,
}

#[derive(Default)]
pub struct SecureFake {
    pub base: OnceLock<String>,
    /// appid → keys; the console switch is on for these apps.
    pub apps: Mutex<HashMap<String, ConsoleKeys>>,
    /// The platform's current key, and during a rotation the deprecated one.
    pub platform: Mutex<Vec<PlatformKey>>,
    pub tamper: Mutex<Option<Tamper>>,
    /// Paths that need API security even with the console switch off.
    pub always: Mutex<HashSet<String>>,
    /// Signed calls verified, by path.
    pub signed: Mutex<HashMap<String, usize>>,
    /// Plain calls refused (934011), by path.
    pub refused_plain: Mutex<HashMap<String, usize>>,
}

impl SecureFake {
    pub fn signed_calls(&self, path: &str) -> usize {
        self.signed.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    pub fn refused_plain(&self, path: &str) -> usize {
        self.refused_plain.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn plain_error(errcode: i64, errmsg: &str) -> Response {
    axum::Json(json!({"errcode": errcode, "errmsg": errmsg})).into_response()
}

/// The layer: applied to the whole fake router.
pub async fn layer(
    State((sf, st)): State<(Arc<SecureFake>, Arc<crate::fake_wechat::FakeState>)>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().to_owned();
    let query: HashMap<String, String> =
        form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).into_owned().collect();
    let owner = crate::fake_wechat::token_owner(&st, query.get("access_token"));
    let headers = req.headers().clone();
    let Some(sig) = headers.get("wechatmp-signature").and_then(|v| v.to_str().ok()).map(str::to_owned) else {
        let switched_on = sf.apps.lock().unwrap().contains_key(&owner);
        let required =
            sf.always.lock().unwrap().contains(&path) || (switched_on && SECURED.contains(&path.as_str()));
        if required {
            *sf.refused_plain.lock().unwrap().entry(path).or_default() += 1;
            return plain_error(934011, "signature is needed");
        }
        return next.run(req).await;
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (Some(appid), Some(ts)) = (header("wechatmp-appid"), header("wechatmp-timestamp")) else {
        return plain_error(40233, "appid missing");
    };
    let Some(serial) = header("wechatmp-serial") else {
        return plain_error(40230, "serial missing");
    };
    let Some(keys) = sf.apps.lock().unwrap().get(&appid).cloned() else {
        return plain_error(40238, "no symmetric key set");
    };
    if serial != keys.key_sn {
        return plain_error(40234, "invalid signature");
    }
    if owner != appid {
        return plain_error(40237, "appid does not match the token's owner");
    }
    let Ok(ts) = ts.parse::<i64>() else { return plain_error(40240, "timestamp expired") };
    if (now() - ts).abs() > 300 {
        return plain_error(40240, "timestamp expired");
    }
    let (parts, body) = req.into_parts();
    let body = to_bytes(body, 1 << 20).await.unwrap();
    let urlpath = format!("{}{path}", sf.base.get().unwrap());
    let signed = signed_string(&urlpath, &appid, ts, &body);
    let sig = STANDARD.decode(sig).unwrap_or_default();
    if !keys.public_key.verify_pss(&signed, &sig) {
        return plain_error(40234, "invalid signature");
    }
    let aad = format!("{urlpath}|{appid}|{ts}|{}", keys.sym_sn);
    let envelope: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let part = |n: &str| envelope[n].as_str().and_then(|s| STANDARD.decode(s).ok()).unwrap_or_default();
    let Some(plain) = gcm_open(&keys.sym_key, &part("iv"), aad.as_bytes(), &part("data"), &part("authtag"))
    else {
        return plain_error(40235, "invalid encryption");
    };
    let Ok(Value::Object(mut fields)) = serde_json::from_slice::<Value>(&plain) else {
        return plain_error(40235, "invalid encryption");
    };
    if fields.get("_appid").and_then(Value::as_str) != Some(appid.as_str())
        || fields.get("_timestamp").and_then(Value::as_i64) != Some(ts)
    {
        return plain_error(40235, "invalid encryption");
    }
    for k in ["_n", "_appid", "_timestamp"] {
        fields.remove(k);
    }
    *sf.signed.lock().unwrap().entry(path.clone()).or_default() += 1;
    let mut inner = Request::from_parts(parts, Body::from(serde_json::to_vec(&fields).unwrap()));
    inner.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
    let reply = next.run(inner).await;
    let (mut rparts, rbody) = reply.into_parts();
    let rbody = to_bytes(rbody, 1 << 20).await.unwrap();
    let Ok(Value::Object(reply_fields)) = serde_json::from_slice::<Value>(&rbody) else {
        return Response::from_parts(rparts, Body::from(rbody)); // binary: passed as it is
    };
    let sealed = seal_reply(&sf, &keys, &urlpath, &appid, reply_fields);
    rparts.headers.remove("content-length");
    for (k, v) in sealed.0.iter() {
        rparts.headers.insert(k.clone(), v.clone());
    }
    rparts.headers.insert("content-type", HeaderValue::from_static("application/json"));
    Response::from_parts(rparts, Body::from(sealed.1))
}

/// A key no registered certificate belongs to (WeChat's published example key).
const GUIDE_KEY: &str =
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/src/wechat/secure/guide_example/private_key.pem"));

/// The paths the fake enforces API security on when an app's switch is on.
pub const SECURED: &[&str] = &[
    "/wxa/getuserriskrank",
    "/wxa/business/getuserphonenumber",
    "/cgi-bin/message/subscribe/send",
    "/cgi-bin/express/intracity/createorder",
];

fn seal_reply(
    sf: &SecureFake,
    keys: &ConsoleKeys,
    urlpath: &str,
    appid: &str,
    fields: Map<String, Value>,
) -> (HeaderMap, Vec<u8>) {
    let tamper = *sf.tamper.lock().unwrap();
    let ts = if tamper == Some(Tamper::OldTimestamp) { now() - 600 } else { now() };
    let named = if tamper == Some(Tamper::Appid) { "wx_someone_else" } else { appid };
    let mut plain = Map::new();
    plain.insert("_n".into(), json!("fakenonce"));
    plain.insert("_appid".into(), json!(appid));
    plain.insert("_timestamp".into(), json!(ts));
    plain.extend(fields);
    let iv = [9u8; 12];
    let aad = format!("{urlpath}|{appid}|{ts}|{}", keys.sym_sn);
    let (data, tag) =
        gcm_seal(&keys.sym_key, &iv, aad.as_bytes(), &serde_json::to_vec(&plain).unwrap()).unwrap();
    let body = serde_json::to_vec(
        &json!({"iv": STANDARD.encode(iv), "data": STANDARD.encode(data), "authtag": STANDARD.encode(tag)}),
    )
    .unwrap();
    let signed = signed_string(urlpath, named, ts, &body);
    let mut h = HeaderMap::new();
    let set = |h: &mut HeaderMap, k: &'static str, v: &str| {
        h.insert(k, HeaderValue::from_str(v).unwrap());
    };
    set(&mut h, "wechatmp-appid", named);
    set(&mut h, "wechatmp-timestamp", &ts.to_string());
    let platform = sf.platform.lock().unwrap();
    if tamper != Some(Tamper::Unsigned) {
        let stranger;
        let (sn, signer) = if tamper == Some(Tamper::UnknownCert) {
            stranger = RsaSigner::from_pem(GUIDE_KEY).unwrap();
            ("f".repeat(32), &stranger)
        } else {
            (platform[0].sn.clone(), &platform[0].signer)
        };
        set(&mut h, "wechatmp-serial", &sn);
        set(&mut h, "wechatmp-signature", &STANDARD.encode(signer.sign_pss(&signed).unwrap()));
        if let Some(old) = platform.get(1) {
            set(&mut h, "wechatmp-serial-deprecated", &old.sn);
            let sig = old.signer.sign_pss(&signed).unwrap();
            set(&mut h, "wechatmp-signature-deprecated", &STANDARD.encode(sig));
        }
    }
    let mut body = body;
    if tamper == Some(Tamper::Body) {
        let i = body.len() / 2;
        body[i] = if body[i] == b'A' { b'B' } else { b'A' };
    }
    (h, body)
}
