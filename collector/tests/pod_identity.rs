//! Pod identity on real kernel objects: pods made through containerd's CRI
//! (RunPodSandbox), laid out by containerd and the stock bridge plugin (a
//! `cni-<uuid>` namespace, a host veth on the bridge, libcni's cache files
//! in containerd 1.6's shape). Hand-written cache files only for what no
//! runtime here writes (Multus, files caught half-written or stale). The
//! collector runs in a namespace standing for the node, with every
//! capability dropped.

#[path = "pod_identity/by_hand.rs"]
mod by_hand;
mod common;
#[path = "pod_identity/netns_dir.rs"]
mod netns_dir;
#[path = "pod_identity/plugins.rs"]
mod plugins;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// (interface -> (namespace, pod, pod_uid)) of every pod info series.
fn pod_info(metrics: &Metrics) -> BTreeMap<String, (String, String, String)> {
    metrics
        .select("network_interface_pod_info", &[])
        .map(|s| {
            let l = &s.labels;
            (
                l["interface"].clone(),
                (
                    l["namespace"].clone(),
                    l["pod"].clone(),
                    l["pod_uid"].clone(),
                ),
            )
        })
        .collect()
}

fn expected(pods: &[&Pod]) -> BTreeMap<String, (String, String, String)> {
    pods.iter()
        .map(|pod| {
            (
                pod.veth().to_string(),
                (pod.namespace.clone(), pod.name.clone(), pod.uid.clone()),
            )
        })
        .collect()
}

/// The same for a hand-made pod: each of its attachments' host veths.
fn expected_by_hand(pod: &CniPod) -> BTreeMap<String, (String, String, String)> {
    pod.attachments
        .iter()
        .map(|(veth, _, _)| {
            (
                veth.clone(),
                (pod.namespace.clone(), pod.name.clone(), pod.uid.clone()),
            )
        })
        .collect()
}

fn start(node: &Netns, results: &Path) -> CollectorProcess {
    CollectorProcess::start(
        node,
        &[
            "--no-ebpf",
            "--cni-results-dir",
            results.to_str().unwrap(),
            "--netns-dir",
            "/var/run/netns",
        ],
    )
}

/// `collector snapshot` in `node` (format `json` or `table`).
fn snapshot(node: &Netns, results: &Path, format: &str) -> String {
    let output = collector_command("ip")
        .args([
            "netns",
            "exec",
            &node.name,
            COLLECTOR,
            "snapshot",
            "--no-ebpf",
        ])
        .args([
            "--window",
            "0s",
            "--node-name",
            "test-node",
            "--format",
            format,
        ])
        .args(["--cni-results-dir", results.to_str().unwrap()])
        .output()
        .expect("running collector snapshot");
    assert!(
        output.status.success(),
        "snapshot: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn capabilities_dropped(collector: &CollectorProcess) {
    let status = std::fs::read_to_string(format!("/proc/{}/status", collector.pid())).unwrap();
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim();
    assert_eq!(
        effective, "0000000000000000",
        "reads below happen without capabilities"
    );
}

#[test]
fn each_pod_containerd_makes_is_named_in_metrics_json_and_table() {
    require_root();
    let node = Netns::new("podnode");
    let runtime = PodRuntime::start(&node, 80);
    let dir = &runtime.results_dir();
    let pods = [
        runtime.run_pod(("kube-system", "coredns-5d78c9869d-x2x4q")),
        runtime.run_pod(("shop", "cart-0")),
        runtime.run_pod(("shop", "web-7d9f8c6b5-abcde")),
        runtime.run_pod(("default", "kubenet-pod")),
    ];
    // What must not break a scrape, next to what containerd wrote: a file
    // caught half-written, and a stale one whose netns is gone (copies of
    // a real one under other names).
    let real = std::fs::read_to_string(pods[1].cache_file()).unwrap();
    write_like_libcni(
        &dir.join(format!("{NETWORK}-half-eth0")),
        &real.as_bytes()[..real.len() / 2],
    );
    let stale = real
        .replace(
            &pods[1].netns.name,
            "cni-00000000-dead-beef-0000-000000000000",
        )
        .replace(&pods[1].container_id, "0badc0de");
    write_like_libcni(&dir.join(format!("{NETWORK}-stale-eth0")), stale.as_bytes());

    let collector = start(&node, dir);
    let metrics = collector.scrape(&node);
    capabilities_dropped(&collector);
    let all: Vec<&Pod> = pods.iter().collect();
    assert_eq!(pod_info(&metrics), expected(&all));
    assert_eq!(metrics.value("collector_pod_identity_up", &[]), 1.0);
    assert_eq!(
        metrics.value(
            "collector_pod_identity_errors_total",
            &[("reason", "malformed")]
        ),
        1.0,
        "the half-written file"
    );
    assert_eq!(
        metrics.value(
            "collector_pod_identity_errors_total",
            &[("reason", "netns")]
        ),
        1.0,
        "the stale file"
    );
    // The per-interface series are unchanged: every veth and lo served.
    for pod in &pods {
        assert!(metrics.interfaces().contains(pod.veth()), "{}", pod.veth());
    }
    // Files are read once per version: a second scrape counts nothing new.
    let again = collector.scrape(&node);
    assert_eq!(
        again.value(
            "collector_pod_identity_errors_total",
            &[("reason", "malformed")]
        ),
        1.0
    );
    assert_eq!(pod_info(&again), expected(&all));

    let json: serde_json::Value = serde_json::from_str(&snapshot(&node, dir, "json")).unwrap();
    let by_name: BTreeMap<&str, &serde_json::Value> = json["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["name"].as_str().unwrap(), i))
        .collect();
    for pod in &pods {
        let seen = &by_name[pod.veth()]["pod"];
        assert_eq!(seen["namespace"], pod.namespace.as_str());
        assert_eq!(seen["pod"], pod.name.as_str());
        assert_eq!(seen["pod_uid"], pod.uid.as_str());
        assert_eq!(seen["container_id"], pod.container_id.as_str());
        assert_eq!(seen["pod_interface"], "eth0");
        assert!(by_name[pod.veth()]["link_netnsid"].as_i64().is_some());
    }
    assert!(by_name["lo"]["pod"].is_null());
    assert_eq!(json["sources"]["pod_identity"]["up"], true);
    // Per pod: eth0 on the bridge network and go-cni's loopback.
    assert_eq!(json["sources"]["pod_identity"]["attachments"], 8);

    let table = snapshot(&node, dir, "table");
    assert!(table.lines().next().unwrap().contains(" POD "), "{table}");
    for pod in &pods {
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("{} ", pod.veth())))
            .unwrap_or_else(|| panic!("no row for {}: {table}", pod.veth()));
        assert!(
            row.contains(&format!(" {}/{} ", pod.namespace, pod.name)),
            "{row}"
        );
    }
}

#[test]
fn a_multus_pod_maps_each_of_its_veths_to_its_own_attachment() {
    require_root();
    let node = Netns::new("multus");
    let results = tempfile::tempdir().unwrap();
    let dir = results.path();
    let mut pod = CniPod::start(
        &node,
        dir,
        ("telco", "upf-0"),
        "k8s-pod-network",
        "cali9f8e7d6c5b4",
        84,
    );
    pod.attach(&node, dir, "macvlan-data", "net1", "veth0badc0de", 85);
    let collector = start(&node, dir);
    assert_eq!(pod_info(&collector.scrape(&node)), expected_by_hand(&pod));
    let json: serde_json::Value = serde_json::from_str(&snapshot(&node, dir, "json")).unwrap();
    for (veth, if_name, network) in [
        ("cali9f8e7d6c5b4", "eth0", "k8s-pod-network"),
        ("veth0badc0de", "net1", "macvlan-data"),
    ] {
        let interface = json["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == veth)
            .unwrap();
        assert_eq!(interface["pod"]["pod_interface"], if_name, "{veth}");
        assert_eq!(interface["pod"]["network"], network, "{veth}");
    }
}

#[test]
fn a_missing_results_directory_is_logged_once_and_recovers_when_it_appears() {
    require_root();
    let node = Netns::new("nocni");
    // A fresh node: libcni makes its results directory at the first pod.
    let runtime = PodRuntime::start(&node, 86);
    let dir = runtime.results_dir();
    assert!(!dir.exists());
    let collector = start(&node, &dir);
    for _ in 0..3 {
        let metrics = collector.scrape(&node);
        assert_eq!(metrics.value("collector_pod_identity_up", &[]), 0.0);
        assert!(
            metrics.interfaces().contains("lo"),
            "everything else is served"
        );
    }
    let failing = collector.scrape(&node);
    assert!(
        failing.value(
            "collector_pod_identity_errors_total",
            &[("reason", "directory")]
        ) >= 4.0
    );
    let pod = runtime.run_pod(("late", "pod-1"));
    let metrics = collector.scrape(&node);
    assert_eq!(metrics.value("collector_pod_identity_up", &[]), 1.0);
    assert_eq!(pod_info(&metrics), expected(&[&pod]));
    let (status, log) = collector.stop();
    assert!(status.success(), "{log}");
    assert_eq!(
        log.matches("cannot list the CNI results directory").count(),
        1,
        "logged once: {log}"
    );
    assert!(log.contains("readable again"), "{log}");
}

#[test]
fn pods_that_come_and_go_while_scraping_are_followed_by_the_info_series() {
    require_root();
    let node = Netns::new("podchurn");
    let runtime = PodRuntime::start(&node, 100);
    let collector = start(&node, &runtime.results_dir());
    let mut live: Vec<Pod> = Vec::new();
    let started = Instant::now();
    for round in 0..8u8 {
        // Two pods start, the oldest one goes (veth with its netns).
        for i in 0..2u8 {
            let n = round * 2 + i;
            live.push(runtime.run_pod(("churn", &format!("pod-{n}"))));
        }
        if round % 2 == 1 {
            live.remove(0).delete();
        }
        let metrics = collector.scrape(&node);
        let want = expected(&live.iter().collect::<Vec<_>>());
        assert_eq!(pod_info(&metrics), want, "round {round}");
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "churn too slow"
        );
    }
    for pod in live.drain(..) {
        pod.delete();
    }
    let metrics = collector.scrape(&node);
    assert!(pod_info(&metrics).is_empty(), "series go with their veths");
    assert_eq!(
        metrics.value(
            "collector_pod_identity_errors_total",
            &[("reason", "netns")]
        ),
        0.0,
        "containerd removed the cache files before the namespaces"
    );
}
