//! Months on a node with pod churn, scrapes from everywhere, faults and
//! restarts: what the collector must survive, checked in namespaces the
//! test creates.

#[path = "reliability/churn.rs"]
mod churn;
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

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

const SCRAPERS: usize = 200;
const LOAD_SECONDS: u64 = 30;
/// RSS ceiling under load: 200 in-flight responses of a small node are a
/// few MiB; anything near this means per-connection state leaks.
const LOAD_RSS_KIB: u64 = 64 * 1024;

#[test]
fn two_hundred_concurrent_scrapers_for_30s_see_no_errors() {
    require_root();
    let ns = Netns::new("load");
    let peer = Netns::new("loadp");
    VethPair::new(&ns, "eth0", &peer, "pod0", 30);
    let collector = CollectorProcess::start(&ns, &[]);
    let deadline = Instant::now() + Duration::from_secs(LOAD_SECONDS);
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..SCRAPERS)
        .map(|_| {
            let (latencies, errors, ns_name) =
                (Arc::clone(&latencies), Arc::clone(&errors), ns.name.clone());
            std::thread::spawn(move || {
                enter_netns(&ns_name);
                let mut mine = Vec::new();
                while Instant::now() < deadline {
                    let started = Instant::now();
                    match raw_get("/metrics") {
                        Ok((200, body))
                            if body.contains(
                                "network_interface_stats_rx_bytes{interface=\"eth0\"",
                            ) =>
                        {
                            mine.push(started.elapsed())
                        }
                        other => errors
                            .lock()
                            .unwrap()
                            .push(format!("{:?}", other.map(|(s, b)| (s, b.len())))),
                    }
                }
                latencies.lock().unwrap().extend(mine);
            })
        })
        .collect();
    let mut peak_rss = 0;
    while Instant::now() < deadline {
        peak_rss = peak_rss.max(rss_kib(collector.pid()));
        std::thread::sleep(Duration::from_millis(500));
    }
    for worker in workers {
        worker.join().unwrap();
    }
    let mut latencies = latencies.lock().unwrap().clone();
    latencies.sort();
    let quantile = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    let metrics = collector.scrape(&ns);
    println!(
        "{} scrapes by {SCRAPERS} clients in {LOAD_SECONDS}s: p50 {:?}, p99 {:?}, max {:?}; {} collections; peak RSS {peak_rss} KiB; connections displaced {}, responses cut {}",
        latencies.len(),
        quantile(0.5),
        quantile(0.99),
        latencies.last().unwrap(),
        metrics.value("collector_collections_total", &[]),
        metrics.value("collector_http_connections_rejected_total", &[]),
        metrics.value("collector_http_responses_cut_total", &[("why", "stalled")])
            + metrics.value("collector_http_responses_cut_total", &[("why", "evicted")]),
    );
    let errors = errors.lock().unwrap();
    assert!(
        errors.is_empty(),
        "{} failed scrapes, first: {:?}",
        errors.len(),
        errors.first()
    );
    assert!(
        latencies.len() > SCRAPERS * 10,
        "every client scraped repeatedly"
    );
    assert!(peak_rss < LOAD_RSS_KIB, "RSS peaked at {peak_rss} KiB");
    // Shared collections: far fewer netlink dumps than scrapes.
    assert!(metrics.value("collector_collections_total", &[]) < latencies.len() as f64);
}

#[test]
fn slow_clients_are_cut_off_and_cannot_exhaust_connections() {
    require_root();
    let ns = Netns::new("slow");
    let collector = CollectorProcess::start(&ns, &["--no-ebpf"]);
    // More half-sent requests than the 512-connection limit.
    let slow: Vec<TcpStream> = ns.run_in(|| {
        (0..600)
            .filter_map(|_| {
                let mut stream = TcpStream::connect("127.0.0.1:2112").ok()?;
                stream
                    .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                    .ok()?;
                Some(stream)
            })
            .collect()
    });
    assert_eq!(
        slow.len(),
        600,
        "connections are accepted (then closed) beyond the limit"
    );
    std::thread::sleep(Duration::from_millis(200));
    let busy = ns.run_in(|| raw_get("/healthz"));
    println!("while 600 slow clients hold connections: {busy:?}");

    // The header-read timeout (5 s) closes every slow connection.
    std::thread::sleep(Duration::from_secs(6));
    for mut stream in slow {
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut buffer = Vec::new();
        // EOF (closed after the timeout) or a reset (closed at accept with
        // the request unread) both end the connection; only a read timeout
        // means the server still holds it.
        let still_open = matches!(
            stream.read_to_end(&mut buffer),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
        );
        assert!(
            !still_open,
            "a slow client was still connected after the header timeout"
        );
    }
    let (status, body) = ns
        .run_in(|| raw_get("/metrics"))
        .expect("scrape after slow clients left");
    assert_eq!(status, 200);
    let metrics = Metrics::parse(&body);
    assert!(
        metrics.value("collector_http_connections_rejected_total", &[]) >= 88.0,
        "limit of 512 enforced"
    );

    // A request head larger than 16 KiB is refused, not buffered.
    let oversized = ns.run_in(|| {
        let mut stream = TcpStream::connect("127.0.0.1:2112").unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let header = format!(
            "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Filler: {}\r\n\r\n",
            "a".repeat(64 * 1024)
        );
        let _ = stream.write_all(header.as_bytes());
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response
    });
    assert!(
        oversized.is_empty() || oversized.starts_with("HTTP/1.1 431"),
        "{oversized:.80}"
    );
    drop(collector);
}

#[test]
fn listen_on_a_specific_address_is_honoured() {
    require_root();
    let ns = Netns::new("bind");
    let peer = Netns::new("bindp");
    let pair = VethPair::new(&ns, "eth0", &peer, "pod0", 31);
    let _collector = CollectorProcess::start(&ns, &["--no-ebpf"]);
    let (on_loopback, on_veth) = ns.run_in(|| {
        (
            TcpStream::connect("127.0.0.1:2112").is_ok(),
            TcpStream::connect(format!("{}:2112", pair.a_addr)).is_ok(),
        )
    });
    assert!(on_loopback);
    assert!(
        !on_veth,
        "bound to 127.0.0.1 only, yet reachable on {}",
        pair.a_addr
    );
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
