//! The seed's, READMEs', dashboard's and alerts' PromQL on real Prometheus
//! servers scraping the collector as each overlay's PodMonitor makes the
//! Prometheus Operator scrape it: over TLS with basic auth, with the
//! target labels of the collector's pod.

mod checks;
mod operator;
mod queries;
mod server;

use std::net::{TcpListener, TcpStream};

use super::*;
use crate::artifacts::alert_rules;
use operator::*;
use queries::*;
use server::*;

/// The overlays whose PodMonitor is scraped through, each by a Prometheus
/// of its own on the next port from [`PROMETHEUS_PORT`].
const OVERLAYS: [&str; 2] = ["overlays/azure", "overlays/prometheus-operator"];

#[test]
fn seed_dashboard_and_alert_queries_return_data_from_a_real_prometheus() {
    queries_return_data_from_a_real_prometheus(&[]);
}

#[test]
fn the_same_queries_return_data_with_detailed_metrics() {
    queries_return_data_from_a_real_prometheus(&["--detailed-metrics"]);
}

/// One overlay's PodMonitor as an operator following docs/operations.md
/// deploys it, and the collector pod it scrapes.
struct Monitored {
    overlay: &'static str,
    monitor: Value,
    pod: CollectorPod,
}

impl Monitored {
    /// The overlay's rendered PodMonitor with the transport settings of the
    /// documented `example` (scheme, tlsConfig, basicAuth); every other
    /// field, honorLabels included, as shipped.
    fn new(overlay: &'static str, example: &Value) -> Monitored {
        let objects = render_overlay(overlay);
        let mut monitor = only(&objects, "PodMonitor").clone();
        for endpoint in monitor["spec"]["podMetricsEndpoints"]
            .as_array_mut()
            .unwrap()
        {
            for field in ["scheme", "tlsConfig", "basicAuth"] {
                endpoint[field] = example[field].clone();
            }
        }
        Monitored {
            overlay,
            pod: CollectorPod::of(&objects),
            monitor,
        }
    }

    fn endpoint_port(&self) -> String {
        let endpoints = self.monitor["spec"]["podMetricsEndpoints"]
            .as_array()
            .unwrap();
        assert_eq!(endpoints.len(), 1, "{}: one endpoint", self.overlay);
        endpoints[0]["port"].as_str().unwrap().to_string()
    }

    fn server_name(&self) -> &str {
        self.monitor["spec"]["podMetricsEndpoints"][0]["tlsConfig"]["serverName"]
            .as_str()
            .expect("the documented tlsConfig names the server")
    }

    /// The labels the Operator's relabelings give the target.
    fn target_labels(&self) -> BTreeMap<&'static str, String> {
        let metadata = &self.monitor["metadata"];
        BTreeMap::from([
            ("namespace", self.pod.namespace.clone()),
            ("pod", self.pod.name.clone()),
            ("container", self.pod.container.clone()),
            ("endpoint", self.endpoint_port()),
            (
                "job",
                format!(
                    "{}/{}",
                    metadata["namespace"].as_str().unwrap(),
                    metadata["name"].as_str().unwrap()
                ),
            ),
        ])
    }
}

/// Every seed, README, dashboard and alert query against one real
/// Prometheus per overlay, all scraping a collector started with `profile`
/// flags.
fn queries_return_data_from_a_real_prometheus(profile: &[&str]) {
    require_root();
    require_python_modules();
    // Scraped as the documented https + basic auth example says, through
    // each overlay's PodMonitor.
    let example = documented_scrape_endpoints()
        .into_iter()
        .find(|e| e.get("basicAuth").is_some())
        .expect("docs/operations.md has an https + basicAuth example");
    let monitored: Vec<Monitored> = OVERLAYS
        .into_iter()
        .map(|overlay| Monitored::new(overlay, &example))
        .collect();
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
    // Its sandbox process, through which the collector reads the pod's
    // own SNMP counters (network_pod_netstat_*).
    let _sandbox = pod.sandbox_process();
    // TLS against the collector's CA, with a certificate for the name the
    // documented tlsConfig verifies, and a bcrypt user of the web config.
    let (user, password) = ("prometheus", "scrape-secret");
    let pki = TlsFixture::new("", &basic_auth_users(user, password));
    let mut names = vec!["127.0.0.1", "localhost"];
    names.extend(monitored.iter().map(Monitored::server_name));
    let (cert, key) = pki.ca.leaf(&names, false);
    replace(&pki.path("server.key"), &key);
    replace(&pki.path("server.pem"), &cert);
    let web_config = pki.web_config();
    let mut args = vec![
        "--label",
        &label_arg,
        "--cni-results-dir",
        results.path().to_str().unwrap(),
        "--web.config.file",
        &web_config,
        // Every family the views read: the default probes and the traffic
        // ones the seed's eBPF panels use.
        "--ebpf-probes",
        "rx,tx,drops,tcp",
    ];
    args.extend_from_slice(profile);
    let collector = CollectorProcess::start(&ns, &args);

    // What the Secrets and the ConfigMap the example refers to hold.
    let assets = Assets::from([
        (
            referenced(&example["tlsConfig"]["ca"], "ConfigMap"),
            pki.path("ca.pem").display().to_string(),
        ),
        (
            referenced(&example["basicAuth"]["username"], "Secret"),
            user.to_string(),
        ),
        (
            referenced(&example["basicAuth"]["password"], "Secret"),
            password.to_string(),
        ),
    ]);

    let servers: Vec<PrometheusServer> = monitored
        .iter()
        .zip(PROMETHEUS_PORT..)
        .map(|(m, port)| {
            assert_eq!(
                collector.port,
                m.pod.port(&m.endpoint_port()),
                "{}: the collector listens on the pod's metrics port",
                m.overlay
            );
            let mut jobs = scrape_jobs(&m.monitor, &m.pod, &assets);
            for job in &mut jobs {
                // The monitor's interval would have the test wait minutes
                // for two samples of a rate.
                assert!(job["scrape_interval"].is_string(), "{job}");
                job["scrape_interval"] = json!("1s");
            }
            let config = json!({
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": jobs,
            });
            PrometheusServer::start(&ns, m.overlay, port, &config, &alert_rules())
        })
        .collect();
    let wait_for = |expr: &str, what: &str| {
        for server in &servers {
            server.wait_for(expr, what);
        }
    };
    wait_for("up == 1", "the first scrape");
    for (server, m) in servers.iter().zip(&monitored) {
        let mut other_ports: Vec<String> = m.pod.other_ports(&m.endpoint_port());
        other_ports.sort();
        check_target(server, &m.target_labels(), &other_ports);
    }
    // Prometheus asks for gzip on every scrape, and gets it.
    wait_for(
        r#"collector_http_responses_total{encoding="gzip"} > 0"#,
        "a gzip-compressed scrape",
    );

    // After the first scrape, so rates see it: traffic in both directions
    // on eth0, and datagrams to a closed port (NO_SOCKET drops).
    let sink = udp_listener(&ns, &format!("{}:9000", pair.a_addr));
    send_udp(&peer, &format!("{}:9000", pair.a_addr), 100, 200);
    assert_eq!(receive_all(&sink, 100), 100);
    send_udp(&peer, &format!("{}:9", pair.a_addr), 20, 64);
    send_udp(&ns, &format!("{}:9", pair.b_addr), 20, 64);
    wait_for(
        r#"rate(network_interface_stats_rx_bytes{interface="eth0"}[1m]) > 0 and rate(network_interface_stats_tx_bytes{interface="eth0"}[1m]) > 0"#,
        "eth0 traffic in two scrapes",
    );
    // A drop series is born with its first drop, so a second batch after
    // it was scraped gives rates something to see.
    wait_for(
        r#"network_interface_drops_total{interface="eth0", reason="NO_SOCKET"} > 0"#,
        "NO_SOCKET drops",
    );
    send_udp(&peer, &format!("{}:9", pair.a_addr), 20, 64);
    wait_for(
        r#"increase(network_interface_drops_total{interface="eth0", reason="NO_SOCKET"}[1m]) > 0"#,
        "more NO_SOCKET drops in a later scrape",
    );
    // The same for the pod: datagrams from it to a closed port of the node
    // are dropped on its host veth, twice, so rates see them.
    let pod_drops = format!(
        r#"network_interface_drops_total{{interface="{}", reason="NO_SOCKET"}}"#,
        pod.veth()
    );
    send_udp(&pod.netns, &format!("{}:9", pod.host_address), 20, 64);
    wait_for(&format!("{pod_drops} > 0"), "the pod's drops");
    send_udp(&pod.netns, &format!("{}:9", pod.host_address), 20, 64);
    wait_for(
        &format!("increase({pod_drops}[1m]) > 0"),
        "more of the pod's drops in a later scrape",
    );

    // Inside the pod: a UDP socket that never reads, with the smallest
    // receive buffer, flooded twice (SOCKET_RCVBUFF in the pod's namespace).
    // Waited for without naming the pod, so a scrape that renames the
    // collector's labels fails on the pod it names, below.
    let starved = udp_socket(&pod.netns, "0.0.0.0:5353", 0);
    let in_pod = r#"network_pod_drops_total{reason="SOCKET_RCVBUFF"}"#;
    send_udp(&ns, &format!("{}:5353", pod.pod_address), 200, 64);
    wait_for(&format!("{in_pod} > 0"), "drops inside the pod");
    send_udp(&ns, &format!("{}:5353", pod.pod_address), 200, 64);
    wait_for(
        &format!("increase({in_pod}[1m]) > 0"),
        "more drops inside the pod in a later scrape",
    );
    drop(starved);

    // TCP from and to the pod, in two rounds so rates see it: handshakes
    // both ways (the pod's connects and accepts), connects to a closed
    // port of the node (refused: the node's resets, the pod's failures),
    // and an established connection of the pod the node aborts with a
    // reset (SO_LINGER 0), so every TCP panel and alert has its series.
    let node_listener = ns.run_in(|| TcpListener::bind((pod.host_address.as_str(), 8080)).unwrap());
    let pod_listener = pod
        .netns
        .run_in(|| TcpListener::bind((pod.pod_address.as_str(), 8080)).unwrap());
    let mut held = Vec::new();
    let mut tcp_round = || {
        pod.netns.run_in(|| {
            for _ in 0..3 {
                held.push(TcpStream::connect((pod.host_address.as_str(), 8080)).unwrap());
                held.push(node_listener.accept().unwrap().0);
                let refused = TcpStream::connect((pod.host_address.as_str(), 81));
                assert!(refused.is_err(), "port 81 of the node is closed");
            }
            held.push(TcpStream::connect((pod.host_address.as_str(), 8080)).unwrap());
            reset_on_close(node_listener.accept().unwrap().0);
        });
        ns.run_in(|| {
            for _ in 0..3 {
                held.push(TcpStream::connect((pod.pod_address.as_str(), 8080)).unwrap());
                held.push(pod_listener.accept().unwrap().0);
            }
        });
    };
    let opens = "network_pod_netstat_Tcp_ActiveOpens_total";
    tcp_round();
    wait_for(&format!("{opens} > 0"), "the pod's TCP connects");
    tcp_round();
    wait_for(
        &format!("increase({opens}[1m]) > 0"),
        "more of the pod's TCP connects in a later scrape",
    );

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
        wait_for(&series, &format!("the veth scraped {state}"));
    };
    flip("down");
    flip("up");
    send_udp(&ns, &format!("{}:9", pod.pod_address), 20, 64);

    for (server, m) in servers.iter().zip(&monitored) {
        let pods = Pods {
            app: (pod.namespace.clone(), pod.name.clone()),
            collector: (m.pod.namespace.clone(), m.pod.name.clone()),
        };
        checks::every_query(server, &pods, &labels);
    }
    drop(held);
}
