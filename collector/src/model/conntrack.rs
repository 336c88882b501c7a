//! The node's connection tracking: how full its table is and how often
//! an entry could not be made, as node_exporter's conntrack collector
//! reads it. Which columns of `/proc/net/stat/nf_conntrack` are read is
//! the one table [`CONNTRACK_STATS`]: the source sums its rows and the
//! output serves each as a family.

use std::collections::BTreeMap;

use serde::Serialize;

/// One column of `/proc/net/stat/nf_conntrack`, summed over CPUs.
#[derive(Debug, Clone, Copy)]
pub struct ConntrackStat {
    /// The column's name in the file's header, and the key in
    /// [`Conntrack::stat`].
    pub column: &'static str,
    pub help: &'static str,
}

/// The columns served: the ones that answer the 5-second DNS race
/// (`insert_failed`) and a full table (`drop`, `early_drop`).
pub const CONNTRACK_STATS: [ConntrackStat; 3] = [
    ConntrackStat {
        column: "insert_failed",
        help: "Connections whose conntrack entry could not be inserted (a clash that could not be resolved, such as two UDP packets of one socket racing through DNAT: the DNS 5-second timeout), summed over CPUs.",
    },
    ConntrackStat {
        column: "drop",
        help: "Packets dropped because no conntrack entry could be made (the table full and nothing evictable, or no memory), summed over CPUs.",
    },
    ConntrackStat {
        column: "early_drop",
        help: "Conntrack entries evicted early to make room in a full table, summed over CPUs.",
    },
];

/// What one collection read of the collector's own network namespace's
/// conntrack. `None` in the snapshot when the kernel has no conntrack
/// (every file missing: the module is not loaded).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Conntrack {
    /// `nf_conntrack_count`: entries in the table now; `None` when not read.
    pub entries: Option<u64>,
    /// `nf_conntrack_max`: the table's limit; `None` when not read.
    pub entries_limit: Option<u64>,
    /// [`ConntrackStat::column`] -> its sum over CPUs; empty when the file
    /// was not read, a column the kernel lacks absent.
    pub stat: BTreeMap<&'static str, u64>,
}
