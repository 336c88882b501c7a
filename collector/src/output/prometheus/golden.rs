//! Golden bodies: hand-built snapshots rendered by the code as it was
//! before the layout change (b3b6eda), kept under
//! `collector/tests/fixtures/golden/`. A difference in a byte of the
//! Prometheus body or a JSON key fails here; regenerate only for an
//! intended change, with `GOLDEN_BLESS=1 cargo test -p collector --lib golden`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::*;
use crate::model::{EbpfInterface, EbpfStatus, HttpStats, Interface, Snapshot, SourceStatus};
use crate::model::{Flavour, MapMemory, Probe, ProbeAttachment, ProbeCounters, ProgramStats};
use crate::model::{NamespaceDrops, Netns, PodIdentity, PodStatus};

fn link(ifindex: u32, name: &str, kind: Option<&str>, seed: u64) -> Interface {
    let mut link = Interface {
        ifindex,
        name: name.into(),
        admin_up: ifindex.is_multiple_of(2),
        lower_up: !ifindex.is_multiple_of(3),
        carrier: (ifindex != 5).then_some(!ifindex.is_multiple_of(3)),
        oper_state: ["up", "down", "lowerlayerdown", "dormant", "weird"][ifindex as usize % 5]
            .into(),
        mtu: 1500 + ifindex,
        kind: kind.map(String::from),
        master_ifindex: kind.map(|_| 3),
        mac_address: (ifindex != 5).then(|| format!("02:00:00:00:00:{ifindex:02x}")),
        carrier_changes: (ifindex != 5).then_some(3 * ifindex),
        link_netnsid: kind.map(|_| ifindex as i32 - 7),
        ..Interface::default()
    };
    // Every counter distinct, so a value under the wrong name shows.
    let c = &mut link.counters;
    let fields: [&mut u64; 24] = [
        &mut c.rx_packets,
        &mut c.tx_packets,
        &mut c.rx_bytes,
        &mut c.tx_bytes,
        &mut c.rx_errors,
        &mut c.tx_errors,
        &mut c.rx_dropped,
        &mut c.tx_dropped,
        &mut c.multicast,
        &mut c.collisions,
        &mut c.rx_length_errors,
        &mut c.rx_over_errors,
        &mut c.rx_crc_errors,
        &mut c.rx_frame_errors,
        &mut c.rx_fifo_errors,
        &mut c.rx_missed_errors,
        &mut c.tx_aborted_errors,
        &mut c.tx_carrier_errors,
        &mut c.tx_fifo_errors,
        &mut c.tx_heartbeat_errors,
        &mut c.tx_window_errors,
        &mut c.rx_compressed,
        &mut c.tx_compressed,
        &mut c.rx_nohandler,
    ];
    for (n, field) in fields.into_iter().enumerate() {
        *field = seed + n as u64;
    }
    c.rx_bytes = (1 << 60) + seed;
    link
}

fn interface(ifindex: u32, name: &str, kind: Option<&str>, seed: u64, ebpf: bool) -> Interface {
    Interface {
        master: kind.map(|_| "br0".to_string()),
        speed_bytes: kind.is_none().then_some(125_000_000),
        ebpf: ebpf.then(|| EbpfInterface {
            rx_packets: seed + 30,
            rx_bytes: seed + 31,
            tx_packets: seed + 32,
            tx_bytes: seed + 33,
            drops: BTreeMap::from([
                ("NO_SOCKET".to_string(), seed + 20),
                ("NETFILTER_DROP".to_string(), seed + 21),
            ]),
        }),
        pod: (kind == Some("veth")).then(|| PodIdentity {
            namespace: "team-a".into(),
            pod: "web-7d9f\"x".into(),
            pod_uid: "0f7c2a5e-7e0b-4b3a-9d1e-2f6c8a4b1d33".into(),
            container_id: "5c1f0a".into(),
            pod_interface: (ifindex != 9).then(|| "eth0".into()),
            network: (ifindex != 9).then(|| "azure".into()),
        }),
        ..link(ifindex, name, kind, seed)
    }
}

fn attachment(probe: Probe, attached: bool, flavour: Flavour) -> ProbeAttachment {
    let (category, event) = probe.tracepoint();
    ProbeAttachment {
        program: probe.program().into(),
        tracepoint: format!("{category}:{event}"),
        flavour,
        attached,
        error: (!attached).then(|| "tracepoint \"x\" missing".into()),
    }
}

fn source_status(ebpf: EbpfStatus, pod_identity: PodStatus) -> SourceStatus {
    SourceStatus {
        netlink_error: None,
        ebpf,
        errors_total: BTreeMap::from([("netlink", 1), ("ebpf", 0), ("pods", 2)]),
        netlink_timeouts_total: 1,
        netlink_skipped_attributes_total: 2,
        collections_total: 9,
        pod_identity,
    }
}

fn base(interfaces: Vec<Interface>, sources: SourceStatus) -> Snapshot {
    Snapshot {
        node: "node-\"1\"".into(),
        labels: vec![
            ("cluster".into(), "aks \"prod\"".into()),
            (
                "environment".into(),
                "line1\nline2 back\\slash\ttab é".into(),
            ),
        ],
        interfaces,
        namespace_drops: Vec::new(),
        sources,
        collection_seconds: 0.0125,
    }
}

/// Everything on: all probes attached, program statistics, pod identity.
fn full() -> Snapshot {
    let ebpf = EbpfStatus {
        enabled: true,
        disabled_reason: None,
        read_error: None,
        attachments: vec![
            attachment(Probe::Rx, true, Flavour::Btf),
            attachment(Probe::Tx, true, Flavour::Btf),
            attachment(Probe::Drop, true, Flavour::Classic),
        ],
        probe_counters: ProbeCounters {
            traffic_map_full: 4,
            drop_map_full: 5,
            kernel_read_errors: 6,
        },
        traffic_map_entries: 3,
        drop_map_entries: 6,
        map_memory: MapMemory {
            traffic: 81920,
            drops: 163840,
            counters: 4096,
        },
        programs: vec![
            ProgramStats {
                program: "netif_receive_skb".into(),
                flavour: Some(Flavour::Btf),
                run_time_ns: 1_234_567_890,
                run_cnt: 42,
                recursion_misses: Some(1),
            },
            ProgramStats {
                program: "kfree_skb".into(),
                flavour: None,
                run_time_ns: 5,
                run_cnt: 0,
                recursion_misses: None,
            },
        ],
        bpf_stats_enabled: Some(true),
    };
    let pods = PodStatus {
        enabled: true,
        up: true,
        error: None,
        attachments: 2,
        errors_total: BTreeMap::from([("malformed", 3), ("netns", 0)]),
    };
    let mut snapshot = base(
        vec![
            interface(2, "eth0", None, 1000, true),
            interface(7, "we\"ird\\if", Some("veth"), 2000, true),
            interface(9, "vethb", Some("veth"), 3000, true),
            interface(3, "br0", Some("bridge"), 4000, true),
        ],
        source_status(ebpf, pods),
    );
    snapshot.namespace_drops = namespace_drops();
    snapshot
}

/// One of each kind: a pod's device, a pod's device-less drops and an
/// unnamed device, the host's device-less drops, a namespace no pod owns,
/// and drops with no namespace.
fn namespace_drops() -> Vec<NamespaceDrops> {
    let pod = PodIdentity {
        namespace: "kube-system".into(),
        pod: "coredns-\"a\"".into(),
        pod_uid: "uid-1".into(),
        container_id: "sandbox-1".into(),
        pod_interface: None,
        network: None,
    };
    let drops = |netns, pod: Option<&PodIdentity>, ifindex, interface: Option<&str>, n: u64| {
        NamespaceDrops {
            netns,
            pod: pod.cloned(),
            ifindex,
            interface: interface.map(String::from),
            drops: BTreeMap::from([
                ("SOCKET_RCVBUFF".to_string(), n),
                ("NETFILTER_DROP".to_string(), n + 1),
            ]),
        }
    };
    vec![
        drops(Netns::Inode(4026532001), Some(&pod), 0, None, 10),
        drops(Netns::Inode(4026532001), Some(&pod), 5, None, 20),
        drops(Netns::Inode(4026532001), Some(&pod), 2, Some("eth0"), 30),
        drops(Netns::Host, None, 0, None, 40),
        drops(Netns::Inode(4026532099), None, 1, Some("lo"), 50),
        drops(Netns::Unknown, None, 0, None, 60),
    ]
}

/// Some probes missing, no program statistics, pod identity failing.
fn partial() -> Snapshot {
    let ebpf = EbpfStatus {
        enabled: true,
        disabled_reason: None,
        read_error: Some("reading map traffic: EPERM".into()),
        attachments: vec![
            attachment(Probe::Rx, true, Flavour::Classic),
            attachment(Probe::Tx, false, Flavour::Classic),
            attachment(Probe::Drop, false, Flavour::Btf),
        ],
        bpf_stats_enabled: Some(false),
        ..EbpfStatus::default()
    };
    let pods = PodStatus {
        enabled: true,
        up: false,
        error: Some("reading /var/lib/cni/results: ENOENT".into()),
        attachments: 0,
        errors_total: BTreeMap::from([("directory", 1)]),
    };
    let mut snapshot = base(
        vec![
            interface(4, "eth1", None, 10, true),
            interface(5, "lo", None, 20, false),
        ],
        source_status(ebpf, pods),
    );
    snapshot.labels.clear();
    snapshot
}

/// eBPF off, pod identity not built, the netlink dump failed.
fn netlink_only() -> Snapshot {
    let ebpf = EbpfStatus {
        enabled: false,
        disabled_reason: Some("disabled by --no-ebpf".into()),
        ..EbpfStatus::default()
    };
    let mut sources = source_status(ebpf, PodStatus::default());
    sources.netlink_error = Some("netlink dump timed out after 5s".into());
    base(vec![interface(6, "ens5", None, 50, false)], sources)
}

fn http() -> HttpStats {
    HttpStats {
        connections_rejected: 3,
        plain_responses: 4,
        gzip_responses: 5,
        stalled_responses_cut: 2,
        evicted_responses_cut: 1,
        retained_bodies: 1,
    }
}

fn check(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/golden")
        .join(name);
    if std::env::var_os("GOLDEN_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if expected != actual {
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(e, a)| e != a)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "{name} differs from the golden file at line {}: expected {:?}, got {:?}",
            line + 1,
            expected.lines().nth(line),
            actual.lines().nth(line)
        );
    }
}

#[test]
fn prometheus_bodies_match_the_golden_files_byte_for_byte() {
    for (name, snapshot) in [
        ("full", full()),
        ("partial", partial()),
        ("netlink-only", netlink_only()),
    ] {
        for (profile, suffix) in [
            (Profile::Default, "default"),
            (Profile::Detailed, "detailed"),
        ] {
            let text = render_profile(&snapshot, &http(), profile);
            check(&format!("{name}-{suffix}.prom"), &text);
        }
    }
    check(
        "snapshot-zero-http.prom",
        &render(&full(), &HttpStats::default()),
    );
}

#[test]
fn snapshot_json_matches_the_golden_files_keys_and_values() {
    for (name, snapshot) in [
        ("full", full()),
        ("partial", partial()),
        ("netlink-only", netlink_only()),
    ] {
        let text = serde_json::to_string_pretty(&snapshot).unwrap() + "\n";
        check(&format!("{name}.json"), &text);
    }
}
