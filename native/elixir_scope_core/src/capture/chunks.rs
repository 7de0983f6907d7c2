//! A fixed table of lazily allocated, zero-filled memory chunks.
//!
//! Capture must never take a lock, and memory must only be committed as it is used. The table is
//! sized once (its length bounds memory); the first writer that needs chunk `k` allocates it and
//! publishes it with one compare-and-swap; a writer that loses the race frees its own allocation
//! and uses the winner's. Chunks live until the table is dropped, so a pointer read from the table
//! stays valid for as long as the table is borrowed.
//!
//! Committing fresh memory is the largest single cost of capture on some machines (the first
//! write to a fresh page makes the kernel zero it; measured here at under 1 GB/s, over 100 ns per
//! event). So the owner asks a background thread to commit chunk `k + 1` ahead when it starts
//! using chunk `k` ([`ChunkTable::commit_ahead`]): it maps the chunk, writes to every page while nobody else can see it, and publishes it
//! with the same compare-and-swap. Writers never wait for that thread; if they get to a chunk
//! first they allocate it themselves, exactly as without it.
//!
//! On Linux, chunks of exactly [`HUGE_PAGE`] bytes are mapped 2 MiB-aligned and advised for
//! transparent huge pages, which takes one page fault per 2 MiB instead of 512. When a table is
//! dropped, up to [`POOL_CHUNKS`] of its huge chunks are kept in a process-wide pool and reused by
//! the next table, so a new capture after the first one starts on memory that is already
//! committed (payload chunks are reused as they are; slot chunks are cleared, at memset speed).

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::null_mut;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

/// What a chunk's pointer holds once its allocation failed: never a chunk (allocations are
/// aligned to at least 8), and never retried, so "not allocated yet" (null) and "never will
/// be" stay apart: a reader waits for the first, and counts the second's slots as holes.
const FAILED: *mut u8 = std::ptr::dangling_mut::<u8>();

/// The memory orderings of publishing a chunk, named once: the table uses these, and so does
/// the capture log's loom model (`capture::log`), which checks that they are enough.
pub(crate) mod order {
    use std::sync::atomic::Ordering;

    /// Reading a chunk's pointer before its memory.
    pub(crate) const OBSERVE: Ordering = Ordering::Acquire;
    /// Installing a chunk (success: publish its zeroed memory; failure: see the winner's).
    pub(crate) const INSTALL: (Ordering, Ordering) = (Ordering::AcqRel, Ordering::Acquire);
}

/// The huge page size this module aligns large chunks to.
pub const HUGE_PAGE: usize = 2 << 20;

/// Huge chunks kept for reuse after their table is dropped (64 MiB).
pub const POOL_CHUNKS: usize = 32;

/// How a [`ChunkTable`] treats its chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkOptions {
    /// Serve [`ChunkTable::commit_ahead`] requests.
    pub ahead: bool,
    /// Chunks must read as zero when installed (a reused chunk is cleared first).
    pub zeroed: bool,
}

/// A table of `count` chunks of `chunk_bytes` bytes each, allocated on first use.
pub struct ChunkTable {
    zeroed: bool,
    ptrs: Box<[AtomicPtr<u8>]>,
    layout: Layout,
    /// Chunks come from `os::map_huge` (and go back with `os::unmap`) instead of the allocator.
    huge: bool,
    /// Bytes allocated so far (a multiple of the chunk size). Statistics only, so `Relaxed`.
    allocated: AtomicU64,
    /// This table, for handing to the commit-ahead thread without keeping the table alive.
    me: Weak<ChunkTable>,
}

// SAFETY: the table only hands out raw pointers; every access to chunk memory goes through the
// owners (`CaptureLog`), which establish exclusive write / published read with their own atomics.
unsafe impl Send for ChunkTable {}
// SAFETY: see `Send`; the pointer slots themselves are atomics.
unsafe impl Sync for ChunkTable {}

impl ChunkTable {
    /// A table of `count` chunks of `chunk_bytes` bytes aligned to `align`. With `ahead`,
    /// [`ChunkTable::commit_ahead`] requests are served; without, they are ignored.
    ///
    /// # Errors
    /// `None` when `chunk_bytes` is zero or the layout is invalid.
    pub fn new(
        count: usize,
        chunk_bytes: usize,
        align: usize,
        opts: ChunkOptions,
    ) -> Option<Arc<ChunkTable>> {
        if chunk_bytes == 0 {
            return None;
        }
        let layout = Layout::from_size_align(chunk_bytes, align).ok()?;
        let ptrs = (0..count).map(|_| AtomicPtr::new(null_mut())).collect();
        let table = Arc::new_cyclic(|me| ChunkTable {
            zeroed: opts.zeroed,
            ptrs,
            layout,
            huge: os::HUGE_SUPPORTED && chunk_bytes == HUGE_PAGE && align <= HUGE_PAGE,
            allocated: AtomicU64::new(0),
            me: if opts.ahead { me.clone() } else { Weak::new() },
        });
        Some(table)
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
        let p = self.ptrs.get(k)?.load(order::OBSERVE);
        (!p.is_null() && p != FAILED).then_some(p)
    }

    /// Whether chunk `k` could not be allocated (and never will be): out of range counts too.
    pub fn failed(&self, k: usize) -> bool {
        self.ptrs
            .get(k)
            .is_none_or(|p| p.load(Ordering::Relaxed) == FAILED)
    }

    /// The chunk `k`, allocating it if needed. `None` if `k` is out of range or the allocator
    /// failed (the caller drops the event; capture never aborts the VM).
    #[inline]
    pub fn get_or_alloc(&self, k: usize) -> Option<*mut u8> {
        let p = self.ptrs.get(k)?.load(order::OBSERVE);
        if p == FAILED {
            return None;
        }
        if !p.is_null() {
            return Some(p);
        }
        let p = self.install(k, false);
        self.commit_ahead(k + 1);
        p
    }

    /// Allocates chunk `k` (writing to each of its pages first when `touch`) and publishes it,
    /// unless another thread got there first. Returns the chunk in force.
    #[cold]
    fn install(&self, k: usize, touch: bool) -> Option<*mut u8> {
        let slot = self.ptrs.get(k)?;
        let (fresh, reused) = match self.huge.then(pool::take).flatten() {
            Some(p) => (p, true),
            None if self.huge => (os::map_huge(), false),
            // SAFETY: the layout has a non-zero size (checked in `new`).
            None => (unsafe { alloc_zeroed(self.layout) }, false),
        };
        if fresh.is_null() {
            if touch {
                // The commit-ahead thread's failure is not final: the writer that needs the
                // chunk tries again itself.
                return None;
            }
            // A writer's: marked for good, unless another thread got its chunk meanwhile.
            return match slot.compare_exchange(
                null_mut(),
                FAILED,
                order::INSTALL.0,
                order::INSTALL.1,
            ) {
                Ok(_) => None,
                Err(winner) => (winner != FAILED).then_some(winner),
            };
        }
        if reused && self.zeroed {
            // SAFETY: the pooled chunk is HUGE_PAGE bytes, ours alone until published.
            unsafe { fresh.write_bytes(0, HUGE_PAGE) };
        } else if touch && !reused {
            for off in (0..self.layout.size()).step_by(4096) {
                // SAFETY: `fresh` is ours alone (unpublished) and `off` is inside it; writing the
                // zero it already holds commits the page.
                unsafe { fresh.add(off).write_volatile(0) };
            }
        }
        // Release publishes the zeroed memory; Acquire on failure sees the winner's memory.
        match slot.compare_exchange(null_mut(), fresh, order::INSTALL.0, order::INSTALL.1) {
            Ok(_) => {
                self.allocated
                    .fetch_add(self.layout.size() as u64, Ordering::Relaxed);
                Some(fresh)
            }
            Err(winner) => {
                // SAFETY: `fresh` came from this table's allocation path and was never shared.
                unsafe { self.free(fresh) };
                (winner != FAILED).then_some(winner)
            }
        }
    }

    /// Asks the background thread to commit chunk `k` ahead (never blocks; a full request queue
    /// just means the writer will commit it itself). Owners call it when they start using chunk
    /// `k - 1`.
    pub fn commit_ahead(&self, k: usize) {
        if k < self.ptrs.len() && self.ptrs[k].load(Ordering::Relaxed).is_null() {
            ahead::request(self.me.clone(), k);
        }
    }
}

/// Returns the memory kept in the reuse pool to the operating system; returns the bytes released.
pub fn release_pool() -> usize {
    let chunks = pool::drain();
    for p in &chunks {
        os::unmap(*p);
    }
    chunks.len() * HUGE_PAGE
}

/// Released huge chunks, for the next table. A lock is fine here: it is taken once per 2 MiB
/// chunk installed or released, never per event.
mod pool {
    use super::POOL_CHUNKS;
    use std::sync::Mutex;

    /// Chunk addresses (as `usize`, so the static is `Send`).
    static POOL: Mutex<Vec<usize>> = Mutex::new(Vec::new());

    /// A pooled chunk, if any.
    pub fn take() -> Option<*mut u8> {
        POOL.lock().ok()?.pop().map(|p| p as *mut u8)
    }

    /// Takes every pooled chunk out.
    pub fn drain() -> Vec<*mut u8> {
        POOL.lock()
            .map(|mut p| p.drain(..).map(|a| a as *mut u8).collect())
            .unwrap_or_default()
    }

    /// Keeps `p` for reuse; `false` when the pool is full (the caller releases it).
    pub fn give(p: *mut u8) -> bool {
        match POOL.lock() {
            Ok(mut pool) if pool.len() < POOL_CHUNKS => {
                pool.push(p as usize);
                true
            }
            _ => false,
        }
    }
}

/// The commit-ahead thread: one per OS process, started on first use, fed through a bounded
/// channel whose `try_send` never blocks a writer.
mod ahead {
    use super::ChunkTable;
    use std::sync::mpsc::{sync_channel, SyncSender};
    use std::sync::{OnceLock, Weak};

    type Request = (Weak<ChunkTable>, usize);

    static QUEUE: OnceLock<Option<SyncSender<Request>>> = OnceLock::new();

    pub fn request(table: Weak<ChunkTable>, k: usize) {
        if table.strong_count() == 0 {
            return;
        }
        let queue = QUEUE.get_or_init(|| {
            let (tx, rx) = sync_channel::<Request>(256);
            std::thread::Builder::new()
                .name("elixir_scope_commit_ahead".into())
                .spawn(move || {
                    for (table, k) in rx {
                        if let Some(table) = table.upgrade() {
                            if table.get(k).is_none() {
                                table.install(k, true);
                            }
                        }
                    }
                })
                .ok()
                .map(|_| tx)
        });
        if let Some(tx) = queue {
            let _ = tx.try_send((table, k));
        }
    }
}

impl ChunkTable {
    /// # Safety
    /// `p` must be a chunk allocated by `alloc_slow` of this table and no longer used.
    unsafe fn free(&self, p: *mut u8) {
        if self.huge {
            if !pool::give(p) {
                os::unmap(p);
            }
        } else {
            // SAFETY: non-huge chunks come from `alloc_zeroed` with `self.layout`.
            unsafe { dealloc(p, self.layout) };
        }
    }
}

impl Drop for ChunkTable {
    fn drop(&mut self) {
        for slot in self.ptrs.iter() {
            let p = slot.load(Ordering::Acquire);
            if !p.is_null() && p != FAILED {
                // SAFETY: every non-null pointer was allocated by `alloc_slow`, and `&mut self`
                // means nobody else can still use it.
                unsafe { self.free(p) };
            }
        }
    }
}

#[cfg(target_os = "linux")]
mod os {
    use super::HUGE_PAGE;
    use std::ptr::null_mut;

    pub const HUGE_SUPPORTED: bool = true;

    /// A zero-filled, 2 MiB-aligned, 2 MiB anonymous mapping advised for huge pages, or null.
    pub fn map_huge() -> *mut u8 {
        // Map twice the size, then trim to an aligned 2 MiB window.
        let len = 2 * HUGE_PAGE;
        // SAFETY: an anonymous private mapping with no address hint has no preconditions.
        let base = unsafe {
            libc::mmap(
                null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return null_mut();
        }
        let start = base as usize;
        let aligned = (start + HUGE_PAGE - 1) & !(HUGE_PAGE - 1);
        // SAFETY: both trimmed ranges lie inside the mapping just made and are not used.
        unsafe {
            if aligned > start {
                libc::munmap(base, aligned - start);
            }
            let tail = start + len - (aligned + HUGE_PAGE);
            if tail > 0 {
                libc::munmap((aligned + HUGE_PAGE) as *mut libc::c_void, tail);
            }
            // Advice only: without huge pages the mapping still works with 4 KiB pages.
            libc::madvise(aligned as *mut libc::c_void, HUGE_PAGE, libc::MADV_HUGEPAGE);
        }
        aligned as *mut u8
    }

    /// Releases a mapping made by `map_huge`.
    pub fn unmap(p: *mut u8) {
        // SAFETY: `p` is the start of a HUGE_PAGE mapping made by `map_huge`.
        unsafe { libc::munmap(p.cast(), HUGE_PAGE) };
    }
}

#[cfg(not(target_os = "linux"))]
mod os {
    pub const HUGE_SUPPORTED: bool = false;
    pub fn map_huge() -> *mut u8 {
        std::ptr::null_mut()
    }
    pub fn unmap(_p: *mut u8) {}
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const NONE: ChunkOptions = ChunkOptions {
        ahead: false,
        zeroed: true,
    };
    const ZEROED: ChunkOptions = NONE;
    const AHEAD: ChunkOptions = ChunkOptions {
        ahead: true,
        zeroed: true,
    };

    #[test]
    fn chunks_are_allocated_once_and_zeroed() {
        let t = ChunkTable::new(4, 64, 8, NONE).unwrap();
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

    /// Tests that allocate huge chunks share the process-wide pool: they run one at a time.
    pub(crate) static HUGE_TEST_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn huge_chunks_are_aligned_zeroed_and_writable() {
        let _lock = HUGE_TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        release_pool();
        let t = ChunkTable::new(2, HUGE_PAGE, 64, ZEROED).unwrap();
        let a = t.get_or_alloc(1).unwrap();
        assert!(!a.is_null());
        if os::HUGE_SUPPORTED {
            assert_eq!(a as usize % HUGE_PAGE, 0);
        }
        // SAFETY: chunk 1 is HUGE_PAGE bytes.
        let s = unsafe { std::slice::from_raw_parts_mut(a, HUGE_PAGE) };
        assert!(s.iter().all(|b| *b == 0));
        // Dirty every byte, so that reuse without clearing would show.
        s.fill(0xFF);
        assert_eq!(t.allocated_bytes(), HUGE_PAGE as u64);
        drop(t);
        // The chunk went to the pool; a zeroed table reuses a pooled chunk and clears it.
        let t = ChunkTable::new(1, HUGE_PAGE, 64, ZEROED).unwrap();
        let b = t.get_or_alloc(0).unwrap();
        // SAFETY: chunk 0 is HUGE_PAGE bytes.
        assert!(unsafe { std::slice::from_raw_parts(b, HUGE_PAGE) }
            .iter()
            .all(|b| *b == 0));
        drop(t);
        assert_eq!(
            release_pool(),
            if os::HUGE_SUPPORTED { HUGE_PAGE } else { 0 }
        );
    }

    #[test]
    fn commit_ahead_prepares_the_next_chunk() {
        let t = ChunkTable::new(3, 1 << 16, 8, AHEAD).unwrap();
        let wait = |k| {
            for _ in 0..2000 {
                if t.get(k).is_some() {
                    return true;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            false
        };
        assert!(t.get(0).is_none(), "nothing is committed before use");
        t.get_or_alloc(0).unwrap();
        t.commit_ahead(1);
        assert!(wait(1), "chunk 1 is committed on request");
        let c1 = t.get_or_alloc(1).unwrap();
        // SAFETY: chunk 1 is 64 KiB.
        assert!(unsafe { std::slice::from_raw_parts(c1, 1 << 16) }
            .iter()
            .all(|b| *b == 0));
        assert!(t.get(2).is_none(), "nothing is committed unasked");
        t.get_or_alloc(2).unwrap();
        assert_eq!(t.allocated_bytes(), 3 << 16);
    }

    #[test]
    fn racing_allocators_agree_on_one_chunk() {
        let t = ChunkTable::new(1, 4096, 64, NONE).unwrap();
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
