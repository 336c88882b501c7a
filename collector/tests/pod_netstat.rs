//! Each pod's own SNMP counters, end to end: pods made through
//! containerd's CRI (their `cni-…` namespaces, their pause processes,
//! libcni's cache files all containerd's), real traffic into, out of and
//! between them, and every served counter compared exactly with the
//! pod's own `/proc/net/snmp`, `netstat` and `snmp6`, read inside the pod
//! with the traffic stopped. The collector reads them with no capability.
//!
//! Pods laid out by hand have no sandbox process, so these tests always
//! use containerd.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use common::*;

/// What the collector serves per pod by default, by node_exporter's
/// `<Section>_<Name>`: `network_pod_netstat_<key>_total`, without
/// `_total` for the two gauges.
const DEFAULT_FIELDS: [&str; 14] = [
    "Tcp_ActiveOpens",
    "Tcp_PassiveOpens",
    "Tcp_CurrEstab",
    "Tcp_OutSegs",
    "Tcp_RetransSegs",
    "Tcp_InErrs",
    "Tcp_OutRsts",
    "TcpExt_ListenOverflows",
    "TcpExt_ListenDrops",
    "TcpExt_TCPSynRetrans",
    "TcpExt_TCPTimeouts",
    "Udp_NoPorts",
    "Udp_InErrors",
    "Udp_RcvbufErrors",
];

/// What `--detailed-metrics` adds: the rest of node_exporter's default set.
const DETAILED_FIELDS: [&str; 20] = [
    "Tcp_InSegs",
    "TcpExt_SyncookiesSent",
    "TcpExt_SyncookiesRecv",
    "TcpExt_SyncookiesFailed",
    "TcpExt_TCPOFOQueue",
    "TcpExt_TCPRcvQDrop",
    "Udp_InDatagrams",
    "Udp_OutDatagrams",
    "Udp_SndbufErrors",
    "Udp6_InDatagrams",
    "Udp6_OutDatagrams",
    "Udp6_NoPorts",
    "Udp6_InErrors",
    "Udp6_RcvbufErrors",
    "Udp6_SndbufErrors",
    "Ip_Forwarding",
    "IpExt_InOctets",
    "IpExt_OutOctets",
    "Icmp_InMsgs",
    "Icmp_OutMsgs",
];

/// Which of the collector's profiles a test runs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Served {
    Default,
    Detailed,
}

impl Served {
    fn fields(self) -> Vec<&'static str> {
        match self {
            Served::Default => DEFAULT_FIELDS.to_vec(),
            Served::Detailed => DEFAULT_FIELDS
                .iter()
                .chain(&DETAILED_FIELDS)
                .copied()
                .collect(),
        }
    }
}

const PREFIX: &str = "network_pod_netstat_";

fn start(node: &Netns, runtime: &PodRuntime, profile: Served) -> CollectorProcess {
    let results = runtime.results_dir();
    let mut args = vec![
        "--cni-results-dir",
        results.to_str().unwrap(),
        "--netns-dir",
        "/var/run/netns",
        "--host-proc",
        "/proc",
    ];
    if profile == Served::Detailed {
        args.push("--detailed-metrics");
    }
    let collector = CollectorProcess::start(node, &args);
    let status = std::fs::read_to_string(format!("/proc/{}/status", collector.pid())).unwrap();
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap();
    assert_eq!(
        effective.trim(),
        "0000000000000000",
        "pods' counters are read without capabilities"
    );
    collector
}

/// `ns`'s own counters of every field either profile serves, read by a
/// process inside it, parsed here without the collector's parser.
fn own_counters(ns: &Netns) -> BTreeMap<String, u64> {
    let read = |file: &str| {
        let out = ns.exec(&["cat", file]);
        assert!(out.status.success(), "cat {file} in {}", ns.name);
        String::from_utf8(out.stdout).unwrap()
    };
    let mut all = BTreeMap::new();
    for file in ["/proc/net/snmp", "/proc/net/netstat"] {
        let text = read(file);
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.chunks(2) {
            let (section, names) = pair[0].split_once(": ").unwrap();
            let (_, values) = pair[1].split_once(": ").unwrap();
            for (name, value) in names.split(' ').zip(values.split(' ')) {
                all.insert(format!("{section}_{name}"), value.to_string());
            }
        }
    }
    for line in read("/proc/net/snmp6").lines() {
        let (name, value) = line.split_once(char::is_whitespace).unwrap();
        if let Some(udp6) = name.strip_prefix("Udp6") {
            all.insert(format!("Udp6_{udp6}"), value.trim().to_string());
        }
    }
    Served::Detailed
        .fields()
        .into_iter()
        .map(|f| (f.to_string(), all[f].parse().unwrap()))
        .collect()
}

/// What the collector served for `pod`: key -> value. Checks the labels
/// each series carries on the way.
fn served(metrics: &Metrics, pod: &Pod) -> BTreeMap<String, u64> {
    let mut counters = BTreeMap::new();
    for sample in &metrics.samples {
        let Some(family) = sample.name.strip_prefix(PREFIX) else {
            continue;
        };
        let key = family.strip_suffix("_total").unwrap_or(family);
        if sample.labels.get("namespace") != Some(&pod.namespace)
            || sample.labels.get("pod") != Some(&pod.name)
        {
            continue;
        }
        let names: Vec<&str> = sample.labels.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["host", "hostname", "namespace", "pod"],
            "{sample:?}"
        );
        let kind = &metrics.types[&sample.name];
        let gauge = ["Tcp_CurrEstab", "Ip_Forwarding"].contains(&key);
        assert_eq!(kind, if gauge { "gauge" } else { "counter" }, "{key}");
        assert_eq!(family.ends_with("_total"), !gauge, "{}", sample.name);
        let old = counters.insert(key.to_string(), sample.value as u64);
        assert!(old.is_none(), "{key} served twice for {}", pod.name);
    }
    counters
}

/// The pods every `network_pod_netstat_*` series names.
fn served_pods(metrics: &Metrics) -> std::collections::BTreeSet<(String, String)> {
    metrics
        .samples
        .iter()
        .filter(|s| s.name.starts_with(PREFIX))
        .map(|s| (s.labels["namespace"].clone(), s.labels["pod"].clone()))
        .collect()
}

/// A pod's counters served and read inside it with nothing in flight:
/// read inside, scrape, read inside again; the two inside readings must
/// agree (nothing moved), and the served ones must equal them, field for
/// field, exactly the profile's fields.
fn assert_served_exactly(
    collector: &CollectorProcess,
    node: &Netns,
    pods: &[&Pod],
    profile: Served,
) -> Metrics {
    let before: Vec<_> = pods.iter().map(|p| own_counters(&p.netns)).collect();
    let metrics = collector.scrape(node);
    for (pod, before) in pods.iter().zip(&before) {
        let after = own_counters(&pod.netns);
        assert_eq!(
            before, &after,
            "{}: the pod's counters moved while compared",
            pod.name
        );
        let served = served(&metrics, pod);
        println!("{}: served {served:?}", pod.name);
        let expected: BTreeMap<String, u64> = profile
            .fields()
            .into_iter()
            .map(|f| (f.to_string(), before[f]))
            .collect();
        assert_eq!(
            served, expected,
            "{}: served ({profile:?}) against its own",
            pod.name
        );
    }
    metrics
}

fn settle() {
    // Delayed ACKs leave within 200 ms (TCP_DELACK_MAX).
    std::thread::sleep(Duration::from_millis(600));
}

#[test]
fn every_served_counter_equals_the_pods_own_and_no_other_namespace_reaches_a_pod() {
    require_root();
    let node = Netns::new("snnode");
    let runtime = PodRuntime::containerd(&node, 60);
    let server = runtime.run_pod(("shop", "cart-0"));
    let client = runtime.run_pod(("shop", "web-7d9f8c6b5-abcde"));
    for pod in [&server, &client] {
        pod.pin_neighbours();
    }
    // A namespace that is no pod's, with a process in it and traffic of
    // its own: none of it may show up under a pod.
    let stray = Netns::new("snstray");
    stray.ip(&["link", "set", "lo", "up"]);
    let collector = start(&node, &runtime, Served::Default);

    let listener = server
        .netns
        .run_in(|| TcpListener::bind("0.0.0.0:8080").unwrap());
    let udp_server = server
        .netns
        .run_in(|| UdpSocket::bind("0.0.0.0:5353").unwrap());
    let to_server =
        |port: u16| -> SocketAddr { format!("{}:{port}", server.pod_address).parse().unwrap() };
    // TCP between the pods: connections made, data both ways, kept open
    // (CurrEstab), and refused connects to a closed port (OutRsts).
    let (clients, accepted) = client.netns.run_in(|| {
        let mut clients = Vec::new();
        let mut accepted = Vec::new();
        for _ in 0..4 {
            let mut stream =
                TcpStream::connect_timeout(&to_server(8080), Duration::from_secs(5)).unwrap();
            let (mut peer, _) = listener.accept().unwrap();
            stream.write_all(&[7u8; 20_000]).unwrap();
            let mut buffer = vec![0u8; 20_000];
            peer.read_exact(&mut buffer).unwrap();
            peer.write_all(b"ok").unwrap();
            stream.read_exact(&mut [0u8; 2]).unwrap();
            clients.push(stream);
            accepted.push(peer);
        }
        for _ in 0..3 {
            let refused = TcpStream::connect_timeout(&to_server(81), Duration::from_secs(5));
            assert!(refused.is_err(), "port 81 of the server pod is closed");
        }
        (clients, accepted)
    });
    // A listener whose accept queue (backlog 1) is full: the SYNs beyond it
    // are dropped (ListenOverflows, ListenDrops) and retransmitted by the
    // client (TCPSynRetrans, RetransSegs, TCPTimeouts) until it gives up
    // and closes them in SYN_SENT, so nothing is left in flight. The two
    // the queue holds stay, never accepted.
    let full = server.netns.run_in(|| {
        let listener = TcpListener::bind("0.0.0.0:8081").unwrap();
        // SAFETY: listen(2) on the listener's own open fd; it only
        // changes the backlog of a socket already listening.
        let rc = unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&listener), 1) };
        assert_eq!(rc, 0, "listen with a backlog of 1");
        listener
    });
    let queued = client.netns.run_in(|| {
        let queued: Vec<TcpStream> = (0..2)
            .map(|_| TcpStream::connect_timeout(&to_server(8081), Duration::from_secs(5)).unwrap())
            .collect();
        std::thread::scope(|scope| {
            for _ in 0..3 {
                scope.spawn(|| {
                    let dropped =
                        TcpStream::connect_timeout(&to_server(8081), Duration::from_millis(1500));
                    assert!(dropped.is_err(), "the accept queue is full");
                });
            }
        });
        queued
    });
    // UDP: delivered and read, and to a closed port (NoPorts, and the
    // pod's ICMP port unreachable, OutMsgs).
    client.netns.run_in(|| {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..10 {
            socket.send_to(b"query", to_server(5353)).unwrap();
        }
    });
    udp_server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    for _ in 0..10 {
        udp_server.recv_from(&mut [0u8; 64]).unwrap();
    }
    send_udp(&node, &format!("{}:9", server.pod_address), 20, 64);
    // From the pod to a closed port of the node: the node's ICMP in the
    // pod's InMsgs.
    server.netns.run_in(|| {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..5 {
            socket
                .send_to(b"x", format!("{}:9", server.gateway()))
                .unwrap();
        }
    });
    // UDP over IPv6 inside the server pod, on its loopback (the test
    // pods have IPv6 off; lo gets it back): delivered, and to a closed port.
    server
        .netns
        .exec(&["sysctl", "-qw", "net.ipv6.conf.lo.disable_ipv6=0"]);
    server.netns.run_in(|| {
        let receiver = UdpSocket::bind("[::1]:5353").unwrap();
        let sender = UdpSocket::bind("[::1]:0").unwrap();
        for _ in 0..4 {
            sender.send_to(b"v6", "[::1]:5353").unwrap();
        }
        receiver
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        for _ in 0..4 {
            receiver.recv_from(&mut [0u8; 16]).unwrap();
        }
        for _ in 0..3 {
            sender.send_to(b"v6", "[::1]:9").unwrap();
        }
    });
    stray.run_in(|| {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..37 {
            socket.send_to(b"stray", "127.0.0.1:9").unwrap();
        }
    });
    let _stray_process = StrayProcess::start(&stray);
    settle();

    let lean = assert_served_exactly(&collector, &node, &[&server, &client], Served::Default);
    // The same pods, the same frozen counters, through --detailed-metrics.
    drop(collector);
    let collector = start(&node, &runtime, Served::Detailed);
    let metrics = assert_served_exactly(&collector, &node, &[&server, &client], Served::Detailed);
    let own = own_counters(&server.netns);
    for key in [
        "Tcp_PassiveOpens",
        "Tcp_CurrEstab",
        "Tcp_OutRsts",
        "Udp_InDatagrams",
        "Udp_NoPorts",
        "Icmp_InMsgs",
        "Icmp_OutMsgs",
        "IpExt_InOctets",
    ] {
        assert!(
            own[key] > 0,
            "the traffic reached the server pod's {key}: {own:?}"
        );
    }
    assert_eq!(own["Udp_NoPorts"], 20);
    assert_eq!(own["Udp6_InDatagrams"], 4);
    assert_eq!(own["Udp6_NoPorts"], 3);
    assert_eq!(own["Tcp_CurrEstab"], 6, "4 accepted, 2 queued");
    assert!(own["TcpExt_ListenOverflows"] >= 3, "{own:?}");
    let client_own = own_counters(&client.netns);
    assert_eq!(client_own["Tcp_ActiveOpens"], 4 + 3 + 2 + 3);
    assert!(client_own["TcpExt_TCPSynRetrans"] >= 3, "{client_own:?}");
    assert!(client_own["Tcp_RetransSegs"] >= 3, "{client_own:?}");
    assert_eq!(own_counters(&stray)["Udp_NoPorts"], 37);
    let expected = [&server, &client]
        .iter()
        .map(|p| (p.namespace.clone(), p.name.clone()))
        .collect();
    assert_tcp_trouble_table(
        &node,
        &runtime,
        &[(&server, own.clone()), (&client, client_own.clone())],
    );
    for metrics in [&lean, &metrics] {
        let pods = served_pods(metrics);
        assert_eq!(pods, expected, "only the pods' namespaces are served");
        assert_eq!(
            metrics.value(
                "collector_pod_netstat_errors_total",
                &[("reason", "process")]
            ),
            0.0
        );
    }
    drop((clients, accepted, queued, full));
}

#[test]
fn a_pod_deleted_and_made_again_starts_at_its_new_namespaces_counters() {
    require_root();
    let node = Netns::new("snnode");
    let runtime = PodRuntime::containerd(&node, 61);
    let name = ("shop", "cart-0");
    let pod = runtime.run_pod(name);
    pod.pin_neighbours();
    let collector = start(&node, &runtime, Served::Default);
    send_udp(&node, &format!("{}:9", pod.pod_address), 30, 64);
    settle();
    let metrics = assert_served_exactly(&collector, &node, &[&pod], Served::Default);
    assert_eq!(served(&metrics, &pod)["Udp_NoPorts"], 30);

    pod.delete();
    let metrics = collector.scrape(&node);
    assert!(
        served_pods(&metrics).is_empty(),
        "a deleted pod is not served"
    );

    let again = runtime.run_pod(name);
    again.pin_neighbours();
    let metrics = assert_served_exactly(&collector, &node, &[&again], Served::Default);
    let counters = served(&metrics, &again);
    assert_eq!(
        counters["Udp_NoPorts"], 0,
        "the new namespace's own, not the old one's"
    );
    send_udp(&node, &format!("{}:9", again.pod_address), 7, 64);
    settle();
    let metrics = assert_served_exactly(&collector, &node, &[&again], Served::Default);
    assert_eq!(served(&metrics, &again)["Udp_NoPorts"], 7);
    assert_eq!(
        metrics.value(
            "collector_pod_netstat_errors_total",
            &[("reason", "process")]
        ),
        0.0
    );
}

/// `collector snapshot`'s "TCP trouble in pods" section lists `pods`,
/// each with its own counters (`own`, read inside it): the columns as the
/// section's header names them.
fn assert_tcp_trouble_table(
    node: &Netns,
    runtime: &PodRuntime,
    pods: &[(&Pod, BTreeMap<String, u64>)],
) {
    let results = runtime.results_dir();
    let mut args = vec!["netns", "exec", node.name.as_str(), COLLECTOR];
    args.extend_from_slice(&[
        "snapshot",
        "--format",
        "table",
        "--no-ebpf",
        "--cni-results-dir",
        results.to_str().unwrap(),
        "--netns-dir",
        "/var/run/netns",
        "--host-proc",
        "/proc",
    ]);
    let out = collector_command("ip").args(&args).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let section: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("TCP TROUBLE IN PODS"))
        .collect();
    assert!(section.len() >= 2, "no TCP trouble section in {text}");
    println!("{}", section.join("\n"));
    let header = section[1];
    assert!(header.starts_with("POD "), "{header}");
    for (pod, own) in pods {
        let label = format!("{}/{}", pod.namespace, pod.name);
        let row = section
            .iter()
            .find(|l| l.split_whitespace().next() == Some(label.as_str()))
            .unwrap_or_else(|| panic!("{label} not in {section:?}"));
        let cells: Vec<&str> = row.split_whitespace().skip(1).collect();
        let expected = [
            own["Tcp_RetransSegs"].to_string(),
            if own["Tcp_OutSegs"] == 0 {
                "-".to_string()
            } else {
                format!(
                    "{:.1}%",
                    own["Tcp_RetransSegs"] as f64 / own["Tcp_OutSegs"] as f64 * 100.0
                )
            },
            own["TcpExt_TCPSynRetrans"].to_string(),
            own["TcpExt_TCPTimeouts"].to_string(),
            own["Tcp_OutRsts"].to_string(),
            own["TcpExt_ListenOverflows"].to_string(),
        ];
        // The columns after the MIB's come from the TCP probes, which
        // --no-ebpf leaves unread: shown as `-`, never as a number.
        assert!(cells.len() > expected.len(), "{label}: {header} / {row}");
        assert_eq!(
            cells[..expected.len()],
            expected,
            "{label}: {header} / {row}"
        );
        assert!(
            cells[expected.len()..].iter().all(|c| *c == "-"),
            "{label}: {header} / {row}"
        );
    }
}

/// A process living in a namespace no pod owns; killed on drop.
struct StrayProcess(std::process::Child);

impl StrayProcess {
    fn start(ns: &Netns) -> StrayProcess {
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", &ns.name, "sleep", "600"])
            .spawn()
            .unwrap();
        StrayProcess(child)
    }
}

impl Drop for StrayProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The pid of the process whose cgroup names sandbox `id`.
fn sandbox_pid(id: &str) -> u32 {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| c.contains(id))
        })
        .unwrap_or_else(|| panic!("no process of sandbox {id}"))
}

#[test]
fn a_pod_whose_process_is_not_found_is_counted_once_and_hides_nothing_else() {
    require_root();
    let node = Netns::new("snnode");
    let runtime = PodRuntime::containerd(&node, 62);
    let pod = runtime.run_pod(("shop", "cart-0"));
    // What the design rests on, with no capability: the pause process's
    // MIB files read, its namespace link refused (ptrace access).
    let pid = sandbox_pid(&pod.container_id);
    let unprivileged = |args: &[&str]| {
        std::process::Command::new("setpriv")
            .args(["--inh-caps=-all", "--bounding-set=-all", "--"])
            .args(args)
            .output()
            .unwrap()
    };
    let snmp = unprivileged(&["cat", &format!("/proc/{pid}/net/snmp")]);
    assert!(snmp.status.success(), "{snmp:?}");
    let link = unprivileged(&["stat", "-L", &format!("/proc/{pid}/ns/net")]);
    assert!(
        !link.status.success(),
        "/proc/PID/ns/net needs ptrace access: {link:?}"
    );
    assert!(
        String::from_utf8_lossy(&link.stderr).contains("Permission denied"),
        "{link:?}"
    );

    // A --host-proc with no processes in it: the pod cannot be read.
    let empty = tempfile::tempdir().unwrap();
    let results = runtime.results_dir();
    let collector = CollectorProcess::start(
        &node,
        &[
            "--cni-results-dir",
            results.to_str().unwrap(),
            "--host-proc",
            empty.path().to_str().unwrap(),
        ],
    );
    for _ in 0..3 {
        let metrics = collector.scrape(&node);
        assert!(served_pods(&metrics).is_empty());
        let errors =
            |reason| metrics.value("collector_pod_netstat_errors_total", &[("reason", reason)]);
        assert_eq!(errors("process"), 1.0, "counted once, not per scrape");
        assert_eq!(
            (errors("proc"), errors("read"), errors("malformed")),
            (0.0, 0.0, 0.0)
        );
        // The pod is still known, its veth named.
        let info = metrics
            .select("network_interface_pod_info", &[("pod", "cart-0")])
            .count();
        assert_eq!(info, 1);
    }
}
