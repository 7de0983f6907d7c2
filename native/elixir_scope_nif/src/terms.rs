//! Term helpers shared by the tracer and the queries.

use rustler::sys::ErlNifTerm;
use rustler::{Env, Term};

/// The machine word of a term.
#[inline]
pub fn raw(t: ErlNifTerm) -> u64 {
    // SAFETY: `ErlNifTerm` is `#[repr(transparent)]` over `usize`.
    unsafe { std::mem::transmute::<ErlNifTerm, usize>(t) as u64 }
}

/// The term whose machine word is `w`.
#[inline]
fn from_raw(w: u64) -> ErlNifTerm {
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
