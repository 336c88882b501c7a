//! Each pod's own SNMP counters: the MIB of the pod's network namespace,
//! read as `/proc/<pid>/net/{snmp,netstat,snmp6}` of the pod's sandbox
//! process under the host's `/proc` (`--host-proc`). procfs looks these up
//! in the task's network namespace with no ptrace check, so no capability
//! is needed.
//!
//! - [`parse`]: the files' text to counters (pure).
//! - [`sandbox`]: finding the sandbox process of a pod by its cgroup.
//!
//! Every pod is read on its own: one whose process is not found or whose
//! files do not read is counted and left out, the others served.
//!
//! A pod's files are opened once and held while the pod lives; each
//! collection reads them again from offset 0. An open procfs net file
//! holds a reference on the namespace it was opened in (the kernel's
//! `single_open_net`), so it reads the pod's MIB for as long as it is open,
//! even if the sandbox process exits, and without the path walk under
//! `/proc/<pid>/net` (whose dentries are never cached) or the cgroup check
//! that finding the process again would cost. Its `seq_file` also keeps
//! the buffer it grew: `netstat`, longer than a page, is formatted once
//! per read instead of twice. The files of a pod are closed when the pod
//! leaves the list, since holding them longer would keep a deleted pod's
//! namespace alive.

pub mod parse;
pub mod sandbox;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::model::{NetstatFile, NetstatSet, PodNetstat, PodNetstatStatus, NETSTAT_FIELDS};
use crate::sources::pods::PodNamespace;
use parse::{parse_into, MAX_FILE_BYTES};
use sandbox::{find_sandboxes, usable_id, ProcessDir};

/// Every `collector_pod_netstat_errors_total` reason, all served from 0.
/// `proc`: `--host-proc` could not be listed (per search); `process`: no
/// live process of a pod's sandbox was found (a runtime that runs no
/// sandbox process on the host, a sandbox id that is not hex, or
/// `--host-proc` not the host's); `read`: its `snmp` or `netstat` could
/// not be read (it exited meanwhile); `malformed`: a file did not parse.
/// Each counts once per pod and failing stretch, not once per scrape.
pub const ERROR_REASONS: [&str; 4] = ["proc", "process", "read", "malformed"];

/// How often pods whose process was not found are looked for again: a
/// search reads the cgroup file of every process on the node.
const SEARCH_AGAIN: Duration = Duration::from_secs(30);

/// The share of the open-files limit pods' held files may take; the rest
/// is the HTTP layer's and the probes'. Pods past it are read by opening
/// their files at each collection, as without holding.
const HELD_SHARE_OF_FD_LIMIT: u64 = 2;

pub struct PodNetstatSource {
    proc_dir: PathBuf,
    /// The files read per pod: all three, or only those holding a counter
    /// `/metrics` serves (see [`PodNetstatSource::serving`]).
    files: Vec<NetstatFile>,
    /// How many files may be held open at once.
    max_held_files: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Sandbox id -> its MIB files, opened through its process.
    held: HashMap<String, Vec<(NetstatFile, File)>>,
    /// Sandbox id -> its process's pid, as last found, for pods whose
    /// files are not held. Only the number is kept between collections: a
    /// `/proc/PID` held open would keep an exited sandbox's `struct pid`,
    /// and with it its PID namespace and that namespace's inode number,
    /// alive until the next collection.
    pids: HashMap<String, u32>,
    /// One file's text, reused by every read of a held file.
    buffer: Vec<u8>,
    /// Sandbox id -> the reason its pod is failing, counted once.
    failing: HashMap<String, &'static str>,
    /// The ids the last search looked for, and when it ran.
    searched: HashSet<String>,
    last_search: Option<Instant>,
    errors: BTreeMap<&'static str, u64>,
}

impl PodNetstatSource {
    /// Reads pods' processes under `proc_dir`, the host's `/proc`.
    pub fn new(proc_dir: PathBuf) -> PodNetstatSource {
        let errors = ERROR_REASONS.iter().map(|r| (*r, 0)).collect();
        PodNetstatSource {
            proc_dir,
            files: NetstatFile::ALL.to_vec(),
            max_held_files: held_files_limit(),
            state: Mutex::new(State {
                errors,
                ..State::default()
            }),
        }
    }

    /// Reads only the files holding a counter of `sets`: for `serve`,
    /// whose `/metrics` is the only output and serves the rows of its
    /// profile. The default profile serves no `snmp6` row, and `snmp6` is
    /// a quarter of a pod's read. `snapshot` and `watch` read every file.
    pub fn serving(mut self, sets: &[NetstatSet]) -> PodNetstatSource {
        self.files = NetstatFile::ALL
            .into_iter()
            .filter(|file| {
                NETSTAT_FIELDS
                    .iter()
                    .any(|f| f.file == *file && sets.contains(&f.set))
            })
            .collect();
        self
    }

    /// The counters of every pod namespace in `namespaces`, sorted by
    /// (namespace, pod).
    pub fn read(
        &self,
        namespaces: &HashMap<u32, PodNamespace>,
    ) -> (Vec<PodNetstat>, PodNetstatStatus) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let live: HashSet<&str> = namespaces
            .values()
            .map(|n| n.identity.container_id.as_str())
            .collect();
        state.held.retain(|id, _| live.contains(id.as_str()));
        state.pids.retain(|id, _| live.contains(id.as_str()));
        state.failing.retain(|id, _| live.contains(id.as_str()));
        // This collection's handles, closed when it ends. A known pid whose
        // process exited, or is no longer the sandbox's, is looked for
        // anew at once.
        let mut processes: HashMap<String, ProcessDir> = HashMap::new();
        let known: Vec<(String, u32)> = state
            .pids
            .iter()
            .filter(|(id, _)| !state.held.contains_key(*id))
            .map(|(i, p)| (i.clone(), *p))
            .collect();
        for (id, pid) in known {
            match ProcessDir::of(&self.proc_dir, pid) {
                Ok(process) if process.in_sandbox(&id) => {
                    processes.insert(id, process);
                }
                _ => {
                    state.pids.remove(&id);
                    state.searched.remove(&id);
                }
            }
        }
        self.search(&mut state, &live, &mut processes);
        self.hold(&mut state, &processes);

        let mut pods = Vec::new();
        let mut outcomes = Vec::new();
        let mut buffer = std::mem::take(&mut state.buffer);
        buffer.resize(MAX_FILE_BYTES + 1, 0);
        for (inode, namespace) in namespaces {
            let id = namespace.identity.container_id.as_str();
            let read = match (state.held.get(id), processes.get(id)) {
                (Some(files), _) => {
                    let read = read_files(files, &mut buffer);
                    if read == Err("read") {
                        // Found and opened again at the next collection.
                        state.held.remove(id);
                    }
                    read
                }
                (None, None) => Err("process"),
                // Not held (past the open-files share): opened for this read.
                (None, Some(process)) => match open_files(process, id, &self.files) {
                    Some(files) => read_files(&files, &mut buffer),
                    None => Err("read"),
                },
            };
            match read {
                Ok(counters) => {
                    pods.push(PodNetstat {
                        pod: namespace.identity.clone(),
                        netns: *inode,
                        counters,
                    });
                    outcomes.push((id, None));
                }
                Err(reason) => outcomes.push((id, Some(reason))),
            }
        }
        state.buffer = buffer;
        for (id, outcome) in outcomes {
            state.settle(id, outcome);
        }
        pods.sort_by(|a, b| (&a.pod.namespace, &a.pod.pod).cmp(&(&b.pod.namespace, &b.pod.pod)));
        let status = PodNetstatStatus {
            enabled: true,
            errors_total: state.errors.clone(),
        };
        (pods, status)
    }

    /// Looks for the processes of pods that have none: at once for a pod
    /// not looked for before, every [`SEARCH_AGAIN`] for the rest. Those
    /// found are added to `processes`, opened.
    fn search(
        &self,
        state: &mut State,
        live: &HashSet<&str>,
        processes: &mut HashMap<String, ProcessDir>,
    ) {
        let missing: HashSet<&str> = live
            .iter()
            .copied()
            .filter(|id| {
                !processes.contains_key(*id) && !state.held.contains_key(*id) && usable_id(id)
            })
            .collect();
        let new = missing.iter().any(|id| !state.searched.contains(*id));
        let due = state
            .last_search
            .is_none_or(|at| at.elapsed() >= SEARCH_AGAIN);
        if missing.is_empty() || !(new || due) {
            return;
        }
        state.last_search = Some(Instant::now());
        state.searched = missing.iter().map(|id| id.to_string()).collect();
        match find_sandboxes(&self.proc_dir, &missing) {
            Ok(found) => {
                for (id, pid) in found {
                    // Opened after the search: checked again through the
                    // handle, in case the pid was reused in between.
                    match ProcessDir::of(&self.proc_dir, pid) {
                        Ok(process) if process.in_sandbox(&id) => {
                            state.pids.insert(id.clone(), pid);
                            processes.insert(id, process);
                        }
                        _ => {}
                    }
                }
            }
            Err(error) => {
                tracing::warn!(proc = %self.proc_dir.display(), %error, "cannot list the host's /proc: pods' own counters are not served");
                *state.errors.entry("proc").or_default() += 1;
            }
        }
    }

    /// Opens and holds the files of the pods in `processes` while the
    /// limit allows; a pod whose files do not open is read through its
    /// process (and fails there, counted, if they still do not).
    fn hold(&self, state: &mut State, processes: &HashMap<String, ProcessDir>) {
        let mut held: usize = state.held.values().map(Vec::len).sum();
        for (id, process) in processes {
            if held + self.files.len() > self.max_held_files {
                return;
            }
            if let Some(files) = open_files(process, id, &self.files) {
                held += files.len();
                state.held.insert(id.clone(), files);
            }
        }
    }
}

impl State {
    /// Counts a pod's failure once per failing stretch and reason.
    fn settle(&mut self, id: &str, outcome: Option<&'static str>) {
        match outcome {
            None => {
                self.failing.remove(id);
            }
            Some(reason) => {
                if self.failing.get(id) != Some(&reason) {
                    tracing::debug!(sandbox = id, reason, "a pod's own counters not read");
                    *self.errors.entry(reason).or_default() += 1;
                    self.failing.insert(id.to_string(), reason);
                }
            }
        }
    }
}

/// Half the soft limit on open files, which an unprivileged process cannot
/// raise past the hard one.
fn held_files_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through a pointer to a local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 0;
    }
    (limit.rlim_cur / HELD_SHARE_OF_FD_LIMIT).min(usize::MAX as u64) as usize
}

/// `files` of the namespace of sandbox `id`'s process, opened, or `None`
/// if one that should exist does not open. `snmp6` is left out where the
/// kernel has no IPv6.
fn open_files(
    process: &ProcessDir,
    id: &str,
    files: &[NetstatFile],
) -> Option<Vec<(NetstatFile, File)>> {
    let mut opened = Vec::with_capacity(files.len());
    for &file in files {
        match process.open(file.path()) {
            Ok(handle) => opened.push((file, handle)),
            Err(error)
                if file == NetstatFile::Snmp6
                    && error.kind() == std::io::ErrorKind::NotFound
                    && process.in_sandbox(id) => {}
            Err(error) => {
                tracing::debug!(pid = process.pid, file = file.path(), %error, "a pod's MIB file not opened");
                return None;
            }
        }
    }
    Some(opened)
}

/// Every wanted counter of a pod's open files, each read whole from offset
/// 0 in one call into `buffer`: a `seq_file` hands over all that one
/// `show` wrote when the buffer has room (a regular file, all up to its
/// end), so a read that fills `buffer` is a file larger than any MIB file.
fn read_files(
    files: &[(NetstatFile, File)],
    buffer: &mut [u8],
) -> Result<BTreeMap<&'static str, u64>, &'static str> {
    let mut counters = BTreeMap::new();
    for (file, handle) in files {
        let length = match handle.read_at(buffer, 0) {
            Ok(length) if length < buffer.len() => length,
            Ok(_) => {
                tracing::debug!(file = file.path(), "a pod's MIB file is larger than any");
                return Err("read");
            }
            Err(error) => {
                tracing::debug!(file = file.path(), %error, "a pod's MIB file not read");
                return Err("read");
            }
        };
        let Ok(text) = std::str::from_utf8(&buffer[..length]) else {
            return Err("malformed");
        };
        if let Err(error) = parse_into(*file, text, &mut counters) {
            tracing::debug!(%error, "a pod's MIB file did not parse");
            return Err("malformed");
        }
    }
    Ok(counters)
}
