//! The rendered DaemonSet read as what it asks of a container runtime, and
//! the host directories its hostPath volumes need.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::NODE_NAME;

/// What the DaemonSet's pod asks of the container runtime, as podman flags.
#[derive(Debug)]
pub struct PodRun {
    pub flags: Vec<String>,
    pub args: Vec<String>,
    /// `seccompProfile.type`.
    pub seccomp: String,
    pub grace: Duration,
    pub port: u16,
    /// The port the kubelet's probes use (the health listener's).
    pub probe_port: u16,
    pub readiness: String,
    pub liveness: String,
    /// hostPath volumes of `type: Directory` (must exist) and without a type
    /// (created by the runtime when missing, as containerd does).
    pub host_dirs: Vec<(PathBuf, bool)>,
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

/// A ConfigMap value as the operator leaves it before the first apply: the
/// labels that ship empty (which the collector refuses) set to `test-<key>`.
fn operator_set(key: &str, value: &str) -> String {
    if key != "COLLECTOR_LABEL" {
        return value.to_string();
    }
    value
        .split(',')
        .map(|pair| match pair.split_once('=') {
            Some((label, "")) => format!("{label}=test-{label}"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl PodRun {
    pub fn from_daemonset(objects: &[Value]) -> PodRun {
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
                flag("--env", format!("{key}={}", operator_set(&key, &value)));
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

/// Host directories the runtime creates for hostPath volumes without a
/// type; removed again if this test made them.
pub struct HostDirs(Vec<PathBuf>);

impl HostDirs {
    pub fn prepare(run: &PodRun) -> HostDirs {
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
