//! Writing a capture to a segment directory: [`Writer`] follows a capture store's events as
//! they are published, and [`save`] writes a whole log (a capture's or an opened trace's) at once.

use crate::capture::delta;
use crate::capture::hash::WordHasher;
use crate::formats::error::Error;
use crate::formats::event::{flags, Kind, PidKey, Seq};
use crate::formats::symbols::Clock;
use crate::persist::footer::FooterBuilder;
use crate::persist::segment::Record;
use crate::persist::segments::{self, Manifest, Policy, Segments};
use crate::reader::Reader;
use crate::store::Store;
use std::collections::HashSet;
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
    /// Whether an event was written yet.
    wrote: bool,
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
            wrote: false,
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
        reader: &Reader,
        clock: Clock,
        symbol: &mut dyn FnMut(u64) -> Option<Vec<u8>>,
        max: u64,
    ) -> io::Result<u64> {
        if let Some(e) = &self.failed {
            return Err(io::Error::new(e.kind(), e.to_string()));
        }
        self.flush_events(reader, clock, symbol, max)
            .inspect_err(|e| self.failed = Some(io::Error::new(e.kind(), e.to_string())))
    }

    fn flush_events(
        &mut self,
        reader: &Reader,
        clock: Clock,
        symbol: &mut dyn FnMut(u64) -> Option<Vec<u8>>,
        max: u64,
    ) -> io::Result<u64> {
        let log = reader.log();
        // A paged reader (a followed trace) starts where the trace it follows does; so does a
        // ring-mode log (see `capture::ring`). One that evicts events this writer had not
        // written yet (it went round faster than the writer wrote) has them counted as
        // dropped: the trace says they are missing.
        let first = log.first_seq();
        if log.is_ring() && self.wrote && first > self.next {
            self.stats_base.0 += first - self.next;
        }
        self.next = self.next.max(first);
        let published = log.published_seq();
        let last = published.min(self.next.saturating_add(max) - 1);
        let mut written = 0;
        let mut whole = Vec::new();
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
            self.wrote = true;
            // On disk, seqs continue those of the stores written before; so does the entry a
            // variable binding points at.
            let mut disk = ev;
            disk.seq += self.base;
            if disk.header.kind == Kind::Var as u8 && disk.header.peer != 0 {
                disk.header.peer += self.base;
            }
            let h = disk.header;
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
            // An unchanged state shares the payload this segment already holds.
            let elided =
                is_state && self.states.contains(&h.pid) && h.flags & flags::STATE_UNCHANGED != 0;
            // A state stored as a delta is written whole (see `capture::delta`): segments hold
            // no deltas. One that cannot be resolved is written without its payload.
            if delta::is_delta(&ev) {
                disk.header.flags &= !flags::STATE_DELTA;
                if elided {
                    // Not written: the process's state before it, in this segment, is.
                    disk.header.flags &= !flags::PAYLOAD_DROPPED;
                } else if delta::resolve(&log, &ev, &mut whole) {
                    disk.header.flags &= !flags::PAYLOAD_DROPPED;
                    disk.payload = &whole;
                } else {
                    // Without its payload, and not sharing another's either.
                    disk.payload = &[];
                    disk.header.flags &= !flags::STATE_UNCHANGED;
                }
            }
            let payload = if elided { &[][..] } else { disk.payload };
            let offset = self.segments.current_len();
            self.segments.push(&Record::event(&disk, payload))?;
            self.footer.event(
                &disk,
                offset,
                !payload.is_empty() || disk.payload.is_empty(),
            );
            if is_state {
                self.states.insert(h.pid);
            }
            self.next += 1;
            written += 1;
            if self.segments.should_rotate() {
                self.write_stats(reader, clock)?;
                let footer = self.take_footer();
                self.segments.rotate(Some(&footer))?;
                self.known.clear();
                self.states.clear();
                self.fresh = true;
                self.stats = None;
            }
        }
        let changed = self.write_stats(reader, clock)?;
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
        reader: &Reader,
        clock: Clock,
        symbol: &mut dyn FnMut(u64) -> Option<Vec<u8>>,
    ) -> io::Result<()> {
        while self.flush(reader, clock, symbol, 1 << 20)? > 0 {}
        Ok(())
    }

    /// Writes the capture's counters if they changed since last written; whether it did.
    fn write_stats(&mut self, reader: &Reader, clock: Clock) -> io::Result<bool> {
        let s = reader.stats();
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

    /// Goes on with the events of a fresh store that replaces the one `reader` reads, whose
    /// events are all written: its seq 1 follows the last seq written on disk. Events of the
    /// old one not written (still unpublished) are counted as dropped; holes already were.
    pub fn continue_with(&mut self, reader: &Reader) {
        let s = reader.stats();
        let log = reader.log();
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

/// Writes every event `reader` holds into `dir` (which must not hold a trace yet) and seals it.
///
/// # Errors
/// The file system's, or `AlreadyExists` when `dir` holds a trace.
pub fn save(
    reader: &Reader,
    dir: &Path,
    clock: Clock,
    symbol: &mut dyn FnMut(u64) -> Option<Vec<u8>>,
) -> io::Result<Manifest> {
    let mut writer = Writer::create(dir, Policy::default())?;
    writer.flush_all(reader, clock, symbol)?;
    writer.finish()
}
