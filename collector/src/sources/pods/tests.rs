use super::*;

fn attachment(pod: &str, if_name: &str, hosts: &[&str]) -> CniAttachment {
    CniAttachment {
        container_id: format!("{pod}-sandbox"),
        network: format!("net-{if_name}"),
        if_name: if_name.into(),
        netns: Some(format!("/var/run/netns/cni-{pod}")),
        namespace: "team-a".into(),
        pod: pod.into(),
        pod_uid: format!("uid-{pod}"),
        host_interfaces: hosts.iter().map(|h| h.to_string()).collect(),
        addresses: Vec::new(),
    }
}

fn link(ifindex: u32, name: &str, nsid: Option<i32>) -> LinkEnd<'_> {
    LinkEnd {
        ifindex,
        name,
        kind: nsid.map(|_| "veth"),
        link_netnsid: nsid,
        peer_ifindex: nsid.map(|_| 2),
    }
}

fn placed(inode: u32, nsid: Option<i32>, attachment: &CniAttachment) -> Placed<'_> {
    Placed {
        inode,
        nsid,
        attachment,
        current: true,
        written: Some(SystemTime::UNIX_EPOCH),
        created: None,
    }
}

#[test]
fn pod_namespaces_are_keyed_by_inode_and_name_the_peers_of_matched_veths() {
    let (web, db) = (
        attachment("web", "eth0", &[]),
        attachment("db", "eth0", &[]),
    );
    // "db" has no veth here (no nsid): still named by its inode.
    let attachments = [
        placed(4026532001, Some(0), &web),
        placed(4026532002, None, &db),
    ];
    let links = [link(7, "azv1f2e3d4c5b6", Some(0))];
    let by_link = match_links(&links, &[(0, &web)]);
    let found = pod_namespaces(&attachments, &links, &by_link);
    let web_ns = &found[&4026532001];
    assert_eq!(web_ns.identity.pod, "web");
    assert_eq!(web_ns.identity.pod_interface, None);
    assert_eq!(web_ns.interfaces, HashMap::from([(2, "eth0".to_string())]));
    assert_eq!(found[&4026532002].identity.pod, "db");
    assert!(found[&4026532002].interfaces.is_empty());
    // Two pods claiming one namespace alike: neither owns it.
    let contested = pod_namespaces(
        &[placed(9, None, &web), placed(9, None, &db)],
        &[],
        &HashMap::new(),
    );
    assert!(contested.is_empty(), "{contested:?}");
}

#[test]
fn a_placement_found_now_beats_one_kept_through_a_failed_read() {
    let (old, new) = (
        attachment("old", "eth0", &[]),
        attachment("new", "eth0", &[]),
    );
    // "old"'s netns could not be opened this time; its inode is "new"'s now.
    let kept = Placed {
        current: false,
        ..placed(9, Some(1), &old)
    };
    for order in [
        [kept, placed(9, Some(1), &new)],
        [placed(9, Some(1), &new), kept],
    ] {
        let found = pod_namespaces(&order, &[], &HashMap::new());
        assert_eq!(found[&9].identity.pod, "new");
    }
    // Alone, the kept placement still owns its inode.
    assert_eq!(
        pod_namespaces(&[kept], &[], &HashMap::new())[&9]
            .identity
            .pod,
        "old"
    );
}

#[test]
fn a_pod_with_a_leaked_old_sandbox_owns_only_its_newest_namespace() {
    let old_sandbox = attachment("web", "eth0", &[]);
    let mut new_sandbox = attachment("web", "eth0", &[]);
    new_sandbox.container_id = "web-sandbox-2".into();
    let at = |secs| Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs));
    let attachments = [
        Placed {
            written: at(200),
            ..placed(12, None, &new_sandbox)
        },
        Placed {
            written: at(100),
            ..placed(11, None, &old_sandbox)
        },
    ];
    let found = pod_namespaces(&attachments, &[], &HashMap::new());
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[&12].identity.container_id, "web-sandbox-2");
}

#[test]
fn each_veth_gets_the_pod_whose_namespace_holds_its_peer() {
    let (web, db) = (
        attachment("web", "eth0", &[]),
        attachment("db", "eth0", &[]),
    );
    let links = [
        link(1, "eth0", None),
        link(7, "azv1f2e3d4c5b6", Some(0)),
        link(8, "lxc0a1b2c3d4e5f", Some(4)),
        // A peer namespace no attachment has (another runtime's).
        link(9, "veth9", Some(2)),
        // Not a veth, though its other side is in the pod's namespace.
        LinkEnd {
            kind: Some("vxlan"),
            ..link(10, "vxlan0", Some(0))
        },
    ];
    let found = match_links(&links, &[(0, &web), (4, &db)]);
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[&7].pod, "web");
    assert_eq!(found[&7].pod_interface.as_deref(), Some("eth0"));
    assert_eq!(found[&8].pod_uid, "uid-db");
    assert_eq!(found[&8].network.as_deref(), Some("net-eth0"));
}

#[test]
fn multus_attachments_in_one_namespace_map_by_the_host_name_their_result_gives() {
    let primary = attachment("multi", "eth0", &["cali1234567890a"]);
    let secondary = attachment("multi", "net1", &["veth5a6b7c8d"]);
    let links = [
        link(20, "cali1234567890a", Some(3)),
        link(21, "veth5a6b7c8d", Some(3)),
        // Named by neither result: the pod is known, the attachment not.
        link(22, "lxcunnamed", Some(3)),
    ];
    let found = match_links(&links, &[(3, &primary), (3, &secondary)]);
    assert_eq!(found[&20].pod_interface.as_deref(), Some("eth0"));
    assert_eq!(found[&21].pod_interface.as_deref(), Some("net1"));
    assert_eq!(found[&21].network.as_deref(), Some("net-net1"));
    assert_eq!(found[&22].pod, "multi");
    assert_eq!(found[&22].pod_interface, None);
}

#[test]
fn two_pods_claiming_one_namespace_name_neither() {
    let (a, b) = (attachment("a", "eth0", &[]), attachment("b", "eth0", &[]));
    let found = match_links(&[link(5, "veth5", Some(1))], &[(1, &a), (1, &b)]);
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn runtime_netns_paths_are_looked_up_in_the_netns_dir() {
    let dir = Path::new("/host/netns");
    let cases = [
        ("/var/run/netns/cni-1234", "/host/netns/cni-1234"),
        ("/run/netns/cni-5678", "/host/netns/cni-5678"),
        ("/proc/42/ns/net", "/proc/42/ns/net"),
        ("/var/run/netns/../etc/x", "/var/run/netns/../etc/x"),
        ("/var/run/netns/..", "/var/run/netns/.."),
    ];
    for (cached, expected) in cases {
        assert_eq!(netns_file(cached, dir), Path::new(expected), "{cached}");
    }
}
