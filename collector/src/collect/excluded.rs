//! Drops on interfaces `--exclude` removes are not lost: they are served
//! as the host namespace's drops on no device
//! (`network_netns_drops_total{netns="host",interface=""}`), so a
//! cardinality-saving exclude of pod veths keeps their drops in the node's
//! totals.

use std::collections::{BTreeMap, HashSet};

use crate::filter::InterfaceFilter;
use crate::model::Netns;
use crate::sources::ebpf::EbpfReading;
use crate::sources::netlink::Link;

#[derive(Debug, Default)]
pub struct ExcludedDrops {
    /// The excluded interfaces of the last collection.
    excluded: HashSet<u32>,
    /// The last counts of excluded interfaces that have since gone (their
    /// entries pruned) or stopped being excluded: kept in the sum so that
    /// it never goes back.
    retired: BTreeMap<String, u64>,
}

fn add(into: &mut BTreeMap<String, u64>, drops: &BTreeMap<String, u64>) {
    for (reason, packets) in drops {
        *into.entry(reason.clone()).or_default() += packets;
    }
}

impl ExcludedDrops {
    /// Moves the drops of every link `filter` excludes out of
    /// `reading.drops` into the host's device-less drops. `stale`: the
    /// ifindexes whose entries are pruned in this collection.
    pub fn fold(
        &mut self,
        reading: &mut EbpfReading,
        links: &[Link],
        filter: &InterfaceFilter,
        stale: &HashSet<u32>,
    ) {
        let mut excluded: HashSet<u32> = links
            .iter()
            .filter(|link| !filter.keeps(&link.name))
            .map(|link| link.ifindex)
            .collect();
        for ifindex in &self.excluded {
            if excluded.contains(ifindex) {
                continue;
            }
            let live = links.iter().any(|l| l.ifindex == *ifindex);
            if stale.contains(ifindex) || live {
                if let Some(drops) = reading.drops.get(ifindex) {
                    add(&mut self.retired, drops);
                }
            } else {
                // Not in this dump (a failed or partial one): still excluded.
                excluded.insert(*ifindex);
            }
        }
        let mut total = self.retired.clone();
        for ifindex in &excluded {
            if let Some(drops) = reading.drops.remove(ifindex) {
                add(&mut total, &drops);
            }
        }
        if !total.is_empty() {
            add(
                reading.namespace_drops.entry((Netns::Host, 0)).or_default(),
                &total,
            );
        }
        self.excluded = excluded;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drops(packets: u64) -> BTreeMap<String, u64> {
        BTreeMap::from([("NO_SOCKET".to_string(), packets)])
    }

    fn host(reading: &EbpfReading) -> u64 {
        reading.namespace_drops[&(Netns::Host, 0)]["NO_SOCKET"]
    }

    #[test]
    fn excluded_interfaces_drops_are_the_hosts_and_never_go_back_when_one_goes() {
        let filter = InterfaceFilter::new(None, Some("^veth")).unwrap();
        let mut excluded = ExcludedDrops::default();
        let mut reading = EbpfReading {
            drops: [(2, drops(5)), (7, drops(3)), (8, drops(4))].into(),
            namespace_drops: [((Netns::Host, 0), drops(1))].into(),
            ..EbpfReading::default()
        };
        let links = [
            Link::named(2, "eth0"),
            Link::named(7, "veth7"),
            Link::named(8, "veth8"),
        ];
        excluded.fold(&mut reading, &links, &filter, &HashSet::new());
        assert_eq!(host(&reading), 1 + 3 + 4);
        assert_eq!(
            reading.drops.keys().collect::<Vec<_>>(),
            [&2],
            "kept ones stay"
        );

        // veth8 is deleted after two more drops: its entry is read one last
        // time and pruned; the sum keeps it.
        let mut reading = EbpfReading {
            drops: [(2, drops(5)), (7, drops(3)), (8, drops(6))].into(),
            ..EbpfReading::default()
        };
        let links = [Link::named(2, "eth0"), Link::named(7, "veth7")];
        excluded.fold(&mut reading, &links, &filter, &HashSet::from([8]));
        assert_eq!(host(&reading), 3 + 6);
        let mut reading = EbpfReading {
            drops: [(2, drops(5)), (7, drops(3))].into(),
            ..EbpfReading::default()
        };
        excluded.fold(&mut reading, &links, &filter, &HashSet::new());
        assert_eq!(host(&reading), 3 + 6, "monotonic after the prune");

        // A failed dump (no links) changes nothing served.
        excluded.fold(&mut reading.clone(), &[], &filter, &HashSet::new());
        let mut again = EbpfReading {
            drops: [(2, drops(5)), (7, drops(3))].into(),
            ..EbpfReading::default()
        };
        excluded.fold(&mut again, &links, &filter, &HashSet::new());
        assert_eq!(host(&again), 3 + 6);
    }
}
