//! What queries read: a capture log, the per-process index over it, and, for a trace read from
//! disk, the symbols its words stand for.
//!
//! A live capture's [`crate::store::Store`] holds one (and appends to its log); a trace opened
//! from disk is one on its own, with no capture settings, policy or writer.

use crate::capture::log::{CaptureLog, LogStats};
use crate::capture::ring::Pinned;
use crate::formats::event::Seq;
use crate::formats::symbols::Symbols;
use crate::index::Index;
use parking_lot::{Mutex, MutexGuard};

/// A log being read: what [`Reader::log`] answers. It dereferences to the log.
pub struct LogRef<'a> {
    log: &'a CaptureLog,
    _pin: Option<Pinned<'a, CaptureLog>>,
}

impl std::ops::Deref for LogRef<'_> {
    type Target = CaptureLog;

    fn deref(&self) -> &CaptureLog {
        self.log
    }
}

/// A log, its index and its symbols.
pub struct Reader {
    log: CaptureLog,
    /// The per-process index, maintained by queries. The lock is only taken by queries (a
    /// dirty-scheduler NIF at a time), never on the capture path.
    index: Mutex<Index>,
    /// For a trace read from disk: what its synthetic keys stand for (`None`: its words are this
    /// VM's own).
    symbols: Option<Symbols>,
}

impl Reader {
    /// A reader of `log`, indexed from its first event on by the first query.
    pub fn new(log: CaptureLog) -> Reader {
        Reader::indexed(log, Index::new(), None)
    }

    /// A reader of `log` with the `index` already built of it (a paged trace's, from its
    /// footers), and the trace's `symbols`.
    pub(crate) fn indexed(log: CaptureLog, index: Index, symbols: Option<Symbols>) -> Reader {
        Reader {
            log,
            index: Mutex::new(index),
            symbols,
        }
    }

    /// The log, for reading: a ring-mode log's events stay whole while the answer is held
    /// (its reader is pinned, see `capture::ring`), and every event read borrows it.
    pub fn log(&self) -> LogRef<'_> {
        LogRef {
            log: &self.log,
            _pin: self.log.pin(),
        }
    }

    /// The log without a pin: for appending, and for reading a log that is not ring-mode (a
    /// trace's read from disk). Never read a ring-mode log's events through it: crate-private,
    /// so that everything outside the core reads through [`Reader::log`].
    pub(crate) fn log_unpinned(&self) -> &CaptureLog {
        &self.log
    }

    /// The per-process index, caught up with everything published.
    pub fn index(&self) -> MutexGuard<'_, Index> {
        let mut idx = self.index.lock();
        idx.catch_up(&self.log());
        idx
    }

    /// The index as it is, not caught up (for a paged trace's owner, who extends it).
    pub(crate) fn index_as_is(&self) -> MutexGuard<'_, Index> {
        self.index.lock()
    }

    /// The synthetic keys of a trace read from disk (`None` for a live capture's).
    pub fn symbols(&self) -> Option<&Symbols> {
        self.symbols.as_ref()
    }

    /// Gives a trace read from disk its synthetic keys.
    pub(crate) fn set_symbols(&mut self, symbols: Symbols) {
        self.symbols = Some(symbols);
    }

    /// The log's counters.
    pub fn stats(&self) -> LogStats {
        self.log.stats()
    }

    /// Makes an empty log's first seq `base + 1`, for its one owner before anything is stored
    /// (a trace loaded from disk keeps the trace's seqs). False when it is not empty.
    pub(crate) fn rebase(&mut self, base: Seq) -> bool {
        let done = self.log.rebase(base);
        if done {
            self.index.get_mut().skip_to(base);
        }
        done
    }

    /// Makes the next event stored take seq `seq`, the seqs before it holes (see
    /// [`CaptureLog::skip_to`]), for the log's one owner. False when it cannot.
    pub(crate) fn skip_to(&mut self, seq: Seq) -> bool {
        self.log.skip_to(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::log::Limits;
    use crate::formats::event::{Header, Kind};

    fn log() -> CaptureLog {
        CaptureLog::new(Limits {
            max_events: 1_000,
            max_bytes: 1 << 20,
        })
    }

    fn event(pid: u64) -> Header {
        Header {
            pid,
            kind: Kind::Spawn as u8,
            ..Header::default()
        }
    }

    #[test]
    fn the_index_catches_up_with_what_is_published_when_read() {
        let reader = Reader::new(log());
        reader.log().append(&event(7), b"");
        assert_eq!(reader.index().pid(7).unwrap().events, vec![1]);
        reader.log().append(&event(7), b"");
        reader.log().append(&event(8), b"");
        assert_eq!(reader.index().pid(7).unwrap().events, vec![1, 2]);
        assert_eq!(reader.index().upto(), 3);
        assert!(reader.symbols().is_none());
    }

    #[test]
    fn a_rebased_reader_keeps_the_traces_seqs_and_skips_holes() {
        let mut reader = Reader::new(log());
        assert!(reader.rebase(41));
        reader.log().append(&event(7), b"");
        assert!(reader.skip_to(45));
        reader.log().append(&event(7), b"");
        assert!(!reader.rebase(0), "not empty any more");
        assert_eq!(reader.index().pid(7).unwrap().events, vec![42, 45]);
        assert!(reader.log().is_hole(43) && reader.log().is_hole(44));
    }
}
