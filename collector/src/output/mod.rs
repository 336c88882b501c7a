//! What the collector prints, each rendering a [`crate::model::Snapshot`]
//! and nothing else: the Prometheus text, the terminal table, the `watch`
//! rates.
pub mod prometheus;
pub mod table;
pub mod watch;
