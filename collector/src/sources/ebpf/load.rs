//! Start-up of the eBPF source: the embedded object loaded with this
//! kernel's layout, each probe attached as `tp_btf` or classic.

use super::*;

impl EbpfSource {
    /// Reads the kernel layout, loads the embedded object and attaches every
    /// probe it can. Fails only when nothing useful could be attached.
    pub fn start(config: &EbpfConfig) -> Result<Self, EbpfError> {
        // Only classic tracepoints need tracefs: aya resolves their ids
        // under the standard mount points, so it must be there even when
        // formats are read from elsewhere. `tp_btf` programs need none, so
        // without it they alone are tried.
        let system_tracefs = if config.may_mount_tracefs {
            locate_or_mount_tracefs()
        } else {
            Tracefs::locate()
        };
        let tracefs = match &config.tracefs_root {
            Some(root) => {
                let tracefs = Tracefs::at(root);
                match tracefs.root().join("events").is_dir() {
                    true => system_tracefs.map(|_| tracefs),
                    false => Err(TracefsError::NotMounted(root.clone())),
                }
            }
            None => system_tracefs,
        };
        let formats = match tracefs {
            Ok(tracefs) => TracepointFormats::read(&tracefs),
            Err(error) if config.flavour == FlavourPolicy::Auto => {
                tracing::info!(%error, "no tracefs: only BTF-typed tracepoints can attach");
                TracepointFormats::unavailable(&error.to_string())
            }
            Err(error) => return Err(error.into()),
        };
        let btf = KernelBtf::from_file(Path::new(&config.btf_path))?;
        let netns_inum = own_netns_inum().map_err(EbpfError::Netns)?;
        let layout = probe_layout(&formats, &btf, netns_inum)?;
        drop(btf);
        let source = Self::load(BPF_OBJECT, layout, config);
        release_freed_heap();
        source
    }

    pub(super) fn load(
        object: &[u8],
        layout: ProbeLayout,
        config: &EbpfConfig,
    ) -> Result<Self, EbpfError> {
        let max_interfaces = config.max_interfaces;
        // The traffic map serves the rx and tx probes only; with drops
        // alone (the default) a one-entry map keeps the object valid and
        // costs nothing per CPU.
        let traffic_entries = if config.probes.iter().any(|p| p.per_packet()) {
            max_interfaces
        } else {
            1
        };
        let drop_entries = max_interfaces.saturating_mul(DROP_MAP_ENTRIES / TRAFFIC_MAP_ENTRIES);
        // Without the TCP probes, a one-entry map as for traffic.
        let tcp_entries = if config.probes.iter().any(|p| Probe::TCP.contains(p)) {
            max_interfaces.saturating_mul(TCP_MAP_ENTRIES / TRAFFIC_MAP_ENTRIES)
        } else {
            1
        };
        let mut ebpf = EbpfLoader::new()
            // The object has no CO-RE relocations (offsets come in as
            // globals), so aya need not parse the kernel BTF a second time.
            .btf(None)
            .override_global("KERNEL_LAYOUT", &layout.globals, true)
            .map_max_entries("TRAFFIC", traffic_entries)
            .map_max_entries("DROPS", drop_entries)
            .map_max_entries("TCP_EVENTS", tcp_entries)
            // One namespace per interface slot at most, as a pod has a host
            // veth; a namespace it cannot hold keeps today's ownership rule.
            .map_max_entries("NETNS_FIRST_DROP", max_interfaces)
            .load(object)?;
        // BtfTracePoint::load wants aya's own parse of the kernel BTF (to
        // find the btf_trace_* ids), and the loader's (EbpfLoader::new()
        // always makes one) was dropped by `.btf(None)` above, so parse
        // again: only when some probe will try tp_btf, after our reader's
        // bytes were freed, and dropped once the programs are loaded, so no
        // two parses hold memory at the same time.
        let wants_btf = config.flavour == FlavourPolicy::Auto
            && config
                .probes
                .iter()
                .any(|p| !layout.btf_unavailable.contains_key(p));
        let kernel_btf = wants_btf.then(|| {
            Btf::parse_file(&config.btf_path, Endianness::default())
                .map_err(|e| format!("parsing {}: {e}", config.btf_path))
        });
        let mut attachments = Vec::new();
        let mut drop_flavour = None;
        for probe in Probe::ALL.into_iter().filter(|p| config.probes.contains(p)) {
            let (program, (category, name)) = (probe.program(), probe.tracepoint());
            let tracepoint = format!("{category}:{name}");
            let mut errors = Vec::new();
            let mut flavour = None;
            if config.flavour == FlavourPolicy::Auto {
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
            attachments.push(ProbeAttachment {
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
        let first_drops: aya::maps::HashMap<MapData, u32, u64> =
            take_map(&mut ebpf, "NETNS_FIRST_DROP")?;
        let tcp: PerCpuHashMap<MapData, TcpKey, u64> = take_map(&mut ebpf, "TCP_EVENTS")?;
        let drop_slots: PerCpuArray<MapData, DropSlot> = take_map(&mut ebpf, "DROP_SLOTS")?;
        let drop_generation: aya::maps::Array<MapData, u32> =
            take_map(&mut ebpf, "DROP_GENERATION")?;
        let map_memory = {
            use aya::maps::IterableMap;
            let memlock = |map: &MapData| map_memlock(map).unwrap_or(0);
            MapMemory {
                traffic: memlock(traffic.map()),
                drops: memlock(drops.map()),
                counters: memlock(counters.map()),
                first_drops: memlock(first_drops.map()),
                tcp: memlock(tcp.map()),
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
            first_drops,
            tcp,
            drop_slots,
            drop_generation,
            generation: 0,
            served_drops: Default::default(),
            reason_names: layout.drop_reason_names,
            own_netns: layout.globals.netns_inum,
            attachments,
            possible_cpus: aya::util::nr_cpus()
                .map_err(|(what, error)| EbpfError::Cpus(format!("{what}: {error}")))?,
            batch_lookups: std::sync::atomic::AtomicBool::new(true),
            map_memory,
            ebpf,
        })
    }
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
    super::maps::fdinfo_field(map.fd().as_fd(), "memlock")
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
