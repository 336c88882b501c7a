//! Hostile but legal input, each case on real interfaces in a namespace the
//! test creates: names that are not UTF-8 or carry terminal escapes,
//! clients that never read, a netlink dump past its deadline, and the
//! capabilities the server keeps after attaching.

mod common;

use std::ffi::OsStr;
use std::io::Write;
use std::net::TcpStream;
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// `count` veth pairs `vh<i>` in `ns` with their peers in `pods`, all up.
fn add_veths(ns: &Netns, pods: &Netns, count: usize) {
    let commands: String = (0..count)
        .map(|i| {
            format!(
                "link add vh{i} up type veth peer name vp{i} netns {}\n",
                pods.name
            )
        })
        .collect();
    ip_batch(ns, &commands);
}

/// Runs the collector binary inside `ns`; its stdout, failing on a non-zero exit.
fn collector_output(ns: &Netns, args: &[&str]) -> Vec<u8> {
    let output = Command::new("ip")
        .args(["netns", "exec", &ns.name, COLLECTOR])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("starting collector");
    assert!(
        output.status.success(),
        "collector {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// `ip link add` with a name given as raw bytes.
fn add_veth_named(ns: &Netns, name: &[u8], peer: &str) {
    let status = Command::new("ip")
        .args(["-n", &ns.name, "link", "add", "name"])
        .arg(OsStr::from_bytes(name))
        .args(["type", "veth", "peer", "name", peer])
        .status()
        .expect("ip link add");
    assert!(status.success(), "the kernel refused the name {name:?}");
}

#[test]
fn a_name_that_is_not_utf8_hides_no_interface() {
    require_root();
    let ns = Netns::new("utf8");
    add_veth_named(&ns, &[0xff, 0xfe], "okpeer");
    // The eight characters `\xff\xfe`: legal, and a different interface.
    add_veth_named(&ns, b"\\xff\\xfe", "lit");
    // An alias that is not UTF-8 either: that attribute is skipped, the link is not.
    let status = Command::new("ip")
        .args(["-n", &ns.name, "link", "set", "dev", "okpeer", "alias"])
        .arg(OsStr::from_bytes(&[b'x', 0xc3]))
        .status()
        .unwrap();
    assert!(status.success());

    let json = collector_output(&ns, &["snapshot", "--format", "json", "--no-ebpf"]);
    let snapshot: serde_json::Value = serde_json::from_slice(&json).expect("JSON");
    let names: Vec<&str> = snapshot["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    // Sorted by name; the policy turns each byte that is not UTF-8 into
    // `\xNN` and a backslash into `\\`, so the two odd names stay apart.
    assert_eq!(
        names,
        ["\\\\xff\\\\xfe", "\\xff\\xfe", "lit", "lo", "okpeer"],
        "{names:?}"
    );
    assert!(snapshot["sources"]["netlink_error"].is_null());
    assert!(snapshot["sources"]["netlink_skipped_attributes_total"].as_u64() >= Some(1));

    let collector = CollectorProcess::start(&ns, &["--no-ebpf"]);
    let text = collector.scrape_text(&ns);
    // The label value is the policy's name, with its backslashes escaped.
    assert!(
        text.contains("network_interface_stats_mtu{interface=\"\\\\xff\\\\xfe\""),
        "{text:.2000}"
    );
    let literal = r#"network_interface_stats_mtu{interface="\\\\xff\\\\xfe""#;
    assert!(text.contains(literal), "{text:.2000}");
    let metrics = Metrics::parse(&text);
    assert_eq!(
        metrics.value("network_interface_stats_mtu", &[("interface", "okpeer")]),
        1500.0
    );
    assert!(metrics.value("collector_netlink_attributes_skipped_total", &[]) >= 1.0);
    assert_eq!(
        metrics.value("collector_scrape_errors_total", &[("source", "netlink")]),
        0.0
    );
}

#[test]
fn escape_sequences_in_names_never_reach_the_terminal() {
    require_root();
    let ns = Netns::new("esc");
    // ESC is legal in an interface name; the table would turn the terminal red.
    add_veth_named(&ns, b"e\x1b[31m", "p\x07bell");
    let table = collector_output(&ns, &["snapshot", "--format", "table", "--no-ebpf"]);
    let watch = collector_output(
        &ns,
        &["watch", "--count", "1", "--interval", "100ms", "--no-ebpf"],
    );
    for (view, bytes) in [("table", &table), ("watch", &watch)] {
        let text = String::from_utf8(bytes.clone()).expect("UTF-8");
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{view} printed a control character: {text:?}"
        );
        assert!(text.contains("e\\x1b[31m"), "{view}: {text}");
        assert!(text.contains("p\\x07bell"), "{view}: {text}");
    }
}

/// Connects inside the calling thread's namespace with a tiny receive
/// window, asks for /metrics and never reads.
fn stalled_scraper() -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    // Before connect, so the advertised window stays small.
    socket.set_recv_buffer_size(4096).unwrap();
    let address: std::net::SocketAddr = "127.0.0.1:2112".parse().unwrap();
    socket.connect(&address.into()).unwrap();
    let mut stream: TcpStream = socket.into();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: identity\r\n\r\n")
        .unwrap();
    stream
}

#[test]
fn a_hundred_scrapers_that_never_read_neither_bloat_nor_block_the_server() {
    require_root();
    let ns = Netns::new("stall");
    let pods = Netns::new("stallpods");
    add_veths(&ns, &pods, 1000);
    let collector = CollectorProcess::start(&ns, &["--no-ebpf"]);
    let body_bytes = collector.scrape_text(&ns).len();
    let baseline_kib = rss_kib(collector.pid());

    // Four waves, a normal scrape between them, so the stalled responses
    // pin several distinct bodies, not one shared one.
    let mut stalled = Vec::new();
    for _ in 0..4 {
        stalled.extend(ns.run_in(|| (0..25).map(|_| stalled_scraper()).collect::<Vec<_>>()));
        std::thread::sleep(Duration::from_millis(300));
        collector.scrape(&ns);
    }
    std::thread::sleep(Duration::from_millis(500));
    let stalled_kib = rss_kib(collector.pid());
    let started = Instant::now();
    let metrics = collector.scrape(&ns);
    let normal_scrape = started.elapsed();
    println!(
        "1,000 interfaces, body {body_bytes} bytes: RSS {baseline_kib} KiB before, {stalled_kib} KiB with {} stalled scrapers; a normal scrape took {normal_scrape:?} meanwhile",
        stalled.len()
    );
    assert!(metrics.interfaces().contains("vh999"));
    assert!(normal_scrape < Duration::from_secs(5));
    assert!(metrics.value("collector_http_retained_bodies", &[]) <= 4.0);
    // Before: each stalled client held its own ~3 MB body (100 of them: 300 MB).
    // Now: at most four bodies plus a chunk per client.
    let bound_kib = baseline_kib + (4 * body_bytes as u64 + 100 * 96 * 1024) / 1024;
    assert!(
        stalled_kib < bound_kib,
        "RSS {stalled_kib} KiB with stalled scrapers, bound {bound_kib} KiB"
    );

    // The stall timeout (10 s) cuts every one of them and frees what they
    // pinned; those beyond the 32 connection slots were displaced by newer
    // ones (counted as turned away) before that. (Bounded: 25 s, then the
    // test fails.)
    let deadline = Instant::now() + Duration::from_secs(25);
    loop {
        let metrics = collector.scrape(&ns);
        // A response whose body was let go for newer ones while it was still
        // filling the socket is cut as `evicted` instead: both free memory.
        let ended = metrics.value("collector_http_responses_cut_total", &[("why", "stalled")])
            + metrics.value("collector_http_responses_cut_total", &[("why", "evicted")])
            + metrics.value("collector_http_connections_rejected_total", &[]);
        if ended >= stalled.len() as f64 {
            // Only the scrape being served holds a body now.
            assert!(metrics.value("collector_http_retained_bodies", &[]) <= 1.0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {ended} stalled responses were cut or displaced"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    println!("RSS after the cut: {} KiB", rss_kib(collector.pid()));
}

#[test]
fn a_dump_past_its_deadline_is_counted_and_turns_health_red() {
    require_root();
    let ns = Netns::new("wedge");
    let pods = Netns::new("wedgepods");
    add_veths(&ns, &pods, 1000);
    // 1,000 links take several milliseconds to dump: 1 ms is always exceeded,
    // the same path a dump that never completes takes.
    let collector =
        CollectorProcess::start_unready(&ns, &["--no-ebpf", "--netlink-timeout", "1ms"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let health = loop {
        let (status, body) = http(&ns, collector.port, "GET", "/healthz").expect("healthz answers");
        if status == 503 {
            break body;
        }
        let _ = http(&ns, collector.port, "GET", "/metrics");
        assert!(Instant::now() < deadline, "healthz stayed {status}: {body}");
    };
    assert!(
        health.contains("netlink collections failed")
            && health.contains("did not complete within 1ms"),
        "{health}"
    );
    let (status, body) = http(&ns, collector.port, "GET", "/metrics").expect("scrape");
    assert_eq!(status, 200, "the other families are still served");
    let metrics = Metrics::parse(&body);
    assert!(metrics.value("collector_netlink_dump_timeouts_total", &[]) >= 3.0);
    assert!(metrics.value("collector_scrape_errors_total", &[("source", "netlink")]) >= 3.0);
    let (ready, _) = http(&ns, collector.port, "GET", "/readyz").unwrap();
    assert_eq!(ready, 503, "never ready: no collection succeeded");
}

/// `CapEff` and `CapPrm` of every thread of `pid`.
fn thread_capabilities(pid: u32) -> Vec<(String, String)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks");
    tasks
        .map(|task| {
            let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .unwrap()
                    .trim()
                    .to_string()
            };
            (field("CapEff:"), field("CapPrm:"))
        })
        .collect()
}

/// Kernels before 6.5 may check privileges for every `bpf(2)` command when
/// `kernel.unprivileged_bpf_disabled` is set (Debian's kernels set 2).
fn map_reads_may_need_cap_bpf() -> bool {
    let read = |path: &str| std::fs::read_to_string(path).unwrap().trim().to_string();
    let release = read("/proc/sys/kernel/osrelease");
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    version < (6, 5) && read("/proc/sys/kernel/unprivileged_bpf_disabled") != "0"
}

#[test]
fn after_attach_the_server_holds_no_capability_yet_counts_and_prunes() {
    require_root();
    let host = Netns::new("caps");
    let peer = Netns::new("capspeer");
    let pair = VethPair::new(&host, "vc0", &peer, "vc1", 60);
    let collector = CollectorProcess::start(&host, &[]);
    let capabilities = thread_capabilities(collector.pid());
    println!("CapEff/CapPrm per thread after start: {capabilities:?}");
    assert!(capabilities.len() > 1, "the runtime's threads are there");
    // Nothing; or, only before 6.5 with kernel.unprivileged_bpf_disabled
    // set, exactly CAP_BPF (bit 39) where the kernel refuses map reads
    // without it, as documented. The collector finds out by trying (5.10
    // refuses; Debian's 6.1 does not), and its log says which it found.
    let kept = capabilities[0].0.as_str();
    assert!(
        kept == "0000000000000000" || (kept == "0000008000000000" && map_reads_may_need_cap_bpf()),
        "{capabilities:?}"
    );
    for (effective, permitted) in &capabilities {
        assert_eq!(effective, kept);
        assert_eq!(permitted, kept);
    }

    let receiver = udp_listener(&peer, &format!("{}:9000", pair.b_addr));
    send_udp(&host, &format!("{}:9000", pair.b_addr), 200, 100);
    assert_eq!(receive_all(&receiver, 200), 200);
    let metrics = collector.scrape(&host);
    assert_eq!(
        metrics.value(
            "network_interface_ebpf_tx_packets_total",
            &[("interface", "vc0")]
        ),
        200.0
    );
    let entries = metrics.value("collector_ebpf_map_entries", &[("map", "traffic")]);
    assert!(entries >= 1.0);

    // Deleting the veth must delete its map entry: a map write without CAP_BPF.
    host.ip(&["link", "del", "vc0"]);
    let after = collector.scrape(&host);
    assert!(!after.interfaces().contains("vc0"));
    assert_eq!(
        after.value("collector_ebpf_map_entries", &[("map", "traffic")]),
        entries - 1.0,
        "the deleted interface's entry was pruned"
    );
    assert_eq!(
        after.value("collector_scrape_errors_total", &[("source", "ebpf")]),
        0.0
    );
    let (_, stderr) = collector.stop();
    let said = if kept == "0000000000000000" {
        "dropped all capabilities"
    } else {
        "dropped all capabilities but CAP_BPF, which this kernel requires for map reads"
    };
    assert!(stderr.contains(said), "expected {said:?} in: {stderr}");
    drop(pair);
}
