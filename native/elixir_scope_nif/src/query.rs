//! Query NIFs: decode a filter, run it in the core, encode only the matches.

use crate::atoms;
use crate::store::store_of;
use crate::terms::{atom_key, key_or_nil, key_term, opt_with, pid_arg};
use elixir_scope_core::event::{EventRef, Kind, KindMask};
use elixir_scope_core::query::{self, Filter};
use elixir_scope_core::store::Store;
use rustler::{Encoder, Env, NifResult, Term};

fn pid_keys(store: &Store, list: Term) -> NifResult<Vec<u64>> {
    list.decode::<Vec<Term>>()?
        .into_iter()
        .map(|p| pid_arg(store, p))
        .collect()
}

pub(crate) fn opt<'a, T: rustler::Decoder<'a>>(t: Term<'a>) -> NifResult<Option<T>> {
    opt_with(t, |t| t.decode())
}

fn opt_atom(t: Term) -> NifResult<Option<u64>> {
    opt_with(t, |t| atom_key(t).ok_or(rustler::Error::BadArg))
}

/// Deepest nesting of `any`/`none` filters decoded.
const MAX_FILTER_DEPTH: usize = 8;

/// Decodes the filter tuple built by `ElixirScope.Query.native_filter/1`:
/// A filter as `ElixirScope.Query.native_filter/1` builds it: a map with these keys (atoms), each
/// always present; `any` and `none` are lists of such maps.
#[derive(rustler::NifMap)]
struct FilterMap<'a> {
    pids: Term<'a>,
    peers: Term<'a>,
    involving: Term<'a>,
    kinds: Vec<Term<'a>>,
    module: Term<'a>,
    function: Term<'a>,
    arity: Term<'a>,
    since: Term<'a>,
    until: Term<'a>,
    after_seq: u64,
    before_seq: Term<'a>,
    descending: bool,
    limit: Term<'a>,
    any: Vec<Term<'a>>,
    none: Vec<Term<'a>>,
}

pub(crate) fn decode_filter(store: &Store, t: Term) -> NifResult<Filter> {
    decode_filter_at(store, t, 0)
}

fn decode_filter_at(store: &Store, t: Term, depth: usize) -> NifResult<Filter> {
    if depth > MAX_FILTER_DEPTH {
        return Err(rustler::Error::BadArg);
    }
    // Any shape error is a bad argument (the derive would raise its own message).
    let f: FilterMap = t.decode().map_err(|_| rustler::Error::BadArg)?;
    let subs = |list: Vec<Term>| -> NifResult<Vec<Filter>> {
        list.into_iter()
            .map(|s| decode_filter_at(store, s, depth + 1))
            .collect()
    };
    let kinds = if f.kinds.is_empty() {
        KindMask::ALL
    } else {
        let mut ks = Vec::with_capacity(f.kinds.len());
        for k in f.kinds {
            let name = rustler::Atom::from_term(k)?
                .to_term(k.get_env())
                .atom_to_string()?;
            ks.push(Kind::from_name(&name).ok_or(rustler::Error::BadArg)?);
        }
        KindMask::of(&ks)
    };
    let limit: Option<u64> = opt(f.limit)?;
    Ok(Filter {
        pids: pid_keys(store, f.pids)?,
        peers: pid_keys(store, f.peers)?,
        involving: pid_keys(store, f.involving)?,
        peer_seqs: Vec::new(),
        involving_seqs: Vec::new(),
        kinds,
        module: opt_atom(f.module)?,
        function: opt_atom(f.function)?,
        arity: opt(f.arity)?,
        since: opt(f.since)?,
        until: opt(f.until)?,
        after_seq: f.after_seq,
        before_seq: opt(f.before_seq)?,
        descending: f.descending,
        limit: limit.map_or(usize::MAX, |l| l.min(usize::MAX as u64) as usize),
        any: subs(f.any)?,
        none: subs(f.none)?,
    })
}

/// The atom of a kind (made once at load, not looked up per event).
pub(crate) fn kind_atom(k: Kind) -> rustler::Atom {
    match k {
        Kind::Spawn => atoms::spawn(),
        Kind::Exit => atoms::exit(),
        Kind::Link => atoms::link(),
        Kind::Unlink => atoms::unlink(),
        Kind::Register => atoms::register(),
        Kind::Unregister => atoms::unregister(),
        Kind::Send => atoms::send(),
        Kind::SendToDead => atoms::send_to_dead(),
        Kind::Receive => atoms::receive(),
        Kind::Call => atoms::call(),
        Kind::Return => atoms::return_(),
        Kind::Exception => atoms::exception(),
        Kind::State => atoms::state(),
        Kind::Supervisor => atoms::supervisor(),
        Kind::Var => atoms::var(),
        Kind::Timeout => atoms::timeout(),
        Kind::Traced => atoms::traced(),
    }
}

/// Flag (above the stored flag bits) telling Elixir the payload is already a term.
const DECODED: u32 = 0x100;

/// A complete (not truncated) payload decoded into a term here, in C, rather than copied into a
/// binary for Elixir to decode. No atom is created: every atom of a live capture exists, and a
/// trace read from disk gets stand-ins for the atoms this VM lacks (see [`crate::foreign`]).
fn decode_payload<'a>(env: Env<'a>, store: &Store, ev: &EventRef) -> Option<Term<'a>> {
    use elixir_scope_core::event::flags;
    if ev.header.flags & (flags::TRUNCATED | flags::PAYLOAD_DROPPED) != 0 {
        return None;
    }
    crate::foreign::decode(env, store.symbols(), ev.payload)
}

/// Encodes one event of `store` as `{seq, ts, kind, pid, peer, mfa, payload, flags}`.
pub(crate) fn encode_event<'a>(env: Env<'a>, store: &Store, ev: &EventRef) -> Term<'a> {
    let h = &ev.header;
    let nil = atoms::nil().encode(env);
    let pid_or_nil = |k: u64| key_or_nil(env, store, k);
    let kind = h.kind().map_or(nil, |k| kind_atom(k).encode(env));
    let mfa = if h.module == 0 {
        nil
    } else {
        (
            key_term(env, store, h.module),
            pid_or_nil(h.function),
            h.arity,
        )
            .encode(env)
    };
    let mut flags_out = h.flags as u32;
    let payload = if ev.payload.is_empty() {
        nil
    } else if let Some(t) = decode_payload(env, store, ev) {
        flags_out |= DECODED;
        t
    } else {
        crate::terms::binary_term(env, ev.payload)
    };
    // A variable binding's peer is the seq of its call's entry event, not a process.
    let peer = if h.kind == Kind::Var as u8 {
        if h.peer == 0 {
            nil
        } else {
            h.peer.encode(env)
        }
    } else {
        pid_or_nil(h.peer_pid())
    };
    rustler::types::tuple::make_tuple(
        env,
        &[
            ev.seq.encode(env),
            h.ts.encode(env),
            kind,
            pid_or_nil(h.pid),
            peer,
            mfa,
            payload,
            flags_out.encode(env),
        ],
    )
}

/// A list of event tuples.
pub(crate) fn encode_events<'a, 'e>(
    env: Env<'a>,
    store: &Store,
    events: impl IntoIterator<Item = &'e EventRef<'e>>,
) -> Term<'a> {
    let list: Vec<Term> = events
        .into_iter()
        .map(|e| encode_event(env, store, e))
        .collect();
    list.encode(env)
}

/// Events matching the filter, as a list of event tuples. O(events scanned), so it runs on a
/// dirty CPU scheduler.
#[rustler::nif(schedule = "DirtyCpu")]
fn query_events<'a>(env: Env<'a>, store: Term<'a>, filter: Term<'a>) -> NifResult<Term<'a>> {
    let store = store_of(store)?;
    let mut filter = decode_filter(store, filter)?;
    // One process, one function: walk its index entry instead of the whole log.
    let page = query::plan(store, &mut filter, None, |filter, seqs| {
        query::run_in(store.log(), seqs, filter)
    });
    Ok(encode_events(env, store, &page.events))
}
