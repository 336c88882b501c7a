//! Shared harness of the privileged integration tests: network namespaces
//! and veth pairs the test creates (and removes on drop, also when a test
//! panics), the collector binary started inside a namespace, and a parser
//! for what it serves. Traffic only ever uses 198.18.0.0/15 inside those
//! namespaces.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const COLLECTOR: &str = env!("CARGO_BIN_EXE_collector");

/// Fails loudly: these tests are part of CI and must never pass by skipping.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(uid, 0, "PRIVILEGED TEST CANNOT RUN: needs root for BPF and network namespaces (run `cargo xtask test` as root)");
    println!("privileged test running as root: BPF and netns available");
}

pub fn run(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("starting {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

static NEXT_NETNS: AtomicU32 = AtomicU32::new(0);

/// A network namespace owned by the test; deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!(
            "ct-{tag}-{}-{}",
            std::process::id(),
            NEXT_NETNS.fetch_add(1, Ordering::Relaxed)
        );
        Netns::named(name)
    }

    /// A namespace under exactly `name` in /var/run/netns.
    pub fn named(name: String) -> Netns {
        run("ip", &["netns", "add", &name]);
        let netns = Netns { name };
        // No IPv6: router solicitations and MLD reports would add packets the
        // tests do not send.
        netns.exec(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
        netns.exec(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
        netns.ip(&["link", "set", "lo", "up"]);
        netns
    }

    pub fn ip(&self, args: &[&str]) -> Output {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    pub fn exec(&self, args: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Moves the calling thread into this namespace (for threads the test
    /// spawns itself and never returns to the host namespace).
    pub fn enter_this_thread(&self) {
        enter_netns(&self.name);
    }

    /// Runs `f` on a thread that has entered this namespace. Sockets created
    /// there stay in this namespace wherever they are used afterwards.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    enter_netns(&self.name);
                    f()
                })
                .join()
                .expect("thread in netns panicked")
        })
    }

    /// `ip -s -s -j link` of this namespace, by interface name.
    pub fn ip_links(&self) -> BTreeMap<String, serde_json::Value> {
        let output = self.ip(&["-s", "-s", "-j", "link", "show"]);
        let links: Vec<serde_json::Value> =
            serde_json::from_slice(&output.stdout).expect("ip -j output is JSON");
        links
            .into_iter()
            .map(|l| (l["ifname"].as_str().unwrap().to_string(), l))
            .collect()
    }

    pub fn mac(&self, interface: &str) -> String {
        self.ip_links()[interface]["address"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

pub fn enter_netns(name: &str) {
    let path = format!("/var/run/netns/{name}");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // SAFETY: valid fd of a netns file; affects the calling thread only.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

/// `program` (a `Command` that will run the collector, directly or
/// through `ip netns exec` and wrappers) without any `COLLECTOR_*`
/// variable of the test's own environment, so a developer's shell or
/// another test cannot configure the collector behind the test's back;
/// what a test wants it passes explicitly.
pub fn collector_command(program: &str) -> Command {
    let mut command = Command::new(program);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("COLLECTOR_") {
            command.env_remove(key);
        }
    }
    command
}

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
    /// perf_event fds: before 5.15 a tracepoint program is attached through
    /// a perf event (PERF_EVENT_IOC_SET_BPF), not a bpf_link, and the event
    /// has no id to look up; closing it detaches the program.
    pub perf_events: usize,
}

impl BpfHeld {
    pub fn of(pid: u32) -> BpfHeld {
        let mut program_ids = Vec::new();
        let mut links = std::collections::BTreeSet::new();
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

/// Resident set size of a process in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A veth pair between two namespaces, addressed from 198.18.<subnet>.0/24
/// with permanent neighbour entries, so no ARP adds packets.
pub struct VethPair {
    pub a: String,
    pub b: String,
    pub a_addr: String,
    pub b_addr: String,
}

impl VethPair {
    pub fn new(ns_a: &Netns, a: &str, ns_b: &Netns, b: &str, subnet: u8) -> VethPair {
        ns_a.ip(&[
            "link", "add", a, "type", "veth", "peer", "name", b, "netns", &ns_b.name,
        ]);
        let a_addr = format!("198.18.{subnet}.1");
        let b_addr = format!("198.18.{subnet}.2");
        ns_a.ip(&["addr", "add", &format!("{a_addr}/24"), "dev", a]);
        ns_b.ip(&["addr", "add", &format!("{b_addr}/24"), "dev", b]);
        ns_a.ip(&["link", "set", a, "up"]);
        ns_b.ip(&["link", "set", b, "up"]);
        let (mac_a, mac_b) = (ns_a.mac(a), ns_b.mac(b));
        ns_a.ip(&[
            "neigh",
            "replace",
            &b_addr,
            "lladdr",
            &mac_b,
            "dev",
            a,
            "nud",
            "permanent",
        ]);
        ns_b.ip(&[
            "neigh",
            "replace",
            &a_addr,
            "lladdr",
            &mac_a,
            "dev",
            b,
            "nud",
            "permanent",
        ]);
        VethPair {
            a: a.into(),
            b: b.into(),
            a_addr,
            b_addr,
        }
    }
}

/// Sends `count` UDP datagrams of `payload` bytes from inside `ns`.
pub fn send_udp(ns: &Netns, destination: &str, count: usize, payload: usize) {
    let destination = destination.to_string();
    ns.run_in(move || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        let data = vec![0x5au8; payload];
        for _ in 0..count {
            socket.send_to(&data, &destination).unwrap();
        }
    });
}

/// A UDP socket bound inside `ns`; counts what arrives.
pub fn udp_listener(ns: &Netns, address: &str) -> UdpSocket {
    let address = address.to_string();
    let socket = ns.run_in(move || UdpSocket::bind(&address).unwrap());
    // Room for every datagram a test sends before it reads (root may force
    // past rmem_max), so counts never depend on the reader keeping up.
    let bytes: libc::c_int = 16 << 20;
    // SAFETY: valid socket fd, option value of the declared size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &bytes as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    socket
}

pub fn receive_all(socket: &UdpSocket, expected: usize) -> usize {
    let mut buffer = [0u8; 65536];
    let mut received = 0;
    while received < expected && socket.recv(&mut buffer).is_ok() {
        received += 1;
    }
    received
}

/// The collector binary running inside a namespace; stopped on drop.
pub struct CollectorProcess {
    child: Child,
    pub ns_name: String,
    pub port: u16,
}

impl CollectorProcess {
    pub fn start(ns: &Netns, args: &[&str]) -> CollectorProcess {
        Self::start_wrapped(ns, &[], &[], args)
    }

    /// Starts the collector with `env` set on its process only: tests run
    /// in parallel threads, and a variable set on the test process would
    /// reach every collector another test starts meanwhile.
    pub fn start_with_env(ns: &Netns, env: &[(&str, &str)], args: &[&str]) -> CollectorProcess {
        Self::start_wrapped(ns, &[], env, args)
    }

    /// Starts the collector under `wrapper` (e.g. `setpriv ...`), which
    /// must exec it so the child pid stays the collector's.
    pub fn start_wrapped(
        ns: &Netns,
        wrapper: &[&str],
        env: &[(&str, &str)],
        args: &[&str],
    ) -> CollectorProcess {
        let process = Self::spawn(ns, wrapper, env, args);
        process.wait_ready(ns);
        process
    }

    /// Starts the collector without waiting for /readyz (for tests where
    /// no collection can succeed); waits until it answers /healthz at all.
    pub fn start_unready(ns: &Netns, args: &[&str]) -> CollectorProcess {
        let process = Self::spawn(ns, &[], &[], args);
        let deadline = Instant::now() + start_timeout();
        while http(ns, process.port, "GET", "/healthz").is_none() {
            assert!(Instant::now() < deadline, "collector never answered");
            std::thread::sleep(Duration::from_millis(50));
        }
        process
    }

    fn spawn(
        ns: &Netns,
        wrapper: &[&str],
        env: &[(&str, &str)],
        args: &[&str],
    ) -> CollectorProcess {
        let port = 2112;
        let listen = format!("127.0.0.1:{port}");
        let mut full = vec!["netns", "exec", ns.name.as_str()];
        full.extend_from_slice(wrapper);
        full.extend_from_slice(&[COLLECTOR, "--listen", &listen, "--node-name", "test-node"]);
        full.extend_from_slice(args);
        let child = collector_command("ip")
            .args(&full)
            .env("RUST_LOG", "info")
            // Tests count rx/tx too; the default is drops only (the CLI unit
            // test pins it), and a test's own --ebpf-probes overrides this.
            .env("COLLECTOR_EBPF_PROBES", "rx,tx,drops")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting collector");
        CollectorProcess {
            child,
            ns_name: ns.name.clone(),
            port,
        }
    }

    fn wait_ready(&self, ns: &Netns) {
        wait_for_http_ok(ns, self.port, "/readyz", || {
            format!("collector in {} never became ready", self.ns_name)
        });
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn scrape(&self, ns: &Netns) -> Metrics {
        let (status, body) = http(ns, self.port, "GET", "/metrics").expect("scrape failed");
        assert_eq!(status, 200, "{body}");
        Metrics::parse(&body)
    }

    pub fn scrape_text(&self, ns: &Netns) -> String {
        http(ns, self.port, "GET", "/metrics")
            .expect("scrape failed")
            .1
    }

    /// SIGTERM, then the collector's stderr once it exited.
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        self.terminate()
    }

    fn terminate(&mut self) -> (std::process::ExitStatus, String) {
        // `ip netns exec` execs the collector, so the child pid is the collector.
        let status = stop_child(&mut self.child);
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        (status, stderr)
    }
}

/// SIGTERM, then SIGKILL if the process is still there after 5 s; its status.
pub fn stop_child(child: &mut Child) -> std::process::ExitStatus {
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = child.try_wait().expect("waiting for a child") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for CollectorProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.terminate();
        }
    }
}

/// How long a collector may take to answer after start: 20 s, or
/// `TEST_START_TIMEOUT_SECS` where the machine is known to be slow
/// (`cargo xtask kernels` runs the tests under software emulation, where
/// parsing the kernel's BTF alone takes seconds).
pub fn start_timeout() -> Duration {
    let seconds = std::env::var("TEST_START_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    Duration::from_secs(seconds)
}

/// Polls `path` inside `ns` until it answers 200; panics with `failure()`
/// after [`start_timeout`].
pub fn wait_for_http_ok(ns: &Netns, port: u16, path: &str, failure: impl Fn() -> String) {
    let deadline = Instant::now() + start_timeout();
    while http(ns, port, "GET", path).map(|(status, _)| status) != Some(200) {
        assert!(Instant::now() < deadline, "{}", failure());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Minimal HTTP/1.0 request from inside `ns`; (status, body).
pub fn http(ns: &Netns, port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    let request = format!("{method} {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    ns.run_in(move || {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        stream.write_all(request.as_bytes()).ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let status = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Some((status, body))
    })
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parsed text exposition (enough of it for label values without escapes).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub samples: Vec<Sample>,
    pub types: BTreeMap<String, String>,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut metrics = Metrics::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                metrics.types.insert(name.to_string(), kind.to_string());
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|p| !p.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap();
                    (k.to_string(), v.trim_matches('"').to_string())
                })
                .collect();
            metrics.samples.push(Sample {
                name: name.to_string(),
                labels,
                value: value.parse().unwrap(),
            });
        }
        metrics
    }

    /// Samples of `name` whose labels include every pair in `selector`.
    pub fn select<'a>(
        &'a self,
        name: &'a str,
        selector: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && selector
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The single value of `name{selector}`; 0 when absent (a counter not yet seen).
    pub fn value(&self, name: &str, selector: &[(&str, &str)]) -> f64 {
        let matches: Vec<_> = self.select(name, selector).collect();
        assert!(
            matches.len() <= 1,
            "{name}{selector:?} matches {} series",
            matches.len()
        );
        matches.first().map_or(0.0, |s| s.value)
    }

    pub fn interfaces(&self) -> std::collections::BTreeSet<String> {
        self.select("network_interface_stats_mtu", &[])
            .map(|s| s.labels["interface"].clone())
            .collect()
    }
}

/// `ip -n NS -batch -` with `commands` on stdin (thousands of links in one process).
pub fn ip_batch(ns: &Netns, commands: &str) {
    let mut child = Command::new("ip")
        .args(["-n", &ns.name, "-batch", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("starting ip -batch");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(commands.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "ip -batch failed");
}

// ---------------------------------------------------------------- CNI pods

/// A pod as containerd and a CNI plugin leave it on a node: a network
/// namespace named as CNI names them (`cni-<uuid>` in /var/run/netns), a
/// veth pair with the host side in `node` and `eth0` (or Multus' `net1`) in
/// the pod, and one libcni result cache file per attachment in a results
/// directory, written as libcni writes them. Torn down on drop: cache files
/// first, then the namespace (which takes its veths with it).
pub struct CniPod {
    pub netns: Netns,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub container_id: String,
    /// The node-side address of the first attachment (198.18.<subnet>.1).
    pub host_address: String,
    /// (host veth, pod-side ifName, cache file) per attachment.
    pub attachments: Vec<(String, String, std::path::PathBuf)>,
}

/// Unique per test process and call: netns names, UIDs, container ids.
fn unique_hex(width: usize) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let counter = NEXT_NETNS.fetch_add(1, Ordering::Relaxed);
    let text = format!("{:08x}{:08x}{:08x}", std::process::id(), counter, nanos);
    text.chars().cycle().take(width).collect()
}

impl CniPod {
    /// A pod with one attachment: `host_veth` in `node`, `eth0` inside,
    /// addressed from 198.18.`subnet`.0/24, cached under `network`.
    pub fn start(
        node: &Netns,
        results: &std::path::Path,
        (namespace, name): (&str, &str),
        network: &str,
        host_veth: &str,
        subnet: u8,
    ) -> CniPod {
        let uuid = unique_hex(32);
        let netns = Netns::named(format!(
            "cni-{}-{}-{}-{}-{}",
            &uuid[..8],
            &uuid[8..12],
            &uuid[12..16],
            &uuid[16..20],
            &uuid[20..32]
        ));
        let mut pod = CniPod {
            netns,
            namespace: namespace.into(),
            name: name.into(),
            uid: format!("{}-7e0b-4b3a-9d1e-{}", unique_hex(8), unique_hex(12)),
            container_id: unique_hex(64),
            host_address: String::new(),
            attachments: Vec::new(),
        };
        pod.host_address = pod
            .attach(node, results, network, "eth0", host_veth, subnet)
            .a_addr;
        pod
    }

    /// One more attachment (a Multus delegate): another veth into the
    /// same namespace and its own cache file.
    pub fn attach(
        &mut self,
        node: &Netns,
        results: &std::path::Path,
        network: &str,
        if_name: &str,
        host_veth: &str,
        subnet: u8,
    ) -> VethPair {
        let pair = VethPair::new(node, host_veth, &self.netns, if_name, subnet);
        let file = results.join(format!("{network}-{}-{if_name}", self.container_id));
        let body = self.cache_json(network, if_name, Some(host_veth), Some(&pair.b_addr));
        write_like_libcni(&file, body.as_bytes());
        self.attachments
            .push((host_veth.to_string(), if_name.to_string(), file));
        pair
    }

    pub fn netns_path(&self) -> String {
        format!("/var/run/netns/{}", self.netns.name)
    }

    /// The cache file libcni's `cacheAdd` writes: `cachedInfo` marshalled
    /// by encoding/json (struct fields in order, `config` as base64, the
    /// result a map with sorted keys). `host_veth`: the host-side interface
    /// the plugin lists in its result, as the bridge, ptp and Azure plugins
    /// do; `None` for plugins that list only the pod side.
    pub fn cache_json(
        &self,
        network: &str,
        if_name: &str,
        host_veth: Option<&str>,
        address: Option<&str>,
    ) -> String {
        let config = format!(
            r#"{{"cniVersion":"1.0.0","name":"{network}","plugins":[{{"type":"{network}"}}]}}"#
        );
        let netns = self.netns_path();
        let mut interfaces = Vec::new();
        if let Some(host) = host_veth {
            interfaces.push(serde_json::json!({"mac": "aa:aa:aa:aa:aa:aa", "name": host}));
        }
        interfaces.push(
            serde_json::json!({"mac": "12:34:56:78:9a:bc", "name": if_name, "sandbox": netns}),
        );
        let ips: Vec<serde_json::Value> = address
            .map(|a| serde_json::json!({"address": format!("{a}/24"), "interface": interfaces.len() - 1}))
            .into_iter()
            .collect();
        let result = serde_json::json!({"cniVersion": "1.0.0", "dns": {}, "interfaces": interfaces, "ips": ips});
        let cni_args = serde_json::json!([
            ["K8S_POD_NAMESPACE", self.namespace],
            ["K8S_POD_NAME", self.name],
            ["K8S_POD_INFRA_CONTAINER_ID", self.container_id],
            ["K8S_POD_UID", self.uid],
            ["IgnoreUnknown", "1"],
        ]);
        format!(
            r#"{{"kind":"cniCacheV1","containerId":"{}","config":"{}","ifName":"{if_name}","networkName":"{network}","netns":"{netns}","cniArgs":{cni_args},"result":{result}}}"#,
            self.container_id,
            base64(config.as_bytes()),
        )
    }

    /// The host veth of the first attachment.
    pub fn veth(&self) -> &str {
        &self.attachments[0].0
    }
}

impl Drop for CniPod {
    fn drop(&mut self) {
        for (_, _, file) in &self.attachments {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// `os.WriteFile(name, data, 0o600)` into a directory made 0700, as libcni.
pub fn write_like_libcni(file: &std::path::Path, data: &[u8]) {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = file.parent().unwrap();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(file)
        .and_then(|mut f| f.write_all(data))
        .unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
}

/// Standard base64 with padding (encoding/json's []byte encoding).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
