//! Who may call what: caller keys scoped to apps / corps / COS APPIDs, the enforcement mode, and the admin check.
//! Every request reaches the handlers with an authenticated [`Caller`] or none; scope is checked on the key's own
//! lists before any app lookup, so a refusal never reveals whether an app exists.

use crate::clock::Clock;
use crate::crypto;
use crate::envelope::{ReturnCode, WaferError};
use crate::store::{CallerKeyRecord, Store};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// How long a verified key is trusted from memory (a revocation takes effect within this).
pub const KEY_CACHE_SECS: i64 = 10;
/// Longest interval between two `last_used_at` writes for one key.
pub const KEY_TOUCH_SECS: i64 = 60;

/// `WAFER_CALLER_AUTH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CallerAuthMode {
    /// Token, ticket, signature and COS interfaces need a key covering the app asked for; sessions stay open.
    Credentials,
    /// Every interface needs a key (admin interfaces need the admin token instead).
    All,
    /// No caller authentication (the seed's behaviour; for migrations only).
    Off,
}

/// What a request is about, for the scope check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// A WeChat appid, or a Tencent Cloud APPID for COS.
    App(&'a str),
    /// A WeCom corpid.
    Corp(&'a str),
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    record: Arc<CallerKeyRecord>,
}

impl Caller {
    /// The key's name, for logs.
    pub fn name(&self) -> &str {
        &self.record.name
    }

    pub fn covers(&self, target: Target<'_>) -> bool {
        let r = &self.record;
        r.scope_all
            || match target {
                Target::App(a) => r.scope_apps.iter().any(|x| x == a),
                Target::Corp(c) => r.scope_corps.iter().any(|x| x == c),
            }
    }

    /// CALLER_KEY_FORBIDDEN unless the key covers `target`.
    pub fn require(&self, target: Target<'_>) -> Result<(), WaferError> {
        if self.covers(target) {
            Ok(())
        } else {
            Err(WaferError::new(
                ReturnCode::CallerKeyForbidden,
                "this caller key is not allowed for the app asked for",
            ))
        }
    }
}

/// A new caller key: `wk_` and 192 random bits in hex.
pub fn new_key() -> Result<String, getrandom::Error> {
    Ok(format!("wk_{}", crypto::random_hex(24)?))
}

pub fn missing() -> WaferError {
    WaferError::new(
        ReturnCode::CallerKeyMissing,
        "this interface needs a caller key (X-Wafer-Key header or key query parameter)",
    )
}

fn invalid() -> WaferError {
    WaferError::new(ReturnCode::CallerKeyInvalid, "the caller key is unknown or revoked")
}

struct CachedKey {
    record: Arc<CallerKeyRecord>,
    loaded_at: i64,
}

/// Verifies presented keys, with a short positive cache so hot paths need no storage read.
pub struct Gate {
    pub mode: CallerAuthMode,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    cache: Mutex<HashMap<String, CachedKey>>,
}

impl Gate {
    pub fn new(mode: CallerAuthMode, store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self { mode, store, clock, cache: Mutex::new(HashMap::new()) }
    }

    /// The caller a presented key belongs to; `None` when no key was presented; CALLER_KEY_INVALID for an unknown
    /// or revoked key.
    pub async fn authenticate(&self, presented: Option<&str>) -> Result<Option<Caller>, WaferError> {
        let Some(key) = presented.filter(|k| !k.is_empty()) else {
            return Ok(None);
        };
        if key.len() > 256 {
            return Err(invalid());
        }
        let hash = crypto::sha256_hex(key.as_bytes());
        let now = self.clock.now();
        let cached = {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.get(&hash).filter(|c| now - c.loaded_at < KEY_CACHE_SECS).map(|c| Arc::clone(&c.record))
        };
        let record = match cached {
            Some(r) => r,
            None => {
                let r = self
                    .store
                    .caller_key_by_hash(&hash)
                    .await
                    .map_err(WaferError::db)?
                    .ok_or_else(invalid)?;
                // Constant-time confirmation of the hash the index found.
                if !crypto::ct_eq(r.key_hash.as_bytes(), hash.as_bytes()) || r.revoked_at != 0 {
                    self.cache.lock().unwrap_or_else(|p| p.into_inner()).remove(&hash);
                    return Err(invalid());
                }
                if now - r.last_used_at >= KEY_TOUCH_SECS {
                    if let Err(e) = self.store.touch_caller_key(&r.name, now).await {
                        tracing::warn!(error = %e, "could not record caller key use");
                    }
                }
                let record = Arc::new(CallerKeyRecord { last_used_at: now, ..r });
                self.cache
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(hash, CachedKey { record: Arc::clone(&record), loaded_at: now });
                record
            }
        };
        Ok(Some(Caller { record }))
    }
}
