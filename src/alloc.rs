//! The binary's allocator and its settings. The allocator is mimalloc ([`Allocator`], set in `main.rs`), built
//! without transparent huge pages
//! (its arenas would otherwise be advised into 2 MB pages, each resident whole: 15–35 MB of RSS for nothing). Freed
//! memory goes back to the system sooner than mimalloc's default second: at once in an SCF instance — billed by
//! its memory class, frozen between invocations before a delayed purge could run — and after 100 ms in HTTP mode,
//! where 32 concurrent 10 MB downloads otherwise leave the process above 64 MB (`cargo bench --bench streaming`).

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

/// mimalloc as Rust's global allocator. A layout whose alignment is at most a word's goes to `mi_malloc` and the
/// like — every mimalloc block is word-aligned, as mimalloc's own `mi_realloc_aligned` relies on — and only a larger
/// alignment to the `_aligned` calls. (Sending every allocation to `mi_malloc_aligned`, as the `mimalloc` crate
/// does, takes mimalloc v3's generic aligned path whenever a size class's free list is empty: twice a request on the
/// cached token, ~450 instructions, counted with callgrind.)
pub struct Allocator;

/// The alignment every mimalloc block has.
const WORD: usize = std::mem::size_of::<usize>();

// SAFETY: each call hands the layout's size (and, above a word, its alignment) to the mimalloc call that honours
// it; `mi_free` frees blocks of both kinds; a null return is passed on as the allocation failure it reports.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc's allocation calls accept any size and a power-of-two alignment (which a Layout has).
        unsafe { by_alignment(layout, libmimalloc_sys::mi_malloc, libmimalloc_sys::mi_malloc_aligned) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        unsafe { by_alignment(layout, libmimalloc_sys::mi_zalloc, libmimalloc_sys::mi_zalloc_aligned) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (GlobalAlloc's contract), so from mimalloc.
        unsafe { libmimalloc_sys::mi_free(ptr as *mut c_void) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout`; the new block keeps its alignment.
        unsafe {
            if layout.align() <= WORD {
                libmimalloc_sys::mi_realloc(ptr as *mut c_void, new_size) as *mut u8
            } else {
                libmimalloc_sys::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
            }
        }
    }
}

/// A block for `layout` from `plain` when a word's alignment is enough, else from `aligned`.
///
/// # Safety
/// `plain` and `aligned` are mimalloc allocation calls (size; size and power-of-two alignment).
#[inline]
unsafe fn by_alignment(
    layout: Layout,
    plain: unsafe extern "C" fn(usize) -> *mut c_void,
    aligned: unsafe extern "C" fn(usize, usize) -> *mut c_void,
) -> *mut u8 {
    // SAFETY: the caller hands mimalloc's own calls, which accept any size and a power-of-two alignment.
    unsafe {
        if layout.align() <= WORD {
            plain(layout.size()) as *mut u8
        } else {
            aligned(layout.size(), layout.align()) as *mut u8
        }
    }
}

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
    fn every_block_has_its_layouts_alignment_and_keeps_its_bytes() {
        let a = Allocator;
        let mut held = Vec::new();
        // Sizes across mimalloc's small, medium and large classes, each alignment up to a page's.
        for size in [1usize, 3, 7, 8, 12, 24, 40, 100, 1000, 5000, 70_000, 1 << 20] {
            for align in [1usize, 2, 4, 8, 16, 32, 64, 128, 4096] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: a non-zero size; each block is written within its size and freed once below.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null() && p as usize % align == 0, "alloc {size}/{align}");
                    p.write_bytes(0xA5, size);
                    let z = a.alloc_zeroed(layout);
                    assert!(!z.is_null() && z as usize % align == 0, "zeroed {size}/{align}");
                    assert!(
                        std::slice::from_raw_parts(z, size).iter().all(|b| *b == 0),
                        "zeroed {size}/{align}"
                    );
                    let grown = a.realloc(p, layout, size * 3);
                    assert!(!grown.is_null() && grown as usize % align == 0, "realloc {size}/{align}");
                    assert!(
                        std::slice::from_raw_parts(grown, size).iter().all(|b| *b == 0xA5),
                        "kept {size}/{align}"
                    );
                    held.push((grown, Layout::from_size_align(size * 3, align).unwrap()));
                    held.push((z, layout));
                }
            }
        }
        for (p, layout) in held {
            // SAFETY: each block came from `a` with this layout and is freed once.
            unsafe { a.dealloc(p, layout) }
        }
    }

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
