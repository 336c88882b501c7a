//! The seed's, dashboard's and alerts' PromQL on a real Prometheus scraping
//! the collector over TLS with basic auth.

mod server;

use super::*;
use crate::artifacts::{alert_rules, dashboard, dashboard_targets, variable_query};
use server::*;

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
        regex::Regex::new(r"\b(?:network_interface|network_pod|collector)_[a-z_]+(?:\{[^}]*\})?")
            .unwrap();
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
    // Scraped as a PodMonitor with `scheme: https` and `basicAuth` does:
    // TLS against the collector's CA, a bcrypt user of the web config.
    let (user, password) = ("prometheus", "scrape-secret");
    let pki = TlsFixture::new("", &basic_auth_users(user, password));
    let web_config = pki.web_config();
    let mut args = vec![
        "--label",
        &label_arg,
        "--cni-results-dir",
        results.path().to_str().unwrap(),
        "--web.config.file",
        &web_config,
    ];
    args.extend_from_slice(profile);
    let collector = CollectorProcess::start(&ns, &args);
    let config = json!({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{
            "job_name": "netif-collector",
            "scheme": "https",
            "tls_config": {"ca_file": pki.path("ca.pem")},
            "basic_auth": {"username": user, "password": password},
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

    // Inside the pod: a UDP socket that never reads, with the smallest
    // receive buffer, flooded twice (SOCKET_RCVBUFF in the pod's namespace).
    let starved = udp_socket(&pod.netns, "0.0.0.0:5353", 0);
    let in_pod =
        r#"network_pod_drops_total{namespace="shop", pod="web-0", reason="SOCKET_RCVBUFF"}"#;
    send_udp(&ns, &format!("{}:5353", pod.pod_address), 200, 64);
    wait_for(
        &ns,
        &format!("{in_pod} > 0"),
        "drops inside the pod",
        &prometheus,
    );
    send_udp(&ns, &format!("{}:5353", pod.pod_address), 200, 64);
    wait_for(
        &ns,
        &format!("increase({in_pod}[1m]) > 0"),
        "more drops inside the pod in a later scrape",
        &prometheus,
    );
    drop(starved);

    // The seed's counters carry the interface's admin `state`: a veth that
    // goes down and up again splits each into two series within the rate
    // window. Every query below runs with both there, so a join that
    // matches on (interface, host) without dropping `state` fails.
    let flip = |state: &str| {
        ns.ip(&["link", "set", pod.veth(), state]);
        // Two samples in the state, so rate() sees the new series.
        let series = format!(
            r#"count_over_time(network_interface_stats_rx_bytes{{interface="{}", state="{state}"}}[5s]) >= 2"#,
            pod.veth()
        );
        wait_for(
            &ns,
            &series,
            &format!("the veth scraped {state}"),
            &prometheus,
        );
    };
    flip("down");
    flip("up");
    send_udp(&ns, &format!("{}:9", pod.pod_address), 20, 64);

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
    for title in [
        "Top pods by drops on their host veth",
        "Top pods by traffic",
    ] {
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

    // The pod's drops by reason, inside its namespace, name it and its
    // reason; the alert for a full receive buffer fires for it.
    let (_, target) = dashboard_targets(&dashboard)
        .into_iter()
        .find(|(t, _)| t == "Drops inside pods, by reason")
        .expect("the panel of drops inside pods");
    let rows = instant_query(&ns, &substitute(target["expr"].as_str().unwrap()));
    let named: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| {
            let m = &r["metric"];
            let label = |key: &str| m[key].as_str().unwrap();
            (label("namespace"), label("pod"), label("reason"))
        })
        .collect();
    assert_eq!(named, [("shop", "web-0", "SOCKET_RCVBUFF")], "{rows:?}");
    let rule = alert_rules()["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .find(|r| r["alert"] == "PodSocketReceiveBufferFull")
        .expect("the SOCKET_RCVBUFF alert");
    let firing = instant_query(&ns, rule["expr"].as_str().unwrap());
    assert_eq!(firing.len(), 1, "{firing:?}");
    assert_eq!(firing[0]["metric"]["pod"], "web-0");

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
