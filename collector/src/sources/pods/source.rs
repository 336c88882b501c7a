//! The I/O edge of pod identity: the results directory, each cache file
//! re-read only when its size or mtime changed, netns files opened and
//! asked for their ids. Every failure is counted and leaves the rest served.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use super::cache_file::parse_cache_file;
use super::nsid::NsidSocket;
use super::{
    match_links, netns_file, pod_namespaces, CniAttachment, LinkEnd, PodIdentity, PodNamespace,
};
use crate::sources::netlink::Link;

/// Every `collector_pod_identity_errors_total` reason, all served from 0.
/// `directory`: the results directory could not be listed (per
/// collection); `file`: a cache file could not be read; `malformed`: not a
/// complete libcni cache (truncated, half-written, another format);
/// `netns`: the netns file a cache names cannot be opened (a pod being torn
/// down, or the mount missing); `nsid`: the kernel did not answer
/// RTM_GETNSID. Each file version counts once, not once per scrape.
pub const ERROR_REASONS: [&str; 5] = ["directory", "file", "malformed", "netns", "nsid"];

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

/// An attachment whose netns file was found in this collection.
struct FoundNetns {
    path: PathBuf,
    inode: u32,
    /// Its id here; `None` when it has none (no veth peer in our namespace).
    nsid: Option<i32>,
}

pub struct PodSource {
    config: PodConfig,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    files: HashMap<PathBuf, CachedFile>,
    socket: Option<NsidSocket>,
    errors: BTreeMap<&'static str, u64>,
    directory_failing: bool,
}

/// One cache file as last read, keyed by what tells a rewrite.
struct CachedFile {
    mtime: Option<SystemTime>,
    size: u64,
    attachment: Option<CniAttachment>,
    netns_failing: bool,
    /// The netns file's inode (the namespace's, under its nsfs mount) and
    /// the id found for it. An id stays the same while both namespaces
    /// live, and a namespace keeps its inode, so an unchanged inode needs
    /// no round trip; only real ids are kept (-1 may be assigned later).
    nsid: Option<(u64, i32)>,
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
    /// pod's namespace by inode.
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
                    tracing::warn!("pod identity off, serving everything else: cannot list the CNI results directory {message}");
                }
                state.directory_failing = true;
                state.count("directory");
                state.files.clear();
                status.error = Some(message);
            }
        }
        let found = state.netns_files(&self.config);
        status.attachments = found.iter().filter(|f| f.nsid.is_some()).count();
        status.errors_total = state.errors.clone();
        let ends: Vec<LinkEnd<'_>> = links
            .iter()
            .filter(|l| l.link_netnsid.is_some())
            .map(|l| LinkEnd {
                ifindex: l.ifindex,
                name: &l.name,
                link_netnsid: l.link_netnsid,
                peer_ifindex: l.link_ifindex,
            })
            .collect();
        let attachments: Vec<(u32, Option<i32>, &CniAttachment)> = found
            .iter()
            .filter_map(|f| {
                Some((
                    f.inode,
                    f.nsid,
                    state.files.get(&f.path)?.attachment.as_ref()?,
                ))
            })
            .collect();
        let with_nsid: Vec<(i32, &CniAttachment)> = attachments
            .iter()
            .filter_map(|(_, nsid, attachment)| Some(((*nsid)?, *attachment)))
            .collect();
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
    /// changed; files gone from it are forgotten.
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
            if let Some(known) = self.files.get(&path) {
                if known.mtime == mtime && known.size == size {
                    continue;
                }
            }
            let attachment = match std::fs::read(&path) {
                Err(error) => {
                    tracing::debug!(path = %path.display(), %error, "CNI cache file unreadable");
                    self.count("file");
                    None
                }
                Ok(bytes) => match parse_cache_file(&bytes) {
                    Ok(attachment) => attachment,
                    Err(error) => {
                        // libcni writes in place, so a file caught mid-write
                        // is malformed until its next size or mtime.
                        tracing::debug!(path = %path.display(), %error, "skipping a CNI cache file");
                        self.count("malformed");
                        None
                    }
                },
            };
            self.files.insert(
                path,
                CachedFile {
                    mtime,
                    size,
                    attachment,
                    netns_failing: false,
                    nsid: None,
                },
            );
        }
        self.files.retain(|path, _| listed.contains(path));
        Ok(())
    }

    /// The netns inode, and id here where it has one, of every cached
    /// attachment whose netns file is there.
    fn netns_files(&mut self, config: &PodConfig) -> Vec<FoundNetns> {
        let mut found = Vec::new();
        let mut failures = Vec::new();
        let mut no_socket = false;
        for (path, file) in &mut self.files {
            // hostNetwork pods and non-pod containers have nothing to match.
            let Some(netns) = file.attachment.as_ref().and_then(|a| a.netns.as_deref()) else {
                continue;
            };
            let netns_path = netns_file(netns, &config.netns_dir);
            let inode = std::fs::metadata(&netns_path).ok().map(|m| {
                use std::os::unix::fs::MetadataExt;
                m.ino()
            });
            if let (Some(inode), Some((known, nsid))) = (inode, file.nsid) {
                if inode == known {
                    found.push(FoundNetns {
                        path: path.clone(),
                        inode: inode as u32,
                        nsid: Some(nsid),
                    });
                    continue;
                }
            }
            file.nsid = None;
            let handle = match std::fs::File::open(&netns_path) {
                Ok(handle) => handle,
                Err(error) => {
                    if !file.netns_failing {
                        tracing::debug!(netns = %netns_path.display(), %error, "netns of a CNI cache file is gone");
                        failures.push("netns");
                    }
                    file.netns_failing = true;
                    continue;
                }
            };
            file.netns_failing = false;
            // The inode of the file opened, not of the stat above.
            let Ok(inode) = handle.metadata().map(|m| {
                use std::os::unix::fs::MetadataExt;
                m.ino()
            }) else {
                continue;
            };
            let mut netns = FoundNetns {
                path: path.clone(),
                // A namespace's inode is the kernel's 32-bit `ns.inum`.
                inode: inode as u32,
                nsid: None,
            };
            let socket = match &mut self.socket {
                Some(socket) => socket,
                None if no_socket => {
                    found.push(netns);
                    continue;
                }
                None => match NsidSocket::open() {
                    Ok(socket) => self.socket.insert(socket),
                    Err(error) => {
                        tracing::warn!(%error, "no rtnetlink socket for RTM_GETNSID");
                        failures.push("nsid");
                        no_socket = true;
                        found.push(netns);
                        continue;
                    }
                },
            };
            match socket.nsid_of(&handle) {
                Ok(Some(nsid)) => {
                    file.nsid = Some((inode, nsid));
                    netns.nsid = Some(nsid);
                }
                Ok(None) => {}
                Err(error) => {
                    // Not a netns file (EINVAL), or no answer: a fresh
                    // socket next time, in case a late reply is queued.
                    tracing::debug!(netns = %netns_path.display(), %error, "RTM_GETNSID failed");
                    failures.push("nsid");
                    self.socket = None;
                }
            }
            found.push(netns);
        }
        for reason in failures {
            self.count(reason);
        }
        found
    }
}
