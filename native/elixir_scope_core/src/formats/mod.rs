//! Layer 1, formats: the words everything else is written in. Errors and file opening, the
//! External Term Format, the event model, a loaded trace's symbols, and the rules of OTP's
//! behaviours.

pub mod behaviours;
pub mod dump;
pub mod error;
pub mod etf;
pub mod event;
pub mod fsio;
pub mod symbols;
