//! The core's [`Error`], encoded once: each variant becomes a stable atom or tagged tuple that
//! Elixir matches on (`ElixirScope.Error.describe/1` turns it into a sentence), never Rust's text.

use crate::atoms;
use elixir_scope_core::Error;
use rustler::{Atom, Encoder, Env, Term};
use std::path::Path;

/// The `reason` of `{:error, reason}` for `e`.
pub fn reason<'a>(env: Env<'a>, e: &Error) -> Term<'a> {
    match e {
        Error::InvalidOption { name, reason } => {
            (atoms::invalid_option(), *name, reason.as_str()).encode(env)
        }
        Error::NotFound { path } => (atoms::enoent(), path).encode(env),
        Error::NotARegularFile { path } => (atoms::not_a_regular_file(), path).encode(env),
        // `posix` comes from the core's fixed table of names, never from input.
        Error::Io { path, posix } => match Atom::from_str(env, posix) {
            Ok(name) => (name, path).encode(env),
            Err(_) => (atoms::eio(), path).encode(env),
        },
        Error::NotATrace { path } => (atoms::not_a_trace(), path).encode(env),
        Error::NewerFormat { path, version } => (atoms::newer_format(), path, *version).encode(env),
        Error::Corrupt { path, offset } => (atoms::corrupt_segment(), path, *offset).encode(env),
        Error::TraceExists { path } => (atoms::trace_exists(), path).encode(env),
        Error::AlreadyPersisted => atoms::already_persisted().encode(env),
        Error::AlreadyDone => atoms::already_done().encode(env),
        // A variant this NIF was not built to know (the enum is non-exhaustive).
        _ => atoms::internal().encode(env),
    }
}

/// `{:error, reason}` for `e`.
pub fn term<'a>(env: Env<'a>, e: &Error) -> Term<'a> {
    (atoms::error(), reason(env, e)).encode(env)
}

/// `{:error, reason}` for an I/O error of the core while working on `path`.
pub fn io<'a>(env: Env<'a>, e: std::io::Error, path: &Path) -> Term<'a> {
    term(env, &Error::from_io(e, path))
}
