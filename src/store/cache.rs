//! A bounded in-process cache of sessions in front of a [`Store`], so an auth on a hot session needs no storage
//! read. Entries live [`TTL_SECS`] at most, and at most [`MAX_ENTRIES`] are kept (the cache is emptied when full).
//! Every write that changes sessions *through this process* — a login (new session, pruned oldest sessions, a
//! rotated session key), a stored profile, an auth's touch, a purge, an app written or removed — drops the entries
//! it affects at once. A write made by another process (another instance, the CLI) is seen here within
//! [`TTL_SECS`]: that is the staleness window, documented in the README.

use super::*;
use std::collections::HashMap;
use std::sync::Mutex;

/// Longest an entry is served from memory.
pub const TTL_SECS: i64 = 2;
/// Most sessions kept in memory.
pub const MAX_ENTRIES: usize = 20_000;

struct Entry {
    view: SessionView,
    loaded_at: i64,
}

#[derive(Default)]
struct Cache {
    by_id: HashMap<String, Entry>,
    /// (appid, openid) → session ids cached for that user, so a user's writes drop exactly their entries.
    by_user: HashMap<(String, String), Vec<String>>,
    /// Bumped by every invalidation: a read that started before one does not fill the cache.
    generation: u64,
}

impl Cache {
    fn drop_user(&mut self, appid: &str, openid: &str) {
        self.generation += 1;
        if let Some(ids) = self.by_user.remove(&(appid.to_owned(), openid.to_owned())) {
            for id in ids {
                self.by_id.remove(&id);
            }
        }
    }

    fn clear(&mut self) {
        self.generation += 1;
        self.by_id.clear();
        self.by_user.clear();
    }
}

/// The caching wrapper.
pub struct SessionCache {
    inner: Arc<dyn Store>,
    clock: Arc<dyn crate::clock::Clock>,
    cache: Mutex<Cache>,
}

impl SessionCache {
    pub fn new(inner: Arc<dyn Store>, clock: Arc<dyn crate::clock::Clock>) -> Self {
        Self { inner, clock, cache: Mutex::new(Cache::default()) }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Store for SessionCache {
    async fn get_session(&self, id: &str) -> StoreResult<Option<SessionView>> {
        let now = self.clock.now();
        let generation = {
            let c = self.cache();
            if let Some(e) = c.by_id.get(id).filter(|e| now - e.loaded_at < TTL_SECS && now >= e.loaded_at) {
                return Ok(Some(e.view.clone()));
            }
            c.generation
        };
        let view = self.inner.get_session(id).await?;
        let mut c = self.cache();
        match &view {
            // Something changed sessions while this read was in flight: do not keep what it saw.
            Some(_) if c.generation != generation => {}
            Some(v) => {
                if c.by_id.len() >= MAX_ENTRIES {
                    c.clear();
                }
                let user = (v.session.appid.clone(), v.session.openid.clone());
                let ids = c.by_user.entry(user).or_default();
                if !ids.iter().any(|x| x == id) {
                    ids.push(id.to_owned());
                }
                c.by_id.insert(id.to_owned(), Entry { view: v.clone(), loaded_at: now });
            }
            None => {
                c.by_id.remove(id);
            }
        }
        Ok(view)
    }
    fn open_session_key(&self, appid: &str, openid: &str, stored: &str) -> StoreResult<String> {
        self.inner.open_session_key(appid, openid, stored)
    }
    async fn touch_session(&self, id: &str, now: i64) -> StoreResult<()> {
        self.inner.touch_session(id, now).await?;
        if let Some(e) = self.cache().by_id.get_mut(id) {
            e.view.session.last_visit_at = e.view.session.last_visit_at.max(now);
        }
        Ok(())
    }
    async fn set_user_info(&self, appid: &str, openid: &str, user_info: &str) -> StoreResult<()> {
        let r = self.inner.set_user_info(appid, openid, user_info).await;
        self.cache().drop_user(appid, openid);
        r
    }
    async fn set_user_session_key(&self, appid: &str, openid: &str, session_key: &str) -> StoreResult<()> {
        let r = self.inner.set_user_session_key(appid, openid, session_key).await;
        self.cache().drop_user(appid, openid);
        r
    }
    async fn create_session(
        &self,
        session: &SessionRecord,
        keep: usize,
        now: i64,
    ) -> StoreResult<LoginOutcome> {
        let r = self.inner.create_session(session, keep, now).await;
        self.cache().drop_user(&session.appid, &session.openid);
        r
    }
    async fn import_session(&self, session: &SessionRecord) -> StoreResult<bool> {
        let r = self.inner.import_session(session).await;
        self.cache().drop_user(&session.appid, &session.openid);
        r
    }
    async fn purge_expired_sessions(&self, now: i64) -> StoreResult<u64> {
        let r = self.inner.purge_expired_sessions(now).await;
        self.cache().clear();
        r
    }
    async fn put_app(&self, app: &AppRecord) -> StoreResult<()> {
        let r = self.inner.put_app(app).await;
        self.cache().clear();
        r
    }
    async fn remove_app(&self, appid: &str) -> StoreResult<bool> {
        let r = self.inner.remove_app(appid).await;
        self.cache().clear();
        r
    }
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn migrate(&self) -> StoreResult<Vec<i64>> {
        self.inner.migrate().await
    }
    async fn schema_status(&self) -> StoreResult<SchemaStatus> {
        self.inner.schema_status().await
    }
    async fn get_app(&self, appid: &str) -> StoreResult<Option<AppRecord>> {
        self.inner.get_app(appid).await
    }
    async fn list_apps(&self) -> StoreResult<Vec<AppRecord>> {
        self.inner.list_apps().await
    }
    async fn list_user_session_keys(
        &self,
        after: &str,
        limit: usize,
    ) -> StoreResult<Vec<(String, String, String, String)>> {
        self.inner.list_user_session_keys(after, limit).await
    }
    async fn put_agent(&self, agent: &AgentRecord) -> StoreResult<()> {
        self.inner.put_agent(agent).await
    }
    async fn get_agent(&self, corpid: &str, agentid: &str) -> StoreResult<Option<AgentRecord>> {
        self.inner.get_agent(corpid, agentid).await
    }
    async fn list_agents(&self) -> StoreResult<Vec<AgentRecord>> {
        self.inner.list_agents().await
    }
    async fn remove_agent(&self, corpid: &str, agentid: &str) -> StoreResult<bool> {
        self.inner.remove_agent(corpid, agentid).await
    }
    async fn get_credential(&self, key: &str) -> StoreResult<Option<CredentialRow>> {
        self.inner.get_credential(key).await
    }
    async fn list_credentials(&self) -> StoreResult<Vec<CredentialRow>> {
        self.inner.list_credentials().await
    }
    async fn try_lease(&self, key: &str, owner: &str, now_ms: i64, until_ms: i64) -> StoreResult<bool> {
        self.inner.try_lease(key, owner, now_ms, until_ms).await
    }
    async fn put_credential(
        &self,
        key: &str,
        owner: &str,
        fetched: &FetchedCredential<'_>,
    ) -> StoreResult<bool> {
        self.inner.put_credential(key, owner, fetched).await
    }
    async fn release_lease(&self, key: &str, owner: &str) -> StoreResult<()> {
        self.inner.release_lease(key, owner).await
    }
    async fn fail_credential(&self, key: &str, owner: &str, failed: &FailedFetch<'_>) -> StoreResult<()> {
        self.inner.fail_credential(key, owner, failed).await
    }
    async fn clear_credential_failures(&self, keys: &[String]) -> StoreResult<()> {
        self.inner.clear_credential_failures(keys).await
    }
    async fn take_force_budget(&self, key: &str, budget: &ForceBudget) -> StoreResult<bool> {
        self.inner.take_force_budget(key, budget).await
    }
    async fn block_credential(&self, key: &str, owner: &str, until: i64, code: i64) -> StoreResult<()> {
        self.inner.block_credential(key, owner, until, code).await
    }
    async fn import_credential(
        &self,
        key: &str,
        value: &str,
        expires_at: i64,
        fetched_at: i64,
    ) -> StoreResult<()> {
        self.inner.import_credential(key, value, expires_at, fetched_at).await
    }
    async fn delete_credentials(&self, keys: &[String]) -> StoreResult<()> {
        self.inner.delete_credentials(keys).await
    }
    async fn swap_sealed(&self, field: SealedField<'_>, old: &str, new: &str) -> StoreResult<bool> {
        self.inner.swap_sealed(field, old, new).await
    }
    async fn put_cos_key(&self, key: &CosKeyRecord) -> StoreResult<()> {
        self.inner.put_cos_key(key).await
    }
    async fn get_cos_key(&self, appid: &str) -> StoreResult<Option<CosKeyRecord>> {
        self.inner.get_cos_key(appid).await
    }
    async fn list_cos_keys(&self) -> StoreResult<Vec<CosKeyRecord>> {
        self.inner.list_cos_keys().await
    }
    async fn remove_cos_key(&self, appid: &str) -> StoreResult<bool> {
        self.inner.remove_cos_key(appid).await
    }
    async fn add_caller_key(&self, key: &CallerKeyRecord) -> StoreResult<()> {
        self.inner.add_caller_key(key).await
    }
    async fn caller_key_by_hash(&self, key_hash: &str) -> StoreResult<Option<CallerKeyRecord>> {
        self.inner.caller_key_by_hash(key_hash).await
    }
    async fn list_caller_keys(&self) -> StoreResult<Vec<CallerKeyRecord>> {
        self.inner.list_caller_keys().await
    }
    async fn count_sessions(&self, appid: &str) -> StoreResult<i64> {
        self.inner.count_sessions(appid).await
    }
    async fn revoke_caller_key(&self, name: &str, now: i64) -> StoreResult<bool> {
        self.inner.revoke_caller_key(name, now).await
    }
    async fn touch_caller_key(&self, name: &str, now: i64) -> StoreResult<()> {
        self.inner.touch_caller_key(name, now).await
    }
}
