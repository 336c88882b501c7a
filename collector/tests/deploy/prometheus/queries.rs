//! Running a query on one Prometheus and judging its answer: data where
//! there must be data, and the pod a row names where it names one.

use super::*;

/// The pods the rows of a query may name: the test's app pod, whose
/// series the collector labels itself, and the collector's own pod, which
/// the scrape target's labels name.
pub(super) struct Pods {
    pub(super) app: (String, String),
    pub(super) collector: (String, String),
}

/// Whether a query filters with a comparison (outside label matchers and
/// strings), so an empty answer can mean "nothing crossed the threshold".
fn filters_by_comparison(expr: &str) -> bool {
    let matchers_and_strings = regex::Regex::new(r#"\{[^}]*\}|"[^"]*""#).unwrap();
    let bare = matchers_and_strings.replace_all(expr, "");
    bare.contains('>') || bare.contains('<') || bare.contains("==") || bare.contains("!=")
}

/// The expression inside `absent(...)`, where that is the whole query.
fn absent_of(expr: &str) -> Option<&str> {
    expr.trim().strip_prefix("absent(")?.strip_suffix(')')
}

/// `expr` with every comparison against a number made a `bool` one, so it
/// returns every row it could fire for, threshold crossed or not.
fn unfiltered(expr: &str) -> String {
    let threshold = regex::Regex::new(r"(==|!=|>=|<=|>|<)\s*(-?[0-9][0-9.]*)").unwrap();
    threshold.replace_all(expr, "$1 bool $2").into_owned()
}

/// The metric names a query selects.
fn metrics(expr: &str) -> Vec<String> {
    let name = regex::Regex::new(r"\b(?:network|collector)_[A-Za-z0-9_]+").unwrap();
    name.find_iter(expr)
        .map(|m| m.as_str().to_string())
        .collect()
}

/// Whether a query names pods: `pod` as a label of its own (grouping,
/// joining or matching), not inside a metric name.
fn names_pod(expr: &str) -> bool {
    regex::Regex::new(r"\bpod\b").unwrap().is_match(expr)
}

/// Families the collector cannot serve in a test's namespaces: link speed
/// is read only for NICs without an rtnl kind (a physical NIC), and a test
/// namespace holds veths. promtool evaluates the dashboard queries that use
/// it on synthetic series (`artifacts.rs`).
const UNSERVED_IN_A_TEST_NAMESPACE: [&str; 1] = ["network_interface_speed_bytes"];

/// Runs one expression: it must evaluate without error, each series
/// selector in it must match series Prometheus scraped, and unless it is a
/// threshold filter it must return data. Then every row that names a pod
/// must name the right one (see [`check_pods`]).
pub(super) fn check_query(
    prometheus: &PrometheusServer,
    pods: &Pods,
    origin: &str,
    expr: &str,
    range: bool,
) {
    let result = if range {
        prometheus.range_query(expr)
    } else {
        prometheus.query(expr)
    };
    let selector = regex::Regex::new(
        r"\b(?:network_interface|network_pod|network_netns|network_conntrack|collector)_[A-Za-z0-9_]+(?:\{[^}]*\})?",
    )
    .unwrap();
    for series in selector.find_iter(expr) {
        let matched = prometheus.api(&format!(
            "/api/v1/series?match[]={}",
            url_encode(series.as_str())
        ));
        if UNSERVED_IN_A_TEST_NAMESPACE
            .iter()
            .any(|name| series.as_str().starts_with(&format!("{name}{{")))
        {
            // Kept true so the exemption goes when the test world changes.
            assert!(
                matched.as_array().unwrap().is_empty(),
                "{}: {origin}: {} is served here now: remove its exemption",
                prometheus.overlay,
                series.as_str()
            );
            continue;
        }
        assert!(
            !matched.as_array().unwrap().is_empty(),
            "{}: {origin}: selector {} matches no scraped series in {expr}",
            prometheus.overlay,
            series.as_str()
        );
    }
    if let Some(inner) = absent_of(expr) {
        // Quiet while the collector is scraped: so what it watches for
        // must be there, under the job the Operator names.
        assert!(
            result.is_empty() && !prometheus.query(inner).is_empty(),
            "{}: {origin}: {inner} must return data and {expr} none",
            prometheus.overlay
        );
    } else {
        assert!(
            !result.is_empty() || filters_by_comparison(expr),
            "{}: {origin}: no data for {expr}",
            prometheus.overlay
        );
    }
    let named = check_pods(prometheus, pods, origin, expr);
    let note = if result.is_empty() {
        " (threshold not crossed)"
    } else {
        ""
    };
    let compact = expr.split_whitespace().collect::<Vec<_>>().join(" ");
    println!(
        "ok {} {origin}: {} series{note}{named}: {compact}",
        prometheus.overlay,
        result.len()
    );
}

/// The pod each row of `expr` names, threshold or not, must be the one the
/// query is about:
/// - a query on `collector_*` series only is about the collector: its rows
///   name the collector's pod (the scrape target's `namespace` and `pod`);
/// - any other query that names pods is about the app pods: its rows name
///   the test's app pod, never the collector's;
/// - node-level rows that keep a pod label name the collector's pod, the
///   target they were scraped from.
///
/// No row may carry `exported_namespace` or `exported_pod`: a clash
/// between the collector's labels and the target's renamed them.
fn check_pods(prometheus: &PrometheusServer, pods: &Pods, origin: &str, expr: &str) -> String {
    let overlay = &prometheus.overlay;
    let collector_only = metrics(expr).iter().all(|m| m.starts_with("collector_"));
    let (owner, whose) = if names_pod(expr) && !collector_only {
        (&pods.app, "the app pod")
    } else {
        (&pods.collector, "the collector pod")
    };
    let rows = prometheus.query(&unfiltered(expr));
    if names_pod(expr) {
        assert!(!rows.is_empty(), "{overlay}: {origin}: no rows for {expr}");
    }
    for row in &rows {
        let labels = row["metric"].as_object().unwrap();
        let renamed: Vec<&String> = labels
            .keys()
            .filter(|k| k.starts_with("exported_"))
            .collect();
        assert!(
            renamed.is_empty(),
            "{overlay}: {origin}: labels {renamed:?} renamed by the scrape (honorLabels?): {row}"
        );
        let label = |key: &str| labels.get(key).and_then(Value::as_str);
        if label("pod").is_none() && !names_pod(expr) {
            continue;
        }
        let named = (label("namespace"), label("pod"));
        assert_eq!(
            named,
            (Some(owner.0.as_str()), Some(owner.1.as_str())),
            "{overlay}: {origin}: a row names {named:?}, not {whose} {owner:?}, in {expr}: {row}"
        );
    }
    if rows.iter().any(|r| r["metric"].get("pod").is_some()) {
        format!(", naming {whose}")
    } else {
        String::new()
    }
}

/// Every line of the ```promql blocks of the READMEs and docs/, each one
/// query, with the file it is in.
pub(super) fn documented_queries() -> Vec<(String, String)> {
    let mut files = vec![
        workspace().join("README.md"),
        workspace().join("manifests/README.md"),
    ];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(workspace().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut queries = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let origin = file
            .strip_prefix(workspace())
            .unwrap()
            .display()
            .to_string();
        for block in text.split("```promql\n").skip(1) {
            let body = block.split("```").next().unwrap();
            for line in body.lines().filter(|l| !l.trim().is_empty()) {
                queries.push((origin.clone(), line.to_string()));
            }
        }
    }
    queries
}

/// The one active target: the collector's metrics port, labelled as the
/// Operator labels a PodMonitor target, and up; the targets discovery
/// offered for the pod's other ports dropped by the endpoint's port filter.
pub(super) fn check_target(
    prometheus: &PrometheusServer,
    expected: &BTreeMap<&str, String>,
    other_ports: &[String],
) {
    let overlay = &prometheus.overlay;
    let targets = prometheus.api("/api/v1/targets");
    let active = targets["activeTargets"].as_array().unwrap();
    assert_eq!(active.len(), 1, "{overlay}: {active:?}");
    let labels = &active[0]["labels"];
    for (key, value) in expected {
        assert_eq!(
            labels[key], *value,
            "{overlay}: target label {key}: {labels}"
        );
    }
    assert_eq!(active[0]["health"], "up", "{overlay}: {}", active[0]);
    let mut dropped: Vec<&str> = targets["droppedTargets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            t["discoveredLabels"]["__meta_kubernetes_pod_container_port_name"]
                .as_str()
                .unwrap()
        })
        .collect();
    dropped.sort();
    assert_eq!(dropped, other_ports, "{overlay}: dropped targets");
}
