//! The I/O edge of pod identity: the results directory, each cache file
//! re-read only when its size or mtime changed, netns files opened and
//! asked for their ids. Every failure is counted and leaves the rest served.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use super::cache_file::parse_cache_file;
use super::nsid::NsidSocket;
use super::routes::netnsid_by_route;
use super::{
    match_links, netns_file, pod_namespaces, CniAttachment, LinkEnd, Placed, PodIdentity,
    PodNamespace,
};
use crate::sources::netlink::socket::DumpSocket;
use crate::sources::netlink::Link;

/// The route dump placing pods whose cache names no namespace is one local
/// round trip; a kernel that has not answered by then never will.
const ROUTE_DUMP_TIMEOUT: Duration = Duration::from_secs(1);

/// Every `collector_pod_identity_errors_total` reason, all served from 0.
/// `directory`: the results directory could not be listed (per
/// collection); `file`: a cache file could not be read; `malformed`: not a
/// complete libcni cache (truncated, half-written, another format);
/// `netns`: the netns file a cache names cannot be opened (a pod being torn
/// down, or the mount missing); `nsid`: the kernel did not answer
/// RTM_GETNSID; `unplaced`: a pod's cache names no namespace and no host
/// route leads from its addresses to a pod veth. Each file version counts
/// once, not once per scrape.
pub const ERROR_REASONS: [&str; 6] = [
    "directory",
    "file",
    "malformed",
    "netns",
    "nsid",
    "unplaced",
];

#[derive(Debug, Clone)]
pub struct PodConfig {
    /// libcni's results cache (`--cni-results-dir`).
    pub results_dir: PathBuf,
    /// Where the runtime's `/var/run/netns` is visible (`--netns-dir`).
    pub netns_dir: PathBuf,
}

pub use crate::model::PodStatus;

/// What one collection learnt of pods.
#[derive(Debug, Default)]
pub struct PodView {
    /// Host interface ifindex -> the pod whose namespace holds its peer.
    pub by_link: HashMap<u32, PodIdentity>,
    /// Pod network namespaces by inode number (the kernel's `ns.inum`).
    pub namespaces: HashMap<u32, PodNamespace>,
    pub status: PodStatus,
}

/// Where an attachment's namespace was last found: its inode (the kernel's
/// 32-bit `ns.inum`) and its id here, where it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Placement {
    inode: u32,
    nsid: Option<i32>,
    /// When the namespace was made (CLOCK_BOOTTIME ns).
    created: Option<u64>,
}

pub struct PodSource {
    config: PodConfig,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    files: HashMap<PathBuf, CachedFile>,
    socket: Option<NsidSocket>,
    /// Netns files of `--netns-dir` by path: inode and id, for placing pods
    /// by route. An unchanged inode is the same namespace, so its id holds.
    netns_dir: HashMap<PathBuf, Placement>,
    errors: BTreeMap<&'static str, u64>,
    directory_failing: bool,
    /// No rtnetlink socket could be opened in this collection.
    no_socket: bool,
}

/// One cache file as last read, keyed by what tells a rewrite.
struct CachedFile {
    mtime: Option<SystemTime>,
    size: u64,
    /// The last complete reading: a version caught mid-write or unreadable
    /// keeps it, so one failed read never ends a live pod's counts.
    attachment: Option<CniAttachment>,
    /// This version failed to read or parse: read again next time (counted
    /// once).
    broken: bool,
    /// Where it was last placed, kept while a later attempt fails.
    placed: Option<Placement>,
    /// A placement failure is being counted; set until one succeeds.
    failing: bool,
}

impl PodSource {
    pub fn new(config: PodConfig) -> PodSource {
        let errors = ERROR_REASONS.iter().map(|r| (*r, 0)).collect();
        PodSource {
            config,
            state: Mutex::new(State {
                errors,
                ..State::default()
            }),
        }
    }

    /// The pod of every link whose peer is in a pod's namespace, and every
    /// pod's namespace by inode. While the results directory cannot be
    /// listed, the files last read stand: pods keep their names rather than
    /// flip to nameless namespaces for a scrape.
    pub fn identify(&self, links: &[Link]) -> PodView {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut status = PodStatus {
            enabled: true,
            ..PodStatus::default()
        };
        match state.refresh(&self.config) {
            Ok(()) => {
                if state.directory_failing {
                    tracing::info!(dir = %self.config.results_dir.display(), "CNI results directory readable again; pod identity back");
                }
                state.directory_failing = false;
                status.up = true;
            }
            Err(error) => {
                let message = format!("{}: {error}", self.config.results_dir.display());
                if !state.directory_failing {
                    tracing::warn!("pod identity down, keeping the pods last read: cannot list the CNI results directory {message}");
                }
                state.directory_failing = true;
                state.count("directory");
                status.error = Some(message);
            }
        }
        let ends: Vec<LinkEnd<'_>> = links
            .iter()
            .filter(|l| l.link_netnsid.is_some())
            .map(|l| LinkEnd {
                ifindex: l.ifindex,
                name: &l.name,
                kind: l.kind.as_deref(),
                link_netnsid: l.link_netnsid,
                peer_ifindex: l.link_ifindex,
            })
            .collect();
        state.place(&self.config, &ends);
        status.errors_total = state.errors.clone();
        let attachments: Vec<Placed<'_>> = state
            .files
            .values()
            .filter_map(|file| {
                let (attachment, placed) = (file.attachment.as_ref()?, file.placed?);
                Some(Placed {
                    inode: placed.inode,
                    nsid: placed.nsid,
                    attachment,
                    current: !file.failing,
                    written: file.mtime,
                    created: placed.created,
                })
            })
            .collect();
        // A kept placement's id may have been given to another namespace
        // since: only placements found now name veths.
        let with_nsid: Vec<(i32, &CniAttachment)> = attachments
            .iter()
            .filter(|p| p.current)
            .filter_map(|p| Some((p.nsid?, p.attachment)))
            .collect();
        status.attachments = with_nsid.len();
        let by_link = match_links(&ends, &with_nsid);
        let namespaces = pod_namespaces(&attachments, &ends, &by_link);
        PodView {
            by_link,
            namespaces,
            status,
        }
    }
}

impl State {
    fn count(&mut self, reason: &'static str) {
        *self.errors.entry(reason).or_default() += 1;
    }

    /// Lists the directory and re-reads each file whose size or mtime
    /// changed or whose last read failed; files gone from it are forgotten.
    fn refresh(&mut self, config: &PodConfig) -> std::io::Result<()> {
        let mut listed = HashSet::new();
        for entry in std::fs::read_dir(&config.results_dir)? {
            let Ok(entry) = entry else { continue };
            let path = entry.path();
            // Deleted between the listing and here: simply gone.
            let Ok(metadata) = std::fs::metadata(&path) else {
                continue;
            };
            if !metadata.is_file() {
                continue;
            }
            let (mtime, size) = (metadata.modified().ok(), metadata.len());
            listed.insert(path.clone());
            let known = self.files.remove(&path);
            let same_version = known
                .as_ref()
                .is_some_and(|k| k.mtime == mtime && k.size == size);
            if same_version && !known.as_ref().is_some_and(|k| k.broken) {
                self.files
                    .insert(path, known.expect("same version is known"));
                continue;
            }
            let read = std::fs::read(&path)
                .map_err(|error| ("file", error.to_string()))
                .and_then(|bytes| {
                    // libcni writes in place, so a file caught mid-write is
                    // malformed until its next size or mtime.
                    parse_cache_file(&bytes).map_err(|error| ("malformed", error.to_string()))
                });
            let mut file = known.unwrap_or(CachedFile {
                mtime,
                size,
                attachment: None,
                broken: false,
                placed: None,
                failing: false,
            });
            match read {
                Ok(attachment) => {
                    if file.attachment != attachment {
                        file.placed = None;
                    }
                    file.attachment = attachment;
                    file.broken = false;
                }
                Err((reason, error)) => {
                    tracing::debug!(path = %path.display(), %error, "CNI cache file unreadable; keeping its last reading");
                    if !(same_version && file.broken) {
                        self.count(reason);
                    }
                    file.broken = true;
                }
            }
            (file.mtime, file.size) = (mtime, size);
            self.files.insert(path, file);
        }
        self.files.retain(|path, _| listed.contains(path));
        Ok(())
    }

    /// Places every pod attachment in its namespace: from the netns path
    /// its cache names, else from the host route of its address. A failed
    /// attempt keeps the last placement (counted once per failing stretch).
    fn place(&mut self, config: &PodConfig, links: &[LinkEnd<'_>]) {
        self.no_socket = false;
        let mut failures = Vec::new();
        let mut by_route = Vec::new();
        let paths: Vec<PathBuf> = self.files.keys().cloned().collect();
        for path in paths {
            let Some(attachment) = self.files[&path].attachment.as_ref() else {
                continue;
            };
            let Some(netns) = attachment.netns.clone() else {
                if !attachment.is_loopback() {
                    by_route.push(path);
                }
                continue;
            };
            let netns_path = netns_file(&netns, &config.netns_dir);
            let known = self.files[&path].placed;
            let found = self.placement_of(&netns_path, known);
            let file = self.files.get_mut(&path).expect("listed above");
            match found {
                Ok(placement) => {
                    file.placed = Some(placement);
                    file.failing = false;
                }
                Err(reason) => {
                    if !file.failing {
                        tracing::debug!(netns = %netns_path.display(), reason, "netns of a CNI cache file not placed");
                        failures.push(reason);
                    }
                    file.failing = true;
                }
            }
        }
        if !by_route.is_empty() {
            failures.extend(self.place_by_route(config, links, &by_route));
        }
        if self.no_socket {
            failures.push("nsid");
        }
        for reason in failures {
            self.count(reason);
        }
    }

    /// The inode and id of the namespace behind `netns_path`. `known`: the
    /// last placement, whose id stands while the inode is unchanged.
    fn placement_of(
        &mut self,
        netns_path: &Path,
        known: Option<Placement>,
    ) -> Result<Placement, &'static str> {
        if let (Ok(metadata), Some(known)) = (std::fs::metadata(netns_path), known) {
            if metadata.ino() as u32 == known.inode && known.nsid.is_some() {
                return Ok(known);
            }
        }
        let handle = std::fs::File::open(netns_path).map_err(|_| "netns")?;
        // The inode of the file opened, not of a stat before it.
        let metadata = handle.metadata().map_err(|_| "netns")?;
        let inode = metadata.ino() as u32;
        let created = namespace_created(&metadata);
        let socket = match &mut self.socket {
            Some(socket) => socket,
            None if self.no_socket => {
                return Ok(Placement {
                    inode,
                    nsid: None,
                    created,
                })
            }
            None => match NsidSocket::open() {
                Ok(socket) => self.socket.insert(socket),
                Err(error) => {
                    tracing::warn!(%error, "no rtnetlink socket for RTM_GETNSID");
                    self.no_socket = true;
                    return Ok(Placement {
                        inode,
                        nsid: None,
                        created,
                    });
                }
            },
        };
        match socket.nsid_of(&handle) {
            Ok(nsid) => Ok(Placement {
                inode,
                nsid,
                created,
            }),
            Err(error) => {
                // Not a netns file (EINVAL), or no answer: a fresh socket
                // next time, in case a late reply is queued.
                tracing::debug!(netns = %netns_path.display(), %error, "RTM_GETNSID failed");
                self.socket = None;
                Err("nsid")
            }
        }
    }

    /// Places the attachments of `paths` (no netns path in their cache) by
    /// the host route of their addresses, and returns the failures to count.
    fn place_by_route(
        &mut self,
        config: &PodConfig,
        links: &[LinkEnd<'_>],
        paths: &[PathBuf],
    ) -> Vec<&'static str> {
        let routes: HashMap<IpAddr, u32> = match DumpSocket::open().and_then(|mut socket| {
            socket.host_routes(Instant::now() + ROUTE_DUMP_TIMEOUT, ROUTE_DUMP_TIMEOUT)
        }) {
            Ok(routes) => routes.into_iter().collect(),
            Err(error) => {
                tracing::debug!(%error, "no host routes to place pods by");
                HashMap::new()
            }
        };
        let by_nsid = self.netns_dir_ids(config);
        let mut failures = Vec::new();
        for path in paths {
            let file = self.files.get_mut(path).expect("listed by the caller");
            let addresses = file
                .attachment
                .as_ref()
                .map(|a| a.addresses.as_slice())
                .unwrap_or_default();
            let placement = netnsid_by_route(addresses, &routes, links).and_then(|nsid| {
                let inode = by_nsid.get(&nsid)?;
                let placed = self.netns_dir.values().find(|p| p.inode == *inode)?;
                Some(Placement {
                    nsid: Some(nsid),
                    ..*placed
                })
            });
            match placement {
                Some(placement) => {
                    file.placed = Some(placement);
                    file.failing = false;
                }
                None => {
                    if !file.failing {
                        tracing::debug!(path = %path.display(), "pod names no namespace and no host route leads to its veth");
                        failures.push("unplaced");
                    }
                    file.failing = true;
                }
            }
        }
        failures
    }

    /// Every namespace of `--netns-dir` by its id here (only those with
    /// one: a namespace without a veth peer here is found by no route).
    fn netns_dir_ids(&mut self, config: &PodConfig) -> HashMap<i32, u32> {
        let Ok(entries) = std::fs::read_dir(&config.netns_dir) else {
            return HashMap::new();
        };
        let mut listed = HashMap::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let known = self.netns_dir.get(&path).copied();
            if let Ok(placement) = self.placement_of(&path, known) {
                listed.insert(path, placement);
            }
        }
        let by_nsid = listed
            .values()
            .filter_map(|p| Some((p.nsid?, p.inode)))
            .collect();
        self.netns_dir = listed;
        by_nsid
    }
}

/// When the namespace behind a netns file was made, on CLOCK_BOOTTIME (the
/// probes' clock): nsfs stamps its inode when the namespace is first given
/// a path, which a runtime does right after creating it (the bind mount
/// in /var/run/netns), before any device or socket lives there. The stamp
/// is the coarse realtime clock, so it may read up to one tick early.
fn namespace_created(metadata: &std::fs::Metadata) -> Option<u64> {
    let stamped = i128::from(metadata.ctime()) * 1_000_000_000 + i128::from(metadata.ctime_nsec());
    let clock = |id| {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec, which `now` is.
        let rc = unsafe { libc::clock_gettime(id, &mut now) };
        (rc == 0).then(|| i128::from(now.tv_sec) * 1_000_000_000 + i128::from(now.tv_nsec))
    };
    let (realtime, boottime) = (clock(libc::CLOCK_REALTIME)?, clock(libc::CLOCK_BOOTTIME)?);
    u64::try_from(stamped - (realtime - boottime)).ok()
}
