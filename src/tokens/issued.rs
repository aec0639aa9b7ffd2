//! Tokens this server has handed out, so the drop-in token host can tell its own tokens from anyone else's and
//! pass through only calls that carry one. A token is known from the moment it is handed out here, or — for one
//! handed out by another process — from storage, re-read on a miss at most every [`RELOAD_MS`]. A replaced token
//! stays known for WeChat's five-minute overlap (or until it expires, if sooner).

use super::{CredKey, CredKind};
use crate::store::CredentialRow;
use std::collections::HashMap;
use std::sync::Mutex;

/// Shortest interval between two reloads from storage (misses in between are answered from memory).
pub const RELOAD_MS: i64 = 2_000;
/// How long a replaced token stays valid upstream.
pub const OVERLAP_SECS: i64 = 300;
/// Most tokens remembered; beyond it expired ones are dropped first.
const MAX_ENTRIES: usize = 100_000;

struct Entry {
    key: CredKey,
    /// Unix seconds after which the token is no longer accepted.
    until: i64,
}

/// The index, keyed by the token's SHA-256 (values never sit in a second place in clear).
#[derive(Default)]
pub struct Issued {
    map: Mutex<HashMap<String, Entry>>,
    last_reload_ms: Mutex<i64>,
}

impl Issued {
    /// Remember `value` as the current token of `key`; any other token of `key` is now a previous one.
    pub fn remember(&self, key: &CredKey, value: &str, expires_at: i64, now: i64) {
        let hash = crate::crypto::sha256_hex(value.as_bytes());
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(&hash).is_some_and(|e| e.key == *key && e.until == expires_at) {
            return;
        }
        for e in map.values_mut().filter(|e| e.key == *key) {
            e.until = e.until.min(now + OVERLAP_SECS);
        }
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, e| e.until > now);
        }
        map.insert(hash, Entry { key: key.clone(), until: expires_at });
    }

    /// The key a still-valid token belongs to.
    pub fn find(&self, value: &str, now: i64) -> Option<CredKey> {
        let hash = crate::crypto::sha256_hex(value.as_bytes());
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&hash).filter(|e| e.until > now).map(|e| e.key.clone())
    }

    /// Whether a reload from storage is due (and, if so, claim it).
    pub fn reload_due(&self, now_ms: i64) -> bool {
        let mut last = self.last_reload_ms.lock().unwrap_or_else(|p| p.into_inner());
        if now_ms - *last < RELOAD_MS {
            return false;
        }
        *last = now_ms;
        true
    }

    /// Remember the current token of every stored token row.
    pub fn load(&self, rows: &[CredentialRow], now: i64) {
        for r in rows {
            let (Some(key), Some(value)) = (CredKey::parse(&r.key), r.value.as_deref()) else { continue };
            if matches!(key.kind, CredKind::MpToken | CredKind::WcToken) && r.expires_at > now {
                self.remember(&key, value, r.expires_at, now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_token_is_known_for_the_overlap_only() {
        let issued = Issued::default();
        let key = CredKey::app(CredKind::MpToken, "wx1");
        issued.remember(&key, "t1", 10_000, 1_000);
        assert_eq!(issued.find("t1", 1_000), Some(key.clone()));
        assert_eq!(issued.find("t2", 1_000), None);
        issued.remember(&key, "t2", 17_000, 2_000);
        assert_eq!(issued.find("t1", 2_000 + OVERLAP_SECS - 1), Some(key.clone()));
        assert_eq!(issued.find("t1", 2_000 + OVERLAP_SECS), None);
        assert_eq!(issued.find("t2", 2_000 + OVERLAP_SECS), Some(key.clone()));
        assert_eq!(issued.find("t2", 17_000), None, "expired");
        assert!(issued.reload_due(10_000));
        assert!(!issued.reload_due(10_000 + RELOAD_MS - 1));
    }
}
