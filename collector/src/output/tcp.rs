//! "TCP trouble in pods", the section `snapshot` and `watch` end with: the
//! pods with the most TCP trouble, one row each, its columns a table
//! ([`TCP_COLUMNS`]). Values come per pod by key ([`tcp_by_pod`]): the
//! pod's own SNMP counters under their `<Section>_<Name>` keys, and the TCP
//! probes' failed connects and aborts under [`CONNECT_FAILED`] and
//! [`ABORTED`].

use std::collections::BTreeMap;
use std::fmt::Write;

use collector_common::{Outcome, TcpEvent};

use crate::model::Snapshot;
use crate::output::table::{pod_column_width, pod_label};

/// Each pod (`namespace/pod`, printable) -> key -> value: totals in
/// `snapshot`, per-second rates in `watch`.
pub type PodValues = BTreeMap<String, BTreeMap<&'static str, f64>>;

/// What a column shows of a pod's values.
#[derive(Debug, Clone, Copy)]
pub enum Cell {
    /// The value of this key.
    Value(&'static str),
    /// The first key's value as a percentage of the second's.
    Percent(&'static str, &'static str),
}

#[derive(Debug, Clone, Copy)]
pub struct TcpColumn {
    pub title: &'static str,
    pub cell: Cell,
    /// Counted in a pod's trouble, which orders the rows: events that each
    /// mean a segment, a connection or a handshake went wrong.
    pub trouble: bool,
}

/// The columns, in order.
pub const TCP_COLUMNS: [TcpColumn; 8] = [
    TcpColumn {
        title: "RETRANS",
        cell: Cell::Value("Tcp_RetransSegs"),
        trouble: true,
    },
    TcpColumn {
        title: "RETRANS%",
        cell: Cell::Percent("Tcp_RetransSegs", "Tcp_OutSegs"),
        trouble: false,
    },
    TcpColumn {
        title: "SYN RETRANS",
        cell: Cell::Value("TcpExt_TCPSynRetrans"),
        trouble: false,
    },
    TcpColumn {
        title: "RTO",
        cell: Cell::Value("TcpExt_TCPTimeouts"),
        trouble: false,
    },
    TcpColumn {
        title: "RST SENT",
        cell: Cell::Value("Tcp_OutRsts"),
        trouble: true,
    },
    TcpColumn {
        title: "LISTEN OVF",
        cell: Cell::Value("TcpExt_ListenOverflows"),
        trouble: true,
    },
    TcpColumn {
        title: "CONN FAIL",
        cell: Cell::Value(CONNECT_FAILED),
        trouble: true,
    },
    TcpColumn {
        title: "ABORTS",
        cell: Cell::Value(ABORTED),
        trouble: false,
    },
];

/// The key of a pod's connects that did not reach ESTABLISHED (refused,
/// timed out, unreachable, reset, abandoned), from the TCP probes.
pub const CONNECT_FAILED: &str = "connect_failed";
/// The key of a pod's synchronized connections closed with an error.
pub const ABORTED: &str = "aborted";

/// Pods listed, the most trouble first.
const TOP_PODS: usize = 10;

/// Each pod's TCP values in `snapshot`, by key.
pub fn tcp_by_pod(snapshot: &Snapshot) -> PodValues {
    let mut pods = PodValues::new();
    for pod in &snapshot.pod_netstat {
        let values = pods.entry(pod_label(Some(&pod.pod))).or_default();
        for (key, value) in &pod.counters {
            values.insert(key, *value as f64);
        }
    }
    for tcp in &snapshot.namespace_tcp {
        let Some(pod) = &tcp.pod else { continue };
        let values = pods.entry(pod_label(Some(pod))).or_default();
        for (&(event, detail), &count) in &tcp.events {
            let key = match TcpEvent::from_u16(event) {
                Some(TcpEvent::Connect) if detail != Outcome::Established as u16 => CONNECT_FAILED,
                Some(TcpEvent::Abort) => ABORTED,
                _ => continue,
            };
            *values.entry(key).or_default() += count as f64;
        }
    }
    pods
}

/// Each pod's values per second between two snapshots; a value that went
/// down (the pod's namespace made again) counts from zero.
pub fn tcp_rates(before: &Snapshot, now: &Snapshot, seconds: f64) -> PodValues {
    let previous = tcp_by_pod(before);
    let mut pods = tcp_by_pod(now);
    for (pod, values) in &mut pods {
        for (key, value) in values.iter_mut() {
            let earlier = previous.get(pod).and_then(|v| v.get(key)).copied();
            let delta = match earlier {
                Some(earlier) if earlier <= *value => *value - earlier,
                _ => *value,
            };
            *value = delta / seconds.max(1e-3);
        }
    }
    pods
}

impl TcpColumn {
    fn value(&self, values: &BTreeMap<&'static str, f64>) -> Option<f64> {
        match self.cell {
            Cell::Value(key) => values.get(key).copied(),
            Cell::Percent(part, whole) => {
                let whole = *values.get(whole)?;
                (whole > 0.0).then(|| values.get(part).copied().unwrap_or(0.0) / whole * 100.0)
            }
        }
    }

    fn shown(&self, values: &BTreeMap<&'static str, f64>, show: &dyn Fn(f64) -> String) -> String {
        match (self.cell, self.value(values)) {
            (_, None) => "-".into(),
            (Cell::Percent(..), Some(percent)) => format!("{percent:.1}%"),
            (Cell::Value(_), Some(value)) => show(value),
        }
    }
}

/// A pod's trouble: the sum of its trouble columns.
fn trouble(values: &BTreeMap<&'static str, f64>) -> f64 {
    TCP_COLUMNS
        .iter()
        .filter(|c| c.trouble)
        .filter_map(|c| c.value(values))
        .fold(0.0, |sum, v| sum + v)
}

/// The section: the pods with the most trouble, each with every column;
/// `None` when pods' own counters are not read.
pub fn tcp_section(
    snapshot: &Snapshot,
    pods: &PodValues,
    title: &str,
    show: impl Fn(f64) -> String,
) -> Option<String> {
    if !snapshot.sources.pod_netstat.enabled {
        return None;
    }
    let mut rows: Vec<(&String, f64, &BTreeMap<&'static str, f64>)> = pods
        .iter()
        .map(|(pod, values)| (pod, trouble(values), values))
        .filter(|(_, trouble, _)| *trouble > 0.0)
        .collect();
    if rows.is_empty() {
        return Some(format!("\n{title}: none\n"));
    }
    rows.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    rows.truncate(TOP_PODS);
    let width = pod_column_width(rows.iter().map(|(pod, _, _)| pod.as_str())).unwrap_or(3);
    let widths: Vec<usize> = TCP_COLUMNS.iter().map(|c| c.title.len().max(8)).collect();
    let mut out = format!("\n{title}\n{:<width$}", "POD");
    for (column, w) in TCP_COLUMNS.iter().zip(&widths) {
        let _ = write!(out, " {:>w$}", column.title);
    }
    out.push('\n');
    for (pod, _, values) in rows {
        let _ = write!(out, "{pod:<width$}");
        for (column, w) in TCP_COLUMNS.iter().zip(&widths) {
            let _ = write!(out, " {:>w$}", column.shown(values, &show));
        }
        out.push('\n');
    }
    Some(out)
}

#[cfg(test)]
mod tests;
