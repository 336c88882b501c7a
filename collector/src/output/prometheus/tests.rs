//! The exposition of a snapshot exercising every family: escaping and the
//! HELP/TYPE structure here, read back by a text-format parser in [`parsed`].

use std::collections::{BTreeMap, BTreeSet};

mod parsed;

use super::*;
use crate::model::{Attachment, Probe, ProbeCounters};
use crate::model::{EbpfInterface, EbpfStatus, HttpStats, Interface, Snapshot, SourceStatus};
use crate::model::{PodIdentity, PodStatus};

/// An interface name with every character the text format escapes
/// (Linux allows quotes and backslashes in names), and a label value
/// with those plus other control characters and non-ASCII text.
const ODD_INTERFACE: &str = "we\"ird\\if";
const ODD_LABEL: &str = "line1\nline2 \"q\" back\\slash tab\tsoh\u{1}del\u{7f} é";

fn interface(ifindex: u32, name: &str, kind: Option<&str>, seed: u64) -> Interface {
    let mut link = Interface {
        ifindex,
        name: name.into(),
        admin_up: ifindex.is_multiple_of(2),
        lower_up: true,
        carrier: Some(true),
        oper_state: "up".into(),
        mtu: 1500 + ifindex,
        kind: kind.map(String::from),
        master_ifindex: None,
        mac_address: Some(format!("02:00:00:00:00:{ifindex:02x}")),
        carrier_changes: Some(3 * ifindex),
        ..Interface::default()
    };
    // Distinct values per counter and interface, so a value rendered
    // under the wrong name or interface is caught; one beyond 2^53
    // checks that large counters survive as integers.
    let c = &mut link.counters;
    c.rx_bytes = (1 << 60) + seed;
    c.rx_packets = seed + 1;
    c.rx_errors = seed + 2;
    c.rx_dropped = seed + 3;
    c.rx_missed_errors = seed + 4;
    c.multicast = seed + 5;
    c.tx_bytes = seed + 6;
    c.tx_packets = seed + 7;
    c.tx_errors = seed + 8;
    c.tx_dropped = seed + 9;
    c.tx_carrier_errors = seed + 10;
    c.collisions = seed + 11;
    c.rx_crc_errors = seed + 12;
    c.tx_window_errors = seed + 13;
    let drops = BTreeMap::from([
        ("NO_SOCKET".to_string(), seed + 20),
        ("NETFILTER_DROP".to_string(), seed + 21),
    ]);
    Interface {
        master: kind.map(|_| "br0".to_string()),
        speed_bytes: kind.is_none().then_some(125_000_000),
        ebpf: Some(EbpfInterface {
            rx_packets: seed + 30,
            rx_bytes: seed + 31,
            tx_packets: seed + 32,
            tx_bytes: seed + 33,
            drops,
        }),
        // The veth is a pod's; the NIC is the node's own.
        pod: kind.map(|_| PodIdentity {
            namespace: "team-a".into(),
            pod: "web-7d9f\"x".into(),
            pod_uid: "0f7c2a5e-7e0b-4b3a-9d1e-2f6c8a4b1d33".into(),
            container_id: "5c1f0a".into(),
            pod_interface: Some("eth0".into()),
            network: Some("azure".into()),
        }),
        ..link
    }
}

/// A snapshot exercising every family: eBPF on with all probes
/// attached, a physical NIC and a veth with an awkward name.
fn snapshot() -> Snapshot {
    let attachments = [Probe::Rx, Probe::Tx, Probe::Drop]
        .into_iter()
        .map(|probe| {
            let (category, event) = probe.tracepoint();
            Attachment {
                program: probe.program().into(),
                tracepoint: format!("{category}:{event}"),
                attached: true,
                error: None,
                flavour: crate::model::Flavour::Btf,
            }
        })
        .collect();
    Snapshot {
        node: "node-1".into(),
        labels: vec![
            ("cluster".into(), "aks \"prod\"".into()),
            ("environment".into(), ODD_LABEL.into()),
        ],
        interfaces: vec![
            interface(2, "eth0", None, 1000),
            interface(7, ODD_INTERFACE, Some("veth"), 2000),
        ],
        sources: SourceStatus {
            netlink_error: None,
            ebpf: EbpfStatus {
                enabled: true,
                attachments,
                probe_counters: ProbeCounters {
                    traffic_map_full: 4,
                    drop_map_full: 5,
                    kernel_read_errors: 6,
                    drops_without_device: 7,
                },
                traffic_map_entries: 2,
                drop_map_entries: 4,
                ..EbpfStatus::default()
            },
            errors_total: BTreeMap::from([("netlink", 1), ("ebpf", 0)]),
            netlink_timeouts_total: 1,
            netlink_skipped_attributes_total: 2,
            collections_total: 9,
            pod_identity: PodStatus {
                enabled: true,
                up: true,
                errors_total: BTreeMap::from([("malformed", 3), ("netns", 0)]),
                ..PodStatus::default()
            },
        },
        collection_seconds: 0.25,
    }
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
    let text = render(
        &snapshot(),
        &HttpStats {
            connections_rejected: 3,
            plain_responses: 4,
            gzip_responses: 5,
            stalled_responses_cut: 2,
            evicted_responses_cut: 1,
            retained_bodies: 1,
        },
    );
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
            assert!(["counter", "gauge"].contains(&kind), "{name}: {kind}");
            if kind == "counter" && !name.starts_with("network_interface_stats_") {
                assert!(name.ends_with("_total"), "counter {name} without _total");
            }
            current = Some(name);
            i += 2;
            continue;
        }
        assert!(!line.starts_with('#'), "stray comment line: {line}");
        assert!(!line.is_empty(), "empty line {i}");
        let name = line
            .split(['{', ' '])
            .next()
            .expect("a sample line starts with its name");
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
