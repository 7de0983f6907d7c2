//! A capture store: what it captured (a [`Reader`]), the live policy, and the settings the capture
//! path needs.

use crate::capture::delta;
use crate::capture::log::{Appended, CaptureLog, Limits, LogStats};
use crate::capture::policy::{mix64, Level, Policy, SampleBy};
use crate::formats::error::Error;
use crate::formats::event::{flags, truncate_payload, AtomKey, Header, Kind, PidKey, Seq};
use crate::reader::{LogRef, Reader};
use parking_lot::{Mutex, MutexGuard};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Modules whose callbacks' results are recorded as states, at most.
pub const MAX_STATE_MODULES: usize = 256;
/// Slots of the table remembering each process's last state event (direct-mapped by pid).
const LAST_STATE_SLOTS: usize = 16384;
/// Marks a `gen_statem` callback module in the state-module table (atom keys never use it).
const STATEM_BIT: u64 = 1 << 63;

/// How a state module's callback results carry the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateKind {
    /// `gen_server` style: `{:reply, _, State}`, `{:noreply, State}`, ...
    GenServer,
    /// `gen_statem` style: `{:next_state, Name, Data}`, `{:keep_state, Data}`, ...; the recorded
    /// state is `{Name, Data}`.
    GenStatem,
}

/// The settings of a new [`Store`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Config {
    /// Events stored at most.
    pub max_events: u64,
    /// Payload bytes stored at most.
    pub max_bytes: u64,
    /// A payload over this many bytes is truncated (keeps size, hash and a prefix).
    pub max_payload_bytes: usize,
    /// Initial level.
    pub level: Level,
    /// Initial sample rate.
    pub sample_rate: f64,
    /// Initial sampling mode.
    pub sample_by: SampleBy,
    /// When full, evict the oldest events (an eighth of the budget at a time) instead of
    /// dropping new ones: a ring-mode log (see `capture::ring`). Its states are stored whole.
    pub evict_oldest: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_events: 1_000_000,
            max_bytes: 256 << 20,
            max_payload_bytes: 4096,
            level: Level::Full,
            sample_rate: 1.0,
            sample_by: SampleBy::Process,
            evict_oldest: false,
        }
    }
}

pub use crate::capture::log::{MAX_BYTES, MAX_EVENTS};

/// States are kept whole up to this size, whatever `max_payload_bytes`
/// is: the history queries read them, and a state that changes little is stored as a change to
/// the previous one (see `capture::delta`), one that does not change not stored again.
///
/// 256 KiB: encoding a state runs in the traced process, inside a tracer callback that cannot
/// yield, at about 2.5 µs per KiB (a 1 MiB map took 4.5 ms), so this keeps a callback near the
/// millisecond a NIF may hold a scheduler.
pub const STATE_CAP: usize = 256 << 10;

/// What the truncated form of a state over [`STATE_CAP`] keeps at least (its hash, which tells
/// an unchanged truncated state from a changed one, covers every byte encoded).
pub const MIN_STATE_KEEP: usize = 1 << 16;

/// Smallest allowed payload cap: room for the truncation record (16 bytes) plus a useful prefix.
pub const MIN_PAYLOAD_CAP: usize = 64;
/// Largest allowed payload cap (one payload chunk).
pub const MAX_PAYLOAD_CAP: usize = 1 << 20;

/// The integer settings of a [`Config`] and their allowed ranges, `(name, min, max)`: the one
/// definition the Elixir side reads (through the NIF) and [`Config::validate`] checks.
pub const LIMITS: [(&str, u64, u64); 3] = [
    ("max_events", 1, MAX_EVENTS),
    ("max_bytes", 1, MAX_BYTES),
    (
        "max_payload_bytes",
        MIN_PAYLOAD_CAP as u64,
        MAX_PAYLOAD_CAP as u64,
    ),
];

impl Config {
    /// Checks every setting.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] naming the first setting out of range.
    pub fn validate(&self) -> Result<(), Error> {
        let range = |name: &'static str, v: u64| -> Result<(), Error> {
            let (_, min, max) = LIMITS
                .iter()
                .find(|(n, _, _)| *n == name)
                .copied()
                .unwrap_or((name, 0, u64::MAX));
            if (min..=max).contains(&v) {
                Ok(())
            } else {
                Err(Error::InvalidOption {
                    name,
                    reason: format!("an integer from {min} to {max}"),
                })
            }
        };
        range("max_events", self.max_events)?;
        range("max_bytes", self.max_bytes)?;
        range("max_payload_bytes", self.max_payload_bytes as u64)?;
        if !(0.0..=1.0).contains(&self.sample_rate) {
            return Err(Error::InvalidOption {
                name: "sample_rate",
                reason: "a number from 0.0 to 1.0".to_string(),
            });
        }
        Ok(())
    }
}

/// What is stored of an encoding: `seen` itself when it is the whole encoding and fits `cap`,
/// else its truncated form, of at most `keep` bytes, built in `scratch` (and `h` flagged).
fn stored_form<'a>(
    seen: &'a [u8],
    full_len: u64,
    exact: bool,
    (cap, keep): (usize, usize),
    h: &mut Header,
    scratch: &'a mut Vec<u8>,
) -> &'a [u8] {
    if exact && full_len == seen.len() as u64 && seen.len() <= cap {
        seen
    } else {
        truncate_payload(seen, full_len, exact, keep, scratch);
        h.flags |= flags::TRUNCATED;
        scratch
    }
}

/// The flags a state sharing `previous`'s payload takes from it: a delta's (the same record,
/// against the same base, resolves to the same state).
fn delta_flags(previous: &crate::formats::event::EventRef<'_>) -> u8 {
    if delta::is_delta(previous) {
        flags::STATE_DELTA | flags::PAYLOAD_DROPPED
    } else {
        0
    }
}

/// Whether the concatenation of `parts` is `bytes`.
fn same_bytes(parts: &[&[u8]], bytes: &[u8]) -> bool {
    let mut at = 0;
    for p in parts {
        if bytes.get(at..at + p.len()) != Some(*p) {
            return false;
        }
        at += p.len();
    }
    at == bytes.len()
}

/// A live capture store.
pub struct Store {
    /// The log captured into, and its index.
    reader: Reader,
    policy: Policy,
    max_payload: usize,
    closed: AtomicBool,
    /// Atom keys of the callback modules whose results are states: an insert-only open-addressed
    /// table read with relaxed loads on the capture path (0 = empty).
    state_modules: Box<[AtomicU64]>,
    /// For each process (by pid hash; collisions just lose deduplication), the seq of its last
    /// state event, to store an unchanged state without copying it again.
    last_state: Box<[AtomicU64]>,
    /// The pid whose state each `last_state` entry holds, as last written (a ring-mode log's
    /// keeper forgets a process's entry when it exits).
    last_state_pid: Box<[AtomicU64]>,
    /// Where the capture is being persisted, if it is.
    /// (What persists it belongs to a higher layer: this layer only holds it, see
    /// `persist::Writer::with`, `take` and `attach`, the only users of the slot.)
    persist: Mutex<Option<Box<dyn std::any::Any + Send>>>,
    /// Events written to disk so far (read without taking the writer's lock).
    persisted: AtomicU64,
    /// The raw term of the local process told about new state servers (see [`Store::watcher`]);
    /// 0 when none.
    watcher: AtomicU64,
    /// Unique among the stores of this OS process (see [`Store::id`]).
    id: u64,
}

/// The next [`Store::id`].
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Store {
    /// A new, empty store.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] when `config` is out of range.
    pub fn new(config: Config) -> Result<Store, Error> {
        config.validate()?;
        let limits = Limits {
            max_events: config.max_events,
            max_bytes: config.max_bytes,
        };
        Ok(Store {
            reader: Reader::new(match config.evict_oldest {
                true => CaptureLog::ring(limits),
                false => CaptureLog::new(limits),
            }),
            policy: Policy::new(config.level, config.sample_rate, config.sample_by),
            max_payload: config.max_payload_bytes,
            closed: AtomicBool::new(false),
            state_modules: (0..MAX_STATE_MODULES).map(|_| AtomicU64::new(0)).collect(),
            last_state: (0..LAST_STATE_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            last_state_pid: (0..LAST_STATE_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            persist: Mutex::new(None),
            persisted: AtomicU64::new(0),
            watcher: AtomicU64::new(0),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// A number no other store of this OS process has, ever: what a capture thread's memory of
    /// a store's events is keyed by (seqs start at 1 in every store).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Sets the process to tell when a traced process starts a state server (a `gen_server` or
    /// `gen_statem`) whose callback module is not watched yet: `raw` is a local pid's term as the
    /// VM represents it (an immediate, so stable), 0 for none. The core only keeps it.
    pub fn set_watcher(&self, raw: u64) {
        self.watcher.store(raw, Ordering::Relaxed);
    }

    /// See [`Store::set_watcher`].
    #[inline]
    pub fn watcher(&self) -> u64 {
        self.watcher.load(Ordering::Relaxed)
    }

    /// Marks `module` as a callback module whose results carry states, of the given kind.
    /// Returns false when the table is full.
    pub fn watch_state_module(&self, module: AtomKey, kind: StateKind) -> bool {
        if module == 0 || module & STATEM_BIT != 0 {
            return false;
        }
        let entry = match kind {
            StateKind::GenServer => module,
            StateKind::GenStatem => module | STATEM_BIT,
        };
        let n = self.state_modules.len();
        let start = (mix64(module) as usize) % n;
        for i in 0..n {
            let slot = &self.state_modules[(start + i) % n];
            match slot.compare_exchange(0, entry, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(existing) if existing & !STATEM_BIT == module => return true,
                Err(_) => {}
            }
        }
        false
    }

    /// Whether (and how) `module`'s callback results are states. O(1) expected; relaxed loads.
    #[inline]
    pub fn state_module_kind(&self, module: AtomKey) -> Option<StateKind> {
        if module == 0 {
            return None;
        }
        let n = self.state_modules.len();
        let start = (mix64(module) as usize) % n;
        for i in 0..n {
            match self.state_modules[(start + i) % n].load(Ordering::Relaxed) {
                0 => return None,
                m if m & !STATEM_BIT == module => {
                    return Some(if m & STATEM_BIT != 0 {
                        StateKind::GenStatem
                    } else {
                        StateKind::GenServer
                    })
                }
                _ => {}
            }
        }
        None
    }

    /// Whether `module`'s callback results are states (what tests check the table with).
    #[cfg(test)]
    fn is_state_module(&self, module: AtomKey) -> bool {
        self.state_module_kind(module).is_some()
    }

    /// The first `n` bytes (or all there are) of `pid`'s last state event's complete (not
    /// truncated) payload, when the lossy last-state table still knows it (a `gen_statem`'s
    /// `keep_state` result needs the state name, at its start).
    pub fn last_state_front(&self, pid: PidKey, n: usize) -> Option<std::borrow::Cow<'_, [u8]>> {
        if self.is_ring() {
            // Read pinned (it may be evicted meanwhile), so copied out.
            let log = self.reader.log();
            let ev = self.last_state_event_in(&log, pid)?;
            return Some(std::borrow::Cow::Owned(
                ev.payload[..n.min(ev.payload.len())].to_vec(),
            ));
        }
        let ev = self.last_state_event_in(self.capture_log(), pid)?;
        if !delta::is_delta(&ev) {
            return Some(std::borrow::Cow::Borrowed(
                &ev.payload[..n.min(ev.payload.len())],
            ));
        }
        let mut out = Vec::new();
        delta::front(self.capture_log(), &ev, n, &mut out).then_some(std::borrow::Cow::Owned(out))
    }

    /// `pid`'s last state event in `log` (the store's: a ring-mode one pinned), whole or as a
    /// delta (not truncated, not without its payload), if the lossy table still knows it.
    fn last_state_event_in<'a>(
        &self,
        log: &'a CaptureLog,
        pid: PidKey,
    ) -> Option<crate::formats::event::EventRef<'a>> {
        let seq = self.last_state_slot(pid).load(Ordering::Relaxed);
        log.get(seq).filter(|e| {
            e.header.pid == pid
                && e.header.kind == Kind::State as u8
                && (delta::is_delta(e)
                    || e.header.flags & (flags::TRUNCATED | flags::PAYLOAD_DROPPED) == 0)
        })
    }

    /// The last-state table's slot for `pid`.
    fn last_state_slot(&self, pid: PidKey) -> &AtomicU64 {
        &self.last_state[(mix64(pid) as usize) % LAST_STATE_SLOTS]
    }

    /// Makes `seq`, a state stored with header `h` and `payload`, the last state of its
    /// process in the last-state table.
    ///
    /// In a ring-mode log, the keeper may have carried the process's previous state forward
    /// between this state's append and now (see [`Store::carry_states`]): its copy then comes
    /// after this state in the log, and would read as the state in force. The entry tells (it
    /// holds the copy); this state is stored again after the copy.
    fn remember_state(&self, h: &Header, seq: Seq, payload: &[u8]) {
        let i = (mix64(h.pid) as usize) % LAST_STATE_SLOTS;
        if !self.is_ring() {
            self.last_state[i].store(seq, Ordering::Relaxed);
            self.last_state_pid[i].store(h.pid, Ordering::Relaxed);
            return;
        }
        let before = self.last_state[i].swap(seq, Ordering::Relaxed);
        let pid_before = self.last_state_pid[i].swap(h.pid, Ordering::Relaxed);
        if pid_before != h.pid || before <= seq {
            return;
        }
        let log = self.reader.log();
        let Some(copy) = log.get(before).filter(|c| {
            c.header.pid == h.pid
                && c.header.flags & flags::STATE_UNCHANGED != 0
                && c.payload != payload
        }) else {
            return;
        };
        self.store_again(
            &log,
            i,
            seq,
            &Header {
                ts: copy.header.ts.max(h.ts),
                ..*h
            },
            payload,
        );
    }

    /// Stores the state `seq` of entry `i` again, with header `h` (flagged unchanged) and
    /// `payload`, after a copy of an older state that came after it; the entry takes it unless
    /// a newer state took the entry meanwhile.
    fn store_again(&self, log: &CaptureLog, i: usize, seq: Seq, h: &Header, payload: &[u8]) {
        let again = Header {
            kind: Kind::State as u8,
            flags: h.flags | flags::STATE_UNCHANGED,
            ..*h
        };
        if let Appended::Stored(to) | Appended::StoredWithoutPayload(to) =
            log.append(&again, payload)
        {
            let _ =
                self.last_state[i].compare_exchange(seq, to, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// Forgets the last state of `pid`, which exited (a racing state of another process in
    /// the same entry may be forgotten too: it is then not carried, and said to be evicted).
    fn forget_state(&self, pid: PidKey) {
        let i = (mix64(pid) as usize) % LAST_STATE_SLOTS;
        if self.last_state_pid[i].load(Ordering::Relaxed) == pid {
            self.last_state[i].store(0, Ordering::Relaxed);
        }
    }

    /// Appends a state event equal to the process's last one (a callback that kept its state
    /// and data), sharing its payload. Nothing is appended when the table no longer knows that
    /// state (or it was truncated): `None`.
    pub fn append_same_state(&self, header: &Header) -> Option<Appended> {
        if self.is_closed() {
            return None;
        }
        if self.is_ring() {
            // Read pinned (it may be evicted meanwhile), and copied: a ring-mode log's events
            // share no payload.
            let log = self.reader.log();
            let previous = self.last_state_event_in(&log, header.pid)?;
            let h = Header {
                kind: Kind::State as u8,
                flags: flags::STATE_UNCHANGED,
                ..*header
            };
            let appended = log.append(&h, previous.payload);
            if let Appended::Stored(seq) | Appended::StoredWithoutPayload(seq) = appended {
                self.remember_state(&h, seq, previous.payload);
            }
            return Some(appended);
        }
        let previous = self.last_state_event_in(self.capture_log(), header.pid)?;
        let h = Header {
            kind: Kind::State as u8,
            flags: flags::STATE_UNCHANGED | delta_flags(&previous),
            ..*header
        };
        let previous = previous.seq;
        let appended = self.capture_log().append_sharing(&h, previous);
        if let Appended::Stored(seq) = appended {
            // Not a ring-mode log's (it shares payloads): the payload is not needed.
            self.remember_state(&h, seq, &[]);
        }
        Some(appended)
    }

    /// Appends a state event, sharing the payload of the process's previous state event when the
    /// stored bytes are identical (flagged [`flags::STATE_UNCHANGED`]), so an unchanged state
    /// costs a slot and no payload, and storing it as a change to that state when it changed
    /// little (see [`crate::capture::delta`]). Arguments as for [`Store::append_partial`].
    pub fn append_state(
        &self,
        header: &Header,
        seen: &[u8],
        full_len: u64,
        exact: bool,
        scratch: &mut Vec<u8>,
    ) -> Appended {
        self.append_state_after(header, seen, full_len, exact, scratch, None)
    }

    /// [`Store::append_state`], given what the caller knows of the process's previous state:
    /// `known` is `(seq, bytes)`, the state event `seq` resolved (a capture thread keeps the
    /// last state it stored), so that telling a change needs no resolving of a chain of deltas.
    pub fn append_state_after(
        &self,
        header: &Header,
        seen: &[u8],
        full_len: u64,
        exact: bool,
        scratch: &mut Vec<u8>,
        known: Option<(Seq, &[u8])>,
    ) -> Appended {
        if self.is_closed() {
            return Appended::Dropped;
        }
        let mut h = *header;
        h.kind = Kind::State as u8;
        let stored = stored_form(seen, full_len, exact, self.state_caps(), &mut h, scratch);
        let slot = self.last_state_slot(h.pid);
        let previous = slot.load(Ordering::Relaxed);
        let log = self.reader.log_unpinned();
        // A ring-mode log's writers never read its events (they may be evicted): its states
        // are stored whole.
        let prev = (!log.is_ring())
            .then(|| log.get(previous))
            .flatten()
            .filter(|p| p.header.pid == h.pid && p.header.kind == Kind::State as u8);
        let mut record = Vec::new();
        let appended = match prev {
            // A whole state: compared with the previous one as it resolves (whole or a delta),
            // and stored as a change to it when that is worth it (see `capture::delta`).
            Some(p) if h.flags & flags::TRUNCATED == 0 => {
                let mut parts = Vec::new();
                let resolves = match known {
                    Some((seq, bytes)) if seq == p.seq => {
                        parts.push(bytes);
                        true
                    }
                    _ => delta::pieces(log, &p, &mut parts),
                };
                if resolves && same_bytes(&parts, stored) {
                    h.flags |= flags::STATE_UNCHANGED | delta_flags(&p);
                    log.append_sharing(&h, previous)
                } else if resolves
                    && delta::encode(p.seq, delta::chain(&p), &parts, stored, &mut record)
                {
                    h.flags |= flags::STATE_DELTA | flags::PAYLOAD_DROPPED;
                    log.append(&h, &record)
                } else {
                    log.append(&h, stored)
                }
            }
            // A truncated state: unchanged when its stored form is the previous one's.
            Some(p) if p.payload == stored && !delta::is_delta(&p) => {
                h.flags |= flags::STATE_UNCHANGED;
                log.append_sharing(&h, previous)
            }
            _ => log.append(&h, stored),
        };
        if let Appended::Stored(seq) | Appended::StoredWithoutPayload(seq) = appended {
            self.remember_state(&h, seq, stored);
        }
        appended
    }

    /// The last state event of `pid` recorded so far, as the lossy table remembers it (what
    /// tests check the table with).
    #[cfg(test)]
    fn last_state_of(&self, pid: PidKey) -> Option<u64> {
        let seq = self.last_state_slot(pid).load(Ordering::Relaxed);
        self.capture_log()
            .get(seq)
            .filter(|e| e.header.pid == pid)
            .map(|e| e.seq)
    }

    /// The slot of whatever persists this store, locked (taken by the flushing NIF, never by
    /// capture). `persist::Writer` reads and fills it.
    pub(crate) fn persist_slot(&self) -> MutexGuard<'_, Option<Box<dyn std::any::Any + Send>>> {
        self.persist.lock()
    }

    /// How many events are on disk, as the writer last reported.
    pub fn persisted(&self) -> u64 {
        self.persisted.load(Ordering::Relaxed)
    }

    /// Records how many events are on disk.
    pub fn set_persisted(&self, events: u64) {
        self.persisted.store(events, Ordering::Relaxed);
    }

    /// What the store captured, for queries.
    pub fn reader(&self) -> &Reader {
        &self.reader
    }

    /// The capture log.
    #[inline]
    pub fn log(&self) -> LogRef<'_> {
        self.reader.log()
    }

    /// The live policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The payload cap in bytes.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// The cap of state payloads: [`STATE_CAP`], whatever `max_payload` is (a state is kept
    /// whole up to there; stored as a change to the previous state when it changes little), or
    /// the largest payload the log can hold when smaller.
    pub fn state_cap(&self) -> usize {
        STATE_CAP.min(self.reader.log_unpinned().largest_payload())
    }

    /// A state's cap (see [`Store::state_cap`]) and what its truncated form keeps past it: as
    /// much as other payloads, and at least [`MIN_STATE_KEEP`].
    fn state_caps(&self) -> (usize, usize) {
        let cap = self.state_cap();
        (cap, self.max_payload.max(MIN_STATE_KEEP).min(cap))
    }

    /// Stops accepting events for good. Relaxed: a few late events after closing are harmless.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    /// Whether [`Store::close`] was called.
    #[inline]
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Appends an event whose payload is already encoded, truncating it to the cap.
    /// `scratch` is a reusable buffer for the truncated form.
    pub fn append(&self, header: &Header, payload: &[u8], scratch: &mut Vec<u8>) -> Appended {
        self.append_partial(header, payload, payload.len() as u64, true, scratch)
    }

    /// Appends an event of which the encoder kept only the first bytes (`seen`) of an encoding
    /// of `full_len` bytes (exactly, or at least when not `exact`). Anything over the cap is
    /// stored truncated.
    pub fn append_partial(
        &self,
        header: &Header,
        seen: &[u8],
        full_len: u64,
        exact: bool,
        scratch: &mut Vec<u8>,
    ) -> Appended {
        if self.is_closed() {
            return Appended::Dropped;
        }
        let mut h = *header;
        if h.kind == Kind::Exit as u8 {
            // Its last state is not carried past evictions any more.
            self.forget_state(h.pid);
        }
        let cap = self.max_payload;
        let stored = stored_form(seen, full_len, exact, (cap, cap), &mut h, scratch);
        self.reader.log_unpinned().append(&h, stored)
    }

    /// Carries forward the last state of each live process that a ring-mode log (see
    /// `capture::ring`) is about to evict with its next two generations: the same state again,
    /// at `now`, flagged [`flags::STATE_UNCHANGED`], so that the state of a quiet process
    /// outlives the events around it. `state_at` answers what it would have without the
    /// eviction, from `now` on. The processes are those of the last-state table (one per
    /// entry: of processes whose pids collide, the last to store a state), less those whose
    /// exit was captured. A call carries at most a quarter of a generation (events and bytes),
    /// so that states never crowd out the events around them; the others are evicted. O(the
    /// table), without the index. Returns how many were carried (0 for any other log, or a
    /// closed store).
    pub fn carry_states(&self, now: crate::formats::event::Timestamp) -> u64 {
        let log = self.reader.log();
        let horizon = log.evicted_within(2);
        if horizon == 0 || self.is_closed() {
            return 0;
        }
        let evicted = log.evicted_upto();
        let generation = crate::capture::ring::GENERATIONS as u64 * 4;
        let (mut events, mut bytes) = (
            log.limits().max_events / generation,
            log.limits().max_bytes / generation,
        );
        let mut carried = 0;
        for (i, slot) in self.last_state.iter().enumerate() {
            let seq = slot.load(Ordering::Relaxed);
            if seq <= evicted || seq > horizon {
                continue;
            }
            match self.carry_one(&log, i, seq, now, (&mut events, &mut bytes)) {
                Some(true) => carried += 1,
                Some(false) => {}
                None => break,
            }
        }
        carried
    }

    /// Carries the state `seq`, which entry `i` of the last-state table held, forward to `now`
    /// within the `budget` left (events, bytes), as [`Store::carry_states`] does. If the
    /// process stored a newer state before the copy (the entry moved on meanwhile), that state
    /// is stored again after the copy, so the last state stays the newest. Whether it carried
    /// it; `None` when the budget's events are spent.
    fn carry_one(
        &self,
        log: &CaptureLog,
        i: usize,
        seq: Seq,
        now: crate::formats::event::Timestamp,
        budget: (&mut u64, &mut u64),
    ) -> Option<bool> {
        let Some(ev) = log.get(seq) else {
            return Some(false);
        };
        if ev.header.kind() != Some(Kind::State) || ev.header.flags & flags::PAYLOAD_DROPPED != 0 {
            return Some(false);
        }
        let (events, bytes) = budget;
        let Some(left) = bytes.checked_sub(ev.payload.len() as u64) else {
            return Some(false);
        };
        if *events == 0 {
            return None;
        }
        (*events, *bytes) = (*events - 1, left);
        let h = Header {
            ts: now,
            flags: ev.header.flags | flags::STATE_UNCHANGED,
            ..ev.header
        };
        let (Appended::Stored(to) | Appended::StoredWithoutPayload(to)) =
            log.append(&h, ev.payload)
        else {
            return Some(false);
        };
        let entry = &self.last_state[i];
        if let Err(newer) = entry.compare_exchange(seq, to, Ordering::Relaxed, Ordering::Relaxed) {
            // A newer state of the process (not another's sharing the entry) came before the
            // copy: stored again after it.
            let newer_state = (newer < to)
                .then(|| log.get(newer))
                .flatten()
                .filter(|n| n.header.pid == ev.header.pid && n.header.kind() == Some(Kind::State));
            if let Some(n) = newer_state {
                self.store_again(
                    log,
                    i,
                    newer,
                    &Header {
                        ts: now,
                        ..n.header
                    },
                    n.payload,
                );
            }
        }
        Some(true)
    }

    /// Whether new events would be dropped (the log is full; never for a ring-mode log): a
    /// cheap check for the capture path, before encoding.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.capture_log().is_full()
    }

    /// Counts an event the capture path chose not to append because the log is full.
    pub fn count_dropped(&self) {
        self.capture_log().count_dropped()
    }

    /// Whether the log evicts its oldest events when full (`overflow: :evict_oldest`).
    pub fn is_ring(&self) -> bool {
        self.capture_log().is_ring()
    }

    /// Counters.
    pub fn stats(&self) -> LogStats {
        self.reader.log_unpinned().stats()
    }

    /// The log, for the capture path: appending, and reading the last states it keeps track
    /// of (never when ring-mode: see [`Store::capture_log`]'s callers).
    fn capture_log(&self) -> &CaptureLog {
        self.reader.log_unpinned()
    }
}

/// Tests' helpers: a ring-mode store of `max_events`, and an event header.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A ring-mode store of `max_events` events and the default bytes.
    pub(crate) fn ring(max_events: u64) -> Store {
        Store::new(Config {
            max_events,
            evict_oldest: true,
            ..Config::default()
        })
        .unwrap()
    }

    /// The header of a `kind` event of `pid` (with `peer`) at `ts`.
    pub(crate) fn event(pid: PidKey, peer: PidKey, kind: Kind, ts: i64) -> Header {
        Header {
            pid,
            peer,
            kind: kind as u8,
            ts,
            ..Header::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::event::{flags, Kind};

    #[test]
    fn over_cap_payloads_are_truncated_and_counted() {
        let store = Store::new(Config {
            max_payload_bytes: 64,
            ..Config::default()
        })
        .unwrap();
        let mut scratch = Vec::new();
        let h = Header {
            kind: Kind::Send as u8,
            ..Header::default()
        };
        store.append(&h, &[1; 10], &mut scratch);
        store.append(&h, &[2; 1000], &mut scratch);
        let log = store.log();
        let ev = log.get(2).unwrap();
        assert_eq!(ev.header.flags & flags::TRUNCATED, flags::TRUNCATED);
        assert_eq!(ev.payload.len(), 64);
        assert_eq!(ev.truncated().unwrap().full_len, 1000);
        assert_eq!(store.stats().truncated, 1);
        assert_eq!(store.log().get(1).unwrap().payload, &[1; 10]);
    }

    #[test]
    fn a_ring_carries_the_last_state_of_quiet_live_processes_forward() {
        let store = testing::ring(8 * 100);
        let mut scratch = Vec::new();
        let h = |pid, kind, ts| testing::event(pid, 0, kind, ts);
        // Process 1 keeps a state and goes quiet; process 2 keeps one and exits.
        store.append_state(&h(1, Kind::State, 1), b"quiet", 5, true, &mut scratch);
        store.append_state(&h(2, Kind::State, 2), b"gone", 4, true, &mut scratch);
        store.append(&h(2, Kind::Exit, 3), b"", &mut scratch);
        assert_eq!(store.carry_states(4), 0, "nothing about to be evicted");
        // A busy process laps the ring ten times; a governor carries states now and then.
        let mut carried = 0;
        for i in 0..8_000i64 {
            store.append(&h(3, Kind::Send, 10 + i), b"x", &mut scratch);
            if i % 50 == 0 {
                carried += store.carry_states(10 + i);
            }
        }
        assert!(store.reader().log().evicted_upto() > 7_000);
        assert!((1..=20).contains(&carried), "{carried}");
        let log = store.log();
        let idx = store.reader().index();
        let last = |pid| idx.pid(pid).and_then(|p| p.states.last().copied());
        // The quiet live process's state is still there, unchanged, at a recent time; the
        // dead one's is gone with its exit.
        let kept = log.get(last(1).expect("carried")).unwrap();
        assert_eq!(kept.payload, b"quiet");
        assert!(kept.header.ts > 7_000 && kept.header.flags & flags::STATE_UNCHANGED != 0);
        assert_eq!(last(2), None);
        assert!(idx.evicted(2) && idx.evicted(1));
    }

    /// A ring store whose process 1 has the state `old`, about to be evicted (so the keeper
    /// carries it), with the header its next state takes.
    fn ring_with_an_old_state() -> (Store, Header) {
        let store = testing::ring(8 * 100);
        let mut scratch = Vec::new();
        let h = |pid, kind, ts| testing::event(pid, 0, kind, ts);
        store.append_state(&h(1, Kind::State, 1), b"old", 3, true, &mut scratch);
        for i in 0..650 {
            store.append(&h(3, Kind::Send, 10 + i), b"x", &mut scratch);
        }
        assert!(store.reader().log().evicted_within(2) >= 1);
        (store, h(1, Kind::State, 700))
    }

    /// The state of process 1 the log says is in force now: its last state event's payload.
    fn last_state_bytes(store: &Store) -> Vec<u8> {
        let log = store.log();
        let idx = store.reader().index();
        let seq = *idx.pid(1).unwrap().states.last().unwrap();
        log.get(seq).unwrap().payload.to_vec()
    }

    #[test]
    fn a_state_stored_while_the_keeper_carries_the_one_before_stays_the_last() {
        // The keeper's copy lands between the new state's append and its entry in the table.
        let (store, h) = ring_with_an_old_state();
        let Appended::Stored(new) = store.capture_log().append(&h, b"new") else {
            panic!("stored")
        };
        assert_eq!(store.carry_states(800), 1);
        assert_eq!(last_state_bytes(&store), b"old", "the copy came after it");
        store.remember_state(&h, new, b"new");
        assert_eq!(last_state_bytes(&store), b"new");

        // The new state lands between the keeper's reading of the table and its copy.
        let (store, h) = ring_with_an_old_state();
        let i = (mix64(1) as usize) % LAST_STATE_SLOTS;
        let old = store.last_state[i].load(Ordering::Relaxed);
        store.append_state(&h, b"new", 3, true, &mut Vec::new());
        let log = store.log();
        let carried = store.carry_one(&log, i, old, 800, (&mut 10, &mut 1_000));
        assert_eq!(carried, Some(true));
        drop(log);
        assert_eq!(last_state_bytes(&store), b"new");
    }

    #[test]
    fn unchanged_states_share_their_payload() {
        let store = Store::new(Config::default()).unwrap();
        let mut scratch = Vec::new();
        let h = |pid| Header {
            pid,
            ..Header::default()
        };
        store.append_state(&h(1), b"aa", 2, true, &mut scratch);
        store.append_state(&h(2), b"aa", 2, true, &mut scratch);
        store.append_state(&h(1), b"aa", 2, true, &mut scratch);
        store.append_state(&h(1), b"bb", 2, true, &mut scratch);
        let log = store.log();
        let ev = |s| log.get(s).unwrap();
        assert_eq!(
            ev(2).header.flags & flags::STATE_UNCHANGED,
            0,
            "another process"
        );
        assert_ne!(ev(3).header.flags & flags::STATE_UNCHANGED, 0);
        assert_eq!(ev(3).payload, b"aa");
        assert_eq!(ev(4).header.flags & flags::STATE_UNCHANGED, 0);
        // Only the three distinct payloads took bytes.
        assert_eq!(store.stats().payload_bytes, 6);
        assert_eq!(store.last_state_of(1), Some(4));
        assert_eq!(store.last_state_front(1, 64).as_deref(), Some(&b"bb"[..]));
        assert_eq!(store.last_state_front(3, 64), None);
        // A callback that kept its state: the last one again, no bytes; none for a process
        // without one.
        let Some(Appended::Stored(5)) = store.append_same_state(&h(1)) else {
            panic!("stored at 5")
        };
        assert_eq!(
            (ev(5).payload, ev(5).header.kind),
            (&b"bb"[..], Kind::State as u8)
        );
        assert_ne!(ev(5).header.flags & flags::STATE_UNCHANGED, 0);
        assert_eq!(store.stats().payload_bytes, 6);
        assert_eq!(store.last_state_of(1), Some(5));
        assert_eq!(store.append_same_state(&h(3)), None);
    }

    #[test]
    fn state_modules_are_remembered() {
        let store = Store::new(Config::default()).unwrap();
        assert!(!store.is_state_module(42));
        assert!(store.watch_state_module(42, StateKind::GenServer));
        assert!(store.watch_state_module(42, StateKind::GenServer));
        assert!(store.is_state_module(42));
        assert!(store.watch_state_module(43, StateKind::GenStatem));
        assert_eq!(store.state_module_kind(43), Some(StateKind::GenStatem));
        assert_eq!(store.state_module_kind(42), Some(StateKind::GenServer));
        for m in 1000..(1000 + MAX_STATE_MODULES as u64 - 2) {
            assert!(store.watch_state_module(m, StateKind::GenServer));
        }
        assert!(
            !store.watch_state_module(7, StateKind::GenServer),
            "the table is full"
        );
        assert!(store.is_state_module(1000) && !store.is_state_module(7));
    }

    #[test]
    fn closed_store_takes_nothing() {
        let store = Store::new(Config::default()).unwrap();
        store.close();
        let r = store.append(&Header::default(), b"", &mut Vec::new());
        assert_eq!(r, Appended::Dropped);
        assert_eq!(store.stats().events, 0);
    }

    #[test]
    fn bad_config_names_the_option() {
        let e = Store::new(Config {
            max_payload_bytes: 1,
            ..Config::default()
        })
        .err()
        .unwrap();
        assert!(matches!(
            e,
            Error::InvalidOption {
                name: "max_payload_bytes",
                ..
            }
        ));
        assert!(Store::new(Config {
            sample_rate: 1.5,
            ..Config::default()
        })
        .is_err());
        for (events, bytes) in [(u64::MAX, 1), (1, u64::MAX), (0, 1), (1, 0)] {
            assert!(Store::new(Config {
                max_events: events,
                max_bytes: bytes,
                ..Config::default()
            })
            .is_err());
        }
    }
}
