//! The per-interface families: every series carries the interface's
//! identity labels (`interface`, `host`, `hostname`, `--label`s).
//!
//! Every family is an [`InterfaceFamily`] row; the IFLA_STATS64 counters
//! come from the tables in [`super::counters`].

use super::counters::{DETAIL_COUNTERS, SEED_COUNTERS};
use super::{header, identity_labels, sample, Kind, Profile};
use crate::model::{EbpfInterface, Interface, LinkCounters, Probe, Snapshot};

/// Labels and value of one sample, given to a family's `samples`.
type Emit<'a> = dyn FnMut(&[(&str, &str)], u64) + 'a;

/// When a family is served.
#[derive(Debug, Clone, Copy)]
enum Served {
    Always,
    /// `--detailed-metrics` only.
    Detailed,
    /// While this probe is attached: one that is not (not selected, or its
    /// tracepoint missing) would only serve zeros that look like "no traffic".
    Probe(Probe),
    /// While the pod identity source is on.
    PodIdentity,
}

/// One family: its rows' samples come from each interface in turn.
struct InterfaceFamily {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    served: Served,
    samples: Samples,
}

enum Samples {
    /// A seed counter: one sample, with the `state` label.
    SeedCounter(fn(&LinkCounters) -> u64),
    /// A detail counter: one sample.
    Counter(fn(&LinkCounters) -> u64),
    /// One sample, with the `state` label.
    WithState(fn(&Interface) -> u64),
    /// One sample where eBPF counts the interface.
    Ebpf(fn(&EbpfInterface) -> u64),
    /// One sample where the interface has a value.
    Value(fn(&Interface) -> Option<u64>),
    /// Any number of samples, each with labels of its own.
    Labelled(fn(&Interface, Profile, &mut Emit)),
}

/// (metric name, help, probe that counts it, which value).
type EbpfCounter = (&'static str, &'static str, Probe, fn(&EbpfInterface) -> u64);

const EBPF_COUNTERS: [EbpfCounter; 4] = [
    (
        "network_interface_ebpf_rx_packets_total",
        "Packets seen by the net:netif_receive_skb probe.",
        Probe::Rx,
        |e| e.rx_packets,
    ),
    (
        "network_interface_ebpf_rx_bytes_total",
        "Bytes seen by net:netif_receive_skb (skb->len: L2 header already pulled).",
        Probe::Rx,
        |e| e.rx_bytes,
    ),
    (
        "network_interface_ebpf_tx_packets_total",
        "Packets handed to the driver, seen by net:net_dev_start_xmit.",
        Probe::Tx,
        |e| e.tx_packets,
    ),
    (
        "network_interface_ebpf_tx_bytes_total",
        "Bytes handed to the driver (skb->len including the L2 header).",
        Probe::Tx,
        |e| e.tx_bytes,
    ),
];

const MTU: InterfaceFamily = InterfaceFamily {
    name: "network_interface_stats_mtu",
    help: "Maximum transmission unit in bytes.",
    kind: Kind::Gauge,
    served: Served::Always,
    samples: Samples::WithState(|i| u64::from(i.mtu)),
};

/// Link state, attributes and pod, between the counters and eBPF.
const STATE_FAMILIES: [InterfaceFamily; 7] = [
    InterfaceFamily {
        name: "network_interface_up",
        help: "1 when the interface is administratively up (IFF_UP).",
        kind: Kind::Gauge,
        served: Served::Always,
        samples: Samples::Value(|i| Some(u64::from(i.admin_up))),
    },
    InterfaceFamily {
        name: "network_interface_carrier",
        help: "1 when the interface has carrier (IFLA_CARRIER).",
        kind: Kind::Gauge,
        served: Served::Always,
        samples: Samples::Value(|i| i.carrier.map(u64::from)),
    },
    InterfaceFamily {
        name: "network_interface_oper_state",
        help: "RFC 2863 operational state as IF-MIB ifOperStatus: 1 up, 2 down, 3 testing, 4 unknown, 5 dormant, 6 notpresent, 7 lowerlayerdown.",
        kind: Kind::Gauge,
        served: Served::Always,
        samples: Samples::Value(|i| Some(if_oper_status(&i.oper_state))),
    },
    InterfaceFamily {
        name: "network_interface_carrier_changes_total",
        help: "Carrier up/down transitions since the device was created.",
        kind: Kind::Counter,
        served: Served::Detailed,
        samples: Samples::Value(|i| i.carrier_changes.map(u64::from)),
    },
    InterfaceFamily {
        name: "network_interface_speed_bytes",
        help: "Negotiated link speed in bytes per second, where the driver reports one.",
        kind: Kind::Gauge,
        served: Served::Always,
        samples: Samples::Value(|i| i.speed_bytes),
    },
    InterfaceFamily {
        name: "network_interface_info",
        help: "Interface attributes as labels; value is always 1.",
        kind: Kind::Gauge,
        served: Served::Always,
        samples: Samples::Labelled(info),
    },
    InterfaceFamily {
        name: "network_interface_pod_info",
        help: "The pod whose network namespace holds this interface's peer (from the CNI result cache); value is always 1.",
        kind: Kind::Gauge,
        served: Served::PodIdentity,
        samples: Samples::Labelled(pod_info),
    },
];

const DROPS: InterfaceFamily = InterfaceFamily {
    name: "network_interface_drops_total",
    help: "Packets freed as dropped (skb:kfree_skb), by the kernel's drop reason.",
    kind: Kind::Counter,
    served: Served::Probe(Probe::Drop),
    samples: Samples::Labelled(|i, _, emit| {
        for (reason, packets) in i.ebpf.iter().flat_map(|e| &e.drops) {
            emit(&[("reason", reason)], *packets);
        }
    }),
};

/// Every per-interface family, in the order served.
fn families() -> impl Iterator<Item = InterfaceFamily> {
    let seed = SEED_COUNTERS
        .iter()
        .map(|&(name, help, value)| InterfaceFamily {
            name,
            help,
            kind: Kind::Counter,
            served: Served::Always,
            samples: Samples::SeedCounter(value),
        });
    let detail = DETAIL_COUNTERS
        .iter()
        .map(|&(name, help, value)| InterfaceFamily {
            name,
            help,
            kind: Kind::Counter,
            served: Served::Detailed,
            samples: Samples::Counter(value),
        });
    let ebpf = EBPF_COUNTERS
        .iter()
        .map(|&(name, help, probe, value)| InterfaceFamily {
            name,
            help,
            kind: Kind::Counter,
            served: Served::Probe(probe),
            samples: Samples::Ebpf(value),
        });
    seed.chain([MTU])
        .chain(detail)
        .chain(STATE_FAMILIES)
        .chain(ebpf)
        .chain([DROPS])
}

impl Served {
    fn holds(self, snapshot: &Snapshot, profile: Profile) -> bool {
        let ebpf = &snapshot.sources.ebpf;
        match self {
            Served::Always => true,
            Served::Detailed => profile == Profile::Detailed,
            Served::Probe(probe) => ebpf.enabled && ebpf.attached(probe),
            Served::PodIdentity => snapshot.sources.pod_identity.enabled,
        }
    }
}

/// Writes every served family into `out`, calling `flush` after each (so a
/// caller can hand the text on and clear `out` in between).
pub(super) fn write(
    out: &mut String,
    snapshot: &Snapshot,
    profile: Profile,
    flush: &mut dyn FnMut(&mut String),
) {
    let identities: Vec<String> = snapshot
        .interfaces
        .iter()
        .map(|i| identity_labels(snapshot, &i.name))
        .collect();
    for family in families() {
        if !family.served.holds(snapshot, profile) {
            continue;
        }
        let name = family.name;
        header(out, name, family.help, family.kind);
        for (interface, identity) in snapshot.interfaces.iter().zip(&identities) {
            let state = [("state", if interface.admin_up { "up" } else { "down" })];
            match family.samples {
                Samples::SeedCounter(value) => {
                    sample(out, name, identity, &state, value(&interface.counters))
                }
                Samples::Counter(value) => {
                    sample(out, name, identity, &[], value(&interface.counters))
                }
                Samples::WithState(value) => sample(out, name, identity, &state, value(interface)),
                Samples::Value(value) => {
                    if let Some(value) = value(interface) {
                        sample(out, name, identity, &[], value);
                    }
                }
                Samples::Ebpf(value) => {
                    if let Some(ebpf) = &interface.ebpf {
                        sample(out, name, identity, &[], value(ebpf));
                    }
                }
                Samples::Labelled(samples) => samples(interface, profile, &mut |labels, value| {
                    sample(out, name, identity, labels, value)
                }),
            }
        }
        flush(out);
    }
}

fn info(interface: &Interface, profile: Profile, emit: &mut Emit) {
    let ifindex = interface.ifindex.to_string();
    // A virtual device's MAC (a veth's is random) tells an operator
    // nothing, yet it is the one label here that gzip cannot shrink: a
    // fifth of a 1,000-veth scrape on the wire. The default profile keeps
    // it for devices without an rtnl kind, the physical NICs and VFs.
    let address = match (profile, &interface.kind) {
        (Profile::Default, Some(_)) => "",
        _ => interface.mac_address.as_deref().unwrap_or(""),
    };
    let attributes = [
        ("ifindex", ifindex.as_str()),
        ("kind", interface.kind.as_deref().unwrap_or("")),
        ("master", interface.master.as_deref().unwrap_or("")),
        ("address", address),
        ("operstate", interface.oper_state.as_str()),
    ];
    emit(&attributes, 1);
}

/// `network_interface_pod_info` joins any per-interface series to its pod
/// (`* on(interface, host) group_left(namespace, pod) network_interface_pod_info`).
fn pod_info(interface: &Interface, _: Profile, emit: &mut Emit) {
    let Some(pod) = &interface.pod else { return };
    let labels = [
        ("namespace", pod.namespace.as_str()),
        ("pod", pod.pod.as_str()),
        ("pod_uid", pod.pod_uid.as_str()),
    ];
    emit(&labels, 1);
}

fn if_oper_status(oper_state: &str) -> u64 {
    match oper_state {
        "up" => 1,
        "down" => 2,
        "testing" => 3,
        "dormant" => 5,
        "notpresent" => 6,
        "lowerlayerdown" => 7,
        _ => 4,
    }
}
