//! The core's one error type.

/// Everything that can go wrong in the core. Each variant maps to a stable atom at the NIF
/// boundary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store was closed; it accepts no events and answers no queries.
    #[error("the store is closed")]
    StoreClosed,
    /// An option is outside its allowed range.
    #[error("invalid option {name}: {reason}")]
    InvalidOption {
        /// The option's name.
        name: &'static str,
        /// What is allowed.
        reason: &'static str,
    },
}
