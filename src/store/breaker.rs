//! Failing fast while storage is frozen: after a few consecutive operations ran into the storage deadline, every
//! operation fails at once for a short window instead of each waiting the full deadline. When the window ends,
//! operations go through again; the first one that also times out reopens it.

use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::time::Instant;

/// Consecutive timeouts that open the breaker.
pub const TRIP_AFTER: u32 = 3;
/// How long an open breaker fails operations at once.
pub const OPEN_MS: i64 = 2_000;

/// Counts consecutive storage timeouts; shared by every operation of one store.
#[derive(Debug)]
pub struct Breaker {
    started: Instant,
    consecutive: AtomicU32,
    open_until_ms: AtomicI64,
}

impl Default for Breaker {
    fn default() -> Self {
        Self { started: Instant::now(), consecutive: AtomicU32::new(0), open_until_ms: AtomicI64::new(0) }
    }
}

impl Breaker {
    fn now_ms(&self) -> i64 {
        self.started.elapsed().as_millis() as i64
    }

    /// `Err(ms left)` while the breaker is open.
    pub fn check(&self) -> Result<(), i64> {
        let left = self.open_until_ms.load(Ordering::Relaxed) - self.now_ms();
        if left > 0 {
            Err(left)
        } else {
            Ok(())
        }
    }

    /// An operation finished without running into the deadline (success or an ordinary error).
    pub fn success(&self) {
        self.consecutive.store(0, Ordering::Relaxed);
    }

    /// An operation ran into the deadline. Returns true when this opened the breaker.
    pub fn timed_out(&self) -> bool {
        let n = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= TRIP_AFTER {
            let until = self.now_ms() + OPEN_MS;
            let before = self.open_until_ms.swap(until, Ordering::Relaxed);
            return before <= self.now_ms();
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_timeouts_and_a_success_resets_the_count() {
        let b = Breaker::default();
        assert!(!b.timed_out());
        assert!(!b.timed_out());
        b.success();
        assert!(!b.timed_out());
        assert!(!b.timed_out());
        assert!(b.check().is_ok());
        assert!(b.timed_out(), "the third in a row opens it");
        let left = b.check().unwrap_err();
        assert!(left > 0 && left <= OPEN_MS);
        assert!(!b.timed_out(), "already open: not reported again");
    }
}
