//! Everything asked of one Prometheus once the traffic is scraped: the
//! collector's labels, the seed's, READMEs', dashboard's and alerts'
//! queries, and the pod each per-pod answer names.

use super::*;
use crate::artifacts::{dashboard, dashboard_targets, variable_query};

pub(super) fn every_query(
    prometheus: &PrometheusServer,
    pods: &Pods,
    labels: &BTreeMap<String, String>,
) {
    app_pod_series_name_the_app_pod(prometheus, pods);

    // The labels of the DaemonSet's COLLECTOR_LABEL reach Prometheus.
    for (key, value) in labels {
        let values = prometheus.api(&format!(
            "/api/v1/label/{key}/values?match[]={}",
            url_encode("network_interface_stats_rx_bytes")
        ));
        assert_eq!(values, json!([value]), "label {key}");
    }

    for query in SEED_QUERIES {
        check_query(prometheus, pods, "seed", query, false);
    }
    // The seed's throughput-by-node query sees the traffic sent.
    let by_host = prometheus.query(SEED_RX_THROUGHPUT_BY_NODE);
    assert_eq!(by_host.len(), 1, "{by_host:?}");
    assert_eq!(by_host[0]["metric"]["host"], TEST_NODE);
    let rate: f64 = by_host[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(rate > 0.0, "eth0 receive rate {rate}");
    for (origin, query) in documented_queries() {
        check_query(prometheus, pods, &origin, &query, false);
    }

    dashboard_panels(prometheus, pods, labels);
    alerts(prometheus, pods);
}

/// The series the collector labels with an app pod keep its labels: the
/// target's `namespace` and `pod` (the collector's pod) neither replace
/// them nor push them to `exported_*`.
fn app_pod_series_name_the_app_pod(prometheus: &PrometheusServer, pods: &Pods) {
    for metric in [
        "network_interface_pod_info",
        "network_pod_drops_total",
        "network_pod_netstat_Tcp_ActiveOpens_total",
    ] {
        let rows = prometheus.query(metric);
        assert!(!rows.is_empty(), "{}: no {metric}", prometheus.overlay);
        for row in rows {
            let m = &row["metric"];
            assert_eq!(
                (&m["namespace"], &m["pod"]),
                (&json!(pods.app.0), &json!(pods.app.1)),
                "{}: {metric} names {}/{}, not the app pod {}/{} (exported_pod={}): \
                 the scrape replaced the collector's labels with the target's; \
                 is honorLabels set in the PodMonitor?",
                prometheus.overlay,
                m["namespace"],
                m["pod"],
                pods.app.0,
                pods.app.1,
                m["exported_pod"]
            );
        }
    }
}

/// Dashboard variables, as Grafana would resolve them, then every panel;
/// the pod panels name the test's pod, and only it.
fn dashboard_panels(prometheus: &PrometheusServer, pods: &Pods, labels: &BTreeMap<String, String>) {
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
        let values = prometheus.api(&format!(
            "/api/v1/label/{}/values?match[]={}",
            &parts[2],
            url_encode(&parts[1])
        ));
        assert!(
            values.as_array().unwrap().iter().any(|v| v == expected),
            "variable {name} offers {values}, not {expected}"
        );
    }
    for (title, target) in dashboard_targets(&dashboard) {
        let expr = substitute(target["expr"].as_str().unwrap());
        let range = target["instant"] != true;
        check_query(
            prometheus,
            pods,
            &format!("dashboard {title:?}"),
            &expr,
            range,
        );
    }
    let panel = |title: &str| {
        let (_, target) = dashboard_targets(&dashboard)
            .into_iter()
            .find(|(t, _)| t == title)
            .unwrap_or_else(|| panic!("no panel {title:?}"));
        prometheus.query(&substitute(target["expr"].as_str().unwrap()))
    };
    let app = (pods.app.0.as_str(), pods.app.1.as_str());
    for title in [
        "Top pods by drops on their host veth",
        "Top pods by traffic",
    ] {
        let rows = panel(title);
        let named: Vec<(&str, &str)> = rows
            .iter()
            .map(|r| {
                let m = &r["metric"];
                (m["namespace"].as_str().unwrap(), m["pod"].as_str().unwrap())
            })
            .collect();
        assert_eq!(named, [app], "{title}: {rows:?}");
        let value: f64 = rows[0]["value"][1].as_str().unwrap().parse().unwrap();
        assert!(value > 0.0, "{title}: {value}");
    }
    // The pod's drops by reason, inside its namespace, name it and its
    // reason: the flooded socket's at a positive rate (the datagrams sent
    // to a closed port of the pod since may add a NO_SOCKET row).
    let rows = panel("Drops inside pods, by reason");
    let named: Vec<(&str, &str, &str, f64)> = rows
        .iter()
        .map(|r| {
            let m = &r["metric"];
            let label = |key: &str| m[key].as_str().unwrap();
            let rate = r["value"][1].as_str().unwrap().parse().unwrap();
            (label("namespace"), label("pod"), label("reason"), rate)
        })
        .collect();
    assert!(
        named.iter().all(|(ns, pod, ..)| (*ns, *pod) == app),
        "{rows:?}"
    );
    assert!(
        named
            .iter()
            .any(|(.., reason, rate)| *reason == "SOCKET_RCVBUFF" && *rate > 0.0),
        "{rows:?}"
    );
}

/// The alerts: all loaded and evaluated by Prometheus without error, every
/// expression run; the one for a full receive buffer pending for the app
/// pod, and paging with its name.
fn alerts(prometheus: &PrometheusServer, pods: &Pods) {
    let defined: Vec<Value> = alert_rules()["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let loaded: Vec<Value> = prometheus.api("/api/v1/rules")["groups"]
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
        let expr = rule["expr"].as_str().unwrap();
        check_query(prometheus, pods, &format!("alert {name}"), expr, false);
    }
    let rule = defined
        .iter()
        .find(|r| r["alert"] == "PodSocketReceiveBufferFull")
        .expect("the SOCKET_RCVBUFF alert");
    let firing = prometheus.query(rule["expr"].as_str().unwrap());
    assert_eq!(firing.len(), 1, "{firing:?}");
    // Pending (its `for` is minutes), with labels and annotations as an
    // Alertmanager would get them.
    let alert = prometheus.api("/api/v1/alerts")["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["labels"]["alertname"] == "PodSocketReceiveBufferFull")
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "{}: PodSocketReceiveBufferFull not active",
                prometheus.overlay
            )
        });
    assert_eq!(
        (&alert["labels"]["namespace"], &alert["labels"]["pod"]),
        (&json!(pods.app.0), &json!(pods.app.1)),
        "{}: {alert}",
        prometheus.overlay
    );
    let summary = alert["annotations"]["summary"].as_str().unwrap();
    assert!(
        summary.starts_with(&format!("{}/{}:", pods.app.0, pods.app.1)),
        "{}: {summary}",
        prometheus.overlay
    );
    println!("ok {}: alert pending: {summary}", prometheus.overlay);
}
