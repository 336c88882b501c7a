//! Which pod owns an interface: the host-side end of a pod's veth (`azv…`,
//! `lxc…`, `cali…`, `veth…`) is matched to the CNI attachment whose network
//! namespace holds its peer.
//!
//! The source is the result cache libcni (containerd's CRI) writes for every
//! attachment under `/var/lib/cni/results/`: namespace, pod name and UID in
//! `cniArgs`, and the pod's netns path. No API server, no runtime socket, no
//! secret. The join is the kernel's own: a host veth reports its peer's
//! namespace as `IFLA_LINK_NETNSID`, and `RTM_GETNSID` on the opened netns
//! file says which id that namespace has here. The kernel assigns an id the
//! first time it reports a link whose peer is in that namespace (creating or
//! moving the peer, or dumping the link), so a veth in a dump always carries
//! a real id; a namespace without a veth here answers -1 and matches nothing.
//!
//! - [`cache_file`]: parsing one cache file (pure).
//! - [`source`]: the I/O: listing the directory, re-reading only files whose
//!   size or mtime changed, opening netns files, asking for their ids.
//! - [`nsid`]: `RTM_GETNSID` over rtnetlink.

pub mod cache_file;
pub mod nsid;
pub mod source;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use cache_file::{parse_cache_file, CniAttachment};
pub use source::{PodConfig, PodSource, PodStatus, PodView, ERROR_REASONS};

pub use crate::model::PodIdentity;

/// The identity of `attachment`'s pod, with the attachment's interface and
/// network when it is known to be this one.
fn identity_of(attachment: &CniAttachment, with_interface: bool) -> PodIdentity {
    PodIdentity {
        namespace: attachment.namespace.clone(),
        pod: attachment.pod.clone(),
        pod_uid: attachment.pod_uid.clone(),
        container_id: attachment.container_id.clone(),
        pod_interface: with_interface.then(|| attachment.if_name.clone()),
        network: with_interface.then(|| attachment.network.clone()),
    }
}

/// A link as the match needs it: ifindex, name, its peer's netns id and
/// its peer's ifindex in that namespace.
#[derive(Debug, Clone, Copy)]
pub struct LinkEnd<'a> {
    pub ifindex: u32,
    pub name: &'a str,
    pub link_netnsid: Option<i32>,
    pub peer_ifindex: Option<u32>,
}

/// A pod's network namespace as drop counts need it: whose it is, and the
/// pod-side names of the devices in it that are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNamespace {
    /// The pod, without an attachment's interface or network.
    pub identity: PodIdentity,
    /// Pod-side ifindex -> name (`eth0`, `net1`).
    pub interfaces: HashMap<u32, String>,
}

/// The pods by the inode number (`ns.inum`) of their network namespace.
/// `attachments` are those whose netns file was found, with its inode and,
/// where the kernel has one, its id here. A host veth matched to a pod
/// (`by_link`, from [`match_links`]) names its peer in the pod's namespace:
/// IFLA_LINK is the peer's ifindex there, the CNI result its name. Two pods
/// claiming one namespace name neither.
pub fn pod_namespaces(
    attachments: &[(u32, Option<i32>, &CniAttachment)],
    links: &[LinkEnd<'_>],
    by_link: &HashMap<u32, PodIdentity>,
) -> HashMap<u32, PodNamespace> {
    let mut namespaces: HashMap<u32, PodNamespace> = HashMap::new();
    let mut contested = Vec::new();
    for (inode, _, attachment) in attachments {
        let identity = identity_of(attachment, false);
        match namespaces.get(inode) {
            Some(known) if known.identity.pod_uid != identity.pod_uid => contested.push(*inode),
            Some(_) => {}
            None => {
                let interfaces = HashMap::new();
                namespaces.insert(
                    *inode,
                    PodNamespace {
                        identity,
                        interfaces,
                    },
                );
            }
        }
    }
    for inode in contested {
        namespaces.remove(&inode);
    }
    let inode_of: HashMap<i32, u32> = attachments
        .iter()
        .filter_map(|(inode, nsid, _)| Some(((*nsid)?, *inode)))
        .collect();
    for link in links {
        let (Some(nsid), Some(peer)) = (link.link_netnsid, link.peer_ifindex) else {
            continue;
        };
        let Some(name) = by_link
            .get(&link.ifindex)
            .and_then(|identity| identity.pod_interface.clone())
        else {
            continue;
        };
        if let Some(namespace) = inode_of.get(&nsid).and_then(|i| namespaces.get_mut(i)) {
            namespace.interfaces.insert(peer, name);
        }
    }
    namespaces
}

/// The pure join: each link whose peer namespace has the id of some
/// attachment's netns gets that attachment's pod. When several attachments
/// share one namespace (Multus: one per ifName), the one whose CNI result
/// names this host interface wins; failing that, the pod is still known if
/// they all belong to one pod (they always should), only not the attachment.
pub fn match_links(
    links: &[LinkEnd<'_>],
    attachments: &[(i32, &CniAttachment)],
) -> HashMap<u32, PodIdentity> {
    let mut by_nsid: HashMap<i32, Vec<&CniAttachment>> = HashMap::new();
    for (nsid, attachment) in attachments.iter().filter(|(_, a)| !a.is_loopback()) {
        by_nsid.entry(*nsid).or_default().push(attachment);
    }
    let mut identities = HashMap::new();
    for link in links {
        let Some(candidates) = link.link_netnsid.and_then(|id| by_nsid.get(&id)) else {
            continue;
        };
        let identity = match candidates.as_slice() {
            [only] => Some(identity_of(only, true)),
            several => several
                .iter()
                .find(|a| a.host_interfaces.iter().any(|h| h == link.name))
                .map(|a| identity_of(a, true))
                .or_else(|| {
                    let first = several[0];
                    several
                        .iter()
                        .all(|a| a.pod_uid == first.pod_uid)
                        .then(|| identity_of(first, false))
                }),
        };
        if let Some(identity) = identity {
            identities.insert(link.ifindex, identity);
        }
    }
    identities
}

/// Where the collector finds a netns file the cache names: the runtimes'
/// `/var/run/netns/<name>` (or `/run/netns/<name>`) is looked up in
/// `--netns-dir`, where the DaemonSet mounts the host's; any other path
/// (`/proc/<pid>/ns/net`) is used as it is.
pub fn netns_file(netns: &str, netns_dir: &Path) -> PathBuf {
    for prefix in ["/var/run/netns/", "/run/netns/"] {
        if let Some(name) = netns.strip_prefix(prefix) {
            if !name.is_empty() && !name.contains('/') && name != ".." {
                return netns_dir.join(name);
            }
        }
    }
    PathBuf::from(netns)
}

#[cfg(test)]
mod tests {
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
            link_netnsid: nsid,
            peer_ifindex: nsid.map(|_| 2),
        }
    }

    #[test]
    fn pod_namespaces_are_keyed_by_inode_and_name_the_peers_of_matched_veths() {
        let (web, db) = (
            attachment("web", "eth0", &[]),
            attachment("db", "eth0", &[]),
        );
        // "db" has no veth here (no nsid): still named by its inode.
        let attachments = [(4026532001, Some(0), &web), (4026532002, None, &db)];
        let links = [link(7, "azv1f2e3d4c5b6", Some(0))];
        let by_link = match_links(&links, &[(0, &web)]);
        let found = pod_namespaces(&attachments, &links, &by_link);
        let web_ns = &found[&4026532001];
        assert_eq!(web_ns.identity.pod, "web");
        assert_eq!(web_ns.identity.pod_interface, None);
        assert_eq!(web_ns.interfaces, HashMap::from([(2, "eth0".to_string())]));
        assert_eq!(found[&4026532002].identity.pod, "db");
        assert!(found[&4026532002].interfaces.is_empty());
        // Two pods claiming one namespace: neither owns it.
        let contested = pod_namespaces(&[(9, None, &web), (9, None, &db)], &[], &HashMap::new());
        assert!(contested.is_empty(), "{contested:?}");
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
}
