//! Drops inside pods' own network namespaces, end to end: a pod made
//! through containerd's CRI (its `cni-…` netns, its veth on the bridge,
//! libcni's cache file all containerd's and the bridge plugin's), the
//! kernel made to drop in it, and every count compared with the kernel's
//! own counter for the same drops, read inside the pod.
//!
//! Every test runs once per program flavour (tp_btf, classic).

mod common;
#[path = "pod_drops/dying.rs"]
mod dying;
#[path = "pod_drops/queued.rs"]
mod queued;
#[path = "pod_drops/races.rs"]
mod races;
#[path = "pod_drops/snapshot.rs"]
mod snapshot;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use common::*;

const DATAGRAMS: usize = 200;
const PAYLOAD: usize = 64;
const SYNS: usize = 20;

fn start(node: &Netns, results: &Path, flavour: &str) -> CollectorProcess {
    start_with(node, results, flavour, &[])
}

fn start_with(node: &Netns, results: &Path, flavour: &str, extra: &[&str]) -> CollectorProcess {
    let results = results.to_str().unwrap();
    let mut args = vec![
        "--cni-results-dir",
        results,
        "--netns-dir",
        "/var/run/netns",
    ];
    args.extend_from_slice(extra);
    start_flavour(node, flavour, &args)
}

/// The pod's drops: (interface, reason) -> packets.
fn pod_drops(metrics: &Metrics, pod: &Pod) -> BTreeMap<(String, String), f64> {
    let selector = [
        ("namespace", pod.namespace.as_str()),
        ("pod", pod.name.as_str()),
    ];
    metrics
        .select("network_pod_drops_total", &selector)
        .map(|s| {
            (
                (s.labels["interface"].clone(), s.labels["reason"].clone()),
                s.value,
            )
        })
        .collect()
}

/// One drop reason on `eth0`, as the running kernel names it.
fn on_eth0(reason: &str, packets: f64, has_reason: bool) -> BTreeMap<(String, String), f64> {
    let reason = if has_reason { reason } else { "unknown" };
    BTreeMap::from([(("eth0".to_string(), reason.to_string()), packets)])
}

/// A counter of `/proc/net/snmp` (e.g. `Udp` `NoPorts`) inside `ns`.
fn snmp(ns: &Netns, group: &str, field: &str) -> f64 {
    let out = ns.exec(&["cat", "/proc/net/snmp"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let prefix = format!("{group}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
    let at = names.split_whitespace().position(|n| n == field).unwrap();
    values.split_whitespace().nth(at).unwrap().parse().unwrap()
}

/// The `drops` column of the UDP socket bound to `port` in `ns`'s
/// `/proc/net/udp`: what the socket lost, as the kernel counts it.
fn udp_socket_drops(ns: &Netns, port: u16) -> f64 {
    let out = ns.exec(&["cat", "/proc/net/udp"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let local = format!(":{port:04X}");
    let line = text
        .lines()
        .find(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|a| a.ends_with(&local))
        })
        .unwrap_or_else(|| panic!("no UDP socket on port {port}:\n{text}"));
    line.split_whitespace().last().unwrap().parse().unwrap()
}

/// Packets of the only `counter` in `ns`'s nftables ruleset.
fn nft_counter(ns: &Netns) -> f64 {
    let out = ns.exec(&["nft", "list", "ruleset"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let after = text
        .split("counter packets ")
        .nth(1)
        .expect("an nft counter");
    after.split_whitespace().next().unwrap().parse().unwrap()
}

/// A node namespace with a pod runtime in it whose pods get addresses
/// from 198.18.`subnet`.0/24. IPv6 is off in the node and in every pod (a
/// link coming up sends router solicitations and MLD reports, which the
/// other end may drop, and a test comparing every count of a namespace
/// with one kernel counter must see only what it sent).
fn node_with_runtime(subnet: u8) -> (Netns, PodRuntime) {
    let node = Netns::new("pdnode");
    let runtime = PodRuntime::start(&node, subnet);
    (node, runtime)
}

/// No IPv6 in `namespaces`: a link coming up sends router solicitations
/// and MLD reports, which the other end may drop, and these tests compare
/// every count of a namespace with what they sent.
fn without_ipv6(namespaces: &[&Netns]) {
    for ns in namespaces {
        ns.exec(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
    }
}

/// A node namespace and a CNI results directory with one pod laid out by
/// hand (`CniPod`), IPv6 off in both namespaces: for the tests that take a
/// pod's part away or delete its namespace with devices still in it,
/// which containerd never does on request (its CNI DEL removes the pod's
/// veth from the live namespace first).
fn node_with_pod(pod: (&str, &str), veth: &str, subnet: u8) -> (Netns, tempfile::TempDir, CniPod) {
    let node = Netns::new("pdnode");
    let results = tempfile::tempdir().unwrap();
    let pod = CniPod::start(&node, results.path(), pod, "azure", veth, subnet);
    without_ipv6(&[&node, &pod.netns]);
    (node, results, pod)
}

/// A pod whose neighbours are pinned, so every packet a test sends it
/// arrives.
fn traffic_pod<'a>(runtime: &'a PodRuntime, pod: (&str, &str)) -> Pod<'a> {
    let pod = runtime.run_pod(pod);
    pod.pin_neighbours();
    pod
}

/// Tests that need a freed namespace inode back, or none to take one, run alone: the others
/// make namespaces all the time (pods, and the mount namespaces of `ip
/// netns exec`, `ip -n` and the collectors they start), and the kernel
/// hands a freed inode to the next namespace of any type.
static ALONE: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Held for a whole test that may run beside others.
fn beside_others() -> std::sync::RwLockReadGuard<'static, ()> {
    ALONE.read().unwrap_or_else(|e| e.into_inner())
}

/// Held for a whole test that must run alone.
fn alone() -> std::sync::RwLockWriteGuard<'static, ()> {
    ALONE.write().unwrap_or_else(|e| e.into_inner())
}

fn settle() {
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
fn drops_inside_a_pod_are_its_own_by_kernel_reason_exactly() {
    let _guard = beside_others();
    let has_reason = kfree_skb_has_reason();
    each_flavour(|flavour| pod_drops_match_the_kernel(flavour, has_reason));
}

fn pod_drops_match_the_kernel(flavour: &str, has_reason: bool) {
    let (node, runtime) = node_with_runtime(40);
    let pod = traffic_pod(&runtime, ("kube-system", "coredns-5d78c9869d-x2x8p"));
    let collector = start(&node, &runtime.results_dir(), flavour);
    let scrape = || pod_drops(&collector.scrape(&node), &pod);

    // A closed UDP port inside the pod: the pod's NoPorts.
    let (before, no_ports) = (scrape(), snmp(&pod.netns, "Udp", "NoPorts"));
    send_udp(&node, &format!("{}:9", pod.pod_address), DATAGRAMS, PAYLOAD);
    settle();
    let no_ports = snmp(&pod.netns, "Udp", "NoPorts") - no_ports;
    assert_eq!(no_ports, DATAGRAMS as f64, "the kernel's own count");
    let udp = changed(&before, &scrape());
    println!("{flavour}: closed UDP port: {udp:?}, NoPorts +{no_ports}");
    assert_eq!(udp, on_eth0("NO_SOCKET", no_ports, has_reason));

    // A TCP SYN to a closed port inside the pod: one RST each.
    let (before, resets) = (scrape(), snmp(&pod.netns, "Tcp", "OutRsts"));
    let target: SocketAddr = format!("{}:81", pod.pod_address).parse().unwrap();
    node.run_in(|| {
        for _ in 0..SYNS {
            let refused = TcpStream::connect_timeout(&target, Duration::from_secs(2));
            assert!(refused.is_err(), "port 81 in the pod must be closed");
        }
    });
    settle();
    let resets = snmp(&pod.netns, "Tcp", "OutRsts") - resets;
    assert_eq!(resets, SYNS as f64, "the kernel's own count");
    let tcp = changed(&before, &scrape());
    println!("{flavour}: closed TCP port: {tcp:?}, OutRsts +{resets}");
    assert_eq!(tcp, on_eth0("NO_SOCKET", resets, has_reason));

    // The pod's own netfilter rule.
    let rule = "table inet pod_policy { chain input { type filter hook input priority 0; policy accept; udp dport 7777 counter drop; }; }";
    pod.netns.exec(&["nft", rule]);
    let before = scrape();
    send_udp(
        &node,
        &format!("{}:7777", pod.pod_address),
        DATAGRAMS,
        PAYLOAD,
    );
    settle();
    let rule_drops = nft_counter(&pod.netns);
    assert_eq!(rule_drops, DATAGRAMS as f64, "the kernel's own count");
    let netfilter = changed(&before, &scrape());
    println!("{flavour}: nft drop rule: {netfilter:?}, counter {rule_drops}");
    assert_eq!(netfilter, on_eth0("NETFILTER_DROP", rule_drops, has_reason));

    // A DNS-like socket whose receive buffer is full.
    // The kernel's smallest receive buffer, never read.
    let _socket = udp_socket(&pod.netns, &format!("{}:5353", pod.pod_address), 0);
    let before = scrape();
    send_udp(
        &node,
        &format!("{}:5353", pod.pod_address),
        DATAGRAMS,
        PAYLOAD,
    );
    settle();
    let socket_drops = udp_socket_drops(&pod.netns, 5353);
    assert!(socket_drops > 0.0, "the starved socket dropped nothing");
    let rcvbuf = changed(&before, &scrape());
    println!("{flavour}: full receive buffer: {rcvbuf:?}, socket drops {socket_drops}");
    assert_eq!(rcvbuf, on_eth0("SOCKET_RCVBUFF", socket_drops, has_reason));
}

#[test]
fn drops_in_a_namespace_no_pod_owns_never_reach_a_pod() {
    let _guard = beside_others();
    each_flavour(namespace_without_pod);
}

fn namespace_without_pod(flavour: &str) {
    let (node, runtime) = node_with_runtime(41);
    let pod = traffic_pod(&runtime, ("team-a", "web"));
    // A sandbox with a veth but no cache file: no pod anyone knows.
    let stray = Netns::new("stray");
    let pair = VethPair::new(&node, "vstray", &stray, "eth0", 42);
    let collector = start(&node, &runtime.results_dir(), flavour);
    let inode = stray.inode().to_string();
    let stray_drops = |m: &Metrics| -> f64 {
        m.select("network_netns_drops_total", &[("netns", inode.as_str())])
            .map(|s| s.value)
            .sum()
    };
    let all_pod_drops = |m: &Metrics| -> f64 {
        m.select("network_pod_drops_total", &[])
            .map(|s| s.value)
            .sum()
    };
    let before = collector.scrape(&node);
    let no_ports = snmp(&stray, "Udp", "NoPorts");
    send_udp(&node, &format!("{}:9", pair.b_addr), DATAGRAMS, PAYLOAD);
    settle();
    let no_ports = snmp(&stray, "Udp", "NoPorts") - no_ports;
    let after = collector.scrape(&node);
    assert_eq!(no_ports, DATAGRAMS as f64);
    assert_eq!(stray_drops(&after) - stray_drops(&before), no_ports);
    assert_eq!(
        all_pod_drops(&after),
        all_pod_drops(&before),
        "drops of a namespace no pod owns were given to a pod"
    );
    // The pod is known, and its series carry its own labels only.
    for sample in after.select("network_pod_drops_total", &[]) {
        assert_eq!(sample.labels["pod"], pod.name, "{sample:?}");
    }
}

#[test]
fn a_pod_created_on_a_deleted_pods_namespace_inode_starts_at_zero() {
    let _guard = alone();
    let has_reason = kfree_skb_has_reason();
    each_flavour(|flavour| new_pod_on_a_reused_inode(flavour, has_reason));
}

/// The pod's drops on its `eth0`: those of the traffic a test sends. A pod
/// made while the collector runs also has drops of its own making, without
/// a device (the runtime's and the CNI plugins' sockets in its namespace
/// closed with messages unread).
fn on_its_eth0(metrics: &Metrics, pod: &Pod) -> BTreeMap<(String, String), f64> {
    pod_drops(metrics, pod)
        .into_iter()
        .filter(|((interface, _), _)| interface == "eth0")
        .collect()
}

fn new_pod_on_a_reused_inode(flavour: &str, has_reason: bool) {
    let (node, runtime) = node_with_runtime(43);
    // Without the pods' own counters: the collector holds a pod's MIB files
    // open, and with them its namespace and that namespace's inode, until
    // the collection after the pod is deleted, so the reuse this test
    // needs cannot happen to a pod whose files it holds. The guard tested
    // here is for the pods whose files it does not hold (their process not
    // found, past its open-files share, `--no-pod-netstat`).
    let collector = start_with(
        &node,
        &runtime.results_dir(),
        flavour,
        &["--no-pod-netstat"],
    );

    let old = traffic_pod(&runtime, ("team-a", "old"));
    let old_inode = old.netns.inode();
    let before = pod_drops(&collector.scrape(&node), &old);
    send_udp(&node, &format!("{}:9", old.pod_address), DATAGRAMS, PAYLOAD);
    settle();
    // Seen once while it lives, so the collector knows its owner.
    let after = pod_drops(&collector.scrape(&node), &old);
    println!("{flavour}: the old pod's drops {after:?}");
    assert_eq!(
        changed(&before, &after),
        on_eth0("NO_SOCKET", DATAGRAMS as f64, has_reason)
    );

    // The pod deleted and another created before the next scrape. The
    // kernel hands a freed namespace inode to the next namespace; try a
    // few times until the new pod has the old one's.
    old.delete();
    let mut new = None;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(200));
        let pod = traffic_pod(&runtime, ("team-a", "new"));
        if pod.netns.inode() == old_inode {
            new = Some(pod);
            break;
        }
        pod.delete();
    }
    let new = new.unwrap_or_else(|| {
        panic!("TEST SETUP FAILED: the kernel did not reuse namespace inode {old_inode}")
    });
    let metrics = collector.scrape(&node);
    let inherited = on_its_eth0(&metrics, &new);
    assert!(inherited.is_empty(), "the new pod inherited {inherited:?}");
    assert!(
        metrics
            .select("network_pod_drops_total", &[("pod", "old")])
            .next()
            .is_none(),
        "the deleted pod's series is still served"
    );

    let before = pod_drops(&metrics, &new);
    send_udp(&node, &format!("{}:9", new.pod_address), 7, PAYLOAD);
    settle();
    let after = pod_drops(&collector.scrape(&node), &new);
    assert_eq!(
        changed(&before, &after),
        on_eth0("NO_SOCKET", 7.0, has_reason)
    );

    // The pod deleted for good: the next collection removes its entries
    // from the kernel's map, not only from the output.
    assert!(drop_map_keys(collector.pid())
        .iter()
        .any(|k| k.netns == old_inode));
    new.delete();
    settle();
    collector.scrape(&node);
    assert!(
        !drop_map_keys(collector.pid())
            .iter()
            .any(|k| k.netns == old_inode),
        "entries of a deleted pod's namespace stay in the drop map"
    );
}

#[test]
fn without_tracefs_the_btf_typed_probe_names_pod_drops_from_btf() {
    let _guard = beside_others();
    require_root();
    let has_reason = kfree_skb_has_reason();
    let (node, runtime) = node_with_runtime(45);
    let pod = traffic_pod(&runtime, ("team-b", "api"));
    // `ip netns exec` gives the collector a /sys without tracefs, and
    // without CAP_SYS_ADMIN it cannot mount one: nothing but BTF to go by.
    let wrapper = [
        "setpriv",
        "--bounding-set",
        "-sys_admin",
        "--inh-caps",
        "-all",
        "--",
    ];
    let results = runtime.results_dir();
    let results_dir = results.to_str().unwrap();
    let args = [
        "--cni-results-dir",
        results_dir,
        "--netns-dir",
        "/var/run/netns",
    ];
    let collector = CollectorProcess::start_wrapped(&node, &wrapper, &[], &args);
    let metrics = collector.scrape(&node);
    assert_eq!(
        metrics.value(
            "collector_ebpf_probe_info",
            &[("program", "kfree_skb"), ("flavour", "btf")]
        ),
        1.0
    );
    let before = pod_drops(&metrics, &pod);
    send_udp(&node, &format!("{}:9", pod.pod_address), DATAGRAMS, PAYLOAD);
    settle();
    let delta = changed(&before, &pod_drops(&collector.scrape(&node), &pod));
    assert_eq!(delta, on_eth0("NO_SOCKET", DATAGRAMS as f64, has_reason));
    let (status, stderr) = collector.stop();
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("no tracefs: only BTF-typed tracepoints can attach"),
        "the collector had a tracefs after all: {stderr}"
    );
}

#[test]
fn out_of_order_and_fragment_queue_drops_are_the_pods() {
    let _guard = beside_others();
    let has_reason = kfree_skb_has_reason();
    each_flavour(|flavour| queued::queued_drops_are_the_pods(flavour, has_reason));
}

#[test]
fn drops_while_a_namespace_is_torn_down_are_never_its_inodes() {
    // Alone: a namespace made meanwhile may take the dying one's inode.
    let _guard = alone();
    each_flavour(dying::drops_of_a_dying_namespace);
}
