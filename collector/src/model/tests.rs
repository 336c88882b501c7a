//! The JSON keys of `collector snapshot --format json`: the exact set, so a
//! renamed, added or dropped field fails here (the golden files in
//! `tests/fixtures/golden/` pin the values and order too).

use std::collections::BTreeSet;

use super::*;

/// Every key path of the snapshot JSON; `[]` stands for any array element.
const KEYS: &[&str] = &[
    "namespace_tcp",
    "namespace_tcp[].events",
    "namespace_tcp[].events.connect_refused",
    "namespace_tcp[].netns",
    "namespace_tcp[].netns.inode",
    "namespace_tcp[].pod",
    "namespace_tcp[].pod.container_id",
    "namespace_tcp[].pod.namespace",
    "namespace_tcp[].pod.network",
    "namespace_tcp[].pod.pod",
    "namespace_tcp[].pod.pod_interface",
    "namespace_tcp[].pod.pod_uid",
    "sources.ebpf.map_memory.tcp",
    "sources.ebpf.probe_counters.tcp_map_full",
    "collection_seconds",
    "interfaces",
    "interfaces[].admin_up",
    "interfaces[].carrier",
    "interfaces[].carrier_changes",
    "interfaces[].counters",
    "interfaces[].ebpf",
    "interfaces[].ebpf.drops",
    "interfaces[].ebpf.rx_bytes",
    "interfaces[].ebpf.rx_packets",
    "interfaces[].ebpf.tx_bytes",
    "interfaces[].ebpf.tx_packets",
    "interfaces[].ifindex",
    "interfaces[].kind",
    "interfaces[].link_netnsid",
    "interfaces[].lower_up",
    "interfaces[].mac_address",
    "interfaces[].master",
    "interfaces[].master_ifindex",
    "interfaces[].mtu",
    "interfaces[].name",
    "interfaces[].oper_state",
    "interfaces[].pod",
    "interfaces[].pod.container_id",
    "interfaces[].pod.namespace",
    "interfaces[].pod.network",
    "interfaces[].pod.pod",
    "interfaces[].pod.pod_interface",
    "interfaces[].pod.pod_uid",
    "interfaces[].speed_bytes",
    "labels",
    "namespace_drops",
    "namespace_drops[].drops",
    "namespace_drops[].ifindex",
    "namespace_drops[].interface",
    "namespace_drops[].netns",
    "namespace_drops[].netns.inode",
    "namespace_drops[].pod",
    "namespace_drops[].pod.container_id",
    "namespace_drops[].pod.namespace",
    "namespace_drops[].pod.network",
    "namespace_drops[].pod.pod",
    "namespace_drops[].pod.pod_interface",
    "namespace_drops[].pod.pod_uid",
    "node",
    "conntrack",
    "conntrack.entries",
    "conntrack.entries_limit",
    "conntrack.stat",
    "pod_netstat",
    "pod_netstat[].counters",
    "pod_netstat[].netns",
    "pod_netstat[].pod",
    "pod_netstat[].pod.container_id",
    "pod_netstat[].pod.namespace",
    "pod_netstat[].pod.network",
    "pod_netstat[].pod.pod",
    "pod_netstat[].pod.pod_interface",
    "pod_netstat[].pod.pod_uid",
    "sources",
    "sources.collections_total",
    "sources.ebpf",
    "sources.ebpf.attachments",
    "sources.ebpf.attachments[].attached",
    "sources.ebpf.attachments[].error",
    "sources.ebpf.attachments[].flavour",
    "sources.ebpf.attachments[].program",
    "sources.ebpf.attachments[].tracepoint",
    "sources.ebpf.bpf_stats_enabled",
    "sources.ebpf.disabled_reason",
    "sources.ebpf.drop_map_entries",
    "sources.ebpf.enabled",
    "sources.ebpf.map_memory",
    "sources.ebpf.map_memory.counters",
    "sources.ebpf.map_memory.drops",
    "sources.ebpf.map_memory.first_drops",
    "sources.ebpf.map_memory.traffic",
    "sources.ebpf.probe_counters",
    "sources.ebpf.probe_counters.drop_map_full",
    "sources.ebpf.probe_counters.kernel_read_errors",
    "sources.ebpf.probe_counters.traffic_map_full",
    "sources.ebpf.programs",
    "sources.ebpf.programs[].flavour",
    "sources.ebpf.programs[].program",
    "sources.ebpf.programs[].recursion_misses",
    "sources.ebpf.programs[].run_cnt",
    "sources.ebpf.programs[].run_time_ns",
    "sources.ebpf.read_error",
    "sources.ebpf.traffic_map_entries",
    "sources.errors_total",
    "sources.netlink_error",
    "sources.netlink_skipped_attributes_total",
    "sources.netlink_timeouts_total",
    "sources.pod_identity",
    "sources.pod_identity.attachments",
    "sources.pod_identity.enabled",
    "sources.pod_identity.error",
    "sources.pod_identity.errors_total",
    "sources.pod_identity.up",
    "sources.conntrack_error",
    "sources.pod_netstat",
    "sources.pod_netstat.enabled",
    "sources.pod_netstat.errors_total",
];

/// The IFLA_STATS64 names under `interfaces[].counters`, as in
/// `struct rtnl_link_stats64`.
const COUNTERS: [&str; 24] = [
    "collisions",
    "multicast",
    "rx_bytes",
    "rx_compressed",
    "rx_crc_errors",
    "rx_dropped",
    "rx_errors",
    "rx_fifo_errors",
    "rx_frame_errors",
    "rx_length_errors",
    "rx_missed_errors",
    "rx_nohandler",
    "rx_over_errors",
    "rx_packets",
    "tx_aborted_errors",
    "tx_bytes",
    "tx_carrier_errors",
    "tx_compressed",
    "tx_dropped",
    "tx_errors",
    "tx_fifo_errors",
    "tx_heartbeat_errors",
    "tx_packets",
    "tx_window_errors",
];

/// Key paths of `value`; maps whose keys are data (`drops`, `errors_total`)
/// and `labels` pairs are not descended into.
fn key_paths(value: &serde_json::Value, prefix: &str, out: &mut BTreeSet<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, child) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                out.insert(path.clone());
                if !["drops", "errors_total"].contains(&key.as_str()) {
                    key_paths(child, &path, out);
                }
            }
        }
        serde_json::Value::Array(items) if prefix != "labels" => {
            for item in items {
                key_paths(item, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn snapshot_json_has_exactly_the_documented_keys() {
    let pod = PodIdentity {
        namespace: "ns".into(),
        pod: "p".into(),
        pod_uid: "u".into(),
        container_id: "c".into(),
        pod_interface: None,
        network: None,
    };
    let snapshot = Snapshot {
        node: "n".into(),
        labels: vec![("cluster".into(), "c".into())],
        interfaces: vec![Interface {
            ebpf: Some(EbpfInterface::default()),
            pod: Some(pod.clone()),
            ..Interface::default()
        }],
        namespace_drops: vec![
            NamespaceDrops {
                netns: Netns::Inode(4026532001),
                pod: Some(pod.clone()),
                ..NamespaceDrops::default()
            },
            NamespaceDrops::default(),
        ],
        namespace_tcp: vec![NamespaceTcp {
            netns: Netns::Inode(4026532001),
            pod: Some(pod.clone()),
            events: BTreeMap::from([((0, 1), 3)]),
        }],
        pod_netstat: vec![PodNetstat {
            pod: pod.clone(),
            netns: 4026532001,
            counters: NETSTAT_FIELDS.iter().map(|f| (f.key, 1)).collect(),
        }],
        conntrack: Some(Conntrack {
            entries: Some(1),
            entries_limit: Some(2),
            stat: CONNTRACK_STATS.iter().map(|s| (s.column, 3)).collect(),
        }),
        sources: SourceStatus {
            netlink_error: None,
            ebpf: EbpfStatus {
                attachments: vec![ProbeAttachment {
                    program: "kfree_skb".into(),
                    tracepoint: "skb:kfree_skb".into(),
                    flavour: Flavour::Btf,
                    attached: true,
                    error: None,
                }],
                programs: vec![ProgramStats::default()],
                ..EbpfStatus::default()
            },
            errors_total: BTreeMap::new(),
            netlink_timeouts_total: 0,
            netlink_skipped_attributes_total: 0,
            collections_total: 1,
            pod_identity: PodStatus::default(),
            pod_netstat: Default::default(),
            conntrack_error: None,
        },
        collection_seconds: 0.0,
    };
    let value = serde_json::to_value(&snapshot).unwrap();
    let mut keys = BTreeSet::new();
    key_paths(&value, "", &mut keys);
    let mut expected: BTreeSet<String> = KEYS.iter().map(|k| k.to_string()).collect();
    expected.extend(
        COUNTERS
            .iter()
            .map(|c| format!("interfaces[].counters.{c}")),
    );
    // A pod's counters are keyed as node_exporter names them.
    expected.extend(
        NETSTAT_FIELDS
            .iter()
            .map(|f| format!("pod_netstat[].counters.{}", f.key)),
    );
    expected.extend(
        CONNTRACK_STATS
            .iter()
            .map(|s| format!("conntrack.stat.{}", s.column)),
    );
    let missing: Vec<_> = expected.difference(&keys).collect();
    let unexpected: Vec<_> = keys.difference(&expected).collect();
    assert!(
        missing.is_empty() && unexpected.is_empty(),
        "missing {missing:?}, unexpected {unexpected:?}"
    );
}

/// A snapshot with nothing in it, for tests that fill in what they need.
pub(crate) fn empty_snapshot() -> Snapshot {
    Snapshot {
        node: "n".into(),
        labels: Vec::new(),
        interfaces: Vec::new(),
        namespace_drops: Vec::new(),
        namespace_tcp: Vec::new(),
        pod_netstat: Vec::new(),
        conntrack: None,
        sources: SourceStatus {
            netlink_error: None,
            ebpf: EbpfStatus::default(),
            errors_total: BTreeMap::new(),
            netlink_timeouts_total: 0,
            netlink_skipped_attributes_total: 0,
            collections_total: 0,
            pod_identity: PodStatus::default(),
            pod_netstat: Default::default(),
            conntrack_error: None,
        },
        collection_seconds: 0.0,
    }
}
