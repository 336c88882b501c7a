//! What the eBPF probes count on stacked devices, next to netlink: VLAN,
//! macvlan, bond and bridge, each on a veth, with traffic both ways.
//!
//! `netif_receive_skb` fires once per skb, before the rx_handler or VLAN
//! untagging retargets it (`another_round` in `__netif_receive_skb_core`),
//! so an upper device that takes over an skb is not seen on receive; a
//! bridge delivering locally calls `netif_receive_skb` again, on itself.
//! On transmit each device's `ndo_start_xmit` is traced, upper and lower.
//! These tests pin that, so the README and dashboard never claim more.

mod common;

use common::*;

const DATAGRAMS: usize = 100;

/// One peer namespace joined to the host by a veth `lower`, with `upper`
/// stacked on it in the host and carrying the address.
struct Stack {
    peer: Netns,
    lower: String,
    upper: String,
    host_addr: String,
    peer_addr: String,
}

/// Builds `kind` on a new veth in `host`: the peer side is a plain veth
/// (or a VLAN on one, for `vlan`), addressed in 198.18.<subnet>.0/24.
fn stack(host: &Netns, kind: &str, subnet: u8) -> Stack {
    let peer = Netns::new(&format!("stk{subnet}"));
    let (lower, upper) = (format!("s{subnet}"), format!("u{subnet}"));
    let peer_dev = format!("p{subnet}");
    host.ip(&[
        "link", "add", &lower, "type", "veth", "peer", "name", &peer_dev, "netns", &peer.name,
    ]);
    let mut peer_if = peer_dev.clone();
    match kind {
        "vlan" => {
            host.ip(&[
                "link", "add", "link", &lower, "name", &upper, "type", "vlan", "id", "100",
            ]);
            peer.ip(&[
                "link", "add", "link", &peer_dev, "name", "pv", "type", "vlan", "id", "100",
            ]);
            peer_if = "pv".into();
        }
        "macvlan" => {
            host.ip(&[
                "link", "add", "link", &lower, "name", &upper, "type", "macvlan", "mode", "bridge",
            ]);
        }
        "bond" => {
            host.ip(&[
                "link",
                "add",
                &upper,
                "type",
                "bond",
                "mode",
                "active-backup",
            ]);
            host.ip(&["link", "set", &lower, "master", &upper]);
        }
        "bridge" => {
            host.ip(&["link", "add", &upper, "type", "bridge"]);
            host.ip(&["link", "set", &lower, "master", &upper]);
        }
        other => panic!("no stack {other}"),
    }
    let host_addr = format!("198.18.{subnet}.1");
    let peer_addr = format!("198.18.{subnet}.2");
    host.ip(&["addr", "add", &format!("{host_addr}/24"), "dev", &upper]);
    peer.ip(&["addr", "add", &format!("{peer_addr}/24"), "dev", &peer_if]);
    for dev in [&lower, &upper] {
        host.ip(&["link", "set", dev, "up"]);
    }
    peer.ip(&["link", "set", &peer_dev, "up"]);
    peer.ip(&["link", "set", &peer_if, "up"]);
    // Permanent neighbours: no ARP in the counts.
    let (host_mac, peer_mac) = (host.mac(&upper), peer.mac(&peer_if));
    host.ip(&[
        "neigh",
        "replace",
        &peer_addr,
        "lladdr",
        &peer_mac,
        "dev",
        &upper,
        "nud",
        "permanent",
    ]);
    peer.ip(&[
        "neigh",
        "replace",
        &host_addr,
        "lladdr",
        &host_mac,
        "dev",
        &peer_if,
        "nud",
        "permanent",
    ]);
    Stack {
        peer,
        lower,
        upper,
        host_addr,
        peer_addr,
    }
}

/// [eBPF rx, eBPF tx, netlink rx, netlink tx] packets of `interface`.
fn packets(metrics: &Metrics, interface: &str) -> [f64; 4] {
    let s = [("interface", interface)];
    [
        metrics.value("network_interface_ebpf_rx_packets_total", &s),
        metrics.value("network_interface_ebpf_tx_packets_total", &s),
        metrics
            .select("network_interface_stats_rx_packets", &s)
            .map(|x| x.value)
            .sum(),
        metrics
            .select("network_interface_stats_tx_packets", &s)
            .map(|x| x.value)
            .sum(),
    ]
}

fn delta(after: [f64; 4], before: [f64; 4]) -> [f64; 4] {
    std::array::from_fn(|i| after[i] - before[i])
}

/// Sends DATAGRAMS each way over a `kind` stack and checks what the probes
/// and netlink counted on the upper device and the veth under it.
fn check_stack(kind: &str, subnet: u8) {
    require_root();
    let host = Netns::new("stack");
    let s = stack(&host, kind, subnet);
    let collector = CollectorProcess::start(&host, &[]);
    let before = collector.scrape(&host);
    let sink = udp_listener(&host, &format!("{}:9000", s.host_addr));
    send_udp(&s.peer, &format!("{}:9000", s.host_addr), DATAGRAMS, 64);
    assert_eq!(
        receive_all(&sink, DATAGRAMS),
        DATAGRAMS,
        "delivered over {}",
        s.upper
    );
    let peer_sink = udp_listener(&s.peer, &format!("{}:9000", s.peer_addr));
    send_udp(&host, &format!("{}:9000", s.peer_addr), DATAGRAMS, 64);
    assert_eq!(receive_all(&peer_sink, DATAGRAMS), DATAGRAMS);
    let after = collector.scrape(&host);
    let n = DATAGRAMS as f64;
    let lower = delta(packets(&after, &s.lower), packets(&before, &s.lower));
    let upper = delta(packets(&after, &s.upper), packets(&before, &s.upper));
    println!("{kind}: [eBPF RX, eBPF TX, netlink RX, netlink TX] per {DATAGRAMS} each way: upper {upper:?}, lower veth {lower:?}");
    // The veth under every stack: the probes see every packet both ways,
    // as netlink does.
    assert_eq!(lower, [n, n, n, n], "{kind}: lower veth {}", s.lower);
    // Transmit is traced on the upper device too, and netlink agrees.
    assert_eq!(upper[1], n, "{kind}: eBPF TX on {}", s.upper);
    assert_eq!(upper[3], n, "{kind}: netlink TX on {}", s.upper);
    // netlink counts receive on the upper device, always.
    assert_eq!(upper[2], n, "{kind}: netlink RX on {}", s.upper);
    // eBPF receive on the upper device: only the bridge delivers locally
    // through a second netif_receive_skb; VLAN, macvlan and bond retarget
    // the skb within the first one.
    let expected_rx = if kind == "bridge" { n } else { 0.0 };
    assert_eq!(upper[0], expected_rx, "{kind}: eBPF RX on {}", s.upper);
}

#[test]
fn macvlan_receive_is_counted_on_the_lower_veth_only() {
    check_stack("macvlan", 82);
}

#[test]
fn bridge_receive_is_counted_on_the_port_and_again_on_the_bridge() {
    check_stack("bridge", 84);
}

// This machine's kernel is built without 802.1Q and bonding (and cannot
// load modules); the Debian kernels of `cargo xtask kernels` have both, and
// it runs these with `--exact NAME --include-ignored`.
#[test]
#[ignore = "needs CONFIG_VLAN_8021Q; run by `cargo xtask kernels`"]
fn vlan_receive_is_counted_on_the_lower_veth_only() {
    check_stack("vlan", 81);
}

#[test]
#[ignore = "needs CONFIG_BONDING; run by `cargo xtask kernels`"]
fn bond_receive_is_counted_on_the_slave_only() {
    check_stack("bond", 83);
}
