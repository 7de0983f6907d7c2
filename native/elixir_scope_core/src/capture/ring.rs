//! Generations of a ring-mode capture log, and when the memory of an evicted one may be freed.
//!
//! A ring-mode log (`overflow: :evict_oldest`) keeps its budget in `GENERATIONS` logs of an
//! eighth of it each. Writers append to the newest; the writer that finds it full installs a
//! fresh one in the slot of the oldest, which is evicted whole. Nothing is overwritten in place:
//! an evicted generation's memory is freed once nobody can still be using it, so a reader holding
//! an event keeps it whole, and a reader asking afterwards finds it gone.
//!
//! Who may be using a generation:
//!
//! * a writer that took it as the newest and is still appending: each slot counts the writers
//!   inside it (`inflight`, one count per parity of the lap round the ring, so that the writers
//!   of the generation that replaced it do not hold it up), incremented before the generation
//!   is read from the slot;
//! * a reader (a query) that read it from a slot while pinned ([`Ring::pin`]): the ring counts
//!   pinned readers.
//!
//! An evicted generation is unlinked first (swapped out of its slot), then retired. It is freed
//! once its slot's writers and the ring's readers have each been seen at zero after the unlink:
//! whoever got the generation from the slot was counted before that and stays counted while
//! using it, so a zero seen afterwards means they are all done. The counts and the slots use
//! sequentially consistent operations, which is what that argument needs. Neither writers nor
//! readers ever wait for each other; the retired list's lock is taken by installs (once per
//! generation) and by the last reader leaving, for a scan of a few entries.

use parking_lot::Mutex;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering::SeqCst};

/// Generations a ring-mode log keeps: eviction frees an eighth of the budget at a time.
pub const GENERATIONS: usize = 8;

/// What a ring keeps: a log that knows its generation number.
pub trait Generation: Send + Sync {
    /// Its number, 0 for the first, one more for each installed after it.
    fn generation(&self) -> u64;
}

/// One slot: the generation in it and the writers inside it, counted by the parity of the
/// generation's lap (its number / `GENERATIONS`), so that the writers of the generation that
/// replaced an evicted one are not counted with those that may still use the evicted one.
#[repr(align(64))]
struct Slot<L> {
    log: AtomicPtr<L>,
    inflight: [AtomicU64; 2],
}

/// The parity of generation `g`'s lap: which of its slot's counters its writers take.
fn lap(g: u64) -> usize {
    (g / GENERATIONS as u64 % 2) as usize
}

/// An evicted generation waiting until nobody uses it.
struct Retired<L> {
    log: *mut L,
    slot: usize,
    lap: usize,
    writers_gone: bool,
    readers_gone: bool,
}

/// The generations of a ring-mode log. See the module docs.
pub struct Ring<L: Generation> {
    slots: Box<[Slot<L>]>,
    /// The newest generation's number.
    current: AtomicU64,
    /// The newest number an install has claimed (it is `current` once that install is done).
    claimed: AtomicU64,
    readers: AtomicU64,
    retired: Mutex<Vec<Retired<L>>>,
}

// SAFETY: the ring owns its generations (raw pointers from `Box::into_raw`) and hands out shared
// references only; `L` is `Send + Sync`.
unsafe impl<L: Generation> Send for Ring<L> {}
// SAFETY: as for `Send`; every shared field is an atomic or behind the mutex.
unsafe impl<L: Generation> Sync for Ring<L> {}

/// A writer inside the newest generation (as it was when entered). Leaving it (drop) lets the
/// generation be freed once evicted.
pub struct Writing<'a, L: Generation> {
    inflight: &'a AtomicU64,
    log: &'a L,
}

impl<L: Generation> Writing<'_, L> {
    /// The generation written to.
    pub fn log(&self) -> &L {
        self.log
    }
}

impl<L: Generation> Drop for Writing<'_, L> {
    fn drop(&mut self) {
        self.inflight.fetch_sub(1, SeqCst);
    }
}

/// A pinned reader: every generation it reads stays in memory until it is dropped.
pub struct Pinned<'a, L: Generation> {
    ring: &'a Ring<L>,
}

impl<L: Generation> Drop for Pinned<'_, L> {
    fn drop(&mut self) {
        if self.ring.readers.fetch_sub(1, SeqCst) == 1 {
            self.ring.reclaim(false);
        }
    }
}

impl<L: Generation> Ring<L> {
    /// A ring whose newest (and only) generation is `first`.
    pub fn new(first: Box<L>) -> Ring<L> {
        let current = first.generation();
        let slots: Box<[Slot<L>]> = (0..GENERATIONS)
            .map(|_| Slot {
                log: AtomicPtr::new(std::ptr::null_mut()),
                inflight: [AtomicU64::new(0), AtomicU64::new(0)],
            })
            .collect();
        slots[current as usize % GENERATIONS]
            .log
            .store(Box::into_raw(first), SeqCst);
        Ring {
            slots,
            current: AtomicU64::new(current),
            claimed: AtomicU64::new(current),
            readers: AtomicU64::new(0),
            retired: Mutex::new(Vec::new()),
        }
    }

    /// Enters the newest generation for writing. Lock-free: it only tries again when a
    /// generation was installed meanwhile.
    #[inline]
    pub fn enter(&self) -> Writing<'_, L> {
        loop {
            let g = self.current.load(SeqCst);
            let slot = &self.slots[g as usize % GENERATIONS];
            let inflight = &slot.inflight[lap(g)];
            // Counted before the generation is read from the slot (see the module docs).
            inflight.fetch_add(1, SeqCst);
            let log = slot.log.load(SeqCst);
            // SAFETY: a non-null slot pointer is a live generation (from `Box::into_raw`), and
            // it is not freed while this writer is counted in the slot: a writer that reads the
            // generation it expects (`g`) is counted by `g`'s lap, the one `reclaim` waits on.
            match unsafe { log.as_ref() } {
                Some(log) if log.generation() == g => return Writing { inflight, log },
                // A generation was installed since `current` was read: read it again (never
                // using the one it read).
                _ => {
                    inflight.fetch_sub(1, SeqCst);
                    std::hint::spin_loop();
                }
            }
        }
    }

    /// The newest generation's number.
    pub fn current(&self) -> u64 {
        self.current.load(SeqCst)
    }

    /// Makes `log` the newest generation (its number one more than the newest's), evicting the
    /// oldest when every slot is taken. One install per number wins, so generations are
    /// installed in order. False (and `log` dropped) when its number is not the next one.
    pub fn install(&self, log: Box<L>) -> bool {
        let g = log.generation();
        let prev = g.wrapping_sub(1);
        if self.current.load(SeqCst) != prev
            || self
                .claimed
                .compare_exchange(prev, g, SeqCst, SeqCst)
                .is_err()
        {
            return false;
        }
        let i = g as usize % GENERATIONS;
        let old = self.slots[i].log.swap(Box::into_raw(log), SeqCst);
        self.current.store(g, SeqCst);
        if !old.is_null() {
            self.retired.lock().push(Retired {
                log: old,
                slot: i,
                // The evicted generation's lap (the one before `g`'s).
                lap: lap(g) ^ 1,
                writers_gone: false,
                readers_gone: false,
            });
        }
        self.reclaim(true);
        true
    }

    /// Pins the calling reader: the generations it reads stay whole until the pin is dropped.
    pub fn pin(&self) -> Pinned<'_, L> {
        self.readers.fetch_add(1, SeqCst);
        Pinned { ring: self }
    }

    /// The generations there are now, oldest first. Each is a distinct generation; one evicted
    /// meanwhile is absent (or its replacement is there instead).
    pub fn generations<'p>(&'p self, _pin: &'p Pinned<'p, L>) -> Vec<&'p L> {
        // SAFETY: the caller is pinned for as long as it borrows them.
        let mut gens: Vec<&L> = unsafe { self.each() }.collect();
        gens.sort_unstable_by_key(|l| l.generation());
        gens
    }

    /// The generations there are now, in no order.
    ///
    /// # Safety
    /// The caller holds a [`Pinned`] of this ring (taken before this call) for as long as it
    /// uses them.
    pub unsafe fn each(&self) -> impl Iterator<Item = &L> {
        self.slots
            .iter()
            // SAFETY: read after the caller's pin (counted in `readers`): not freed until the
            // pin is dropped.
            .filter_map(|s| unsafe { s.log.load(SeqCst).as_ref() })
    }

    /// Whether a reader is pinned (for checks).
    pub fn pinned(&self) -> bool {
        self.readers.load(SeqCst) > 0
    }

    /// Evicted generations waiting to be freed.
    pub fn retired(&self) -> usize {
        self.retired.lock().len()
    }

    /// Frees the retired generations nobody uses any more. `wait` takes the list's lock;
    /// otherwise a busy lock means another thread is doing it (or installing, which reclaims).
    fn reclaim(&self, wait: bool) {
        let mut list = match wait {
            true => self.retired.lock(),
            false => match self.retired.try_lock() {
                Some(l) => l,
                None => return,
            },
        };
        if list.is_empty() {
            return;
        }
        let no_readers = self.readers.load(SeqCst) == 0;
        let mut free = Vec::new();
        list.retain_mut(|r| {
            r.readers_gone |= no_readers;
            r.writers_gone |= self.slots[r.slot].inflight[r.lap].load(SeqCst) == 0;
            let done = r.readers_gone && r.writers_gone;
            if done {
                free.push(r.log);
            }
            !done
        });
        drop(list);
        for log in free {
            // SAFETY: unlinked before it was listed, and nobody counted then is left (see
            // the module docs): this is the last reference.
            drop(unsafe { Box::from_raw(log) });
        }
    }
}

impl<L: Generation> Drop for Ring<L> {
    fn drop(&mut self) {
        for s in self.slots.iter() {
            let log = s.log.swap(std::ptr::null_mut(), SeqCst);
            if !log.is_null() {
                // SAFETY: the ring is dropped, so nobody holds a `Writing` or a `Pinned`.
                drop(unsafe { Box::from_raw(log) });
            }
        }
        for r in self.retired.get_mut().drain(..) {
            // SAFETY: as above.
            drop(unsafe { Box::from_raw(r.log) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    /// A generation that counts its drops and poisons its value when dropped.
    struct Gen {
        n: u64,
        value: AtomicU64,
        drops: Arc<AtomicUsize>,
    }

    impl Generation for Gen {
        fn generation(&self) -> u64 {
            self.n
        }
    }

    impl Drop for Gen {
        fn drop(&mut self) {
            self.value.store(u64::MAX, SeqCst);
            self.drops.fetch_add(1, SeqCst);
        }
    }

    fn gen(n: u64, drops: &Arc<AtomicUsize>) -> Box<Gen> {
        Box::new(Gen {
            n,
            value: AtomicU64::new(n),
            drops: drops.clone(),
        })
    }

    #[test]
    fn the_oldest_is_evicted_and_freed_once_nobody_uses_it() {
        let drops = Arc::new(AtomicUsize::new(0));
        let ring = Ring::new(gen(0, &drops));
        for n in 1..GENERATIONS as u64 {
            assert!(ring.install(gen(n, &drops)));
        }
        assert!(!ring.install(gen(3, &drops)), "out of order");
        assert_eq!(drops.load(SeqCst), 1, "only the refused one");
        let pin = ring.pin();
        let oldest = ring.generations(&pin)[0];
        assert_eq!(oldest.n, 0);
        // Generation 0 is evicted while a reader holds it: kept until the reader leaves.
        assert!(ring.install(gen(GENERATIONS as u64, &drops)));
        assert_eq!(oldest.value.load(SeqCst), 0);
        assert_eq!((ring.retired(), drops.load(SeqCst)), (1, 1));
        let seen: Vec<u64> = ring.generations(&pin).iter().map(|g| g.n).collect();
        assert_eq!(seen, (1..=GENERATIONS as u64).collect::<Vec<_>>());
        drop(pin);
        assert_eq!((ring.retired(), drops.load(SeqCst)), (0, 2));
        // A writer inside the oldest generation keeps it too.
        let w = ring.enter();
        assert_eq!(w.log().n, GENERATIONS as u64);
        for n in GENERATIONS as u64 + 1..2 * GENERATIONS as u64 + 1 {
            assert!(ring.install(gen(n, &drops)));
        }
        assert_eq!(w.log().value.load(SeqCst), GENERATIONS as u64);
        assert_eq!(ring.retired(), 1);
        drop(w);
        let _ = ring.pin();
        assert_eq!(ring.retired(), 0);
        drop(ring);
        assert_eq!(drops.load(SeqCst), 2 * GENERATIONS + 2);
    }

    /// Writers and readers race installs: whatever a writer or reader holds is never freed
    /// under it (a freed generation's value reads `u64::MAX`), and everything is freed in the
    /// end.
    #[test]
    fn nothing_is_freed_under_a_writer_or_a_reader() {
        let drops = Arc::new(AtomicUsize::new(0));
        let ring = Arc::new(Ring::new(gen(0, &drops)));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut threads = Vec::new();
        for t in 0..4 {
            let (ring, stop, drops) = (ring.clone(), stop.clone(), drops.clone());
            threads.push(std::thread::spawn(move || {
                let mut installed = 0;
                while !stop.load(SeqCst) {
                    if t % 2 == 0 {
                        let w = ring.enter();
                        let n = w.log().n;
                        std::hint::spin_loop();
                        assert_eq!(w.log().value.load(SeqCst), n);
                        // Every writer may close the newest: one install per number wins.
                        if ring.install(gen(n + 1, &drops)) {
                            installed += 1;
                        }
                        assert_eq!(w.log().value.load(SeqCst), n);
                    } else {
                        let pin = ring.pin();
                        let gens = ring.generations(&pin);
                        assert!(gens.windows(2).all(|w| w[0].n < w[1].n));
                        std::thread::yield_now();
                        assert!(gens.iter().all(|g| g.value.load(SeqCst) == g.n));
                    }
                }
                installed
            }));
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        stop.store(true, SeqCst);
        let installed: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert!(installed > 100, "{installed}");
        assert_eq!(ring.current(), installed);
        drop(ring.pin());
        assert_eq!(ring.retired(), 0);
        drop(ring);
        // Each installed generation, plus the first, plus every refused one, is freed.
        assert!(drops.load(SeqCst) as u64 > installed);
    }
}
