//! Tokens this server has handed out, so the drop-in token host can tell its own tokens from anyone else's and
//! pass through only calls that carry one. A token is known from the moment it is handed out here, or — for one
//! handed out by another process — from storage, re-read on a miss at most every [`RELOAD_MS`]. A replaced token
//! stays known for WeChat's five-minute overlap (or until it expires, if sooner). While a key's tokens are
//! presented, its owner is re-read every [`OWNER_RECHECK_SECS`]: an app or agent removed — on any instance — has
//! its tokens forgotten, and one given a new secret keeps only the token stored since.

use super::owner::Recheck;
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

/// The index, keyed by the token's SHA-256 (values never sit in a second place in clear).
#[derive(Default)]
pub struct Issued {
    map: Mutex<HashMap<String, Entry>>,
    /// When each key's owner was last re-read ([`Credentials::read_owner`] keeps what it found).
    checked: Mutex<HashMap<CredKey, i64>>,
    last_reload_ms: Mutex<i64>,
}

impl Credentials {
    /// Record that `served` was handed out as the token of `key`.
    pub fn remember_issued(&self, key: &CredKey, served: &Served) {
        self.issued.remember(key, &served.value, served.expires_at, self.clock.now());
    }

    /// The token key a presented access token was issued for (here or by another process), if it is still valid
    /// and its owner still registered with the secret it was issued under.
    pub async fn issued_key(&self, token: &str) -> Result<Option<CredKey>, WaferError> {
        let now = self.clock.now();
        let key = match self.issued.find(token, now) {
            Some(k) => k,
            None if self.issued.reload_due(self.clock.now_ms()) => {
                let rows = self.store.credentials.list_credentials().await.map_err(WaferError::db)?;
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
        // A removed or re-keyed owner's tokens are forgotten by the read itself; after a re-key, the token stored
        // since (fetched with the new secret) is the one known again.
        if let Recheck::Rekeyed = self.read_owner(&key).await? {
            let row = self.store.credentials.get_credential(&key.text()).await.map_err(WaferError::db)?;
            if let Some((value, expires_at)) = row.and_then(|r| r.value.map(|v| (v, r.expires_at))) {
                if expires_at > now {
                    self.issued.remember(&key, &value, expires_at, now);
                }
            }
        }
        self.issued.mark_checked(&key, now);
        Ok(self.issued.find(token, now))
    }
}

impl Issued {
    /// Whether `key`'s owner is due to be re-read (never read yet, or [`OWNER_RECHECK_SECS`] ago).
    pub fn check_due(&self, key: &CredKey, now: i64) -> bool {
        let checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
        checked.get(key).is_none_or(|at| now - at >= OWNER_RECHECK_SECS)
    }

    /// `key`'s owner was read at `now`.
    pub fn mark_checked(&self, key: &CredKey, now: i64) {
        self.checked.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone(), now);
    }

    /// Forget every token of `keys` (their storage keys).
    pub fn forget(&self, keys: &[String]) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, e| !keys.contains(&e.key.text()));
        let mut checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
        checked.retain(|k, _| !keys.contains(&k.text()));
    }

    /// Forget every token of `key` (its owner was removed or given a new secret).
    pub fn forget_key(&self, key: &CredKey) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, e| e.key != *key);
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
        let key = CredKey::app(CredKind::MpToken, &"wx1".parse().unwrap());
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
        let key = CredKey::app(CredKind::MpToken, &"wx1".parse().unwrap());
        let other = CredKey::app(CredKind::MpToken, &"wx2".parse().unwrap());
        issued.mark_checked(&key, 1_000);
        issued.remember(&key, "t1", 10_000, 1_000);
        issued.remember(&other, "o1", 10_000, 1_000);
        assert!(!issued.check_due(&key, 1_000 + OWNER_RECHECK_SECS - 1));
        assert!(issued.check_due(&key, 1_000 + OWNER_RECHECK_SECS));
        assert!(issued.check_due(&other, 1_000), "never read");
        issued.forget_key(&key);
        assert_eq!(issued.find("t1", 1_020), None, "removed or re-keyed");
        assert_eq!(issued.find("o1", 1_030), Some(other.clone()), "other apps keep theirs");
        issued.forget(&[other.text()]);
        assert_eq!(issued.find("o1", 1_030), None);
    }
}
