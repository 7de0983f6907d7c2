//! Reading a trace's segments back: the loader that turns their frames into a read-only
//! store's events ([`Loaded`], under a [`Window`]), the trace's files and clock, and the
//! frames of a segment.

use crate::capture::hash::WordMap;
use crate::capture::log::{CaptureLog, Limits};
use crate::formats::error::Error;
use crate::formats::event::{flags, EventRef, Header, Kind, PidKey, Seq};
use crate::formats::symbols::{Clock, Symbols};
use crate::persist::footer::Footer;
use crate::persist::segment::{self, Record};
use crate::persist::segments::{self};
use crate::reader::Reader;
use std::io;
use std::path::Path;

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

/// A loaded trace: a reader of its events, with its symbols.
pub struct Loaded {
    /// The trace's events.
    pub reader: Reader,
    /// What loading found.
    pub report: LoadReport,
}

/// Stored seqs of the capture mapped to seqs of the loaded store: runs of consecutive seqs.
#[derive(Default)]
pub(crate) struct Renumber {
    /// `(first capture seq, first loaded seq, length)`.
    pub(crate) runs: Vec<(u64, u64, u64)>,
}

impl Renumber {
    /// Records that capture seq `seq` became loaded seq `to`.
    pub(crate) fn push(&mut self, seq: u64, to: u64) {
        match self.runs.last_mut() {
            Some((first, loaded, len)) if *first + *len == seq && *loaded + *len == to => *len += 1,
            _ => self.runs.push((seq, to, 1)),
        }
    }

    /// The loaded seq of capture seq `seq`, if it was loaded (the newest run holding it).
    pub(crate) fn get(&self, seq: u64) -> Option<u64> {
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
pub(crate) type TraceFiles = Vec<(std::path::PathBuf, segments::SegmentMeta)>;

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
    drop(crate::formats::fsio::open_regular(path)?);
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
/// As for [`crate::persist::open::Loading::new`].
pub fn trace_clock(path: &Path) -> io::Result<Option<Clock>> {
    let files = trace_files(path)?;
    let Some((dir, meta)) = files.first() else {
        return Ok(None);
    };
    // A clock record is written before anything else; its frame is tiny.
    let limit = 4096;
    let file = crate::formats::fsio::open_regular(&dir.join(&meta.file))?;
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
    pub(crate) reader: Reader,
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
        let reader = Reader::new(CaptureLog::new(Limits {
            max_events: crate::capture::log::MAX_EVENTS,
            max_bytes: crate::capture::log::MAX_BYTES,
        }));
        Ok(Loader {
            reader,
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
            self.rebased = self.reader.rebase(seq.saturating_sub(1));
        }
        // Seqs lost midway, or skipped between the states carried into a window and the
        // window: left as holes, so later events keep their seqs (a gap too wide to scan is
        // numbered on instead).
        let next = self.reader.log().last_seq() + 1;
        if seq > next && seq - next <= MAX_SKIP {
            self.reader.skip_to(seq);
        }
        let log = self.reader.log();
        let appended = match shared {
            Some(prev) => log.append_sharing(h, prev),
            None => log.append(h, payload),
        };
        match appended {
            crate::capture::log::Appended::Stored(to)
            | crate::capture::log::Appended::StoredWithoutPayload(to) => {
                self.renumber.push(seq, to);
                self.report.renumbered |= to != seq;
                Some(to)
            }
            crate::capture::log::Appended::Dropped => None,
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
        let log = self.reader.log_unpinned();
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
        let mut f = crate::formats::fsio::open_regular(&dir.join(&meta.file)).ok()?;
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
