//! A bounded in-process cache of sessions in front of the [`SessionStore`], so an auth on a hot session needs no storage
//! read. Entries live [`TTL_SECS`] at most, and at most [`MAX_ENTRIES`] are kept (the cache is emptied when full).
//! Every write that changes sessions *through this process* — a login (new session, pruned oldest sessions, a
//! rotated session key), a stored profile, an auth's touch, a purge, an app written or removed (told by the registry through
//! [`SessionStore::app_changed`]) — drops the entries
//! it affects at once. A write made by another process (another instance, the CLI) is seen here within
//! [`TTL_SECS`]: that is the staleness window, documented in the README.

mod apps;

pub use apps::AppCache;

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
    by_user: HashMap<(AppId, String), Vec<String>>,
    /// Bumped by every invalidation: a read that started before one does not fill the cache.
    generation: u64,
}

impl Cache {
    fn drop_user(&mut self, appid: &AppId, openid: &str) {
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

/// The caching layer over the session store (the other kinds are not its business).
pub struct SessionCache {
    inner: Arc<dyn SessionStore>,
    clock: Arc<dyn crate::clock::Clock>,
    cache: Mutex<Cache>,
}

impl SessionCache {
    pub fn new(inner: Arc<dyn SessionStore>, clock: Arc<dyn crate::clock::Clock>) -> Self {
        Self { inner, clock, cache: Mutex::new(Cache::default()) }
    }

    /// `storage` with its sessions and its apps served through short-lived in-process caches.
    pub fn in_front_of(storage: Storage, clock: Arc<dyn crate::clock::Clock>) -> Storage {
        let sessions = Arc::new(Self::new(storage.sessions.clone(), clock.clone()));
        let registry = Arc::new(AppCache::new(storage.registry.clone(), clock));
        Storage { sessions, registry, ..storage }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl SessionStore for SessionCache {
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
    fn open_session_key(&self, appid: &AppId, openid: &str, stored: &str) -> StoreResult<String> {
        self.inner.open_session_key(appid, openid, stored)
    }
    async fn touch_session(&self, id: &str, now: i64) -> StoreResult<()> {
        self.inner.touch_session(id, now).await?;
        if let Some(e) = self.cache().by_id.get_mut(id) {
            e.view.session.last_visit_at = e.view.session.last_visit_at.max(now);
        }
        Ok(())
    }
    async fn set_user_info(&self, appid: &AppId, openid: &str, user_info: &str) -> StoreResult<()> {
        let r = self.inner.set_user_info(appid, openid, user_info).await;
        self.cache().drop_user(appid, openid);
        r
    }
    async fn set_user_session_key(&self, appid: &AppId, openid: &str, session_key: &str) -> StoreResult<()> {
        let r = self.inner.set_user_session_key(appid, openid, session_key).await;
        self.cache().drop_user(appid, openid);
        r
    }
    async fn create_session(&self, s: &SessionRecord, keep: usize, now: i64) -> StoreResult<LoginOutcome> {
        let r = self.inner.create_session(s, keep, now).await;
        self.cache().drop_user(&s.appid, &s.openid);
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
    async fn list_user_session_keys(&self, after: &str, limit: usize) -> StoreResult<Vec<UserSessionKey>> {
        self.inner.list_user_session_keys(after, limit).await
    }
    async fn count_sessions(&self, appid: &AppId) -> StoreResult<i64> {
        self.inner.count_sessions(appid).await
    }
    /// An app's expiry rules changed, or its sessions went with it.
    fn app_changed(&self, _appid: &AppId) {
        self.cache().clear();
    }
}
