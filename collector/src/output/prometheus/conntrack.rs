//! The node's conntrack table, named after node_exporter's conntrack
//! collector (`node_nf_conntrack_entries`, `_entries_limit`,
//! `node_nf_conntrack_stat_<column>`) under the collector's prefix:
//! `network_conntrack_entries`, `network_conntrack_entries_limit`,
//! `network_conntrack_stat_<column>_total`. Each family is a
//! [`ConntrackFamily`] row (the stat columns one row each, their help
//! from [`CONNTRACK_STATS`]); a value not read is not served. Every series
//! carries `host`, `hostname` and the `--label`s, no `interface`.

use std::fmt::Write;

use super::{escape, header, Kind};
use crate::model::{Conntrack, Snapshot, CONNTRACK_STATS};

/// Where a family's value is in [`Conntrack`].
#[derive(Clone, Copy)]
enum Value {
    Entries,
    Limit,
    /// The stat column of this name.
    Stat(&'static str),
}

struct ConntrackFamily {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    value: Value,
}

/// A stat column's family: its name ends in the column's, its help is
/// the model's.
const fn stat(name: &'static str, index: usize) -> ConntrackFamily {
    ConntrackFamily {
        name,
        help: CONNTRACK_STATS[index].help,
        kind: Kind::Counter,
        value: Value::Stat(CONNTRACK_STATS[index].column),
    }
}

const FAMILIES: [ConntrackFamily; 2 + CONNTRACK_STATS.len()] = [
    ConntrackFamily {
        name: "network_conntrack_entries",
        help: "Entries in the node's conntrack table now (nf_conntrack_count of the collector's network namespace).",
        kind: Kind::Gauge,
        value: Value::Entries,
    },
    ConntrackFamily {
        name: "network_conntrack_entries_limit",
        help: "Size limit of the node's conntrack table (nf_conntrack_max); at the limit, new connections are dropped.",
        kind: Kind::Gauge,
        value: Value::Limit,
    },
    stat("network_conntrack_stat_insert_failed_total", 0),
    stat("network_conntrack_stat_drop_total", 1),
    stat("network_conntrack_stat_early_drop_total", 2),
];

impl Value {
    fn of(self, conntrack: &Conntrack) -> Option<u64> {
        match self {
            Value::Entries => conntrack.entries,
            Value::Limit => conntrack.entries_limit,
            Value::Stat(column) => conntrack.stat.get(column).copied(),
        }
    }
}

pub(super) fn write(out: &mut String, snapshot: &Snapshot) {
    let Some(conntrack) = &snapshot.conntrack else {
        return;
    };
    let node = escape(&snapshot.node);
    let mut labels = format!("host=\"{node}\",hostname=\"{node}\"");
    for (key, value) in &snapshot.labels {
        let _ = write!(labels, ",{key}=\"{}\"", escape(value));
    }
    for family in &FAMILIES {
        if let Some(value) = family.value.of(conntrack) {
            header(out, family.name, family.help, family.kind);
            let _ = writeln!(out, "{}{{{labels}}} {value}", family.name);
        }
    }
}
