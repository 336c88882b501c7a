//! What the collector prints, each rendering a [`crate::model::Snapshot`]
//! and nothing else: the Prometheus text, the terminal table, the `watch`
//! rates, and the TCP trouble section both of the latter end with.
pub mod prometheus;
pub mod table;
pub mod tcp;
pub mod watch;
