//! The exposition of a snapshot exercising every family: escaping and the
//! HELP/TYPE structure here, read back by a text-format parser in [`parsed`].

use std::collections::{BTreeMap, BTreeSet};

mod exposition;
mod limits;
mod parsed;
#[path = "../../../tests/fixtures/snapshots.rs"]
mod snapshots;

use super::*;
use crate::model::{Conntrack, PodNetstat, PodNetstatStatus, CONNTRACK_STATS, NETSTAT_FIELDS};
use crate::model::{EbpfStatus, Flavour, HttpStats, Interface, Snapshot};
use crate::model::{
    NamespaceDrops, NamespaceTcp, Netns, PodIdentity, PodStatus, Probe, ProbeCounters,
};
use collector_common::{
    Outcome, TcpEvent, RESET_RECEIVED, RESET_SENT, RETRANSMIT_DATA, RETRANSMIT_SYN,
    RETRANSMIT_SYNACK, RTT_BUCKETS, SIDE_ACCEPT, SIDE_CONNECT,
};

/// An interface name with every character the text format escapes
/// (Linux allows quotes and backslashes in names), and a label value
/// with those plus other control characters and non-ASCII text.
const ODD_INTERFACE: &str = "we\"ird\\if";
const ODD_LABEL: &str = "line1\nline2 \"q\" back\\slash tab\tsoh\u{1}del\u{7f} é";

/// The shared builder's interface, up and with a MAC; one counter beyond
/// 2^53 checks that large counters survive as integers.
fn interface(ifindex: u32, name: &str, kind: Option<&str>, seed: u64) -> Interface {
    Interface {
        oper_state: "up".into(),
        master_ifindex: None,
        link_netnsid: None,
        ..snapshots::interface(ifindex, name, kind, seed, true)
    }
}

/// A snapshot exercising every family: eBPF on with all probes
/// attached, a physical NIC and a veth with an awkward name.
fn snapshot() -> Snapshot {
    let ebpf = EbpfStatus {
        enabled: true,
        attachments: Probe::ALL
            .into_iter()
            .map(|probe| snapshots::attachment(probe, true, Flavour::Btf))
            .collect(),
        probe_counters: ProbeCounters {
            traffic_map_full: 4,
            drop_map_full: 5,
            kernel_read_errors: 6,
            tcp_map_full: 7,
        },
        traffic_map_entries: 2,
        drop_map_entries: 4,
        ..EbpfStatus::default()
    };
    let pods = PodStatus {
        enabled: true,
        up: true,
        errors_total: BTreeMap::from([("malformed", 3), ("netns", 0)]),
        ..PodStatus::default()
    };
    let interfaces = vec![
        interface(2, "eth0", None, 1000),
        interface(7, ODD_INTERFACE, Some("veth"), 2000),
    ];
    let mut snapshot = snapshots::base(interfaces, snapshots::source_status(ebpf, pods));
    snapshot.node = "node-1".into();
    snapshot.labels = vec![
        ("cluster".into(), "aks \"prod\"".into()),
        ("environment".into(), ODD_LABEL.into()),
    ];
    snapshot.namespace_drops = vec![
        NamespaceDrops {
            netns: Netns::Inode(4026532001),
            pod: Some(PodIdentity {
                namespace: "team-a".into(),
                pod: "web-7d9f\"x".into(),
                pod_uid: "0f7c2a5e".into(),
                container_id: "5c1f0a".into(),
                pod_interface: None,
                network: None,
            }),
            ifindex: 2,
            interface: Some("eth0".into()),
            drops: BTreeMap::from([("SOCKET_RCVBUFF".to_string(), 3)]),
        },
        NamespaceDrops {
            netns: Netns::Host,
            drops: BTreeMap::from([("NO_SOCKET".to_string(), 4)]),
            ..NamespaceDrops::default()
        },
    ];
    // Every TCP event kind in a pod's namespace, a few in the host's.
    let key = |event: TcpEvent, detail: u16| (event as u16, detail);
    snapshot.namespace_tcp = vec![
        NamespaceTcp {
            netns: Netns::Inode(4026532001),
            pod: snapshot.namespace_drops[0].pod.clone(),
            events: BTreeMap::from([
                (key(TcpEvent::Connect, Outcome::Established as u16), 40),
                (key(TcpEvent::Connect, Outcome::Refused as u16), 41),
                (key(TcpEvent::Connect, Outcome::TimedOut as u16), 42),
                (key(TcpEvent::Accept, Outcome::Established as u16), 43),
                (key(TcpEvent::Retransmit, RETRANSMIT_DATA), 44),
                (key(TcpEvent::Retransmit, RETRANSMIT_SYN), 45),
                (key(TcpEvent::Retransmit, RETRANSMIT_SYNACK), 46),
                (key(TcpEvent::Reset, RESET_SENT), 47),
                (key(TcpEvent::Reset, RESET_RECEIVED), 48),
                (key(TcpEvent::Abort, Outcome::Reset as u16), 49),
                (key(TcpEvent::RttBucket, 0), 30),
                (key(TcpEvent::RttBucket, 3), 10),
                (key(TcpEvent::RttSum, SIDE_CONNECT), 123_456),
                (key(TcpEvent::RttBucket, RTT_BUCKETS + 6), 2),
                (key(TcpEvent::RttSum, SIDE_ACCEPT), 1_500_000),
            ]),
        },
        NamespaceTcp {
            netns: Netns::Host,
            pod: None,
            events: BTreeMap::from([
                (key(TcpEvent::Connect, Outcome::Refused as u16), 1),
                (key(TcpEvent::Retransmit, RETRANSMIT_DATA), 2),
                (key(TcpEvent::Reset, RESET_SENT), 5),
                (key(TcpEvent::Abort, Outcome::TimedOut as u16), 3),
                (key(TcpEvent::RttBucket, 1), 4),
                (key(TcpEvent::RttSum, SIDE_CONNECT), 3_200),
            ]),
        },
    ];
    // One pod's own counters, every field with a value of its own.
    snapshot.pod_netstat = vec![PodNetstat {
        pod: snapshot.namespace_drops[0].pod.clone().unwrap(),
        netns: 4026532001,
        counters: NETSTAT_FIELDS
            .iter()
            .zip(100..)
            .map(|(field, value)| (field.key, value))
            .collect(),
    }];
    snapshot.sources.pod_netstat = PodNetstatStatus {
        enabled: true,
        errors_total: BTreeMap::from([("process", 1), ("read", 0)]),
    };
    snapshot.conntrack = Some(Conntrack {
        entries: Some(12),
        entries_limit: Some(262144),
        stat: CONNTRACK_STATS
            .iter()
            .zip(20..)
            .map(|(stat, value)| (stat.column, value))
            .collect(),
    });
    snapshot.collection_seconds = 0.25;
    snapshot
}

#[test]
fn each_conntrack_stat_family_is_named_after_its_column() {
    for stat in &CONNTRACK_STATS {
        let name = format!("network_conntrack_stat_{}_total", stat.column);
        let text = render(&snapshot(), &HttpStats::default());
        assert!(
            text.contains(&format!("# HELP {name} {}\n", stat.help)),
            "{name}"
        );
    }
}

#[test]
fn conntrack_families_are_served_by_what_was_read() {
    let mut snapshot = snapshot();
    let text = render(&snapshot, &HttpStats::default());
    for (name, value) in [
        ("network_conntrack_entries", 12),
        ("network_conntrack_entries_limit", 262144),
        ("network_conntrack_stat_insert_failed_total", 20),
        ("network_conntrack_stat_drop_total", 21),
        ("network_conntrack_stat_early_drop_total", 22),
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{")))
            .unwrap_or_else(|| panic!("{name} not served:\n{text}"));
        assert!(line.starts_with(&format!("{name}{{host=")), "{line}");
        assert!(line.ends_with(&format!("}} {value}")), "{line}");
    }
    // A stat file that did not parse: its families are left out, the
    // sysctls still served, and the source is down.
    snapshot.conntrack.as_mut().unwrap().stat.clear();
    snapshot.sources.conntrack_error = Some("malformed".into());
    let text = render(&snapshot, &HttpStats::default());
    assert!(!text.contains("network_conntrack_stat_"), "{text}");
    assert!(text.contains("network_conntrack_entries{"));
    assert!(text.contains("collector_source_up{source=\"conntrack\"} 0\n"));
    // No conntrack in the kernel: no family, no source.
    snapshot.conntrack = None;
    snapshot.sources.conntrack_error = None;
    let text = render(&snapshot, &HttpStats::default());
    assert!(!text.contains("network_conntrack_"), "{text}");
    assert!(!text.contains("source=\"conntrack\""), "{text}");
}

#[test]
fn label_values_escape_backslash_quote_and_newline() {
    assert_eq!(escape(r#"a\b"c"#), r#"a\\b\"c"#);
    assert_eq!(escape("two\nlines"), r"two\nlines");
    assert_eq!(escape(r#"\""#), r#"\\\""#, "each character escaped once");
    assert!(
        matches!(escape("eth0"), std::borrow::Cow::Borrowed("eth0")),
        "plain values are not copied"
    );
    // Through render: the interface label, the node and --label values.
    let text = render(&snapshot(), &HttpStats::default());
    assert!(text.contains(r#"interface="we\"ird\\if""#), "{text}");
    assert!(text.contains(r#"cluster="aks \"prod\"""#));
    assert!(text.contains(r#"environment="line1\nline2 \"q\" back\\slash"#));
}

#[test]
fn other_control_characters_are_written_as_they_are() {
    // Format 0.0.4 has exactly three escapes; any other is an error to
    // Prometheus ("invalid escape sequence '\t'" from promtool), while
    // raw control characters other than the newline are valid label
    // value text. So they must pass unchanged, and cannot break a line.
    let controls: String = (0u8..0x20)
        .chain([0x7f])
        .map(char::from)
        .filter(|c| *c != '\n')
        .collect();
    assert_eq!(escape(&controls), controls.as_str());
    assert_eq!(escape("\r\n"), "\r\\n");
    let text = render(&snapshot(), &HttpStats::default());
    for line in text.lines() {
        assert!(
            line.starts_with('#') || line.rsplit_once(' ').is_some(),
            "a label value split a sample across lines: {line:?}"
        );
    }
    assert!(text.contains("tab\tsoh\u{1}del\u{7f} é\""));
}

#[test]
fn every_family_has_help_then_type_once_before_its_samples() {
    let text = render(&snapshot(), &snapshots::http());
    assert!(text.ends_with('\n'), "the last line is terminated");
    let lines: Vec<&str> = text.lines().collect();
    let mut declared = BTreeSet::new();
    let mut current: Option<&str> = None;
    let mut samples: BTreeMap<&str, usize> = BTreeMap::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP has a text");
            assert!(!help.trim().is_empty(), "{name} has an empty HELP");
            assert!(declared.insert(name), "{name} declared twice");
            let kind = lines
                .get(i + 1)
                .and_then(|l| l.strip_prefix(&format!("# TYPE {name} ")))
                .unwrap_or_else(|| panic!("HELP of {name} not followed by its TYPE"));
            assert!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "{name}: {kind}"
            );
            if kind == "counter" && !name.starts_with("network_interface_stats_") {
                assert!(name.ends_with("_total"), "counter {name} without _total");
            }
            current = Some(name);
            i += 2;
            continue;
        }
        assert!(!line.starts_with('#'), "stray comment line: {line}");
        assert!(!line.is_empty(), "empty line {i}");
        let sample_name = line
            .split(['{', ' '])
            .next()
            .expect("a sample line starts with its name");
        // A histogram's samples carry its name and a suffix.
        let name = ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|suffix| sample_name.strip_suffix(suffix))
            .find(|base| current == Some(*base))
            .unwrap_or(sample_name);
        assert!(
            declared.contains(name),
            "sample of {name} before or without its HELP/TYPE: {line}"
        );
        assert_eq!(
            Some(name),
            current,
            "sample of {name} outside its family's block: {line}"
        );
        *samples.entry(name).or_default() += 1;
        i += 1;
    }
    // Both interfaces are in every per-interface family (only the NIC
    // has a speed), so an output that lost samples cannot pass.
    for name in &declared {
        let count = samples.get(name).copied().unwrap_or(0);
        let least = match *name {
            "network_interface_speed_bytes" | "network_interface_pod_info" => 1,
            n if n.starts_with("network_interface_") => 2,
            _ => 1,
        };
        assert!(count >= least, "{name}: {count} samples");
    }
    for name in [
        "network_interface_stats_rx_bytes",
        "collector_http_connections_rejected_total",
    ] {
        assert!(declared.contains(name), "{name} missing");
    }
}

#[test]
fn rendered_in_pieces_is_the_same_text_family_by_family() {
    for profile in [Profile::Default, Profile::Detailed] {
        let snapshot = snapshot();
        let http = HttpStats::default();
        let mut pieces = Vec::new();
        render_pieces(&snapshot, &http, profile, &mut |piece| {
            pieces.push(piece.to_string())
        });
        assert_eq!(pieces.concat(), render_profile(&snapshot, &http, profile));
        assert!(pieces.len() > 10, "{} pieces", pieces.len());
        assert!(pieces.iter().all(|p| p.starts_with("# HELP ")));
    }
}

/// `collector_source_up` lines of `snapshot`'s exposition, as `source value`.
fn sources_up(snapshot: &Snapshot) -> Vec<String> {
    render(snapshot, &HttpStats::default())
        .lines()
        .filter_map(|line| line.strip_prefix("collector_source_up{source=\""))
        .map(|rest| rest.replace("\"} ", " "))
        .collect()
}

#[test]
fn source_up_is_one_per_source_that_is_on_and_zero_for_the_one_that_failed() {
    assert_eq!(
        sources_up(&snapshot()),
        ["netlink 1", "ebpf 1", "pods 1", "conntrack 1"]
    );

    let mut failed = snapshot();
    failed.sources.netlink_error = Some("dump timed out".into());
    failed.sources.ebpf.read_error = Some("map read failed".into());
    failed.sources.pod_identity.up = false;
    failed.sources.conntrack_error = Some("malformed".into());
    assert_eq!(
        sources_up(&failed),
        ["netlink 0", "ebpf 0", "pods 0", "conntrack 0"]
    );

    // Sources that are off serve nothing rather than a 0 that would page:
    // eBPF not loaded has collector_ebpf_enabled 0 and its own alert.
    let mut off = snapshot();
    off.sources.ebpf.enabled = false;
    off.sources.pod_identity.enabled = false;
    // No conntrack in the kernel: nothing to be up.
    off.conntrack = None;
    assert_eq!(sources_up(&off), ["netlink 1"]);
}
