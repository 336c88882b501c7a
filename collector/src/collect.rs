//! One collection: read every source, merge per interface, apply filters.
//!
//! [`Collector::collect`] does all the reading (netlink, the BPF maps, pod
//! identity, pods' own SNMP counters, sysfs link speeds); [`merge`] then joins those values without
//! any I/O, so it is the one place that decides what an interface is.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod excluded;

use crate::filter::InterfaceFilter;
use crate::model::{
    Conntrack, EbpfInterface, EbpfStatus, Interface, PodIdentity, PodNetstatStatus, Snapshot,
    SourceStatus,
};
use crate::namespaces::{namespace_drops, namespace_tcp, NamespaceLedger};
use crate::sources::conntrack::ConntrackSource;
use crate::sources::ebpf::{stale_interfaces, EbpfReading, EbpfSource};
use crate::sources::netlink::{self, Link};
use crate::sources::netstat::PodNetstatSource;
use crate::sources::pods::{PodSource, PodView};
use crate::sources::sysfs;

/// Who the node is and which interfaces to report.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    pub node: String,
    /// `--label` pairs, sorted by key.
    pub labels: Vec<(String, String)>,
    pub filter: InterfaceFilter,
    /// Longest one netlink dump may take before the collection gives up on it.
    pub netlink_timeout: Duration,
}

/// The eBPF side as decided at start-up.
pub enum EbpfMode {
    Enabled(Box<EbpfSource>),
    Disabled { reason: String },
}

/// Where links come from: the rtnetlink dump, or a stand-in in tests that
/// inject failures.
pub type LinkSource =
    Box<dyn Fn() -> Result<netlink::LinkDump, netlink::NetlinkError> + Send + Sync>;

pub struct Collector {
    config: CollectorConfig,
    links: LinkSource,
    /// The netlink cache behind `links`, which takes served links back.
    cache: Option<std::sync::Arc<netlink::LinkCache>>,
    ebpf: Option<Mutex<EbpfSource>>,
    ebpf_disabled_reason: Option<String>,
    netlink_errors: AtomicU64,
    netlink_timeouts: AtomicU64,
    skipped_attributes: AtomicU64,
    ebpf_errors: AtomicU64,
    collections: AtomicU64,
    pods: Option<PodSource>,
    netstat: Option<PodNetstatSource>,
    conntrack: Option<ConntrackSource>,
    conntrack_errors: AtomicU64,
    namespaces: Mutex<NamespaceLedger>,
    excluded: Mutex<excluded::ExcludedDrops>,
}

impl Collector {
    pub fn new(config: CollectorConfig, ebpf: EbpfMode) -> Self {
        let cache = std::sync::Arc::new(netlink::LinkCache::new(config.netlink_timeout));
        let source = std::sync::Arc::clone(&cache);
        let mut collector =
            Self::with_link_source(config, ebpf, Box::new(move || source.collect()));
        collector.cache = Some(cache);
        collector
    }

    /// Takes back a served snapshot's interfaces: the next collection's
    /// links are read into the same memory.
    pub fn recycle(&self, interfaces: Vec<Interface>) {
        if let Some(cache) = &self.cache {
            cache.recycle(interfaces);
        }
    }

    pub fn with_link_source(config: CollectorConfig, ebpf: EbpfMode, links: LinkSource) -> Self {
        let (ebpf, ebpf_disabled_reason) = match ebpf {
            EbpfMode::Enabled(source) => (Some(Mutex::new(*source)), None),
            EbpfMode::Disabled { reason } => (None, Some(reason)),
        };
        Collector {
            config,
            links,
            cache: None,
            ebpf,
            ebpf_disabled_reason,
            netlink_errors: AtomicU64::new(0),
            netlink_timeouts: AtomicU64::new(0),
            skipped_attributes: AtomicU64::new(0),
            ebpf_errors: AtomicU64::new(0),
            collections: AtomicU64::new(0),
            pods: None,
            netstat: None,
            conntrack: None,
            conntrack_errors: AtomicU64::new(0),
            namespaces: Mutex::new(NamespaceLedger::default()),
            excluded: Mutex::default(),
        }
    }

    /// Adds pod identity: each collection names the pod of every interface
    /// whose peer is in a pod's network namespace.
    pub fn with_pod_source(mut self, pods: PodSource) -> Self {
        self.pods = Some(pods);
        self
    }

    /// Adds each pod's own SNMP counters, read from its sandbox process
    /// (needs the pod source to know the pods).
    pub fn with_netstat_source(mut self, netstat: PodNetstatSource) -> Self {
        self.netstat = Some(netstat);
        self
    }

    /// Adds the conntrack table of the collector's network namespace.
    pub fn with_conntrack_source(mut self, conntrack: ConntrackSource) -> Self {
        self.conntrack = Some(conntrack);
        self
    }

    pub fn ebpf_enabled(&self) -> bool {
        self.ebpf.is_some()
    }

    /// True when the eBPF maps (if any) can be read with the capabilities
    /// held right now.
    pub fn ebpf_maps_readable(&self) -> bool {
        self.ebpf.as_ref().is_none_or(|source| {
            source
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .maps_readable()
        })
    }

    /// Collects once. Never fails: a source that errs is reported in the
    /// snapshot's status and counted, and the others are still served.
    pub fn collect(&self) -> Snapshot {
        let started = Instant::now();
        let collections_total = self.collections.fetch_add(1, Ordering::Relaxed) + 1;
        let mut ebpf_status = EbpfStatus {
            enabled: self.ebpf.is_some(),
            disabled_reason: self.ebpf_disabled_reason.clone(),
            ..EbpfStatus::default()
        };
        // The maps are read before the dump so that an interface created in
        // between is absent from both (not pruned as stale), see below.
        let mut ebpf_source = self
            .ebpf
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()));
        let mut reading = ebpf_source.as_ref().and_then(|source| {
            ebpf_status.attachments = source.attachments().to_vec();
            ebpf_status.map_memory = source.map_memory();
            match source.read() {
                Ok(reading) => Some(reading),
                Err(error) => {
                    self.ebpf_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%error, "eBPF map read failed; serving netlink metrics only for this scrape");
                    ebpf_status.read_error = Some(error.to_string());
                    None
                }
            }
        });

        let (links, complete, netlink_error) = match (self.links)() {
            Ok(dump) => {
                if dump.skipped_attributes > 0 {
                    self.skipped_attributes
                        .fetch_add(dump.skipped_attributes, Ordering::Relaxed);
                }
                (dump.links, !dump.interrupted, None)
            }
            Err(error) => {
                self.netlink_errors.fetch_add(1, Ordering::Relaxed);
                if error.is_timeout() {
                    self.netlink_timeouts.fetch_add(1, Ordering::Relaxed);
                }
                tracing::warn!(%error, "netlink dump failed");
                (Vec::new(), false, Some(error.to_string()))
            }
        };

        // Pods are identified before pruning: who owns a namespace decides
        // whether its counts may stay.
        let pod_view = match &self.pods {
            Some(source) => source.identify(&links),
            None => PodView::default(),
        };
        let mut forgotten = HashSet::new();
        if let (Some(source), Some(reading)) = (ebpf_source.as_mut(), &mut reading) {
            let live: HashSet<u32> = links.iter().map(|l| l.ifindex).collect();
            let stale = stale_interfaces(reading, &live, complete);
            self.excluded
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .fold(reading, &links, &self.config.filter, &stale);
            // Without the pods source no namespace has an owner; with it
            // down for this collection, owners are unknown.
            let owners =
                (self.pods.is_none() || pod_view.status.up).then_some(&pod_view.namespaces);
            forgotten = self
                .namespaces
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .forgotten(reading, owners, Instant::now());
            (
                ebpf_status.traffic_map_entries,
                ebpf_status.drop_map_entries,
            ) = source.forget(reading, &stale, &forgotten);
        }
        if let Some(reading) = &reading {
            ebpf_status.probe_counters = reading.counters;
            ebpf_status.programs = reading.programs.clone();
            ebpf_status.bpf_stats_enabled = reading.bpf_stats_enabled;
        }
        drop(ebpf_source);

        let (pod_netstat, pod_netstat_status) = match &self.netstat {
            Some(source) if self.pods.is_some() => source.read(&pod_view.namespaces),
            _ => (Vec::new(), PodNetstatStatus::default()),
        };
        let PodView {
            by_link,
            namespaces,
            status: pod_identity,
        } = pod_view;
        let namespace_drops = match reading.as_mut() {
            Some(reading) => namespace_drops(
                std::mem::take(&mut reading.namespace_drops),
                &namespaces,
                &forgotten,
            ),
            None => Vec::new(),
        };
        let namespace_tcp = match reading.as_mut() {
            Some(reading) => namespace_tcp(
                std::mem::take(&mut reading.namespace_tcp),
                &namespaces,
                &forgotten,
            ),
            None => Vec::new(),
        };
        let (conntrack, conntrack_error) = self.read_conntrack();
        let speeds = self.link_speeds(&links);
        let interfaces = merge(links, reading, by_link, &speeds, &self.config.filter);
        let mut errors_total = BTreeMap::new();
        errors_total.insert("netlink", self.netlink_errors.load(Ordering::Relaxed));
        if self.ebpf.is_some() {
            errors_total.insert("ebpf", self.ebpf_errors.load(Ordering::Relaxed));
        }
        if self.conntrack.is_some() {
            errors_total.insert("conntrack", self.conntrack_errors.load(Ordering::Relaxed));
        }
        Snapshot {
            node: self.config.node.clone(),
            labels: self.config.labels.clone(),
            interfaces,
            namespace_drops,
            namespace_tcp,
            pod_netstat,
            conntrack,
            sources: SourceStatus {
                netlink_error,
                ebpf: ebpf_status,
                errors_total,
                netlink_timeouts_total: self.netlink_timeouts.load(Ordering::Relaxed),
                netlink_skipped_attributes_total: self.skipped_attributes.load(Ordering::Relaxed),
                collections_total,
                pod_identity,
                pod_netstat: pod_netstat_status,
                conntrack_error,
            },
            collection_seconds: started.elapsed().as_secs_f64(),
        }
    }

    /// The conntrack table and this collection's error, if any file that
    /// is there did not read or parse (counted once per collection).
    fn read_conntrack(&self) -> (Option<Conntrack>, Option<String>) {
        let Some(source) = &self.conntrack else {
            return (None, None);
        };
        let (conntrack, errors) = source.read();
        if errors.is_empty() {
            return (conntrack, None);
        }
        self.conntrack_errors.fetch_add(1, Ordering::Relaxed);
        let message = errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        tracing::warn!(error = %message, "conntrack statistics not read");
        (conntrack, Some(message))
    }

    /// Speeds of the kept links that can have one: only physical NICs (no
    /// rtnl kind) report a meaningful speed; skipping sysfs for the
    /// thousands of veths keeps scrapes cheap.
    fn link_speeds(&self, links: &[Link]) -> HashMap<u32, u64> {
        links
            .iter()
            .filter(|link| link.kind.is_none() && self.config.filter.keeps(&link.name))
            .filter_map(|link| {
                let speed = sysfs::speed_bytes_per_second(&link.name)?;
                Some((link.ifindex, speed))
            })
            .collect()
    }
}

/// Joins what the sources read into one [`Interface`] per kept link, sorted
/// by name. Pure: every source was read before.
///
/// In place: an `Interface` is some hundred bytes, and at a thousand links
/// a second vector of them is fresh pages to fault in at every scrape. The
/// link cache serves links sorted by name already.
fn merge(
    mut links: Vec<Link>,
    mut reading: Option<EbpfReading>,
    mut pods: HashMap<u32, PodIdentity>,
    speeds: &HashMap<u32, u64>,
    filter: &InterfaceFilter,
) -> Vec<Interface> {
    // Masters are named from every link, kept or not: the names of the
    // few links that are someone's master.
    let mut masters: HashMap<u32, Option<String>> = (links.iter())
        .filter_map(|link| Some((link.master_ifindex?, None)))
        .collect();
    for link in &links {
        if let Some(name) = masters.get_mut(&link.ifindex) {
            *name = Some(link.name.clone());
        }
    }
    if !links.is_sorted_by(|a, b| a.name <= b.name) {
        links.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    }
    links.retain(|link| filter.keeps(&link.name));
    for link in &mut links {
        link.ebpf = reading.as_mut().map(|r| {
            let traffic = r.traffic.remove(&link.ifindex).unwrap_or_default();
            EbpfInterface {
                rx_packets: traffic.rx_packets,
                rx_bytes: traffic.rx_bytes,
                tx_packets: traffic.tx_packets,
                tx_bytes: traffic.tx_bytes,
                drops: r.drops.remove(&link.ifindex).unwrap_or_default(),
            }
        });
        link.master = link.master_ifindex.and_then(|m| masters.get(&m)?.clone());
        link.speed_bytes = speeds.get(&link.ifindex).copied();
        link.pod = pods.remove(&link.ifindex);
    }
    links
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use super::*;
    use crate::model::HttpStats;
    use crate::output::prometheus::render;
    use crate::sources::netlink::{LinkDump, NetlinkError};

    /// A link source that fails whenever `failing` is set.
    fn flaky(failing: Arc<AtomicBool>) -> LinkSource {
        Box::new(move || {
            if failing.load(Ordering::Relaxed) {
                return Err(NetlinkError::Decode {
                    request: "RTM_GETLINK",
                    message: "injected: message length 9999 is out of bounds".into(),
                });
            }
            let link = Link {
                ifindex: 1,
                name: "lo".into(),
                admin_up: true,
                mtu: 65536,
                ..Link::default()
            };
            Ok(LinkDump {
                links: vec![link],
                ..LinkDump::default()
            })
        })
    }

    #[test]
    fn a_failed_dump_is_reported_and_the_next_one_recovers() {
        let failing = Arc::new(AtomicBool::new(true));
        let config = CollectorConfig {
            node: "n".into(),
            labels: vec![],
            filter: InterfaceFilter::All,
            netlink_timeout: netlink::DEFAULT_DUMP_TIMEOUT,
        };
        let collector = Collector::with_link_source(
            config,
            EbpfMode::Disabled {
                reason: "test".into(),
            },
            flaky(Arc::clone(&failing)),
        );
        let broken = collector.collect();
        assert!(broken.interfaces.is_empty());
        assert!(broken
            .sources
            .netlink_error
            .as_deref()
            .unwrap()
            .contains("injected"));
        let text = render(&broken, &HttpStats::default());
        assert!(
            text.contains("collector_scrape_errors_total{source=\"netlink\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("collector_ebpf_enabled 0\n"));

        failing.store(false, Ordering::Relaxed);
        let healed = collector.collect();
        assert_eq!(healed.interfaces.len(), 1);
        assert!(healed.sources.netlink_error.is_none());
        // The error count is cumulative: it stays at one.
        assert_eq!(healed.sources.errors_total["netlink"], 1);
    }

    #[test]
    fn merge_sorts_by_name_keeps_what_the_filter_keeps_and_names_masters_of_any_link() {
        let link = |ifindex, name: &str, master| Link {
            master_ifindex: master,
            ..Link::named(ifindex, name)
        };
        // Out of name order, as a source other than the cache may give them;
        // the bridge is filtered out but still names its ports' master.
        let links = vec![
            link(3, "veth-b", Some(2)),
            link(2, "br0", None),
            link(4, "veth-a", Some(2)),
            link(5, "veth-c", Some(9)),
        ];
        let pod = PodIdentity {
            namespace: "default".into(),
            pod: "web".into(),
            pod_uid: "uid".into(),
            container_id: "sandbox".into(),
            pod_interface: None,
            network: None,
        };
        let filter = InterfaceFilter::new(None, Some("^br")).unwrap();
        let merged = merge(
            links,
            None,
            HashMap::from([(4, pod)]),
            &HashMap::new(),
            &filter,
        );
        let view: Vec<_> = merged
            .iter()
            .map(|i| (i.name.as_str(), i.master.as_deref(), i.pod.is_some()))
            .collect();
        assert_eq!(
            view,
            [
                ("veth-a", Some("br0"), true),
                ("veth-b", Some("br0"), false),
                // A master that is no link of the dump names nothing.
                ("veth-c", None, false),
            ]
        );
    }
}
