//! Rates, frames and the refresh loop of `watch`.
use super::*;
use crate::model::{EbpfInterface, EbpfStatus, SourceStatus};

fn snapshot(rx_bytes: u64, no_socket: u64, ifindex: u32) -> Snapshot {
    let mut ebpf = EbpfInterface::default();
    ebpf.drops.insert("NO_SOCKET".into(), no_socket);
    let mut interface = Interface {
        ifindex,
        name: "eth0".into(),
        admin_up: true,
        ebpf: Some(ebpf),
        ..Interface::default()
    };
    interface.counters.rx_bytes = rx_bytes;
    interface.counters.rx_packets = rx_bytes / 100;
    Snapshot {
        node: "n".into(),
        labels: vec![],
        interfaces: vec![interface],
        namespace_drops: Vec::new(),
        namespace_tcp: Vec::new(),
        pod_netstat: Vec::new(),
        conntrack: None,
        sources: SourceStatus {
            netlink_error: None,
            ebpf: EbpfStatus {
                enabled: true,
                ..EbpfStatus::default()
            },
            errors_total: BTreeMap::new(),
            netlink_timeouts_total: 0,
            netlink_skipped_attributes_total: 0,
            collections_total: 1,
            pod_identity: Default::default(),
            pod_netstat: Default::default(),
            conntrack_error: None,
        },
        collection_seconds: 0.0,
    }
}

#[test]
fn pod_drop_rates_are_deltas_per_second_and_restart_after_a_reset() {
    use crate::model::{NamespaceDrops, Netns, PodIdentity};
    let with = |count: u64| {
        let mut s = snapshot(0, 0, 2);
        s.namespace_drops = vec![NamespaceDrops {
            netns: Netns::Inode(9),
            pod: Some(PodIdentity {
                namespace: "ns".into(),
                pod: "dns".into(),
                pod_uid: "u".into(),
                container_id: "c".into(),
                pod_interface: None,
                network: None,
            }),
            ifindex: 2,
            interface: Some("eth0".into()),
            drops: BTreeMap::from([("SOCKET_RCVBUFF".to_string(), count)]),
        }];
        s
    };
    let rates = pod_drop_rates(&with(10), &with(30), 2.0);
    assert_eq!(rates["ns/dns"]["SOCKET_RCVBUFF"], 10.0);
    let reset = pod_drop_rates(&with(30), &with(4), 2.0);
    assert_eq!(reset["ns/dns"]["SOCKET_RCVBUFF"], 2.0);
}

#[test]
fn rates_are_deltas_over_the_interval() {
    let r = rates(
        &snapshot(1_000, 5, 2),
        &snapshot(3_000, 25, 2),
        2.0,
        SortKey::Rx,
    );
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].rx_bytes, 1_000.0);
    assert_eq!(r[0].rx_packets, 10.0);
    assert_eq!(r[0].drops_by_reason["NO_SOCKET"], 10.0);
    let frame = render(&r, &snapshot(0, 0, 2), 2.0, false);
    assert!(
        frame.contains("1000B/s") && frame.contains("NO_SOCKET=10.0"),
        "{frame}"
    );
    assert!(!frame.contains('\x1b'), "no escape codes off a terminal");
    let idle = rates(&snapshot(0, 0, 2), &snapshot(0, 0, 2), 1.0, SortKey::Drops);
    assert!(!render(&idle, &snapshot(0, 0, 2), 1.0, false).contains("-0.0"));
}

#[test]
fn a_pods_interface_shows_its_pod_next_to_its_name() {
    let plain = rates(&snapshot(0, 0, 2), &snapshot(100, 0, 2), 1.0, SortKey::Rx);
    assert!(!render(&plain, &snapshot(0, 0, 2), 1.0, false).contains("POD"));
    let mut now = snapshot(100, 0, 2);
    now.interfaces[0].pod = Some(crate::model::PodIdentity {
        namespace: "shop".into(),
        pod: "cart-0".into(),
        pod_uid: "u".into(),
        container_id: "c".into(),
        pod_interface: Some("eth0".into()),
        network: None,
    });
    let r = rates(&snapshot(0, 0, 2), &now, 1.0, SortKey::Rx);
    let frame = render(&r, &now, 1.0, false);
    let lines: Vec<&str> = frame.lines().collect();
    assert!(lines[1].starts_with("INTERFACE        POD "), "{frame}");
    assert!(
        lines[2].starts_with("eth0             shop/cart-0 up "),
        "{frame}"
    );
}

#[test]
fn the_node_name_and_interface_names_reach_the_terminal_escaped() {
    // A node name comes from $NODE_NAME or a flag: ESC, a bell and a
    // right-to-left override (U+202E, which reorders what follows on
    // screen) must all be shown, not obeyed.
    let mut now = snapshot(100, 0, 2);
    now.node = "node\x1b[2J\u{7}\u{202e}evil".into();
    now.interfaces[0].name = "e\u{2066}th0\u{200b}".into();
    let mut before = snapshot(0, 0, 2);
    before.interfaces[0].name = now.interfaces[0].name.clone();
    let r = rates(&before, &now, 1.0, SortKey::Rx);
    let frame = render(&r, &now, 1.0, false);
    for hidden in ['\x1b', '\u{7}', '\u{202e}', '\u{2066}', '\u{200b}'] {
        assert!(!frame.contains(hidden), "{hidden:?} in {frame:?}");
    }
    assert!(
        frame.contains("node node\\x1b[2J\\x07\\u{202e}evil "),
        "{frame}"
    );
    assert!(frame.contains("e\\u{2066}th0\\u{200b}"), "{frame}");
}

#[test]
fn recreated_interfaces_restart_instead_of_going_negative() {
    assert!(rates(
        &snapshot(9_000, 0, 2),
        &snapshot(100, 0, 3),
        1.0,
        SortKey::Rx
    )
    .is_empty());
    let r = rates(
        &snapshot(9_000, 9, 2),
        &snapshot(100, 0, 2),
        1.0,
        SortKey::Rx,
    );
    assert_eq!((r[0].rx_bytes, r[0].drops()), (0.0, 0.0));
}

#[test]
fn a_ctrl_c_during_a_collection_ends_the_watch_after_that_frame() {
    let calls = std::cell::Cell::new(0u32);
    let collect = || {
        calls.set(calls.get() + 1);
        if calls.get() == 2 {
            // SAFETY: raise(3) has no preconditions; `run` listens for
            // SIGINT from before its first collection, so the process is
            // not ended by the default action.
            unsafe { libc::raise(libc::SIGINT) };
            // Time for the runtime's idle worker to take the signal in
            // while this collection still blocks.
            std::thread::sleep(Duration::from_millis(50));
        }
        snapshot(1000 * u64::from(calls.get()), 0, 2)
    };
    let refresh = Refresh {
        interval: Duration::from_millis(10),
        sort: SortKey::Rx,
        count: Some(50),
        terminal: false,
    };
    // A worker thread turns the signal driver while `collect` blocks the
    // caller, so the signal is taken in with no listener of a per-turn
    // `ctrl_c()` alive; `watch`'s own current-thread runtime loses it the
    // same way when the refresh timer fires in that turn.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut out = Vec::new();
    runtime
        .block_on(run(collect, refresh, &mut out))
        .expect("watch ran");
    // The frame of the interrupted collection is still written, then the
    // watch stops instead of running to its 50 frames.
    assert_eq!(calls.get(), 2, "collections after the Ctrl-C");
    let frames = String::from_utf8(out).unwrap().matches("INTERFACE").count();
    assert_eq!(frames, 1);
}
