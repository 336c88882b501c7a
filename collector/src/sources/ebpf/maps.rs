//! One read of the per-CPU maps and the attached programs' statistics.

use std::os::fd::BorrowedFd;

use collector_common::{established_by_bucket, Outcome};

use super::prune::unplaceable;
use super::*;

impl EbpfSource {
    /// Sums every per-CPU map entry.
    pub fn read(&self) -> Result<EbpfReading, EbpfError> {
        let mut reading = EbpfReading {
            own_netns: self.own_netns,
            ..EbpfReading::default()
        };
        // A map no attached program writes stays empty: its read, a lock
        // of every hash bucket in the kernel, is skipped.
        let traffic = match self.any_attached(&[Probe::Rx, Probe::Tx]) {
            true => self.entries(&self.traffic, "TRAFFIC")?,
            false => Vec::new(),
        };
        for (ifindex, per_cpu) in traffic {
            let mut total = IfTraffic::default();
            for cpu in per_cpu.iter() {
                total.rx_packets += cpu.rx_packets;
                total.rx_bytes += cpu.rx_bytes;
                total.tx_packets += cpu.tx_packets;
                total.tx_bytes += cpu.tx_bytes;
            }
            reading.traffic.insert(ifindex, total);
        }
        let entries = self.entries(&self.drops, "DROPS")?;
        let tcp = match self.any_attached(&Probe::TCP) {
            true => self.entries(&self.tcp, "TCP_EVENTS")?,
            false => Vec::new(),
        };
        for (key, per_cpu) in tcp {
            let count: u64 = per_cpu.iter().sum();
            reading.tcp_keys.push(key);
            let netns = match key.netns {
                own if own == self.own_netns => Netns::Host,
                NETNS_NONE => Netns::Unknown,
                inode if inode < collector_common::NETNS_INUM_FLOOR => continue,
                inode => Netns::Inode(inode),
            };
            let events = reading.namespace_tcp.entry(netns).or_default();
            *events.entry((key.event, key.detail)).or_default() += count;
            // The probe counts a handshake with an RTT in its bucket only
            // (see the TCP program): its established count is added here.
            if let Some(side) = established_by_bucket(key.event, key.detail) {
                *events
                    .entry((side as u16, Outcome::Established as u16))
                    .or_default() += count;
            }
        }
        for entry in self.first_drops.iter() {
            let (inode, at) = entry.map_err(|source| EbpfError::Map {
                map: "NETNS_FIRST_DROP",
                source,
            })?;
            reading.first_drops.insert(inode, at);
        }
        // The slots after the map: a count moved from a slot into the map
        // in between is missed by this read (and caught up by the next),
        // never counted twice.
        let slots = self.slots()?;
        let totals = {
            let mut served = self.served_drops.lock().unwrap_or_else(|p| p.into_inner());
            drop_totals(&entries, &slots, &reading.first_drops, &mut served)
        };
        for (key, _) in &entries {
            let key = *key;
            let packets = totals.get(&key).copied().unwrap_or(0);
            reading.drop_keys.push(key);
            // A place no namespace can have is pruned (see `forget`), so
            // it is served nowhere: added to the node-level series and then
            // deleted, it would make that series go backwards.
            if unplaceable(&key, self.own_netns) {
                continue;
            }
            let reasons = match key.netns {
                own if own == self.own_netns && key.ifindex != 0 => {
                    reading.drops.entry(key.ifindex).or_default()
                }
                own if own == self.own_netns => {
                    reading.namespace_drops.entry((Netns::Host, 0)).or_default()
                }
                NETNS_NONE => reading
                    .namespace_drops
                    .entry((Netns::Unknown, 0))
                    .or_default(),
                other => reading
                    .namespace_drops
                    .entry((Netns::Inode(other), key.ifindex))
                    .or_default(),
            };
            *reasons
                .entry(self.reason_names.name(key.reason))
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
            tcp_map_full: counter(Counter::TcpMapFull)?,
        };
        reading.programs = self.program_stats();
        reading.bpf_stats_enabled = std::fs::read_to_string(BPF_STATS_SYSCTL)
            .ok()
            .map(|v| v.trim() != "0");
        Ok(reading)
    }

    /// Each attached probe with its attachment.
    fn attached(&self) -> impl Iterator<Item = (&ProbeAttachment, Probe)> {
        let attached = self.attachments.iter().filter(|a| a.attached);
        attached.filter_map(|a| {
            let probe = Probe::ALL.into_iter().find(|p| p.program() == a.program)?;
            Some((a, probe))
        })
    }

    fn any_attached(&self, probes: &[Probe]) -> bool {
        self.attached().any(|(_, probe)| probes.contains(&probe))
    }

    /// Run-time statistics of every attached program; one that cannot be
    /// read is left out rather than failing the scrape.
    fn program_stats(&self) -> Vec<ProgramStats> {
        self.attached()
            .filter_map(|(a, probe)| {
                let object_name = match a.flavour {
                    Flavour::Btf => probe.btf_program(),
                    Flavour::Classic => probe.program(),
                };
                let program = self.ebpf.program(object_name)?;
                let info = program.info().ok()?;
                // bpf_prog_info has recursion_misses too, but aya does not
                // expose it: the fdinfo line is the way to it.
                let recursion_misses = program
                    .fd()
                    .ok()
                    .and_then(|fd| fdinfo_field(fd.as_fd(), "recursion_misses"));
                Some(ProgramStats {
                    program: a.program.clone(),
                    flavour: Some(a.flavour),
                    run_time_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
                    run_cnt: info.run_count(),
                    recursion_misses,
                })
            })
            .collect()
    }

    /// Every CPU's drop slots, in one batch where the kernel has them.
    fn slots(&self) -> Result<Vec<DropSlot>, EbpfError> {
        use aya::maps::IterableMap;
        use std::os::fd::AsFd;
        if self
            .batch_lookups
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            match map_batch::per_cpu_entries::<u32, DropSlot>(
                self.drop_slots.map().fd().as_fd(),
                self.possible_cpus,
            ) {
                Ok(entries) => return Ok(entries.into_iter().flat_map(|(_, v)| v).collect()),
                Err(map_batch::BatchError::Unsupported) => {}
                Err(map_batch::BatchError::Os(source)) => {
                    return Err(EbpfError::MapBatch {
                        map: "DROP_SLOTS",
                        source,
                    })
                }
            }
        }
        let mut slots = Vec::new();
        for index in 0..collector_common::DROP_SLOT_COUNT {
            let per_cpu = self
                .drop_slots
                .get(&index, 0)
                .map_err(|source| EbpfError::Map {
                    map: "DROP_SLOTS",
                    source,
                })?;
            slots.extend(per_cpu.iter().copied());
        }
        Ok(slots)
    }

    /// Every entry of a per-CPU hash map with its per-CPU values: in
    /// batches where the kernel has them (5.6+), else key by key (see [`map_batch`]).
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
}

/// Each drop key's count: its per-CPU entries, plus the pending counts of
/// the slots holding it for the same life of its namespace (`first_drops`,
/// see `DropSlot::born`), never less than the count last served
/// (`served`, updated to these).
fn drop_totals(
    entries: &[(DropKey, Vec<u64>)],
    slots: &[DropSlot],
    first_drops: &HashMap<u32, u64>,
    served: &mut HashMap<DropKey, u64>,
) -> HashMap<DropKey, u64> {
    let mut totals: HashMap<DropKey, u64> = entries
        .iter()
        .map(|(key, per_cpu)| (*key, per_cpu.iter().sum()))
        .collect();
    for slot in slots.iter().filter(|s| s.epoch != 0 && s.pending != 0) {
        let born = first_drops.get(&slot.key.netns).copied().unwrap_or(0);
        // A key missing from the map was deleted, and a namespace born
        // again is another life of its inode: the probe drops such a
        // count on the slot's next use, and so does this read.
        if let (Some(total), true) = (totals.get_mut(&slot.key), slot.born == born) {
            *total += slot.pending;
        }
    }
    for (key, total) in totals.iter_mut() {
        if let Some(last) = served.get(key) {
            *total = (*total).max(*last);
        }
    }
    // Keys gone from the map leave, so a key made again starts anew.
    served.clone_from(&totals);
    totals
}

const BPF_STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// One numeric field of a BPF object's `/proc/self/fdinfo` entry, for
/// what the kernel reports there but aya does not (a map's `memlock`, a
/// program's `recursion_misses`, 5.12+); `None` when the line is missing.
pub(super) fn fdinfo_field(fd: BorrowedFd<'_>, name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    parse_fdinfo_field(&text, name)
}

fn parse_fdinfo_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(key, _)| key.trim() == name)
        .and_then(|(_, value)| value.trim().parse::<u64>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_counts_join_their_keys_only_for_the_same_life_and_never_go_back() {
        let key = |netns, ifindex| DropKey {
            netns,
            ifindex,
            reason: 2,
        };
        let (host, pod, gone) = (key(4026531840, 3), key(4026532001, 2), key(4026532002, 2));
        let slot = |key, born, pending| DropSlot {
            key,
            epoch: 1,
            born,
            pending,
        };
        let entries = vec![(host, vec![5, 1]), (pod, vec![2, 0])];
        let first_drops: HashMap<u32, u64> = [(pod.netns, 700)].into();
        let slots = [
            slot(host, 0, 10),
            slot(pod, 700, 4),
            // Taken under an earlier life of the pod's inode.
            slot(pod, 600, 50),
            // Its key was deleted from the map.
            slot(gone, 0, 8),
            // Released: the count was moved into the map.
            DropSlot {
                epoch: 0,
                ..slot(host, 0, 99)
            },
        ];
        let mut served = HashMap::new();
        let totals = drop_totals(&entries, &slots, &first_drops, &mut served);
        assert_eq!(totals, [(host, 16), (pod, 6)].into());
        // The pod's slot moved into the map after the map was read: this
        // read misses it and serves the last count until it catches up.
        let entries = vec![(host, vec![5, 1]), (pod, vec![2, 0])];
        let totals = drop_totals(&entries, &slots[..1], &first_drops, &mut served);
        assert_eq!(totals, [(host, 16), (pod, 6)].into());
        let entries = vec![(host, vec![5, 1]), (pod, vec![2, 5])];
        let totals = drop_totals(&entries, &slots[..1], &first_drops, &mut served);
        assert_eq!(totals, [(host, 16), (pod, 7)].into());
        // A key deleted and made again starts from its own count.
        let entries = vec![(host, vec![5, 1])];
        drop_totals(&entries, &slots[..1], &first_drops, &mut served);
        let entries = vec![(host, vec![5, 1]), (pod, vec![1, 0])];
        let totals = drop_totals(&entries, &slots[..1], &first_drops, &mut served);
        assert_eq!(totals[&pod], 1);
    }

    #[test]
    fn fdinfo_run_time_fields_are_read() {
        // Captured from /proc/<pid>/fdinfo of a tp_btf program on 6.18.
        let text = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t2085\nprog_type:\t26\n\
            prog_jited:\t1\nprog_tag:\t1682ae166256d869\nmemlock:\t4096\nprog_id:\t15\n\
            run_time_ns:\t123456\nrun_cnt:\t789\nrecursion_misses:\t2\nverified_insns:\t91\n";
        let field = |name| parse_fdinfo_field(text, name);
        assert_eq!(
            (
                field("run_time_ns"),
                field("run_cnt"),
                field("recursion_misses")
            ),
            (Some(123456), Some(789), Some(2))
        );
        assert_eq!(field("memlock"), Some(4096));
        // Before 5.12 there is no recursion_misses line.
        let old = "run_time_ns:\t5\nrun_cnt:\t1\n";
        assert_eq!(parse_fdinfo_field(old, "recursion_misses"), None);
        assert_eq!(
            parse_fdinfo_field("pos:\t0\nflags:\t02\n", "run_time_ns"),
            None
        );
    }
}
