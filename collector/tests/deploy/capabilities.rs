//! The DaemonSet's security context replayed with setpriv on the real binary.

use super::*;

/// Linux capability numbers of the names the manifests may use.
fn capability_number(name: &str) -> u32 {
    match name {
        "NET_ADMIN" => 12,
        "NET_RAW" => 13,
        "SYS_ADMIN" => 21,
        "SYS_RESOURCE" => 24,
        "PERFMON" => 38,
        "BPF" => 39,
        "DAC_READ_SEARCH" => 2,
        other => panic!("capability {other} unknown to this test"),
    }
}

/// How the DaemonSet confines the collector, read from the rendered base.
struct SecurityContext {
    capabilities: Vec<String>,
    uid: u64,
    no_new_privileges: bool,
    read_only_root: bool,
    tracefs_mount: String,
    tracefs_read_only: bool,
    /// Where the netns files are mounted (read-only, HostToContainer).
    netns_mount: String,
    /// A CNI results directory of the test's own, given to the collector
    /// in place of the manifest's mount of the node's (which this machine
    /// has none of), bind-mounted read-only the same way.
    cni_results: Option<PathBuf>,
    environment: Vec<(String, String)>,
    args: Vec<String>,
    port: u16,
}

impl SecurityContext {
    fn from_manifests() -> SecurityContext {
        let objects = render_overlay("base");
        let daemonset = only(&objects, "DaemonSet");
        let spec = pod_spec(daemonset);
        let container = collector_container(daemonset);
        let context = &container["securityContext"];
        assert_eq!(
            strings(&context["capabilities"]["drop"]),
            ["ALL"],
            "drop ALL first"
        );
        let uid = context["runAsUser"]
            .as_u64()
            .or(spec["securityContext"]["runAsUser"].as_u64())
            .expect("runAsUser set");
        let host_paths: BTreeMap<&str, &str> = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| Some((v["name"].as_str()?, v["hostPath"]["path"].as_str()?)))
            .collect();
        let mut tracefs = None;
        let mut netns = None;
        for mount in container["volumeMounts"].as_array().unwrap() {
            let host_path = host_paths[mount["name"].as_str().unwrap()];
            let mount_path = mount["mountPath"].as_str().unwrap();
            let read_only = mount["readOnly"] == true;
            match host_path {
                // The container's own /sys shows it already: sysfs is global.
                "/sys/kernel/btf" => assert!(read_only, "BTF mount must be read-only"),
                "/sys/kernel/tracing" => tracefs = Some((mount_path.to_string(), read_only)),
                "/var/lib/cni/results" => {
                    assert!(read_only, "CNI results mount must be read-only");
                }
                "/var/run/netns" => {
                    assert!(read_only, "netns mount must be read-only");
                    // Netns files of pods started later are mounts made
                    // later: only propagation makes them visible.
                    assert_eq!(mount["mountPropagation"], "HostToContainer");
                    netns = Some(mount_path.to_string());
                }
                other => panic!("hostPath {other}: this test does not reproduce it; extend it"),
            }
        }
        let (tracefs_mount, tracefs_read_only) = tracefs.expect("tracefs is mounted");
        let port = container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "metrics")
            .expect("port named metrics")["containerPort"]
            .as_u64()
            .unwrap() as u16;
        SecurityContext {
            capabilities: strings(&context["capabilities"]["add"]),
            uid,
            no_new_privileges: context["allowPrivilegeEscalation"] == false,
            read_only_root: context["readOnlyRootFilesystem"] == true,
            tracefs_mount,
            tracefs_read_only,
            netns_mount: netns.expect("netns files are mounted"),
            cni_results: None,
            environment: manifest_environment(&objects),
            args: strings(&container["args"]),
            port,
        }
    }

    /// `ip netns exec` gives the collector a fresh sysfs in a new mount
    /// namespace, like a container runtime; this script adds what the
    /// DaemonSet adds (tracefs, read-only), makes / and /sys read-only as
    /// the runtime does, then execs the collector under setpriv with
    /// exactly `capabilities` as uid `uid`.
    fn command(&self, ns: &Netns, capabilities: &[&str], uid: u64, args: &[&str]) -> Command {
        let set = std::iter::once("-all".to_string())
            .chain(
                capabilities
                    .iter()
                    .map(|c| format!("+{}", c.to_lowercase())),
            )
            .collect::<Vec<_>>()
            .join(",");
        let read_only = if self.tracefs_read_only { "ro," } else { "" };
        let mut script = format!(
            "set -e\nmount -t tracefs -o {read_only}nosuid,nodev,noexec tracefs {}\nmount -o remount,bind,ro /sys\n",
            self.tracefs_mount
        );
        // Recursive, as the kubelet's hostPath mounts are: each netns file
        // is a mount of its own, which a plain bind would leave behind
        // (the collector would open the empty files under them). `ip netns
        // exec` made this mount namespace a slave of the host's, as
        // HostToContainer does: netns added later still appear.
        let mut read_only_binds = vec![self.netns_mount.clone()];
        read_only_binds.extend(self.cni_results.iter().map(|d| d.display().to_string()));
        for dir in &read_only_binds {
            script.push_str(&format!(
                "mount --rbind {dir} {dir}\nmount -o remount,bind,ro {dir}\n"
            ));
        }
        if self.read_only_root {
            script.push_str("mount -o remount,bind,ro /\n");
        }
        // uid 0 gets its capabilities from the bounding set, as in a
        // container; another uid only keeps ambient ones (more than
        // Kubernetes can grant it).
        let identity = if uid == 0 {
            format!("--reuid 0 --regid 0 --clear-groups --inh-caps -all --bounding-set {set}")
        } else {
            format!("--reuid {uid} --regid {uid} --clear-groups --inh-caps {set} --ambient-caps {set} --bounding-set {set}")
        };
        let no_new_privs = if self.no_new_privileges {
            "--no-new-privs"
        } else {
            ""
        };
        script.push_str(&format!(
            "exec setpriv {identity} {no_new_privs} -- \"$@\"\n"
        ));
        let mut command = collector_command("ip");
        command
            .args([
                "netns", "exec", &ns.name, "sh", "-c", &script, "sh", COLLECTOR,
            ])
            .args(args)
            .envs(
                self.environment
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            );
        if let Some(dir) = &self.cni_results {
            command.env("COLLECTOR_CNI_RESULTS_DIR", dir);
        }
        command
    }

    /// `collector snapshot` under the given confinement: one collection,
    /// with the probes loaded if they can be.
    fn snapshot(&self, ns: &Netns, capabilities: &[&str], uid: u64) -> (Metrics, String) {
        let output = self
            .command(
                ns,
                capabilities,
                uid,
                &["snapshot", "--format", "prometheus", "--window", "0s"],
            )
            .output()
            .expect("starting confined collector");
        let log = String::from_utf8_lossy(&output.stderr).to_string();
        assert!(output.status.success(), "confined snapshot failed: {log}");
        (
            Metrics::parse(&String::from_utf8_lossy(&output.stdout)),
            log,
        )
    }
}

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
        // The manifest runs the default probes: drops only (rx/tx are opt-in).
        let programs: Vec<&str> = metrics
            .select("collector_ebpf_probe_info", &[])
            .map(|s| s.labels["program"].as_str())
            .collect();
        assert_eq!(programs, ["kfree_skb"]);
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
