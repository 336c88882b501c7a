//! What an operator gets from the first `kubectl apply -k` of any overlay:
//! a collector on every Linux node, placed before workloads, started on a
//! node without BTF, no Pod Security warning on each apply, and no cluster
//! label that reaches production as a placeholder.

use super::*;

/// Every kustomization that deploys the collector (the Components add to
/// one and deploy nothing alone), rendered.
fn deployments() -> Vec<(String, Vec<Value>)> {
    let found: Vec<(String, Vec<Value>)> = kustomizations()
        .into_iter()
        .filter(|(_, component)| !component)
        .map(|(dir, _)| (relative(&dir), render(&dir)))
        .filter(|(_, objects)| objects.iter().any(|o| o["kind"] == "DaemonSet"))
        .collect();
    let names: Vec<&str> = found.iter().map(|(name, _)| name.as_str()).collect();
    for expected in ["base", "overlays/azure", "overlays/prometheus-operator"] {
        assert!(names.contains(&expected), "{expected} not among {names:?}");
    }
    found
}

/// The classes Kubernetes defines itself (scheduling.k8s.io, always present).
const SYSTEM_PRIORITY_CLASSES: [&str; 2] = ["system-node-critical", "system-cluster-critical"];
/// The highest value a PriorityClass other than the system ones may have.
const HIGHEST_USER_PRIORITY: i64 = 1_000_000_000;

#[test]
fn every_overlay_runs_on_every_linux_node_ahead_of_workloads() {
    require_python_modules();
    for (name, objects) in deployments() {
        let spec = pod_spec(only(&objects, "DaemonSet"));
        // Priority: DaemonSet pods do not wait for room, they preempt; a
        // class above 0 (the default) is what lets them.
        let class = spec["priorityClassName"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: the DaemonSet has no priorityClassName"));
        if !SYSTEM_PRIORITY_CLASSES.contains(&class) {
            let rendered = objects
                .iter()
                .find(|o| o["kind"] == "PriorityClass" && o["metadata"]["name"] == class)
                .unwrap_or_else(|| panic!("{name}: PriorityClass {class} is not rendered"));
            let value = rendered["value"].as_i64().expect("PriorityClass value");
            assert!(
                value > 0 && value <= HIGHEST_USER_PRIORITY,
                "{name}: {class} has value {value}, not above workloads (0) and within a user class's range"
            );
            assert_ne!(
                rendered["globalDefault"], true,
                "{name}: {class} must not become every pod's default"
            );
            assert_ne!(
                rendered["preemptionPolicy"], "Never",
                "{name}: {class} must preempt to land on a full node"
            );
        }
        // Tolerations: one without key or effect tolerates every taint, so
        // no node pool is left unwatched for a taint the manifest never
        // heard of.
        let tolerations = spec["tolerations"].as_array().cloned().unwrap_or_default();
        assert!(
            tolerations.iter().any(|t| t["operator"] == "Exists"
                && t.get("key").is_none_or(|k| k.as_str() == Some(""))
                && t.get("effect").is_none_or(|e| e.as_str() == Some(""))),
            "{name}: no catch-all toleration (operator: Exists, no key, no effect) in {tolerations:?}"
        );
        // Nothing narrows "every Linux node" again.
        assert_eq!(
            spec["nodeSelector"],
            json!({"kubernetes.io/os": "linux"}),
            "{name}: nodeSelector"
        );
        assert!(
            spec["affinity"].is_null(),
            "{name}: affinity narrows the nodes"
        );
    }
}

#[test]
fn a_node_without_btf_cannot_keep_the_pod_from_starting() {
    require_python_modules();
    for (name, objects) in deployments() {
        let daemonset = only(&objects, "DaemonSet");
        let spec = pod_spec(daemonset);
        let container = collector_container(daemonset);
        let btf = manifest_environment(&objects)
            .into_iter()
            .find(|(key, _)| key == "COLLECTOR_BTF")
            .map(|(_, value)| value)
            .unwrap_or_else(|| "/sys/kernel/btf/vmlinux".to_string());
        // Read from the container's own sysfs, which shows the host's BTF
        // where it exists and is simply without it where not; the
        // collector then serves netlink metrics (netlink_metrics'
        // missing_btf_or_tracefs_degrades_to_netlink_with_one_log_line).
        assert!(
            btf.starts_with("/sys/kernel/btf/"),
            "{name}: COLLECTOR_BTF {btf} is not read from the container's sysfs"
        );
        for mount in container["volumeMounts"].as_array().into_iter().flatten() {
            let path = mount["mountPath"].as_str().unwrap();
            assert!(
                !btf.starts_with(&format!("{}/", path.trim_end_matches('/'))),
                "{name}: volume {} at {path} hides the container's own {btf}",
                mount["name"]
            );
        }
        // A hostPath of the BTF directory keeps the pod in ContainerCreating
        // where it is missing, whatever its type: `Directory` fails the
        // kubelet's check, and with none the runtime tries to create the
        // source, which the read-only sysfs refuses.
        for volume in spec["volumes"].as_array().into_iter().flatten() {
            if let Some(path) = volume["hostPath"]["path"].as_str() {
                assert!(
                    !path.trim_end_matches('/').starts_with("/sys/kernel/btf"),
                    "{name}: hostPath {path} ({}) stops the pod on a node without BTF",
                    volume["hostPath"]["type"]
                );
            }
        }
    }
}

#[test]
fn the_namespace_is_privileged_for_enforce_warn_and_audit() {
    require_python_modules();
    for (name, objects) in deployments() {
        let namespace = only(&objects, "Namespace");
        assert_eq!(
            only(&objects, "DaemonSet")["metadata"]["namespace"],
            namespace["metadata"]["name"],
            "{name}: the DaemonSet runs in the rendered namespace"
        );
        // hostNetwork, hostPath and added capabilities are never baseline:
        // a `warn` or `audit` below privileged would repeat that on every
        // apply and every pod.
        for mode in ["enforce", "warn", "audit"] {
            let label = format!("pod-security.kubernetes.io/{mode}");
            assert_eq!(
                namespace["metadata"]["labels"][&label], "privileged",
                "{name}: {label}"
            );
        }
    }
}

/// `collector snapshot` with the DaemonSet's environment (the eBPF probes
/// off: this is about the flags).
fn snapshot_with(environment: &[(String, String)]) -> Output {
    collector_command(COLLECTOR)
        .args(["snapshot", "--format", "json", "--window", "0s"])
        .envs(environment.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("COLLECTOR_NO_EBPF", "true")
        .stdin(Stdio::null())
        .output()
        .expect("running the collector")
}

#[test]
fn the_shipped_cluster_label_is_refused_until_it_is_set() {
    require_python_modules();
    for (name, objects) in deployments() {
        let shipped = shipped_environment(&objects);
        let labels = &shipped
            .iter()
            .find(|(key, _)| key == "COLLECTOR_LABEL")
            .unwrap_or_else(|| panic!("{name}: no COLLECTOR_LABEL"))
            .1;
        assert!(
            labels.split(',').any(|pair| pair == "cluster="),
            "{name}: the cluster label must ship empty, not as a placeholder: {labels}"
        );
        let refused = snapshot_with(&shipped);
        let message = text(&refused);
        assert_eq!(refused.status.code(), Some(2), "{name}: {message}");
        for needle in ["`cluster` has an empty value", "cluster-labels.env"] {
            assert!(
                message.contains(needle),
                "{name}: `{needle}` not in {message}"
            );
        }
        // The same environment once the operator has named the cluster.
        let configured = snapshot_with(&manifest_environment(&objects));
        assert!(configured.status.success(), "{name}: {}", text(&configured));
    }
}
