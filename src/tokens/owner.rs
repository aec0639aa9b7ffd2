//! Whether a credential's app / agent is still registered as this process last saw it: removed (its values are
//! dropped and refused) or given a new secret (its cached value is dropped and read again), checked on a memory
//! hit every [`OWNER_RECHECK_SECS`] and when a key is first seen.

use super::{CredKey, Credentials, Owner, OWNER_RECHECK_SECS};
use crate::envelope::WaferError;

/// What a memory hit's re-check found of its owner.
pub(super) enum Recheck {
    Same,
    Gone,
    Rekeyed,
}

/// Whether an owner seen registered at `seen` needs no re-reading at `now`.
pub(super) fn seen_lately(seen: i64, now: i64) -> bool {
    now - seen < OWNER_RECHECK_SECS
}

impl Credentials {
    /// Whether the app / agent behind a memory hit was seen registered recently, with the same secret; re-checks
    /// it (one indexed read per key every [`OWNER_RECHECK_SECS`]) when not. A removed owner's value is dropped
    /// (`Ok(false)`); a re-keyed owner's too, and the hit is not used (`Ok(true)` only when it may be).
    pub(super) async fn owner_still_registered(
        &self,
        key: &CredKey,
        k: &str,
        seen: i64,
        now: i64,
    ) -> Result<Recheck, WaferError> {
        if seen_lately(seen, now) {
            return Ok(Recheck::Same);
        }
        let owner = self.read_owner(key).await?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match owner {
            Recheck::Same => {
                if let Some(c) = cache.get_mut(k) {
                    c.owner_seen = now;
                }
            }
            Recheck::Gone | Recheck::Rekeyed => {
                cache.remove(k);
            }
        }
        Ok(owner)
    }

    /// Read the owner of `key` and compare its secret with the one this process last saw (its SHA-256 is kept).
    /// Removed or re-keyed, the tokens the token host handed out for `key` are forgotten here, once for every
    /// path that notices.
    pub(super) async fn read_owner(&self, key: &CredKey) -> Result<Recheck, WaferError> {
        let secret = self.owner_secret(key).await?.map(|s| crate::crypto::sha256_hex(s.as_bytes()));
        let recheck = {
            let mut seen = self.owner_secrets.lock().unwrap_or_else(|p| p.into_inner());
            match secret {
                None => {
                    seen.remove(&key.text());
                    Recheck::Gone
                }
                Some(secret) => match seen.insert(key.text(), secret.clone()) {
                    Some(before) if before != secret => Recheck::Rekeyed,
                    _ => Recheck::Same,
                },
            }
        };
        if !matches!(recheck, Recheck::Same) {
            self.issued.forget_key(key);
        }
        Ok(recheck)
    }

    pub(super) async fn owner_exists(&self, key: &CredKey) -> Result<bool, WaferError> {
        Ok(!matches!(self.read_owner(key).await?, Recheck::Gone))
    }

    /// The secret the app / agent behind `key` is registered with now (`None`: not registered).
    pub(super) async fn owner_secret(&self, key: &CredKey) -> Result<Option<String>, WaferError> {
        let found = match key.owner() {
            Owner::Agent { corpid, agentid } => {
                self.store.registry.get_agent(corpid, agentid).await.map(|a| a.map(|a| a.secret))
            }
            Owner::App(appid) => self.store.registry.get_app(appid).await.map(|a| a.map(|a| a.secret)),
        };
        found.map_err(WaferError::db)
    }
}
