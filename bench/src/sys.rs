//! Network namespaces, the long-running processes under test, and what
//! /proc says about them. Everything created here is removed on drop, so a
//! failed or interrupted run (Ctrl-C is turned into an error) leaves no
//! namespace or process behind.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Prefix of every namespace this tool creates: `cbench-<pid>-<tag>`.
const NETNS_PREFIX: &str = "cbench-";

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// SIGINT/SIGTERM set a flag the measurement loops check, so the run
/// unwinds through the destructors below instead of dying mid-way.
pub fn install_signal_handlers() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
}

pub fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted; cleaning up");
    }
    Ok(())
}

/// Sleeps in small steps so an interrupt is noticed.
pub fn sleep_checked(duration: Duration) -> Result<()> {
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        check_interrupted()?;
        std::thread::sleep((deadline - Instant::now()).min(Duration::from_millis(100)));
    }
    Ok(())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a command to completion; its output on failure.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("starting {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Deletes namespaces left by an earlier run of this tool that was killed
/// (its pid is gone), so a SIGKILLed run does not leak thousands of veths.
pub fn remove_stale_namespaces() {
    let Ok(list) = run("ip", &["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(NETNS_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("bench: removing stale namespace {name}");
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}

/// A network namespace owned by this run; deleted on drop.
pub struct Netns {
    pub name: String,
    file: File,
}

impl Netns {
    pub fn create(tag: &str) -> Result<Netns> {
        let name = format!("{NETNS_PREFIX}{}-{tag}", std::process::id());
        run("ip", &["netns", "add", &name])?;
        let file = match File::open(format!("/var/run/netns/{name}")) {
            Ok(file) => file,
            Err(error) => {
                let _ = run("ip", &["netns", "del", &name]);
                return Err(error).context("opening the new namespace");
            }
        };
        let netns = Netns { name, file };
        // No IPv6: no router solicitations, MLD or DAD timers on thousands of
        // veths (they would add work that is not what is being measured).
        netns.exec(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])?;
        netns.exec(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"])?;
        netns.ip(&["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    pub fn exec(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["netns", "exec", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// `ip -n NAME -batch -` with `commands` on stdin: thousands of link
    /// operations in one process and one netlink socket.
    pub fn ip_batch(&self, commands: &str) -> Result<()> {
        let mut child = Command::new("ip")
            .args(["-n", &self.name, "-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting ip -batch")?;
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(commands.as_bytes())
            .context("writing ip -batch commands")?;
        let output = child.wait_with_output()?;
        if !output.status.success() {
            bail!(
                "ip -n {} -batch failed: {}",
                self.name,
                String::from_utf8_lossy(&output.stderr)
                    .lines()
                    .take(5)
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        Ok(())
    }

    /// Number of interfaces in the namespace (loopback included).
    pub fn link_count(&self) -> Result<usize> {
        Ok(self.ip(&["-o", "link", "show"])?.lines().count())
    }

    pub fn mac(&self, device: &str) -> Result<String> {
        let out = self.ip(&["-j", "link", "show", "dev", device])?;
        let links: serde_json::Value = serde_json::from_str(&out)?;
        links[0]["address"]
            .as_str()
            .map(str::to_string)
            .context("no MAC address in ip -j output")
    }

    pub fn raw_fd(&self) -> libc::c_int {
        self.file.as_raw_fd()
    }

    /// Moves the calling thread into this namespace (sockets it opens stay
    /// there). Only call on a thread spawned for that purpose.
    pub fn enter(&self) -> Result<()> {
        // SAFETY: valid fd of a netns file; affects the calling thread only.
        let rc = unsafe { libc::setns(self.file.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            bail!("setns {}: {}", self.name, std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Runs `f` on a fresh thread inside this namespace.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    self.enter()?;
                    f()
                })
                .join()
                .map_err(|_| anyhow::anyhow!("thread in {} panicked", self.name))?
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(error) = run("ip", &["netns", "del", &self.name]) {
            eprintln!("bench: warning: {error}");
        }
    }
}

/// Memory of a process from /proc/<pid>/status, in KiB.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
    /// Anonymous part of the RSS (heap, stacks); the rest is mostly the
    /// mapped binary and libraries.
    #[serde(default)]
    pub rss_anon_kib: u64,
    #[serde(default)]
    pub rss_file_kib: u64,
}

pub fn memory(pid: u32) -> Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok(Memory {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
        rss_anon_kib: field("RssAnon:")?,
        rss_file_kib: field("RssFile:")?,
    })
}

/// utime + stime of a process (all its threads), in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let (user, system) = cpu_split(pid)?;
    Ok(user + system)
}

/// utime and stime of a process (all its threads), in seconds.
pub fn cpu_split(pid: u32) -> Result<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name may contain spaces; fields follow the last ')'.
    let rest = &stat[stat.rfind(')').context("malformed stat")? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok((utime as f64 / clock_ticks(), stime as f64 / clock_ticks()))
}

pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// A long-running exporter started with `ip netns exec` (which execs it,
/// so the child pid is the exporter itself); SIGTERM, then SIGKILL, on drop.
pub struct Server {
    child: Child,
    pub label: String,
    pub pid: u32,
    pub port: u16,
}

impl Server {
    pub fn start(
        netns: &Netns,
        label: &str,
        program: &Path,
        args: &[String],
        port: u16,
        log: &Path,
    ) -> Result<Server> {
        let log_file =
            File::create(log).with_context(|| format!("creating log {}", log.display()))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &netns.name])
            .arg(program)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let pid = child.id();
        let server = Server {
            child,
            label: label.to_string(),
            pid,
            port,
        };
        server.wait_ready(netns, program, log)?;
        Ok(server)
    }

    fn wait_ready(&self, netns: &Netns, program: &Path, log: &Path) -> Result<()> {
        let port = self.port;
        let deadline = Instant::now() + Duration::from_secs(30);
        let ready = netns.run_in(|| {
            while Instant::now() < deadline {
                check_interrupted()?;
                if let Ok(response) = crate::scrape::get(port, "/metrics", Duration::from_secs(60))
                {
                    if response.status == 200 {
                        return Ok(true);
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(false)
        })?;
        if !ready {
            bail!(
                "{} did not serve /metrics on port {port} within 30 s; its log {}: {}",
                self.label,
                log.display(),
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        // The pid must be the exporter, not a wrapper, for /proc numbers.
        let exe = std::fs::read_link(format!("/proc/{}/exe", self.pid)).unwrap_or_default();
        if exe.file_name() != program.file_name() {
            bail!(
                "pid {} is {} not {}; /proc numbers would be wrong",
                self.pid,
                exe.display(),
                program.display()
            );
        }
        Ok(())
    }

    pub fn memory(&self) -> Result<Memory> {
        memory(self.pid)
    }

    pub fn cpu_seconds(&self) -> Result<f64> {
        cpu_seconds(self.pid)
    }

    /// utime and stime, in seconds.
    pub fn cpu_split(&self) -> Result<(f64, f64)> {
        cpu_split(self.pid)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Short description of the machine for the report.
pub fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    serde_json::json!({
        "cpu": cpu,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "kernel": kernel,
        "memory_gib": (memory_kib as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
    })
}

/// 1-minute load average, to show how busy the machine was around a phase.
pub fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// First line a program prints for `flag` (its version), best effort.
pub fn version_of(program: &Path, flag: &str) -> String {
    Command::new(program)
        .arg(flag)
        .output()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|path| path.is_file())
    })
}
