//! The one codec between terms and the core's types for queries: filters (a map decoded by
//! name), content patterns and guards (the data `ElixirScope.Query.DSL` builds), and events and
//! bound values encoded back as terms. The NIF files around it are lists of thin functions.

use crate::atoms;
use crate::terms::{atom_key, key_or_nil, key_term, opt_with, pid_arg, proper_list};
use elixir_scope_core::capture::delta;
use elixir_scope_core::formats::etf;
use elixir_scope_core::formats::event::{EventRef, Kind, KindMask};
use elixir_scope_core::query::matcher::{
    Bound, CmpOp, Guard, Matcher, Operand, Pat, TypeTest, MAX_PATTERN_DEPTH,
};
use elixir_scope_core::query::Filter;
use elixir_scope_core::reader::Reader;
use rustler::{Atom, Binary, Encoder, Env, NifResult, Term};

fn pid_keys(store: &Reader, list: Term) -> NifResult<Vec<u64>> {
    proper_list(list)?
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

/// A filter as `ElixirScope.Query.native_filter/1` builds it: a map with these keys (atoms), each
/// always present; `any` and `none` are lists of such maps.
#[derive(rustler::NifMap)]
struct FilterMap<'a> {
    pids: Term<'a>,
    peers: Term<'a>,
    involving: Term<'a>,
    kinds: Term<'a>,
    module: Term<'a>,
    function: Term<'a>,
    arity: Term<'a>,
    since: Term<'a>,
    until: Term<'a>,
    after_seq: u64,
    before_seq: Term<'a>,
    descending: bool,
    limit: Term<'a>,
    any: Term<'a>,
    none: Term<'a>,
}

pub(crate) fn decode_filter(store: &Reader, t: Term) -> NifResult<Filter> {
    decode_filter_at(store, t, 0)
}

fn decode_filter_at(store: &Reader, t: Term, depth: usize) -> NifResult<Filter> {
    if depth > MAX_FILTER_DEPTH {
        return Err(rustler::Error::BadArg);
    }
    // Any shape error is a bad argument (the derive would raise its own message).
    let f: FilterMap = t.decode().map_err(|_| rustler::Error::BadArg)?;
    let subs = |list: Term| -> NifResult<Vec<Filter>> {
        proper_list(list)?
            .into_iter()
            .map(|s| decode_filter_at(store, s, depth + 1))
            .collect()
    };
    let f_kinds = proper_list(f.kinds)?;
    let kinds = if f_kinds.is_empty() {
        KindMask::ALL
    } else {
        let mut ks = Vec::with_capacity(f_kinds.len());
        for k in f_kinds {
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
        Kind::Metrics => atoms::metrics(),
        Kind::Control => atoms::control(),
        Kind::Stack => atoms::stack(),
    }
}

/// Flag (above the stored flag bits) telling Elixir the payload is already a term.
const DECODED: u32 = 0x100;

/// A complete (not truncated) payload decoded into a term here, in C, rather than copied into a
/// binary for Elixir to decode. No atom is created: every atom of a live capture exists, and a
/// trace read from disk gets stand-ins for the atoms this VM lacks (see [`crate::foreign`]).
fn decode_payload<'a>(env: Env<'a>, store: &Reader, ev: &EventRef) -> Option<Term<'a>> {
    use elixir_scope_core::formats::event::flags;
    if ev.header.flags & (flags::TRUNCATED | flags::PAYLOAD_DROPPED) != 0 {
        return None;
    }
    crate::foreign::decode(env, store.symbols(), ev.payload)
}

/// Encodes one event of `store` as `{seq, ts, kind, pid, peer, mfa, payload, flags}`; a state
/// stored as a delta as the state it resolves to (see `capture::delta`).
pub(crate) fn encode_event<'a, 'r>(env: Env<'a>, store: &'r Reader, ev: &EventRef<'r>) -> Term<'a> {
    if delta::is_delta(ev) {
        let mut buf = Vec::new();
        return delta::with_whole(&store.log(), ev, &mut buf, |w| {
            if delta::is_delta(w) {
                // Not resolvable: a state without its payload, as its flags say.
                encode_whole(env, store, &EventRef { payload: &[], ..*w })
            } else {
                encode_whole(env, store, w)
            }
        });
    }
    encode_whole(env, store, ev)
}

/// [`encode_event`] of an event stored whole.
fn encode_whole<'a>(env: Env<'a>, store: &Reader, ev: &EventRef) -> Term<'a> {
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
    store: &Reader,
    events: impl IntoIterator<Item = &'e EventRef<'e>>,
) -> Term<'a> {
    let list: Vec<Term> = events
        .into_iter()
        .map(|e| encode_event(env, store, e))
        .collect();
    list.encode(env)
}

fn bad() -> rustler::Error {
    rustler::Error::BadArg
}

fn name_of(t: Term) -> NifResult<String> {
    Atom::from_term(t)?.to_term(t.get_env()).atom_to_string()
}

fn pat(t: Term) -> NifResult<Pat> {
    pat_at(t, 0)
}

/// Decodes a pattern, refusing nesting deeper than the core accepts (so decoding itself stays
/// shallow on the dirty scheduler's stack).
fn pat_at<'a>(t: Term<'a>, depth: usize) -> NifResult<Pat> {
    if depth > MAX_PATTERN_DEPTH {
        return Err(bad());
    }
    let pat = |t: Term<'a>| pat_at(t, depth + 1);
    if t.is_atom() {
        return match name_of(t)?.as_str() {
            "_" => Ok(Pat::Any),
            "empty" => Ok(Pat::Nil),
            _ => Err(bad()),
        };
    }
    let els = rustler::types::tuple::get_tuple(t)?;
    let tag = name_of(*els.first().ok_or_else(bad)?)?;
    Ok(match (tag.as_str(), els.len()) {
        ("var", 2) => Pat::Var(els[1].decode()?),
        ("atom", 2) => Pat::Atom(els[1].decode()?),
        ("int", 2) => Pat::Int(els[1].decode::<i64>()? as i128),
        ("float", 2) => Pat::Float(els[1].decode()?),
        ("binary", 2) => Pat::Binary(els[1].decode::<Binary>()?.as_slice().to_vec()),
        ("prefix", 3) => Pat::BinaryPrefix(
            els[1].decode::<Binary>()?.as_slice().to_vec(),
            Box::new(pat(els[2])?),
        ),
        ("tuple", 2) => Pat::Tuple(list(els[1], pat)?),
        ("list", 3) => {
            // `[a | [b | t]]` is `[a, b | t]`: one list pattern, so tails can nest.
            let mut items = list(els[1], pat)?;
            let mut tail = pat(els[2])?;
            while let Pat::List(more, rest) = tail {
                items.extend(more);
                tail = *rest;
            }
            Pat::List(items, Box::new(tail))
        }
        ("map", 2) => Pat::Map(list(els[1], |kv: Term<'a>| {
            let (k, v): (Term, Term) = kv.decode()?;
            Ok((pat(k)?, pat(v)?))
        })?),
        ("map_exact", 2) => Pat::MapExact(list(els[1], |kv: Term<'a>| {
            let (k, v): (Term, Term) = kv.decode()?;
            Ok((pat(k)?, pat(v)?))
        })?),
        ("exact", 2) => Pat::Exact(els[1].decode::<Binary>()?.as_slice().to_vec()),
        _ => return Err(bad()),
    })
}

fn list<'a, T>(t: Term<'a>, f: impl Fn(Term<'a>) -> NifResult<T>) -> NifResult<Vec<T>> {
    proper_list(t)?.into_iter().map(f).collect()
}

fn operand(t: Term) -> NifResult<Operand> {
    let (tag, v): (Term, Term) = t.decode()?;
    match name_of(tag)?.as_str() {
        "var" => Ok(Operand::Var(v.decode()?)),
        "lit" => Ok(Operand::Lit(pat(v)?)),
        _ => Err(bad()),
    }
}

fn guard(t: Term) -> NifResult<Guard> {
    guard_at(t, 0)
}

fn guard_at<'a>(t: Term<'a>, depth: usize) -> NifResult<Guard> {
    if depth > MAX_PATTERN_DEPTH {
        return Err(bad());
    }
    let guard = |t: Term<'a>| guard_at(t, depth + 1);
    if t.is_atom() {
        return match name_of(t)?.as_str() {
            "true" => Ok(Guard::True),
            _ => Err(bad()),
        };
    }
    let els = rustler::types::tuple::get_tuple(t)?;
    let tag = name_of(*els.first().ok_or_else(bad)?)?;
    Ok(match (tag.as_str(), els.len()) {
        ("and", 3) => Guard::And(Box::new(guard(els[1])?), Box::new(guard(els[2])?)),
        ("or", 3) => Guard::Or(Box::new(guard(els[1])?), Box::new(guard(els[2])?)),
        ("not", 2) => Guard::Not(Box::new(guard(els[1])?)),
        ("cmp", 4) => {
            let op = match name_of(els[1])?.as_str() {
                "==" => CmpOp::Eq,
                "!=" => CmpOp::Ne,
                "===" => CmpOp::StrictEq,
                "!==" => CmpOp::StrictNe,
                "<" => CmpOp::Lt,
                "<=" => CmpOp::Le,
                ">" => CmpOp::Gt,
                ">=" => CmpOp::Ge,
                _ => return Err(bad()),
            };
            Guard::Cmp(op, operand(els[2])?, operand(els[3])?)
        }
        ("is", 3) => {
            let ty = match name_of(els[1])?.as_str() {
                "integer" => TypeTest::Integer,
                "float" => TypeTest::Float,
                "number" => TypeTest::Number,
                "atom" => TypeTest::Atom,
                "boolean" => TypeTest::Boolean,
                "nil" => TypeTest::Nil,
                "binary" => TypeTest::Binary,
                "list" => TypeTest::List,
                "tuple" => TypeTest::Tuple,
                "map" => TypeTest::Map,
                "pid" => TypeTest::Pid,
                "reference" => TypeTest::Reference,
                _ => return Err(bad()),
            };
            Guard::Is(ty, els[2].decode()?)
        }
        ("in", 3) => Guard::In(els[1].decode()?, list(els[2], pat)?),
        _ => return Err(bad()),
    })
}

/// A bound value as a term.
pub(crate) fn bound_term<'a>(
    env: Env<'a>,
    store: &Reader,
    data: &[u8],
    b: &Bound,
    with_version: &mut Vec<u8>,
) -> Option<Term<'a>> {
    let mut decode = |bytes: &[u8]| -> Option<Term<'a>> {
        with_version.clear();
        with_version.push(etf::VERSION);
        with_version.extend_from_slice(bytes);
        crate::foreign::decode(env, store.symbols(), with_version)
    };
    match b {
        Bound::Term(r) => decode(data.get(r.clone())?),
        Bound::Int(v) => Some((*v as i64).encode(env)),
        Bound::ListTail(r, n) => {
            let mut list = decode(data.get(r.clone())?)?;
            for _ in 0..*n {
                list = list.list_get_cell().ok()?.1;
            }
            Some(list)
        }
        Bound::BinaryRest(r, n) => {
            let bin: Binary = decode(data.get(r.clone())?)?.decode().ok()?;
            let rest = bin.as_slice().get(*n..)?;
            Some(crate::terms::binary_term(env, rest))
        }
    }
}

/// A matcher from its Elixir data: `Err(reason)` when the core refuses it.
pub(crate) fn decode_matcher(
    pattern: Term,
    guard_term: Term,
    vars: usize,
) -> NifResult<Result<Matcher, String>> {
    let matcher = Matcher {
        pattern: pat(pattern)?,
        guard: guard(guard_term)?,
        vars,
    };
    Ok(matcher
        .validate()
        .map(|_| matcher)
        .map_err(|e| e.to_string()))
}
