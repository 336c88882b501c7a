//! What one run measured (serialized to report.json) and its Markdown
//! rendering (report.md).

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::datapath::{Attached, Datapath, Versus};
use crate::scrape::Latency;
use crate::storm::{Cost, Kind, Spread, Storm, COST_TARGET_PERCENT, NS_PER_DROP_TARGET};
use crate::sys::Memory;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub command: String,
    pub started_unix: u64,
    pub duration_seconds: f64,
    pub quick: bool,
    pub machine: serde_json::Value,
    pub versions: serde_json::Value,
    pub load_average_start: f64,
    pub load_average_end: f64,
    pub plan: serde_json::Value,
    pub sizes: Vec<SizeInfo>,
    pub scrapes: Vec<ScrapeResult>,
    pub script: Vec<ScriptResult>,
    pub datapath: Option<Datapath>,
    /// Absent in reports from before the drop storm.
    #[serde(default)]
    pub storm: Option<Storm>,
    /// Absent in reports from before the TCP probes.
    #[serde(default)]
    pub churn: Option<crate::churn::Churn>,
    /// Absent in reports from before pods' own counters.
    #[serde(default)]
    pub pods: Option<crate::pods::PodsResult>,
    pub idle: Option<Idle>,
    pub targets: Vec<Target>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SizeInfo {
    /// Veth interfaces asked for in the measured namespace.
    pub requested: usize,
    /// Veth interfaces that exist there (their peers live in a second namespace).
    pub created: usize,
    /// Every link in the namespace, loopback included.
    pub links_in_namespace: usize,
    pub create_seconds: f64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScrapeResult {
    pub tool: String,
    pub label: String,
    pub interfaces: usize,
    pub warmup_scrapes: usize,
    pub latency: Latency,
    /// utime+stime delta of the process over the measured series / scrapes.
    pub cpu_ms_per_scrape: f64,
    pub body_bytes: usize,
    /// Body bytes on the connection (gzip where the tool compresses).
    #[serde(default)]
    pub wire_bytes: usize,
    pub series_lines: usize,
    pub memory_after_warmup: Memory,
    pub memory_after_series: Memory,
    /// Scrapes served when `memory_after_series` was read (warm-up included).
    pub scrapes_total: usize,
    /// The series stopped at its time cap before reaching the scrape count.
    pub time_capped: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScriptResult {
    pub interfaces: usize,
    pub latency: Latency,
    /// CPU of bash and its children (ip, awk, date, hostname) per run.
    pub cpu_ms_per_run: f64,
    /// Lines printed (one per non-loopback interface).
    pub lines: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Idle {
    pub interfaces: usize,
    pub window_seconds: f64,
    pub scrape_interval_seconds: f64,
    pub scrapes: usize,
    /// Resolution of the CPU numbers (one clock tick of /proc/<pid>/stat).
    #[serde(default)]
    pub cpu_tick_ms: f64,
    pub processes: Vec<IdleProcess>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdleProcess {
    pub tool: String,
    pub label: String,
    pub cpu_ms: f64,
    /// CPU over the window as a percentage of one core.
    pub cpu_percent_of_core: f64,
    pub memory_end: Memory,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    pub name: String,
    pub goal: String,
    pub measured: String,
    /// `None` when the run did not measure it.
    pub met: Option<bool>,
    /// Shown after the verdict, e.g. how a non-default configuration fared.
    #[serde(default)]
    pub note: Option<String>,
}

pub const COLLECTOR_TOOLS: [&str; 2] = ["collector-no-ebpf", "collector-ebpf"];

impl Report {
    pub fn scrape(&self, tool: &str, interfaces: usize) -> Option<&ScrapeResult> {
        self.scrapes
            .iter()
            .find(|s| s.tool == tool && s.interfaces == interfaces)
    }

    fn scrape_targets(&self, targets: &mut Vec<Target>) {
        let size = self
            .sizes
            .iter()
            .filter(|s| s.error.is_none())
            .map(|s| s.requested)
            .min_by_key(|n| n.abs_diff(1000));
        let Some(size) = size else {
            return;
        };
        let at = if size == 1000 {
            String::new()
        } else {
            format!(" (measured at {size}, not 1,000)")
        };
        for (other, factor) in [
            ("node-exporter-netdev", 10.0),
            ("node-exporter-netclass", 100.0),
        ] {
            let pair = (
                self.scrape("collector-ebpf", size),
                self.scrape("collector-no-ebpf", size),
                self.scrape(other, size),
            );
            let (Some(ebpf), Some(plain), Some(other_result)) = pair else {
                continue;
            };
            let ratio = other_result.latency.p50_ms / ebpf.latency.p50_ms;
            let ratio_plain = other_result.latency.p50_ms / plain.latency.p50_ms;
            let cpu_ratio = other_result.cpu_ms_per_scrape / ebpf.cpu_ms_per_scrape;
            targets.push(Target {
                name: format!("scrape p50 vs {}{at}", other_result.label),
                goal: format!(">= {factor:.0}x faster"),
                measured: format!(
                    "{ratio:.1}x with eBPF, {ratio_plain:.1}x with --no-ebpf (p50 {:.2} ms vs {:.2} ms); CPU per scrape {cpu_ratio:.1}x",
                    ebpf.latency.p50_ms, other_result.latency.p50_ms
                ),
                met: Some(ratio >= factor),
                note: None,
            });
        }
        let rss: Vec<(&str, u64, u64)> = COLLECTOR_TOOLS
            .iter()
            .filter_map(|t| self.scrape(t, size))
            .map(|s| {
                (
                    s.label.as_str(),
                    s.memory_after_warmup
                        .rss_kib
                        .max(s.memory_after_series.rss_kib),
                    s.memory_after_series.hwm_kib,
                )
            })
            .collect();
        if !rss.is_empty() {
            let worst = rss.iter().map(|r| r.1).max().unwrap_or(0);
            targets.push(Target {
                name: format!("collector RSS{at}"),
                goal: "< 16 MiB".into(),
                measured: rss
                    .iter()
                    .map(|(label, rss, hwm)| {
                        format!("{label}: {} RSS, {} peak", mib(*rss), mib(*hwm))
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
                met: Some(worst < 16 * 1024),
                note: None,
            });
        }
    }

    /// Evaluates the issues' targets: the scrape targets at 1,000
    /// interfaces (or the size nearest to it) against the default
    /// deployment, probes on, then the datapath and drop-storm costs.
    pub fn evaluate_targets(&mut self) {
        let mut targets = Vec::new();
        self.scrape_targets(&mut targets);
        if let Some(d) = &self.datapath {
            // Judged on the default deployment: drops only since tp_btf
            // (every probe before, in reports without a classic
            // configuration); the other configurations are named beside it.
            let figure = |a: &Attached| {
                format!(
                    "{}: {}; {:.0} ns/packet; {} of {} packets lost",
                    a.label,
                    versus(&a.versus),
                    a.versus.ns_per_packet,
                    a.lost,
                    a.sent
                )
            };
            let verdict = |a: &Attached| {
                if a.versus.cost_percent < 3.0 {
                    "met"
                } else {
                    "missed"
                }
            };
            let default = match (&d.classic, &d.drops_only) {
                (Some(_), Some(drops)) => drops,
                _ => &d.all_probes,
            };
            let measured = std::iter::once(&d.all_probes)
                .chain(&d.classic)
                .chain(&d.drops_only)
                .map(figure)
                .collect::<Vec<_>>()
                .join("; ");
            let note = std::iter::once(&d.all_probes)
                .chain(&d.classic)
                .chain(&d.drops_only)
                .filter(|a| !std::ptr::eq(*a, default))
                .map(|a| {
                    format!(
                        "{} (`--ebpf-probes {}`): {}",
                        a.label,
                        a.ebpf_probes,
                        verdict(a)
                    )
                })
                .collect::<Vec<_>>();
            targets.push(Target {
                name: "BPF datapath cost".into(),
                goal: "< 3% packets/s".into(),
                measured,
                met: Some(default.versus.cost_percent < 3.0),
                note: (!note.is_empty()).then(|| note.join("; ")),
            });
        }
        if let Some(storm) = &self.storm {
            targets.extend(storm_targets(storm));
        }
        if let Some(churn) = &self.churn {
            targets.push(Target {
                name: "connection churn cost (default probes)".into(),
                goal: format!("<= {} % connections/s", crate::churn::COST_TARGET_PERCENT),
                measured: churn.attached.as_ref().map_or("not measured".into(), |a| {
                    format!(
                        "{:.2} % fewer ({:.0} vs {:.0} detached)",
                        a.cost_percent, a.pps_median, churn.detached_median
                    )
                }),
                met: churn.cost_met(),
                note: churn
                    .program_ns_per_event
                    .map(|ns| format!("{:.1} ns of TCP program time per event", ns.median)),
            });
        }
        if let Some(pods) = &self.pods {
            targets.push(Target {
                name: format!(
                    "scrape CPU with {} pods' /proc reads vs node_exporter netdev",
                    pods.pods
                ),
                goal: pods.baseline.as_ref().map_or(
                    "not below the scrape phase's ratio".into(),
                    |b| {
                        format!(
                            "not below the scrape phase's ratio at {} interfaces",
                            b.interfaces
                        )
                    },
                ),
                measured: format!(
                    "{:.1}x with pods' counters, {:.1}x without",
                    pods.ratio_with_pods, pods.ratio_without_pods
                ),
                met: pods.met(),
                note: None,
            });
        }
        self.targets = targets;
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# Benchmark report\n");
        let _ = writeln!(
            out,
            "`{}`{} on {} ({} CPUs, {} GiB, kernel {}); load average {:.2} at start, {:.2} at end; {:.0} s.\n",
            self.command,
            if self.quick { " (quick smoke run: small sizes, few iterations)" } else { "" },
            self.machine["cpu"].as_str().unwrap_or("?"),
            self.machine["cpus"],
            self.machine["memory_gib"],
            self.machine["kernel"].as_str().unwrap_or("?"),
            self.load_average_start,
            self.load_average_end,
            self.duration_seconds
        );
        if let Some(versions) = self.versions.as_object() {
            let list: Vec<String> = versions
                .iter()
                .map(|(k, v)| format!("{k}: {}", v.as_str().unwrap_or("?")))
                .collect();
            let _ = writeln!(out, "Versions: {}.\n", list.join("; "));
        }

        let _ = writeln!(out, "## Targets\n");
        let _ = writeln!(
            out,
            "| Target | Goal | Measured | Verdict |\n|---|---|---|---|"
        );
        for t in &self.targets {
            let mut verdict = verdict(t.met).to_string();
            if let Some(note) = &t.note {
                verdict = format!("{verdict} (default); {note}");
            }
            let _ = writeln!(
                out,
                "| {} | {} | {} | {verdict} |",
                t.name, t.goal, t.measured
            );
        }

        if !self.scrapes.is_empty() {
            self.scrape_sections(&mut out);
        }

        if let Some(d) = &self.datapath {
            let _ = writeln!(out, "\n## BPF datapath cost\n");
            let _ = writeln!(
                out,
                "UDP, 64-byte payloads, sendmmsg/recvmmsg batches of 64, one veth pair between two namespaces; rounds alternate detached (no collector) with an attached configuration — all probes (`collector serve --ebpf-probes rx,tx,drops`, tp_btf programs), all probes as classic tracepoints (`--ebpf-flavour classic`) and drops only (`collector serve`, the default `--ebpf-probes drops`) — collector in the sender's namespace, the attached configurations in an order rotated each cycle, with a detached round at the end. Lost = sent - received (each a kfree_skb on the way, mostly a full receive buffer: UDP RcvbufErrors of the receiving namespace). Probe check: packets the TX probe counted (all probes) or test drops the drop probe counted (drops only).\n"
            );
            let _ = writeln!(
                out,
                "| Round | Probes | s | Sent pkt/s | Received pkt/s | Lost | Rcvbuf errors | Thread CPU ns/pkt | Probe programs loaded | Probe check |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"
            );
            for r in &d.rounds {
                let check = match (r.probe_counted_tx_packets, r.probe_counted_test_drops) {
                    (Some(n), _) => format!("TX {n}"),
                    (None, Some(n)) => format!("{n} test drops"),
                    (None, None) => "-".to_string(),
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.1} | {:.0} | {:.0} | {} | {} | {:.0} | {} | {check} |",
                    r.index,
                    r.config().label(),
                    r.seconds,
                    r.sent_pps,
                    r.received_pps,
                    r.lost(),
                    r.udp_rcvbuf_errors
                        .map_or("?".to_string(), |n| n.to_string()),
                    r.thread_cpu_ns_per_packet,
                    r.probe_programs_loaded
                        .map_or("?".to_string(), |n| n.to_string()),
                );
            }
            let _ = writeln!(
                out,
                "\nDetached: median {:.0} sent pkt/s ({:.0}..{:.0}), thread CPU {:.0} ns per packet, {} packets lost.\n",
                d.detached_pps_median,
                d.detached_pps_min_max.0,
                d.detached_pps_min_max.1,
                d.thread_cpu_ns_per_packet_detached,
                d.detached_lost,
            );
            let _ = writeln!(
                out,
                "| Attached | `--ebpf-probes` | Rounds | Median pkt/s (range) | Ratio to neighbouring detached, per round | Median ratio (range) | Cost | ns/packet | Thread CPU ns/pkt | Lost / sent |\n|---|---|---:|---:|---|---:|---:|---:|---:|---:|"
            );
            for a in std::iter::once(&d.all_probes)
                .chain(&d.classic)
                .chain(&d.drops_only)
            {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {:.0} ({:.0}..{:.0}) | {} | {:.3} ({:.3}..{:.3}) | {:.1}% | {:.0} | {:.0} | {} / {} |",
                    a.label,
                    a.ebpf_probes,
                    a.rounds,
                    a.versus.pps_median,
                    a.versus.pps_min_max.0,
                    a.versus.pps_min_max.1,
                    ratio_list(&a.versus.ratios),
                    a.versus.ratio_median,
                    a.versus.ratio_min,
                    a.versus.ratio_max,
                    a.versus.cost_percent,
                    a.versus.ns_per_packet,
                    a.thread_cpu_ns_per_packet,
                    a.lost,
                    a.sent,
                );
            }
            let _ = writeln!(
                out,
                "\nRatio: a round's sent pkt/s over the mean of the nearest detached round before and after it; cost = 1 - median ratio; ns/packet = median over the rounds of 1e9/attached - 1e9/detached (same neighbours)."
            );
            if let Some(drops) = &d.drops_only {
                let _ = if drops.lost == 0 {
                    writeln!(
                        out,
                        "\nDrops only: no packet of the flow was lost in its rounds, so kfree_skb had nothing of it to run on; delivered packets reach no probe."
                    )
                } else {
                    writeln!(
                        out,
                        "\nDrops only: {} of {} packets were lost in its rounds; each ran kfree_skb, so those rounds paid the drop probe once per dropped packet.",
                        drops.lost, drops.sent
                    )
                };
            }
            for (label, stats) in [
                ("all probes", &d.bpf_stats),
                ("classic tracepoints", &d.bpf_stats_classic),
                ("drops only", &d.bpf_stats_drops_only),
            ] {
                let Some(stats) = stats else { continue };
                let programs: Vec<String> = stats
                    .programs
                    .iter()
                    .map(|p| format!("{} {} runs x {:.0} ns", p.name, p.runs, p.ns_per_run))
                    .collect();
                let kfree_skb_runs: u64 = stats
                    .programs
                    .iter()
                    .filter(|p| p.name.starts_with("kfree_skb"))
                    .map(|p| p.runs)
                    .sum();
                // Every drop on the machine runs it; the program itself
                // discards drops outside the collector's namespace.
                let elsewhere = if kfree_skb_runs > stats.lost {
                    format!(
                        " kfree_skb ran {kfree_skb_runs} times while the flow lost {} packets: the other runs were other drops on the machine (it runs for every drop in every namespace).",
                        stats.lost
                    )
                } else {
                    String::new()
                };
                let _ = writeln!(
                    out,
                    "\nBPF run-time statistics round ({label}, statistics on, not part of the ratio): {:.0} pkt/s, {} of {} packets lost; the collector's programs ran {} ns per packet sent ({}).{elsewhere}",
                    stats.sent_pps,
                    stats.lost,
                    stats.sent,
                    num(stats.bpf_ns_per_packet),
                    programs.join("; ")
                );
            }
            if let Some(warning) = &d.foreign_probe_warning {
                let _ = writeln!(out, "\nWarning: {warning}.");
            }
            if let Some(warning) = &d.probe_check_warning {
                let _ = writeln!(out, "\nWarning: probes not seen counting: {warning}.");
            }
        }

        if let Some(storm) = &self.storm {
            storm_section(storm, &mut out);
        }
        if let Some(churn) = &self.churn {
            let _ = write!(out, "\n{}", crate::churn::markdown(churn));
        }
        if let Some(pods) = &self.pods {
            let _ = write!(out, "\n{}", crate::pods::markdown(pods));
        }

        if let Some(idle) = &self.idle {
            let _ = writeln!(out, "\n## Idle\n");
            let _ = writeln!(
                out,
                "{} interfaces, {:.0} s window, one scrape every {:.0} s ({} scrapes, included), all processes running side by side; CPU resolution {:.0} ms (one clock tick).\n",
                idle.interfaces,
                idle.window_seconds,
                idle.scrape_interval_seconds,
                idle.scrapes,
                idle.cpu_tick_ms
            );
            let _ = writeln!(
                out,
                "| Tool | CPU ms in window | % of one core | RSS at end |\n|---|---:|---:|---:|"
            );
            for p in &idle.processes {
                let _ = writeln!(
                    out,
                    "| {} | {:.0} | {:.3} | {} |",
                    p.label,
                    p.cpu_ms,
                    p.cpu_percent_of_core,
                    mib(p.memory_end.rss_kib)
                );
            }
        }

        if !self.sizes.is_empty() {
            let _ = writeln!(out, "\n## Interface counts\n");
            let _ = writeln!(
                out,
                "| Requested veths | Created | Links in namespace | Create s | Note |\n|---:|---:|---:|---:|---|"
            );
        }
        for s in &self.sizes {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.1} | {} |",
                s.requested,
                s.created,
                s.links_in_namespace,
                s.create_seconds,
                s.error.as_deref().unwrap_or("")
            );
        }
        if !self.notes.is_empty() {
            let _ = writeln!(out, "\n## Notes\n");
            for note in &self.notes {
                let _ = writeln!(out, "- {note}");
            }
        }
        out
    }

    /// Scrape latency and CPU, the ratios between the tools, and memory.
    fn scrape_sections(&self, out: &mut String) {
        let _ = writeln!(out, "\n## Scrape latency and CPU\n");
        let _ = writeln!(
            out,
            "One HTTP/1.0 GET per scrape on a new connection, sequential, after a warm-up; CPU is the process's utime+stime (/proc/<pid>/stat) over the series divided by its scrapes. The seed script row is one `bash parse_ip_stats.sh` run (CPU of bash and its children).\n"
        );
        let _ = writeln!(
            out,
            "| Interfaces | Tool | Scrapes | p50 ms | p99 ms | max ms | CPU ms/scrape | Body KiB | On the wire KiB |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|"
        );
        for size in &self.sizes {
            for s in self
                .scrapes
                .iter()
                .filter(|s| s.interfaces == size.requested)
            {
                let _ = writeln!(
                    out,
                    "| {} | {} | {}{} | {} | {} | {} | {} | {:.0} | {:.0} |",
                    size.requested,
                    s.label,
                    s.latency.n,
                    if s.time_capped { " (time cap)" } else { "" },
                    num(s.latency.p50_ms),
                    num(s.latency.p99_ms),
                    num(s.latency.max_ms),
                    num(s.cpu_ms_per_scrape),
                    s.body_bytes as f64 / 1024.0,
                    s.wire_bytes as f64 / 1024.0,
                );
            }
            if let Some(script) = self.script.iter().find(|s| s.interfaces == size.requested) {
                let _ = writeln!(
                    out,
                    "| {} | parse_ip_stats.sh (seed, one collection) | {} | {} | {} | {} | {} | - | - |",
                    size.requested,
                    script.latency.n,
                    num(script.latency.p50_ms),
                    num(script.latency.p99_ms),
                    num(script.latency.max_ms),
                    num(script.cpu_ms_per_run),
                );
            }
        }

        let _ = writeln!(
            out,
            "\n## Ratios (other tool / collector: p50 latency / CPU per scrape)\n"
        );
        let _ = writeln!(
            out,
            "| Interfaces | vs collector | node_exporter netdev | node_exporter netdev+netclass | parse_ip_stats.sh |\n|---:|---|---:|---:|---:|"
        );
        for size in &self.sizes {
            for base_tool in COLLECTOR_TOOLS {
                let Some(base) = self.scrape(base_tool, size.requested) else {
                    continue;
                };
                let cell = |tool: &str| {
                    self.scrape(tool, size.requested)
                        .map_or("-".to_string(), |o| {
                            format!(
                                "{:.1}x / {:.1}x",
                                o.latency.p50_ms / base.latency.p50_ms,
                                o.cpu_ms_per_scrape / base.cpu_ms_per_scrape
                            )
                        })
                };
                let script = self
                    .script
                    .iter()
                    .find(|s| s.interfaces == size.requested)
                    .map_or("-".to_string(), |s| {
                        format!(
                            "{:.1}x / {:.1}x",
                            s.latency.p50_ms / base.latency.p50_ms,
                            s.cpu_ms_per_run / base.cpu_ms_per_scrape
                        )
                    });
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} |",
                    size.requested,
                    base.label,
                    cell("node-exporter-netdev"),
                    cell("node-exporter-netclass"),
                    script
                );
            }
        }

        let _ = writeln!(out, "\n## Memory\n");
        let _ = writeln!(
            out,
            "VmRSS and VmHWM (peak RSS) from /proc/<pid>/status after the warm-up and after the series; anon/file split of the RSS after the series (file pages are mostly the mapped binary).\n"
        );
        let _ = writeln!(
            out,
            "| Interfaces | Tool | RSS after warm-up | RSS after series | Scrapes served | Anon / file | HWM |\n|---:|---|---:|---:|---:|---:|---:|"
        );
        for size in &self.sizes {
            for s in self
                .scrapes
                .iter()
                .filter(|s| s.interfaces == size.requested)
            {
                let m = &s.memory_after_series;
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} / {} | {} |",
                    size.requested,
                    s.label,
                    mib(s.memory_after_warmup.rss_kib),
                    mib(m.rss_kib),
                    s.scrapes_total,
                    mib(m.rss_anon_kib),
                    mib(m.rss_file_kib),
                    mib(m.hwm_kib),
                );
            }
        }
    }
}

/// The drop storm's two targets: datagrams/s and program time per drop.
fn storm_targets(storm: &Storm) -> [Target; 2] {
    let cost = match &storm.attached {
        Some(c) => format!(
            "{}; {:.0} vs {:.0} datagrams/s; {:.0} ns/datagram; by the sender's CPU time {:.1}%, {:.0} ns/datagram{}",
            versus(&c.wall),
            c.wall.pps_median,
            storm.detached_pps_median,
            c.wall.ns_per_packet,
            c.cpu.cost_percent,
            c.cpu.ns_per_packet,
            storm.statistics.as_ref().map_or(String::new(), |s| format!(
                "; with run-time statistics on, by the sender's CPU time {:.1}%, {:.0} ns/datagram",
                s.cpu.cost_percent, s.cpu.ns_per_packet
            ))
        ),
        None => "no attached round".into(),
    };
    let cost = match &storm.local {
        Some(local) => format!("{cost}; in the dropping namespace {}", versus(&local.wall)),
        None => cost,
    };
    let program = match (&storm.program_ns_per_drop, &storm.runs_per_drop) {
        (Some(ns), Some(runs)) => format!(
            "{} per drop; {:.3} kfree_skb runs per kernel drop{}",
            nanoseconds(ns),
            runs.median,
            (storm.local_program_ns_per_drop.as_ref()).map_or(String::new(), |l| format!(
                "; in the dropping namespace {}",
                nanoseconds(l)
            ))
        ),
        _ => "no run-time statistics".into(),
    };
    [
        Target {
            name: "drop storm cost (drops only)".into(),
            goal: format!("<= {COST_TARGET_PERCENT:.0}% datagrams/s"),
            measured: cost,
            met: storm.cost_met(),
            note: None,
        },
        Target {
            name: "drop storm program time".into(),
            goal: format!("<= {NS_PER_DROP_TARGET:.0} ns per drop"),
            measured: program,
            met: storm.program_time_met(),
            note: None,
        },
    ]
}

/// `2.0% (attached/detached 0.980, rounds 0.950..0.990)`.
fn versus(v: &Versus) -> String {
    format!(
        "{:.1}% (attached/detached {:.3}, rounds {:.3}..{:.3})",
        v.cost_percent, v.ratio_median, v.ratio_min, v.ratio_max
    )
}

/// `78 ns (rounds 76..80)`.
fn nanoseconds(spread: &Spread) -> String {
    let (median, min, max) = (num(spread.median), num(spread.min), num(spread.max));
    format!("{median} ns (rounds {min}..{max})")
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "not measured",
    }
}

fn storm_section(storm: &Storm, out: &mut String) {
    let _ = writeln!(out, "\n## Drop storm\n");
    let _ = writeln!(
        out,
        "One sender thread pinned to CPU {} sends 64-byte UDP datagrams (sendmmsg, batches of 64) as fast as it can over a veth pair (198.18.201.1 to 198.18.201.2) to port 9 of the receiving namespace, where no socket listens: the kernel drops each one there (`NO_SOCKET`, one kfree_skb each), in the sender's softirq context. The receiving namespace's ICMP budget is 0 (`net.ipv4.icmp_msgs_per_sec=0`, `icmp_msgs_burst=0`), so no port unreachable is sent and every drop does the same work. Rounds alternate detached (no collector) with four kinds of attached rounds: `collector serve` with the drops probe in the sender's namespace (the drops happen in another namespace, as a pod's do), the same in the receiving namespace (the drops happen in the collector's own namespace and are keyed by device), and each of those with BPF run-time statistics on (a `BPF_ENABLE_STATS` fd), in an order rotated each cycle, with a detached round at the end. Kernel drops: Udp NoPorts of the receiving namespace over the round. Statistics rounds give the kfree_skb program's runs and run time over the round (bpftool); the statistics add their own time to every run (clock reads around it), so only the rounds without them give the cost.\n",
        storm.sender_cpu
    );
    let _ = writeln!(
        out,
        "| Round | Probes | s | Sent datagrams/s | Kernel drops | ICMP unreachables | Sender CPU ns/datagram | Probe programs loaded | kfree_skb runs | Runs per drop | ns per drop |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in &storm.rounds {
        let (runs, per_drop, ns) = match (&r.program, r.runs_per_drop()) {
            (Some(p), Some(per_drop)) => (
                p.runs.to_string(),
                format!("{per_drop:.3}"),
                num(p.ns_per_run),
            ),
            _ => ("-".into(), "-".into(), "-".into()),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {:.0} | {} | {} | {:.0} | {} | {runs} | {per_drop} | {ns} |",
            r.index,
            r.kind.label(),
            r.seconds,
            r.sent_pps,
            r.kernel_drops,
            r.icmp_unreachables,
            r.sender_cpu_ns_per_datagram,
            r.probe_programs_loaded
                .map_or("?".to_string(), |n| n.to_string()),
        );
    }
    let _ = writeln!(
        out,
        "\nDetached: median {:.0} datagrams/s ({:.0}..{:.0}). {} of {} datagrams sent were counted as dropped for want of a socket.\n",
        storm.detached_pps_median,
        storm.detached_pps_min_max.0,
        storm.detached_pps_min_max.1,
        storm.kernel_drops,
        storm.sent
    );
    let _ = writeln!(
        out,
        "| Attached | Rounds | Median datagrams/s (range) | Ratio to neighbouring detached, per round | Median ratio (range) | Cost | ns/datagram | By sender CPU time: ratios | Cost | CPU ns/datagram |\n|---|---:|---:|---|---:|---:|---:|---|---:|---:|"
    );
    for (kind, cost) in [
        (Kind::Attached, &storm.attached),
        (Kind::Statistics, &storm.statistics),
        (Kind::Local, &storm.local),
        (Kind::LocalStatistics, &storm.local_statistics),
    ] {
        let Some(Cost { wall, cpu }) = cost else {
            continue;
        };
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} ({:.0}..{:.0}) | {} | {:.3} ({:.3}..{:.3}) | {:.1}% | {:.0} | {} | {:.1}% | {:.0} |",
            kind.label(),
            wall.ratios.len(),
            wall.pps_median,
            wall.pps_min_max.0,
            wall.pps_min_max.1,
            ratio_list(&wall.ratios),
            wall.ratio_median,
            wall.ratio_min,
            wall.ratio_max,
            wall.cost_percent,
            wall.ns_per_packet,
            ratio_list(&cpu.ratios),
            cpu.cost_percent,
            cpu.ns_per_packet,
        );
    }
    let _ = writeln!(
        out,
        "\nRatio: a round's datagrams/s over the mean of the nearest detached round before and after it; cost = 1 - median ratio; ns/datagram = median of 1e9/attached - 1e9/detached (same neighbours). By sender CPU time: the same with datagrams per second of the sender thread's CPU time, so time it spent descheduled by other work does not count (the drop path is in it unless the kernel accounts softirq time apart). Target (drops only, as deployed, wall time): cost <= {COST_TARGET_PERCENT:.0}%: {}.",
        verdict(storm.cost_met())
    );
    if let (Some(ns), Some(runs)) = (&storm.program_ns_per_drop, &storm.runs_per_drop) {
        let _ = writeln!(
            out,
            "\nProgram time: {} ns per drop, median of the statistics rounds ({}..{}; target <= {NS_PER_DROP_TARGET:.0} ns: {}); {:.3} kfree_skb runs per kernel drop ({:.3}..{:.3}: 1 when it ran for every drop, more for other drops on the machine).",
            num(ns.median),
            num(ns.min),
            num(ns.max),
            verdict(storm.program_time_met()),
            runs.median,
            runs.min,
            runs.max
        );
    }
    if let Some(ns) = &storm.local_program_ns_per_drop {
        let _ = writeln!(
            out,
            "\nIn the dropping namespace (the collector in the receiving namespace, the drops keyed by device): {} ns per drop, median of its statistics rounds ({}..{}).",
            num(ns.median),
            num(ns.min),
            num(ns.max),
        );
    }
    for warning in &storm.warnings {
        let _ = writeln!(out, "\nWarning: {warning}.");
    }
}

/// Per-round ratios, three decimals each.
fn ratio_list(ratios: &[f64]) -> String {
    ratios
        .iter()
        .map(|r| format!("{r:.3}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Three significant digits, without exponent noise.
pub fn num(value: f64) -> String {
    if !value.is_finite() {
        return "-".into();
    }
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else if value >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storm::{fixtures::round, summarize, Kind::*};

    #[test]
    fn a_storm_only_report_judges_the_storm_and_shows_no_scrape_tables() {
        let mut report = Report {
            command: "bench --only storm".into(),
            started_unix: 0,
            duration_seconds: 30.0,
            quick: true,
            machine: serde_json::json!({}),
            versions: serde_json::json!({}),
            load_average_start: 0.0,
            load_average_end: 0.0,
            plan: serde_json::json!({}),
            sizes: Vec::new(),
            scrapes: Vec::new(),
            script: Vec::new(),
            datapath: None,
            storm: Some(summarize(
                vec![
                    round(0, Detached, 500_000.0, 0.0),
                    round(1, Attached, 490_000.0, 0.0),
                    round(2, Detached, 500_000.0, 0.0),
                    round(3, Statistics, 450_000.0, 120.0),
                    round(4, Detached, 500_000.0, 0.0),
                ],
                1,
            )),
            churn: None,
            pods: None,
            idle: None,
            targets: Vec::new(),
            notes: Vec::new(),
        };
        report.evaluate_targets();
        let verdicts: Vec<(&str, Option<bool>)> = report
            .targets
            .iter()
            .map(|t| (t.name.as_str(), t.met))
            .collect();
        assert_eq!(
            verdicts,
            [
                ("drop storm cost (drops only)", Some(true)),
                ("drop storm program time", Some(false)),
            ]
        );
        assert!(report.targets[0]
            .measured
            .starts_with("2.0% (attached/detached 0.980"));
        assert!(report.targets[0].measured.ends_with(
            "; with run-time statistics on, by the sender's CPU time 10.0%, 222 ns/datagram"
        ));
        assert!(report.targets[1].measured.starts_with("120 ns (rounds "));
        let markdown = report.markdown();
        assert!(markdown.contains("## Drop storm"));
        assert!(markdown.contains("| 1 | drops only | 1.0 | 490000 | 490000 | 0 |"));
        assert!(markdown.contains(
            "| 3 | drops only, statistics on | 1.0 | 450000 | 450000 | 0 | 2222 | 1 | 450000 | 1.000 | 120 |"
        ));
        assert!(markdown
            .contains("| drops only, statistics on | 1 | 450000 (450000..450000) | 0.900 |"));
        assert!(markdown.contains("target <= 100 ns: **missed**"));
        assert!(!markdown.contains("## Scrape latency"));
        assert!(!markdown.contains("## Interface counts"));
        // report.json round-trips, and a report from before the storm still reads.
        let json = serde_json::to_value(&report).unwrap();
        let back: Report = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back.storm.unwrap().rounds[3].kind, Statistics);
        let mut old = json;
        old.as_object_mut().unwrap().remove("storm");
        assert!(serde_json::from_value::<Report>(old)
            .unwrap()
            .storm
            .is_none());
    }

    #[test]
    fn number_formatting() {
        assert_eq!(num(1234.6), "1235");
        assert_eq!(num(12.345), "12.3");
        assert_eq!(num(1.2345), "1.23");
        assert_eq!(num(0.12345), "0.123");
        assert_eq!(num(f64::NAN), "-");
        assert_eq!(mib(16 * 1024), "16.0 MiB");
    }
}
