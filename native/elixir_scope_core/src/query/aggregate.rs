//! Aggregations over the events a filter selects: counts grouped by a key (process, kind,
//! function, message tag, time bucket) and call durations, computed in one pass without
//! building a term per event.

use crate::capture::delta;
use crate::capture::log::CaptureLog;
use crate::formats::event::{EventRef, Kind, Seq, Timestamp};
use crate::query::history::{close_call, mfa_of};
use crate::query::{self, Filter};
use std::collections::HashMap;

/// What events are grouped by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupBy {
    /// One group holding everything.
    All,
    /// The process the event happened in.
    Pid,
    /// The other process (message peer, spawned child, link).
    Peer,
    /// The event kind.
    Kind,
    /// The module of a call, return, exception or state.
    Module,
    /// Module, function and arity.
    Mfa,
    /// The message tag: the atom itself, or the first element of a tuple when it is an atom.
    Tag,
    /// Time buckets of this many nanoseconds (the key is the bucket's start).
    Bucket(u64),
}

/// A group's key. Process and atom keys are the stored words (`0`: none).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// [`GroupBy::All`].
    All,
    /// A process or module word.
    Word(u64),
    /// An event kind (its byte).
    Kind(u8),
    /// Module, function, arity words.
    Mfa(u64, u64, u8),
    /// A message tag, by atom name.
    Tag(String),
    /// A message without a tag.
    NoTag,
    /// A time bucket's start.
    Bucket(Timestamp),
}

/// The key of `ev` under `by`.
pub fn key_of(ev: &EventRef, by: GroupBy) -> Key {
    let h = &ev.header;
    match by {
        GroupBy::All => Key::All,
        GroupBy::Pid => Key::Word(h.pid),
        GroupBy::Peer => Key::Word(h.peer_pid()),
        GroupBy::Kind => Key::Kind(h.kind),
        GroupBy::Module => Key::Word(h.module),
        GroupBy::Mfa => Key::Mfa(h.module, h.function, h.arity),
        GroupBy::Tag => ev.tag().map_or(Key::NoTag, |t| Key::Tag(t.to_owned())),
        GroupBy::Bucket(ns) => {
            let ns = ns.clamp(1, i64::MAX as u64) as i64;
            Key::Bucket(h.ts.div_euclid(ns).saturating_mul(ns))
        }
    }
}

/// Counts the events matching `filter` and `keep`, per key, sorted by key.
pub fn count<'a>(
    log: &'a CaptureLog,
    seqs: Option<&[Seq]>,
    filter: &Filter,
    by: GroupBy,
    keep: &mut dyn FnMut(&EventRef<'a>) -> bool,
) -> Vec<(Key, u64)> {
    let mut groups: HashMap<Key, u64> = HashMap::new();
    // Tags are counted by the names borrowed from the log: no allocation per event.
    let mut tags: HashMap<Option<&'a str>, u64> = HashMap::new();
    let mut total = 0u64;
    query::scan_in(log, seqs, filter, &mut |ev| {
        if keep(ev) {
            match by {
                GroupBy::All => total += 1,
                // A state stored as a delta: its tag from the state resolved.
                GroupBy::Tag if delta::is_delta(ev) => {
                    let mut buf = Vec::new();
                    let key = delta::with_whole(log, ev, &mut buf, |w| key_of(w, by));
                    *groups.entry(key).or_default() += 1;
                }
                GroupBy::Tag => *tags.entry(ev.tag()).or_default() += 1,
                _ => *groups.entry(key_of(ev, by)).or_default() += 1,
            }
        }
        true
    });
    if by == GroupBy::All && total > 0 {
        groups.insert(Key::All, total);
    }
    for (t, n) in tags {
        *groups
            .entry(t.map_or(Key::NoTag, |t| Key::Tag(t.to_owned())))
            .or_default() += n;
    }
    let mut out: Vec<(Key, u64)> = groups.into_iter().collect();
    out.sort_unstable();
    out
}

/// Call durations of a group, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Durations {
    /// Completed calls (returned or raised).
    pub count: u64,
    /// Shortest.
    pub min: i64,
    /// Longest.
    pub max: i64,
    /// Sum, for the mean.
    pub sum: i128,
}

/// A call not yet returned: module, function, arity, start time, and its group key.
type OpenCall = (u64, u64, u8, Timestamp, Key);

/// Most calls remembered open per process (deeper recursion without returns forgets the oldest).
const MAX_OPEN_CALLS: usize = 4096;

/// Durations of the calls matching `filter` (its kinds are replaced by call, return and
/// exception; its order and limit are ignored), grouped by the call's key. A call is paired
/// with the next return or exception of the same function in the same process, innermost
/// first; calls still open at the end of the window are not counted.
pub fn call_durations(
    log: &CaptureLog,
    seqs: Option<&[Seq]>,
    filter: &Filter,
    by: GroupBy,
) -> Vec<(Key, Durations)> {
    let mut f = filter.clone();
    f.kinds = crate::index::CALLS;
    f.descending = false;
    let mut open: HashMap<u64, Vec<OpenCall>> = HashMap::new();
    let mut groups: HashMap<Key, Durations> = HashMap::new();
    query::scan_in(log, seqs, &f, &mut |ev| {
        let h = &ev.header;
        let stack = open.entry(h.pid).or_default();
        if h.kind == Kind::Call as u8 {
            if stack.len() == MAX_OPEN_CALLS {
                stack.remove(0);
            }
            stack.push((h.module, h.function, h.arity, h.ts, key_of(ev, by)));
        } else if let Some((_, _, _, started, key)) =
            close_call(stack, mfa_of(h), |c| (c.0, c.1, c.2))
        {
            let d = h.ts.saturating_sub(started).max(0);
            let g = groups.entry(key).or_insert(Durations {
                count: 0,
                min: i64::MAX,
                max: i64::MIN,
                sum: 0,
            });
            g.count += 1;
            g.min = g.min.min(d);
            g.max = g.max.max(d);
            g.sum += d as i128;
        }
        true
    });
    let mut out: Vec<(Key, Durations)> = groups.into_iter().collect();
    out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::log::Limits;
    use crate::formats::event::{Header, KindMask};

    use crate::formats::etf::build::atom;

    fn log() -> CaptureLog {
        CaptureLog::new(Limits {
            max_events: 10_000,
            max_bytes: 1 << 20,
        })
    }

    fn push(log: &CaptureLog, pid: u64, kind: Kind, ts: i64, mfa: (u64, u64, u8), data: &[u8]) {
        let mut payload = vec![131];
        payload.extend_from_slice(data);
        log.append(
            &Header {
                ts,
                pid,
                kind: kind as u8,
                module: mfa.0,
                function: mfa.1,
                arity: mfa.2,
                ..Header::default()
            },
            if data.is_empty() { b"" } else { &payload },
        );
    }

    #[test]
    fn counts_group_by_pid_tag_and_bucket() {
        let log = log();
        let inc = {
            let mut t = vec![104, 2];
            t.extend(atom("increment"));
            t.extend([97, 1]);
            t
        };
        push(&log, 1, Kind::Receive, 10, (0, 0, 0), &inc);
        push(&log, 1, Kind::Receive, 20, (0, 0, 0), &atom("stop"));
        push(&log, 2, Kind::Receive, 1_010, (0, 0, 0), &inc);
        push(&log, 2, Kind::Receive, 1_020, (0, 0, 0), &[97, 3]);
        push(&log, 2, Kind::Exit, 1_030, (0, 0, 0), &[]);
        let receives = Filter {
            kinds: KindMask::of(&[Kind::Receive]),
            ..Filter::default()
        };
        let all = |by| count(&log, None, &receives, by, &mut |_| true);
        assert_eq!(all(GroupBy::All), vec![(Key::All, 4)]);
        assert_eq!(
            all(GroupBy::Pid),
            vec![(Key::Word(1), 2), (Key::Word(2), 2)]
        );
        assert_eq!(
            all(GroupBy::Tag),
            vec![
                (Key::Tag("increment".into()), 2),
                (Key::Tag("stop".into()), 1),
                (Key::NoTag, 1)
            ]
        );
        assert_eq!(
            all(GroupBy::Bucket(1_000)),
            vec![(Key::Bucket(0), 2), (Key::Bucket(1_000), 2)]
        );
        let none = count(&log, None, &receives, GroupBy::All, &mut |_| false);
        assert!(none.is_empty());
    }

    #[test]
    fn durations_pair_calls_with_their_returns_innermost_first() {
        let log = log();
        let f = (7, 8, 1);
        let g = (7, 9, 0);
        push(&log, 1, Kind::Call, 100, f, &[]);
        push(&log, 1, Kind::Call, 110, f, &[]); // recursion
        push(&log, 1, Kind::Return, 130, f, &[]); // inner: 20
        push(&log, 1, Kind::Call, 140, g, &[]);
        push(&log, 1, Kind::Exception, 145, g, &[]); // 5
        push(&log, 1, Kind::Return, 200, f, &[]); // outer: 100
        push(&log, 2, Kind::Call, 150, f, &[]); // never returns
        push(&log, 2, Kind::Return, 160, g, &[]); // no matching call
        let by_mfa = call_durations(&log, None, &Filter::default(), GroupBy::Mfa);
        assert_eq!(
            by_mfa,
            vec![
                (
                    Key::Mfa(7, 8, 1),
                    Durations {
                        count: 2,
                        min: 20,
                        max: 100,
                        sum: 120
                    }
                ),
                (
                    Key::Mfa(7, 9, 0),
                    Durations {
                        count: 1,
                        min: 5,
                        max: 5,
                        sum: 5
                    }
                )
            ]
        );
        let only_pid2 = Filter {
            pids: vec![2],
            ..Filter::default()
        };
        assert!(call_durations(&log, None, &only_pid2, GroupBy::All).is_empty());
    }
}
