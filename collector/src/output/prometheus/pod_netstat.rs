//! Each pod's own SNMP counters: one family per row of
//! [`NETSTAT_FIELDS`], named after node_exporter's
//! `node_netstat_<Section>_<Name>` in the kernel's own case:
//! `network_pod_netstat_<Section>_<Name>_total` for a counter,
//! without `_total` for a gauge (CurrEstab, Forwarding), so a query on the
//! node's counters becomes the pod's by its name alone. Every series
//! carries `namespace`, `pod` and the node's labels; no `interface`: these
//! are the namespace's counters, not a device's. The default profile
//! serves the rows of [`NetstatSet::Default`], `--detailed-metrics` all.

use std::fmt::Write;

use super::{escape, header, Kind, Profile};
use crate::model::{NetstatSet, Snapshot, NETSTAT_FIELDS};

/// The prefix of every family's name.
pub const PREFIX: &str = "network_pod_netstat_";

pub(super) fn write(out: &mut String, snapshot: &Snapshot, profile: Profile) {
    if !snapshot.sources.pod_netstat.enabled {
        return;
    }
    let node = escape(&snapshot.node);
    let labels: Vec<String> = snapshot
        .pod_netstat
        .iter()
        .map(|pod| {
            let mut labels = format!(
                "namespace=\"{}\",pod=\"{}\",host=\"{node}\",hostname=\"{node}\"",
                escape(&pod.pod.namespace),
                escape(&pod.pod.pod)
            );
            for (key, value) in &snapshot.labels {
                let _ = write!(labels, ",{key}=\"{}\"", escape(value));
            }
            labels
        })
        .collect();
    let served = NETSTAT_FIELDS
        .iter()
        .filter(|f| f.set == NetstatSet::Default || profile == Profile::Detailed);
    for field in served {
        let (kind, suffix) = if field.gauge {
            (Kind::Gauge, "")
        } else {
            (Kind::Counter, "_total")
        };
        let name = format!("{PREFIX}{}{suffix}", field.key);
        header(out, &name, field.help, kind);
        for (pod, labels) in snapshot.pod_netstat.iter().zip(&labels) {
            if let Some(value) = pod.counters.get(field.key) {
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        }
    }
}
