//! The Dockerfile (hadolint), the alert rules (promtool) and the dashboard.

use super::*;

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

pub(crate) fn alert_rules() -> Value {
    only(
        &render_overlay("overlays/prometheus-operator"),
        "PrometheusRule",
    )["spec"]
        .clone()
}

/// `promtool <args> <file>` must succeed and say SUCCESS.
fn promtool_succeeds(args: &[&str], file: &Path) {
    let mut all = args.to_vec();
    all.push(file.to_str().unwrap());
    let output = tool("promtool", &all, None);
    let report = text(&output);
    assert!(output.status.success(), "promtool {args:?}:\n{report}");
    assert!(report.contains("SUCCESS"), "{report}");
}

/// The shipped alert rules, as a rule file in `dir`.
fn rules_file(dir: &Path) -> PathBuf {
    let rules = dir.join("rules.json");
    std::fs::write(&rules, serde_json::to_vec_pretty(&alert_rules()).unwrap()).unwrap();
    rules
}

#[test]
fn alert_rules_pass_promtool() {
    require_python_modules();
    let dir = tempfile::tempdir().unwrap();
    promtool_succeeds(&["check", "rules"], &rules_file(dir.path()));
}

pub(crate) fn dashboard() -> Value {
    let path = manifests().join("dashboards/network-interfaces.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("dashboard is JSON")
}

/// Every query target of the dashboard: (panel title, target).
pub(crate) fn dashboard_targets(dashboard: &Value) -> Vec<(String, Value)> {
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

pub(crate) fn variable_query(variable: &Value) -> String {
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

/// The dashboard's "Transmit utilisation" panel, evaluated by promtool on
/// synthetic series: a NIC that reports its speed against that speed, an
/// interface that reports none against `$link_speed_bits`, and never both.
#[test]
fn transmit_utilisation_uses_each_nics_speed_and_the_variable_only_without_one() {
    let dashboard = dashboard();
    let targets: Vec<String> = dashboard_targets(&dashboard)
        .into_iter()
        .filter(|(title, _)| title == "Transmit utilisation")
        .map(|(_, target)| {
            target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "5m")
                .replace("$link_speed_bits", "10000000")
                .replace("$cluster", ".*")
                .replace("$host", ".*")
                .replace("$interface", ".*")
        })
        .collect();
    assert_eq!(targets.len(), 2, "one query per source of the speed");
    let node = r#"cluster="c",host="node-1",state="up""#;
    // eth0: 312,500 B/s of a 1,250,000 B/s link (25 %); azv1, a veth with
    // no speed: 625,000 B/s, 5 Mbit/s of an assumed 10 Mbit/s (50 %).
    // (Figures whose ratios are exact in binary: promtool compares exactly.)
    let series = json!([
        {"series": format!("network_interface_stats_tx_bytes{{{node},interface=\"eth0\"}}"), "values": "0+18750000x20"},
        {"series": format!("network_interface_speed_bytes{{{node},interface=\"eth0\"}}"), "values": "1250000x20"},
        {"series": format!("network_interface_stats_tx_bytes{{{node},interface=\"azv1\"}}"), "values": "0+37500000x20"},
    ]);
    let expected = [
        r#"{host="node-1", interface="eth0"}"#,
        r#"{host="node-1", interface="azv1"}"#,
    ];
    let values = [25.0, 50.0];
    let tests = json!({
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": series,
            "promql_expr_test": targets.iter().zip(expected).zip(values).map(|((expr, labels), value)| json!({
                "expr": expr,
                "eval_time": "10m",
                "exp_samples": [{"labels": labels, "value": value}],
            })).collect::<Vec<_>>(),
        }],
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("utilisation.test.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&tests).unwrap()).unwrap();
    promtool_succeeds(&["test", "rules"], &file);
}
