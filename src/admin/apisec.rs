//! `app api-security`: an app's keys for WeChat's API security registered (checked first: a bad key, PEM or
//! certificate is refused naming the field), replaced, or switched off. The reply shows SNs and certificate
//! expiry, never a key.

use super::ops::ApiSecurityPut;
use super::{AdminResult, Local};
use crate::apisec::{self, ApiSecurityInfo, KeyMaterial};
use crate::envelope::{ReturnCode, WaferError};
use crate::registry::RegistryError;
use crate::wechat::secure::KeyPart;
use serde::{Deserialize, Serialize};

/// What `app api-security` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiSecurityChange {
    pub appid: String,
    /// `on` (registered or replaced), `off` (removed) or `unchanged` (off, and it was off).
    pub outcome: String,
    pub api_security: Option<ApiSecurityInfo>,
}

/// The `para` field a key part came in.
pub fn field_of(part: KeyPart) -> String {
    match part {
        KeyPart::SymKey => "sym_key".into(),
        KeyPart::SymSn => "sym_sn".into(),
        KeyPart::PrivateKey => "private_key".into(),
        KeyPart::KeySn => "private_key_sn".into(),
        KeyPart::Cert(i) => format!("certs[{i}].pem"),
        KeyPart::CertSn(i) => format!("certs[{i}].sn"),
    }
}

/// The material of a registration, every field required (PARA_ERR naming the first missing one).
pub fn material(f: &ApiSecurityPut) -> Result<KeyMaterial, WaferError> {
    let missing =
        |name: &str| WaferError::para(name, "is required to switch API security on (or give off: true)");
    Ok(KeyMaterial {
        sym_key: f.sym_key.clone().ok_or_else(|| missing("sym_key"))?,
        sym_sn: f.sym_sn.clone().ok_or_else(|| missing("sym_sn"))?,
        private_key: f.private_key.clone().ok_or_else(|| missing("private_key"))?,
        private_key_sn: f.private_key_sn.clone().ok_or_else(|| missing("private_key_sn"))?,
        certs: f.certs.clone(),
    })
}

impl Local {
    pub(super) async fn put_api_security(&self, f: ApiSecurityPut) -> AdminResult<ApiSecurityChange> {
        let registry = &self.store.registry;
        if registry.get_app(&f.appid).await?.is_none() {
            let msg = format!("no app {}: add it first (with its secret)", f.appid);
            return Err(RegistryError::NotFound(msg).into());
        }
        let appid = f.appid.to_string();
        if f.off {
            let removed = registry.remove_api_security(&f.appid).await?;
            let outcome = if removed { "off" } else { "unchanged" };
            return Ok(ApiSecurityChange { appid, outcome: outcome.into(), api_security: None });
        }
        let now = self.clock.now();
        let mut rec = apisec::record(&f.appid, &material(&f)?, now).map_err(|e| {
            WaferError::new(ReturnCode::ParaErr, format!("para.{}: {}", field_of(e.part), e.reason))
        })?;
        if let Some(old) = registry.get_api_security(&f.appid).await? {
            rec.created_at = old.created_at;
        }
        registry.put_api_security(&rec).await?;
        Ok(ApiSecurityChange { appid, outcome: "on".into(), api_security: Some(apisec::info(&rec)) })
    }
}
