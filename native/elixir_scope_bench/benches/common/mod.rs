//! What the benches share: sizes from the environment, the event cycle of a GenServer call.

#![allow(dead_code)]

use elixir_scope_core::formats::event::Kind;

/// The variable `name` as a number, or `default`.
pub fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Each process, in turn: receive, call, return, state, send (a GenServer call, roughly).
pub const CYCLE: [Kind; 5] = [
    Kind::Receive,
    Kind::Call,
    Kind::Return,
    Kind::State,
    Kind::Send,
];
