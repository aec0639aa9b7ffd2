//! A short-lived in-process cache of app registrations in front of the [`RegistryStore`], so a login does not
//! queue for a pooled connection just to read its app (under a burst, most of a login's wait was that checkout).
//! An entry — found or not found — lives [`TTL_SECS`]; at most [`MAX_ENTRIES`] are kept (emptied when full, so a
//! flood of made-up appids cannot grow it). A write through this layer (`app add`, `app remove`) drops the entry at
//! once; a write by another process is seen within [`TTL_SECS`], as with the session cache.

use super::super::*;
use std::collections::HashMap;
use std::sync::Mutex;

/// Longest an app is served from memory.
pub const TTL_SECS: i64 = 2;
/// Most appids kept in memory.
pub const MAX_ENTRIES: usize = 10_000;

/// The caching layer over the registry: apps only (agents and COS keys are read where they are needed).
pub struct AppCache {
    inner: Arc<dyn RegistryStore>,
    clock: Arc<dyn crate::clock::Clock>,
    apps: Mutex<HashMap<AppId, (Option<AppRecord>, i64)>>,
}

impl AppCache {
    pub fn new(inner: Arc<dyn RegistryStore>, clock: Arc<dyn crate::clock::Clock>) -> Self {
        Self { inner, clock, apps: Mutex::new(HashMap::new()) }
    }

    fn apps(&self) -> std::sync::MutexGuard<'_, HashMap<AppId, (Option<AppRecord>, i64)>> {
        self.apps.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl RegistryStore for AppCache {
    async fn get_app(&self, appid: &AppId) -> StoreResult<Option<AppRecord>> {
        let now = self.clock.now();
        if let Some((app, _)) = self.apps().get(appid).filter(|(_, at)| now - at < TTL_SECS && now >= *at) {
            return Ok(app.clone());
        }
        let app = self.inner.get_app(appid).await?;
        let mut apps = self.apps();
        if apps.len() >= MAX_ENTRIES {
            apps.clear();
        }
        apps.insert(appid.clone(), (app.clone(), now));
        Ok(app)
    }
    async fn put_app(&self, app: &AppRecord) -> StoreResult<()> {
        let r = self.inner.put_app(app).await;
        self.apps().remove(&app.appid);
        r
    }
    async fn remove_app(&self, appid: &AppId) -> StoreResult<bool> {
        let r = self.inner.remove_app(appid).await;
        self.apps().remove(appid);
        r
    }
    async fn list_apps(&self) -> StoreResult<Vec<AppRecord>> {
        self.inner.list_apps().await
    }
    async fn put_agent(&self, agent: &AgentRecord) -> StoreResult<()> {
        self.inner.put_agent(agent).await
    }
    async fn get_agent(&self, corpid: &CorpId, agentid: &AgentId) -> StoreResult<Option<AgentRecord>> {
        self.inner.get_agent(corpid, agentid).await
    }
    async fn list_agents(&self) -> StoreResult<Vec<AgentRecord>> {
        self.inner.list_agents().await
    }
    async fn remove_agent(&self, corpid: &CorpId, agentid: &AgentId) -> StoreResult<bool> {
        self.inner.remove_agent(corpid, agentid).await
    }
    async fn put_cos_key(&self, key: &CosKeyRecord) -> StoreResult<()> {
        self.inner.put_cos_key(key).await
    }
    async fn get_cos_key(&self, appid: &CosAppId) -> StoreResult<Option<CosKeyRecord>> {
        self.inner.get_cos_key(appid).await
    }
    async fn list_cos_keys(&self) -> StoreResult<Vec<CosKeyRecord>> {
        self.inner.list_cos_keys().await
    }
    async fn remove_cos_key(&self, appid: &CosAppId) -> StoreResult<bool> {
        self.inner.remove_cos_key(appid).await
    }
    async fn put_api_security(&self, rec: &ApiSecurityRecord) -> StoreResult<()> {
        self.inner.put_api_security(rec).await
    }
    async fn get_api_security(&self, appid: &AppId) -> StoreResult<Option<ApiSecurityRecord>> {
        self.inner.get_api_security(appid).await
    }
    async fn list_api_security(&self) -> StoreResult<Vec<ApiSecurityRecord>> {
        self.inner.list_api_security().await
    }
    async fn remove_api_security(&self, appid: &AppId) -> StoreResult<bool> {
        self.inner.remove_api_security(appid).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn app(secret: &str) -> AppRecord {
        AppRecord {
            appid: "wx_cached".parse().unwrap(),
            secret: secret.into(),
            login_duration_secs: 86_400,
            session_duration_secs: 600,
            token_mode: TokenMode::Stable,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[tokio::test]
    async fn apps_are_served_from_memory_for_two_seconds_and_dropped_on_a_write_here() {
        let raw = crate::store::sqlite::SqliteStore::open(":memory:").unwrap();
        SchemaStore::migrate(&raw).await.unwrap();
        let raw = Storage::of(raw);
        let clock = Arc::new(ManualClock::new(1_000));
        let cached = AppCache::new(raw.registry.clone(), clock.clone());
        let id: AppId = "wx_cached".parse().unwrap();
        assert_eq!(cached.get_app(&id).await.unwrap(), None, "not registered (and that is remembered too)");
        cached.put_app(&app("one")).await.unwrap();
        assert_eq!(cached.get_app(&id).await.unwrap().unwrap().secret, "one", "a write here is seen at once");
        // Another process changes it: served from memory until the entry is 2 s old.
        raw.registry.put_app(&app("two")).await.unwrap();
        assert_eq!(cached.get_app(&id).await.unwrap().unwrap().secret, "one");
        clock.advance(TTL_SECS);
        assert_eq!(cached.get_app(&id).await.unwrap().unwrap().secret, "two");
        assert!(cached.remove_app(&id).await.unwrap());
        assert_eq!(cached.get_app(&id).await.unwrap(), None, "a removal here is seen at once");
        for i in 0..MAX_ENTRIES + 5 {
            let _ = cached.get_app(&format!("wx_made_up_{i}").parse().unwrap()).await.unwrap();
        }
        assert!(cached.apps().len() <= MAX_ENTRIES, "a flood of made-up appids is bounded");
    }
}
