//! The allocator's settings. The binary's allocator is mimalloc (`main.rs`), built without transparent huge pages
//! (its arenas would otherwise be advised into 2 MB pages, each resident whole: 15–35 MB of RSS for nothing). Freed
//! memory goes back to the system sooner than mimalloc's default second: at once in an SCF instance — billed by
//! its memory class, frozen between invocations before a delayed purge could run — and after 100 ms in HTTP mode,
//! where 32 concurrent 10 MB downloads otherwise leave the process above 64 MB (`cargo bench --bench streaming`).

/// `mi_option_purge_delay` in the bundled mimalloc (v3's `mi_option_t`; the crate's constants are v2's).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Purge delay of an SCF instance (`runtime`), in milliseconds.
pub const SCF_PURGE_DELAY_MS: i64 = 0;
/// Purge delay of HTTP mode (`serve`), in milliseconds.
pub const SERVE_PURGE_DELAY_MS: i64 = 100;

/// Hand freed memory back to the system after `ms` milliseconds.
pub fn purge_after(ms: i64) {
    // SAFETY: mi_option_set only stores an integer in mimalloc's option table; any option index is accepted.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, ms as std::ffi::c_long) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // The bundled v3 sets the purge delay to 1000 ms by default (options.c); the index must point at it.
        // SAFETY: reads of mimalloc's option table.
        let get = || unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) };
        assert_eq!(get(), 1000, "mi_option_purge_delay's default");
        purge_after(SERVE_PURGE_DELAY_MS);
        assert_eq!(get(), 100);
        purge_after(SCF_PURGE_DELAY_MS);
        assert_eq!(get(), 0);
    }
}
