//! The conntrack table of the collector's own network namespace, end to
//! end: a namespace the test makes, conntrack switched on in it by an
//! nftables `ct state` rule, connections held open on its loopback, and
//! every served value compared exactly with the namespace's own
//! `/proc/net/stat/nf_conntrack` and `nf_conntrack_count`/`_max`, read by
//! a process inside it (the files are per network namespace).

mod common;

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream, UdpSocket};

use common::*;

/// The families and the file each comes from.
const STAT_COLUMNS: [&str; 3] = ["insert_failed", "drop", "early_drop"];

/// `ns`'s own conntrack values, read by processes inside it and parsed
/// here without the collector's parser: `entries`, `entries_limit` and
/// each stat column summed over the rows.
fn own_values(ns: &Netns) -> BTreeMap<String, u64> {
    let read = |file: &str| {
        let out = ns.exec(&["cat", file]);
        assert!(out.status.success(), "cat {file} in {}", ns.name);
        String::from_utf8(out.stdout).unwrap()
    };
    let mut values = BTreeMap::new();
    for (key, file) in [
        ("entries", "/proc/sys/net/netfilter/nf_conntrack_count"),
        ("entries_limit", "/proc/sys/net/netfilter/nf_conntrack_max"),
    ] {
        values.insert(key.to_string(), read(file).trim().parse().unwrap());
    }
    let stat = read("/proc/net/stat/nf_conntrack");
    let mut lines = stat.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    assert!(!rows.is_empty(), "a row per CPU: {stat}");
    for column in STAT_COLUMNS {
        let at = header.iter().position(|n| *n == column).unwrap();
        let sum = rows
            .iter()
            .map(|row| u64::from_str_radix(row[at], 16).unwrap())
            .sum();
        values.insert(format!("stat_{column}"), sum);
    }
    values
}

/// What the collector served: the same keys as [`own_values`].
fn served(metrics: &Metrics) -> BTreeMap<String, u64> {
    let mut values = BTreeMap::new();
    for sample in &metrics.samples {
        let Some(key) = sample.name.strip_prefix("network_conntrack_") else {
            continue;
        };
        let key = key.strip_suffix("_total").unwrap_or(key);
        let names: Vec<&str> = sample.labels.keys().map(String::as_str).collect();
        assert_eq!(names, ["host", "hostname"], "{sample:?}");
        let old = values.insert(key.to_string(), sample.value as u64);
        assert!(old.is_none(), "{} served twice", sample.name);
    }
    values
}

#[test]
fn every_served_value_equals_the_namespaces_own_conntrack() {
    require_root();
    let node = Netns::new("ctnode");
    // Conntrack tracks a namespace only once a hook there needs it. The
    // scrapes' own connections (to 2112 and 2113 on loopback) are left
    // untracked, so reading the table does not change it.
    for command in [
        "add table inet collector_test",
        "add chain inet collector_test raw { type filter hook output priority -300 ; }",
        "add rule inet collector_test raw tcp dport { 2112, 2113 } notrack",
        "add rule inet collector_test raw tcp sport { 2112, 2113 } notrack",
        "add chain inet collector_test out { type filter hook output priority 0 ; }",
        "add rule inet collector_test out ct state new counter",
    ] {
        let args: Vec<&str> = std::iter::once("nft").chain(command.split(' ')).collect();
        let out = node.exec(&args);
        assert!(out.status.success(), "nft {command}: {out:?}");
    }
    let collector = CollectorProcess::start(&node, &["--no-ebpf"]);

    // Connections held open (ESTABLISHED entries live for days) and UDP
    // to closed ports (unreplied entries, 30 s).
    let (listener, clients, accepted) = node.run_in(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let mut clients = Vec::new();
        let mut accepted = Vec::new();
        for _ in 0..6 {
            clients.push(TcpStream::connect(address).unwrap());
            accepted.push(listener.accept().unwrap().0);
        }
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        for port in 9000..9003 {
            socket.send_to(b"x", ("127.0.0.1", port)).unwrap();
        }
        (listener, clients, accepted)
    });

    // Read inside, scrape, read inside again: with nothing in flight the
    // two readings agree, and the served values must equal them.
    let mut compared = None;
    for _ in 0..5 {
        let before = own_values(&node);
        let metrics = collector.scrape(&node);
        if own_values(&node) == before {
            compared = Some((before, metrics));
            break;
        }
    }
    let (own, metrics) = compared.expect("the namespace's conntrack kept moving");
    println!("own {own:?}");
    assert!(own["entries"] >= 9, "6 TCP and 3 UDP entries: {own:?}");
    assert_eq!(served(&metrics), own);
    assert_eq!(
        metrics.value("collector_source_up", &[("source", "conntrack")]),
        1.0
    );
    assert_eq!(
        metrics.value("collector_scrape_errors_total", &[("source", "conntrack")]),
        0.0
    );

    // Another namespace's table is not the collector's: a fresh one with
    // no tracking has no entries, while the collector's served several.
    let other = Netns::new("ctother");
    assert_eq!(own_values(&other)["entries"], 0);
    drop((listener, clients, accepted));
}
