//! The store resource, registered by hand: a live capture's [`Store`], or a trace read from disk
//! (a [`Reader`] on its own). `ElixirScope.Store` wraps either; queries read both, capture and
//! its settings need the first.
//!
//! rustler's `ResourceArc` decoding looks the resource type up in a `HashMap` keyed by `TypeId`
//! on every call; the tracer callbacks decode their state twice per event, and that lookup was a
//! measurable share of capture cost. Here the type handle is opened once at load and kept in a
//! static, so decoding is one `enif_get_resource` call.

use elixir_scope_core::reader::Reader;
use elixir_scope_core::store::Store;
use rustler::sys::{
    c_void, enif_alloc_resource, enif_get_resource, enif_make_resource, enif_open_resource_type,
    enif_release_resource, ErlNifEnv, ErlNifResourceFlags, ErlNifResourceType,
};
use rustler::{Env, Term};
use std::ptr::null_mut;
use std::sync::atomic::{AtomicPtr, Ordering};

/// What a store resource holds.
pub enum Held {
    /// A live capture's store (what the tracer captures into).
    Capture(Store),
    /// A trace read from disk: its events, for queries only.
    Trace(Reader),
}

impl Held {
    /// What queries read.
    pub fn reader(&self) -> &Reader {
        match self {
            Held::Capture(store) => store.reader(),
            Held::Trace(reader) => reader,
        }
    }

    /// The live capture's store, if this is one.
    #[inline]
    pub fn capture(&self) -> Option<&Store> {
        match self {
            Held::Capture(store) => Some(store),
            Held::Trace(_) => None,
        }
    }
}

// The VM aligns resource memory to 8 bytes; `Held` must not need more.
const _: () = assert!(std::mem::align_of::<Held>() <= 8);

/// Opened once in `load`; read-only afterwards.
static STORE_TYPE: AtomicPtr<ErlNifResourceType> = AtomicPtr::new(null_mut());

unsafe extern "C" fn destruct(_env: *mut ErlNifEnv, obj: *mut c_void) {
    // SAFETY: the VM calls this once, when the last reference is gone; `obj` holds the `Held`
    // written by `new_term`.
    unsafe { std::ptr::drop_in_place(obj.cast::<Held>()) };
}

/// Registers the resource type. Called from the NIF library's `load`.
pub fn open(env: Env) -> bool {
    let mut tried = ErlNifResourceFlags::ERL_NIF_RT_CREATE;
    // SAFETY: called during load with the load environment; the names are NUL-terminated.
    let ty = unsafe {
        enif_open_resource_type(
            env.as_c_arg(),
            null_mut(),
            c"ElixirScope.Store".as_ptr(),
            Some(destruct),
            ErlNifResourceFlags::ERL_NIF_RT_CREATE,
            &mut tried,
        )
    };
    if ty.is_null() {
        return false;
    }
    STORE_TYPE.store(ty as *mut _, Ordering::Release);
    true
}

/// Moves `held` into a new resource and returns its term.
pub fn new_term(env: Env<'_>, held: Held) -> Term<'_> {
    let ty = STORE_TYPE.load(Ordering::Acquire);
    // SAFETY: `ty` was opened at load (NIFs cannot run before load succeeded). The allocation is
    // sized and (by the VM's allocator) aligned for `Held`; it is initialized before the term is
    // made, and our reference is released once the term holds its own.
    unsafe {
        let obj = enif_alloc_resource(ty, std::mem::size_of::<Held>());
        std::ptr::write(obj.cast::<Held>(), held);
        let term = enif_make_resource(env.as_c_arg(), obj);
        enif_release_resource(obj);
        Term::new(env, term)
    }
}

/// The resource object behind `term`, if it is one of our store resources.
#[inline]
fn object(term: Term<'_>) -> Option<*mut c_void> {
    let ty = STORE_TYPE.load(Ordering::Relaxed);
    let mut obj: *const c_void = std::ptr::null();
    // SAFETY: `term` is valid in its env; enif_get_resource only inspects it.
    let ok = unsafe { enif_get_resource(term.get_env().as_c_arg(), term.as_c_arg(), ty, &mut obj) };
    (ok != 0 && !obj.is_null()).then_some(obj as *mut c_void)
}

/// A new term for the store resource behind `term`, built in `env` (so on the caller's heap).
///
/// Why: a handle read from `persistent_term` is a literal, and a process running a dirty NIF
/// whose only reference to that literal is the NIF's argument is not seen by the VM when the
/// literal area is released (a `persistent_term` key replaced): the resource can then be
/// destroyed while the dirty NIF still reads it (a crash seen in `Index::catch_up`). A handle
/// made here lives on the caller's heap, which keeps the resource alive until the caller's next
/// garbage collection, after the call.
pub fn fresh_term<'a>(env: Env<'a>, term: Term<'_>) -> Option<Term<'a>> {
    let obj = object(term)?;
    // SAFETY: `obj` is a live store resource (the argument term holds it during this call, on a
    // normal scheduler); enif_make_resource takes a reference of its own for the new term.
    Some(unsafe { Term::new(env, enif_make_resource(env.as_c_arg(), obj)) })
}

/// What `term` holds, if it is one of our store resources. The reference lives as long as the
/// term: the term keeps the resource alive for the duration of the NIF call.
#[inline]
pub fn held<'a>(term: Term<'a>) -> Option<&'a Held> {
    // SAFETY: `object` found the `Held` written by `new_term`, alive while `term` is.
    object(term).map(|obj| unsafe { &*obj.cast::<Held>() })
}

/// The live capture's store behind `term`, if it is one (what tracer callbacks capture into).
#[inline]
pub fn get<'a>(term: Term<'a>) -> Option<&'a Store> {
    held(term)?.capture()
}
