//! Query NIFs: decode a filter, run it in the core, encode only the matches.

use crate::codec::{decode_filter, encode_events};
use crate::store::reader_of;
use elixir_scope_core::query;
use rustler::{Env, NifResult, Term};

/// Events matching the filter, as a list of event tuples. O(events scanned), so it runs on a
/// dirty CPU scheduler.
#[rustler::nif(schedule = "DirtyCpu")]
fn query_events<'a>(env: Env<'a>, store: Term<'a>, filter: Term<'a>) -> NifResult<Term<'a>> {
    let store = reader_of(store)?;
    let mut filter = decode_filter(store, filter)?;
    // One process, one function: walk its index entry instead of the whole log.
    let log = store.log();
    let page = query::plan(store, &mut filter, None, |filter, seqs| {
        query::run_in(&log, seqs, filter)
    });
    Ok(encode_events(env, store, &page.events))
}
