//! The exposition parsed back with a text-format parser: escaping,
//! HELP/TYPE order, values and labels, the profiles.

use std::collections::{BTreeMap, BTreeSet};

use openmetrics_parser::prometheus::parse_prometheus;
use openmetrics_parser::{MetricNumber, PrometheusType, PrometheusValue};

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

/// `name{labels}` -> value for every sample the parser returned.
type Parsed = BTreeMap<(String, BTreeMap<String, String>), f64>;

fn parse(text: &str) -> (Parsed, BTreeMap<String, PrometheusType>) {
    let exposition =
        parse_prometheus(text).unwrap_or_else(|e| panic!("not valid text format: {e:?}\n{text}"));
    let mut samples = Parsed::new();
    let mut types = BTreeMap::new();
    for (name, family) in &exposition.families {
        types.insert(name.clone(), family.family_type.clone());
        for sample in family.iter_samples() {
            let labels = sample
                .get_labelset()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let value = match &sample.value {
                PrometheusValue::Counter(c) => c.value,
                PrometheusValue::Gauge(v) | PrometheusValue::Unknown(v) => *v,
                other => panic!("{name}: unexpected {other:?}"),
            };
            let value = match value {
                MetricNumber::Int(i) => i as f64,
                MetricNumber::Float(f) => f,
            };
            let previous = samples.insert((name.clone(), labels), value);
            assert!(previous.is_none(), "{name}: a series twice");
        }
    }
    (samples, types)
}

fn identity(snapshot: &Snapshot, interface: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        ("interface".to_string(), interface.to_string()),
        ("host".to_string(), snapshot.node.clone()),
        ("hostname".to_string(), snapshot.node.clone()),
    ]);
    labels.extend(snapshot.labels.iter().cloned());
    labels
}

#[test]
fn render_parses_back_with_a_prometheus_parser_and_values_and_labels_round_trip() {
    let snapshot = snapshot();
    let text = render_profile(
        &snapshot,
        &HttpStats {
            connections_rejected: 3,
            plain_responses: 4,
            gzip_responses: 5,
            stalled_responses_cut: 2,
            evicted_responses_cut: 1,
            retained_bodies: 1,
        },
        Profile::Detailed,
    );
    let (samples, types) = parse(&text);
    let sample_lines = text.lines().filter(|l| !l.starts_with('#')).count();
    assert_eq!(samples.len(), sample_lines, "the parser kept every sample");

    let value = |name: &str, labels: &BTreeMap<String, String>| {
        samples
            .get(&(name.to_string(), labels.clone()))
            .copied()
            .unwrap_or_else(|| panic!("no {name}{labels:?} in\n{text}"))
    };
    for interface in &snapshot.interfaces {
        let link = interface;
        let base = identity(&snapshot, &link.name);
        let mut with_state = base.clone();
        let state = if link.admin_up { "up" } else { "down" };
        with_state.insert("state".into(), state.into());
        for (name, _, counter) in SEED_COUNTERS {
            // Exact below 2^53; rx_bytes (2^60 + n) as the nearest f64.
            assert_eq!(
                value(name, &with_state),
                counter(&link.counters) as f64,
                "{name}"
            );
            assert_eq!(types[name], PrometheusType::Counter);
        }
        assert_eq!(
            value("network_interface_stats_mtu", &with_state),
            f64::from(link.mtu)
        );
        for (name, _, counter) in DETAIL_COUNTERS {
            assert_eq!(value(name, &base), counter(&link.counters) as f64, "{name}");
        }
        assert_eq!(
            value("network_interface_up", &base),
            f64::from(u8::from(link.admin_up))
        );
        assert_eq!(value("network_interface_oper_state", &base), 1.0);
        assert_eq!(
            value("network_interface_carrier_changes_total", &base),
            f64::from(link.carrier_changes.unwrap())
        );
        let mut info = base.clone();
        info.extend([
            ("ifindex".to_string(), link.ifindex.to_string()),
            ("kind".to_string(), link.kind.clone().unwrap_or_default()),
            (
                "master".to_string(),
                interface.master.clone().unwrap_or_default(),
            ),
            ("address".to_string(), link.mac_address.clone().unwrap()),
            ("operstate".to_string(), link.oper_state.clone()),
        ]);
        assert_eq!(value("network_interface_info", &info), 1.0);
        let ebpf = interface.ebpf.as_ref().unwrap();
        assert_eq!(
            value("network_interface_ebpf_rx_packets_total", &base),
            ebpf.rx_packets as f64
        );
        assert_eq!(
            value("network_interface_ebpf_tx_bytes_total", &base),
            ebpf.tx_bytes as f64
        );
        for (reason, packets) in &ebpf.drops {
            let mut labels = base.clone();
            labels.insert("reason".into(), reason.clone());
            assert_eq!(
                value("network_interface_drops_total", &labels),
                *packets as f64
            );
        }
    }
    // Only the NIC reports a speed.
    let speeds: Vec<_> = samples
        .keys()
        .filter(|(name, _)| name == "network_interface_speed_bytes")
        .map(|(_, labels)| labels["interface"].as_str())
        .collect();
    assert_eq!(speeds, ["eth0"]);
    // Only the veth is a pod's, under its pod's labels.
    let mut pod_info = identity(&snapshot, ODD_INTERFACE);
    pod_info.extend([
        ("namespace".to_string(), "team-a".to_string()),
        ("pod".to_string(), "web-7d9f\"x".to_string()),
        (
            "pod_uid".to_string(),
            "0f7c2a5e-7e0b-4b3a-9d1e-2f6c8a4b1d33".to_string(),
        ),
    ]);
    assert_eq!(value("network_interface_pod_info", &pod_info), 1.0);
    let pods = samples
        .keys()
        .filter(|(name, _)| name == "network_interface_pod_info")
        .count();
    assert_eq!(pods, 1, "the NIC has no pod");
    assert_eq!(value("collector_pod_identity_up", &BTreeMap::new()), 1.0);
    let reason = |r: &str| BTreeMap::from([("reason".to_string(), r.to_string())]);
    assert_eq!(
        value("collector_pod_identity_errors_total", &reason("malformed")),
        3.0
    );

    let none = BTreeMap::new();
    assert_eq!(
        value("collector_http_connections_rejected_total", &none),
        3.0
    );
    assert_eq!(value("collector_collections_total", &none), 9.0);
    assert_eq!(value("collector_scrape_duration_seconds", &none), 0.25);
    assert_eq!(
        types["collector_scrape_duration_seconds"],
        PrometheusType::Gauge
    );
    let source = |s: &str| BTreeMap::from([("source".to_string(), s.to_string())]);
    assert_eq!(
        value("collector_scrape_errors_total", &source("netlink")),
        1.0
    );
    let map = |m: &str| BTreeMap::from([("map".to_string(), m.to_string())]);
    assert_eq!(value("collector_ebpf_map_full_total", &map("drops")), 5.0);
    assert_eq!(value("collector_ebpf_map_entries", &map("traffic")), 2.0);
    let why = |w: &str| BTreeMap::from([("why".to_string(), w.to_string())]);
    assert_eq!(
        value("collector_http_responses_cut_total", &why("stalled")),
        2.0
    );
    assert_eq!(
        value("collector_http_responses_cut_total", &why("evicted")),
        1.0
    );
    assert_eq!(value("collector_netlink_dump_timeouts_total", &none), 1.0);
    assert_eq!(
        value("collector_netlink_attributes_skipped_total", &none),
        2.0
    );
}

#[test]
fn the_default_profile_leaves_out_the_detail_counters_and_serves_no_family_twice() {
    let text = render(&snapshot(), &HttpStats::default());
    let (samples, types) = parse(&text);
    for (name, _, _) in DETAIL_COUNTERS {
        assert!(!types.contains_key(name), "{name} in the default profile");
    }
    assert!(!types.contains_key("network_interface_carrier_changes_total"));
    // Counted per interface, every family is one series (drops aside).
    let eth0: Vec<&String> = samples
        .keys()
        .filter(|(_, labels)| labels.get("interface").map(String::as_str) == Some("eth0"))
        .map(|(name, _)| name)
        .filter(|name| *name != "network_interface_drops_total")
        .collect();
    let unique: BTreeSet<&String> = eth0.iter().copied().collect();
    assert_eq!(unique.len(), eth0.len(), "{eth0:?}");
    let address_of = |interface: &str| {
        samples
            .keys()
            .find(|(name, labels)| {
                name == "network_interface_info" && labels["interface"] == interface
            })
            .map(|(_, labels)| labels["address"].clone())
            .unwrap()
    };
    assert!(!address_of("eth0").is_empty(), "a NIC keeps its MAC");
    assert_eq!(
        address_of(ODD_INTERFACE),
        "",
        "a veth's random MAC is left out"
    );
    let detailed = render_profile(&snapshot(), &HttpStats::default(), Profile::Detailed);
    let (_, detailed_types) = parse(&detailed);
    assert_eq!(
        detailed_types.len(),
        types.len() + DETAIL_COUNTERS.len() + 1
    );
}

#[test]
fn every_escaped_character_round_trips_through_the_parser() {
    let snapshot = snapshot();
    let (samples, _) = parse(&render(&snapshot, &HttpStats::default()));
    let labels_of_odd: Vec<&BTreeMap<String, String>> = samples
        .keys()
        .filter(|(name, labels)| {
            name == "network_interface_up" && labels["interface"] == ODD_INTERFACE
        })
        .map(|(_, labels)| labels)
        .collect();
    assert_eq!(
        labels_of_odd.len(),
        1,
        "the odd interface's series, unescaped"
    );
    assert_eq!(labels_of_odd[0]["environment"], ODD_LABEL);
    assert_eq!(labels_of_odd[0]["cluster"], "aks \"prod\"");
}
