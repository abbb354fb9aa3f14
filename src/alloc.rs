//! The memory allocator of the `ditail` binary and of the benchmarks (which include this
//! file by path, so that they measure what the command runs): mimalloc, with freed pages
//! handed back to the kernel lazily.
//!
//! Tensor buffers are large and short-lived. glibc returns each large one to the kernel,
//! so every new buffer is faulted in and zeroed page by page (20% of a CPU U-Net forward in
//! `perf`); mimalloc keeps freed memory for reuse. By default (mimalloc v3, as
//! libmimalloc-sys builds it) it still *decommits* what stays free for a second
//! (`madvise(MADV_DONTNEED)`), and the next buffers there are faulted in and zeroed again.
//! Resetting instead (`MADV_FREE`: the kernel takes the pages back only when it needs
//! memory, and a page written again before that costs nothing) measured, on the development
//! machine (2 AVX2 cores, `examples/bench`, medians of 3, the two builds alternated twice):
//! U-Net 32x32 batch 1 1.30 / 1.33 s → 1.28 / 1.26 s, batch 3 3.54 / 3.46 s → 3.32 /
//! 3.26 s, VAE decode 256 px 2.24 / 2.01 s → 1.93 / 1.97 s, peak RSS within 0.05 GiB.
//! Freed memory still goes back to the kernel, so an idle `ditail serve` does not hold its
//! peak.

use std::ffi::{c_int, c_long};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// mimalloc's option API (in the library libmimalloc-sys builds and links; its Rust
// bindings do not name this option).
unsafe extern "C" {
    fn mi_option_set(option: c_int, value: c_long);
}

/// `mi_option_purge_decommits` in mimalloc's `mi_option_e` (the same in v2 and v3: the
/// enum keeps its numbering, deprecated entries included, since it is ABI; the test below
/// checks it against the options' defaults).
const PURGE_DECOMMITS: c_int = 5;
/// `mi_option_purge_delay`, only to check the numbering in the test below.
#[cfg(test)]
const PURGE_DELAY: c_int = 15;

/// Sets the allocator up; call first thing in `main`.
pub fn configure() {
    // SAFETY: setting an option mimalloc defines, to a value it documents (0: reset).
    unsafe { mi_option_set(PURGE_DECOMMITS, 0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    unsafe extern "C" {
        fn mi_option_get(option: c_int) -> c_long;
    }

    /// Whether purged memory is decommitted (mimalloc's default) rather than reset.
    fn decommits() -> bool {
        // SAFETY: reading an option mimalloc defines.
        unsafe { mi_option_get(PURGE_DECOMMITS) != 0 }
    }

    /// The option numbers name the options meant: mimalloc's documented defaults are at
    /// them (v3: purge_decommits 1, purge_delay 1000 ms) until `configure` changes the
    /// first.
    #[test]
    fn option_numbers_are_mimallocs() {
        assert!(decommits(), "purge_decommits defaults to 1");
        // SAFETY: reading an option mimalloc defines.
        assert_eq!(unsafe { mi_option_get(PURGE_DELAY) }, 1000);
        configure();
        assert!(!decommits());
    }
}
