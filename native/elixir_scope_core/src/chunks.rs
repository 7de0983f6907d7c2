//! A fixed table of lazily allocated, zero-filled memory chunks.
//!
//! Capture must never take a lock, and memory must only be committed as it is used. The table is
//! sized once (its length bounds memory); the first writer that needs chunk `k` allocates it and
//! publishes it with one compare-and-swap; a writer that loses the race frees its own allocation
//! and uses the winner's. Chunks live until the table is dropped, so a pointer read from the table
//! stays valid for as long as the table is borrowed.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::null_mut;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

/// A table of `count` chunks of `chunk_bytes` bytes each, allocated on first use.
pub struct ChunkTable {
    ptrs: Box<[AtomicPtr<u8>]>,
    layout: Layout,
    /// Bytes allocated so far (a multiple of the chunk size). Statistics only, so `Relaxed`.
    allocated: AtomicU64,
}

// SAFETY: the table only hands out raw pointers; every access to chunk memory goes through the
// owners (`CaptureLog`), which establish exclusive write / published read with their own atomics.
unsafe impl Send for ChunkTable {}
// SAFETY: see `Send`; the pointer slots themselves are atomics.
unsafe impl Sync for ChunkTable {}

impl ChunkTable {
    /// A table of `count` chunks of `chunk_bytes` bytes aligned to `align`.
    ///
    /// # Errors
    /// `None` when `chunk_bytes` is zero or the layout is invalid.
    pub fn new(count: usize, chunk_bytes: usize, align: usize) -> Option<ChunkTable> {
        if chunk_bytes == 0 {
            return None;
        }
        let layout = Layout::from_size_align(chunk_bytes, align).ok()?;
        let ptrs = (0..count).map(|_| AtomicPtr::new(null_mut())).collect();
        Some(ChunkTable {
            ptrs,
            layout,
            allocated: AtomicU64::new(0),
        })
    }

    /// Number of chunks the table can hold.
    pub fn count(&self) -> usize {
        self.ptrs.len()
    }

    /// Bytes allocated so far.
    pub fn allocated_bytes(&self) -> u64 {
        self.allocated.load(Ordering::Relaxed)
    }

    /// The chunk `k`, if it has been allocated.
    #[inline]
    pub fn get(&self, k: usize) -> Option<*mut u8> {
        // Acquire pairs with the Release of the publishing CAS, so the zeroed chunk is visible.
        let p = self.ptrs.get(k)?.load(Ordering::Acquire);
        (!p.is_null()).then_some(p)
    }

    /// The chunk `k`, allocating it if needed. `None` if `k` is out of range or the allocator
    /// failed (the caller drops the event; capture never aborts the VM).
    #[inline]
    pub fn get_or_alloc(&self, k: usize) -> Option<*mut u8> {
        let slot = self.ptrs.get(k)?;
        let p = slot.load(Ordering::Acquire);
        if !p.is_null() {
            return Some(p);
        }
        self.alloc_slow(slot)
    }

    #[cold]
    fn alloc_slow(&self, slot: &AtomicPtr<u8>) -> Option<*mut u8> {
        // SAFETY: the layout has a non-zero size (checked in `new`).
        let fresh = unsafe { alloc_zeroed(self.layout) };
        if fresh.is_null() {
            return None;
        }
        // Release publishes the zeroed memory; Acquire on failure sees the winner's memory.
        match slot.compare_exchange(null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                self.allocated
                    .fetch_add(self.layout.size() as u64, Ordering::Relaxed);
                Some(fresh)
            }
            Err(winner) => {
                // SAFETY: `fresh` came from `alloc_zeroed` with this layout and was never shared.
                unsafe { dealloc(fresh, self.layout) };
                Some(winner)
            }
        }
    }
}

impl Drop for ChunkTable {
    fn drop(&mut self) {
        for slot in self.ptrs.iter() {
            let p = slot.load(Ordering::Acquire);
            if !p.is_null() {
                // SAFETY: every non-null pointer was allocated by `alloc_slow` with `self.layout`,
                // and `&mut self` means nobody else can still use it.
                unsafe { dealloc(p, self.layout) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn chunks_are_allocated_once_and_zeroed() {
        let t = ChunkTable::new(4, 64, 8).unwrap();
        assert_eq!(t.get(0), None);
        let a = t.get_or_alloc(0).unwrap();
        // SAFETY: chunk 0 is 64 bytes and zeroed.
        assert!(unsafe { std::slice::from_raw_parts(a, 64) }
            .iter()
            .all(|b| *b == 0));
        assert_eq!(t.get_or_alloc(0), Some(a));
        assert_eq!(t.get(0), Some(a));
        assert_eq!(t.get_or_alloc(4), None);
        assert_eq!(t.allocated_bytes(), 64);
    }

    #[test]
    fn racing_allocators_agree_on_one_chunk() {
        let t = Arc::new(ChunkTable::new(1, 4096, 64).unwrap());
        let ptrs: Vec<usize> = (0..8)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || t.get_or_alloc(0).unwrap() as usize)
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        assert!(ptrs.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(t.allocated_bytes(), 4096);
    }
}
