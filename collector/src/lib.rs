//! Network interface metrics collector: netlink and eBPF sources, one
//! model, Prometheus and terminal outputs.
//!
//! Data flows one way: `sources` -> `collect` (a `model::Snapshot`) ->
//! `output` (rendering only); `share` lets concurrent scrapes share one
//! collection, `http` serves it, `cli` and `main.rs` compose them.
pub mod cli;
pub mod collect;
pub mod filter;
pub mod http;
pub mod model;
pub mod namespaces;
pub mod output;
pub mod privileges;
pub mod share;
pub mod sources;
pub mod web_config;

// The snapshot builders under tests/fixtures/ are shared by the integration
// tests and the unit tests (included by path); this lets both name the
// crate `collector`.
#[cfg(test)]
extern crate self as collector;
