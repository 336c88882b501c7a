//! Network interface metrics collector: netlink and eBPF sources, one
//! snapshot type, Prometheus and terminal outputs.
//!
//! Data flows one way: `sources` -> `collect` (a `Snapshot`) -> `exposition`
//! / `server` / the CLI.
pub mod cli;
pub mod collect;
pub mod exposition;
pub mod filter;
pub mod privileges;
pub mod server;
pub mod share;
pub mod snapshot;
pub mod sources;
pub mod table;
pub mod watch;
