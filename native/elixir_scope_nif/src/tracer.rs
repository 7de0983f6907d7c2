//! The `erl_tracer` callbacks. The VM calls them in the traced process, on its scheduler, for every
//! trace event: `enabled/3` first (the cheap gate: store open, level, capacity, sampling), then
//! `trace/5` (copy the event into the store). Both are O(1) apart from the payload copy and never
//! block; an event allocates nothing beyond the thread's reusable buffers, but a state stored as
//! a change to the previous one (see `capture::delta`) may.

use crate::atoms;
use crate::etf;
use crate::resource;
use crate::terms::{atom_key, local_pid_key, raw, tuple3};
use elixir_scope_core::capture::log::Appended;
use elixir_scope_core::capture::policy::mix64;
use elixir_scope_core::formats::behaviours::{self, Statem, TermView, Word};
use elixir_scope_core::formats::event::{flags, Header, Kind};
use elixir_scope_core::store::{StateKind, Store};
use rustler::sys::{enif_monotonic_time, ErlNifTimeUnit};
use rustler::{Atom, Env, Term};
use std::cell::RefCell;

/// Reusable per-scheduler state, so an event costs no allocation once the buffers have grown,
/// and one thread-local access.
struct Scratch {
    payload: Vec<u8>,
    truncated: Vec<u8>,
    encoder: etf::Encoder,
    /// The last states this scheduler stored whole (or as deltas), by process: what the next
    /// state of the same process is compared with (see `Store::append_state_after`).
    states: [LastState; LAST_STATES],
}

/// A state this scheduler stored: its store, process, seq and encoding.
struct LastState {
    store: u64,
    pid: u64,
    seq: u64,
    bytes: Vec<u8>,
}

/// States remembered per scheduler (a process's callbacks run where it is scheduled: mostly
/// on one scheduler at a time).
const LAST_STATES: usize = 4;

/// The largest state remembered (every state kept whole): a scheduler keeps at most
/// `LAST_STATES` times this.
const LAST_STATE_BYTES: usize = elixir_scope_core::store::STATE_CAP;

/// Terms a payload is counted over past its cap, at least (see `record`).
const MIN_COUNT: u32 = 64;

/// Buffers larger than this after an event are given back, so one huge message does not pin its
/// size in every scheduler forever (a state, up to its cap, may be kept).
const KEEP_BUFFER: usize = 2 * LAST_STATE_BYTES;

thread_local! {
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch {
            payload: Vec::new(),
            truncated: Vec::new(),
            encoder: etf::Encoder::new(),
            states: [const { LastState { store: 0, pid: 0, seq: 0, bytes: Vec::new() } }; LAST_STATES],
        })
    };
}

/// The event kind of a trace tag; `None` for tags we do not record (`spawned`, `getting_linked`,
/// `return_to`, ...), whose information the recorded tags already carry.
#[inline]
fn kind_of(tag: Term) -> Option<Kind> {
    let t = tag.as_c_arg();
    let is = |a: Atom| a.as_c_arg() == t;
    Some(if is(atoms::send()) {
        Kind::Send
    } else if is(atoms::receive()) {
        Kind::Receive
    } else if is(atoms::call()) {
        Kind::Call
    } else if is(atoms::return_from()) {
        Kind::Return
    } else if is(atoms::exception_from()) {
        Kind::Exception
    } else if is(atoms::spawn()) {
        Kind::Spawn
    } else if is(atoms::exit()) {
        Kind::Exit
    } else if is(atoms::link()) {
        Kind::Link
    } else if is(atoms::unlink()) {
        Kind::Unlink
    } else if is(atoms::register()) {
        Kind::Register
    } else if is(atoms::unregister()) {
        Kind::Unregister
    } else if is(atoms::send_to_non_existing_process()) {
        Kind::SendToDead
    } else {
        return None;
    })
}

/// `erl_tracer:enabled/3`: `trace`, `discard` or `remove`.
#[rustler::nif]
fn enabled(tag: Term, state: Term, tracee: Term) -> Atom {
    let Some(store) = resource::get(state) else {
        // The null tracer state: every event is offered to `trace/5`, which stores nothing. It
        // measures what any NIF tracer costs the VM (bench/capture.exs's floor).
        if state.as_c_arg() == atoms::elixir_scope_null_tracer().as_c_arg() {
            return atoms::trace();
        }
        return atoms::remove();
    };
    if store.is_closed() {
        return atoms::remove();
    }
    if tag.as_c_arg() == atoms::trace_status().as_c_arg() {
        return atoms::trace();
    }
    let Some(kind) = kind_of(tag) else {
        return atoms::discard();
    };
    // A watched callback module's return (or throw) carries its state; its call must be let
    // through for the return to be traced at all (the VM runs the `return_trace` match spec
    // only for a call the tracer takes).
    let callback = matches!(kind, Kind::Call | Kind::Return | Kind::Exception);
    let wanted = store.policy().wants(kind) || (callback && store.policy().wants(Kind::State));
    let pid = local_pid_key(tracee).unwrap_or(0);
    if kind == Kind::Call && wanted && store.is_full() {
        // Taken only to be dropped (`trace/5` counts it): the VM traces a call's return (or
        // exception) only when the tracer takes the call, and that event is a drop to count too.
        return if store.policy().sample(pid) {
            atoms::trace()
        } else {
            atoms::discard()
        };
    }
    if admit(store, wanted, kind.is_critical(), pid) {
        atoms::trace()
    } else {
        atoms::discard()
    }
}

/// Whether an event of process `pid` that the level wants (`wanted`) is taken: the store is
/// open, sampling keeps it (a `critical` one bypasses sampling), and the store is not full (a
/// full one counts it dropped). The gate of every event, traced or recorded from Elixir.
pub(crate) fn admit(
    store: &Store,
    wanted: bool,
    critical: bool,
    pid: elixir_scope_core::formats::event::PidKey,
) -> bool {
    if store.is_closed() || !wanted || !(critical || store.policy().sample(pid)) {
        return false;
    }
    if store.is_full() {
        store.count_dropped();
        return false;
    }
    true
}

/// `erl_tracer:trace/5`: records the event. Always answers `ok`; the return value is ignored by
/// the VM.
#[rustler::nif]
fn trace<'a>(
    env: Env<'a>,
    tag: Term<'a>,
    state: Term<'a>,
    tracee: Term<'a>,
    term: Term<'a>,
    opts: Term<'a>,
) -> Atom {
    // SAFETY: enif_monotonic_time has no preconditions.
    let ts = unsafe { enif_monotonic_time(ErlNifTimeUnit::ERL_NIF_NSEC) };
    let (Some(store), Some(kind)) = (resource::get(state), kind_of(tag)) else {
        return atoms::ok();
    };
    let kind = if kind == Kind::Receive && timed_out(opts) {
        Kind::Timeout
    } else {
        kind
    };
    if store.is_full() {
        // What it would have recorded is dropped: the event, if the level wants it (a call may
        // be taken only for its return's state; ElixirScope's own hook is no event), and the
        // state a callback's return carries.
        let mut d = Header::default();
        if matches!(kind, Kind::Call | Kind::Return | Kind::Exception) {
            set_mfa(&mut d, term);
        }
        let hook = kind == Kind::Call && is_state_server_hook(&d);
        if !hook && store.policy().wants(kind) {
            store.count_dropped();
        }
        if matches!(kind, Kind::Return | Kind::Exception) && carries_state(store, kind, term, opts)
        {
            store.count_dropped();
        }
        return atoms::ok();
    }
    let mut h = Header {
        ts,
        pid: local_pid_key(tracee).unwrap_or(0),
        kind: kind as u8,
        ..Header::default()
    };
    let extra = || opts.map_get(atoms::extra()).ok();
    // A call's result (its value, or `{class, reason}`), looked up once.
    let result = match kind {
        Kind::Return | Kind::Exception => extra(),
        _ => None,
    };
    let nil = atoms::nil().to_term(env);
    let payload: Payload = match kind {
        Kind::Send | Kind::SendToDead => with_peer(&mut h, extra().unwrap_or(nil), Some(term)),
        Kind::Receive | Kind::Exit | Kind::Register | Kind::Unregister => Payload::Term(term),
        Kind::Timeout => Payload::None,
        Kind::Link | Kind::Unlink => with_peer(&mut h, term, None),
        Kind::Spawn => {
            let mfa = extra().unwrap_or(nil);
            set_mfa(&mut h, mfa);
            with_peer(&mut h, term, Some(mfa))
        }
        Kind::Call => {
            // {M, F, Args}: the payload is the argument list.
            set_mfa(&mut h, term);
            if is_state_server_hook(&h) {
                notify_state_server(env, store, tracee, term);
                return atoms::ok();
            }
            tuple3(term).map_or(Payload::None, |[_, _, args]| Payload::Term(args))
        }
        Kind::Return | Kind::Exception => {
            // {M, F, Arity}; the value (or {Class, Reason}) is in `extra`.
            set_mfa(&mut h, term);
            result.map_or(Payload::None, Payload::Term)
        }
        // Not trace tags: recorded by `store_record` and `track_record` only.
        Kind::State
        | Kind::Supervisor
        | Kind::Var
        | Kind::Traced
        | Kind::Metrics
        | Kind::Control
        | Kind::Stack => return atoms::ok(),
    };
    if store.policy().wants(kind) {
        let seq = record(env, store, &h, payload);
        // A watch asking for the callers set `{message, {process_dump}}`: the dump is the
        // match spec's result.
        if let (Kind::Call, Some(seq)) = (kind, seq) {
            let dump = opts.map_get(atoms::match_spec_result()).ok();
            if let Some(dump) = dump.and_then(|d| d.decode::<rustler::Binary>().ok()) {
                record_stack(env, store, &h, seq, dump.as_slice());
            }
        }
    }
    // Only returns of watched callback modules carry states (checked first: one table probe).
    let state_kind = match kind {
        Kind::Return | Kind::Exception => store.state_module_kind(h.module),
        _ => None,
    };
    if let Some(state_kind) = state_kind.filter(|_| store.policy().wants(Kind::State)) {
        let sh = Header {
            kind: Kind::State as u8,
            flags: 0,
            ..h
        };
        // A callback's result: its return value, or a value it threw (gen_server and gen_statem
        // take `throw(result)` as the result).
        let result = match kind {
            Kind::Return => result,
            _ => result.and_then(|r| behaviours::thrown(Live(r)).map(|t| t.0)),
        };
        match (state_kind, result) {
            (StateKind::GenServer, Some(v)) => {
                if let Some(st) = behaviours::gen_server_state(function_is(&h), h.arity, Live(v)) {
                    record(env, store, &sh, Payload::Term(st.0));
                }
            }
            (StateKind::GenStatem, Some(v)) => record_statem(env, store, &sh, v),
            _ => {}
        }
    }
    atoms::ok()
}

/// Whether the `kind` event (a return or exception) of `mfa` (`{M, F, Arity}`, its result in
/// `opts`) would record a state event: its module is watched, states are wanted, and the result carries one.
fn carries_state(store: &Store, kind: Kind, mfa: Term, opts: Term) -> bool {
    let mut h = Header::default();
    set_mfa(&mut h, mfa);
    let Some(state_kind) = store.state_module_kind(h.module) else {
        return false;
    };
    let Ok(result) = opts.map_get(atoms::extra()) else {
        return false;
    };
    // An exception's result is the value thrown, if any, as in `trace/5`.
    let result = match kind {
        Kind::Exception => match behaviours::thrown(Live(result)) {
            Some(thrown) => thrown,
            None => return false,
        },
        _ => Live(result),
    };
    store.policy().wants(Kind::State)
        && match state_kind {
            StateKind::GenServer => {
                behaviours::gen_server_state(function_is(&h), h.arity, result).is_some()
            }
            StateKind::GenStatem => {
                behaviours::statem_result(function_is(&h), h.arity, result).is_some()
            }
        }
}

/// Whether a `receive` event is a `receive ... after` timing out: the VM reports it as the atom
/// `timeout` received from no process, which ElixirScope's receive trace pattern marks (see
/// `ElixirScope.Tracer.mark_timeouts/0`).
#[inline]
fn timed_out(opts: Term) -> bool {
    opts.map_get(atoms::match_spec_result())
        .is_ok_and(|r| r.as_c_arg() == atoms::elixir_scope_timeout().as_c_arg())
}

/// Whether a call is ElixirScope's hook on `gen:init_it/6,7` (the first function a new
/// `gen_server` or `gen_statem` runs, before its `init/1`): not an event of its own.
#[inline]
fn is_state_server_hook(h: &Header) -> bool {
    h.function == raw(atoms::init_it().as_c_arg())
        && h.module == raw(atoms::gen().as_c_arg())
        && (h.arity == 6 || h.arity == 7)
}

/// Tells the store's watcher that `tracee` starts a state server whose callback module (in the
/// hook's arguments, third from the end) the store does not watch yet, so that it can watch it
/// and take a first snapshot. A watched module, a missing watcher or a watcher that is gone:
/// nothing to do.
fn notify_state_server<'a>(env: Env<'a>, store: &Store, tracee: Term<'a>, call: Term<'a>) {
    let Some([_, _, args]) = tuple3(call) else {
        return;
    };
    let Ok(args) = crate::terms::proper_list(args) else {
        return;
    };
    let Some(&module) = args.len().checked_sub(3).and_then(|i| args.get(i)) else {
        return;
    };
    let Some(key) = atom_key(module) else {
        return;
    };
    let watcher = store.watcher();
    if watcher == 0 || store.state_module_kind(key).is_some() {
        return;
    }
    let Ok(pid) = crate::terms::immediate_term(env, watcher).decode::<rustler::LocalPid>() else {
        return;
    };
    let _ = env.send(&pid, (atoms::elixir_scope_state_server(), tracee, module));
}

/// A live term as the core's behaviour rules read it: atoms compared by their word with the
/// atoms made at load, tuples read in place.
#[derive(Clone, Copy)]
struct Live<'a>(Term<'a>);

impl<'a> TermView for Live<'a> {
    #[inline]
    fn is(self, w: Word) -> bool {
        raw(self.0.as_c_arg()) == word(w)
    }

    fn tuple(self) -> Option<Vec<Self>> {
        let els = rustler::types::tuple::get_tuple(self.0).ok()?;
        Some(els.into_iter().map(Live).collect())
    }
}

/// The word of a behaviour atom, from the atoms made at load.
#[inline]
fn word(w: Word) -> u64 {
    let a = match w {
        Word::Ok => atoms::ok(),
        Word::Noreply => atoms::noreply(),
        Word::Reply => atoms::reply(),
        Word::Stop => atoms::stop(),
        Word::NextState => atoms::next_state(),
        Word::KeepState => atoms::keep_state(),
        Word::RepeatState => atoms::repeat_state(),
        Word::KeepStateAndData => atoms::keep_state_and_data(),
        Word::RepeatStateAndData => atoms::repeat_state_and_data(),
        Word::StopAndReply => atoms::stop_and_reply(),
        Word::Throw => atoms::throw(),
        Word::Init => atoms::init(),
        Word::HandleCall => atoms::handle_call(),
        Word::HandleCast => atoms::handle_cast(),
        Word::HandleInfo => atoms::handle_info(),
        Word::HandleContinue => atoms::handle_continue(),
        Word::HandleEvent => atoms::handle_event(),
        Word::CodeChange => atoms::code_change(),
        Word::Terminate => atoms::terminate(),
    };
    raw(a.as_c_arg())
}

/// `trace_state_callbacks(kind, functions)`: those of a module's `[{name, arity}]` whose results
/// carry the process's state, for a `:gen_server` or `:gen_statem` callback module (the core's
/// rules, `behaviours::is_state_callback`): the functions to return-trace.
#[rustler::nif]
fn trace_state_callbacks<'a>(
    env: Env<'a>,
    kind: Term<'a>,
    functions: Term<'a>,
) -> rustler::NifResult<Term<'a>> {
    let functions = crate::terms::proper_list(functions)?
        .into_iter()
        .map(|f| f.decode::<(Term, u8)>())
        .collect::<rustler::NifResult<Vec<_>>>()?;
    let statem = if kind == atoms::gen_statem().to_term(env) {
        true
    } else if kind == atoms::gen_server().to_term(env) {
        false
    } else {
        return Err(rustler::Error::BadArg);
    };
    let kept: Vec<(Term, u8)> = functions
        .into_iter()
        .filter(|&(f, arity)| {
            let name = raw(f.as_c_arg());
            f.is_atom() && behaviours::is_state_callback(statem, |w| name == word(w), arity)
        })
        .collect();
    Ok(rustler::Encoder::encode(&kept, env))
}

/// Whether a header's function is the atom `w`.
fn function_is(h: &Header) -> impl Fn(Word) -> bool + '_ {
    move |w| h.function == word(w)
}

/// Records a `gen_statem`'s state, `{Name, Data}`, after a callback. When the result keeps the
/// state name, the name is taken from the process's previous state event (if the store still
/// knows it; otherwise nothing is recorded for this callback).
fn record_statem<'a>(env: Env<'a>, store: &Store, h: &Header, value: Term<'a>) {
    match behaviours::statem_result(function_is(h), h.arity, Live(value)) {
        Some(Statem::New(name, data)) => {
            record(env, store, h, Payload::Pair(name.0, data.0));
        }
        Some(Statem::Keep(data)) => {
            // The name comes from the previous state event; with event sampling that event may
            // have been skipped, so the name could be stale: record nothing rather than guess.
            if store.policy().sample_by() == elixir_scope_core::capture::policy::SampleBy::Event
                && store.policy().rate() < 1.0
            {
                return;
            }
            // The name is at the state's start: its first 64 KiB are enough for any name.
            let Some(name) = store
                .last_state_front(h.pid, 1 << 16)
                .and_then(|p| statem_name(env, &p))
            else {
                return;
            };
            record(env, store, h, Payload::Pair(name, data.0));
        }
        Some(Statem::Same) => {
            store.append_same_state(h);
        }
        None => {}
    }
}

/// The state name in a recorded `gen_statem` state `{name, data}` (stored ETF), as a term of
/// `env`.
fn statem_name<'a>(env: Env<'a>, payload: &[u8]) -> Option<Term<'a>> {
    use elixir_scope_core::formats::etf;
    let body = etf::body(payload)?;
    let (2, first) = etf::tuple_header(body, 0)? else {
        return None;
    };
    let mut name = vec![etf::VERSION];
    name.extend_from_slice(body.get(first..etf::skip(body, first)?)?);
    crate::terms::binary_to_term(env, &name)
}

/// Encodes `payload` into this scheduler's buffers and appends the event; `state` events go
/// through the store's deduplication of unchanged states. A stored event counts against the
/// store's rate cap; the one that trips it tells the store's watcher (see [`tripped`]).
pub(crate) fn record(env: Env, store: &Store, h: &Header, payload: Payload) -> Option<u64> {
    let seq = encode_and_append(store, h, payload);
    // ElixirScope's own events (its changes, its metrics samples) do not count, nor the
    // callers a watch asked for beside each call (the call counts).
    let own = matches!(
        Kind::from_u8(h.kind),
        Some(Kind::Control | Kind::Metrics | Kind::Stack)
    );
    if seq.is_some() && !own && store.policy().count(h.ts) {
        tripped(env, store);
    }
    seq
}

/// Frames of a call's stack kept at most.
const MAX_FRAMES: usize = 32;

/// Records the callers of the call event `call` (from its process dump) as a `stack` event.
fn record_stack(env: Env, store: &Store, call: &Header, seq: u64, dump: &[u8]) {
    if !store.policy().wants(Kind::Stack) {
        return;
    }
    let frames: Vec<Term> = elixir_scope_core::formats::dump::stack_frames(dump, MAX_FRAMES)
        .into_iter()
        .map(|f| rustler::NewBinary::from_slice(env, f).into())
        .collect();
    let h = Header {
        kind: Kind::Stack as u8,
        flags: 0,
        ..*call
    };
    let pair = (
        rustler::Encoder::encode(&seq, env),
        rustler::Encoder::encode(&frames, env),
    );
    record(env, store, &h, Payload::Pair(pair.0, pair.1));
}

/// Tells the store's watcher (the capture's server) that the rate cap tripped: the level is
/// already off; the server stops the capture or resumes it at a lighter level.
fn tripped(env: Env, store: &Store) {
    let watcher = store.watcher();
    if watcher == 0 {
        return;
    }
    if let Ok(pid) = crate::terms::immediate_term(env, watcher).decode::<rustler::LocalPid>() {
        let _ = env.send(&pid, (atoms::elixir_scope_limit(), atoms::max_rate()));
    }
}

fn encode_and_append(store: &Store, h: &Header, payload: Payload) -> Option<u64> {
    SCRATCH.with(|s| {
        let Ok(mut s) = s.try_borrow_mut() else {
            return None;
        };
        let Scratch {
            payload: buf,
            truncated,
            encoder,
            states,
        } = &mut *s;
        buf.clear();
        // Copy up to what the store keeps of this kind, no more, and count the size of the rest
        // over a sixteenth as many terms as the cap has bytes: a big state, argument list or
        // message costs about its cap, not a walk of the whole term (its size is then a lower
        // bound; two truncated states are told apart by their kept bytes and hash).
        let limit = if h.kind == Kind::State as u8 {
            store.state_cap()
        } else {
            store.max_payload()
        };
        let count = u32::try_from(limit / 16).unwrap_or(u32::MAX).max(MIN_COUNT);
        encoder.set_clock(h.ts);
        let done = match payload {
            Payload::None => etf::Encoded {
                total: 0,
                exact: true,
            },
            Payload::Term(t) => encoder.encode(t, buf, limit, count),
            Payload::Pair(a, b) => encoder.encode_pair(a, b, buf, limit, count),
        };
        let appended = if h.kind == Kind::State as u8 {
            let slot = (mix64(h.pid) as usize) % LAST_STATES;
            let last = &mut states[slot];
            let mine = last.store == store.id() && last.pid == h.pid;
            let known = mine.then_some((last.seq, &last.bytes[..]));
            let appended =
                store.append_state_after(h, buf, done.total, done.exact, truncated, known);
            let whole = done.exact && done.total == buf.len() as u64 && buf.len() <= limit;
            match appended {
                // Remembered: this encoding is the state event `seq` resolves to. The buffers
                // swap, so remembering copies nothing.
                Appended::Stored(seq) if whole => {
                    std::mem::swap(buf, &mut last.bytes);
                    (last.store, last.pid, last.seq) = (store.id(), h.pid, seq);
                }
                _ if mine => last.pid = 0,
                _ => {}
            }
            appended
        } else {
            store.append_partial(h, buf, done.total, done.exact, truncated)
        };
        if buf.capacity() > KEEP_BUFFER {
            *buf = Vec::new();
        }
        if truncated.capacity() > KEEP_BUFFER {
            *truncated = Vec::new();
        }
        match appended {
            Appended::Stored(seq) | Appended::StoredWithoutPayload(seq) => Some(seq),
            Appended::Dropped => None,
        }
    })
}

/// What an event stores as its payload.
pub(crate) enum Payload<'a> {
    None,
    Term(Term<'a>),
    /// `{a, b}`, encoded without building the tuple.
    Pair(Term<'a>, Term<'a>),
}

/// Sets `h.peer` when `peer` is a local pid and returns `data` as the payload; otherwise (a
/// registered name, a remote pid, a port, an alias) flags the header and returns `{peer, data}`
/// (`data` defaulting to `nil`).
fn with_peer<'a>(h: &mut Header, peer: Term<'a>, data: Option<Term<'a>>) -> Payload<'a> {
    match (local_pid_key(peer), data) {
        (Some(key), Some(data)) => {
            h.peer = key;
            Payload::Term(data)
        }
        (Some(key), None) => {
            h.peer = key;
            Payload::None
        }
        (None, data) => {
            h.flags |= flags::PEER_IN_PAYLOAD;
            Payload::Pair(
                peer,
                data.unwrap_or_else(|| atoms::nil().to_term(peer.get_env())),
            )
        }
    }
}

/// Fills module, function and arity from `{M, F, Args | Arity}`.
fn set_mfa(h: &mut Header, mfa: Term) {
    let Some([m, f, a]) = tuple3(mfa) else {
        return;
    };
    h.module = atom_key(m).unwrap_or(0);
    h.function = atom_key(f).unwrap_or(0);
    h.arity = match a.decode::<u8>() {
        Ok(a) => a,
        Err(_) => a.list_length().map_or(0, |n| n.min(255) as u8),
    };
}
