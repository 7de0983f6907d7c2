//! What capture keeps: the tracing level (a set of kinds) and sampling, both changeable while
//! tracing runs and read with one relaxed load each on the capture path.

use crate::formats::event::{Kind, KindMask, PidKey};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};

/// A tracing level: a named set of kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Every kind.
    Full,
    /// Messages only: `send`, `send_to_dead`, `receive`, `timeout`.
    MessagesOnly,
    /// Process state: `state`, `supervisor` and `exit` events.
    ///
    /// Every level but `Off` also keeps `traced`, `metrics` (sampled only when asked for)
    /// and `control` events.
    StatesOnly,
    /// Process lifecycle: `spawn`, `exit`, `register`, `unregister`, `supervisor`.
    Minimal,
    /// Nothing.
    Off,
}

impl Level {
    /// Every level, from most to least.
    pub const ALL: [Level; 5] = [
        Level::Full,
        Level::MessagesOnly,
        Level::StatesOnly,
        Level::Minimal,
        Level::Off,
    ];

    /// The kinds this level keeps.
    pub fn mask(self) -> KindMask {
        match self {
            Level::Full => KindMask::ALL,
            Level::MessagesOnly => KindMask::of(&[
                Kind::Traced,
                Kind::Send,
                Kind::SendToDead,
                Kind::Receive,
                Kind::Timeout,
                Kind::Metrics,
                Kind::Control,
            ]),
            Level::StatesOnly => KindMask::of(&[
                Kind::Traced,
                Kind::Exit,
                Kind::State,
                Kind::Supervisor,
                Kind::Metrics,
                Kind::Control,
            ]),
            Level::Minimal => KindMask::of(&[
                Kind::Traced,
                Kind::Spawn,
                Kind::Exit,
                Kind::Register,
                Kind::Unregister,
                Kind::Supervisor,
                Kind::Metrics,
                Kind::Control,
            ]),
            // (`Control` events are recorded even then: see `Kind::Control`.)
            Level::Off => KindMask::NONE,
        }
    }

    /// The level's name as the Elixir API spells it.
    pub fn name(self) -> &'static str {
        match self {
            Level::Full => "full",
            Level::MessagesOnly => "messages_only",
            Level::StatesOnly => "states_only",
            Level::Minimal => "minimal",
            Level::Off => "off",
        }
    }

    /// The level with this name, if any.
    pub fn from_name(name: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.name() == name)
    }
}

/// How sampling picks what to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleBy {
    /// A process is either fully kept or fully skipped, decided by a hash of its pid, so the kept
    /// processes' stories are complete.
    Process,
    /// Events are kept in an exact, evenly spread proportion (`floor(n * rate)` of the first `n`).
    Event,
}

/// The live capture policy. Every read on the capture path is one `Relaxed` load: a policy change
/// taking effect a few events late on another scheduler is harmless.
pub struct Policy {
    mask: AtomicU32,
    level: AtomicU32,
    /// Sample rate as a fraction of 2^32 (2^32 = keep everything).
    rate: AtomicU64,
    by_event: AtomicBool,
    counter: AtomicU64,
    cap: RateCap,
}

/// A hard cap on the capture rate: the first event stored beyond `limit` in one window of
/// `window_ns` (windows are fixed, aligned on the monotonic clock) trips it, and tripping
/// turns the level to [`Level::Off`] at once, on the capture path itself, so a flood stops
/// costing the traced processes before anybody reacts. It trips once until set again; its
/// owner is told by the caller of [`Policy::count`] and decides what comes next.
///
/// The window and its count share one word (`window << COUNT_BITS | count`), so a new window
/// starts with one compare-and-swap that no other writer's count can slip between. Counting is
/// one relaxed `fetch_add` per stored event while a cap is set (one relaxed load otherwise). An
/// event stamped just before a window turned, counted just after, counts in the new window.
struct RateCap {
    /// Events a window may store; 0 when no cap is set.
    limit: AtomicU64,
    window_ns: AtomicU64,
    /// `window << COUNT_BITS | count`, [`NO_WINDOW`] before the first event.
    state: AtomicU64,
    /// Where the counted window ends (monotonic ns): an event before it counts without a
    /// division. Set after the window starts, so briefly behind it (those take the slow path).
    window_end: AtomicI64,
    tripped: AtomicBool,
}

/// Bits of [`RateCap::state`] holding the count; above them the window number (wrapping), and
/// the top bit says there is no window yet: a count added to that (by a writer that read a
/// window's end just before the cap was set again) leaves it so.
const COUNT_BITS: u32 = 24;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
/// The window numbers' range (they wrap, compared within half of it).
const WINDOW_MASK: u64 = (1 << (63 - COUNT_BITS)) - 1;
const NO_WINDOW: u64 = 1 << 63;
/// The largest rate cap: a window's count must never carry into its window number (the count
/// stops growing at the trip, but for a few events in flight on other schedulers).
pub const MAX_RATE_LIMIT: u64 = 1 << 23;

impl Default for RateCap {
    fn default() -> Self {
        RateCap {
            limit: AtomicU64::new(0),
            window_ns: AtomicU64::new(1),
            state: AtomicU64::new(NO_WINDOW),
            window_end: AtomicI64::new(i64::MIN),
            tripped: AtomicBool::new(false),
        }
    }
}

/// Whether window `w` comes after window `current` (both wrapping numbers).
fn newer(w: u64, current: u64) -> bool {
    let ahead = w.wrapping_sub(current) & WINDOW_MASK;
    ahead != 0 && ahead < WINDOW_MASK / 2
}

const ONE: u64 = 1 << 32;

impl Policy {
    /// A policy at `level`, keeping `rate` (0.0..=1.0, clamped) of processes or events.
    pub fn new(level: Level, rate: f64, by: SampleBy) -> Policy {
        let p = Policy {
            mask: AtomicU32::new(0),
            level: AtomicU32::new(0),
            rate: AtomicU64::new(ONE),
            by_event: AtomicBool::new(false),
            counter: AtomicU64::new(0),
            cap: RateCap::default(),
        };
        p.set_level(level);
        p.set_sampling(rate, by);
        p
    }

    /// Changes the level.
    pub fn set_level(&self, level: Level) {
        self.mask.store(level.mask().0, Ordering::Relaxed);
        self.level.store(level as u32, Ordering::Relaxed);
    }

    /// The current level.
    pub fn level(&self) -> Level {
        Level::ALL
            .into_iter()
            .find(|l| *l as u32 == self.level.load(Ordering::Relaxed))
            .unwrap_or(Level::Full)
    }

    /// Changes sampling.
    pub fn set_sampling(&self, rate: f64, by: SampleBy) {
        let r = if rate.is_nan() {
            0.0
        } else {
            rate.clamp(0.0, 1.0)
        };
        self.rate
            .store((r * ONE as f64).round() as u64, Ordering::Relaxed);
        self.by_event
            .store(by == SampleBy::Event, Ordering::Relaxed);
    }

    /// The current sample rate.
    pub fn rate(&self) -> f64 {
        self.rate.load(Ordering::Relaxed) as f64 / ONE as f64
    }

    /// How sampling picks.
    pub fn sample_by(&self) -> SampleBy {
        if self.by_event.load(Ordering::Relaxed) {
            SampleBy::Event
        } else {
            SampleBy::Process
        }
    }

    /// Sets the rate cap: at most `limit` events per `window_ns` nanoseconds (`limit` 0: no
    /// cap). Re-arms a tripped cap and starts counting afresh.
    pub fn set_rate_cap(&self, limit: u64, window_ns: u64) {
        let cap = &self.cap;
        cap.limit.store(0, Ordering::Relaxed);
        cap.window_ns.store(window_ns.max(1), Ordering::Relaxed);
        cap.state.store(NO_WINDOW, Ordering::Relaxed);
        cap.window_end.store(i64::MIN, Ordering::Relaxed);
        cap.tripped.store(false, Ordering::Relaxed);
        cap.limit
            .store(limit.min(MAX_RATE_LIMIT), Ordering::Relaxed);
    }

    /// The rate cap as `(limit, window_ns)`, `None` when there is none.
    pub fn rate_cap(&self) -> Option<(u64, u64)> {
        let limit = self.cap.limit.load(Ordering::Relaxed);
        (limit > 0).then(|| (limit, self.cap.window_ns.load(Ordering::Relaxed)))
    }

    /// Whether the rate cap has tripped since it was set.
    pub fn rate_tripped(&self) -> bool {
        self.cap.tripped.load(Ordering::Relaxed)
    }

    /// Counts an event stored at monotonic time `ts` (ns) against the rate cap. True for the
    /// one event that trips it: the level is [`Level::Off`] from then on, and the caller tells
    /// the owner.
    #[inline]
    pub fn count(&self, ts: i64) -> bool {
        let cap = &self.cap;
        let limit = cap.limit.load(Ordering::Relaxed);
        if limit == 0 {
            return false;
        }
        let n = if ts < cap.window_end.load(Ordering::Relaxed) {
            // The window being counted (or, for a writer stamped just before it, the next).
            match cap.state.fetch_add(1, Ordering::Relaxed) {
                // The cap was set again meanwhile: this event starts its first window.
                before if before & NO_WINDOW != 0 => self.count_slow(ts),
                before => (before & COUNT_MASK) + 1,
            }
        } else {
            self.count_slow(ts)
        };
        if n <= limit
            || cap.tripped.load(Ordering::Relaxed)
            || cap.tripped.swap(true, Ordering::Relaxed)
        {
            return false;
        }
        self.set_level(Level::Off);
        true
    }

    /// Counts an event at or past the end of the window being counted: it may start the next.
    #[cold]
    fn count_slow(&self, ts: i64) -> u64 {
        let cap = &self.cap;
        // Monotonic time is often negative: windows are numbered by floor division.
        let window_ns = cap.window_ns.load(Ordering::Relaxed).max(1) as i64;
        let number = ts.div_euclid(window_ns);
        let window = number as u64 & WINDOW_MASK;
        let current = cap.state.load(Ordering::Relaxed);
        let first = current & NO_WINDOW != 0 || newer(window, current >> COUNT_BITS);
        let started = first
            && cap
                .state
                .compare_exchange(
                    current,
                    window << COUNT_BITS | 1,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok();
        if started {
            let end = number.saturating_add(1).saturating_mul(window_ns);
            cap.window_end.store(end, Ordering::Relaxed);
            // Set again (or moved on) meanwhile: that end is not the counted window's.
            if cap.state.load(Ordering::Relaxed) >> COUNT_BITS != window {
                cap.window_end.store(i64::MIN, Ordering::Relaxed);
            }
            1
        } else {
            // Another writer started the window (or counted) first: count in what is there,
            // unless that is no window (the cap was set again): then nothing trips.
            match cap.state.fetch_add(1, Ordering::Relaxed) {
                before if before & NO_WINDOW != 0 => 1,
                before => (before & COUNT_MASK) + 1,
            }
        }
    }

    /// Whether the level keeps `kind` at all.
    #[inline]
    pub fn wants(&self, kind: Kind) -> bool {
        KindMask(self.mask.load(Ordering::Relaxed)).contains(kind)
    }

    /// Whether an event of `pid` passes sampling. With event sampling this advances the counter,
    /// so call it once per event, after [`Policy::wants`].
    #[inline]
    pub fn sample(&self, pid: PidKey) -> bool {
        let rate = self.rate.load(Ordering::Relaxed);
        if rate >= ONE {
            return true;
        }
        if rate == 0 {
            return false;
        }
        if self.by_event.load(Ordering::Relaxed) {
            let n = self.counter.fetch_add(1, Ordering::Relaxed) as u128;
            let r = rate as u128;
            ((n + 1) * r) >> 32 > (n * r) >> 32
        } else {
            (mix64(pid) >> 32) < rate
        }
    }
}

/// splitmix64's finalizer: spreads pid handles (which differ in a few middle bits) evenly.
#[inline]
pub fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_keep_their_kinds() {
        let p = Policy::new(Level::MessagesOnly, 1.0, SampleBy::Process);
        assert!(p.wants(Kind::Send) && p.wants(Kind::Receive));
        assert!(!p.wants(Kind::Call) && !p.wants(Kind::Spawn));
        p.set_level(Level::Off);
        assert!(Kind::ALL.iter().all(|k| !p.wants(*k)));
        assert_eq!(p.level(), Level::Off);
        for l in Level::ALL {
            assert_eq!(Level::from_name(l.name()), Some(l));
        }
    }

    #[test]
    fn event_sampling_is_exact() {
        let p = Policy::new(Level::Full, 0.25, SampleBy::Event);
        let kept = (0..10_000).filter(|_| p.sample(1)).count();
        assert_eq!(kept, 2_500);
    }

    #[test]
    fn process_sampling_is_stable_and_close_to_the_rate() {
        let p = Policy::new(Level::Full, 0.3, SampleBy::Process);
        // Local pid handles look like (n << 4) | 3.
        let kept = (0..20_000u64).filter(|n| p.sample((n << 4) | 3)).count();
        assert!((5_700..6_300).contains(&kept), "kept {kept}");
        assert!((0..100u64).all(|n| p.sample(n) == p.sample(n)));
    }

    #[test]
    fn the_rate_cap_trips_once_on_the_first_event_over_the_limit_in_a_window() {
        let p = Policy::new(Level::Full, 1.0, SampleBy::Process);
        assert!(!(0..1_000).any(|i| p.count(i)), "no cap, no trip");
        p.set_rate_cap(10, 1_000);
        assert_eq!(p.rate_cap(), Some((10, 1_000)));
        // Ten per window, window after window: never trips.
        for w in 1..5i64 {
            assert!(!(0..10).any(|i| p.count(w * 1_000 + i)));
        }
        assert_eq!(p.level(), Level::Full);
        assert!(!(0..10).any(|i| p.count(9_000 + i)));
        assert!(p.count(9_500), "the eleventh in one window trips it");
        assert!(p.rate_tripped() && p.level() == Level::Off);
        assert!(!(0..100).any(|i| p.count(9_600 + i)), "once");
        p.set_level(Level::Minimal);
        p.set_rate_cap(10, 1_000);
        assert!(!p.rate_tripped());
        assert!(!(0..10).any(|i| p.count(20_000 + i)));
        assert!(p.count(20_010));
        assert_eq!(p.level(), Level::Off);
    }

    #[test]
    fn the_rate_cap_counts_per_window_on_negative_clocks_too() {
        let p = Policy::new(Level::Full, 1.0, SampleBy::Process);
        p.set_rate_cap(10, 1_000);
        // Ten per window across the zero of the clock, as monotonic time often is negative.
        for w in -5..5i64 {
            assert!(!(0..10).any(|i| p.count(w * 1_000 + i * 10)), "window {w}");
        }
        assert!(!p.rate_tripped());
        assert!(!(0..10).any(|i| p.count(100_000 + i)));
        assert!(p.count(100_500));
        // A late event of an older window counts in the newer one, never restarting it.
        p.set_level(Level::Full);
        p.set_rate_cap(10, 1_000);
        assert!(!(0..6).any(|i| p.count(5_000 + i)));
        assert!(!(0..4).any(|i| p.count(4_900 + i)));
        assert!(p.count(5_100), "6 + 4 late ones + this one: 11 in window 5");
    }

    #[test]
    fn setting_the_cap_again_while_writers_count_never_trips_it_falsely() {
        let p = std::sync::Arc::new(Policy::new(Level::Full, 1.0, SampleBy::Process));
        // Three writers of at most 2,000,000 events each stay under the cap in any case.
        p.set_rate_cap(MAX_RATE_LIMIT, 1_000_000_000);
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..3)
            .map(|t| {
                let (p, stop) = (p.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut trips = 0;
                    let mut i = 0i64;
                    while !stop.load(Ordering::Relaxed) && i < 2_000_000 {
                        // Far under the cap: a few thousand events a second-long window.
                        trips += p.count(t * 1_000 + (i % 1_000)) as u32;
                        i += 1;
                        if i % 1_000 == 0 {
                            std::thread::yield_now();
                        }
                    }
                    trips
                })
            })
            .collect();
        for _ in 0..20_000 {
            p.set_rate_cap(MAX_RATE_LIMIT, 1_000_000_000);
        }
        stop.store(true, Ordering::Relaxed);
        let trips: u32 = writers.into_iter().map(|w| w.join().unwrap()).sum();
        assert_eq!(trips, 0);
        assert!(!p.rate_tripped());
    }

    #[test]
    fn concurrent_writers_never_trip_a_cap_they_stay_under() {
        let p = std::sync::Arc::new(Policy::new(Level::Full, 1.0, SampleBy::Process));
        p.set_rate_cap(4_000, 1_000_000);
        // Four threads, 1,000 events each in every window, windows rolling.
        for w in 0..50i64 {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let p = p.clone();
                    std::thread::spawn(move || (0..1_000).any(|i| p.count(w * 1_000_000 + i)))
                })
                .collect();
            assert!(
                handles.into_iter().all(|h| !h.join().unwrap()),
                "window {w}"
            );
        }
        assert!(!p.rate_tripped());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let p = p.clone();
                std::thread::spawn(move || (0..1_001).filter(|i| p.count(90_000_000 + i)).count())
            })
            .collect();
        let trips: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(trips, 1, "4,004 events in one window trip it exactly once");
    }

    #[test]
    fn rate_edges() {
        let p = Policy::new(Level::Full, 0.0, SampleBy::Process);
        assert!(!(0..100).any(|n| p.sample(n)));
        p.set_sampling(1.0, SampleBy::Event);
        assert!((0..100).all(|n| p.sample(n)));
        p.set_sampling(f64::NAN, SampleBy::Event);
        assert_eq!(p.rate(), 0.0);
    }
}
