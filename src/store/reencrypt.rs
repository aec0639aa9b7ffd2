//! `wafer-scf reencrypt`: every secret at rest sealed with the current master key — rows in the clear or under
//! `WAFER_MASTER_KEY_PREVIOUS` — while the servers keep running. Each value is replaced by compare-and-swap on the
//! stored value ([`super::SchemaStore::swap_sealed`]): a token refresh, a login's new session key or an admin change that lands
//! between the read and the write is never overwritten; the row is read again and sealed anew.

use super::sealed::{agent_aad, api_security_aad, app_aad, cos_aad, cred_aad, session_aad, Sealer};
use super::{SealedField, Storage, StoreError, StoreResult};

/// How often one value is read again after a conflicting write before `reencrypt` gives up on it.
const MAX_TRIES: usize = 8;

/// Counts of what `reencrypt` sealed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reencrypted {
    pub apps: usize,
    pub agents: usize,
    pub cos_keys: usize,
    pub api_security: usize,
    pub users: usize,
    pub credentials: usize,
    /// Values that changed under `reencrypt` and were read again (each one sealed in the end).
    pub retried: usize,
}

/// Seal every value of `raw` (the backend without the sealing layer) with `sealer`'s current key.
pub async fn reencrypt(raw: &Storage, sealer: &Sealer) -> StoreResult<Reencrypted> {
    let mut n = Reencrypted::default();
    for a in raw.registry.list_apps().await? {
        let field = SealedField::AppSecret { appid: &a.appid };
        n.apps +=
            usize::from(reseal(raw, sealer, field, &app_aad(&a.appid), a.secret, &mut n.retried).await?);
    }
    for a in raw.registry.list_agents().await? {
        let field = SealedField::AgentSecret { corpid: &a.corpid, agentid: &a.agentid };
        let aad = agent_aad(&a.corpid, &a.agentid);
        n.agents += usize::from(reseal(raw, sealer, field, &aad, a.secret, &mut n.retried).await?);
    }
    for k in raw.registry.list_cos_keys().await? {
        let field = SealedField::CosSecretKey { appid: &k.appid };
        let aad = cos_aad(&k.appid);
        n.cos_keys += usize::from(reseal(raw, sealer, field, &aad, k.secret_key, &mut n.retried).await?);
    }
    for k in raw.registry.list_api_security().await? {
        let field = SealedField::ApiSecurityKeys { appid: &k.appid };
        let aad = api_security_aad(&k.appid);
        n.api_security += usize::from(reseal(raw, sealer, field, &aad, k.secrets, &mut n.retried).await?);
    }
    for c in raw.credentials.list_credentials().await? {
        let Some(value) = c.value else { continue };
        let field = SealedField::Credential { key: &c.key };
        n.credentials +=
            usize::from(reseal(raw, sealer, field, &cred_aad(&c.key), value, &mut n.retried).await?);
    }
    let mut after = String::new();
    loop {
        let batch = raw.sessions.list_user_session_keys(&after, 500).await?;
        let Some(last) = batch.last() else { break };
        after = last.id.clone();
        for k in batch {
            let field = SealedField::SessionKey { id: &k.id };
            let aad = session_aad(&k.appid, &k.openid);
            n.users += usize::from(reseal(raw, sealer, field, &aad, k.session_key, &mut n.retried).await?);
        }
    }
    Ok(n)
}

/// Seal one value unless it already is under the current key; on a conflicting write, read it again and retry.
/// True when this call sealed it.
async fn reseal(
    raw: &Storage,
    sealer: &Sealer,
    field: SealedField<'_>,
    aad: &str,
    mut stored: String,
    retried: &mut usize,
) -> StoreResult<bool> {
    for _ in 0..MAX_TRIES {
        if sealer.is_current(aad, &stored) {
            return Ok(false);
        }
        let sealed = sealer.seal(aad, &sealer.open(aad, &stored)?)?;
        if raw.schema.swap_sealed(field, &stored, &sealed).await? {
            return Ok(true);
        }
        *retried += 1;
        match current(raw, field).await? {
            Some(now) => stored = now,
            None => return Ok(false), // removed in between: nothing left to seal
        }
    }
    Err(StoreError::new(
        raw.backend(),
        format!("{} kept changing while being sealed; run reencrypt again", what(field)),
    ))
}

/// The value stored at `field` now.
async fn current(raw: &Storage, field: SealedField<'_>) -> StoreResult<Option<String>> {
    Ok(match field {
        SealedField::AppSecret { appid } => raw.registry.get_app(appid).await?.map(|a| a.secret),
        SealedField::AgentSecret { corpid, agentid } => {
            raw.registry.get_agent(corpid, agentid).await?.map(|a| a.secret)
        }
        SealedField::CosSecretKey { appid } => raw.registry.get_cos_key(appid).await?.map(|k| k.secret_key),
        SealedField::ApiSecurityKeys { appid } => {
            raw.registry.get_api_security(appid).await?.map(|k| k.secrets)
        }
        SealedField::Credential { key } => raw.credentials.get_credential(key).await?.and_then(|c| c.value),
        SealedField::SessionKey { id } => raw.sessions.get_session(id).await?.map(|v| v.session.session_key),
    })
}

/// The row named for an error message (never a user's openid).
fn what(field: SealedField<'_>) -> String {
    match field {
        SealedField::AppSecret { appid } => format!("the secret of app {appid}"),
        SealedField::AgentSecret { corpid, agentid } => format!("the secret of agent {corpid}/{agentid}"),
        SealedField::CosSecretKey { appid } => format!("the COS key of {appid}"),
        SealedField::ApiSecurityKeys { appid } => format!("the API-security keys of {appid}"),
        SealedField::Credential { key } => format!("credential {key}"),
        SealedField::SessionKey { .. } => "a session key".to_owned(),
    }
}
