//! Persistence of a capture: writing a store's events to a segment directory as they are stored
//! ([`Writer`]), and loading a directory (or one segment file) back into a read-only store
//! ([`load`]).
//!
//! Events name processes and atoms by words that only mean something in the VM that captured
//! them. Each segment therefore carries a [`Record::Symbol`] (the word's ETF) before the first
//! event using a word, and the loader asks its caller to map every symbol to a key of the reading
//! VM: the word of an existing atom or local pid, or a synthetic key kept in the store's
//! [`Symbols`], which the NIF layer turns back into a term from the ETF. Each segment is
//! self-contained (its own symbols, clock and state payloads), so retention can delete any prefix
//! of segments.

use crate::event::{flags, Header, Kind, PidKey, Seq};
use crate::hash::{WordHasher, WordMap};
use crate::segment::{self, Record};
use crate::segments::{self, Manifest, Policy, Segments};
use crate::store::{Config, Store};
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::io;
use std::path::Path;

/// Whether `key` is a synthetic key of a loaded store. A live VM's keys are immediate terms (a
/// local pid ends in `0b0011`, an atom in `0b00_1011`); synthetic keys end in `0b0000`.
#[inline]
pub const fn is_synthetic(key: u64) -> bool {
    key != 0 && key & 0xF == 0
}

/// What the synthetic keys of a loaded store stand for: the ETF (version byte included) of a
/// process or atom that has no key of its own in the reading VM (a pid of another node or of an
/// earlier run, an atom the reading VM does not know).
#[derive(Debug, Default)]
pub struct Symbols {
    etf: Vec<Box<[u8]>>,
    by_etf: HashMap<Box<[u8]>, u64>,
    /// Names of nodes the reading VM has no atom for, in the order they were first met: the
    /// NIF layer stands in for node `i` with an atom of its own making, so that the processes,
    /// ports and references of those nodes are still real terms.
    nodes: parking_lot::Mutex<Vec<Box<[u8]>>>,
}

/// Nodes without an atom given a stand-in at most; beyond, their terms become descriptions.
pub const MAX_FOREIGN_NODES: usize = 64;

impl Symbols {
    /// The synthetic key of `etf`, made on first use.
    pub fn key_for(&mut self, etf: &[u8]) -> u64 {
        if let Some(&k) = self.by_etf.get(etf) {
            return k;
        }
        self.etf.push(etf.into());
        let key = (self.etf.len() as u64) << 4;
        self.by_etf.insert(etf.into(), key);
        key
    }

    /// The ETF a synthetic key stands for.
    pub fn etf(&self, key: u64) -> Option<&[u8]> {
        if !is_synthetic(key) {
            return None;
        }
        self.etf.get((key >> 4) as usize - 1).map(|b| &b[..])
    }

    /// The synthetic key of a term given by its ETF, if the store has one.
    pub fn key_of(&self, etf: &[u8]) -> Option<u64> {
        self.by_etf.get(etf).copied()
    }

    /// The index of the stand-in for the node named `name` (made on first use), or `None` when
    /// [`MAX_FOREIGN_NODES`] are taken.
    pub fn node_index(&self, name: &[u8]) -> Option<usize> {
        let mut nodes = self.nodes.lock();
        if let Some(i) = nodes.iter().position(|n| &n[..] == name) {
            return Some(i);
        }
        (nodes.len() < MAX_FOREIGN_NODES).then(|| {
            nodes.push(name.into());
            nodes.len() - 1
        })
    }

    /// The names of the nodes given stand-ins, by index.
    pub fn nodes(&self) -> Vec<Box<[u8]>> {
        self.nodes.lock().clone()
    }

    /// How many synthetic keys there are.
    pub fn len(&self) -> usize {
        self.etf.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.etf.is_empty()
    }
}

/// A capture's clock at one instant: monotonic nanoseconds and system nanoseconds since the
/// epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Clock {
    /// `erlang:monotonic_time(nanosecond)`.
    pub monotonic: i64,
    /// `erlang:system_time(nanosecond)` at the same instant.
    pub system: i64,
}

/// Writes a store's events to a segment directory, in seq order, as they are published.
pub struct Writer {
    segments: Segments,
    /// The next seq to write.
    next: Seq,
    /// Words whose symbol the current segment holds.
    known: HashSet<u64, BuildHasherDefault<WordHasher>>,
    /// Processes whose state payload the current segment holds (an unchanged state after it is
    /// written without its payload).
    states: HashSet<PidKey, BuildHasherDefault<WordHasher>>,
    /// The current segment still needs its clock record.
    fresh: bool,
    /// The counters last written.
    stats: Option<(u64, u64)>,
}

/// Why a directory cannot take a new capture.
fn occupied(dir: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "{} already holds a trace; open it with ElixirScope.open/1 or choose an empty directory",
            dir.display()
        ),
    )
}

impl Writer {
    /// Starts writing into `dir`, which must not hold a trace yet (a new capture's seqs start at
    /// 1 again, so it cannot continue an old one).
    ///
    /// # Errors
    /// The file system's, or `AlreadyExists` when `dir` holds segments.
    pub fn create(dir: &Path, policy: Policy) -> io::Result<Writer> {
        if dir.join(segments::MANIFEST).exists() {
            return Err(occupied(dir));
        }
        if let Ok(mut entries) = std::fs::read_dir(dir) {
            if entries.next().is_some() {
                return Err(occupied(dir));
            }
        }
        Ok(Writer {
            segments: Segments::open(dir, policy)?,
            next: 1,
            known: HashSet::default(),
            states: HashSet::default(),
            fresh: true,
            stats: None,
        })
    }

    /// Writes up to `max` events published since the last call (stopping before the first one
    /// still being written), then hands the frames to the OS: from then on they survive a crash
    /// of the VM. `symbol` gives the ETF of a word (`None` when it has none); `clock` is written
    /// at the start of each segment. Returns the number of events written.
    ///
    /// # Errors
    /// The file system's.
    pub fn flush(
        &mut self,
        store: &Store,
        clock: Clock,
        symbol: &mut dyn FnMut(u64) -> Option<Vec<u8>>,
        max: u64,
    ) -> io::Result<u64> {
        let log = store.log();
        let last = log.published_seq().min(self.next.saturating_add(max) - 1);
        let mut written = 0;
        while self.next <= last {
            let Some(ev) = log.get(self.next) else { break };
            self.begin_segment(clock)?;
            let h = &ev.header;
            for word in [h.pid, h.peer_pid(), h.module, h.function] {
                if word != 0 && !self.known.contains(&word) {
                    if let Some(etf) = symbol(word) {
                        self.segments.append(&Record::Symbol { word, etf: &etf })?;
                    }
                    self.known.insert(word);
                }
            }
            let mut payload = ev.payload;
            if h.kind == Kind::State as u8 && !self.states.insert(h.pid) {
                // An unchanged state shares the payload this segment already holds.
                if h.flags & flags::STATE_UNCHANGED != 0 {
                    payload = &[];
                }
            }
            let rotated = self.segments.append(&Record::Event {
                seq: ev.seq,
                ts: h.ts,
                pid: h.pid,
                peer: h.peer,
                module: h.module,
                function: h.function,
                arity: h.arity,
                kind: h.kind,
                flags: h.flags,
                payload,
            })?;
            if rotated {
                self.known.clear();
                self.states.clear();
                self.fresh = true;
                self.stats = None;
            }
            self.next += 1;
            written += 1;
        }
        let s = store.stats();
        if self.stats != Some((s.dropped, s.truncated)) {
            self.begin_segment(clock)?;
            self.stats = Some((s.dropped, s.truncated));
            self.segments.append(&Record::Stats {
                dropped: s.dropped,
                truncated: s.truncated,
            })?;
        }
        self.segments.flush()?;
        Ok(written)
    }

    /// Writes the clock record a segment starts with, if the current one lacks it.
    fn begin_segment(&mut self, clock: Clock) -> io::Result<()> {
        if self.fresh {
            self.fresh = false;
            self.segments.append(&Record::Clock {
                monotonic: clock.monotonic,
                system: clock.system,
            })?;
        }
        Ok(())
    }

    /// Seals the last segment: nothing more is written.
    ///
    /// # Errors
    /// The file system's.
    pub fn finish(self) -> io::Result<Manifest> {
        self.segments.seal()
    }

    /// The next seq to write (every seq below it is on disk).
    pub fn next_seq(&self) -> Seq {
        self.next
    }

    /// The directory's manifest as it stands.
    pub fn manifest(&self) -> &Manifest {
        self.segments.manifest()
    }
}

/// What a symbol maps to in the reading VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mapped {
    /// A key of the reading VM (an existing atom's or local pid's word).
    Key(u64),
    /// No key of its own: a synthetic key standing for this ETF.
    Foreign(Vec<u8>),
}

/// What loading found besides the events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Segment files read.
    pub segments: usize,
    /// Bytes of those files on disk.
    pub bytes: u64,
    /// Events loaded.
    pub events: u64,
    /// Seq in the capture of the first event loaded (above 1 when retention deleted older
    /// segments).
    pub first_seq: u64,
    /// Segment files whose tail was torn or corrupt (the complete frames before it are loaded).
    pub torn: Vec<String>,
    /// Events of the capture missing between loaded ones (a segment lost or corrupt midway).
    pub gaps: u64,
    /// The capture's clock, when a segment recorded it.
    pub clock: Option<Clock>,
    /// The capture's dropped and truncated counters as last recorded.
    pub dropped: u64,
    /// See `dropped`.
    pub truncated: u64,
    /// Events that named a word with no symbol (its field is left empty).
    pub unknown_words: u64,
}

/// A loaded trace: a closed (read-only) store holding its events, with its symbols.
pub struct Loaded {
    /// The store.
    pub store: Store,
    /// What loading found.
    pub report: LoadReport,
}

/// Stored seqs of the capture mapped to seqs of the loaded store: runs of consecutive seqs.
#[derive(Default)]
struct Renumber {
    /// `(first capture seq, first loaded seq, length)`.
    runs: Vec<(u64, u64, u64)>,
}

impl Renumber {
    /// Records that capture seq `seq` became loaded seq `to`.
    fn push(&mut self, seq: u64, to: u64) {
        match self.runs.last_mut() {
            Some((first, loaded, len)) if *first + *len == seq && *loaded + *len == to => *len += 1,
            _ => self.runs.push((seq, to, 1)),
        }
    }

    /// The loaded seq of capture seq `seq`, if it was loaded (the newest run holding it).
    fn get(&self, seq: u64) -> Option<u64> {
        self.runs
            .iter()
            .rev()
            .find(|(first, _, len)| (*first..*first + *len).contains(&seq))
            .map(|(first, loaded, _)| loaded + (seq - first))
    }
}

/// Loads a trace: a segment directory (with its `MANIFEST`) or a single segment file. `map`
/// turns a symbol's ETF into a key of the reading VM (it may give foreign nodes stand-ins in
/// the store's [`Symbols`]); `progress` hears `(bytes read, total)`
/// after each segment. See [`Loading`] to load one segment at a time.
///
/// # Errors
/// As for [`Loading::new`] and [`Loading::step`].
pub fn load(
    path: &Path,
    map: &mut dyn FnMut(&[u8], &Symbols) -> Mapped,
    progress: &mut dyn FnMut(u64, u64),
) -> io::Result<Loaded> {
    let mut loading = Loading::new(path)?;
    while loading.step(map)? {
        progress(loading.bytes_read(), loading.bytes_total());
    }
    Ok(loading.finish())
}

/// A trace being loaded, one segment per [`Loading::step`]. Nothing in the files is trusted: a
/// torn or corrupt frame ends its segment, events keep only the fields their symbols explain, and
/// nothing here panics on any input.
pub struct Loading {
    files: Vec<(std::path::PathBuf, segments::SegmentMeta)>,
    next: usize,
    read: u64,
    total: u64,
    loader: Loader,
    /// The current segment's bytes (one buffer for all: fresh memory is slow to fault in).
    buf: Vec<u8>,
}

impl Loading {
    /// Starts loading `path`: a segment directory or one segment file.
    ///
    /// # Errors
    /// The file system's; `NotFound` for a directory without a manifest; `InvalidData` for an
    /// unreadable manifest.
    pub fn new(path: &Path) -> io::Result<Loading> {
        let files: Vec<(std::path::PathBuf, segments::SegmentMeta)> = if path.is_dir() {
            if !path.join(segments::MANIFEST).exists() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "{} holds no ElixirScope trace (no MANIFEST)",
                        path.display()
                    ),
                ));
            }
            let manifest = segments::read_manifest(path)?;
            manifest
                .segments
                .into_iter()
                .map(|m| (path.to_path_buf(), m))
                .collect()
        } else {
            std::fs::metadata(path)?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
            let archived = name.ends_with(".lz4");
            let meta = segments::SegmentMeta {
                file: name,
                first_seq: 0,
                last_seq: 0,
                first_ts: 0,
                last_ts: 0,
                bytes: 0,
                sealed: true,
                archived,
            };
            vec![(dir, meta)]
        };
        let total = files
            .iter()
            .map(|(dir, m)| std::fs::metadata(dir.join(&m.file)).map_or(0, |md| md.len()))
            .sum();
        let store = Store::new(Config {
            max_events: crate::store::MAX_EVENTS,
            max_bytes: crate::store::MAX_BYTES,
            ..Config::default()
        })
        .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Loading {
            files,
            next: 0,
            read: 0,
            total,
            buf: Vec::new(),
            loader: Loader {
                store,
                symbols: Symbols::default(),
                words: WordMap::default(),
                renumber: Renumber::default(),
                last_state: WordMap::default(),
                last_seq: None,
                report: LoadReport::default(),
            },
        })
    }

    /// Loads the next segment; false when none is left.
    ///
    /// # Errors
    /// The file system's, or `InvalidData` for a segment that is not one this version reads.
    pub fn step(&mut self, map: &mut dyn FnMut(&[u8], &Symbols) -> Mapped) -> io::Result<bool> {
        let Some((dir, meta)) = self.files.get(self.next) else {
            return Ok(false);
        };
        self.next += 1;
        segments::read_segment_into(dir, meta, &mut self.buf)?;
        let mut frames = segment::frames(&self.buf).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", meta.file))
        })?;
        for record in frames.by_ref() {
            self.loader.take(record, map);
        }
        if frames.torn() {
            self.loader.report.torn.push(meta.file.clone());
        }
        self.loader.report.segments += 1;
        self.read += std::fs::metadata(dir.join(&meta.file)).map_or(0, |m| m.len());
        Ok(true)
    }

    /// Bytes of the segments loaded so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// Bytes of all the segments.
    pub fn bytes_total(&self) -> u64 {
        self.total
    }

    /// The segments loaded so far and in all.
    pub fn segments(&self) -> (usize, usize) {
        (self.next, self.files.len())
    }

    /// The read-only store of what was loaded.
    pub fn finish(self) -> Loaded {
        let mut loader = self.loader;
        loader.report.bytes = self.total;
        loader.report.truncated = loader.report.truncated.max(loader.store.stats().truncated);
        loader.store.log().add_dropped(loader.report.dropped);
        loader.store.close();
        let mut store = loader.store;
        store.set_symbols(loader.symbols);
        Loaded {
            store,
            report: loader.report,
        }
    }
}

struct Loader {
    store: Store,
    symbols: Symbols,
    /// Capture words to keys of the reading VM.
    words: WordMap<u64, u64>,
    renumber: Renumber,
    /// Each process's last state event in the loaded store.
    last_state: WordMap<PidKey, Seq>,
    /// The capture seq of the last event loaded.
    last_seq: Option<u64>,
    report: LoadReport,
}

impl Loader {
    fn take(&mut self, record: Record, map: &mut dyn FnMut(&[u8], &Symbols) -> Mapped) {
        match record {
            Record::Symbol { word, etf } => {
                let key = match map(etf, &self.symbols) {
                    Mapped::Key(k) => k,
                    Mapped::Foreign(etf) => self.symbols.key_for(&etf),
                };
                self.words.insert(word, key);
            }
            Record::Clock { monotonic, system } => {
                self.report.clock.get_or_insert(Clock { monotonic, system });
            }
            Record::Stats { dropped, truncated } => {
                self.report.dropped = dropped;
                self.report.truncated = truncated;
            }
            Record::Event {
                seq,
                ts,
                pid,
                peer,
                module,
                function,
                arity,
                kind,
                flags: fl,
                payload,
            } => self.event(
                seq,
                Header {
                    ts,
                    pid,
                    peer,
                    module,
                    function,
                    arity,
                    kind,
                    flags: fl,
                },
                payload,
            ),
        }
    }

    fn key(&mut self, word: u64) -> Option<u64> {
        if word == 0 {
            return Some(0);
        }
        let key = self.words.get(&word).copied();
        if key.is_none() {
            self.report.unknown_words += 1;
        }
        key
    }

    fn event(&mut self, seq: u64, mut h: Header, payload: &[u8]) {
        if Kind::from_u8(h.kind).is_none() {
            return;
        }
        let is_var = h.kind == Kind::Var as u8;
        h.pid = self.key(h.pid).unwrap_or(0);
        h.module = self.key(h.module).unwrap_or(0);
        h.function = self.key(h.function).unwrap_or(0);
        if is_var {
            // A variable binding's peer is its call entry's seq: renumbered, or the binding is
            // an orphan whose entry was not loaded.
            if h.peer != 0 {
                match self.renumber.get(h.peer) {
                    Some(entry) => h.peer = entry,
                    None => return,
                }
            }
        } else {
            h.peer = self.key(h.peer).unwrap_or(0);
        }
        match self.last_seq {
            None => self.report.first_seq = seq,
            Some(prev) if seq > prev => self.report.gaps += seq - prev - 1,
            Some(_) => {}
        }
        self.last_seq = Some(seq);
        let log = self.store.log();
        let shared = (h.kind == Kind::State as u8
            && h.flags & flags::STATE_UNCHANGED != 0
            && payload.is_empty())
        .then(|| self.last_state.get(&h.pid).copied())
        .flatten();
        let appended = match shared {
            Some(prev) => log.append_sharing(&h, prev),
            None => log.append(&h, payload),
        };
        if let crate::log::Appended::Stored(to) | crate::log::Appended::StoredWithoutPayload(to) =
            appended
        {
            self.renumber.push(seq, to);
            if h.kind == Kind::State as u8 {
                self.last_state.insert(h.pid, to);
            }
            self.report.events += 1;
        }
    }
}

/// Writes every event `store` holds into `dir` (which must not hold a trace yet) and seals it.
///
/// # Errors
/// The file system's, or `AlreadyExists` when `dir` holds a trace.
pub fn save(
    store: &Store,
    dir: &Path,
    clock: Clock,
    symbol: &mut dyn FnMut(u64) -> Option<Vec<u8>>,
) -> io::Result<Manifest> {
    let mut writer = Writer::create(dir, Policy::default())?;
    while writer.flush(store, clock, symbol, 1 << 20)? > 0 {}
    writer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StateKind;
    use proptest::prelude::*;
    use std::path::PathBuf;

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("escope-persist-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    const CLOCK: Clock = Clock {
        monotonic: -1_000,
        system: 1_700_000_000_000_000_000,
    };

    /// The "ETF" of a word in these tests: a marker byte and the word.
    fn symbol(word: u64) -> Option<Vec<u8>> {
        let mut v = vec![b'w'];
        v.extend_from_slice(&word.to_le_bytes());
        Some(v)
    }

    /// Maps odd words to themselves plus one million (the reading VM's keys) and even words to
    /// synthetic keys.
    fn map(etf: &[u8], _: &Symbols) -> Mapped {
        let word = u64::from_le_bytes(etf[1..9].try_into().unwrap());
        if word % 2 == 1 {
            Mapped::Key(word + 1_000_000)
        } else {
            Mapped::Foreign(etf.to_vec())
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
                let crate::log::Appended::Stored(entry) = entry else {
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
        let manifest = save(&store, &dir, CLOCK, &mut symbol).unwrap();
        assert!(manifest.segments.iter().all(|s| s.sealed));
        let loaded = load_ok(&dir);
        let (a, b) = (store.log(), loaded.store.log());
        assert_eq!(a.last_seq(), b.last_seq());
        assert_eq!(loaded.report.events, a.last_seq());
        assert_eq!(loaded.report.first_seq, 1);
        assert_eq!(loaded.report.clock, Some(CLOCK));
        assert_eq!(
            (loaded.report.dropped, loaded.store.stats().dropped),
            (1, 1)
        );
        assert_eq!((loaded.report.gaps, loaded.report.unknown_words), (0, 0));
        let symbols = loaded.store.symbols().unwrap();
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
        assert!(loaded.store.is_closed());
        assert!(symbols
            .etf(symbols.key_of(&symbol(20).unwrap()).unwrap())
            .is_some());
        assert!(
            save(&store, &dir, CLOCK, &mut symbol).is_err(),
            "never over a trace"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unchanged_states_take_no_bytes_on_disk_within_a_segment() {
        let (dir, dir2) = (temp("states"), temp("states2"));
        let store = sample(400);
        save(&store, &dir, CLOCK, &mut symbol).unwrap();
        let loaded = load_ok(&dir);
        let s = loaded.store.stats();
        assert_eq!(s.payload_bytes, store.stats().payload_bytes);
        // Saving the loaded store writes the same events again.
        save(&loaded.store, &dir2, CLOCK, &mut |k| {
            loaded
                .store
                .symbols()
                .and_then(|s| s.etf(k))
                .map(<[u8]>::to_vec)
                .or_else(|| symbol(k))
        })
        .unwrap();
        let again = load(
            &dir2,
            &mut |etf, _| Mapped::Foreign(etf.to_vec()),
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
                store.append_state(
                    &header(Kind::State, pid, 0, 0),
                    b"same",
                    4,
                    true,
                    &mut scratch,
                );
            }
            total += w.flush(&store, CLOCK, &mut symbol, u64::MAX).unwrap();
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
        let log = loaded.store.log();
        for seq in 1..=log.last_seq() {
            let e = log.get(seq).unwrap();
            assert!(e.header.pid > 1_000_000, "every pid has its symbol");
            if e.header.kind == Kind::State as u8 {
                assert_eq!(e.payload, b"same", "seq {seq}");
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
        save(&sample(10), &dir, CLOCK, &mut symbol).unwrap();
        let m = segments::read_manifest(&dir).unwrap();
        let one = load_ok(&dir.join(&m.segments[0].file));
        assert_eq!(one.report.events, load_ok(&dir).report.events);
        let nothing = temp("nothing");
        std::fs::create_dir_all(&nothing).unwrap();
        assert_eq!(
            load(&nothing, &mut map, &mut |_, _| {})
                .err()
                .unwrap()
                .kind(),
            io::ErrorKind::NotFound
        );
        std::fs::write(nothing.join("x.seg"), b"garbage!!!!!!!!").unwrap();
        let err = load(&nothing.join("x.seg"), &mut map, &mut |_, _| {})
            .err()
            .unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&nothing).unwrap();
    }

    #[test]
    fn foreign_nodes_get_stable_stand_ins_up_to_the_limit() {
        let s = Symbols::default();
        assert_eq!(s.node_index(b"a@h"), Some(0));
        assert_eq!(s.node_index(b"b@h"), Some(1));
        assert_eq!(s.node_index(b"a@h"), Some(0));
        for i in 2..MAX_FOREIGN_NODES {
            assert_eq!(s.node_index(format!("n{i}").as_bytes()), Some(i));
        }
        assert_eq!(s.node_index(b"one@too.many"), None);
        assert_eq!(&s.nodes()[1][..], b"b@h");
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
            save(&store, &dir, CLOCK, &mut symbol).unwrap();
            let m = segments::read_manifest(&dir).unwrap();
            let file = dir.join(&m.segments[0].file);
            let mut bytes = std::fs::read(&file).unwrap();
            let len = bytes.len();
            bytes[at % len] = byte;
            bytes.truncate(len - cut % len);
            std::fs::write(&file, &bytes).unwrap();
            if let Ok(loaded) = load(&dir, &mut map, &mut |_, _| {}) {
                let log = loaded.store.log();
                prop_assert!(log.last_seq() <= store.log().last_seq());
                for seq in 1..=log.last_seq() {
                    let e = log.get(seq).unwrap();
                    prop_assert_eq!(e.payload, store.log().get(seq).unwrap().payload);
                }
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}
