//! Remembered upstream failures, per credential key: while a failure is remembered, callers get the same code and
//! message at once and nothing is sent upstream.
//!
//! The lease holder that saw the failure writes it to the key's shared row (so every instance answers with it)
//! and remembers it in memory (so this instance answers without a storage read). Configuration errors (wrong
//! secret, IP not whitelisted) are remembered for a short fixed window; transient ones (busy, timeouts, 5xx,
//! unparsable replies) with exponential backoff from about a second, capped. The memory is re-checked against
//! the shared row every couple of seconds, so `app add` / `agent add` elsewhere (which delete the row) or a
//! success elsewhere clear it quickly on every instance.

use crate::envelope::{ReturnCode, WaferError};
use std::collections::HashMap;
use std::sync::Mutex;

/// Window for configuration errors.
pub const CONFIG_WINDOW_MS: i64 = 15_000;
/// First backoff for transient errors; doubles per consecutive failure up to [`TRANSIENT_CAP_MS`].
pub const TRANSIENT_FIRST_MS: i64 = 1_000;
pub const TRANSIENT_CAP_MS: i64 = 30_000;
/// WeCom's frequency limit (45009): 5 s, doubling, at most 5 minutes.
pub const FREQUENCY_FIRST_MS: i64 = 5_000;
pub const FREQUENCY_CAP_MS: i64 = 300_000;
/// How often a remembered failure is re-checked against the shared row.
pub const RECHECK_MS: i64 = 2_000;

/// How long the `streak`-th consecutive failure with this code is remembered, in milliseconds.
pub fn window_ms(code: ReturnCode, streak: i64) -> i64 {
    let doubling = |first: i64| first.saturating_mul(1 << (streak.clamp(1, 11) - 1));
    match code {
        ReturnCode::WeixinAppidErr | ReturnCode::WeixinIpNotAllowed => CONFIG_WINDOW_MS,
        // WeCom's 45009 is a frequency limit (WeChat's, a daily quota, blocks until midnight instead).
        ReturnCode::WeixinQuotaErr => doubling(FREQUENCY_FIRST_MS).min(FREQUENCY_CAP_MS),
        // A spent force budget: forced callers are answered from memory for a minute.
        ReturnCode::ForceRefreshLimited => 60_000,
        _ => doubling(TRANSIENT_FIRST_MS).min(TRANSIENT_CAP_MS),
    }
}

#[derive(Debug, Clone)]
struct Failure {
    error: WaferError,
    until_ms: i64,
    checked_ms: i64,
}

/// What a lookup found.
#[derive(Debug, Clone)]
pub enum Remembered {
    /// Remembered: answer with this error.
    Failed(WaferError),
    /// Remembered, but due for a re-check against the shared row.
    Recheck,
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
            table.remove(key);
            return None;
        }
        if now_ms - f.checked_ms >= RECHECK_MS {
            // Every caller in this moment re-checks until one of them confirms (`remember`) or clears it, so
            // none is answered with a failure that was cleared elsewhere.
            return Some(Remembered::Recheck);
        }
        Some(Remembered::Failed(f.error.clone()))
    }

    /// Remember `error` for `key` until `until_ms` (no log-only detail is kept: it was logged once).
    pub fn remember(&self, key: &str, error: &WaferError, until_ms: i64, now_ms: i64) {
        let error = WaferError { detail: None, ..error.clone() };
        self.lock().insert(key.to_owned(), Failure { error, until_ms, checked_ms: now_ms });
    }

    /// The error remembered for `key`, whatever its window.
    pub fn error(&self, key: &str) -> Option<WaferError> {
        self.lock().get(key).map(|f| f.error.clone())
    }

    /// Forget what is remembered for `key` (a success, or the registration changed).
    pub fn clear(&self, key: &str) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_use_a_fixed_window_and_transient_ones_back_off() {
        assert_eq!(window_ms(ReturnCode::WeixinAppidErr, 1), CONFIG_WINDOW_MS);
        assert_eq!(window_ms(ReturnCode::WeixinIpNotAllowed, 7), CONFIG_WINDOW_MS);
        let windows: Vec<i64> = (1..=8).map(|n| window_ms(ReturnCode::WeixinNetErr, n)).collect();
        assert_eq!(windows, [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000]);
        assert_eq!(window_ms(ReturnCode::WeixinReturnErr, 1_000_000), TRANSIENT_CAP_MS);
        assert_eq!(window_ms(ReturnCode::WeixinReturnErr, 0), TRANSIENT_FIRST_MS);
        let wecom: Vec<i64> = (1..=8).map(|n| window_ms(ReturnCode::WeixinQuotaErr, n)).collect();
        assert_eq!(wecom, [5_000, 10_000, 20_000, 40_000, 80_000, 160_000, 300_000, 300_000]);
    }

    #[test]
    fn a_remembered_failure_answers_until_its_window_ends_and_asks_for_rechecks() {
        let f = Failures::default();
        let e = WaferError::new(ReturnCode::WeixinIpNotAllowed, "m").with_detail("logged once");
        f.remember("k", &e, 10_000 + CONFIG_WINDOW_MS, 10_000);
        match f.check("k", 10_500) {
            Some(Remembered::Failed(w)) => {
                assert_eq!(w.code, ReturnCode::WeixinIpNotAllowed);
                assert!(w.detail.is_none(), "details are logged once, not repeated");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(f.check("k", 12_000), Some(Remembered::Recheck)));
        assert!(matches!(f.check("k", 12_001), Some(Remembered::Recheck)), "until someone confirms it");
        f.remember("k", &e, 10_000 + CONFIG_WINDOW_MS, 12_001);
        assert!(matches!(f.check("k", 12_500), Some(Remembered::Failed(_))), "one re-check per interval");
        assert!(f.check("k", 10_000 + CONFIG_WINDOW_MS).is_none());
        assert!(f.error("k").is_none(), "an expired entry is dropped");
    }
}
