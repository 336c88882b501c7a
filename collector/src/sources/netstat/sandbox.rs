//! Finding a live process in a pod's network namespace without any
//! capability: the pod's sandbox (pause) process, by the sandbox id in its
//! `/proc/<pid>/cgroup` (world-readable). The runtime starts that process
//! in the namespace it made for the sandbox, the one the CNI cache names
//! under the same id, so the process is in the pod's namespace by
//! construction.
//!
//! Whether it is cannot be checked without a capability: the namespace's
//! inode is behind `/proc/<pid>/ns/net`, which needs ptrace read access to
//! the pause process (root with capabilities the collector has dropped),
//! and the inodes under `/proc/<pid>/net/` are procfs entry numbers, not
//! `ns.inum`. What is checked is that the process is the sandbox's when its
//! files are opened: its `/proc/<pid>` directory is opened, its cgroup read
//! through that handle, and every file opened through it too; the handle
//! stays bound to the process and fails once it exits, so a reused pid
//! never lends its files.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::Path;

/// Larger than any process's cgroup file (one line per v1 hierarchy).
const MAX_CGROUP_BYTES: u64 = 16 * 1024;

/// More than a cgroup file holds on a usual host: one allocation and one
/// read each.
const READ_CAPACITY: usize = 16 * 1024;

/// The shortest sandbox id taken for one: shorter hex runs (a pod UID's
/// groups, a slice's number) could name something else.
const MIN_ID_CHARS: usize = 32;

/// Whether `id` can be looked for in cgroup paths: hex, long enough.
pub fn usable_id(id: &str) -> bool {
    id.len() >= MIN_ID_CHARS && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Every run of hex digits in a cgroup file at least [`MIN_ID_CHARS`]
/// long: a sandbox's id as containerd (`/k8s.io/<id>`,
/// `cri-containerd-<id>.scope`) and CRI-O (`crio-<id>.scope`) write it.
pub fn ids_in_cgroup(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_ascii_hexdigit())
        .filter(|run| run.len() >= MIN_ID_CHARS)
}

/// A process's `/proc/<pid>` directory, held open for one collection.
#[derive(Debug)]
pub struct ProcessDir {
    pub pid: u32,
    dir: File,
}

impl ProcessDir {
    pub fn of(proc_dir: &Path, pid: u32) -> std::io::Result<ProcessDir> {
        let dir = File::open(proc_dir.join(pid.to_string()))?;
        Ok(ProcessDir { pid, dir })
    }

    /// The file at `relative` (`cgroup`, `net/snmp`), opened through the
    /// held directory: the process's own, or an error once it has exited.
    pub fn open(&self, relative: &str) -> std::io::Result<File> {
        let name = CString::new(relative)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        // SAFETY: `name` is a NUL-terminated path and the directory fd is
        // open for as long as `self`; the returned fd is owned by `file`.
        let fd = unsafe {
            libc::openat(
                self.dir.as_raw_fd(),
                name.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and nothing else owns it.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// At most `limit` bytes of the file at `relative`, read through the
    /// held directory.
    pub fn read(&self, relative: &str, limit: u64) -> std::io::Result<String> {
        let file = self.open(relative)?;
        // Room for the whole file up front: read_to_end into an empty
        // buffer reads in small, growing steps, each one more syscall
        // (a dozen for `netstat`), where this reads it in one and sees the
        // end in a second.
        let mut bytes = Vec::with_capacity(READ_CAPACITY.min(limit as usize + 1));
        file.take(limit + 1).read_to_end(&mut bytes)?;
        let text = String::from_utf8(bytes)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        if text.len() as u64 > limit {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{relative} is larger than {limit} bytes"),
            ));
        }
        Ok(text)
    }

    /// Whether the process belongs to sandbox `id`.
    pub fn in_sandbox(&self, id: &str) -> bool {
        self.read("cgroup", MAX_CGROUP_BYTES)
            .is_ok_and(|text| ids_in_cgroup(&text).any(|found| found == id))
    }
}

/// One pass over `proc_dir`: for each id of `wanted`, the lowest pid whose
/// cgroup names it among those read (the pass ends once every id is
/// found). Processes that exit during the pass are skipped.
pub fn find_sandboxes(
    proc_dir: &Path,
    wanted: &HashSet<&str>,
) -> std::io::Result<HashMap<String, u32>> {
    let mut found: HashMap<String, u32> = HashMap::new();
    for entry in std::fs::read_dir(proc_dir)? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(text) = std::fs::File::open(entry.path().join("cgroup")).and_then(|file| {
            let mut text = String::new();
            file.take(MAX_CGROUP_BYTES).read_to_string(&mut text)?;
            Ok(text)
        }) else {
            continue;
        };
        for id in ids_in_cgroup(&text).filter(|id| wanted.contains(id)) {
            let best = found.entry(id.to_string()).or_insert(pid);
            *best = (*best).min(pid);
        }
        if found.len() == wanted.len() {
            break;
        }
    }
    Ok(found)
}
