//! podman as the image test drives it, and the container it runs.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::common::*;
use super::pod_run::PodRun;
use super::{env, IMAGE_ENV, PODMAN_ENV};

/// podman's global flags from `cargo xtask test` (one per line).
pub fn podman_flags() -> Vec<String> {
    env(PODMAN_ENV)
        .split('\n')
        .filter(|a| !a.is_empty())
        .map(String::from)
        .collect()
}

pub fn podman() -> Command {
    let mut command = Command::new("podman");
    command.args(podman_flags());
    command
}

pub fn podman_output(args: &[&str]) -> Output {
    podman()
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("starting podman {args:?}: {e}"))
}

/// A running container; removed (with force) when dropped.
pub struct Container {
    name: String,
}

impl Container {
    /// `podman run -d` from a mount namespace of its own with tracefs
    /// mounted where the DaemonSet's volume expects it, joined to `node`'s
    /// network namespace.
    pub fn start(node: &Netns, run: &PodRun, seccomp: &Path, tag: &str) -> Container {
        let name = format!("netif-image-test-{}-{tag}", std::process::id());
        let mut podman_run = vec!["podman".to_string()];
        podman_run.extend(podman_flags());
        podman_run.extend(["run", "-d", "--name", &name].map(String::from));
        podman_run.extend(run.flags.iter().cloned());
        // Not the DaemonSet's: podman's default rlimits need
        // CAP_SYS_RESOURCE, which root in this VM lacks (a kubelet leaves
        // the runtime's own, which these match in spirit).
        podman_run.extend(
            [
                "--ulimit",
                "nofile=4096:4096",
                "--ulimit",
                "nproc=4096:4096",
            ]
            .map(String::from),
        );
        podman_run.push("--security-opt".into());
        podman_run.push(format!("seccomp={}", seccomp.display()));
        podman_run.push(env(IMAGE_ENV));
        podman_run.extend(run.args.iter().cloned());
        // Slave, not private: a HostToContainer (rslave) mount needs a
        // source that receives propagation, and the tracefs mount made
        // here still never reaches the host's namespace.
        let script =
            "mount -t tracefs tracefs /sys/kernel/tracing && exec nsenter --net=\"$NETNS\" \"$@\"";
        let output = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "slave",
                "--",
                "sh",
                "-c",
                script,
                "sh",
            ])
            .args(&podman_run)
            .env("NETNS", format!("/var/run/netns/{}", node.name))
            .output()
            .expect("starting unshare");
        assert!(
            output.status.success(),
            "podman run failed: {}",
            text(&output)
        );
        Container { name }
    }

    pub fn pid(&self) -> u32 {
        let output = podman_output(&["inspect", "--format", "{{.State.Pid}}", &self.name]);
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .expect("container pid")
    }

    pub fn logs(&self) -> String {
        text(&podman_output(&["logs", &self.name]))
    }

    /// `podman exec` from the node's network namespace: with
    /// `hostNetwork` the container has no namespace of its own to join, so
    /// the exec'd process keeps its caller's, as `kubectl exec` on a node
    /// gets the host's.
    pub fn exec(&self, node: &Netns, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", node.name))
            .arg("podman")
            .args(podman_flags())
            .args(["exec", self.name.as_str()])
            .args(args)
            .output()
            .expect("starting nsenter podman exec")
    }

    pub fn wait_ready(&self, node: &Netns, run: &PodRun) {
        let deadline = Instant::now() + start_timeout() * 3;
        while http(node, run.probe_port, "GET", &run.readiness).map(|(s, _)| s) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "container {} not ready on {} after {:?}; logs:\n{}",
                self.name,
                run.readiness,
                start_timeout() * 3,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let live = http(node, run.probe_port, "GET", &run.liveness).map(|(s, _)| s);
        assert_eq!(live, Some(200), "liveness {}", run.liveness);
    }

    pub fn scrape(&self, node: &Netns, run: &PodRun) -> Metrics {
        let (status, body) = http(node, run.port, "GET", "/metrics").expect("scrape answered");
        assert_eq!(status, 200, "{body}");
        Metrics::parse(&body)
    }

    /// `podman stop` with the grace period (SIGTERM, then SIGKILL), as the
    /// kubelet stops a pod; returns how long it took and the logs.
    pub fn stop(&self, run: &PodRun) -> (Duration, String) {
        let started = Instant::now();
        let grace = run.grace.as_secs().to_string();
        let output = podman_output(&["stop", "--time", &grace, &self.name]);
        let took = started.elapsed();
        assert!(output.status.success(), "podman stop: {}", text(&output));
        let code = podman_output(&["inspect", "--format", "{{.State.ExitCode}}", &self.name]);
        let code = String::from_utf8_lossy(&code.stdout).trim().to_string();
        let logs = self.logs();
        assert_eq!(code, "0", "exit code after SIGTERM; logs:\n{logs}");
        (took, logs)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman()
            .args(["rm", "--force", "--time", "0", &self.name])
            .output();
    }
}
