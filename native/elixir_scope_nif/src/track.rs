//! The recording call of tracked functions (`use ElixirScope.Track`): a call's entry and each
//! variable binding, written into the store like any event.

use crate::atoms;
use crate::store::held_of;
use crate::terms::{atom_key, local_pid_key, tuple3};
use crate::tracer::{admit, record, Payload};
use elixir_scope_core::formats::event::{Header, Kind};
use rustler::sys::{enif_monotonic_time, ErlNifTimeUnit};
use rustler::{Encoder, Env, NifResult, Term};

/// Records a `:var` event for the calling process: `call` is the seq of the call's entry event
/// (0 to record an entry), `mfa` the tracked function, `payload` `{name, line, value}`. Answers
/// the new event's seq, or `nil` when the store does not take it (level, sampling, full, closed).
/// Encoding is bounded like capture's (see `etf`), so this stays on a normal scheduler.
#[rustler::nif]
fn track_record<'a>(
    env: Env<'a>,
    store: Term<'a>,
    call: u64,
    mfa: Term<'a>,
    payload: Term<'a>,
) -> NifResult<Term<'a>> {
    let nil = atoms::nil().encode(env);
    // A trace read from disk captures nothing (an opened trace made the default store).
    let Some(store) = held_of(store)?.capture() else {
        return Ok(nil);
    };
    let [m, f, a] = tuple3(mfa).ok_or(rustler::Error::BadArg)?;
    let pid = local_pid_key(env.pid().encode(env)).unwrap_or(0);
    if !admit(store, store.policy().wants(Kind::Var), false, pid) {
        return Ok(nil);
    }
    let h = Header {
        // SAFETY: enif_monotonic_time has no preconditions.
        ts: unsafe { enif_monotonic_time(ErlNifTimeUnit::ERL_NIF_NSEC) },
        pid,
        peer: call,
        module: atom_key(m).ok_or(rustler::Error::BadArg)?,
        function: atom_key(f).ok_or(rustler::Error::BadArg)?,
        arity: a.decode()?,
        kind: Kind::Var as u8,
        flags: 0,
    };
    Ok(record(env, store, &h, Payload::Term(payload)).map_or(nil, |seq| seq.encode(env)))
}
