//! ElixirScope's core: the event model, the bounded lock-free capture log, the capture policy and
//! the query engine. Pure Rust with no BEAM types, so it builds and tests without Erlang; the NIF
//! crate only converts terms to and from these types.
//!
//! Data flows one way: tracer callbacks [`store::Store::append`] into the [`log::CaptureLog`];
//! queries ([`query::run`]) read what is published, without ever slowing writers.

// Every unsafe block says why it is sound.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod aggregate;
pub mod behaviours;
pub mod chunks;
pub mod error;
pub mod etf;
pub mod event;
pub mod footer;
pub mod fsio;
pub mod hash;
pub mod history;
pub mod index;
pub mod log;
pub mod matcher;
pub mod open;
pub mod paged;
pub mod persist;
pub mod policy;
pub mod query;
pub mod segment;
pub mod segments;
pub mod store;
pub mod symbols;

pub use error::Error;
