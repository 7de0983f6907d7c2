//! The index footer that ends a sealed segment: what the segment holds, by process, kind, call,
//! message tag and time, with every process's state change points, so a trace can be
//! summarized, and a time or seq located, without reading its events.

use crate::capture::hash::WordMap;
use crate::formats::event::{flags, EventRef, Kind};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// One entry of [`Footer::seeks`] is kept every this many events.
pub const SEEK_EVERY: u64 = 1024;

/// A segment's index footer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Footer {
    /// Events in the segment.
    pub events: u64,
    /// Seqs of its first and last events (0 when it has none).
    pub first_seq: u64,
    /// See `first_seq`.
    pub last_seq: u64,
    /// Times of its first and last events.
    pub first_ts: i64,
    /// See `first_ts`.
    pub last_ts: i64,
    /// Events by kind discriminant.
    pub kinds: Vec<u64>,
    /// `(pid word, events)` for every process.
    pub pids: Vec<(u64, u64)>,
    /// `(module word, function word, arity, calls)` for every traced function called.
    pub calls: Vec<(u64, u64, u8, u64)>,
    /// `(tag, messages)`: sends and receives by message tag.
    pub tags: Vec<(String, u64)>,
    /// `(pid word, seqs)`: the state events of each process that changed its state.
    pub states: Vec<(u64, Vec<u64>)>,
    /// `(pid word, offset, payload offset)`: the frame of each process's last state event, and
    /// of the last one whose payload is in the segment (the same frame unless the last state
    /// was unchanged): a process's state at the segment's end, read without its other events.
    /// `None` in footers written before it was recorded.
    #[serde(default)]
    pub last_states: Option<Vec<(u64, u64, u64)>>,
    /// `(seq, ts, frame offset)` of every [`SEEK_EVERY`]-th event, and of the first.
    pub seeks: Vec<(u64, i64, u64)>,
    /// The ETF of every word named above.
    pub symbols: Vec<(u64, ByteBuf)>,
    /// The capture's clock: `(monotonic, system)` nanoseconds at one instant, and the token of
    /// the VM run that captured it.
    pub clock: Option<(i64, i64, u64)>,
    /// The capture's dropped and truncated counters when the segment was sealed.
    pub dropped: u64,
    /// See `dropped`.
    pub truncated: u64,
    /// The segment's events by process, message tag and called function: what a query index
    /// is built from without reading the events. `None` in footers written before it was.
    #[serde(default)]
    pub index: Option<SegmentIndex>,
}

/// Increasing seqs, kept as LEB128 deltas (a process's events are mostly close together, so
/// an entry takes one or two bytes).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeqList {
    /// Entries.
    pub len: u64,
    /// The last entry (0 when there is none).
    pub last: u64,
    /// Each entry minus the one before it (the first minus 0).
    pub deltas: ByteBuf,
}

impl SeqList {
    /// Adds `seq`, which must be above every entry (others are ignored).
    pub fn push(&mut self, seq: u64) {
        if seq <= self.last && self.len > 0 {
            return;
        }
        let mut d = seq - self.last;
        loop {
            let byte = (d & 0x7f) as u8;
            d >>= 7;
            if d == 0 {
                self.deltas.push(byte);
                break;
            }
            self.deltas.push(byte | 0x80);
        }
        self.len += 1;
        self.last = seq;
    }

    /// The entries, if the list is well formed: `len` strictly increasing seqs inside
    /// `range`, ending at `last`. `None` for anything else (a damaged or crafted footer).
    pub fn decode(&self, range: std::ops::RangeInclusive<u64>) -> Option<Vec<u64>> {
        // Every entry takes at least a byte: the length is bounded by the bytes.
        if self.len > self.deltas.len() as u64 {
            return None;
        }
        let mut out = Vec::with_capacity(self.len as usize);
        let (mut at, mut prev, bytes) = (0usize, 0u64, &self.deltas[..]);
        while at < bytes.len() {
            let (mut d, mut shift) = (0u64, 0u32);
            loop {
                let byte = *bytes.get(at)?;
                at += 1;
                if shift > 63 {
                    return None;
                }
                d |= u64::from(byte & 0x7f).checked_shl(shift)?;
                shift += 7;
                if byte & 0x80 == 0 {
                    break;
                }
            }
            if d == 0 {
                return None;
            }
            prev = prev.checked_add(d)?;
            if !range.contains(&prev) {
                return None;
            }
            out.push(prev);
        }
        (out.len() as u64 == self.len && out.last().copied().unwrap_or(0) == self.last)
            .then_some(out)
    }
}

/// The lists a segment adds to a query index (see [`crate::index::Index`]), by capture word.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentIndex {
    /// `(pid word, its events, its state events)`.
    pub pids: Vec<(u64, SeqList, SeqList)>,
    /// `(pid word, seq)`: the last spawn event that created the process.
    pub spawns: Vec<(u64, u64)>,
    /// `(pid word, seq)`: the last exit event of the process.
    pub exits: Vec<(u64, u64)>,
    /// `(tag, message events)`.
    pub tags: Vec<(String, SeqList)>,
    /// `(module word, call, return and exception events)`.
    pub modules: Vec<(u64, SeqList)>,
    /// `(module word, function word, call, return and exception events)`.
    pub functions: Vec<(u64, u64, SeqList)>,
}

/// Builds a [`Footer`] from the records of a segment, as they are written or read.
#[derive(Default)]
pub struct FooterBuilder {
    footer: Footer,
    procs: WordMap<u64, Proc>,
    calls: WordMap<(u64, u64, u8), u64>,
    tags: std::collections::HashMap<Box<str>, SeqList>,
    spawns: WordMap<u64, u64>,
    modules: WordMap<u64, SeqList>,
    functions: WordMap<(u64, u64), SeqList>,
    symbols: WordMap<u64, ByteBuf>,
}

/// What a segment says of one process.
#[derive(Default)]
struct Proc {
    events: SeqList,
    states: SeqList,
    /// Its state events that changed the state.
    changes: Vec<u64>,
    /// Frames of its last state event and of the last one holding its payload.
    last_state: Option<(u64, u64)>,
    exit: Option<u64>,
}

impl FooterBuilder {
    /// Takes an event at frame `offset` into account; `payload_here`: its payload is in that
    /// frame (an unchanged state's may not be). Its index lists are those of
    /// [`crate::index::Index`].
    pub fn event(&mut self, ev: &EventRef, offset: u64, payload_here: bool) {
        let h = &ev.header;
        let f = &mut self.footer;
        if f.events == 0 {
            f.first_seq = ev.seq;
            f.first_ts = h.ts;
        }
        if f.events.is_multiple_of(SEEK_EVERY) {
            f.seeks.push((ev.seq, h.ts, offset));
        }
        f.events += 1;
        f.last_seq = ev.seq;
        f.last_ts = h.ts;
        if f.kinds.len() < Kind::ALL.len() {
            f.kinds.resize(Kind::ALL.len(), 0);
        }
        if let Some(k) = f.kinds.get_mut(h.kind as usize) {
            *k += 1;
        }
        let kind = Kind::from_u8(h.kind);
        if h.pid != 0 {
            let p = self.procs.entry(h.pid).or_default();
            p.events.push(ev.seq);
            match kind {
                Some(Kind::State) => {
                    p.states.push(ev.seq);
                    if h.flags & flags::STATE_UNCHANGED == 0 {
                        p.changes.push(ev.seq);
                    }
                    let last = p.last_state.get_or_insert((offset, offset));
                    last.0 = offset;
                    if payload_here {
                        last.1 = offset;
                    }
                }
                Some(Kind::Exit) => p.exit = Some(ev.seq),
                _ => {}
            }
        }
        match kind {
            Some(Kind::Spawn) if h.peer != 0 => {
                self.spawns.insert(h.peer, ev.seq);
            }
            Some(k) if crate::index::TAGGED.contains(k) => {
                if let Some(tag) = ev.tag() {
                    match self.tags.get_mut(tag) {
                        Some(list) => list.push(ev.seq),
                        None => {
                            let mut list = SeqList::default();
                            list.push(ev.seq);
                            self.tags.insert(tag.into(), list);
                        }
                    }
                }
            }
            Some(k) if crate::index::CALLS.contains(k) && h.module != 0 => {
                if k == Kind::Call {
                    *self
                        .calls
                        .entry((h.module, h.function, h.arity))
                        .or_default() += 1;
                }
                self.modules.entry(h.module).or_default().push(ev.seq);
                self.functions
                    .entry((h.module, h.function))
                    .or_default()
                    .push(ev.seq);
            }
            _ => {}
        }
    }

    /// Records what a word stands for.
    pub fn symbol(&mut self, word: u64, etf: &[u8]) {
        self.symbols
            .entry(word)
            .or_insert_with(|| ByteBuf::from(etf.to_vec()));
    }

    /// Records the capture's clock (the first one given is kept).
    pub fn clock(&mut self, monotonic: i64, system: i64, run: u64) {
        self.footer.clock.get_or_insert((monotonic, system, run));
    }

    /// Records the capture's counters.
    pub fn stats(&mut self, dropped: u64, truncated: u64) {
        self.footer.dropped = dropped;
        self.footer.truncated = truncated;
    }

    /// The footer of everything taken so far, sorted; the builder starts over.
    pub fn finish(&mut self) -> Footer {
        fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
            v.sort_unstable();
            v
        }
        let b = std::mem::take(self);
        let mut f = b.footer;
        let mut index = SegmentIndex::default();
        let (mut changes, mut last_states) = (Vec::new(), Vec::new());
        for (pid, p) in b.procs {
            f.pids.push((pid, p.events.len));
            if !p.changes.is_empty() {
                changes.push((pid, p.changes));
            }
            if let Some((o, po)) = p.last_state {
                last_states.push((pid, o, po));
            }
            if let Some(seq) = p.exit {
                index.exits.push((pid, seq));
            }
            index.pids.push((pid, p.events, p.states));
        }
        f.pids.sort_unstable();
        f.states = sorted(changes);
        f.last_states = Some(sorted(last_states));
        f.calls = sorted(
            b.calls
                .into_iter()
                .map(|((m, fu, a), n)| (m, fu, a, n))
                .collect(),
        );
        f.tags = sorted(b.tags.iter().map(|(t, l)| (t.to_string(), l.len)).collect());
        f.symbols = sorted(b.symbols.into_iter().collect());
        index.pids.sort_unstable();
        index.exits.sort_unstable();
        index.spawns = sorted(b.spawns.into_iter().collect());
        index.tags = sorted(b.tags.into_iter().map(|(t, l)| (t.into(), l)).collect());
        index.modules = sorted(b.modules.into_iter().collect());
        index.functions = sorted(
            b.functions
                .into_iter()
                .map(|((m, fu), l)| (m, fu, l))
                .collect(),
        );
        f.index = Some(index);
        f
    }
}

impl Footer {
    /// Whether the footer is consistent with itself and with the segment's manifest range
    /// (`first_seq`, `last_seq`; zeros when unknown). A footer read from a file is only
    /// believed when it is: its lists are bounded by its event count.
    pub fn plausible(&self, first_seq: u64, last_seq: u64) -> bool {
        let events = self.events;
        let range_ok = (first_seq == 0 || (self.first_seq, self.last_seq) == (first_seq, last_seq))
            && self.first_seq <= self.last_seq
            // A segment holds each seq of its range once at most.
            && events <= (self.last_seq - self.first_seq).saturating_add(1);
        let changes = self
            .states
            .iter()
            .fold(0u64, |n, (_, s)| n.saturating_add(s.len() as u64));
        let counted = self.kinds.iter().fold(0u64, |n, k| n.saturating_add(*k));
        range_ok
            && self.kinds.len() <= Kind::ALL.len()
            && counted == events
            && self.pids.len() as u64 <= events
            && self.calls.len() as u64 <= events
            && self.tags.len() as u64 <= events
            && changes <= events
            && self
                .last_states
                .as_ref()
                .is_none_or(|l| l.len() <= self.pids.len() && l.iter().all(|(_, o, po)| po <= o))
            && self.seeks.len() as u64 <= events / SEEK_EVERY + 1
            && self.symbols.len() as u64 <= events.saturating_mul(4)
    }
}
