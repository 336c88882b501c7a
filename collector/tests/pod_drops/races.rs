//! What a running node does to pod identity between two scrapes, and what
//! must not follow from it: a cache file caught mid-rewrite, a netns file
//! briefly unreachable, the results directory gone for a while, a leaked
//! old sandbox of the same pod. Pod drops keep their owner and never go
//! back. These are ownership decisions in userspace, the same for both
//! program flavours, so each runs with the BTF-typed one.
//!
//! The pods here are laid out by hand (a `cni-…` netns, a veth, a cache
//! file in libcni's shape): each test takes one of a pod's parts away or
//! keeps a leaked one, which no runtime does on request.

use super::*;

/// Sends `count` datagrams to a closed UDP port of `pod` and waits for the
/// kernel to count them.
fn closed_port_drops(node: &Netns, pod: &CniPod, count: usize) {
    send_udp(node, &format!("{}:9", pod.pod_address), count, PAYLOAD);
    settle();
}

/// Every series of `pod`'s drops and the sum of the namespace family's
/// series for its inode: (pod series, nameless series).
fn owner_split(metrics: &Metrics, pod: &CniPod) -> (f64, f64) {
    let inode = pod.netns.inode().to_string();
    let nameless = metrics
        .select("network_netns_drops_total", &[("netns", inode.as_str())])
        .map(|s| s.value)
        .sum();
    let owned = metrics
        .select(
            "network_pod_drops_total",
            &[
                ("namespace", pod.namespace.as_str()),
                ("pod", pod.name.as_str()),
            ],
        )
        .map(|s| s.value)
        .sum();
    (owned, nameless)
}

#[test]
fn a_failed_read_of_a_live_pods_cache_or_netns_keeps_its_counts() {
    let _guard = beside_others();
    require_root();
    let (node, results, pod) = node_with_pod(("shop", "cart-0"), "azvrace0", 43);
    // The pods' netns files as links in a directory of the test's, so one
    // can be taken away (a bind mount cannot be renamed).
    let netns_dir = tempfile::tempdir().unwrap();
    let link = netns_dir.path().join(&pod.netns.name);
    std::os::unix::fs::symlink(pod.netns_path(), &link).unwrap();
    let args = [
        "--cni-results-dir",
        results.path().to_str().unwrap(),
        "--netns-dir",
        netns_dir.path().to_str().unwrap(),
    ];
    let collector = start_flavour(&node, "btf", &args);
    closed_port_drops(&node, &pod, 50);
    assert_eq!(owner_split(&collector.scrape(&node), &pod), (50.0, 0.0));

    // libcni rewrites the file in place: a reader can see half of it.
    let file = &pod.attachments[0].2;
    let whole = std::fs::read(file).unwrap();
    write_like_libcni(file, &whole[..whole.len() / 2]);
    closed_port_drops(&node, &pod, 10);
    let metrics = collector.scrape(&node);
    assert_eq!(
        owner_split(&metrics, &pod),
        (60.0, 0.0),
        "half-written cache"
    );
    let malformed = [("reason", "malformed")];
    assert_eq!(
        metrics.value("collector_pod_identity_errors_total", &malformed),
        1.0
    );
    write_like_libcni(file, &whole);
    assert_eq!(owner_split(&collector.scrape(&node), &pod), (60.0, 0.0));

    // The netns file unreachable for a scrape (a mount being replaced).
    std::fs::remove_file(&link).unwrap();
    closed_port_drops(&node, &pod, 10);
    let metrics = collector.scrape(&node);
    std::os::unix::fs::symlink(pod.netns_path(), &link).unwrap();
    assert_eq!(owner_split(&metrics, &pod), (70.0, 0.0), "netns file away");
    assert_eq!(
        metrics.value(
            "collector_pod_identity_errors_total",
            &[("reason", "netns")]
        ),
        1.0
    );
    closed_port_drops(&node, &pod, 5);
    assert_eq!(owner_split(&collector.scrape(&node), &pod), (75.0, 0.0));
}

#[test]
fn while_pod_identity_is_down_pod_drops_keep_their_owners() {
    let _guard = beside_others();
    require_root();
    let (node, results, pod) = node_with_pod(("shop", "web-0"), "azvrace1", 44);
    let collector = start(&node, results.path(), "btf");
    closed_port_drops(&node, &pod, 20);
    assert_eq!(owner_split(&collector.scrape(&node), &pod), (20.0, 0.0));

    // The results directory cannot be listed (a mount gone, EMFILE).
    let dir = results.path().to_path_buf();
    let aside = dir.with_extension("aside");
    std::fs::rename(&dir, &aside).unwrap();
    closed_port_drops(&node, &pod, 5);
    let metrics = collector.scrape(&node);
    std::fs::rename(&aside, &dir).unwrap();
    assert_eq!(metrics.value("collector_pod_identity_up", &[]), 0.0);
    assert_eq!(
        owner_split(&metrics, &pod),
        (25.0, 0.0),
        "flipped to nameless"
    );
    assert!(pod_info_of(&metrics, pod.veth()).is_some(), "pod info kept");

    let metrics = collector.scrape(&node);
    assert_eq!(metrics.value("collector_pod_identity_up", &[]), 1.0);
    assert_eq!(owner_split(&metrics, &pod), (25.0, 0.0));
}

#[test]
fn a_pods_leaked_old_sandbox_never_serves_its_series_twice() {
    let _guard = beside_others();
    require_root();
    let (node, results, old) = node_with_pod(("shop", "api-0"), "azvrace2", 45);
    // The same pod's new sandbox, while the old one's namespace lingers.
    std::thread::sleep(Duration::from_millis(20));
    let mut new = CniPod::start(
        &node,
        results.path(),
        ("shop", "api-0"),
        "azure",
        "azvrace3",
        46,
    );
    without_ipv6(&[&new.netns]);
    new.uid = old.uid.clone();
    let file = &new.attachments[0].2;
    write_like_libcni(
        file,
        new.cache_json("azure", "eth0", Some("azvrace3"), None)
            .as_bytes(),
    );
    let collector = start(&node, results.path(), "btf");
    closed_port_drops(&node, &old, 7);
    closed_port_drops(&node, &new, 3);
    let text = collector.scrape_text(&node);
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("network_pod_drops_total{"))
        .map(|l| l.rsplit_once(' ').unwrap().0)
        .collect();
    let unique: std::collections::BTreeSet<&&str> = series.iter().collect();
    assert_eq!(series.len(), unique.len(), "a series twice:\n{text}");
    // The newest sandbox is the pod's; the old one's drops stay nameless.
    let metrics = Metrics::parse(&text);
    assert_eq!(owner_split(&metrics, &new), (3.0, 0.0));
    assert_eq!(owner_split(&metrics, &old).1, 7.0);
}

/// The pod of `veth` in `network_interface_pod_info`.
fn pod_info_of(metrics: &Metrics, veth: &str) -> Option<String> {
    metrics
        .select("network_interface_pod_info", &[("interface", veth)])
        .map(|s| s.labels["pod"].clone())
        .next()
}

#[test]
fn a_pod_that_lived_and_died_between_two_scrapes_passes_nothing_to_the_next_on_its_inode() {
    let _guard = alone();
    require_root();
    let node = Netns::new("pdnode");
    without_ipv6(&[&node]);
    let results = tempfile::tempdir().unwrap();
    let collector = start(&node, results.path(), "btf");
    collector.scrape(&node);
    let short = CniPod::start(
        &node,
        results.path(),
        ("batch", "job-1"),
        "azure",
        "azvshort0",
        47,
    );
    without_ipv6(&[&short.netns]);
    let inode = short.netns.inode();
    closed_port_drops(&node, &short, 30);
    // Gone before any scrape saw it, and another pod made on its inode.
    drop(short);
    let mut next = None;
    for attempt in 0..20 {
        std::thread::sleep(Duration::from_millis(200));
        let veth = format!("azvshort{}", attempt + 1);
        let pod = CniPod::start(
            &node,
            results.path(),
            ("batch", "job-2"),
            "azure",
            &veth,
            48,
        );
        if pod.netns.inode() == inode {
            next = Some(pod);
            break;
        }
    }
    let next = next.unwrap_or_else(|| {
        panic!("TEST SETUP FAILED: the kernel did not reuse namespace inode {inode}")
    });
    without_ipv6(&[&next.netns]);
    let metrics = collector.scrape(&node);
    assert_eq!(
        owner_split(&metrics, &next),
        (0.0, 0.0),
        "job-2 inherited job-1's drops"
    );
    closed_port_drops(&node, &next, 7);
    assert_eq!(owner_split(&collector.scrape(&node), &next), (7.0, 0.0));
}

#[test]
fn drops_on_an_excluded_interface_stay_in_the_nodes_totals() {
    let _guard = beside_others();
    require_root();
    let (node, results, pod) = node_with_pod(("shop", "db-0"), "azvexcl0", 49);
    let args = [
        "--cni-results-dir",
        results.path().to_str().unwrap(),
        "--netns-dir",
        "/var/run/netns",
        "--exclude",
        "^azv",
    ];
    let collector = start_flavour(&node, "btf", &args);
    // NO_SOCKET only: the test's own scrapes end TCP connections in the
    // node's namespace, which the kernel may count as TCP_* drops there.
    let reason = if kfree_skb_has_reason() {
        "NO_SOCKET"
    } else {
        "unknown"
    };
    let host = |m: &Metrics| -> f64 {
        let selector = [("netns", "host"), ("interface", ""), ("reason", reason)];
        m.select("network_netns_drops_total", &selector)
            .map(|s| s.value)
            .sum()
    };
    let (before, no_ports) = (
        host(&collector.scrape(&node)),
        snmp(&node, "Udp", "NoPorts"),
    );
    // From the pod to a closed port of the node: dropped on the host veth.
    send_udp(&pod.netns, &format!("{}:9", pod.host_address), 20, PAYLOAD);
    settle();
    let no_ports = snmp(&node, "Udp", "NoPorts") - no_ports;
    assert!(no_ports >= 20.0, "the kernel's own count: {no_ports}");
    let metrics = collector.scrape(&node);
    assert!(!metrics.interfaces().contains("azvexcl0"), "excluded");
    assert_eq!(
        host(&metrics) - before,
        no_ports,
        "the excluded veth's drops"
    );
    // The veth deleted with its pod: its drops stay counted.
    drop(pod);
    settle();
    collector.scrape(&node);
    assert_eq!(host(&collector.scrape(&node)) - before, no_ports);
}

/// The runtime deletes a pod's cache file, then its namespace: drops in
/// between (its teardown) are no one's, and are not kept as a namespace no
/// pod owns (which would stay for 15 minutes); those after the namespace
/// is gone are counted at node level.
#[test]
fn a_departed_pods_teardown_drops_are_not_kept_for_its_inode() {
    let _guard = beside_others();
    require_root();
    let (node, results, pod) = node_with_pod(("shop", "gone-0"), "azvrace9", 50);
    let collector = start(&node, results.path(), "btf");
    closed_port_drops(&node, &pod, 20);
    assert_eq!(owner_split(&collector.scrape(&node), &pod), (20.0, 0.0));

    std::fs::remove_file(&pod.attachments[0].2).unwrap();
    assert_eq!(owner_split(&collector.scrape(&node), &pod), (0.0, 0.0));
    for round in 0..2 {
        closed_port_drops(&node, &pod, 15);
        assert_eq!(
            owner_split(&collector.scrape(&node), &pod),
            (0.0, 0.0),
            "teardown drops kept for the departed pod's inode (round {round})"
        );
    }
}
