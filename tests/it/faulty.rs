//! A store wrapper that fails chosen groups of operations on demand (fault injection).

use async_trait::async_trait;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use wafer_scf::store::*;

pub struct Faulty {
    inner: Arc<dyn Store>,
    /// Fail session reads and writes.
    pub sessions: AtomicBool,
    /// Fail credential reads and writes.
    pub credentials: AtomicBool,
    /// Panic on session reads (a bug deep in a handler).
    pub panic_sessions: AtomicBool,
    /// Written through the given store just before the next compare-and-swap of a sealed value (a concurrent
    /// writer landing between `reencrypt`'s read and its write).
    pub before_swap: std::sync::Mutex<Option<(Arc<dyn Store>, AppRecord)>>,
}

impl Faulty {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            sessions: AtomicBool::new(false),
            credentials: AtomicBool::new(false),
            panic_sessions: AtomicBool::new(false),
            before_swap: std::sync::Mutex::new(None),
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
impl Store for Faulty {
    fn backend(&self) -> &'static str {
        "fault"
    }
    async fn migrate(&self) -> StoreResult<Vec<i64>> {
        self.inner.migrate().await
    }
    async fn schema_status(&self) -> StoreResult<wafer_scf::store::SchemaStatus> {
        self.inner.schema_status().await
    }
    async fn fail_credential(
        &self,
        key: &str,
        owner: &str,
        f: &wafer_scf::store::FailedFetch<'_>,
    ) -> StoreResult<()> {
        self.inner.fail_credential(key, owner, f).await
    }
    async fn count_sessions(&self, appid: &str) -> StoreResult<i64> {
        self.inner.count_sessions(appid).await
    }
    async fn clear_credential_failures(&self, keys: &[String]) -> StoreResult<()> {
        self.inner.clear_credential_failures(keys).await
    }
    async fn take_force_budget(
        &self,
        key: &str,
        budget: &wafer_scf::store::ForceBudget,
    ) -> StoreResult<bool> {
        self.inner.take_force_budget(key, budget).await
    }
    async fn put_app(&self, a: &AppRecord) -> StoreResult<()> {
        self.inner.put_app(a).await
    }
    async fn get_app(&self, a: &str) -> StoreResult<Option<AppRecord>> {
        self.inner.get_app(a).await
    }
    async fn list_apps(&self) -> StoreResult<Vec<AppRecord>> {
        self.inner.list_apps().await
    }
    async fn remove_app(&self, a: &str) -> StoreResult<bool> {
        self.inner.remove_app(a).await
    }
    async fn create_session(&self, s: &SessionRecord, k: usize, n: i64) -> StoreResult<LoginOutcome> {
        Self::check(&self.sessions)?;
        self.inner.create_session(s, k, n).await
    }
    async fn import_session(&self, s: &SessionRecord) -> StoreResult<bool> {
        self.inner.import_session(s).await
    }
    fn open_session_key(&self, appid: &str, openid: &str, stored: &str) -> StoreResult<String> {
        self.inner.open_session_key(appid, openid, stored)
    }
    async fn get_session(&self, id: &str) -> StoreResult<Option<SessionView>> {
        if self.panic_sessions.load(Ordering::SeqCst) {
            panic!("injected panic in get_session");
        }
        Self::check(&self.sessions)?;
        self.inner.get_session(id).await
    }
    async fn touch_session(&self, id: &str, n: i64) -> StoreResult<()> {
        self.inner.touch_session(id, n).await
    }
    async fn set_user_info(&self, a: &str, o: &str, u: &str) -> StoreResult<()> {
        Self::check(&self.sessions)?;
        self.inner.set_user_info(a, o, u).await
    }
    async fn purge_expired_sessions(&self, n: i64) -> StoreResult<u64> {
        self.inner.purge_expired_sessions(n).await
    }
    async fn put_agent(&self, a: &AgentRecord) -> StoreResult<()> {
        self.inner.put_agent(a).await
    }
    async fn get_agent(&self, c: &str, a: &str) -> StoreResult<Option<AgentRecord>> {
        self.inner.get_agent(c, a).await
    }
    async fn list_agents(&self) -> StoreResult<Vec<AgentRecord>> {
        self.inner.list_agents().await
    }
    async fn remove_agent(&self, c: &str, a: &str) -> StoreResult<bool> {
        self.inner.remove_agent(c, a).await
    }
    async fn get_credential(&self, k: &str) -> StoreResult<Option<CredentialRow>> {
        Self::check(&self.credentials)?;
        self.inner.get_credential(k).await
    }
    async fn try_lease(&self, k: &str, o: &str, n: i64, u: i64) -> StoreResult<bool> {
        Self::check(&self.credentials)?;
        self.inner.try_lease(k, o, n, u).await
    }
    async fn put_credential(&self, k: &str, o: &str, f: &FetchedCredential<'_>) -> StoreResult<bool> {
        Self::check(&self.credentials)?;
        self.inner.put_credential(k, o, f).await
    }
    async fn release_lease(&self, k: &str, o: &str) -> StoreResult<()> {
        self.inner.release_lease(k, o).await
    }
    async fn block_credential(&self, k: &str, o: &str, u: i64, c: i64) -> StoreResult<()> {
        self.inner.block_credential(k, o, u, c).await
    }
    async fn import_credential(&self, k: &str, v: &str, e: i64, f: i64) -> StoreResult<()> {
        self.inner.import_credential(k, v, e, f).await
    }
    async fn delete_credentials(&self, keys: &[String]) -> StoreResult<()> {
        self.inner.delete_credentials(keys).await
    }
    async fn swap_sealed(&self, f: SealedField<'_>, o: &str, n: &str) -> StoreResult<bool> {
        let racer = self.before_swap.lock().unwrap().take();
        if let Some((store, app)) = racer {
            store.put_app(&app).await?;
        }
        self.inner.swap_sealed(f, o, n).await
    }
    async fn put_cos_key(&self, k: &CosKeyRecord) -> StoreResult<()> {
        self.inner.put_cos_key(k).await
    }
    async fn get_cos_key(&self, a: &str) -> StoreResult<Option<CosKeyRecord>> {
        self.inner.get_cos_key(a).await
    }
    async fn list_cos_keys(&self) -> StoreResult<Vec<CosKeyRecord>> {
        self.inner.list_cos_keys().await
    }
    async fn remove_cos_key(&self, a: &str) -> StoreResult<bool> {
        self.inner.remove_cos_key(a).await
    }
    async fn add_caller_key(&self, k: &CallerKeyRecord) -> StoreResult<()> {
        self.inner.add_caller_key(k).await
    }
    async fn caller_key_by_hash(&self, h: &str) -> StoreResult<Option<CallerKeyRecord>> {
        self.inner.caller_key_by_hash(h).await
    }
    async fn list_caller_keys(&self) -> StoreResult<Vec<CallerKeyRecord>> {
        self.inner.list_caller_keys().await
    }
    async fn revoke_caller_key(&self, n: &str, now: i64) -> StoreResult<bool> {
        self.inner.revoke_caller_key(n, now).await
    }
    async fn touch_caller_key(&self, n: &str, now: i64) -> StoreResult<()> {
        self.inner.touch_caller_key(n, now).await
    }
    async fn list_user_session_keys(
        &self,
        a: &str,
        l: usize,
    ) -> StoreResult<Vec<(String, String, String, String)>> {
        self.inner.list_user_session_keys(a, l).await
    }
    async fn set_user_session_key(&self, a: &str, o: &str, k: &str) -> StoreResult<()> {
        self.inner.set_user_session_key(a, o, k).await
    }
    async fn list_credentials(&self) -> StoreResult<Vec<CredentialRow>> {
        self.inner.list_credentials().await
    }
}
