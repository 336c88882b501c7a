//! TCP health by network namespace: `network_pod_tcp_*` for pods'
//! namespaces (labels `namespace`, `pod`), `network_netns_tcp_*` for the
//! rest (`netns`: "host", an inode, "unknown"). Each counter family is a
//! [`TcpFamily`] row mapping the probe's (event, detail) keys to labels;
//! the handshake RTT is one histogram per side. Only keys the probes have
//! counted are served, as for drops.

use std::borrow::Cow;
use std::fmt::Write;

use collector_common::{TcpEvent, RTT_BUCKETS, SIDE_ACCEPT, SIDE_CONNECT};

use super::{escape, header, Kind};
use crate::model::tcp::{outcome_name, reset_name, retransmit_name, RTT_LE};
use crate::model::{NamespaceTcp, Netns, Probe, Snapshot};

/// Labels of one (event, detail) key in a family, `None` when the key is
/// not the family's.
type KeyLabels = fn(u16, u16) -> Option<[(&'static str, &'static str); 2]>;

struct TcpFamily {
    /// After `network_pod_tcp_` or `network_netns_tcp_`.
    suffix: &'static str,
    help: &'static str,
    /// The probe without which the family is not served.
    probe: Probe,
    labels: KeyLabels,
}

const FAMILIES: [TcpFamily; 4] = [
    TcpFamily {
        suffix: "connections_total",
        help: "TCP handshakes that ended (sock:inet_sock_set_state): side=\"connect\" left SYN_SENT, side=\"accept\" left SYN_RECV; outcome from sk_err when it closed instead.",
        probe: Probe::TcpState,
        labels: |event, detail| {
            let side = match event {
                e if e == TcpEvent::Connect as u16 => "connect",
                e if e == TcpEvent::Accept as u16 => "accept",
                _ => return None,
            };
            Some([("side", side), ("outcome", outcome_name(detail)?)])
        },
    },
    TcpFamily {
        suffix: "retransmits_total",
        help: "TCP retransmitted skbs (tcp:tcp_retransmit_skb, tcp:tcp_retransmit_synack) by kind: data, syn (in SYN_SENT), synack.",
        probe: Probe::TcpRetransmit,
        labels: |event, detail| {
            if event != TcpEvent::Retransmit as u16 {
                return None;
            }
            Some([("kind", retransmit_name(detail)?), ("", "")])
        },
    },
    TcpFamily {
        suffix: "resets_total",
        help: "TCP resets sent (tcp:tcp_send_reset, also for a segment no socket takes) and received (tcp:tcp_receive_reset).",
        probe: Probe::TcpSendReset,
        labels: |event, detail| {
            if event != TcpEvent::Reset as u16 {
                return None;
            }
            Some([("direction", reset_name(detail)?), ("", "")])
        },
    },
    TcpFamily {
        suffix: "aborts_total",
        help: "Synchronized TCP connections closed with an error (sk_err at the change to CLOSE): reset, timed_out, unreachable, other.",
        probe: Probe::TcpState,
        labels: |event, detail| {
            if event != TcpEvent::Abort as u16 {
                return None;
            }
            Some([("error", outcome_name(detail)?), ("", "")])
        },
    },
];

const RTT: &str = "handshake_rtt_seconds";
const RTT_HELP: &str =
    "Smoothed RTT of TCP handshakes when they reached ESTABLISHED, by side (connect, accept).";

/// The labels naming a namespace's owner and the node's, joined.
fn owner_labels(snapshot: &Snapshot, tcp: &NamespaceTcp) -> String {
    let node = escape(&snapshot.node);
    let mut labels = match &tcp.pod {
        Some(pod) => format!(
            "namespace=\"{}\",pod=\"{}\"",
            escape(&pod.namespace),
            escape(&pod.pod)
        ),
        None => {
            let netns = match tcp.netns {
                Netns::Host => Cow::Borrowed("host"),
                Netns::Inode(inode) => Cow::Owned(inode.to_string()),
                Netns::Unknown => Cow::Borrowed("unknown"),
            };
            format!("netns=\"{netns}\"")
        }
    };
    let _ = write!(labels, ",host=\"{node}\",hostname=\"{node}\"");
    for (key, value) in &snapshot.labels {
        let _ = write!(labels, ",{key}=\"{}\"", escape(value));
    }
    labels
}

pub(super) fn write(out: &mut String, snapshot: &Snapshot) {
    let ebpf = &snapshot.sources.ebpf;
    if !ebpf.enabled {
        return;
    }
    let owners: Vec<(&NamespaceTcp, String)> = snapshot
        .namespace_tcp
        .iter()
        .map(|tcp| (tcp, owner_labels(snapshot, tcp)))
        .collect();
    for (prefix, pods) in [("network_pod_tcp_", true), ("network_netns_tcp_", false)] {
        let mine = || owners.iter().filter(move |(t, _)| t.pod.is_some() == pods);
        for family in &FAMILIES {
            if !ebpf.attached(family.probe) {
                continue;
            }
            let name = format!("{prefix}{}", family.suffix);
            header(out, &name, family.help, Kind::Counter);
            for (tcp, labels) in mine() {
                for (&(event, detail), &count) in &tcp.events {
                    let Some(extra) = (family.labels)(event, detail) else {
                        continue;
                    };
                    let _ = write!(out, "{name}{{{labels}");
                    for (key, value) in extra.iter().filter(|(k, _)| !k.is_empty()) {
                        let _ = write!(out, ",{key}=\"{value}\"");
                    }
                    let _ = writeln!(out, "}} {count}");
                }
            }
        }
        if !ebpf.attached(Probe::TcpState) {
            continue;
        }
        let name = format!("{prefix}{RTT}");
        header(out, &name, RTT_HELP, Kind::Histogram);
        // Each side of each namespace with handshakes: its buckets, sum in
        // microseconds and count. Written as all buckets, then all sums,
        // then all counts, so each sample name is one group.
        let histograms: Vec<(&str, &str, [u64; RTT_BUCKETS as usize], u64)> = mine()
            .flat_map(|(tcp, labels)| {
                [(SIDE_CONNECT, "connect"), (SIDE_ACCEPT, "accept")]
                    .into_iter()
                    .filter_map(move |(side, side_name)| {
                        let mut buckets = [0; RTT_BUCKETS as usize];
                        for (b, count) in buckets.iter_mut().enumerate() {
                            let detail = side * RTT_BUCKETS + b as u16;
                            *count = tcp
                                .events
                                .get(&(TcpEvent::RttBucket as u16, detail))
                                .copied()
                                .unwrap_or(0);
                        }
                        let sum = tcp.events.get(&(TcpEvent::RttSum as u16, side));
                        (buckets.iter().sum::<u64>() > 0).then(|| {
                            (
                                labels.as_str(),
                                side_name,
                                buckets,
                                sum.copied().unwrap_or(0),
                            )
                        })
                    })
            })
            .collect();
        for (labels, side, buckets, _) in &histograms {
            let mut cumulative = 0;
            for (count, le) in buckets.iter().zip(RTT_LE) {
                cumulative += count;
                let _ = writeln!(
                    out,
                    "{name}_bucket{{{labels},side=\"{side}\",le=\"{le}\"}} {cumulative}"
                );
            }
        }
        for (labels, side, _, sum_us) in &histograms {
            let seconds = *sum_us as f64 / 1e6;
            let _ = writeln!(out, "{name}_sum{{{labels},side=\"{side}\"}} {seconds}");
        }
        for (labels, side, buckets, _) in &histograms {
            let count: u64 = buckets.iter().sum();
            let _ = writeln!(out, "{name}_count{{{labels},side=\"{side}\"}} {count}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use collector_common::RESET_SENT;

    #[test]
    fn a_key_of_another_family_or_an_unknown_detail_is_not_served() {
        let retransmits = FAMILIES[1].labels;
        assert!(retransmits(TcpEvent::Retransmit as u16, 7).is_none());
        assert!(retransmits(TcpEvent::Reset as u16, RESET_SENT).is_none());
        let connections = FAMILIES[0].labels;
        assert!(connections(TcpEvent::Abort as u16, 1).is_none());
        assert!(connections(TcpEvent::Connect as u16, 99).is_none());
    }
}
