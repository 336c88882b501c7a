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
//! - [`routes`]: placing a pod whose cache names no namespace, from the
//!   host route of its address.

pub mod cache_file;
pub mod nsid;
pub mod routes;
pub mod source;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

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

/// A link as the match needs it: ifindex, name, rtnl kind, its peer's
/// netns id and its peer's ifindex in that namespace.
#[derive(Debug, Clone, Copy)]
pub struct LinkEnd<'a> {
    pub ifindex: u32,
    pub name: &'a str,
    pub kind: Option<&'a str>,
    pub link_netnsid: Option<i32>,
    pub peer_ifindex: Option<u32>,
}

impl LinkEnd<'_> {
    /// The netns id of the peer when this link can be a pod's host side:
    /// a veth or netkit pair with its other end in another namespace. A
    /// bridge, the node's NIC, a tunnel with its underlay elsewhere never
    /// carries a pod.
    pub fn pod_veth_peer(&self) -> Option<i32> {
        matches!(self.kind, Some("veth" | "netkit"))
            .then_some(self.link_netnsid)
            .flatten()
    }
}

/// A pod's network namespace as drop counts need it: whose it is, and the
/// pod-side names of the devices in it that are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNamespace {
    /// The pod, without an attachment's interface or network.
    pub identity: PodIdentity,
    /// Pod-side ifindex -> name (`eth0`, `net1`).
    pub interfaces: HashMap<u32, String>,
    /// When the namespace was made (CLOCK_BOOTTIME ns), from its netns
    /// file; `None` when not known.
    pub created: Option<u64>,
}

/// An attachment placed in a namespace: the namespace's inode, its id
/// here where the kernel has one, and whether the placement was found in
/// this collection (`current`) or is the last good one kept through a
/// failed read. `written`: the cache file's mtime.
#[derive(Debug, Clone, Copy)]
pub struct Placed<'a> {
    pub inode: u32,
    pub nsid: Option<i32>,
    pub attachment: &'a CniAttachment,
    pub current: bool,
    pub written: Option<SystemTime>,
    /// When the namespace was made (CLOCK_BOOTTIME ns).
    pub created: Option<u64>,
}

/// Which of two claims is better: one found now, then the newer file.
type Rank = (bool, Option<SystemTime>);

impl Placed<'_> {
    fn rank(&self) -> Rank {
        (self.current, self.written)
    }
}

/// The pods by the inode number (`ns.inum`) of their network namespace. A
/// host veth matched to a pod (`by_link`, from [`match_links`]) names its
/// peer in the pod's namespace: IFLA_LINK is the peer's ifindex there, the
/// CNI result its name.
///
/// Who owns an inode: a current placement beats a kept one (the inode was
/// reused); two pods with equal claims name neither. One pod owns at most
/// one namespace: where a leaked old sandbox's namespace is still there,
/// the newest cache file's wins, so no series is served twice.
pub fn pod_namespaces(
    attachments: &[Placed<'_>],
    links: &[LinkEnd<'_>],
    by_link: &HashMap<u32, PodIdentity>,
) -> HashMap<u32, PodNamespace> {
    // Per inode: the best claim so far, and whether another pod ties it.
    let mut claims: HashMap<u32, (&Placed<'_>, bool)> = HashMap::new();
    for placed in attachments {
        match claims.get_mut(&placed.inode) {
            None => {
                claims.insert(placed.inode, (placed, false));
            }
            Some((best, tied)) => {
                let same_pod = best.attachment.pod_uid == placed.attachment.pod_uid;
                if placed.current != best.current {
                    if placed.current {
                        *best = placed;
                        *tied = false;
                    }
                } else if !same_pod {
                    *tied = true;
                } else if placed.rank() > best.rank() {
                    *best = placed;
                }
            }
        }
    }
    // Per pod: its newest namespace.
    let mut newest: HashMap<(&str, &str), (u32, Rank)> = HashMap::new();
    for (inode, (placed, tied)) in &claims {
        if *tied {
            continue;
        }
        let key = (
            placed.attachment.namespace.as_str(),
            placed.attachment.pod.as_str(),
        );
        let rank = placed.rank();
        match newest.get(&key) {
            Some((other, known)) if (*known, *other) >= (rank, *inode) => {}
            _ => {
                newest.insert(key, (*inode, rank));
            }
        }
    }
    let mut namespaces: HashMap<u32, PodNamespace> = newest
        .into_values()
        .map(|(inode, _)| {
            let placed = claims[&inode].0;
            let namespace = PodNamespace {
                identity: identity_of(placed.attachment, false),
                interfaces: HashMap::new(),
                created: placed.created,
            };
            (inode, namespace)
        })
        .collect();
    let inode_of: HashMap<i32, u32> = attachments
        .iter()
        .filter(|p| p.current)
        .filter_map(|p| Some((p.nsid?, p.inode)))
        .collect();
    for link in links {
        let (Some(nsid), Some(peer)) = (link.pod_veth_peer(), link.peer_ifindex) else {
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
        let Some(candidates) = link.pod_veth_peer().and_then(|id| by_nsid.get(&id)) else {
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
mod tests;
