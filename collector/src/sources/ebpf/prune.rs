//! Pruning the maps of interfaces that are gone, so pod churn cannot fill
//! them.

use super::*;

impl EbpfSource {
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
}
