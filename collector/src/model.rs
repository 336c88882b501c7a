//! The one value every output renders: what the sources read in one
//! collection, merged per interface. `/metrics`, `snapshot` and `watch` all
//! print a [`Snapshot`], so they cannot disagree.
//!
//! These types are the project's own: their field names are the JSON keys
//! `collector snapshot --format json` prints (pinned by the golden files
//! and the key test below), so a source can rename its fields without
//! changing what users parse. Sources return values of these types (or
//! their own, converted in `collect`); outputs read nothing else.

use std::collections::BTreeMap;

use serde::Serialize;

pub mod conntrack;
pub mod netstat;
pub mod tcp;

pub use conntrack::{Conntrack, ConntrackStat, CONNTRACK_STATS};
pub use netstat::{
    NetstatField, NetstatFile, NetstatSet, PodNetstat, PodNetstatStatus, NETSTAT_FIELDS,
};

#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// Node name reported in the `host`/`hostname` labels.
    pub node: String,
    /// Extra `--label` pairs, sorted by key.
    pub labels: Vec<(String, String)>,
    /// Kept interfaces, sorted by name.
    pub interfaces: Vec<Interface>,
    /// Drops the host's interfaces do not carry: inside pods' and other
    /// network namespaces, without a device, or with no namespace at all.
    /// Pods first (by namespace, pod), then the rest.
    pub namespace_drops: Vec<NamespaceDrops>,
    /// TCP events by network namespace, ordered as `namespace_drops`.
    pub namespace_tcp: Vec<NamespaceTcp>,
    /// Each pod's own SNMP counters, by namespace and pod.
    pub pod_netstat: Vec<PodNetstat>,
    /// The conntrack table of the collector's network namespace (the
    /// node's, under hostNetwork); `None` without conntrack in the kernel.
    pub conntrack: Option<Conntrack>,
    pub sources: SourceStatus,
    /// Wall time this collection took.
    pub collection_seconds: f64,
}

/// One interface: its link attributes and counters (rtnetlink), and what
/// the other sources add to it. The netlink source fills the former (its
/// `Link` is this type, the rest left empty) and `collect` adds the latter,
/// so the link's fields are declared and copied in no other place.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Interface {
    pub ifindex: u32,
    pub name: String,
    /// IFF_UP: the administrative state `ip link set up/down` changes.
    pub admin_up: bool,
    /// IFF_LOWER_UP: the driver reports a usable physical layer.
    pub lower_up: bool,
    pub carrier: Option<bool>,
    /// RFC 2863 operational state, lower case as `ip` prints it.
    pub oper_state: String,
    pub mtu: u32,
    /// `rtnl_link_ops` kind (veth, bridge, vxlan...); `None` for physical NICs.
    pub kind: Option<String>,
    /// ifindex of the master (bridge, bond, vrf) device.
    pub master_ifindex: Option<u32>,
    pub mac_address: Option<String>,
    pub carrier_changes: Option<u32>,
    pub counters: LinkCounters,
    /// IFLA_LINK_NETNSID: the id, in the collector's namespace, of the
    /// network namespace the link's peer lives in (a pod-side veth's
    /// namespace); `None` when the peer is local or the kind has none.
    pub link_netnsid: Option<i32>,
    /// IFLA_LINK: the ifindex of the device this one is linked to (a
    /// veth's peer, a VLAN's lower device), in the namespace
    /// `link_netnsid` names when that is set. Only for matching pods: not
    /// in the snapshot.
    #[serde(skip)]
    pub link_ifindex: Option<u32>,
    /// Name of the master device, resolved from `master_ifindex`.
    pub master: Option<String>,
    pub speed_bytes: Option<u64>,
    /// Probe counts; `None` when eBPF is disabled.
    pub ebpf: Option<EbpfInterface>,
    /// The pod whose network namespace holds this interface's peer.
    pub pod: Option<PodIdentity>,
}

#[cfg(test)]
impl Interface {
    /// A link with only its index and name set, for tests.
    pub fn named(ifindex: u32, name: &str) -> Interface {
        Interface {
            ifindex,
            name: name.into(),
            ..Interface::default()
        }
    }
}

/// Every IFLA_STATS64 counter, named and ordered as in `struct
/// rtnl_link_stats64` (the order the netlink source decodes them in).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LinkCounters {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
    pub multicast: u64,
    pub collisions: u64,
    pub rx_length_errors: u64,
    pub rx_over_errors: u64,
    pub rx_crc_errors: u64,
    pub rx_frame_errors: u64,
    pub rx_fifo_errors: u64,
    pub rx_missed_errors: u64,
    pub tx_aborted_errors: u64,
    pub tx_carrier_errors: u64,
    pub tx_fifo_errors: u64,
    pub tx_heartbeat_errors: u64,
    pub tx_window_errors: u64,
    pub rx_compressed: u64,
    pub tx_compressed: u64,
    pub rx_nohandler: u64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct EbpfInterface {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Kernel drop reason (without `SKB_DROP_REASON_`) -> packets.
    pub drops: BTreeMap<String, u64>,
}

/// Drops counted in one network namespace on one of its devices (or none),
/// outside the host's per-interface counts.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct NamespaceDrops {
    pub netns: Netns,
    /// The pod owning the namespace (`pod_interface` and `network` unset).
    pub pod: Option<PodIdentity>,
    /// The device's ifindex inside the namespace; 0 when the drop had none.
    pub ifindex: u32,
    /// The device's name where known: a pod's attachment (`eth0`, from
    /// its CNI result) or its loopback; `None` for no device or an unknown one.
    pub interface: Option<String>,
    /// Kernel drop reason -> packets.
    pub drops: BTreeMap<String, u64>,
}

/// The TCP events of one network namespace (the BPF crate's `tcp`).
#[derive(Debug, Clone, Serialize)]
pub struct NamespaceTcp {
    pub netns: Netns,
    /// The pod owning the namespace (`pod_interface` and `network` unset).
    pub pod: Option<PodIdentity>,
    /// (`TcpEvent`, detail) -> count; for `RttSum`, microseconds.
    #[serde(serialize_with = "tcp::serialize_events")]
    pub events: BTreeMap<(u16, u16), u64>,
}

/// Which network namespace a drop was counted in.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Netns {
    /// The collector's own (the host's, under hostNetwork): drops on no
    /// device there; those on a device are that interface's.
    Host,
    /// Another namespace, by inode number (`ns.inum`, what `stat` of its
    /// netns file or `lsns -t net` shows).
    Inode(u32),
    /// No namespace could be found for the drop.
    #[default]
    Unknown,
}

/// The pod an interface belongs to, as served and printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodIdentity {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    /// The sandbox (pause) container the attachment was made for.
    pub container_id: String,
    /// The attachment's interface inside the pod (`eth0`, Multus' `net1`);
    /// `None` when several attachments share the namespace and none of
    /// their CNI results names this host interface.
    pub pod_interface: Option<String>,
    /// The CNI network of that attachment (`None` as above).
    pub network: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    /// `None` when the dump succeeded.
    pub netlink_error: Option<String>,
    pub ebpf: EbpfStatus,
    /// Cumulative failed collections per source since start.
    pub errors_total: BTreeMap<&'static str, u64>,
    /// Netlink dumps that did not complete within `--netlink-timeout`.
    pub netlink_timeouts_total: u64,
    /// Link attributes that did not decode and were skipped (their link kept).
    pub netlink_skipped_attributes_total: u64,
    /// Collections since start, this one included; concurrent scrapes share one.
    pub collections_total: u64,
    pub pod_identity: PodStatus,
    pub pod_netstat: PodNetstatStatus,
    /// Why a conntrack file present in this collection did not read or
    /// parse; `None` when fine or absent.
    pub conntrack_error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct EbpfStatus {
    pub enabled: bool,
    /// Why eBPF is off, as logged at start-up.
    pub disabled_reason: Option<String>,
    /// Error of this collection's map read, if any.
    pub read_error: Option<String>,
    pub attachments: Vec<ProbeAttachment>,
    pub probe_counters: ProbeCounters,
    pub traffic_map_entries: usize,
    pub drop_map_entries: usize,
    /// Kernel memory of each map (fdinfo `memlock`).
    pub map_memory: MapMemory,
    /// Each attached program's own run time, runs and recursion misses.
    pub programs: Vec<ProgramStats>,
    /// `kernel.bpf_stats_enabled`: run time and runs only advance while 1.
    pub bpf_stats_enabled: Option<bool>,
}

impl EbpfStatus {
    /// Whether `probe`'s program is attached: a probe that is not (not
    /// selected, or its tracepoint missing) would only serve zeros that
    /// look like "no traffic".
    pub fn attached(&self, probe: Probe) -> bool {
        self.attachments
            .iter()
            .any(|a| a.attached && a.program == probe.program())
    }
}

/// The probes, each one program on one tracepoint. Each can be missing on a
/// given kernel without taking the others down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Probe {
    Rx,
    Tx,
    Drop,
    TcpState,
    TcpRetransmit,
    TcpRetransmitSynack,
    TcpSendReset,
    TcpReceiveReset,
}

impl Probe {
    pub const ALL: [Probe; 8] = [
        Probe::Rx,
        Probe::Tx,
        Probe::Drop,
        Probe::TcpState,
        Probe::TcpRetransmit,
        Probe::TcpRetransmitSynack,
        Probe::TcpSendReset,
        Probe::TcpReceiveReset,
    ];

    /// The probes of TCP health (`--ebpf-probes tcp`).
    pub const TCP: [Probe; 5] = [
        Probe::TcpState,
        Probe::TcpRetransmit,
        Probe::TcpRetransmitSynack,
        Probe::TcpSendReset,
        Probe::TcpReceiveReset,
    ];

    /// Program name in the BPF object, and as reported (`program` label):
    /// the tracepoint's event name.
    pub fn program(self) -> &'static str {
        self.tracepoint().1
    }

    /// Program name of the BTF-typed (`tp_btf`) flavour in the BPF object.
    pub fn btf_program(self) -> &'static str {
        match self {
            Probe::Rx => "netif_receive_skb_btf",
            Probe::Tx => "net_dev_start_xmit_btf",
            Probe::Drop => "kfree_skb_btf",
            Probe::TcpState => "inet_sock_set_state_btf",
            Probe::TcpRetransmit => "tcp_retransmit_skb_btf",
            Probe::TcpRetransmitSynack => "tcp_retransmit_synack_btf",
            Probe::TcpSendReset => "tcp_send_reset_btf",
            Probe::TcpReceiveReset => "tcp_receive_reset_btf",
        }
    }

    /// (category, event) in tracefs.
    pub fn tracepoint(self) -> (&'static str, &'static str) {
        match self {
            Probe::Rx => ("net", "netif_receive_skb"),
            Probe::Tx => ("net", "net_dev_start_xmit"),
            Probe::Drop => ("skb", "kfree_skb"),
            Probe::TcpState => ("sock", "inet_sock_set_state"),
            Probe::TcpRetransmit => ("tcp", "tcp_retransmit_skb"),
            Probe::TcpRetransmitSynack => ("tcp", "tcp_retransmit_synack"),
            Probe::TcpSendReset => ("tcp", "tcp_send_reset"),
            Probe::TcpReceiveReset => ("tcp", "tcp_receive_reset"),
        }
    }

    /// Whether the probe counts per packet (traffic) rather than per drop
    /// or per connection event.
    pub fn per_packet(self) -> bool {
        matches!(self, Probe::Rx | Probe::Tx)
    }
}

/// How a probe's program hooks its tracepoint.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Flavour {
    /// BTF-typed tracepoint (`tp_btf`): typed arguments, direct loads.
    Btf,
    /// Classic tracepoint: the trace record, helper reads.
    Classic,
}

impl Flavour {
    pub fn as_str(self) -> &'static str {
        match self {
            Flavour::Btf => "btf",
            Flavour::Classic => "classic",
        }
    }
}

/// One program and its tracepoint, as reported in `collector_ebpf_probe_info`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ProbeAttachment {
    pub program: String,
    pub tracepoint: String,
    /// The flavour attached, or the last one tried when none attached.
    pub flavour: Flavour,
    pub attached: bool,
    pub error: Option<String>,
}

/// Kernel memory of the maps, bytes.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct MapMemory {
    pub traffic: u64,
    pub drops: u64,
    pub counters: u64,
    pub first_drops: u64,
    pub tcp: u64,
}

/// Probe-side self-counters (see `collector_common::Counter`).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct ProbeCounters {
    pub traffic_map_full: u64,
    pub drop_map_full: u64,
    pub kernel_read_errors: u64,
    pub tcp_map_full: u64,
}

/// The kernel's run-time statistics of one attached program, from its
/// `bpf_prog_info` (recursion misses from its fdinfo). `run_time_ns` and
/// `run_cnt` only advance while `kernel.bpf_stats_enabled` is 1 (or a
/// BPF_ENABLE_STATS fd is open).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ProgramStats {
    pub program: String,
    pub flavour: Option<Flavour>,
    pub run_time_ns: u64,
    pub run_cnt: u64,
    /// Runs skipped because the program was already running on that CPU
    /// (kernels 5.12+; `None` before).
    pub recursion_misses: Option<u64>,
}

/// How pod identity fared, for the snapshot and the self-metrics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PodStatus {
    /// False when the collector was built without the source.
    pub enabled: bool,
    /// The results directory was listed in this collection.
    pub up: bool,
    pub error: Option<String>,
    /// Pod attachments whose netns id was found in this collection.
    pub attachments: usize,
    pub errors_total: BTreeMap<&'static str, u64>,
}

/// Counters of the HTTP server, rendered beside the snapshot as the
/// collector's own families; zero outside the server (`snapshot`), so both
/// print the same families. Not part of the JSON snapshot.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpStats {
    /// Connections reset to make room for a newer one when every slot was
    /// taken (served as `collector_http_connections_rejected_total`).
    pub connections_displaced: u64,
    /// /metrics responses so far, by encoding (this one included).
    pub plain_responses: u64,
    pub gzip_responses: u64,
    /// Responses cut because the client read nothing for the stall timeout.
    pub stalled_responses_cut: u64,
    /// Responses cut because their body was let go for newer ones.
    pub evicted_responses_cut: u64,
    /// Rendered bodies held for unfinished responses.
    pub retained_bodies: u64,
    /// Changes of the web config file (or of the files it names) that did
    /// not load, the last good configuration kept.
    pub web_config_reload_failures: u64,
}

#[cfg(test)]
pub(crate) mod tests;
