//! Drops counted while a pod's namespace is torn down. The pod is laid out
//! by hand: containerd's teardown (CNI DEL) removes the pod's veth from
//! the live namespace before deleting it, so the queued packets would be
//! freed while the namespace still lives; here the namespace goes with its
//! devices in it, as it does where a CNI DEL failed or never ran.

use super::*;

/// A pod deleted with packets still queued on its `eth0`: the kernel frees
/// them in `cleanup_net`, after the namespace's last reference is gone and
/// before its inode goes to the next namespace. Those drops are counted,
/// at node level, and never under the inode a new pod may get next.
pub fn drops_of_a_dying_namespace(flavour: &str) {
    let (node, results, pod) = node_with_pod(("team-e", "dying"), "azvpd7", 48);
    let collector = start(&node, results.path(), flavour);
    // The pod's ICMP errors (sent by the kernel's own sockets, which hold
    // no reference on the namespace) wait behind a token bucket that lets
    // almost nothing out.
    pod.netns
        .exec(&["sysctl", "-qw", "net.ipv4.icmp_ratelimit=0"]);
    pod.netns.exec(&[
        "tc", "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", "8bit", "burst", "1600",
        "limit", "1000000",
    ]);
    send_udp(&node, &format!("{}:9", pod.pod_address), DATAGRAMS, PAYLOAD);
    settle();
    let qdisc = pod
        .netns
        .exec(&["tc", "-s", "-j", "qdisc", "show", "dev", "eth0"]);
    let qdisc: serde_json::Value = serde_json::from_slice(&qdisc.stdout).unwrap();
    let queued = qdisc[0]["qlen"].as_u64().unwrap_or(0);
    assert!(
        queued > 0,
        "TEST SETUP FAILED: nothing queued on the pod's eth0: {qdisc}"
    );

    let inode = pod.netns.inode();
    let veth = pod.veth().to_string();
    let sum = |counts: &BTreeMap<DropMapKey, u64>, keep: &dyn Fn(&DropMapKey) -> bool| -> u64 {
        counts.iter().filter(|(k, _)| keep(k)).map(|(_, v)| v).sum()
    };
    let of_inode = |k: &DropMapKey| k.netns == inode;
    let node_level = |k: &DropMapKey| k.netns == 0 && k.ifindex == 0;
    // No collection runs until the next scrape, so nothing is pruned
    // between these two reads of the map.
    let before = drop_map_counts(collector.pid());
    drop(pod);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while node.ip_links().contains_key(&veth) {
        assert!(
            std::time::Instant::now() < deadline,
            "the pod's namespace was never torn down"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    settle();
    let after = drop_map_counts(collector.pid());
    for (key, packets) in &after {
        let earlier = before.get(key).copied().unwrap_or(0);
        if *packets != earlier {
            println!("{flavour}: {key:?} +{}", packets - earlier);
        }
    }
    let counted_after = sum(&after, &of_inode) - sum(&before, &of_inode);
    let node_level_after = sum(&after, &node_level) - sum(&before, &node_level);
    println!(
        "{flavour}: {queued} queued at deletion; after it: inode {inode} +{counted_after}, node level +{node_level_after}"
    );
    assert_eq!(
        counted_after, 0,
        "drops counted under a dying namespace's inode"
    );
    assert!(
        node_level_after >= queued,
        "the dying namespace's drops were lost, not counted at node level"
    );
}
