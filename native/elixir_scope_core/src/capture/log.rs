//! The capture log: a bounded, lock-free, append-only array of events.
//!
//! Any number of threads (the BEAM's schedulers, running tracer callbacks in the traced processes)
//! append concurrently; readers scan what is published. The design is a bump allocator twice over:
//!
//! * one atomic counter hands out event slots: slot `i` holds the event with `seq = i + 1`, so seq
//!   is strictly increasing and gapless among stored events;
//! * one atomic offset hands out payload bytes, with a compare-and-swap loop so that a payload never
//!   straddles two chunks and never passes the byte budget.
//!
//! Slots and bytes live in [`ChunkTable`]s, so memory is committed as events arrive and never
//! exceeds the budget. When the slots are exhausted the new event is dropped and counted; when only
//! the byte budget is exhausted the event is kept without its payload and counted as truncated.
//! A writer never waits for anybody: every step is a single atomic operation or a bounded CAS loop
//! whose only contention is other writers making progress.
//!
//! Publication: a writer fills its slot's fields and then stores `ready = 1` with `Release`; a
//! reader loads `ready` with `Acquire` before reading the slot and its payload bytes. A slot that
//! is reserved but not yet ready (its writer is mid-copy) is skipped by readers and appears on the
//! next read.

use crate::capture::chunks::{ChunkOptions, ChunkTable, HUGE_PAGE};
use crate::capture::ring::{Generation, Pinned, Ring, GENERATIONS};
use crate::formats::event::{flags, EventRef, Header, Seq};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// Most events a log (a store) may hold (64 GB of slots).
pub const MAX_EVENTS: u64 = 1_000_000_000;
/// Most payload bytes a log (a store) may hold (1 TiB).
pub const MAX_BYTES: u64 = 1 << 40;

/// Slots per chunk for small logs (256 KiB) and for logs of at least `BIG_SLOTS` events (2 MiB,
/// a huge page).
const SMALL_SLOTS: usize = 4096;
const BIG_SLOTS: usize = HUGE_PAGE / std::mem::size_of::<Slot>();
/// Payload chunk size for budgets of at least a huge page.
const MAX_BYTE_CHUNK: usize = HUGE_PAGE;
/// Events a paged log holds at most: a trace of this many events takes over a terabyte on disk
/// (its table of slot chunks takes 4 MiB).
pub const PAGED_EVENTS: u64 = 1 << 34;
/// How far back from the newest slot [`CaptureLog::published_seq`] looks for unfinished events.
const PUBLISH_WINDOW: u64 = 4096;
/// Smallest budget of a ring-mode log's generation: events, and payload bytes.
const MIN_GENERATION_EVENTS: u64 = 64;
const MIN_GENERATION_BYTES: u64 = 1024;
/// What a ring-mode generation's slot counter is set to when it is closed for lack of payload
/// bytes: past any count, so no more slots are handed out.
const SEALED: u64 = 1 << 62;
/// How many times a writer looks for the next generation, after the newest closed, before it
/// drops its event (the writer installing it was preempted midway).
const NEXT_GENERATION_TRIES: u32 = 1 << 12;

/// The memory orderings of the log's protocol, named once: the log uses these, and so does its
/// loom model (`loom_model` below), which checks that they are enough.
pub(crate) mod order {
    use std::sync::atomic::Ordering;

    /// Taking a slot (`next_slot`) or payload bytes (`next_byte`): ownership only, no data.
    pub(crate) const RESERVE: Ordering = Ordering::Relaxed;
    /// Setting a slot's `ready` once its fields and payload bytes are written.
    pub(crate) const PUBLISH: Ordering = Ordering::Release;
    /// Reading a slot's `ready` before its fields and payload bytes.
    pub(crate) const OBSERVE: Ordering = Ordering::Acquire;
}

/// One event's storage: 64 bytes, zero-filled when its chunk is allocated.
#[repr(C)]
struct Slot {
    /// 0 until the writer has filled the slot, then 1 forever.
    ready: AtomicU32,
    payload_len: UnsafeCell<u32>,
    payload_off: UnsafeCell<u64>,
    header: UnsafeCell<Header>,
}

/// The budget of a [`CaptureLog`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Events stored at most.
    pub max_events: u64,
    /// Payload bytes stored at most.
    pub max_bytes: u64,
}

/// Counters describing a log, read without stopping writers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LogStats {
    /// Events stored (published or being published).
    pub events: u64,
    /// Events refused because the log was full.
    pub dropped: u64,
    /// Events whose payload was cut to the cap or left out for lack of bytes.
    pub truncated: u64,
    /// Memory committed for slots and payloads, in bytes.
    pub bytes: u64,
    /// Payload bytes in use.
    pub payload_bytes: u64,
}

/// The outcome of [`CaptureLog::append`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Appended {
    /// Stored at this position.
    Stored(Seq),
    /// Stored at this position, without its payload (the byte budget is spent).
    StoredWithoutPayload(Seq),
    /// Not stored: the log is full. Counted in [`LogStats::dropped`].
    Dropped,
}

/// The outcome of appending to one generation of a ring-mode log.
enum GenAppended {
    Done(Appended),
    /// The generation is full, with this many events when known yet: the writers that know it
    /// race to install the next generation (one wins).
    Closed(Option<u64>),
}

/// A bounded lock-free event log. See the module docs for the algorithm.
pub struct CaptureLog {
    slots: Arc<ChunkTable>,
    /// log2 of the slots per chunk (a power of two, so slot lookup is a shift and a mask).
    slot_shift: u32,
    bytes: Arc<ChunkTable>,
    byte_chunk: u64,
    limits: Limits,
    /// Next slot index to hand out; may run past `max_events` (those reservations are drops).
    /// Relaxed: it only orders slot ownership; publication goes through `Slot::ready`.
    next_slot: AtomicU64,
    /// Next free payload byte offset. Relaxed for the same reason.
    next_byte: AtomicU64,
    dropped: AtomicU64,
    truncated: AtomicU64,
    /// Where the events of a paged log are read from when first asked for.
    pager: Option<Box<dyn Pager>>,
    /// Written by one owner alone (a trace being loaded, see [`CaptureLog::skip_to`]): what is
    /// not there when it looks is a hole, never an event in flight.
    exclusive: bool,
    /// The seq before a paged log's first slot: its seqs are a trace's, starting anywhere.
    base: Seq,
    /// A ring-mode log's generations (see `capture::ring`): its own slots and bytes are unused.
    ring: Option<Box<Ring<CaptureLog>>>,
    /// A generation's number (0 for any other log).
    generation: u64,
    /// A closed generation's event count plus one (0 while open).
    sealed: AtomicU64,
}

impl Generation for CaptureLog {
    fn generation(&self) -> u64 {
        self.generation
    }
}

/// Reads events a log does not hold yet from where they are kept (the segment files of a
/// trace opened without reading its events), when a reader first asks for one of them.
pub trait Pager: Send + Sync + std::any::Any {
    /// Makes the event at `seq` readable in `log`, with [`CaptureLog::fill`], if it can. It may
    /// fill other events too (the block the event is read with).
    fn fault(&self, log: &CaptureLog, seq: Seq);

    /// The pager as `Any`, for its owner to reach its own type again.
    fn as_any(&self) -> &dyn std::any::Any;
}

impl CaptureLog {
    /// A log holding at most `limits.max_events` events and `limits.max_bytes` payload bytes.
    /// Nothing is allocated until events arrive.
    pub fn new(limits: Limits) -> CaptureLog {
        CaptureLog::with_ahead(limits, true)
    }

    /// An empty log of the seqs after `base`, filled by `pager` ([`CaptureLog::fill`], each
    /// seq at most once) when first asked for, and which its owner extends with
    /// [`CaptureLog::grow`], up to [`PAGED_EVENTS`] events. Nothing else writes it (appends
    /// are refused). Memory is committed as events are filled.
    pub fn paged(base: Seq, pager: Box<dyn Pager>) -> CaptureLog {
        let mut log = CaptureLog::with_ahead(
            Limits {
                max_events: PAGED_EVENTS,
                max_bytes: MAX_BYTES,
            },
            // Pages are read anywhere: committing the next chunk ahead would be a guess.
            false,
        );
        log.pager = Some(pager);
        log.base = base;
        log
    }

    /// Makes an empty log's first seq `base + 1` (its owner's, before anything is appended):
    /// a log loaded from a trace keeps the trace's seqs. False when the log is not empty.
    pub fn rebase(&mut self, base: Seq) -> bool {
        if *self.next_slot.get_mut() != 0 {
            return false;
        }
        self.base = base;
        true
    }

    /// Whether one owner alone writes the log (a trace being loaded, see [`CaptureLog::skip_to`]).
    pub fn is_loaded(&self) -> bool {
        self.exclusive
    }

    /// Makes the next append's seq `seq` (never less than it would be), leaving the seqs
    /// skipped as holes, for the log's one owner (a loader keeping a trace's seqs across events
    /// lost midway). Nothing is allocated for the holes. False when `seq` is beyond the log's
    /// capacity.
    pub fn skip_to(&mut self, seq: Seq) -> bool {
        let Some(idx) = seq.checked_sub(self.base + 1) else {
            return false;
        };
        if idx >= self.limits.max_events {
            return false;
        }
        self.exclusive = true;
        let next = self.next_slot.get_mut();
        *next = (*next).max(idx);
        true
    }

    /// The first seq a paged log can hold (1 for any other log).
    pub fn first_seq(&self) -> Seq {
        match &self.ring {
            Some(ring) => self.ring_bounds(ring).0,
            None => self.base + 1,
        }
    }

    /// The pager of a paged log.
    pub fn pager(&self) -> Option<&dyn Pager> {
        self.pager.as_deref()
    }

    /// Makes a paged log reach seq `last` (never less far than it did): the seqs up to it are
    /// readable once filled, or their pager fills them. Filled first, then grown, a new event
    /// is never seen missing.
    pub fn grow(&self, last: Seq) {
        if self.pager.is_some() {
            let events = last.saturating_sub(self.base).min(self.limits.max_events);
            self.next_slot.fetch_max(events, Ordering::Release);
        }
    }

    /// Events a paged log can still grow by.
    pub fn room(&self) -> u64 {
        self.limits.max_events
            - self
                .next_slot
                .load(Ordering::Relaxed)
                .min(self.limits.max_events)
    }

    fn with_ahead(limits: Limits, ahead: bool) -> CaptureLog {
        CaptureLog::with_chunks(limits, ahead, BIG_SLOTS)
    }

    /// [`CaptureLog::with_ahead`], its slots in huge chunks from `big` events on.
    fn with_chunks(limits: Limits, ahead: bool, big: usize) -> CaptureLog {
        let max_events = limits.max_events.max(1);
        let per_chunk = if max_events as usize >= big {
            BIG_SLOTS
        } else {
            SMALL_SLOTS
        };
        let slot_chunks = (max_events as usize).div_ceil(per_chunk);
        let byte_chunk = (limits.max_bytes.clamp(1, MAX_BYTE_CHUNK as u64)) as usize;
        let byte_chunks = (limits.max_bytes as usize).div_ceil(byte_chunk);
        CaptureLog {
            slots: ChunkTable::new(
                slot_chunks,
                per_chunk * std::mem::size_of::<Slot>(),
                std::mem::align_of::<Slot>(),
                // A slot must read as empty (`ready == 0`) until written.
                ChunkOptions {
                    ahead,
                    zeroed: true,
                },
            )
            .expect("slot chunk layout is valid"),
            slot_shift: per_chunk.trailing_zeros(),
            // Payload bytes are only read where a writer wrote them first: no clearing needed.
            bytes: ChunkTable::new(
                byte_chunks,
                byte_chunk,
                8,
                ChunkOptions {
                    ahead,
                    zeroed: false,
                },
            )
            .expect("byte chunk layout is valid"),
            byte_chunk: byte_chunk as u64,
            limits: Limits {
                max_events,
                max_bytes: limits.max_bytes,
            },
            next_slot: AtomicU64::new(0),
            next_byte: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            truncated: AtomicU64::new(0),
            pager: None,
            exclusive: false,
            base: 0,
            ring: None,
            generation: 0,
            sealed: AtomicU64::new(0),
        }
    }

    /// A ring-mode log: it holds at most `limits` too, but when full it evicts its oldest
    /// events, an eighth of the budget at a time (see `capture::ring`), instead of dropping new
    /// ones. Its events are read with [`CaptureLog::get`] and [`CaptureLog::range`] while
    /// pinned ([`CaptureLog::pin`]).
    pub fn ring(limits: Limits) -> CaptureLog {
        let limits = Limits {
            max_events: limits
                .max_events
                .max(MIN_GENERATION_EVENTS * GENERATIONS as u64),
            max_bytes: limits
                .max_bytes
                .max(MIN_GENERATION_BYTES * GENERATIONS as u64),
        };
        let mut log = CaptureLog::with_ahead(
            Limits {
                max_events: 1,
                max_bytes: 0,
            },
            false,
        );
        log.limits = limits;
        log.ring = Some(Box::new(Ring::new(Box::new(log.next_generation(0, 0)))));
        log
    }

    /// Generation `n` of this ring-mode log, its seqs after `base`.
    fn next_generation(&self, n: u64, base: Seq) -> CaptureLog {
        // A generation is made and freed once per eighth of the budget: from half a huge
        // chunk of slots on, its slots take one (or more), which come committed from the pool
        // that freed generations fill, rather than fresh memory each time.
        let mut g = CaptureLog::with_chunks(
            Limits {
                max_events: self.limits.max_events / GENERATIONS as u64,
                max_bytes: self.limits.max_bytes / GENERATIONS as u64,
            },
            true,
            BIG_SLOTS / 2,
        );
        g.generation = n;
        g.base = base;
        g
    }

    /// Whether the log evicts its oldest events when full.
    pub fn is_ring(&self) -> bool {
        self.ring.is_some()
    }

    /// Pins the calling reader of a ring-mode log (`None` for any other): the events it reads
    /// stay whole until the pin is dropped. A ring-mode log's events may only be read while
    /// pinned; `crate::reader::Reader::log` pins.
    pub fn pin(&self) -> Option<Pinned<'_, CaptureLog>> {
        self.ring.as_ref().map(|r| r.pin())
    }

    /// The last seq a ring-mode log evicted (0 when none, and for any other log): the events up
    /// to it are gone.
    pub fn evicted_upto(&self) -> Seq {
        match &self.ring {
            Some(ring) => self.ring_bounds(ring).0 - 1,
            None => 0,
        }
    }

    /// The generation of a ring-mode log holding `seq` (the newest whose seqs start before
    /// it), unless `seq` is evicted or not stored yet.
    ///
    /// # Safety
    /// The caller is pinned, and uses it only while it is.
    unsafe fn generation_of<'a>(
        &'a self,
        ring: &'a Ring<CaptureLog>,
        seq: Seq,
    ) -> Option<&'a CaptureLog> {
        // SAFETY: the caller's.
        // A generation closed empty has its successor's base: the later one holds the seqs.
        let gen = unsafe { ring.each() }
            .filter(|g| g.base < seq)
            .max_by_key(|g| (g.base, g.generation))?;
        // Before the oldest generation there is: evicted (a generation evicted meanwhile is
        // simply not there).
        (gen.base + gen.count() >= seq || gen.generation == ring.current()).then_some(gen)
    }

    /// How many events this full ring-mode generation holds, seen by a writer whose slot
    /// counter was at `seen` when it found it full; `None` when not known yet. The writer that
    /// sealed it for lack of bytes (the one that saw fewer slots than the budget) knows, and
    /// says it first thing; past the budget, it is the budget unless that writer sealed it.
    fn closed_at(&self, seen: u64) -> Option<u64> {
        let n = match seen {
            n if n < self.limits.max_events => n,
            n if n < SEALED => self.limits.max_events,
            _ => return self.sealed.load(Ordering::SeqCst).checked_sub(1),
        };
        self.sealed.store(n + 1, Ordering::SeqCst);
        Some(n)
    }

    /// The last seq the next `installs` generations of a ring-mode log will evict (0 when
    /// they evict nothing, and for any other log): what to carry forward before it is gone.
    pub fn evicted_within(&self, installs: u64) -> Seq {
        let Some(ring) = &self.ring else { return 0 };
        let pin = ring.pin();
        let gens = ring.generations(&pin);
        let newest = gens.last().map_or(0, |g| g.generation);
        let Some(upto) = (newest + installs).checked_sub(GENERATIONS as u64) else {
            return 0;
        };
        gens.iter()
            .filter(|g| g.generation <= upto)
            .map(|g| g.last_seq())
            .max()
            .unwrap_or(0)
    }

    /// A ring-mode generation's events (a plain log's slots handed out, up to its budget).
    fn count(&self) -> u64 {
        match self.sealed.load(Ordering::SeqCst) {
            // Sealed for lack of bytes, by a writer about to say how many it holds: none known
            // yet (readers wait rather than take seqs of the next generation for its own).
            0 if self.next_slot.load(Ordering::SeqCst) >= SEALED => 0,
            0 => self
                .next_slot
                .load(Ordering::Relaxed)
                .min(self.limits.max_events),
            n => n - 1,
        }
    }

    /// `first_seq`, `last_seq` and `published_seq` of a ring-mode log.
    fn ring_bounds(&self, ring: &Ring<CaptureLog>) -> (Seq, Seq, Seq) {
        let _pin = ring.pin();
        let gens = ring.generations(&_pin);
        let first = gens.first().map_or(1, |g| g.base + 1);
        let last = gens.last().map_or(0, |g| g.last_seq());
        // The first unfinished event, in the generations that hold the last `PUBLISH_WINDOW`.
        let lo = last.saturating_sub(PUBLISH_WINDOW);
        let published = gens
            .iter()
            .filter(|g| g.last_seq() >= lo)
            .map(|g| (g.published_seq(), g.last_seq()))
            .find(|&(p, l)| p < l)
            .map_or(last, |(p, _)| p);
        (first, last, published)
    }

    /// Appends to a ring-mode log: to its newest generation, which the writer that finds it
    /// full replaces by a new one, evicting the oldest.
    fn append_ring(&self, ring: &Ring<CaptureLog>, header: &Header, payload: &[u8]) -> Appended {
        for attempt in 0..NEXT_GENERATION_TRIES {
            let w = ring.enter();
            let gen = w.log();
            match gen.append_generation(header, payload) {
                GenAppended::Done(a) => {
                    let lost = match a {
                        Appended::Stored(_) => header.flags & flags::TRUNCATED != 0,
                        Appended::StoredWithoutPayload(_) => true,
                        // No memory for its slot.
                        Appended::Dropped => {
                            self.dropped.fetch_add(1, Ordering::Relaxed);
                            false
                        }
                    };
                    if lost {
                        self.truncated.fetch_add(1, Ordering::Relaxed);
                    }
                    return a;
                }
                GenAppended::Closed(Some(n)) if ring.current() == gen.generation => {
                    let next = self.next_generation(gen.generation + 1, gen.base + n);
                    drop(w);
                    ring.install(Box::new(next));
                }
                // The writer that closed it is about to say how many events it holds, or
                // another writer is installing the next one.
                GenAppended::Closed(_) if attempt < 64 => std::hint::spin_loop(),
                GenAppended::Closed(_) => std::thread::yield_now(),
            }
        }
        self.dropped.fetch_add(1, Ordering::Relaxed);
        Appended::Dropped
    }

    /// Appends to this generation of a ring-mode log: payload bytes first, then a slot, so that
    /// a generation closes when either runs out (and a slot handed out always has its bytes).
    fn append_generation(&self, header: &Header, payload: &[u8]) -> GenAppended {
        let mut header = *header;
        let payload = if payload.len() as u64 > self.byte_chunk {
            header.flags |= flags::PAYLOAD_DROPPED;
            &[][..]
        } else {
            payload
        };
        let (off, len) = {
            match self.reserve_bytes(payload.len() as u64) {
                Some(off) => (off, payload.len()),
                None => {
                    let prev = self.next_slot.fetch_max(SEALED, Ordering::SeqCst);
                    return GenAppended::Closed(self.closed_at(prev));
                }
            }
        };
        let idx = self.next_slot.fetch_add(1, order::RESERVE);
        if idx >= self.limits.max_events {
            return GenAppended::Closed(self.closed_at(idx));
        }
        let Some(slot) = self.slot_for_write(idx) else {
            // No memory for its slot: a hole, like a plain log's.
            return GenAppended::Done(Appended::Dropped);
        };
        let len = match self.write_bytes(off, payload) {
            true => len as u32,
            false => {
                header.flags |= flags::PAYLOAD_DROPPED;
                0
            }
        };
        let seq = self.base + Self::publish(slot, idx, &header, off, len);
        GenAppended::Done(if header.flags & flags::PAYLOAD_DROPPED != 0 {
            Appended::StoredWithoutPayload(seq)
        } else {
            Appended::Stored(seq)
        })
    }

    /// The log's budget.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The largest payload the log can store (payloads never straddle its byte chunks).
    pub fn largest_payload(&self) -> usize {
        match &self.ring {
            // A generation's (see `next_generation`), known without reading one.
            Some(_) => (self.limits.max_bytes / GENERATIONS as u64).clamp(1, MAX_BYTE_CHUNK as u64)
                as usize,
            None => self.byte_chunk as usize,
        }
    }

    /// Whether new events would be dropped. A cheap check for callers that want to skip encoding.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.next_slot.load(Ordering::Relaxed) >= self.limits.max_events && self.ring.is_none()
    }

    /// Counts an event the caller chose not to append because the log is full.
    pub fn count_dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `n` events dropped elsewhere (a loaded trace carries its capture's count).
    pub fn add_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Appends one event. Never blocks; O(payload length). An event stored with a truncated
    /// payload ([`flags::TRUNCATED`], cut by the caller) or without one (the byte budget spent)
    /// is counted in [`LogStats::truncated`].
    pub fn append(&self, header: &Header, payload: &[u8]) -> Appended {
        if let Some(ring) = &self.ring {
            return self.append_ring(ring, header, payload);
        }
        let Some((idx, slot)) = self.reserve() else {
            return Appended::Dropped;
        };
        let mut header = *header;
        let (off, len) = match self.copy_payload(payload) {
            Some(off) => (off, payload.len() as u32),
            None => {
                header.flags = (header.flags | flags::PAYLOAD_DROPPED) & !flags::STATE_DELTA;
                (0, 0)
            }
        };
        // A state stored as a delta is flagged as without a payload for readers that do not
        // resolve it (see `capture::delta`): it is whole, not truncated.
        let lost = header.flags & flags::STATE_DELTA == 0
            && header.flags & (flags::TRUNCATED | flags::PAYLOAD_DROPPED) != 0;
        if lost {
            self.truncated.fetch_add(1, Ordering::Relaxed);
        }
        let seq = self.base + Self::publish(slot, idx, &header, off, len);
        if header.flags & flags::STATE_DELTA == 0 && header.flags & flags::PAYLOAD_DROPPED != 0 {
            Appended::StoredWithoutPayload(seq)
        } else {
            Appended::Stored(seq)
        }
    }

    /// Appends an event whose payload is the payload of the stored event `shared` (which must be
    /// published). Used for a state equal to the previous one: no bytes are copied.
    pub fn append_sharing(&self, header: &Header, shared: Seq) -> Appended {
        // A ring-mode log's writers never read its events (they may be evicted): not shared.
        let from = if self.ring.is_some() {
            None
        } else {
            self.published(shared)
        };
        let Some(from) = from else {
            // Nothing to share: stored without a payload (a delta without its record is none).
            let h = Header {
                flags: header.flags & !flags::STATE_DELTA,
                ..*header
            };
            return self.append(&h, &[]);
        };
        // SAFETY: `from` is published (ready, Acquire above): its fields no longer change.
        let (off, len) = unsafe { (*from.payload_off.get(), *from.payload_len.get()) };
        let Some((idx, slot)) = self.reserve() else {
            return Appended::Dropped;
        };
        // The shared payload range was published with `from` and is never written again.
        Appended::Stored(self.base + Self::publish(slot, idx, header, off, len))
    }

    /// Hands this thread the next slot (counting a drop when the log is full or the allocator
    /// failed: such a slot is never published, and readers skip it).
    #[inline]
    fn reserve(&self) -> Option<(u64, &Slot)> {
        if self.pager.is_some() {
            // A paged log's slots are its pager's to fill.
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let idx = self.next_slot.fetch_add(1, order::RESERVE);
        let slot = (idx < self.limits.max_events)
            .then(|| self.slot_for_write(idx))
            .flatten();
        if slot.is_none() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        slot.map(|s| (idx, s))
    }

    /// Fills the reserved slot `idx` and publishes it; returns its seq.
    #[inline]
    fn publish(slot: &Slot, idx: u64, header: &Header, off: u64, len: u32) -> Seq {
        // SAFETY: slot `idx` was handed to this thread alone by `reserve`, and readers do not
        // touch its fields until `ready` is set below.
        unsafe {
            *slot.payload_len.get() = len;
            *slot.payload_off.get() = off;
            *slot.header.get() = *header;
        }
        // Release publishes the fields and the payload bytes to readers that Acquire `ready`.
        slot.ready.store(1, order::PUBLISH);
        idx + 1
    }

    /// Tests only: reserves a slot without publishing it (a writer stalled mid-write).
    #[cfg(test)]
    pub(crate) fn reserve_for_test(&self) -> u64 {
        let idx = self.next_slot.fetch_add(1, Ordering::Relaxed);
        self.slot_for_write(idx);
        idx
    }

    /// Tests only: publishes a slot reserved by `reserve_for_test`.
    #[cfg(test)]
    pub(crate) fn publish_for_test(&self, idx: u64, header: &Header) {
        let slot = self.slot_for_write(idx).expect("slot");
        // SAFETY: the slot was reserved by this test and is not published yet.
        unsafe { *slot.header.get() = *header };
        slot.ready.store(1, order::PUBLISH);
    }

    fn slot_for_write(&self, idx: u64) -> Option<&Slot> {
        let idx = idx as usize;
        let k = idx >> self.slot_shift;
        if idx & ((1 << self.slot_shift) - 1) == 0 {
            // The first event of chunk k: have chunk k + 1 committed before writers get there.
            self.slots.commit_ahead(k + 1);
        }
        Some(self.slot_in(self.slots.get_or_alloc(k)?, idx as u64))
    }

    fn slot_for_read(&self, idx: u64) -> Option<&Slot> {
        Some(self.slot_in(self.slots.get((idx >> self.slot_shift) as usize)?, idx))
    }

    /// Slot `idx` in `chunk`, the slot chunk holding it.
    fn slot_in(&self, chunk: *mut u8, idx: u64) -> &Slot {
        let i = idx as usize & ((1 << self.slot_shift) - 1);
        // SAFETY: a slot chunk holds `1 << slot_shift` zeroed `Slot`s (all-zero is a valid
        // `Slot`), is aligned for `Slot`, and lives as long as `self.slots`.
        unsafe { &*(chunk as *const Slot).add(i) }
    }

    /// The slot of the event at `seq`, once that event is published.
    fn published(&self, seq: Seq) -> Option<&Slot> {
        let slot = self.slot_for_read(seq.checked_sub(self.base + 1)?)?;
        // Acquire pairs with the writer's Release: the fields and payload bytes are complete.
        (slot.ready.load(order::OBSERVE) != 0).then_some(slot)
    }

    /// Reserves room for `payload` and copies it; `None` when the byte budget cannot hold it.
    fn copy_payload(&self, payload: &[u8]) -> Option<u64> {
        let len = payload.len() as u64;
        if len == 0 {
            return Some(0);
        }
        if len > self.byte_chunk {
            return None;
        }
        let start = self.reserve_bytes(len)?;
        self.write_bytes(start, payload).then_some(start)
    }

    /// Reserves `len` payload bytes (at most a chunk) inside one chunk; `None` when the byte
    /// budget cannot hold them.
    fn reserve_bytes(&self, len: u64) -> Option<u64> {
        if len == 0 {
            return Some(0);
        }
        let mut cur = self.next_byte.load(order::RESERVE);
        loop {
            // A payload never straddles chunks: skip to the next chunk when it would.
            let mut start = cur;
            if start % self.byte_chunk + len > self.byte_chunk {
                start = (start / self.byte_chunk + 1) * self.byte_chunk;
            }
            if start + len > self.limits.max_bytes {
                return None;
            }
            match self.next_byte.compare_exchange_weak(
                cur,
                start + len,
                order::RESERVE,
                order::RESERVE,
            ) {
                Ok(_) => return Some(start),
                Err(now) => cur = now,
            }
        }
    }

    /// Copies `payload` into the bytes reserved at `start`; false when their chunk got no memory.
    fn write_bytes(&self, start: u64, payload: &[u8]) -> bool {
        if payload.is_empty() {
            return true;
        }
        let k = (start / self.byte_chunk) as usize;
        if start.is_multiple_of(self.byte_chunk) {
            self.bytes.commit_ahead(k + 1);
        }
        let Some(chunk) = self.bytes.get_or_alloc(k) else {
            return false;
        };
        // SAFETY: [start, start+len) lies inside one chunk (ensured above) and was reserved by this
        // thread alone through the CAS; it is published by the slot's Release store.
        unsafe {
            std::ptr::copy_nonoverlapping(
                payload.as_ptr(),
                chunk.add((start % self.byte_chunk) as usize),
                payload.len(),
            );
        }
        true
    }

    /// The highest seq below which no event is still being written, judged over the last
    /// `PUBLISH_WINDOW` slots (writers finish within microseconds, so an unfinished event is
    /// always near the end). Queries stop here, so that paging with `after_seq` never steps over
    /// an event that appears later. Slots whose memory could not be allocated are not waited for.
    pub fn published_seq(&self) -> Seq {
        if let Some(ring) = &self.ring {
            return self.ring_bounds(ring).2;
        }
        let last = self.last_seq();
        if self.pager.is_some() || self.exclusive {
            // Nobody writes a paged log but its pager, nor a loaded one but its loader: every
            // event is there or never will be.
            return last;
        }
        let lo = last.saturating_sub(PUBLISH_WINDOW).max(self.base + 1);
        let mut watermark = last;
        for seq in (lo..=last).rev() {
            let idx = seq - self.base - 1;
            let unfinished = match self.slot_for_read(idx) {
                // Acquire: a ready slot's contents are visible, as in `get`.
                Some(slot) => slot.ready.load(order::OBSERVE) == 0,
                // Its chunk is not there yet (its writer is allocating it), unless it failed.
                None => !self.slots.failed((idx >> self.slot_shift) as usize),
            };
            if unfinished {
                watermark = seq - 1;
            }
        }
        watermark
    }

    /// Whether `seq` was handed out but can never be published: its writer got no memory for
    /// its slot (the allocation of the slot's chunk failed). Such a seq is missing for good.
    pub fn is_hole(&self, seq: Seq) -> bool {
        if let Some(ring) = &self.ring {
            let _pin = ring.pin();
            // SAFETY: pinned above, and only used here.
            return unsafe { self.generation_of(ring, seq) }.is_some_and(|g| g.is_hole(seq));
        }
        if self.pager.is_some() || self.exclusive {
            // Nothing is in flight in a paged or loaded log: what is not there never comes.
            return seq != 0 && seq <= self.last_seq() && self.get(seq).is_none();
        }
        seq > self.base
            && seq <= self.last_seq()
            && self
                .slots
                .failed(((seq - self.base - 1) >> self.slot_shift) as usize)
    }

    /// The highest seq that may be stored so far (some below it may still be in flight).
    pub fn last_seq(&self) -> Seq {
        match &self.ring {
            Some(ring) => self.ring_bounds(ring).1,
            None => self.base + self.count(),
        }
    }

    /// The event at `seq`, if it is stored and published (for a paged log: once its pager has
    /// read it).
    pub fn get(&self, seq: Seq) -> Option<EventRef<'_>> {
        match self.read(seq) {
            Some(ev) => Some(ev),
            None => {
                let pager = self.pager.as_ref()?;
                if seq <= self.base || seq > self.last_seq() {
                    return None;
                }
                pager.fault(self, seq);
                self.read(seq)
            }
        }
    }

    /// Writes the event at `seq` of a paged log: with the payload of the event `shared` when
    /// given (a state equal to the one before; filled already), else a copy of `payload`. Only
    /// a pager calls it, once per seq, never concurrently for one seq; `seq` may be past the
    /// log's end until it grows. False when `seq` is outside the log's capacity, already there,
    /// or gets no memory (it is then missing, like a hole).
    pub(crate) fn fill(
        &self,
        seq: Seq,
        header: &Header,
        payload: &[u8],
        shared: Option<Seq>,
    ) -> bool {
        let Some(idx) = seq.checked_sub(self.base + 1) else {
            return false;
        };
        if self.pager.is_none() || idx >= self.limits.max_events {
            return false;
        }
        let Some(chunk) = self.slots.get_or_alloc((idx >> self.slot_shift) as usize) else {
            return false;
        };
        let slot = self.slot_in(chunk, idx);
        if slot.ready.load(order::OBSERVE) != 0 {
            return false;
        }
        let mut header = *header;
        let from = shared.and_then(|s| self.published(s));
        let (off, len) = match from {
            // SAFETY: `from` is published: its fields no longer change.
            Some(from) => unsafe {
                header.flags |= (*from.header.get()).flags & flags::PAYLOAD_DROPPED;
                (*from.payload_off.get(), *from.payload_len.get())
            },
            // The payload it shares is lost (its block was damaged): missing, not empty.
            None if shared.is_some() => {
                header.flags |= flags::PAYLOAD_DROPPED;
                (0, 0)
            }
            None => match self.copy_payload(payload) {
                Some(off) => (off, payload.len() as u32),
                None => {
                    header.flags |= flags::PAYLOAD_DROPPED;
                    (0, 0)
                }
            },
        };
        // Truncations are the capture's, counted when it was opened: not again as pages come.
        // The pager fills each seq once, alone (its lock), and readers wait for `ready`.
        Self::publish(slot, idx, &header, off, len);
        true
    }

    /// The event at `seq` if it is readable now (never asking a pager).
    fn read(&self, seq: Seq) -> Option<EventRef<'_>> {
        if let Some(ring) = &self.ring {
            debug_assert!(ring.pinned(), "a ring-mode log read without a pin");
            // SAFETY: ring-mode events are read while pinned (see `CaptureLog::pin`), and the
            // event borrows `self` no longer than its reader is.
            return unsafe { self.generation_of(ring, seq) }?.read(seq);
        }
        if seq > self.last_seq() {
            return None;
        }
        let slot = self.published(seq)?;
        // SAFETY: `ready` is set, so the fields are written and will never change again.
        let (header, off, len) = unsafe {
            (
                *slot.header.get(),
                *slot.payload_off.get(),
                *slot.payload_len.get(),
            )
        };
        let payload = if len == 0 {
            &[][..]
        } else {
            let chunk = self.bytes.get((off / self.byte_chunk) as usize)?;
            // SAFETY: the writer copied `len` bytes at `off` inside this chunk before publishing;
            // the chunk lives as long as `self`.
            unsafe {
                std::slice::from_raw_parts(
                    chunk.add((off % self.byte_chunk) as usize),
                    len as usize,
                )
            }
        };
        Some(EventRef {
            seq,
            header,
            payload,
        })
    }

    /// Published events with `from <= seq <= to`, in seq order.
    pub fn range(&self, from: Seq, to: Seq) -> impl Iterator<Item = EventRef<'_>> + '_ {
        let to = to.min(self.last_seq());
        (from.max(self.first_seq())..=to).filter_map(move |s| self.get(s))
    }

    /// Whether `seq` is one a paged log can hold (at or after its first, within its capacity).
    pub fn can_hold(&self, seq: Seq) -> bool {
        seq > self.base && seq - self.base <= self.limits.max_events
    }

    /// Current counters.
    pub fn stats(&self) -> LogStats {
        if let Some(ring) = &self.ring {
            let pin = ring.pin();
            let gens = ring.generations(&pin);
            let (first, last) = (gens[0].base + 1, gens[gens.len() - 1].last_seq());
            return LogStats {
                events: last + 1 - first,
                dropped: self.dropped.load(Ordering::Relaxed),
                truncated: self.truncated.load(Ordering::Relaxed),
                bytes: gens.iter().map(|g| g.stats().bytes).sum(),
                payload_bytes: gens.iter().map(|g| g.stats().payload_bytes).sum(),
            };
        }
        LogStats {
            // The seqs handed out (a loaded log's start after its base; holes count).
            events: self.last_seq() - self.base,
            dropped: self.dropped.load(Ordering::Relaxed),
            truncated: self.truncated.load(Ordering::Relaxed),
            bytes: self.slots.allocated_bytes() + self.bytes.allocated_bytes(),
            payload_bytes: self
                .next_byte
                .load(Ordering::Relaxed)
                .min(self.limits.max_bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::event::Kind;
    use std::sync::Arc;

    fn header(pid: u64, kind: Kind) -> Header {
        Header {
            ts: pid as i64,
            pid,
            kind: kind as u8,
            ..Header::default()
        }
    }

    #[test]
    fn published_seq_stops_before_an_unfinished_event() {
        let log = CaptureLog::new(Limits {
            max_events: 100,
            max_bytes: 1024,
        });
        for i in 0..5 {
            log.append(&header(i, Kind::Send), b"");
        }
        // A writer that reserved slot 6 (seq 6) and has not published it yet.
        let idx = log.next_slot.fetch_add(1, Ordering::Relaxed);
        log.slot_for_write(idx).unwrap();
        log.append(&header(7, Kind::Send), b"");
        assert_eq!(log.last_seq(), 7);
        assert_eq!(log.published_seq(), 5);
        log.slot_for_write(idx)
            .unwrap()
            .ready
            .store(1, Ordering::Release);
        assert_eq!(log.published_seq(), 7);
    }

    #[test]
    fn a_slot_whose_chunk_is_being_allocated_is_waited_for_not_a_hole() {
        let log = CaptureLog::with_ahead(
            Limits {
                max_events: (SMALL_SLOTS * 4) as u64,
                max_bytes: 1024,
            },
            false,
        );
        for i in 0..SMALL_SLOTS as u64 {
            log.append(&header(i, Kind::Send), b"");
        }
        // A writer that took the first slot of chunk 1 and is still allocating that chunk.
        let idx = log.next_slot.fetch_add(1, Ordering::Relaxed);
        assert!(log.slots.get((idx >> log.slot_shift) as usize).is_none());
        let seq = idx + 1;
        assert_eq!(log.published_seq(), seq - 1, "waited for");
        assert!(!log.is_hole(seq), "not missing for good");
        // Its allocation done and the event published, it is there.
        log.slot_for_write(idx)
            .unwrap()
            .ready
            .store(1, Ordering::Release);
        assert_eq!(log.published_seq(), seq);
        assert!(log.get(seq).is_some());
    }

    #[test]
    fn slot_is_64_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 64);
        assert!(SMALL_SLOTS.is_power_of_two() && BIG_SLOTS.is_power_of_two());
    }

    #[test]
    fn big_logs_use_huge_chunks_across_chunk_boundaries() {
        let _lock = crate::capture::chunks::tests::HUGE_TEST_LOCK
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let log = CaptureLog::new(Limits {
            max_events: 100_000,
            max_bytes: 64 << 20,
        });
        for i in 0..(BIG_SLOTS as u64 + 10) {
            log.append(&header(i, Kind::Send), &i.to_le_bytes());
        }
        assert_eq!(
            log.get(BIG_SLOTS as u64 + 1).unwrap().header.pid,
            BIG_SLOTS as u64
        );
        assert!(log
            .range(1, u64::MAX)
            .all(|e| e.payload == (e.seq - 1).to_le_bytes()));
        // Two slot chunks and one payload chunk in use, each a huge page, and at most one more
        // of each committed ahead.
        let bytes = log.stats().bytes;
        assert!((3..=5).contains(&(bytes / HUGE_PAGE as u64)), "{bytes}");
    }

    #[test]
    fn appends_read_back_in_order_with_payloads() {
        let log = CaptureLog::new(Limits {
            max_events: 10,
            max_bytes: 1024,
        });
        assert_eq!(
            log.append(&header(1, Kind::Send), b"abc"),
            Appended::Stored(1)
        );
        assert_eq!(log.append(&header(2, Kind::Exit), b""), Appended::Stored(2));
        let evs: Vec<_> = log.range(1, 100).collect();
        assert_eq!(evs.len(), 2);
        assert_eq!(
            (evs[0].seq, evs[0].header.pid, evs[0].payload),
            (1, 1, &b"abc"[..])
        );
        assert_eq!((evs[1].seq, evs[1].payload), (2, &b""[..]));
        assert_eq!(log.get(3), None);
        assert_eq!(log.get(0), None);
    }

    #[test]
    fn full_log_drops_newest_and_counts() {
        let log = CaptureLog::new(Limits {
            max_events: 1000,
            max_bytes: 1 << 20,
        });
        for i in 0..100_000u64 {
            log.append(&header(i, Kind::Send), b"x");
        }
        let s = log.stats();
        assert_eq!((s.events, s.dropped), (1000, 99_000));
        assert_eq!(log.range(1, u64::MAX).count(), 1000);
        assert_eq!(log.get(1000).unwrap().header.pid, 999);
    }

    #[test]
    fn byte_budget_keeps_events_without_payload() {
        let log = CaptureLog::new(Limits {
            max_events: 100,
            max_bytes: 10,
        });
        assert_eq!(
            log.append(&header(1, Kind::Send), b"123456"),
            Appended::Stored(1)
        );
        assert_eq!(
            log.append(&header(2, Kind::Send), b"123456"),
            Appended::StoredWithoutPayload(2)
        );
        let e = log.get(2).unwrap();
        assert!(e.payload.is_empty() && e.header.flags & flags::PAYLOAD_DROPPED != 0);
        assert_eq!(log.stats().truncated, 1);
        assert!(log.stats().bytes <= 10 + (SMALL_SLOTS * 64) as u64);
    }

    #[test]
    fn payloads_never_straddle_chunks() {
        let _lock = crate::capture::chunks::tests::HUGE_TEST_LOCK
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let log = CaptureLog::new(Limits {
            max_events: 10_000,
            max_bytes: 6 << 20,
        });
        let big = vec![7u8; 1_400_000];
        // One 1.4 MB payload per 2 MiB chunk: three fit in 6 MiB, the fourth does not.
        for i in 0..3 {
            assert!(matches!(
                log.append(&header(i, Kind::Send), &big),
                Appended::Stored(_)
            ));
        }
        assert!(log.range(1, 3).all(|e| e.payload == &big[..]));
        assert_eq!(
            log.append(&header(9, Kind::Send), &big),
            Appended::StoredWithoutPayload(4)
        );
        assert_eq!(
            log.append(&header(9, Kind::Send), &big[..1000]),
            Appended::Stored(5)
        );
    }

    fn ring_log(max_events: u64, max_bytes: u64) -> CaptureLog {
        CaptureLog::ring(Limits {
            max_events,
            max_bytes,
        })
    }

    #[test]
    fn a_ring_log_evicts_its_oldest_generation_and_keeps_seqs_gapless() {
        let log = ring_log(8 * 100, 8 * 1000);
        for i in 0..2_000u64 {
            assert_eq!(
                log.append(&header(i, Kind::Send), &i.to_le_bytes()),
                Appended::Stored(i + 1)
            );
        }
        let pin = log.pin();
        assert!(pin.is_some() && !log.is_full());
        // 20 generations of 100 were filled: the newest eight are kept, the newest one full.
        assert_eq!(log.first_seq(), 1_201);
        assert_eq!(
            (log.evicted_upto(), log.last_seq(), log.published_seq()),
            (1_200, 2_000, 2_000)
        );
        assert_eq!(log.get(1_200), None, "evicted");
        assert!(!log.is_hole(1_200));
        let evs: Vec<_> = log.range(1, u64::MAX).collect();
        assert_eq!(evs.len(), 800);
        assert!(evs.iter().zip(1_201u64..).all(|(e, s)| e.seq == s
            && e.header.pid == s - 1
            && e.payload == (s - 1).to_le_bytes()));
        let st = log.stats();
        assert_eq!((st.events, st.dropped, st.truncated), (800, 0, 0));
        // Bytes taken by a writer that then found its generation full are not used.
        assert!((800 * 8..=800 * 8 + 8 * 8).contains(&st.payload_bytes));
        drop(pin);
    }

    #[test]
    fn a_ring_generation_closes_when_its_bytes_run_out() {
        // 1 KiB a generation: 10 events of 100 bytes, not the 100 slots.
        let log = ring_log(8 * 100, 8 * 1024);
        for i in 0..200u64 {
            log.append(&header(i, Kind::Send), &[i as u8; 100]);
        }
        let _pin = log.pin();
        let evs: Vec<_> = log.range(1, u64::MAX).collect();
        assert_eq!((log.first_seq(), log.last_seq()), (121, 200));
        assert!(evs
            .iter()
            .zip(121u64..)
            .all(|(e, s)| e.seq == s && e.payload == [(s - 1) as u8; 100]));
        // A payload over a generation's chunk is kept without its bytes, and counted.
        assert_eq!(
            log.append(&header(9, Kind::Send), &[0; 2_000]),
            Appended::StoredWithoutPayload(201)
        );
        assert_eq!(log.stats().truncated, 1);
        assert_eq!(log.largest_payload(), 1024);
    }

    #[test]
    fn a_generation_closed_empty_does_not_hide_the_next() {
        // Generation 7 (in the last slot) is closed with no event: another writer took its
        // bytes and had not taken a slot yet. Generation 8, in the first slot, starts at the
        // same seq, and holds it.
        let log = ring_log(8 * 100, 8 * 1024);
        for i in 0..700u64 {
            log.append(&header(i, Kind::Send), b"x");
        }
        let ring = log.ring.as_ref().unwrap();
        // Generation 6 is full: the next is installed (as its closer would).
        assert!(ring.install(Box::new(log.next_generation(7, 700))));
        {
            let w = ring.enter();
            assert_eq!(w.log().generation, 7);
            assert_eq!(w.log().reserve_bytes(1024), Some(0));
        }
        assert_eq!(
            log.append(&header(700, Kind::Send), b"y"),
            Appended::Stored(701)
        );
        let _pin = log.pin();
        assert_eq!(log.get(701).map(|e| e.payload), Some(&b"y"[..]));
        assert_eq!((log.last_seq(), log.published_seq()), (701, 701));
        // Installing generation 8 evicted generation 0.
        assert_eq!((log.first_seq(), log.range(1, 701).count()), (101, 601));
    }

    /// Writers race readers across many evictions: a reader sees each event whole (its payload
    /// is its pid's bytes), once, in seq order, or not at all once evicted; memory stays within
    /// the budget plus what readers hold.
    #[test]
    fn ring_readers_racing_evictions_see_whole_events_in_order() {
        let log = Arc::new(ring_log(8 * 4096, 8 * 64 * 1024));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers: Vec<_> = (0..2u64)
            .map(|t| {
                let (log, stop) = (log.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let p = (t << 40) | i;
                        let len = 8 + (i % 9) as usize * 8;
                        let payload: Vec<u8> = p.to_le_bytes().repeat(len / 8);
                        assert!(!matches!(
                            log.append(&header(p, Kind::Send), &payload),
                            Appended::Dropped
                        ));
                        i += 1;
                    }
                    i
                })
            })
            .collect();
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (log, stop) = (log.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut reads = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let _pin = log.pin();
                        let top = log.published_seq();
                        let mut last = 0;
                        let mut seen = std::collections::HashMap::new();
                        for e in log.range(1, top) {
                            assert!(e.seq > last, "in seq order, once");
                            last = e.seq;
                            let p = e.header.pid;
                            assert!(e.payload.chunks(8).all(|c| c == p.to_le_bytes()), "whole");
                            // Each writer's events come in its program order.
                            if let Some(prev) = seen.insert(p >> 40, p) {
                                assert!(p > prev);
                            }
                            reads += 1;
                        }
                        // What is gone is said to be gone.
                        let first = log.first_seq();
                        assert!(first == 1 || log.get(first - 1).is_none());
                    }
                    reads
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(800));
        stop.store(true, Ordering::Relaxed);
        let written: u64 = writers.into_iter().map(|h| h.join().unwrap()).sum();
        let read: u64 = readers.into_iter().map(|h| h.join().unwrap()).sum();
        assert!(
            written > 200_000,
            "{written} written: several laps of the ring"
        );
        assert!(read > 0);
        let st = log.stats();
        assert_eq!(st.dropped, 0);
        assert!(log.evicted_upto() > 0);
        assert_eq!(log.last_seq(), written);
        // Within the budget, and at least the seven newest generations' worth of it (each
        // closed by its slots or its bytes, whichever ran out first).
        assert!(
            st.events <= 8 * 4096 && st.payload_bytes <= 8 * 64 * 1024,
            "{st:?}"
        );
        assert!(
            st.events >= 7 * 4096 || st.payload_bytes >= 7 * 64 * 1024,
            "{st:?}"
        );
        assert_eq!(
            log.ring.as_ref().unwrap().retired(),
            0,
            "all evicted ones freed"
        );
    }

    #[test]
    fn concurrent_writers_lose_nothing_below_capacity() {
        let log = Arc::new(CaptureLog::new(Limits {
            max_events: 200_000,
            max_bytes: 64 << 20,
        }));
        let handles: Vec<_> = (0..4u64)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..25_000u64 {
                        let p = (t << 32) | i;
                        log.append(&header(p, Kind::Send), &p.to_le_bytes());
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let evs: Vec<_> = log.range(1, u64::MAX).collect();
        assert_eq!(evs.len(), 100_000);
        assert!(evs.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        assert!(evs.iter().all(|e| e.payload == e.header.pid.to_le_bytes()));
        // Each writer's own events are in its program order.
        for t in 0..4u64 {
            let mine: Vec<u64> = evs
                .iter()
                .filter(|e| e.header.pid >> 32 == t)
                .map(|e| e.header.pid & 0xffff_ffff)
                .collect();
            assert_eq!(mine, (0..25_000).collect::<Vec<_>>());
        }
    }
}

/// A model of the log's protocol for `loom`, which runs it under the interleavings of a few
/// writers and a reader (up to two preemptions) and the weak-memory outcomes it models. It is the log's algorithm at
/// toy sizes (one slot per slot chunk, four-byte payload chunks, no pager), taking its atomics
/// from loom and its memory orderings from the real code ([`order`] here and in `chunks`), so a
/// weaker ordering there fails here: loom reports a read of a slot's fields or payload bytes that
/// is not ordered after their write. Run with
/// `RUSTFLAGS="--cfg loom" cargo test --release -p elixir_scope_core --lib loom_model`
/// (`scripts/test` does).
#[cfg(all(test, loom))]
mod loom_model {
    use super::order;
    use crate::capture::chunks::order as chunk_order;
    use loom::cell::UnsafeCell;
    use loom::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64};
    use loom::sync::Arc;
    use loom::thread;
    use std::ptr::null_mut;

    /// Payload bytes per payload chunk: a payload never straddles two.
    const BYTE_CHUNK: u64 = 4;

    /// Writes a cell the protocol gives this thread alone (a slot it reserved, bytes it won).
    fn put<T>(cell: &UnsafeCell<T>, v: T) {
        // SAFETY: what the model checks: loom fails the run if another thread's access to this
        // cell is not ordered with this one.
        cell.with_mut(|p| unsafe { *p = v });
    }

    /// Reads a cell the protocol says is published.
    fn get<T: Copy>(cell: &UnsafeCell<T>) -> T {
        // SAFETY: as for `put`: loom fails the run if the write is not ordered before this read.
        cell.with(|p| unsafe { *p })
    }

    struct Slot {
        ready: AtomicU32,
        off: UnsafeCell<u64>,
        len: UnsafeCell<u32>,
        /// Stands for the header.
        tag: UnsafeCell<u64>,
    }

    /// A chunk table: chunks allocated by the first thread that needs them and installed with
    /// one compare-and-swap (the loser frees its own), as `ChunkTable::install` does.
    struct Table<T> {
        ptrs: Vec<AtomicPtr<T>>,
        make: fn() -> T,
    }

    impl<T> Table<T> {
        fn new(n: usize, make: fn() -> T) -> Table<T> {
            Table {
                ptrs: (0..n).map(|_| AtomicPtr::new(null_mut())).collect(),
                make,
            }
        }

        fn get(&self, k: usize) -> Option<&T> {
            let p = self.ptrs.get(k)?.load(chunk_order::OBSERVE);
            // SAFETY: a non-null pointer was installed by `get_or_alloc` and lives as long as the
            // table.
            (!p.is_null()).then(|| unsafe { &*p })
        }

        fn get_or_alloc(&self, k: usize) -> &T {
            if let Some(chunk) = self.get(k) {
                return chunk;
            }
            let fresh = Box::into_raw(Box::new((self.make)()));
            let (ok, fail) = chunk_order::INSTALL;
            match self.ptrs[k].compare_exchange(null_mut(), fresh, ok, fail) {
                // SAFETY: just installed; it lives as long as the table.
                Ok(_) => unsafe { &*fresh },
                Err(winner) => {
                    // SAFETY: `fresh` was never shared; `winner` was installed and lives as long
                    // as the table.
                    unsafe {
                        drop(Box::from_raw(fresh));
                        &*winner
                    }
                }
            }
        }
    }

    impl<T> Drop for Table<T> {
        fn drop(&mut self) {
            for p in &self.ptrs {
                let p = p.load(chunk_order::OBSERVE);
                if !p.is_null() {
                    // SAFETY: installed by `get_or_alloc`, freed once, here.
                    drop(unsafe { Box::from_raw(p) });
                }
            }
        }
    }

    struct Log {
        slots: Table<Slot>,
        bytes: Table<[UnsafeCell<u8>; BYTE_CHUNK as usize]>,
        next_slot: AtomicU64,
        next_byte: AtomicU64,
        max_events: u64,
        max_bytes: u64,
    }

    impl Log {
        fn new(max_events: u64, max_bytes: u64) -> Log {
            Log {
                slots: Table::new(max_events as usize, || Slot {
                    ready: AtomicU32::new(0),
                    off: UnsafeCell::new(0),
                    len: UnsafeCell::new(0),
                    tag: UnsafeCell::new(0),
                }),
                bytes: Table::new((max_bytes / BYTE_CHUNK) as usize, || {
                    std::array::from_fn(|_| UnsafeCell::new(0))
                }),
                next_slot: AtomicU64::new(0),
                next_byte: AtomicU64::new(0),
                max_events,
                max_bytes,
            }
        }

        /// `CaptureLog::append`: a slot, the payload's bytes, then `ready`. The seq, or `None`
        /// when the log is full; `Some((seq, false))` when stored without its payload.
        fn append(&self, tag: u64, payload: &[u8]) -> Option<(u64, bool)> {
            let idx = self.next_slot.fetch_add(1, order::RESERVE);
            if idx >= self.max_events {
                return None;
            }
            let slot = self.slots.get_or_alloc(idx as usize);
            let (off, len) = match self.copy_payload(payload) {
                Some(off) => (off, payload.len() as u32),
                None => (0, 0),
            };
            put(&slot.off, off);
            put(&slot.len, len);
            put(&slot.tag, tag);
            slot.ready.store(1, order::PUBLISH);
            Some((idx + 1, len as usize == payload.len()))
        }

        /// `CaptureLog::copy_payload`: a CAS loop that never lets a payload straddle chunks or
        /// pass the budget, then a copy into bytes this thread alone owns.
        fn copy_payload(&self, payload: &[u8]) -> Option<u64> {
            let len = payload.len() as u64;
            if len == 0 {
                return Some(0);
            }
            let mut cur = self.next_byte.load(order::RESERVE);
            let start = loop {
                let mut start = cur;
                if start % BYTE_CHUNK + len > BYTE_CHUNK {
                    start = (start / BYTE_CHUNK + 1) * BYTE_CHUNK;
                }
                if start + len > self.max_bytes {
                    return None;
                }
                match self.next_byte.compare_exchange_weak(
                    cur,
                    start + len,
                    order::RESERVE,
                    order::RESERVE,
                ) {
                    Ok(_) => break start,
                    Err(now) => cur = now,
                }
            };
            let chunk = self.bytes.get_or_alloc((start / BYTE_CHUNK) as usize);
            for (i, b) in payload.iter().enumerate() {
                let at = (start % BYTE_CHUNK) as usize + i;
                put(&chunk[at], *b);
            }
            Some(start)
        }

        fn last_seq(&self) -> u64 {
            self.next_slot.load(order::RESERVE).min(self.max_events)
        }

        /// `CaptureLog::read`: the event at `seq` once published, with its payload.
        fn read(&self, seq: u64) -> Option<(u64, Vec<u8>)> {
            if seq == 0 || seq > self.last_seq() {
                return None;
            }
            let slot = self.slots.get((seq - 1) as usize)?;
            if slot.ready.load(order::OBSERVE) == 0 {
                return None;
            }
            let (off, len, tag) = (get(&slot.off), get(&slot.len), get(&slot.tag));
            let mut payload = Vec::new();
            if len > 0 {
                let chunk = self.bytes.get((off / BYTE_CHUNK) as usize)?;
                for i in 0..len as usize {
                    let at = (off % BYTE_CHUNK) as usize + i;
                    payload.push(get(&chunk[at]));
                }
            }
            Some((tag, payload))
        }

        /// `CaptureLog::published_seq`: below the lowest slot still being written (a slot whose
        /// chunk is not there yet counts as one; nothing fails to allocate here).
        fn published_seq(&self) -> u64 {
            let last = self.last_seq();
            let mut watermark = last;
            for seq in (1..=last).rev() {
                let unfinished = match self.slots.get((seq - 1) as usize) {
                    Some(slot) => slot.ready.load(order::OBSERVE) == 0,
                    None => true,
                };
                if unfinished {
                    watermark = seq - 1;
                }
            }
            watermark
        }
    }

    /// What writer `w` stores as its `i`-th event: a tag naming both, and a payload made of it.
    fn event(w: u64, i: u64) -> (u64, Vec<u8>) {
        let tag = w * 10 + i;
        (tag, vec![tag as u8; 1 + (w + i) as usize % 3])
    }

    fn model(f: impl Fn() + Sync + Send + 'static) {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(2);
        b.check(f);
    }

    /// Two writers and a reader: what the reader sees of an event is all of it (loom checks
    /// that its reads are ordered after the writes), and up to `published_seq` nothing is
    /// missing; at the end every event is there once, in its own slot, with its own payload.
    #[test]
    fn readers_see_whole_events_and_the_watermark_never_passes_an_unfinished_one() {
        model(|| {
            let log = Arc::new(Log::new(4, 16));
            let writers: Vec<_> = (1..=2)
                .map(|w| {
                    let log = log.clone();
                    thread::spawn(move || {
                        (0..2)
                            .map(|i| {
                                let (tag, payload) = event(w, i);
                                log.append(tag, &payload).expect("room for every event")
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            let watermark = log.published_seq();
            for seq in 1..=log.last_seq() {
                match log.read(seq) {
                    Some((tag, payload)) => assert_eq!(event(tag / 10, tag % 10).1, payload),
                    None => assert!(seq > watermark, "seq {seq} under the watermark {watermark}"),
                }
            }
            let mut seqs: Vec<u64> = Vec::new();
            for (w, h) in (1..=2).zip(writers) {
                for (i, (seq, whole)) in h.join().unwrap().into_iter().enumerate() {
                    assert!(whole);
                    assert_eq!(log.read(seq), Some(event(w, i as u64)));
                    seqs.push(seq);
                }
            }
            seqs.sort_unstable();
            assert_eq!(seqs, vec![1, 2, 3, 4]);
            assert_eq!(log.published_seq(), 4);
        });
    }

    /// Writers racing for a byte budget too small for all: no payload passes the budget or
    /// straddles a chunk, and the events left without one are stored anyway (or dropped past
    /// the slot budget), never torn.
    #[test]
    fn racing_payloads_stay_inside_the_budget_and_their_chunks() {
        model(|| {
            let log = Arc::new(Log::new(3, 8));
            let writers: Vec<_> = (0..2)
                .map(|w| {
                    let log = log.clone();
                    thread::spawn(move || {
                        let mut out = Vec::new();
                        for i in 0..2u64 {
                            out.push(log.append(w * 10 + i, &[w as u8 + 1; 3]));
                        }
                        out
                    })
                })
                .collect();
            let results: Vec<_> = writers
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect();
            let stored: Vec<_> = results.iter().flatten().collect();
            assert_eq!(stored.len(), 3, "the slot budget: {results:?}");
            // Two 3-byte payloads fit in 8 bytes of 4-byte chunks; a third does not.
            assert_eq!(stored.iter().filter(|(_, whole)| *whole).count(), 2);
            assert!(log.next_byte.load(order::RESERVE) <= 8);
            for (seq, whole) in stored {
                let (tag, payload) = log.read(*seq).unwrap();
                let want = if *whole {
                    vec![(tag / 10) as u8 + 1; 3]
                } else {
                    vec![]
                };
                assert_eq!(payload, want);
            }
        });
    }
}
