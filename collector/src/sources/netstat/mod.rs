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

pub mod parse;
pub mod sandbox;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
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

pub struct PodNetstatSource {
    proc_dir: PathBuf,
    /// The files read per pod: all three, or only those holding a counter
    /// `/metrics` serves (see [`PodNetstatSource::serving`]).
    files: Vec<NetstatFile>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Sandbox id -> its process's pid, as last found. Only the number is
    /// kept between collections: a `/proc/PID` held open would keep an
    /// exited sandbox's `struct pid`, and with it its PID namespace and
    /// that namespace's inode number, alive until the next collection.
    pids: HashMap<String, u32>,
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
        state.pids.retain(|id, _| live.contains(id.as_str()));
        state.failing.retain(|id, _| live.contains(id.as_str()));
        // This collection's handles, closed when it ends. A known pid whose
        // process exited, or is no longer the sandbox's, is looked for
        // anew at once.
        let mut processes: HashMap<String, ProcessDir> = HashMap::new();
        let known: Vec<(String, u32)> = state.pids.iter().map(|(i, p)| (i.clone(), *p)).collect();
        for (id, pid) in known {
            match ProcessDir::open(&self.proc_dir, pid) {
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

        let mut pods = Vec::new();
        let mut outcomes = Vec::new();
        for (inode, namespace) in namespaces {
            let id = namespace.identity.container_id.as_str();
            let read = match processes.get(id) {
                None => Err("process"),
                Some(process) => read_counters(process, id, &self.files),
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
            .filter(|id| !processes.contains_key(*id) && usable_id(id))
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
                    match ProcessDir::open(&self.proc_dir, pid) {
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

/// Every wanted counter of `files` of the namespace of sandbox `id`'s
/// process. `snmp6` is missing where IPv6 is off in the kernel (its counters are
/// left out), or because the process exited (a failed read).
fn read_counters(
    process: &ProcessDir,
    id: &str,
    files: &[NetstatFile],
) -> Result<BTreeMap<&'static str, u64>, &'static str> {
    let mut counters = BTreeMap::new();
    for &file in files {
        let text = match process.read(file.path(), MAX_FILE_BYTES as u64) {
            Ok(text) => text,
            Err(error)
                if file == NetstatFile::Snmp6
                    && error.kind() == std::io::ErrorKind::NotFound
                    && process.in_sandbox(id) =>
            {
                continue;
            }
            Err(error) => {
                tracing::debug!(pid = process.pid, file = file.path(), %error, "a pod's MIB file not read");
                return Err("read");
            }
        };
        if let Err(error) = parse_into(file, &text, &mut counters) {
            tracing::debug!(pid = process.pid, %error, "a pod's MIB file did not parse");
            return Err("malformed");
        }
    }
    Ok(counters)
}
