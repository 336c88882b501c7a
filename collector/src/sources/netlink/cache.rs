//! Scrape-time collection at the cost of the counters alone: link
//! attributes are cached and refreshed by a full `RTM_GETLINK` dump only
//! when `RTNLGRP_LINK` says a link changed; every collection reads the
//! counters with `RTM_GETSTATS`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::socket::{DumpSocket, LinkEvents};
use super::{Link, LinkDump, NetlinkError};

/// Link attributes and counters, collected cheaply; safe to share.
pub struct LinkCache {
    timeout: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    socket: Option<DumpSocket>,
    /// `None` when notifications cannot be had: every collection dumps fully.
    events: Option<LinkEvents>,
    subscribed: bool,
    /// Links as of the last full dump; `None`: refresh before use.
    links: Option<Vec<Link>>,
    /// Cleared when the kernel refuses RTM_GETSTATS (before 4.7).
    no_stats: bool,
    /// The links of a collection that has been served, handed back
    /// ([`LinkCache::recycle`]): the next collection fills the same memory
    /// (hundreds of KiB at a thousand links) instead of fresh pages.
    spare: Vec<Link>,
}

impl LinkCache {
    /// Each collection must finish within `timeout`.
    pub fn new(timeout: Duration) -> Self {
        LinkCache {
            timeout,
            state: Mutex::new(State::default()),
        }
    }

    /// Every link with its current counters.
    pub fn collect(&self) -> Result<LinkDump, NetlinkError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let deadline = Instant::now() + self.timeout;
        let result = state.collect(deadline, self.timeout);
        if result.is_err() {
            // A reply that came too late may still arrive on this socket,
            // and the cache may have missed changes: start afresh next time.
            state.socket = None;
            state.links = None;
        }
        result
    }

    /// Takes back the links of a collection once served, to hold the next.
    pub fn recycle(&self, mut links: Vec<Link>) {
        links.clear();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if links.capacity() > state.spare.capacity() {
            state.spare = links;
        }
    }
}

impl State {
    fn collect(&mut self, deadline: Instant, timeout: Duration) -> Result<LinkDump, NetlinkError> {
        if !self.subscribed {
            self.subscribed = true;
            // Subscribe before the first dump, so no change slips between them.
            self.events = LinkEvents::subscribe()
                .inspect_err(|error| {
                    tracing::warn!(%error, "no link notifications; every collection dumps all link attributes")
                })
                .ok();
        }
        let socket = match &mut self.socket {
            Some(socket) => socket,
            None => self.socket.insert(DumpSocket::open()?),
        };
        let changed = self.events.as_mut().is_none_or(LinkEvents::changed);
        if changed || self.links.is_none() || self.no_stats {
            return refresh(socket, &mut self.links, deadline, timeout);
        }
        let (counters, interrupted) = match socket.counters(deadline, timeout) {
            Ok(counters) => counters,
            Err(NetlinkError::Kernel { errno, .. })
                if errno == libc::EOPNOTSUPP || errno == libc::EINVAL =>
            {
                tracing::info!(
                    errno,
                    "RTM_GETSTATS unsupported; counters come from full link dumps"
                );
                self.no_stats = true;
                return refresh(socket, &mut self.links, deadline, timeout);
            }
            Err(error) => return Err(error),
        };
        let spare = std::mem::take(&mut self.spare);
        match merge(self.links.as_deref().unwrap_or_default(), counters, spare) {
            Some(links) => Ok(LinkDump {
                links,
                interrupted,
                ..LinkDump::default()
            }),
            // A link the cache does not know: created after the last dump,
            // its notification not read yet.
            None => refresh(socket, &mut self.links, deadline, timeout),
        }
    }
}

/// A full dump, sorted by name, kept as the new cache (unless interrupted)
/// and served: collections then serve links in the order of the
/// exposition, with no sort of their own.
fn refresh(
    socket: &mut DumpSocket,
    cache: &mut Option<Vec<Link>>,
    deadline: Instant,
    timeout: Duration,
) -> Result<LinkDump, NetlinkError> {
    let mut dump = socket.links(deadline, timeout)?;
    dump.links.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    *cache = (!dump.interrupted).then(|| dump.links.clone());
    Ok(dump)
}

/// The cached links that still exist, each with its fresh counters, in
/// `links` (emptied first); `None` when a counter belongs to a link the
/// cache does not hold.
fn merge(
    cached: &[Link],
    counters: Vec<(u32, super::LinkCounters)>,
    mut links: Vec<Link>,
) -> Option<Vec<Link>> {
    // The kernel dumps links in ifindex order, so this sort only checks;
    // a search in the sorted counters then costs no hash table.
    let mut counters = counters;
    counters.sort_unstable_by_key(|(ifindex, _)| *ifindex);
    // Sized up front: a thousand links grown by doubling are copied over
    // and over, each copy into freshly mapped pages.
    links.clear();
    links.reserve(cached.len());
    // Links gone since the last dump have no counters and are left out.
    links.extend(cached.iter().filter_map(|link| {
        let at = counters
            .binary_search_by_key(&link.ifindex, |(ifindex, _)| *ifindex)
            .ok()?;
        Some(Link {
            counters: counters[at].1,
            ..link.clone()
        })
    }));
    // Every counter went to a cached link, unless the dump had a link the
    // cache does not (ifindexes are unique within a dump).
    (links.len() == counters.len()).then_some(links)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::netlink::LinkCounters;

    fn counters(rx_bytes: u64) -> LinkCounters {
        LinkCounters {
            rx_bytes,
            ..LinkCounters::default()
        }
    }

    #[test]
    fn fresh_counters_go_onto_cached_links_and_deleted_links_drop_out() {
        let cached = [
            Link::named(1, "lo"),
            Link::named(7, "veth7"),
            Link::named(9, "gone"),
        ];
        let spare = vec![Link::named(3, "served before")];
        let merged = merge(&cached, vec![(7, counters(700)), (1, counters(100))], spare).unwrap();
        let view: Vec<(&str, u64)> = merged
            .iter()
            .map(|l| (l.name.as_str(), l.counters.rx_bytes))
            .collect();
        assert_eq!(view, [("lo", 100), ("veth7", 700)]);
    }

    #[test]
    fn a_link_unknown_to_the_cache_asks_for_a_refresh() {
        let cached = [Link::named(1, "lo")];
        let counters = vec![(1, counters(1)), (12, counters(2))];
        assert!(merge(&cached, counters, Vec::new()).is_none());
    }
}
