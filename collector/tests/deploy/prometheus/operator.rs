//! What the Prometheus Operator makes of a rendered PodMonitor: the scrape
//! job its config generator writes, and the target Prometheus' pod
//! discovery hands that job for the collector's pod. There is no API server
//! here, so the discovered target is written as a static target carrying
//! the same `__meta_kubernetes_*` labels, and the job's relabelings turn
//! them into `namespace`, `pod`, `container`, `endpoint` and `job` exactly
//! as they would in a cluster.
//!
//! Sources, read and followed rule by rule (not copied):
//! - prometheus-operator/prometheus-operator, `pkg/prometheus/promcfg.go`,
//!   `generatePodMonitorConfig` (job name, honor_labels, scheme, TLS,
//!   basic auth, relabelings), `initRelabelings`, `generateRunningFilter`,
//!   `addSafeTLStoYaml`, `addBasicAuthToYaml`.
//! - prometheus/prometheus, `discovery/kubernetes/pod.go`, `buildPod` and
//!   `podLabels`: one target per container port, `podIP:containerPort`.
//!
//! Azure Managed Prometheus reads `azmonitoring.coreos.com` PodMonitors with
//! the same CRD semantics; its ama-metrics agent runs the OpenTelemetry
//! target allocator, which builds its jobs with the same generator
//! (`prometheus.NewConfigGenerator`). So both overlays go through this.

use super::*;

/// Port, path, interval, scheme, honorLabels and transport settings are
/// modelled; a PodMonitor using any other endpoint field fails the test
/// rather than being scraped differently than the Operator would.
const MODELLED_ENDPOINT_FIELDS: [&str; 8] = [
    "port",
    "path",
    "interval",
    "scrapeTimeout",
    "scheme",
    "honorLabels",
    "tlsConfig",
    "basicAuth",
];
const MODELLED_SPEC_FIELDS: [&str; 2] = ["selector", "podMetricsEndpoints"];

/// A DaemonSet pod's name is the DaemonSet's and a 5-character suffix the
/// API server generates; this one is as realistic as any.
const POD_NAME_SUFFIX: &str = "x7k2p";

/// The collector pod as the API server would list it: everything taken from
/// the rendered DaemonSet, placed on the test's node.
pub(super) struct CollectorPod {
    pub(super) namespace: String,
    pub(super) name: String,
    pub(super) container: String,
    /// (name, number, protocol) of each container port.
    ports: Vec<(String, u16, String)>,
    labels: BTreeMap<String, String>,
    controller: String,
    /// A hostNetwork pod's IP is its node's; in the test namespace that is
    /// loopback, where the collector listens.
    ip: String,
}

impl CollectorPod {
    pub(super) fn of(objects: &[Value]) -> CollectorPod {
        let daemonset = only(objects, "DaemonSet");
        assert_eq!(
            pod_spec(daemonset)["hostNetwork"],
            true,
            "the pod IP below is the node's only on hostNetwork"
        );
        let container = collector_container(daemonset);
        let name = |value: &Value| value.as_str().unwrap().to_string();
        let ports = container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let number = p["containerPort"].as_u64().unwrap() as u16;
                // Kubernetes' default protocol.
                let protocol = p["protocol"].as_str().unwrap_or("TCP").to_string();
                (name(&p["name"]), number, protocol)
            })
            .collect();
        let labels = daemonset["spec"]["template"]["metadata"]["labels"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), name(v)))
            .collect();
        let controller = name(&daemonset["metadata"]["name"]);
        CollectorPod {
            namespace: name(&daemonset["metadata"]["namespace"]),
            name: format!("{controller}-{POD_NAME_SUFFIX}"),
            container: name(&container["name"]),
            ports,
            labels,
            controller,
            ip: "127.0.0.1".to_string(),
        }
    }

    /// The container port named `name`.
    pub(super) fn port(&self, name: &str) -> u16 {
        self.ports
            .iter()
            .find(|(n, ..)| n == name)
            .unwrap_or_else(|| panic!("the collector container has no port {name}"))
            .1
    }

    /// The names of the container ports other than `name`.
    pub(super) fn other_ports(&self, name: &str) -> Vec<String> {
        self.ports
            .iter()
            .filter(|(n, ..)| n != name)
            .map(|(n, ..)| n.clone())
            .collect()
    }

    /// The targets of the pod role for this pod: one per container port.
    fn discovered_targets(&self) -> Vec<Value> {
        let mut pod = serde_json::Map::new();
        let mut meta = |key: &str, value: &str| {
            pod.insert(format!("__meta_kubernetes_{key}"), json!(value));
        };
        meta("namespace", &self.namespace);
        meta("pod_name", &self.name);
        meta("pod_ip", &self.ip);
        meta("pod_host_ip", &self.ip);
        meta("pod_node_name", TEST_NODE);
        meta("pod_phase", "Running");
        meta("pod_ready", "true");
        meta("pod_controller_kind", "DaemonSet");
        meta("pod_controller_name", &self.controller);
        for (key, value) in &self.labels {
            meta(&format!("pod_label_{}", sanitize(key)), value);
            meta(&format!("pod_labelpresent_{}", sanitize(key)), "true");
        }
        self.ports
            .iter()
            .map(|(name, number, protocol)| {
                let mut labels = pod.clone();
                let mut set = |key: &str, value: String| {
                    labels.insert(format!("__meta_kubernetes_{key}"), json!(value));
                };
                set("pod_container_name", self.container.clone());
                set("pod_container_port_name", name.clone());
                set("pod_container_port_number", number.to_string());
                set("pod_container_port_protocol", protocol.clone());
                json!({"targets": [format!("{}:{number}", self.ip)], "labels": labels})
            })
            .collect()
    }
}

/// Label names as Prometheus and the Operator sanitise them.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// What the Operator's Secret and ConfigMap store gives the generator:
/// values by (kind, name, key), CA and certificates as the files it writes.
pub(super) type Assets = BTreeMap<(&'static str, String, String), String>;

/// The (kind, name, key) a `{secret: {name, key}}` or `{configMap: {name,
/// key}}` selector refers to, or a bare key selector of `bare_kind`.
pub(super) fn referenced(
    selector: &Value,
    bare_kind: &'static str,
) -> (&'static str, String, String) {
    let (kind, reference) = match (selector.get("secret"), selector.get("configMap")) {
        (Some(secret), _) => ("Secret", secret),
        (None, Some(configmap)) => ("ConfigMap", configmap),
        (None, None) => (bare_kind, selector),
    };
    let text = |key: &str| reference[key].as_str().unwrap().to_string();
    (kind, text("name"), text("key"))
}

/// The value behind a selector (see [`referenced`]).
fn asset(assets: &Assets, selector: &Value, bare_kind: &'static str) -> String {
    let key = referenced(selector, bare_kind);
    assets
        .get(&key)
        .unwrap_or_else(|| panic!("the PodMonitor refers to {key:?}, which the test does not hold"))
        .clone()
}

/// `tls_config` from an endpoint's `tlsConfig`, as `addSafeTLStoYaml` does
/// with assets written to files.
fn tls_config(tls: &Value, assets: &Assets) -> Value {
    let mut config = serde_json::Map::new();
    let fields = tls.as_object().unwrap();
    for (field, value) in fields {
        let (key, value) = match field.as_str() {
            "ca" => ("ca_file", json!(asset(assets, value, "ConfigMap"))),
            "cert" => ("cert_file", json!(asset(assets, value, "Secret"))),
            "keySecret" => ("key_file", json!(asset(assets, value, "Secret"))),
            "serverName" => ("server_name", value.clone()),
            "insecureSkipVerify" => ("insecure_skip_verify", value.clone()),
            "minVersion" => ("min_version", value.clone()),
            "maxVersion" => ("max_version", value.clone()),
            other => panic!("tlsConfig.{other} is not modelled by this test"),
        };
        config.insert(key.to_string(), value);
    }
    Value::Object(config)
}

/// The scrape jobs the Operator generates for `monitor`, one per endpoint
/// (`podMonitor/<namespace>/<name>/<index>`), with the collector pod
/// discovered as a static target. The Prometheus resource is taken with its
/// defaults (no overrideHonorLabels, enforcedNamespaceLabel or scrape
/// class); sharding (one shard) only picks targets, so its relabeling is
/// left out.
pub(super) fn scrape_jobs(monitor: &Value, pod: &CollectorPod, assets: &Assets) -> Vec<Value> {
    let spec = monitor["spec"].as_object().unwrap();
    for field in spec.keys() {
        assert!(
            MODELLED_SPEC_FIELDS.contains(&field.as_str()),
            "PodMonitor spec.{field} is not modelled by this test"
        );
    }
    let namespace = monitor["metadata"]["namespace"].as_str().unwrap();
    let name = monitor["metadata"]["name"].as_str().unwrap();
    // Without a namespaceSelector the Operator discovers pods of the
    // monitor's own namespace only.
    let targets = if pod.namespace == namespace {
        pod.discovered_targets()
    } else {
        Vec::new()
    };
    let selector = spec["selector"].as_object().unwrap();
    assert!(
        selector.keys().all(|k| k == "matchLabels"),
        "PodMonitor selector: only matchLabels is modelled by this test"
    );
    let endpoints = spec["podMetricsEndpoints"].as_array().unwrap();
    endpoints
        .iter()
        .enumerate()
        .map(|(index, endpoint)| {
            for field in endpoint.as_object().unwrap().keys() {
                assert!(
                    MODELLED_ENDPOINT_FIELDS.contains(&field.as_str()),
                    "PodMonitor endpoint field {field} is not modelled by this test"
                );
            }
            let port = endpoint["port"].as_str().expect("endpoints name their port");
            let mut relabel = vec![
                json!({"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"}),
                json!({"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"],
                       "regex": "(Failed|Succeeded)"}),
            ];
            for (key, value) in selector["matchLabels"].as_object().unwrap() {
                let key = sanitize(key);
                relabel.push(json!({
                    "action": "keep",
                    "source_labels": [format!("__meta_kubernetes_pod_label_{key}"),
                                      format!("__meta_kubernetes_pod_labelpresent_{key}")],
                    "regex": format!("({});true", value.as_str().unwrap()),
                }));
            }
            relabel.extend([
                json!({"action": "keep", "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                       "regex": port}),
                json!({"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"}),
                json!({"source_labels": ["__meta_kubernetes_pod_container_name"],
                       "target_label": "container"}),
                json!({"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"}),
                json!({"target_label": "job", "replacement": format!("{namespace}/{name}")}),
                json!({"target_label": "endpoint", "replacement": port}),
            ]);
            let mut job = json!({
                "job_name": format!("podMonitor/{namespace}/{name}/{index}"),
                "honor_labels": endpoint["honorLabels"].as_bool().unwrap_or(false),
                "static_configs": targets,
                "relabel_configs": relabel,
            });
            let copied = [
                ("interval", "scrape_interval"),
                ("scrapeTimeout", "scrape_timeout"),
                ("path", "metrics_path"),
                ("scheme", "scheme"),
            ];
            for (field, key) in copied {
                if let Some(value) = endpoint.get(field) {
                    job[key] = value.clone();
                }
            }
            if let Some(tls) = endpoint.get("tlsConfig") {
                job["tls_config"] = tls_config(tls, assets);
            }
            if let Some(auth) = endpoint.get("basicAuth") {
                job["basic_auth"] = json!({
                    "username": asset(assets, &auth["username"], "Secret"),
                    "password": asset(assets, &auth["password"], "Secret"),
                });
            }
            job
        })
        .collect()
}
