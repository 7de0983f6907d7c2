//! Layer 1, formats: the words everything else is written in. Errors and file opening, the
//! External Term Format, the event model, a loaded trace's symbols, the rules of OTP's
//! behaviours, and the call stack in a process dump.

pub mod behaviours;
pub mod dump;
pub mod error;
pub mod etf;
pub mod event;
pub mod fsio;
pub mod symbols;
