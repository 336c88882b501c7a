//! Pruning the maps of interfaces and namespaces that are gone, so pod
//! churn cannot fill them.

use collector_common::NETNS_INUM_FLOOR;

use super::*;

impl EbpfSource {
    /// Removes the entries `reading` saw of `stale` interfaces (of the
    /// collector's namespace) and of the namespaces in `forgotten`, so pod
    /// churn cannot fill the maps. Only keys read before the netlink dump are
    /// candidates: an interface created after that read is in neither, and
    /// its first counts must survive. Returns the entries left in the
    /// traffic and drop maps, counted from that read.
    pub fn forget(
        &mut self,
        reading: &EbpfReading,
        stale: &HashSet<u32>,
        forgotten: &HashSet<u32>,
    ) -> (usize, usize) {
        let mut traffic_left = reading.traffic.len();
        for ifindex in reading.traffic.keys().filter(|i| stale.contains(i)) {
            traffic_left -= usize::from(self.traffic.remove(ifindex).is_ok());
        }
        let mut drops_left = reading.drop_keys.len();
        let mut served = self.served_drops.lock().unwrap_or_else(|p| p.into_inner());
        for key in reading.drop_keys.iter().filter(|k| {
            forgotten.contains(&k.netns)
                || (k.netns == reading.own_netns && stale.contains(&k.ifindex))
                || unplaceable(k, reading.own_netns)
        }) {
            if self.drops.remove(key).is_ok() {
                drops_left -= 1;
                // The probe may make the key again before the next read:
                // that one starts from 0.
                served.remove(key);
            }
        }
        drop(served);
        if drops_left < reading.drop_keys.len() {
            // After the deletes: a slot still holding a deleted key checks
            // it against the map at its next use instead of counting on.
            // u32::MAX is never used: the probe's epoch is the generation
            // + 1, and an epoch of 0 marks a free slot.
            self.generation = (self.generation + 1) % u32::MAX;
            if let Err(error) = self.drop_generation.set(0, self.generation, 0) {
                tracing::warn!(%error, "cannot bump the drop slots' generation");
            }
        }
        for key in reading.tcp_keys.iter().filter(|k| {
            forgotten.contains(&k.netns)
                || (k.netns != reading.own_netns
                    && k.netns != NETNS_NONE
                    && k.netns < NETNS_INUM_FLOOR)
        }) {
            let _ = self.tcp.remove(key);
        }
        // A namespace's first-event time goes with its last key of either
        // map, so the next namespace on its inode gets a time of its own.
        let keyed: HashSet<u32> = reading
            .drop_keys
            .iter()
            .map(|k| k.netns)
            .chain(reading.tcp_keys.iter().map(|k| k.netns))
            .filter(|netns| !forgotten.contains(netns))
            .collect();
        for inode in reading.first_drops.keys().filter(|i| !keyed.contains(i)) {
            let _ = self.first_drops.remove(inode);
        }
        (traffic_left, drops_left)
    }
}

/// A key no namespace, pod or device can account for: a device without a
/// namespace, or an inode below every namespace's. The probe emits neither
/// (it checks the inode and keeps a device only with its namespace); a
/// program built before those checks, or a kernel that breaks them, could,
/// and such keys would otherwise stay until restart.
pub(super) fn unplaceable(key: &DropKey, own_netns: u32) -> bool {
    match key.netns {
        NETNS_NONE => key.ifindex != 0,
        own if own == own_netns => false,
        inode => inode < NETNS_INUM_FLOOR,
    }
}

/// Interfaces whose map entries may go: read before the dump, and absent
/// from a dump that is complete. An interrupted or failed dump may miss
/// live links, so it deletes nothing.
pub fn stale_interfaces(
    reading: &EbpfReading,
    live: &HashSet<u32>,
    complete: bool,
) -> HashSet<u32> {
    if !complete {
        return HashSet::new();
    }
    let own_devices = reading
        .drop_keys
        .iter()
        .filter(|k| k.netns == reading.own_netns && k.ifindex != 0)
        .map(|k| k.ifindex);
    reading
        .traffic
        .keys()
        .copied()
        .chain(own_devices)
        .filter(|ifindex| !live.contains(ifindex))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_no_namespace_can_account_for_are_unplaceable() {
        let key = |netns, ifindex| DropKey {
            netns,
            ifindex,
            reason: 2,
        };
        // The host's fixed init inode, below the dynamic range: never
        // unplaceable while it is the collector's own.
        let own = 0xEFFF_FFF9;
        assert!(unplaceable(&key(NETNS_NONE, 7), own));
        assert!(!unplaceable(&key(NETNS_NONE, 0), own));
        assert!(!unplaceable(&key(own, 3), own));
        assert!(!unplaceable(&key(4026532001, 2), own));
        assert!(!unplaceable(&key(4026532001, 0), own));
        // An inode read from something that is not a namespace.
        assert!(unplaceable(&key(0x8100_0000, 0), own));
        assert!(unplaceable(&key(12, 3), own));
    }

    #[test]
    fn only_entries_read_before_a_complete_dump_and_missing_from_it_are_stale() {
        let mut reading = EbpfReading {
            own_netns: 4026531840,
            ..EbpfReading::default()
        };
        for ifindex in [1, 5, 9] {
            reading.traffic.insert(ifindex, Default::default());
        }
        let drop = |netns, ifindex| collector_common::DropKey {
            netns,
            ifindex,
            reason: 2,
        };
        // 11 on the host; 12 and 0 (no device) in a pod's namespace, whose
        // ifindexes are the pod's and never the host's.
        reading.drop_keys.extend([
            drop(4026531840, 11),
            drop(4026532001, 12),
            drop(4026531840, 0),
        ]);
        // 9 and 11 were deleted; 20 was created after the read (not in it),
        // so it is live whatever the dump says.
        let live: HashSet<u32> = [1, 5, 20].into();
        let stale = stale_interfaces(&reading, &live, true);
        assert_eq!(stale, [9, 11].into());
        // A link created between the read and the dump is in the dump but
        // not in the read: never a candidate.
        assert!(!stale.contains(&20));
        // An interrupted (or failed) dump may miss live links: nothing goes.
        assert!(stale_interfaces(&reading, &HashSet::new(), false).is_empty());
    }
}
