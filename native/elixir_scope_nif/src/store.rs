//! The store resource and the NIFs that create, configure and describe it.

use crate::resource::Held;
use crate::{atoms, resource};
use elixir_scope_core::capture::policy::{Level, SampleBy};
use elixir_scope_core::reader::Reader;
use elixir_scope_core::store::{Config, Store};
use rustler::{Atom, Encoder, Env, NifResult, Term};

/// The live capture's store behind a resource term (`ElixirScope.Store`'s opaque reference, which
/// is also the tracer state handed to `erl_tracer`), or `badarg` (for a trace read from disk
/// too).
pub fn store_of<'a>(term: Term<'a>) -> NifResult<&'a Store> {
    resource::get(term).ok_or(rustler::Error::BadArg)
}

/// What a resource term holds (a capture or a trace read from disk), or `badarg`.
pub fn held_of<'a>(term: Term<'a>) -> NifResult<&'a Held> {
    resource::held(term).ok_or(rustler::Error::BadArg)
}

/// What queries read of a resource term (a capture's events or a trace's), or `badarg`.
pub fn reader_of<'a>(term: Term<'a>) -> NifResult<&'a Reader> {
    held_of(term).map(Held::reader)
}

fn atom_name(term: Term) -> NifResult<String> {
    Atom::from_term(term)?
        .to_term(term.get_env())
        .atom_to_string()
}

fn level_of(term: Term) -> NifResult<Level> {
    Level::from_name(&atom_name(term)?).ok_or(rustler::Error::BadArg)
}

fn sample_by_of(term: Term) -> NifResult<SampleBy> {
    match atom_name(term)?.as_str() {
        "process" => Ok(SampleBy::Process),
        "event" => Ok(SampleBy::Event),
        _ => Err(rustler::Error::BadArg),
    }
}

/// A store's settings as `ElixirScope.Options.store!/1` gives them: a map with these keys.
#[derive(rustler::NifMap)]
struct ConfigMap<'a> {
    max_events: u64,
    max_bytes: u64,
    max_payload_bytes: usize,
    tracing_level: Term<'a>,
    sample_rate: f64,
    sample_by: Term<'a>,
}

/// The settings in `config` (a `ConfigMap`); badarg for another shape or type.
fn config_of(config: Term) -> NifResult<Config> {
    let c: ConfigMap = config.decode().map_err(|_| rustler::Error::BadArg)?;
    Ok(Config {
        max_events: c.max_events,
        max_bytes: c.max_bytes,
        max_payload_bytes: c.max_payload_bytes,
        level: level_of(c.tracing_level)?,
        sample_rate: c.sample_rate,
        sample_by: sample_by_of(c.sample_by)?,
        // Optional: `:drop_newest` when absent.
        evict_oldest: match config.map_get(atoms::overflow()) {
            Err(_) => false,
            Ok(o) => match atom_name(o)?.as_str() {
                "drop_newest" => false,
                "evict_oldest" => true,
                _ => return Err(rustler::Error::BadArg),
            },
        },
    })
}

/// What a store does when full: the `:overflow` setting.
fn overflow(evict_oldest: bool) -> Atom {
    match evict_oldest {
        true => atoms::evict_oldest(),
        false => atoms::drop_newest(),
    }
}

/// `store_new(config)`: `{:ok, store}`, or `{:error, {:invalid_option, name, allowed}}`.
#[rustler::nif]
fn store_new<'a>(env: Env<'a>, config: Term<'a>) -> NifResult<Term<'a>> {
    Ok(match Store::new(config_of(config)?) {
        Ok(store) => {
            crate::etf::invalidate_caches();
            (atoms::ok(), resource::new_term(env, Held::Capture(store))).encode(env)
        }
        Err(e) => crate::error::term(env, &e),
    })
}

/// `store_check(config)`: `:ok` when `config` makes a store, else `store_new`'s error, without
/// making one.
#[rustler::nif]
fn store_check<'a>(env: Env<'a>, config: Term<'a>) -> NifResult<Term<'a>> {
    Ok(match config_of(config)?.validate() {
        Ok(()) => atoms::ok().encode(env),
        Err(e) => crate::error::term(env, &e),
    })
}

/// `store_limits()`: `{defaults, ranges}`, the settings a store gets when not given (a keyword
/// list) and the allowed range of each integer one (`%{name => {min, max}}`): defined once, in
/// the core.
#[rustler::nif]
fn store_limits(env: Env<'_>) -> NifResult<Term<'_>> {
    let d = Config::default();
    let by = match d.sample_by {
        SampleBy::Process => atoms::process(),
        SampleBy::Event => atoms::event(),
    };
    let defaults: Vec<(Atom, Term)> = vec![
        (Atom::from_str(env, "max_events")?, d.max_events.encode(env)),
        (atoms::max_bytes(), d.max_bytes.encode(env)),
        (atoms::max_payload_bytes(), d.max_payload_bytes.encode(env)),
        (
            atoms::tracing_level(),
            Atom::from_str(env, d.level.name())?.encode(env),
        ),
        (atoms::sample_rate(), d.sample_rate.encode(env)),
        (atoms::sample_by(), by.encode(env)),
        (atoms::overflow(), overflow(d.evict_oldest).encode(env)),
    ];
    let mut ranges = Vec::new();
    for (name, min, max) in elixir_scope_core::store::LIMITS {
        ranges.push((
            Atom::from_str(env, name)?.encode(env),
            (min, max).encode(env),
        ));
    }
    Ok((defaults, Term::map_from_pairs(env, &ranges)?).encode(env))
}

/// `store_handle(store)`: a handle to the same store on the caller's heap (see
/// `resource::fresh_term`: what a dirty NIF is given must never be a `persistent_term` literal).
#[rustler::nif]
fn store_handle<'a>(env: Env<'a>, store: Term<'a>) -> NifResult<Term<'a>> {
    resource::fresh_term(env, store).ok_or(rustler::Error::BadArg)
}

/// Closes a capture's store: tracer callbacks answer `remove`, so the VM drops the tracer from
/// every process still pointing at it. Stored events stay readable. A trace read from disk
/// captures nothing: `:ok`.
#[rustler::nif]
fn store_close(store: Term) -> NifResult<Atom> {
    if let Some(store) = held_of(store)?.capture() {
        store.close();
    }
    Ok(atoms::ok())
}

/// `store_carry_states(store)`: carries forward the last states of live processes that a
/// ring-mode store is about to evict (see `Store::carry_states`); how many. 0 for any other.
#[rustler::nif(schedule = "DirtyCpu")]
fn store_carry_states(store: Term) -> NifResult<u64> {
    // SAFETY: enif_monotonic_time has no preconditions.
    let now =
        unsafe { rustler::sys::enif_monotonic_time(rustler::sys::ErlNifTimeUnit::ERL_NIF_NSEC) };
    Ok(held_of(store)?.capture().map_or(0, |s| s.carry_states(now)))
}

/// `store_captures(store)`: whether the store is a capture's (true) or a trace read from disk
/// (false), which has no capture settings.
#[rustler::nif]
fn store_captures(store: Term) -> NifResult<bool> {
    Ok(held_of(store)?.capture().is_some())
}

/// `store_set_watcher(store, pid)`: the local process the tracer tells, with a
/// `{:elixir_scope_state_server, pid, module}` message, when a traced process starts a
/// `gen_server` or `gen_statem` whose callback module the store does not watch yet.
#[rustler::nif]
fn store_set_watcher(store: Term, pid: Term) -> NifResult<Atom> {
    let key = crate::terms::local_pid_key(pid).ok_or(rustler::Error::BadArg)?;
    // A trace read from disk starts no state servers: nothing to tell.
    if let Some(store) = held_of(store)?.capture() {
        store.set_watcher(key);
    }
    Ok(atoms::ok())
}

/// Changes the tracing level while capture runs.
#[rustler::nif]
fn store_set_level<'a>(store: Term<'a>, level: Term<'a>) -> NifResult<Atom> {
    store_of(store)?.policy().set_level(level_of(level)?);
    Ok(atoms::ok())
}

/// Changes sampling while capture runs.
#[rustler::nif]
fn store_set_sampling<'a>(store: Term<'a>, rate: f64, by: Term<'a>) -> NifResult<Atom> {
    let store = store_of(store)?;
    if !(0.0..=1.0).contains(&rate) {
        return Err(rustler::Error::BadArg);
    }
    store.policy().set_sampling(rate, sample_by_of(by)?);
    Ok(atoms::ok())
}

/// `store_set_rate_cap(store, limit, window_ms)`: at most `limit` events stored per window of
/// `window_ms` milliseconds (`limit` 0: no cap); re-arms a tripped cap. See
/// `elixir_scope_core::capture::policy::Policy::count`.
#[rustler::nif]
fn store_set_rate_cap(store: Term, limit: u64, window_ms: u64) -> NifResult<Atom> {
    if window_ms == 0 || window_ms > 86_400_000 {
        return Err(rustler::Error::BadArg);
    }
    store_of(store)?
        .policy()
        .set_rate_cap(limit, window_ms * 1_000_000);
    Ok(atoms::ok())
}

/// Counters and settings, as a map. A trace read from disk has no capture settings: it reports
/// the level `:off`, no sampling, and the default payload cap.
#[rustler::nif]
fn store_stats<'a>(env: Env<'a>, store: Term<'a>) -> NifResult<Term<'a>> {
    let held = held_of(store)?;
    let reader = held.reader();
    let st = reader.stats();
    let limits = reader.log().limits();
    let (level, rate, by, max_payload, persisted) = match held.capture() {
        Some(s) => {
            let p = s.policy();
            let c = (p.level(), p.rate(), p.sample_by());
            (c.0, c.1, c.2, s.max_payload(), s.persisted())
        }
        None => {
            let d = Config::default();
            (Level::Off, 1.0, SampleBy::Process, d.max_payload_bytes, 0)
        }
    };
    let nil = atoms::nil().encode(env);
    let (cap, tripped) = match held.capture().map(|s| s.policy()) {
        Some(p) => (
            p.rate_cap()
                .map_or(nil, |(n, ns)| (n, ns / 1_000_000).encode(env)),
            p.rate_tripped(),
        ),
        None => (nil, false),
    };
    let by = match by {
        SampleBy::Process => atoms::process(),
        SampleBy::Event => atoms::event(),
    };
    let pairs: Vec<(Term, Term)> = vec![
        (atoms::events().encode(env), st.events.encode(env)),
        (atoms::dropped().encode(env), st.dropped.encode(env)),
        (atoms::truncated().encode(env), st.truncated.encode(env)),
        (atoms::bytes().encode(env), st.bytes.encode(env)),
        (
            atoms::payload_bytes().encode(env),
            st.payload_bytes.encode(env),
        ),
        (atoms::capacity().encode(env), limits.max_events.encode(env)),
        (atoms::max_bytes().encode(env), limits.max_bytes.encode(env)),
        (
            atoms::max_payload_bytes().encode(env),
            max_payload.encode(env),
        ),
        (
            atoms::tracing_level().encode(env),
            Atom::from_str(env, level.name())?.encode(env),
        ),
        (atoms::sample_rate().encode(env), rate.encode(env)),
        (atoms::sample_by().encode(env), by.encode(env)),
        (
            atoms::last_seq().encode(env),
            reader.log().last_seq().encode(env),
        ),
        (
            atoms::published_seq().encode(env),
            reader.log().published_seq().encode(env),
        ),
        (atoms::persisted().encode(env), persisted.encode(env)),
        (atoms::rate_cap().encode(env), cap),
        (atoms::rate_tripped().encode(env), tripped.encode(env)),
        (
            atoms::overflow().encode(env),
            overflow(reader.log().is_ring()).encode(env),
        ),
        (
            atoms::evicted().encode(env),
            reader.log().evicted_upto().encode(env),
        ),
    ];
    Term::map_from_pairs(env, &pairs)
}

/// Returns the memory kept for reuse by dropped stores to the OS; answers the bytes released.
#[rustler::nif]
fn store_release_pool() -> u64 {
    elixir_scope_core::capture::chunks::release_pool() as u64
}
