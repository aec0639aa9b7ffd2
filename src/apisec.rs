//! An app's keys for WeChat's API security: the operator's material checked ([`SecureKeys::parse`]) and turned into
//! a stored record (secrets sealed by the storage layer), what `app list` shows of it (SNs and expiry, never a
//! key), and the per-process cache the outgoing calls read ([`KeyCache`]): parsed keys per app, re-read every
//! [`KEYS_TTL_SECS`] and dropped at once when this process changes them; the certificate rotations seen.

use crate::crypto::Secret;
use crate::envelope::{ReturnCode, WaferError};
use crate::ids::AppId;
use crate::store::{ApiSecurityRecord, Storage};
use crate::wechat::secure::{KeyError, KeyPart, SecureKeys, SecurePaths};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// How long parsed keys (or their absence) are used before storage is read again.
pub const KEYS_TTL_SECS: i64 = 10;

/// One platform certificate as given: the SN the console shows beside it, and its PEM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertInput {
    pub sn: String,
    pub pem: String,
}

/// The key material an operator registers. Secrets are [`Secret`]s: `Debug` never shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyMaterial {
    /// The symmetric key, base64 of 32 bytes.
    pub sym_key: Secret,
    pub sym_sn: String,
    /// The RSA private key, PKCS#1 or PKCS#8 PEM.
    pub private_key: Secret,
    pub private_key_sn: String,
    /// One platform certificate, or two during a rotation.
    pub certs: Vec<CertInput>,
}

#[derive(Serialize, Deserialize)]
struct StoredSecrets {
    sym_key: String,
    private_key: String,
}

/// Check `m` for `appid` and make the record to store; the error names the part that is wrong.
pub fn record(appid: &AppId, m: &KeyMaterial, now: i64) -> Result<ApiSecurityRecord, KeyError> {
    let certs: Vec<(String, String)> = m.certs.iter().map(|c| (c.sn.clone(), c.pem.clone())).collect();
    let keys = SecureKeys::parse(
        appid,
        m.sym_key.expose(),
        &m.sym_sn,
        m.private_key.expose(),
        &m.private_key_sn,
        &certs,
    )?;
    let secrets = StoredSecrets {
        sym_key: m.sym_key.expose().trim().to_owned(),
        private_key: m.private_key.expose().to_owned(),
    };
    let stored_certs: Vec<CertInput> = keys
        .certs
        .iter()
        .zip(&m.certs)
        .map(|(parsed, given)| CertInput { sn: parsed.sn.clone(), pem: given.pem.clone() })
        .collect();
    let json = |v: serde_json::Result<String>| {
        v.map_err(|e| KeyError { part: KeyPart::SymKey, reason: format!("could not be stored: {e}") })
    };
    Ok(ApiSecurityRecord {
        appid: appid.clone(),
        sym_sn: keys.sym_sn.clone(),
        key_sn: keys.key_sn.clone(),
        secrets: json(serde_json::to_string(&secrets))?,
        certs: json(serde_json::to_string(&stored_certs))?,
        created_at: now,
        updated_at: now,
    })
}

/// The stored record, ready to use.
pub fn keys_of(rec: &ApiSecurityRecord) -> Result<SecureKeys, String> {
    let secrets: StoredSecrets =
        serde_json::from_str(&rec.secrets).map_err(|_| "unreadable keys".to_owned())?;
    let certs: Vec<CertInput> =
        serde_json::from_str(&rec.certs).map_err(|_| "unreadable certificates".to_owned())?;
    let certs: Vec<(String, String)> = certs.into_iter().map(|c| (c.sn, c.pem)).collect();
    SecureKeys::parse(&rec.appid, &secrets.sym_key, &rec.sym_sn, &secrets.private_key, &rec.key_sn, &certs)
        .map_err(|e| e.to_string())
}

/// A platform certificate as `app list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertInfo {
    pub sn: String,
    /// Unix seconds.
    pub expires_at: i64,
}

/// An app's API security as shown: on, with its SNs and certificates (never a key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiSecurityInfo {
    pub sym_sn: String,
    pub key_sn: String,
    pub certs: Vec<CertInfo>,
}

/// What is shown of a stored record (certificates that cannot be read show expiry 0).
pub fn info(rec: &ApiSecurityRecord) -> ApiSecurityInfo {
    let certs: Vec<CertInput> = serde_json::from_str(&rec.certs).unwrap_or_default();
    let certs = certs
        .into_iter()
        .map(|c| CertInfo {
            expires_at: crate::crypto::pki::Certificate::from_pem(&c.pem).map_or(0, |p| p.not_after),
            sn: c.sn,
        })
        .collect();
    ApiSecurityInfo { sym_sn: rec.sym_sn.clone(), key_sn: rec.key_sn.clone(), certs }
}

type Cached = (i64, Option<Arc<SecureKeys>>);

/// Parsed keys per app for the outgoing calls, and the paths that take them.
#[derive(Default)]
pub struct KeyCache {
    pub paths: SecurePaths,
    map: Mutex<HashMap<AppId, Cached>>,
    /// Apps whose replies are signed by a certificate not registered here yet: appid → the new SN.
    rotations: Mutex<HashMap<AppId, String>>,
}

impl KeyCache {
    pub fn new(paths: SecurePaths) -> Self {
        Self { paths, ..Self::default() }
    }

    /// The keys of `appid` for a call to `path`: `None` when the path does not take API security or the app has
    /// no keys. Keys that no longer parse fail the call (a plain call would be refused by WeChat anyway).
    pub async fn for_call(
        &self,
        store: &Storage,
        appid: &AppId,
        path: &str,
        now: i64,
    ) -> Result<Option<Arc<SecureKeys>>, WaferError> {
        if !self.paths.covers(path) {
            return Ok(None);
        }
        let hit = self.lock().get(appid).filter(|(at, _)| now - at < KEYS_TTL_SECS).map(|(_, k)| k.clone());
        if let Some(keys) = hit {
            return Ok(keys);
        }
        let rec = store.registry.get_api_security(appid).await.map_err(WaferError::db)?;
        let keys = match rec.as_ref().map(keys_of).transpose() {
            Ok(keys) => keys.map(Arc::new),
            Err(why) => {
                tracing::error!(appid = %appid, error = %why, "API security: the stored keys cannot be used");
                return Err(WaferError::new(
                    ReturnCode::InitAppinfoErr,
                    format!("the API-security keys of {appid} cannot be used ({why}): register them again"),
                ));
            }
        };
        self.lock().insert(appid.clone(), (now, keys.clone()));
        Ok(keys)
    }

    /// This process changed `appid`'s keys (or removed the app): read them again on the next call.
    pub fn forget(&self, appid: &AppId) {
        self.lock().remove(appid);
        self.rotations.lock().unwrap_or_else(|p| p.into_inner()).remove(appid);
    }

    /// WeChat signs `appid`'s replies with `new_sn`, not registered here. True the first time it is seen.
    pub fn note_rotation(&self, appid: &AppId, new_sn: &str) -> bool {
        let mut r = self.rotations.lock().unwrap_or_else(|p| p.into_inner());
        r.insert(appid.clone(), new_sn.to_owned()).as_deref() != Some(new_sn)
    }

    /// The rotations seen by this process: `(appid, new certificate SN)`.
    pub fn rotations(&self) -> Vec<(String, String)> {
        let r = self.rotations.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = r.iter().map(|(a, sn)| (a.to_string(), sn.clone())).collect();
        v.sort();
        v
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AppId, Cached>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}
