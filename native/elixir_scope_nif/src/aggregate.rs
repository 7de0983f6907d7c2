//! Aggregation NIFs: counts per group and call durations, computed in the core in one pass.

use crate::atoms;
use crate::codec::decode_matcher;
use crate::codec::{decode_filter, kind_atom};
use crate::store::reader_of;
use elixir_scope_core::capture::delta;
use elixir_scope_core::formats::event::{EventRef, Kind};
use elixir_scope_core::query::aggregate::{self, GroupBy, Key};
use elixir_scope_core::reader::Reader;
use rustler::{Atom, Encoder, Env, NifResult, Term};

fn group_by(t: Term) -> NifResult<GroupBy> {
    if let Ok((tag, ns)) = t.decode::<(Atom, u64)>() {
        if tag.to_term(t.get_env()).atom_to_string()? == "bucket" && ns > 0 {
            return Ok(GroupBy::Bucket(ns));
        }
        return Err(rustler::Error::BadArg);
    }
    Ok(match t.atom_to_string()?.as_str() {
        "all" => GroupBy::All,
        "pid" => GroupBy::Pid,
        "peer" => GroupBy::Peer,
        "kind" => GroupBy::Kind,
        "module" => GroupBy::Module,
        "mfa" => GroupBy::Mfa,
        "tag" => GroupBy::Tag,
        _ => return Err(rustler::Error::BadArg),
    })
}

/// A key as a term: pids and modules as themselves (`nil` for none), kinds as atoms, tags as
/// existing atoms (a tag whose atom does not exist comes back as its name, a binary).
fn group_term<'a>(env: Env<'a>, store: &Reader, key: &Key) -> Term<'a> {
    let word = |w: u64| crate::terms::key_or_nil(env, store, w);
    match key {
        Key::All => atoms::all().encode(env),
        Key::Word(w) => word(*w),
        Key::Kind(k) => {
            Kind::from_u8(*k).map_or(atoms::nil().encode(env), |k| kind_atom(k).encode(env))
        }
        Key::Mfa(m, f, a) => {
            if *m == 0 {
                atoms::nil().encode(env)
            } else {
                (word(*m), word(*f), *a).encode(env)
            }
        }
        Key::Tag(name) => match Atom::existing_from_utf8_bytes(env, name.as_bytes()) {
            Ok(atom) => atom.encode(env),
            Err(_) => name.as_str().encode(env),
        },
        Key::NoTag => atoms::nil().encode(env),
        Key::Bucket(ts) => ts.encode(env),
    }
}

/// `{:ok, [{key, count}]}` for the events matching the filter (and the pattern, unless it is
/// `nil`), grouped by `by`. Runs on a dirty scheduler.
#[rustler::nif(schedule = "DirtyCpu")]
fn query_count<'a>(
    env: Env<'a>,
    store: Term<'a>,
    filter: Term<'a>,
    by: Term<'a>,
    pattern: Term<'a>,
    guard: Term<'a>,
    vars: usize,
) -> NifResult<Term<'a>> {
    let store = reader_of(store)?;
    let mut filter = decode_filter(store, filter)?;
    let by = group_by(by)?;
    let matcher = if crate::terms::is_nil(pattern) {
        None
    } else {
        match decode_matcher(pattern, guard, vars)? {
            Ok(m) => Some(m),
            Err(e) => return Ok((atoms::error(), e).encode(env)),
        }
    };
    let mut binds = Vec::new();
    let mut whole = Vec::new();
    let log = &store.log();
    let mut keep = |ev: &EventRef| match &matcher {
        None => true,
        // A state stored as a delta is matched as the state it resolves to.
        Some(m) => delta::with_whole(log, ev, &mut whole, |w| {
            w.data().is_some_and(|d| m.matches(d, &mut binds))
        }),
    };
    let tag = matcher.as_ref().and_then(|m| m.tag());
    let groups = elixir_scope_core::query::plan(store, &mut filter, tag, |filter, seqs| {
        aggregate::count(&store.log(), seqs, filter, by, &mut keep)
    });
    let out: Vec<Term> = groups
        .iter()
        .map(|(k, n)| (group_term(env, store, k), *n).encode(env))
        .collect();
    Ok((atoms::ok(), out).encode(env))
}

/// `[{key, count, min, max, sum}]` of call durations (ns) for the calls matching the filter.
#[rustler::nif(schedule = "DirtyCpu")]
fn query_durations<'a>(
    env: Env<'a>,
    store: Term<'a>,
    filter: Term<'a>,
    by: Term<'a>,
) -> NifResult<Term<'a>> {
    let store = reader_of(store)?;
    let mut filter = decode_filter(store, filter)?;
    filter.kinds = elixir_scope_core::index::CALLS;
    let by = group_by(by)?;
    let groups = elixir_scope_core::query::plan(store, &mut filter, None, |filter, seqs| {
        aggregate::call_durations(&store.log(), seqs, filter, by)
    });
    let out: Vec<Term> = groups
        .iter()
        .map(|(k, d)| {
            let sum = i64::try_from(d.sum).unwrap_or(i64::MAX);
            (group_term(env, store, k), d.count, d.min, d.max, sum).encode(env)
        })
        .collect();
    Ok(out.encode(env))
}

/// `[{pid, count}]`: how many events each process has, read off the index's per-process lists
/// (no scan of the log), for every process with events. Runs on a dirty scheduler.
#[rustler::nif(schedule = "DirtyCpu")]
fn query_pid_counts<'a>(env: Env<'a>, store: Term<'a>) -> NifResult<Term<'a>> {
    let store = reader_of(store)?;
    let idx = store.index();
    let out: Vec<Term> = idx
        .pids()
        .filter(|(_, p)| !p.events.is_empty())
        .map(|(&pid, p)| {
            (
                crate::terms::key_term(env, store, pid),
                p.events.len() as u64,
            )
                .encode(env)
        })
        .collect();
    Ok(out.encode(env))
}
