//! A counting allocator: live heap bytes, to measure memory per in-flight saga without the
//! noise of the allocator's retained pages that resident-set figures include.
// The one unsafe block of the workspace: a `GlobalAlloc` can only be written with
// `unsafe impl`; it forwards to the system allocator and counts.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

pub(crate) struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
/// Counting costs an atomic update per allocation: only on when asked for (`--step-ms`).
static ON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Starts counting.
pub(crate) fn enable() {
    ON.store(true, Ordering::Relaxed);
}

/// Bytes allocated and not yet freed since counting started (frees of older blocks make it
/// wrap below zero, hence the wrapping reads).
pub(crate) fn live_bytes() -> isize {
    LIVE.load(Ordering::Relaxed) as isize
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds the contract; the
// counter does not touch the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ON.load(Ordering::Relaxed) {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ON.load(Ordering::Relaxed) {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if ON.load(Ordering::Relaxed) {
            LIVE.fetch_add(new_size, Ordering::Relaxed);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        // SAFETY: forwarded with the caller's arguments.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
