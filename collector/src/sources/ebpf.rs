//! eBPF source: loads the tracepoint programs with this kernel's layout,
//! keeps them attached, and reads their per-CPU maps.
//!
//! Each probe runs as a BTF-typed tracepoint (`tp_btf`) where the kernel
//! takes it, else as the classic tracepoint program, decided per probe.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use aya::maps::{MapData, PerCpuArray, PerCpuHashMap};
use aya::programs::{BtfTracePoint, TracePoint};
use aya::{Btf, Ebpf, EbpfLoader, Endianness};
use collector_common::{
    Counter, DropKey, IfTraffic, DROP_MAP_ENTRIES, REASON_UNKNOWN, TRAFFIC_MAP_ENTRIES,
};
use serde::Serialize;

use crate::kernel::btf_offsets::{BtfError, KernelBtf, VMLINUX_BTF};
use crate::kernel::layout::{probe_layout, LayoutError, Probe, ProbeLayout, TracepointFormats};
use crate::kernel::map_batch;
use crate::kernel::netns::own_netns_inum;
use crate::kernel::tracefs::{Tracefs, TracefsError, TRACEFS_CANDIDATES};

/// The BPF object built by `cargo xtask build-ebpf`, embedded at compile time.
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

/// Where to look for the kernel's self-description (tests point these at
/// missing paths to exercise the degraded start-up), and map sizes.
#[derive(Debug, Clone)]
pub struct KernelSources {
    pub btf_path: String,
    /// Where to read tracepoint `format` files; `None`: the tracefs found
    /// (or mounted) at the usual places, which attaching needs in any case.
    pub tracefs_root: Option<String>,
    /// Interfaces the traffic map holds; the drop map holds twice as many
    /// (interface, reason) pairs.
    pub max_interfaces: u32,
    /// Probes to attach; the others are not loaded at all.
    pub probes: Vec<Probe>,
    /// Which program flavours to try.
    pub flavour: FlavourPolicy,
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

/// Which flavours the loader tries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FlavourPolicy {
    /// `tp_btf` where it loads, the classic tracepoint per probe where not.
    #[default]
    Auto,
    /// Classic tracepoints only (tests, and kernels whose BTF misleads).
    Classic,
}

impl Default for KernelSources {
    fn default() -> Self {
        KernelSources {
            btf_path: VMLINUX_BTF.to_string(),
            tracefs_root: None,
            max_interfaces: TRAFFIC_MAP_ENTRIES,
            probes: Probe::ALL.to_vec(),
            flavour: FlavourPolicy::Auto,
        }
    }
}

/// One program and its tracepoint, as reported in `collector_ebpf_probe_info`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Attachment {
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
}

/// Probe-side self-counters (see [`Counter`]).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct ProbeCounters {
    pub traffic_map_full: u64,
    pub drop_map_full: u64,
    pub kernel_read_errors: u64,
    pub drops_without_device: u64,
}

/// The kernel's run-time statistics of one attached program, from its
/// `/proc/self/fdinfo` entry. `run_time_ns` and `run_cnt` only advance while
/// `kernel.bpf_stats_enabled` is 1 (or a BPF_ENABLE_STATS fd is open).
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

/// One read of the maps, summed over CPUs.
#[derive(Debug, Clone, Default)]
pub struct EbpfReading {
    pub traffic: HashMap<u32, IfTraffic>,
    /// ifindex -> reason name -> packets.
    pub drops: HashMap<u32, BTreeMap<String, u64>>,
    /// Every key of the drop map as read.
    pub drop_keys: Vec<DropKey>,
    pub counters: ProbeCounters,
    /// Attached programs whose fdinfo could be read.
    pub programs: Vec<ProgramStats>,
    /// `kernel.bpf_stats_enabled`; `None` when unreadable.
    pub bpf_stats_enabled: Option<bool>,
}

pub struct EbpfSource {
    traffic: PerCpuHashMap<MapData, u32, IfTraffic>,
    drops: PerCpuHashMap<MapData, DropKey, u64>,
    counters: PerCpuArray<MapData, u64>,
    reason_names: BTreeMap<u32, String>,
    attachments: Vec<Attachment>,
    has_drop_reason: bool,
    /// CPUs the per-CPU values are laid out for.
    possible_cpus: usize,
    /// Cleared the first time the kernel turns a batch lookup down.
    batch_lookups: std::sync::atomic::AtomicBool,
    map_memory: MapMemory,
    // Owns the programs and their links: dropping it detaches everything.
    ebpf: Ebpf,
}

impl EbpfSource {
    /// Reads the kernel layout, loads the embedded object and attaches every
    /// probe it can. Fails only when nothing useful could be attached.
    pub fn start(sources: &KernelSources) -> Result<Self, EbpfError> {
        // aya resolves tracepoint ids under the standard mount points, so
        // tracefs must be there even when formats are read from elsewhere.
        let system_tracefs = locate_or_mount_tracefs()?;
        let tracefs = match &sources.tracefs_root {
            Some(root) => {
                let tracefs = Tracefs::at(root);
                if !tracefs.root().join("events").is_dir() {
                    return Err(TracefsError::NotMounted(root.clone()).into());
                }
                tracefs
            }
            None => system_tracefs,
        };
        let btf = KernelBtf::from_file(Path::new(&sources.btf_path))?;
        let formats = TracepointFormats::read(&tracefs);
        let netns_inum = own_netns_inum().map_err(EbpfError::Netns)?;
        let layout = probe_layout(&formats, &btf, netns_inum)?;
        drop(btf);
        let source = Self::load(BPF_OBJECT, layout, sources);
        release_freed_heap();
        source
    }

    fn load(
        object: &[u8],
        layout: ProbeLayout,
        sources: &KernelSources,
    ) -> Result<Self, EbpfError> {
        let max_interfaces = sources.max_interfaces;
        // The traffic map serves the rx and tx probes only; with drops
        // alone (the default) a one-entry map keeps the object valid and
        // costs nothing per CPU.
        let traffic_entries = if sources.probes.iter().any(|p| *p != Probe::Drop) {
            max_interfaces
        } else {
            1
        };
        let mut ebpf = EbpfLoader::new()
            // The object has no CO-RE relocations (offsets come in as
            // globals), so aya need not parse the kernel BTF a second time.
            .btf(None)
            .override_global("KERNEL_LAYOUT", &layout.globals, true)
            .map_max_entries("TRAFFIC", traffic_entries)
            .map_max_entries(
                "DROPS",
                max_interfaces.saturating_mul(DROP_MAP_ENTRIES / TRAFFIC_MAP_ENTRIES),
            )
            .load(object)?;
        // BtfTracePoint::load wants aya's own parse of the kernel BTF (to
        // find the btf_trace_* ids), and the loader's (EbpfLoader::new()
        // always makes one) was dropped by `.btf(None)` above, so parse
        // again: only when some probe will try tp_btf, after our reader's
        // bytes were freed, and dropped once the programs are loaded, so no
        // two parses hold memory at the same time (~45 ms of CPU each).
        let wants_btf = sources.flavour == FlavourPolicy::Auto
            && sources
                .probes
                .iter()
                .any(|p| !layout.btf_unavailable.contains_key(p));
        let kernel_btf = wants_btf.then(|| {
            Btf::parse_file(&sources.btf_path, Endianness::default())
                .map_err(|e| format!("parsing {}: {e}", sources.btf_path))
        });
        let mut attachments = Vec::new();
        let mut drop_flavour = None;
        for probe in Probe::ALL
            .into_iter()
            .filter(|p| sources.probes.contains(p))
        {
            let (program, (category, name)) = (probe.program(), probe.tracepoint());
            let tracepoint = format!("{category}:{name}");
            let mut errors = Vec::new();
            let mut flavour = None;
            if sources.flavour == FlavourPolicy::Auto {
                let outcome = match (layout.btf_unavailable.get(&probe), &kernel_btf) {
                    (Some(why), _) => Err(format!("not supported by this kernel: {why}")),
                    (None, Some(Ok(btf))) => attach_btf(&mut ebpf, probe.btf_program(), name, btf),
                    (None, Some(Err(error))) => Err(error.clone()),
                    (None, None) => Err("kernel BTF not parsed".to_string()),
                };
                match outcome {
                    Ok(()) => flavour = Some(Flavour::Btf),
                    Err(error) => {
                        tracing::info!(program, %tracepoint, %error, "BTF-typed tracepoint not used; trying the classic one");
                        errors.push(format!("tp_btf: {error}"));
                    }
                }
            }
            if flavour.is_none() {
                let outcome = match layout.unavailable.get(&probe) {
                    Some(why) => Err(format!("not supported by this kernel: {why}")),
                    None => attach(&mut ebpf, program, category, name),
                };
                match outcome {
                    Ok(()) => flavour = Some(Flavour::Classic),
                    Err(error) => errors.push(error),
                }
            }
            if flavour.is_none() {
                let error = errors.join("; ");
                tracing::warn!(program, %tracepoint, %error, "probe not attached; its metrics will be missing");
            }
            if probe == Probe::Drop {
                drop_flavour = flavour;
            }
            attachments.push(Attachment {
                program: program.to_string(),
                tracepoint,
                flavour: flavour.unwrap_or(Flavour::Classic),
                attached: flavour.is_some(),
                error: flavour.is_none().then(|| errors.join("; ")),
            });
        }
        drop(kernel_btf);
        if attachments.iter().all(|a| !a.attached) {
            let errors: Vec<_> = attachments.iter().filter_map(|a| a.error.clone()).collect();
            return Err(EbpfError::NothingAttached(errors.join("; ")));
        }
        let traffic: PerCpuHashMap<MapData, u32, IfTraffic> = take_map(&mut ebpf, "TRAFFIC")?;
        let drops: PerCpuHashMap<MapData, DropKey, u64> = take_map(&mut ebpf, "DROPS")?;
        let counters: PerCpuArray<MapData, u64> = take_map(&mut ebpf, "COUNTERS")?;
        let map_memory = {
            use aya::maps::IterableMap;
            let memlock = |map: &MapData| map_memlock(map).unwrap_or(0);
            MapMemory {
                traffic: memlock(traffic.map()),
                drops: memlock(drops.map()),
                counters: memlock(counters.map()),
            }
        };
        tracing::info!(
            traffic_bytes = map_memory.traffic,
            drops_bytes = map_memory.drops,
            "BPF maps charged to this cgroup"
        );
        let has_drop_reason = match drop_flavour {
            Some(Flavour::Btf) => layout.globals.btf_drop_has_reason != 0,
            _ => layout.has_drop_reason,
        };
        if drop_flavour.is_some() && !has_drop_reason {
            tracing::info!("kfree_skb has no `reason` field on this kernel (before 5.17); drops are counted as reason=\"unknown\"");
        }
        Ok(EbpfSource {
            traffic,
            drops,
            counters,
            reason_names: layout.drop_reason_names,
            attachments,
            has_drop_reason,
            possible_cpus: aya::util::nr_cpus()
                .map_err(|(what, error)| EbpfError::Cpus(format!("{what}: {error}")))?,
            batch_lookups: std::sync::atomic::AtomicBool::new(true),
            map_memory,
            ebpf,
        })
    }

    pub fn attachments(&self) -> &[Attachment] {
        &self.attachments
    }

    /// Kernel memory of each map, as the kernel accounts it (preallocated:
    /// fixed from load on).
    pub fn map_memory(&self) -> MapMemory {
        self.map_memory
    }

    pub fn has_drop_reason(&self) -> bool {
        self.has_drop_reason
    }

    /// Whether the maps can be read with the capabilities held now (see
    /// `privileges`): one lookup and one key walk, as every scrape does.
    pub fn maps_readable(&self) -> bool {
        self.counters.get(&0, 0).is_ok() && self.traffic.keys().all(|key| key.is_ok())
    }

    /// Sums every per-CPU map entry.
    pub fn read(&self) -> Result<EbpfReading, EbpfError> {
        let mut reading = EbpfReading::default();
        for (ifindex, per_cpu) in self.entries(&self.traffic, "TRAFFIC")? {
            let mut total = IfTraffic::default();
            for cpu in per_cpu.iter() {
                total.rx_packets += cpu.rx_packets;
                total.rx_bytes += cpu.rx_bytes;
                total.tx_packets += cpu.tx_packets;
                total.tx_bytes += cpu.tx_bytes;
            }
            reading.traffic.insert(ifindex, total);
        }
        for (key, per_cpu) in self.entries(&self.drops, "DROPS")? {
            let packets: u64 = per_cpu.iter().sum();
            reading.drop_keys.push(key);
            *reading
                .drops
                .entry(key.ifindex)
                .or_default()
                .entry(self.reason_name(key.reason))
                .or_default() += packets;
        }
        let counter = |slot: Counter| -> Result<u64, EbpfError> {
            let per_cpu =
                self.counters
                    .get(&(slot as u32), 0)
                    .map_err(|source| EbpfError::Map {
                        map: "COUNTERS",
                        source,
                    })?;
            Ok(per_cpu.iter().sum())
        };
        reading.counters = ProbeCounters {
            traffic_map_full: counter(Counter::TrafficMapFull)?,
            drop_map_full: counter(Counter::DropMapFull)?,
            kernel_read_errors: counter(Counter::KernelReadError)?,
            drops_without_device: counter(Counter::DropWithoutDevice)?,
        };
        reading.programs = self.program_stats();
        reading.bpf_stats_enabled = std::fs::read_to_string(BPF_STATS_SYSCTL)
            .ok()
            .map(|v| v.trim() != "0");
        Ok(reading)
    }

    /// Run-time statistics of every attached program; one that cannot be
    /// read is left out rather than failing the scrape.
    fn program_stats(&self) -> Vec<ProgramStats> {
        self.attachments
            .iter()
            .filter(|a| a.attached)
            .filter_map(|a| {
                let probe = Probe::ALL.into_iter().find(|p| p.program() == a.program)?;
                let object_name = match a.flavour {
                    Flavour::Btf => probe.btf_program(),
                    Flavour::Classic => probe.program(),
                };
                let fd = self.ebpf.program(object_name)?.fd().ok()?;
                let path = format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd());
                let mut stats = parse_fdinfo(&std::fs::read_to_string(path).ok()?)?;
                stats.program = a.program.clone();
                stats.flavour = Some(a.flavour);
                Some(stats)
            })
            .collect()
    }

    /// Removes the entries of `stale` interfaces that `reading` saw, so pod
    /// churn cannot fill the maps. Only keys read before the netlink dump are
    /// candidates: an interface created after that read is in neither, and
    /// its first counts must survive. Returns the entries left in the
    /// traffic and drop maps, counted from that read.
    pub fn forget(&mut self, reading: &EbpfReading, stale: &HashSet<u32>) -> (usize, usize) {
        let mut traffic_left = reading.traffic.len();
        for ifindex in reading.traffic.keys().filter(|i| stale.contains(i)) {
            traffic_left -= usize::from(self.traffic.remove(ifindex).is_ok());
        }
        let mut drops_left = reading.drop_keys.len();
        for key in reading
            .drop_keys
            .iter()
            .filter(|k| stale.contains(&k.ifindex))
        {
            drops_left -= usize::from(self.drops.remove(key).is_ok());
        }
        (traffic_left, drops_left)
    }

    /// Every entry of a per-CPU hash map: in batches where the kernel has
    /// them (5.6+), else key by key (see `kernel::map_batch`).
    fn entries<K, V>(
        &self,
        map: &PerCpuHashMap<MapData, K, V>,
        name: &'static str,
    ) -> Result<Vec<(K, Vec<V>)>, EbpfError>
    where
        K: aya::Pod + bytemuck::Pod,
        V: aya::Pod + bytemuck::Pod,
    {
        use aya::maps::IterableMap;
        use std::os::fd::AsFd;
        if self
            .batch_lookups
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            match map_batch::per_cpu_entries(map.map().fd().as_fd(), self.possible_cpus) {
                Ok(entries) => return Ok(entries),
                Err(map_batch::BatchError::Unsupported) => {
                    tracing::info!(
                        "no BPF_MAP_LOOKUP_BATCH on this kernel; reading maps key by key"
                    );
                    self.batch_lookups
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                }
                Err(map_batch::BatchError::Os(source)) => {
                    return Err(EbpfError::MapBatch { map: name, source })
                }
            }
        }
        map.iter()
            .map(|entry| {
                entry
                    .map(|(key, per_cpu)| (key, per_cpu.iter().copied().collect()))
                    .map_err(|source| EbpfError::Map { map: name, source })
            })
            .collect()
    }

    fn reason_name(&self, reason: u32) -> String {
        if reason == REASON_UNKNOWN {
            return "unknown".to_string();
        }
        self.reason_names
            .get(&reason)
            .cloned()
            .unwrap_or_else(|| format!("reason_{reason}"))
    }
}

const BPF_STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// The run-time fields of a BPF program's fdinfo (`run_time_ns:`,
/// `run_cnt:`, `recursion_misses:`); `None` when it has none of them.
fn parse_fdinfo(text: &str) -> Option<ProgramStats> {
    let field = |name: &str| {
        text.lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(key, _)| key.trim() == name)
            .and_then(|(_, value)| value.trim().parse::<u64>().ok())
    };
    Some(ProgramStats {
        run_time_ns: field("run_time_ns")?,
        run_cnt: field("run_cnt")?,
        recursion_misses: field("recursion_misses"),
        ..ProgramStats::default()
    })
}

/// Parsing the kernel BTF (tens of thousands of types) peaks at tens of
/// MiB; once the few offsets are read, hand that memory back to the OS
/// instead of keeping it resident for the life of the DaemonSet pod.
fn release_freed_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks glibc's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn attach(ebpf: &mut Ebpf, program: &str, category: &str, name: &str) -> Result<(), String> {
    let tracepoint: &mut TracePoint = ebpf
        .program_mut(program)
        .ok_or_else(|| format!("program {program} missing from the BPF object"))?
        .try_into()
        .map_err(|e| format!("{e}"))?;
    tracepoint
        .load()
        .map_err(|e| format!("verifier/load: {e}"))?;
    tracepoint
        .attach(category, name)
        .map_err(|e| format!("attach: {e}"))?;
    Ok(())
}

/// Loads and attaches the BTF-typed flavour of a probe; a program the kernel
/// loaded but would not attach is unloaded again, so only attached programs
/// stay in the kernel.
fn attach_btf(ebpf: &mut Ebpf, program: &str, event: &str, btf: &Btf) -> Result<(), String> {
    let tracepoint: &mut BtfTracePoint = ebpf
        .program_mut(program)
        .ok_or_else(|| format!("program {program} missing from the BPF object"))?
        .try_into()
        .map_err(|e| format!("{e}"))?;
    tracepoint
        .load(event, btf)
        .map_err(|e| format!("verifier/load: {e}"))?;
    if let Err(error) = tracepoint.attach() {
        let _ = tracepoint.unload();
        return Err(format!("attach: {error}"));
    }
    Ok(())
}

/// Bytes of kernel memory a map holds, from its fdinfo `memlock` (what the
/// kernel charges to the memory cgroup, or RLIMIT_MEMLOCK before 5.11).
fn map_memlock(map: &MapData) -> Option<u64> {
    use std::os::fd::{AsFd, AsRawFd};
    let path = format!("/proc/self/fdinfo/{}", map.fd().as_fd().as_raw_fd());
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("memlock:"))?
        .trim()
        .parse()
        .ok()
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, EbpfError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| EbpfError::Missing(format!("map {name}")))?;
    T::try_from(map).map_err(|source| EbpfError::Map { map: name, source })
}

/// Finds tracefs; when it is not mounted and we may mount, mounts it at the
/// first standard place (aya also needs it to resolve tracepoint ids).
fn locate_or_mount_tracefs() -> Result<Tracefs, TracefsError> {
    if let Ok(tracefs) = Tracefs::locate() {
        return Ok(tracefs);
    }
    let target = TRACEFS_CANDIDATES[0];
    let source = c"tracefs";
    let target_c = std::ffi::CString::new(target).expect("constant path has no NUL");
    // SAFETY: all pointers are valid NUL-terminated strings; data is null.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target_c.as_ptr(),
            source.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        tracing::info!(target, "mounted tracefs");
    }
    Tracefs::locate()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_run_time_fields_are_read() {
        // Captured from /proc/<pid>/fdinfo of a tp_btf program on 6.18.
        let text = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t2085\nprog_type:\t26\n\
            prog_jited:\t1\nprog_tag:\t1682ae166256d869\nmemlock:\t4096\nprog_id:\t15\n\
            run_time_ns:\t123456\nrun_cnt:\t789\nrecursion_misses:\t2\nverified_insns:\t91\n";
        let stats = parse_fdinfo(text).unwrap();
        assert_eq!(
            (stats.run_time_ns, stats.run_cnt, stats.recursion_misses),
            (123456, 789, Some(2))
        );
        // Before 5.12 there is no recursion_misses line.
        let old = parse_fdinfo("run_time_ns:\t5\nrun_cnt:\t1\n").unwrap();
        assert_eq!(old.recursion_misses, None);
        assert!(parse_fdinfo("pos:\t0\nflags:\t02\n").is_none());
    }
}
