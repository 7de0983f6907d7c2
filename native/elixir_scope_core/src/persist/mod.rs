//! Persistence of a capture: writing a store's events to a segment directory as they are stored
//! ([`Writer`]), and loading a directory (or one segment file) back into a [`crate::reader::Reader`]
//! ([`crate::persist::open`]).
//!
//! Events name processes and atoms by words that only mean something in the VM that captured
//! them. Each segment therefore carries a [`Record::Symbol`] (the word's ETF) before the first
//! event using a word, and the loader asks its caller to map every symbol to a key of the reading
//! VM: the word of an existing atom or local pid, or a synthetic key kept in the store's
//! [`Symbols`], which the NIF layer turns back into a term from the ETF. Each segment is
//! self-contained (its own symbols, clock and state payloads), so retention can delete any prefix
//! of segments.
//!
//! Layer 6, persistence, in the modules below: segment files and their directory, footers, the
//! writer, the loader, summaries, the paged reader and opening; this module names their main
//! types together.

pub mod footer;
pub mod load;
pub mod open;
pub mod paged;
pub mod segment;
pub mod segments;
pub mod summary;
pub mod writer;

pub use crate::formats::symbols::{is_synthetic, Clock, Symbols};
pub(crate) use crate::persist::load::{
    damage, files_bytes, frame_bytes, open_frames, read_footer, trace_files, trace_files_rebuilt,
    Loader,
};
pub use crate::persist::load::{trace_clock, LoadReport, Loaded, Mapped, Window};
pub use crate::persist::summary::{Summarizing, Summary};
pub use crate::persist::writer::{save, Writer};

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::formats::error::Error;
    use crate::formats::event::{flags, Header, Kind};
    use crate::persist::footer::Footer;
    use crate::persist::load::Renumber;
    use crate::persist::open::{load, Loading};
    use crate::persist::segment::{self, Record};
    use crate::persist::segments::{self, Policy};
    use crate::store::StateKind;
    use crate::store::{Config, Store};
    use proptest::prelude::*;
    use std::path::Path;
    use std::path::PathBuf;

    /// A fresh path in the temporary directory for the test named `name`.
    pub(crate) fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("escope-persist-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    pub(crate) const CLOCK: Clock = Clock {
        monotonic: -1_000,
        system: 1_700_000_000_000_000_000,
        run: 42,
    };

    /// A writer into the new directory `dir` rotating every `segment_bytes`, archiving or not.
    pub(crate) fn writer_in(dir: &Path, segment_bytes: u64, archive: bool) -> Writer {
        let policy = Policy {
            segment_bytes,
            archive,
            ..Policy::default()
        };
        Writer::create(dir, policy).unwrap()
    }

    /// The "ETF" of a word in these tests: a marker byte and the word.
    pub(crate) fn symbol(word: u64) -> Option<Vec<u8>> {
        let mut v = vec![b'w'];
        v.extend_from_slice(&word.to_le_bytes());
        Some(v)
    }

    /// Maps odd words to themselves plus one million (the reading VM's keys) and even words to
    /// synthetic keys.
    pub(crate) fn map(etf: &[u8], _: &Symbols) -> Mapped {
        let word = u64::from_le_bytes(etf[1..9].try_into().unwrap());
        if word % 2 == 1 {
            Mapped::Key(word + 1_000_000)
        } else {
            Mapped::Foreign {
                canonical: etf.to_vec(),
            }
        }
    }

    fn header(kind: Kind, pid: u64, peer: u64, ts: i64) -> Header {
        Header {
            ts,
            pid,
            peer,
            module: 11,
            function: 13,
            arity: 2,
            kind: kind as u8,
            flags: 0,
        }
    }

    #[test]
    fn events_a_ring_evicts_before_they_are_saved_are_counted_as_dropped() {
        let dir = temp("ring-save");
        let store = crate::store::testing::ring(8 * 100);
        let mut scratch = Vec::new();
        let send = |i: i64| header(Kind::Send, 1, 0, i);
        for i in 0..800 {
            store.append(&send(i), b"x", &mut scratch);
        }
        let mut w = writer_in(&dir, 1 << 20, false);
        w.flush(store.reader(), CLOCK, &mut symbol, 50).unwrap();
        // Three generations more: the first three (seqs 1 to 300) are evicted, 250 of them
        // before the writer got to them.
        for i in 800..1_100 {
            store.append(&send(i), b"x", &mut scratch);
        }
        assert_eq!(store.reader().log().evicted_upto(), 300);
        w.flush_all(store.reader(), CLOCK, &mut symbol).unwrap();
        w.finish().unwrap();
        let loaded = load(&dir, &mut map, &mut |_, _| {}).unwrap();
        // Seqs run on (the lost ones are holes), and the trace says how many were lost.
        let st = loaded.reader.stats();
        assert_eq!((st.events, st.dropped), (1_100, 250));
        assert_eq!(loaded.reader.log().range(1, u64::MAX).count(), 850);
    }

    /// A store with sends, states (some unchanged) and a tracked call's variables.
    fn sample(n: u64) -> Store {
        let store = Store::new(Config::default()).unwrap();
        store.watch_state_module(11, StateKind::GenServer);
        let mut scratch = Vec::new();
        for i in 0..n {
            let ts = i as i64 * 10;
            let pid = 3 + (i % 4) * 2; // 3, 5, 7, 9: odd words
            store.append(
                &header(Kind::Send, pid, 20 + i % 3 * 2, ts),
                &[131, 97, (i % 200) as u8],
                &mut scratch,
            );
            let state = [131, 97, (i / 8 % 200) as u8];
            store.append_state(
                &header(Kind::State, pid, 0, ts + 1),
                &state,
                3,
                true,
                &mut scratch,
            );
            if i % 5 == 0 {
                let entry = store.append(&header(Kind::Var, pid, 0, ts + 2), b"e", &mut scratch);
                let crate::capture::log::Appended::Stored(entry) = entry else {
                    panic!()
                };
                store.append(&header(Kind::Var, pid, entry, ts + 3), b"v", &mut scratch);
            }
        }
        store
    }

    fn mapped(w: u64, symbols: &Symbols) -> u64 {
        if w == 0 {
            0
        } else if w % 2 == 1 {
            w + 1_000_000
        } else {
            symbols.key_of(&symbol(w).unwrap()).unwrap()
        }
    }

    fn load_ok(path: &Path) -> Loaded {
        load(path, &mut map, &mut |_, _| {}).unwrap()
    }

    #[test]
    fn a_saved_store_loads_back_event_for_event() {
        let dir = temp("save");
        let store = sample(200);
        store.log().count_dropped();
        let manifest = save(store.reader(), &dir, CLOCK, &mut symbol).unwrap();
        assert!(manifest.segments.iter().all(|s| s.sealed));
        let loaded = load_ok(&dir);
        let (a, b) = (store.log(), loaded.reader.log());
        assert_eq!(a.last_seq(), b.last_seq());
        assert_eq!(loaded.report.events, a.last_seq());
        assert_eq!(loaded.report.first_seq, 1);
        assert_eq!(loaded.report.clock, Some(CLOCK));
        assert_eq!(
            (loaded.report.dropped, loaded.reader.stats().dropped),
            (1, 1)
        );
        assert_eq!((loaded.report.gaps, loaded.report.unknown_words), (0, 0));
        let symbols = loaded.reader.symbols().unwrap();
        assert_eq!(symbols.len(), 3, "the three even peer words");
        for seq in 1..=a.last_seq() {
            let (x, y) = (a.get(seq).unwrap(), b.get(seq).unwrap());
            let h = x.header;
            let mut want = Header {
                pid: mapped(h.pid, symbols),
                module: mapped(h.module, symbols),
                function: mapped(h.function, symbols),
                ..h
            };
            if h.kind != Kind::Var as u8 {
                want.peer = mapped(h.peer, symbols);
            }
            assert_eq!(y.header, want, "seq {seq}");
            assert_eq!(y.payload, x.payload, "seq {seq}");
        }
        assert!(symbols
            .etf(symbols.key_of(&symbol(20).unwrap()).unwrap())
            .is_some());
        assert!(
            save(store.reader(), &dir, CLOCK, &mut symbol).is_err(),
            "never over a trace"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unchanged_states_take_no_bytes_on_disk_within_a_segment() {
        let (dir, dir2) = (temp("states"), temp("states2"));
        let store = sample(400);
        let m = save(store.reader(), &dir, CLOCK, &mut symbol).unwrap();
        assert_eq!(m.segments.len(), 1);
        // On disk, only each process's first state carries bytes; the unchanged ones none.
        let bytes = segments::read_segment(&dir, &m.segments[0]).unwrap();
        let (mut unchanged, mut with_bytes) = (0, 0);
        for r in segment::frames(&bytes).unwrap() {
            if let Record::Event {
                kind,
                flags: fl,
                payload,
                ..
            } = r
            {
                if kind == Kind::State as u8 && fl & flags::STATE_UNCHANGED != 0 {
                    unchanged += 1;
                    with_bytes += usize::from(!payload.is_empty());
                }
            }
        }
        assert!(unchanged >= 100, "{unchanged}");
        assert_eq!(with_bytes, 0);
        // In memory too, loaded whole or paged in: unchanged states share their payload.
        let mut eager = Loading::eager(&dir).unwrap();
        while eager.step(&mut map).unwrap() {}
        let eager = eager.finish();
        assert_eq!(eager.report.paged, 0);
        assert_eq!(
            eager.reader.stats().payload_bytes,
            store.stats().payload_bytes
        );
        let loaded = load_ok(&dir);
        assert_eq!(loaded.report.paged, 1);
        assert_eq!(loaded.reader.stats().payload_bytes, 0);
        let all = loaded.reader.log().range(1, u64::MAX).count() as u64;
        assert_eq!(all, store.stats().events);
        assert_eq!(
            loaded.reader.stats().payload_bytes,
            store.stats().payload_bytes
        );
        // Saving the loaded store writes the same events again.
        save(&loaded.reader, &dir2, CLOCK, &mut |k| {
            loaded
                .reader
                .symbols()
                .and_then(|s| s.etf(k))
                .map(<[u8]>::to_vec)
                .or_else(|| symbol(k))
        })
        .unwrap();
        let again = load(
            &dir2,
            &mut |etf, _| Mapped::Foreign {
                canonical: etf.to_vec(),
            },
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!(again.report.events, loaded.report.events);
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&dir2).unwrap();
    }

    #[test]
    fn persisting_while_capturing_with_rotation_and_retention() {
        let dir = temp("live");
        let store = sample(0);
        let policy = Policy {
            segment_bytes: 4_000,
            max_bytes: 20_000,
            ..Policy::default()
        };
        let mut w = Writer::create(&dir, policy).unwrap();
        let mut scratch = Vec::new();
        let mut total = 0;
        for round in 0..50u64 {
            for i in 0..20u64 {
                let pid = 3 + (i % 4) * 2;
                store.append(
                    &header(Kind::Send, pid, 0, (round * 20 + i) as i64),
                    b"xyz",
                    &mut scratch,
                );
                // Each process's state changes every third round, per process.
                let state = [131, 97, ((round + pid) / 3 % 200) as u8];
                store.append_state(
                    &header(Kind::State, pid, 0, 0),
                    &state,
                    3,
                    true,
                    &mut scratch,
                );
            }
            total += w
                .flush(store.reader(), CLOCK, &mut symbol, u64::MAX)
                .unwrap();
            assert_eq!(w.next_seq(), store.log().last_seq() + 1);
        }
        assert_eq!(total, 2_000);
        let m = w.manifest().clone();
        assert!(m.segments.len() > 2);
        let on_disk: u64 = m.segments.iter().map(|s| s.bytes).sum();
        assert!(on_disk <= 20_000 + 4_500, "{on_disk}");
        // The oldest segments are gone; what is left loads with its symbols and states.
        let loaded = load_ok(&dir);
        let r = &loaded.report;
        assert!(r.first_seq > 1);
        assert_eq!(r.first_seq + r.events - 1, 2_000);
        assert_eq!((r.gaps, r.unknown_words), (0, 0));
        let log = loaded.reader.log();
        // Seqs are the trace's, from the first one left.
        assert_eq!(log.first_seq(), r.first_seq);
        assert!(!r.renumbered);
        for seq in log.first_seq()..=log.last_seq() {
            let e = log.get(seq).unwrap();
            let original = store.reader().log_unpinned().get(seq).unwrap();
            assert_eq!(
                e.header.pid,
                original.header.pid + 1_000_000,
                "pid of seq {seq}"
            );
            assert_eq!(e.payload, original.payload, "seq {seq}");
        }
        // Each remaining segment also loads alone: symbols and states are its own.
        for seg in &w.manifest().segments {
            let one = load_ok(&dir.join(&seg.file));
            assert_eq!(one.report.unknown_words, 0, "{}", seg.file);
            let log = one.reader.log();
            assert_eq!(log.first_seq(), one.report.first_seq);
            for seq in log.first_seq()..=log.last_seq() {
                let e = log.get(seq).unwrap();
                let original = store.reader().log_unpinned().get(seq).unwrap();
                assert_eq!(e.payload, original.payload, "{} seq {seq}", seg.file);
            }
        }
        // Finishing seals it; the trace is then read-only for writers.
        w.finish().unwrap();
        assert!(Writer::create(&dir, policy).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_single_segment_file_and_bad_paths() {
        let dir = temp("single");
        save(sample(10).reader(), &dir, CLOCK, &mut symbol).unwrap();
        let m = segments::read_manifest(&dir).unwrap();
        let one = load_ok(&dir.join(&m.segments[0].file));
        assert_eq!(one.report.events, load_ok(&dir).report.events);
        let nothing = temp("nothing");
        std::fs::create_dir_all(&nothing).unwrap();
        let typed = |path: &Path| {
            let e = load(path, &mut map, &mut |_, _| {}).err().unwrap();
            Error::from_io(e, Path::new("?"))
        };
        let shown = |p: &Path| p.display().to_string();
        assert_eq!(
            typed(&nothing),
            Error::NotATrace {
                path: shown(&nothing)
            }
        );
        assert_eq!(
            typed(&nothing.join("gone.seg")),
            Error::NotFound {
                path: shown(&nothing.join("gone.seg"))
            }
        );
        std::fs::write(nothing.join("x.seg"), b"garbage!!!!!!!!").unwrap();
        assert_eq!(
            typed(&nothing.join("x.seg")),
            Error::NotATrace {
                path: shown(&nothing.join("x.seg"))
            }
        );
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&nothing).unwrap();
    }

    fn summarize(path: &Path, footers: bool) -> Summary {
        let mut s = Summarizing::new(path, footers).unwrap();
        while s.step().unwrap() {}
        s.finish()
    }

    /// Everything but how each segment was read.
    fn contents(mut s: Summary) -> Summary {
        s.from_footers = 0;
        s
    }

    #[test]
    fn sealed_segments_end_with_footers_that_summarize_them() {
        for archive in [false, true] {
            let dir = temp(&format!("footers-{archive}"));
            let store = sample(0);
            let mut w = writer_in(&dir, 3_000, archive);
            let mut scratch = Vec::new();
            for i in 0..600u64 {
                let pid = 3 + (i % 4) * 2;
                let msg: &[u8] = if i % 3 == 0 {
                    &[131, 104, 2, 119, 3, b'a', b'd', b'd', 97, 1] // {:add, 1}
                } else {
                    &[131, 119, 4, b'p', b'i', b'n', b'g'] // :ping
                };
                let h = header(Kind::Receive, pid, 0, i as i64 - 1_000_000);
                store.append(&h, msg, &mut scratch);
                let state = [131, 97, (i / 7 % 200) as u8];
                let h = header(Kind::State, pid, 0, i as i64);
                store.append_state(&h, &state, 3, true, &mut scratch);
                if i % 50 == 0 {
                    w.flush(store.reader(), CLOCK, &mut symbol, u64::MAX)
                        .unwrap();
                }
            }
            w.flush(store.reader(), CLOCK, &mut symbol, u64::MAX)
                .unwrap();
            // Archives are made off the writer's path: until then the raw segments are listed.
            w.wait_archives().unwrap();
            // Unsealed: the last segment has no footer yet.
            let m = w.manifest().clone();
            assert!(m.segments.len() > 3);
            let (last, sealed) = m.segments.split_last().unwrap();
            assert_eq!(last.footer_at, 0);
            for seg in sealed {
                assert!(seg.footer_at > 0, "{seg:?}");
                assert_eq!(seg.archived, archive);
                let bytes = segments::read_segment(&dir, seg).unwrap();
                let Some((Record::Footer(f), end)) =
                    segment::frame_at(&bytes, seg.footer_at as usize)
                else {
                    panic!("no footer at {}", seg.footer_at)
                };
                assert_eq!(end, bytes.len(), "the footer ends the segment");
                assert!(f.plausible(seg.first_seq, seg.last_seq));
                assert_eq!(f.events, seg.last_seq - seg.first_seq + 1);
                assert!(f
                    .pids
                    .iter()
                    .all(|(p, _)| f.symbols.iter().any(|(w, _)| w == p)));
                assert_eq!(f.clock, Some((CLOCK.monotonic, CLOCK.system, CLOCK.run)));
            }
            let mixed = summarize(&dir, true);
            assert_eq!(mixed.from_footers, sealed.len());
            let scanned = summarize(&dir, false);
            assert_eq!(scanned.from_footers, 0);
            assert_eq!(contents(mixed.clone()), contents(scanned));
            // And it says what the store holds.
            assert_eq!(
                (mixed.events, mixed.first.unwrap().0, mixed.last.unwrap().0),
                (1_200, 1, 1_200)
            );
            assert_eq!(mixed.kinds[Kind::Receive as usize], 600);
            assert_eq!(mixed.kinds[Kind::State as usize], 600);
            let mut pids: Vec<_> = mixed.pids.iter().map(|(w, n)| (*w, *n)).collect();
            pids.sort_unstable();
            assert_eq!(pids, vec![(3, 300), (5, 300), (7, 300), (9, 300)]);
            assert_eq!((mixed.tags["add"], mixed.tags["ping"]), (200, 400));
            let log = store.log();
            let want = (1..=log.last_seq())
                .filter_map(|s| log.get(s))
                .filter(|e| {
                    e.header.kind == Kind::State as u8
                        && e.header.flags & flags::STATE_UNCHANGED == 0
                })
                .count() as u64;
            assert_eq!(mixed.state_changes, want);
            assert!(want < 600, "unchanged states are not change points");
            // Sealing ends the last segment with its footer too; everything still loads.
            w.finish().unwrap();
            let all = summarize(&dir, true);
            assert_eq!(all.from_footers, all.segments);
            assert_eq!(contents(all), contents(summarize(&dir, false)));
            assert_eq!(load_ok(&dir).report.events, 1_200);
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn a_writer_goes_on_with_the_next_store_where_the_last_stopped() {
        let dir = temp("continue");
        let (a, b) = (sample(30), sample(20));
        a.log().count_dropped();
        b.log().count_dropped();
        let mut w = writer_in(&dir, 2_000, false);
        w.flush(a.reader(), CLOCK, &mut symbol, u64::MAX).unwrap();
        w.continue_with(a.reader());
        assert_eq!((w.on_disk(), w.next_seq()), (a.log().last_seq(), 1));
        w.flush(b.reader(), CLOCK, &mut symbol, u64::MAX).unwrap();
        w.finish().unwrap();
        let loaded = load_ok(&dir);
        let (na, nb) = (a.log().last_seq(), b.log().last_seq());
        assert_eq!(loaded.report.events, na + nb);
        assert_eq!((loaded.report.gaps, loaded.report.discarded), (0, 0));
        assert_eq!(loaded.report.dropped, 2, "both stores' drops");
        let log = loaded.reader.log();
        for (seq, original) in (1..=na)
            .map(|s| a.reader().log_unpinned().get(s).unwrap())
            .chain((1..=nb).map(|s| b.reader().log_unpinned().get(s).unwrap()))
            .enumerate()
        {
            let e = log.get(seq as u64 + 1).unwrap();
            assert_eq!(e.payload, original.payload, "seq {}", seq + 1);
            assert_eq!(e.header.kind, original.header.kind);
            if e.header.kind == Kind::Var as u8 && original.header.peer != 0 {
                let base = if seq as u64 >= na { na } else { 0 };
                assert_eq!(
                    e.header.peer,
                    original.header.peer + base,
                    "entry of seq {}",
                    seq + 1
                );
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Loads the window `since..=until` of the trace in `dir` (written from `store`) and checks
    /// it: each process's last state before it first, then its events.
    fn check_window(dir: &Path, store: &Store, since: i64, until: i64) -> LoadReport {
        let log = store.log();
        let all: Vec<_> = (1..=log.last_seq()).map(|s| log.get(s).unwrap()).collect();
        let window = Window {
            since: Some(since),
            until: Some(until),
        };
        let mut loading = Loading::window(dir, window).unwrap();
        while loading.step(&mut map).unwrap() {}
        let loaded = loading.finish();
        let r = loaded.report.clone();
        let got = loaded.reader.log();
        let pids = [3u64, 5, 7, 9];
        assert_eq!(r.carried, 4);
        // Every event keeps its seq in the trace: the carried states, then (after the seqs
        // between them, holes) the window's events.
        assert!(!r.renumbered);
        let loaded: Vec<_> = (got.first_seq()..=got.last_seq())
            .filter_map(|s| got.get(s))
            .collect();
        for e in &loaded {
            let original = log.get(e.seq).unwrap();
            assert_eq!(
                (e.header.ts, e.payload),
                (original.header.ts, original.payload)
            );
        }
        for (i, e) in loaded.iter().take(4).enumerate() {
            assert_eq!(e.header.kind, Kind::State as u8, "carried {i}");
            let pid = pids
                .iter()
                .find(|p| **p + 1_000_000 == e.header.pid)
                .unwrap();
            let want = all
                .iter()
                .filter(|o| o.header.pid == *pid && o.header.kind == Kind::State as u8)
                .rfind(|o| o.header.ts < since)
                .unwrap();
            assert_eq!(
                e.payload, want.payload,
                "state of {pid} at the window's start"
            );
            assert_eq!(e.header.ts, want.header.ts);
            assert_eq!(e.header.flags & flags::STATE_UNCHANGED, 0);
        }
        // Then the window's events, in order, but the bindings whose call began before it.
        let inside: Vec<_> = all
            .iter()
            .filter(|o| (since..=until).contains(&o.header.ts))
            .collect();
        let loaded_inside = &loaded[4..];
        assert_eq!(
            loaded_inside.len() as u64 + r.discarded,
            inside.len() as u64
        );
        let mut k = 0;
        for o in &inside {
            if k < loaded_inside.len()
                && loaded_inside[k].header.ts == o.header.ts
                && loaded_inside[k].header.kind == o.header.kind
            {
                assert_eq!(loaded_inside[k].payload, o.payload);
                k += 1;
            }
        }
        assert_eq!(
            k,
            loaded_inside.len(),
            "every loaded event is one of the window's"
        );
        assert_eq!(r.gaps, 0);
        r
    }

    #[test]
    fn a_window_loads_its_events_and_each_state_at_its_start() {
        let store = sample(200);
        // One segment, read through.
        let dir = temp("window");
        save(store.reader(), &dir, CLOCK, &mut symbol).unwrap();
        let r = check_window(&dir, &store, 600, 1_400);
        assert_eq!(
            r.skipped + r.events - r.carried + r.discarded,
            store.log().last_seq()
        );
        std::fs::remove_dir_all(&dir).unwrap();
        // Many small segments, raw and archived: those before the window give their last
        // states from their footers, those after it are not read.
        for archive in [false, true] {
            let dir = temp(&format!("window-{archive}"));
            let mut w = writer_in(&dir, 1_500, archive);
            w.flush_all(store.reader(), CLOCK, &mut symbol).unwrap();
            w.finish().unwrap();
            let r = check_window(&dir, &store, 1_000, 1_200);
            assert!(r.from_footers > 3, "{r:?}");
            assert!(r.segments < segments::read_manifest(&dir).unwrap().segments.len());
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn a_traces_clock_is_read_from_its_first_bytes() {
        for archive in [false, true] {
            let dir = temp(&format!("clock-{archive}"));
            let mut w = writer_in(&dir, 1_500, archive);
            w.flush_all(sample(50).reader(), CLOCK, &mut symbol)
                .unwrap();
            w.finish().unwrap();
            assert_eq!(trace_clock(&dir).unwrap(), Some(CLOCK));
            std::fs::remove_dir_all(&dir).unwrap();
        }
        let empty = temp("clock-none");
        Writer::create(&empty, Policy::default())
            .unwrap()
            .finish()
            .unwrap();
        assert_eq!(trace_clock(&empty).unwrap(), None, "no event, no clock");
        std::fs::remove_dir_all(&empty).unwrap();
    }

    #[test]
    fn implausible_footers_are_not_believed() {
        let f = Footer {
            events: 2,
            first_seq: 5,
            last_seq: 6,
            kinds: vec![0, 0, 0, 0, 0, 0, 2],
            pids: vec![(3, 2)],
            ..Footer::default()
        };
        assert!(f.plausible(5, 6) && f.plausible(0, 0));
        assert!(!f.plausible(5, 7), "another range");
        let many_pids = Footer {
            pids: vec![(3, 1), (5, 1), (7, 1)],
            ..f.clone()
        };
        assert!(!many_pids.plausible(5, 6));
        let miscounted = Footer {
            kinds: vec![9],
            ..f.clone()
        };
        assert!(!miscounted.plausible(5, 6));
        let huge_state_list = Footer {
            states: vec![(3, vec![1; 100])],
            ..f
        };
        assert!(!huge_state_list.plausible(5, 6));
    }

    #[test]
    fn an_unsealed_segment_cut_inside_its_header_holds_nothing() {
        let dir = temp("short");
        let store = sample(30);
        let mut w = writer_in(&dir, 1_000, false);
        w.flush(store.reader(), CLOCK, &mut symbol, u64::MAX)
            .unwrap();
        let m = w.manifest().clone();
        let last = m.segments.last().unwrap();
        let written_before = last.first_seq.saturating_sub(1);
        drop(w);
        std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join(&last.file))
            .unwrap()
            .set_len(5)
            .unwrap();
        let loaded = load_ok(&dir);
        assert_eq!(loaded.report.torn, vec![last.file.clone()]);
        assert_eq!(loaded.report.events, written_before);
        assert!(summarize(&dir, true).torn.contains(&last.file));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn renumbering_maps_runs_of_seqs() {
        let mut r = Renumber::default();
        for (s, t) in [(5, 1), (6, 2), (7, 3), (10, 4), (11, 5)] {
            r.push(s, t);
        }
        assert_eq!(r.runs.len(), 2);
        assert_eq!(
            (r.get(6), r.get(11), r.get(8), r.get(1)),
            (Some(2), Some(5), None, None)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn damaged_files_load_a_prefix_or_fail_cleanly(
            at in any::<usize>(), byte in any::<u8>(), cut in any::<usize>(), n in 1u64..40
        ) {
            let dir = temp(&format!("prop-{at}-{byte}-{cut}"));
            let store = sample(n);
            save(store.reader(), &dir, CLOCK, &mut symbol).unwrap();
            let m = segments::read_manifest(&dir).unwrap();
            let file = dir.join(&m.segments[0].file);
            let mut bytes = std::fs::read(&file).unwrap();
            let len = bytes.len();
            bytes[at % len] = byte;
            bytes.truncate(len - cut % len);
            std::fs::write(&file, &bytes).unwrap();
            let mut loading = Loading::eager(&dir).unwrap();
            let loaded = std::iter::from_fn(|| Some(loading.step(&mut map)))
                .find(|r| !matches!(r, Ok(true)))
                .unwrap()
                .map(|_| loading.finish());
            if let Ok(loaded) = loaded {
                let log = loaded.reader.log();
                prop_assert!(log.last_seq() <= store.log().last_seq());
                for seq in 1..=log.last_seq() {
                    let e = log.get(seq).unwrap();
                    prop_assert_eq!(e.payload, store.reader().log_unpinned().get(seq).unwrap().payload);
                }
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}
