//! `cargo xtask bench`: the collector, Debian's prometheus-node-exporter and
//! the seed's parse_ip_stats.sh, measured side by side in one run, in
//! network namespaces this tool creates (and removes, also on failure or
//! Ctrl-C). See docs/bench/README.md for the method.

mod chart;
mod churn;
mod datapath;
mod pods;
mod report;
mod scrape;
mod seed;
mod storm;
mod sys;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Parser;

use report::{Idle, IdleProcess, Report, ScrapeResult, ScriptResult, SizeInfo};
use scrape::Latency;
use sys::{Netns, Server};

#[derive(Parser, Debug)]
#[command(about = "Side-by-side benchmark: collector vs node_exporter vs the seed script")]
struct Args {
    /// The collector binary (release build).
    #[arg(long, default_value = "target/release/collector")]
    collector: PathBuf,
    #[arg(long, default_value = "/usr/bin/prometheus-node-exporter")]
    node_exporter: PathBuf,
    /// The seed document holding parse_ip_stats.sh in its heredoc (by
    /// default in shared/seeds/ beside the repository).
    #[arg(long, default_value_os_t = default_seed())]
    seed: PathBuf,
    /// Where report.md, report.json, scrape-latency.png and logs go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Where a full run copies report.md, report.json and the chart.
    #[arg(long)]
    docs: Option<PathBuf>,
    /// Veth interface counts, ascending (default 100,1000,10000; quick 10,100).
    #[arg(long, value_delimiter = ',')]
    sizes: Option<Vec<usize>>,
    /// Smoke run: small sizes, few iterations, short datapath, storm and
    /// idle phases; never copied to --docs.
    #[arg(long)]
    quick: bool,
    /// Scrapes per tool and size (after warm-up), unless the time cap ends it first.
    #[arg(long)]
    scrapes: Option<usize>,
    /// Time cap of one tool's scrape series at one size, seconds.
    #[arg(long)]
    series_seconds: Option<f64>,
    /// Datapath cycles: rounds of each of all probes (tp_btf), all probes as classic
    /// tracepoints and drops only, each between detached rounds.
    #[arg(long)]
    datapath_pairs: Option<usize>,
    /// Seconds per datapath round.
    #[arg(long)]
    datapath_seconds: Option<f64>,
    /// Idle window, seconds (the scrape interval is half of it: two scrapes).
    #[arg(long)]
    idle_seconds: Option<f64>,
    /// Drop-storm cycles: an attached round as deployed (drops only) and
    /// one with BPF run-time statistics on, each after a detached round;
    /// then a closing detached round.
    #[arg(long)]
    storm_pairs: Option<usize>,
    /// Seconds per drop-storm round.
    #[arg(long)]
    storm_seconds: Option<f64>,
    /// Connection-churn cycles: an attached round as deployed (default
    /// probes) and one with BPF run-time statistics on, each after a
    /// detached round; then a closing detached round.
    #[arg(long)]
    churn_pairs: Option<usize>,
    /// Seconds per churn round.
    #[arg(long)]
    churn_seconds: Option<f64>,
    #[arg(long)]
    skip_churn: bool,
    /// Pods (namespace, veth, cache files, sandbox process each) of the
    /// pods phase.
    #[arg(long)]
    pods: Option<usize>,
    /// The published report whose scrape-phase CPU ratio the pods phase
    /// is held to (by default docs/bench/report.json of this workspace).
    #[arg(long, default_value_os_t = default_baseline())]
    baseline: PathBuf,
    #[arg(long)]
    skip_pods: bool,
    #[arg(long)]
    skip_datapath: bool,
    #[arg(long)]
    skip_storm: bool,
    #[arg(long)]
    skip_idle: bool,
    /// Run this phase alone, e.g. `--only storm`. Only `storm`, `churn` and
    /// `pods` are published alone (to <docs>/storm/, <docs>/churn/,
    /// <docs>/pods/): the other phases belong to the full report.
    #[arg(long, value_enum)]
    only: Option<Phase>,
    /// Do not copy the results to --docs even on a full run.
    #[arg(long)]
    no_publish: bool,
    /// Measure nothing: re-render report.md and the chart from this
    /// report.json (e.g. after a change of the report format).
    #[arg(long, value_name = "REPORT_JSON")]
    render: Option<PathBuf>,
}

/// The parts of a run, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Phase {
    /// The datapath cost (all configurations).
    Datapath,
    /// The drop storm.
    Storm,
    /// Connection churn against the TCP probes.
    Churn,
    /// Scrape CPU with pods' own counters read from their sandbox
    /// processes' /proc, against the scrape without them.
    Pods,
    /// Scrape latency, CPU and memory of every tool, and the idle window.
    Scrapes,
}

impl Args {
    fn runs(&self, phase: Phase) -> bool {
        match (self.only, phase) {
            (Some(only), _) => only == phase,
            (None, Phase::Datapath) => !self.skip_datapath,
            (None, Phase::Storm) => !self.skip_storm,
            (None, Phase::Churn) => !self.skip_churn,
            (None, Phase::Pods) => !self.skip_pods,
            (None, Phase::Scrapes) => true,
        }
    }
}

/// `docs/bench/report.json` of the workspace this crate was built in.
fn default_baseline() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ is inside the workspace")
        .join("docs")
        .join("bench")
        .join("report.json")
}

/// File name of the seed document in shared/seeds/.
const SEED_DOCUMENT: &str = "000_2783280179a180b0.txt";

/// `../shared/seeds/<seed>` from the repository root: shared/ sits beside
/// every checkout of the repository (a worktree or CI's clone alike), so
/// no absolute path of one machine is built in. The root is the workspace
/// this crate was built in (bench/ is one of its members).
fn default_seed() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ is inside the workspace");
    let beside = workspace.parent().unwrap_or(workspace);
    beside.join("shared").join("seeds").join(SEED_DOCUMENT)
}

#[derive(Debug, Clone, serde::Serialize)]
struct Plan {
    sizes: Vec<usize>,
    warmup_scrapes: usize,
    warmup_seconds: f64,
    scrapes: usize,
    series_seconds: f64,
    script_runs: usize,
    script_seconds: f64,
    datapath_pairs: usize,
    datapath_seconds: f64,
    storm_pairs: usize,
    storm_seconds: f64,
    churn_pairs: usize,
    churn_seconds: f64,
    pods: usize,
    pods_scrapes: usize,
    idle_seconds: f64,
    idle_interval_seconds: f64,
}

impl Plan {
    fn from(args: &Args) -> Plan {
        let mut plan = if args.quick {
            Plan {
                sizes: vec![10, 100],
                warmup_scrapes: 3,
                warmup_seconds: 3.0,
                scrapes: 50,
                series_seconds: 10.0,
                script_runs: 3,
                script_seconds: 10.0,
                datapath_pairs: 2,
                datapath_seconds: 1.0,
                storm_pairs: 2,
                storm_seconds: 2.0,
                churn_pairs: 1,
                churn_seconds: 2.0,
                pods: 20,
                pods_scrapes: 50,
                idle_seconds: 6.0,
                idle_interval_seconds: 3.0,
            }
        } else {
            Plan {
                sizes: vec![100, 1000, 10000],
                warmup_scrapes: 20,
                warmup_seconds: 15.0,
                scrapes: 1000,
                series_seconds: 60.0,
                script_runs: 20,
                script_seconds: 30.0,
                datapath_pairs: 4,
                datapath_seconds: 5.0,
                storm_pairs: 6,
                storm_seconds: 5.0,
                churn_pairs: 8,
                churn_seconds: 5.0,
                pods: 250,
                pods_scrapes: 300,
                idle_seconds: 60.0,
                idle_interval_seconds: 30.0,
            }
        };
        if let Some(sizes) = &args.sizes {
            plan.sizes = sizes.clone();
            plan.sizes.sort_unstable();
            plan.sizes.dedup();
        }
        if let Some(n) = args.scrapes {
            plan.scrapes = n.max(1);
        }
        if let Some(s) = args.series_seconds {
            plan.series_seconds = s;
        }
        if let Some(n) = args.datapath_pairs {
            plan.datapath_pairs = n.max(1);
        }
        if let Some(s) = args.datapath_seconds {
            plan.datapath_seconds = s;
        }
        if let Some(n) = args.storm_pairs {
            plan.storm_pairs = n.max(1);
        }
        if let Some(s) = args.storm_seconds {
            plan.storm_seconds = s;
        }
        if let Some(n) = args.churn_pairs {
            plan.churn_pairs = n.max(1);
        }
        if let Some(s) = args.churn_seconds {
            plan.churn_seconds = s;
        }
        if let Some(n) = args.pods {
            plan.pods = n;
        }
        if let Some(n) = args.scrapes {
            plan.pods_scrapes = n.max(1);
        }
        if let Some(s) = args.idle_seconds {
            plan.idle_seconds = s;
            plan.idle_interval_seconds = s / 2.0;
        }
        plan
    }
}

/// The long-running processes under test.
#[derive(Debug, Clone, Copy)]
enum Tool {
    CollectorNoEbpf,
    CollectorEbpf,
    NodeExporterNetdev,
    NodeExporterNetclass,
}

const TOOLS: [Tool; 4] = [
    Tool::CollectorNoEbpf,
    Tool::CollectorEbpf,
    Tool::NodeExporterNetdev,
    Tool::NodeExporterNetclass,
];

impl Tool {
    fn id(self) -> &'static str {
        match self {
            Tool::CollectorNoEbpf => "collector-no-ebpf",
            Tool::CollectorEbpf => "collector-ebpf",
            Tool::NodeExporterNetdev => "node-exporter-netdev",
            Tool::NodeExporterNetclass => "node-exporter-netclass",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Tool::CollectorNoEbpf => "collector --no-ebpf",
            Tool::CollectorEbpf => "collector (eBPF on)",
            Tool::NodeExporterNetdev => "node_exporter netdev",
            Tool::NodeExporterNetclass => "node_exporter netdev+netclass",
        }
    }

    fn port(self) -> u16 {
        match self {
            Tool::CollectorNoEbpf => 9101,
            Tool::CollectorEbpf => 9102,
            Tool::NodeExporterNetdev => 9103,
            Tool::NodeExporterNetclass => 9104,
        }
    }

    fn program(self, args: &Args) -> PathBuf {
        match self {
            Tool::CollectorNoEbpf | Tool::CollectorEbpf => args.collector.clone(),
            _ => args.node_exporter.clone(),
        }
    }

    fn args(self) -> Vec<String> {
        let listen = format!("127.0.0.1:{}", self.port());
        // Each collector's health listener beside its own port, so two
        // collectors never contend for the default one.
        let health = format!("127.0.0.1:{}", self.port() + 100);
        let collector = [
            "serve",
            "--listen",
            &listen,
            "--health-listen",
            &health,
            "--node-name",
            "bench",
        ];
        let list: Vec<&str> = match self {
            Tool::CollectorNoEbpf => [&collector[..], &["--no-ebpf"]].concat(),
            Tool::CollectorEbpf => collector.to_vec(),
            Tool::NodeExporterNetdev => vec![
                "--web.listen-address",
                &listen,
                "--collector.disable-defaults",
                "--collector.netdev",
            ],
            Tool::NodeExporterNetclass => vec![
                "--web.listen-address",
                &listen,
                "--collector.disable-defaults",
                "--collector.netdev",
                "--collector.netclass",
            ],
        };
        list.into_iter().map(str::to_string).collect()
    }

    fn start(self, args: &Args, netns: &Netns, size: usize, logs: &Path) -> Result<Server> {
        Server::start(
            netns,
            self.label(),
            &self.program(args),
            &self.args(),
            self.port(),
            &logs.join(format!("{}-{size}.log", self.id())),
        )
    }
}

fn main() {
    sys::install_signal_handlers();
    if let Err(error) = real_main() {
        eprintln!("bench: error: {error:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let args = Args::parse();
    if let Some(json) = &args.render {
        let text =
            std::fs::read_to_string(json).with_context(|| format!("reading {}", json.display()))?;
        let mut report: Report = serde_json::from_str(&text)?;
        if let Some(old) = report.datapath.take() {
            let mut summary = datapath::summarize(old.rounds);
            summary.bpf_stats = old.bpf_stats;
            summary.bpf_stats_classic = old.bpf_stats_classic;
            summary.bpf_stats_drops_only = old.bpf_stats_drops_only;
            report.datapath = Some(summary);
        }
        if let Some(old) = report.storm.take() {
            report.storm = Some(storm::summarize(old.rounds, old.sender_cpu));
        }
        if let Some(old) = report.churn.take() {
            report.churn = Some(churn::summarize(old.rounds, old.cpu));
        }
        report.evaluate_targets();
        std::fs::create_dir_all(&args.out)?;
        let publish = !report.quick;
        return write_outputs(&args, &report, publish);
    }
    let plan = Plan::from(&args);
    preflight(&args)?;
    sys::remove_stale_namespaces();

    let started = Instant::now();
    let logs = args.out.join("logs");
    let tmp = args.out.join("tmp");
    std::fs::create_dir_all(&logs)?;
    std::fs::create_dir_all(&tmp)?;
    let script_path = tmp.join("parse_ip_stats.sh");
    if args.runs(Phase::Scrapes) {
        let document = std::fs::read_to_string(&args.seed).with_context(|| {
            format!(
                "reading the seed document {} (give its path with --seed)",
                args.seed.display()
            )
        })?;
        std::fs::write(&script_path, seed::extract_script(&document)?)?;
    }

    let mut report = Report {
        command: std::iter::once("bench".to_string())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" "),
        started_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        duration_seconds: 0.0,
        quick: args.quick,
        machine: sys::machine(),
        versions: serde_json::json!({
            "collector": sys::version_of(&args.collector, "--version"),
            "node_exporter": sys::version_of(&args.node_exporter, "--version"),
            "iproute2": sys::version_of(Path::new("/usr/sbin/ip"), "-V"),
            "bash": sys::version_of(Path::new("/bin/bash"), "--version"),
        }),
        load_average_start: sys::loadavg(),
        load_average_end: 0.0,
        plan: serde_json::to_value(&plan)?,
        sizes: Vec::new(),
        scrapes: Vec::new(),
        script: Vec::new(),
        datapath: None,
        storm: None,
        churn: None,
        pods: None,
        idle: None,
        targets: Vec::new(),
        notes: vec![
            "Every process was started by this run, in its process tree, one after another on the same machine; other work on the machine was not stopped, so the load averages above show how busy it was.".into(),
            "The collector and node_exporter run in the benchmark namespace via `ip netns exec`; parse_ip_stats.sh runs as `bash parse_ip_stats.sh` after setns into it (extracted from the seed at run time).".into(),
            "Every tool is asked for gzip, as Prometheus asks, and answers it; latency runs from connect to the last byte (the bench decompresses afterwards). node_exporter also serves its own Go runtime and promhttp metrics.".into(),
        ],
    };

    if args.runs(Phase::Datapath) {
        eprintln!(
            "bench: datapath: {} cycles of all probes (tp_btf) / classic / drops-only rounds between detached ones, {} s each",
            plan.datapath_pairs, plan.datapath_seconds
        );
        report.datapath = Some(datapath::run(
            &args.collector,
            plan.datapath_pairs,
            plan.datapath_seconds,
            &logs,
        )?);
    }

    if args.runs(Phase::Storm) {
        eprintln!(
            "bench: drop storm: {} cycles of drops-only rounds without and with run-time statistics between detached ones, {} s each",
            plan.storm_pairs, plan.storm_seconds
        );
        report.storm = Some(storm::run(
            &args.collector,
            plan.storm_pairs,
            plan.storm_seconds,
            &logs,
        )?);
    }

    if args.runs(Phase::Churn) {
        eprintln!(
            "bench: connection churn: {} cycles of default-probe rounds without and with run-time statistics between detached ones, {} s each",
            plan.churn_pairs, plan.churn_seconds
        );
        report.churn = Some(churn::run(
            &args.collector,
            plan.churn_pairs,
            plan.churn_seconds,
            &logs,
        )?);
    }

    if args.runs(Phase::Pods) {
        eprintln!(
            "bench: pods: {} pods with sandbox processes; {} scrapes of each exporter",
            plan.pods, plan.pods_scrapes
        );
        let baseline = match pods::baseline_from(&args.baseline, plan.pods) {
            Ok(mut baseline) => {
                // Named as from the workspace root when it is in it: the
                // report names no directory of one machine.
                let root = default_baseline();
                if let Some(root) = root.ancestors().nth(3) {
                    if let Ok(relative) = args.baseline.strip_prefix(root) {
                        baseline.source = relative.display().to_string();
                    }
                }
                Some(baseline)
            }
            Err(error) => {
                eprintln!("bench: warning: no baseline ratio: {error:#}");
                None
            }
        };
        report.pods = Some(pods::run(&pods::Settings {
            collector: &args.collector,
            node_exporter: &args.node_exporter,
            pods: plan.pods,
            warmup_scrapes: plan.warmup_scrapes,
            scrapes: plan.pods_scrapes,
            series_seconds: plan.series_seconds,
            logs: &logs,
            tmp: &tmp,
            baseline,
        })?);
    }

    if args.runs(Phase::Scrapes) {
        scrape_phase(&args, &plan, &mut report, &script_path, &logs)?;
    }

    report.load_average_end = sys::loadavg();
    report.duration_seconds = started.elapsed().as_secs_f64();
    report.evaluate_targets();
    let publish = !args.quick
        && matches!(
            args.only,
            None | Some(Phase::Storm | Phase::Churn | Phase::Pods)
        );
    write_outputs(&args, &report, publish)?;
    Ok(())
}

fn preflight(args: &Args) -> Result<()> {
    if !sys::is_root() {
        bail!("needs root: network namespaces, veths and BPF (run `sudo -E cargo xtask bench`)");
    }
    if !args.collector.is_file() {
        bail!(
            "no collector binary at {} (`cargo xtask bench` builds it)",
            args.collector.display()
        );
    }
    if (args.runs(Phase::Scrapes) || args.runs(Phase::Pods)) && !args.node_exporter.is_file() {
        bail!(
            "no node_exporter at {}: `apt-get install prometheus-node-exporter` (then `systemctl disable --now prometheus-node-exporter` if you do not want the service)",
            args.node_exporter.display()
        );
    }
    let mut tools = vec!["ip"];
    if args.runs(Phase::Scrapes) {
        tools.extend(["bash", "awk", "hostname", "date"]);
    }
    // The storm's and the churn's program times come from bpftool's run_time_ns.
    if args.runs(Phase::Storm) || args.runs(Phase::Churn) {
        tools.push("bpftool");
    }
    for tool in tools {
        if sys::which(tool).is_none() {
            bail!("{tool} is not on PATH (the setup, parse_ip_stats.sh or the storm's program time need it)");
        }
    }
    Ok(())
}

fn scrape_phase(
    args: &Args,
    plan: &Plan,
    report: &mut Report,
    script: &Path,
    logs: &Path,
) -> Result<()> {
    let host = Netns::create("host")?;
    let pods = Netns::create("pods")?;
    let idle_size = plan.sizes.iter().copied().min_by_key(|n| n.abs_diff(1000));
    let mut created = 0usize;
    for &size in &plan.sizes {
        sys::check_interrupted()?;
        eprintln!("bench: growing to {size} veth interfaces");
        let start = Instant::now();
        let grown = grow(&host, &pods, created, size);
        let links = host.link_count()?;
        created = links.saturating_sub(1);
        let error = grown
            .err()
            .map(|e| format!("the kernel stopped at {created} veths: {e:#}"));
        report.sizes.push(SizeInfo {
            requested: size,
            created,
            links_in_namespace: links,
            create_seconds: start.elapsed().as_secs_f64(),
            error: error.clone(),
        });
        if let Some(error) = error {
            eprintln!("bench: {error}; not measuring {size} or more");
            report
                .notes
                .push(format!("{size} interfaces: not measured ({error})."));
            break;
        }
        for tool in TOOLS {
            sys::check_interrupted()?;
            let result = measure_tool(args, plan, tool, &host, size, logs)?;
            eprintln!(
                "bench: {size:>6} {:<30} p50 {:>9.3} ms p99 {:>9.3} ms cpu {:>8.3} ms/scrape rss {} ({} scrapes)",
                result.label,
                result.latency.p50_ms,
                result.latency.p99_ms,
                result.cpu_ms_per_scrape,
                report::mib(result.memory_after_series.rss_kib),
                result.latency.n
            );
            report.scrapes.push(result);
        }
        let script_result = measure_script(plan, &host, script, size)?;
        eprintln!(
            "bench: {size:>6} {:<30} p50 {:>9.3} ms p99 {:>9.3} ms cpu {:>8.3} ms/run ({} runs)",
            "parse_ip_stats.sh",
            script_result.latency.p50_ms,
            script_result.latency.p99_ms,
            script_result.cpu_ms_per_run,
            script_result.latency.n
        );
        report.script.push(script_result);
        if !args.skip_idle && Some(size) == idle_size {
            report.idle = Some(idle_phase(args, plan, &host, size, logs)?);
        }
    }
    drop(host);
    drop(pods);
    Ok(())
}

/// Adds veths vb<from>..vb<to-1> to `host` with their peers vp<i> in
/// `pods` (as pod-side ends would be), all up.
fn grow(host: &Netns, pods: &Netns, from: usize, to: usize) -> Result<()> {
    if to <= from {
        return Ok(());
    }
    // Chunks keep a failure's position visible and each batch short.
    let chunk = 2000;
    let mut start = from;
    while start < to {
        sys::check_interrupted()?;
        let end = (start + chunk).min(to);
        let mut host_commands = String::new();
        let mut pod_commands = String::new();
        for i in start..end {
            host_commands.push_str(&format!(
                "link add vb{i} type veth peer name vp{i} netns {}\nlink set vb{i} up\n",
                pods.name
            ));
            pod_commands.push_str(&format!("link set vp{i} up\n"));
        }
        host.ip_batch(&host_commands)?;
        pods.ip_batch(&pod_commands)?;
        start = end;
    }
    Ok(())
}

fn measure_tool(
    args: &Args,
    plan: &Plan,
    tool: Tool,
    netns: &Netns,
    size: usize,
    logs: &Path,
) -> Result<ScrapeResult> {
    let server = tool.start(args, netns, size, logs)?;
    let port = server.port;
    let marker = format!("\"vb{}\"", size - 1);
    let timeout = Duration::from_secs(300);
    netns.run_in(|| {
        let warm_start = Instant::now();
        let mut warmup = 0;
        let mut body_bytes = 0;
        let mut wire_bytes = 0;
        let mut series_lines = 0;
        while warmup < plan.warmup_scrapes
            && (warmup < 2 || warm_start.elapsed().as_secs_f64() < plan.warmup_seconds)
        {
            sys::check_interrupted()?;
            let response = scrape::get_as_prometheus(port, "/metrics", timeout)?;
            if response.status != 200 {
                bail!("{} answered {}", tool.label(), response.status);
            }
            if warmup == 0 {
                if !response
                    .body
                    .windows(marker.len())
                    .any(|w| w == marker.as_bytes())
                {
                    bail!("{} does not list interface {marker}", tool.label());
                }
                series_lines = response
                    .body
                    .split(|&b| b == b'\n')
                    .filter(|l| !l.is_empty() && l[0] != b'#')
                    .count();
            }
            body_bytes = response.body.len();
            wire_bytes = response.wire_bytes;
            warmup += 1;
        }
        let memory_after_warmup = server.memory()?;
        let cpu_start = server.cpu_seconds()?;
        let series_start = Instant::now();
        let mut samples = Vec::with_capacity(plan.scrapes);
        let mut time_capped = false;
        while samples.len() < plan.scrapes {
            if samples.len() >= 5 && series_start.elapsed().as_secs_f64() >= plan.series_seconds {
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
        let cpu = server.cpu_seconds()? - cpu_start;
        let memory_after_series = server.memory()?;
        Ok(ScrapeResult {
            tool: tool.id().into(),
            label: tool.label().into(),
            interfaces: size,
            warmup_scrapes: warmup,
            latency: Latency::of(&samples),
            cpu_ms_per_scrape: cpu * 1e3 / samples.len() as f64,
            body_bytes,
            wire_bytes,
            series_lines,
            memory_after_warmup,
            memory_after_series,
            scrapes_total: warmup + samples.len() + 1,
            time_capped,
        })
    })
}

fn measure_script(plan: &Plan, netns: &Netns, script: &Path, size: usize) -> Result<ScriptResult> {
    // One untimed run warms the page cache (bash, ip, awk).
    let first = seed::run_once(netns, script)?;
    if first.lines != size {
        bail!(
            "parse_ip_stats.sh printed {} lines for {size} veths",
            first.lines
        );
    }
    let start = Instant::now();
    let mut elapsed = Vec::new();
    let mut cpu = Duration::ZERO;
    while elapsed.len() < plan.script_runs
        && (elapsed.len() < 3 || start.elapsed().as_secs_f64() < plan.script_seconds)
    {
        sys::check_interrupted()?;
        let run = seed::run_once(netns, script)?;
        elapsed.push(run.elapsed);
        cpu += run.cpu;
    }
    Ok(ScriptResult {
        interfaces: size,
        latency: Latency::of(&elapsed),
        cpu_ms_per_run: cpu.as_secs_f64() * 1e3 / elapsed.len() as f64,
        lines: first.lines,
    })
}

/// Every long-running process side by side, scraped every interval for
/// one window; CPU over the window from /proc.
fn idle_phase(args: &Args, plan: &Plan, netns: &Netns, size: usize, logs: &Path) -> Result<Idle> {
    eprintln!(
        "bench: idle: {} s window, scrape every {} s, {size} interfaces",
        plan.idle_seconds, plan.idle_interval_seconds
    );
    let mut servers = Vec::new();
    for tool in TOOLS {
        servers.push((tool, tool.start(args, netns, size, logs)?));
    }
    sys::sleep_checked(Duration::from_secs(2))?;
    let cpu_start: Vec<f64> = servers
        .iter()
        .map(|(_, s)| s.cpu_seconds())
        .collect::<Result<_>>()?;
    let window = Duration::from_secs_f64(plan.idle_seconds);
    let interval = Duration::from_secs_f64(plan.idle_interval_seconds);
    let start = Instant::now();
    let mut scrapes = 0;
    let mut next = Duration::ZERO;
    while next < window {
        sys::sleep_checked(next.saturating_sub(start.elapsed()))?;
        netns.run_in(|| {
            for (tool, server) in &servers {
                let response = scrape::get(server.port, "/metrics", Duration::from_secs(300))?;
                if response.status != 200 {
                    bail!("{} answered {}", tool.label(), response.status);
                }
            }
            Ok(())
        })?;
        scrapes += 1;
        next += interval;
    }
    sys::sleep_checked(window.saturating_sub(start.elapsed()))?;
    let seconds = start.elapsed().as_secs_f64();
    let mut processes = Vec::new();
    for ((tool, server), before) in servers.iter().zip(cpu_start) {
        let cpu = server.cpu_seconds()? - before;
        processes.push(IdleProcess {
            tool: tool.id().into(),
            label: tool.label().into(),
            cpu_ms: cpu * 1e3,
            cpu_percent_of_core: cpu / seconds * 100.0,
            memory_end: server.memory()?,
        });
    }
    Ok(Idle {
        interfaces: size,
        window_seconds: seconds,
        scrape_interval_seconds: plan.idle_interval_seconds,
        scrapes,
        cpu_tick_ms: 1e3 / sys::clock_ticks(),
        processes,
    })
}

fn write_outputs(args: &Args, report: &Report, full_run: bool) -> Result<()> {
    let markdown = report.markdown();
    let json = serde_json::to_string_pretty(report)?;
    let files = [
        ("report.md", markdown.as_bytes().to_vec()),
        ("report.json", json.into_bytes()),
    ];
    for (name, bytes) in &files {
        std::fs::write(args.out.join(name), bytes)?;
    }
    let chart_path = args.out.join("scrape-latency.png");
    // Without scrapes (e.g. `--only storm`) there is nothing to chart, and
    // the report is partial: it never replaces the published one.
    let scraped = !report.scrapes.is_empty();
    if scraped {
        chart::draw(report, &chart_path)?;
    }
    eprintln!("bench: wrote {}", args.out.display());
    println!("{markdown}");
    let storm_alone = args.only == Some(Phase::Storm) && report.storm.is_some();
    let churn_alone = args.only == Some(Phase::Churn) && report.churn.is_some();
    let pods_alone = args.only == Some(Phase::Pods) && report.pods.is_some();
    match &args.docs {
        // The drop storm measures the one probe that runs per drop, apart
        // from the scrapes and the datapath: its full run has a report of
        // its own, so publishing it never replaces the full report's.
        Some(docs)
            if full_run && (storm_alone || churn_alone || pods_alone) && !args.no_publish =>
        {
            let dir = docs.join(if storm_alone {
                "storm"
            } else if churn_alone {
                "churn"
            } else {
                "pods"
            });
            std::fs::create_dir_all(&dir)?;
            for (name, _) in &files {
                std::fs::copy(args.out.join(name), dir.join(name))?;
            }
            eprintln!(
                "bench: copied report.md and report.json to {}",
                dir.display()
            );
        }
        Some(docs) if full_run && scraped && !args.no_publish => {
            std::fs::create_dir_all(docs)?;
            for (name, _) in &files {
                std::fs::copy(args.out.join(name), docs.join(name))?;
            }
            std::fs::copy(&chart_path, docs.join("scrape-latency.png"))?;
            eprintln!(
                "bench: copied report.md, report.json and scrape-latency.png to {}",
                docs.display()
            );
        }
        Some(_) => eprintln!(
            "bench: quick, partial or --no-publish run: {} left unchanged",
            args.docs
                .as_ref()
                .map(|d| d.display().to_string())
                .unwrap_or_default()
        ),
        None => {}
    }
    Ok(())
}
