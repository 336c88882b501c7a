//! What one run measured (serialized to report.json) and its Markdown
//! rendering (report.md).

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::datapath::{Attached, Datapath};
use crate::scrape::Latency;
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

    /// Evaluates the targets at 1,000 interfaces (or the size
    /// nearest to it) against the default deployment, probes on.
    pub fn evaluate_targets(&mut self) {
        let mut targets = Vec::new();
        let size = self
            .sizes
            .iter()
            .filter(|s| s.error.is_none())
            .map(|s| s.requested)
            .min_by_key(|n| n.abs_diff(1000));
        let Some(size) = size else {
            self.targets = targets;
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
        if let Some(d) = &self.datapath {
            // Judged on the default deployment: drops only since tp_btf
            // (every probe before, in reports without a classic
            // configuration); the other configurations are named beside it.
            let figure = |a: &Attached| {
                format!(
                    "{}: {:.1}% (attached/detached {:.3}, rounds {:.3}..{:.3}; {:.0} ns/packet; {} of {} packets lost)",
                    a.label,
                    a.cost_percent,
                    a.ratio_median,
                    a.ratio_min,
                    a.ratio_max,
                    a.ns_per_packet,
                    a.lost,
                    a.sent
                )
            };
            let verdict = |a: &Attached| {
                if a.cost_percent < 3.0 {
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
                met: Some(default.cost_percent < 3.0),
                note: (!note.is_empty()).then(|| note.join("; ")),
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
            let mut verdict = match t.met {
                Some(true) => "met",
                Some(false) => "**missed**",
                None => "not measured",
            }
            .to_string();
            if let Some(note) = &t.note {
                verdict = format!("{verdict} (default); {note}");
            }
            let _ = writeln!(
                out,
                "| {} | {} | {} | {verdict} |",
                t.name, t.goal, t.measured
            );
        }

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
                    a.pps_median,
                    a.pps_min_max.0,
                    a.pps_min_max.1,
                    a.ratios
                        .iter()
                        .map(|r| format!("{r:.3}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    a.ratio_median,
                    a.ratio_min,
                    a.ratio_max,
                    a.cost_percent,
                    a.ns_per_packet,
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

        let _ = writeln!(out, "\n## Interface counts\n");
        let _ = writeln!(
            out,
            "| Requested veths | Created | Links in namespace | Create s | Note |\n|---:|---:|---:|---:|---|"
        );
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
