//! Pod identity families: `network_interface_pod_info` joins any
//! per-interface series to its pod (`* on(interface, host)
//! group_left(namespace, pod) network_interface_pod_info`), and the
//! source's own health.

use std::fmt::Write;

use super::{escape, header, sample};
use crate::snapshot::Snapshot;

pub(super) fn info_family(out: &mut String, snapshot: &Snapshot, identities: &[String]) {
    if !snapshot.sources.pod_identity.enabled {
        return;
    }
    header(
        out,
        "network_interface_pod_info",
        "The pod whose network namespace holds this interface's peer (from the CNI result cache); value is always 1.",
        "gauge",
    );
    for (interface, identity) in snapshot.interfaces.iter().zip(identities) {
        let Some(pod) = &interface.pod else { continue };
        let labels = [
            ("namespace", pod.namespace.as_str()),
            ("pod", pod.pod.as_str()),
            ("pod_uid", pod.pod_uid.as_str()),
        ];
        sample(out, "network_interface_pod_info", identity, &labels, 1);
    }
}

pub(super) fn self_families(out: &mut String, snapshot: &Snapshot) {
    let status = &snapshot.sources.pod_identity;
    if !status.enabled {
        return;
    }
    header(
        out,
        "collector_pod_identity_up",
        "1 when the CNI results directory was read in this collection (network_interface_pod_info is served).",
        "gauge",
    );
    let _ = writeln!(out, "collector_pod_identity_up {}", u8::from(status.up));
    header(
        out,
        "collector_pod_identity_errors_total",
        "Pod identity failures: directory (results directory unreadable, per collection), file, malformed (cache file), netns (netns file gone), nsid (RTM_GETNSID failed).",
        "counter",
    );
    for (reason, count) in &status.errors_total {
        let _ = writeln!(
            out,
            "collector_pod_identity_errors_total{{reason=\"{}\"}} {count}",
            escape(reason)
        );
    }
}
