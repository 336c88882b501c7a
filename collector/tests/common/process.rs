//! The collector binary started inside a namespace, stopped on drop, and
//! the HTTP requests a test sends it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

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

/// Resident set size of a process in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The collector binary running inside a namespace; stopped on drop.
pub struct CollectorProcess {
    child: Child,
    pub ns_name: String,
    pub port: u16,
    /// The health listener's port (`--health-listen`).
    pub health_port: u16,
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
        while http(ns, process.health_port, "GET", "/healthz").is_none() {
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
        let (port, health_port) = (2112, 2113);
        let listen = format!("127.0.0.1:{port}");
        let health = format!("127.0.0.1:{health_port}");
        let mut full = vec!["netns", "exec", ns.name.as_str()];
        full.extend_from_slice(wrapper);
        full.extend_from_slice(&[
            COLLECTOR,
            "--listen",
            &listen,
            "--health-listen",
            &health,
            "--node-name",
            "test-node",
        ]);
        full.extend_from_slice(args);
        let child = collector_command("ip")
            .args(&full)
            .env("RUST_LOG", "info")
            // Tests count rx/tx too; the default is drops and tcp (the CLI unit
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
            health_port,
        }
    }

    /// Ready as the kubelet sees it: on the health listener, which is
    /// plain HTTP whatever the main listener serves.
    fn wait_ready(&self, ns: &Netns) {
        wait_for_http_ok(ns, self.health_port, "/readyz", || {
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
