//! Term helpers shared by the tracer and the queries.

use elixir_scope_core::persist::is_synthetic;
use elixir_scope_core::reader::Reader;
use rustler::sys::ErlNifTerm;
use rustler::{Encoder, Env, Term};

/// The machine word of a term.
#[inline]
pub fn raw(t: ErlNifTerm) -> u64 {
    // SAFETY: `ErlNifTerm` is `#[repr(transparent)]` over `usize`.
    unsafe { std::mem::transmute::<ErlNifTerm, usize>(t) as u64 }
}

/// The term whose machine word is `w`.
#[inline]
pub fn from_raw(w: u64) -> ErlNifTerm {
    // SAFETY: `ErlNifTerm` is `#[repr(transparent)]` over `usize`.
    unsafe { std::mem::transmute::<usize, ErlNifTerm>(w as usize) }
}

/// The handle under which a pid is stored: the term's own value when it is a local pid.
///
/// A local pid is an immediate term (its tag bits are `0b0011`): the value *is* the pid, valid in
/// every environment for the VM's lifetime, so storing it costs nothing and it can be turned back
/// into the same pid later ([`pid_term`]). Remote pids are boxed (their value is a heap pointer) and
/// are not keys: callers store them inside the payload instead.
#[inline]
pub fn local_pid_key(term: Term) -> Option<u64> {
    let raw = raw(term.as_c_arg());
    (raw & 0xF == 0x3 && term.is_pid()).then_some(raw)
}

/// The handle of an atom: its immediate value, stable for the VM's lifetime.
#[inline]
pub fn atom_key(term: Term) -> Option<u64> {
    term.is_atom().then(|| raw(term.as_c_arg()))
}

/// Turns a stored pid or atom handle back into its term.
///
/// Only called with handles produced by [`local_pid_key`] or [`atom_key`] in this VM, which are
/// immediates: valid in any environment.
#[inline]
pub fn immediate_term(env: Env<'_>, key: u64) -> Term<'_> {
    // SAFETY: `key` is the value of an immediate term (a local pid or an atom) of this VM; an
    // immediate carries no heap reference, so it is a valid term in every environment.
    unsafe { Term::new(env, from_raw(key)) }
}

/// The elements of a 3-tuple, without allocating (rustler's `get_tuple` builds a `Vec`).
#[inline]
pub fn tuple3(t: Term<'_>) -> Option<[Term<'_>; 3]> {
    let env = t.get_env();
    let mut arity: i32 = 0;
    let mut elems: *const ErlNifTerm = std::ptr::null();
    // SAFETY: `t` is valid in `env`; on success `elems` points at `arity` terms of the tuple,
    // which live as long as `t`.
    unsafe {
        if rustler::sys::enif_get_tuple(env.as_c_arg(), t.as_c_arg(), &mut arity, &mut elems) == 0
            || arity != 3
        {
            return None;
        }
        Some([
            Term::new(env, *elems),
            Term::new(env, *elems.add(1)),
            Term::new(env, *elems.add(2)),
        ])
    }
}

/// Whether `t` is the atom `nil`.
#[inline]
pub fn is_nil(t: Term) -> bool {
    t.as_c_arg() == crate::atoms::nil().as_c_arg()
}

/// `None` for `nil`, else what `decode` makes of the term.
pub fn opt_with<'a, T>(
    t: Term<'a>,
    decode: impl FnOnce(Term<'a>) -> rustler::NifResult<T>,
) -> rustler::NifResult<Option<T>> {
    if is_nil(t) {
        Ok(None)
    } else {
        decode(t).map(Some)
    }
}

/// `nil` for the empty key 0, else the term the key stands for (see [`key_term`]).
pub fn key_or_nil<'a>(env: Env<'a>, store: &Reader, key: u64) -> Term<'a> {
    if key == 0 {
        crate::atoms::nil().encode(env)
    } else {
        key_term(env, store, key)
    }
}

/// A pid key that no stored event has: what a remote or unknown pid argument becomes, so a
/// filter on it matches nothing instead of everything.
pub const NO_PID: u64 = u64::MAX;

/// A pid argument as a key of `store`: a local pid's own word; for a store loaded from disk, the
/// synthetic key of a pid of another node or run; else [`NO_PID`]. `BadArg` for anything that is
/// not a pid.
pub fn pid_arg(store: &Reader, t: Term) -> rustler::NifResult<u64> {
    if !t.is_pid() {
        return Err(rustler::Error::BadArg);
    }
    Ok(local_pid_key(t)
        .or_else(|| foreign_key(store, t))
        .unwrap_or(NO_PID))
}

/// The synthetic key a loaded store gave `t`, if any.
pub fn foreign_key(store: &Reader, t: Term) -> Option<u64> {
    let symbols = store.symbols()?;
    symbols.key_of(t.to_binary().as_slice())
}

/// The term a stored key stands for: an immediate of this VM, or (in a store loaded from disk) a
/// term rebuilt from the ETF a synthetic key stands for.
pub fn key_term<'a>(env: Env<'a>, store: &Reader, key: u64) -> Term<'a> {
    if !is_synthetic(key) {
        return immediate_term(env, key);
    }
    store
        .symbols()
        .and_then(|s| s.etf(key))
        .and_then(|etf| crate::foreign::decode(env, store.symbols(), etf))
        .unwrap_or_else(|| crate::atoms::nil().encode(env))
}

/// The ETF of a key, for a segment's symbol record: what a loaded store's synthetic key stands
/// for, or `term_to_binary` of a local pid or atom. `None` for anything else.
pub fn key_etf(env: Env<'_>, store: &Reader, key: u64) -> Option<Vec<u8>> {
    if let Some(etf) = store.symbols().and_then(|s| s.etf(key)) {
        return Some(etf.to_vec());
    }
    // A live store's keys are only ever made by `local_pid_key` and `atom_key`; the tag test
    // keeps anything else from being taken for a term.
    let immediate = key & 0xF == 0x3 || key & 0x3F == 0x0B;
    immediate.then(|| immediate_term(env, key).to_binary().as_slice().to_vec())
}

/// A new binary term holding a copy of `bytes`.
pub fn binary_term<'a>(env: Env<'a>, bytes: &[u8]) -> Term<'a> {
    let mut out = rustler::NewBinary::new(env, bytes.len());
    out.as_mut_slice().copy_from_slice(bytes);
    out.into()
}

/// `binary_to_term(bytes, [:safe])` in `env` (no atom is created), when `bytes` (version byte
/// included) hold exactly one term.
pub fn binary_to_term<'a>(env: Env<'a>, bytes: &[u8]) -> Option<Term<'a>> {
    let mut term = ErlNifTerm::default();
    // SAFETY: `bytes` is a readable slice; enif_binary_to_term reads at most its length and
    // writes one term of `env`.
    let used = unsafe {
        rustler::sys::enif_binary_to_term(
            env.as_c_arg(),
            bytes.as_ptr(),
            bytes.len(),
            &mut term,
            rustler::sys::ERL_NIF_BIN2TERM_SAFE,
        )
    };
    // SAFETY: on success `term` is a valid term of `env`.
    (used == bytes.len()).then(|| unsafe { Term::new(env, term) })
}

/// The elements of a proper list; `BadArg` for anything else. Every list a NIF takes is read
/// through this: rustler's own list decoding panics on an improper tail.
pub fn proper_list<'a>(t: Term<'a>) -> rustler::NifResult<Vec<Term<'a>>> {
    t.list_length()?;
    t.decode()
}
