//! Placing a pod whose cache file names no namespace at all: azure-vnet on
//! containerd 1.7 (AKS's default) caches `[{"name":"eth0"}]` and no
//! `netns`, as Calico before 3.31 caches only its `cali…`. Both route each
//! pod address to its host veth in the main table (`<podIP>/32 dev azv…`),
//! and that veth's `IFLA_LINK_NETNSID` is the pod namespace's id here. Every
//! step is an rtnetlink GET, which needs no capability.

use std::collections::HashMap;
use std::net::IpAddr;

use super::LinkEnd;

/// The netns id of the namespace holding the peer of the host veth that
/// the main table routes one of `addresses` to; `None` when no address is
/// routed to a veth (a bridge, the node's `eth0`, a tunnel) or the routes
/// disagree.
pub fn netnsid_by_route(
    addresses: &[IpAddr],
    routes: &HashMap<IpAddr, u32>,
    links: &[LinkEnd<'_>],
) -> Option<i32> {
    let mut found = None;
    for address in addresses {
        let Some(oif) = routes.get(address) else {
            continue;
        };
        let Some(link) = links.iter().find(|l| l.ifindex == *oif) else {
            continue;
        };
        let Some(nsid) = link.pod_veth_peer() else {
            continue;
        };
        if found.is_some_and(|known| known != nsid) {
            return None;
        }
        found = Some(nsid);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link<'a>(ifindex: u32, name: &'a str, kind: &'a str, nsid: Option<i32>) -> LinkEnd<'a> {
        LinkEnd {
            ifindex,
            name,
            kind: Some(kind),
            link_netnsid: nsid,
            peer_ifindex: nsid.map(|_| 2),
        }
    }

    #[test]
    fn a_pod_address_routed_to_a_veth_finds_the_veths_peer_namespace() {
        let links = [
            LinkEnd {
                ifindex: 2,
                name: "eth0",
                kind: None,
                link_netnsid: None,
                peer_ifindex: None,
            },
            link(3, "cbr0", "bridge", None),
            link(7, "azvc440f455693", "veth", Some(4)),
            // A tunnel whose underlay is in another namespace is no pod.
            link(8, "vxlan0", "vxlan", Some(5)),
        ];
        let routes: HashMap<IpAddr, u32> = [
            ("10.224.0.35", 7),
            ("10.224.0.36", 2),
            ("10.224.0.37", 3),
            ("10.224.0.38", 8),
            ("fd00::35", 7),
        ]
        .into_iter()
        .map(|(a, i)| (a.parse().unwrap(), i))
        .collect();
        let ip = |a: &str| a.parse::<IpAddr>().unwrap();
        assert_eq!(
            netnsid_by_route(&[ip("10.224.0.35"), ip("fd00::35")], &routes, &links),
            Some(4)
        );
        // Routed to the node's eth0, a bridge or a tunnel: not placed.
        for other in ["10.224.0.36", "10.224.0.37", "10.224.0.38", "10.9.9.9"] {
            assert_eq!(
                netnsid_by_route(&[ip(other)], &routes, &links),
                None,
                "{other}"
            );
        }
        // Two addresses of one pod routed into different namespaces: neither.
        let mut split = routes.clone();
        split.insert(ip("fd00::35"), 8);
        let links_split = [
            link(7, "azv1", "veth", Some(4)),
            link(8, "azv2", "veth", Some(6)),
        ];
        assert_eq!(
            netnsid_by_route(&[ip("10.224.0.35"), ip("fd00::35")], &split, &links_split),
            None
        );
    }
}
