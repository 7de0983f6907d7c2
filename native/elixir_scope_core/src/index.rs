//! Per-process indexes over the capture log, so history queries touch one process's events
//! instead of scanning the log.
//!
//! The index is built by queries, not by capture: each query first catches it up with the events
//! published since the last one (`Index::catch_up`), under the store's query lock. Capture never
//! waits for it.

use crate::capture::delta;
use crate::capture::log::CaptureLog;
use crate::formats::etf;
use crate::formats::event::{EventRef, Kind, KindMask, PidKey, Seq, Timestamp};
use std::collections::HashMap;

/// What the index knows about one process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PidIndex {
    /// Every event that happened in the process, in seq order.
    pub events: Vec<Seq>,
    /// Its `state` events, in seq order.
    pub states: Vec<Seq>,
    /// The `spawn` event (in its parent) that created it.
    pub spawned: Option<Seq>,
    /// Its `exit` event.
    pub exit: Option<Seq>,
    /// Whether events of it were evicted (a ring-mode log's): what came before its first
    /// event here is gone, not absent.
    pub evicted: bool,
    /// The `send` events (of other processes, or its own) whose peer is this process: the
    /// messages traced senders sent it, in seq order. Built by catching up with a log, not
    /// read from footers (see [`Index::inbox_complete`]).
    pub inbox: Vec<Seq>,
}

/// Per-process indexes of a log, up to some seq.
#[derive(Debug, Default)]
pub struct Index {
    upto: Seq,
    pids: HashMap<PidKey, PidIndex>,
    /// Seqs at or below `upto` whose event was not published yet when the index passed them (a
    /// writer preempted mid-write): retried on every catch-up and inserted in order once there.
    stragglers: Vec<Seq>,
    /// Message events (send, receive, send to dead) by message tag.
    tags: HashMap<Box<str>, Vec<Seq>>,
    /// Call, return and exception events by module, and by module and function.
    modules: HashMap<u64, Vec<Seq>>,
    functions: HashMap<(u64, u64), Vec<Seq>>,
    /// State events where a key of a map state changed, per process and key name.
    state_keys: HashMap<PidKey, HashMap<Box<str>, Vec<Seq>>>,
    /// Processes whose `state_keys` are incomplete (a state indexed out of order, or one too
    /// large or truncated to diff): their key changes are computed from their states instead.
    keys_unknown: std::collections::HashSet<PidKey>,
    /// Whether lists read from footers were appended: their events are in no inbox.
    inbox_partial: bool,
    /// Call aliases not replied to yet: the ETF of the reference a `$gen_call` names as its
    /// reply tag (`{pid, [:alias | ref]}`), the calling process and the call's seq.
    aliases: HashMap<Box<[u8]>, (PidKey, Seq)>,
    /// Registered names, as the trace saw them taken (`register` events, and `traced` events
    /// of processes registered when their tracing started): the ETF of the name, and the pid.
    names: HashMap<Box<[u8]>, PidKey>,
    /// Per process, the `send` events that named something else than its pid: one of its call
    /// aliases (a GenServer's reply) or its registered name. They are this process's messages.
    resolved: HashMap<PidKey, Vec<Seq>>,
    /// The last seq evicted from a ring-mode log, as the lists were last trimmed to.
    evicted: Seq,
}

/// Call aliases remembered at most: a call never replied to (the caller timed out, the server
/// died, the server is not traced) leaves one behind; past this, the older half is forgotten.
const MAX_ALIASES: usize = 1 << 16;

/// The kinds the tag index covers.
pub const TAGGED: KindMask = KindMask(
    (1 << Kind::Send as u32) | (1 << Kind::SendToDead as u32) | (1 << Kind::Receive as u32),
);
/// The kinds the module and function indexes cover.
pub const CALLS: KindMask =
    KindMask((1 << Kind::Call as u32) | (1 << Kind::Return as u32) | (1 << Kind::Exception as u32));

/// Stragglers kept at most (a slot whose memory could not be allocated never becomes ready).
const MAX_STRAGGLERS: usize = 1 << 16;

/// A point in a capture: an event's position, or a monotonic time (events at or before it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    /// Up to and including this seq.
    Seq(Seq),
    /// Up to and including this monotonic time.
    Ts(Timestamp),
}

impl At {
    /// Whether `ev` is at or before this point.
    #[inline]
    pub fn includes(self, ev: &EventRef<'_>) -> bool {
        match self {
            At::Seq(s) => ev.seq <= s,
            At::Ts(t) => ev.header.ts <= t,
        }
    }
}

/// Index lists read rather than built (a segment footer's, see
/// the persistence layer's `SegmentIndex`), in the seqs and keys of the store they index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lists {
    /// `(pid, its events, its state events)`.
    pub pids: Vec<(PidKey, Vec<Seq>, Vec<Seq>)>,
    /// `(pid, the spawn event that created it)`.
    pub spawns: Vec<(PidKey, Seq)>,
    /// `(pid, its exit event)`.
    pub exits: Vec<(PidKey, Seq)>,
    /// `(tag, message events)`.
    pub tags: Vec<(String, Vec<Seq>)>,
    /// `(module, call events)`.
    pub modules: Vec<(u64, Vec<Seq>)>,
    /// `(module, function, call events)`.
    pub functions: Vec<(u64, u64, Vec<Seq>)>,
}

impl Lists {
    /// The lists without their seqs up to `seq` (what an index up to `seq` holds already).
    pub fn after(mut self, seq: Seq) -> Lists {
        let keep = |l: &mut Vec<Seq>| {
            let from = l.partition_point(|&s| s <= seq);
            l.drain(..from);
        };
        for (_, events, states) in &mut self.pids {
            keep(events);
            keep(states);
        }
        self.spawns.retain(|&(_, s)| s > seq);
        self.exits.retain(|&(_, s)| s > seq);
        self.tags.iter_mut().for_each(|(_, l)| keep(l));
        self.modules.iter_mut().for_each(|(_, l)| keep(l));
        self.functions.iter_mut().for_each(|(_, _, l)| keep(l));
        self
    }
}

impl Index {
    /// An empty index.
    pub fn new() -> Index {
        Index::default()
    }

    /// Adds `lists` of events that follow every event indexed so far, and takes the index up
    /// to `upto` (the last seq they cover). The map keys their processes' states changed are
    /// computed from the states when asked, not indexed.
    pub fn append(&mut self, lists: Lists, upto: Seq) {
        // Lists arrive in seq order; two words that became one key may interleave.
        fn extend(list: &mut Vec<Seq>, more: Vec<Seq>) {
            let sorted = list
                .last()
                .is_none_or(|l| more.first().is_none_or(|f| f > l));
            list.extend(more);
            if !sorted {
                list.sort_unstable();
                list.dedup();
            }
        }
        for (pid, events, states) in lists.pids {
            if events.is_empty() {
                continue;
            }
            let p = self.pids.entry(pid).or_default();
            if !states.is_empty() {
                self.keys_unknown.insert(pid);
            }
            extend(&mut p.events, events);
            extend(&mut p.states, states);
        }
        for (pid, seq) in lists.spawns {
            let p = self.pids.entry(pid).or_default();
            p.spawned = Some(p.spawned.map_or(seq, |s| s.max(seq)));
        }
        for (pid, seq) in lists.exits {
            let p = self.pids.entry(pid).or_default();
            p.exit = Some(p.exit.map_or(seq, |s| s.max(seq)));
        }
        for (tag, seqs) in lists.tags.into_iter().filter(|l| !l.1.is_empty()) {
            extend(self.tags.entry(tag.into_boxed_str()).or_default(), seqs);
        }
        for (module, seqs) in lists.modules.into_iter().filter(|l| !l.1.is_empty()) {
            extend(self.modules.entry(module).or_default(), seqs);
        }
        for (module, function, seqs) in lists.functions.into_iter().filter(|l| !l.2.is_empty()) {
            extend(self.functions.entry((module, function)).or_default(), seqs);
        }
        self.inbox_partial = true;
        self.upto = self.upto.max(upto);
    }

    /// The process a send to `peer` (the ETF of a reference or a name) went to: the caller
    /// whose call alias it is (used once: a reply), or the process registered under the name.
    fn resolve(&mut self, peer: &[u8]) -> Option<PidKey> {
        match self.aliases.remove(peer) {
            Some((caller, _)) => Some(caller),
            None => self.names.get(peer).copied(),
        }
    }

    /// Keeps the newer half of the call aliases.
    fn forget_older_aliases(&mut self) {
        let mut seqs: Vec<Seq> = self.aliases.values().map(|&(_, s)| s).collect();
        let half = seqs.len() / 2;
        let (_, &mut median, _) = seqs.select_nth_unstable(half);
        self.aliases.retain(|_, &mut (_, s)| s >= median);
    }

    /// The local process a `send` went to: its peer, or the process whose call alias or
    /// registered name it was sent to.
    pub fn receiver(&self, send: &EventRef<'_>) -> Option<PidKey> {
        if send.header.peer != 0 {
            return Some(send.header.peer);
        }
        self.resolved
            .iter()
            .find(|(_, seqs)| seqs.binary_search(&send.seq).is_ok())
            .map(|(pid, _)| *pid)
    }

    /// The `send` events that named something else than these processes' pids but went to
    /// them (to a call alias: a reply; to a registered name), sorted: what a `peer` condition
    /// on them also takes.
    pub fn resolved_sends(&self, pids: &[PidKey]) -> Vec<Seq> {
        let mut out: Vec<Seq> = pids
            .iter()
            .filter_map(|p| self.resolved.get(p))
            .flatten()
            .copied()
            .collect();
        out.sort_unstable();
        out
    }

    /// Whether every indexed `send` to a local process is in that process's inbox: false once
    /// lists read from segment footers (a paged trace) were appended, which do not say whom a
    /// message went to.
    pub fn inbox_complete(&self) -> bool {
        !self.inbox_partial
    }

    /// Takes the index up to `seq` with nothing to add: the seqs up to it are not in the
    /// store (a paged store's, before the trace it follows starts).
    pub fn skip_to(&mut self, seq: Seq) {
        self.upto = self.upto.max(seq);
    }

    /// Adds the events published since the last call. O(new events + stragglers).
    pub fn catch_up(&mut self, log: &CaptureLog) {
        if log.is_ring() {
            self.trim(log.evicted_upto());
        }
        let waiting = std::mem::take(&mut self.stragglers);
        for seq in waiting {
            match log.get(seq) {
                Some(ev) => {
                    if ev.header.kind() == Some(Kind::State) {
                        self.keys_unknown.insert(ev.header.pid);
                    }
                    self.add_late(&ev)
                }
                None => self.stragglers.push(seq),
            }
        }
        let top = log.published_seq();
        for seq in self.upto.saturating_add(1)..=top {
            match log.get(seq) {
                Some(ev) => {
                    self.add(&ev);
                    if ev.header.kind() == Some(Kind::State) && ev.header.pid != 0 {
                        self.add_key_changes(log, &ev);
                    }
                }
                // A loaded store's holes never fill; anything else may still come (an event
                // being written, or one a pager cannot read yet): a straggler.
                None if log.is_loaded() && log.is_hole(seq) => {}
                None if self.stragglers.len() < MAX_STRAGGLERS => self.stragglers.push(seq),
                None => {}
            }
        }
        self.upto = self.upto.max(top);
    }

    /// Forgets the events up to `evicted` (gone from a ring-mode log), each eighth of the log's
    /// budget at once: O(index), once per eviction. Processes left with no event are forgotten;
    /// the others are marked as having lost events.
    fn trim(&mut self, evicted: Seq) {
        if evicted <= self.evicted {
            return;
        }
        self.evicted = evicted;
        self.upto = self.upto.max(evicted);
        let keep = |l: &mut Vec<Seq>| {
            let from = l.partition_point(|&s| s <= evicted);
            l.drain(..from);
            from > 0
        };
        self.stragglers.retain(|&s| s > evicted);
        self.pids.retain(|_, p| {
            let lost = keep(&mut p.events) | keep(&mut p.states) | keep(&mut p.inbox);
            p.evicted |= lost;
            p.spawned = p.spawned.filter(|&s| s > evicted);
            p.exit = p.exit.filter(|&s| s > evicted);
            !(p.events.is_empty() && p.states.is_empty() && p.inbox.is_empty())
                || p.spawned.is_some()
                || p.exit.is_some()
        });
        fn keep_lists<K>(map: &mut HashMap<K, Vec<Seq>>, evicted: Seq) {
            map.retain(|_, l| {
                let from = l.partition_point(|&s| s <= evicted);
                l.drain(..from);
                !l.is_empty()
            });
        }
        keep_lists(&mut self.tags, evicted);
        keep_lists(&mut self.modules, evicted);
        keep_lists(&mut self.functions, evicted);
        keep_lists(&mut self.resolved, evicted);
        self.state_keys.retain(|_, keys| {
            keep_lists(keys, evicted);
            !keys.is_empty()
        });
        self.aliases.retain(|_, &mut (_, s)| s > evicted);
        let pids = &self.pids;
        self.keys_unknown.retain(|p| pids.contains_key(p));
    }

    /// Whether `pid`'s events before its first one here may have been evicted: the log evicted
    /// some events and the process lost some, or is not known (all of its were).
    pub fn evicted(&self, pid: PidKey) -> bool {
        self.evicted > 0 && self.pids.get(&pid).is_none_or(|p| p.evicted)
    }

    /// The index of `pid`, made when new: one first seen after an eviction may have lost
    /// events to it.
    fn entry(&mut self, pid: PidKey) -> &mut PidIndex {
        let evicted = self.evicted > 0;
        self.pids.entry(pid).or_insert_with(|| PidIndex {
            evicted,
            ..PidIndex::default()
        })
    }

    /// Adds an event older than some already indexed: inserted in seq order.
    fn add_late(&mut self, ev: &EventRef<'_>) {
        self.add_with(ev, |list, seq| {
            let i = list.partition_point(|&s| s < seq);
            list.insert(i, seq);
        });
    }

    /// Adds an event newer than every one indexed.
    fn add(&mut self, ev: &EventRef<'_>) {
        self.add_with(ev, |list, seq| list.push(seq));
    }

    /// Adds `ev` to every list it belongs in, with `push` (in order either way).
    fn add_with(&mut self, ev: &EventRef<'_>, push: impl Fn(&mut Vec<Seq>, Seq)) {
        let h = &ev.header;
        if h.pid != 0 {
            let p = self.entry(h.pid);
            push(&mut p.events, ev.seq);
            match h.kind() {
                Some(Kind::State) => push(&mut p.states, ev.seq),
                Some(Kind::Exit) => p.exit = Some(p.exit.map_or(ev.seq, |e| e.max(ev.seq))),
                _ => {}
            }
        }
        match h.kind() {
            Some(Kind::Spawn) if h.peer != 0 => {
                // Its first event: nothing of it came before, evicted or not.
                let p = self.pids.entry(h.peer).or_default();
                p.spawned = Some(p.spawned.map_or(ev.seq, |s| s.max(ev.seq)));
            }
            Some(Kind::Send) => {
                if h.peer != 0 {
                    push(&mut self.entry(h.peer).inbox, ev.seq);
                } else if let Some(to) = ev.peer_term().and_then(|p| self.resolve(p)) {
                    push(&mut self.entry(to).inbox, ev.seq);
                    push(self.resolved.entry(to).or_default(), ev.seq);
                }
                if let Some(alias) = ev.data_prefix().and_then(call_alias) {
                    if self.aliases.len() >= MAX_ALIASES {
                        self.forget_older_aliases();
                    }
                    self.aliases.insert(alias.into(), (h.pid, ev.seq));
                }
            }
            Some(Kind::Register) => {
                if let Some(name) = ev.data().filter(|n| is_atom(n)) {
                    self.names.insert(name.into(), h.pid);
                }
            }
            Some(Kind::Unregister) => {
                if let Some(name) = ev.data() {
                    if self.names.get(name) == Some(&h.pid) {
                        self.names.remove(name);
                    }
                }
            }
            Some(Kind::Traced) => {
                let name = ev.data().and_then(|d| etf::tuple_elements(d, 0));
                if let Some([_, name]) = name.as_deref() {
                    if is_atom(name) && etf::atom_name(name, 0) != Some("nil") {
                        self.names.insert((*name).into(), h.pid);
                    }
                }
            }
            _ => {}
        }
        self.add_content(ev, push);
    }

    /// Adds `ev` to the tag, module and function indexes with `push`.
    fn add_content(&mut self, ev: &EventRef<'_>, push: impl Fn(&mut Vec<Seq>, Seq)) {
        let h = &ev.header;
        let Some(kind) = h.kind() else { return };
        if TAGGED.contains(kind) {
            if let Some(tag) = ev.tag() {
                match self.tags.get_mut(tag) {
                    Some(list) => push(list, ev.seq),
                    None => {
                        self.tags.insert(tag.into(), vec![ev.seq]);
                    }
                }
            }
        } else if CALLS.contains(kind) && h.module != 0 {
            push(self.modules.entry(h.module).or_default(), ev.seq);
            push(
                self.functions.entry((h.module, h.function)).or_default(),
                ev.seq,
            );
        }
    }

    /// Indexes the keys `ev` (a state event just added) changed from the process's previous state.
    fn add_key_changes(&mut self, log: &CaptureLog, ev: &EventRef<'_>) {
        let pid = ev.header.pid;
        if self.keys_unknown.contains(&pid) {
            return;
        }
        let states = &self.pids[&pid].states;
        let before = states.len().checked_sub(2).and_then(|i| log.get(states[i]));
        // States stored as deltas, resolved (see `capture::delta`).
        let (mut b, mut a) = (Vec::new(), Vec::new());
        let before = before.as_ref().and_then(|p| delta::data(log, p, &mut b));
        match changed_keys(before, delta::data(log, ev, &mut a)) {
            Some(keys) => {
                let of_pid = self.state_keys.entry(pid).or_default();
                for key in keys {
                    match of_pid.get_mut(key) {
                        Some(list) => list.push(ev.seq),
                        None => {
                            of_pid.insert(key.into(), vec![ev.seq]);
                        }
                    }
                }
            }
            None => {
                self.keys_unknown.insert(pid);
            }
        }
    }

    /// Bytes the index's lists hold (seqs and keys; hash-table overhead aside).
    pub fn heap_bytes(&self) -> usize {
        let seqs = |l: &Vec<Seq>| l.capacity() * std::mem::size_of::<Seq>();
        self.pids
            .values()
            .map(|p| seqs(&p.events) + seqs(&p.states) + seqs(&p.inbox))
            .sum::<usize>()
            + self.resolved.values().map(seqs).sum::<usize>()
            + self.aliases.keys().map(|k| k.len() + 24).sum::<usize>()
            + self.names.keys().map(|k| k.len() + 16).sum::<usize>()
            + self
                .tags
                .iter()
                .map(|(k, l)| k.len() + seqs(l))
                .sum::<usize>()
            + self.modules.values().map(seqs).sum::<usize>()
            + self.functions.values().map(seqs).sum::<usize>()
            + self
                .state_keys
                .values()
                .flat_map(|keys| keys.iter())
                .map(|(k, l)| k.len() + seqs(l))
                .sum::<usize>()
    }

    /// Message events whose message has this tag, in seq order.
    pub fn tag(&self, tag: &str) -> &[Seq] {
        self.tags.get(tag).map_or(&[], |l| l.as_slice())
    }

    /// Call, return and exception events of `module` (and `function`, when given), in order.
    pub fn calls(&self, module: u64, function: Option<u64>) -> &[Seq] {
        let list = match function {
            Some(f) => self.functions.get(&(module, f)),
            None => self.modules.get(&module),
        };
        list.map_or(&[], |l| l.as_slice())
    }

    /// The index of one process.
    pub fn pid(&self, pid: PidKey) -> Option<&PidIndex> {
        self.pids.get(&pid)
    }

    /// Every process the index has seen.
    pub fn pids(&self) -> impl Iterator<Item = (&PidKey, &PidIndex)> {
        self.pids.iter()
    }

    /// The seq the index is complete up to.
    pub fn upto(&self) -> Seq {
        self.upto
    }
}

/// Whether an encoding is an atom's.
fn is_atom(t: &[u8]) -> bool {
    t.first().is_some_and(|&t| etf::is_atom_tag(t))
}

/// The reply alias a call message names: the ETF of `ref` in
/// `{:"$gen_call", {pid, [:alias | ref]}, request}`. `msg` may be cut after the `from` (a
/// payload over the cap keeps its first bytes).
fn call_alias(msg: &[u8]) -> Option<&[u8]> {
    let (3, first) = etf::tuple_header(msg, 0)? else {
        return None;
    };
    if etf::atom_name(msg, first) != Some("$gen_call") {
        return None;
    }
    let at = etf::skip(msg, first)?;
    let from = etf::tuple_elements(msg.get(at..etf::skip(msg, at)?)?, 0)?;
    let (tag, tail) = etf::list_elements(from.get(1)?, 0)?;
    (from.len() == 2 && tag.len() == 1 && etf::atom_name(tag[0], 0) == Some("alias"))
        .then_some(tail)
        .filter(|t| t.first().is_some_and(|&t| etf::is_reference_tag(t)))
}

/// Most keys a map state may have for its changes to be indexed.
const MAX_INDEXED_KEYS: usize = 64;

/// The atom keys whose value differs between two map states (`before` absent: every key),
/// including keys one of them lacks; `None` when a state is not a map with atom keys of at most
/// [`MAX_INDEXED_KEYS`] keys, or is missing (truncated).
pub fn changed_keys<'a>(before: Option<&'a [u8]>, after: Option<&'a [u8]>) -> Option<Vec<&'a str>> {
    let entries = |b: &'a [u8]| -> Option<Vec<(&'a str, &'a [u8])>> {
        if *b.first()? != 116 {
            return None;
        }
        let n = etf::u32_at(b, 1)?;
        if n > MAX_INDEXED_KEYS {
            return None;
        }
        let mut out = Vec::with_capacity(n);
        let mut p = 5;
        for _ in 0..n {
            let k_end = etf::skip(b, p)?;
            let v_end = etf::skip(b, k_end)?;
            out.push((etf::atom_name(b, p)?, &b[k_end..v_end]));
            p = v_end;
        }
        Some(out)
    };
    let after = entries(after?)?;
    let before = match before {
        Some(b) => entries(b)?,
        None => Vec::new(),
    };
    let find = |list: &[(&'a str, &'a [u8])], k: &str| list.iter().find(|e| e.0 == k).map(|e| e.1);
    let mut out: Vec<&str> = after
        .iter()
        .filter(|(k, v)| find(&before, k) != Some(v))
        .map(|(k, _)| *k)
        .collect();
    out.extend(
        before
            .iter()
            .filter(|(k, _)| find(&after, k).is_none())
            .map(|(k, _)| *k),
    );
    Some(out)
}

/// `ev` as readers see it, given its bytes resolved when it is a delta (`own`).
fn whole_view<'b>(ev: &EventRef<'b>, own: &'b Option<Vec<u8>>) -> EventRef<'b> {
    match own {
        Some(bytes) => {
            let mut w = EventRef {
                payload: bytes,
                ..*ev
            };
            w.header.flags &= !(crate::formats::event::flags::STATE_DELTA
                | crate::formats::event::flags::PAYLOAD_DROPPED);
            w
        }
        None => *ev,
    }
}

/// The state events of `pid` at which map key `key` changed (was added, changed or removed),
/// in order: from the key index, or, for a process it could not index, from its states.
pub fn key_changes(log: &CaptureLog, idx: &Index, pid: PidKey, key: &str) -> Vec<Seq> {
    if !idx.keys_unknown.contains(&pid) {
        return idx
            .state_keys
            .get(&pid)
            .and_then(|keys| keys.get(key))
            .cloned()
            .unwrap_or_default();
    }
    let Some(p) = idx.pid(pid) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    // The previous state, with its bytes when stored as a delta (see `capture::delta`).
    let mut before: Option<(EventRef, Option<Vec<u8>>)> = None;
    for &seq in &p.states {
        let Some(ev) = log.get(seq) else { continue };
        let own = delta::is_delta(&ev)
            .then(|| {
                let mut b = Vec::new();
                delta::resolve(log, &ev, &mut b).then_some(b)
            })
            .flatten();
        let changed = {
            let cur = whole_view(&ev, &own);
            let prev = before.as_ref().map(|(e, o)| whole_view(e, o));
            match changed_keys(prev.as_ref().and_then(|p| p.data()), cur.data()) {
                Some(keys) => keys.contains(&key),
                // Not diffable (not a map, too large, truncated): a change if the bytes differ.
                None => prev.is_none_or(|b| b.payload != cur.payload),
            }
        };
        if changed {
            out.push(seq);
        }
        before = Some((ev, own));
    }
    out
}

/// How many entries of `list` (seqs of one process, in order) are at or before `at`. A
/// process's events are written one after the other by the process itself, so their times are
/// ordered too and both bounds are a binary search.
pub fn count_upto(log: &CaptureLog, list: &[Seq], at: At) -> usize {
    match at {
        At::Seq(s) => list.partition_point(|&x| x <= s),
        At::Ts(t) => list.partition_point(|&x| log.get(x).is_some_and(|e| e.header.ts <= t)),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::capture::log::Limits;
    use crate::formats::event::Header;

    #[test]
    fn key_changes_of_map_states_from_the_index_and_from_a_scan() {
        use crate::formats::etf::build::{atom, int};
        let log = CaptureLog::new(Limits {
            max_events: 100,
            max_bytes: 4096,
        });
        let map = |pairs: &[(&str, u8)]| {
            let mut v = vec![131, 116, 0, 0, 0, pairs.len() as u8];
            for (k, n) in pairs {
                v.extend(atom(k));
                v.extend(int(*n));
            }
            v
        };
        let state = |pid, payload: &[u8]| {
            log.append(
                &Header {
                    pid,
                    kind: Kind::State as u8,
                    ..Header::default()
                },
                payload,
            );
        };
        state(1, &map(&[("a", 1), ("b", 1)])); // 1: both keys appear
        state(1, &map(&[("a", 2), ("b", 1)])); // 2: a
        state(2, &[131, 97, 7]); // 3: not a map
        state(1, &map(&[("a", 2), ("b", 1)])); // 4: nothing
        let mut idx = Index::new();
        idx.catch_up(&log);
        state(1, &map(&[("b", 1)])); // 5: a removed
        state(1, &map(&[("a", 3), ("b", 1)])); // 6: a back
        state(2, &[131, 97, 8]); // 7
        idx.catch_up(&log);
        assert_eq!(key_changes(&log, &idx, 1, "a"), vec![1, 2, 5, 6]);
        assert_eq!(key_changes(&log, &idx, 1, "b"), vec![1]);
        assert!(key_changes(&log, &idx, 1, "c").is_empty());
        // A process that is not diffable falls back to comparing whole states.
        assert_eq!(key_changes(&log, &idx, 2, "a"), vec![3, 7]);
        // The scan gives what the index gives.
        idx.keys_unknown.insert(1);
        assert_eq!(key_changes(&log, &idx, 1, "a"), vec![1, 2, 5, 6]);
        assert_eq!(key_changes(&log, &idx, 1, "b"), vec![1]);
    }

    /// Six events of two processes, indexed: receives of `{:inc, 1}` (1, 2), a send of `:stop`
    /// (3), calls of modules 7 (4, 5) and 9 (6), a function being its module's word plus one.
    pub(crate) fn tagged_log() -> (CaptureLog, Index) {
        let log = CaptureLog::new(Limits {
            max_events: 100,
            max_bytes: 4096,
        });
        let add = |pid, kind: Kind, module, payload: &[u8]| {
            log.append(
                &Header {
                    pid,
                    kind: kind as u8,
                    module,
                    function: module + 1,
                    ..Header::default()
                },
                payload,
            );
        };
        let inc = [131, 104, 2, 119, 3, b'i', b'n', b'c', 97, 1];
        let stop = [131, 119, 4, b's', b't', b'o', b'p'];
        add(1, Kind::Receive, 0, &inc); // 1
        add(2, Kind::Receive, 0, &inc); // 2
        add(2, Kind::Send, 0, &stop); // 3
        add(2, Kind::Call, 7, b""); // 4
        add(2, Kind::Return, 7, b""); // 5
        add(1, Kind::Call, 9, b""); // 6
        let mut idx = Index::new();
        idx.catch_up(&log);
        (log, idx)
    }

    #[test]
    fn tags_and_functions_are_indexed() {
        let (_log, idx) = tagged_log();
        assert_eq!(idx.tag("inc"), &[1, 2]);
        assert_eq!(idx.tag("stop"), &[3]);
        assert!(idx.tag("nope").is_empty());
        assert_eq!(idx.calls(7, None), &[4, 5]);
        // Six events per process list, two tags' lists and two call lists at least.
        assert!(idx.heap_bytes() >= (6 + 3 + 2 + 2) * 8);
        assert_eq!(idx.calls(7, Some(8)), &[4, 5]);
        assert!(idx.calls(7, Some(9)).is_empty());
    }

    #[test]
    fn indexes_events_states_spawns_and_exits_incrementally() {
        let log = CaptureLog::new(Limits {
            max_events: 100,
            max_bytes: 1024,
        });
        let add = |pid, peer, kind: Kind, ts| {
            log.append(
                &Header {
                    ts,
                    pid,
                    peer,
                    kind: kind as u8,
                    ..Header::default()
                },
                b"",
            );
        };
        add(1, 2, Kind::Spawn, 10);
        add(2, 0, Kind::State, 11);
        let mut idx = Index::new();
        idx.catch_up(&log);
        add(2, 0, Kind::State, 12);
        add(2, 0, Kind::Exit, 13);
        idx.catch_up(&log);
        let p = idx.pid(2).unwrap();
        assert_eq!(p.events, vec![2, 3, 4]);
        assert_eq!(p.states, vec![2, 3]);
        assert_eq!((p.spawned, p.exit), (Some(1), Some(4)));
        assert_eq!(idx.pid(1).unwrap().events, vec![1]);
        assert_eq!(count_upto(&log, &p.states, At::Seq(2)), 1);
        assert_eq!(count_upto(&log, &p.states, At::Ts(12)), 2);
        assert_eq!(count_upto(&log, &p.states, At::Ts(5)), 0);
        assert_eq!(idx.upto(), 4);
    }

    #[test]
    fn late_events_are_inserted_in_order() {
        let log = CaptureLog::new(Limits {
            max_events: 10_000,
            max_bytes: 1 << 16,
        });
        let h = |pid| Header {
            pid,
            kind: Kind::Send as u8,
            ..Header::default()
        };
        // Seq 1 is reserved by a writer that stalls; 5,000 events are appended meanwhile, so
        // the index moves past it.
        let stalled = log.reserve_for_test();
        for _ in 0..5_000 {
            log.append(&h(1), b"");
        }
        let mut idx = Index::new();
        idx.catch_up(&log);
        assert_eq!(idx.pid(1).unwrap().events.first(), Some(&2));
        log.publish_for_test(stalled, &h(1));
        idx.catch_up(&log);
        let events = &idx.pid(1).unwrap().events;
        assert_eq!(events.len(), 5_001);
        assert!(events.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(events[0], 1);
    }
}
