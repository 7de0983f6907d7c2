//! Event filters evaluated over the capture log, so only matching events leave the core.
//!
//! Layer 5, query, also holds the content matcher, the time-travel queries and the
//! aggregations, in modules of their own.

pub mod aggregate;
pub mod history;
pub mod matcher;

use crate::capture::log::CaptureLog;
use crate::formats::event::{AtomKey, EventRef, KindMask, PidKey, Seq, Timestamp};
use crate::index::{Index, CALLS, TAGGED};
use crate::reader::Reader;

/// Which events a query wants. Every field left at its default matches everything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    /// The event happened in one of these processes (empty: any).
    pub pids: Vec<PidKey>,
    /// The event's peer is one of these processes (empty: any).
    pub peers: Vec<PidKey>,
    /// The event's pid or its peer is one of these processes (empty: any).
    pub involving: Vec<PidKey>,
    /// Events that also count as having a peer in `peers`, sorted: replies sent to those
    /// processes' call aliases or registered names (see [`resolve_peers`]).
    pub peer_seqs: Vec<Seq>,
    /// The same for `involving`.
    pub involving_seqs: Vec<Seq>,
    /// The event's kind is in this set.
    pub kinds: KindMask,
    /// Module of a call/return/exception.
    pub module: Option<AtomKey>,
    /// Function of a call/return/exception.
    pub function: Option<AtomKey>,
    /// Arity of a call/return/exception.
    pub arity: Option<u8>,
    /// `ts >= since`.
    pub since: Option<Timestamp>,
    /// `ts <= until`.
    pub until: Option<Timestamp>,
    /// `seq > after_seq`.
    pub after_seq: Seq,
    /// `seq < before_seq`.
    pub before_seq: Option<Seq>,
    /// Newest first instead of oldest first.
    pub descending: bool,
    /// At most this many events.
    pub limit: usize,
    /// When not empty, the event must also match one of these (their seq bounds, order and
    /// limit are not used).
    pub any: Vec<Filter>,
    /// The event must match none of these (seq bounds, order and limit not used).
    pub none: Vec<Filter>,
}

impl Default for Filter {
    fn default() -> Self {
        Filter {
            pids: Vec::new(),
            peers: Vec::new(),
            involving: Vec::new(),
            peer_seqs: Vec::new(),
            involving_seqs: Vec::new(),
            kinds: KindMask::ALL,
            module: None,
            function: None,
            arity: None,
            since: None,
            until: None,
            after_seq: 0,
            before_seq: None,
            descending: false,
            limit: usize::MAX,
            any: Vec::new(),
            none: Vec::new(),
        }
    }
}

impl Filter {
    /// Whether `ev` passes every condition (seq bounds and limit are applied by [`run`]).
    #[inline]
    pub fn matches(&self, ev: &EventRef<'_>) -> bool {
        let h = &ev.header;
        let Some(kind) = h.kind() else { return false };
        self.kinds.contains(kind)
            && (self.pids.is_empty() || self.pids.contains(&h.pid))
            && (self.peers.is_empty()
                || self.peers.contains(&h.peer_pid())
                || self.peer_seqs.binary_search(&ev.seq).is_ok())
            && (self.involving.is_empty()
                || self.involving.contains(&h.pid)
                || self.involving.contains(&h.peer_pid())
                || self.involving_seqs.binary_search(&ev.seq).is_ok())
            && self.module.is_none_or(|m| m == h.module)
            && self.function.is_none_or(|f| f == h.function)
            && self.arity.is_none_or(|a| a == h.arity)
            && self.since.is_none_or(|t| h.ts >= t)
            && self.until.is_none_or(|t| h.ts <= t)
            && ((self.any.is_empty() && self.none.is_empty()) || self.composed(ev))
    }

    /// The `any` and `none` conditions.
    #[inline(never)]
    fn composed(&self, ev: &EventRef<'_>) -> bool {
        (self.any.is_empty() || self.any.iter().any(|f| f.matches(ev)))
            && !self.none.iter().any(|f| f.matches(ev))
    }
}

/// Runs `f` with the shortest index list covering `filter` (see [`candidates`]), or `None` when
/// the log must be scanned, the reader's index caught up and held meanwhile; `filter`'s process
/// conditions are first completed with the sends that named those processes otherwise (see
/// [`resolve_peers`]). The planning every query goes through.
pub fn plan<R>(
    reader: &Reader,
    filter: &mut Filter,
    tag: Option<&str>,
    f: impl FnOnce(&Filter, Option<&[Seq]>) -> R,
) -> R {
    let idx = reader.index();
    resolve_peers(&idx, filter);
    let best = candidates(&idx, filter, tag);
    let events = reader.log().last_seq() - reader.log().first_seq().saturating_sub(1);
    match pids_union(&idx, filter, best.map_or(events / 2, |b| b.len() as u64)) {
        Some(union) => f(filter, Some(&union)),
        None => f(filter, best),
    }
}

/// Processes a filter's `pids` may list for their index lists to be merged (past this, the
/// merge would cost about what it saves).
const MAX_UNION_PIDS: usize = 256;

/// The events of `filter`'s processes, merged from their index lists, when it names from 2 to
/// [`MAX_UNION_PIDS`] of them and they have fewer than `shorter_than` events together: what a
/// query of a few processes walks instead of the whole log (an event has one process, so the
/// lists are disjoint).
pub fn pids_union(idx: &Index, filter: &Filter, shorter_than: u64) -> Option<Vec<Seq>> {
    if !(2..=MAX_UNION_PIDS).contains(&filter.pids.len()) {
        return None;
    }
    let lists: Vec<&[Seq]> = filter
        .pids
        .iter()
        .map(|&p| idx.pid(p).map_or(&[][..], |p| p.events.as_slice()))
        .collect();
    let total: usize = lists.iter().map(|l| l.len()).sum();
    if total as u64 >= shorter_than {
        return None;
    }
    let mut union = Vec::with_capacity(total);
    for l in lists {
        union.extend_from_slice(l);
    }
    union.sort_unstable();
    union.dedup();
    Some(union)
}

/// Completes `filter`'s `peers` and `involving` conditions (and those of the filters inside it)
/// with the sends to those processes' call aliases and registered names, which name a
/// reference or an atom, not the process, as their peer.
pub fn resolve_peers(idx: &Index, filter: &mut Filter) {
    if !filter.peers.is_empty() {
        filter.peer_seqs = idx.resolved_sends(&filter.peers);
    }
    if !filter.involving.is_empty() {
        filter.involving_seqs = idx.resolved_sends(&filter.involving);
    }
    for f in filter.any.iter_mut().chain(filter.none.iter_mut()) {
        resolve_peers(idx, f);
    }
}

/// The shortest index list holding every event `filter` can match (and, with `tag`, every
/// message event with that tag), or `None` when no index applies and the log must be scanned:
/// the one process's events, the tag's message events (when only message kinds are wanted),
/// or the function's call events (when only call kinds are wanted).
pub fn candidates<'i>(idx: &'i Index, filter: &Filter, tag: Option<&str>) -> Option<&'i [Seq]> {
    let only = |mask: KindMask| filter.kinds.0 & !mask.0 == 0;
    let mut best: Option<&[Seq]> = None;
    let mut consider = |list: &'i [Seq]| {
        if best.is_none_or(|b| list.len() < b.len()) {
            best = Some(list);
        }
    };
    if let [pid] = filter.pids[..] {
        consider(idx.pid(pid).map_or(&[], |p| p.events.as_slice()));
    }
    if let Some(tag) = tag.filter(|_| only(TAGGED)) {
        consider(idx.tag(tag));
    }
    if let Some(m) = filter.module.filter(|_| only(CALLS)) {
        consider(idx.calls(m, filter.function));
    }
    best
}

/// The result of [`run`]: matching events, and where a follow-up page starts.
#[derive(Debug)]
pub struct Page<'a> {
    /// The matches, in the requested order.
    pub events: Vec<EventRef<'a>>,
    /// How many seqs were examined (for callers that split work into chunks).
    pub scanned: u64,
}

/// Scans the log for events matching `filter`, in the filter's order, stopping at its limit or
/// after examining `budget` events (so a caller on a normal scheduler can bound its time and resume
/// with `after_seq`/`before_seq` set from the last seq examined).
pub fn run<'a>(log: &'a CaptureLog, filter: &Filter, budget: u64) -> Page<'a> {
    collect(filter, |visit| scan(log, filter, budget, visit))
}

/// Like [`run`], but over the given seqs only (sorted ascending, e.g. one process's events from
/// the index) instead of the whole log: the same answer when every matching event is among them.
pub fn run_on<'a>(log: &'a CaptureLog, seqs: &[Seq], filter: &Filter) -> Page<'a> {
    collect(filter, |visit| scan_on(log, seqs, filter, visit))
}

/// [`run_on`] over `seqs` when given (an index list), else [`run`] over the whole log.
pub fn run_in<'a>(log: &'a CaptureLog, seqs: Option<&[Seq]>, filter: &Filter) -> Page<'a> {
    match seqs {
        Some(seqs) => run_on(log, seqs, filter),
        None => run(log, filter, u64::MAX),
    }
}

/// Up to the filter's limit of the events `scan` visits.
fn collect<'a>(
    filter: &Filter,
    scan: impl FnOnce(&mut dyn FnMut(&EventRef<'a>) -> bool) -> u64,
) -> Page<'a> {
    let mut events = Vec::new();
    if filter.limit == 0 {
        return Page { events, scanned: 0 };
    }
    let scanned = scan(&mut |ev| {
        events.push(*ev);
        events.len() < filter.limit
    });
    Page { events, scanned }
}

/// The seq bounds a filter allows, up to the published mark (so a later page, after the last seq
/// seen, misses nothing).
fn bounds(log: &CaptureLog, filter: &Filter) -> (Seq, Seq) {
    let top = log.published_seq();
    // (A paged log's seqs may start past 1.)
    let lo = filter.after_seq.saturating_add(1).max(log.first_seq());
    let hi = filter
        .before_seq
        .map_or(top, |b| b.saturating_sub(1).min(top));
    (lo, hi)
}

/// Calls `visit` with each event matching `filter` (its limit aside), in the filter's order,
/// until `visit` answers false or `budget` events were examined. Returns how many were examined.
pub fn scan<'a>(
    log: &'a CaptureLog,
    filter: &Filter,
    budget: u64,
    visit: &mut dyn FnMut(&EventRef<'a>) -> bool,
) -> u64 {
    let (lo, hi) = bounds(log, filter);
    let mut scanned = 0u64;
    if lo > hi {
        return 0;
    }
    let mut step = |seq: Seq| -> bool {
        scanned += 1;
        if let Some(ev) = log.get(seq) {
            if filter.matches(&ev) && !visit(&ev) {
                return false;
            }
        }
        scanned < budget
    };
    if filter.descending {
        for seq in (lo..=hi).rev() {
            if !step(seq) {
                break;
            }
        }
    } else {
        for seq in lo..=hi {
            if !step(seq) {
                break;
            }
        }
    }
    scanned
}

/// [`scan_on`] over `seqs` when given (an index list), else [`scan`] of the whole log.
pub fn scan_in<'a>(
    log: &'a CaptureLog,
    seqs: Option<&[Seq]>,
    filter: &Filter,
    visit: &mut dyn FnMut(&EventRef<'a>) -> bool,
) -> u64 {
    match seqs {
        Some(seqs) => scan_on(log, seqs, filter, visit),
        None => scan(log, filter, u64::MAX, visit),
    }
}

/// [`scan`] over the given seqs only (sorted ascending).
pub fn scan_on<'a>(
    log: &'a CaptureLog,
    seqs: &[Seq],
    filter: &Filter,
    visit: &mut dyn FnMut(&EventRef<'a>) -> bool,
) -> u64 {
    let (lo, hi) = bounds(log, filter);
    let start = seqs.partition_point(|&s| s < lo);
    let end = seqs.partition_point(|&s| s <= hi);
    let mut scanned = 0u64;
    if start >= end {
        return 0;
    }
    let window = &seqs[start..end];
    let mut step = |seq: Seq| -> bool {
        scanned += 1;
        match log.get(seq) {
            Some(ev) if filter.matches(&ev) => visit(&ev),
            _ => true,
        }
    };
    if filter.descending {
        for &s in window.iter().rev() {
            if !step(s) {
                break;
            }
        }
    } else {
        for &s in window {
            if !step(s) {
                break;
            }
        }
    }
    scanned
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::log::Limits;
    use crate::formats::event::{Header, Kind};
    use proptest::prelude::*;

    #[test]
    fn a_query_walks_the_shortest_index_list_that_covers_it() {
        let (_log, idx) = crate::index::tests::tagged_log();
        let receives = Filter {
            kinds: KindMask::of(&[Kind::Receive]),
            ..Filter::default()
        };
        assert_eq!(candidates(&idx, &receives, Some("stop")), Some(&[3][..]));
        // Pid 2's four events against the tag's two: the tag wins.
        let pid2 = Filter {
            pids: vec![2],
            ..receives.clone()
        };
        assert_eq!(candidates(&idx, &pid2, Some("inc")), Some(&[1, 2][..]));
        // Any kind: the tag index does not cover every event, so only the pid's list applies.
        let any = Filter {
            pids: vec![2],
            ..Filter::default()
        };
        assert_eq!(candidates(&idx, &any, Some("inc")), Some(&[2, 3, 4, 5][..]));
        assert_eq!(candidates(&idx, &Filter::default(), None), None);
        let calls = Filter {
            kinds: CALLS,
            module: Some(9),
            ..Filter::default()
        };
        assert_eq!(candidates(&idx, &calls, None), Some(&[6][..]));
    }

    #[test]
    fn a_query_of_a_few_processes_walks_their_merged_index_lists() {
        let (_log, idx) = crate::index::tests::tagged_log();
        let both = Filter {
            pids: vec![1, 2, 3],
            ..Filter::default()
        };
        // Pid 1's events (1, 6) and pid 2's (2..5); pid 3 has none.
        assert_eq!(pids_union(&idx, &both, 100), Some(vec![1, 2, 3, 4, 5, 6]));
        // Not shorter than what the query would walk anyway: no merge.
        assert_eq!(pids_union(&idx, &both, 6), None);
        let one = Filter {
            pids: vec![2],
            ..Filter::default()
        };
        assert_eq!(pids_union(&idx, &one, 100), None);
        let many = Filter {
            pids: (0..=MAX_UNION_PIDS as u64).collect(),
            ..Filter::default()
        };
        assert_eq!(pids_union(&idx, &many, 100), None);
    }

    fn log_of(evs: &[(u64, u64, Kind, i64)]) -> CaptureLog {
        let log = CaptureLog::new(Limits {
            max_events: 10_000,
            max_bytes: 1 << 16,
        });
        for &(pid, peer, kind, ts) in evs {
            log.append(
                &Header {
                    ts,
                    pid,
                    peer,
                    kind: kind as u8,
                    module: pid % 3,
                    ..Header::default()
                },
                b"",
            );
        }
        log
    }

    #[test]
    fn a_var_events_call_seq_is_never_taken_for_a_peer_process() {
        // Pid word 3 receives; a :var event whose call seq is also 3.
        let log = log_of(&[(1, 3, Kind::Send, 10), (1, 3, Kind::Var, 11)]);
        let to_3 = |f: Filter| {
            run(&log, &f, u64::MAX)
                .events
                .iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            to_3(Filter {
                peers: vec![3],
                ..Filter::default()
            }),
            vec![1]
        );
        assert_eq!(
            to_3(Filter {
                involving: vec![3],
                ..Filter::default()
            }),
            vec![1]
        );
        let by_peer = crate::query::aggregate::count(
            &log,
            None,
            &Filter::default(),
            crate::query::aggregate::GroupBy::Peer,
            &mut |_| true,
        );
        assert_eq!(
            by_peer,
            vec![
                (crate::query::aggregate::Key::Word(0), 1),
                (crate::query::aggregate::Key::Word(3), 1)
            ]
        );
    }

    #[test]
    fn any_and_none_compose_filters() {
        let log = log_of(&[
            (1, 2, Kind::Send, 10),
            (2, 0, Kind::Receive, 11),
            (1, 3, Kind::Send, 12),
            (3, 0, Kind::Exit, 13),
        ]);
        let seqs = |f: &Filter| {
            run(&log, f, u64::MAX)
                .events
                .iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>()
        };
        // (pid 2) or (kind exit), but not (ts 11).
        let f = Filter {
            any: vec![
                Filter {
                    pids: vec![2],
                    ..Filter::default()
                },
                Filter {
                    kinds: KindMask::of(&[Kind::Exit]),
                    ..Filter::default()
                },
            ],
            ..Filter::default()
        };
        assert_eq!(seqs(&f), vec![2, 4]);
        let not_11 = Filter {
            none: vec![Filter {
                since: Some(11),
                until: Some(11),
                ..Filter::default()
            }],
            ..f.clone()
        };
        assert_eq!(seqs(&not_11), vec![4]);
        // Alone, `none` removes its events from everything.
        let no_sends = Filter {
            none: vec![Filter {
                kinds: KindMask::of(&[Kind::Send]),
                ..Filter::default()
            }],
            ..Filter::default()
        };
        assert_eq!(seqs(&no_sends), vec![2, 4]);
    }

    #[test]
    fn filters_by_pid_kind_and_limit_in_both_orders() {
        let log = log_of(&[
            (1, 2, Kind::Send, 10),
            (2, 0, Kind::Receive, 11),
            (1, 3, Kind::Send, 12),
            (1, 0, Kind::Exit, 13),
        ]);
        let f = Filter {
            pids: vec![1],
            kinds: KindMask::of(&[Kind::Send]),
            ..Filter::default()
        };
        let seqs = |p: Page| p.events.iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(seqs(run(&log, &f, u64::MAX)), vec![1, 3]);
        let desc = Filter {
            descending: true,
            limit: 1,
            ..f.clone()
        };
        assert_eq!(seqs(run(&log, &desc, u64::MAX)), vec![3]);
        let involving = Filter {
            involving: vec![2],
            ..Filter::default()
        };
        assert_eq!(seqs(run(&log, &involving, u64::MAX)), vec![1, 2]);
        let window = Filter {
            since: Some(11),
            until: Some(12),
            ..Filter::default()
        };
        assert_eq!(seqs(run(&log, &window, u64::MAX)), vec![2, 3]);
        let page2 = Filter {
            after_seq: 1,
            before_seq: Some(4),
            ..Filter::default()
        };
        assert_eq!(seqs(run(&log, &page2, u64::MAX)), vec![2, 3]);
    }

    #[test]
    fn budget_bounds_the_scan() {
        let evs: Vec<_> = (0..100).map(|i| (i, 0, Kind::Send, i as i64)).collect();
        let log = log_of(&evs);
        let p = run(
            &log,
            &Filter {
                pids: vec![1000],
                ..Filter::default()
            },
            10,
        );
        assert_eq!((p.events.len(), p.scanned), (0, 10));
    }

    fn kind_strategy() -> impl Strategy<Value = Kind> {
        (0u8..15).prop_map(|k| Kind::from_u8(k).unwrap())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn run_on_a_pid_index_equals_run(
            // (Real events always have a process: pid 0 is "none" and not indexed.)
            evs in prop::collection::vec((1u64..5, 0u64..5, kind_strategy(), 0i64..50), 0..200),
            pid in 1u64..5,
            after in 0u64..50,
            limit in 1usize..20,
            descending in any::<bool>(),
        ) {
            let log = log_of(&evs);
            let mut idx = crate::index::Index::new();
            idx.catch_up(&log);
            let f = Filter { pids: vec![pid], after_seq: after, limit, descending, ..Filter::default() };
            let seqs = idx.pid(pid).map(|p| p.events.clone()).unwrap_or_default();
            let a: Vec<u64> = run(&log, &f, u64::MAX).events.iter().map(|e| e.seq).collect();
            let b: Vec<u64> = run_on(&log, &seqs, &f).events.iter().map(|e| e.seq).collect();
            prop_assert_eq!(a, b);
        }

        #[test]
        fn run_equals_a_naive_scan(
            evs in prop::collection::vec((0u64..5, 0u64..5, kind_strategy(), 0i64..50), 0..200),
            pid in prop::option::of(0u64..5),
            kinds in prop::collection::vec(kind_strategy(), 0..4),
            since in prop::option::of(0i64..50),
            after in 0u64..50,
            limit in 1usize..20,
            descending in any::<bool>(),
        ) {
            let log = log_of(&evs);
            let f = Filter {
                pids: pid.into_iter().collect(),
                kinds: if kinds.is_empty() { KindMask::ALL } else { KindMask::of(&kinds) },
                since,
                after_seq: after,
                limit,
                descending,
                ..Filter::default()
            };
            let got: Vec<u64> = run(&log, &f, u64::MAX).events.iter().map(|e| e.seq).collect();
            let mut want: Vec<u64> = evs.iter().enumerate()
                .map(|(i, e)| (i as u64 + 1, e))
                .filter(|(seq, (p, _, k, ts))| *seq > after
                    && pid.is_none_or(|x| x == *p)
                    && f.kinds.contains(*k)
                    && since.is_none_or(|s| *ts >= s))
                .map(|(seq, _)| seq)
                .collect();
            if descending { want.reverse(); }
            want.truncate(limit);
            prop_assert_eq!(got, want);
        }
    }
}
