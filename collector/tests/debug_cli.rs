//! `collector snapshot` and `collector watch`, the views an operator gets
//! through `kubectl exec`, checked against iproute2 and against traffic
//! the test sends.

mod common;

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

fn collector_in(ns: &Netns, args: &[&str]) -> std::process::Output {
    let mut full = vec!["netns", "exec", ns.name.as_str(), COLLECTOR];
    full.extend_from_slice(args);
    collector_command("ip").args(&full).output().unwrap()
}

#[test]
fn snapshot_json_matches_ip_s_link_while_a_server_runs_beside_it() {
    require_root();
    let ns = Netns::new("snap");
    let peer = Netns::new("snapp");
    let pair = VethPair::new(&ns, "eth0", &peer, "pod0", 20);
    let sink = udp_listener(&ns, &format!("{}:9000", pair.a_addr));
    send_udp(&peer, &format!("{}:9000", pair.a_addr), 120, 500);
    assert_eq!(receive_all(&sink, 120), 120);
    // The DaemonSet instance, already running on the node.
    let server = CollectorProcess::start(&ns, &[]);
    let server_before = server.scrape(&ns);

    let before = ns.ip_links();
    let output = collector_in(&ns, &["snapshot", "--format", "json", "--window", "200ms"]);
    let after = ns.ip_links();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let document: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("snapshot JSON");
    assert_eq!(document["sources"]["ebpf"]["enabled"], true);
    let interfaces = document["interfaces"].as_array().unwrap();
    let names: Vec<&str> = interfaces
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, after.keys().map(String::as_str).collect::<Vec<_>>());
    for interface in interfaces {
        let name = interface["name"].as_str().unwrap();
        let (low, high) = (&before[name]["stats64"], &after[name]["stats64"]);
        for (json_key, direction, field) in [
            ("rx_bytes", "rx", "bytes"),
            ("rx_packets", "rx", "packets"),
            ("rx_dropped", "rx", "dropped"),
            ("rx_missed_errors", "rx", "missed_errors"),
            ("multicast", "rx", "multicast"),
            ("tx_bytes", "tx", "bytes"),
            ("tx_packets", "tx", "packets"),
            ("tx_carrier_errors", "tx", "carrier_errors"),
            ("collisions", "tx", "collisions"),
        ] {
            let value = interface["counters"][json_key].as_u64().unwrap();
            let (lo, hi) = (
                low[direction][field].as_u64().unwrap(),
                high[direction][field].as_u64().unwrap(),
            );
            assert!(
                lo <= value && value <= hi,
                "{name}.{json_key} = {value} outside [{lo}, {hi}]"
            );
        }
        assert_eq!(interface["mtu"], after[name]["mtu"]);
        assert_eq!(interface["ifindex"], after[name]["ifindex"]);
        let up = after[name]["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "UP");
        assert_eq!(interface["admin_up"], up);
        assert!(interface["ebpf"].is_object(), "{name} has eBPF counts");
    }

    // The snapshot's probes came and went; the server's counts are exact.
    let sink = udp_listener(&ns, &format!("{}:9001", pair.a_addr));
    send_udp(&peer, &format!("{}:9001", pair.a_addr), 50, 100);
    assert_eq!(receive_all(&sink, 50), 50);
    let server_after = server.scrape(&ns);
    let rx = |m: &Metrics| {
        m.value(
            "network_interface_ebpf_rx_packets_total",
            &[("interface", "eth0")],
        )
    };
    assert_eq!(rx(&server_after) - rx(&server_before), 50.0);
}

#[test]
fn snapshot_formats_and_filters() {
    require_root();
    let ns = Netns::new("fmt");
    let peer = Netns::new("fmtp");
    VethPair::new(&ns, "eth0", &peer, "pod0", 21);
    let table = collector_in(&ns, &["snapshot", "--format", "table", "--window", "0s"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.starts_with("INTERFACE") && text.contains("\neth0 ") && text.contains("\nlo "),
        "{text}"
    );
    let prometheus = collector_in(
        &ns,
        &[
            "snapshot",
            "--format",
            "prometheus",
            "--window",
            "0s",
            "--exclude",
            "^lo$",
        ],
    );
    let metrics = Metrics::parse(&String::from_utf8_lossy(&prometheus.stdout));
    assert_eq!(
        metrics.interfaces().into_iter().collect::<Vec<_>>(),
        ["eth0"]
    );
    assert_eq!(metrics.types["network_interface_stats_rx_bytes"], "counter");
    // Piped stdout without --format gets JSON.
    let piped = collector_in(&ns, &["snapshot", "--window", "0s", "--no-ebpf"]);
    let document: serde_json::Value =
        serde_json::from_slice(&piped.stdout).expect("JSON when piped");
    assert_eq!(document["sources"]["ebpf"]["enabled"], false);
    assert!(String::from_utf8_lossy(&piped.stderr).contains("netlink counters only"));
}

/// Parses "1.5KiB/s" into bytes per second.
fn parse_rate(text: &str) -> f64 {
    let number = text.trim_end_matches("/s");
    let split = number.find(|c: char| c.is_ascii_alphabetic()).unwrap();
    let (value, unit) = number.split_at(split);
    let scale = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        other => panic!("unit {other}"),
    };
    value.parse::<f64>().unwrap() * scale
}

#[test]
fn watch_in_a_terminal_shows_the_rates_of_sent_traffic() {
    require_root();
    let ns = Netns::new("watch");
    let peer = Netns::new("watchp");
    let pair = VethPair::new(&ns, "eth0", &peer, "pod0", 22);
    let _sink = udp_listener(&ns, &format!("{}:9000", pair.a_addr));

    // Paced sender: ~400 datagrams/s of 1000 bytes; the real rate is measured.
    let running = Arc::new(AtomicBool::new(true));
    let sender = {
        let running = Arc::clone(&running);
        let destination = format!("{}:9000", pair.a_addr);
        let peer_name = peer.name.clone();
        std::thread::spawn(move || {
            let netns = std::fs::File::open(format!("/var/run/netns/{peer_name}")).unwrap();
            use std::os::fd::AsRawFd;
            // SAFETY: valid netns fd; affects this thread only.
            assert_eq!(
                unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            let started = Instant::now();
            let mut sent = 0u64;
            while running.load(Ordering::Relaxed) {
                socket.send_to(&[7u8; 1000], &destination).unwrap();
                sent += 1;
                std::thread::sleep(Duration::from_micros(2500));
            }
            sent as f64 / started.elapsed().as_secs_f64()
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let command = format!("{COLLECTOR} watch --interval 1s --count 4 --include '^eth0$'");
    let output = collector_command("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "script",
            "-qfec",
            &command,
            "/dev/null",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    running.store(false, Ordering::Relaxed);
    let sent_per_second = sender.join().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let text = String::from_utf8_lossy(&output.stdout);
    // A terminal gets each frame drawn over the last.
    let frames: Vec<&str> = text
        .split("\x1b[H\x1b[2J")
        .filter(|f| f.contains("INTERFACE"))
        .collect();
    assert_eq!(frames.len(), 4, "{text}");
    for frame in &frames[1..] {
        let row = frame
            .lines()
            .find(|l| l.starts_with("eth0 "))
            .unwrap_or_else(|| panic!("no eth0 row in {frame}"));
        assert!(
            !frame.lines().any(|l| l.starts_with("lo ")),
            "--include honoured"
        );
        let columns: Vec<&str> = row.split_whitespace().collect();
        let (rx_rate, rx_pps) = (parse_rate(columns[2]), columns[3].parse::<f64>().unwrap());
        println!("sent {sent_per_second:.1}/s; watch row: {row}");
        let ratio = rx_pps / sent_per_second;
        assert!(
            (0.75..1.25).contains(&ratio),
            "RX PPS {rx_pps} vs sent {sent_per_second:.1}/s"
        );
        // 1000 bytes + UDP/IPv4/Ethernet headers per frame, as netlink counts them.
        let byte_ratio = rx_rate / (sent_per_second * 1042.0);
        assert!(
            (0.75..1.25).contains(&byte_ratio),
            "RX {rx_rate} B/s vs sent {sent_per_second:.1}/s"
        );
    }
}

/// Programs the default probes attach: kfree_skb and the five TCP ones.
const DEFAULT_PROGRAMS: usize = 6;

#[test]
fn watch_exits_cleanly_on_ctrl_c_and_detaches_its_probes() {
    require_root();
    let ns = Netns::new("wint");
    // The default probes: kfree_skb and the five TCP programs.
    let child = collector_command("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            COLLECTOR,
            "watch",
            "--interval",
            "200ms",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // What the watch process itself holds (`ip netns exec` execs it, so
    // the child pid is the collector's): other processes' programs cannot
    // make this pass or fail.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut held = BpfHeld::of(child.id());
    while held.attachments() < DEFAULT_PROGRAMS && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        held = BpfHeld::of(child.id());
    }
    assert!(
        (held.holds_program("kfree_skb_btf") || held.holds_program("kfree_skb"))
            && held.attachments() == DEFAULT_PROGRAMS,
        "watch loaded and attached its probes: {held:?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let stopped = Instant::now();
    let output = child.wait_with_output().unwrap();
    assert!(stopped.elapsed() < Duration::from_secs(2));
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("INTERFACE") && !text.contains('\x1b'),
        "plain frames when piped: {text}"
    );
    held.assert_released("watch left programs behind after Ctrl-C");
}

/// `snapshot` (and `watch`, built the same way) run by hand on a host
/// without tracefs mounted: the BTF-typed probe loads without it, and the
/// host's mounts are left as they were (only `serve` may mount tracefs,
/// for the classic programs). Run in a private mount namespace whose
/// tracefs and debugfs are unmounted, so the host's are untouched.
#[test]
fn snapshot_leaves_tracefs_unmounted_and_loads_the_btf_typed_probe() {
    require_root();
    let out = tempfile::tempdir().unwrap();
    let json = out.path().join("snapshot.json");
    let script = r#"set -e
tracefs_mounts() { grep -c ' - tracefs ' /proc/self/mountinfo || true; }
for _ in 1 2 3 4 5 6 7 8; do
  target=$(awk '/ - (tracefs|debugfs) / {print $5; exit}' /proc/self/mountinfo)
  [ -n "$target" ] || break
  umount -l "$target"
done
echo "before $(tracefs_mounts)"
"$0" snapshot --format json --window 0s > "$1"
echo "after $(tracefs_mounts)"
"#;
    let output = collector_command("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script])
        .args([COLLECTOR, json.to_str().unwrap()])
        .output()
        .unwrap();
    let report = text(&output);
    assert!(output.status.success(), "{report}");
    assert!(
        report.contains("before 0"),
        "tracefs still mounted: {report}"
    );
    assert!(
        report.contains("after 0"),
        "the snapshot mounted tracefs: {report}"
    );
    let snapshot: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(
        snapshot["sources"]["ebpf"]["enabled"], true,
        "tp_btf needs no tracefs: {report}"
    );
}
