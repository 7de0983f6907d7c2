//! Persistence NIFs: writing a capture to segment files while it runs, saving a store, and
//! loading a trace back as a read-only store resource (a reader). All of them do file I/O and run on dirty I/O
//! schedulers.

use crate::resource::Held;
use crate::store::{reader_of, store_of};
use crate::terms::{key_etf, local_pid_key, raw};
use crate::{atoms, resource};
use elixir_scope_core::formats::event::Kind;
use elixir_scope_core::persist::open::Loading;
use elixir_scope_core::persist::segments::Policy;
use elixir_scope_core::persist::{self, Clock, Mapped, Summarizing, Symbols, Window, Writer};
use elixir_scope_core::reader::Reader;
use parking_lot::Mutex;
use rustler::sys::{enif_monotonic_time, enif_time_offset, ErlNifTimeUnit};
use rustler::{Encoder, Env, NifResult, ResourceArc, Term};
use std::path::Path;

use crate::error::{self, io as io_error};
use elixir_scope_core::Error;

/// The ETF of each word a segment names, from this VM (or the loaded store's symbols).
fn symbols<'a>(env: Env<'a>, store: &'a Reader) -> impl FnMut(u64) -> Option<Vec<u8>> + 'a {
    move |word| key_etf(env, store, word)
}

/// `persist_start(store, dir, segment_bytes, segment_ns, max_bytes, max_age_ns, archive)`:
/// from now on `persist_flush` writes the store's events into `dir`.
#[rustler::nif(schedule = "DirtyIo")]
#[allow(clippy::too_many_arguments)]
fn persist_start<'a>(
    env: Env<'a>,
    store: Term<'a>,
    dir: String,
    segment_bytes: u64,
    segment_ns: i64,
    max_bytes: u64,
    max_age_ns: i64,
    archive: bool,
) -> NifResult<Term<'a>> {
    let store = store_of(store)?;
    let policy = Policy {
        segment_bytes,
        segment_ns,
        max_bytes,
        max_age_ns,
        archive,
    };
    if Writer::with(store, |w| w.is_some()) {
        return Ok(error::term(env, &Error::AlreadyPersisted));
    }
    Ok(match Writer::create(Path::new(&dir), policy) {
        Ok(w) => match w.attach(store) {
            Ok(()) => atoms::ok().encode(env),
            Err(_) => error::term(env, &Error::AlreadyPersisted),
        },
        Err(e) => io_error(env, e, Path::new(&dir)),
    })
}

/// `persist_flush(store, max)`: writes up to `max` new events. Answers
/// `{:ok, written, events_on_disk}`, or `:none` when the store is not persisted.
#[rustler::nif(schedule = "DirtyIo")]
fn persist_flush<'a>(env: Env<'a>, store: Term<'a>, max: u64) -> NifResult<Term<'a>> {
    let store = store_of(store)?;
    let clock = clock_of(store.reader());
    Ok(Writer::with(store, |writer| {
        let Some(writer) = writer else {
            return atoms::none().encode(env);
        };
        match writer.flush(
            store.reader(),
            clock,
            &mut symbols(env, store.reader()),
            max,
        ) {
            Ok(n) => {
                store.set_persisted(writer.on_disk());
                (atoms::ok(), n, writer.on_disk()).encode(env)
            }
            Err(e) => io_error(env, e, writer.dir()),
        }
    }))
}

/// `persist_finish(store)`: writes what is left and seals the last segment.
/// Answers `{:ok, events_written}` or `:none`.
#[rustler::nif(schedule = "DirtyIo")]
fn persist_finish<'a>(env: Env<'a>, store: Term<'a>) -> NifResult<Term<'a>> {
    let store = store_of(store)?;
    let Some(mut writer) = Writer::take(store) else {
        return Ok(atoms::none().encode(env));
    };
    let reader = store.reader();
    let clock = clock_of(reader);
    let result = writer.flush_all(reader, clock, &mut symbols(env, reader));
    let written = writer.on_disk();
    store.set_persisted(written);
    let dir = writer.dir().to_path_buf();
    Ok(match result.and_then(|()| writer.finish()) {
        Ok(_) => (atoms::ok(), written).encode(env),
        Err(e) => io_error(env, e, &dir),
    })
}

/// `persist_move(from, to)`: writes what is left of `from` (whose processes
/// now trace into `to`) and goes on writing the same trace from `to`, its seqs continuing.
/// Answers `{:ok, events_on_disk}` or `:none` when `from` is not persisted.
#[rustler::nif(schedule = "DirtyIo")]
fn persist_move<'a>(env: Env<'a>, from: Term<'a>, to: Term<'a>) -> NifResult<Term<'a>> {
    let (from, to) = (store_of(from)?, store_of(to)?);
    if std::ptr::eq(from, to) {
        return Err(rustler::Error::BadArg);
    }
    let Some(mut writer) = Writer::take(from) else {
        return Ok(atoms::none().encode(env));
    };
    // `from` is closed: callbacks already in it finish within microseconds.
    for _ in 0..20 {
        if from.log().published_seq() >= from.log().last_seq() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let old = from.reader();
    let clock = clock_of(old);
    if let Err(e) = writer.flush_all(old, clock, &mut symbols(env, old)) {
        return Ok(io_error(env, e, writer.dir()));
    }
    writer.continue_with(old);
    let on_disk = writer.on_disk();
    to.set_persisted(on_disk);
    if writer.attach(to).is_err() {
        return Ok(error::term(env, &Error::AlreadyPersisted));
    }
    Ok((atoms::ok(), on_disk).encode(env))
}

/// A save under way: the writer of the new trace, the clock it was begun with, the last seq
/// it writes (the last one published when it began), and where.
pub struct SavingResource(Mutex<Option<(Writer, Clock, u64, String)>>);

#[rustler::resource_impl]
impl rustler::Resource for SavingResource {}

/// Events a `save_step` writes at most: bounds each dirty call, and paces progress reports.
const SAVE_STEP: u64 = 1 << 16;

/// `disk_save_begin(store, dir)`: `{:ok, saving, events}`, a new trace in `dir` (which must not hold
/// one) to write the store's events into, a step at a time: those published now, up to seq
/// `events` (a capture that goes on does not keep the save from ending).
#[rustler::nif(schedule = "DirtyIo")]
fn disk_save_begin<'a>(env: Env<'a>, store: Term<'a>, dir: String) -> NifResult<Term<'a>> {
    let store = reader_of(store)?;
    let clock = clock_of(store);
    let total = store.log().published_seq();
    Ok(match Writer::create(Path::new(&dir), Policy::default()) {
        Ok(w) => {
            let res = ResourceArc::new(SavingResource(Mutex::new(Some((w, clock, total, dir)))));
            (atoms::ok(), res, total).encode(env)
        }
        Err(e) => io_error(env, e, Path::new(&dir)),
    })
}

/// `disk_save_step(saving, store)`: writes the next events; `{:more, written}` (events written so
/// far, by seq) or `:done`.
#[rustler::nif(schedule = "DirtyIo")]
fn disk_save_step<'a>(
    env: Env<'a>,
    saving: ResourceArc<SavingResource>,
    store: Term<'a>,
) -> NifResult<Term<'a>> {
    let store = reader_of(store)?;
    let mut guard = saving.0.lock();
    let Some((w, clock, upto, dir)) = guard.as_mut() else {
        return Ok(error::term(env, &Error::AlreadyDone));
    };
    let max = SAVE_STEP.min(upto.saturating_sub(w.written_seq()));
    if max == 0 {
        return Ok(atoms::done().encode(env));
    }
    Ok(
        match w.flush(store, *clock, &mut symbols(env, store), max) {
            Ok(_) if w.written_seq() >= *upto => atoms::done().encode(env),
            Ok(_) => (atoms::more(), w.written_seq()).encode(env),
            Err(e) => io_error(env, e, Path::new(dir.as_str())),
        },
    )
}

/// `disk_save_finish(saving)`: seals the trace; `{:ok, events}`.
#[rustler::nif(schedule = "DirtyIo")]
fn disk_save_finish(env: Env<'_>, saving: ResourceArc<SavingResource>) -> Term<'_> {
    let Some((w, _, _, dir)) = saving.0.lock().take() else {
        return error::term(env, &Error::AlreadyDone);
    };
    match w.finish() {
        Ok(m) => {
            let events = m.segments.iter().map(|s| s.last_seq).max().unwrap_or(0);
            (atoms::ok(), events).encode(env)
        }
        Err(e) => io_error(env, e, Path::new(&dir)),
    }
}

/// `disk_damage(store)`: `{unread, files}`, the events of an opened trace that reading its
/// segments (as queries asked for them) could not read back, and their files; `nil` for a store
/// that reads nothing from disk. Dirty: it waits for a block being read to finish.
#[rustler::nif(schedule = "DirtyIo")]
fn disk_damage<'a>(env: Env<'a>, store: Term<'a>) -> NifResult<Term<'a>> {
    let store = reader_of(store)?;
    Ok(match elixir_scope_core::persist::paged::damage(store) {
        Some((unread, files)) => (unread, files).encode(env),
        None => atoms::nil().encode(env),
    })
}

/// `disk_follow(dir)`: a store following the trace this VM's capture writes into `dir`,
/// empty until `disk_follow_refresh` brings it up to what is on disk.
#[rustler::nif(schedule = "DirtyIo")]
fn disk_follow<'a>(env: Env<'a>, dir: String) -> Term<'a> {
    match elixir_scope_core::persist::paged::follow(Path::new(&dir)) {
        Some(reader) => (atoms::ok(), resource::new_term(env, Held::Trace(reader))).encode(env),
        None => error::term(
            env,
            &Error::NotATrace {
                path: dir.to_string(),
            },
        ),
    }
}

/// `disk_follow_refresh(store)`: `{:ok, last_seq, bytes, room}`, the following store up to what
/// is on disk, the memory it holds and the events it has room for.
#[rustler::nif(schedule = "DirtyIo")]
fn disk_follow_refresh<'a>(env: Env<'a>, store: Term<'a>) -> NifResult<Term<'a>> {
    let store = reader_of(store)?;
    Ok(match elixir_scope_core::persist::paged::refresh(store) {
        Ok(r) => (atoms::ok(), r.last_seq, r.bytes, r.room).encode(env),
        Err(e) => {
            let dir = elixir_scope_core::persist::paged::followed_dir(store).unwrap_or_default();
            io_error(env, e, &dir)
        }
    })
}

/// A trace being loaded, one segment per `load_step` call.
pub struct LoadingResource(Mutex<Option<Loading>>);

#[rustler::resource_impl]
impl rustler::Resource for LoadingResource {}

/// `disk_load_begin(path, since, until)`: `{:ok, loading, bytes}`. `since` and `until`
/// (monotonic nanoseconds of the capture, or `nil`) bound the events loaded.
#[rustler::nif(schedule = "DirtyIo")]
fn disk_load_begin<'a>(
    env: Env<'a>,
    path: String,
    since: Term<'a>,
    until: Term<'a>,
) -> NifResult<Term<'a>> {
    let window = Window {
        since: crate::codec::opt(since)?,
        until: crate::codec::opt(until)?,
    };
    Ok(match Loading::window(Path::new(&path), window) {
        Ok(l) => {
            let bytes = l.bytes_total();
            let res = ResourceArc::new(LoadingResource(Mutex::new(Some(l))));
            (atoms::ok(), res, bytes).encode(env)
        }
        Err(e) => io_error(env, e, Path::new(&path)),
    })
}

/// A symbol's key in this VM: the word of an existing atom or a local pid, else a synthetic key
/// standing for the term's canonical encoding here (or the file's bytes when it does not decode
/// safely).
fn map_symbol(env: Env<'_>, etf: &[u8], symbols: &Symbols) -> Mapped {
    match crate::foreign::decode(env, Some(symbols), etf) {
        Some(t) if t.is_atom() => Mapped::Key(raw(t.as_c_arg())),
        // A pid of this run; of another node or run it is external (of a stand-in node when
        // its own is unknown here or the run is another).
        Some(t) => match local_pid_key(t) {
            Some(k) => Mapped::Key(k),
            None => Mapped::Foreign {
                canonical: t.to_binary().as_slice().to_vec(),
            },
        },
        None => Mapped::Foreign {
            canonical: etf.to_vec(),
        },
    }
}

/// The clock written into segments: now, of this run; for a store loaded from disk, the clock
/// of the trace it came from (now, of no run at all, when that trace had none).
fn clock_of(store: &Reader) -> Clock {
    // SAFETY: neither call has preconditions.
    let (monotonic, offset) = unsafe {
        (
            enif_monotonic_time(ErlNifTimeUnit::ERL_NIF_NSEC),
            enif_time_offset(ErlNifTimeUnit::ERL_NIF_NSEC),
        )
    };
    let system = monotonic + offset;
    match store.symbols() {
        None => Clock {
            monotonic,
            system,
            run: crate::foreign::run_token(),
        },
        // A trace of several runs keeps them apart: of no run at all.
        Some(s) => {
            let run = s.run().unwrap_or(!crate::foreign::run_token());
            let (monotonic, system) = s
                .clock()
                .map_or((monotonic, system), |c| (c.monotonic, c.system));
            Clock {
                monotonic,
                system,
                run,
            }
        }
    }
}

/// `disk_load_step(loading)`: loads the next segment. `{:more, bytes_read}` or `:done`.
#[rustler::nif(schedule = "DirtyIo")]
fn disk_load_step<'a>(env: Env<'a>, loading: ResourceArc<LoadingResource>) -> Term<'a> {
    let mut guard = loading.0.lock();
    let Some(l) = guard.as_mut() else {
        return error::term(env, &Error::AlreadyDone);
    };
    match l.step(&mut |etf, symbols| map_symbol(env, etf, symbols)) {
        Ok(true) => (atoms::more(), l.bytes_read()).encode(env),
        Ok(false) => atoms::done().encode(env),
        Err(e) => io_error(env, e, l.path()),
    }
}

/// `disk_load_finish(loading)`: `{:ok, store, report}`, the store read-only.
#[rustler::nif(schedule = "DirtyIo")]
fn disk_load_finish<'a>(
    env: Env<'a>,
    loading: ResourceArc<LoadingResource>,
) -> NifResult<Term<'a>> {
    let Some(l) = loading.0.lock().take() else {
        return Ok(error::term(env, &Error::AlreadyDone));
    };
    let loaded = l.finish();
    let r = loaded.report;
    let clock = r.clock.map_or(atoms::nil().encode(env), |c| {
        (c.monotonic, c.system).encode(env)
    });
    let symbols = loaded.reader.symbols().map_or(0, |s| s.len());

    let pairs: Vec<(Term, Term)> = vec![
        (atoms::events().encode(env), r.events.encode(env)),
        (atoms::segments().encode(env), r.segments.encode(env)),
        (atoms::bytes().encode(env), r.bytes.encode(env)),
        (atoms::first_seq().encode(env), r.first_seq.encode(env)),
        (atoms::torn().encode(env), r.torn.encode(env)),
        (atoms::gaps().encode(env), r.gaps.encode(env)),
        (atoms::clock().encode(env), clock),
        (atoms::dropped().encode(env), r.dropped.encode(env)),
        (atoms::truncated().encode(env), r.truncated.encode(env)),
        (
            atoms::unknown_words().encode(env),
            r.unknown_words.encode(env),
        ),
        (atoms::foreign().encode(env), symbols.encode(env)),
        (atoms::discarded().encode(env), r.discarded.encode(env)),
        (atoms::missing().encode(env), r.missing.encode(env)),
        (atoms::skipped().encode(env), r.skipped.encode(env)),
        (atoms::carried().encode(env), r.carried.encode(env)),
        (atoms::paged().encode(env), r.paged.encode(env)),
        (atoms::renumbered().encode(env), r.renumbered.encode(env)),
        (atoms::damaged().encode(env), r.damaged.encode(env)),
        (
            atoms::manifest_rebuilt().encode(env),
            r.manifest_rebuilt.encode(env),
        ),
    ];
    let report = Term::map_from_pairs(env, &pairs)?;
    Ok((
        atoms::ok(),
        resource::new_term(env, Held::Trace(loaded.reader)),
        report,
    )
        .encode(env))
}

/// `disk_foreign_nodes()`: `[{stand_in_atom, node_name}]`, the nodes of opened traces that this VM
/// has no atom for (or of another run), and the atoms standing in for them.
#[rustler::nif]
fn disk_foreign_nodes(env: Env<'_>) -> Term<'_> {
    let pairs: Vec<Term> = crate::foreign::foreign_nodes()
        .iter()
        .filter_map(|(i, name)| {
            let atom = crate::foreign::node_atom(env, *i)?;
            Some((atom, String::from_utf8_lossy(name).into_owned()).encode(env))
        })
        .collect();
    pairs.encode(env)
}

/// `disk_clock(path)`: `{monotonic, system}` of the capture's clock, `nil` when it has none.
#[rustler::nif(schedule = "DirtyIo")]
fn disk_clock(env: Env<'_>, path: String) -> Term<'_> {
    match persist::trace_clock(Path::new(&path)) {
        Ok(Some(c)) => (atoms::ok(), (c.monotonic, c.system)).encode(env),
        Ok(None) => (atoms::ok(), atoms::nil()).encode(env),
        Err(e) => io_error(env, e, Path::new(&path)),
    }
}

/// A trace being summarized, one segment per `summary_step` call.
pub struct SummarizingResource(Mutex<Option<Summarizing>>);

#[rustler::resource_impl]
impl rustler::Resource for SummarizingResource {}

/// `disk_summary_begin(path, use_footers)`: `{:ok, summarizing, segments, bytes}`.
#[rustler::nif(schedule = "DirtyIo")]
fn disk_summary_begin(env: Env<'_>, path: String, footers: bool) -> Term<'_> {
    match Summarizing::new(Path::new(&path), footers) {
        Ok(s) => {
            let (_, total) = s.progress();
            let res = ResourceArc::new(SummarizingResource(Mutex::new(Some(s))));
            (atoms::ok(), res, total).encode(env)
        }
        Err(e) => io_error(env, e, Path::new(&path)),
    }
}

/// `disk_summary_step(summarizing)`: `{:more, bytes_read}` or `:done`.
#[rustler::nif(schedule = "DirtyIo")]
fn disk_summary_step<'a>(env: Env<'a>, s: ResourceArc<SummarizingResource>) -> Term<'a> {
    let mut guard = s.0.lock();
    let Some(s) = guard.as_mut() else {
        return error::term(env, &Error::AlreadyDone);
    };
    match s.step() {
        Ok(true) => (atoms::more(), s.progress().0).encode(env),
        Ok(false) => atoms::done().encode(env),
        Err(e) => io_error(env, e, s.path()),
    }
}

/// `disk_summary_finish(summarizing)`: `{:ok, map}`, see `ElixirScope.Persist.summary/2`.
#[rustler::nif(schedule = "DirtyIo")]
fn disk_summary_finish<'a>(
    env: Env<'a>,
    s: ResourceArc<SummarizingResource>,
) -> NifResult<Term<'a>> {
    let Some(s) = s.0.lock().take() else {
        return Ok(error::term(env, &Error::AlreadyDone));
    };
    let sum = s.finish();
    let symbols = Symbols::of_run(sum.clock.map(|c| c.2));
    let nil = atoms::nil().encode(env);
    let term_of = |w: u64| {
        sum.symbols
            .get(&w)
            .and_then(|etf| crate::foreign::decode(env, Some(&symbols), etf))
            .unwrap_or(nil)
    };
    let kinds: Vec<(Term, u64)> = Kind::ALL
        .iter()
        .zip(sum.kinds.iter())
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| (crate::codec::kind_atom(*k).encode(env), *n))
        .collect();
    let pids: Vec<(Term, u64)> = sum.pids.iter().map(|(w, n)| (term_of(*w), *n)).collect();
    let calls: Vec<((Term, Term, u8), u64)> = sum
        .calls
        .iter()
        .map(|((m, fu, a), n)| ((term_of(*m), term_of(*fu), *a), *n))
        .collect();
    let tags: Vec<(Term, u64)> = sum
        .tags
        .iter()
        .map(|(t, n)| {
            let tag = rustler::Atom::existing_from_utf8_bytes(env, t.as_bytes())
                .map_or_else(|_| t.as_str().encode(env), |a| a.encode(env));
            (tag, *n)
        })
        .collect();
    let clock = sum.clock.map_or(nil, |(m, sys, _)| (m, sys).encode(env));
    let at = |p: Option<(u64, i64)>| p.map_or(nil, |p| p.encode(env));
    let pairs: Vec<(Term, Term)> = vec![
        (atoms::segments().encode(env), sum.segments.encode(env)),
        (atoms::bytes().encode(env), sum.bytes.encode(env)),
        (atoms::events().encode(env), sum.events.encode(env)),
        (atoms::first().encode(env), at(sum.first)),
        (atoms::last().encode(env), at(sum.last)),
        (atoms::clock().encode(env), clock),
        (atoms::kinds().encode(env), kinds.encode(env)),
        (atoms::pids().encode(env), pids.encode(env)),
        (atoms::calls().encode(env), calls.encode(env)),
        (atoms::tags().encode(env), tags.encode(env)),
        (
            atoms::state_changes().encode(env),
            sum.state_changes.encode(env),
        ),
        (atoms::dropped().encode(env), sum.dropped.encode(env)),
        (atoms::truncated().encode(env), sum.truncated.encode(env)),
        (atoms::torn().encode(env), sum.torn.encode(env)),
        (atoms::missing().encode(env), sum.missing.encode(env)),
        (atoms::damaged().encode(env), sum.damaged.encode(env)),
        (
            atoms::from_footers().encode(env),
            sum.from_footers.encode(env),
        ),
    ];
    let map = Term::map_from_pairs(env, &pairs)?;
    Ok((atoms::ok(), map).encode(env))
}
