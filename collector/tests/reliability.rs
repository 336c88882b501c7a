//! Months on a node with pod churn, scrapes from everywhere, faults and
//! restarts: what the collector must survive, checked in namespaces the
//! test creates.

mod common;
#[path = "reliability/load.rs"]
mod load;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

const CHURN_PAIRS: usize = 5_000;
const CHURN_BATCH: usize = 250;
/// RSS growth allowed over the churn. The collector keeps nothing per
/// deleted interface; what remains is the allocator holding on to the
/// buffers of the largest scrape (a batch of 500 live veths: ~3 MiB of
/// exposition text plus the snapshot), so 16 MiB is several times that.
const CHURN_RSS_GROWTH_KIB: u64 = 16 * 1024;

/// The drop families: a new reason seen on `lo`, or a drop the churn
/// itself causes elsewhere (deleting a veth purges its queues), is a real
/// new series, not a leftover.
const DROP_FAMILIES: [&str; 3] = [
    "network_interface_drops_total",
    "network_pod_drops_total",
    "network_netns_drops_total",
];

/// Per-interface series, drop reasons left out.
fn series_count(metrics: &Metrics) -> usize {
    metrics
        .samples
        .iter()
        .filter(|s| s.labels.contains_key("interface") && !DROP_FAMILIES.contains(&s.name.as_str()))
        .count()
}

#[test]
fn churn_of_5000_veth_pairs_returns_series_and_maps_to_baseline() {
    require_root();
    let ns = Netns::new("churn");
    // IPv6 on for the churned veths: their router solicitations and MLD
    // reports are the traffic that creates map entries to be cleaned up.
    ns.exec(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=0"]);
    let collector = CollectorProcess::start(&ns, &[]);
    let baseline = collector.scrape(&ns);
    let baseline_rss = rss_kib(collector.pid());
    let entries = |m: &Metrics| m.value("collector_ebpf_map_entries", &[("map", "traffic")]);

    let stop = Arc::new(AtomicBool::new(false));
    let peak_entries = Arc::new(AtomicU64::new(0));
    let scrapes = Arc::new(AtomicU64::new(0));
    let scraper = {
        let (stop, peak_entries, scrapes) = (
            Arc::clone(&stop),
            Arc::clone(&peak_entries),
            Arc::clone(&scrapes),
        );
        let ns_name = ns.name.clone();
        std::thread::spawn(move || {
            enter_netns(&ns_name);
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match raw_get("/metrics") {
                    Ok((200, body)) => {
                        let metrics = Metrics::parse(&body);
                        peak_entries.fetch_max(entries(&metrics) as u64, Ordering::Relaxed);
                        scrapes.fetch_add(1, Ordering::Relaxed);
                    }
                    other => failures.push(format!("{other:?}")),
                }
                // Continuous, but leaving the CPU to the churn itself.
                std::thread::sleep(Duration::from_millis(20));
            }
            failures
        })
    };

    let started = Instant::now();
    for batch in 0..CHURN_PAIRS / CHURN_BATCH {
        let names: Vec<usize> = (batch * CHURN_BATCH..(batch + 1) * CHURN_BATCH).collect();
        let mut create = String::new();
        for i in &names {
            create.push_str(&format!(
                "link add ca{i} type veth peer name cb{i}\nlink set ca{i} group 7 up\nlink set cb{i} group 7 up\n"
            ));
        }
        ip_batch(&ns, &create);
        std::thread::sleep(Duration::from_millis(300));
        // One rtnl operation per batch, as a node deleting many pods at once.
        ns.ip(&["link", "delete", "group", "7"]);
    }
    let churn_seconds = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let failures = scraper.join().unwrap();

    let after = collector.scrape(&ns);
    let rss_growth = rss_kib(collector.pid()).saturating_sub(baseline_rss);
    println!(
        "churned {CHURN_PAIRS} pairs in {churn_seconds:.1}s with {} scrapes; peak traffic-map entries {}; RSS {baseline_rss} KiB -> +{rss_growth} KiB",
        scrapes.load(Ordering::Relaxed),
        peak_entries.load(Ordering::Relaxed)
    );
    assert!(failures.is_empty(), "failed scrapes: {failures:?}");
    assert!(
        scrapes.load(Ordering::Relaxed) >= 10,
        "scraping kept up during the churn"
    );
    assert!(
        peak_entries.load(Ordering::Relaxed) as f64 > entries(&baseline) + 50.0,
        "churned veths created map entries"
    );
    assert_eq!(after.interfaces(), baseline.interfaces());
    assert_eq!(
        series_count(&after),
        series_count(&baseline),
        "no series of churned interfaces left"
    );
    assert_eq!(
        entries(&after),
        entries(&baseline),
        "traffic map back to baseline"
    );
    // Drop entries of this namespace's devices are only those of live
    // interfaces (the map also counts every other namespace's drops).
    let live: std::collections::BTreeSet<u32> = ns
        .ip_links()
        .values()
        .map(|l| l["ifindex"].as_u64().unwrap() as u32)
        .collect();
    let inode = ns.inode();
    let stale: Vec<DropMapKey> = drop_map_keys(collector.pid())
        .into_iter()
        .filter(|k| k.netns == inode && k.ifindex != 0 && !live.contains(&k.ifindex))
        .collect();
    assert!(
        stale.is_empty(),
        "drop entries of deleted interfaces: {stale:?}"
    );
    assert_eq!(
        after.value("collector_scrape_errors_total", &[("source", "netlink")]),
        0.0
    );
    assert!(
        rss_growth < CHURN_RSS_GROWTH_KIB,
        "RSS grew {rss_growth} KiB"
    );
}

/// One HTTP/1.0 GET to the collector in the calling thread's namespace.
fn raw_get(path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect("127.0.0.1:2112")?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

#[test]
fn without_cap_bpf_it_serves_netlink_metrics_and_says_why() {
    require_root();
    let ns = Netns::new("nocap");
    // Root without CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN (which would
    // imply both): the kernel refuses the programs. tracefs is mounted first,
    // as the DaemonSet's hostPath provides it (`ip netns exec` hides it).
    let wrapper = [
        "sh",
        "-c",
        "mount -t tracefs tracefs /sys/kernel/tracing && exec \"$@\"",
        "sh",
        "setpriv",
        "--bounding-set",
        "-bpf,-perfmon,-sys_admin",
        "--inh-caps",
        "-all",
        "--",
    ];
    let collector = CollectorProcess::start_wrapped(&ns, &wrapper, &[], &[]);
    let metrics = collector.scrape(&ns);
    assert_eq!(metrics.value("collector_ebpf_enabled", &[]), 0.0);
    assert_eq!(
        metrics.value("network_interface_stats_mtu", &[("interface", "lo")]),
        65536.0
    );
    let (status, stderr) = collector.stop();
    assert!(status.success());
    let line = stderr
        .lines()
        .find(|l| l.contains("eBPF disabled"))
        .unwrap_or_else(|| panic!("no log line: {stderr}"));
    assert!(line.contains("CAP_BPF"), "{line}");
}

#[test]
fn a_missing_tracepoint_disables_only_its_probe() {
    require_root();
    let ns = Netns::new("notp");
    let peer = Netns::new("notpp");
    let pair = VethPair::new(&ns, "eth0", &peer, "pod0", 32);
    // A tracefs view of a kernel without skb:kfree_skb: the running
    // kernel's other two formats, copied from a tracefs this test mounts
    // itself (nothing else has one mounted where the test runs).
    let fake = tempfile::tempdir().unwrap();
    with_private_tracefs(|tracefs| {
        for (category, event) in [("net", "netif_receive_skb"), ("net", "net_dev_start_xmit")] {
            let directory = fake.path().join("events").join(category).join(event);
            std::fs::create_dir_all(&directory).unwrap();
            let real = tracefs
                .join("events")
                .join(category)
                .join(event)
                .join("format");
            std::fs::copy(&real, directory.join("format"))
                .unwrap_or_else(|e| panic!("copying {}: {e}", real.display()));
        }
    });
    let fake_root = fake.path().to_str().expect("temporary path is UTF-8");
    // Classic: a tp_btf program needs no tracefs format and would attach.
    let collector = CollectorProcess::start_with_env(
        &ns,
        &[("COLLECTOR_TRACEFS", fake_root)],
        &["--ebpf-flavour", "classic"],
    );
    let sink = udp_listener(&ns, &format!("{}:9000", pair.a_addr));
    send_udp(&peer, &format!("{}:9000", pair.a_addr), 20, 64);
    assert_eq!(receive_all(&sink, 20), 20);
    send_udp(&peer, &format!("{}:9", pair.a_addr), 20, 64);
    let metrics = collector.scrape(&ns);
    assert_eq!(metrics.value("collector_ebpf_enabled", &[]), 1.0);
    assert_eq!(
        metrics.value("collector_ebpf_probe_attached", &[("program", "kfree_skb")]),
        0.0
    );
    assert_eq!(
        metrics.value(
            "collector_ebpf_probe_attached",
            &[("program", "netif_receive_skb")]
        ),
        1.0
    );
    assert!(
        metrics.value(
            "network_interface_ebpf_rx_packets_total",
            &[("interface", "eth0")]
        ) >= 40.0
    );
    assert_eq!(
        metrics.select("network_interface_drops_total", &[]).count(),
        0
    );
    let (_, stderr) = collector.stop();
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("probe not attached") && l.contains("kfree_skb")),
        "{stderr}"
    );
}

#[test]
fn a_restart_neither_double_counts_nor_leaves_programs_or_links() {
    require_root();
    let ns = Netns::new("rest");
    let peer = Netns::new("restp");
    let pair = VethPair::new(&ns, "eth0", &peer, "pod0", 33);
    let sink = udp_listener(&ns, &format!("{}:9000", pair.a_addr));
    for round in 0..2 {
        let collector = CollectorProcess::start(&ns, &[]);
        // What this collector holds, not machine-wide counts: other
        // processes load and unload programs while the test runs.
        let held = BpfHeld::of(collector.pid());
        assert_eq!(
            held.attachments(),
            3,
            "round {round}: three tracepoint links while running: {held:?}"
        );
        // One program per probe, in whichever flavour (tp_btf or classic)
        // this kernel loads.
        let names = held.program_names();
        for probe in ["kfree_skb", "net_dev_start_xmit", "netif_receive_skb"] {
            let flavours = [bpf_name(probe), bpf_name(&format!("{probe}_btf"))];
            assert_eq!(
                names.iter().filter(|n| flavours.contains(n)).count(),
                1,
                "round {round}: one program for {probe}: {names:?}"
            );
        }
        assert_eq!(names.len(), 3, "round {round}: {names:?}");
        send_udp(&peer, &format!("{}:9000", pair.a_addr), 30, 64);
        assert_eq!(receive_all(&sink, 30), 30);
        let rx = collector.scrape(&ns).value(
            "network_interface_ebpf_rx_packets_total",
            &[("interface", "eth0")],
        );
        assert_eq!(
            rx, 30.0,
            "round {round}: a fresh start counts from its own attach"
        );
        let (status, _) = collector.stop();
        assert!(status.success());
        held.assert_released(&format!("round {round}: all detached"));
    }
}
