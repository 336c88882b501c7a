//! A workload policy a security reviewer would sign.

use super::*;

/// Why `object` is not a workload a security reviewer would sign; empty if
/// it is one (or is no workload).
fn policy_violations(object: &Value) -> Vec<String> {
    let kind = object["kind"].as_str().unwrap_or_default();
    if !WORKLOAD_KINDS.contains(&kind) {
        return Vec::new();
    }
    let name = format!(
        "{kind}/{}",
        object["metadata"]["name"].as_str().unwrap_or("?")
    );
    let spec = pod_spec(object);
    let mut violations = Vec::new();
    if spec["hostPID"] == true {
        violations.push(format!("{name}: hostPID"));
    }
    for volume in spec["volumes"].as_array().into_iter().flatten() {
        let Some(path) = volume["hostPath"]["path"].as_str() else {
            continue;
        };
        let path = path.trim_end_matches('/');
        let is_socket = RUNTIME_SOCKETS.iter().any(|s| path.ends_with(s));
        let holds_socket = RUNTIME_SOCKET_PATHS
            .iter()
            .any(|socket| path.is_empty() || socket.starts_with(&format!("{path}/")));
        if is_socket || holds_socket {
            violations.push(format!(
                "{name}: mounts container runtime socket via hostPath {path:?}"
            ));
        }
    }
    let host_paths: BTreeMap<&str, &str> = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| Some((v["name"].as_str()?, v["hostPath"]["path"].as_str()?)))
        .collect();
    for container in containers(spec) {
        let container_name = container["name"].as_str().unwrap_or("?");
        // The node is read, never written: every host path read-only.
        for mount in container["volumeMounts"].as_array().into_iter().flatten() {
            let volume = mount["name"].as_str().unwrap_or_default();
            if let Some(path) = host_paths.get(volume) {
                if mount["readOnly"] != true {
                    violations.push(format!(
                        "{name}/{container_name}: hostPath {path} mounted writable"
                    ));
                }
            }
        }
        let context = &container["securityContext"];
        if context["privileged"] == true {
            violations.push(format!("{name}/{container_name}: privileged"));
        }
        let added = strings(&context["capabilities"]["add"]);
        if added.iter().any(|c| c == "SYS_ADMIN" || c == "ALL") {
            violations.push(format!(
                "{name}/{container_name}: adds {added:?} (privileged in all but name)"
            ));
        }
        for resource in ["cpu", "memory"] {
            if container["resources"]["limits"][resource].is_null() {
                violations.push(format!("{name}/{container_name}: no {resource} limit"));
            }
        }
    }
    violations
}

#[test]
fn no_workload_is_privileged_mounts_a_runtime_socket_uses_host_pid_or_lacks_limits() {
    require_python_modules();
    let mut workloads = 0;
    let mut violations = Vec::new();
    for (dir, _) in kustomizations() {
        for object in render(&dir) {
            if WORKLOAD_KINDS.contains(&object["kind"].as_str().unwrap_or_default()) {
                workloads += 1;
            }
            violations.extend(
                policy_violations(&object)
                    .into_iter()
                    .map(|v| format!("{}: {v}", relative(&dir))),
            );
        }
    }
    assert!(workloads > 0, "no workload found in manifests/");
    assert!(
        violations.is_empty(),
        "policy violations:\n{}",
        violations.join("\n")
    );

    // The same policy on copies turned into the Telegraf DaemonSet's
    // mistakes: each one must be caught.
    let daemonset = only(&render_overlay("base"), "DaemonSet").clone();
    let mut broken: Vec<(&str, Value)> = Vec::new();
    let mut privileged = daemonset.clone();
    privileged["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] =
        json!(true);
    broken.push(("privileged", privileged));
    let mut host_pid = daemonset.clone();
    host_pid["spec"]["template"]["spec"]["hostPID"] = json!(true);
    broken.push(("hostPID", host_pid));
    for path in ["/var/run/docker.sock", "/run/containerd", "/var/run"] {
        let mut socket = daemonset.clone();
        socket["spec"]["template"]["spec"]["volumes"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "runtime", "hostPath": {"path": path}}));
        broken.push(("runtime socket", socket));
    }
    let mut writable = daemonset.clone();
    for mount in writable["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        .as_array_mut()
        .unwrap()
    {
        mount["readOnly"] = json!(false);
    }
    broken.push(("mounted writable", writable));
    let mut unlimited = daemonset.clone();
    unlimited["spec"]["template"]["spec"]["containers"][0]["resources"]
        .as_object_mut()
        .unwrap()
        .remove("limits");
    broken.push(("no cpu limit", unlimited));
    for (expected, object) in broken {
        let found = policy_violations(&object);
        assert!(
            found.iter().any(|v| v.contains(expected)),
            "policy missed {expected}: {found:?}"
        );
    }
}
