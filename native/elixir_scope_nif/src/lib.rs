//! ElixirScope's NIF layer: decodes terms into `elixir_scope_core` types, calls the core, encodes
//! the answers. The `erl_tracer` callbacks (`enabled/3`, `trace/5`) live here too, so that
//! `ElixirScope.Native` is both the stub module and the tracer module.
//!
//! No logic lives here that could live in the core; no NIF panics on bad input (bad argument
//! types are `badarg`, everything else is `{:error, reason}`).

// Every unsafe block says why it is sound.
#![deny(clippy::undocumented_unsafe_blocks)]

mod aggregate;
mod atoms;
mod codec;
mod error;
mod etf;
mod foreign;
mod history;
mod json;
mod matcher;
mod persist;
mod query;
mod resource;
mod store;
mod terms;
mod tracer;
mod track;

fn load(env: rustler::Env, _info: rustler::Term) -> bool {
    etf::check_immediate_tags(env);
    resource::open(env)
}

rustler::init!("Elixir.ElixirScope.Native", load = load);
