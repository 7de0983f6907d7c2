//! Opening a trace: a directory (or one segment file) becomes a [`crate::reader::Reader`], paged when its
//! sealed segments have footers (see [`crate::persist::paged`]), else loaded whole (see
//! [`crate::persist`]'s loader), a segment per step so that a caller can report progress.

use crate::formats::error::Error;
use crate::formats::event::{EventRef, Kind};
use crate::persist::segment::{self, Record};
use crate::persist::segments;
use crate::persist::{
    damage, files_bytes, frame_bytes, open_frames, read_footer, trace_files_rebuilt, Loaded,
    Loader, Mapped, Symbols, Window,
};
use std::io;
use std::path::Path;

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
    path: std::path::PathBuf,
    /// Whether the trace may be opened paged (see [`crate::persist::paged`]).
    paged: bool,
    /// The trace opened paged, at the first step.
    opened: Option<Loaded>,
    files: Vec<(std::path::PathBuf, segments::SegmentMeta)>,
    next: usize,
    read: u64,
    total: u64,
    loader: Loader,
    /// The current segment's bytes (one buffer for all: fresh memory is slow to fault in).
    buf: Vec<u8>,
    /// Why the first damaged segment was skipped: the error when no segment was readable.
    first_damage: Option<io::Error>,
}

impl Loading {
    /// Starts loading `path`: a segment directory or one segment file.
    ///
    /// # Errors
    /// The file system's; `NotFound` for a directory without a manifest; `InvalidData` for an
    /// unreadable manifest.
    pub fn new(path: &Path) -> io::Result<Loading> {
        Loading::window(path, Window::default())
    }

    /// Starts loading every event of `path` into memory, never paged.
    ///
    /// # Errors
    /// As for [`Loading::new`].
    pub fn eager(path: &Path) -> io::Result<Loading> {
        let mut loading = Loading::window(path, Window::default())?;
        loading.paged = false;
        Ok(loading)
    }

    /// Starts loading the events of `path` inside `window`, with each process's last state
    /// before it (so that its states at the window's start are known).
    ///
    /// # Errors
    /// As for [`Loading::new`].
    pub fn window(path: &Path, window: Window) -> io::Result<Loading> {
        let (files, rebuilt) = trace_files_rebuilt(path)?;
        let total = files_bytes(&files);
        let mut loader = Loader::new(window)?;
        loader.report.manifest_rebuilt = rebuilt;
        Ok(Loading {
            path: path.to_path_buf(),
            paged: window == Window::default(),
            files,
            next: 0,
            read: 0,
            total,
            buf: Vec::new(),
            loader,
            opened: None,
            first_damage: None,
        })
    }

    /// Loads the next segment; false when none is left.
    ///
    /// # Errors
    /// The file system's, or `InvalidData` for a segment that is not one this version reads.
    pub fn step(&mut self, map: &mut dyn FnMut(&[u8], &Symbols) -> Mapped) -> io::Result<bool> {
        let more = self.step_segment(map)?;
        if !more && self.opened.is_none() && self.loader.report.segments == 0 {
            // Nothing was readable: that is an error, the first damage's.
            if let Some(e) = self.first_damage.take() {
                return Err(e);
            }
        }
        Ok(more)
    }

    fn step_segment(&mut self, map: &mut dyn FnMut(&[u8], &Symbols) -> Mapped) -> io::Result<bool> {
        if std::mem::take(&mut self.paged) {
            if let Some(loaded) = crate::persist::paged::open(&self.path, map) {
                self.opened = Some(loaded);
                self.next = self.files.len();
                self.read = self.total;
                return Ok(false);
            }
        }
        let Some((dir, meta)) = self.files.get(self.next).cloned() else {
            return Ok(false);
        };
        let (dir, meta) = (&dir, &meta);
        let until = self.loader.window.until;
        if meta.first_seq != 0 && until.is_some_and(|t| meta.first_ts > t) {
            // Segments are in time order: the rest is after the window.
            // As the manifest says (the segments are not read), but never more events than a
            // file of that size can hold: a damaged manifest says anything.
            let skipped = self.files[self.next..]
                .iter()
                .filter(|(_, m)| m.first_seq != 0)
                .map(|(dir, m)| {
                    let claimed = m.last_seq.saturating_add(1).saturating_sub(m.first_seq);
                    let size = std::fs::metadata(dir.join(&m.file)).map_or(0, |f| f.len());
                    claimed.min(size / segment::MIN_EVENT_FRAME)
                })
                .fold(0u64, u64::saturating_add);
            self.loader.report.skipped = self.loader.report.skipped.saturating_add(skipped);
            self.next = self.files.len();
            return Ok(false);
        }
        self.next += 1;
        let before = self.loader.window.since.is_some_and(|t| meta.last_ts < t);
        if before
            && !self.loader.started
            && meta.first_seq != 0
            && meta.footer_at > 0
            && self.carry_from_footer(dir, meta, map)?
        {
            self.loader.report.segments += 1;
            self.read += std::fs::metadata(dir.join(&meta.file)).map_or(0, |m| m.len());
            return Ok(true);
        }
        let mut read = segments::read_segment_into(dir, meta, &mut self.buf)
            .and_then(|()| open_frames(dir, meta, &self.buf).map(|_| ()));
        let mut moved = None;
        if read
            .as_ref()
            .is_err_and(|e| e.kind() == io::ErrorKind::NotFound)
            && !self.rebuilt()
        {
            // A running capture archived it (under another name) or retention deleted it.
            match segments::relisted(dir, meta) {
                segments::Relisted::As(now) => {
                    read = segments::read_segment_into(dir, &now, &mut self.buf)
                        .and_then(|()| open_frames(dir, &now, &self.buf).map(|_| ()));
                    moved = Some(now);
                }
                segments::Relisted::Gone => {
                    self.loader.report.missing += 1;
                    return Ok(true);
                }
                segments::Relisted::Same => {}
            }
        }
        let meta = moved.as_ref().unwrap_or(meta);
        if let Err(e) = read {
            let path = dir.join(&meta.file);
            let report = &mut self.loader.report;
            damage(
                e,
                &path,
                &meta.file,
                &mut report.damaged,
                &mut self.first_damage,
            )?;
            return Ok(true);
        }
        if !self.belongs(meta) {
            let e = Error::Corrupt {
                path: dir.join(&meta.file).display().to_string(),
                offset: 0,
            };
            let path = dir.join(&meta.file);
            let report = &mut self.loader.report;
            damage(
                e.into(),
                &path,
                &meta.file,
                &mut report.damaged,
                &mut self.first_damage,
            )?;
            return Ok(true);
        }
        match open_frames(dir, meta, &self.buf)? {
            Some(mut frames) => {
                for record in frames.by_ref() {
                    self.loader.take(record, map);
                }
                if frames.torn() {
                    self.loader.report.torn.push(meta.file.clone());
                }
            }
            None => self.loader.report.torn.push(meta.file.clone()),
        }
        self.loader.report.segments += 1;
        self.read += std::fs::metadata(dir.join(&meta.file)).map_or(0, |m| m.len());
        Ok(true)
    }

    fn rebuilt(&self) -> bool {
        self.loader.report.manifest_rebuilt
    }

    /// Whether the segment read into `buf` holds the events its place says: its first event
    /// is the one the manifest lists (when it lists one) and comes after every event loaded
    /// so far. A copy of another segment of the trace fails it (its events would be loaded
    /// twice).
    fn belongs(&self, meta: &segments::SegmentMeta) -> bool {
        let first = segment::frames(&self.buf)
            .ok()
            .and_then(|mut f| f.find_map(|r| r.as_event().map(|e| e.seq)));
        let Some(first) = first else {
            return true;
        };
        (meta.first_seq == 0 || first == meta.first_seq)
            && self.loader.last_seq.is_none_or(|last| first > last)
    }

    /// A sealed segment wholly before the window: only each process's last state is needed,
    /// and its footer says where those are. Reads the footer and those frames, checks them all,
    /// then takes them; false (nothing taken) when anything is missing or not believable: the
    /// segment is then read through.
    fn carry_from_footer(
        &mut self,
        dir: &Path,
        meta: &segments::SegmentMeta,
        map: &mut dyn FnMut(&[u8], &Symbols) -> Mapped,
    ) -> io::Result<bool> {
        let Some(footer) = read_footer(dir, meta, meta.footer_at, &mut self.buf) else {
            return Ok(false);
        };
        let since = self.loader.window.since.unwrap_or(i64::MIN);
        let Some(last_states) = footer.last_states.as_ref() else {
            return Ok(false);
        };
        let believable = footer.plausible(meta.first_seq, meta.last_seq)
            && footer.last_ts < since
            && last_states.iter().all(|(_, o, _)| *o < meta.footer_at);
        if !believable {
            return Ok(false);
        }
        // `read_footer` left an archived segment's decompressed bytes in `buf`.
        let mut file = (!meta.archived)
            .then(|| crate::formats::fsio::open_regular(&dir.join(&meta.file)))
            .transpose()?;
        let size = std::fs::metadata(dir.join(&meta.file))?.len();
        let range = footer.first_seq..=footer.last_seq;
        // The state event of `pid` a frame holds, if it holds one of this segment.
        fn state_of<'r>(
            r: Option<Record<'r>>,
            pid: u64,
            range: &std::ops::RangeInclusive<u64>,
        ) -> Option<EventRef<'r>> {
            r.and_then(|r| r.as_event())
                .filter(|e| e.header.kind == Kind::State as u8 && e.header.pid == pid)
                .filter(|e| range.contains(&e.seq))
        }
        // Each process's last state, its payload where it is: all read and checked first.
        let mut states = Vec::with_capacity(last_states.len());
        let mut copied = 0u64;
        let (mut frame, mut payload_frame) = (Vec::new(), Vec::new());
        for &(pid, at, payload_at) in last_states {
            let read = frame_bytes(file.as_mut(), &self.buf, at, &mut frame);
            let Some(ev) = state_of(read, pid, &range) else {
                return Ok(false);
            };
            let payload = if payload_at == at {
                ev.payload.to_vec()
            } else {
                let from = frame_bytes(file.as_mut(), &self.buf, payload_at, &mut payload_frame);
                match state_of(from, pid, &range) {
                    Some(p) if !p.payload.is_empty() => p.payload.to_vec(),
                    _ => return Ok(false),
                }
            };
            // A crafted footer pointing many states at one big payload is not believed.
            copied += payload.len() as u64;
            if copied > size {
                return Ok(false);
            }
            states.push((ev.seq, ev.header, payload));
        }
        let loader = &mut self.loader;
        loader.take_footer(&footer, map);
        let carried = states.len() as u64;
        let before = (loader.last_seq, loader.since_gap);
        for (seq, h, payload) in states {
            loader.outside(seq, h, &payload, true);
        }
        // The segment counts as read whole (its last states are known exactly): the run of
        // seqs read goes on through it if it follows the last one.
        (loader.last_seq, loader.since_gap) = before;
        loader.follow_on(footer.first_seq);
        loader.last_seq = Some(footer.last_seq);
        // `outside` counted the states; every other event of the segment is skipped too.
        loader.report.skipped += footer.events.saturating_sub(carried);
        loader.report.from_footers += 1;
        Ok(true)
    }

    /// The trace being loaded.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of the segments loaded so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// Bytes of all the segments.
    pub fn bytes_total(&self) -> u64 {
        self.total
    }

    /// The reader of what was loaded.
    pub fn finish(self) -> Loaded {
        if let Some(loaded) = self.opened {
            return loaded;
        }
        let mut loader = self.loader;
        loader.start_window();
        loader.report.bytes = self.total;
        loader.report.truncated = loader.report.truncated.max(loader.reader.stats().truncated);
        loader.reader.log().add_dropped(loader.report.dropped);
        let mut reader = loader.reader;
        reader.set_symbols(loader.symbols);
        Loaded {
            reader,
            report: loader.report,
        }
    }
}
