//! The reply side of API security: which certificate signed it (rotation included), the checks, the decryption,
//! and what passes unsigned (WeChat's plain errors, with a hint for the security-layer ones; binary replies).

use super::{signed_string, SecureError, SecureKeys, Verdict, MAX_SKEW_SECS, RESERVED};
use crate::crypto::pki::gcm_open;
use crate::payload::Payload;
use crate::wechat::proxy::{json_object, RawReply};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::Value;

/// The `Wechatmp-*` headers of a reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplyHeaders {
    pub appid: Option<String>,
    pub timestamp: Option<String>,
    pub serial: Option<String>,
    pub signature: Option<String>,
    pub serial_deprecated: Option<String>,
    pub signature_deprecated: Option<String>,
}

impl ReplyHeaders {
    /// The headers of a signed reply; `None` when it carries no signature at all.
    pub fn of(headers: &reqwest::header::HeaderMap) -> Option<Self> {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(|v| v.trim().to_owned());
        let h = Self {
            appid: get("wechatmp-appid"),
            timestamp: get("wechatmp-timestamp"),
            serial: get("wechatmp-serial"),
            signature: get("wechatmp-signature"),
            serial_deprecated: get("wechatmp-serial-deprecated"),
            signature_deprecated: get("wechatmp-signature-deprecated"),
        };
        (h.signature.is_some() || h.signature_deprecated.is_some()).then_some(h)
    }
}

/// A verified, decrypted reply: WeChat's ordinary reply (the scheme's fields removed), and the SN of a newer
/// platform certificate when only the deprecated one could be checked.
#[derive(Debug)]
pub struct Opened {
    pub body: Vec<u8>,
    pub rotated_to: Option<String>,
}

/// Verify and decrypt a signed reply to a call on `urlpath`, at `now`. The error says why it was refused.
pub fn open_reply(
    keys: &SecureKeys,
    urlpath: &str,
    h: &ReplyHeaders,
    body: &[u8],
    now: i64,
) -> Result<Opened, String> {
    let ts_text = h.timestamp.as_deref().ok_or("no Wechatmp-TimeStamp")?;
    let ts: i64 = ts_text.parse().map_err(|_| "Wechatmp-TimeStamp is not a number in seconds")?;
    let signed = signed_string(urlpath, &keys.appid, ts, body);
    let verifies = |sn: Option<&String>, sig: Option<&String>| -> Option<bool> {
        let cert = keys.cert(sn?)?;
        let sig = STANDARD.decode(sig?).ok()?;
        Some(cert.public_key.verify_pss(&signed, &sig))
    };
    let rotated_to = match verifies(h.serial.as_ref(), h.signature.as_ref()) {
        Some(true) => None,
        Some(false) => return Err("the signature does not verify with the registered certificate".into()),
        None => match verifies(h.serial_deprecated.as_ref(), h.signature_deprecated.as_ref()) {
            Some(true) => Some(h.serial.clone().unwrap_or_default()),
            Some(false) => return Err("the deprecated signature does not verify".into()),
            None => {
                let sn = h.serial.as_deref().map(|s| crate::request::log_safe(s, 64)).unwrap_or_default();
                return Err(format!("signed by certificate SN {sn}, which is not registered here"));
            }
        },
    };
    let body = open_signed(keys, urlpath, h.appid.as_deref(), ts, body, now)?;
    Ok(Opened { body, rotated_to })
}

/// The checks and the decryption of a reply whose signature verified (`appid` and `ts` are its
/// `Wechatmp-Appid` and `Wechatmp-TimeStamp`): WeChat's ordinary reply, the scheme's fields removed.
pub fn open_signed(
    keys: &SecureKeys,
    urlpath: &str,
    appid: Option<&str>,
    ts: i64,
    body: &[u8],
    now: i64,
) -> Result<Vec<u8>, String> {
    if appid != Some(keys.appid.as_str()) {
        return Err("Wechatmp-Appid names another app".into());
    }
    if (now - ts).abs() > MAX_SKEW_SECS {
        return Err(format!("its timestamp is {} s from this server's clock", now - ts));
    }
    let envelope = json_object(body).ok_or("the body is not an encrypted reply")?;
    let part = |name: &str| envelope.get(name).and_then(Value::as_str).and_then(|s| STANDARD.decode(s).ok());
    let (Some(iv), Some(data), Some(tag)) = (part("iv"), part("data"), part("authtag")) else {
        return Err("the body is not an encrypted reply (iv, data, authtag)".into());
    };
    let plain = gcm_open(&keys.sym_key, &iv, keys.aad(urlpath, ts).as_bytes(), &data, &tag)
        .ok_or("it does not decrypt with the registered symmetric key")?;
    let Some(Value::Object(mut fields)) = json_object(&plain) else {
        return Err("the decrypted reply is not a JSON object".into());
    };
    if fields.get("_appid").and_then(Value::as_str) != Some(keys.appid.as_str()) {
        return Err("its _appid names another app".into());
    }
    if fields.get("_timestamp").and_then(Value::as_i64) != Some(ts) {
        return Err("its _timestamp differs from Wechatmp-TimeStamp".into());
    }
    for name in RESERVED {
        fields.remove(name);
    }
    serde_json::to_vec(&fields).map_err(|e| e.to_string())
}

/// What to check when WeChat refuses a call at its security layer (or a plain call to an API that needs it).
pub fn hint(errcode: i64) -> Option<&'static str> {
    Some(match errcode {
        40230 => "WeChat got no key SN: register the private key's SN (--private-key-sn)",
        40231 => "WeChat got no timestamp with the signed call",
        40232 => "WeChat got no signature: register the app's keys (wafer-scf app api-security)",
        40233 => "WeChat got no appid with the signed call",
        40234 => "the signature is invalid: the private key registered here is not the one whose public key is set \
                  in the console (开发管理 → 开发设置 → API安全), or its SN is not that key's",
        40235 => "the encryption is invalid: the symmetric key or its SN registered here is not the console's current one",
        40236 => "the appid of the signed call is invalid",
        40237 => "the token's app is not the app whose keys signed: check the keys are registered for this appid",
        40238 => "no symmetric key is set in the console for this app",
        40239 => "no public key is set in the console for this app",
        40240 => "the timestamp expired: check this server's clock",
        934011 => "this API needs API security: register the app's keys (wafer-scf app api-security)",
        _ => return None,
    })
}

/// A plain JSON error with the hint for its errcode added to `errmsg` (`… (wafer-scf: <hint>)`).
pub fn with_hint(body: &[u8], errcode: i64) -> Option<Vec<u8>> {
    let hint = hint(errcode)?;
    let Some(Value::Object(mut v)) = json_object(body) else { return None };
    let errmsg = v.get("errmsg").and_then(Value::as_str).unwrap_or("").to_owned();
    v.insert("errmsg".into(), Value::from(format!("{errmsg} (wafer-scf: {hint})")));
    serde_json::to_vec(&v).ok()
}

/// A plain call's reply: WeChat's refusal for want of API security (934011, or a security-layer code) gets its
/// hint; anything else is returned as it is.
pub fn explain_plain(reply: RawReply, path: &str) -> RawReply {
    let Some(errcode) = reply.errcode().filter(|c| hint(*c).is_some()) else { return reply };
    let Some(hinted) = reply.body.as_full().and_then(|b| with_hint(b, errcode)) else { return reply };
    tracing::warn!(path = %path, errcode, hint = hint(errcode).unwrap_or(""), "API security: refused by WeChat");
    RawReply::new(reply.status, "application/json".into(), Payload::from(hinted))
}

/// Decide on the reply to a signed call on `path`: verified and opened, a plain error or an unsigned binary
/// passed on, or refused.
pub(super) fn settle(
    keys: &SecureKeys,
    urlpath: &str,
    path: &str,
    reply: RawReply,
    now: i64,
) -> Result<(RawReply, Verdict), SecureError> {
    let refuse = |why: String| {
        tracing::warn!(path = %path, reason = %why, "API security: WeChat's reply did not verify");
        SecureError::Unverified(why)
    };
    if let Some(h) = reply.signed.clone() {
        let Some(body) = reply.body.as_full() else {
            return Err(refuse("a signed reply too large to verify".into()));
        };
        let opened = open_reply(keys, urlpath, &h, body, now).map_err(refuse)?;
        let verdict = match opened.rotated_to {
            Some(new_sn) => Verdict::DeprecatedCert { new_sn },
            None => Verdict::Verified,
        };
        let plain = RawReply::new(reply.status, "application/json".into(), Payload::from(opened.body));
        return Ok((plain, verdict));
    }
    if let Some(errcode) = reply.errcode() {
        return Ok((explain_plain(reply, path), Verdict::PlainError(errcode)));
    }
    if !(200..300).contains(&reply.status) {
        return Ok((reply, Verdict::PlainError(0)));
    }
    let is_json = reply.body.as_full().is_some_and(|b| json_object(b).is_some())
        || reply.content_type.contains("json")
        || reply.content_type.starts_with("text/");
    if is_json {
        return Err(refuse("an unsigned reply to a signed call".into()));
    }
    Ok((reply, Verdict::UnsignedBinary))
}
