//! ElixirScope's core: the event model, the bounded lock-free capture log, the capture policy and
//! the query engine. Pure Rust with no BEAM types, so it builds and tests without Erlang; the NIF
//! crate only converts terms to and from these types.
//!
//! Data flows one way: tracer callbacks [`store::Store::append`] into the
//! [`capture::log::CaptureLog`]; queries ([`query::run`]) read what is published through a
//! [`reader::Reader`] (a capture's, or a trace's opened from disk), without ever slowing writers.

//! ## Layers, lowest first
//!
//! A module uses modules of its own layer or of lower ones only, and no two modules use each
//! other, even through others (`tests/layers.rs` reads this list and the sources, and fails on
//! an edge against it or on a cycle):
//!
//! 1. formats: `error`, `fsio`, `etf`, `event`, `symbols`, `behaviours`, `dump`
//! 2. capture: `chunks`, `policy`, `hash`, `ring`, `log`, `delta`
//! 3. index: `index`
//! 4. reader: `reader`
//! 5. store: `store`
//! 6. query: `query`, `matcher`, `history`, `aggregate`
//! 7. persist: `segment`, `segments`, `footer`, `writer`, `load`, `summary`, `persist`, `paged`,
//!    `open`

// Every unsafe block says why it is sound.
#![deny(clippy::undocumented_unsafe_blocks)]

// The layers are folders (a layer of one module is a file): `crate::capture::log`,
// `crate::persist::segment`.

// 1. formats
pub mod formats;

// 2. capture
pub mod capture;

// 3. index
pub mod index;

// 4. reader
pub mod reader;

// 5. store
pub mod store;

// 6. query
pub mod query;

// 7. persist
pub mod persist;

pub use formats::error::Error;
