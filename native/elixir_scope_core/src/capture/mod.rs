//! Layer 2, capture: where the tracer's events land. Memory chunks, the capture policy (levels
//! and sampling), hashing, and the bounded lock-free log.

pub mod chunks;
pub mod delta;
pub mod hash;
pub mod log;
pub mod policy;
pub mod ring;
