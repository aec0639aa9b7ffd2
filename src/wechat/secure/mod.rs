//! WeChat's API security (API 安全鉴权) for mini-program server APIs, once for every caller: a request to a
//! supporting path ([`SecurePaths`]) is sent encrypted (AES-256-GCM) and signed (RSA-PSS-SHA256) with the app's
//! keys; its reply is verified against the registered platform certificate (the `-Deprecated` pair during a
//! rotation), its timestamps and appid checked, then decrypted into WeChat's ordinary reply. A reply that does not
//! verify is never handed on. WeChat's own security-layer errors come back plain and are passed on with a hint.

mod paths;
mod reply;
#[cfg(test)]
mod tests;

pub use paths::SecurePaths;
pub use reply::{explain_plain, hint, open_reply, open_signed, with_hint, Opened, ReplyHeaders};

use super::proxy::{self, Body, Outgoing, RawReply};
use super::UpstreamError;
use crate::crypto::pki::{gcm_seal, Certificate, RsaSigner};
use crate::payload::Payload;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use serde_json::{Map, Value};
use std::sync::Arc;

/// How far a reply's timestamp may be from this server's clock.
pub const MAX_SKEW_SECS: i64 = 300;
/// The fields the scheme adds to a plaintext (a caller's own fields of these names are dropped).
const RESERVED: [&str; 3] = ["_n", "_appid", "_timestamp"];

/// One platform certificate: the SN the console shows beside it (its 编号, not the X.509 serial) and the key.
#[derive(Clone)]
pub struct PlatformCert {
    pub sn: String,
    pub cert: Certificate,
}

/// An app's parsed API-security keys, ready to use. `Debug` shows only the SNs.
pub struct SecureKeys {
    pub appid: String,
    sym_key: [u8; 32],
    pub sym_sn: String,
    signer: RsaSigner,
    pub key_sn: String,
    pub certs: Vec<PlatformCert>,
}

impl std::fmt::Debug for SecureKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureKeys")
            .field("appid", &self.appid)
            .field("sym_sn", &self.sym_sn)
            .field("key_sn", &self.key_sn)
            .field("certs", &self.certs.iter().map(|c| &c.sn).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Which input a key error is about (the CLI names its file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPart {
    SymKey,
    SymSn,
    PrivateKey,
    KeySn,
    Cert(usize),
    CertSn(usize),
}

/// Key material that cannot be used: which part, and why (never the material itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    pub part: KeyPart,
    pub reason: String,
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.part {
            KeyPart::SymKey => "the symmetric key".to_owned(),
            KeyPart::SymSn => "the symmetric key's SN".to_owned(),
            KeyPart::PrivateKey => "the private key".to_owned(),
            KeyPart::KeySn => "the private key's SN".to_owned(),
            KeyPart::Cert(i) => format!("platform certificate {}", i + 1),
            KeyPart::CertSn(i) => format!("the SN of platform certificate {}", i + 1),
        };
        write!(f, "{what}: {}", self.reason)
    }
}

/// An SN as the console shows it: 32 hexadecimal characters (kept in lowercase, as the scheme uses them).
pub fn parse_sn(sn: &str, part: KeyPart) -> Result<String, KeyError> {
    let sn = sn.trim();
    if sn.len() == 32 && sn.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(sn.to_ascii_lowercase())
    } else {
        Err(KeyError { part, reason: "must be the 32 hexadecimal characters the console shows".into() })
    }
}

impl SecureKeys {
    /// Parse and check everything: the symmetric key (base64 of 32 bytes), the RSA private key (PKCS#1 or PKCS#8
    /// PEM), one or two platform certificates (PEM) with their SNs.
    pub fn parse(
        appid: &str,
        sym_key_b64: &str,
        sym_sn: &str,
        private_key_pem: &str,
        key_sn: &str,
        certs: &[(String, String)],
    ) -> Result<Self, KeyError> {
        let raw = STANDARD.decode(sym_key_b64.trim()).map_err(|_| KeyError {
            part: KeyPart::SymKey,
            reason: "not base64 (the console shows the key as base64)".into(),
        })?;
        let sym_key: [u8; 32] = raw.as_slice().try_into().map_err(|_| KeyError {
            part: KeyPart::SymKey,
            reason: format!("{} bytes where AES-256 takes 32", raw.len()),
        })?;
        let signer = RsaSigner::from_pem(private_key_pem)
            .map_err(|reason| KeyError { part: KeyPart::PrivateKey, reason })?;
        if certs.is_empty() || certs.len() > 2 {
            return Err(KeyError {
                part: KeyPart::Cert(certs.len().min(2)),
                reason: "give one platform certificate, or two during a rotation".into(),
            });
        }
        let mut parsed = Vec::with_capacity(certs.len());
        for (i, (sn, pem)) in certs.iter().enumerate() {
            let cert =
                Certificate::from_pem(pem).map_err(|reason| KeyError { part: KeyPart::Cert(i), reason })?;
            parsed.push(PlatformCert { sn: parse_sn(sn, KeyPart::CertSn(i))?, cert });
        }
        Ok(Self {
            appid: appid.to_owned(),
            sym_key,
            sym_sn: parse_sn(sym_sn, KeyPart::SymSn)?,
            signer,
            key_sn: parse_sn(key_sn, KeyPart::KeySn)?,
            certs: parsed,
        })
    }

    fn aad(&self, urlpath: &str, ts: i64) -> String {
        format!("{urlpath}|{}|{ts}|{}", self.appid, self.sym_sn)
    }

    fn cert(&self, sn: &str) -> Option<&Certificate> {
        self.certs.iter().find(|c| c.sn.eq_ignore_ascii_case(sn)).map(|c| &c.cert)
    }
}

/// A request ready to send: its body and the `Wechatmp-*` headers.
#[derive(Debug, Clone)]
pub struct SealedRequest {
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

/// The signed string of a request or a reply: `urlpath\nappid\nts\nbody`, no SN in it.
pub fn signed_string(urlpath: &str, appid: &str, ts: i64, body: &[u8]) -> Vec<u8> {
    let mut s = format!("{urlpath}\n{appid}\n{ts}\n").into_bytes();
    s.extend_from_slice(body);
    s
}

/// Encrypt and sign `fields` (the API's body fields and query parameters but `access_token`) for `urlpath`
/// (scheme, host and path) at `ts`, with the nonce and IV given (random in [`call`]).
pub fn seal_request(
    keys: &SecureKeys,
    urlpath: &str,
    fields: &Map<String, Value>,
    ts: i64,
    nonce: &str,
    iv: &[u8; 12],
) -> Result<SealedRequest, String> {
    let mut plain = Map::new();
    plain.insert("_n".into(), Value::from(nonce));
    plain.insert("_appid".into(), Value::from(keys.appid.as_str()));
    plain.insert("_timestamp".into(), Value::from(ts));
    for (k, v) in fields.iter().filter(|(k, _)| !RESERVED.contains(&k.as_str())) {
        plain.insert(k.clone(), v.clone());
    }
    let plaintext = serde_json::to_vec(&plain).map_err(|e| e.to_string())?;
    let (data, tag) = gcm_seal(&keys.sym_key, iv, keys.aad(urlpath, ts).as_bytes(), &plaintext)?;
    let body = serde_json::to_vec(&serde_json::json!({
        "iv": STANDARD.encode(iv), "data": STANDARD.encode(data), "authtag": STANDARD.encode(tag),
    }))
    .map_err(|e| e.to_string())?;
    let signature = keys.signer.sign_pss(&signed_string(urlpath, &keys.appid, ts, &body))?;
    let headers = vec![
        ("Wechatmp-Appid", keys.appid.clone()),
        ("Wechatmp-TimeStamp", ts.to_string()),
        ("Wechatmp-Signature", STANDARD.encode(signature)),
        ("Wechatmp-Serial", keys.key_sn.clone()),
    ];
    Ok(SealedRequest { body, headers })
}

/// How a call made with API security ended, besides its reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Signed by a registered certificate, checked and decrypted.
    Verified,
    /// Signed only by the deprecated certificate of a rotation: WeChat already signs with `new_sn`, which is
    /// not registered here yet.
    DeprecatedCert { new_sn: String },
    /// A plain error of WeChat's (a security-layer one carries a hint in its `errmsg`), or an HTTP error (0).
    PlainError(i64),
    /// A binary reply (a code image) that came unsigned: passed on as it is.
    UnsignedBinary,
}

/// Why a call made with API security failed.
#[derive(Debug)]
pub enum SecureError {
    /// The request could not be made: the caller's body is not a JSON object, or sealing failed.
    Request(String),
    /// WeChat could not be reached or answered broken.
    Upstream(UpstreamError),
    /// The reply did not verify: not handed on.
    Unverified(String),
}

/// The fields of a call: its JSON body's and its query's (but `access_token`).
fn fields_of(out: &Outgoing<'_>) -> Result<Map<String, Value>, SecureError> {
    let not_object = || SecureError::Request("API security: the body must be a JSON object".into());
    let mut fields = match out.body {
        Body::None => Map::new(),
        Body::Json(Value::Object(m)) => m.clone(),
        Body::Json(_) => return Err(not_object()),
        Body::Raw { payload, .. } => match payload.as_full() {
            Some(b) if b.iter().all(u8::is_ascii_whitespace) => Map::new(),
            Some(b) => match proxy::json_object(b) {
                Some(Value::Object(m)) => m,
                _ => return Err(not_object()),
            },
            None => return Err(SecureError::Request("API security: the body is too large to sign".into())),
        },
    };
    for (k, v) in out.query.iter().filter(|(k, _)| k != "access_token") {
        fields.entry(k.clone()).or_insert_with(|| Value::from(v.as_str()));
    }
    Ok(fields)
}

/// Send `out` to `base` encrypted and signed with `keys`, and open the reply. `now` is the clock's Unix time.
/// The request is sealed on the blocking pool: its RSA signature takes a millisecond or so, which would otherwise
/// hold up every other connection served by the same thread (HTTP mode's lanes each serve theirs on one thread).
pub async fn call(
    relay: &super::relay::Relay,
    base: &str,
    out: Outgoing<'_>,
    token: &str,
    keys: &Arc<SecureKeys>,
    now: i64,
    what: &'static str,
) -> Result<(RawReply, Verdict), SecureError> {
    let urlpath = format!("{base}{}", out.path);
    let fields = fields_of(&out)?;
    let (mut iv, mut nonce) = ([0u8; 12], [0u8; 16]);
    getrandom::fill(&mut iv).map_err(|e| SecureError::Request(e.to_string()))?;
    getrandom::fill(&mut nonce).map_err(|e| SecureError::Request(e.to_string()))?;
    let nonce = STANDARD_NO_PAD.encode(nonce);
    let sealing = {
        let (keys, urlpath) = (keys.clone(), urlpath.clone());
        tokio::task::spawn_blocking(move || seal_request(&keys, &urlpath, &fields, now, &nonce, &iv))
    };
    let sealed = sealing
        .await
        .map_err(|_| SecureError::Request("API security: sealing the request did not finish".into()))?
        .map_err(SecureError::Request)?;
    let payload = Payload::from(sealed.body);
    let body = Body::Raw { content_type: Some("application/json;charset=utf-8"), payload: &payload };
    let post = reqwest::Method::POST;
    let signed = Outgoing { method: &post, path: out.path, query: &[], body, headers: &sealed.headers };
    let reply = proxy::call(relay, base, signed, token, what).await.map_err(SecureError::Upstream)?;
    let outcome = reply::settle(keys, &urlpath, out.path, reply, now);
    crate::metrics::api_security(match &outcome {
        Ok((_, Verdict::Verified)) => "verified",
        Ok((_, Verdict::DeprecatedCert { .. })) => "verified_deprecated_cert",
        Ok((_, Verdict::PlainError(_))) => "plain_error",
        Ok((_, Verdict::UnsignedBinary)) => "unsigned_binary",
        Err(_) => "rejected",
    });
    outcome
}
