//! Benchmarks of `elixir_scope_core` live in `benches/`; this crate holds nothing else.
