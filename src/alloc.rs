//! The allocator's settings. The binary's allocator is mimalloc (`main.rs`); an SCF instance — billed by its memory
//! class, one invocation at a time — has it hand freed memory back to the system at once, not a second later (the
//! default delay, which an instance frozen between invocations may never reach).

/// `mi_option_purge_delay` in the bundled mimalloc (v3's `mi_option_t`; the crate's constants are v2's).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Purge freed memory immediately: after a multi-megabyte reply the instance is back at its resting size before
/// the next invocation (measured by `cargo bench --bench runtime`).
pub fn for_scf_instance() {
    // SAFETY: mi_option_set only stores an integer in mimalloc's option table; any option index is accepted.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, 0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // The bundled v3 sets the purge delay to 1000 ms by default (options.c); the index must point at it.
        // SAFETY: reads and writes of mimalloc's option table.
        let before = unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) };
        assert_eq!(before, 1000, "mi_option_purge_delay's default");
        for_scf_instance();
        assert_eq!(unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) }, 0);
    }
}
