//! What a trace holds, told from its segments' footers (or frames) without loading its
//! events: [`Summary`], a segment per [`Summarizing::step`].

use crate::capture::hash::WordMap;
use crate::formats::event::Kind;
use crate::persist::footer::{Footer, FooterBuilder};
use crate::persist::segments::{self};
use std::collections::HashMap;
use std::io;
use std::path::Path;

use crate::persist::load::{damage, files_bytes, open_frames, read_footer, trace_files};

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
    /// As for [`crate::persist::open::Loading::new`].
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
