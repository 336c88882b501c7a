//! The seed-compatible metric set, checked against iproute2 and promtool in
//! a namespace the test builds, and the HTTP and CLI surface around it.

mod common;
#[path = "netlink_metrics/serving.rs"]
mod serving;

use std::process::Command;

use common::*;

/// Seed metric -> (`ip -s -s -j link` direction, field).
const SEED_COUNTERS: [(&str, &str, &str); 12] = [
    ("network_interface_stats_rx_bytes", "rx", "bytes"),
    ("network_interface_stats_rx_packets", "rx", "packets"),
    ("network_interface_stats_rx_errors", "rx", "errors"),
    ("network_interface_stats_rx_dropped", "rx", "dropped"),
    ("network_interface_stats_rx_missed", "rx", "missed_errors"),
    ("network_interface_stats_rx_multicast", "rx", "multicast"),
    ("network_interface_stats_tx_bytes", "tx", "bytes"),
    ("network_interface_stats_tx_packets", "tx", "packets"),
    ("network_interface_stats_tx_errors", "tx", "errors"),
    ("network_interface_stats_tx_dropped", "tx", "dropped"),
    ("network_interface_stats_tx_carrier", "tx", "carrier_errors"),
    ("network_interface_stats_tx_collisions", "tx", "collisions"),
];

/// A namespace with the device kinds an AKS node has: a veth to a peer
/// namespace carrying traffic, a bridge with a veth port, and a veth pair left
/// down with a jumbo MTU.
struct Node {
    ns: Netns,
    _peer: Netns,
}

fn node_with_traffic(tag: &str) -> Node {
    let ns = Netns::new(tag);
    let peer = Netns::new(&format!("{tag}p"));
    let pair = VethPair::new(&ns, "eth0", &peer, "pod0", 10);
    ns.ip(&["link", "add", "br0", "type", "bridge"]);
    ns.ip(&[
        "link", "add", "vbr0", "type", "veth", "peer", "name", "vbr1",
    ]);
    ns.ip(&["link", "set", "vbr0", "master", "br0"]);
    for link in ["br0", "vbr0", "vbr1"] {
        ns.ip(&["link", "set", link, "up"]);
    }
    ns.ip(&[
        "link", "add", "idle0", "mtu", "9000", "type", "veth", "peer", "name", "idle1",
    ]);
    let sink = udp_listener(&ns, &format!("{}:9000", pair.a_addr));
    send_udp(&peer, &format!("{}:9000", pair.a_addr), 300, 1000);
    assert_eq!(receive_all(&sink, 300), 300);
    send_udp(&ns, &format!("{}:9", pair.b_addr), 50, 200);
    Node { ns, _peer: peer }
}

fn json_counter(link: &serde_json::Value, direction: &str, field: &str) -> f64 {
    link["stats64"][direction][field]
        .as_f64()
        .unwrap_or_else(|| panic!("ip -j has no {direction}.{field}"))
}

/// Series of `interface`, by family name.
fn families_of(metrics: &Metrics, interface: &str) -> std::collections::BTreeMap<String, usize> {
    let mut families = std::collections::BTreeMap::new();
    for sample in &metrics.samples {
        if sample.labels.get("interface").map(String::as_str) == Some(interface) {
            *families.entry(sample.name.clone()).or_insert(0) += 1;
        }
    }
    families
}

#[test]
fn the_default_profile_is_lean_and_detailed_adds_every_other_counter() {
    require_root();
    let node = node_with_traffic("profile");
    let lean = CollectorProcess::start(&node.ns, &["--no-ebpf"]).scrape(&node.ns);
    let detailed =
        CollectorProcess::start(&node.ns, &["--no-ebpf", "--detailed-metrics"]).scrape(&node.ns);
    let (lean, detailed) = (families_of(&lean, "eth0"), families_of(&detailed, "eth0"));
    println!(
        "series per veth without eBPF: default {}, detailed {}",
        lean.values().sum::<usize>(),
        detailed.values().sum::<usize>()
    );
    // The seed's 13, link state (up, carrier, oper_state) and info.
    let seed = [
        "rx_bytes",
        "rx_packets",
        "rx_errors",
        "rx_dropped",
        "rx_missed",
        "rx_multicast",
        "tx_bytes",
        "tx_packets",
        "tx_errors",
        "tx_dropped",
        "tx_carrier",
        "tx_collisions",
        "mtu",
    ];
    let mut expected: Vec<String> = seed
        .iter()
        .map(|s| format!("network_interface_stats_{s}"))
        .collect();
    for state in ["up", "carrier", "oper_state", "info"] {
        expected.push(format!("network_interface_{state}"));
    }
    expected.sort();
    assert_eq!(lean.keys().cloned().collect::<Vec<_>>(), expected);
    assert!(
        lean.values().all(|&n| n == 1),
        "one series per family: {lean:?}"
    );
    let added: Vec<&String> = detailed.keys().filter(|k| !lean.contains_key(*k)).collect();
    assert_eq!(added.len(), 13, "{added:?}");
    assert!(detailed.contains_key("network_interface_carrier_changes_total"));
    // rx_missed_errors is served once, under the seed's name.
    assert!(!detailed.contains_key("network_interface_rx_missed_errors_total"));
}

#[test]
fn every_seed_metric_matches_ip_s_link_for_every_interface() {
    require_root();
    let node = node_with_traffic("seed");
    let collector = CollectorProcess::start(
        &node.ns,
        &[
            "--label",
            "cluster=aks-test",
            "--label",
            "environment=ci",
            "--detailed-metrics",
        ],
    );
    let before = node.ns.ip_links();
    let metrics = collector.scrape(&node.ns);
    let after = node.ns.ip_links();

    let expected: std::collections::BTreeSet<String> = after.keys().cloned().collect();
    assert_eq!(
        metrics.interfaces(),
        expected,
        "one series per interface, loopback included"
    );
    for (name, _, _) in SEED_COUNTERS {
        assert_eq!(metrics.types[name], "counter", "{name} type");
    }
    assert_eq!(metrics.types["network_interface_stats_mtu"], "gauge");

    for (interface, link) in &after {
        let up = link["flags"].as_array().unwrap().iter().any(|f| f == "UP");
        let state = if up { "up" } else { "down" };
        let selector = [("interface", interface.as_str())];
        for (name, direction, field) in SEED_COUNTERS {
            let series: Vec<_> = metrics.select(name, &selector).collect();
            assert_eq!(series.len(), 1, "{name}{{interface={interface}}}");
            let sample = series[0];
            let labels: Vec<(&str, &str)> = sample
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            assert_eq!(
                labels,
                [
                    ("cluster", "aks-test"),
                    ("environment", "ci"),
                    ("host", "test-node"),
                    ("hostname", "test-node"),
                    ("interface", interface.as_str()),
                    ("state", state)
                ],
                "{name} labels"
            );
            let low = json_counter(&before[interface], direction, field);
            let high = json_counter(link, direction, field);
            assert!(
                low <= sample.value && sample.value <= high,
                "{name}{{interface={interface}}} = {} outside ip's [{low}, {high}]",
                sample.value
            );
        }
        let mtu = metrics.value("network_interface_stats_mtu", &selector);
        assert_eq!(mtu, link["mtu"].as_f64().unwrap(), "{interface} mtu");
    }

    // The traffic really is in those numbers, not zeros on both sides.
    assert!(
        metrics.value(
            "network_interface_stats_rx_packets",
            &[("interface", "eth0")]
        ) >= 300.0
    );
    assert!(
        metrics.value("network_interface_stats_rx_bytes", &[("interface", "eth0")])
            >= 300.0 * 1042.0
    );
    assert_eq!(
        metrics.value("network_interface_stats_mtu", &[("interface", "idle0")]),
        9000.0
    );
    assert_eq!(
        metrics.value("network_interface_up", &[("interface", "idle0")]),
        0.0
    );
    assert_eq!(
        metrics.value("network_interface_up", &[("interface", "eth0")]),
        1.0
    );
    assert_eq!(
        metrics.value("network_interface_carrier", &[("interface", "eth0")]),
        1.0
    );
    assert_eq!(
        metrics.value("network_interface_oper_state", &[("interface", "eth0")]),
        1.0
    );
    assert_eq!(
        metrics.value("network_interface_oper_state", &[("interface", "idle0")]),
        2.0
    );
    let info = |interface: &str| {
        metrics
            .select("network_interface_info", &[("interface", interface)])
            .next()
            .unwrap()
            .labels
            .clone()
    };
    assert_eq!(info("vbr0")["kind"], "veth");
    assert_eq!(info("vbr0")["master"], "br0");
    assert_eq!(info("br0")["kind"], "bridge");
    assert_eq!(
        info("eth0")["address"],
        after["eth0"]["address"].as_str().unwrap()
    );
    assert_eq!(
        info("eth0")["ifindex"],
        after["eth0"]["ifindex"].to_string()
    );
    assert!(
        metrics.value(
            "network_interface_carrier_changes_total",
            &[("interface", "eth0")]
        ) >= 1.0
    );
    assert_eq!(
        metrics.value("collector_scrape_errors_total", &[("source", "netlink")]),
        0.0
    );
}

#[test]
fn promtool_reports_only_the_kept_seed_counter_names() {
    require_root();
    let node = node_with_traffic("prom");
    let collector = CollectorProcess::start(&node.ns, &["--label", "cluster=aks-test"]);
    let text = collector.scrape_text(&node.ns);
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed by `cargo xtask setup` (Debian package prometheus)");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = promtool.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("promtool says:\n{report}");
    // promtool names the metric first on each problem line; its wording
    // after that changes between releases and is not what this checks.
    let served = Metrics::parse(&text);
    let flagged: std::collections::BTreeSet<&str> = report
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for name in &flagged {
        assert!(
            served.types.contains_key(*name),
            "promtool reported something that is not a served metric: {name}\n{report}"
        );
    }
    let expected: std::collections::BTreeSet<&str> =
        SEED_COUNTERS.iter().map(|(name, _, _)| *name).collect();
    assert_eq!(flagged, expected, "{report}");
}

#[test]
fn include_and_exclude_filter_interfaces_unanchored() {
    require_root();
    let node = node_with_traffic("filt");
    let excluded =
        CollectorProcess::start(&node.ns, &["--no-ebpf", "--exclude", "^(vbr.*|idle.*)$"]);
    let names = excluded.scrape(&node.ns).interfaces();
    assert_eq!(names.into_iter().collect::<Vec<_>>(), ["br0", "eth0", "lo"]);
    drop(excluded);
    let included = CollectorProcess::start(&node.ns, &["--no-ebpf", "--include", "br"]);
    let names = included.scrape(&node.ns).interfaces();
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["br0", "vbr0", "vbr1"]
    );
}

#[test]
fn every_link_change_and_every_counter_shows_in_the_next_scrape() {
    require_root();
    let node = node_with_traffic("cache");
    let collector = CollectorProcess::start(&node.ns, &["--no-ebpf"]);
    let first = collector.scrape(&node.ns);
    assert_eq!(
        first.value("network_interface_stats_mtu", &[("interface", "idle0")]),
        9000.0
    );
    // Attribute changes reach the cache through RTNLGRP_LINK notifications.
    node.ns.ip(&["link", "set", "idle0", "mtu", "1400"]);
    node.ns.ip(&["link", "set", "idle1", "name", "renamed1"]);
    node.ns.ip(&["link", "set", "br0", "down"]);
    // (No link added or removed yet: only a notification can tell the cache.)
    let second = collector.scrape(&node.ns);
    assert_eq!(
        second.value("network_interface_stats_mtu", &[("interface", "idle0")]),
        1400.0
    );
    let interfaces = second.interfaces();
    assert!(interfaces.contains("renamed1") && !interfaces.contains("idle1"));
    assert_eq!(
        second.value("network_interface_up", &[("interface", "br0")]),
        0.0
    );
    node.ns.ip(&["link", "del", "vbr0"]);
    node.ns.ip(&[
        "link", "add", "new0", "type", "veth", "peer", "name", "new1",
    ]);
    let second = collector.scrape(&node.ns);
    let interfaces = second.interfaces();
    // vbr1 went with its peer vbr0.
    assert!(!interfaces.contains("vbr0") && !interfaces.contains("vbr1"));
    assert!(interfaces.contains("new0") && interfaces.contains("new1"));
    // Counters move without any notification; each scrape reads them afresh.
    let links = node.ns.ip_links();
    let eth0_rx = links["eth0"]["stats64"]["rx"]["packets"].as_f64().unwrap();
    assert_eq!(
        second.value(
            "network_interface_stats_rx_packets",
            &[("interface", "eth0")]
        ),
        eth0_rx
    );
    let sink = udp_listener(&node.ns, "198.18.10.1:9001");
    send_udp(&node._peer, "198.18.10.1:9001", 40, 100);
    assert_eq!(receive_all(&sink, 40), 40);
    let third = collector.scrape(&node.ns);
    assert_eq!(
        third.value(
            "network_interface_stats_rx_packets",
            &[("interface", "eth0")]
        ),
        eth0_rx + 40.0
    );
}
