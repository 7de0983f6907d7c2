//! What the words of a trace stand for in the VM that reads it: the synthetic keys of a loaded
//! store and the ETF they stand for ([`Symbols`]), and a capture's clock ([`Clock`]). The
//! capture store keeps a loaded trace's symbols; persistence writes and reads them.

use std::collections::HashMap;

/// Whether `key` is a synthetic key of a loaded store. A live VM's keys are immediate terms (a
/// local pid ends in `0b0011`, an atom in `0b00_1011`); synthetic keys end in `0b0000`.
#[inline]
pub const fn is_synthetic(key: u64) -> bool {
    key != 0 && key & 0xF == 0
}

/// What the synthetic keys of a loaded store stand for: the ETF (version byte included) of a
/// process or atom that has no key of its own in the reading VM (a pid of another node or of an
/// earlier run, an atom the reading VM does not know), as the trace has it; and the run the trace
/// comes from.
#[derive(Debug, Default)]
pub struct Symbols {
    /// The trace's own encodings, by synthetic key.
    etf: Vec<Box<[u8]>>,
    /// Synthetic keys by the reading VM's encoding of the term they decode to (what a query
    /// argument encodes to).
    by_term: HashMap<Box<[u8]>, u64>,
    /// The token of the VM run that captured the trace (from its clock record).
    pub(crate) run: Option<u64>,
    /// The trace's clock (its first clock record).
    pub(crate) clock: Option<Clock>,
}

impl Symbols {
    /// The synthetic key of the term the trace encodes as `etf` and this VM as `canonical`,
    /// made on first use.
    pub fn key_for(&mut self, etf: &[u8], canonical: &[u8]) -> u64 {
        if let Some(&k) = self.by_term.get(canonical) {
            return k;
        }
        self.etf.push(etf.into());
        let key = (self.etf.len() as u64) << 4;
        self.by_term.insert(canonical.into(), key);
        key
    }

    /// The trace's encoding of what a synthetic key stands for.
    pub fn etf(&self, key: u64) -> Option<&[u8]> {
        if !is_synthetic(key) {
            return None;
        }
        self.etf.get((key >> 4) as usize - 1).map(|b| &b[..])
    }

    /// The synthetic key of a term given by this VM's encoding of it, if the store has one.
    pub fn key_of(&self, canonical: &[u8]) -> Option<u64> {
        self.by_term.get(canonical).copied()
    }

    /// The run token of the trace's clock records, if they had one (and all the same).
    pub fn run(&self) -> Option<u64> {
        self.run
    }

    /// The clock of the trace the store was loaded from, if it recorded one: what saving the
    /// store again writes.
    pub fn clock(&self) -> Option<Clock> {
        self.clock
    }

    /// Symbols of a trace captured by run `run` (none yet), for decoding its terms.
    pub fn of_run(run: Option<u64>) -> Symbols {
        Symbols {
            run,
            ..Symbols::default()
        }
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
    /// A token of the VM run the times (and pids) belong to.
    pub run: u64,
}
