//! Golden bodies: hand-built snapshots rendered to the files under
//! `collector/tests/fixtures/golden/`. A difference in a byte of the
//! Prometheus body or a JSON key fails here; regenerate only for an
//! intended change, with `GOLDEN_BLESS=1 cargo test -p collector --test golden`.

#[path = "fixtures/snapshots.rs"]
mod snapshots;

use std::collections::BTreeMap;
use std::path::PathBuf;

use collector::model::{
    Conntrack, EbpfStatus, Flavour, HttpStats, MapMemory, NamespaceDrops, Netns, PodIdentity,
    PodNetstat, PodNetstatStatus, PodStatus, Probe, ProbeCounters, ProgramStats, Snapshot,
    CONNTRACK_STATS, NETSTAT_FIELDS,
};
use collector::output::prometheus::{render, render_profile, Profile};
use snapshots::{attachment, base, http, interface, source_status};

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
            tcp_map_full: 7,
        },
        traffic_map_entries: 3,
        drop_map_entries: 6,
        map_memory: MapMemory {
            traffic: 81920,
            drops: 163840,
            counters: 4096,
            first_drops: 40960,
            tcp: 163840,
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
    snapshot.pod_netstat = vec![PodNetstat {
        pod: snapshot.namespace_drops[0].pod.clone().unwrap(),
        netns: 4026532001,
        counters: NETSTAT_FIELDS
            .iter()
            .zip(1000..)
            .map(|(field, value)| (field.key, value))
            .collect(),
    }];
    snapshot.sources.pod_netstat = PodNetstatStatus {
        enabled: true,
        errors_total: BTreeMap::from([("malformed", 0), ("proc", 0), ("process", 2), ("read", 1)]),
    };
    snapshot.conntrack = Some(Conntrack {
        entries: Some(2001),
        entries_limit: Some(262144),
        stat: CONNTRACK_STATS
            .iter()
            .zip(3001..)
            .map(|(stat, value)| (stat.column, value))
            .collect(),
    });
    snapshot.sources.errors_total.insert("conntrack", 0);
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
    // The stat file did not parse; the sysctls did.
    snapshot.conntrack = Some(Conntrack {
        entries: Some(7),
        entries_limit: Some(65536),
        stat: BTreeMap::new(),
    });
    snapshot.sources.conntrack_error =
        Some("/proc/net/stat/nf_conntrack: line 2: 16 values under a header of 17 columns".into());
    snapshot.sources.errors_total.insert("conntrack", 4);
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

/// Each snapshot with the name of its golden files.
fn scenarios() -> [(&'static str, Snapshot); 3] {
    [
        ("full", full()),
        ("partial", partial()),
        ("netlink-only", netlink_only()),
    ]
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
    for (name, snapshot) in scenarios() {
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
    for (name, snapshot) in scenarios() {
        let text = serde_json::to_string_pretty(&snapshot).unwrap() + "\n";
        check(&format!("{name}.json"), &text);
    }
}
