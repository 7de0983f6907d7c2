//! Query NIFs with a content pattern: decode the matcher (plain data built by
//! `ElixirScope.Query.DSL`), run it natively over each candidate event's data, and return the
//! matching events with their bound variables.

use crate::atoms;
use crate::query::{decode_filter, encode_event};
use crate::store::store_of;
use elixir_scope_core::event::EventRef;
use elixir_scope_core::matcher::{
    Bound, CmpOp, Guard, Matcher, Operand, Pat, TypeTest, MAX_PATTERN_DEPTH,
};
use elixir_scope_core::query::Filter;
use elixir_scope_core::store::Store;
use elixir_scope_core::{etf, query};
use rustler::{Atom, Binary, Encoder, Env, NifResult, Term};

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
    t.decode::<Vec<Term>>()?.into_iter().map(f).collect()
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
fn bound_term<'a>(
    env: Env<'a>,
    store: &Store,
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

/// Events matching the filter whose data matches the pattern: `[{event, [bound value | nil]}]`,
/// in the filter's order (`{seq, values}` without `with_events`). Runs on a dirty scheduler.
#[rustler::nif(schedule = "DirtyCpu")]
fn query_match<'a>(
    env: Env<'a>,
    store: Term<'a>,
    filter: Term<'a>,
    pattern: Term<'a>,
    guard_term: Term<'a>,
    vars: usize,
    with_events: bool,
) -> NifResult<Term<'a>> {
    let store = store_of(store)?;
    let mut filter = decode_filter(store, filter)?;
    let matcher = match decode_matcher(pattern, guard_term, vars)? {
        Ok(m) => m,
        Err(e) => return Ok((atoms::error(), e).encode(env)),
    };
    // The limit applies to matches (a scan ignores it).
    let limit = filter.limit;
    if limit == 0 {
        return Ok((atoms::ok(), Vec::<Term>::new()).encode(env));
    }
    let nil = atoms::nil().encode(env);
    let mut out: Vec<Term> = Vec::new();
    let mut binds = Vec::new();
    let mut scratch = Vec::new();
    let mut visit = |ev: &EventRef| -> bool {
        if let Some(data) = ev.data() {
            if matcher.matches(data, &mut binds) {
                let values: Vec<Term> = binds
                    .iter()
                    .map(|b| {
                        b.as_ref()
                            .and_then(|b| bound_term(env, store, data, b, &mut scratch))
                            .unwrap_or(nil)
                    })
                    .collect();
                let head = if with_events {
                    encode_event(env, store, ev)
                } else {
                    ev.seq.encode(env)
                };
                out.push((head, values).encode(env));
            }
        }
        out.len() < limit
    };
    scan_store(store, &mut filter, matcher.tag(), &mut visit);
    Ok((atoms::ok(), out).encode(env))
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

/// Visits the events of `store` matching `filter` (its limit aside), through an index when
/// one applies (`tag`: the message tag every wanted event has, if known).
pub(crate) fn scan_store<'a>(
    store: &'a Store,
    filter: &mut Filter,
    tag: Option<&str>,
    visit: &mut dyn FnMut(&EventRef<'a>) -> bool,
) {
    query::plan(store, filter, tag, |filter, seqs| {
        query::scan_in(store.log(), seqs, filter, visit)
    });
}
