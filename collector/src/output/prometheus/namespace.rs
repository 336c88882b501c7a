//! Drops outside the host's interfaces: inside pods' network namespaces
//! (named by pod), and the rest (the host's device-less drops, namespaces
//! no pod owns, drops with no namespace). Each family is a
//! [`NamespaceFamily`] row; every series carries the per-interface identity
//! labels, with `interface` the device inside that namespace.

use std::borrow::Cow;
use std::fmt::Write;

use super::{header, identity_labels, sample, Kind};
use crate::model::{NamespaceDrops, Netns, Probe, Snapshot};

/// Label names and values naming a namespace's owner.
type OwnerLabels<'a> = Vec<(&'static str, Cow<'a, str>)>;

struct NamespaceFamily {
    name: &'static str,
    help: &'static str,
    /// The labels naming the namespace, before the identity labels;
    /// `None` when its drops are not this family's.
    owner: fn(&NamespaceDrops) -> Option<OwnerLabels<'_>>,
}

const FAMILIES: [NamespaceFamily; 2] = [
    NamespaceFamily {
        name: "network_pod_drops_total",
        help: "Packets dropped inside a pod's network namespace (skb:kfree_skb), by the kernel's drop reason; interface is the pod-side device, empty when the drop had none.",
        owner: |d| {
            let pod = d.pod.as_ref()?;
            Some(vec![
                ("namespace", Cow::Borrowed(pod.namespace.as_str())),
                ("pod", Cow::Borrowed(pod.pod.as_str())),
            ])
        },
    },
    NamespaceFamily {
        name: "network_netns_drops_total",
        help: "Packets dropped outside the host's interfaces and every pod, by the kernel's drop reason: netns=\"host\" (the host's namespace, on no device), an inode number (a namespace no pod owns), or \"unknown\" (no namespace found).",
        owner: |d| {
            if d.pod.is_some() {
                return None;
            }
            let netns = match d.netns {
                Netns::Host => Cow::Borrowed("host"),
                Netns::Inode(inode) => Cow::Owned(inode.to_string()),
                Netns::Unknown => Cow::Borrowed("unknown"),
            };
            Some(vec![("netns", netns)])
        },
    },
];

/// The `interface` label: the device's name, `#<ifindex>` for a device
/// whose name is not known, empty for none.
fn interface_label(drops: &NamespaceDrops) -> Cow<'_, str> {
    match (&drops.interface, drops.ifindex) {
        (Some(name), _) => Cow::Borrowed(name.as_str()),
        (None, 0) => Cow::Borrowed(""),
        (None, ifindex) => Cow::Owned(format!("#{ifindex}")),
    }
}

pub(super) fn write(out: &mut String, snapshot: &Snapshot) {
    let ebpf = &snapshot.sources.ebpf;
    if !(ebpf.enabled && ebpf.attached(Probe::Drop)) {
        return;
    }
    for family in &FAMILIES {
        header(out, family.name, family.help, Kind::Counter);
        for drops in &snapshot.namespace_drops {
            let Some(owner) = (family.owner)(drops) else {
                continue;
            };
            let mut identity = String::new();
            for (key, value) in owner {
                let _ = write!(identity, "{key}=\"{}\",", super::escape(&value));
            }
            identity.push_str(&identity_labels(snapshot, &interface_label(drops)));
            for (reason, packets) in &drops.drops {
                sample(out, family.name, &identity, &[("reason", reason)], *packets);
            }
        }
    }
}
