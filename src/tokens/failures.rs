//! Remembered upstream failures, per credential key: while a failure is remembered, callers get the same code and
//! message at once and nothing is sent upstream.
//!
//! Configuration errors (wrong secret, IP not whitelisted, unknown appid) are remembered for a short fixed window;
//! transient ones (busy, timeouts, 5xx, unparsable replies) with exponential backoff from about a second, capped.
//! A failure also notes a fingerprint of the app/agent row it was fetched with, so a changed registration (a new
//! secret written by `app add` in another process) clears it on the next check, a few seconds later at most.

use crate::envelope::{ReturnCode, WaferError};
use std::collections::HashMap;
use std::sync::Mutex;

/// Window for configuration errors.
pub const CONFIG_WINDOW_MS: i64 = 15_000;
/// First backoff for transient errors; doubles per consecutive failure up to [`TRANSIENT_CAP_MS`].
pub const TRANSIENT_FIRST_MS: i64 = 1_000;
pub const TRANSIENT_CAP_MS: i64 = 30_000;
/// How often a remembered failure re-reads the app/agent row to see whether it changed.
pub const RECHECK_MS: i64 = 2_000;

/// How a failure is remembered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Fixed window: retrying sooner cannot help until someone changes the registration.
    Config,
    /// Growing backoff.
    Transient,
}

impl FailureClass {
    /// The class of an error as the caller sees it.
    pub fn of(code: ReturnCode) -> Self {
        match code {
            ReturnCode::WeixinAppidErr | ReturnCode::WeixinIpNotAllowed | ReturnCode::NoAppid => Self::Config,
            _ => Self::Transient,
        }
    }
}

#[derive(Debug, Clone)]
struct Failure {
    error: WaferError,
    until_ms: i64,
    streak: u32,
    /// Fingerprint of the registration the failed fetch used (`None`: not known).
    fingerprint: Option<String>,
    checked_ms: i64,
}

/// What a lookup found.
#[derive(Debug, Clone)]
pub enum Remembered {
    /// Remembered: answer with this error.
    Failed(WaferError),
    /// Remembered, but the registration should be re-checked against this fingerprint first.
    Recheck(Option<String>),
}

/// The per-process table of remembered failures.
#[derive(Default)]
pub struct Failures {
    table: Mutex<HashMap<String, Failure>>,
}

impl Failures {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Failure>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The failure remembered for `key` at `now_ms`, if any.
    pub fn check(&self, key: &str, now_ms: i64) -> Option<Remembered> {
        let mut table = self.lock();
        let f = table.get_mut(key)?;
        if now_ms >= f.until_ms {
            return None;
        }
        if now_ms - f.checked_ms >= RECHECK_MS {
            f.checked_ms = now_ms;
            return Some(Remembered::Recheck(f.fingerprint.clone()));
        }
        Some(Remembered::Failed(f.error.clone()))
    }

    /// The error to answer with after a re-check found the registration unchanged.
    pub fn still_failed(&self, key: &str) -> Option<WaferError> {
        self.lock().get(key).map(|f| f.error.clone())
    }

    /// Remember a failed fetch; returns how long it is remembered, in milliseconds.
    pub fn record(&self, key: &str, error: &WaferError, fingerprint: Option<String>, now_ms: i64) -> i64 {
        let class = FailureClass::of(error.code);
        let mut table = self.lock();
        let streak = table.get(key).map(|f| f.streak.saturating_add(1)).unwrap_or(1);
        let window = match class {
            FailureClass::Config => CONFIG_WINDOW_MS,
            FailureClass::Transient => {
                TRANSIENT_FIRST_MS.saturating_mul(1 << (streak - 1).min(10)).min(TRANSIENT_CAP_MS)
            }
        };
        let error = WaferError { detail: None, ..error.clone() };
        table.insert(
            key.to_owned(),
            Failure { error, until_ms: now_ms + window, streak, fingerprint, checked_ms: now_ms },
        );
        window
    }

    /// Forget what is remembered for `key` (a success, or the registration changed).
    pub fn clear(&self, key: &str) {
        self.lock().remove(key);
    }

    /// Whether anything is remembered for `key` (expired or not), so a success after backoff resets the streak.
    pub fn has(&self, key: &str) -> bool {
        self.lock().contains_key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(code: ReturnCode) -> WaferError {
        WaferError::new(code, "m").with_detail("secret-free detail")
    }

    #[test]
    fn config_errors_use_a_fixed_window_and_transient_ones_back_off() {
        let f = Failures::default();
        assert_eq!(f.record("k", &e(ReturnCode::WeixinAppidErr), None, 0), CONFIG_WINDOW_MS);
        assert_eq!(f.record("k", &e(ReturnCode::WeixinAppidErr), None, 0), CONFIG_WINDOW_MS);
        f.clear("k");
        let windows: Vec<i64> =
            (0..8).map(|_| f.record("t", &e(ReturnCode::WeixinNetErr), None, 0)).collect();
        assert_eq!(windows, [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000]);
    }

    #[test]
    fn a_remembered_failure_answers_until_its_window_ends_and_asks_for_rechecks() {
        let f = Failures::default();
        f.record("k", &e(ReturnCode::WeixinIpNotAllowed), Some("fp".into()), 10_000);
        match f.check("k", 10_500) {
            Some(Remembered::Failed(w)) => {
                assert_eq!(w.code, ReturnCode::WeixinIpNotAllowed);
                assert!(w.detail.is_none(), "details are logged once, not repeated");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(f.check("k", 12_000), Some(Remembered::Recheck(Some(fp))) if fp == "fp"));
        assert!(matches!(f.check("k", 12_500), Some(Remembered::Failed(_))), "one re-check per interval");
        assert!(f.check("k", 10_000 + CONFIG_WINDOW_MS).is_none());
        assert!(f.has("k"));
    }
}
