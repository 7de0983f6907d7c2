//! History NIFs: state capture registration, recording events from Elixir, and the time-travel
//! queries of `elixir_scope_core::query::history`.

use crate::atoms;
use crate::codec::{encode_event, encode_events};
use crate::store::{held_of, reader_of};
use crate::terms::{atom_key, is_nil, key_term, local_pid_key, opt_with, pid_arg, raw};
use crate::tracer::{admit, record, Payload};
use elixir_scope_core::formats::event::PidKey;
use elixir_scope_core::formats::event::{Header, Kind};
use elixir_scope_core::index::At;
use elixir_scope_core::query::history::{self, Callbacks};
use elixir_scope_core::reader::Reader;
use elixir_scope_core::store::StateKind;
use rustler::sys::{enif_monotonic_time, ErlNifTimeUnit};
use rustler::{Atom, Encoder, Env, NifResult, Term};

/// `{:seq, n}` or `{:ts, monotonic_ns}`.
fn at_of(t: Term) -> NifResult<At> {
    let (tag, v): (Atom, Term) = t.decode()?;
    if tag == atoms::seq() {
        Ok(At::Seq(v.decode()?))
    } else if tag == atoms::ts() {
        Ok(At::Ts(v.decode()?))
    } else {
        Err(rustler::Error::BadArg)
    }
}

/// The reader, its index (caught up), and a time: what the history NIFs start from.
fn store_at<'a>(store: Term<'a>, at: Term<'a>) -> NifResult<(&'a Reader, Indexed<'a>, At)> {
    let store = reader_of(store)?;
    let at = at_of(at)?;
    Ok((store, store.index(), at))
}

/// [`store_at`] and a pid argument: what the per-process history NIFs start from.
fn store_pid_at<'a>(
    store: Term<'a>,
    pid: Term<'a>,
    at: Term<'a>,
) -> NifResult<(&'a Reader, Indexed<'a>, PidKey, At)> {
    let (store, idx, at) = store_at(store, at)?;
    Ok((store, idx, pid_arg(store, pid)?, at))
}

/// A store's index, held for the query.
type Indexed<'a> = parking_lot::MutexGuard<'a, elixir_scope_core::index::Index>;

fn opt_at(t: Term) -> NifResult<Option<At>> {
    opt_with(t, at_of)
}

fn callbacks<'s>(is_statem: &'s dyn Fn(u64) -> bool) -> Callbacks<'s> {
    Callbacks {
        handle_call: raw(atoms::handle_call().as_c_arg()),
        handle_cast: raw(atoms::handle_cast().as_c_arg()),
        handle_info: raw(atoms::handle_info().as_c_arg()),
        terminate: raw(atoms::terminate().as_c_arg()),
        code_change: raw(atoms::code_change().as_c_arg()),
        is_statem,
    }
}

/// Records the results of `module`'s callbacks as `state` events; `kind` is `:gen_server` or
/// `:gen_statem` (whose recorded state is `{state_name, data}`).
#[rustler::nif]
fn store_watch_states<'a>(
    env: Env<'a>,
    store: Term<'a>,
    module: Term<'a>,
    kind: Term<'a>,
) -> NifResult<Term<'a>> {
    let key = atom_key(module).ok_or(rustler::Error::BadArg)?;
    let kind = if kind == atoms::gen_server().to_term(env) {
        StateKind::GenServer
    } else if kind == atoms::gen_statem().to_term(env) {
        StateKind::GenStatem
    } else {
        return Err(rustler::Error::BadArg);
    };
    // A trace read from disk captures nothing: there is nothing to watch.
    let Some(store) = held_of(store)?.capture() else {
        return Ok(atoms::ok().encode(env));
    };
    Ok(if store.watch_state_module(key, kind) {
        atoms::ok().encode(env)
    } else {
        (atoms::error(), "too many state modules").encode(env)
    })
}

/// Records an event given from Elixir (a state snapshot, a supervisor action, a process
/// starting to be traced): `kind` is `:state`, `:supervisor` or `:traced`, `mfa` a `{m, f, a}` or `nil`. Encoding is bounded like capture's,
/// but can take a while for big terms, so it runs on a dirty scheduler.
#[rustler::nif(schedule = "DirtyCpu")]
fn store_record<'a>(
    store: Term<'a>,
    kind: Term<'a>,
    pid: Term<'a>,
    mfa: Term<'a>,
    term: Term<'a>,
) -> NifResult<Atom> {
    // A trace read from disk captures nothing (an opened trace made the default store).
    let Some(store) = held_of(store)?.capture() else {
        return Ok(atoms::ok());
    };
    let kind = if kind == atoms::state().to_term(kind.get_env()) {
        Kind::State
    } else if kind == atoms::supervisor().to_term(kind.get_env()) {
        Kind::Supervisor
    } else if kind == atoms::traced().to_term(kind.get_env()) {
        Kind::Traced
    } else if kind == atoms::metrics().to_term(kind.get_env()) {
        Kind::Metrics
    } else if kind == atoms::control().to_term(kind.get_env()) {
        Kind::Control
    } else {
        return Err(rustler::Error::BadArg);
    };
    let mut h = Header {
        // SAFETY: enif_monotonic_time has no preconditions.
        ts: unsafe { enif_monotonic_time(ErlNifTimeUnit::ERL_NIF_NSEC) },
        // Only a local pid can be stored (its word is the key queries turn back into the pid).
        pid: local_pid_key(pid).ok_or(rustler::Error::BadArg)?,
        kind: kind as u8,
        ..Header::default()
    };
    if !is_nil(mfa) {
        let (m, f, a): (Term, Term, u8) = mfa.decode()?;
        h.module = atom_key(m).ok_or(rustler::Error::BadArg)?;
        h.function = atom_key(f).ok_or(rustler::Error::BadArg)?;
        h.arity = a;
    }
    // What ElixirScope changed in its own capture is recorded whatever the level (it may be
    // the change that turned it off).
    let wanted = kind == Kind::Control || store.policy().wants(kind);
    if admit(store, wanted, kind.is_critical(), h.pid) {
        record(term.get_env(), store, &h, Payload::Term(term));
    }
    Ok(atoms::ok())
}

/// The state event of `pid` in force at `at`, or `nil`.
#[rustler::nif(schedule = "DirtyCpu")]
fn query_state_at<'a>(
    env: Env<'a>,
    store: Term<'a>,
    pid: Term<'a>,
    at: Term<'a>,
) -> NifResult<Term<'a>> {
    let (store, idx, pid, at) = store_pid_at(store, pid, at)?;
    Ok(history::state_at(&store.log(), &idx, pid, at)
        .map_or(atoms::nil().encode(env), |e| encode_event(env, store, &e)))
}

/// The state events of `pid` after `from` and up to `to` (`nil`: unbounded).
#[rustler::nif(schedule = "DirtyCpu")]
fn query_states<'a>(
    env: Env<'a>,
    store: Term<'a>,
    pid: Term<'a>,
    from: Term<'a>,
    to: Term<'a>,
    changes_only: bool,
) -> NifResult<Term<'a>> {
    let store = reader_of(store)?;
    let (pid, from, to) = (pid_arg(store, pid)?, opt_at(from)?, opt_at(to)?);
    let idx = store.index();
    let log = store.log();
    let evs = history::states(&log, &idx, pid, from, to, changes_only);
    Ok(encode_events(env, store, &evs))
}

/// `{consumption_known, receive_events}`: the messages in `pid`'s mailbox at `at`.
#[rustler::nif(schedule = "DirtyCpu")]
fn query_pending<'a>(
    env: Env<'a>,
    store: Term<'a>,
    pid: Term<'a>,
    at: Term<'a>,
) -> NifResult<Term<'a>> {
    // A trace read from disk knows no state modules: its callbacks read as `gen_server`'s.
    let capture = held_of(store)?.capture();
    let (store, idx, pid, at) = store_pid_at(store, pid, at)?;
    let is_statem = |m| capture.and_then(|c| c.state_module_kind(m)) == Some(StateKind::GenStatem);
    let log = store.log();
    let p = history::pending_at(&log, &idx, pid, at, &callbacks(&is_statem));
    Ok((p.consumption_known, encode_events(env, store, &p.messages)).encode(env))
}

/// The event paired with the `send` or `receive` at `seq` (see `history::paired`), or `nil`.
#[rustler::nif(schedule = "DirtyCpu")]
fn query_paired<'a>(env: Env<'a>, store: Term<'a>, seq: u64) -> NifResult<Term<'a>> {
    let store = reader_of(store)?;
    let idx = store.index();
    let log = &store.log();
    Ok(history::paired(log, &idx, seq)
        .and_then(|s| log.get(s))
        .map_or(atoms::nil().encode(env), |e| encode_event(env, store, &e)))
}

/// `[{send_seq, receive_seq}]`: the messages `pid` received paired with their traced sends (see
/// `history::message_pairs`), oldest first: what pairing many messages of one process costs
/// once, where `query_paired/2` would cost it per message.
#[rustler::nif(schedule = "DirtyCpu")]
fn query_message_pairs<'a>(env: Env<'a>, store: Term<'a>, pid: Term<'a>) -> NifResult<Term<'a>> {
    let store = reader_of(store)?;
    let pid = crate::terms::pid_arg(store, pid)?;
    let idx = store.index();
    Ok(history::message_pairs(&store.log(), &idx, pid).encode(env))
}

/// Whether events of `pid` before its first one in the store may have been evicted (a
/// ring-mode store's): what a query finds nothing of there is gone, not absent.
#[rustler::nif(schedule = "DirtyCpu")]
fn query_evicted(store: Term, pid: Term) -> NifResult<bool> {
    let store = reader_of(store)?;
    let pid = crate::terms::pid_arg(store, pid)?;
    Ok(store.index().evicted(pid))
}

/// Whether the store's index knows every message's receiver (false for a paged trace, whose
/// segment footers do not say).
#[rustler::nif(schedule = "DirtyCpu")]
fn query_inbox_complete(store: Term) -> NifResult<bool> {
    Ok(reader_of(store)?.index().inbox_complete())
}

/// The call events of `pid` open at `at`, outermost first.
#[rustler::nif(schedule = "DirtyCpu")]
fn query_call_stack<'a>(
    env: Env<'a>,
    store: Term<'a>,
    pid: Term<'a>,
    at: Term<'a>,
) -> NifResult<Term<'a>> {
    let (store, idx, pid, at) = store_pid_at(store, pid, at)?;
    let log = store.log();
    let evs = history::call_stack_at(&log, &idx, pid, at);
    Ok(encode_events(env, store, &evs))
}

/// The processes alive at `at`, as pids.
#[rustler::nif(schedule = "DirtyCpu")]
fn query_active<'a>(env: Env<'a>, store: Term<'a>, at: Term<'a>) -> NifResult<Term<'a>> {
    let (store, idx, at) = store_at(store, at)?;
    let pids: Vec<Term> = history::active_at(&store.log(), &idx, at)
        .into_iter()
        .map(|k| key_term(env, store, k))
        .collect();
    Ok(pids.encode(env))
}

/// `[{pid, state_event | nil}]` for every process alive at `at`.
#[rustler::nif(schedule = "DirtyCpu")]
fn query_snapshot<'a>(env: Env<'a>, store: Term<'a>, at: Term<'a>) -> NifResult<Term<'a>> {
    let (store, idx, at) = store_at(store, at)?;
    let nil = atoms::nil().encode(env);
    let list: Vec<Term> = history::snapshot_at(&store.log(), &idx, at)
        .into_iter()
        .map(|(pid, st)| {
            let state = st.map_or(nil, |e| encode_event(env, store, &e));
            (key_term(env, store, pid), state).encode(env)
        })
        .collect();
    Ok(list.encode(env))
}

/// The state events of `pid` at which the map key named `key` changed, oldest first.
#[rustler::nif(schedule = "DirtyCpu")]
fn query_key_changes<'a>(
    env: Env<'a>,
    store: Term<'a>,
    pid: Term<'a>,
    key: rustler::Binary<'a>,
) -> NifResult<Term<'a>> {
    let store = reader_of(store)?;
    let pid = pid_arg(store, pid)?;
    let Ok(key) = std::str::from_utf8(key.as_slice()) else {
        return Ok(Vec::<Term>::new().encode(env));
    };
    let idx = store.index();
    let log = &store.log();
    let evs: Vec<_> = elixir_scope_core::index::key_changes(log, &idx, pid, key)
        .into_iter()
        .filter_map(|seq| log.get(seq))
        .collect();
    Ok(encode_events(env, store, &evs))
}
