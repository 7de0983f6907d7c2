//! A deterministic fuzz run of the trace reader, sized for CI.
//!
//! Real traces (several segments, raw and lz4-archived, sealed and not, with retention and a
//! writer that went on with a second store) are written once and kept in memory. Then:
//!
//! * `segment_parsers_survive_mutated_and_random_bytes`: random bytes and mutations of real
//!   segment bytes (bit flips, overwrites, truncations, insertions, removals, duplicated and
//!   spliced ranges, length fields set to huge values, frame bodies mutated with their CRC fixed,
//!   forged records and footers) go through `segment::read` / `frames` / `frame_at`, every record
//!   is looked into (event payload decoding, footer plausibility and seq lists, a footer built
//!   from the records), and the records kept are checked against the intact segment's;
//! * `trace_loading_survives_damaged_directories`: a copy of a real trace directory with one
//!   mutation (a segment's bytes, truncated, emptied, deleted, copied over another, swapped; the
//!   MANIFEST mutated, emptied, deleted, forged; a footer forged; an archive damaged) is loaded
//!   paged, whole and as a window, summarized (footers trusted or not), its clock and manifest
//!   read, and every event of each loaded store is read back, indexed and queried.
//!
//! Every case runs inside `catch_unwind`: a panic or a failed check is reported with its case
//! number and the mutation, and the run goes on. Cases are generated from `(seed, case)` alone,
//! so one case replays by itself:
//!
//! * `ELIXIR_SCOPE_FUZZ_CASES`: cases in all (default 100 000, 10 000 in a debug build; a
//!   fortieth are file cases);
//! * `ELIXIR_SCOPE_FUZZ_SEED`: the seed (default below);
//! * `ELIXIR_SCOPE_FUZZ_ONLY`: `mem:N` or `file:N` runs that case alone, printing its mutation.
//!
//! A watchdog aborts the process, naming the case, when one case takes over a minute.
//!
//! The bugs the fuzz found are fixed; the tests at the end reproduce each of them, small.

use elixir_scope_core::formats::event::{flags, Header, Kind, KindMask};
use elixir_scope_core::index::{self, At};
use elixir_scope_core::persist::footer::{Footer, FooterBuilder, SegmentIndex, SeqList};
use elixir_scope_core::persist::open::Loading;
use elixir_scope_core::persist::segment::{
    self, Record, SegmentError, HEADER_LEN, MAGIC, MAX_RECORD,
};
use elixir_scope_core::persist::segments::{self, Manifest, Policy};
use elixir_scope_core::persist::{
    self, Clock, Loaded, Mapped, Summarizing, Symbols, Window, Writer,
};
use elixir_scope_core::query::history::{self, Callbacks};
use elixir_scope_core::query::{self, Filter};
use elixir_scope_core::store::{Config, StateKind, Store};
use std::collections::HashSet;
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Cases run by default: 100 000 in release (CI, some 10 to 20 s on two cores), fewer in a
/// debug build, which is many times slower.
const DEFAULT_CASES: u64 = if cfg!(debug_assertions) {
    10_000
} else {
    100_000
};
const DEFAULT_SEED: u64 = 0x5EED_E5C0_9E00_0001;
/// One case in this many is a file case.
const FILE_SHARE: u64 = 40;
/// Failures described at most (the count is always given).
const MAX_REPORTED: usize = 12;
/// Seqs of a loaded store read one by one at most (a crafted seq can leave up to 2^24 holes
/// per gap; reading them all is correct but slow): past that, its two ends are.
const SPAN_CAP: u64 = 1 << 21;

const CLOCK: Clock = Clock {
    monotonic: -1_000,
    system: 1_700_000_000_000_000_000,
    run: 42,
};

// ---------------------------------------------------------------------------------------------
// Randomness and configuration.

/// splitmix64: small, fast, and every case's stream is a pure function of `(seed, case)`.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn for_case(seed: u64, stream: u64, case: u64) -> Rng {
        let mut r = Rng(seed
            ^ stream.wrapping_mul(0xA24B_AED4_963E_E407)
            ^ case.wrapping_mul(0x9FB2_1C65_1E98_DF25));
        r.next();
        r
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    fn idx(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }

    /// `lo + idx(n)` random bytes.
    fn bytes_in(&mut self, lo: usize, n: usize) -> Vec<u8> {
        let len = lo + self.idx(n);
        self.bytes(len)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.idx(items.len())]
    }

    /// A value from the edges of the u64 range, or near `near`, or anything.
    fn edgy(&mut self, near: u64) -> u64 {
        match self.below(10) {
            0 => 0,
            1 => u64::MAX - self.below(3),
            2 => 1u64 << self.below(64),
            3 => (1u64 << self.below(64)).wrapping_sub(1),
            4 => i64::MAX as u64 + self.below(3),
            5..=7 => near.wrapping_add(self.below(9)).wrapping_sub(4),
            _ => self.next(),
        }
    }

    fn edgy_i64(&mut self, near: i64) -> i64 {
        match self.below(6) {
            0 => i64::MIN + self.below(2) as i64,
            1 => i64::MAX - self.below(2) as i64,
            2..=3 => near.wrapping_add(self.below(41) as i64 - 20),
            _ => self.next() as i64,
        }
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| {
            let v = v.trim().replace('_', "");
            match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => v.parse().ok(),
            }
        })
        .unwrap_or(default)
}

struct Plan {
    seed: u64,
    /// Case numbers to run: all of `0..n`, or the one asked for.
    cases: Vec<u64>,
    verbose: bool,
}

fn plan(kind: &str) -> Plan {
    let seed = env_u64("ELIXIR_SCOPE_FUZZ_SEED", DEFAULT_SEED);
    let total = env_u64("ELIXIR_SCOPE_FUZZ_CASES", DEFAULT_CASES);
    let file_cases = if total == 0 {
        0
    } else {
        (total / FILE_SHARE).max(1)
    };
    let n = if kind == "file" {
        file_cases
    } else {
        total - file_cases
    };
    if let Ok(only) = std::env::var("ELIXIR_SCOPE_FUZZ_ONLY") {
        let (k, case) = only.split_once(':').unwrap_or(("", ""));
        let cases = match case.trim().parse::<u64>() {
            Ok(c) if k == kind => vec![c],
            _ => Vec::new(),
        };
        return Plan {
            seed,
            cases,
            verbose: true,
        };
    }
    Plan {
        seed,
        cases: (0..n).collect(),
        verbose: false,
    }
}

/// Aborts the process, naming the case, when `beat` stops moving for a minute (a hang).
fn watchdog(name: &'static str, seed: u64, beat: Arc<AtomicU64>, done: Arc<AtomicU64>) {
    std::thread::spawn(move || {
        let mut last = u64::MAX;
        let mut since = Instant::now();
        while done.load(Ordering::Relaxed) == 0 {
            std::thread::sleep(Duration::from_millis(250));
            let now = beat.load(Ordering::Relaxed);
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() > Duration::from_secs(60) {
                eprintln!(
                    "reader_fuzz: {name} case {now} (seed {seed:#x}) has run for over a minute: \
                     a hang. Replay: ELIXIR_SCOPE_FUZZ_SEED={seed:#x} \
                     ELIXIR_SCOPE_FUZZ_ONLY={name}:{now}"
                );
                std::process::abort();
            }
        }
    });
}

fn panic_text(e: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = e.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = e.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-text panic)".into()
    }
}

/// How often each path was taken, by name (`"<kind>: ..."`): `count("<kind>")` prints those of
/// a kind, to see what the run reached.
fn count(what: &'static str) {
    static COUNTS: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>> =
        std::sync::Mutex::new(std::collections::BTreeMap::new());
    if !what.contains(':') {
        let counts = COUNTS.lock().unwrap_or_else(|e| e.into_inner());
        for (k, v) in counts.iter().filter(|(k, _)| k.starts_with(what)) {
            eprintln!("reader_fuzz:   {v:>8}  {k}");
        }
        return;
    }
    *COUNTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(what)
        .or_default() += 1;
}

/// Fails the case (it runs inside `catch_unwind`) with a message.
macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            panic!("CHECK FAILED: {}", format!($($arg)+));
        }
    };
}

// ---------------------------------------------------------------------------------------------
// The real traces.

/// The "ETF" of a word in these traces: a marker byte and the word.
fn symbol(word: u64) -> Option<Vec<u8>> {
    let mut v = vec![b'w'];
    v.extend_from_slice(&word.to_le_bytes());
    Some(v)
}

/// Odd words map to keys of the reading VM (the word plus a million), even ones (and anything
/// that is not a symbol of [`symbol`]'s form: damage) to synthetic keys.
fn map(etf: &[u8], _: &Symbols) -> Mapped {
    match etf {
        [b'w', rest @ ..] if rest.len() == 8 => {
            let mut w = [0u8; 8];
            w.copy_from_slice(rest);
            let word = u64::from_le_bytes(w);
            if word % 2 == 1 {
                Mapped::Key(word.wrapping_add(1_000_000))
            } else {
                Mapped::Foreign {
                    canonical: etf.to_vec(),
                }
            }
        }
        _ => Mapped::Foreign {
            canonical: etf.to_vec(),
        },
    }
}

fn hdr(kind: Kind, pid: u64, peer: u64, module: u64, function: u64, ts: i64) -> Header {
    Header {
        ts,
        pid,
        peer,
        module,
        function,
        arity: u8::from(module != 0),
        kind: kind as u8,
        flags: 0,
    }
}

/// Iterations `from..from + n` of a capture: spawns and exits, tagged sends and receives, calls
/// and returns of two modules, map states that mostly repeat, variable bindings.
fn capture(store: &Store, from: u64, n: u64) {
    let mut scratch = Vec::new();
    for i in from..from + n {
        // Times grow with seqs, as a window load expects of a trace.
        let ts = i as i64 * 10;
        let pid = 3 + (i % 6) * 2;
        if i % 97 == 0 {
            let child = 101 + i * 2;
            let spawn = hdr(Kind::Spawn, pid, child, 0, 0, ts);
            store.append(&spawn, &[131, 106], &mut scratch);
            store.append(&hdr(Kind::Exit, child, 0, 0, 0, ts), b"x", &mut scratch);
        }
        let tag: &[u8] = [b"tick", b"tock"][(i % 2) as usize];
        let mut msg = vec![131, 104, 2, 119, 4];
        msg.extend_from_slice(tag);
        msg.extend_from_slice(&[97, (i % 250) as u8]);
        let send = hdr(Kind::Send, pid, 20 + i % 3 * 2, 0, 0, ts);
        store.append(&send, &msg, &mut scratch);
        if i % 2 == 1 {
            let recv = hdr(Kind::Receive, pid, 0, 0, 0, ts + 1);
            store.append(&recv, &msg, &mut scratch);
        }
        let (module, function) = (31 + i % 2 * 2, 13 + i % 3 * 2);
        let call = hdr(Kind::Call, pid, 0, module, function, ts + 2);
        store.append(&call, &[131, 106], &mut scratch);
        let ret = hdr(Kind::Return, pid, 0, module, function, ts + 3);
        store.append(&ret, &[131, 97, (i % 250) as u8], &mut scratch);
        // %{a: _, b: _}, changing rarely: most states repeat the one before.
        let state = [
            131,
            116,
            0,
            0,
            0,
            2,
            119,
            1,
            b'a',
            97,
            (i / 300 % 200) as u8,
            119,
            1,
            b'b',
            97,
            (i / 700 % 200) as u8,
        ];
        let st = hdr(Kind::State, pid, 0, 11, 17, ts + 4);
        store.append_state(&st, &state, state.len() as u64, true, &mut scratch);
        if i % 5 == 0 {
            let entry = hdr(Kind::Var, pid, 0, 0, 0, ts + 5);
            if let elixir_scope_core::capture::log::Appended::Stored(entry) =
                store.append(&entry, b"e", &mut scratch)
            {
                let var = hdr(Kind::Var, pid, entry, 0, 0, ts + 6);
                store.append(&var, b"v", &mut scratch);
            }
        }
    }
}

fn new_store() -> Store {
    let store = Store::new(Config::default()).unwrap();
    store.watch_state_module(11, StateKind::GenServer);
    store
}

fn writer(dir: &Path, segment_bytes: u64, max_bytes: u64, archive: bool) -> Writer {
    let policy = Policy {
        segment_bytes,
        max_bytes,
        archive,
        ..Policy::default()
    };
    Writer::create(dir, policy).unwrap()
}

/// What a loaded event must be, by its seq in the trace.
#[derive(Clone, Debug)]
struct Ev {
    ts: i64,
    kind: u8,
    payload: Vec<u8>,
}

/// One segment of a trace: its bytes (decompressed) and its frames.
struct Seg {
    file: String,
    archived: bool,
    raw: Vec<u8>,
    /// `(start, end)` of each frame.
    frames: Vec<(usize, usize)>,
    /// The footer it ends with.
    footer: Option<Footer>,
}

struct Trace {
    name: &'static str,
    /// Every file of the directory, as written.
    files: Vec<(String, Vec<u8>)>,
    manifest: Manifest,
    segs: Vec<Seg>,
    /// The intact trace loaded whole: the event of each seq from `first`.
    first: u64,
    events: Vec<Option<Ev>>,
    count: u64,
    ts: (i64, i64),
}

impl Trace {
    fn event(&self, seq: u64) -> Option<&Ev> {
        let i = seq.checked_sub(self.first)?;
        self.events.get(usize::try_from(i).ok()?)?.as_ref()
    }
}

struct Fixture {
    traces: Vec<Trace>,
    /// `(trace, segment)` of every segment.
    segs: Vec<(usize, usize)>,
}

fn temp_root() -> PathBuf {
    std::env::temp_dir().join(format!("escope-reader-fuzz-{}", std::process::id()))
}

/// A directory under [`temp_root`], removed when dropped (pass or fail), with `temp_root` when
/// that is left empty.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = temp_root().join(name);
        let _ = std::fs::remove_dir_all(&dir);
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_dir(temp_root());
    }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(build_fixture)
}

fn build_fixture() -> Fixture {
    let scratch = Scratch::new("fixture");
    let root = scratch.0.clone();
    std::fs::create_dir_all(&root).unwrap();
    let mut traces = Vec::new();

    // Raw sealed segments.
    let dir = root.join("raw");
    let store = new_store();
    let mut w = writer(&dir, 9_000, u64::MAX, false);
    for round in 0..3 {
        capture(&store, round * 150, 150);
        w.flush_all(store.reader(), CLOCK, &mut symbol).unwrap();
    }
    w.finish().unwrap();
    traces.push(read_trace("raw", &dir));

    // Archived sealed segments (all but the last are lz4 archives).
    let dir = root.join("archived");
    let store = new_store();
    let mut w = writer(&dir, 9_000, u64::MAX, true);
    for round in 0..3 {
        capture(&store, 1_000 + round * 150, 150);
        w.flush_all(store.reader(), CLOCK, &mut symbol).unwrap();
    }
    w.finish().unwrap();
    traces.push(read_trace("archived", &dir));

    // A capture still running: retention deleted its first segments, it went on with a second
    // store (seqs continue on disk), its last segment is not sealed.
    let dir = root.join("running");
    let (a, b) = (new_store(), new_store());
    let mut w = writer(&dir, 7_000, 40_000, false);
    capture(&a, 2_000, 300);
    w.flush_all(a.reader(), CLOCK, &mut symbol).unwrap();
    w.continue_with(a.reader());
    capture(&b, 2_300, 120);
    w.flush_all(b.reader(), CLOCK, &mut symbol).unwrap();
    drop(w);
    traces.push(read_trace("running", &dir));

    // One big segment (several seek points), saved whole.
    let dir = root.join("saved");
    let store = new_store();
    capture(&store, 5_000, 500);
    persist::save(store.reader(), &dir, CLOCK, &mut symbol).unwrap();
    traces.push(read_trace("saved", &dir));

    drop(scratch);
    let segs = traces
        .iter()
        .enumerate()
        .flat_map(|(t, tr)| (0..tr.segs.len()).map(move |s| (t, s)))
        .collect();
    Fixture { traces, segs }
}

fn read_trace(name: &'static str, dir: &Path) -> Trace {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).unwrap())
        })
        .collect();
    files.sort();
    let manifest = segments::read_manifest(dir).unwrap();
    let mut segs = Vec::new();
    for meta in &manifest.segments {
        let raw = segments::read_segment(dir, meta).unwrap();
        let mut frames = Vec::new();
        let mut footer = None;
        let mut pos = HEADER_LEN;
        while let Some((record, next)) = segment::frame_at(&raw, pos) {
            if let Record::Footer(f) = record {
                footer = Some(*f);
            }
            frames.push((pos, next));
            pos = next;
        }
        assert_eq!(pos, raw.len(), "{name}: {} reads whole", meta.file);
        segs.push(Seg {
            file: meta.file.clone(),
            archived: meta.archived,
            raw,
            frames,
            footer,
        });
    }
    assert!(segs.len() >= 3 || name == "saved", "{name}: {}", segs.len());
    let mut loading = Loading::eager(dir).unwrap();
    while loading.step(&mut map).unwrap() {}
    let loaded = loading.finish();
    let r = &loaded.report;
    assert!(
        r.damaged.is_empty() && r.torn.is_empty() && r.gaps == 0,
        "{name}: {r:?}"
    );
    let log = &loaded.reader.log();
    let first = log.first_seq();
    let events: Vec<Option<Ev>> = (first..=log.last_seq())
        .map(|s| {
            log.get(s).map(|e| Ev {
                ts: e.header.ts,
                kind: e.header.kind,
                payload: e.payload.to_vec(),
            })
        })
        .collect();
    let count = events.iter().flatten().count() as u64;
    assert_eq!(count, r.events, "{name}");
    let ts = events
        .iter()
        .flatten()
        .fold((i64::MAX, i64::MIN), |(lo, hi), e| {
            (lo.min(e.ts), hi.max(e.ts))
        });
    // The intact trace opens paged too (where it can), and reads the same.
    let paged = load_to_end(Loading::new(dir)).unwrap();
    let plog = paged.reader.log();
    assert_eq!(plog.last_seq(), log.last_seq(), "{name}");
    // (Synthetic keys are numbered as symbols come: in another order when paged.)
    let plain = |e: elixir_scope_core::formats::event::EventRef| {
        let mut h = e.header;
        for w in [&mut h.pid, &mut h.peer, &mut h.module, &mut h.function] {
            if persist::is_synthetic(*w) {
                *w = 0;
            }
        }
        (e.seq, h, e.payload.to_vec())
    };
    for s in first..=log.last_seq() {
        assert_eq!(
            plog.get(s).map(plain),
            log.get(s).map(plain),
            "{name} seq {s}"
        );
    }
    Trace {
        name,
        files,
        manifest,
        segs,
        first,
        events,
        count,
        ts,
    }
}

// ---------------------------------------------------------------------------------------------
// Mutations.

/// A mutation log: what was done to the input, for the failure report.
#[derive(Default)]
struct Log {
    lines: Vec<String>,
    /// Some mutation may have added intact-looking frames (inserted, spliced, forged or
    /// CRC-fixed bytes): the records read are no longer exactly a prefix of the original's.
    adds_frames: bool,
    /// Frames were written with valid CRCs (forged or CRC-fixed): their content is what the
    /// mutation made it.
    forged: bool,
    /// Events of forged frames, by seq: loaded stores may hold them.
    forged_seqs: HashSet<u64>,
    /// Frames of a segment may be missing midway or out of order (ranges removed, duplicated
    /// or spliced; an archive's compressed bytes changed, whose matches can copy any range).
    /// A state then may not get its own payload when loaded whole or carried into a window
    /// (see `a_state_whose_predecessor_was_lost_gets_its_own_payload_or_none`), and a frame
    /// from later can start a window early.
    reorders: bool,
    /// The MANIFEST was changed (its ranges may be anything).
    manifest_changed: bool,
    /// A footer was forged (its index and counts are believed when plausible).
    forged_footer: bool,
    /// Bytes of another trace were spliced in.
    foreign: bool,
    /// Some events may be in the trace twice now: frames duplicated or spliced within it, a
    /// segment copied over another or listed twice (MANIFEST changes can do that), a copy of a
    /// segment under another name. Summaries count those twice (see
    /// `summaries_count_repeated_events_once`).
    may_repeat: bool,
}

impl Log {
    fn note(&mut self, s: String) {
        self.lines.push(s);
    }
}

/// A position in `bytes`: anywhere, or at or near a frame start (its length or CRC field).
fn position(rng: &mut Rng, len: usize, frames: &[(usize, usize)]) -> usize {
    if len == 0 {
        return 0;
    }
    if !frames.is_empty() && rng.chance(50) {
        let (start, _) = frames[rng.idx(frames.len())];
        return (start + rng.idx(10)).min(len - 1);
    }
    rng.idx(len)
}

fn take_range(rng: &mut Rng, len: usize, frames: &[(usize, usize)]) -> (usize, usize) {
    if len == 0 {
        return (0, 0);
    }
    if !frames.is_empty() && rng.chance(50) {
        // Whole frames.
        let a = rng.idx(frames.len());
        let b = (a + 1 + rng.idx(3)).min(frames.len());
        let (from, to) = (frames[a].0, frames[b - 1].1);
        if to <= len {
            return (from, to - from);
        }
    }
    let from = rng.idx(len);
    let n = 1 + rng.idx((len - from).min(300));
    (from, n)
}

/// Another segment to splice from: its name, bytes, and whether it is of another trace.
type Other<'a> = &'a mut dyn FnMut(&mut Rng) -> (String, Vec<u8>, bool);

/// One byte-level mutation of `bytes` (a segment whose original frames were `frames`).
/// `other` gives the bytes of another segment to splice from.
fn mutate_bytes(
    rng: &mut Rng,
    bytes: &mut Vec<u8>,
    frames: &[(usize, usize)],
    other: Other,
    log: &mut Log,
) {
    let len = bytes.len();
    match rng.below(100) {
        0..=17 => {
            let (pos, bit) = (position(rng, len, frames), rng.below(8));
            if pos < len {
                bytes[pos] ^= 1 << bit;
            }
            log.note(format!("flip bit {bit} of byte {pos}"));
        }
        18..=29 => {
            let pos = position(rng, len, frames);
            let n = 1 + rng.idx(16);
            let new = match rng.below(3) {
                0 => vec![0; n],
                1 => vec![0xff; n],
                _ => rng.bytes(n),
            };
            for (i, b) in new.iter().enumerate() {
                if let Some(x) = bytes.get_mut(pos + i) {
                    *x = *b;
                }
            }
            log.note(format!("overwrite {n} bytes at {pos} with {new:02x?}"));
        }
        30..=41 => {
            let to = match rng.below(4) {
                0 => rng.idx(HEADER_LEN + 2),
                1 if !frames.is_empty() => {
                    let (s, e) = frames[rng.idx(frames.len())];
                    s + rng.idx(e - s + 1)
                }
                _ => rng.idx(len + 1),
            }
            .min(len);
            bytes.truncate(to);
            log.note(format!("truncate to {to} of {len} bytes"));
        }
        42..=51 => {
            let pos = rng.idx(len + 1);
            let big = rng.chance(20);
            let n = 1 + rng.idx(if big { 2_000 } else { 12 });
            let new = rng.bytes(n);
            bytes.splice(pos..pos, new);
            log.adds_frames = true;
            log.note(format!("insert {n} random bytes at {pos}"));
        }
        52..=57 => {
            let (from, n) = take_range(rng, len, frames);
            bytes.drain(from..from + n);
            log.adds_frames = true;
            log.reorders = true;
            log.note(format!("remove {n} bytes at {from}"));
        }
        58..=67 => {
            let (from, n) = take_range(rng, len, frames);
            let copy = bytes[from..from + n].to_vec();
            let to = if !frames.is_empty() && rng.chance(60) {
                frames[rng.idx(frames.len())].0.min(len)
            } else {
                rng.idx(len + 1)
            };
            bytes.splice(to..to, copy);
            log.adds_frames = true;
            log.may_repeat = true;
            log.reorders = true;
            log.note(format!("duplicate {n} bytes from {from} at {to}"));
        }
        68..=74 => {
            let (name, src, foreign) = other(rng);
            let (from, n) = take_range(rng, src.len(), &[]);
            let to = if !frames.is_empty() && rng.chance(60) {
                frames[rng.idx(frames.len())].0.min(len)
            } else {
                rng.idx(len + 1)
            };
            let replace = rng.chance(50);
            let end = if replace { (to + n).min(len) } else { to };
            bytes.splice(to..end, src[from..from + n].iter().copied());
            log.adds_frames = true;
            log.may_repeat = true;
            log.reorders = true;
            log.foreign |= foreign;
            log.note(format!(
                "splice {n} bytes from {from} of {name} at {to} ({})",
                if replace { "replacing" } else { "inserted" }
            ));
        }
        75..=82 if !frames.is_empty() => {
            let f = rng.idx(frames.len());
            let start = frames[f].0;
            let value: u32 = match rng.below(6) {
                0 => u32::MAX,
                1 => MAX_RECORD as u32,
                2 => MAX_RECORD as u32 + 1,
                3 => 0,
                4 => (frames[f].1 - start - 8) as u32 + 1 + rng.below(3) as u32,
                _ => rng.next() as u32,
            };
            if start + 4 <= len {
                bytes[start..start + 4].copy_from_slice(&value.to_le_bytes());
            }
            log.note(format!(
                "length field of frame {f} (at {start}) set to {value}"
            ));
        }
        83..=91 if !frames.is_empty() => crc_fixed(rng, bytes, frames, log),
        _ => {
            // The header: magic or version.
            if len >= HEADER_LEN {
                if rng.chance(50) {
                    let v: u32 = rng.pick(&[0, 1, 2, 3, u32::MAX, 0x0100_0002]);
                    bytes[8..12].copy_from_slice(&v.to_le_bytes());
                    log.note(format!("version set to {v}"));
                } else {
                    let pos = rng.idx(8);
                    bytes[pos] ^= 1 << rng.below(8);
                    log.note(format!("magic byte {pos} flipped"));
                }
            } else {
                log.note("header left (too short)".into());
            }
        }
    }
}

/// Mutates the body of one frame, then fixes its length and CRC so it passes the checksum.
fn crc_fixed(rng: &mut Rng, bytes: &mut Vec<u8>, frames: &[(usize, usize)], log: &mut Log) {
    let f = rng.idx(frames.len());
    let (start, end) = frames[f];
    if end > bytes.len() {
        log.note(format!("crc-fixed mutation of frame {f} skipped (gone)"));
        return;
    }
    let mut body = bytes[start + 8..end].to_vec();
    let what = match rng.below(5) {
        0 => {
            let p = rng.idx(body.len());
            body[p] ^= 1 << rng.below(8);
            format!("flip at body byte {p}")
        }
        1 => {
            let p = rng.idx(body.len());
            let v = rng.byte();
            body[p] = v;
            format!("body byte {p} set to {v:#04x}")
        }
        2 => {
            let p = rng.idx(body.len() + 1);
            let new = rng.bytes_in(1, 8);
            let s = format!("insert {new:02x?} at body byte {p}");
            body.splice(p..p, new);
            s
        }
        3 => {
            let to = rng.idx(body.len());
            body.truncate(to);
            format!("body cut to {to} bytes")
        }
        _ => {
            // A msgpack integer marker turned into a wider one: values grow huge.
            let p = rng.idx(body.len());
            let v = rng.pick(&[0xcc, 0xcd, 0xce, 0xcf, 0xd3, 0xc4, 0xc5, 0xc6, 0xdc, 0xdd]);
            body[p] = v;
            format!("body byte {p} set to marker {v:#04x}")
        }
    };
    let frame = raw_frame(&body);
    log.adds_frames = true;
    log.forged = true;
    note_forged(&frame, log);
    bytes.splice(start..end, frame);
    log.note(format!(
        "crc-fixed mutation of frame {f} (at {start}): {what}"
    ));
}

/// `s`, cut to a line's length.
fn short(mut s: String) -> String {
    if s.len() > 240 {
        let mut at = 200;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
        s.push_str(" ...");
    }
    s
}

/// A frame of `body` with its length and CRC right.
fn raw_frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Records what a forged frame holds (the seq of its event, a footer).
fn note_forged(frame: &[u8], log: &mut Log) {
    match segment::frame_at(frame, 0) {
        Some((Record::Event { seq, .. }, _)) => {
            log.forged_seqs.insert(seq);
            log.note(format!("  (the frame reads as the event of seq {seq})"));
        }
        Some((Record::Footer(_), _)) => {
            log.forged_footer = true;
            log.note("  (the frame reads as a footer)".into());
        }
        Some((r, _)) => log.note(short(format!("  (the frame reads as {r:?})"))),
        None => log.note("  (the frame reads as nothing)".into()),
    }
}

/// A forged record: any kind, with values from the edges.
fn forged_record(rng: &mut Rng, seg: Option<&Seg>, last_seq: u64, out: &mut Vec<u8>) -> String {
    let words = [
        0u64,
        3,
        5,
        7,
        9,
        11,
        13,
        15,
        17,
        20,
        22,
        24,
        31,
        33,
        103,
        4,
        u64::MAX,
    ];
    let payload: Vec<u8> = match rng.below(6) {
        0 => Vec::new(),
        1 => rng.bytes_in(0, 40),
        2 => {
            let mut p = vec![131, 104, 2, 119, rng.byte()];
            p.extend(rng.bytes_in(0, 10));
            p
        }
        3 => {
            let mut p = vec![131, 116];
            p.extend_from_slice(&(rng.edgy(2) as u32).to_be_bytes());
            p.extend(rng.bytes_in(0, 20));
            p
        }
        4 => vec![rng.byte(); rng.idx(5_000)],
        _ => {
            let mut p = vec![131, 119, rng.byte()];
            p.extend(rng.bytes_in(0, 6));
            p
        }
    };
    let record = match rng.below(10) {
        0..=4 => {
            let kind = if rng.chance(80) {
                rng.below(15) as u8
            } else {
                rng.byte()
            };
            let seq = match rng.below(4) {
                0 => rng.edgy(last_seq),
                1 => last_seq + 1 + rng.below(5),
                2 => last_seq.saturating_sub(rng.below(50)),
                // Far, but within the holes a loader leaves (2^24).
                _ => last_seq + rng.below(1 << 20),
            };
            let peer = if kind == Kind::Var as u8 {
                rng.edgy(seq)
            } else {
                rng.pick(&words)
            };
            Record::Event {
                seq,
                ts: rng.edgy_i64((seq as i64).wrapping_mul(10)),
                pid: rng.pick(&words),
                peer,
                module: rng.pick(&words),
                function: rng.pick(&words),
                arity: rng.byte(),
                kind,
                flags: if rng.chance(50) {
                    flags::STATE_UNCHANGED
                } else {
                    rng.byte()
                },
                payload: &payload,
            }
        }
        5 => Record::Symbol {
            word: rng.pick(&words),
            etf: &payload,
        },
        6 => Record::Clock {
            monotonic: rng.edgy_i64(0),
            system: rng.edgy_i64(0),
            run: rng.edgy(42),
        },
        7 => Record::Stats {
            dropped: rng.edgy(0),
            truncated: rng.edgy(0),
        },
        _ => Record::Footer(Box::new(forged_footer(rng, seg))),
    };
    let desc = match &record {
        Record::Footer(_) => "a footer".to_string(),
        r => short(format!("{r:?}")),
    };
    segment::frame_into(&record, out);
    desc
}

/// A footer made from a real one (or none) with a few fields changed: mostly still plausible,
/// so that readers believe it.
fn forged_footer(rng: &mut Rng, seg: Option<&Seg>) -> Footer {
    let mut f = seg
        .and_then(|s| s.footer.clone())
        .unwrap_or_else(|| Footer {
            events: 3,
            first_seq: 1,
            last_seq: 3,
            kinds: vec![0, 0, 0, 0, 0, 0, 3],
            ..Footer::default()
        });
    let offsets: Vec<u64> = seg
        .map(|s| s.frames.iter().map(|&(a, _)| a as u64).collect())
        .unwrap_or_default();
    let offset = |rng: &mut Rng| -> u64 {
        if !offsets.is_empty() && rng.chance(70) {
            offsets[rng.idx(offsets.len())]
        } else {
            rng.edgy(100)
        }
    };
    let range = f.first_seq..=f.last_seq;
    let mut seq = |rng: &mut Rng| -> u64 {
        if rng.chance(80) && range.end() >= range.start() {
            range.start() + rng.below(range.end() - range.start() + 1)
        } else {
            rng.edgy(*range.end())
        }
    };
    let list = |rng: &mut Rng, seq: &mut dyn FnMut(&mut Rng) -> u64| -> SeqList {
        let mut l = SeqList::default();
        match rng.below(4) {
            0 => {
                l.len = rng.edgy(3);
                l.last = rng.edgy(3);
                l.deltas = serde_bytes::ByteBuf::from(rng.bytes_in(0, 12));
            }
            _ => {
                let mut seqs: Vec<u64> = (0..rng.idx(12)).map(|_| seq(rng)).collect();
                seqs.sort_unstable();
                seqs.into_iter().for_each(|s| l.push(s));
            }
        }
        l
    };
    let pids = [3u64, 5, 7, 9, 11, 13, 103, 20, 0, u64::MAX];
    for _ in 0..1 + rng.below(3) {
        match rng.below(16) {
            0 => f.events = rng.edgy(f.events),
            1 => {
                f.first_seq = rng.edgy(f.first_seq);
                f.last_seq = rng.edgy(f.last_seq);
            }
            2 => {
                let n = rng.idx(20);
                f.kinds = (0..n).map(|_| rng.edgy(0)).collect();
            }
            3 => {
                let n = rng.idx(4);
                f.pids = (0..n).map(|_| (rng.pick(&pids), rng.edgy(10))).collect();
            }
            4 => {
                let n = rng.idx(4);
                f.states = (0..n)
                    .map(|_| (rng.pick(&pids), (0..rng.idx(5)).map(|_| seq(rng)).collect()))
                    .collect();
            }
            5 => {
                let n = rng.idx(f.pids.len() + 2);
                f.last_states = Some(
                    (0..n)
                        .map(|_| {
                            let o = offset(rng);
                            let po = if rng.chance(70) {
                                offset(rng).min(o)
                            } else {
                                o
                            };
                            (rng.pick(&pids), o, po)
                        })
                        .collect(),
                );
            }
            6 => f.last_states = None,
            7 => {
                let n = rng.idx(4);
                f.seeks = (0..n)
                    .map(|_| (seq(rng), rng.edgy_i64(0), offset(rng)))
                    .collect();
                f.seeks.sort_unstable();
            }
            8 => {
                if let Some(s) = f.seeks.get_mut(0) {
                    s.2 = offset(rng);
                }
            }
            9 => {
                let n = rng.idx(4);
                f.tags = (0..n)
                    .map(|_| {
                        (
                            rng.pick(&["tick", "tock", "", "é"]).to_string(),
                            rng.edgy(1),
                        )
                    })
                    .collect();
            }
            10 => {
                f.symbols = (0..rng.idx(6))
                    .map(|_| {
                        let etf = if rng.chance(50) {
                            symbol(rng.pick(&pids)).unwrap()
                        } else {
                            rng.bytes_in(0, 12)
                        };
                        (rng.pick(&pids), serde_bytes::ByteBuf::from(etf))
                    })
                    .collect()
            }
            11 => f.clock = Some((rng.edgy_i64(0), rng.edgy_i64(0), rng.edgy(42))),
            12 => f.index = None,
            13 => {
                let index = f.index.get_or_insert_with(SegmentIndex::default);
                match rng.below(3) {
                    0 => {
                        index.pids = (0..rng.idx(4))
                            .map(|_| (rng.pick(&pids), list(rng, &mut seq), list(rng, &mut seq)))
                            .collect()
                    }
                    1 => {
                        if let Some(p) = index.pids.get_mut(0) {
                            if rng.chance(50) {
                                p.2 = list(rng, &mut seq);
                            } else {
                                p.1 = list(rng, &mut seq);
                            }
                        }
                    }
                    _ => {
                        index.spawns = (0..rng.idx(3))
                            .map(|_| (rng.pick(&pids), seq(rng)))
                            .collect();
                        index.exits = (0..rng.idx(3))
                            .map(|_| (rng.pick(&pids), seq(rng)))
                            .collect();
                    }
                }
            }
            14 => {
                let index = f.index.get_or_insert_with(SegmentIndex::default);
                match rng.below(3) {
                    0 => {
                        index.tags = (0..rng.idx(3))
                            .map(|_| ("tick".to_string(), list(rng, &mut seq)))
                            .collect()
                    }
                    1 => {
                        index.modules = (0..rng.idx(3))
                            .map(|_| (rng.pick(&[31u64, 33, 0, 5]), list(rng, &mut seq)))
                            .collect()
                    }
                    _ => {
                        index.functions = (0..rng.idx(3))
                            .map(|_| {
                                let m = rng.pick(&[31u64, 33, 0]);
                                (m, rng.pick(&[13u64, 15, 17]), list(rng, &mut seq))
                            })
                            .collect()
                    }
                }
            }
            _ => {
                f.dropped = rng.edgy(0);
                f.truncated = rng.edgy(0);
            }
        }
    }
    f
}

// ---------------------------------------------------------------------------------------------
// In-memory cases: the segment parsers.

/// The fields of a record a segment reader looks into, exercised.
fn look_into(record: &Record, at: usize, builder: &mut FooterBuilder, prev_state: &mut Vec<u8>) {
    if let Some(ev) = record.as_event() {
        let _ = (ev.data(), ev.tag(), ev.truncated(), ev.shares_payload());
        let _ = Kind::from_u8(ev.header.kind).map(Kind::name);
        if ev.header.kind == Kind::State as u8 {
            let before = elixir_scope_core::formats::etf::body(prev_state);
            let _ = index::changed_keys(before, ev.data());
            prev_state.clear();
            prev_state.extend_from_slice(ev.payload);
        }
    }
    if let Record::Footer(f) = record {
        if f.plausible(f.first_seq, f.last_seq) {
            count("mem: plausible footers read");
        }
        check_footer(f);
    }
    record.note_in(builder, at as u64);
}

/// A footer read from bytes: its checks and seq lists never panic, and a list that decodes is
/// what it says it is.
fn check_footer(f: &Footer) {
    let _ = f.plausible(0, 0);
    let _ = f.plausible(f.first_seq, f.last_seq);
    let _ = f.plausible(1, f.last_seq.wrapping_add(1));
    let Some(index) = &f.index else { return };
    let lists = index
        .pids
        .iter()
        .flat_map(|(_, e, s)| [e, s])
        .chain(index.tags.iter().map(|(_, l)| l))
        .chain(index.modules.iter().map(|(_, l)| l))
        .chain(index.functions.iter().map(|(_, _, l)| l));
    for l in lists {
        for range in [f.first_seq..=f.last_seq, 0..=u64::MAX] {
            if let Some(seqs) = l.decode(range.clone()) {
                ensure!(
                    seqs.len() as u64 == l.len
                        && seqs.last().copied().unwrap_or(0) == l.last
                        && seqs.windows(2).all(|w| w[0] < w[1])
                        && seqs.iter().all(|s| range.contains(s)),
                    "a seq list decoded into {seqs:?}, not what it says: {l:?}"
                );
            }
        }
    }
}

/// What `segment::frames` must answer for these bytes' header.
fn header_verdict(bytes: &[u8]) -> Result<(), SegmentError> {
    if bytes.len() < HEADER_LEN {
        return Err(SegmentError::Truncated);
    }
    if &bytes[..8] != MAGIC {
        return Err(SegmentError::BadMagic);
    }
    let v = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if v > segment::VERSION {
        return Err(SegmentError::NewerVersion(v));
    }
    Ok(())
}

/// Reads `bytes` every way a reader does and checks the answers agree; with `orig` (the intact
/// segment the bytes were made from), checks the records kept against its records.
fn check_segment(rng: &mut Rng, bytes: &[u8], orig: Option<&Seg>, log: &Log) {
    let verdict = header_verdict(bytes);
    let scan = segment::read(bytes);
    match (&scan, &verdict) {
        (Err(e), Err(want)) => ensure!(e == want, "read refused with {e:?}, not {want:?}"),
        (Ok(_), Ok(())) => {}
        (s, v) => ensure!(false, "read gave {:?}, header says {v:?}", s.as_ref().err()),
    }
    // Probes at any offset: never a panic, a frame never ends before it starts or past the end.
    for _ in 0..6 {
        let pos = match rng.below(5) {
            0 => usize::MAX - rng.idx(16),
            1 => bytes.len().saturating_sub(rng.idx(12)),
            _ => rng.idx(bytes.len() + 1),
        };
        if let Some((_, next)) = segment::frame_at(bytes, pos) {
            ensure!(
                next > pos && next <= bytes.len(),
                "frame at {pos} ends at {next}"
            );
        }
    }
    let Ok(scan) = scan else {
        count("mem: refused (header)");
        return;
    };
    count(if scan.torn {
        "mem: read, torn"
    } else {
        "mem: read whole"
    });
    if scan.records.iter().any(|r| matches!(r, Record::Footer(_))) {
        count("mem: footer records read");
    }
    let mut frames = segment::frames(bytes).unwrap();
    let (mut at, mut n) = (frames.valid_len() as usize, 0usize);
    ensure!(at == HEADER_LEN, "frames start at {at}");
    let mut builder = FooterBuilder::default();
    let mut prev_state = Vec::new();
    let mut starts = Vec::new();
    while let Some(record) = frames.next() {
        let end = frames.valid_len() as usize;
        ensure!(
            end > at && end <= bytes.len(),
            "record {n} spans {at}..{end}"
        );
        let again = segment::frame_at(bytes, at);
        ensure!(
            again.as_ref() == Some(&(record.clone(), end)),
            "frame_at({at}) disagrees with the iterator"
        );
        ensure!(
            scan.records.get(n) == Some(&record),
            "read and frames disagree at record {n}"
        );
        look_into(&record, at, &mut builder, &mut prev_state);
        starts.push(at);
        at = end;
        n += 1;
    }
    ensure!(
        n == scan.records.len() && at as u64 == scan.valid_len,
        "read kept {} records up to {}, frames {n} up to {at}",
        scan.records.len(),
        scan.valid_len
    );
    ensure!(
        frames.torn() == (at < bytes.len()) && scan.torn == frames.torn(),
        "torn flags wrong"
    );
    // A footer built from whatever was read survives a round trip through a frame.
    let built = builder.finish();
    let framed = segment::frame(&Record::Footer(Box::new(built.clone())));
    match segment::frame_at(&framed, 0) {
        Some((Record::Footer(back), end)) => {
            ensure!(
                *back == built && end == framed.len(),
                "built footer round trip"
            )
        }
        _ => ensure!(false, "built footer does not read back"),
    }
    let Some(orig) = orig else { return };
    // Frames wholly before the first changed byte past the header are intact: all read, equal;
    // with only in-place changes and cuts, nothing after them is.
    let d = (HEADER_LEN..)
        .find(|&i| i >= bytes.len() || i >= orig.raw.len() || bytes[i] != orig.raw[i])
        .unwrap_or(usize::MAX);
    let intact = orig.frames.iter().take_while(|f| f.1 <= d).count();
    let intact = if bytes.len() > orig.raw.len() && d >= orig.raw.len() {
        orig.frames.len()
    } else {
        intact
    };
    ensure!(
        n >= intact,
        "only {n} records read, {intact} frames are intact (first change at {d})"
    );
    for (k, &(start, _)) in orig.frames.iter().take(intact).enumerate() {
        let want = segment::frame_at(&orig.raw, start).map(|r| r.0);
        ensure!(
            starts[k] == start && scan.records.get(k) == want.as_ref(),
            "record {k} is not the original's"
        );
    }
    if !log.adds_frames {
        ensure!(
            n == intact,
            "{n} records read, only {intact} frames are intact (first change at {d})"
        );
    }
}

fn mem_case(seed: u64, case: u64, verbose: bool) {
    let fx = fixture();
    let mut rng = Rng::for_case(seed, 1, case);
    let mut log = Log::default();
    let kind = rng.below(100);
    let (bytes, orig) = if kind < 8 {
        // Random bytes, sometimes after a valid header.
        let mut b = if rng.chance(50) {
            segment::header().to_vec()
        } else {
            Vec::new()
        };
        let big = rng.chance(10);
        let n = rng.idx(if big { 4_096 } else { 64 });
        b.extend(rng.bytes(n));
        log.note(format!("{} random bytes", b.len()));
        (b, None)
    } else if kind < 14 {
        // Frames with valid CRCs around random bodies: the record decoder takes anything.
        let mut b = segment::header().to_vec();
        for _ in 0..1 + rng.idx(6) {
            let body = rng.bytes_in(1, 60);
            b.extend(raw_frame(&body));
        }
        log.note(format!("{} bytes of random CRC-valid frames", b.len()));
        (b, None)
    } else if kind < 22 {
        // Forged records (any field at its edges) among real frames.
        let (t, s) = fx.segs[rng.idx(fx.segs.len())];
        let seg = &fx.traces[t].segs[s];
        let mut b = seg.raw.clone();
        for _ in 0..1 + rng.idx(3) {
            let mut frame = Vec::new();
            let last = fx.traces[t].first + fx.traces[t].events.len() as u64;
            let desc = forged_record(&mut rng, Some(seg), last, &mut frame);
            let at = if rng.chance(30) || seg.frames.is_empty() {
                b.len()
            } else {
                seg.frames[rng.idx(seg.frames.len())].0.min(b.len())
            };
            b.splice(at..at, frame);
            log.note(format!("forged record at {at}: {desc}"));
        }
        log.adds_frames = true;
        log.forged = true;
        (b, Some(seg))
    } else {
        let (t, s) = fx.segs[rng.idx(fx.segs.len())];
        let seg = &fx.traces[t].segs[s];
        log.note(format!(
            "{} segment {} ({} bytes)",
            fx.traces[t].name,
            seg.file,
            seg.raw.len()
        ));
        let mut b = seg.raw.clone();
        let few = rng.chance(70);
        let ops = 1 + rng.below(if few { 1 } else { 3 });
        for _ in 0..ops {
            let mut other = |rng: &mut Rng| {
                let (t2, s2) = fx.segs[rng.idx(fx.segs.len())];
                let o = &fx.traces[t2].segs[s2];
                let name = format!("{} {}", fx.traces[t2].name, o.file);
                (name, o.raw.clone(), t2 != t)
            };
            mutate_bytes(&mut rng, &mut b, &seg.frames, &mut other, &mut log);
        }
        (b, Some(seg))
    };
    if verbose {
        eprintln!("mem case {case}:\n  {}", log.lines.join("\n  "));
    }
    let result = catch_unwind(AssertUnwindSafe(|| {
        check_segment(&mut rng, &bytes, orig, &log);
    }));
    if let Err(e) = result {
        let mut msg = format!(
            "mem case {case} (seed {seed:#x}): {}\n  mutation:\n    {}",
            panic_text(&*e),
            log.lines.join("\n    ")
        );
        let _ = write!(
            msg,
            "\n  replay: ELIXIR_SCOPE_FUZZ_SEED={seed:#x} ELIXIR_SCOPE_FUZZ_ONLY=mem:{case}"
        );
        panic!("{msg}");
    }
}

// ---------------------------------------------------------------------------------------------
// File cases: loading, summarizing and querying a damaged trace directory.

fn lz4(bytes: &[u8]) -> Vec<u8> {
    let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
    std::io::Write::write_all(&mut enc, bytes).unwrap();
    enc.finish().unwrap()
}

/// Writes `trace`'s files into `dir` (emptied first) with one mutation; returns its log.
fn damaged_copy(rng: &mut Rng, fx: &Fixture, t: usize, dir: &Path) -> Log {
    let trace = &fx.traces[t];
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let mut files: Vec<(String, Vec<u8>)> = trace.files.clone();
    let mut log = Log::default();
    log.note(format!("trace {}", trace.name));
    let seg_file = |files: &[(String, Vec<u8>)], name: &str| -> usize {
        files.iter().position(|(n, _)| n == name).unwrap()
    };
    let s = rng.idx(trace.segs.len());
    let seg = &trace.segs[s];
    let k = seg_file(&files, &seg.file);
    let mut junk: Vec<(String, Option<Vec<u8>>)> = Vec::new();
    match rng.below(100) {
        0..=24 => {
            // The segment's bytes; an archive's compressed bytes, or its contents recompressed.
            if seg.archived && rng.chance(50) {
                log.reorders = true;
                log.may_repeat = true;
                let b = &mut files[k].1;
                let ops = 1 + rng.below(2);
                for _ in 0..ops {
                    let len = b.len();
                    match rng.below(3) {
                        0 => {
                            let p = rng.idx(len);
                            b[p] ^= 1 << rng.below(8);
                            log.note(format!("archive {}: flip a bit of byte {p}", seg.file));
                        }
                        1 => {
                            let p = rng.idx(len);
                            let v = rng.byte();
                            b[p] = v;
                            log.note(format!("archive {}: byte {p} set to {v}", seg.file));
                        }
                        _ => {
                            let to = rng.idx(len + 1);
                            b.truncate(to);
                            log.note(format!("archive {}: cut to {to} of {len}", seg.file));
                        }
                    }
                }
            } else {
                let mut raw = seg.raw.clone();
                log.note(format!("segment {} ({} bytes):", seg.file, raw.len()));
                let ops = 1 + rng.below(2);
                for _ in 0..ops {
                    let mut other = |rng: &mut Rng| {
                        let o = &trace.segs[rng.idx(trace.segs.len())];
                        (o.file.clone(), o.raw.clone(), false)
                    };
                    mutate_bytes(rng, &mut raw, &seg.frames, &mut other, &mut log);
                }
                files[k].1 = if seg.archived { lz4(&raw) } else { raw };
            }
        }
        25..=32 => {
            let len = files[k].1.len();
            let to = match rng.below(4) {
                0 => 0,
                1 => rng.idx(HEADER_LEN + 1),
                _ => rng.idx(len),
            };
            files[k].1.truncate(to);
            log.note(format!("file {} cut to {to} of {len} bytes", seg.file));
        }
        33..=37 => {
            files.remove(k);
            log.note(format!("file {} deleted", seg.file));
        }
        38..=44 if trace.segs.len() > 1 => {
            let o = (s + 1 + rng.idx(trace.segs.len() - 1)) % trace.segs.len();
            let from = seg_file(&files, &trace.segs[o].file);
            if rng.chance(60) {
                files[k].1 = files[from].1.clone();
                log.may_repeat = true;
                log.note(format!(
                    "file {} copied over {}",
                    trace.segs[o].file, seg.file
                ));
            } else {
                let (a, b) = (files[k].1.clone(), files[from].1.clone());
                files[k].1 = b;
                files[from].1 = a;
                log.note(format!(
                    "files {} and {} swapped",
                    seg.file, trace.segs[o].file
                ));
            }
        }
        45..=58 => {
            let m = seg_file(&files, segments::MANIFEST);
            log.may_repeat = true;
            log.manifest_changed = true;
            let b = &mut files[m].1;
            let len = b.len();
            match rng.below(6) {
                0 => {
                    b.clear();
                    log.note("MANIFEST emptied".into());
                }
                1 => {
                    let to = rng.idx(len);
                    b.truncate(to);
                    log.note(format!("MANIFEST cut to {to} of {len}"));
                }
                2 => {
                    let p = rng.idx(len + 1);
                    let new = rng.bytes_in(1, 4);
                    log.note(format!("MANIFEST: insert {new:02x?} at {p}"));
                    b.splice(p..p, new);
                }
                _ => {
                    for _ in 0..1 + rng.below(2) {
                        let p = rng.idx(len);
                        if rng.chance(50) {
                            b[p] ^= 1 << rng.below(8);
                            log.note(format!("MANIFEST: flip a bit of byte {p}"));
                        } else {
                            let v = rng.byte();
                            b[p] = v;
                            log.note(format!("MANIFEST: byte {p} set to {v}"));
                        }
                    }
                }
            }
        }
        59..=64 => {
            let m = seg_file(&files, segments::MANIFEST);
            files.remove(m);
            log.note("MANIFEST deleted".into());
            match rng.below(5) {
                0 => junk.push(("00000099.seg".into(), Some(rng.bytes_in(0, 100)))),
                1 => junk.push(("00000100.seg".into(), None)),
                2 => junk.push(("00000000.seg".into(), Some(segment::header().to_vec()))),
                3 => {
                    let o = &trace.segs[rng.idx(trace.segs.len())];
                    let bytes = files
                        .iter()
                        .find(|(n, _)| *n == o.file)
                        .map(|f| f.1.clone());
                    let name = if o.archived {
                        "00000077.seg.lz4"
                    } else {
                        "00000077.seg"
                    };
                    junk.push((name.into(), bytes));
                    log.may_repeat = true;
                }
                _ => {}
            }
            for (name, bytes) in &junk {
                log.note(format!(
                    "  and {name} ({})",
                    bytes
                        .as_ref()
                        .map_or("a directory".into(), |b| format!("{} bytes", b.len()))
                ));
            }
        }
        65..=77 => {
            let mut m = trace.manifest.clone();
            let n = m.segments.len();
            let i = rng.idx(n);
            let what = match rng.below(12) {
                0 => {
                    m.segments[i].first_seq = rng.edgy(m.segments[i].first_seq);
                    "first_seq"
                }
                1 => {
                    m.segments[i].last_seq = rng.edgy(m.segments[i].last_seq);
                    "last_seq"
                }
                2 => {
                    m.segments[i].footer_at = rng.edgy(m.segments[i].footer_at);
                    "footer_at"
                }
                3 => {
                    m.segments[i].sealed = !m.segments[i].sealed;
                    "sealed"
                }
                4 => {
                    m.segments[i].archived = !m.segments[i].archived;
                    "archived"
                }
                5 => {
                    m.segments[i].first_ts = rng.edgy_i64(m.segments[i].first_ts);
                    m.segments[i].last_ts = rng.edgy_i64(m.segments[i].last_ts);
                    "times"
                }
                6 => {
                    let j = rng.idx(n);
                    m.segments.swap(i, j);
                    "order"
                }
                7 => {
                    let dup = m.segments[i].clone();
                    m.segments.insert(rng.idx(n + 1), dup);
                    "a segment listed twice"
                }
                8 => {
                    m.segments.remove(i);
                    "a segment left out"
                }
                9 => {
                    m.version = rng.pick(&[0, 1, 3, u32::MAX]);
                    "version"
                }
                10 => {
                    m.segments[i].file = rng
                        .pick(&["", ".", "..", "MANIFEST", "nope.seg", "00000001.seg"])
                        .into();
                    "file name"
                }
                _ => {
                    let j = rng.idx(n);
                    let (a, b) = (m.segments[i].first_seq, m.segments[j].last_seq);
                    m.segments[i].last_seq = b;
                    m.segments[j].first_seq = a;
                    "ranges crossed"
                }
            };
            let k = seg_file(&files, segments::MANIFEST);
            files[k].1 = rmp_serde::to_vec(&m).unwrap();
            log.may_repeat = true;
            log.manifest_changed = true;
            log.note(format!("MANIFEST rewritten: {what} of entry {i} changed"));
        }
        78..=89 => {
            // A forged footer, in place of the segment's own (or added after its last frame).
            let mut raw = seg.raw.clone();
            let at = match seg.footer {
                Some(_) => seg.frames.last().unwrap().0,
                None => raw.len(),
            };
            raw.truncate(at);
            let mut frame = Vec::new();
            segment::frame_into(
                &Record::Footer(Box::new(forged_footer(rng, Some(seg)))),
                &mut frame,
            );
            raw.extend_from_slice(&frame);
            log.forged = true;
            log.forged_footer = true;
            log.adds_frames = true;
            log.note(format!("segment {}: footer at {at} forged", seg.file));
            files[k].1 = if seg.archived { lz4(&raw) } else { raw };
        }
        90..=95 => {
            let mut raw = seg.raw.clone();
            let last = trace.first + trace.events.len() as u64;
            for _ in 0..1 + rng.below(3) {
                let mut frame = Vec::new();
                let desc = forged_record(rng, Some(seg), last, &mut frame);
                note_forged(&frame, &mut log);
                let at = if seg.frames.is_empty() {
                    raw.len()
                } else {
                    seg.frames[rng.idx(seg.frames.len())].0.min(raw.len())
                };
                raw.splice(at..at, frame);
                log.note(format!(
                    "segment {}: forged record at {at}: {desc}",
                    seg.file
                ));
            }
            log.forged = true;
            log.adds_frames = true;
            files[k].1 = if seg.archived { lz4(&raw) } else { raw };
        }
        _ => {
            let mut raw = seg.raw.clone();
            if !seg.frames.is_empty() {
                crc_fixed(rng, &mut raw, &seg.frames, &mut log);
            }
            log.note(format!("  in segment {}", seg.file));
            files[k].1 = if seg.archived { lz4(&raw) } else { raw };
        }
    }
    for (name, bytes) in &files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    for (name, bytes) in &junk {
        match bytes {
            Some(b) => std::fs::write(dir.join(name), b).unwrap(),
            None => std::fs::create_dir_all(dir.join(name)).unwrap(),
        }
    }
    log
}

/// Steps `loading` to its end: the store, or the first error.
fn load_to_end(loading: std::io::Result<Loading>) -> std::io::Result<Loaded> {
    let mut loading = loading.inspect_err(|_| count("file: loads refused at the start"))?;
    let mut steps = 0u64;
    loop {
        match loading.step(&mut map) {
            Ok(true) => {
                steps += 1;
                ensure!(steps < 100_000, "loading never ends");
                let (read, total) = (loading.bytes_read(), loading.bytes_total());
                ensure!(read <= total, "read {read} of {total} bytes");
            }
            Ok(false) => return Ok(loading.finish()),
            Err(e) => {
                count("file: loads failing at a step");
                return Err(e);
            }
        }
    }
}

/// Checks a loaded store: every seq reads as an event (its own) or is a hole, no more events
/// than the intact trace had (and forged ones), each one the trace's where nothing was forged,
/// and an index and queries over it that agree with its events.
fn check_loaded(how: &str, loaded: &Loaded, trace: &Trace, log: &Log, window: Option<Window>) {
    let store = &loaded.reader;
    let r = &loaded.report;
    count(match (r.paged > 0, window.is_some()) {
        (true, _) => "file: stores opened paged",
        (false, true) => "file: windows loaded",
        (false, false) => "file: stores loaded whole",
    });
    if r.from_footers > 0 {
        count("file: loads taking states from footers");
    }
    if !r.damaged.is_empty() {
        count("file: loads skipping damaged segments");
    }
    if r.manifest_rebuilt {
        count("file: loads with the manifest rebuilt");
    }
    if r.paged > 0 && log.forged_footer {
        count("file: paged opens believing a forged footer");
    }
    if r.renumbered {
        count("file: loads renumbered");
    }
    let lg = &store.log();
    let (first, last) = (lg.first_seq(), lg.last_seq());
    ensure!(
        last + 1 >= first,
        "{how}: last seq {last} before first {first}"
    );
    let span = last + 1 - first;
    let seqs: Box<dyn Iterator<Item = u64>> = if span > SPAN_CAP {
        Box::new((first..first + SPAN_CAP / 2).chain(last + 1 - SPAN_CAP / 2..=last))
    } else {
        Box::new(first..=last)
    };
    let mut readable = 0u64;
    let compare = !log.foreign && !r.renumbered;
    for seq in seqs {
        let Some(ev) = lg.get(seq) else {
            ensure!(
                lg.is_hole(seq),
                "{how}: seq {seq} is neither an event nor a hole"
            );
            continue;
        };
        readable += 1;
        ensure!(
            ev.seq == seq,
            "{how}: get({seq}) gave the event of seq {}",
            ev.seq
        );
        let h = ev.header;
        ensure!(
            Kind::from_u8(h.kind).is_some(),
            "{how}: seq {seq} has kind {}",
            h.kind
        );
        if !compare || log.forged_seqs.contains(&seq) {
            continue;
        }
        let Some(want) = trace.event(seq) else {
            ensure!(
                log.forged,
                "{how}: seq {seq} loaded, the trace has no such event ({h:?})"
            );
            continue;
        };
        let is_state = h.kind == Kind::State as u8;
        if log.forged && (is_state || h.kind != want.kind) {
            // A forged event can take the seq; a forged state (or symbol: the key states are
            // shared by) can give a later state its payload.
            continue;
        }
        // An unchanged state (or one carried into a window) whose predecessor was lost or
        // moved has its payload marked unknown (PAYLOAD_DROPPED), never another state's: see
        // `a_state_whose_predecessor_was_lost_gets_its_own_payload_or_none`.
        ensure!(
            (h.ts, h.kind) == (want.ts, want.kind),
            "{how}: seq {seq} is {:?}/{} at {}, the trace's is {}/{} at {}",
            Kind::from_u8(h.kind),
            h.flags,
            h.ts,
            want.kind,
            want.ts,
            want.ts
        );
        if h.flags & flags::PAYLOAD_DROPPED == 0 {
            ensure!(
                ev.payload == want.payload.as_slice(),
                "{how}: seq {seq} ({:?}, flags {}) has payload {:?}, the trace's is {:?}",
                Kind::from_u8(h.kind),
                h.flags,
                ev.payload,
                want.payload
            );
        }
        // (A frame from later, moved or forged, starts the window early: what follows it is
        // loaded, as events are taken to be in time order.)
        if let Some(w) = window.filter(|_| !log.reorders && !log.forged) {
            let carried = h.kind == Kind::State as u8;
            ensure!(
                w.until.is_none_or(|u| h.ts <= u) && (carried || w.since.is_none_or(|s| h.ts >= s)),
                "{how}: seq {seq} ({:?}) at {} is outside the window {w:?}",
                Kind::from_u8(h.kind),
                h.ts
            );
        }
    }
    let limit = trace.count + log.forged_seqs.len() as u64;
    ensure!(
        readable <= limit,
        "{how}: {readable} events read back, the trace has {} (+{} forged)",
        trace.count,
        log.forged_seqs.len()
    );
    // The report's counts are of the trace's seqs: far below 2^40 unless seqs were forged
    // (see `a_paged_open_of_a_tail_with_a_repeated_frame_counts_its_gaps` and
    // `a_window_counts_what_it_skips_from_the_segments_not_the_manifest`).
    let skipped = r.skipped;
    if !log.forged {
        ensure!(
            r.gaps < 1 << 40 && r.events < 1 << 40 && skipped < 1 << 40,
            "{how}: the report counts {} gaps, {} events, {} skipped",
            r.gaps,
            r.events,
            r.skipped
        );
    }
    if r.paged == 0 && span <= SPAN_CAP {
        ensure!(
            readable == r.events,
            "{how}: {readable} events read back, the report says {}",
            r.events
        );
    }
    if span > SPAN_CAP {
        return;
    }
    // Queries: all of it, both ways, and one process's.
    let all = query::run(lg, &Filter::default(), u64::MAX);
    ensure!(
        all.events.len() as u64 == readable && all.events.windows(2).all(|w| w[0].seq < w[1].seq),
        "{how}: a query of everything gave {} events (of {readable}), or out of order",
        all.events.len()
    );
    let back = Filter {
        descending: true,
        limit: 100,
        ..Filter::default()
    };
    let page = query::run(lg, &back, u64::MAX);
    ensure!(
        page.events.windows(2).all(|w| w[0].seq > w[1].seq),
        "{how}: a descending query is out of order"
    );
    let idx = store.index();
    let mut pids: Vec<u64> = idx.pids().map(|(p, _)| *p).collect();
    pids.sort_unstable();
    for (&pid, p) in idx.pids() {
        ensure!(
            p.events.windows(2).all(|w| w[0] < w[1]) && p.states.windows(2).all(|w| w[0] < w[1]),
            "{how}: the index lists of pid {pid} are out of order"
        );
        // A paged store's index is its footers': a forged frame (valid CRC) can hold another
        // process's event than the footer says.
        if !log.forged {
            for &s in p.events.iter().chain(&p.states) {
                if let Some(ev) = lg.get(s) {
                    ensure!(
                        ev.header.pid == pid,
                        "{how}: the index lists seq {s} for pid {pid}, its pid is {}",
                        ev.header.pid
                    );
                }
            }
        }
    }
    let (lo, hi) = trace.ts;
    let mid = lo + (hi - lo) / 2;
    let is_statem = |_: u64| false;
    let cb = Callbacks {
        handle_call: 0,
        handle_cast: 0,
        handle_info: 0,
        terminate: 0,
        code_change: 0,
        is_statem: &is_statem,
    };
    for &pid in pids.iter().take(3) {
        let _ = history::state_at(lg, &idx, pid, At::Ts(mid));
        let _ = history::states(lg, &idx, pid, Some(At::Seq(first)), None, true);
        let _ = history::call_stack_at(lg, &idx, pid, At::Seq(last / 2 + first / 2));
        let _ = history::pending_at(lg, &idx, pid, At::Ts(mid), &cb);
        let _ = index::key_changes(lg, &idx, pid, "a");
        let one = Filter {
            pids: vec![pid],
            kinds: KindMask::of(&[Kind::Send, Kind::State, Kind::Var]),
            since: Some(mid),
            ..Filter::default()
        };
        let list = elixir_scope_core::query::candidates(&idx, &one, None);
        let got = query::run_in(lg, list, &one);
        ensure!(
            got.events.iter().all(|e| one.matches(e)),
            "{how}: a query of pid {pid} gave an event it does not match"
        );
    }
    let _ = history::snapshot_at(lg, &idx, At::Ts(mid));
    for tag in ["tick", "tock"] {
        let list = idx.tag(tag);
        ensure!(
            list.windows(2).all(|w| w[0] < w[1]),
            "{how}: the tag list {tag} is out of order"
        );
        let f = Filter {
            kinds: KindMask::of(&[Kind::Send, Kind::Receive]),
            ..Filter::default()
        };
        let _ = query::run_on(lg, list, &f);
    }
}

/// A random window of the trace's times (either end may be open).
fn random_window(rng: &mut Rng, trace: &Trace) -> Window {
    let (lo, hi) = trace.ts;
    let t = |rng: &mut Rng| lo - 20 + rng.below((hi - lo + 40) as u64) as i64;
    let (a, b) = (t(rng), t(rng));
    Window {
        since: (!rng.chance(15)).then_some(a.min(b)),
        until: (!rng.chance(15)).then_some(a.max(b)),
    }
}

fn check_summary(how: &str, dir: &Path, footers: bool, trace: &Trace, log: &Log) {
    let Ok(mut s) = Summarizing::new(dir, footers) else {
        return;
    };
    let mut steps = 0;
    loop {
        match s.step() {
            Ok(true) => {
                steps += 1;
                ensure!(steps < 100_000, "{how}: summarizing never ends");
            }
            Ok(false) => break,
            Err(_) => return,
        }
    }
    let (read, total) = s.progress();
    ensure!(read <= total, "{how}: read {read} of {total} bytes");
    let summary = s.finish();
    count("file: summaries");
    if summary.from_footers > 0 && log.forged_footer {
        count("file: summaries believing a forged footer");
    }
    // Summaries drop repeated events as loads do (see `summaries_count_repeated_events_once`).
    if !log.forged && !log.foreign {
        let most = trace.count;
        ensure!(
            summary.events <= most,
            "{how}: the summary counts {} events, the trace has {most}",
            summary.events
        );
    }
}

fn file_case(seed: u64, case: u64, work: &Path, verbose: bool) {
    let fx = fixture();
    let mut rng = Rng::for_case(seed, 2, case);
    let t = rng.idx(fx.traces.len());
    let trace = &fx.traces[t];
    let dir = work.join("t");
    let log = damaged_copy(&mut rng, fx, t, &dir);
    let window = random_window(&mut rng, trace);
    let single = trace.segs[rng.idx(trace.segs.len())].file.clone();
    let which = rng.below(4);
    if verbose {
        eprintln!("file case {case}:\n  {}", log.lines.join("\n  "));
    }
    let result = catch_unwind(AssertUnwindSafe(|| {
        let _ = segments::read_manifest(&dir);
        let _ = segments::read_manifest_strict(&dir);
        let _ = segments::rebuild_manifest(&dir);
        let _ = persist::trace_clock(&dir);
        // Opened paged where it can be (else loaded whole), as a caller does.
        if let Ok(loaded) = load_to_end(Loading::new(&dir)) {
            check_loaded("load", &loaded, trace, &log, None);
        }
        // Whole, a window, or one segment file (each case one of them: time).
        match which {
            0 | 1 => {
                if let Ok(loaded) = load_to_end(Loading::eager(&dir)) {
                    check_loaded("eager load", &loaded, trace, &log, None);
                }
            }
            2 => {
                if let Ok(loaded) = load_to_end(Loading::window(&dir, window)) {
                    let how = format!("window {window:?}");
                    check_loaded(&how, &loaded, trace, &log, Some(window));
                }
            }
            _ => {
                let path = dir.join(&single);
                let _ = persist::trace_clock(&path);
                if let Ok(loaded) = load_to_end(Loading::new(&path)) {
                    check_loaded(&format!("{single} alone"), &loaded, trace, &log, None);
                }
            }
        }
        check_summary("summary", &dir, true, trace, &log);
        if which.is_multiple_of(2) {
            check_summary("scanned summary", &dir, false, trace, &log);
        }
    }));
    if let Err(e) = result {
        let mut msg = format!(
            "file case {case} (seed {seed:#x}): {}\n  mutation:\n    {}",
            panic_text(&*e),
            log.lines.join("\n    ")
        );
        let _ = write!(
            msg,
            "\n  replay: ELIXIR_SCOPE_FUZZ_SEED={seed:#x} ELIXIR_SCOPE_FUZZ_ONLY=file:{case}"
        );
        panic!("{msg}");
    }
}

// ---------------------------------------------------------------------------------------------
// The runs.

fn run(kind: &'static str, case: impl Fn(u64, u64, bool)) {
    let plan = plan(kind);
    let start = Instant::now();
    fixture();
    let built = start.elapsed();
    let beat = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    watchdog(kind, plan.seed, beat.clone(), done.clone());
    let mut failures = Vec::new();
    let mut failed = 0u64;
    let mut slowest = (Duration::ZERO, 0);
    for &c in &plan.cases {
        beat.store(c, Ordering::Relaxed);
        let t = Instant::now();
        // `case` reports its own failures (with the mutation) by panicking.
        if let Err(e) = catch_unwind(AssertUnwindSafe(|| case(plan.seed, c, plan.verbose))) {
            failed += 1;
            if failures.len() < MAX_REPORTED {
                failures.push(panic_text(&*e));
            }
        }
        slowest = slowest.max((t.elapsed(), c));
    }
    done.store(1, Ordering::Relaxed);
    count(kind);
    eprintln!(
        "reader_fuzz: {} {kind} cases (seed {:#x}) in {:.2?} ({:.2?} building the traces; \
         slowest: case {}, {:.2?}), {failed} failed",
        plan.cases.len(),
        plan.seed,
        start.elapsed(),
        built,
        slowest.1,
        slowest.0
    );
    assert!(
        failed == 0,
        "{failed} of {} {kind} cases failed:\n\n{}",
        plan.cases.len(),
        failures.join("\n\n")
    );
}

#[test]
fn segment_parsers_survive_mutated_and_random_bytes() {
    run("mem", mem_case);
}

#[test]
fn trace_loading_survives_damaged_directories() {
    let work = Scratch::new("work");
    run("file", |seed, case, verbose| {
        file_case(seed, case, &work.0, verbose)
    });
}

// ---------------------------------------------------------------------------------------------
// What the fuzz found: minimal reproducers of the bugs it found, fixed since.

/// `(start, end, seq of its event)` of each frame of a segment.
fn frames_of(bytes: &[u8]) -> Vec<(usize, usize, Option<u64>)> {
    let mut out = Vec::new();
    let mut pos = HEADER_LEN;
    while let Some((record, next)) = segment::frame_at(bytes, pos) {
        out.push((pos, next, record.as_event().map(|e| e.seq)));
        pos = next;
    }
    out
}

fn load_file(path: &Path, window: Window) -> Loaded {
    let mut loading = Loading::window(path, window).unwrap();
    while loading.step(&mut map).unwrap() {}
    loading.finish()
}

/// Was a bug, fixed (persist.rs, `Loader::event` and `Loader::outside`): an unchanged state is written
/// without its payload when its segment already holds its process's state, and the loader
/// gives it the payload of the last state of that process *it loaded*. When frames before it in
/// its segment are missing (a range of whole frames lost) or out of order (a range duplicated
/// or moved earlier), that is another state's payload, or none: the event is loaded with a state
/// that is not its own, flagged neither `PAYLOAD_DROPPED` nor anything else (carried into a
/// window, even its `STATE_UNCHANGED` flag is cleared, so it reads as a changed state). The
/// paged reader marks the same case `PAYLOAD_DROPPED`.
#[test]
fn a_state_whose_predecessor_was_lost_gets_its_own_payload_or_none() {
    let scratch = Scratch::new("repro-state");
    let root = &scratch.0;
    let store = new_store();
    let mut scratch = Vec::new();
    let (x, y) = ([131u8, 97, 1], [131u8, 97, 2]);
    for (i, s) in [x, y, y].iter().enumerate() {
        let h = hdr(Kind::State, 3, 0, 11, 17, i as i64 * 10);
        store.append_state(&h, s, 3, true, &mut scratch);
    }
    // seq 1: X; seq 2: Y; seq 3: Y again, unchanged (on disk without its payload).
    let dir = root.join("trace");
    let m = persist::save(store.reader(), &dir, CLOCK, &mut symbol).unwrap();
    let bytes = segments::read_segment(&dir, &m.segments[0]).unwrap();
    let frames = frames_of(&bytes);
    let frame = |seq: u64| *frames.iter().find(|f| f.2 == Some(seq)).unwrap();
    let (one, two, three) = (frame(1), frame(2), frame(3));
    // (a) The frame of seq 2 lost; (b) a copy of seq 3's frame before seq 1's.
    let mut lost = bytes.clone();
    lost.drain(two.0..two.1);
    let mut moved = bytes.clone();
    let copy = bytes[three.0..three.1].to_vec();
    moved.splice(one.0..one.0, copy);
    let mut wrong = Vec::new();
    for (name, b) in [("lost", &lost), ("moved", &moved)] {
        let path = root.join(format!("{name}.seg"));
        std::fs::write(&path, b).unwrap();
        let whole = Window::default();
        let window = Window {
            since: Some(25),
            until: None,
        };
        for (how, w) in [("whole", whole), ("window", window)] {
            let loaded = load_file(&path, w);
            let log = &loaded.reader.log();
            if let Some(ev) = log.get(3) {
                let ok = ev.payload == y || ev.header.flags & flags::PAYLOAD_DROPPED != 0;
                if !ok {
                    wrong.push(format!(
                        "{name}, {how}: seq 3 has payload {:?} (flags {}), its state is {y:?}",
                        ev.payload, ev.header.flags
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Was a bug, fixed (persist.rs, `Summarizing::step`): a summary counts every segment it is given, while a
/// load skips a segment that does not belong where it is listed (listed twice, or a copy of
/// another: `LoadReport::damaged`) and drops events whose seqs repeat: a segment listed twice
/// in the MANIFEST (or copied over another, or a frame range duplicated) makes the summary
/// count events twice, more than the trace holds and than loading it gives, with nothing in
/// the summary saying so.
#[test]
fn summaries_count_repeated_events_once() {
    let scratch = Scratch::new("repro-summary");
    let root = &scratch.0;
    let dir = root.join("trace");
    let store = new_store();
    let mut w = writer(&dir, 4_000, u64::MAX, false);
    capture(&store, 0, 100);
    w.flush_all(store.reader(), CLOCK, &mut symbol).unwrap();
    let m = w.finish().unwrap();
    assert!(m.segments.len() > 2);
    let events = store.log().last_seq();
    // The first segment listed twice.
    let mut twice = m.clone();
    twice.segments.insert(1, m.segments[0].clone());
    std::fs::write(
        dir.join(segments::MANIFEST),
        rmp_serde::to_vec(&twice).unwrap(),
    )
    .unwrap();
    let mut wrong = Vec::new();
    let loaded = load_file(&dir, Window::default());
    assert_eq!(loaded.report.events, events, "the load skips the repeat");
    for footers in [true, false] {
        let mut s = Summarizing::new(&dir, footers).unwrap();
        while s.step().unwrap() {}
        let summary = s.finish();
        if summary.events != events {
            wrong.push(format!(
                "segment listed twice, footers {footers}: the summary counts {} events, \
                 the trace holds {events}",
                summary.events
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// A trace of a few raw segments written from [`capture`]; the last sealed when `seal`.
fn small_trace(dir: &Path, seal: bool) -> (Store, Manifest) {
    let store = new_store();
    let mut w = writer(dir, 4_000, u64::MAX, false);
    capture(&store, 0, 100);
    w.flush_all(store.reader(), CLOCK, &mut symbol).unwrap();
    let m = if seal {
        w.finish().unwrap()
    } else {
        let m = w.manifest().clone();
        drop(w);
        m
    };
    assert!(m.segments.len() > 2);
    (store, m)
}

/// Was a bug, fixed (paged.rs, `open`: `let tail_gaps = (pages.top - sealed_top) - tail_events;`): when the
/// unsealed last segment holds a frame twice (a duplicated range), `Pages::add_scanned` counts
/// its event twice (`Scanned::events`) while the seqs it covers grow by one: the subtraction
/// underflows. With overflow checks (debug builds) opening the trace panics; in release
/// `LoadReport::gaps` is about 2^64.
#[test]
fn a_paged_open_of_a_tail_with_a_repeated_frame_counts_its_gaps() {
    let scratch = Scratch::new("repro-tail");
    let root = &scratch.0;
    let dir = root.join("trace");
    let (_, m) = small_trace(&dir, false);
    let tail = m.segments.last().unwrap();
    assert!(!tail.sealed);
    let path = dir.join(&tail.file);
    let mut bytes = std::fs::read(&path).unwrap();
    let (start, end, _) = *frames_of(&bytes).iter().rfind(|f| f.2.is_some()).unwrap();
    let copy = bytes[start..end].to_vec();
    bytes.splice(end..end, copy);
    std::fs::write(&path, &bytes).unwrap();
    let loaded = catch_unwind(|| load_file(&dir, Window::default()));
    let loaded = loaded.expect("opening the trace panicked");
    assert!(loaded.report.paged > 0, "opened paged");
    assert_eq!(loaded.report.gaps, 0, "no seq is missing");
}

/// Was a bug, fixed (persist.rs, `Summary::add`): a summary adds its footers' counts with `+=`: footers
/// whose counts are huge (a footer passes `Footer::plausible` with `events` up to 2^64 - 1, as
/// long as its kinds add up to it: nothing bounds `events` by its seq range, nor tag, pid or
/// call counts by `events`) overflow it: a panic with overflow checks (debug builds), counts
/// wrapped around in release.
#[test]
fn summaries_of_footers_with_huge_counts_do_not_overflow() {
    let scratch = Scratch::new("repro-huge-footers");
    let root = &scratch.0;
    let dir = root.join("trace");
    let (store, m) = small_trace(&dir, true);
    for meta in &m.segments {
        let path = dir.join(&meta.file);
        let mut bytes = std::fs::read(&path).unwrap();
        let (start, _) = (meta.footer_at as usize, ());
        let Some((Record::Footer(mut f), _)) = segment::frame_at(&bytes, start) else {
            panic!("no footer in {}", meta.file)
        };
        f.events = 1 << 63;
        f.kinds = vec![0; Kind::ALL.len()];
        f.kinds[Kind::Send as usize] = 1 << 63;
        f.tags = vec![("tick".into(), u64::MAX)];
        bytes.truncate(start);
        bytes.extend(segment::frame(&Record::Footer(f)));
        std::fs::write(&path, &bytes).unwrap();
    }
    let summary = catch_unwind(|| {
        let mut s = Summarizing::new(&dir, true).unwrap();
        while s.step().unwrap() {}
        s.finish()
    });
    let summary = summary.expect("summarizing panicked");
    assert_eq!(
        summary.events,
        store.log().last_seq(),
        "footers claiming more events than their seq range holds are not believed"
    );
}

/// Was a bug, fixed (persist.rs, `Loading::step_segment`, the segments after a window: `skipped +=
/// (m.last_seq + 1).saturating_sub(m.first_seq)` over the manifest's ranges): a damaged
/// MANIFEST's ranges are believed without reading the segments, so `LoadReport::skipped` says
/// anything (2^62 here); a `last_seq` of `u64::MAX` overflows the `+ 1` (a panic with overflow
/// checks), and the sum can overflow too.
#[test]
fn a_window_counts_what_it_skips_from_the_segments_not_the_manifest() {
    let scratch = Scratch::new("repro-skipped");
    let root = &scratch.0;
    let dir = root.join("trace");
    let (store, mut m) = small_trace(&dir, true);
    m.segments.last_mut().unwrap().last_seq = 1 << 62;
    std::fs::write(dir.join(segments::MANIFEST), rmp_serde::to_vec(&m).unwrap()).unwrap();
    let window = Window {
        since: None,
        until: Some(50),
    };
    let loaded = catch_unwind(|| load_file(&dir, window));
    let r = loaded.expect("loading panicked").report;
    // The segments after the window are not read: what they hold is the manifest's word, but
    // never more events than files of their size can hold.
    let bytes: u64 = m
        .segments
        .iter()
        .map(|s| std::fs::metadata(dir.join(&s.file)).map_or(0, |f| f.len()))
        .sum();
    assert!(
        r.skipped <= bytes / segment::MIN_EVENT_FRAME,
        "skipped {} of a trace of {} events ({bytes} bytes)",
        r.skipped,
        store.log().last_seq()
    );
}
