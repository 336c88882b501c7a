//! Connection churn: the TCP probes measured where they run. One thread,
//! pinned to one core, connects from one namespace to a listener in
//! another over a veth pair, accepts, and closes both ends with a reset
//! (linger 0, so no TIME_WAIT exhausts the ports), as fast as it can. On
//! veth the handshake runs in the thread's context, so the pinned core
//! carries every state change, reset and abort of both ends, and the
//! connections per second are the figure.
//!
//! Each connection fires every TCP hook the default probes attach: six
//! state changes (two of which count a handshake and its RTT, one an
//! abort), one reset sent and one received. Rounds alternate detached and
//! attached as the storm's do: attached as deployed (`collector serve`,
//! default probes), and with BPF run-time statistics on, whose run counts
//! and run times of the TCP programs give the program time per event.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::datapath::{
    run_rounds, schedule_of, start_collector_tracked, thread_cpu, unexpected_programs, veth_pair,
    with_run_time_stats, Config, ProgramRuntime, Versus,
};
use crate::scrape::median;
use crate::storm::{pin_to_cpu, sender_cpu, Spread};
use crate::sys::Netns;

const CLIENT_ADDR: &str = "198.18.202.1";
const SERVER_ADDR: &str = "198.18.202.2";
const PORT: u16 = 8000;
/// Issue 27's target: at most this many percent fewer connections per
/// second attached than detached.
pub const COST_TARGET_PERCENT: f64 = 3.0;
const ROUNDING: f64 = 1e-9;
/// The programs of the TCP probes, by the prefix of their names (bpftool
/// shows the first 15 characters).
const TCP_PROGRAMS: [&str; 4] = [
    "inet_sock_set_s",
    "tcp_retransmit_",
    "tcp_send_reset",
    "tcp_receive_res",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Detached,
    /// `collector serve` with the default probes (drops, tcp).
    Attached,
    /// The same with BPF run-time statistics on.
    Statistics,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Detached => "detached",
            Kind::Attached => "default probes (drops, tcp)",
            Kind::Statistics => "default probes, statistics on",
        }
    }

    fn config(self) -> Config {
        match self {
            Kind::Detached => Config::Detached,
            Kind::Attached | Kind::Statistics => Config::Default,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChurnRound {
    pub index: usize,
    pub kind: Kind,
    pub seconds: f64,
    pub connections: u64,
    pub connections_per_second: f64,
    /// The thread's CPU time per connection (both ends' softirq work
    /// included unless the kernel accounts softirq time apart).
    pub cpu_ns_per_connection: f64,
    /// The client namespace's Tcp ActiveOpens over the round.
    pub kernel_active_opens: u64,
    pub probe_programs_loaded: Option<usize>,
    /// Statistics rounds: the TCP programs over the round.
    #[serde(default)]
    pub programs: Vec<ProgramRuntime>,
}

impl ChurnRound {
    /// Program runs and time of the TCP programs together.
    fn tcp_runs(&self) -> Option<(u64, f64)> {
        let tcp: Vec<&ProgramRuntime> = self
            .programs
            .iter()
            .filter(|p| TCP_PROGRAMS.iter().any(|t| p.name.starts_with(t)))
            .collect();
        let runs: u64 = tcp.iter().map(|p| p.runs).sum();
        let ns: f64 = tcp.iter().map(|p| p.ns_per_run * p.runs as f64).sum();
        (runs > 0).then_some((runs, ns))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Churn {
    pub cpu: usize,
    pub rounds: Vec<ChurnRound>,
    pub detached_median: f64,
    pub attached: Option<Versus>,
    pub statistics: Option<Versus>,
    /// Over the statistics rounds: TCP program time per run (per event).
    pub program_ns_per_event: Option<Spread>,
    /// Over the statistics rounds: TCP program runs per connection.
    pub events_per_connection: Option<Spread>,
    /// Over the statistics rounds: TCP program time per connection.
    pub program_ns_per_connection: Option<Spread>,
    pub warnings: Vec<String>,
}

impl Churn {
    pub fn cost_met(&self) -> Option<bool> {
        Some(self.attached.as_ref()?.cost_percent <= COST_TARGET_PERCENT + ROUNDING)
    }
}

pub fn run(collector: &Path, pairs: usize, seconds: f64, logs: &Path) -> Result<Churn> {
    let cpu = sender_cpu()?;
    let client = Netns::create("chcl")?;
    let server = Netns::create("chsv")?;
    veth_pair((&client, "cha", CLIENT_ADDR), (&server, "chb", SERVER_ADDR))?;
    let listener = server.run_in(|| {
        let listener = TcpListener::bind((SERVER_ADDR, PORT)).context("binding the listener")?;
        Ok(listener)
    })?;
    let duration = Duration::from_secs_f64(seconds);
    let schedule = schedule_of(pairs, Kind::Detached, &[Kind::Attached, Kind::Statistics]);
    let rounds = run_rounds(
        &schedule,
        |index, kind| match kind {
            Kind::Detached => Ok(None),
            _ => {
                let log = logs.join(format!("churn-collector-{index}.log"));
                start_collector_tracked(&client, collector, &log, kind.config()).map(Some)
            }
        },
        |slot, collector_process| {
            let mut round = match (&collector_process, slot.config) {
                (Some((_, ids)), Kind::Statistics) => {
                    let (mut round, programs) =
                        with_run_time_stats(ids, || churn(&client, &listener, cpu, duration))?;
                    round.programs = programs;
                    round
                }
                _ => churn(&client, &listener, cpu, duration)?,
            };
            drop(collector_process);
            round.index = slot.index;
            round.kind = slot.config;
            round.probe_programs_loaded = slot.programs_loaded;
            eprintln!(
                "bench: churn round {} ({}): {:.0} connections/s, {:.0} CPU ns/connection, {} ActiveOpens{}",
                round.index,
                round.kind.label(),
                round.connections_per_second,
                round.cpu_ns_per_connection,
                round.kernel_active_opens,
                round.tcp_runs().map_or(String::new(), |(runs, ns)| format!(
                    "; TCP programs {runs} runs x {:.1} ns",
                    ns / runs as f64
                ))
            );
            Ok(round)
        },
    )?;
    Ok(summarize(rounds, cpu))
}

/// One round: connect, accept, reset-close, repeated for `duration`.
fn churn(
    client: &Netns,
    listener: &TcpListener,
    cpu: usize,
    duration: Duration,
) -> Result<ChurnRound> {
    let target: SocketAddr = format!("{SERVER_ADDR}:{PORT}").parse()?;
    client.run_in(|| {
        pin_to_cpu(cpu)?;
        let opens = || {
            crate::datapath::snmp_counter("Tcp", "ActiveOpens")
                .context("no Tcp ActiveOpens in /proc/net/snmp")
        };
        let opens_start = opens()?;
        let cpu_start = thread_cpu();
        let start = Instant::now();
        let mut connections = 0u64;
        while start.elapsed() < duration {
            let mut stream = TcpStream::connect(target).context("connecting")?;
            let (accepted, _) = listener.accept().context("accepting")?;
            stream.write_all(b"x").context("writing")?;
            reset_on_close(&stream)?;
            drop(stream);
            drop(accepted);
            connections += 1;
        }
        let elapsed = start.elapsed().as_secs_f64();
        let cpu_ns = (thread_cpu() - cpu_start).as_nanos() as f64;
        Ok(ChurnRound {
            index: 0,
            kind: Kind::Detached,
            seconds: elapsed,
            connections,
            connections_per_second: connections as f64 / elapsed,
            cpu_ns_per_connection: cpu_ns / connections.max(1) as f64,
            kernel_active_opens: opens()?.saturating_sub(opens_start),
            probe_programs_loaded: None,
            programs: Vec::new(),
        })
    })
}

/// Linger 0: the close sends a reset and leaves no TIME_WAIT behind.
fn reset_on_close(stream: &TcpStream) -> Result<()> {
    let linger = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
    linger.map_err(|error| anyhow::anyhow!("SO_LINGER: {error}"))
}

/// Medians and checks of the rounds (also used by `--render`).
pub fn summarize(rounds: Vec<ChurnRound>, cpu: usize) -> Churn {
    let rates: Vec<(bool, f64)> = rounds
        .iter()
        .map(|r| (r.kind == Kind::Detached, r.connections_per_second))
        .collect();
    let versus = |kind: Kind| Versus::of(&rates, |i| rounds[i].kind == kind);
    let detached: Vec<f64> = rounds
        .iter()
        .filter(|r| r.kind == Kind::Detached)
        .map(|r| r.connections_per_second)
        .collect();
    let statistics: Vec<(u64, f64, u64)> = rounds
        .iter()
        .filter_map(|r| r.tcp_runs().map(|(runs, ns)| (runs, ns, r.connections)))
        .collect();
    let spread = |f: &dyn Fn(&(u64, f64, u64)) -> f64| {
        Spread::of(&statistics.iter().map(f).collect::<Vec<f64>>())
    };
    let mut warnings: Vec<String> = unexpected_programs(
        rounds
            .iter()
            .map(|r| (r.index, r.kind.config(), r.probe_programs_loaded)),
    )
    .into_iter()
    .collect();
    for r in &rounds {
        if r.kernel_active_opens != r.connections {
            warnings.push(format!(
                "round {}: {} connections made, the kernel counted {} active opens",
                r.index, r.connections, r.kernel_active_opens
            ));
        }
        if r.kind == Kind::Statistics && r.tcp_runs().is_none() {
            warnings.push(format!(
                "round {}: no run-time statistics of the TCP programs",
                r.index
            ));
        }
    }
    Churn {
        cpu,
        detached_median: median(&detached),
        attached: versus(Kind::Attached),
        statistics: versus(Kind::Statistics),
        program_ns_per_event: spread(&|(runs, ns, _)| ns / *runs as f64),
        events_per_connection: spread(&|(runs, _, conns)| *runs as f64 / (*conns).max(1) as f64),
        program_ns_per_connection: spread(&|(_, ns, conns)| ns / (*conns).max(1) as f64),
        warnings,
        rounds,
    }
}

/// The churn's section of the report.
pub fn markdown(churn: &Churn) -> String {
    let mut out = String::from("## Connection churn (TCP probes)\n\n");
    out.push_str(&format!(
        "One thread pinned to CPU {}: connect, accept, reset-close between two namespaces over a veth pair. \
         Detached median {:.0} connections/s.\n\n",
        churn.cpu, churn.detached_median
    ));
    out.push_str("| Round | Kind | Connections/s | CPU ns/connection | TCP program runs x ns |\n|---:|---|---:|---:|---|\n");
    for r in &churn.rounds {
        let runs = r.tcp_runs().map_or(String::from("-"), |(runs, ns)| {
            format!("{runs} x {:.1}", ns / runs as f64)
        });
        out.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {} |\n",
            r.index,
            r.kind.label(),
            r.connections_per_second,
            r.cpu_ns_per_connection,
            runs
        ));
    }
    let verdict = |met: Option<bool>| match met {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "not measured",
    };
    if let Some(a) = &churn.attached {
        out.push_str(&format!(
            "\nAs deployed: {:.2} % fewer connections/s (ratios {:?}), {:.0} ns more per connection; target at most {COST_TARGET_PERCENT} %: **{}**.\n",
            a.cost_percent,
            a.ratios.iter().map(|r| format!("{r:.3}")).collect::<Vec<_>>(),
            a.ns_per_packet,
            verdict(churn.cost_met())
        ));
    }
    if let (Some(ns), Some(events), Some(per_conn)) = (
        churn.program_ns_per_event,
        churn.events_per_connection,
        churn.program_ns_per_connection,
    ) {
        out.push_str(&format!(
            "Program time: {:.1} ns per event (median; {:.1}-{:.1}), {:.1} events and {:.0} ns per connection.\n",
            ns.median, ns.min, ns.max, events.median, per_conn.median
        ));
    }
    for warning in &churn.warnings {
        out.push_str(&format!("\nWarning: {warning}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(index: usize, kind: Kind, rate: f64, programs: &[(&str, u64, f64)]) -> ChurnRound {
        let connections = rate as u64;
        ChurnRound {
            index,
            kind,
            seconds: 1.0,
            connections,
            connections_per_second: rate,
            cpu_ns_per_connection: 1e9 / rate,
            kernel_active_opens: connections,
            probe_programs_loaded: Some(if kind == Kind::Detached { 0 } else { 6 }),
            programs: programs
                .iter()
                .map(|(name, runs, ns)| ProgramRuntime {
                    id: 1,
                    name: name.to_string(),
                    runs: *runs,
                    ns_per_run: *ns,
                })
                .collect(),
        }
    }

    #[test]
    fn cost_from_attached_rounds_and_time_per_event_from_the_tcp_programs_only() {
        let churn = summarize(
            vec![
                round(0, Kind::Detached, 10_000.0, &[]),
                round(1, Kind::Attached, 9_800.0, &[]),
                round(2, Kind::Detached, 10_000.0, &[]),
                round(
                    3,
                    Kind::Statistics,
                    9_000.0,
                    &[
                        ("inet_sock_set_s", 54_000, 40.0),
                        ("tcp_send_reset_", 9_000, 60.0),
                        ("tcp_receive_res", 9_000, 60.0),
                        // Not a TCP program: left out of the TCP figures.
                        ("kfree_skb_btf", 1_000, 500.0),
                    ],
                ),
                round(4, Kind::Detached, 10_000.0, &[]),
            ],
            1,
        );
        let attached = churn.attached.as_ref().unwrap();
        assert!((attached.cost_percent - 2.0).abs() < 1e-9);
        assert_eq!(churn.cost_met(), Some(true));
        let ns = churn.program_ns_per_event.unwrap().median;
        let expected = (54_000.0 * 40.0 + 18_000.0 * 60.0) / 72_000.0;
        assert!((ns - expected).abs() < 1e-9, "{ns}");
        assert_eq!(churn.events_per_connection.unwrap().median, 8.0);
        assert!(churn.warnings.is_empty(), "{:?}", churn.warnings);
    }
}
