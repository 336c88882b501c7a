//! The DaemonSet's security context replayed with setpriv on the real binary.

mod security_context;

use super::*;
use security_context::*;

/// The collector serving under the DaemonSet's confinement; stopped on drop.
struct ConfinedCollector {
    child: Child,
    log: PathBuf,
    _log_dir: tempfile::TempDir,
}

impl ConfinedCollector {
    fn start(context: &SecurityContext, ns: &Netns, capabilities: &[&str]) -> ConfinedCollector {
        let log_dir = tempfile::tempdir().unwrap();
        let log = log_dir.path().join("collector.log");
        let args: Vec<&str> = context.args.iter().map(String::as_str).collect();
        let child = context
            .command(ns, capabilities, context.uid, &args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting confined collector");
        let collector = ConfinedCollector {
            child,
            log,
            _log_dir: log_dir,
        };
        wait_for_http_ok(ns, context.port, "/readyz", || {
            format!("confined collector never became ready: {}", collector.log())
        });
        collector
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A line of /proc/<pid>/status of the collector (`ip netns exec`,
    /// `sh` and `setpriv` all exec, so the child pid is the collector's).
    fn status(&self, field: &str) -> String {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .unwrap_or_else(|| panic!("{field} not in status"))
            .trim()
            .to_string()
    }
}

impl Drop for ConfinedCollector {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

fn scrape(ns: &Netns, port: u16) -> Metrics {
    let (status, body) = http(ns, port, "GET", "/metrics").expect("scrape failed");
    assert_eq!(status, 200, "{body}");
    Metrics::parse(&body)
}

#[test]
fn manifest_capabilities_are_sufficient_each_is_needed_and_uid_0_is_required() {
    require_root();
    require_python_modules();
    let setpriv = tool("setpriv", &["--version"], None);
    assert!(setpriv.status.success(), "setpriv: {}", text(&setpriv));
    let mut context = SecurityContext::from_manifests();
    let ns = Netns::new("caps");
    let peer = Netns::new("capspeer");
    let pair = VethPair::new(&ns, "eth0", &peer, "pod0", 70);
    // A pod whose cache file (0600 in a 0700 directory, root's) and netns
    // file must be readable by uid 0 once every capability is gone.
    let results = tempfile::tempdir().unwrap();
    let pod = CniPod::start(
        &ns,
        results.path(),
        ("shop", "cart-0"),
        "azure",
        "azvcaps0a1b2c3",
        69,
    );
    context.cni_results = Some(results.path().to_path_buf());
    let capabilities: Vec<&str> = context.capabilities.iter().map(String::as_str).collect();
    println!("DaemonSet grants {capabilities:?} as uid {}", context.uid);
    let sent = 50;

    // Exactly the manifest's set: probes load, attach and count.
    {
        let collector = ConfinedCollector::start(&context, &ns, &capabilities);
        let expected_mask: u64 = capabilities
            .iter()
            .map(|c| 1u64 << capability_number(c))
            .sum();
        // The container's grant is the bounding set; the collector attaches
        // with it and then drops everything it holds (see `privileges`).
        assert_eq!(
            u64::from_str_radix(&collector.status("CapBnd"), 16).unwrap(),
            expected_mask,
            "the collector must run with exactly the manifest's capabilities"
        );
        assert_eq!(collector.status("NoNewPrivs"), "1");
        let metrics = scrape(&ns, context.port);
        assert_eq!(
            u64::from_str_radix(&collector.status("CapEff"), 16).unwrap(),
            0,
            "capabilities dropped once the probes are attached"
        );
        assert_eq!(
            metrics.value("collector_ebpf_enabled", &[]),
            1.0,
            "eBPF must work with {capabilities:?}: {}",
            collector.log()
        );
        // The manifest runs the default probes: drops and TCP (rx/tx are
        // opt-in).
        let programs: Vec<&str> = metrics
            .select("collector_ebpf_probe_info", &[])
            .map(|s| s.labels["program"].as_str())
            .collect();
        assert_eq!(
            programs,
            [
                "kfree_skb",
                "inet_sock_set_state",
                "tcp_retransmit_skb",
                "tcp_retransmit_synack",
                "tcp_send_reset",
                "tcp_receive_reset"
            ]
        );
        for program in &programs {
            assert_eq!(
                metrics.value("collector_ebpf_probe_attached", &[("program", program)]),
                1.0,
                "{program} attached"
            );
        }
        assert_eq!(
            metrics.value("collector_ebpf_probe_attached", &[("program", "kfree_skb")]),
            1.0,
            "kfree_skb attached"
        );
        assert_eq!(
            metrics.value(
                "network_interface_pod_info",
                &[
                    ("interface", pod.veth()),
                    ("namespace", "shop"),
                    ("pod", "cart-0")
                ]
            ),
            1.0,
            "pod identity read without capabilities, under read-only mounts: {:?} {}",
            metrics
                .select("collector_pod_identity_errors_total", &[])
                .collect::<Vec<_>>(),
            collector.log()
        );
        assert_eq!(metrics.value("collector_pod_identity_up", &[]), 1.0);
        // Nothing listens on port 9: every datagram is a NO_SOCKET drop.
        send_udp(&peer, &format!("{}:9", pair.a_addr), sent, 64);
        let metrics = scrape(&ns, context.port);
        assert!(
            metrics.value(
                "network_interface_drops_total",
                &[("interface", "eth0"), ("reason", "NO_SOCKET")]
            ) >= sent as f64,
            "drop reasons counted under the manifest's capabilities"
        );
    }

    // Minimal: without any one of them the probes do not load.
    for missing in &capabilities {
        let fewer: Vec<&str> = capabilities
            .iter()
            .copied()
            .filter(|c| c != missing)
            .collect();
        let (metrics, log) = context.snapshot(&ns, &fewer, context.uid);
        assert_eq!(
            metrics.value("collector_ebpf_enabled", &[]),
            0.0,
            "{missing} is not needed after all (ran with {fewer:?}): {log}"
        );
        println!("without {missing}: eBPF disabled as expected");
    }

    // No capability at all: eBPF off, netlink metrics still served and ready.
    {
        let collector = ConfinedCollector::start(&context, &ns, &[]);
        assert_eq!(
            u64::from_str_radix(&collector.status("CapEff"), 16).unwrap(),
            0
        );
        let before = scrape(&ns, context.port);
        send_udp(&peer, &format!("{}:9", pair.a_addr), sent, 64);
        let after = scrape(&ns, context.port);
        assert_eq!(after.value("collector_ebpf_enabled", &[]), 0.0);
        let eth0 = [("interface", "eth0")];
        assert!(
            after.value("network_interface_stats_rx_packets", &eth0)
                - before.value("network_interface_stats_rx_packets", &eth0)
                >= sent as f64,
            "netlink metrics keep flowing without capabilities"
        );
        assert!(
            collector.log().contains("eBPF disabled"),
            "the reason is logged: {}",
            collector.log()
        );
    }

    // uid 0 is what reads the CNI result cache (0600 files in a 0700
    // directory, root's) and, for the classic fallback, tracefs (0700,
    // root's). Another uid with the same capabilities, even as ambient
    // ones, loads the BTF-typed probes (they need neither) but names no
    // pod, and gets no classic probe.
    let (metrics, log) = context.snapshot(&ns, &capabilities, 65534);
    assert_eq!(metrics.value("collector_ebpf_enabled", &[]), 1.0, "{log}");
    assert!(
        metrics
            .select("network_interface_pod_info", &[])
            .next()
            .is_none(),
        "a pod named without reading its cache file: {log}"
    );
    assert!(
        metrics.value("collector_pod_identity_errors_total", &[("reason", "file")]) >= 1.0,
        "{log}"
    );
    let classic = context
        .command(
            &ns,
            &capabilities,
            65534,
            &[
                "snapshot",
                "--format",
                "prometheus",
                "--window",
                "0s",
                "--ebpf-flavour",
                "classic",
            ],
        )
        .output()
        .expect("starting confined collector");
    let log = String::from_utf8_lossy(&classic.stderr);
    let metrics = Metrics::parse(&String::from_utf8_lossy(&classic.stdout));
    assert_eq!(metrics.value("collector_ebpf_enabled", &[]), 0.0, "{log}");
    assert!(log.contains("tracefs"), "non-root fails on tracefs: {log}");
}
