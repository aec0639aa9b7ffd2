//! Tokens this server has handed out, so the drop-in token host can tell its own tokens from anyone else's and
//! pass through only calls that carry one. A token is known from the moment it is handed out here, or — for one
//! handed out by another process — from storage, re-read on a miss at most every [`RELOAD_MS`]. A replaced token
//! stays known for WeChat's five-minute overlap (or until it expires, if sooner). While a key's tokens are
//! presented, its owner is re-read every [`OWNER_RECHECK_SECS`]: an app or agent removed — on any instance — has
//! its tokens forgotten, and one given a new secret keeps only the token stored since.

use super::{CredKey, CredKind, Credentials, Served, OWNER_RECHECK_SECS};
use crate::envelope::WaferError;
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

/// What was last seen of a key's owner: its secret's SHA-256, and when.
struct Owner {
    fingerprint: String,
    checked: i64,
}

/// The index, keyed by the token's SHA-256 (values never sit in a second place in clear).
#[derive(Default)]
pub struct Issued {
    map: Mutex<HashMap<String, Entry>>,
    owners: Mutex<HashMap<CredKey, Owner>>,
    last_reload_ms: Mutex<i64>,
}

fn fingerprint(secret: &str) -> String {
    crate::crypto::sha256_hex(secret.as_bytes())
}

impl Credentials {
    /// Record that `served` was handed out as the token of `key` to a caller presenting the owner's `secret`.
    pub fn remember_issued(&self, key: &CredKey, served: &Served, secret: &str) {
        let now = self.clock.now();
        self.issued.settle(key, Some(secret), Some(&served.value), now);
        self.issued.remember(key, &served.value, served.expires_at, now);
    }

    /// The token key a presented access token was issued for (here or by another process), if it is still valid
    /// and its owner still registered with the secret it was issued under.
    pub async fn issued_key(&self, token: &str) -> Result<Option<CredKey>, WaferError> {
        let now = self.clock.now();
        let key = match self.issued.find(token, now) {
            Some(k) => k,
            None if self.issued.reload_due(self.clock.now_ms()) => {
                let rows = self.store.list_credentials().await.map_err(WaferError::db)?;
                self.issued.load(&rows, now);
                match self.issued.find(token, now) {
                    Some(k) => k,
                    None => return Ok(None),
                }
            }
            None => return Ok(None),
        };
        if !self.issued.check_due(&key, now) {
            return Ok(Some(key));
        }
        let secret = self.owner_secret(&key).await?;
        let current = match secret {
            Some(_) => {
                self.store.get_credential(&key.text()).await.map_err(WaferError::db)?.and_then(|r| r.value)
            }
            None => None,
        };
        self.issued.settle(&key, secret.as_deref(), current.as_deref(), now);
        Ok(self.issued.find(token, now))
    }
}

impl Issued {
    /// Whether `key`'s owner is due to be re-read (never read yet, or [`OWNER_RECHECK_SECS`] ago).
    pub fn check_due(&self, key: &CredKey, now: i64) -> bool {
        let owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        owners.get(key).is_none_or(|o| now - o.checked >= OWNER_RECHECK_SECS)
    }

    /// What `key`'s owner is registered with now: nothing (removed) — every token of `key` is forgotten; another
    /// secret than last seen — every token of `key` but `current` (the one stored since) is forgotten.
    pub fn settle(&self, key: &CredKey, secret: Option<&str>, current: Option<&str>, now: i64) {
        let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        let Some(secret) = secret else {
            owners.remove(key);
            drop(owners);
            self.retain(key, None);
            return;
        };
        let fp = fingerprint(secret);
        let rekeyed = owners.get(key).is_some_and(|o| o.fingerprint != fp);
        owners.insert(key.clone(), Owner { fingerprint: fp, checked: now });
        drop(owners);
        if rekeyed {
            self.retain(key, current);
        }
    }

    /// Forget every token of `keys` (their storage keys).
    pub fn forget(&self, keys: &[String]) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, e| !keys.contains(&e.key.text()));
        let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        owners.retain(|k, _| !keys.contains(&k.text()));
    }

    /// Keep of `key`'s tokens only `keep`.
    fn retain(&self, key: &CredKey, keep: Option<&str>) {
        let keep = keep.map(|v| crate::crypto::sha256_hex(v.as_bytes()));
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|hash, e| e.key != *key || keep.as_deref() == Some(hash.as_str()));
    }

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

    #[test]
    fn a_removed_or_rekeyed_owner_takes_its_tokens_along() {
        let issued = Issued::default();
        let key = CredKey::app(CredKind::MpToken, "wx1");
        let other = CredKey::app(CredKind::MpToken, "wx2");
        issued.settle(&key, Some("s1"), None, 1_000);
        issued.remember(&key, "t1", 10_000, 1_000);
        issued.remember(&key, "t2", 10_000, 1_000);
        issued.remember(&other, "o1", 10_000, 1_000);
        assert!(!issued.check_due(&key, 1_000 + OWNER_RECHECK_SECS - 1));
        assert!(issued.check_due(&key, 1_000 + OWNER_RECHECK_SECS));
        assert!(issued.check_due(&other, 1_000), "never read");
        issued.settle(&key, Some("s1"), Some("t2"), 1_010);
        assert_eq!(issued.find("t1", 1_010), Some(key.clone()), "same secret: the overlap holds");
        issued.settle(&key, Some("s2"), Some("t2"), 1_020);
        assert_eq!(issued.find("t1", 1_020), None, "a new secret keeps only the stored token");
        assert_eq!(issued.find("t2", 1_020), Some(key.clone()));
        issued.settle(&key, None, None, 1_030);
        assert_eq!(issued.find("t2", 1_030), None, "removed");
        assert_eq!(issued.find("o1", 1_030), Some(other.clone()), "other apps keep theirs");
        issued.forget(&[other.text()]);
        assert_eq!(issued.find("o1", 1_030), None);
    }
}
