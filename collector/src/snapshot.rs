//! The one value every output renders: what the sources read in one
//! collection, merged per interface. `/metrics`, `snapshot` and `watch` all
//! print a `Snapshot`, so they cannot disagree.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::sources::ebpf::{Attachment, MapMemory, ProbeCounters, ProgramStats};
use crate::sources::netlink::Link;
use crate::sources::pods::{PodIdentity, PodStatus};

#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// Node name reported in the `host`/`hostname` labels.
    pub node: String,
    /// Extra `--label` pairs, sorted by key.
    pub labels: Vec<(String, String)>,
    /// Kept interfaces, sorted by name.
    pub interfaces: Vec<Interface>,
    pub sources: SourceStatus,
    /// Wall time this collection took.
    pub collection_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Interface {
    #[serde(flatten)]
    pub link: Link,
    /// Name of the master device, resolved from `master_ifindex`.
    pub master: Option<String>,
    pub speed_bytes: Option<u64>,
    /// Probe counts; `None` when eBPF is disabled.
    pub ebpf: Option<EbpfInterface>,
    /// The pod whose network namespace holds this interface's peer.
    pub pod: Option<PodIdentity>,
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
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct EbpfStatus {
    pub enabled: bool,
    /// Why eBPF is off, as logged at start-up.
    pub disabled_reason: Option<String>,
    /// Error of this collection's map read, if any.
    pub read_error: Option<String>,
    pub attachments: Vec<Attachment>,
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
