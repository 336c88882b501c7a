//! eBPF source: loads the tracepoint programs with this kernel's layout,
//! keeps them attached, and reads their per-CPU maps.
//!
//! Each probe runs as a BTF-typed tracepoint (`tp_btf`) where the kernel
//! takes it, else as the classic tracepoint program, decided per probe.
//!
//! - [`load`]: start-up: the layout, the object, attaching each probe.
//! - [`maps`]: one read of the per-CPU maps, program statistics.
//! - [`prune`]: removing the entries of interfaces and namespaces that are gone.
//! - [`drop_reasons`]: the running kernel's names of drop reasons.
//! - The kernel plumbing only this source uses: [`tracefs`] (format files),
//!   [`btf_offsets`] (the kernel BTF), [`layout`] (-> `KernelLayout`),
//!   [`netns`] and [`map_batch`] (the one raw `bpf(2)` call: aya has no
//!   batch lookup).

pub mod btf_offsets;
pub mod drop_reasons;
pub mod layout;
mod load;
pub mod map_batch;
mod maps;
pub mod netns;
mod prune;
pub mod tracefs;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use aya::maps::{MapData, PerCpuArray, PerCpuHashMap};
use aya::programs::{BtfTracePoint, TracePoint};
use aya::{Btf, Ebpf, EbpfLoader, Endianness};
use collector_common::{
    Counter, DropKey, DropSlot, IfTraffic, TcpKey, DROP_MAP_ENTRIES, NETNS_NONE, TCP_MAP_ENTRIES,
    TRAFFIC_MAP_ENTRIES,
};

pub use crate::model::{Flavour, MapMemory, Netns, ProbeAttachment, ProbeCounters, ProgramStats};
use btf_offsets::{BtfError, KernelBtf, VMLINUX_BTF};
use drop_reasons::ReasonNames;
use layout::{probe_layout, LayoutError, Probe, ProbeLayout, TracepointFormats};
use netns::own_netns_inum;
pub use prune::stale_interfaces;
use tracefs::{Tracefs, TracefsError, TRACEFS_CANDIDATES};

/// The BPF object that the build script built, embedded at compile time.
pub static BPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/collector-ebpf.o"));

#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error("tracefs unavailable: {0}")]
    Tracefs(#[from] TracefsError),
    #[error("kernel BTF unavailable: {0}")]
    Btf(#[from] BtfError),
    #[error("cannot read this kernel's probe layout: {0}")]
    Layout(#[from] LayoutError),
    #[error("cannot identify our network namespace: {0}")]
    Netns(#[source] std::io::Error),
    #[error("loading BPF programs failed, {hint}: {0}", hint = crate::privileges::bpf_refusal_hint(.0))]
    Load(#[from] aya::EbpfError),
    #[error("cannot count the possible CPUs: {0}")]
    Cpus(String),
    #[error("BPF object has no {0}")]
    Missing(String),
    #[error("no probe could be attached: {0}")]
    NothingAttached(String),
    #[error("reading BPF map {map} in batches: {source}")]
    MapBatch {
        map: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("reading BPF map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

/// How the eBPF source starts: where to look for the kernel's
/// self-description (tests point these at missing paths to exercise the
/// degraded start-up), map sizes, probes and flavours.
#[derive(Debug, Clone)]
pub struct EbpfConfig {
    pub btf_path: String,
    /// Where to read tracepoint `format` files; `None`: the tracefs found
    /// (or mounted) at the usual places, which attaching needs in any case.
    pub tracefs_root: Option<String>,
    /// Interfaces the traffic map holds; the drop map holds four times as
    /// many (namespace, device, reason) triples.
    pub max_interfaces: u32,
    /// Probes to attach; the others are not loaded at all.
    pub probes: Vec<Probe>,
    /// Which program flavours to try.
    pub flavour: FlavourPolicy,
    /// Whether a tracefs found nowhere may be mounted (at
    /// /sys/kernel/tracing) for the classic programs: `serve` may, in its
    /// own mount namespace; `snapshot` and `watch`, run by hand on a host,
    /// must not leave a mount behind, and make do with tp_btf.
    pub may_mount_tracefs: bool,
}

/// Which flavours the loader tries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FlavourPolicy {
    /// `tp_btf` where it loads, the classic tracepoint per probe where not.
    #[default]
    Auto,
    /// Classic tracepoints only (tests, and kernels whose BTF misleads).
    Classic,
}

impl Default for EbpfConfig {
    fn default() -> Self {
        EbpfConfig {
            btf_path: VMLINUX_BTF.to_string(),
            tracefs_root: None,
            max_interfaces: TRAFFIC_MAP_ENTRIES,
            probes: Probe::ALL.to_vec(),
            flavour: FlavourPolicy::Auto,
            may_mount_tracefs: false,
        }
    }
}

/// One read of the maps, summed over CPUs.
#[derive(Debug, Clone, Default)]
pub struct EbpfReading {
    pub traffic: HashMap<u32, IfTraffic>,
    /// Drops on the collector's namespace's devices: ifindex -> reason
    /// name -> packets.
    pub drops: HashMap<u32, BTreeMap<String, u64>>,
    /// Every other drop: (namespace, ifindex in it or 0) -> reason name ->
    /// packets.
    pub namespace_drops: BTreeMap<(Netns, u32), BTreeMap<String, u64>>,
    /// When each other namespace's first drop key was inserted
    /// (CLOCK_BOOTTIME ns), as long as it has keys.
    pub first_drops: HashMap<u32, u64>,
    /// Every key of the drop map as read.
    pub drop_keys: Vec<DropKey>,
    /// TCP events by namespace: (event, detail) -> count.
    pub namespace_tcp: BTreeMap<Netns, BTreeMap<(u16, u16), u64>>,
    /// Every key of the TCP event map as read.
    pub tcp_keys: Vec<TcpKey>,
    /// Inode of the collector's own network namespace.
    pub own_netns: u32,
    pub counters: ProbeCounters,
    /// Attached programs whose `bpf_prog_info` could be read.
    pub programs: Vec<ProgramStats>,
    /// `kernel.bpf_stats_enabled`; `None` when unreadable.
    pub bpf_stats_enabled: Option<bool>,
}

pub struct EbpfSource {
    traffic: PerCpuHashMap<MapData, u32, IfTraffic>,
    drops: PerCpuHashMap<MapData, DropKey, u64>,
    counters: PerCpuArray<MapData, u64>,
    /// The drop probe's per-CPU slots in front of `drops` (see `DropSlot`).
    drop_slots: PerCpuArray<MapData, DropSlot>,
    /// Bumped after drop keys are deleted, so no slot keeps counting a
    /// deleted key (see `DropSlot::epoch`).
    drop_generation: aya::maps::Array<MapData, u32>,
    generation: u32,
    /// The count last served for each drop key: a slot's pending count
    /// moved into the map between the map's read and the slots' is in
    /// neither, so a read can fall short of the last one, and is served
    /// the last one instead until it catches up.
    served_drops: std::sync::Mutex<HashMap<DropKey, u64>>,
    /// Namespace inode -> CLOCK_BOOTTIME ns of its first drop key.
    first_drops: aya::maps::HashMap<MapData, u32, u64>,
    tcp: PerCpuHashMap<MapData, TcpKey, u64>,
    reason_names: ReasonNames,
    /// Inode of the namespace whose devices are the host's interfaces.
    own_netns: u32,
    attachments: Vec<ProbeAttachment>,
    /// CPUs the per-CPU values are laid out for.
    possible_cpus: usize,
    /// Cleared the first time the kernel turns a batch lookup down.
    batch_lookups: std::sync::atomic::AtomicBool,
    map_memory: MapMemory,
    // Owns the programs and their links: dropping it detaches everything.
    ebpf: Ebpf,
}
impl EbpfSource {
    pub fn attachments(&self) -> &[ProbeAttachment] {
        &self.attachments
    }

    /// Kernel memory of each map, as the kernel accounts it (preallocated:
    /// fixed from load on).
    pub fn map_memory(&self) -> MapMemory {
        self.map_memory
    }

    /// Whether the maps can be read with the capabilities held now (see
    /// `privileges`): one lookup and one key walk, as every scrape does.
    pub fn maps_readable(&self) -> bool {
        self.counters.get(&0, 0).is_ok() && self.traffic.keys().all(|key| key.is_ok())
    }
}
