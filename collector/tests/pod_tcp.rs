//! Why a pod's TCP connections fail, end to end: two pods made through
//! containerd's CRI (by hand in the kernel matrix), real connections
//! between them made to be refused, to time out, to retransmit and to be
//! reset, and every count compared with the pods' own kernel counters
//! (`/proc/net/snmp`, `netstat`) read inside each pod.
//!
//! Every test runs once per program flavour (tp_btf, classic).

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::*;

/// What the collector served for `pod` of `network_pod_tcp_*`: (family
/// without the prefix, its own labels joined) -> value.
fn served(metrics: &Metrics, pod: &Pod) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    for sample in &metrics.samples {
        let Some(family) = sample.name.strip_prefix("network_pod_tcp_") else {
            continue;
        };
        if sample.labels.get("namespace") != Some(&pod.namespace)
            || sample.labels.get("pod") != Some(&pod.name)
        {
            continue;
        }
        let own: Vec<String> = sample
            .labels
            .iter()
            .filter(|(k, _)| !["namespace", "pod", "host", "hostname"].contains(&k.as_str()))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        out.insert((family.to_string(), own.join(",")), sample.value);
    }
    out
}

fn key(family: &str, labels: &str) -> (String, String) {
    (family.to_string(), labels.to_string())
}

/// `Section_Name` -> value of `ns`'s `/proc/net/snmp` and `netstat`, read
/// by a process inside it.
fn own(ns: &Netns) -> BTreeMap<String, f64> {
    let mut all = BTreeMap::new();
    for file in ["/proc/net/snmp", "/proc/net/netstat"] {
        let out = ns.exec(&["cat", file]);
        assert!(out.status.success(), "cat {file} in {}", ns.name);
        let text = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.chunks(2) {
            let (section, names) = pair[0].split_once(": ").unwrap();
            let (_, values) = pair[1].split_once(": ").unwrap();
            for (name, value) in names.split(' ').zip(values.split(' ')) {
                all.insert(format!("{section}_{name}"), value.parse().unwrap());
            }
        }
    }
    all
}

/// How much each of `fields` of `ns` moved while `f` ran.
fn own_moved(ns: &Netns, fields: &[&str], f: impl FnOnce()) -> BTreeMap<String, f64> {
    let before = own(ns);
    f();
    let after = own(ns);
    fields
        .iter()
        .map(|field| (field.to_string(), after[*field] - before[*field]))
        .collect()
}

/// Delayed ACKs and the last state changes of closed sockets settle.
fn settle() {
    std::thread::sleep(Duration::from_millis(400));
}

/// An nftables table in the node's namespace dropping what `matches` on
/// ingress of `veth` (the client pod's host veth: every packet the pod
/// sends enters there, bridged or routed); removed on drop.
struct VethFilter<'a> {
    node: &'a Netns,
    table: String,
}

impl<'a> VethFilter<'a> {
    fn drop(node: &'a Netns, veth: &str, matches: &str) -> VethFilter<'a> {
        let table = format!("podtcp_{}", unique_hex(8));
        let rule = format!(
            "table netdev {table} {{ chain ingress {{ type filter hook ingress device \"{veth}\" priority 0; policy accept; {matches} counter drop; }}; }}"
        );
        let out = node.exec(&["nft", &rule]);
        assert!(out.status.success(), "nft {rule}: {}", text(&out));
        VethFilter { node, table }
    }

    /// Packets the rule dropped.
    fn dropped(&self) -> u64 {
        let out = self
            .node
            .exec(&["nft", "list", "table", "netdev", &self.table]);
        let listing = String::from_utf8_lossy(&out.stdout).into_owned();
        let after = listing.split("counter packets ").nth(1).expect("a counter");
        after.split_whitespace().next().unwrap().parse().unwrap()
    }
}

impl Drop for VethFilter<'_> {
    fn drop(&mut self) {
        self.node
            .exec(&["nft", "delete", "table", "netdev", &self.table]);
    }
}

/// Whether the running kernel fires `tcp:tcp_send_reset` for a reset sent
/// without a full socket (a segment to a closed port, a TIME_WAIT socket's
/// answer): since 6.10 ("trace: tcp: fully support trace_tcp_send_reset");
/// before, only for resets of a full socket.
fn socketless_resets_traced() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut numbers = release
        .trim()
        .split(['.', '-', '+'])
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    version >= (6, 10)
}

fn start(node: &Netns, runtime: &PodRuntime, flavour: &str) -> CollectorProcess {
    let results = runtime.results_dir();
    start_flavour(
        node,
        flavour,
        &[
            "--cni-results-dir",
            results.to_str().unwrap(),
            "--netns-dir",
            "/var/run/netns",
            "--ebpf-probes",
            "drops,tcp",
        ],
    )
}

#[test]
fn connect_outcomes_retransmits_and_resets_are_each_pods_own_exactly() {
    each_flavour(tcp_health_matches_the_kernel);
}

fn tcp_health_matches_the_kernel(flavour: &str) {
    let node = Netns::new("ptnode");
    let runtime = PodRuntime::start(&node, 70);
    let server = runtime.run_pod(("shop", "cart-0"));
    let client = runtime.run_pod(("shop", "web-7d9f8c6b5-abcde"));
    for pod in [&server, &client] {
        pod.pin_neighbours();
    }
    let collector = start(&node, &runtime, flavour);
    let to_server =
        |port: u16| -> SocketAddr { format!("{}:{port}", server.pod_address).parse().unwrap() };
    let scrape = || {
        let metrics = collector.scrape(&node);
        (served(&metrics, &server), served(&metrics, &client))
    };

    // Refused: SYNs to a closed port of the server, each answered by a
    // reset no socket sends (the server's OutRsts; a sent reset the
    // kernel traces since 6.10 only), received by the client, which
    // closes in SYN_SENT with ECONNREFUSED.
    const REFUSED: usize = 5;
    let before = scrape();
    let server_moved = own_moved(&server.netns, &["Tcp_OutRsts"], || {
        client.netns.run_in(|| {
            for _ in 0..REFUSED {
                let refused = TcpStream::connect_timeout(&to_server(81), Duration::from_secs(5));
                assert!(refused.is_err(), "port 81 of the server is closed");
            }
        });
        settle();
    });
    let after = scrape();
    let (server_delta, client_delta) = (changed(&before.0, &after.0), changed(&before.1, &after.1));
    println!("{flavour}: refused: server {server_delta:?} client {client_delta:?} kernel {server_moved:?}");
    assert_eq!(server_moved["Tcp_OutRsts"], REFUSED as f64);
    let socketless = if socketless_resets_traced() {
        BTreeMap::from([(key("resets_total", "direction=sent"), REFUSED as f64)])
    } else {
        BTreeMap::new()
    };
    assert_eq!(server_delta, socketless);
    assert_eq!(
        client_delta,
        BTreeMap::from([
            (
                key("connections_total", "outcome=refused,side=connect"),
                REFUSED as f64
            ),
            (key("resets_total", "direction=received"), REFUSED as f64),
        ])
    );

    // Established: handshakes both sides count, with their RTTs.
    const OPENED: usize = 3;
    let listener = server
        .netns
        .run_in(|| TcpListener::bind("0.0.0.0:8080").unwrap());
    let before = scrape();
    let (client_moved, mut streams) = {
        let mut streams = Vec::new();
        let moved = own_moved(&client.netns, &["Tcp_ActiveOpens"], || {
            client.netns.run_in(|| {
                for _ in 0..OPENED {
                    let stream =
                        TcpStream::connect_timeout(&to_server(8080), Duration::from_secs(5))
                            .unwrap();
                    let (peer, _) = listener.accept().unwrap();
                    streams.push((stream, peer));
                }
            });
            settle();
        });
        (moved, streams)
    };
    let after = scrape();
    let (server_delta, client_delta) = (changed(&before.0, &after.0), changed(&before.1, &after.1));
    println!("{flavour}: opened: server {server_delta:?} client {client_delta:?}");
    assert_eq!(client_moved["Tcp_ActiveOpens"], OPENED as f64);
    let n = OPENED as f64;
    assert_eq!(
        client_delta[&key("connections_total", "outcome=established,side=connect")],
        n
    );
    assert_eq!(
        client_delta[&key("handshake_rtt_seconds_count", "side=connect")],
        n
    );
    assert_eq!(
        client_delta[&key("handshake_rtt_seconds_bucket", "le=+Inf,side=connect")],
        n
    );
    assert_eq!(
        server_delta[&key("connections_total", "outcome=established,side=accept")],
        n
    );
    assert_eq!(
        server_delta[&key("handshake_rtt_seconds_count", "side=accept")],
        n
    );
    // Between two pods on one bridge a handshake takes well under 0.5 s.
    assert_eq!(
        client_delta[&key("handshake_rtt_seconds_bucket", "le=0.5,side=connect")],
        n
    );

    // Data retransmits: the client's segments dropped on its host veth
    // until a few retransmits went, then let through; each retransmit
    // event here is one segment (a write of 1 byte), so the count equals
    // the client's RetransSegs exactly.
    let (stream, peer) = &mut streams[0];
    let before = scrape();
    let client_moved = own_moved(&client.netns, &["Tcp_RetransSegs"], || {
        let filter = VethFilter::drop(
            &node,
            client.veth(),
            &format!("ip daddr {} tcp dport 8080", server.pod_address),
        );
        stream.write_all(b"x").unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        assert!(filter.dropped() >= 2, "the segment was retransmitted");
        drop(filter);
        peer.set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let mut byte = [0u8; 1];
        peer.read_exact(&mut byte).unwrap();
        settle();
    });
    let after = scrape();
    let client_delta = changed(&before.1, &after.1);
    println!("{flavour}: data retransmits: client {client_delta:?} kernel {client_moved:?}");
    assert!(client_moved["Tcp_RetransSegs"] >= 2.0);
    assert_eq!(
        client_delta,
        BTreeMap::from([(
            key("retransmits_total", "kind=data"),
            client_moved["Tcp_RetransSegs"]
        )])
    );

    // Reset of an established connection: the server aborts it (linger 0),
    // sending a reset with its socket; the client receives it and its
    // connection closes with ECONNRESET.
    let (stream, peer) = streams.pop().unwrap();
    let before = scrape();
    let server_moved = own_moved(&server.netns, &["Tcp_OutRsts"], || {
        reset_on_close(peer);
        settle();
        let mut buffer = [0u8; 1];
        let read = (&stream).read(&mut buffer);
        assert!(read.is_err(), "the client's connection was reset: {read:?}");
    });
    let after = scrape();
    let (server_delta, client_delta) = (changed(&before.0, &after.0), changed(&before.1, &after.1));
    println!("{flavour}: reset: server {server_delta:?} client {client_delta:?}");
    assert_eq!(server_moved["Tcp_OutRsts"], 1.0);
    assert_eq!(
        server_delta,
        BTreeMap::from([(key("resets_total", "direction=sent"), 1.0)])
    );
    assert_eq!(
        client_delta,
        BTreeMap::from([
            (key("resets_total", "direction=received"), 1.0),
            (key("aborts_total", "error=reset"), 1.0),
        ])
    );
    drop(stream);

    // Timed out: SYNs to a port whose SYNs are dropped on the client's
    // host veth, with one SYN retransmit allowed: SYN retransmits, then
    // SYN_SENT -> CLOSE with ETIMEDOUT.
    client
        .netns
        .exec(&["sysctl", "-qw", "net.ipv4.tcp_syn_retries=1"]);
    let _listener = server
        .netns
        .run_in(|| TcpListener::bind("0.0.0.0:9090").unwrap());
    let before = scrape();
    let client_moved = own_moved(
        &client.netns,
        &["Tcp_RetransSegs", "TcpExt_TCPSynRetrans"],
        || {
            let _filter = VethFilter::drop(
                &node,
                client.veth(),
                &format!("ip daddr {} tcp dport 9090", server.pod_address),
            );
            client.netns.run_in(|| {
                let timed_out =
                    TcpStream::connect_timeout(&to_server(9090), Duration::from_secs(30));
                assert!(timed_out.is_err(), "the SYNs were dropped");
            });
            settle();
        },
    );
    let after = scrape();
    let client_delta = changed(&before.1, &after.1);
    println!("{flavour}: timed out: client {client_delta:?} kernel {client_moved:?}");
    // The kernel's own limit is a time (what `tcp_syn_retries` retransmits
    // would take), so one retransmit allowed may be two sent.
    assert!(client_moved["TcpExt_TCPSynRetrans"] >= 1.0);
    assert_eq!(
        client_moved["TcpExt_TCPSynRetrans"],
        client_moved["Tcp_RetransSegs"]
    );
    assert_eq!(
        client_delta,
        BTreeMap::from([
            (
                key("connections_total", "outcome=timed_out,side=connect"),
                1.0
            ),
            (
                key("retransmits_total", "kind=syn"),
                client_moved["Tcp_RetransSegs"]
            ),
        ])
    );

    // SYN-ACK retransmits: the client's handshake ACK dropped (anything it
    // sends to the port but SYNs), so the server retransmits its SYN-ACK
    // once and gives the request up.
    server
        .netns
        .exec(&["sysctl", "-qw", "net.ipv4.tcp_synack_retries=1"]);
    let _listener = server
        .netns
        .run_in(|| TcpListener::bind("0.0.0.0:8082").unwrap());
    let before = scrape();
    let mut half_open = None;
    let server_moved = own_moved(&server.netns, &["Tcp_RetransSegs"], || {
        let _filter = VethFilter::drop(
            &node,
            client.veth(),
            &format!(
                "ip daddr {} tcp dport 8082 tcp flags & (fin | syn | rst | ack) == ack",
                server.pod_address
            ),
        );
        half_open = Some(client.netns.run_in(|| {
            TcpStream::connect_timeout(&to_server(8082), Duration::from_secs(5)).unwrap()
        }));
        // The SYN-ACK goes again after 1 s; the request is given up 2 s
        // later.
        std::thread::sleep(Duration::from_millis(3500));
    });
    let after = scrape();
    let server_delta = changed(&before.0, &after.0);
    println!("{flavour}: synack: server {server_delta:?} kernel {server_moved:?}");
    assert!(server_moved["Tcp_RetransSegs"] >= 1.0);
    assert_eq!(
        server_delta,
        BTreeMap::from([(
            key("retransmits_total", "kind=synack"),
            server_moved["Tcp_RetransSegs"]
        )])
    );
    drop(half_open);
}

#[test]
fn tcp_events_of_a_namespace_no_pod_owns_never_reach_a_pod_and_a_new_pod_starts_at_zero() {
    each_flavour(namespace_without_pod);
}

fn namespace_without_pod(flavour: &str) {
    let node = Netns::new("ptnode");
    let runtime = PodRuntime::start(&node, 71);
    let name = ("team-a", "web");
    let pod = runtime.run_pod(name);
    pod.pin_neighbours();
    let collector = start(&node, &runtime, flavour);
    let stray = Netns::new("ptstray");
    stray.ip(&["link", "set", "lo", "up"]);
    let refuse = |ns: &Netns, times: usize| {
        ns.run_in(|| {
            for _ in 0..times {
                let refused = TcpStream::connect_timeout(
                    &"127.0.0.1:81".parse().unwrap(),
                    Duration::from_secs(5),
                );
                assert!(refused.is_err());
            }
        })
    };
    refuse(&stray, 7);
    refuse(&pod.netns, 2);
    settle();
    let metrics = collector.scrape(&node);
    let pods: std::collections::BTreeSet<(String, String)> = metrics
        .samples
        .iter()
        .filter(|s| s.name.starts_with("network_pod_tcp_"))
        .map(|s| (s.labels["namespace"].clone(), s.labels["pod"].clone()))
        .collect();
    assert_eq!(
        pods,
        [(pod.namespace.clone(), pod.name.clone())].into(),
        "only the pod's namespace is a pod's"
    );
    let served_pod = served(&metrics, &pod);
    assert_eq!(
        served_pod[&key("connections_total", "outcome=refused,side=connect")],
        2.0
    );
    let inode = stray.inode().to_string();
    let stray_refused = metrics.value(
        "network_netns_tcp_connections_total",
        &[
            ("netns", &inode),
            ("side", "connect"),
            ("outcome", "refused"),
        ],
    );
    assert_eq!(stray_refused, 7.0, "the stray namespace's own, by inode");

    // Deleted and made again under the same name: the new pod starts at
    // zero, whatever inode its namespace gets. A collection sees the pod
    // gone first: events of a new namespace on a reused inode before any
    // collection saw its pod are forgotten with the old owner's (as drops).
    pod.delete();
    collector.scrape(&node);
    let again = runtime.run_pod(name);
    again.pin_neighbours();
    refuse(&again.netns, 1);
    settle();
    let metrics = collector.scrape(&node);
    let served_again = served(&metrics, &again);
    println!("{flavour}: the new pod: {served_again:?}");
    let mut expected = BTreeMap::from([
        (
            key("connections_total", "outcome=refused,side=connect"),
            1.0,
        ),
        (key("resets_total", "direction=received"), 1.0),
    ]);
    if socketless_resets_traced() {
        expected.insert(key("resets_total", "direction=sent"), 1.0);
    }
    assert_eq!(served_again, expected);
}
