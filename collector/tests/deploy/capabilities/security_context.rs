//! How the DaemonSet confines the collector, read from the rendered base, and
//! the capability numbers of the names it may use.

use super::*;

/// Linux capability numbers of the names the manifests may use.
pub(super) fn capability_number(name: &str) -> u32 {
    match name {
        "NET_ADMIN" => 12,
        "NET_RAW" => 13,
        "SYS_ADMIN" => 21,
        "SYS_RESOURCE" => 24,
        "PERFMON" => 38,
        "BPF" => 39,
        "DAC_READ_SEARCH" => 2,
        other => panic!("capability {other} unknown to this test"),
    }
}

/// How the DaemonSet confines the collector, read from the rendered base.
pub(super) struct SecurityContext {
    pub(super) capabilities: Vec<String>,
    pub(super) uid: u64,
    pub(super) no_new_privileges: bool,
    pub(super) read_only_root: bool,
    pub(super) tracefs_mount: String,
    pub(super) tracefs_read_only: bool,
    /// Where the netns files are mounted (read-only, HostToContainer).
    pub(super) netns_mount: String,
    /// A CNI results directory of the test's own, given to the collector
    /// in place of the manifest's mount of the node's (which this machine
    /// has none of), bind-mounted read-only the same way.
    pub(super) cni_results: Option<PathBuf>,
    pub(super) environment: Vec<(String, String)>,
    pub(super) args: Vec<String>,
    pub(super) port: u16,
}

impl SecurityContext {
    pub(super) fn from_manifests() -> SecurityContext {
        let objects = render_overlay("base");
        let daemonset = only(&objects, "DaemonSet");
        let spec = pod_spec(daemonset);
        let container = collector_container(daemonset);
        let context = &container["securityContext"];
        assert_eq!(
            strings(&context["capabilities"]["drop"]),
            ["ALL"],
            "drop ALL first"
        );
        let uid = context["runAsUser"]
            .as_u64()
            .or(spec["securityContext"]["runAsUser"].as_u64())
            .expect("runAsUser set");
        let host_paths: BTreeMap<&str, &str> = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| Some((v["name"].as_str()?, v["hostPath"]["path"].as_str()?)))
            .collect();
        let mut tracefs = None;
        let mut netns = None;
        let mut host_proc = None;
        for mount in container["volumeMounts"].as_array().unwrap() {
            let host_path = host_paths[mount["name"].as_str().unwrap()];
            let mount_path = mount["mountPath"].as_str().unwrap();
            let read_only = mount["readOnly"] == true;
            match host_path {
                // The container's own /sys shows it already: sysfs is global.
                "/sys/kernel/btf" => assert!(read_only, "BTF mount must be read-only"),
                "/sys/kernel/tracing" => tracefs = Some((mount_path.to_string(), read_only)),
                "/var/lib/cni/results" => {
                    assert!(read_only, "CNI results mount must be read-only");
                }
                "/var/run/netns" => {
                    assert!(read_only, "netns mount must be read-only");
                    // Netns files of pods started later are mounts made
                    // later: only propagation makes them visible.
                    assert_eq!(mount["mountPropagation"], "HostToContainer");
                    netns = Some(mount_path.to_string());
                }
                "/proc" => {
                    assert!(read_only, "the host's /proc must be mounted read-only");
                    host_proc = Some(mount_path.to_string());
                }
                other => panic!("hostPath {other}: this test does not reproduce it; extend it"),
            }
        }
        let (tracefs_mount, tracefs_read_only) = tracefs.expect("tracefs is mounted");
        let environment = manifest_environment(&objects);
        let host_proc = host_proc.expect("the host's /proc is mounted");
        assert!(
            environment.contains(&("COLLECTOR_HOST_PROC".to_string(), host_proc)),
            "--host-proc names the mount of the host's /proc"
        );
        let port = container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "metrics")
            .expect("port named metrics")["containerPort"]
            .as_u64()
            .unwrap() as u16;
        SecurityContext {
            capabilities: strings(&context["capabilities"]["add"]),
            uid,
            no_new_privileges: context["allowPrivilegeEscalation"] == false,
            read_only_root: context["readOnlyRootFilesystem"] == true,
            tracefs_mount,
            tracefs_read_only,
            netns_mount: netns.expect("netns files are mounted"),
            cni_results: None,
            environment,
            args: strings(&container["args"]),
            port,
        }
    }

    /// `ip netns exec` gives the collector a fresh sysfs in a new mount
    /// namespace, like a container runtime; this script adds what the
    /// DaemonSet adds (tracefs, read-only), makes / and /sys read-only as
    /// the runtime does, then execs the collector under setpriv with
    /// exactly `capabilities` as uid `uid`.
    pub(super) fn command(
        &self,
        ns: &Netns,
        capabilities: &[&str],
        uid: u64,
        args: &[&str],
    ) -> Command {
        let set = std::iter::once("-all".to_string())
            .chain(
                capabilities
                    .iter()
                    .map(|c| format!("+{}", c.to_lowercase())),
            )
            .collect::<Vec<_>>()
            .join(",");
        let read_only = if self.tracefs_read_only { "ro," } else { "" };
        let mut script = format!(
            "set -e\nmount -t tracefs -o {read_only}nosuid,nodev,noexec tracefs {}\nmount -o remount,bind,ro /sys\n",
            self.tracefs_mount
        );
        // Recursive, as the kubelet's hostPath mounts are: each netns file
        // is a mount of its own, which a plain bind would leave behind
        // (the collector would open the empty files under them). `ip netns
        // exec` made this mount namespace a slave of the host's, as
        // HostToContainer does: netns added later still appear.
        let mut read_only_binds = vec![self.netns_mount.clone()];
        read_only_binds.extend(self.cni_results.iter().map(|d| d.display().to_string()));
        for dir in &read_only_binds {
            script.push_str(&format!(
                "mount --rbind {dir} {dir}\nmount -o remount,bind,ro {dir}\n"
            ));
        }
        if self.read_only_root {
            script.push_str("mount -o remount,bind,ro /\n");
        }
        // uid 0 gets its capabilities from the bounding set, as in a
        // container; another uid only keeps ambient ones (more than
        // Kubernetes can grant it).
        let identity = if uid == 0 {
            format!("--reuid 0 --regid 0 --clear-groups --inh-caps -all --bounding-set {set}")
        } else {
            format!("--reuid {uid} --regid {uid} --clear-groups --inh-caps {set} --ambient-caps {set} --bounding-set {set}")
        };
        let no_new_privs = if self.no_new_privileges {
            "--no-new-privs"
        } else {
            ""
        };
        script.push_str(&format!(
            "exec setpriv {identity} {no_new_privs} -- \"$@\"\n"
        ));
        let mut command = collector_command("ip");
        command
            .args([
                "netns", "exec", &ns.name, "sh", "-c", &script, "sh", COLLECTOR,
            ])
            .args(args)
            .envs(
                self.environment
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            );
        if let Some(dir) = &self.cni_results {
            command.env("COLLECTOR_CNI_RESULTS_DIR", dir);
        }
        // The replay shares the host's PID namespace, so its own /proc is
        // the host's that the DaemonSet mounts at --host-proc.
        command.env("COLLECTOR_HOST_PROC", "/proc");
        command
    }

    /// `collector snapshot` under the given confinement: one collection,
    /// with the probes loaded if they can be.
    pub(super) fn snapshot(
        &self,
        ns: &Netns,
        capabilities: &[&str],
        uid: u64,
    ) -> (Metrics, String) {
        let output = self
            .command(
                ns,
                capabilities,
                uid,
                &["snapshot", "--format", "prometheus", "--window", "0s"],
            )
            .output()
            .expect("starting confined collector");
        let log = String::from_utf8_lossy(&output.stderr).to_string();
        assert!(output.status.success(), "confined snapshot failed: {log}");
        (
            Metrics::parse(&String::from_utf8_lossy(&output.stdout)),
            log,
        )
    }
}
