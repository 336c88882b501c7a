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

pub use cache_file::{parse_cache_file, Attachment};
pub use source::{PodConfig, PodSource, PodStatus, ERROR_REASONS};

pub use crate::model::PodIdentity;

/// The identity of `attachment`'s pod, with the attachment's interface and
/// network when it is known to be this one.
fn identity_of(attachment: &Attachment, with_interface: bool) -> PodIdentity {
    PodIdentity {
        namespace: attachment.namespace.clone(),
        pod: attachment.pod.clone(),
        pod_uid: attachment.pod_uid.clone(),
        container_id: attachment.container_id.clone(),
        pod_interface: with_interface.then(|| attachment.if_name.clone()),
        network: with_interface.then(|| attachment.network.clone()),
    }
}

/// A link as the match needs it: ifindex, name and its peer's netns id.
#[derive(Debug, Clone, Copy)]
pub struct LinkEnd<'a> {
    pub ifindex: u32,
    pub name: &'a str,
    pub link_netnsid: Option<i32>,
}

/// The pure join: each link whose peer namespace has the id of some
/// attachment's netns gets that attachment's pod. When several attachments
/// share one namespace (Multus: one per ifName), the one whose CNI result
/// names this host interface wins; failing that, the pod is still known if
/// they all belong to one pod (they always should), only not the attachment.
pub fn match_links(
    links: &[LinkEnd<'_>],
    attachments: &[(i32, &Attachment)],
) -> HashMap<u32, PodIdentity> {
    let mut by_nsid: HashMap<i32, Vec<&Attachment>> = HashMap::new();
    for (nsid, attachment) in attachments {
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

    fn attachment(pod: &str, if_name: &str, hosts: &[&str]) -> Attachment {
        Attachment {
            container_id: format!("{pod}-sandbox"),
            network: format!("net-{if_name}"),
            if_name: if_name.into(),
            netns: Some(format!("/var/run/netns/cni-{pod}")),
            namespace: "team-a".into(),
            pod: pod.into(),
            pod_uid: format!("uid-{pod}"),
            host_interfaces: hosts.iter().map(|h| h.to_string()).collect(),
        }
    }

    fn link(ifindex: u32, name: &str, nsid: Option<i32>) -> LinkEnd<'_> {
        LinkEnd {
            ifindex,
            name,
            link_netnsid: nsid,
        }
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
