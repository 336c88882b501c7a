//! No series the collector can serve passes Azure Managed Prometheus's
//! limits, which fail the whole scrape job (`up == 0`) rather than the one
//! series: at most 63 labels, names of at most 511 characters, values of at
//! most 1,023. Checked on the longest inputs the collector takes or the
//! kernel and Kubernetes give it, with every `--label` the CLI accepts.

use super::exposition::parse_complete;
use super::*;
use crate::cli::{MAX_LABELS, MAX_LABEL_NAME_CHARS, MAX_LABEL_VALUE_CHARS, MAX_NODE_NAME_CHARS};

const AZURE_MAX_LABELS: usize = 63;
/// What the PodMonitor's scrape adds to a series the collector serves
/// without them: job, instance, namespace, pod, container, endpoint.
const TARGET_LABELS: usize = 6;
const AZURE_MAX_NAME_CHARS: usize = 511;
const AZURE_MAX_VALUE_CHARS: usize = 1023;

/// An interface name is at most IFNAMSIZ - 1 bytes.
const IFNAME_CHARS: usize = 15;
/// A hardware address is at most MAX_ADDR_LEN (32) bytes, written as
/// colon-separated hex.
const MAC_CHARS: usize = 32 * 3 - 1;
/// A link kind is a kernel module's rtnl_link_ops name, within
/// MODULE_NAME_LEN - 1.
const KIND_CHARS: usize = 55;
const POD_NAME_CHARS: usize = 253;
const NAMESPACE_CHARS: usize = 63;
/// Drop reason names are the kernel's enum names; none is near this.
const REASON_CHARS: usize = 64;

fn long(prefix: &str, chars: usize) -> String {
    let mut text = prefix.to_string();
    while text.chars().count() < chars {
        text.push('x');
    }
    text
}

fn longest_pod(ifname: &str) -> PodIdentity {
    PodIdentity {
        namespace: long("ns", NAMESPACE_CHARS),
        pod: long("pod", POD_NAME_CHARS),
        pod_uid: "0f7c2a5e-7e0b-4b3a-9d1e-2f6c8a4b1d33".into(),
        container_id: long("c", 64),
        pod_interface: Some(ifname.into()),
        network: Some(long("net", 253)),
    }
}

/// [`snapshot`] with every name and label at its longest, every family
/// served, and as many `--label`s as the CLI takes.
fn longest_snapshot() -> Snapshot {
    let mut snapshot = snapshot();
    snapshot.node = long("node", MAX_NODE_NAME_CHARS);
    snapshot.labels = (0..MAX_LABELS)
        .map(|n| {
            (
                long(&format!("l{n:02}_"), MAX_LABEL_NAME_CHARS),
                long("v", MAX_LABEL_VALUE_CHARS),
            )
        })
        .collect();
    let reason = long("R", REASON_CHARS);
    for (n, interface) in snapshot.interfaces.iter_mut().enumerate() {
        interface.name = long(&format!("i{n}"), IFNAME_CHARS);
        interface.master = Some(long("m", IFNAME_CHARS));
        interface.kind = interface.kind.as_ref().map(|_| long("k", KIND_CHARS));
        interface.mac_address = Some(long("02:", MAC_CHARS));
        interface.pod = Some(longest_pod(&interface.name));
        if let Some(ebpf) = &mut interface.ebpf {
            ebpf.drops.insert(reason.clone(), 1);
        }
    }
    for pod in &mut snapshot.pod_netstat {
        pod.pod = longest_pod("eth0");
        for value in pod.counters.values_mut() {
            *value = u64::MAX;
        }
    }
    snapshot.namespace_drops = vec![
        NamespaceDrops {
            netns: Netns::Inode(u32::MAX),
            pod: Some(longest_pod("eth0")),
            ifindex: u32::MAX,
            interface: Some(long("p", IFNAME_CHARS)),
            drops: BTreeMap::from([(reason.clone(), 1)]),
        },
        NamespaceDrops {
            netns: Netns::Inode(u32::MAX),
            ifindex: u32::MAX,
            drops: BTreeMap::from([(reason, 1)]),
            ..NamespaceDrops::default()
        },
    ];
    snapshot
}

#[test]
fn no_series_passes_azure_managed_prometheus_limits_with_the_longest_inputs() {
    let snapshot = longest_snapshot();
    let text = render_profile(&snapshot, &snapshots::http(), Profile::Detailed);
    let families = parse_complete(&text);
    let mut series = 0;
    let mut most_own_labels = 0;
    for family in &families {
        for sample in &family.samples {
            series += 1;
            let labels = &sample.labels;
            let name = &family.name;
            assert!(
                labels.len() + TARGET_LABELS <= AZURE_MAX_LABELS,
                "{name}: {} labels and the target's",
                labels.len()
            );
            for (key, value) in labels {
                assert!(
                    key.chars().count() <= AZURE_MAX_NAME_CHARS,
                    "{name}: label name of {} characters",
                    key.chars().count()
                );
                assert!(
                    value.chars().count() <= AZURE_MAX_VALUE_CHARS,
                    "{name}: {key} of {} characters",
                    value.chars().count()
                );
            }
            let user = snapshot
                .labels
                .iter()
                .filter(|(k, _)| labels.contains_key(k));
            most_own_labels = most_own_labels.max(labels.len() - user.count());
        }
    }
    // Every family rendered, and the longest inputs reached the output.
    assert!(families.len() > 40, "{} families", families.len());
    assert!(text.contains(&long("pod", POD_NAME_CHARS)));
    assert!(text.contains(&long("l31_", MAX_LABEL_NAME_CHARS)));
    // The margin the bound on --label leaves, for whoever raises it.
    assert!(
        most_own_labels + MAX_LABELS + TARGET_LABELS <= AZURE_MAX_LABELS,
        "{most_own_labels} own labels + {MAX_LABELS} --labels + {TARGET_LABELS} of the target"
    );
    println!("{series} series; at most {most_own_labels} labels of the collector's own on one");
}
