//! States stored as a change to the process's previous state.
//!
//! A GenServer's state usually changes a little per callback (one key of a big map, one element
//! prepended to a list), and the External Term Format keeps what did not change byte for byte:
//! the new encoding shares a prefix and a suffix with the previous one. A state event may then
//! store only what lies between, as a record naming its base (the previous state event of its
//! process, in the same log):
//!
//! `[base seq u64 LE][depth u16 LE][since u32 LE][prefix u32 LE][suffix u32 LE][middle]`
//!
//! The state's bytes are the base's first `prefix` bytes, then `middle`, then the base's last
//! `suffix` bytes. `depth` counts the deltas down to a state stored whole, and `since` the bytes
//! they stored: a state is stored whole again when the chain reaches [`MAX_DEPTH`] or has stored
//! a quarter of the state's size, so resolving one is bounded and a chain never costs much more
//! than the state itself.
//!
//! Such an event is flagged [`flags::STATE_DELTA`] and also [`flags::PAYLOAD_DROPPED`]: a reader
//! that does not resolve it sees a payload it does not know, never the record's bytes taken for
//! the state. Readers that want the state call [`resolve`]; nothing is materialized in the log,
//! so reading states costs no memory that stays. Only a live capture's log holds deltas: segment
//! writers write states whole.

use crate::capture::log::CaptureLog;
use crate::formats::event::{flags, EventRef, Kind, Seq};

/// Most deltas between a state and the state stored whole it is resolved from: bounds resolving.
pub const MAX_DEPTH: u16 = 200;
/// States smaller than this are stored whole (a delta would save too little to pay for itself).
pub const MIN_SIZE: usize = 1024;
/// The record's fixed part.
const HEAD: usize = 8 + 2 + 4 + 4 + 4;

/// Whether `ev` is a state stored as a delta.
#[inline]
pub fn is_delta(ev: &EventRef<'_>) -> bool {
    ev.header.flags & flags::STATE_DELTA != 0
}

/// A delta record's fields.
struct Record<'a> {
    base: Seq,
    depth: u16,
    since: u32,
    prefix: usize,
    suffix: usize,
    middle: &'a [u8],
}

fn record<'a>(payload: &'a [u8]) -> Option<Record<'a>> {
    let head = payload.get(..HEAD)?;
    let u32_at = |i: usize| head[i..i + 4].try_into().ok().map(u32::from_le_bytes);
    Some(Record {
        base: u64::from_le_bytes(head[..8].try_into().ok()?),
        depth: u16::from_le_bytes(head[8..10].try_into().ok()?),
        since: u32_at(10)?,
        prefix: u32_at(14)? as usize,
        suffix: u32_at(18)? as usize,
        middle: &payload[HEAD..],
    })
}

/// The pieces whose concatenation is the state `ev` stores (its payload itself when stored
/// whole), appended to `out`; false when they cannot be had (a base missing or not a state of
/// the same process, a record inconsistent with its base). Nothing is copied.
pub fn pieces<'a>(log: &'a CaptureLog, ev: &EventRef<'a>, out: &mut Vec<&'a [u8]>) -> bool {
    pieces_at(log, ev, out, 0)
}

fn pieces_at<'a>(
    log: &'a CaptureLog,
    ev: &EventRef<'a>,
    out: &mut Vec<&'a [u8]>,
    level: u16,
) -> bool {
    if !is_delta(ev) {
        if ev.header.flags & (flags::TRUNCATED | flags::PAYLOAD_DROPPED) != 0 {
            return false;
        }
        out.push(ev.payload);
        return true;
    }
    let Some(r) = record(ev.payload) else {
        return false;
    };
    if level > MAX_DEPTH || r.base >= ev.seq {
        return false;
    }
    let Some(base) = log
        .get(r.base)
        .filter(|b| b.header.pid == ev.header.pid && b.header.kind == Kind::State as u8)
    else {
        return false;
    };
    let mut of_base = Vec::new();
    if !pieces_at(log, &base, &mut of_base, level + 1) {
        return false;
    }
    let len: usize = of_base.iter().map(|p| p.len()).sum();
    if r.prefix.checked_add(r.suffix).is_none_or(|kept| kept > len) {
        return false;
    }
    take_front(&of_base, r.prefix, out);
    if !r.middle.is_empty() {
        out.push(r.middle);
    }
    take_back(&of_base, r.suffix, out);
    true
}

/// Appends the first `n` bytes of `pieces` to `out`, as pieces.
fn take_front<'a>(pieces: &[&'a [u8]], mut n: usize, out: &mut Vec<&'a [u8]>) {
    for p in pieces {
        if n == 0 {
            break;
        }
        let k = n.min(p.len());
        out.push(&p[..k]);
        n -= k;
    }
}

/// Appends the last `n` bytes of `pieces` to `out`, as pieces, in order.
fn take_back<'a>(pieces: &[&'a [u8]], n: usize, out: &mut Vec<&'a [u8]>) {
    let mut skip = pieces.iter().map(|p| p.len()).sum::<usize>() - n;
    for p in pieces {
        if skip >= p.len() {
            skip -= p.len();
            continue;
        }
        out.push(&p[skip..]);
        skip = 0;
    }
}

/// Writes the state `ev` stores into `out` (cleared first): its payload when stored whole, the
/// resolved state when a delta. False when it cannot be resolved (see [`pieces`]).
pub fn resolve(log: &CaptureLog, ev: &EventRef<'_>, out: &mut Vec<u8>) -> bool {
    out.clear();
    let mut parts = Vec::new();
    if !pieces(log, ev, &mut parts) {
        return false;
    }
    out.reserve(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        out.extend_from_slice(p);
    }
    true
}

/// Runs `f` with `ev` as a reader wants it: a state stored as a delta resolved into `buf` (the
/// delta's flags cleared), any other event as it is. A delta that cannot be resolved is passed
/// as it is: without a payload, for every reader.
pub fn with_whole<'a, R>(
    log: &'a CaptureLog,
    ev: &EventRef<'a>,
    buf: &mut Vec<u8>,
    f: impl FnOnce(&EventRef<'_>) -> R,
) -> R {
    if is_delta(ev) && resolve(log, ev, buf) {
        let mut whole = EventRef {
            payload: buf,
            ..*ev
        };
        whole.header.flags &= !(flags::STATE_DELTA | flags::PAYLOAD_DROPPED);
        f(&whole)
    } else {
        f(ev)
    }
}

/// Writes the first `n` bytes (or fewer, all there are) of the state `ev` stores into `out`
/// (cleared first); false when it cannot be resolved.
pub fn front(log: &CaptureLog, ev: &EventRef<'_>, n: usize, out: &mut Vec<u8>) -> bool {
    out.clear();
    let mut parts = Vec::new();
    if !pieces(log, ev, &mut parts) {
        return false;
    }
    let mut kept = Vec::new();
    take_front(&parts, n, &mut kept);
    for p in kept {
        out.extend_from_slice(p);
    }
    true
}

/// `ev`'s data (see [`EventRef::data`]), a state stored as a delta resolved into `buf` first.
pub fn data<'a>(log: &'a CaptureLog, ev: &EventRef<'a>, buf: &'a mut Vec<u8>) -> Option<&'a [u8]> {
    if !is_delta(ev) {
        return ev.data();
    }
    if !resolve(log, ev, buf) {
        return None;
    }
    buf.strip_prefix(&[crate::formats::etf::VERSION])
}

/// Where the state `ev` stores stands in its chain: the deltas down to a state stored whole and
/// the bytes they stored (`(0, 0)` when stored whole).
pub fn chain(ev: &EventRef<'_>) -> (u16, u32) {
    if is_delta(ev) {
        record(ev.payload).map_or((MAX_DEPTH, u32::MAX), |r| (r.depth, r.since))
    } else {
        (0, 0)
    }
}

/// How `state` (a whole encoding) compares with the state whose pieces are `base`: the lengths
/// of their common prefix and suffix (not overlapping within either).
pub fn common(base: &[&[u8]], state: &[u8]) -> (usize, usize) {
    let base_len: usize = base.iter().map(|p| p.len()).sum();
    let mut prefix = 0;
    for p in base {
        let n = p.len().min(state.len() - prefix);
        let same = same_front(&p[..n], &state[prefix..prefix + n]);
        prefix += same;
        if same < p.len() || prefix == state.len() {
            break;
        }
    }
    let room = base_len.min(state.len()) - prefix;
    let mut suffix = 0;
    for p in base.iter().rev() {
        let n = p.len().min(room - suffix);
        let end = state.len() - suffix;
        let same = same_back(&p[p.len() - n..], &state[end - n..end]);
        suffix += same;
        if same < p.len() || suffix == room {
            break;
        }
    }
    (prefix, suffix)
}

/// Bytes compared at once: equal blocks are skipped with one `memcmp`.
const BLOCK: usize = 64;

/// The length of the common prefix of `a` and `b` (of equal length).
fn same_front(a: &[u8], b: &[u8]) -> usize {
    let mut i = 0;
    while i + BLOCK <= a.len() && a[i..i + BLOCK] == b[i..i + BLOCK] {
        i += BLOCK;
    }
    i + a[i..]
        .iter()
        .zip(&b[i..])
        .take_while(|(x, y)| x == y)
        .count()
}

/// The length of the common suffix of `a` and `b` (of equal length).
fn same_back(a: &[u8], b: &[u8]) -> usize {
    let mut n = 0;
    while n + BLOCK <= a.len()
        && a[a.len() - n - BLOCK..a.len() - n] == b[b.len() - n - BLOCK..b.len() - n]
    {
        n += BLOCK;
    }
    n + a[..a.len() - n]
        .iter()
        .rev()
        .zip(b[..b.len() - n].iter().rev())
        .take_while(|(x, y)| x == y)
        .count()
}

/// The delta record storing `state` as a change to the state `base` (seq `base_seq`, at
/// `base_chain` in its chain, see [`chain`], whose pieces are `pieces`), written into `out`;
/// false when a delta is not worth it (a small state, a change of more than half the state) or
/// the chain is long enough to store the state whole again.
pub fn encode(
    base_seq: Seq,
    base_chain: (u16, u32),
    pieces: &[&[u8]],
    state: &[u8],
    out: &mut Vec<u8>,
) -> bool {
    let (depth, since) = base_chain;
    if state.len() < MIN_SIZE || depth >= MAX_DEPTH || state.len() > u32::MAX as usize {
        return false;
    }
    let (prefix, suffix) = common(pieces, state);
    let middle = &state[prefix..state.len() - suffix];
    let size = HEAD + middle.len();
    let since = (since as usize).saturating_add(size);
    if size > state.len() / 2 || since > state.len() / 4 {
        return false;
    }
    out.clear();
    out.extend_from_slice(&base_seq.to_le_bytes());
    out.extend_from_slice(&(depth + 1).to_le_bytes());
    out.extend_from_slice(&(since as u32).to_le_bytes());
    out.extend_from_slice(&(prefix as u32).to_le_bytes());
    out.extend_from_slice(&(suffix as u32).to_le_bytes());
    out.extend_from_slice(middle);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::log::Limits;
    use crate::formats::event::Header;

    fn log() -> CaptureLog {
        CaptureLog::new(Limits {
            max_events: 1_000,
            max_bytes: 1 << 20,
        })
    }

    fn state(pid: u64, flags: u8) -> Header {
        Header {
            pid,
            kind: Kind::State as u8,
            flags,
            ..Header::default()
        }
    }

    /// Stores `s` as `pid`'s next state: a delta of `prev` when worth it.
    fn store(log: &CaptureLog, pid: u64, prev: Option<Seq>, s: &[u8]) -> Seq {
        let mut rec = Vec::new();
        if let Some(p) = prev.and_then(|p| log.get(p)) {
            let mut parts = Vec::new();
            assert!(pieces(log, &p, &mut parts));
            if encode(p.seq, chain(&p), &parts, s, &mut rec) {
                let h = state(pid, flags::STATE_DELTA | flags::PAYLOAD_DROPPED);
                return match log.append(&h, &rec) {
                    crate::capture::log::Appended::Stored(seq) => seq,
                    other => panic!("{other:?}"),
                };
            }
        }
        match log.append(&state(pid, 0), s) {
            crate::capture::log::Appended::Stored(seq) => seq,
            other => panic!("{other:?}"),
        }
    }

    fn resolved(log: &CaptureLog, seq: Seq) -> Vec<u8> {
        let mut out = Vec::new();
        assert!(resolve(log, &log.get(seq).unwrap(), &mut out), "seq {seq}");
        out
    }

    #[test]
    fn a_chain_of_changes_resolves_to_each_state_and_stores_little() {
        let log = log();
        // A "map" of 400 five-byte entries; each step changes one entry, or grows at the front.
        let mut s: Vec<u8> = (0..2000u32).map(|i| (i % 251) as u8).collect();
        let mut states = Vec::new();
        let mut prev = None;
        for step in 0..200u32 {
            if step % 3 == 0 {
                s.splice(0..0, [step as u8, 1, 2]);
            } else {
                let at = (step as usize * 37) % (s.len() - 5);
                s[at..at + 5].copy_from_slice(&[9, step as u8, 7, 7, 7]);
            }
            let seq = store(&log, 1, prev, &s);
            states.push((seq, s.clone()));
            prev = Some(seq);
        }
        for (seq, want) in &states {
            assert_eq!(&resolved(&log, *seq), want);
        }
        // Whole states when a chain stored a quarter of a state, small records between.
        let whole = states
            .iter()
            .filter(|(seq, _)| !is_delta(&log.get(*seq).unwrap()))
            .count();
        assert!((2..=30).contains(&whole), "{whole} whole states");
        let bytes = log.stats().payload_bytes;
        assert!(
            bytes < 200 * 2600 / 10,
            "stored {bytes} bytes for 200 states"
        );
    }

    #[test]
    fn a_chain_ends_at_its_depth_or_a_quarter_of_the_state() {
        let log = log();
        // One byte changed per step: tiny records, so the depth ends each chain.
        let mut s = vec![0u8; 100_000];
        let mut prev = None;
        let mut depths = Vec::new();
        for step in 0..450usize {
            s[step * 7 % 100_000] ^= 1;
            let seq = store(&log, 1, prev, &s);
            depths.push(chain(&log.get(seq).unwrap()).0);
            prev = Some(seq);
        }
        assert_eq!(depths.iter().filter(|&&d| d == 0).count(), 3);
        assert_eq!(*depths.iter().max().unwrap(), MAX_DEPTH);
        // Big changes (a fifth of the state each): a chain stores a quarter, then a whole one.
        let log = self::log();
        let mut s = vec![0u8; 10_000];
        let mut prev = None;
        let mut whole = 0;
        for step in 0..20u8 {
            s[..2000].fill(step + 1);
            let seq = store(&log, 1, prev, &s);
            whole += usize::from(!is_delta(&log.get(seq).unwrap()));
            prev = Some(seq);
            assert_eq!(resolved(&log, seq), s);
        }
        assert_eq!(whole, 10, "whole, delta, whole, ...");
    }

    #[test]
    fn small_or_rewritten_states_are_stored_whole() {
        let log = log();
        let a = store(&log, 1, None, &[1; 100]);
        let b = store(&log, 1, Some(a), &[2; 100]);
        assert!(!is_delta(&log.get(b).unwrap()), "under MIN_SIZE");
        let c = store(&log, 1, Some(b), &[3; 4000]);
        let d = store(&log, 1, Some(c), &[4; 4000]);
        assert!(!is_delta(&log.get(d).unwrap()), "all of it changed");
        let e = store(&log, 1, Some(d), &[4; 4001]);
        assert!(is_delta(&log.get(e).unwrap()));
        assert_eq!(resolved(&log, e), vec![4; 4001]);
    }

    #[test]
    fn an_unresolvable_delta_says_so() {
        let log = log();
        let a = store(&log, 1, None, &[5; 3000]);
        let mut rec = Vec::new();
        let a_ev = log.get(a).unwrap();
        // Another process's state as the base, a base after the event, a record longer than
        // its base.
        for (base, pid, prefix) in [(a, 2, 10u32), (99, 1, 10), (a, 1, 4000)] {
            rec.clear();
            rec.extend_from_slice(&base.to_le_bytes());
            rec.extend_from_slice(&1u16.to_le_bytes());
            rec.extend_from_slice(&0u32.to_le_bytes());
            rec.extend_from_slice(&prefix.to_le_bytes());
            rec.extend_from_slice(&10u32.to_le_bytes());
            let h = state(pid, flags::STATE_DELTA | flags::PAYLOAD_DROPPED);
            let crate::capture::log::Appended::Stored(seq) = log.append(&h, &rec) else {
                panic!()
            };
            let mut out = vec![1];
            assert!(!resolve(&log, &log.get(seq).unwrap(), &mut out));
            assert!(out.is_empty());
        }
        assert_eq!(resolved(&log, a_ev.seq), vec![5; 3000]);
    }

    #[test]
    fn common_prefix_and_suffix_never_overlap() {
        // "abab" against "ab": the prefix takes it all, no suffix on top.
        assert_eq!(common(&[b"ab", b"ab"], b"ab"), (2, 0));
        assert_eq!(common(&[b"abc"], b"abXbc"), (2, 1));
        assert_eq!(common(&[b"a", b"bc"], b"abc"), (3, 0));
        assert_eq!(common(&[b"xyz"], b"abc"), (0, 0));
        assert_eq!(common(&[b"ab", b"cd"], b"abZZcd"), (2, 2));
        // Long runs, across blocks and pieces.
        let a: Vec<u8> = (0..1000u32).map(|i| (i % 253) as u8).collect();
        let mut b = a.clone();
        b[700] ^= 1;
        assert_eq!(common(&[&a[..300], &a[300..]], &b), (700, 299));
        let mut c = a.clone();
        c.insert(10, 9);
        assert_eq!(common(&[&a], &c), (10, 990));
    }
}
