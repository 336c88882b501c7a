//! Pods' own SNMP counters: the scrape cost of reading every pod's
//! `/proc/<pid>/net/{snmp,netstat,snmp6}`. Pods are laid out as the
//! collector's tests make them by hand (a namespace per pod with a veth to
//! the node namespace, libcni cache files in containerd 1.6's shape) plus a
//! sandbox process per pod: `sleep` in the pod's namespace and in a cgroup
//! named as runc names containerd's sandboxes (`k8s.io/<sandbox id>`), so
//! the collector finds it as it finds a pause process.
//!
//! In the node namespace, three exporters are scraped in turn, each alone:
//! the collector as deployed (pods' counters on), the collector with
//! `--no-pod-netstat`, and node_exporter's netdev collector, over the same
//! interfaces. CPU per scrape comes from /proc/<pid>/stat deltas, as in the
//! scrape phase, and the ratios to node_exporter are compared with the
//! scrape phase's at its nearest size.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::scrape::{self, Latency};
use crate::sys::{self, Netns, Server};

/// The cache files containerd 1.6 wrote, as the collector's tests use them.
const BRIDGE_CACHE: &str =
    include_str!("../../collector/tests/fixtures/cni/bridge-containerd-1.6.json");
const LOOPBACK_CACHE: &str =
    include_str!("../../collector/tests/fixtures/cni/loopback-containerd-1.6.json");

/// The values of the pod those files were captured from, replaced by each
/// bench pod's (see collector/tests/common/hand_pods.rs).
const CAPTURED_ID: &str = "36d995e11c36";
const CAPTURED_NAMESPACE: &str = "\"shop\"";
const CAPTURED_NAME: &str = "\"cart-0\"";
const CAPTURED_UID: &str = "00002952-7e0b-4b3a-9d1e-000029520000";
const CAPTURED_NETNS: &str = "cni-5d617646-38d9-addc-8a0a-fc3c0b1c4bbe";
const CAPTURED_VETH: &str = "veth62bb8aee";
const CAPTURED_ADDRESS: &str = "198.18.61.2/24";
const CAPTURED_GATEWAY: &str = "198.18.61.1\"";

/// The pods' network name in their cache files' names.
const NETWORK: &str = "pods";
/// The Kubernetes namespace of every bench pod.
const POD_NAMESPACE: &str = "bench";
/// The most pods the address plan below holds (a /30 each in 198.19.0.0/16).
const MAX_PODS: usize = 16384;

/// The exporters measured, in the order they run.
#[derive(Debug, Clone, Copy)]
enum Tool {
    Collector,
    CollectorNoPods,
    NodeExporterNetdev,
}

const TOOLS: [Tool; 3] = [
    Tool::Collector,
    Tool::CollectorNoPods,
    Tool::NodeExporterNetdev,
];

impl Tool {
    fn id(self) -> &'static str {
        match self {
            Tool::Collector => "collector",
            Tool::CollectorNoPods => "collector-no-pod-netstat",
            Tool::NodeExporterNetdev => "node-exporter-netdev",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Tool::Collector => "collector (pods' counters, default)",
            Tool::CollectorNoPods => "collector --no-pod-netstat",
            Tool::NodeExporterNetdev => "node_exporter netdev",
        }
    }

    fn port(self) -> u16 {
        match self {
            Tool::Collector => 9111,
            Tool::CollectorNoPods => 9112,
            Tool::NodeExporterNetdev => 9113,
        }
    }

    fn args(self, results: &Path) -> Vec<String> {
        let listen = format!("127.0.0.1:{}", self.port());
        let health = format!("127.0.0.1:{}", self.port() + 100);
        let results = results.display().to_string();
        let collector = vec![
            "serve",
            "--listen",
            &listen,
            "--health-listen",
            &health,
            "--node-name",
            "bench",
            "--cni-results-dir",
            &results,
        ];
        let list: Vec<&str> = match self {
            Tool::Collector => collector,
            Tool::CollectorNoPods => [&collector[..], &["--no-pod-netstat"]].concat(),
            Tool::NodeExporterNetdev => vec![
                "--web.listen-address",
                &listen,
                "--collector.disable-defaults",
                "--collector.netdev",
            ],
        };
        list.into_iter().map(str::to_string).collect()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodsResult {
    pub pods: usize,
    /// Links in the node namespace, loopback included.
    pub links_in_node_namespace: usize,
    pub setup_seconds: f64,
    pub scrapes: Vec<PodsScrape>,
    /// node_exporter's CPU per scrape / the collector's, with pods' counters.
    pub ratio_with_pods: f64,
    /// The same without them (`--no-pod-netstat`).
    pub ratio_without_pods: f64,
    /// The scrape phase's ratio this is held to, when known.
    pub baseline: Option<Baseline>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodsScrape {
    pub tool: String,
    pub label: String,
    pub warmup_scrapes: usize,
    pub latency: Latency,
    pub cpu_ms_per_scrape: f64,
    /// The kernel's part of it (stime): reading files, serving sockets.
    pub system_ms_per_scrape: f64,
    pub body_bytes: usize,
    /// Pods with `network_pod_netstat_*` series in the body.
    pub pods_served: usize,
    pub time_capped: bool,
    pub load_average: f64,
}

/// The published scrape phase's CPU ratio at the size nearest the pods'.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Baseline {
    pub source: String,
    pub interfaces: usize,
    /// (collector label, node_exporter netdev CPU / its CPU).
    pub ratios: Vec<(String, f64)>,
}

impl PodsResult {
    /// Whether pods' reads keep the collector at or above the baseline's
    /// lowest ratio (None when there is no baseline).
    pub fn met(&self) -> Option<bool> {
        let baseline = self.baseline.as_ref()?;
        let lowest = baseline
            .ratios
            .iter()
            .map(|(_, r)| *r)
            .min_by(f64::total_cmp)?;
        Some(self.ratio_with_pods >= lowest)
    }
}

/// A bench pod: its namespace, sandbox process and cgroup. The process is
/// killed and the cgroup removed on drop, before the namespace goes.
struct Pod {
    sandbox: Option<Sandbox>,
    _netns: Netns,
}

struct Sandbox {
    child: Child,
    cgroup: PathBuf,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Err(error) = std::fs::remove_dir(&self.cgroup) {
            eprintln!(
                "bench: warning: removing cgroup {}: {error}",
                self.cgroup.display()
            );
        }
    }
}

/// The node side: its namespace, the pods, the results directory, and the
/// cgroup parent when this run made it (removed once empty).
struct Node {
    pods: Vec<Pod>,
    results: PathBuf,
    cgroup_parent: Option<PathBuf>,
    netns: Netns,
}

impl Drop for Node {
    fn drop(&mut self) {
        // Processes first (they hold the cgroups), then the namespaces.
        for pod in &mut self.pods {
            pod.sandbox.take();
        }
        self.pods.clear();
        if let Some(parent) = &self.cgroup_parent {
            let _ = std::fs::remove_dir(parent);
        }
        if let Err(error) = std::fs::remove_dir_all(&self.results) {
            if error.kind() != std::io::ErrorKind::NotFound {
                eprintln!(
                    "bench: warning: removing {}: {error}",
                    self.results.display()
                );
            }
        }
    }
}

/// The hierarchy whose cgroup names the sandbox id in /proc/PID/cgroup:
/// the pids controller's on a v1 host, the unified root on a v2 one.
fn cgroup_root() -> Result<PathBuf> {
    ["/sys/fs/cgroup/pids", "/sys/fs/cgroup"]
        .iter()
        .map(PathBuf::from)
        .find(|h| h.join("cgroup.procs").exists())
        .context("no cgroup hierarchy (/sys/fs/cgroup/pids or /sys/fs/cgroup) to put sandbox processes in")
}

/// 64 hex digits unique to this run and pod, as a sandbox id.
fn sandbox_id(index: usize) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{:016x}{:016x}{:032x}",
        std::process::id(),
        index,
        nanos ^ (index as u128) << 64
    )
}

fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut text = template.to_string();
    for (captured, value) in values {
        text = text.replace(captured, value);
    }
    text
}

fn write_private(file: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(file)
        .and_then(|mut f| f.write_all(data))
        .with_context(|| format!("writing {}", file.display()))
}

fn netns_inode(name: &str) -> Result<u64> {
    Ok(std::fs::metadata(format!("/var/run/netns/{name}"))
        .with_context(|| format!("namespace {name}"))?
        .ino())
}

/// `sleep` in `netns`, then moved into `cgroup` (made here) once it is in
/// the namespace, so the collector never reads the node's files for it.
fn start_sandbox(netns: &Netns, cgroup: PathBuf) -> Result<Sandbox> {
    std::fs::create_dir(&cgroup).with_context(|| format!("creating {}", cgroup.display()))?;
    let child = match Command::new("ip")
        .args(["netns", "exec", &netns.name, "sleep", "86400"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(error) => {
            let _ = std::fs::remove_dir(&cgroup);
            return Err(error).context("starting a sandbox process");
        }
    };
    let sandbox = Sandbox { child, cgroup };
    let inode = netns_inode(&netns.name)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid = sandbox.child.id();
    while std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .map(|m| m.ino())
        .ok()
        != Some(inode)
    {
        sys::check_interrupted()?;
        if Instant::now() > deadline {
            bail!("the sandbox process {pid} never entered {}", netns.name);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    std::fs::write(sandbox.cgroup.join("cgroup.procs"), pid.to_string())
        .with_context(|| format!("moving {pid} into {}", sandbox.cgroup.display()))?;
    Ok(sandbox)
}

/// Makes `count` pods on a fresh node namespace.
fn make_node(count: usize, tmp: &Path) -> Result<Node> {
    if count == 0 || count > MAX_PODS {
        bail!("--pods must be 1..={MAX_PODS}, not {count}");
    }
    let root = cgroup_root()?;
    let parent = root.join("k8s.io");
    let made_parent = !parent.exists();
    if made_parent {
        std::fs::create_dir(&parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let results = tmp.join(format!("cni-results-{}", std::process::id()));
    let mut node = Node {
        pods: Vec::new(),
        results: results.clone(),
        cgroup_parent: made_parent.then(|| parent.clone()),
        netns: Netns::create("podnode")?,
    };
    std::fs::create_dir_all(&results)?;
    for index in 0..count {
        sys::check_interrupted()?;
        let netns = Netns::create(&format!("pod{index}"))?;
        let veth = format!("vpod{index}");
        // Pod i: 198.19.<i/64>.<4(i%64)+1> on the node side, +1 in the pod.
        let (third, fourth) = (index / 64, 4 * (index % 64));
        let gateway = format!("198.19.{third}.{}", fourth + 1);
        let address = format!("198.19.{third}.{}", fourth + 2);
        node.netns.ip_batch(&format!(
            "link add {veth} type veth peer name eth0 netns {}\naddr add {gateway}/30 dev {veth}\nlink set {veth} up\n",
            netns.name
        ))?;
        netns.ip_batch(&format!(
            "addr add {address}/30 dev eth0\nlink set eth0 up\n"
        ))?;
        let id = sandbox_id(index);
        let name = format!("\"pod-{index}\"");
        let namespace = format!("\"{POD_NAMESPACE}\"");
        let uid = format!("00000000-0000-4000-8000-{:012x}", index);
        let cidr = format!("{address}/30");
        let gateway_end = format!("{gateway}\"");
        let values = [
            (CAPTURED_ID, id.as_str()),
            (CAPTURED_NAMESPACE, namespace.as_str()),
            (CAPTURED_NAME, name.as_str()),
            (CAPTURED_UID, uid.as_str()),
            (CAPTURED_NETNS, netns.name.as_str()),
            (CAPTURED_VETH, veth.as_str()),
            (CAPTURED_ADDRESS, cidr.as_str()),
            (CAPTURED_GATEWAY, gateway_end.as_str()),
        ];
        write_private(
            &results.join(format!("{NETWORK}-{id}-eth0")),
            fill(BRIDGE_CACHE, &values).as_bytes(),
        )?;
        write_private(
            &results.join(format!("cni-loopback-{id}-lo")),
            fill(LOOPBACK_CACHE, &values).as_bytes(),
        )?;
        let mut pod = Pod {
            sandbox: None,
            _netns: netns,
        };
        pod.sandbox = Some(start_sandbox(&pod._netns, parent.join(&id))?);
        node.pods.push(pod);
    }
    Ok(node)
}

/// Distinct pods in the `network_pod_netstat_*` series of `body`.
fn pods_served(body: &[u8]) -> usize {
    let text = String::from_utf8_lossy(body);
    let mut pods = HashSet::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("network_pod_netstat_"))
    {
        if let Some(rest) = line.split_once("pod=\"").map(|(_, r)| r) {
            if let Some((pod, _)) = rest.split_once('"') {
                pods.insert(pod.to_string());
            }
        }
    }
    pods.len()
}

pub struct Settings<'a> {
    pub collector: &'a Path,
    pub node_exporter: &'a Path,
    pub pods: usize,
    pub warmup_scrapes: usize,
    pub scrapes: usize,
    pub series_seconds: f64,
    pub logs: &'a Path,
    pub tmp: &'a Path,
    pub baseline: Option<Baseline>,
}

pub fn run(settings: &Settings<'_>) -> Result<PodsResult> {
    let start = Instant::now();
    let node = make_node(settings.pods, settings.tmp)?;
    let setup_seconds = start.elapsed().as_secs_f64();
    let links = node.netns.link_count()?;
    eprintln!(
        "bench: pods: {} pods with sandbox processes in {setup_seconds:.1} s; {links} links in the node namespace",
        settings.pods
    );
    let mut scrapes = Vec::new();
    for tool in TOOLS {
        sys::check_interrupted()?;
        let result = measure(settings, &node, tool)?;
        eprintln!(
            "bench: pods {:<36} p50 {:>8.3} ms cpu {:>8.3} ms/scrape ({} scrapes, {} pods served, load {:.2})",
            result.label,
            result.latency.p50_ms,
            result.cpu_ms_per_scrape,
            result.latency.n,
            result.pods_served,
            result.load_average
        );
        scrapes.push(result);
    }
    drop(node);
    let cpu = |id: &str| {
        scrapes
            .iter()
            .find(|s| s.tool == id)
            .map_or(f64::NAN, |s| s.cpu_ms_per_scrape)
    };
    let exporter = cpu(Tool::NodeExporterNetdev.id());
    Ok(PodsResult {
        pods: settings.pods,
        links_in_node_namespace: links,
        setup_seconds,
        ratio_with_pods: exporter / cpu(Tool::Collector.id()),
        ratio_without_pods: exporter / cpu(Tool::CollectorNoPods.id()),
        scrapes,
        baseline: settings.baseline.clone(),
    })
}

fn measure(settings: &Settings<'_>, node: &Node, tool: Tool) -> Result<PodsScrape> {
    let program = match tool {
        Tool::NodeExporterNetdev => settings.node_exporter,
        _ => settings.collector,
    };
    let server = Server::start(
        &node.netns,
        tool.label(),
        program,
        &tool.args(&node.results),
        tool.port(),
        &settings.logs.join(format!("pods-{}.log", tool.id())),
    )?;
    let port = server.port;
    let pods = settings.pods;
    let marker = format!("\"vpod{}\"", pods - 1);
    let timeout = Duration::from_secs(300);
    node.netns.run_in(|| {
        let warm_start = Instant::now();
        let mut warmup = 0;
        let mut body_bytes = 0;
        let mut pods_seen = 0;
        // Until the collector has found every sandbox (its first search
        // runs at the first collection that sees the pods), then warm-up.
        while warmup < settings.warmup_scrapes
            || (warmup < 200 && wants_pods(tool) && pods_seen < pods)
        {
            sys::check_interrupted()?;
            let response = scrape::get_as_prometheus(port, "/metrics", timeout)?;
            if response.status != 200 {
                bail!("{} answered {}", tool.label(), response.status);
            }
            if !response
                .body
                .windows(marker.len())
                .any(|w| w == marker.as_bytes())
            {
                if warm_start.elapsed() > Duration::from_secs(60) {
                    bail!("{} does not list interface {marker}", tool.label());
                }
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            pods_seen = pods_served(&response.body);
            body_bytes = response.body.len();
            warmup += 1;
        }
        match tool {
            Tool::Collector if pods_seen != pods => {
                bail!(
                    "{} served the counters of {pods_seen} of {pods} pods",
                    tool.label()
                )
            }
            Tool::CollectorNoPods | Tool::NodeExporterNetdev if pods_seen != 0 => {
                bail!("{} served pods' counters with them off", tool.label())
            }
            _ => {}
        }
        let load_before = sys::loadavg();
        let (user_start, system_start) = server.cpu_split()?;
        let series_start = Instant::now();
        let mut samples = Vec::with_capacity(settings.scrapes);
        let mut time_capped = false;
        while samples.len() < settings.scrapes {
            if samples.len() >= 5 && series_start.elapsed().as_secs_f64() >= settings.series_seconds
            {
                time_capped = true;
                break;
            }
            sys::check_interrupted()?;
            let response = scrape::get_as_prometheus(port, "/metrics", timeout)?;
            if response.status != 200 {
                bail!("{} answered {}", tool.label(), response.status);
            }
            samples.push(response.elapsed);
        }
        let (user_end, system_end) = server.cpu_split()?;
        let cpu = (user_end - user_start) + (system_end - system_start);
        Ok(PodsScrape {
            tool: tool.id().into(),
            label: tool.label().into(),
            warmup_scrapes: warmup,
            latency: Latency::of(&samples),
            cpu_ms_per_scrape: cpu * 1e3 / samples.len() as f64,
            system_ms_per_scrape: (system_end - system_start) * 1e3 / samples.len() as f64,
            body_bytes,
            pods_served: pods_seen,
            time_capped,
            load_average: (load_before + sys::loadavg()) / 2.0,
        })
    })
}

fn wants_pods(tool: Tool) -> bool {
    matches!(tool, Tool::Collector)
}

/// The published scrape phase's CPU ratios (node_exporter netdev / each
/// collector row) at the size nearest `interfaces`, from its report.json.
pub fn baseline_from(report_json: &Path, interfaces: usize) -> Result<Baseline> {
    let text = std::fs::read_to_string(report_json)
        .with_context(|| format!("reading {}", report_json.display()))?;
    let report: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("parsing {}", report_json.display()))?;
    let rows = report["scrapes"]
        .as_array()
        .context("no scrapes in the baseline report")?;
    let size = rows
        .iter()
        .filter_map(|r| r["interfaces"].as_u64())
        .min_by_key(|n| (*n as usize).abs_diff(interfaces))
        .context("no sizes in the baseline report")? as usize;
    let at = |tool: &str| {
        rows.iter()
            .find(|r| r["interfaces"].as_u64() == Some(size as u64) && r["tool"] == tool)
            .and_then(|r| r["cpu_ms_per_scrape"].as_f64())
    };
    let exporter = at("node-exporter-netdev").context("no node_exporter netdev row")?;
    let mut ratios = Vec::new();
    for (tool, label) in [
        ("collector-no-ebpf", "collector --no-ebpf"),
        ("collector-ebpf", "collector (eBPF on)"),
    ] {
        if let Some(cpu) = at(tool) {
            ratios.push((label.to_string(), exporter / cpu));
        }
    }
    Ok(Baseline {
        source: report_json.display().to_string(),
        interfaces: size,
        ratios,
    })
}

pub fn markdown(result: &PodsResult) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Pods' own counters: scrape cost with {} pods\n",
        result.pods
    );
    let _ = writeln!(
        out,
        "{} pods, each a network namespace with a veth to the node namespace ({} links there, loopback included), libcni cache files in containerd 1.6's shape, and a sandbox process (`sleep` in the pod's namespace, in cgroup `k8s.io/<sandbox id>`); set up in {:.1} s. Each exporter runs alone in the node namespace and is scraped in sequence after a warm-up (the collector's until it serves every pod); CPU is utime+stime from /proc/<pid>/stat over the series divided by its scrapes. The collector runs as deployed (eBPF on, lean metrics).\n",
        result.pods, result.links_in_node_namespace, result.setup_seconds
    );
    let _ = writeln!(
        out,
        "| Tool | Scrapes | p50 ms | p99 ms | CPU ms/scrape | of it system | Body KiB | Pods served | Load avg |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for s in &result.scrapes {
        let _ = writeln!(
            out,
            "| {} | {}{} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {:.2} |",
            s.label,
            s.latency.n,
            if s.time_capped { " (time cap)" } else { "" },
            s.latency.p50_ms,
            s.latency.p99_ms,
            s.cpu_ms_per_scrape,
            s.system_ms_per_scrape,
            s.body_bytes / 1024,
            s.pods_served,
            s.load_average
        );
    }
    let with = result
        .scrapes
        .iter()
        .find(|s| s.tool == Tool::Collector.id());
    let without = result
        .scrapes
        .iter()
        .find(|s| s.tool == Tool::CollectorNoPods.id());
    if let (Some(with), Some(without)) = (with, without) {
        let extra = with.cpu_ms_per_scrape - without.cpu_ms_per_scrape;
        let _ = writeln!(
            out,
            "\nPods' reads: {:.2} ms of CPU per scrape more ({:.1} µs per pod).",
            extra,
            extra * 1e3 / result.pods as f64
        );
    }
    let _ = writeln!(
        out,
        "\nCPU ratio node_exporter netdev / collector: **{:.1}x** with pods' counters, {:.1}x with `--no-pod-netstat`.",
        result.ratio_with_pods, result.ratio_without_pods
    );
    if let Some(baseline) = &result.baseline {
        let listed = baseline
            .ratios
            .iter()
            .map(|(label, r)| format!("{label} {r:.1}x"))
            .collect::<Vec<_>>()
            .join(", ");
        let verdict = match result.met() {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "not judged",
        };
        let _ = writeln!(
            out,
            "The scrape phase's ratio at its nearest size ({} interfaces, {}): {listed}. Not below it with pods: {verdict}.",
            baseline.interfaces, baseline.source
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_pods_of_netstat_series_only() {
        let body = b"# HELP network_pod_netstat_Tcp_ActiveOpens_total x\n\
network_pod_netstat_Tcp_ActiveOpens_total{namespace=\"bench\",pod=\"pod-0\"} 1\n\
network_pod_netstat_Tcp_RetransSegs_total{namespace=\"bench\",pod=\"pod-0\"} 2\n\
network_pod_netstat_Tcp_ActiveOpens_total{namespace=\"bench\",pod=\"pod-1\"} 3\n\
network_interface_pod_info{pod=\"pod-2\"} 1\n";
        assert_eq!(pods_served(body), 2);
        assert_eq!(pods_served(b"node_network_up 1\n"), 0);
    }

    #[test]
    fn baseline_is_the_nearest_size_and_met_is_judged_against_its_lowest_ratio() {
        let dir = std::env::temp_dir().join(format!("bench-pods-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let json = dir.join("report.json");
        let row = |tool: &str, n: usize, cpu: f64| serde_json::json!({"tool": tool, "interfaces": n, "cpu_ms_per_scrape": cpu});
        let report = serde_json::json!({"scrapes": [
            row("collector-no-ebpf", 100, 2.0),
            row("collector-ebpf", 100, 4.0),
            row("node-exporter-netdev", 100, 16.0),
            row("collector-ebpf", 1000, 10.0),
            row("node-exporter-netdev", 1000, 200.0),
        ]});
        std::fs::write(&json, report.to_string()).unwrap();
        let baseline = baseline_from(&json, 250).unwrap();
        assert_eq!(baseline.interfaces, 100);
        assert_eq!(
            baseline.ratios,
            [
                ("collector --no-ebpf".to_string(), 8.0),
                ("collector (eBPF on)".to_string(), 4.0)
            ]
        );
        assert_eq!(baseline_from(&json, 900).unwrap().interfaces, 1000);
        let mut result = PodsResult {
            pods: 250,
            links_in_node_namespace: 251,
            setup_seconds: 1.0,
            scrapes: Vec::new(),
            ratio_with_pods: 4.0,
            ratio_without_pods: 9.0,
            baseline: Some(baseline),
        };
        assert_eq!(result.met(), Some(true));
        result.ratio_with_pods = 3.9;
        assert_eq!(result.met(), Some(false));
        result.baseline = None;
        assert_eq!(result.met(), None);
        assert!(baseline_from(&dir.join("absent.json"), 250).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
