//! Query NIFs with a content pattern: decode the matcher (plain data built by
//! `ElixirScope.Query.DSL`), run it natively over each candidate event's data, and return the
//! matching events with their bound variables.

use crate::atoms;
use crate::codec::{bound_term, decode_filter, decode_matcher, encode_event};
use crate::store::reader_of;
use elixir_scope_core::capture::delta;
use elixir_scope_core::capture::log::CaptureLog;
use elixir_scope_core::formats::event::EventRef;
use elixir_scope_core::query;
use elixir_scope_core::query::Filter;
use elixir_scope_core::reader::Reader;
use rustler::{Encoder, Env, NifResult, Term};

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
    let store = reader_of(store)?;
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
    let mut whole = Vec::new();
    let log = store.log();
    let mut visit = |ev: &EventRef| -> bool {
        // A state stored as a delta is matched as the state it resolves to.
        delta::with_whole(&log, ev, &mut whole, |ev| {
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
        });
        out.len() < limit
    };
    scan_store(store, &log, &mut filter, matcher.tag(), &mut visit);
    Ok((atoms::ok(), out).encode(env))
}

/// Visits the events of `store` matching `filter` (its limit aside), through an index when
/// one applies (`tag`: the message tag every wanted event has, if known).
pub(crate) fn scan_store<'a>(
    store: &Reader,
    log: &'a CaptureLog,
    filter: &mut Filter,
    tag: Option<&str>,
    visit: &mut dyn FnMut(&EventRef<'a>) -> bool,
) {
    query::plan(store, filter, tag, |filter, seqs| {
        query::scan_in(log, seqs, filter, visit)
    });
}
