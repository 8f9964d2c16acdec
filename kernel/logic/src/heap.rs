//! A heap for `#[global_allocator]`: `buddy_system_allocator`'s buddy heap
//! behind a spin lock. The kernel wraps it to keep interrupts off while the
//! lock is held; user code (the vDSO, the user library) uses it as it is.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

/// A spin-locked buddy heap, empty until [`init`](BuddyHeap::init).
pub struct BuddyHeap(spin::Mutex<buddy_system_allocator::Heap<32>>);

impl BuddyHeap {
    /// An empty heap (every allocation fails until `init`).
    pub const fn empty() -> Self {
        BuddyHeap(spin::Mutex::new(buddy_system_allocator::Heap::empty()))
    }

    /// Hands the heap `len` bytes at `start`.
    ///
    /// # Safety
    /// The memory is valid, unused by anything else, and stays so for good.
    pub unsafe fn init(&self, start: usize, len: usize) {
        // SAFETY: per the contract.
        unsafe { self.0.lock().init(start, len) }
    }

    /// Bytes not handed out (some of them may be too fragmented for a large
    /// block).
    pub fn free_bytes(&self) -> usize {
        let h = self.0.lock();
        h.stats_total_bytes().saturating_sub(h.stats_alloc_actual())
    }
}

// SAFETY: every block goes through the buddy heap under its lock, so each is
// handed to one owner at a time; a failed allocation returns null.
unsafe impl GlobalAlloc for BuddyHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.0
            .lock()
            .alloc(layout)
            .map_or(core::ptr::null_mut(), |p| p.as_ptr())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(p) = NonNull::new(ptr) {
            self.0.lock().dealloc(p, layout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    #[test]
    fn allocates_within_its_memory_and_reuses_it() {
        let mut mem = vec![0u64; 4096];
        let (start, len) = (mem.as_mut_ptr() as usize, mem.len() * 8);
        let heap = BuddyHeap::empty();
        let layout = Layout::from_size_align(64, 8).unwrap();
        // SAFETY: `mem` outlives `heap` in this test and is used for nothing else.
        unsafe {
            assert!(heap.alloc(layout).is_null(), "empty before init");
            heap.init(start, len);
            let a = heap.alloc(layout);
            assert!((start..start + len).contains(&(a as usize)));
            heap.dealloc(a, layout);
            let too_big = Layout::from_size_align(len * 2, 8).unwrap();
            assert!(heap.alloc(too_big).is_null());
            assert_eq!(heap.alloc(layout), a);
        }
    }
}
