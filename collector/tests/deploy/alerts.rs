//! The shipped alerts under `promtool test rules`: each fires on the
//! condition it names, with every label and annotation expected, and stays
//! quiet beside it (before its `for`, below its threshold, or on the
//! neighbouring condition).

use super::*;
use crate::artifacts::alert_rules;

/// The labels the Operator puts on every series of a PodMonitor target.
const TARGET: &str = r#"job="netif-collector/netif-collector",namespace="netif-collector",pod="netif-collector-x",container="collector",endpoint="metrics",instance="10.0.0.4:2112""#;

/// The shipped alert rules as a rule file in `dir`.
fn rules_file(dir: &Path) -> PathBuf {
    let rules = dir.join("rules.json");
    std::fs::write(&rules, serde_json::to_vec_pretty(&alert_rules()).unwrap()).unwrap();
    rules
}

/// `labels` plus the target's namespace/pod/instance and `severity`, as the
/// collector alerts keep them (their `by` clause).
fn collector_alert(severity: &str, extra: Value) -> Value {
    let mut labels = json!({
        "namespace": "netif-collector",
        "pod": "netif-collector-x",
        "instance": "10.0.0.4:2112",
        "severity": severity,
    });
    labels
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    labels
}

fn fired(labels: Value, annotations: Value) -> Value {
    json!([{"exp_labels": labels, "exp_annotations": annotations}])
}

/// One promtool test group: series (name with labels, values) and
/// (eval time, alert, expected alerts).
fn group(series: &[(String, &str)], checks: Vec<(&str, &str, Value)>) -> Value {
    json!({
        "interval": "1m",
        "input_series": series
            .iter()
            .map(|(series, values)| json!({"series": series, "values": values}))
            .collect::<Vec<_>>(),
        "alert_rule_test": checks
            .into_iter()
            .map(|(at, alert, expected)| json!({"eval_time": at, "alertname": alert, "exp_alerts": expected}))
            .collect::<Vec<_>>(),
    })
}

/// Every annotation of `alert` in the shipped rules, as promtool renders
/// the `runbook` (which has no template but the pod's name).
fn runbook(alert: &str) -> String {
    alert_rules()["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .find(|r| r["alert"] == alert)
        .unwrap_or_else(|| panic!("no alert {alert}"))["annotations"]["runbook"]
        .as_str()
        .unwrap_or_else(|| panic!("{alert} has no runbook"))
        .replace("{{ $labels.pod }}", "netif-collector-x")
}

#[test]
fn every_alert_has_a_runbook_that_names_what_to_check_next() {
    require_python_modules();
    for group in alert_rules()["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let name = rule["alert"].as_str().unwrap();
            let runbook = rule["annotations"]["runbook"].as_str().unwrap_or("");
            // A command or a metric to look at, not a restated summary.
            assert!(
                runbook.contains('`') || runbook.contains("collector_"),
                "{name}: the runbook names no command or metric to check: {runbook:?}"
            );
            for key in ["summary", "description"] {
                assert!(
                    rule["annotations"][key]
                        .as_str()
                        .is_some_and(|t| !t.is_empty()),
                    "{name}: no {key}"
                );
            }
        }
    }
}

#[test]
fn collector_down_alerts_use_the_job_the_operator_gives_the_podmonitor() {
    require_python_modules();
    let objects = render_overlay("overlays/prometheus-operator");
    let monitor = only(&objects, "PodMonitor");
    // prometheus-operator relabels `job` to <namespace>/<name> of the
    // PodMonitor unless spec.jobLabel takes it from a pod label.
    assert!(
        monitor["spec"]["jobLabel"].is_null(),
        "jobLabel changes the job"
    );
    let job = format!(
        "{}/{}",
        monitor["metadata"]["namespace"].as_str().unwrap(),
        monitor["metadata"]["name"].as_str().unwrap()
    );
    assert!(TARGET.contains(&format!("job=\"{job}\"")), "{job}");
    let scrapes_up = regex::Regex::new(r"\bup\{").unwrap();
    for rule in alert_rules()["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
    {
        let expr = rule["expr"].as_str().unwrap();
        if scrapes_up.is_match(expr) {
            assert!(
                expr.contains(&format!("up{{job=\"{job}\"}}")),
                "{}: {expr} is not about job {job}",
                rule["alert"]
            );
        }
    }
}

#[test]
fn every_alert_fires_on_what_it_names_and_stays_quiet_beside_it() {
    require_python_modules();
    let dir = tempfile::tempdir().unwrap();
    let pod =
        r#"cluster="c",host="node-1",namespace="kube-system",pod="coredns-1",interface="eth0""#;
    let on = |name: &str, labels: &str| format!("{name}{{{TARGET}{labels}}}");
    let pod_alert = json!({"cluster": "c", "host": "node-1", "namespace": "kube-system", "pod": "coredns-1", "severity": "warning"});
    // The pod-level TCP families carry no interface.
    let tcp_pod = r#"cluster="c",host="node-1",namespace="kube-system",pod="coredns-1""#;
    let quiet_pod = r#"cluster="c",host="node-1",namespace="shop",pod="web-1""#;
    let busy_pod = r#"cluster="c",host="node-1",namespace="shop",pod="api-1""#;
    let tcp_alert = pod_alert.clone();
    let groups = vec![
        // 30 drops a minute (150 in 5) fires; 10 a minute (50 in 5) and
        // other reasons of the same pod do not.
        group(
            &[
                (format!("network_pod_drops_total{{{pod},reason=\"SOCKET_RCVBUFF\"}}"), "0+30x40"),
                (format!("network_pod_drops_total{{{},reason=\"SOCKET_RCVBUFF\"}}", pod.replace("eth0", "net1")), "0x40"),
                (r#"network_pod_drops_total{cluster="c",host="node-1",namespace="shop",pod="web-1",interface="eth0",reason="SOCKET_RCVBUFF"}"#.to_string(), "0+10x40"),
                (format!("network_pod_drops_total{{{pod},reason=\"NO_SOCKET\"}}"), "0+500x40"),
            ],
            vec![
                ("12m", "PodSocketReceiveBufferFull", json!([])),
                ("20m", "PodSocketReceiveBufferFull", fired(pod_alert.clone(), json!({
                    "summary": "kube-system/coredns-1: socket receive buffer full",
                    "description": "150 packets dropped in 5 minutes because a socket in the pod did not read fast enough (SOCKET_RCVBUFF).",
                    "runbook": runbook("PodSocketReceiveBufferFull"),
                }))),
            ],
        ),
        // Retransmits at 10% of 20 segments/s fire; the same ratio at 5
        // segments/s (under the traffic guard) and 1% at 100/s do not.
        group(
            &[
                (format!("network_pod_netstat_Tcp_OutSegs_total{{{tcp_pod}}}"), "0+1200x40"),
                (format!("network_pod_netstat_Tcp_RetransSegs_total{{{tcp_pod}}}"), "0+120x40"),
                (format!("network_pod_netstat_Tcp_OutSegs_total{{{quiet_pod}}}"), "0+300x40"),
                (format!("network_pod_netstat_Tcp_RetransSegs_total{{{quiet_pod}}}"), "0+30x40"),
                (format!("network_pod_netstat_Tcp_OutSegs_total{{{busy_pod}}}"), "0+6000x40"),
                (format!("network_pod_netstat_Tcp_RetransSegs_total{{{busy_pod}}}"), "0+60x40"),
            ],
            vec![
                ("12m", "PodTcpRetransmitRatioHigh", json!([])),
                ("25m", "PodTcpRetransmitRatioHigh", fired(tcp_alert.clone(), json!({
                    "summary": "kube-system/coredns-1: 10% of TCP segments retransmitted",
                    "description": "The pod retransmitted more than 5% of the TCP segments it sent for 15 minutes: packets are lost on its path.",
                    "runbook": runbook("PodTcpRetransmitRatioHigh"),
                }))),
            ],
        ),
        // A quarter of the connects timing out fires, for that outcome
        // only; half of two connects a minute (under the guard) does not,
        // nor do failed accepts.
        group(
            &[
                (format!("network_pod_tcp_connections_total{{{tcp_pod},side=\"connect\",outcome=\"established\"}}"), "0+60x40"),
                (format!("network_pod_tcp_connections_total{{{tcp_pod},side=\"connect\",outcome=\"timed_out\"}}"), "0+20x40"),
                (format!("network_pod_tcp_connections_total{{{tcp_pod},side=\"connect\",outcome=\"refused\"}}"), "0x40"),
                (format!("network_pod_tcp_connections_total{{{tcp_pod},side=\"accept\",outcome=\"reset\"}}"), "0+100x40"),
                (format!("network_pod_tcp_connections_total{{{quiet_pod},side=\"connect\",outcome=\"established\"}}"), "0+1x40"),
                (format!("network_pod_tcp_connections_total{{{quiet_pod},side=\"connect\",outcome=\"timed_out\"}}"), "0+1x40"),
            ],
            vec![
                ("8m", "PodTcpConnectFailures", json!([])),
                ("20m", "PodTcpConnectFailures", fired(
                    {
                        let mut labels = tcp_alert.clone();
                        labels["outcome"] = json!("timed_out");
                        labels
                    },
                    json!({
                        "summary": "kube-system/coredns-1: 25% of TCP connects timed_out",
                        "description": "More than 10% of the pod's outgoing TCP connection attempts ended timed_out for 10 minutes.",
                        "runbook": runbook("PodTcpConnectFailures"),
                    }),
                )),
            ],
        ),
        // 5 overflows a minute fire; one a minute does not.
        group(
            &[
                (format!("network_pod_netstat_TcpExt_ListenOverflows_total{{{tcp_pod}}}"), "0+5x40"),
                (format!("network_pod_netstat_TcpExt_ListenOverflows_total{{{quiet_pod}}}"), "0+1x40"),
            ],
            vec![
                ("8m", "PodTcpListenOverflows", json!([])),
                ("20m", "PodTcpListenOverflows", fired(tcp_alert.clone(), json!({
                    "summary": "kube-system/coredns-1: TCP accept queue overflowing",
                    "description": "25 connections dropped in 5 minutes because a listener's accept queue in the pod was full.",
                    "runbook": runbook("PodTcpListenOverflows"),
                }))),
            ],
        ),
        // 3 insert failures a minute on one node fire; one a minute on
        // another does not.
        group(
            &[
                (on("network_conntrack_stat_insert_failed_total", r#",cluster="c",host="node-1""#), "0+3x40"),
                (on("network_conntrack_stat_insert_failed_total", r#",cluster="c",host="node-2""#).replace("10.0.0.4", "10.0.0.5"), "0+1x40"),
            ],
            vec![
                ("8m", "NodeConntrackInsertFailures", json!([])),
                ("20m", "NodeConntrackInsertFailures", fired(json!({"cluster": "c", "host": "node-1", "severity": "warning"}), json!({
                    "summary": "node-1: conntrack insertions failing",
                    "description": "15 conntrack entries could not be inserted in 5 minutes on the node: packets dropped, DNS lookups delayed by 5 seconds.",
                    "runbook": runbook("NodeConntrackInsertFailures"),
                }))),
            ],
        ),
        // A table at 95% fires; one at 50% does not.
        group(
            &[
                (on("network_conntrack_entries", r#",cluster="c",host="node-1""#), "950x30"),
                (on("network_conntrack_entries_limit", r#",cluster="c",host="node-1""#), "1000x30"),
                (on("network_conntrack_entries", r#",cluster="c",host="node-2""#).replace("10.0.0.4", "10.0.0.5"), "500x30"),
                (on("network_conntrack_entries_limit", r#",cluster="c",host="node-2""#).replace("10.0.0.4", "10.0.0.5"), "1000x30"),
            ],
            vec![
                ("5m", "NodeConntrackTableNearlyFull", json!([])),
                ("15m", "NodeConntrackTableNearlyFull", fired(json!({"cluster": "c", "host": "node-1", "severity": "warning"}), json!({
                    "summary": "node-1: conntrack table 95% full",
                    "description": "The node's conntrack table has been above 90% of nf_conntrack_max for 10 minutes; at the limit new connections are dropped.",
                    "runbook": runbook("NodeConntrackTableNearlyFull"),
                }))),
            ],
        ),
        // A target down for 5 minutes; one that came back is quiet.
        group(
            &[
                (on("up", ""), "1 1 0x10"),
                (format!("up{{{}}}", TARGET.replace("netif-collector-x", "netif-collector-y").replace("10.0.0.4", "10.0.0.5")), "1 0 0 1x10"),
            ],
            vec![
                ("5m", "NetifCollectorDown", json!([])),
                ("8m", "NetifCollectorDown", fired(json!({
                    "job": "netif-collector/netif-collector", "namespace": "netif-collector", "pod": "netif-collector-x",
                    "container": "collector", "endpoint": "metrics", "instance": "10.0.0.4:2112", "severity": "warning",
                }), json!({
                    "summary": "netif-collector-x (10.0.0.4:2112): collector not scraped",
                    "description": "Prometheus has failed to scrape 10.0.0.4:2112 for 5 minutes; that node's interface metrics are missing.",
                    "runbook": runbook("NetifCollectorDown"),
                }))),
                ("8m", "NetifCollectorAbsent", json!([])),
            ],
        ),
        // No target of the job at all (another job's up does not count).
        group(
            &[(r#"up{job="kube-state-metrics",instance="10.0.0.9:8080"}"#.to_string(), "1x30")],
            vec![
                ("10m", "NetifCollectorAbsent", json!([])),
                ("20m", "NetifCollectorAbsent", fired(json!({
                    "job": "netif-collector/netif-collector", "severity": "warning",
                }), json!({
                    "summary": "No netif-collector target is scraped",
                    "description": "Prometheus has had no target of the PodMonitor netif-collector/netif-collector for 15 minutes.",
                    "runbook": runbook("NetifCollectorAbsent"),
                }))),
            ],
        ),
        // netlink failing every few minutes fires; eBPF that failed once
        // and pods (their own alert) do not.
        group(
            &[
                (on("collector_source_up", r#",source="netlink""#), "1 0 1 1 0 1 1 0 1 1 0 1 1 0 1 1 0 1 1 0 1 1 0 1 1 0 1 1 0 1"),
                (on("collector_source_up", r#",source="ebpf""#), "1 0 1x30"),
                (on("collector_source_up", r#",source="pods""#), "0x30"),
            ],
            vec![
                ("10m", "NetifCollectorSourceFailing", json!([])),
                ("25m", "NetifCollectorSourceFailing", fired(collector_alert("warning", json!({"source": "netlink"})), json!({
                    "summary": "netif-collector-x: netlink collection failing",
                    "description": "collector_source_up{source=\"netlink\"} has been 0 at least once in every 10 minutes for 15 minutes.",
                    "runbook": runbook("NetifCollectorSourceFailing"),
                }))),
            ],
        ),
        group(
            &[
                (on("collector_ebpf_map_full_total", r#",map="drops""#), "0 0 5 5 5"),
                (on("collector_ebpf_map_full_total", r#",map="traffic""#), "0 0 0 0 0"),
            ],
            vec![
                ("1m", "NetifCollectorEbpfMapFull", json!([])),
                ("3m", "NetifCollectorEbpfMapFull", fired(collector_alert("warning", json!({"map": "drops"})), json!({
                    "summary": "netif-collector-x: BPF map drops full, counts lost",
                    "description": "collector_ebpf_map_full_total{map=\"drops\"} rose: probe updates are being lost.",
                    "runbook": runbook("NetifCollectorEbpfMapFull"),
                }))),
            ],
        ),
        group(
            &[(on("collector_pod_identity_up", ""), "1 1 0x30")],
            vec![
                ("10m", "NetifCollectorPodIdentityDown", json!([])),
                ("20m", "NetifCollectorPodIdentityDown", fired(collector_alert("warning", json!({})), json!({
                    "summary": "netif-collector-x: pods are not named on this node",
                    "description": "collector_pod_identity_up is 0: the CNI results directory is unreadable; drops inside pods are served without pod labels.",
                    "runbook": runbook("NetifCollectorPodIdentityDown"),
                }))),
            ],
        ),
        // A probe not attached while eBPF is loaded fires; the same on a
        // collector whose eBPF is off is NetifCollectorEbpfDisabled's.
        group(
            &[
                (on("collector_ebpf_enabled", ""), "1x30"),
                (on("collector_ebpf_probe_attached", r#",program="count_drop""#), "1x30"),
                (on("collector_ebpf_probe_attached", r#",program="count_rx""#), "1 0x30"),
                (format!("collector_ebpf_enabled{{{}}}", TARGET.replace("netif-collector-x", "netif-collector-z")), "0x30"),
                (format!("collector_ebpf_probe_attached{{{},program=\"count_rx\"}}", TARGET.replace("netif-collector-x", "netif-collector-z")), "0x30"),
            ],
            vec![
                ("10m", "NetifCollectorProbeDetached", json!([])),
                ("20m", "NetifCollectorProbeDetached", fired(collector_alert("warning", json!({"program": "count_rx"})), json!({
                    "summary": "netif-collector-x: probe count_rx not attached",
                    "description": "eBPF is loaded but count_rx is not attached, so what it counts is missing from this node.",
                    "runbook": runbook("NetifCollectorProbeDetached"),
                }))),
                ("20m", "NetifCollectorEbpfDisabled", fired(json!({
                    "namespace": "netif-collector", "pod": "netif-collector-z", "instance": "10.0.0.4:2112", "severity": "info",
                }), json!({
                    "summary": "netif-collector-z: eBPF probes disabled, no drop reasons from this node",
                    "description": "collector_ebpf_enabled is 0.",
                    "runbook": runbook("NetifCollectorEbpfDisabled").replace("netif-collector-x", "netif-collector-z"),
                }))),
            ],
        ),
        // Read errors still rising after 15 minutes fire; a burst that
        // stopped does not.
        group(
            &[
                (on("collector_ebpf_kernel_read_errors_total", ""), "0+3x40"),
                (format!("collector_ebpf_kernel_read_errors_total{{{}}}", TARGET.replace("netif-collector-x", "netif-collector-y")), "0 50 50x40"),
            ],
            vec![
                ("10m", "NetifCollectorKernelReadErrors", json!([])),
                ("30m", "NetifCollectorKernelReadErrors", fired(collector_alert("warning", json!({})), json!({
                    "summary": "netif-collector-x: probe reads of kernel memory failing",
                    "description": "collector_ebpf_kernel_read_errors_total rose in every 10 minutes for 15 minutes (30 in the last 10).",
                    "runbook": runbook("NetifCollectorKernelReadErrors"),
                }))),
            ],
        ),
    ];
    let tested: BTreeSet<String> = groups
        .iter()
        .flat_map(|g| g["alert_rule_test"].as_array().unwrap().clone())
        .filter(|t| !t["exp_alerts"].as_array().unwrap().is_empty())
        .map(|t| t["alertname"].as_str().unwrap().to_string())
        .collect();
    let pod_and_collector_alerts: BTreeSet<String> = alert_rules()["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["name"] != "netif-collector.interfaces")
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .map(|r| r["alert"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        tested, pod_and_collector_alerts,
        "every pod and collector alert is tested firing"
    );
    let tests = json!({
        "rule_files": [rules_file(dir.path())],
        "evaluation_interval": "1m",
        "tests": groups,
    });
    let test_file = dir.path().join("alerts.test.json");
    std::fs::write(&test_file, serde_json::to_vec_pretty(&tests).unwrap()).unwrap();
    let output = tool(
        "promtool",
        &["test", "rules", test_file.to_str().unwrap()],
        None,
    );
    let report = text(&output);
    assert!(
        output.status.success() && report.contains("SUCCESS"),
        "{report}"
    );
}
