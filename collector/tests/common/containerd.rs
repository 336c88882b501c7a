//! A containerd of the test's own, serving the CRI the kubelet uses, with
//! the stock bridge and host-local CNI plugins: the pods the tests make
//! through it are laid out (namespace, veth, libcni cache files) by the
//! same code that lays them out on a node.
//!
//! Private to the test process: its config, root, state and socket in a
//! temp dir; it runs in the test's node namespace, so its bridge and host
//! veths are where the collector looks; and in a mount namespace of its
//! own where /var/lib/cni (libcni's cache, which containerd 1.6 cannot
//! move, and host-local's leases) is a directory of the test's. The pods'
//! `cni-…` namespace files still appear in the host's /var/run/netns,
//! which `ip netns add` made a shared mount.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::*;

/// Where libcni keeps its cache and host-local its leases, in containerd's
/// mount namespace.
const CNI_STATE: &str = "/var/lib/cni";
/// The stock plugins of Debian's containernetworking-plugins.
const CNI_BIN_DIR: &str = "/usr/lib/cni";
/// The CNI network's name, the first part of every cache file name.
pub const NETWORK: &str = "pods";
/// The bridge the pods' host veths are attached to, in the node namespace.
pub const BRIDGE: &str = "cni0";
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Containerd {
    dir: tempfile::TempDir,
    child: Child,
    cri: Mutex<Cri>,
}

/// The pods' bridge in `node`. The bridge plugin takes a bridge of its
/// name as it finds it. One made with multicast snooping on joins the
/// all-snoopers group and sends IGMP reports, which every pod receives and
/// drops (multicast not for it) at moments no test controls; so none is
/// sent.
pub fn add_bridge(node: &Netns) {
    node.ip(&[
        "link",
        "add",
        BRIDGE,
        "type",
        "bridge",
        "mcast_snooping",
        "0",
    ]);
}

impl Containerd {
    /// Starts containerd in `node`, its pods addressed from
    /// 198.18.`subnet`.0/24 (the bridge has .1).
    pub fn start(node: &Netns, subnet: u8) -> Containerd {
        become_subreaper();
        add_bridge(node);
        let dir = tempfile::Builder::new()
            .prefix("containerd-")
            .tempdir()
            .unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("net.d")).unwrap();
        std::fs::create_dir_all(root.join("cni")).unwrap();
        std::fs::write(root.join("net.d/10-pods.conflist"), conflist(subnet)).unwrap();
        std::fs::write(root.join("config.toml"), config_toml(root)).unwrap();
        let log = File::create(root.join("containerd.log")).unwrap();
        let mut command = Command::new("containerd");
        command
            .arg("--config")
            .arg(root.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        enter_private_namespaces(&mut command, node, &root.join("cni"));
        let child = command.spawn().expect("starting containerd");
        let socket = root.join("containerd.sock");
        let cri = wait_for_cri(&socket, root);
        let containerd = Containerd {
            dir,
            child,
            cri: Mutex::new(cri),
        };
        containerd.import(&build_pause_image(containerd.dir.path()));
        containerd
    }

    /// The directory libcni writes its result cache files to, as the
    /// collector's `--cni-results-dir`. Made by libcni at the first pod.
    pub fn results_dir(&self) -> PathBuf {
        self.dir.path().join("cni/results")
    }

    /// The CRI connection (also after a test panicked holding it).
    pub fn cri(&self) -> std::sync::MutexGuard<'_, Cri> {
        self.cri
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Where the pods' log directories go (the kubelet's /var/log/pods).
    pub fn pod_logs(&self) -> PathBuf {
        self.dir.path().join("pods")
    }

    /// The log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// Loads the sandbox image into the namespace the CRI plugin uses.
    fn import(&self, archive: &Path) {
        let socket = self.dir.path().join("containerd.sock");
        let output = Command::new("ctr")
            .arg("--address")
            .arg(&socket)
            .args(["--namespace", "k8s.io", "images", "import"])
            .args(["--snapshotter", "native"])
            .arg(archive)
            .output()
            .expect("starting ctr");
        assert!(
            output.status.success(),
            "ctr images import: {}\n{}",
            text(&output),
            self.log()
        );
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Sandboxes a failed test left: stopped (their network and netns
        // files go) and removed, so nothing outlives the daemon.
        let mut cri = self.cri();
        for id in cri.list_pod_sandboxes().unwrap_or_default() {
            let _ = cri.stop_pod_sandbox(&id);
            let _ = cri.remove_pod_sandbox(&id);
        }
        drop(cri);
        // SAFETY: signals the containerd this harness started.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        reap_shims(Some(self.dir.path()));
        remove_empty_cgroups();
    }
}

/// runc puts the sandboxes of containerd's `k8s.io` namespace under a
/// `k8s.io` cgroup and removes only theirs; the parent goes too once no
/// sandbox (of any containerd) is in it, which rmdir checks.
fn remove_empty_cgroups() {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let mut parents = vec![PathBuf::from("/sys/fs/cgroup/k8s.io")];
    parents.extend(hierarchies.flatten().map(|h| h.path().join("k8s.io")));
    for parent in parents {
        let _ = std::fs::remove_dir(parent);
    }
}

/// The conflist a node's CNI directory would hold: the stock bridge plugin
/// with host-local addresses, the bridge the pods' gateway.
pub fn conflist(subnet: u8) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "plugins": [{
            "type": "bridge",
            "bridge": BRIDGE,
            "isGateway": true,
            // Masquerading needs iptables, and the tests never leave the node.
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": format!("198.18.{subnet}.0/24")}]],
            },
        }],
    })
    .to_string()
}

fn config_toml(root: &Path) -> String {
    let root = root.display();
    format!(
        r#"version = 2
root = "{root}/root"
state = "{root}/state"
# Snapshotters that need something this machine may lack.
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{root}/containerd.sock"

[ttrpc]
  address = "{root}/containerd.sock.ttrpc"

[debug]
  address = "{root}/debug.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # CAP_SYS_RESOURCE may be withheld from the test (it is on CI's VM):
  # never lower a sandbox's oom_score_adj below the daemon's own.
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    # Plain copies: works on any filesystem the temp dir is on.
    snapshotter = "native"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{root}/net.d"
"#
    )
}

/// Runs the child in `node`'s network namespace and in a mount namespace
/// of its own where `cni_state` is mounted on /var/lib/cni, killed if the
/// thread that starts it (the test's) ends first.
fn enter_private_namespaces(command: &mut Command, node: &Netns, cni_state: &Path) {
    let netns = File::open(format!("/var/run/netns/{}", node.name)).unwrap();
    std::fs::create_dir_all(CNI_STATE).unwrap();
    let holder = CString::new(mount_point_of(Path::new(CNI_STATE))).unwrap();
    let source = CString::new(cni_state.to_str().unwrap()).unwrap();
    let target = CString::new(CNI_STATE).unwrap();
    let check = |rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    // SAFETY: only async-signal-safe system calls between fork and exec,
    // on strings and a descriptor prepared before the fork.
    unsafe {
        command.pre_exec(move || {
            check(libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET))?;
            check(libc::unshare(libc::CLONE_NEWNS))?;
            // The mount holding /var/lib/cni private in the new namespace
            // only, so the bind below stays there; every other mount keeps
            // its propagation, /var/run/netns (shared) among them.
            check(libc::mount(
                std::ptr::null(),
                holder.as_ptr(),
                std::ptr::null(),
                libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ))?;
            check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM))
        });
    }
}

/// The mount point of the mount that holds `path`: the longest mount
/// point in /proc/self/mountinfo that `path` is under.
fn mount_point_of(path: &Path) -> String {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|point| point.replace("\\040", " "))
        .filter(|point| path.starts_with(point))
        .max_by_key(|point| point.len())
        .expect("no mount holds the path")
}

/// Connects once containerd serves the CRI and its CNI config is loaded.
fn wait_for_cri(socket: &Path, root: &Path) -> Cri {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut last = String::new();
    loop {
        if socket.exists() {
            match Cri::connect(socket).and_then(|mut cri| {
                cri.version().map_err(|e| e.to_string())?;
                cri.network_ready()?;
                Ok(cri)
            }) {
                Ok(cri) => return cri,
                Err(e) => last = e,
            }
        }
        assert!(
            Instant::now() < deadline,
            "containerd never served the CRI: {last}\n{}",
            std::fs::read_to_string(root.join("containerd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Shims daemonise: their `start` exits and the shim is orphaned, to the
/// nearest subreaper or init, and init may never reap it. The test process
/// is that subreaper and reaps them itself ([`reap_shims`]).
fn become_subreaper() {
    // SAFETY: sets a flag of the calling process.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    assert_eq!(
        rc,
        0,
        "PR_SET_CHILD_SUBREAPER: {}",
        std::io::Error::last_os_error()
    );
}

/// Reaps the exited shims (and the sandbox processes they orphan when
/// killed) that were reparented to this process. With `kill_of`, the root
/// of a containerd that is gone, first ends its shims still running (found
/// by the address in their command line: other tests' containerds run in
/// this process too and keep theirs) and the pause processes orphaned to
/// this process. Never touches the test's own children, which
/// `std::process` waits for.
pub fn reap_shims(kill_of: Option<&Path>) {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let mut rest = stat[close + 1..].split_whitespace();
        let (state, ppid) = (rest.next(), rest.next().and_then(|p| p.parse::<u32>().ok()));
        if ppid != Some(me) || !(comm == "containerd-shim" || comm == "pause") {
            continue;
        }
        if state != Some("Z") {
            let ours = match kill_of {
                None => false,
                Some(_) if comm == "pause" => true,
                Some(root) => std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&*root.to_string_lossy())),
            };
            if !ours {
                continue;
            }
            // SAFETY: a process containerd started for this harness.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        // SAFETY: waits for a child of this process that std never waits for.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    }
}
