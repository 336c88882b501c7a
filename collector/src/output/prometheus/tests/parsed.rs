//! The exposition parsed back (Prometheus's parser through promtool, then
//! [`exposition`]'s strict reader): values and labels round-trip, escapes
//! are undone, the profiles differ only as intended.

use std::collections::{BTreeMap, BTreeSet};

use super::exposition::{parse_complete, MetricType};
use super::*;

/// `name{labels}` -> value for every sample the parser returned.
type Parsed = BTreeMap<(String, BTreeMap<String, String>), f64>;

fn parse(text: &str) -> (Parsed, BTreeMap<String, MetricType>) {
    let metrics = parse_complete(text);
    let mut samples = Parsed::new();
    let mut types = BTreeMap::new();
    for metric in metrics {
        let name = metric.name;
        for sample in metric.samples {
            let previous = samples.insert((name.clone(), sample.labels), sample.value);
            assert!(previous.is_none(), "{name}: a series twice");
        }
        types.insert(name, metric.data_type);
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
    let text = render_profile(&snapshot, &snapshots::http(), Profile::Detailed);
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
            assert_eq!(types[name], MetricType::Counter);
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
    assert_eq!(
        value("collector_http_web_config_reload_failures_total", &none),
        2.0
    );
    assert_eq!(value("collector_collections_total", &none), 9.0);
    assert_eq!(value("collector_scrape_duration_seconds", &none), 0.25);
    assert_eq!(
        types["collector_scrape_duration_seconds"],
        MetricType::Gauge
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
    let detailed_netstat = crate::model::NETSTAT_FIELDS
        .iter()
        .filter(|f| f.set == crate::model::NetstatSet::Detailed)
        .count();
    assert_eq!(
        detailed_types.len(),
        types.len() + DETAIL_COUNTERS.len() + 1 + detailed_netstat
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

/// Every label the collector writes beside the `--label`s is one `--label`
/// may not set: a repeated name makes Prometheus reject the whole scrape.
/// Read from what every family renders, so a new label cannot be missed.
#[test]
fn every_label_served_beside_the_user_labels_is_reserved() {
    let mut snapshot = snapshot();
    // A namespace no pod owns, so every namespace family renders.
    snapshot.namespace_drops.push(NamespaceDrops {
        netns: Netns::Inode(4026532002),
        ifindex: 3,
        drops: BTreeMap::from([("NO_SOCKET".to_string(), 1)]),
        ..NamespaceDrops::default()
    });
    let text = render_profile(&snapshot, &snapshots::http(), Profile::Detailed);
    let (samples, _) = parse(&text);
    let user: BTreeSet<&str> = snapshot.labels.iter().map(|(k, _)| k.as_str()).collect();
    let mut written = BTreeSet::new();
    for (_, labels) in samples.keys() {
        if !user.iter().all(|key| labels.contains_key(*key)) {
            continue;
        }
        written.extend(
            labels
                .keys()
                .filter(|k| !user.contains(k.as_str()))
                .cloned(),
        );
    }
    assert!(written.contains("netns"), "{written:?}");
    let unreserved: Vec<&String> = written
        .iter()
        .filter(|label| !crate::cli::RESERVED_LABELS.contains(&label.as_str()))
        .collect();
    assert!(unreserved.is_empty(), "--label could repeat {unreserved:?}");
}
