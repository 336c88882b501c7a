//! The image, run the way the DaemonSet runs it.
//!
//! `cargo xtask test` builds the image (the Dockerfile's run stage around a
//! static release build, `xtask/src/image.rs`) and hands it over in
//! `NETIF_TEST_IMAGE`, with podman's storage flags in
//! `NETIF_TEST_PODMAN_ARGS` and Debian's copy of moby's seccomp profile in
//! `NETIF_TEST_MOBY_PROFILE`. The container gets exactly what the rendered
//! DaemonSet (`manifests/overlays/azure`, what AKS users apply) asks of a
//! runtime: security context, host namespaces, env (with the ConfigMap
//! behind `envFrom`), host-path mounts and their propagation, args, limits,
//! grace period. [`PodRun::from_daemonset`] refuses any pod field it does
//! not know how to give, so the manifest cannot grow a setting this test
//! silently leaves out.
//!
//! The node is a network namespace of the test's (the container joins it as
//! its "host" network), with tracefs mounted in a mount namespace of the
//! test's, as on a node where the kubelet's host has it mounted.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const IMAGE_ENV: &str = "NETIF_TEST_IMAGE";
const PODMAN_ENV: &str = "NETIF_TEST_PODMAN_ARGS";
const MOBY_PROFILE_ENV: &str = "NETIF_TEST_MOBY_PROFILE";
/// The node name the kubelet would put in `spec.nodeName`.
const NODE_NAME: &str = "aks-nodepool1-00000000-vmss000000";
const DATAGRAMS: usize = 100;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "IMAGE TEST CANNOT RUN: {name} is not set. `cargo xtask test` builds the image and sets it \
             (podman, a static release build); run the tests through it."
        )
    })
}

/// podman's global flags from `cargo xtask test` (one per line).
fn podman_flags() -> Vec<String> {
    env(PODMAN_ENV)
        .split('\n')
        .filter(|a| !a.is_empty())
        .map(String::from)
        .collect()
}

fn podman() -> Command {
    let mut command = Command::new("podman");
    command.args(podman_flags());
    command
}

fn podman_output(args: &[&str]) -> Output {
    podman()
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("starting podman {args:?}: {e}"))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests")
}

/// `render.py overlays/azure --json`.
fn rendered() -> Vec<Value> {
    let output = run(
        "python3",
        &[
            manifests().join("render.py").to_str().unwrap(),
            manifests().join("overlays/azure").to_str().unwrap(),
            "--json",
        ],
    );
    serde_json::from_slice(&output.stdout).expect("render.py --json prints a JSON array")
}

/// What the DaemonSet's pod asks of the container runtime, as podman flags.
#[derive(Debug)]
struct PodRun {
    flags: Vec<String>,
    args: Vec<String>,
    /// `seccompProfile.type`.
    seccomp: String,
    grace: Duration,
    port: u16,
    /// The port the kubelet's probes use (the health listener's).
    probe_port: u16,
    readiness: String,
    liveness: String,
    /// hostPath volumes of `type: Directory` (must exist) and without a type
    /// (created by the runtime when missing, as containerd does).
    host_dirs: Vec<(PathBuf, bool)>,
}

fn keys_known(object: &Value, what: &str, known: &[&str]) {
    if let Some(map) = object.as_object() {
        for key in map.keys() {
            assert!(
                known.contains(&key.as_str()),
                "the DaemonSet's {what} has `{key}`, which the image test does not know how to give the \
                 container: teach PodRun::from_daemonset about it"
            );
        }
    }
}

fn string(value: &Value, what: &str) -> String {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value}"))
        .to_string()
}

impl PodRun {
    fn from_daemonset(objects: &[Value]) -> PodRun {
        let daemonsets: Vec<&Value> = objects
            .iter()
            .filter(|o| o["kind"] == "DaemonSet")
            .collect();
        assert_eq!(
            daemonsets.len(),
            1,
            "one DaemonSet in the rendered manifests"
        );
        let pod = &daemonsets[0]["spec"]["template"]["spec"];
        // Scheduling and API-server settings are not the runtime's concern.
        keys_known(
            pod,
            "pod spec",
            &[
                "serviceAccountName",
                "automountServiceAccountToken",
                "enableServiceLinks",
                "hostNetwork",
                "dnsPolicy",
                "hostPID",
                "hostIPC",
                "terminationGracePeriodSeconds",
                "nodeSelector",
                "securityContext",
                "tolerations",
                "containers",
                "volumes",
                "priorityClassName",
            ],
        );
        let containers = pod["containers"].as_array().expect("containers");
        assert_eq!(containers.len(), 1, "one container");
        let container = &containers[0];
        keys_known(
            container,
            "container",
            &[
                "name",
                "image",
                "imagePullPolicy",
                "args",
                "env",
                "envFrom",
                "ports",
                "livenessProbe",
                "readinessProbe",
                "resources",
                "securityContext",
                "volumeMounts",
            ],
        );
        let mut flags: Vec<String> = Vec::new();
        // `--flag value`, or a switch when the value is empty.
        let mut flag = |f: &str, v: String| {
            flags.push(f.to_string());
            if !v.is_empty() {
                flags.push(v);
            }
        };
        if pod["hostNetwork"] == true {
            flag("--network", "host".into());
        }
        if pod["hostPID"] == true {
            flag("--pid", "host".into());
        }
        if pod["hostIPC"] == true {
            flag("--ipc", "host".into());
        }

        // Security context: the container's wins over the pod's, field by field.
        let pod_security = &pod["securityContext"];
        let security = &container["securityContext"];
        keys_known(
            pod_security,
            "pod securityContext",
            &["runAsUser", "runAsGroup", "runAsNonRoot", "seccompProfile"],
        );
        keys_known(
            security,
            "container securityContext",
            &[
                "privileged",
                "allowPrivilegeEscalation",
                "readOnlyRootFilesystem",
                "runAsUser",
                "runAsGroup",
                "runAsNonRoot",
                "capabilities",
                "seccompProfile",
            ],
        );
        let field = |name: &str| {
            let own = &security[name];
            if own.is_null() {
                pod_security[name].clone()
            } else {
                own.clone()
            }
        };
        assert_ne!(
            field("privileged"),
            true,
            "a privileged pod would not test anything"
        );
        let user = field("runAsUser").as_u64().unwrap_or(0);
        let group = field("runAsGroup").as_u64().unwrap_or(user);
        flag("--user", format!("{user}:{group}"));
        if field("allowPrivilegeEscalation") == false {
            flag("--security-opt", "no-new-privileges".into());
        }
        if field("readOnlyRootFilesystem") == true {
            flag("--read-only", String::new());
        }
        let capabilities = &security["capabilities"];
        keys_known(capabilities, "capabilities", &["drop", "add"]);
        for (key, podman_flag) in [("drop", "--cap-drop"), ("add", "--cap-add")] {
            for cap in capabilities[key].as_array().into_iter().flatten() {
                flag(podman_flag, string(cap, "a capability"));
            }
        }
        let seccomp = string(&field("seccompProfile")["type"], "seccompProfile.type");

        // Environment: env (values and the downward API), then envFrom's
        // ConfigMaps from the same rendering, as the kubelet resolves them.
        let configmap = |name: &str| -> BTreeMap<String, String> {
            let found = objects
                .iter()
                .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == name)
                .unwrap_or_else(|| panic!("envFrom names ConfigMap {name}, which is not rendered"));
            found["data"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), string(v, "ConfigMap data")))
                .collect()
        };
        for source in container["envFrom"].as_array().into_iter().flatten() {
            keys_known(source, "envFrom entry", &["configMapRef"]);
            let name = string(&source["configMapRef"]["name"], "configMapRef.name");
            for (key, value) in configmap(&name) {
                flag("--env", format!("{key}={value}"));
            }
        }
        for variable in container["env"].as_array().into_iter().flatten() {
            let name = string(&variable["name"], "env name");
            let value = if let Some(value) = variable["value"].as_str() {
                value.to_string()
            } else {
                let path = string(&variable["valueFrom"]["fieldRef"]["fieldPath"], "fieldRef");
                match path.as_str() {
                    "spec.nodeName" => NODE_NAME.to_string(),
                    other => {
                        panic!("env {name} comes from {other}, which the image test cannot give")
                    }
                }
            };
            flag("--env", format!("{name}={value}"));
        }

        // Host paths, read-only where the mount says so, with propagation.
        let volumes: BTreeMap<String, &Value> = pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| (string(&v["name"], "volume name"), v))
            .collect();
        let mut host_dirs = Vec::new();
        for mount in container["volumeMounts"].as_array().into_iter().flatten() {
            keys_known(
                mount,
                "volumeMount",
                &["name", "mountPath", "readOnly", "mountPropagation"],
            );
            let name = string(&mount["name"], "volumeMount name");
            let volume = volumes[&name];
            keys_known(volume, "volume", &["name", "hostPath"]);
            let host = PathBuf::from(string(&volume["hostPath"]["path"], "hostPath.path"));
            let must_exist = match volume["hostPath"]["type"].as_str() {
                Some("Directory") => true,
                None | Some("") => false,
                Some(other) => panic!("hostPath type {other} is not known to the image test"),
            };
            host_dirs.push((host.clone(), must_exist));
            let mut options = vec![];
            if mount["readOnly"] == true {
                options.push("ro");
            }
            match mount["mountPropagation"].as_str() {
                None | Some("None") => {}
                Some("HostToContainer") => options.push("rslave"),
                Some(other) => panic!("mountPropagation {other} is not known to the image test"),
            }
            let mut spec = format!(
                "{}:{}",
                host.display(),
                string(&mount["mountPath"], "mountPath")
            );
            if !options.is_empty() {
                spec = format!("{spec}:{}", options.join(","));
            }
            flag("--volume", spec);
        }

        let limits = &container["resources"]["limits"];
        if let Some(memory) = limits["memory"].as_str() {
            let mebibytes = memory.strip_suffix("Mi").expect("memory limit in Mi");
            flag("--memory", format!("{mebibytes}m"));
        }
        if let Some(cpu) = limits["cpu"].as_str() {
            let millis: f64 = cpu
                .strip_suffix('m')
                .expect("cpu limit in m")
                .parse()
                .unwrap();
            flag("--cpus", format!("{}", millis / 1000.0));
        }

        let ports = container["ports"].as_array().expect("ports");
        let port_named = |name: &Value| {
            ports
                .iter()
                .find(|p| &p["name"] == name)
                .unwrap_or_else(|| panic!("no container port named {name}"))["containerPort"]
                .as_u64()
                .expect("containerPort") as u16
        };
        let port = port_named(&"metrics".into());
        let probe_port = port_named(&container["livenessProbe"]["httpGet"]["port"]);
        let probe_path = |probe: &str| {
            let get = &container[probe]["httpGet"];
            assert_eq!(
                port_named(&get["port"]),
                probe_port,
                "both probes use the health port"
            );
            assert_ne!(probe_port, port, "{probe} is not on the metrics port");
            string(&get["path"], "probe path")
        };
        PodRun {
            flags,
            args: container["args"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| string(a, "arg"))
                .collect(),
            seccomp,
            grace: Duration::from_secs(pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30)),
            port,
            probe_port,
            readiness: probe_path("readinessProbe"),
            liveness: probe_path("livenessProbe"),
            host_dirs,
        }
    }
}

/// Seccomp profiles of the runtimes the DaemonSet may meet, as files.
enum Profile {
    /// containerd >= 1.7 and Docker >= 23: moby's profile with `bpf` allowed
    /// with CAP_BPF and `perf_event_open` with CAP_PERFMON.
    RuntimeDefault,
    /// Docker 20.10's profile as Debian 12 ships it: both only with
    /// CAP_SYS_ADMIN.
    Docker2010,
    /// Debian 12's containers-common 0.50 (podman's and CRI-O's default):
    /// both only with CAP_SYS_ADMIN, and EPERM explicitly otherwise.
    ContainersCommon,
}

fn rules_allowing<'a>(profile: &'a Value, syscall: &str) -> Vec<&'a Value> {
    profile["syscalls"]
        .as_array()
        .expect("profile has syscalls")
        .iter()
        .filter(|r| r["action"] == "SCMP_ACT_ALLOW")
        .filter(|r| r["names"].as_array().unwrap().iter().any(|n| n == syscall))
        .collect()
}

fn allowed_with(profile: &Value, syscall: &str, capability: &str) -> bool {
    rules_allowing(profile, syscall).iter().any(|r| {
        r["includes"]["caps"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c == capability))
    })
}

impl Profile {
    /// The profile file (kept in `dir`) for `--security-opt seccomp=`.
    fn file(&self, dir: &Path) -> PathBuf {
        match self {
            Profile::ContainersCommon => {
                let path = PathBuf::from("/usr/share/containers/seccomp.json");
                let profile: Value = serde_json::from_slice(
                    &std::fs::read(&path).expect("containers-common's profile"),
                )
                .unwrap();
                assert!(
                    !allowed_with(&profile, "bpf", "CAP_BPF"),
                    "{}: bpf allowed with CAP_BPF now",
                    path.display()
                );
                path
            }
            Profile::Docker2010 | Profile::RuntimeDefault => {
                let moby = PathBuf::from(env(MOBY_PROFILE_ENV));
                let mut profile: Value =
                    serde_json::from_slice(&std::fs::read(&moby).expect("moby's profile")).unwrap();
                // The premise of both cases: 20.10 allows neither with the
                // new capabilities, only with CAP_SYS_ADMIN.
                for syscall in ["bpf", "perf_event_open"] {
                    assert!(allowed_with(&profile, syscall, "CAP_SYS_ADMIN"));
                    assert!(!allowed_with(&profile, syscall, "CAP_BPF"));
                    assert!(!allowed_with(&profile, syscall, "CAP_PERFMON"));
                }
                if let Profile::Docker2010 = self {
                    return moby;
                }
                // The two rules moby's profiles/seccomp/default.json gained
                // in 23.0 (moby PR 43987; containerd's generated default
                // the same in 1.7, PR 7301), as they are written there. There
                // is no ERRNO rule for either, which would win over them.
                let rules = profile["syscalls"].as_array_mut().unwrap();
                for (syscall, capability) in
                    [("bpf", "CAP_BPF"), ("perf_event_open", "CAP_PERFMON")]
                {
                    rules.push(serde_json::json!({
                        "names": [syscall],
                        "action": "SCMP_ACT_ALLOW",
                        "includes": { "caps": [capability] }
                    }));
                }
                let path = dir.join("runtime-default.json");
                std::fs::write(&path, serde_json::to_vec_pretty(&profile).unwrap()).unwrap();
                path
            }
        }
    }
}

/// Host directories the runtime creates for hostPath volumes without a
/// type; removed again if this test made them.
struct HostDirs(Vec<PathBuf>);

impl HostDirs {
    fn prepare(run: &PodRun) -> HostDirs {
        let mut made = Vec::new();
        for (dir, must_exist) in &run.host_dirs {
            if dir.starts_with("/sys/kernel/tracing") {
                continue; // mounted by the launch, in its own mount namespace
            }
            if *must_exist {
                assert!(
                    dir.is_dir(),
                    "hostPath {} (type Directory) is missing on this machine",
                    dir.display()
                );
            } else if !dir.exists() {
                let mut first = dir.clone();
                while first.parent().is_some_and(|p| !p.exists()) {
                    first = first.parent().unwrap().to_path_buf();
                }
                std::fs::create_dir_all(dir).unwrap();
                made.push(first);
            }
        }
        HostDirs(made)
    }
}

impl Drop for HostDirs {
    fn drop(&mut self) {
        for dir in &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A running container; removed (with force) when dropped.
struct Container {
    name: String,
}

impl Container {
    /// `podman run -d` from a mount namespace of its own with tracefs
    /// mounted where the DaemonSet's volume expects it, joined to `node`'s
    /// network namespace.
    fn start(node: &Netns, run: &PodRun, seccomp: &Path, tag: &str) -> Container {
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

    fn pid(&self) -> u32 {
        let output = podman_output(&["inspect", "--format", "{{.State.Pid}}", &self.name]);
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .expect("container pid")
    }

    fn logs(&self) -> String {
        text(&podman_output(&["logs", &self.name]))
    }

    /// `podman exec` from the node's network namespace: with
    /// `hostNetwork` the container has no namespace of its own to join, so
    /// the exec'd process keeps its caller's, as `kubectl exec` on a node
    /// gets the host's.
    fn exec(&self, node: &Netns, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", node.name))
            .arg("podman")
            .args(podman_flags())
            .args(["exec", self.name.as_str()])
            .args(args)
            .output()
            .expect("starting nsenter podman exec")
    }

    fn wait_ready(&self, node: &Netns, run: &PodRun) {
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

    fn scrape(&self, node: &Netns, run: &PodRun) -> Metrics {
        let (status, body) = http(node, run.port, "GET", "/metrics").expect("scrape answered");
        assert_eq!(status, 200, "{body}");
        Metrics::parse(&body)
    }

    /// `podman stop` with the grace period (SIGTERM, then SIGKILL), as the
    /// kubelet stops a pod; returns how long it took and the logs.
    fn stop(&self, run: &PodRun) -> (Duration, String) {
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

/// A node namespace with a veth to a peer, and the pod run from the manifest.
struct Node {
    node: Netns,
    peer: Netns,
    veth: VethPair,
    run: PodRun,
    profiles: tempfile::TempDir,
}

impl Node {
    fn new(tag: &str, subnet: u8) -> Node {
        require_root();
        let node = Netns::new(&format!("{tag}n"));
        let peer = Netns::new(&format!("{tag}p"));
        let veth = VethPair::new(
            &node,
            &format!("{tag}node"),
            &peer,
            &format!("{tag}peer"),
            subnet,
        );
        Node {
            node,
            peer,
            veth,
            run: PodRun::from_daemonset(&rendered()),
            profiles: tempfile::tempdir().unwrap(),
        }
    }

    fn start(&self, profile: Profile, tag: &str) -> Container {
        assert_eq!(
            self.run.seccomp, "RuntimeDefault",
            "the DaemonSet's seccomp profile type"
        );
        let file = profile.file(self.profiles.path());
        Container::start(&self.node, &self.run, &file, tag)
    }

    /// Datagrams from the peer to a closed port on the node: each one a
    /// NO_SOCKET drop on the node's veth.
    fn drop_datagrams(&self) {
        send_udp(
            &self.peer,
            &format!("{}:9", self.veth.a_addr),
            DATAGRAMS,
            64,
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn under_the_runtime_default_profile_the_probes_attach_count_and_detach_on_sigterm() {
    let node = Node::new("imd", 70);
    let _dirs = HostDirs::prepare(&node.run);
    let container = node.start(Profile::RuntimeDefault, "default");
    container.wait_ready(&node.node, &node.run);
    let before = container.scrape(&node.node, &node.run);
    assert_eq!(
        before.value("collector_ebpf_enabled", &[]),
        1.0,
        "logs:\n{}",
        container.logs()
    );
    assert_eq!(
        before.value("collector_ebpf_probe_attached", &[("program", "kfree_skb")]),
        1.0
    );
    let held = BpfHeld::of(container.pid());
    assert!(
        held.attachments() >= 1,
        "the container's collector holds no attachment: {held:?}"
    );
    println!("the container's collector holds {:?}", held.program_names());

    node.drop_datagrams();
    let after = container.scrape(&node.node, &node.run);
    let interface = [("interface", node.veth.a.as_str())];
    let reason = if kfree_skb_has_reason() {
        "NO_SOCKET"
    } else {
        "unknown"
    };
    let dropped = |m: &Metrics| {
        m.value(
            "network_interface_drops_total",
            &[interface[0], ("reason", reason)],
        )
    };
    assert_eq!(
        dropped(&after) - dropped(&before),
        DATAGRAMS as f64,
        "drops counted by the probe"
    );
    let rx = |m: &Metrics| m.value("network_interface_stats_rx_packets", &interface);
    assert!(
        rx(&after) - rx(&before) >= DATAGRAMS as f64,
        "netlink counted the datagrams"
    );
    let host = after
        .select("network_interface_stats_mtu", &interface)
        .next()
        .map(|s| s.labels.get("host").cloned().unwrap_or_default());
    assert_eq!(
        host.as_deref(),
        Some(NODE_NAME),
        "NODE_NAME from the downward API"
    );

    // The `kubectl exec` path: the CLI in the running container loads its
    // own probes (no capability was dropped from the exec'd process).
    // Drops sent during its window must show up under the kernel's reason.
    let snapshot = std::thread::scope(|scope| {
        let exec = scope.spawn(|| {
            container.exec(
                &node.node,
                &[
                    "collector",
                    "snapshot",
                    "--format",
                    "table",
                    "--window",
                    "4s",
                ],
            )
        });
        std::thread::sleep(Duration::from_millis(2000));
        node.drop_datagrams();
        exec.join().unwrap()
    });
    assert!(
        snapshot.status.success(),
        "collector snapshot: {}",
        text(&snapshot)
    );
    let table = String::from_utf8_lossy(&snapshot.stdout);
    println!("collector snapshot in the container:\n{table}");
    assert!(
        table.contains(&node.veth.a),
        "snapshot lists the veth:\n{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&node.veth.a) && l.contains(reason)),
        "the exec'd snapshot counted the drops under {reason} with its own probes:\n{table}"
    );
    assert!(
        !text(&snapshot).contains("eBPF: off"),
        "snapshot ran without probes:\n{}",
        text(&snapshot)
    );
    let watch = container.exec(&node.node, &["collector", "watch", "--count", "2"]);
    assert!(
        watch.status.success(),
        "collector watch --count 2: {}",
        text(&watch)
    );
    assert!(
        String::from_utf8_lossy(&watch.stdout)
            .matches(node.veth.a.as_str())
            .count()
            >= 2
    );

    let (took, logs) = container.stop(&node.run);
    println!("stopped in {took:?}");
    assert!(
        took < node.run.grace,
        "SIGTERM to exit took {took:?}, the grace period is {:?}",
        node.run.grace
    );
    assert!(logs.contains("SIGTERM received"), "logs:\n{logs}");
    held.assert_released("after podman stop");
}

#[test]
fn under_stricter_profiles_the_probes_are_refused_with_a_seccomp_hint_and_netlink_still_serves() {
    let node = Node::new("ims", 71);
    let _dirs = HostDirs::prepare(&node.run);
    for (profile, tag) in [
        (Profile::Docker2010, "docker2010"),
        (Profile::ContainersCommon, "common"),
    ] {
        let container = node.start(profile, tag);
        container.wait_ready(&node.node, &node.run);
        let metrics = container.scrape(&node.node, &node.run);
        let logs = container.logs();
        assert_eq!(
            metrics.value("collector_ebpf_enabled", &[]),
            0.0,
            "{tag}: logs:\n{logs}"
        );
        assert!(
            logs.contains("a seccomp profile or an LSM") && logs.contains("seccompProfile"),
            "{tag}: the refusal must point at seccomp and the manifest line, logs:\n{logs}"
        );
        assert!(
            !logs.contains("needs CAP_BPF and CAP_PERFMON"),
            "{tag}: wrong hint:\n{logs}"
        );
        assert!(
            metrics.interfaces().contains(&node.veth.a),
            "{tag}: netlink metrics served"
        );
        assert!(BpfHeld::of(container.pid()).programs.is_empty());
        let (took, _) = container.stop(&node.run);
        assert!(
            took < node.run.grace,
            "{tag}: SIGTERM to exit took {took:?}"
        );
        let hint = logs
            .lines()
            .find(|l| l.contains("seccomp"))
            .unwrap_or_default();
        println!("{tag}: probes refused, netlink served, stopped in {took:?}; logged: {hint}");
    }
}

#[test]
fn every_runtime_setting_of_the_daemonset_is_given_to_the_container() {
    let run = PodRun::from_daemonset(&rendered());
    let joined = run.flags.join(" ");
    for expected in [
        "--network host",
        "--user 0:0",
        "--security-opt no-new-privileges",
        "--read-only",
        "--cap-drop ALL",
        "--cap-add BPF",
        "--cap-add PERFMON",
        "--volume /sys/kernel/btf:/sys/kernel/btf:ro",
        "--volume /sys/kernel/tracing:/sys/kernel/tracing:ro",
        "--volume /var/run/netns:/var/run/netns:ro,rslave",
        &format!("--env NODE_NAME={NODE_NAME}"),
        "--env COLLECTOR_LISTEN=0.0.0.0:2112",
        "--env COLLECTOR_HEALTH_LISTEN=0.0.0.0:2113",
        "--memory 128m",
    ] {
        assert!(
            joined.contains(expected),
            "{expected} missing from {joined}"
        );
    }
    assert!(
        joined.contains("--env COLLECTOR_LABEL="),
        "envFrom's ConfigMap: {joined}"
    );
    assert_eq!(run.args, ["serve"]);
    assert_eq!(run.seccomp, "RuntimeDefault");
    assert_eq!(run.grace, Duration::from_secs(10));
    // A field the test does not know fails it instead of being skipped.
    let mut objects = rendered();
    let daemonset = objects
        .iter_mut()
        .find(|o| o["kind"] == "DaemonSet")
        .unwrap();
    daemonset["spec"]["template"]["spec"]["containers"][0]["securityContext"]["procMount"] =
        "Unmasked".into();
    let refused = std::panic::catch_unwind(|| PodRun::from_daemonset(&objects));
    assert!(
        refused.is_err(),
        "an unknown securityContext field must fail the test"
    );
}
