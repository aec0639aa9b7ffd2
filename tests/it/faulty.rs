//! Fault injection: a layer over the session and credential stores (the kinds tests break) that fails chosen
//! groups of operations on demand, and over the schema's compare-and-swap (a concurrent writer in between).

use async_trait::async_trait;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use wafer_scf::store::*;

pub struct Faulty {
    inner: Storage,
    /// Fail session reads and writes.
    pub sessions: AtomicBool,
    /// Fail credential reads and writes.
    pub credentials: AtomicBool,
    /// Panic on session reads (a bug deep in a handler).
    pub panic_sessions: AtomicBool,
    /// Written through the given storage just before the next compare-and-swap of a sealed value (a concurrent
    /// writer landing between `reencrypt`'s read and its write).
    pub before_swap: std::sync::Mutex<Option<(Storage, AppRecord)>>,
}

impl Faulty {
    pub fn new(inner: Storage) -> Arc<Self> {
        Arc::new(Self {
            inner,
            sessions: AtomicBool::new(false),
            credentials: AtomicBool::new(false),
            panic_sessions: AtomicBool::new(false),
            before_swap: std::sync::Mutex::new(None),
        })
    }

    /// The storage with this layer in front of its sessions, credentials and schema.
    pub fn storage(self: &Arc<Self>) -> Storage {
        Storage {
            sessions: self.clone(),
            credentials: self.clone(),
            schema: self.clone(),
            ..self.inner.clone()
        }
    }

    fn check(flag: &AtomicBool) -> StoreResult<()> {
        if flag.load(Ordering::SeqCst) {
            Err(StoreError::new("fault", "injected failure"))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl SessionStore for Faulty {
    async fn create_session(&self, s: &SessionRecord, k: usize, n: i64) -> StoreResult<LoginOutcome> {
        Self::check(&self.sessions)?;
        self.inner.sessions.create_session(s, k, n).await
    }
    async fn import_session(&self, s: &SessionRecord) -> StoreResult<bool> {
        self.inner.sessions.import_session(s).await
    }
    async fn get_session(&self, id: &str) -> StoreResult<Option<SessionView>> {
        if self.panic_sessions.load(Ordering::SeqCst) {
            panic!("injected panic in get_session");
        }
        Self::check(&self.sessions)?;
        self.inner.sessions.get_session(id).await
    }
    fn open_session_key(&self, appid: &AppId, openid: &str, stored: &str) -> StoreResult<String> {
        self.inner.sessions.open_session_key(appid, openid, stored)
    }
    async fn touch_session(&self, id: &str, n: i64) -> StoreResult<()> {
        self.inner.sessions.touch_session(id, n).await
    }
    async fn set_user_info(&self, a: &AppId, o: &str, u: &str) -> StoreResult<()> {
        Self::check(&self.sessions)?;
        self.inner.sessions.set_user_info(a, o, u).await
    }
    async fn purge_expired_sessions(&self, n: i64) -> StoreResult<u64> {
        self.inner.sessions.purge_expired_sessions(n).await
    }
    async fn list_user_session_keys(&self, a: &str, l: usize) -> StoreResult<Vec<UserSessionKey>> {
        self.inner.sessions.list_user_session_keys(a, l).await
    }
    async fn set_user_session_key(&self, a: &AppId, o: &str, k: &str) -> StoreResult<()> {
        self.inner.sessions.set_user_session_key(a, o, k).await
    }
    async fn count_sessions(&self, appid: &AppId) -> StoreResult<i64> {
        self.inner.sessions.count_sessions(appid).await
    }
}

#[async_trait]
impl CredentialStore for Faulty {
    async fn get_credential(&self, k: &str) -> StoreResult<Option<CredentialRow>> {
        Self::check(&self.credentials)?;
        self.inner.credentials.get_credential(k).await
    }
    async fn list_credentials(&self) -> StoreResult<Vec<CredentialRow>> {
        self.inner.credentials.list_credentials().await
    }
    async fn try_lease(&self, k: &str, o: &str, n: i64, u: i64) -> StoreResult<Option<i64>> {
        Self::check(&self.credentials)?;
        self.inner.credentials.try_lease(k, o, n, u).await
    }
    async fn renew_lease(&self, k: &str, l: Lease<'_>, u: i64) -> StoreResult<bool> {
        Self::check(&self.credentials)?;
        self.inner.credentials.renew_lease(k, l, u).await
    }
    async fn put_credential(&self, k: &str, l: Lease<'_>, f: &NewValue<'_>) -> StoreResult<bool> {
        Self::check(&self.credentials)?;
        self.inner.credentials.put_credential(k, l, f).await
    }
    async fn release_lease(&self, k: &str, l: Lease<'_>) -> StoreResult<()> {
        self.inner.credentials.release_lease(k, l).await
    }
    async fn fail_credential(&self, k: &str, l: Lease<'_>, f: &FailedFetch<'_>) -> StoreResult<()> {
        self.inner.credentials.fail_credential(k, l, f).await
    }
    async fn clear_credential_failures(&self, keys: &[String]) -> StoreResult<()> {
        self.inner.credentials.clear_credential_failures(keys).await
    }
    async fn take_force_budget(&self, k: &str, b: &ForceBudget) -> StoreResult<bool> {
        self.inner.credentials.take_force_budget(k, b).await
    }
    async fn block_credential(&self, k: &str, l: Lease<'_>, u: i64, c: i64) -> StoreResult<()> {
        self.inner.credentials.block_credential(k, l, u, c).await
    }
    async fn import_credential(&self, k: &str, f: &NewValue<'_>) -> StoreResult<()> {
        self.inner.credentials.import_credential(k, f).await
    }
    async fn delete_credentials(&self, keys: &[String]) -> StoreResult<()> {
        self.inner.credentials.delete_credentials(keys).await
    }
}

#[async_trait]
impl SchemaStore for Faulty {
    fn backend(&self) -> &'static str {
        "fault"
    }
    async fn migrate(&self) -> StoreResult<Vec<i64>> {
        self.inner.schema.migrate().await
    }
    async fn schema_status(&self) -> StoreResult<SchemaStatus> {
        self.inner.schema.schema_status().await
    }
    async fn swap_sealed(&self, f: SealedField<'_>, o: &str, n: &str) -> StoreResult<bool> {
        let racer = self.before_swap.lock().unwrap().take();
        if let Some((store, app)) = racer {
            store.registry.put_app(&app).await?;
        }
        self.inner.schema.swap_sealed(f, o, n).await
    }
}
