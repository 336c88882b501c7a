//! What BPF programs and links a process holds, and a private tracefs
//! for tests that read tracepoint formats.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::*;

/// The kernel keeps the first 15 characters of a BPF program's name.
pub fn bpf_name(program: &str) -> String {
    program.chars().take(15).collect()
}

/// BPF programs (id -> name) and links (ids) one process holds open.
/// Read from its own fds, so programs of other processes on the machine
/// (other tests, other users' tools) never change what a test sees.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BpfHeld {
    pub programs: BTreeMap<u32, String>,
    pub links: std::collections::BTreeSet<u32>,
    pub maps: std::collections::BTreeSet<u32>,
    /// perf_event fds: before 5.15 a tracepoint program is attached through
    /// a perf event (PERF_EVENT_IOC_SET_BPF), not a bpf_link, and the event
    /// has no id to look up; closing it detaches the program.
    pub perf_events: usize,
}

impl BpfHeld {
    pub fn of(pid: u32) -> BpfHeld {
        let mut program_ids = Vec::new();
        let mut links = std::collections::BTreeSet::new();
        let mut maps = std::collections::BTreeSet::new();
        let mut perf_events = 0;
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap_or_else(|e| panic!("listing fds of {pid}: {e}"));
        for fd in fds {
            let fd = fd.expect("reading /proc/<pid>/fd");
            // An fd closed since the listing is simply not held any more.
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let field = match target.to_string_lossy().as_ref() {
                "anon_inode:bpf-prog" => "prog_id",
                "anon_inode:bpf_link" => "link_id",
                "anon_inode:bpf-map" => "map_id",
                "anon_inode:[perf_event]" => {
                    perf_events += 1;
                    continue;
                }
                _ => continue,
            };
            let info = format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy());
            let Ok(text) = std::fs::read_to_string(&info) else {
                continue;
            };
            let id: u32 = text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{field}:")))
                .unwrap_or_else(|| panic!("{info} has no {field}: {text}"))
                .trim()
                .parse()
                .unwrap();
            match field {
                "prog_id" => program_ids.push(id),
                "map_id" => {
                    maps.insert(id);
                }
                _ => {
                    links.insert(id);
                }
            }
        }
        let names = bpf_program_names();
        let programs = program_ids
            .into_iter()
            .map(|id| {
                let name = names.get(&id).unwrap_or_else(|| {
                    panic!("program {id} held by {pid} is not listed by bpftool")
                });
                (id, name.clone())
            })
            .collect();
        BpfHeld {
            programs,
            links,
            maps,
            perf_events,
        }
    }

    /// Attachments held: bpf_links, or on kernels without tracepoint links
    /// (before 5.15) the perf events the programs are attached through.
    pub fn attachments(&self) -> usize {
        self.links.len() + self.perf_events
    }

    /// Program names, sorted, as the kernel keeps them (see [`bpf_name`]).
    pub fn program_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.programs.values().cloned().collect();
        names.sort();
        names
    }

    pub fn holds_program(&self, program: &str) -> bool {
        let name = bpf_name(program);
        self.programs.values().any(|n| *n == name)
    }

    /// Panics unless every program and link of `self` is gone from the
    /// kernel within 2 s (ids are never reused, so a listed id is ours).
    /// Not at once: another process's bpftool may hold a program for the
    /// moment it takes to describe it.
    pub fn assert_released(&self, context: &str) {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let programs = bpf_ids("prog");
            let links = bpf_ids("link");
            let left_programs: Vec<_> = self
                .programs
                .keys()
                .filter(|id| programs.contains(id))
                .collect();
            let left_links: Vec<_> = self.links.iter().filter(|id| links.contains(id)).collect();
            if left_programs.is_empty() && left_links.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{context}: programs {left_programs:?} and links {left_links:?} still loaded"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `bpftool -j <kind> show`, one JSON object per program or link.
fn bpftool_list(kind: &str) -> Vec<serde_json::Value> {
    let out = run("bpftool", &["-j", kind, "show"]);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bpftool -j {kind} show is not JSON: {e}"))
}

/// Ids of every program or link loaded now.
pub fn bpf_ids(kind: &str) -> std::collections::BTreeSet<u32> {
    bpftool_list(kind)
        .iter()
        .map(|o| o["id"].as_u64().expect("bpftool entry has an id") as u32)
        .collect()
}

fn bpf_program_names() -> BTreeMap<u32, String> {
    bpftool_list("prog")
        .iter()
        .map(|o| {
            (
                o["id"].as_u64().expect("bpftool entry has an id") as u32,
                o["name"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Runs `f` on a thread of its own inside a private mount namespace in
/// which tracefs is freshly mounted on a temporary directory, given to
/// `f`. A new machine has no tracefs mounted in the test's namespace (the
/// collector mounts its own inside `ip netns exec`'s), so a test that
/// reads tracefs mounts it where it reads it; nothing outside that thread
/// ever sees the mount. Panics when any step fails: the tests that need
/// tracefs must not pass without it.
pub fn with_private_tracefs<T: Send>(f: impl FnOnce(&std::path::Path) -> T + Send) -> T {
    let mount_point = tempfile::tempdir().expect("temporary tracefs mount point");
    let path = mount_point.path();
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                // SAFETY: unshare affects only this thread's fs and mount
                // namespace (CLONE_NEWNS implies CLONE_FS, per thread).
                let rc = unsafe { libc::unshare(libc::CLONE_NEWNS) };
                assert_eq!(
                    rc,
                    0,
                    "TRACEFS TEST SETUP FAILED: unshare(CLONE_NEWNS): {}",
                    std::io::Error::last_os_error()
                );
                // Mounts made here must not propagate back to the host's
                // namespace (systemd makes / shared).
                let root = c"/";
                // SAFETY: valid NUL-terminated path; other pointers null.
                let rc = unsafe {
                    libc::mount(
                        std::ptr::null(),
                        root.as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    )
                };
                assert_eq!(
                    rc,
                    0,
                    "TRACEFS TEST SETUP FAILED: making / private: {}",
                    std::io::Error::last_os_error()
                );
                let target = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
                    .expect("temporary path has no NUL");
                let fstype = c"tracefs";
                // SAFETY: valid NUL-terminated strings; data is null.
                let rc = unsafe {
                    libc::mount(
                        fstype.as_ptr(),
                        target.as_ptr(),
                        fstype.as_ptr(),
                        0,
                        std::ptr::null(),
                    )
                };
                assert_eq!(
                    rc,
                    0,
                    "TRACEFS TEST SETUP FAILED: mount -t tracefs on {}: {} (kernel without CONFIG_TRACING?)",
                    path.display(),
                    std::io::Error::last_os_error()
                );
                assert!(
                    path.join("events").is_dir(),
                    "TRACEFS TEST SETUP FAILED: tracefs mounted on {} has no events/",
                    path.display()
                );
                let result = f(path);
                // The namespace, and the mount with it, goes away with this
                // thread anyway; unmounting says so explicitly.
                // SAFETY: valid NUL-terminated path.
                unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
                result
            })
            .join()
            .expect("thread with a private tracefs panicked")
    })
}

/// Whether the running kernel's `skb:kfree_skb` carries a drop reason
/// (5.17 on), read from its tracefs format as the collector does.
pub fn kfree_skb_has_reason() -> bool {
    with_private_tracefs(|tracefs| {
        let format = tracefs.join("events/skb/kfree_skb/format");
        std::fs::read_to_string(&format)
            .unwrap_or_else(|e| panic!("{}: {e}", format.display()))
            .contains(" reason;")
    })
}

/// (flavour label, collector flags that select it).
pub const FLAVOURS: [(&str, &[&str]); 2] =
    [("btf", &[]), ("classic", &["--ebpf-flavour", "classic"])];

/// Runs `test` for each flavour, as root.
pub fn each_flavour(test: impl Fn(&str)) {
    super::require_root();
    for (flavour, _) in FLAVOURS {
        eprintln!("--- flavour {flavour}");
        test(flavour);
    }
}

/// Starts a collector in `ns` with `args` and the flags of `flavour`, and
/// checks every attached probe runs that flavour (no silent fallback).
pub fn start_flavour(ns: &super::Netns, flavour: &str, args: &[&str]) -> super::CollectorProcess {
    let flags = FLAVOURS
        .iter()
        .find(|(name, _)| *name == flavour)
        .map(|(_, flags)| *flags)
        .expect("known flavour");
    let all: Vec<&str> = flags.iter().chain(args).copied().collect();
    let collector = super::CollectorProcess::start(ns, &all);
    let metrics = collector.scrape(ns);
    let probes: Vec<&super::Sample> = metrics.select("collector_ebpf_probe_info", &[]).collect();
    assert!(!probes.is_empty(), "no collector_ebpf_probe_info series");
    for probe in probes {
        assert_eq!(
            probe.labels.get("flavour").map(String::as_str),
            Some(flavour),
            "{:?}",
            probe.labels
        );
    }
    collector
}

/// One key of the drop map: namespace inode, ifindex in it, reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DropMapKey {
    pub netns: u32,
    pub ifindex: u32,
    pub reason: u32,
}

/// The keys of the drop map a collector holds, as `bpftool map dump`
/// shows them. Read from the kernel, so a test can tell entries of its own
/// namespaces from those of every other namespace the probe counts in.
pub fn drop_map_keys(pid: u32) -> Vec<DropMapKey> {
    drop_map_counts(pid).into_keys().collect()
}

/// The drop map a collector holds, each key with its packets summed over
/// CPUs, as `bpftool map dump` shows it: what the probe counted, before
/// the collector names or prunes anything. A key's packets include the
/// counts waiting in the probe's per-CPU slots (`DROP_SLOTS`), by the rule
/// the collector reads them with: a slot's count is its key's while the
/// key is in the map and its namespace's first-drop time is the one the
/// slot was taken under.
pub fn drop_map_counts(pid: u32) -> BTreeMap<DropMapKey, u64> {
    let dumps = map_dumps(pid, &["DROPS", "DROP_SLOTS", "NETNS_FIRST_DROP"]);
    let [Some(drops), Some(slots), Some(first_drops)] = dumps else {
        panic!("collector {pid} holds no DROPS, DROP_SLOTS or NETNS_FIRST_DROP map");
    };
    let key_of = |bytes: &[u8]| DropMapKey {
        netns: le_u32(bytes, 0),
        ifindex: le_u32(bytes, 4),
        reason: le_u32(bytes, 8),
    };
    let mut counts: BTreeMap<DropMapKey, u64> = drops
        .iter()
        .map(|entry| {
            let packets: u64 = entry["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|cpu| le_u64(&hex_bytes(&cpu["value"]), 0))
                .sum();
            (key_of(&hex_bytes(&entry["key"])), packets)
        })
        .collect();
    let born: BTreeMap<u32, u64> = first_drops
        .iter()
        .map(|entry| {
            (
                le_u32(&hex_bytes(&entry["key"]), 0),
                le_u64(&hex_bytes(&entry["value"]), 0),
            )
        })
        .collect();
    // `DropSlot`: the key (12 bytes), epoch (u32), born (u64), pending (u64).
    for cpu in slots.iter().flat_map(|e| e["values"].as_array().unwrap()) {
        let slot = hex_bytes(&cpu["value"]);
        let (key, epoch, slot_born, pending) = (
            key_of(&slot),
            le_u32(&slot, 12),
            le_u64(&slot, 16),
            le_u64(&slot, 24),
        );
        let namespace_born = born.get(&key.netns).copied().unwrap_or(0);
        if let (Some(count), true) = (
            counts.get_mut(&key),
            epoch != 0 && slot_born == namespace_born,
        ) {
            *count += pending;
        }
    }
    counts
}

/// `bpftool map dump` of each named map a collector holds, in `names` order
/// (the kernel keeps the first 15 bytes of a map's name).
fn map_dumps<const N: usize>(pid: u32, names: &[&str; N]) -> [Option<Vec<serde_json::Value>>; N] {
    let mut dumps = [const { None }; N];
    for id in BpfHeld::of(pid).maps {
        let id = id.to_string();
        let show = run("bpftool", &["-j", "map", "show", "id", &id]);
        let map: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
        let Some(at) = names
            .iter()
            .position(|name| map["name"] == name[..name.len().min(15)])
        else {
            continue;
        };
        let dump = run("bpftool", &["-j", "map", "dump", "id", &id]);
        let entries: serde_json::Value = serde_json::from_slice(&dump.stdout).unwrap();
        dumps[at] = Some(entries.as_array().unwrap().clone());
    }
    dumps
}

/// The bytes of a `bpftool -j` hex array.
fn hex_bytes(value: &serde_json::Value) -> Vec<u8> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|hex| u8::from_str_radix(hex.as_str().unwrap().trim_start_matches("0x"), 16).unwrap())
        .collect()
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}
