//! Drops in other network namespaces, given to the pods that own them.
//!
//! The probes key a drop by its namespace's inode number (`ns.inum`), the
//! one identity a pod's netns file also shows. The kernel reuses an inode
//! number once its namespace is gone, so counts must never outlive the
//! owner they were counted for. The [`NamespaceLedger`] remembers which pod
//! sandbox owned each inode at the last collection; when that changes (the
//! pod deleted, another pod created on the same inode, a namespace whose
//! counts were served without a pod becoming a pod's), every entry read for
//! the inode is forgotten, so the new owner starts at zero. A pod's
//! namespace outlives its cache file for a moment (the runtime deletes the
//! file, then the namespace), and its teardown drops would otherwise be
//! kept as a namespace no pod owns: so for [`DEPARTED_COLLECTIONS`] after
//! its pod went, an inode's new entries are forgotten too (once the
//! namespace is dead the probe counts its drops at node level). Any other
//! namespace no pod owns cannot be watched for its end (which process is in
//! which namespace is behind `/proc/PID/ns/net`, which needs ptrace
//! access): its entries are forgotten once they have not moved for
//! [`IDLE_NAMESPACE`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::model::{NamespaceDrops, NamespaceTcp, Netns};
use crate::sources::ebpf::EbpfReading;
use crate::sources::pods::PodNamespace;

/// How long the entries of a namespace no pod owns are kept without a new
/// drop.
pub const IDLE_NAMESPACE: Duration = Duration::from_secs(15 * 60);

/// For how many collections after its pod went an inode's new entries
/// are still the departed pod's teardown, forgotten rather than kept.
pub const DEPARTED_COLLECTIONS: u8 = 3;

/// Every namespace is created with its loopback first, at this ifindex.
const LOOPBACK_IFINDEX: u32 = 1;

/// The pod sandbox owning a namespace: its pod UID and sandbox container.
type Owner = (String, String);

#[derive(Debug, Default)]
pub struct NamespaceLedger {
    /// Owner of each pod namespace at the last collection whose pod
    /// identity was read; `None` before the first.
    owners: Option<HashMap<u32, Owner>>,
    /// Each unowned namespace's drops when they last moved, and when.
    unowned: HashMap<u32, (u64, Instant)>,
    /// Inodes whose pod went, with the collections left in which their
    /// new entries are its teardown's.
    departed: HashMap<u32, u8>,
}

impl NamespaceLedger {
    /// The namespaces whose entries in `reading` must go now. `pods` is
    /// `None` when pod identity could not be read in this collection:
    /// owners are then unknown, so none is taken to have changed.
    pub fn forgotten(
        &mut self,
        reading: &EbpfReading,
        pods: Option<&HashMap<u32, PodNamespace>>,
        now: Instant,
    ) -> HashSet<u32> {
        let mut totals: HashMap<u32, u64> = HashMap::new();
        for ((netns, _), reasons) in &reading.namespace_drops {
            if let Netns::Inode(inode) = netns {
                *totals.entry(*inode).or_default() += reasons.values().sum::<u64>();
            }
        }
        for (netns, events) in &reading.namespace_tcp {
            if let Netns::Inode(inode) = netns {
                *totals.entry(*inode).or_default() += events.values().sum::<u64>();
            }
        }
        let current: Option<HashMap<u32, Owner>> = pods.map(|pods| {
            pods.iter()
                .map(|(inode, ns)| {
                    let owner = (
                        ns.identity.pod_uid.clone(),
                        ns.identity.container_id.clone(),
                    );
                    (*inode, owner)
                })
                .collect()
        });
        let owners = current.as_ref().or(self.owners.as_ref());
        let mut forgotten = HashSet::new();
        for (&inode, &total) in &totals {
            let owner = owners.and_then(|owners| owners.get(&inode));
            if let (Some(before), Some(now_owners)) = (&self.owners, &current) {
                let changed = match (before.get(&inode), now_owners.get(&inode)) {
                    (Some(before), now) => Some(before) != now,
                    // A departed pod's namespace, still being torn down.
                    (None, None) if self.departed.contains_key(&inode) => true,
                    // A pod's first drops may come before its first
                    // sighting; counts already kept for no one, or whose
                    // first drop is older than the pod's namespace, are
                    // another namespace's (one that lived and died on this
                    // inode between two collections).
                    (None, Some(_)) => {
                        let created = pods.and_then(|p| p.get(&inode)).and_then(|p| p.created);
                        let first_drop = reading.first_drops.get(&inode);
                        self.unowned.contains_key(&inode)
                            || matches!((first_drop, created), (Some(f), Some(c)) if *f < c)
                    }
                    (None, None) => false,
                };
                if changed {
                    forgotten.insert(inode);
                    continue;
                }
            }
            if owner.is_some() {
                continue;
            }
            match self.unowned.get(&inode) {
                Some((seen, since)) if *seen == total => {
                    if now.duration_since(*since) >= IDLE_NAMESPACE {
                        forgotten.insert(inode);
                    }
                }
                _ => {
                    self.unowned.insert(inode, (total, now));
                }
            }
        }
        self.unowned.retain(|inode, _| {
            totals.contains_key(inode)
                && !forgotten.contains(inode)
                && owners.is_none_or(|o| !o.contains_key(inode))
        });
        if let (Some(before), Some(now_owners)) = (&self.owners, &current) {
            self.departed.retain(|inode, left| {
                *left -= 1;
                *left > 0 && !now_owners.contains_key(inode)
            });
            for inode in before.keys().filter(|i| !now_owners.contains_key(i)) {
                self.departed.insert(*inode, DEPARTED_COLLECTIONS);
            }
        }
        if current.is_some() {
            self.owners = current;
        }
        forgotten
    }
}

/// The model's drops outside the host's interfaces: each namespace's
/// counts named by the pod that owns it, leaving out `forgotten` ones.
/// Pods come first (by namespace, pod, interface), then the rest.
pub fn namespace_drops(
    drops: BTreeMap<(Netns, u32), BTreeMap<String, u64>>,
    pods: &HashMap<u32, PodNamespace>,
    forgotten: &HashSet<u32>,
) -> Vec<NamespaceDrops> {
    let mut out: Vec<NamespaceDrops> = drops
        .into_iter()
        .filter(|((netns, _), _)| !matches!(netns, Netns::Inode(i) if forgotten.contains(i)))
        .map(|((netns, ifindex), drops)| {
            let pod = match netns {
                Netns::Inode(inode) => pods.get(&inode),
                _ => None,
            };
            let interface = match ifindex {
                0 => None,
                LOOPBACK_IFINDEX => Some("lo".to_string()),
                other => pod.and_then(|p| p.interfaces.get(&other).cloned()),
            };
            NamespaceDrops {
                netns,
                pod: pod.map(|p| p.identity.clone()),
                ifindex,
                interface,
                drops,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        let key = |d: &NamespaceDrops| {
            let pod = d.pod.as_ref().map(|p| (p.namespace.clone(), p.pod.clone()));
            (pod.is_none(), pod, d.interface.clone(), d.netns, d.ifindex)
        };
        key(a).cmp(&key(b))
    });
    out
}

/// The TCP events of each namespace, named by the pod that owns it,
/// leaving out `forgotten` ones; ordered as [`namespace_drops`].
pub fn namespace_tcp(
    tcp: BTreeMap<Netns, BTreeMap<(u16, u16), u64>>,
    pods: &HashMap<u32, PodNamespace>,
    forgotten: &HashSet<u32>,
) -> Vec<NamespaceTcp> {
    let mut out: Vec<NamespaceTcp> = tcp
        .into_iter()
        .filter(|(netns, _)| !matches!(netns, Netns::Inode(i) if forgotten.contains(i)))
        .map(|(netns, events)| NamespaceTcp {
            netns,
            pod: match netns {
                Netns::Inode(inode) => pods.get(&inode).map(|p| p.identity.clone()),
                _ => None,
            },
            events,
        })
        .collect();
    out.sort_by(|a, b| {
        let key = |t: &NamespaceTcp| {
            let pod = t.pod.as_ref().map(|p| (p.namespace.clone(), p.pod.clone()));
            (pod.is_none(), pod, t.netns)
        };
        key(a).cmp(&key(b))
    });
    out
}

#[cfg(test)]
mod tests;
