//! Persistence of a capture: writing a store's events to a segment directory as they are stored
//! ([`Writer`]), and loading a directory (or one segment file) back into a read-only store
//! ([`crate::open`]).
//!
//! Events name processes and atoms by words that only mean something in the VM that captured
//! them. Each segment therefore carries a [`Record::Symbol`] (the word's ETF) before the first
//! event using a word, and the loader asks its caller to map every symbol to a key of the reading
//! VM: the word of an existing atom or local pid, or a synthetic key kept in the store's
//! [`Symbols`], which the NIF layer turns back into a term from the ETF. Each segment is
//! self-contained (its own symbols, clock and state payloads), so retention can delete any prefix
//! of segments.

use crate::error::Error;
use crate::event::{flags, EventRef, Header, Kind, PidKey, Seq};
use crate::footer::{Footer, FooterBuilder};
use crate::hash::{WordHasher, WordMap};
use crate::segment::{self, Record};
use crate::segments::{self, Manifest, Policy, Segments};
use crate::store::{Config, Store};
pub use crate::symbols::{is_synthetic, Clock, Symbols};
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::io;
use std::path::Path;

/// Writes a store's events to a segment directory, in seq order, as they are published, ending
/// each sealed segment with its index footer.
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
    /// The current segment's footer.
    footer: FooterBuilder,
    /// The first write error: the segment may end in a partial frame, so nothing more is
    /// written.
    failed: Option<io::Error>,
    /// Added to the seqs of the store being written: the events of the stores written before
    /// it (see [`Writer::continue_with`]).
    base: u64,
    /// Dropped and truncated counts of the stores written before.
    stats_base: (u64, u64),
}

/// Why a directory cannot take a new capture.
fn occupied(dir: &Path) -> io::Error {
    Error::TraceExists {
        path: dir.display().to_string(),
    }
    .into()
}

impl Writer {
    /// Runs `f` with the writer persisting `store`, if any, the store's slot locked meanwhile.
    pub fn with<R>(store: &Store, f: impl FnOnce(Option<&mut Writer>) -> R) -> R {
        let mut slot = store.persist_slot();
        f(slot.as_mut().and_then(|w| w.downcast_mut::<Writer>()))
    }

    /// Takes the writer persisting `store` away from it.
    pub fn take(store: &Store) -> Option<Writer> {
        let w = store.persist_slot().take()?;
        w.downcast::<Writer>().ok().map(|w| *w)
    }

    /// Makes `self` the writer of `store`; `Err(self)` when it has one already.
    pub fn attach(self, store: &Store) -> Result<(), Box<Writer>> {
        let mut slot = store.persist_slot();
        if slot.is_some() {
            return Err(Box::new(self));
        }
        *slot = Some(Box::new(self));
        Ok(())
    }

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
            footer: FooterBuilder::default(),
            failed: None,
            base: 0,
            stats_base: (0, 0),
        })
    }

    /// The seq up to which every event is written (or was a hole).
    pub fn written_seq(&self) -> Seq {
        self.next.saturating_sub(1)
    }

    /// Writes up to `max` events published since the last call, then hands the frames to the
    /// OS: from then on they survive a crash of the VM. `symbol` gives the ETF of a word (`None`
    /// when it has none); `clock` is written at the start of each segment. Segments rotate
    /// between events, each ending with its footer. Returns the number of events written.
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
        if let Some(e) = &self.failed {
            return Err(io::Error::new(e.kind(), e.to_string()));
        }
        self.flush_events(store, clock, symbol, max)
            .inspect_err(|e| self.failed = Some(io::Error::new(e.kind(), e.to_string())))
    }

    fn flush_events(
        &mut self,
        store: &Store,
        clock: Clock,
        symbol: &mut dyn FnMut(u64) -> Option<Vec<u8>>,
        max: u64,
    ) -> io::Result<u64> {
        let log = store.log();
        // A paged store (a followed trace) starts where the trace it follows does.
        self.next = self.next.max(log.first_seq());
        let published = log.published_seq();
        let last = published.min(self.next.saturating_add(max) - 1);
        let mut written = 0;
        while self.next <= last {
            let Some(ev) = log.get(self.next) else {
                // A seq whose writer got no memory never appears (the log counted it dropped).
                if log.is_hole(self.next) {
                    self.next += 1;
                    continue;
                }
                // Still being written: the next flush takes it.
                break;
            };
            self.begin_segment(clock)?;
            // On disk, seqs continue those of the stores written before; so does the entry a
            // variable binding points at.
            let mut disk = ev;
            disk.seq += self.base;
            if disk.header.kind == Kind::Var as u8 && disk.header.peer != 0 {
                disk.header.peer += self.base;
            }
            let h = &disk.header;
            for word in [h.pid, h.peer_pid(), h.module, h.function] {
                if word != 0 && !self.known.contains(&word) {
                    if let Some(etf) = symbol(word) {
                        self.segments.push(&Record::Symbol { word, etf: &etf })?;
                        self.footer.symbol(word, &etf);
                    }
                    self.known.insert(word);
                }
            }
            let is_state = h.kind == Kind::State as u8;
            let mut payload = ev.payload;
            // An unchanged state shares the payload this segment already holds.
            if is_state && self.states.contains(&h.pid) && h.flags & flags::STATE_UNCHANGED != 0 {
                payload = &[];
            }
            let offset = self.segments.current_len();
            self.segments.push(&Record::event(&disk, payload))?;
            self.footer
                .event(&disk, offset, !payload.is_empty() || ev.payload.is_empty());
            if is_state {
                self.states.insert(h.pid);
            }
            self.next += 1;
            written += 1;
            if self.segments.should_rotate() {
                self.write_stats(store, clock)?;
                let footer = self.take_footer();
                self.segments.rotate(Some(&footer))?;
                self.known.clear();
                self.states.clear();
                self.fresh = true;
                self.stats = None;
            }
        }
        let changed = self.write_stats(store, clock)?;
        if written > 0 || changed {
            self.segments.flush()?;
        }
        Ok(written)
    }

    /// Writes every event published so far, in rounds of a million.
    ///
    /// # Errors
    /// The file system's.
    pub fn flush_all(
        &mut self,
        store: &Store,
        clock: Clock,
        symbol: &mut dyn FnMut(u64) -> Option<Vec<u8>>,
    ) -> io::Result<()> {
        while self.flush(store, clock, symbol, 1 << 20)? > 0 {}
        Ok(())
    }

    /// Writes the capture's counters if they changed since last written; whether it did.
    fn write_stats(&mut self, store: &Store, clock: Clock) -> io::Result<bool> {
        let s = store.stats();
        let (dropped, truncated) = (
            s.dropped + self.stats_base.0,
            s.truncated + self.stats_base.1,
        );
        if self.stats == Some((dropped, truncated)) {
            return Ok(false);
        }
        self.begin_segment(clock)?;
        self.stats = Some((dropped, truncated));
        self.footer.stats(dropped, truncated);
        self.segments.push(&Record::Stats { dropped, truncated })?;
        Ok(true)
    }

    /// Goes on with the events of `next_store` (a fresh store that replaces `store`, whose
    /// events are all written): its seq 1 follows the last seq written on disk. Events of
    /// `store` not written (still unpublished) are counted as dropped; holes already were.
    pub fn continue_with(&mut self, store: &Store) {
        let s = store.stats();
        let log = store.log();
        let lost = (self.next..=log.last_seq())
            .filter(|&seq| !log.is_hole(seq))
            .count() as u64;
        self.base = self.on_disk();
        self.next = 1;
        self.stats_base.0 += s.dropped + lost;
        self.stats_base.1 += s.truncated;
    }

    /// Writes the clock record a segment starts with, if the current one lacks it.
    fn begin_segment(&mut self, clock: Clock) -> io::Result<()> {
        if self.fresh {
            self.fresh = false;
            self.footer.clock(clock.monotonic, clock.system, clock.run);
            self.segments.push(&Record::Clock {
                monotonic: clock.monotonic,
                system: clock.system,
                run: clock.run,
            })?;
        }
        Ok(())
    }

    /// Ends the last segment with its footer and seals it: nothing more is written.
    ///
    /// # Errors
    /// The file system's.
    pub fn finish(mut self) -> io::Result<Manifest> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let footer = self.take_footer();
        self.segments.seal(Some(&footer))
    }

    /// The current segment's footer record (the builder starts over).
    fn take_footer(&mut self) -> Record<'static> {
        Record::Footer(Box::new(self.footer.finish()))
    }

    /// The trace directory written.
    pub fn dir(&self) -> &Path {
        self.segments.dir()
    }

    /// Waits until every sealed segment is archived (see [`Segments::wait_archives`]).
    ///
    /// # Errors
    /// The file system's.
    pub fn wait_archives(&mut self) -> io::Result<()> {
        self.segments.wait_archives()
    }

    /// The next seq of the current store to write (every seq below it is on disk, or was a
    /// hole).
    pub fn next_seq(&self) -> Seq {
        self.next
    }

    /// Events on disk: the stores' before, and the current one's up to `next_seq`.
    pub fn on_disk(&self) -> u64 {
        self.base + self.next - 1
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
    /// No key of its own: a synthetic key standing for the trace's encoding, found again by
    /// the reading VM's encoding of the term it decodes to.
    Foreign {
        /// The term as this VM encodes what it decodes to.
        canonical: Vec<u8>,
    },
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
    /// Events not loaded: of an unknown kind, or variable bindings whose call was not loaded.
    pub discarded: u64,
    /// Segments listed but gone when read (a running capture rotated or deleted them).
    pub missing: usize,
    /// Events outside the window asked for (not loaded, not damage).
    pub skipped: u64,
    /// States from before the window, loaded as each process's state at its start.
    pub carried: u64,
    /// Segments before the window whose states came from their footer alone.
    pub from_footers: usize,
    /// Segments left on disk, their events read when a query first needs them (the trace
    /// was opened paged: its footers gave the store its index).
    pub paged: usize,
    /// Segment files skipped whole: unreadable (gone, empty, not a segment, an archive that
    /// does not decompress) or not belonging where they are listed (events that are not the
    /// ones the manifest says, or that repeat seqs already loaded: a copy of another segment).
    pub damaged: Vec<String>,
    /// The manifest was damaged or gone: the segments were found by their file names.
    pub manifest_rebuilt: bool,
    /// Whether some events got store seqs other than their seqs in the trace: a store keeps
    /// the trace's seqs while they follow each other, so only after a gap (a segment lost
    /// midway) or in a window, whose states from before it come first.
    pub renumbered: bool,
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
pub(crate) struct Renumber {
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
            .find(|(first, _, len)| seq >= *first && seq - *first < *len)
            .map(|(first, loaded, _)| loaded + (seq - first))
    }
}

/// Takes a segment that could not be read (`e`, at `path`) for damage, which costs that
/// segment alone: `file` joins `damaged` and the first reason is kept (the error when nothing
/// was readable). The file system failing (EACCES, EMFILE, EIO, ...) is no damage: returned.
pub(crate) fn damage(
    e: io::Error,
    path: &Path,
    file: &str,
    damaged: &mut Vec<String>,
    first: &mut Option<io::Error>,
) -> io::Result<()> {
    match Error::from_io(e, path) {
        e @ Error::Io { .. } => Err(e.into()),
        e => {
            damaged.push(file.to_string());
            first.get_or_insert(e.into());
            Ok(())
        }
    }
}

/// The widest run of missing seqs a loaded store leaves as holes (queries step over them once,
/// when they index the store); a wider one is numbered on.
const MAX_SKIP: u64 = 1 << 24;

/// The segment files of a trace, each with its directory.
type TraceFiles = Vec<(std::path::PathBuf, segments::SegmentMeta)>;

/// The segment files of a trace: a directory's, in manifest order, or one file.
pub(crate) fn trace_files(path: &Path) -> io::Result<TraceFiles> {
    trace_files_rebuilt(path).map(|(files, _)| files)
}

/// [`trace_files`], and whether the manifest was rebuilt from the segment files (it was
/// damaged or gone).
pub(crate) fn trace_files_rebuilt(path: &Path) -> io::Result<(TraceFiles, bool)> {
    if path.is_dir() {
        let (manifest, rebuilt) = match segments::read_manifest_strict(path) {
            Ok(m) => (m, false),
            // A manifest damaged, gone, or not a file: what its segments say, if there are any.
            Err(e @ (Error::NotATrace { .. } | Error::NotARegularFile { .. })) => {
                (segments::rebuild_manifest(path).ok_or(e)?, true)
            }
            // A newer format is refused, not guessed at; the file system failing is said.
            Err(e) => return Err(e.into()),
        };
        let files = manifest.segments.into_iter();
        return Ok((files.map(|m| (path.to_path_buf(), m)).collect(), rebuilt));
    }
    // Refused here when it is not a regular file (a FIFO would block every read).
    drop(crate::fsio::open_regular(path)?);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let archived = name.ends_with(".lz4");
    let meta = segments::SegmentMeta {
        file: name,
        sealed: true,
        archived,
        ..segments::SegmentMeta::default()
    };
    Ok((vec![(dir, meta)], false))
}

/// Bytes on disk of a trace's files (those gone count nothing).
pub(crate) fn files_bytes(files: &[(std::path::PathBuf, segments::SegmentMeta)]) -> u64 {
    files
        .iter()
        .map(|(dir, m)| std::fs::metadata(dir.join(&m.file)).map_or(0, |md| md.len()))
        .sum()
}

/// The frames of a segment's bytes. `None` for the unsealed segment of a directory whose header
/// never reached the disk (a crash right after it was created): it holds nothing.
pub(crate) fn open_frames<'b>(
    dir: &Path,
    meta: &segments::SegmentMeta,
    bytes: &'b [u8],
) -> io::Result<Option<segment::Frames<'b>>> {
    match segment::frames(bytes) {
        Ok(f) => Ok(Some(f)),
        Err(segment::SegmentError::Truncated) if !meta.sealed => Ok(None),
        Err(segment::SegmentError::NewerVersion(version)) => Err(Error::NewerFormat {
            path: dir.join(&meta.file).display().to_string(),
            version,
        }
        .into()),
        Err(_) => Err(Error::NotATrace {
            path: dir.join(&meta.file).display().to_string(),
        }
        .into()),
    }
}

/// The capture clock of a trace: the clock record its first segment starts with, read from the
/// first bytes of that file alone (decompressing only them when archived). `None` when the
/// trace has no clock (written without one, or damaged there).
///
/// # Errors
/// As for [`crate::open::Loading::new`].
pub fn trace_clock(path: &Path) -> io::Result<Option<Clock>> {
    let files = trace_files(path)?;
    let Some((dir, meta)) = files.first() else {
        return Ok(None);
    };
    // A clock record is written before anything else; its frame is tiny.
    let limit = 4096;
    let file = crate::fsio::open_regular(&dir.join(&meta.file))?;
    let mut head = Vec::new();
    if meta.archived {
        let dec = lz4_flex::frame::FrameDecoder::new(io::BufReader::new(file));
        // A short read is fine: only the first frames are wanted.
        let _ = io::Read::read_to_end(&mut io::Read::take(dec, limit), &mut head);
    } else {
        io::Read::read_to_end(&mut io::Read::take(file, limit), &mut head)?;
    }
    let Ok(frames) = segment::frames(&head) else {
        return Ok(None);
    };
    Ok(frames.take(4).find_map(|r| match r {
        Record::Clock {
            monotonic,
            system,
            run,
        } => Some(Clock {
            monotonic,
            system,
            run,
        }),
        _ => None,
    }))
}

/// A time window of a trace to load: events with `since <= ts <= until` (either end open).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    /// Monotonic nanoseconds of the capture, inclusive.
    pub since: Option<i64>,
    /// Monotonic nanoseconds of the capture, inclusive.
    pub until: Option<i64>,
}

pub(crate) struct Loader {
    pub(crate) store: Store,
    pub(crate) symbols: Symbols,
    pub(crate) window: Window,
    /// Before the window: each process's latest state `(seq, header, payload)`, loaded first
    /// when the window starts, so that states at the window's start are known.
    pub(crate) carried: WordMap<PidKey, (u64, Header, Vec<u8>)>,
    /// The window has started (the carried states are loaded).
    pub(crate) started: bool,
    /// Capture words to keys of the reading VM.
    pub(crate) words: WordMap<u64, u64>,
    pub(crate) renumber: Renumber,
    /// Each process's last state event: its seq in the loaded store, and in the trace.
    pub(crate) last_state: WordMap<PidKey, (Seq, Seq)>,
    /// The capture seq of the last event loaded.
    pub(crate) last_seq: Option<u64>,
    /// Every seq from this one to `last_seq` was read, in order: an unchanged state (written
    /// without its payload) may take the payload of its process's last state only if that
    /// state is in this run (else the state in between may have been lost).
    pub(crate) since_gap: Seq,
    /// The store's first seq is set (to the first event's seq in the trace).
    pub(crate) rebased: bool,
    pub(crate) report: LoadReport,
}

impl Loader {
    /// A loader of the events inside `window`.
    pub(crate) fn new(window: Window) -> io::Result<Loader> {
        let store = Store::new(Config {
            max_events: crate::log::MAX_EVENTS,
            max_bytes: crate::log::MAX_BYTES,
            ..Config::default()
        })
        .map_err(io::Error::from)?;
        Ok(Loader {
            store,
            symbols: Symbols::default(),
            window,
            carried: WordMap::default(),
            started: false,
            words: WordMap::default(),
            renumber: Renumber::default(),
            last_state: WordMap::default(),
            last_seq: None,
            since_gap: 0,
            rebased: false,
            report: LoadReport::default(),
        })
    }

    /// Stores an event whose seq in the trace is `seq`, sharing the payload of the stored event
    /// `shared` or with `payload`; its seq in the store. The first one stored sets the store's
    /// first seq, so that seqs in the store are the trace's while they follow each other.
    pub(crate) fn store_event(
        &mut self,
        seq: Seq,
        h: &Header,
        payload: &[u8],
        shared: Option<Seq>,
    ) -> Option<Seq> {
        if !self.rebased {
            self.rebased = self.store.rebase(seq.saturating_sub(1));
        }
        // Seqs lost midway, or skipped between the states carried into a window and the
        // window: left as holes, so later events keep their seqs (a gap too wide to scan is
        // numbered on instead).
        let next = self.store.log().last_seq() + 1;
        if seq > next && seq - next <= MAX_SKIP {
            self.store.skip_to(seq);
        }
        let log = self.store.log();
        let appended = match shared {
            Some(prev) => log.append_sharing(h, prev),
            None => log.append(h, payload),
        };
        match appended {
            crate::log::Appended::Stored(to) | crate::log::Appended::StoredWithoutPayload(to) => {
                self.renumber.push(seq, to);
                self.report.renumbered |= to != seq;
                Some(to)
            }
            crate::log::Appended::Dropped => None,
        }
    }

    /// Takes what a footer says of its segment besides the events: its clock, symbols and
    /// counters, as the segment's own records would.
    pub(crate) fn take_footer(
        &mut self,
        footer: &Footer,
        map: &mut dyn FnMut(&[u8], &Symbols) -> Mapped,
    ) {
        if let Some((monotonic, system, run)) = footer.clock {
            let clock = Record::Clock {
                monotonic,
                system,
                run,
            };
            self.take(clock, map);
        }
        for (word, etf) in &footer.symbols {
            self.take(Record::Symbol { word: *word, etf }, map);
        }
        let stats = Record::Stats {
            dropped: footer.dropped,
            truncated: footer.truncated,
        };
        self.take(stats, map);
    }

    pub(crate) fn take(&mut self, record: Record, map: &mut dyn FnMut(&[u8], &Symbols) -> Mapped) {
        match record {
            Record::Symbol { word, etf } => {
                let key = match map(etf, &self.symbols) {
                    Mapped::Key(k) => k,
                    Mapped::Foreign { canonical } => self.symbols.key_for(etf, &canonical),
                };
                self.words.insert(word, key);
            }
            Record::Clock {
                monotonic,
                system,
                run,
            } => {
                // Pids are only this VM's own when every segment comes from its run.
                if self.report.clock.is_none() {
                    self.symbols.run = Some(run);
                } else if self.symbols.run != Some(run) {
                    self.symbols.run = None;
                }
                let clock = *self.report.clock.get_or_insert(Clock {
                    monotonic,
                    system,
                    run,
                });
                self.symbols.clock = Some(clock);
            }
            Record::Footer(_) => {}
            Record::Stats { dropped, truncated } => {
                self.report.dropped = dropped;
                self.report.truncated = truncated;
            }
            Record::Event { .. } => {
                if let Some(ev) = record.as_event() {
                    self.event(ev.seq, ev.header, ev.payload);
                }
            }
        }
    }

    pub(crate) fn key(&mut self, word: u64) -> Option<u64> {
        if word == 0 {
            return Some(0);
        }
        let key = self.words.get(&word).copied();
        if key.is_none() {
            self.report.unknown_words += 1;
        }
        key
    }

    /// Takes an event outside the window: before it, a state is remembered as its process's
    /// state so far.
    pub(crate) fn outside(&mut self, seq: u64, mut h: Header, payload: &[u8], before: bool) {
        self.report.skipped += 1;
        self.follow_on(seq);
        if !before || h.kind != Kind::State as u8 {
            return;
        }
        h.pid = self.key(h.pid).unwrap_or(0);
        h.module = self.key(h.module).unwrap_or(0);
        h.function = self.key(h.function).unwrap_or(0);
        // States name no peer; a crafted one is not carried into the store.
        h.peer = 0;
        let shared = EventRef {
            seq,
            header: h,
            payload,
        }
        .shares_payload();
        // The first state of its process in the loaded store: nothing to share with.
        h.flags &= !flags::STATE_UNCHANGED;
        let since_gap = self.since_gap;
        let entry = self
            .carried
            .entry(h.pid)
            .or_insert_with(|| (0, h, Vec::new()));
        // Known when it has its bytes, or shares those of a state read in this run whose own
        // payload is known.
        let known = !shared
            || (entry.0 != 0
                && entry.0 >= since_gap
                && entry.1.flags & flags::PAYLOAD_DROPPED == 0);
        if !known {
            // Unchanged from a state that was not read: its payload is unknown, and said so.
            h.flags |= flags::PAYLOAD_DROPPED;
            entry.2.clear();
        }
        (entry.0, entry.1) = (seq, h);
        if !shared {
            // The buffer of the process's previous state is reused.
            entry.2.clear();
            entry.2.extend_from_slice(payload);
        }
    }

    /// Notes that the event at `seq` was read: a seq not following the last one starts a new
    /// run (see `since_gap`).
    pub(crate) fn follow_on(&mut self, seq: Seq) {
        if self
            .last_seq
            .is_none_or(|prev| prev.checked_add(1) != Some(seq))
        {
            self.since_gap = seq;
        }
        self.last_seq = Some(seq);
    }

    /// Starts the window: the states carried from before it are loaded, oldest first.
    pub(crate) fn start_window(&mut self) {
        if self.started {
            return;
        }
        self.started = true;
        let mut carried: Vec<_> = self.carried.drain().map(|(_, c)| c).collect();
        carried.sort_unstable_by_key(|(seq, _, _)| *seq);
        for (seq, h, payload) in carried {
            if let Some(to) = self.store_event(seq, &h, &payload, None) {
                self.last_state.insert(h.pid, (to, seq));
                self.report.events += 1;
                self.report.carried += 1;
                if self.report.first_seq == 0 {
                    self.report.first_seq = seq;
                }
            }
        }
    }

    pub(crate) fn event(&mut self, seq: u64, mut h: Header, payload: &[u8]) {
        if Kind::from_u8(h.kind).is_none() {
            self.report.discarded += 1;
            return;
        }
        if self.window.since.is_some_and(|t| h.ts < t) && !self.started {
            return self.outside(seq, h, payload, true);
        }
        if self.window.until.is_some_and(|t| h.ts > t) {
            return self.outside(seq, h, payload, false);
        }
        self.start_window();
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
                    None => {
                        self.report.discarded += 1;
                        return;
                    }
                }
            }
        } else {
            h.peer = self.key(h.peer).unwrap_or(0);
        }
        if self.report.first_seq == 0 {
            self.report.first_seq = seq;
        }
        match self.last_seq {
            Some(prev) if seq > prev => self.report.gaps += seq - prev - 1,
            // A seq already loaded (or older): never loaded twice, never out of order.
            Some(_) => {
                self.report.discarded += 1;
                return;
            }
            None => {}
        }
        self.follow_on(seq);
        let since_gap = self.since_gap;
        let unchanged = EventRef {
            seq,
            header: h,
            payload,
        }
        .shares_payload();
        let log = self.store.log();
        let shared = unchanged
            .then(|| self.last_state.get(&h.pid).copied())
            .flatten()
            .filter(|&(_, in_trace)| in_trace >= since_gap)
            .map(|(stored, _)| stored)
            .filter(|&stored| {
                // A state whose own payload is unknown gives none.
                log.get(stored)
                    .is_some_and(|e| e.header.flags & flags::PAYLOAD_DROPPED == 0)
            });
        if unchanged && shared.is_none() {
            // Unchanged from a state that was not read (lost, or out of order): its payload
            // is unknown, and said so, never another state's.
            h.flags |= flags::PAYLOAD_DROPPED;
        }
        if let Some(to) = self.store_event(seq, &h, payload, shared) {
            if h.kind == Kind::State as u8 {
                self.last_state.insert(h.pid, (to, seq));
            }
            self.report.events += 1;
        }
    }
}

/// What a trace holds, from its segments' footers (read alone, without the events) or, for a
/// segment without one (the last of a capture still running or cut short), from its frames.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Segment files read.
    pub segments: usize,
    /// Their bytes on disk.
    pub bytes: u64,
    /// Segments whose tail was torn or corrupt.
    pub torn: Vec<String>,
    /// Segments listed but gone when read (deleted by retention meanwhile).
    pub missing: usize,
    /// Segments not counted: unreadable, or repeating seqs counted already (a copy of another
    /// segment), as loading skips them.
    pub damaged: Vec<String>,
    /// Segments summarized from their footer (the others were read through).
    pub from_footers: usize,
    /// Events.
    pub events: u64,
    /// `(seq, ts)` of the first and last events.
    pub first: Option<(u64, i64)>,
    /// See `first`.
    pub last: Option<(u64, i64)>,
    /// The capture's clock: monotonic and system nanoseconds, run token.
    pub clock: Option<(i64, i64, u64)>,
    /// Events by kind discriminant.
    pub kinds: [u64; Kind::ALL.len()],
    /// Events by pid word.
    pub pids: WordMap<u64, u64>,
    /// Calls by `(module, function, arity)` words.
    pub calls: WordMap<(u64, u64, u8), u64>,
    /// Messages by tag.
    pub tags: HashMap<String, u64>,
    /// State events that changed a state.
    pub state_changes: u64,
    /// The ETF of the words above.
    pub symbols: WordMap<u64, Vec<u8>>,
    /// The capture's counters, as last recorded.
    pub dropped: u64,
    /// See `dropped`.
    pub truncated: u64,
}

impl Summary {
    /// Adds a segment's footer.
    fn add(&mut self, f: &Footer) {
        self.dropped = self.dropped.max(f.dropped);
        self.truncated = self.truncated.max(f.truncated);
        self.clock = self.clock.or(f.clock);
        for (w, etf) in &f.symbols {
            self.symbols.entry(*w).or_insert_with(|| etf.to_vec());
        }
        if f.events == 0 {
            return;
        }
        self.first.get_or_insert((f.first_seq, f.first_ts));
        self.last = Some((f.last_seq, f.last_ts));
        // Saturating: counts come from files, which may lie.
        let add = |total: &mut u64, n: u64| *total = total.saturating_add(n);
        add(&mut self.events, f.events);
        for (k, n) in f.kinds.iter().enumerate().take(Kind::ALL.len()) {
            add(&mut self.kinds[k], *n);
        }
        for (w, n) in &f.pids {
            add(self.pids.entry(*w).or_default(), *n);
        }
        for (m, fu, a, n) in &f.calls {
            add(self.calls.entry((*m, *fu, *a)).or_default(), *n);
        }
        for (t, n) in &f.tags {
            add(self.tags.entry(t.clone()).or_default(), *n);
        }
        let changes = f.states.iter().map(|(_, s)| s.len() as u64);
        self.state_changes = changes.fold(self.state_changes, u64::saturating_add);
    }
}

/// A trace being summarized, one segment per [`Summarizing::step`].
pub struct Summarizing {
    files: Vec<(std::path::PathBuf, segments::SegmentMeta)>,
    next: usize,
    read: u64,
    total: u64,
    summary: Summary,
    buf: Vec<u8>,
    /// Use footers (false: scan every segment, to check footers against their frames).
    footers: bool,
    /// The trace summarized, and why its first damaged segment was skipped (the error when no
    /// segment was readable).
    path: std::path::PathBuf,
    first_damage: Option<io::Error>,
}

impl Summarizing {
    /// Starts summarizing `path` (a trace directory or one segment file); with `footers`
    /// false, every segment is scanned.
    ///
    /// # Errors
    /// As for [`crate::open::Loading::new`].
    pub fn new(path: &Path, footers: bool) -> io::Result<Summarizing> {
        let files = trace_files(path)?;
        let total = files_bytes(&files);
        Ok(Summarizing {
            files,
            next: 0,
            read: 0,
            total,
            summary: Summary::default(),
            buf: Vec::new(),
            footers,
            path: path.to_path_buf(),
            first_damage: None,
        })
    }

    /// The trace being summarized.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Summarizes the next segment; false when none is left.
    ///
    /// # Errors
    /// The file system's, or `InvalidData` for a segment this version cannot read.
    pub fn step(&mut self) -> io::Result<bool> {
        let more = self.step_segment()?;
        if !more && self.summary.segments == 0 {
            // Nothing was readable: that is an error, the first damage's.
            if let Some(e) = self.first_damage.take() {
                return Err(e);
            }
        }
        Ok(more)
    }

    fn step_segment(&mut self) -> io::Result<bool> {
        let Some((dir, meta)) = self.files.get(self.next) else {
            return Ok(false);
        };
        self.next += 1;
        let path = dir.join(&meta.file);
        if !path.exists() && !meta.sealed {
            // The capture is running and rotated: the file is now archived, or retention
            // deleted it.
            self.summary.missing += 1;
            return Ok(true);
        }
        let footer = match (self.footers, meta.footer_at) {
            (true, at) if at > 0 => read_footer(dir, meta, at, &mut self.buf)
                .filter(|f| f.plausible(meta.first_seq, meta.last_seq)),
            _ => None,
        };
        let counted = self.summary.last.map_or(0, |(seq, _)| seq);
        let footer = match footer {
            Some(f) => {
                self.summary.from_footers += 1;
                f
            }
            None => {
                let read = segments::read_segment_into(dir, meta, &mut self.buf)
                    .and_then(|()| open_frames(dir, meta, &self.buf));
                let frames = match read {
                    Ok(frames) => frames,
                    Err(e) => {
                        let damaged = &mut self.summary.damaged;
                        damage(e, &path, &meta.file, damaged, &mut self.first_damage)?;
                        return Ok(true);
                    }
                };
                let mut b = FooterBuilder::default();
                match frames {
                    Some(mut frames) => {
                        // Seqs only go up: a frame repeating one counted is not counted again.
                        let (mut taken, mut repeated) = (counted, false);
                        loop {
                            let offset = frames.valid_len();
                            let Some(record) = frames.next() else { break };
                            if let Some(ev) = record.as_event() {
                                if ev.seq <= taken {
                                    repeated = true;
                                    continue;
                                }
                                taken = ev.seq;
                            }
                            record.note_in(&mut b, offset);
                        }
                        if repeated {
                            self.summary.damaged.push(meta.file.clone());
                        }
                        if frames.torn() {
                            self.summary.torn.push(meta.file.clone());
                        }
                    }
                    None => self.summary.torn.push(meta.file.clone()),
                }
                b.finish()
            }
        };
        if footer.events > 0 && footer.first_seq <= counted {
            // A copy of a segment counted already: loading skips it too.
            self.summary.damaged.push(meta.file.clone());
            return Ok(true);
        }
        self.summary.add(&footer);
        self.summary.segments += 1;
        self.read += std::fs::metadata(&path).map_or(0, |m| m.len());
        Ok(true)
    }

    /// Bytes of the segments summarized so far, and of all.
    pub fn progress(&self) -> (u64, u64) {
        (self.read, self.total)
    }

    /// The summary.
    pub fn finish(self) -> Summary {
        let mut s = self.summary;
        s.bytes = self.total;
        s
    }
}

/// The record of the frame at `at`: read from `file` (a raw segment) into `scratch`, or taken
/// from `decompressed` (an archived one).
pub(crate) fn frame_bytes<'b>(
    file: Option<&mut std::fs::File>,
    decompressed: &'b [u8],
    at: u64,
    scratch: &'b mut Vec<u8>,
) -> Option<Record<'b>> {
    let at = usize::try_from(at).ok()?;
    let bytes: &[u8] = match file {
        None => decompressed,
        Some(f) => {
            use std::io::{Read, Seek};
            f.seek(io::SeekFrom::Start(at as u64)).ok()?;
            let mut head = [0u8; 8];
            f.read_exact(&mut head).ok()?;
            let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
            if len > segment::MAX_RECORD {
                return None;
            }
            scratch.clear();
            scratch.extend_from_slice(&head);
            f.take(len as u64).read_to_end(scratch).ok()?;
            return segment::frame_at(scratch, 0).map(|(r, _)| r);
        }
    };
    segment::frame_at(bytes, at).map(|(r, _)| r)
}

/// The footer frame at `at` of a sealed segment, if it is one.
pub(crate) fn read_footer(
    dir: &Path,
    meta: &segments::SegmentMeta,
    at: u64,
    buf: &mut Vec<u8>,
) -> Option<Footer> {
    let bytes: &[u8] = if meta.archived {
        segments::read_segment_into(dir, meta, buf).ok()?;
        buf.get(usize::try_from(at).ok()?..)?
    } else {
        use std::io::{Read, Seek};
        let mut f = crate::fsio::open_regular(&dir.join(&meta.file)).ok()?;
        f.seek(io::SeekFrom::Start(at)).ok()?;
        buf.clear();
        f.take(segment::MAX_RECORD as u64 + 8)
            .read_to_end(buf)
            .ok()?;
        buf
    };
    match segment::frame_at(bytes, 0)? {
        (Record::Footer(f), _) => Some(*f),
        _ => None,
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
    writer.flush_all(store, clock, symbol)?;
    writer.finish()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::open::{load, Loading};
    use crate::store::StateKind;
    use proptest::prelude::*;
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
        let m = save(&store, &dir, CLOCK, &mut symbol).unwrap();
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
            eager.store.stats().payload_bytes,
            store.stats().payload_bytes
        );
        let loaded = load_ok(&dir);
        assert_eq!(loaded.report.paged, 1);
        assert_eq!(loaded.store.stats().payload_bytes, 0);
        let all = loaded.store.log().range(1, u64::MAX).count() as u64;
        assert_eq!(all, store.stats().events);
        assert_eq!(
            loaded.store.stats().payload_bytes,
            store.stats().payload_bytes
        );
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
        // Seqs are the trace's, from the first one left.
        assert_eq!(log.first_seq(), r.first_seq);
        assert!(!r.renumbered);
        for seq in log.first_seq()..=log.last_seq() {
            let e = log.get(seq).unwrap();
            let original = store.log().get(seq).unwrap();
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
            let log = one.store.log();
            assert_eq!(log.first_seq(), one.report.first_seq);
            for seq in log.first_seq()..=log.last_seq() {
                let e = log.get(seq).unwrap();
                let original = store.log().get(seq).unwrap();
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
        save(&sample(10), &dir, CLOCK, &mut symbol).unwrap();
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
                    w.flush(&store, CLOCK, &mut symbol, u64::MAX).unwrap();
                }
            }
            w.flush(&store, CLOCK, &mut symbol, u64::MAX).unwrap();
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
        w.flush(&a, CLOCK, &mut symbol, u64::MAX).unwrap();
        w.continue_with(&a);
        assert_eq!((w.on_disk(), w.next_seq()), (a.log().last_seq(), 1));
        w.flush(&b, CLOCK, &mut symbol, u64::MAX).unwrap();
        w.finish().unwrap();
        let loaded = load_ok(&dir);
        let (na, nb) = (a.log().last_seq(), b.log().last_seq());
        assert_eq!(loaded.report.events, na + nb);
        assert_eq!((loaded.report.gaps, loaded.report.discarded), (0, 0));
        assert_eq!(loaded.report.dropped, 2, "both stores' drops");
        let log = loaded.store.log();
        for (seq, original) in (1..=na)
            .map(|s| a.log().get(s).unwrap())
            .chain((1..=nb).map(|s| b.log().get(s).unwrap()))
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
        let got = loaded.store.log();
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
        save(&store, &dir, CLOCK, &mut symbol).unwrap();
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
            w.flush_all(&store, CLOCK, &mut symbol).unwrap();
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
            w.flush_all(&sample(50), CLOCK, &mut symbol).unwrap();
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
        w.flush(&store, CLOCK, &mut symbol, u64::MAX).unwrap();
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
            save(&store, &dir, CLOCK, &mut symbol).unwrap();
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
