//! Secrets at rest: a layer over the kinds of storage that hold secrets ([`Sealed`]), sealing app secrets, agent secrets, COS SecretKeys, session keys and cached
//! tokens/tickets with AES-256-GCM under `WAFER_MASTER_KEY` (random 96-bit nonce; the row identity as associated
//! data, so a ciphertext moved to another row fails to open). Values written before a master key existed are read as
//! they are, and `wafer-scf reencrypt` upgrades them. Without a master key, values are stored in the clear, and
//! sealed values cannot be read (a clear error, never garbage sent upstream).

use super::*;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::{engine::general_purpose::STANDARD, Engine};

const PREFIX: &str = "enc1:";
const BACKEND: &str = "sealed";

/// Seals and opens values with the master key, if one is configured.
#[derive(Clone)]
pub struct Sealer {
    cipher: Option<Aes256Gcm>,
    /// `WAFER_MASTER_KEY_PREVIOUS`: read-only, for rows sealed before a rotation (until `reencrypt`).
    previous: Option<Aes256Gcm>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("enabled", &self.cipher.is_some())
            .field("previous", &self.previous.is_some())
            .finish()
    }
}

impl Sealer {
    /// No master key: values stay in the clear.
    pub fn disabled() -> Self {
        Self { cipher: None, previous: None }
    }

    /// Also open values sealed with `previous` (a key being rotated out). Writes always use the current key.
    pub fn with_previous(mut self, previous: Option<&Sealer>) -> Self {
        self.previous = previous.and_then(|p| p.cipher.clone());
        self
    }

    /// A master key given as base64 of exactly 32 bytes.
    pub fn from_base64(b64: &str) -> Result<Self, String> {
        let bytes =
            STANDARD.decode(b64.trim()).map_err(|_| "WAFER_MASTER_KEY is not valid base64".to_owned())?;
        if bytes.len() != 32 {
            return Err(format!(
                "WAFER_MASTER_KEY must be 32 bytes (base64 of 32 random bytes), got {}",
                bytes.len()
            ));
        }
        let cipher = Aes256Gcm::new_from_slice(&bytes)
            .map_err(|_| "WAFER_MASTER_KEY is not a valid key".to_owned())?;
        Ok(Self { cipher: Some(cipher), previous: None })
    }

    pub fn enabled(&self) -> bool {
        self.cipher.is_some()
    }

    /// Seal `plain` for the row identified by `aad`.
    pub fn seal(&self, aad: &str, plain: &str) -> StoreResult<String> {
        let Some(c) = &self.cipher else { return Ok(plain.to_owned()) };
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|e| StoreError::new(BACKEND, format!("no randomness: {e}")))?;
        let ct = c
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain.as_bytes(), aad: aad.as_bytes() })
            .map_err(|_| StoreError::new(BACKEND, "encryption failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(format!("{PREFIX}{}", STANDARD.encode(out)))
    }

    /// Open a stored value of the row identified by `aad`. Unsealed values are returned as they are. Errors name
    /// the row without user identifiers.
    pub fn open(&self, aad: &str, stored: &str) -> StoreResult<String> {
        self.open_with(aad, stored).map(|(plain, _)| plain)
    }

    /// Whether a stored value is sealed with the current key (what `reencrypt` leaves alone).
    pub fn is_current(&self, aad: &str, stored: &str) -> bool {
        Self::is_sealed(stored) && matches!(self.open_with(aad, stored), Ok((_, true)))
    }

    /// The plain value, and whether the current key (rather than the previous one) opened it.
    fn open_with(&self, aad: &str, stored: &str) -> StoreResult<(String, bool)> {
        let Some(b64) = stored.strip_prefix(PREFIX) else { return Ok((stored.to_owned(), false)) };
        let row = row_label(aad);
        let Some(c) = &self.cipher else {
            return Err(StoreError::new(
                BACKEND,
                format!("{row} is encrypted but WAFER_MASTER_KEY is not set"),
            ));
        };
        let raw = STANDARD
            .decode(b64)
            .map_err(|_| StoreError::new(BACKEND, format!("{row}: sealed value is corrupt")))?;
        if raw.len() < 12 + 16 {
            return Err(StoreError::new(BACKEND, format!("{row}: sealed value is corrupt")));
        }
        let (nonce, ct) = raw.split_at(12);
        let payload = || Payload { msg: ct, aad: aad.as_bytes() };
        let (plain, current) = match c.decrypt(Nonce::from_slice(nonce), payload()) {
            Ok(p) => (p, true),
            Err(_) => match &self.previous {
                Some(prev) => {
                    (prev.decrypt(Nonce::from_slice(nonce), payload()).map_err(|_| failed(&row))?, false)
                }
                None => return Err(failed(&row)),
            },
        };
        let plain = String::from_utf8(plain)
            .map_err(|_| StoreError::new(BACKEND, format!("{row}: sealed value is not text")))?;
        Ok((plain, current))
    }

    /// Whether a stored value is sealed.
    pub fn is_sealed(stored: &str) -> bool {
        stored.starts_with(PREFIX)
    }
}

fn failed(row: &str) -> StoreError {
    StoreError::new(
        BACKEND,
        format!("{row}: sealed value failed authentication (wrong key, or moved from another row)"),
    )
}

/// A row's name for error messages: a session key's names its app, never its user.
fn row_label(aad: &str) -> String {
    match aad.strip_prefix("session/").and_then(|r| r.split_once('/')) {
        Some((appid, _)) => format!("a session key of app {appid}"),
        None => aad.to_owned(),
    }
}

pub(super) fn app_aad(appid: &AppId) -> String {
    format!("app/{appid}/secret")
}
pub(super) fn agent_aad(corpid: &CorpId, agentid: &AgentId) -> String {
    format!("agent/{corpid}/{agentid}/secret")
}
pub(super) fn cos_aad(appid: &CosAppId) -> String {
    format!("cos/{appid}/secret_key")
}
/// A session key belongs to the user (every session of (appid, openid) holds the same one).
pub(super) fn api_security_aad(appid: &AppId) -> String {
    format!("apisec/{appid}/keys")
}
pub(super) fn session_aad(appid: &AppId, openid: &str) -> String {
    format!("session/{appid}/{openid}/session_key")
}
pub(super) fn cred_aad(key: &str) -> String {
    format!("credential/{key}")
}

/// The sealing layer over a backend: wraps the kinds that hold secrets (sessions' keys, cached credentials, the
/// registry's secrets) and leaves caller keys (stored hashed) and the schema as they are.
pub struct Sealed {
    inner: Storage,
    sealer: Sealer,
    /// No master key, but the database holds sealed secrets: writing a secret in the clear next to them would
    /// mix the two silently, so secret-bearing writes are refused.
    refuse_clear: bool,
}

impl Sealed {
    pub fn new(inner: Storage, sealer: Sealer) -> Self {
        Self { inner, sealer, refuse_clear: false }
    }

    /// Like [`Sealed::new`], but without a master key it first looks for sealed secrets and, if there are any,
    /// refuses to write secrets in the clear.
    pub async fn guarded(inner: Storage, sealer: Sealer) -> StoreResult<Self> {
        let mut refuse_clear = false;
        if !sealer.enabled() {
            let r = &inner.registry;
            refuse_clear = r.list_apps().await?.iter().any(|a| Sealer::is_sealed(&a.secret))
                || r.list_agents().await?.iter().any(|a| Sealer::is_sealed(&a.secret))
                || r.list_cos_keys().await?.iter().any(|k| Sealer::is_sealed(&k.secret_key))
                || r.list_api_security().await?.iter().any(|k| Sealer::is_sealed(&k.secrets));
        }
        Ok(Self { inner, sealer, refuse_clear })
    }

    /// The storage with this layer in front of the kinds that hold secrets.
    pub fn into_storage(self) -> Storage {
        let (keys, schema) = (self.inner.keys.clone(), self.inner.schema.clone());
        let me = Arc::new(self);
        Storage { sessions: me.clone(), credentials: me.clone(), registry: me, keys, schema }
    }

    fn seal(&self, aad: &str, plain: &str) -> StoreResult<String> {
        if self.refuse_clear {
            return Err(StoreError::new(
                BACKEND,
                "this database holds sealed secrets but WAFER_MASTER_KEY is not set: refusing to store a secret in the clear",
            ));
        }
        self.sealer.seal(aad, plain)
    }

    fn open_app(&self, mut a: AppRecord) -> StoreResult<AppRecord> {
        a.secret = self.sealer.open(&app_aad(&a.appid), &a.secret)?;
        Ok(a)
    }

    fn open_agent(&self, mut a: AgentRecord) -> StoreResult<AgentRecord> {
        a.secret = self.sealer.open(&agent_aad(&a.corpid, &a.agentid), &a.secret)?;
        Ok(a)
    }

    fn open_cos(&self, mut k: CosKeyRecord) -> StoreResult<CosKeyRecord> {
        k.secret_key = self.sealer.open(&cos_aad(&k.appid), &k.secret_key)?;
        Ok(k)
    }

    fn open_api_security(&self, mut r: ApiSecurityRecord) -> StoreResult<ApiSecurityRecord> {
        r.secrets = self.sealer.open(&api_security_aad(&r.appid), &r.secrets)?;
        Ok(r)
    }

    fn open_cred(&self, mut r: CredentialRow) -> StoreResult<CredentialRow> {
        if let Some(v) = &r.value {
            r.value = Some(self.sealer.open(&cred_aad(&r.key), v)?);
        }
        Ok(r)
    }
}

/// Session keys are sealed on the way in and stay sealed on the way out until [`SessionStore::open_session_key`]:
/// `auth` never needs them.
#[async_trait]
impl SessionStore for Sealed {
    async fn create_session(&self, s: &SessionRecord, keep: usize, now: i64) -> StoreResult<LoginOutcome> {
        let key = self.seal(&session_aad(&s.appid, &s.openid), &s.session_key)?;
        self.inner.sessions.create_session(&SessionRecord { session_key: key, ..s.clone() }, keep, now).await
    }
    async fn import_session(&self, session: &SessionRecord) -> StoreResult<bool> {
        let mut s = session.clone();
        s.session_key = self.seal(&session_aad(&s.appid, &s.openid), &s.session_key)?;
        self.inner.sessions.import_session(&s).await
    }
    async fn get_session(&self, id: &str) -> StoreResult<Option<SessionView>> {
        self.inner.sessions.get_session(id).await
    }
    fn open_session_key(&self, appid: &AppId, openid: &str, stored: &str) -> StoreResult<String> {
        self.sealer.open(&session_aad(appid, openid), stored)
    }
    async fn touch_session(&self, id: &str, now: i64) -> StoreResult<()> {
        self.inner.sessions.touch_session(id, now).await
    }
    async fn set_user_info(&self, appid: &AppId, openid: &str, user_info: &str) -> StoreResult<()> {
        self.inner.sessions.set_user_info(appid, openid, user_info).await
    }
    async fn purge_expired_sessions(&self, now: i64) -> StoreResult<u64> {
        self.inner.sessions.purge_expired_sessions(now).await
    }
    /// As stored (sealed or not): what `reencrypt` reads.
    async fn list_user_session_keys(&self, after: &str, limit: usize) -> StoreResult<Vec<UserSessionKey>> {
        self.inner.sessions.list_user_session_keys(after, limit).await
    }
    async fn set_user_session_key(&self, appid: &AppId, openid: &str, session_key: &str) -> StoreResult<()> {
        let sealed = self.seal(&session_aad(appid, openid), session_key)?;
        self.inner.sessions.set_user_session_key(appid, openid, &sealed).await
    }
    async fn count_sessions(&self, appid: &AppId) -> StoreResult<i64> {
        self.inner.sessions.count_sessions(appid).await
    }
}

/// Values are sealed on `put` and `import` and opened on every read; the coordination state is not secret.
#[async_trait]
impl CredentialStore for Sealed {
    async fn get_credential(&self, key: &str) -> StoreResult<Option<CredentialRow>> {
        self.inner.credentials.get_credential(key).await?.map(|r| self.open_cred(r)).transpose()
    }
    async fn list_credentials(&self) -> StoreResult<Vec<CredentialRow>> {
        self.inner.credentials.list_credentials().await?.into_iter().map(|r| self.open_cred(r)).collect()
    }
    async fn try_lease(&self, key: &str, owner: &str, now_ms: i64, until: i64) -> StoreResult<Option<i64>> {
        self.inner.credentials.try_lease(key, owner, now_ms, until).await
    }
    async fn renew_lease(&self, key: &str, lease: Lease<'_>, until_ms: i64) -> StoreResult<bool> {
        self.inner.credentials.renew_lease(key, lease, until_ms).await
    }
    async fn put_credential(&self, key: &str, lease: Lease<'_>, f: &NewValue<'_>) -> StoreResult<bool> {
        let sealed = self.seal(&cred_aad(key), f.value)?;
        self.inner.credentials.put_credential(key, lease, &NewValue { value: &sealed, ..f.clone() }).await
    }
    async fn release_lease(&self, key: &str, lease: Lease<'_>) -> StoreResult<()> {
        self.inner.credentials.release_lease(key, lease).await
    }
    async fn fail_credential(&self, key: &str, lease: Lease<'_>, f: &FailedFetch<'_>) -> StoreResult<()> {
        self.inner.credentials.fail_credential(key, lease, f).await
    }
    async fn clear_credential_failures(&self, keys: &[String]) -> StoreResult<()> {
        self.inner.credentials.clear_credential_failures(keys).await
    }
    async fn take_force_budget(&self, key: &str, budget: &ForceBudget) -> StoreResult<bool> {
        self.inner.credentials.take_force_budget(key, budget).await
    }
    async fn block_credential(&self, key: &str, lease: Lease<'_>, until: i64, code: i64) -> StoreResult<()> {
        self.inner.credentials.block_credential(key, lease, until, code).await
    }
    async fn import_credential(&self, key: &str, f: &NewValue<'_>) -> StoreResult<()> {
        let sealed = self.seal(&cred_aad(key), f.value)?;
        self.inner.credentials.import_credential(key, &NewValue { value: &sealed, ..f.clone() }).await
    }
    async fn delete_credentials(&self, keys: &[String]) -> StoreResult<()> {
        self.inner.credentials.delete_credentials(keys).await
    }
}

/// App and agent secrets and COS SecretKeys are sealed on `put` and opened on every read.
#[async_trait]
impl RegistryStore for Sealed {
    async fn put_app(&self, app: &AppRecord) -> StoreResult<()> {
        let mut a = app.clone();
        a.secret = self.seal(&app_aad(&a.appid), &a.secret)?;
        self.inner.registry.put_app(&a).await
    }
    async fn get_app(&self, appid: &AppId) -> StoreResult<Option<AppRecord>> {
        self.inner.registry.get_app(appid).await?.map(|a| self.open_app(a)).transpose()
    }
    async fn list_apps(&self) -> StoreResult<Vec<AppRecord>> {
        self.inner.registry.list_apps().await?.into_iter().map(|a| self.open_app(a)).collect()
    }
    async fn remove_app(&self, appid: &AppId) -> StoreResult<bool> {
        self.inner.registry.remove_app(appid).await
    }
    async fn put_agent(&self, agent: &AgentRecord) -> StoreResult<()> {
        let mut a = agent.clone();
        a.secret = self.seal(&agent_aad(&a.corpid, &a.agentid), &a.secret)?;
        self.inner.registry.put_agent(&a).await
    }
    async fn get_agent(&self, corpid: &CorpId, agentid: &AgentId) -> StoreResult<Option<AgentRecord>> {
        self.inner.registry.get_agent(corpid, agentid).await?.map(|a| self.open_agent(a)).transpose()
    }
    async fn list_agents(&self) -> StoreResult<Vec<AgentRecord>> {
        self.inner.registry.list_agents().await?.into_iter().map(|a| self.open_agent(a)).collect()
    }
    async fn remove_agent(&self, corpid: &CorpId, agentid: &AgentId) -> StoreResult<bool> {
        self.inner.registry.remove_agent(corpid, agentid).await
    }
    async fn put_cos_key(&self, key: &CosKeyRecord) -> StoreResult<()> {
        let mut k = key.clone();
        k.secret_key = self.seal(&cos_aad(&k.appid), &k.secret_key)?;
        self.inner.registry.put_cos_key(&k).await
    }
    async fn get_cos_key(&self, appid: &CosAppId) -> StoreResult<Option<CosKeyRecord>> {
        self.inner.registry.get_cos_key(appid).await?.map(|k| self.open_cos(k)).transpose()
    }
    async fn list_cos_keys(&self) -> StoreResult<Vec<CosKeyRecord>> {
        self.inner.registry.list_cos_keys().await?.into_iter().map(|k| self.open_cos(k)).collect()
    }
    async fn remove_cos_key(&self, appid: &CosAppId) -> StoreResult<bool> {
        self.inner.registry.remove_cos_key(appid).await
    }
    async fn put_api_security(&self, rec: &ApiSecurityRecord) -> StoreResult<()> {
        let mut r = rec.clone();
        r.secrets = self.seal(&api_security_aad(&r.appid), &r.secrets)?;
        self.inner.registry.put_api_security(&r).await
    }
    async fn get_api_security(&self, appid: &AppId) -> StoreResult<Option<ApiSecurityRecord>> {
        self.inner.registry.get_api_security(appid).await?.map(|r| self.open_api_security(r)).transpose()
    }
    async fn list_api_security(&self) -> StoreResult<Vec<ApiSecurityRecord>> {
        let rows = self.inner.registry.list_api_security().await?;
        rows.into_iter().map(|r| self.open_api_security(r)).collect()
    }
    async fn remove_api_security(&self, appid: &AppId) -> StoreResult<bool> {
        self.inner.registry.remove_api_security(appid).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

    #[test]
    fn sealing_round_trips_and_binds_the_row() {
        let s = Sealer::from_base64(KEY).unwrap();
        let sealed = s.seal("app/wx1/secret", "TOPSECRET").unwrap();
        assert!(Sealer::is_sealed(&sealed));
        assert!(!sealed.contains("TOPSECRET"));
        assert_ne!(sealed, s.seal("app/wx1/secret", "TOPSECRET").unwrap(), "random nonce");
        assert_eq!(s.open("app/wx1/secret", &sealed).unwrap(), "TOPSECRET");
        assert!(s.open("app/wx2/secret", &sealed).unwrap_err().message.contains("moved"));
        assert_eq!(s.open("app/wx1/secret", "legacy-plain").unwrap(), "legacy-plain");
        assert!(Sealer::disabled()
            .open("app/wx1/secret", &sealed)
            .unwrap_err()
            .message
            .contains("WAFER_MASTER_KEY"));
        let other = Sealer::from_base64("ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=").unwrap();
        assert!(other.open("app/wx1/secret", &sealed).is_err());
    }

    #[test]
    fn bad_master_keys_are_refused() {
        assert!(Sealer::from_base64("not base64!").is_err());
        assert!(Sealer::from_base64("c2hvcnQ=").unwrap_err().contains("32 bytes"));
    }
}
