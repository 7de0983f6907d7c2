//! Traces read from disk as queries need them. The footers of sealed segments give a reader its
//! whole index and say where each block of events starts (a seek point every
//! [`SEEK_EVERY`](crate::persist::footer::SEEK_EVERY) events); a block is read from its file the first
//! time a query asks for one of its events. Memory grows with what queries touch, and a query
//! that touches little reads little.
//!
//! Two uses: [`open`] a trace (a reader, offline), and [`follow`] the trace a capture of
//! this VM is writing, which [`refresh`] brings up to what is on disk, so that queries see
//! every event the capture wrote, whatever its memory still holds.
//!
//! Files are still not trusted: footers are checked before they are believed (else [`open`]
//! declines and the trace is loaded whole by [`crate::persist::Loading`]; a followed segment
//! is scanned for its index instead), and a block that cannot be read or is damaged leaves its events missing,
//! as holes in the log, never a panic.

use crate::capture::hash::WordMap;
use crate::capture::log::{CaptureLog, Pager};
use crate::formats::event::{EventRef, Header, Kind, PidKey, Seq};
use crate::index::{Index, Lists};
use crate::persist::footer::{Footer, SeqList};
use crate::persist::segment::{self, Record};
use crate::persist::segments::{self, SegmentMeta};
use crate::persist::{self, Loaded, Loader, Mapped, Symbols, Window};
use crate::reader::Reader;
use parking_lot::{Mutex, MutexGuard};
use std::io;
use std::path::{Path, PathBuf};

/// Events read together: the frames between two seek points of a segment.
#[derive(Clone, Copy, Debug)]
struct Block {
    /// Index in [`Pages::files`].
    file: usize,
    /// Where its frames start and end in the segment's bytes (decompressed when archived).
    from: u64,
    to: u64,
    /// The first and last seq of the store it holds.
    first: Seq,
    last: Seq,
}

/// The segments of a paged reader, and what reading their blocks needs.
struct Pages {
    files: Vec<(PathBuf, SegmentMeta)>,
    /// In seq order, not overlapping.
    blocks: Vec<Block>,
    loaded: Vec<bool>,
    /// Capture words to keys of the reading VM; `None`: the trace's words are this VM's own
    /// (a capture of this VM run, followed).
    words: Option<WordMap<u64, u64>>,
    /// Each process's state events (store seqs): an unchanged state shares the payload of the
    /// one before, which may be in another block.
    states: WordMap<PidKey, Vec<Seq>>,
    /// The highest store seq registered (in a block) or filled.
    top: Seq,
    /// The unsealed segment read last, and how far its complete frames go.
    tail: Option<(String, u64)>,
    /// Sealed segments read through (their footer not believed), by first seq: read once.
    read_through: std::collections::HashSet<u64>,
    buf: Vec<u8>,
    /// Events of blocks read that could not be read back (damaged or gone), and their files.
    unread: u64,
    damaged: std::collections::BTreeSet<usize>,
}

/// The [`Pager`] of a paged reader.
pub struct SegmentPager {
    pages: Mutex<Pages>,
    /// Held through a [`refresh`], so that refreshes of one store take turns.
    refreshing: Mutex<()>,
    /// The directory followed, if the store follows one.
    dir: Option<PathBuf>,
}

impl Pager for SegmentPager {
    fn fault(&self, log: &CaptureLog, seq: Seq) {
        self.pages.lock().fault(log, seq);
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl SegmentPager {
    fn new(pages: Pages, dir: Option<PathBuf>) -> SegmentPager {
        SegmentPager {
            pages: Mutex::new(pages),
            refreshing: Mutex::new(()),
            dir,
        }
    }

    /// The pager of a paged log.
    fn of(log: &CaptureLog) -> Option<&SegmentPager> {
        log.pager()?.as_any().downcast_ref()
    }

    fn pages(&self) -> MutexGuard<'_, Pages> {
        self.pages.lock()
    }
}

/// An event read from a block, ready to fill: its store seq, header in the store's keys, the
/// payload in the block's bytes, and the event whose payload it shares.
type Filled<'b> = (Seq, Header, &'b [u8], Option<Seq>);

impl Pages {
    fn new(words: Option<WordMap<u64, u64>>) -> Pages {
        Pages {
            files: Vec::new(),
            blocks: Vec::new(),
            loaded: Vec::new(),
            words,
            states: WordMap::default(),
            top: 0,
            tail: None,
            read_through: Default::default(),
            unread: 0,
            damaged: Default::default(),
            buf: Vec::new(),
        }
    }

    fn block_of(&self, seq: Seq) -> Option<usize> {
        let i = self
            .blocks
            .partition_point(|b| b.first <= seq)
            .checked_sub(1)?;
        (seq <= self.blocks[i].last).then_some(i)
    }

    /// Reads the block holding `seq`, and first the blocks holding the states its unchanged
    /// states share a payload with. Each block is read once.
    fn fault(&mut self, log: &CaptureLog, seq: Seq) {
        let Some(b) = self.block_of(seq) else { return };
        let mut want = vec![b];
        let mut relocated = Vec::new();
        while let Some(&b) = want.last() {
            if self.loaded[b] {
                want.pop();
                continue;
            }
            let unit = self.unit(b);
            match self.read(log, unit.clone()) {
                // Every block needed lies before the unit: the loop ends.
                Ok(needs) if !needs.is_empty() => want.extend(needs),
                // Archived since it was listed: read again under its new name, once.
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound
                        && !relocated.contains(&self.blocks[b].file)
                        && self.relocate(self.blocks[b].file) =>
                {
                    relocated.push(self.blocks[b].file);
                }
                Ok(_) => {
                    self.loaded[unit].iter_mut().for_each(|l| *l = true);
                    want.pop();
                }
                // Unreadable (a file gone or damaged): its events are missing, and counted.
                Err(_) => {
                    for i in unit.clone() {
                        let block = self.blocks[i];
                        self.missed(block, 0);
                    }
                    self.loaded[unit].iter_mut().for_each(|l| *l = true);
                    want.pop();
                }
            }
        }
    }

    /// Counts the events of `block` not read back (it held `got` of its seqs) as unread.
    fn missed(&mut self, block: Block, got: u64) {
        let missing = (block.last + 1)
            .saturating_sub(block.first)
            .saturating_sub(got);
        if missing > 0 {
            self.unread += missing;
            self.damaged.insert(block.file);
        }
    }

    /// Finds segment `file` again in its directory's manifest (by its first seq) when it is
    /// listed under another name now (a running capture archived it); whether it is.
    fn relocate(&mut self, file: usize) -> bool {
        let (dir, meta) = &self.files[file];
        match segments::relisted(dir, meta) {
            segments::Relisted::As(now) => {
                self.files[file].1 = now;
                true
            }
            _ => false,
        }
    }

    /// The blocks read together with block `b`: itself, or every block of its segment not read
    /// yet when the segment is archived (it is decompressed whole anyway).
    fn unit(&self, b: usize) -> std::ops::Range<usize> {
        let file = self.blocks[b].file;
        if !self.files[file].1.archived {
            return b..b + 1;
        }
        let mut lo = b;
        while lo > 0 && self.blocks[lo - 1].file == file && !self.loaded[lo - 1] {
            lo -= 1;
        }
        let mut hi = b + 1;
        while hi < self.blocks.len() && self.blocks[hi].file == file && !self.loaded[hi] {
            hi += 1;
        }
        lo..hi
    }

    /// Reads the blocks of `unit` into `log`; or, when some of their unchanged states share a
    /// payload with a block not read yet, reads nothing and returns those blocks.
    fn read(&mut self, log: &CaptureLog, unit: std::ops::Range<usize>) -> io::Result<Vec<usize>> {
        let first = self.blocks[unit.start];
        let last = self.blocks[unit.end - 1];
        let (dir, meta) = &self.files[first.file];
        let base = if meta.archived {
            segments::read_segment_into(dir, meta, &mut self.buf)?;
            0
        } else {
            use std::io::{Read, Seek};
            let len = usize::try_from(last.to - first.from).map_err(io::Error::other)?;
            self.buf.resize(len, 0);
            let mut file = crate::formats::fsio::open_regular(&dir.join(&meta.file))?;
            file.seek(io::SeekFrom::Start(first.from))?;
            file.read_exact(&mut self.buf)?;
            first.from
        };
        let mut events: Vec<Filled> = Vec::new();
        let mut needs = Vec::new();
        let mut read_back = Vec::with_capacity(unit.len());
        for block in &self.blocks[unit.clone()] {
            let before = events.len();
            let start = usize::try_from(block.from - base).map_err(io::Error::other)?;
            let end = usize::try_from(block.to - base).map_err(io::Error::other)?;
            let bytes = self.buf.get(..end).unwrap_or(&[]);
            let mut pos = start;
            while let Some((record, next)) = segment::frame_at(bytes, pos) {
                pos = next;
                let Some((seq, h, payload)) = self.event(&record, log) else {
                    continue;
                };
                if !(block.first..=block.last).contains(&seq) {
                    continue;
                }
                let shared = self.shares(&EventRef {
                    seq,
                    header: h,
                    payload,
                });
                if let Some(prev) = shared {
                    let there = self.block_of(prev);
                    if let Some(p) = there.filter(|&p| p < unit.start && !self.loaded[p]) {
                        needs.push(p);
                    }
                }
                events.push((seq, h, payload, shared));
            }
            read_back.push((*block, (events.len() - before) as u64));
        }
        if needs.is_empty() {
            for (seq, h, payload, shared) in events {
                log.fill(seq, &h, payload, shared);
            }
            for (block, got) in read_back {
                self.missed(block, got);
            }
        }
        needs.dedup();
        Ok(needs)
    }

    /// The event a record holds, in the store's seqs and keys, if it holds one of a known kind:
    /// words the trace explained become keys, others 0; a variable binding's peer (its call's
    /// seq) is 0 when its call is not in the store.
    fn event<'r>(&self, record: &Record<'r>, log: &CaptureLog) -> Option<(Seq, Header, &'r [u8])> {
        let ev = record.as_event()?;
        let seq = ev.seq;
        if seq == 0 {
            return None;
        }
        Kind::from_u8(ev.header.kind)?;
        let key = |w: u64| match &self.words {
            None => w,
            Some(words) => words.get(&w).copied().unwrap_or(0),
        };
        let mut h = ev.header;
        h.pid = key(h.pid);
        h.module = key(h.module);
        h.function = key(h.function);
        h.peer = if h.kind == Kind::Var as u8 {
            Some(h.peer).filter(|&s| log.can_hold(s)).unwrap_or(0)
        } else {
            key(h.peer)
        };
        Some((seq, h, ev.payload))
    }

    /// The event whose payload `ev` shares, if it is an unchanged state written without one.
    fn shares(&self, ev: &EventRef) -> Option<Seq> {
        ev.shares_payload()
            .then(|| self.state_before(ev.header.pid, ev.seq))
            .flatten()
    }

    /// The state event of `pid` before `seq`.
    fn state_before(&self, pid: PidKey, seq: Seq) -> Option<Seq> {
        let states = self.states.get(&pid)?;
        let i = states.partition_point(|&s| s < seq).checked_sub(1)?;
        Some(states[i])
    }

    /// Takes a sealed segment with its believed footer: its blocks are read when asked for.
    /// Returns its index lists (those of seqs above what was there before), `None` when they
    /// are damaged.
    fn add_sealed(&mut self, dir: &Path, meta: &SegmentMeta, footer: &Footer) -> Option<Lists> {
        self.add_blocks(dir, meta, footer, meta.footer_at)
    }

    /// Takes the events `footer` describes (of the segment `meta`, their frames ending at
    /// `end`): their blocks are read when asked for. Returns their index lists (those of seqs
    /// above what was there before), `None` when they are damaged.
    fn add_blocks(
        &mut self,
        dir: &Path,
        meta: &SegmentMeta,
        footer: &Footer,
        end: u64,
    ) -> Option<Lists> {
        let words = self.words.as_ref();
        let lists = lists(footer, words)?.after(self.top);
        // A segment read while it was written is the same file when it is sealed.
        let file = match self.files.iter().position(|(_, m)| m.file == meta.file) {
            Some(i) => {
                self.files[i].1 = meta.clone();
                i
            }
            None => {
                self.files.push((dir.to_path_buf(), meta.clone()));
                self.files.len() - 1
            }
        };
        for (i, &(first, _, from)) in footer.seeks.iter().enumerate() {
            let (last, to) = footer
                .seeks
                .get(i + 1)
                .map_or((footer.last_seq, end), |n| (n.0 - 1, n.2));
            if last > self.top {
                self.blocks.push(Block {
                    file,
                    from,
                    to,
                    first: first.max(self.top + 1),
                    last,
                });
                self.loaded.push(false);
            }
        }
        for (pid, _, states) in &lists.pids {
            self.states
                .entry(*pid)
                .or_default()
                .extend_from_slice(states);
        }
        self.top = self.top.max(footer.last_seq);
        Some(lists)
    }

    /// Indexes the events of a segment read through (`meta`; `bytes` hold it from byte `from`
    /// on: the segment being written, from where the last read stopped, or one whose footer is
    /// missing or not believable) above the highest seq there, without reading them in: their
    /// blocks are read when asked for, as a sealed segment's are.
    fn add_scanned(
        &mut self,
        log: &CaptureLog,
        dir: &Path,
        meta: &SegmentMeta,
        bytes: &[u8],
        from: u64,
    ) -> Scanned {
        let start = match from {
            0 if segment::frames(bytes).is_err() => {
                return Scanned {
                    lists: None,
                    events: 0,
                    end: 0,
                }
            }
            0 => segment::HEADER_LEN,
            _ => 0,
        };
        let mut builder = crate::persist::footer::FooterBuilder::default();
        let mut pos = start;
        // Seqs only go up: a frame repeating one already taken (a damaged tail) is not counted.
        let mut taken = self.top;
        while let Some((record, next)) = segment::frame_at(bytes, pos) {
            if let Some(ev) = record.as_event() {
                let seq = ev.seq;
                let known = Kind::from_u8(ev.header.kind).is_some();
                if known && seq > taken && log.can_hold(seq) {
                    builder.event(&ev, from + pos as u64, true);
                    taken = seq;
                }
            }
            pos = next;
        }
        let end = from + pos as u64;
        let footer = builder.finish();
        if footer.events == 0 {
            return Scanned {
                lists: None,
                events: 0,
                end,
            };
        }
        // Relocating its file (once archived) needs its first seq, which the manifest may not
        // have had yet when it was read.
        let mut meta = meta.clone();
        if meta.first_seq == 0 {
            let known = self.files.iter().find(|(_, m)| m.file == meta.file);
            meta.first_seq = known.map_or(0, |(_, m)| m.first_seq);
            if meta.first_seq == 0 {
                meta.first_seq = footer.first_seq;
            }
        }
        let lists = self.add_blocks(dir, &meta, &footer, end);
        Scanned {
            lists: lists.map(|l| (l, footer.last_seq)),
            events: footer.events,
            end,
        }
    }
}

/// Reads a segment's bytes from offset `from` on into `buf` (from 0: all of it, decompressed
/// when archived).
fn read_from(dir: &Path, meta: &SegmentMeta, from: u64, buf: &mut Vec<u8>) -> io::Result<()> {
    if from == 0 {
        return segments::read_segment_into(dir, meta, buf);
    }
    use std::io::{Read, Seek};
    buf.clear();
    let mut file = crate::formats::fsio::open_regular(&dir.join(&meta.file))?;
    file.seek(io::SeekFrom::Start(from))?;
    file.take(segments::MAX_SEGMENT).read_to_end(buf)?;
    Ok(())
}

/// What [`Pages::add_scanned`] took from a segment.
struct Scanned {
    /// The index lists of its events, and the last one's seq (none when there are none or
    /// they are damaged).
    lists: Option<(Lists, Seq)>,
    /// Events taken.
    events: u64,
    /// Where its complete frames end.
    end: u64,
}

/// A sealed segment's footer, if it is believable and indexes the segment: consistent with the
/// manifest and itself, its seek points inside the segment, in order.
fn believed(dir: &Path, meta: &SegmentMeta, buf: &mut Vec<u8>) -> Option<Footer> {
    if !meta.sealed || meta.footer_at == 0 || meta.first_seq == 0 {
        return None;
    }
    let footer = persist::read_footer(dir, meta, meta.footer_at, buf)?;
    let seeks = &footer.seeks;
    let ordered = seeks.windows(2).all(|w| w[0].0 < w[1].0 && w[0].2 < w[1].2);
    (footer.plausible(meta.first_seq, meta.last_seq)
        && footer.index.is_some()
        && ordered
        && seeks.first().is_some_and(|s| s.0 == footer.first_seq)
        && seeks.iter().all(|s| {
            (segment::HEADER_LEN as u64..meta.footer_at).contains(&s.2) && s.0 <= footer.last_seq
        }))
    .then_some(footer)
}

/// The index lists of `footer`, in the store's keys (`words`; `None`: the same) and seqs;
/// `None` when a list is damaged.
fn lists(footer: &Footer, words: Option<&WordMap<u64, u64>>) -> Option<Lists> {
    let index = footer.index.as_ref()?;
    if footer.first_seq == 0 {
        return None;
    }
    let range = footer.first_seq..=footer.last_seq;
    let seqs = |l: &SeqList| -> Option<Vec<Seq>> { l.decode(range.clone()) };
    let key = |w: &u64| match words {
        None => Some(*w),
        Some(words) => words.get(w).copied(),
    };
    let at = |s: u64| range.contains(&s).then_some(s);
    let mut lists = Lists::default();
    // Each event is one process's: a footer claiming more is not believed.
    let claimed = index
        .pids
        .iter()
        .fold(0u64, |n, (_, e, _)| n.saturating_add(e.len));
    if claimed > footer.events {
        return None;
    }
    for (pid, events, states) in &index.pids {
        let (events, states) = (seqs(events)?, seqs(states)?);
        if let Some(pid) = key(pid) {
            lists.pids.push((pid, events, states));
        }
    }
    for (pid, seq) in &index.spawns {
        lists.spawns.extend(key(pid).zip(at(*seq)));
    }
    for (pid, seq) in &index.exits {
        lists.exits.extend(key(pid).zip(at(*seq)));
    }
    for (tag, l) in &index.tags {
        lists.tags.push((tag.clone(), seqs(l)?));
    }
    for (module, l) in &index.modules {
        let l = seqs(l)?;
        lists.modules.extend(key(module).map(|m| (m, l)));
    }
    for (module, function, l) in &index.functions {
        let l = seqs(l)?;
        // As a store loaded whole has it: a function the trace did not explain is 0.
        if let Some(m) = key(module) {
            lists.functions.push((m, key(function).unwrap_or(0), l));
        }
    }
    Some(lists)
}

/// Opens the segment directory `path` paged: a reader whose index comes from the
/// footers of its sealed segments, whose events are read when first asked for. The last
/// segment, when it is not sealed (a capture still running, or cut short), is scanned for its
/// index at once; its events too are read when asked for.
/// `None` when the trace cannot be opened this way (a single file, a segment without a
/// believable footer that is not the last, footers written before they held an index, an
/// unreadable file): it is then loaded whole instead.
pub fn open(path: &Path, map: &mut dyn FnMut(&[u8], &Symbols) -> Mapped) -> Option<Loaded> {
    if !path.is_dir() {
        return None;
    }
    let files = persist::trace_files(path).ok()?;
    let (last, sealed) = files.split_last()?;
    let tail = (!last.1.sealed).then_some(last);
    let sealed = if tail.is_some() { sealed } else { &files[..] };
    let mut buf = Vec::new();
    let footers: Vec<Footer> = sealed
        .iter()
        .map(|(dir, meta)| believed(dir, meta, &mut buf))
        .collect::<Option<_>>()?;
    let first = files.first()?.1.first_seq;
    // Segments follow each other: a manifest saying otherwise is not believed.
    let follow = footers.windows(2).all(|w| w[0].last_seq < w[1].first_seq);
    if first == 0 || !follow || footers.first().is_some_and(|f| f.first_seq != first) {
        return None;
    }
    let mut loader = Loader::new(Window::default()).ok()?;
    for f in &footers {
        loader.take_footer(f, map);
    }
    // The unsealed last segment: its symbols first.
    let mut tail_bytes = Vec::new();
    let (mut missing, mut torn) = (0, Vec::new());
    if let Some((dir, meta)) = tail {
        match segments::read_segment_into(dir, meta, &mut tail_bytes) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing += 1,
            Err(_) => return None,
        }
        if !tail_bytes.is_empty() {
            match persist::open_frames(dir, meta, &tail_bytes).ok()? {
                Some(mut frames) => {
                    for record in frames.by_ref().filter(|r| r.as_event().is_none()) {
                        loader.take(record, map);
                    }
                    if frames.torn() {
                        torn.push(meta.file.clone());
                    }
                }
                None => torn.push(meta.file.clone()),
            }
        }
    }
    // The store's seqs are the trace's (retention may have deleted its first segments): an
    // event has the same seq live, opened and in the summary.
    let base = first - 1;
    let mut pages = Pages::new(Some(std::mem::take(&mut loader.words)));
    pages.top = base;
    let mut index = Index::new();
    index.skip_to(base);
    for (f, (dir, meta)) in footers.iter().zip(sealed) {
        let lists = pages.add_sealed(dir, meta, f)?;
        index.append(lists, f.last_seq);
    }
    let log = CaptureLog::paged(base, Box::new(SegmentPager::new(pages, None)));
    let mut pages = SegmentPager::of(&log)?.pages();
    let sealed_top = pages.top;
    let mut tail_events = 0;
    if let Some((dir, meta)) = tail {
        let scanned = pages.add_scanned(&log, dir, meta, &tail_bytes, 0);
        if let Some((lists, last)) = scanned.lists {
            index.append(lists, last);
        }
        tail_events = scanned.events;
    }
    // Seqs the tail skipped, before its first event or between two.
    let tail_gaps = (pages.top - sealed_top).saturating_sub(tail_events);
    log.grow(pages.top);
    drop(pages);
    let mut report = loader.report;
    report.segments = files.len() - missing;
    report.bytes = persist::files_bytes(&files);
    report.events = footers
        .iter()
        .fold(tail_events, |n, f| n.saturating_add(f.events));
    report.first_seq = first;
    report.gaps = footers
        .windows(2)
        .map(|w| w[1].first_seq.saturating_sub(w[0].last_seq + 1))
        .sum::<u64>()
        + tail_gaps;
    report.torn = torn;
    report.missing = missing;
    report.paged = footers.len();
    log.add_dropped(report.dropped);
    let symbols = std::mem::take(&mut loader.symbols);
    Some(Loaded {
        reader: Reader::indexed(log, index, Some(symbols)),
        report,
    })
}

/// The directory a following store follows (see [`follow`]).
pub fn followed_dir(reader: &Reader) -> Option<PathBuf> {
    SegmentPager::of(reader.log_unpinned())?.dir.clone()
}

/// What reading a paged reader's events from disk found so far: how many events of the blocks
/// read could not be read back (damaged frames, files gone), and the segment files they are
/// in. `None` for a reader that is not paged.
pub fn damage(reader: &Reader) -> Option<(u64, Vec<String>)> {
    let pages = SegmentPager::of(reader.log_unpinned())?.pages();
    let files = pages
        .damaged
        .iter()
        .filter_map(|&i| pages.files.get(i).map(|(_, m)| m.file.clone()))
        .collect();
    Some((pages.unread, files))
}

/// A reader following the trace that a capture of this VM run writes into `dir`: empty until
/// [`refresh`]ed, then holding every event on disk, its seqs those of the trace (continuing
/// across the capture's stores), from the oldest one on disk now. Its words are this VM's own,
/// as the capture's are. It holds up to [`crate::capture::log::PAGED_EVENTS`] events from there: its
/// owner starts over with a new one before (see [`refresh`]).
pub fn follow(dir: &Path) -> Option<Reader> {
    let base = segments::read_manifest(dir)
        .ok()
        .and_then(|m| {
            m.segments
                .iter()
                .find(|s| s.first_seq != 0)
                .map(|s| s.first_seq - 1)
        })
        .unwrap_or(0);
    let mut pages = Pages::new(None);
    pages.top = base;
    let pager = SegmentPager::new(pages, Some(dir.to_path_buf()));
    let mut index = Index::new();
    index.skip_to(base);
    Some(Reader::indexed(
        CaptureLog::paged(base, Box::new(pager)),
        index,
        None,
    ))
}

/// Brings a [`follow`]ing reader up to what its directory holds now: new sealed segments are
/// indexed from their footers and read as queries need them; the segment being written is
/// read from where the last refresh stopped. Segments the capture has archived since are
/// read from their archives; those retention deleted are missing. Returns what the reader
/// holds: its last seq, the memory it holds (this only grows), and how many more events it has
/// room for: its owner starts over with a new one when there is too much of the one or too
/// little of the other.
///
/// # Errors
/// The file system's; `InvalidInput` for a reader that follows nothing.
pub fn refresh(reader: &Reader) -> io::Result<Refreshed> {
    let log = reader.log_unpinned();
    let Some((pager, dir)) = SegmentPager::of(log).and_then(|p| Some((p, p.dir.as_ref()?))) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the reader follows no trace",
        ));
    };
    let _turn = pager.refreshing.lock();
    let manifest = segments::read_manifest(dir)?;
    // What the index gets, in seq order: each segment's lists, and its last seq.
    let mut steps: Vec<(Lists, Seq)> = Vec::new();
    let top = {
        let mut pages = pager.pages();
        // Archived since: the same segment (its first seq) under its new name.
        let by_first: std::collections::HashMap<u64, &SegmentMeta> =
            manifest.segments.iter().map(|m| (m.first_seq, m)).collect();
        for (_, known) in pages.files.iter_mut() {
            if let Some(now) = by_first.get(&known.first_seq) {
                *known = (*now).clone();
            }
        }
        let mut buf = Vec::new();
        for meta in &manifest.segments {
            let seen = meta.sealed
                && (meta.last_seq == 0
                    || meta.last_seq <= pages.top
                    || pages.read_through.contains(&meta.first_seq));
            if seen {
                continue;
            }
            if let Some(footer) = believed(dir, meta, &mut buf) {
                if let Some(lists) = pages.add_sealed(dir, meta, &footer) {
                    steps.push((lists, footer.last_seq));
                    continue;
                }
            }
            // The segment being written (from where the last read stopped), or one whose
            // footer is missing or not believable.
            let from = match &pages.tail {
                Some((file, at)) if *file == meta.file && !meta.sealed => *at,
                _ => 0,
            };
            match read_from(dir, meta, from, &mut buf) {
                Ok(()) => {}
                // Archived or deleted meanwhile: the next refresh sees it as it is now.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
            let scanned = pages.add_scanned(log, dir, meta, &buf, from);
            if meta.sealed {
                // Read once: what it lacks (a torn end) it lacks for good.
                pages.read_through.insert(meta.first_seq);
            } else {
                pages.tail = Some((meta.file.clone(), scanned.end));
            }
            steps.extend(scanned.lists);
        }
        pages.top
    };
    let mut index = reader.index_as_is();
    log.grow(top);
    for (lists, last) in steps {
        let upto = index.upto();
        index.append(lists.after(upto), last);
    }
    Ok(Refreshed {
        last_seq: log.last_seq(),
        bytes: log.stats().bytes,
        index_bytes: index.heap_bytes() as u64,
        room: log.room(),
    })
}

/// What a [`refresh`] left a following reader holding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refreshed {
    /// The last seq of the trace it holds.
    pub last_seq: Seq,
    /// Memory the events read in hold (what starting over gives back).
    pub bytes: u64,
    /// Memory its index holds (as much again after starting over: it indexes the trace).
    pub index_bytes: u64,
    /// Events it can still take.
    pub room: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::event::flags;
    use crate::persist::open::Loading;
    use crate::persist::segments::Policy;
    use crate::persist::tests::{map, symbol, writer_in, CLOCK};
    use crate::persist::Writer;
    use crate::store::{Config, StateKind, Store};

    fn temp(name: &str) -> PathBuf {
        crate::persist::tests::temp(&format!("paged-{name}"))
    }

    fn header(kind: Kind, pid: u64, peer: u64, module: u64, ts: i64) -> Header {
        Header {
            ts,
            pid,
            peer,
            module,
            function: if module == 0 { 0 } else { 13 + module % 3 * 2 },
            arity: 1,
            kind: kind as u8,
            flags: 0,
        }
    }

    /// A capture of every kind the index covers: spawns and exits, tagged messages, calls of
    /// two modules, states that mostly repeat (sharing payloads across blocks), variables.
    fn capture(store: &Store, from: u64, n: u64) {
        let mut scratch = Vec::new();
        for i in from..from + n {
            let ts = i as i64 * 10;
            let pid = 3 + (i % 6) * 2;
            if i % 97 == 0 {
                let child = 101 + i * 2;
                store.append(&header(Kind::Spawn, pid, child, 0, ts), b"s", &mut scratch);
                store.append(&header(Kind::Exit, child, 0, 0, ts + 1), b"x", &mut scratch);
            }
            let tag = [b"tick", b"tock"][(i % 2) as usize];
            let mut msg = vec![131, 104, 2, 119, 4];
            msg.extend_from_slice(tag);
            msg.extend_from_slice(&[97, (i % 250) as u8]);
            store.append(
                &header(Kind::Send, pid, 20 + i % 3 * 2, 0, ts),
                &msg,
                &mut scratch,
            );
            let module = 31 + i % 2 * 2;
            store.append(
                &header(Kind::Call, pid, 0, module, ts + 2),
                b"c",
                &mut scratch,
            );
            // A state that changes once in 700 callbacks: most repeat one in an earlier block.
            let state = [131, 97, (i / 700 % 200) as u8, 1, 2, 3];
            store.append_state(
                &header(Kind::State, pid, 0, 11, ts + 3),
                &state,
                6,
                true,
                &mut scratch,
            );
            if i % 5 == 0 {
                let entry = store.append(&header(Kind::Var, pid, 0, 0, ts + 4), b"e", &mut scratch);
                if let crate::capture::log::Appended::Stored(entry) = entry {
                    store.append(
                        &header(Kind::Var, pid, entry, 0, ts + 5),
                        b"v",
                        &mut scratch,
                    );
                }
            }
        }
    }

    fn store() -> Store {
        let store = Store::new(Config::default()).unwrap();
        store.watch_state_module(11, StateKind::GenServer);
        store
    }

    fn eager(dir: &Path) -> Loaded {
        let mut l = Loading::eager(dir).unwrap();
        while l.step(&mut map).unwrap() {}
        l.finish()
    }

    /// Events in `order`, then the index, read from `paged` equal what `eager` holds (with
    /// module and function words as `key` makes them keys).
    fn same(paged: &Reader, eager: &Reader, order: &[Seq], key: fn(u64) -> u64) {
        let (p, e) = (paged.log(), eager.log());
        assert_eq!(p.last_seq(), e.last_seq());
        for &seq in order {
            assert_eq!(p.get(seq), e.get(seq), "seq {seq}");
        }
        let (pi, ei) = (paged.index(), eager.index());
        // Footers do not say whom a message went to: a paged index has no inboxes (and says
        // so), and no entry for a process that only received.
        assert!(!pi.inbox_complete() && ei.inbox_complete());
        let mut pids: Vec<_> = pi.pids().map(|(k, v)| (*k, v.clone())).collect();
        let mut want: Vec<_> = ei
            .pids()
            .filter(|(_, v)| !v.events.is_empty())
            .map(|(k, v)| {
                (
                    *k,
                    crate::index::PidIndex {
                        inbox: Vec::new(),
                        ..v.clone()
                    },
                )
            })
            .collect();
        pids.sort_by_key(|x| x.0);
        want.sort_by_key(|x| x.0);
        assert_eq!(pids, want);
        assert!(pids
            .iter()
            .any(|(_, p)| p.spawned.is_some() && p.exit.is_some()));
        for tag in ["tick", "tock"] {
            assert!(!ei.tag(tag).is_empty());
            assert_eq!(pi.tag(tag), ei.tag(tag));
        }
        for m in [31, 33].map(key) {
            assert!(!ei.calls(m, None).is_empty());
            assert_eq!(pi.calls(m, None), ei.calls(m, None));
            for f in [13, 15, 17].map(key) {
                assert_eq!(pi.calls(m, Some(f)), ei.calls(m, Some(f)));
            }
        }
        // Key changes are computed from the states rather than indexed: the same answers.
        for (pid, _) in &want {
            assert_eq!(
                crate::index::key_changes(&p, &pi, *pid, "k"),
                crate::index::key_changes(&e, &ei, *pid, "k")
            );
        }
    }

    fn write(dir: &Path, archive: bool, seal: bool) -> Store {
        let store = store();
        let mut w = writer_in(dir, 150_000, archive);
        for round in 0..4 {
            capture(&store, round * 1500, 1500);
            w.flush_all(store.reader(), CLOCK, &mut symbol).unwrap();
        }
        if seal {
            w.finish().unwrap();
        }
        store
    }

    #[test]
    fn a_paged_store_answers_as_one_loaded_whole() {
        for archive in [false, true] {
            let dir = temp(&format!("same-{archive}"));
            let live = write(&dir, archive, true);
            let m = segments::read_manifest(&dir).unwrap();
            assert!(m.segments.len() >= 4, "{}", m.segments.len());
            let paged = open(&dir, &mut map).expect("opens paged");
            assert_eq!(paged.report.paged, m.segments.len());
            assert_eq!(paged.report.events, live.stats().events);
            assert_eq!(paged.report.clock, Some(CLOCK));
            // Nothing is read until asked for; backwards, each unchanged state needs an
            // earlier block first.
            assert_eq!(paged.reader.stats().payload_bytes, 0);
            let eager = eager(&dir);
            let last = live.log().last_seq();
            let backwards: Vec<Seq> = (1..=last).rev().collect();
            same(&paged.reader, &eager.reader, &backwards, |w| w + 1_000_000);
            assert_eq!(
                paged.reader.stats().payload_bytes,
                eager.reader.stats().payload_bytes
            );
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn a_query_reads_only_the_blocks_it_touches() {
        let dir = temp("touch");
        write(&dir, false, true);
        let paged = open(&dir, &mut map).unwrap();
        let log = paged.reader.log();
        let ev = log.get(log.last_seq() / 2).unwrap();
        assert_eq!(ev.seq, log.last_seq() / 2);
        // One block of about 1024 events, and a block before it for a shared state at most.
        let bytes = paged.reader.stats().bytes;
        assert!(bytes < 3 * (2 << 20) + (64 << 10) * 2, "{bytes}");
        let eager = eager(&dir);
        assert_eq!(log.get(ev.seq), eager.reader.log().get(ev.seq));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unsealed_last_segment_is_scanned_for_its_index() {
        let dir = temp("tail");
        let live = write(&dir, false, false);
        let m = segments::read_manifest(&dir).unwrap();
        assert!(!m.segments.last().unwrap().sealed);
        let paged = open(&dir, &mut map).expect("opens paged");
        assert_eq!(paged.report.paged, m.segments.len() - 1);
        assert_eq!(paged.report.events, live.stats().events);
        assert_eq!(paged.report.gaps, 0);
        let eager = eager(&dir);
        let forwards: Vec<Seq> = (1..=live.log().last_seq()).collect();
        same(&paged.reader, &eager.reader, &forwards, |w| w + 1_000_000);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_follower_sees_what_a_running_capture_wrote() {
        for archive in [false, true] {
            let dir = temp(&format!("follow-{archive}"));
            let live = store();
            let mut w = writer_in(&dir, 100_000, archive);
            let follower = follow(&dir).unwrap();
            assert_eq!(refresh(&follower).unwrap().last_seq, 0);
            for round in 0..5 {
                capture(&live, round * 700, 700);
                w.flush(live.reader(), CLOCK, &mut symbol, u64::MAX)
                    .unwrap();
                assert_eq!(refresh(&follower).unwrap().last_seq, live.log().last_seq());
                if round == 0 {
                    // Indexed, not read in: the segment being written too.
                    assert_eq!(follower.stats().payload_bytes, 0);
                }
                let backwards: Vec<Seq> = (1..=live.log().last_seq()).rev().collect();
                same(&follower, live.reader(), &backwards, |w| w);
            }
            // The capture goes on in a fresh store; on disk (and in the follower) seqs go on.
            let next = store();
            w.continue_with(next.reader());
            let base = live.log().last_seq();
            capture(&next, 3500, 1500);
            w.flush(next.reader(), CLOCK, &mut symbol, u64::MAX)
                .unwrap();
            w.finish().unwrap();
            assert_eq!(
                refresh(&follower).unwrap().last_seq,
                base + next.log().last_seq()
            );
            let log = follower.log();
            for seq in 1..=next.log().last_seq() {
                let (mut want, got) = (
                    next.reader().log_unpinned().get(seq).unwrap(),
                    log.get(base + seq).unwrap(),
                );
                if want.header.kind == Kind::Var as u8 && want.header.peer != 0 {
                    want.header.peer += base;
                }
                assert_eq!((got.header, got.payload), (want.header, want.payload));
            }
            let idx = follower.index();
            let p = idx.pid(3).unwrap();
            let of_3 = |s: &Reader| s.index().pid(3).unwrap().events.len();
            assert_eq!(p.events.len(), of_3(live.reader()) + of_3(next.reader()));
            assert!(p.events.windows(2).all(|w| w[0] < w[1]));
            drop(idx);
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn blocks_of_a_segment_archived_after_it_was_indexed_are_read_from_the_archive() {
        let dir = temp("follow-archived-tail");
        let live = store();
        let mut w = writer_in(&dir, 100_000, true);
        let follower = follow(&dir).unwrap();
        capture(&live, 0, 100);
        w.flush(live.reader(), CLOCK, &mut symbol, u64::MAX)
            .unwrap();
        let written = refresh(&follower).unwrap().last_seq;
        let m = segments::read_manifest(&dir).unwrap();
        assert!(m.segments.len() == 1 && !m.segments[0].sealed);
        let raw = dir.join(&m.segments[0].file);
        assert!(raw.exists());
        // Indexed while written, then sealed and archived before a query reads it.
        capture(&live, 100, 2000);
        w.flush(live.reader(), CLOCK, &mut symbol, u64::MAX)
            .unwrap();
        // Archives are made by a thread of their own: waited for.
        w.wait_archives().unwrap();
        let m = segments::read_manifest(&dir).unwrap();
        assert!(m.segments[0].archived && !raw.exists());
        for seq in 1..=written {
            let (got, want) = (
                follower.log_unpinned().get(seq).unwrap(),
                live.reader().log_unpinned().get(seq).unwrap(),
            );
            assert_eq!((got.header, got.payload), (want.header, want.payload));
        }
        assert_eq!(refresh(&follower).unwrap().last_seq, live.log().last_seq());
        let all: Vec<Seq> = (1..=live.log().last_seq()).collect();
        same(&follower, live.reader(), &all, |w| w);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_follower_starts_at_the_oldest_segment_left_and_reads_through_unbelievable_footers() {
        let dir = temp("follow-retained");
        let policy = Policy {
            segment_bytes: 60_000,
            max_bytes: 300_000,
            ..Policy::default()
        };
        let live = store();
        let mut w = Writer::create(&dir, policy).unwrap();
        capture(&live, 0, 3000);
        w.flush(live.reader(), CLOCK, &mut symbol, u64::MAX)
            .unwrap();
        let m = segments::read_manifest(&dir).unwrap();
        let first = m.segments[0].first_seq;
        assert!(first > 1, "retention deleted the oldest segments");
        // The oldest segment left has a footer nobody believes: it is read through.
        let s0 = &m.segments[0];
        let mut bytes = std::fs::read(dir.join(&s0.file)).unwrap();
        bytes[s0.footer_at as usize + 20] ^= 0xff;
        std::fs::write(dir.join(&s0.file), &bytes).unwrap();
        // And the manifest claims it goes on far: only what is read counts.
        let mut claimed = m.clone();
        claimed.segments[0].last_seq = 1 << 40;
        let manifest = rmp_serde::to_vec(&claimed).unwrap();
        std::fs::write(dir.join(segments::MANIFEST), manifest).unwrap();
        let follower = follow(&dir).unwrap();
        assert_eq!(follower.log().first_seq(), first);
        let r = refresh(&follower).unwrap();
        assert_eq!(r.last_seq, live.log().last_seq());
        assert!(r.room > 1 << 33);
        // Read through once: refreshing again reads nothing more.
        assert_eq!(refresh(&follower).unwrap(), r);
        let log = follower.log();
        assert!(log.get(first - 1).is_none() && log.is_hole(first - 1));
        for seq in first..=r.last_seq {
            let (got, want) = (
                log.get(seq).unwrap(),
                live.reader().log_unpinned().get(seq).unwrap(),
            );
            assert_eq!((got.header, got.payload), (want.header, want.payload));
        }
        // Indexed in seq order, the segment read through included.
        let (fi, li) = (follower.index(), live.reader().index());
        for (pid, p) in li.pids() {
            let kept: Vec<Seq> = p.events.iter().copied().filter(|&s| s >= first).collect();
            assert_eq!(
                fi.pid(*pid).map(|p| p.events.clone()).unwrap_or_default(),
                kept
            );
        }
        drop((fi, li));
        // Saved, a follower writes what it holds, from where it starts.
        let copy = temp("follow-retained-copy");
        crate::persist::save(&follower, &copy, CLOCK, &mut symbol).unwrap();
        let again = open(&copy, &mut map).unwrap();
        assert_eq!(again.report.events, r.last_seq - first + 1);
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&copy).unwrap();
    }

    #[test]
    fn a_segment_archived_after_opening_is_read_from_its_archive() {
        let dir = temp("archived-later");
        let live = write(&dir, false, true);
        let paged = open(&dir, &mut map).unwrap();
        // The capture archives the second segment, as rotation with `archive: true` does.
        let mut m = segments::read_manifest(&dir).unwrap();
        let seg = &mut m.segments[1];
        let raw = std::fs::read(dir.join(&seg.file)).unwrap();
        let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
        std::io::Write::write_all(&mut enc, &raw).unwrap();
        std::fs::write(dir.join(format!("{}.lz4", seg.file)), enc.finish().unwrap()).unwrap();
        std::fs::remove_file(dir.join(&seg.file)).unwrap();
        seg.file = format!("{}.lz4", seg.file);
        seg.archived = true;
        std::fs::write(dir.join(segments::MANIFEST), rmp_serde::to_vec(&m).unwrap()).unwrap();
        let log = paged.reader.log();
        for seq in m.segments[1].first_seq..=m.segments[1].last_seq {
            let (got, want) = (
                log.get(seq).unwrap(),
                live.reader().log_unpinned().get(seq).unwrap(),
            );
            assert_eq!((got.header.ts, got.payload), (want.header.ts, want.payload));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A sealed one-segment trace of a few blocks; its directory, live store and footer.
    fn small(name: &str) -> (PathBuf, Store, SegmentMeta, Footer) {
        let dir = temp(name);
        let live = store();
        capture(&live, 0, 700);
        crate::persist::save(live.reader(), &dir, CLOCK, &mut symbol).unwrap();
        let meta = segments::read_manifest(&dir).unwrap().segments[0].clone();
        let footer = believed(&dir, &meta, &mut Vec::new()).unwrap();
        assert!(footer.seeks.len() >= 3);
        (dir, live, meta, footer)
    }

    /// Every event `loaded` holds is the one captured at its seq (a state whose shared payload
    /// was lost says so), read in `order`.
    fn held_as_captured(loaded: &Loaded, live: &Store, order: impl Iterator<Item = Seq>) -> u64 {
        let log = loaded.reader.log();
        let mut held = 0;
        for seq in order {
            let Some(a) = log.get(seq) else { continue };
            let b = live.reader().log_unpinned().get(seq).unwrap();
            assert_eq!((a.header.ts, a.header.kind), (b.header.ts, b.header.kind));
            if a.header.flags & flags::PAYLOAD_DROPPED == 0 {
                assert_eq!(a.payload, b.payload);
            }
            held += 1;
        }
        held
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        #[test]
        fn damaged_blocks_never_panic_and_hold_only_what_was_captured(
            at in proptest::prelude::any::<usize>(),
            byte in proptest::prelude::any::<u8>(),
            backwards in proptest::prelude::any::<bool>(),
        ) {
            let (dir, live, meta, _) = small(&format!("flip-{at}-{byte}"));
            let path = dir.join(&meta.file);
            let mut bytes = std::fs::read(&path).unwrap();
            let events = segment::HEADER_LEN..meta.footer_at as usize;
            bytes[events.start + at % events.len()] ^= byte | 1;
            std::fs::write(&path, &bytes).unwrap();
            let loaded = open(&dir, &mut map).expect("the footer is intact");
            let last = live.log().last_seq();
            let held = if backwards {
                held_as_captured(&loaded, &live, (1..=last).rev())
            } else {
                held_as_captured(&loaded, &live, 1..=last)
            };
            proptest::prop_assert!(held + 1024 >= last, "{} of {}", held, last);
            std::fs::remove_dir_all(&dir).unwrap();
        }

        #[test]
        fn crafted_footers_are_refused_or_hold_only_what_was_captured(
            seek in proptest::prelude::any::<(usize, u64, u64)>(),
            list in proptest::prelude::any::<(usize, usize, u8, u64)>(),
            which in 0u8..4,
        ) {
            let (dir, live, meta, mut footer) = small(&format!("craft-{}-{}-{which}", seek.1, list.1));
            let n = footer.seeks.len();
            let index = footer.index.as_mut().unwrap();
            let pids = index.pids.len();
            let pid_list = &mut index.pids[list.0 % pids];
            match which {
                0 => footer.seeks[seek.0 % n].2 = seek.1 % (meta.footer_at + 64),
                1 => footer.seeks[seek.0 % n].0 = seek.2 % (footer.last_seq + 64),
                2 => {
                    let d = &mut pid_list.1.deltas;
                    let i = list.1 % d.len();
                    d[i] = list.2;
                }
                _ => pid_list.2.len = list.3 % 5000,
            }
            let path = dir.join(&meta.file);
            let mut bytes = std::fs::read(&path).unwrap();
            bytes.truncate(meta.footer_at as usize);
            segment::frame_into(&Record::Footer(Box::new(footer)), &mut bytes);
            std::fs::write(&path, &bytes).unwrap();
            if let Some(loaded) = open(&dir, &mut map) {
                held_as_captured(&loaded, &live, (1..=live.log().last_seq()).rev());
                let idx = loaded.reader.index();
                for (_, p) in idx.pids() {
                    proptest::prop_assert!(p.events.windows(2).all(|w| w[0] < w[1]));
                    proptest::prop_assert!(p.events.iter().all(|&s| s <= live.log().last_seq()));
                }
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn damage_costs_the_blocks_it_hits_and_nothing_else() {
        let dir = temp("damage");
        let live = write(&dir, false, true);
        let m = segments::read_manifest(&dir).unwrap();
        let seg = &m.segments[1];
        // Flip bytes in the middle of the second segment's events (its footer is intact).
        let path = dir.join(&seg.file);
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = (seg.footer_at / 2) as usize;
        bytes[mid..mid + 64].iter_mut().for_each(|b| *b ^= 0x5a);
        std::fs::write(&path, &bytes).unwrap();
        let paged = open(&dir, &mut map).expect("the footers are intact");
        let log = paged.reader.log();
        let last = live.log().last_seq();
        let held: Vec<Seq> = (1..=last).filter(|&s| log.get(s).is_some()).collect();
        assert!(held.len() < last as usize);
        // Every event held is the one captured, and at most a block or two is missing.
        assert!(held.len() as u64 >= last - 2048, "{} of {last}", held.len());
        for &s in &held {
            let (a, b) = (
                log.get(s).unwrap(),
                live.reader().log_unpinned().get(s).unwrap(),
            );
            assert_eq!((a.header.ts, a.header.kind), (b.header.ts, b.header.kind));
            // A state sharing a lost payload says so rather than being empty.
            if a.header.flags & flags::PAYLOAD_DROPPED != 0 {
                assert_eq!((a.header.kind, a.data()), (Kind::State as u8, None));
            } else {
                assert_eq!(a.payload, b.payload, "{s} {:?}", a.header);
            }
        }
        // A footer that points outside its segment is not believed: the trace loads whole.
        let mut m = m;
        m.segments[2].footer_at -= 1;
        std::fs::write(dir.join(segments::MANIFEST), rmp_serde::to_vec(&m).unwrap()).unwrap();
        assert!(open(&dir, &mut map).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
