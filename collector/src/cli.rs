//! Command line: flags, their environment variables, and validation. Every
//! malformed value is rejected here, before anything touches the kernel,
//! with a message naming the flag and exit code 2.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::filter::InterfaceFilter;
use crate::model::Probe;
use crate::output::prometheus::Profile;
use crate::output::watch::SortKey;
use crate::sources::ebpf::FlavourPolicy;

/// Labels the collector sets itself, and those the scrape gives every
/// target (the PodMonitors honour the collector's labels, so a `job` or
/// `container` of its own would replace the target's); `--label` may not
/// set them.
pub const RESERVED_LABELS: [&str; 24] = [
    "interface",
    "host",
    "hostname",
    "state",
    "reason",
    "kind",
    "master",
    "address",
    "ifindex",
    "operstate",
    "map",
    "namespace",
    "pod",
    "pod_uid",
    "netns",
    "job",
    "instance",
    "container",
    "endpoint",
    "side",
    "outcome",
    "direction",
    "error",
    "le",
];

/// Bounds on `--label` that keep every served series within what the
/// strictest common backend accepts: Azure Managed Prometheus fails the
/// whole scrape job on a series with more than 63 labels, a label name over
/// 511 characters or a value over 1,023. The collector's own labels take at
/// most 8 of a series' labels (a unit test of the output checks the sum on
/// the longest legal inputs).
pub const MAX_LABELS: usize = 32;
pub const MAX_LABEL_NAME_CHARS: usize = 128;
pub const MAX_LABEL_VALUE_CHARS: usize = 1023;
/// A Kubernetes node name (a DNS subdomain) is at most 253 characters.
pub const MAX_NODE_NAME_CHARS: usize = 253;

#[derive(Debug, Parser)]
#[command(
    name = "collector",
    version,
    about = "Network interface metrics from netlink and eBPF, for Prometheus and for humans",
    long_about = "Network interface metrics from netlink and eBPF, for Prometheus and for humans.\n\n\
        Without a subcommand it serves /metrics (same as `collector serve`).\n\n\
        Example: collector --listen 0.0.0.0:2112 --label cluster=aks-prod --exclude '^veth'",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve /metrics, /healthz and /readyz (the default).
    ///
    /// Example: collector serve --listen 127.0.0.1:2112 --label cluster=aks-prod
    Serve(ServeArgs),
    /// Collect once and print it: a better `ip -s link`, with drop reasons.
    ///
    /// Example: collector snapshot --format json --include '^eth'
    Snapshot(SnapshotArgs),
    /// Live per-interface rates (bytes/s, packets/s, drops/s by reason), refreshed in place.
    ///
    /// Example: collector watch --interval 2s --sort drops --exclude '^lo$'
    Watch(WatchArgs),
}

#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    /// Address to serve on; on hostNetwork this is the node's address, so
    /// give 127.0.0.1:2112 or the node IP to narrow exposure.
    #[arg(
        long,
        env = "COLLECTOR_LISTEN",
        default_value = "0.0.0.0:2112",
        value_name = "ADDR:PORT"
    )]
    pub listen: SocketAddr,
    /// Address of the health listener: /healthz and /readyz only, plain
    /// HTTP, with connection slots of its own so the kubelet's probes are
    /// answered whatever holds the main port. Must differ from --listen.
    #[arg(
        long,
        env = "COLLECTOR_HEALTH_LISTEN",
        default_value = "0.0.0.0:2113",
        value_name = "ADDR:PORT"
    )]
    pub health_listen: SocketAddr,
    /// node_exporter's web configuration file (exporter-toolkit format):
    /// tls_server_config (cert_file, key_file, client_ca_file,
    /// client_auth_type) and basic_auth_users (bcrypt hashes) for the main
    /// listener [default: plain HTTP, no authentication].
    #[arg(
        long = "web.config.file",
        env = "COLLECTOR_WEB_CONFIG_FILE",
        value_name = "FILE"
    )]
    pub web_config_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args, Clone)]
pub struct SnapshotArgs {
    /// Output format [default: table on a terminal, json otherwise].
    #[arg(long, value_enum)]
    pub format: Option<SnapshotFormat>,
    /// How long the freshly attached eBPF probes count before the snapshot
    /// is taken; their counts cover this window. 0s skips the wait.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub window: Duration,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args, Clone)]
pub struct WatchArgs {
    /// Time between refreshes (at least 100ms).
    #[arg(long, default_value = "1s", value_parser = parse_interval)]
    pub interval: Duration,
    /// Order interfaces by receive rate, transmit rate or drop rate.
    #[arg(long, value_enum, default_value_t = SortKey::Rx)]
    pub sort: SortKey,
    /// Stop after this many refreshes [default: until Ctrl-C].
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `--ebpf-probes` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProbeChoice {
    /// Received packets and bytes (net:netif_receive_skb).
    Rx,
    /// Transmitted packets and bytes (net:net_dev_start_xmit).
    Tx,
    /// Drops by reason (skb:kfree_skb).
    Drops,
    /// TCP connect outcomes, retransmits, resets, aborts and handshake RTT
    /// (sock:inet_sock_set_state and four tcp: tracepoints).
    Tcp,
}

impl ProbeChoice {
    pub const ALL: [ProbeChoice; 4] = [
        ProbeChoice::Rx,
        ProbeChoice::Tx,
        ProbeChoice::Drops,
        ProbeChoice::Tcp,
    ];

    pub fn probes(self) -> &'static [Probe] {
        match self {
            ProbeChoice::Rx => &[Probe::Rx],
            ProbeChoice::Tx => &[Probe::Tx],
            ProbeChoice::Drops => &[Probe::Drop],
            ProbeChoice::Tcp => &Probe::TCP,
        }
    }
}

/// `--ebpf-flavour` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FlavourChoice {
    /// BTF-typed tracepoints (tp_btf) where the kernel takes them, classic per probe where not.
    Auto,
    /// Classic tracepoints only.
    Classic,
}

impl FlavourChoice {
    pub fn policy(self) -> FlavourPolicy {
        match self {
            FlavourChoice::Auto => FlavourPolicy::Auto,
            FlavourChoice::Classic => FlavourPolicy::Classic,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SnapshotFormat {
    Table,
    Json,
    Prometheus,
}

#[derive(Debug, Args, Clone)]
pub struct CommonArgs {
    /// Node name for the `host` and `hostname` labels [default: $NODE_NAME, else the hostname].
    #[arg(long, env = "COLLECTOR_NODE_NAME", value_name = "NAME", value_parser = parse_node_name)]
    pub node_name: Option<String>,
    /// Extra label on every interface series, e.g. cluster=aks-prod; repeatable,
    /// at most 32, names up to 128 and values up to 1023 characters
    /// (comma-separated in COLLECTOR_LABEL, so a value given there cannot
    /// contain a comma; give such a label with --label).
    #[arg(long = "label", env = "COLLECTOR_LABEL", value_name = "KEY=VALUE", value_delimiter = ',', value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Only interfaces whose name matches this regex (unanchored, as in node_exporter).
    #[arg(long, env = "COLLECTOR_INCLUDE", value_name = "REGEX", conflicts_with = "exclude", value_parser = parse_regex)]
    pub include: Option<String>,
    /// Skip interfaces whose name matches this regex (unanchored; use ^...$ for whole names).
    #[arg(long, env = "COLLECTOR_EXCLUDE", value_name = "REGEX", value_parser = parse_regex)]
    pub exclude: Option<String>,
    /// Do not load eBPF probes; serve netlink metrics only.
    #[arg(long, env = "COLLECTOR_NO_EBPF")]
    pub no_ebpf: bool,
    /// Also serve the rest of IFLA_STATS64 (length, over, crc, frame, fifo,
    /// nohandler, compressed, aborted, heartbeat, window) and carrier changes,
    /// 13 more series per interface, like node_exporter's
    /// --collector.netdev.enable-detailed-metrics; and the rest of each pod's
    /// SNMP counters (node_exporter's default netstat set), 20 more per pod.
    #[arg(long, env = "COLLECTOR_DETAILED_METRICS")]
    pub detailed_metrics: bool,
    /// Longest a netlink link dump may take (1ms to 60s); a dump that takes
    /// longer fails that collection, is counted in
    /// collector_netlink_dump_timeouts_total, and turns /healthz red when it repeats.
    #[arg(long, env = "COLLECTOR_NETLINK_TIMEOUT", default_value = "5s", value_name = "DURATION", value_parser = parse_timeout)]
    pub netlink_timeout: Duration,
    /// Interfaces the eBPF traffic map can hold (each entry keeps 32 bytes per CPU);
    /// the drop map holds four times as many (namespace, device, reason) triples
    /// (8 bytes per CPU each). Beyond either, updates are lost and counted in
    /// collector_ebpf_map_full_total.
    #[arg(long, env = "COLLECTOR_EBPF_MAX_INTERFACES", default_value_t = collector_common::TRAFFIC_MAP_ENTRIES, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub ebpf_max_interfaces: u32,
    /// Probes to attach (comma-separated). The default, `drops,tcp`: `drops`
    /// runs on kfree_skb, which since 5.17 frees only packets that are
    /// dropped or not given a reason (counted as NOT_SPECIFIED); before 5.17
    /// it also runs on plain frees of delivered packets; `tcp` runs once per
    /// TCP state change, retransmit or reset, never per delivered packet.
    /// `rx,tx` add per-packet eBPF traffic counters at a measurable cost per
    /// packet (see docs/bench/README.md).
    #[arg(long, env = "COLLECTOR_EBPF_PROBES", value_enum, value_delimiter = ',', default_values_t = [ProbeChoice::Drops, ProbeChoice::Tcp])]
    pub ebpf_probes: Vec<ProbeChoice>,
    /// Program flavour: `auto` uses BTF-typed tracepoints (tp_btf, no trace record
    /// built, no helper calls per packet) and falls back per probe to classic
    /// tracepoints where they do not load; `classic` forces the latter.
    #[arg(long, env = "COLLECTOR_EBPF_FLAVOUR", value_enum, default_value_t = FlavourChoice::Auto)]
    pub ebpf_flavour: FlavourChoice,
    /// Kernel BTF to read struct offsets from (the DaemonSet mounts the host's
    /// /sys/kernel/btf read-only).
    #[arg(long, env = "COLLECTOR_BTF", value_name = "FILE", default_value = crate::sources::ebpf::btf_offsets::VMLINUX_BTF)]
    pub btf: String,
    /// Directory to read tracepoint format files from (DIR/events/...)
    /// [default: the tracefs at /sys/kernel/tracing or /sys/kernel/debug/tracing].
    /// tracefs is looked for there in any case (attaching resolves
    /// tracepoint ids there); `serve` mounts it at /sys/kernel/tracing when
    /// missing, `snapshot` and `watch` never mount it.
    #[arg(long, env = "COLLECTOR_TRACEFS", value_name = "DIR")]
    pub tracefs: Option<String>,
    /// libcni's result cache, one file per pod attachment, read to name the
    /// pod of each host-side veth (network_interface_pod_info). Missing or
    /// unreadable: logged once, collector_pod_identity_up 0, the rest served.
    #[arg(
        long,
        env = "COLLECTOR_CNI_RESULTS_DIR",
        value_name = "DIR",
        default_value = "/var/lib/cni/results"
    )]
    pub cni_results_dir: std::path::PathBuf,
    /// Where the runtime's netns files (/var/run/netns/cni-...) are visible;
    /// a cached /var/run/netns/NAME is opened as DIR/NAME.
    #[arg(
        long,
        env = "COLLECTOR_NETNS_DIR",
        value_name = "DIR",
        default_value = "/var/run/netns"
    )]
    pub netns_dir: std::path::PathBuf,
    /// The host's /proc (the DaemonSet mounts it read-only at /host/proc):
    /// each pod's own TCP/UDP/IP counters are read from its sandbox
    /// process's /proc/PID/net/{snmp,netstat,snmp6}, which needs no
    /// capability. Not the host's (no pod's process in it): counted in
    /// collector_pod_netstat_errors_total{reason="process"}.
    #[arg(
        long,
        env = "COLLECTOR_HOST_PROC",
        value_name = "DIR",
        default_value = "/proc"
    )]
    pub host_proc: std::path::PathBuf,
    /// Do not serve pods' own SNMP counters (network_pod_netstat_*, 14
    /// series per pod, 34 with --detailed-metrics).
    #[arg(long, env = "COLLECTOR_NO_POD_NETSTAT")]
    pub no_pod_netstat: bool,
}

impl CommonArgs {
    pub fn profile(&self) -> Profile {
        if self.detailed_metrics {
            Profile::Detailed
        } else {
            Profile::Default
        }
    }

    pub fn pod_config(&self) -> crate::sources::pods::PodConfig {
        crate::sources::pods::PodConfig {
            results_dir: self.cni_results_dir.clone(),
            netns_dir: self.netns_dir.clone(),
        }
    }

    pub fn filter(&self) -> InterfaceFilter {
        // Both regexes were compiled by their value parsers and clap enforces
        // that at most one is given, so this cannot fail.
        InterfaceFilter::new(self.include.as_deref(), self.exclude.as_deref()).unwrap_or_default()
    }

    /// Labels sorted by key; a key given twice, or more than [`MAX_LABELS`],
    /// is an error.
    pub fn sorted_labels(&self) -> Result<Vec<(String, String)>, String> {
        if self.labels.len() > MAX_LABELS {
            return Err(format!(
                "--label: {} labels given, at most {MAX_LABELS}: beyond 63 labels on one series \
                 Azure Managed Prometheus fails the whole scrape job",
                self.labels.len()
            ));
        }
        let mut labels = self.labels.clone();
        labels.sort();
        for pair in labels.windows(2) {
            if pair[0].0 == pair[1].0 {
                return Err(format!("--label: key `{}` given more than once", pair[0].0));
            }
        }
        Ok(labels)
    }

    pub fn node_name(&self) -> String {
        self.node_name
            .clone()
            .or_else(|| {
                std::env::var("NODE_NAME")
                    .ok()
                    .filter(|n| !n.trim().is_empty())
            })
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".to_string())
    }
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not KEY=VALUE"))?;
    let valid_start = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !valid_start || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "`{key}` is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)"
        ));
    }
    if key.chars().count() > MAX_LABEL_NAME_CHARS {
        return Err(format!(
            "label name of {} characters, at most {MAX_LABEL_NAME_CHARS}",
            key.chars().count()
        ));
    }
    if value.chars().count() > MAX_LABEL_VALUE_CHARS {
        return Err(format!(
            "`{key}` has a value of {} characters, at most {MAX_LABEL_VALUE_CHARS}: \
             Azure Managed Prometheus fails the whole scrape job on a longer one",
            value.chars().count()
        ));
    }
    if key.starts_with("__") {
        return Err(format!(
            "`{key}`: names starting with __ are reserved by Prometheus"
        ));
    }
    if RESERVED_LABELS.contains(&key) {
        return Err(format!(
            "`{key}` is set by the collector itself or by the scrape's target labels"
        ));
    }
    // Prometheus treats an empty label as no label, so `cluster=` would
    // silently serve every node without one; the manifests ship it empty
    // so that a cluster is never deployed under a placeholder name.
    if value.is_empty() {
        return Err(format!(
            "`{key}` has an empty value: give it one (for `cluster`, this cluster's name; \
             in the manifests, base/cluster-labels.env) or leave the label out"
        ));
    }
    Ok((key.to_string(), value.to_string()))
}

fn parse_regex(text: &str) -> Result<String, String> {
    regex::Regex::new(text)
        .map(|_| text.to_string())
        .map_err(|e| {
            format!(
                "invalid regex: {}",
                e.to_string().lines().last().unwrap_or_default().trim()
            )
        })
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration like 500ms or 2s: {e}"))
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    let interval = parse_duration(text)?;
    if interval < Duration::from_millis(100) {
        return Err(format!("`{text}` is shorter than 100ms"));
    }
    Ok(interval)
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    let timeout = parse_duration(text)?;
    if timeout < Duration::from_millis(1) || timeout > Duration::from_secs(60) {
        return Err(format!("`{text}` is outside 1ms..60s"));
    }
    Ok(timeout)
}

fn parse_node_name(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err("node name is empty".to_string());
    }
    if text.chars().count() > MAX_NODE_NAME_CHARS {
        return Err(format!(
            "node name of {} characters, longer than a Kubernetes node name ({MAX_NODE_NAME_CHARS})",
            text.chars().count()
        ));
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests;
