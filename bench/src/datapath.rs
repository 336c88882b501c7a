//! BPF datapath cost: UDP packets/s through one veth pair with the probes
//! detached (no collector), attached with every probe (`collector serve
//! --ebpf-probes rx,tx,drops`, BTF-typed tracepoints), every probe as
//! classic tracepoints (`--ebpf-flavour classic`) and the drop probe only
//! (`collector serve` as deployed: the default `--ebpf-probes drops`), the
//! collector running in the sender's namespace. Rounds cycle detached and the three attached
//! configurations, the attached ones in an order rotated every cycle, and
//! end on a detached round, so every attached round has a detached round on
//! either side and drift in machine load hits all sides alike.
//!
//! One sender thread (sendmmsg, 64 datagrams of 64 bytes per call) and one
//! receiver thread (recvmmsg). On veth the receive softirq runs in the
//! sender's context, so the sender thread carries the whole per-packet path
//! (both tracepoints included) and its rate is the packets/s reported.
//! Packets lost between the two sockets (sent - received, e.g. a full
//! receive buffer) are counted per round: each one is a kfree_skb, which
//! the drops-only probe pays for while it pays nothing for delivered ones.
//!
//! The drop storm (`storm.rs`) runs its rounds on the same pieces: the
//! veth pair, the schedule and round loop, the collector start, the sender
//! loop, the run-time statistics and the comparison of each attached round
//! with the detached rounds beside it.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::scrape::{self, median};
use crate::sys::{self, Netns, Server};

const PAYLOAD: usize = 64;
const BATCH: usize = 64;
const PORT: u16 = 9000;
const COLLECTOR_PORT: u16 = 9201;
const TX_ADDR: &str = "198.18.200.1";
const RX_ADDR: &str = "198.18.200.2";
/// The receiver's buffer (the kernel doubles it): about a second of
/// 64-byte datagrams, so a receiver descheduled for a moment on a busy
/// machine does not turn delivered packets into drops.
const RECEIVE_BUFFER: libc::c_int = 128 << 20;
/// Datagrams sent to a closed port in the sender's namespace before a
/// drops-only round, to see that the drop probe counts.
const TEST_DROPS: u64 = 100;
const TEST_DROP_PORT: u16 = 9;

/// What a round runs next to the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Config {
    /// No collector.
    Detached,
    /// `collector serve --ebpf-probes rx,tx,drops`: tp_btf programs.
    AllProbes,
    /// `collector serve --ebpf-flavour classic`: every probe as a classic
    /// tracepoint, the fallback where tp_btf cannot load.
    Classic,
    /// `collector serve --ebpf-probes drops`: only skb:kfree_skb.
    DropsOnly,
    /// `collector serve` as deployed: drops and the five TCP programs.
    Default,
}

impl Config {
    pub const ATTACHED: [Config; 3] = [Config::AllProbes, Config::Classic, Config::DropsOnly];

    pub fn label(self) -> &'static str {
        match self {
            Config::Detached => "detached",
            Config::AllProbes => "all probes (tp_btf)",
            Config::Classic => "all probes, classic tracepoints",
            Config::DropsOnly => "drops only",
            Config::Default => "default probes (drops, tcp)",
        }
    }

    /// The `--ebpf-probes` value of the collector.
    pub fn ebpf_probes(self) -> Option<&'static str> {
        match self {
            Config::Detached => None,
            Config::AllProbes | Config::Classic => Some("rx,tx,drops"),
            Config::DropsOnly => Some("drops"),
            Config::Default => Some("drops,tcp"),
        }
    }

    /// The `--ebpf-flavour` of the collector, and the flavour every probe
    /// must report in `collector_ebpf_probe_info`.
    pub fn ebpf_flavour(self) -> Option<&'static str> {
        match self {
            Config::Detached => None,
            Config::Classic => Some("classic"),
            Config::AllProbes | Config::DropsOnly | Config::Default => Some("btf"),
        }
    }

    /// BPF programs the collector loads (and bpftool should list).
    fn programs(self) -> usize {
        match self {
            Config::Detached => 0,
            Config::AllProbes | Config::Classic => 3,
            Config::DropsOnly => 1,
            Config::Default => 6,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Round {
    pub index: usize,
    pub attached: bool,
    /// The collector's `--ebpf-probes` in attached rounds ("rx,tx,drops" is
    /// the default, started without the flag); absent in reports from before
    /// drops-only rounds, whose attached rounds all ran every probe.
    #[serde(default)]
    pub ebpf_probes: Option<String>,
    /// The flavour the collector's probes ran as ("btf" or "classic");
    /// absent in reports from before tp_btf, whose probes were all classic.
    #[serde(default)]
    pub ebpf_flavour: Option<String>,
    pub seconds: f64,
    pub sent: u64,
    pub received: u64,
    /// The receiving namespace's UDP RcvbufErrors over the round: datagrams
    /// the full receive buffer dropped (SOCKET_RCVBUFF, one kfree_skb each).
    #[serde(default)]
    pub udp_rcvbuf_errors: Option<u64>,
    pub sent_pps: f64,
    pub received_pps: f64,
    /// CPU time of the sender and receiver threads per sent packet (the
    /// softirq work the sender's context does is included unless the
    /// kernel accounts softirq time separately).
    pub thread_cpu_ns_per_packet: f64,
    /// BPF programs named like the collector's that were loaded when the
    /// round started (expected: 0 detached, 3 all probes, 1 drops only);
    /// `None` without bpftool.
    pub probe_programs_loaded: Option<usize>,
    /// For all-probes rounds: packets the collector's TX probe counted on
    /// the sending veth during the round (shows the probes really ran).
    pub probe_counted_tx_packets: Option<u64>,
    /// For drops-only rounds: of the test datagrams sent to a closed port on
    /// the sending veth before the round, how many the collector counted as
    /// drops there (shows the drop probe really ran).
    #[serde(default)]
    pub probe_counted_test_drops: Option<u64>,
}

impl Round {
    pub fn config(&self) -> Config {
        match (
            self.attached,
            self.ebpf_probes.as_deref(),
            self.ebpf_flavour.as_deref(),
        ) {
            (false, _, _) => Config::Detached,
            (true, Some("drops"), _) => Config::DropsOnly,
            (true, Some("drops,tcp"), _) => Config::Default,
            (true, _, Some("btf")) => Config::AllProbes,
            (true, _, _) => Config::Classic,
        }
    }

    /// Packets sent but never received: each was dropped (kfree_skb) on
    /// the way, most likely by a full receive buffer.
    pub fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.received)
    }
}

/// Rounds of one configuration against the detached rounds around them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Versus {
    pub pps_median: f64,
    pub pps_min_max: (f64, f64),
    /// Each round's packets/s over the mean of the nearest detached round
    /// before it and the nearest after it.
    pub ratios: Vec<f64>,
    pub ratio_median: f64,
    pub ratio_min: f64,
    pub ratio_max: f64,
    /// (1 - median ratio) x 100.
    pub cost_percent: f64,
    /// Median over the rounds of 1e9/attached - 1e9/neighbouring detached:
    /// extra time per packet on the sender's path.
    pub ns_per_packet: f64,
}

/// One attached configuration against the detached rounds around it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Attached {
    pub label: String,
    /// The collector's `--ebpf-probes`.
    pub ebpf_probes: String,
    pub rounds: usize,
    #[serde(flatten)]
    pub versus: Versus,
    pub thread_cpu_ns_per_packet: f64,
    pub sent: u64,
    /// Sent but not received over these rounds (each a kfree_skb).
    pub lost: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Datapath {
    pub rounds: Vec<Round>,
    pub detached_pps_median: f64,
    pub detached_pps_min_max: (f64, f64),
    pub thread_cpu_ns_per_packet_detached: f64,
    /// Sent but not received over the detached rounds.
    #[serde(default)]
    pub detached_lost: u64,
    /// The default deployment: rx, tx and drops probes (tp_btf; in reports
    /// from before tp_btf, classic).
    #[serde(default)]
    pub all_probes: Attached,
    /// Every probe forced to classic tracepoints; `None` when no round ran it.
    #[serde(default)]
    pub classic: Option<Attached>,
    /// `--ebpf-probes drops`; `None` when no round ran it.
    #[serde(default)]
    pub drops_only: Option<Attached>,
    pub foreign_probe_warning: Option<String>,
    /// Attached rounds whose probes did not show up as counting.
    #[serde(default)]
    pub probe_check_warning: Option<String>,
    /// One extra all-probes round with BPF run-time statistics on (not used
    /// in the ratio: the statistics themselves cost time per run).
    pub bpf_stats: Option<BpfStats>,
    /// The same for classic tracepoints.
    #[serde(default)]
    pub bpf_stats_classic: Option<BpfStats>,
    /// The same for drops only: how often kfree_skb ran per packet sent.
    #[serde(default)]
    pub bpf_stats_drops_only: Option<BpfStats>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BpfStats {
    pub sent: u64,
    pub sent_pps: f64,
    /// Sent but not received in this round (each a kfree_skb run).
    #[serde(default)]
    pub lost: u64,
    pub programs: Vec<ProgramRuntime>,
    /// Run time of the collector's programs per sent packet.
    pub bpf_ns_per_packet: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProgramRuntime {
    pub id: u64,
    pub name: String,
    pub runs: u64,
    pub ns_per_run: f64,
}

pub fn run(collector: &Path, rounds: usize, seconds: f64, logs: &Path) -> Result<Datapath> {
    let tx = Netns::create("dptx")?;
    let rx = Netns::create("dprx")?;
    veth_pair((&tx, "dpa", TX_ADDR), (&rx, "dpb", RX_ADDR))?;

    let duration = Duration::from_secs_f64(seconds);
    let results = run_rounds(
        &schedule(rounds),
        |index, config| {
            let collector_process = match config {
                Config::Detached => None,
                _ => Some(start_collector(
                    &tx,
                    collector,
                    &logs.join(format!("datapath-collector-{index}.log")),
                    config,
                )?),
            };
            let test_drops = match config {
                Config::DropsOnly => Some(test_drops(&tx, &rx)?),
                _ => None,
            };
            let before = match config {
                Config::AllProbes | Config::Classic => Some(probe_tx_packets(&tx)?),
                _ => None,
            };
            Ok((collector_process, test_drops, before))
        },
        |slot, (collector_process, test_drops, before)| {
            let config = slot.config;
            let mut round = measure(&tx, &rx, duration)?;
            round.index = slot.index;
            round.attached = config != Config::Detached;
            round.ebpf_probes = config.ebpf_probes().map(str::to_string);
            round.ebpf_flavour = config.ebpf_flavour().map(str::to_string);
            round.probe_programs_loaded = slot.programs_loaded;
            round.probe_counted_test_drops = test_drops;
            if let Some(before) = before {
                round.probe_counted_tx_packets =
                    Some(probe_tx_packets(&tx)?.saturating_sub(before));
            }
            drop(collector_process);
            eprintln!(
                "bench: datapath round {} ({}): {:.0} pkt/s sent, {:.0} pkt/s received, {} lost, {:.0} thread-CPU ns/pkt",
                slot.index,
                config.label(),
                round.sent_pps,
                round.received_pps,
                round.lost(),
                round.thread_cpu_ns_per_packet
            );
            Ok(round)
        },
    )?;
    let mut summary = summarize(results);
    for (index, config) in (summary.rounds.len()..).zip(Config::ATTACHED) {
        sys::check_interrupted()?;
        let stats = match bpf_stats_round(&tx, &rx, collector, logs, seconds, index, config) {
            Ok(stats) => Some(stats),
            Err(error) => {
                eprintln!(
                    "bench: BPF run-time statistics round ({}) skipped: {error:#}",
                    config.label()
                );
                None
            }
        };
        match config {
            Config::DropsOnly => summary.bpf_stats_drops_only = stats,
            Config::Classic => summary.bpf_stats_classic = stats,
            _ => summary.bpf_stats = stats,
        }
    }
    Ok(summary)
}

/// `cycles` rounds of each attached configuration, each after a detached
/// round (their order rotated every cycle so none always follows the same
/// collector teardown or sits next to the same detached round), and a
/// closing detached round, so every attached round has a detached
/// neighbour on both sides.
pub fn schedule(cycles: usize) -> Vec<Config> {
    schedule_of(cycles, Config::Detached, &Config::ATTACHED)
}

/// [`schedule`] over any kinds of rounds: `detached` and a list of
/// attached ones.
pub fn schedule_of<T: Copy>(cycles: usize, detached: T, attached: &[T]) -> Vec<T> {
    let mut rounds = Vec::with_capacity(cycles * attached.len() * 2 + 1);
    for cycle in 0..cycles {
        for slot in 0..attached.len() {
            rounds.push(detached);
            rounds.push(attached[(cycle + slot) % attached.len()]);
        }
    }
    rounds.push(detached);
    rounds
}

/// A round about to be measured, of the kind `T` the schedule names.
pub struct Slot<T> {
    pub index: usize,
    pub config: T,
    /// Probe programs loaded after the settling pause (see [`probe_programs_loaded`]).
    pub programs_loaded: Option<usize>,
}

/// Runs the rounds of `schedule` in order. `prepare` starts what the round
/// runs beside the traffic (a collector, stopped when the value it returns
/// is dropped, at the latest when `measure` returns); then the machine
/// settles and `measure` runs the round.
pub fn run_rounds<T: Copy, S, R>(
    schedule: &[T],
    mut prepare: impl FnMut(usize, T) -> Result<S>,
    mut measure: impl FnMut(Slot<T>, S) -> Result<R>,
) -> Result<Vec<R>> {
    let mut results = Vec::with_capacity(schedule.len());
    for (index, &config) in schedule.iter().enumerate() {
        sys::check_interrupted()?;
        let prepared = prepare(index, config)?;
        // Let the previous round's collector teardown and the load settle.
        sys::sleep_checked(Duration::from_millis(500))?;
        let slot = Slot {
            index,
            config,
            programs_loaded: probe_programs_loaded(),
        };
        results.push(measure(slot, prepared)?);
    }
    Ok(results)
}

/// A veth pair between two namespaces, each end (namespace, device name,
/// IPv4 address in a /24) up and addressed, with permanent neighbour
/// entries so that no ARP runs during a round.
pub fn veth_pair(a: (&Netns, &str, &str), b: (&Netns, &str, &str)) -> Result<()> {
    let ((a_ns, a_dev, a_addr), (b_ns, b_dev, b_addr)) = (a, b);
    a_ns.ip(&[
        "link", "add", a_dev, "type", "veth", "peer", "name", b_dev, "netns", &b_ns.name,
    ])?;
    for (ns, dev, addr) in [a, b] {
        ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", dev])?;
        ns.ip(&["link", "set", dev, "up"])?;
    }
    let (a_mac, b_mac) = (a_ns.mac(a_dev)?, b_ns.mac(b_dev)?);
    for (ns, dev, peer_addr, peer_mac) in
        [(a_ns, a_dev, b_addr, &b_mac), (b_ns, b_dev, a_addr, &a_mac)]
    {
        ns.ip(&[
            "neigh",
            "replace",
            peer_addr,
            "lladdr",
            peer_mac,
            "dev",
            dev,
            "nud",
            "permanent",
        ])?;
    }
    Ok(())
}

/// `collector serve` in `tx` as `config` asks, checked to run exactly the
/// configuration's probes in its flavour.
pub fn start_collector(tx: &Netns, collector: &Path, log: &Path, config: Config) -> Result<Server> {
    let mut args: Vec<String> = [
        "serve",
        "--listen",
        &format!("127.0.0.1:{COLLECTOR_PORT}"),
        "--health-listen",
        &format!("127.0.0.1:{}", COLLECTOR_PORT + 100),
        "--node-name",
        "bench",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // The default configuration (drops and tcp) runs as deployed, without
    // flags; every other names its probes.
    if let (Some(probes), false) = (config.ebpf_probes(), config == Config::Default) {
        args.extend(["--ebpf-probes".to_string(), probes.to_string()]);
    }
    if config == Config::Classic {
        args.extend(["--ebpf-flavour".to_string(), "classic".to_string()]);
    }
    let label = format!("collector ({})", config.label());
    let server = Server::start(tx, &label, collector, &args, COLLECTOR_PORT, log)?;
    let text = scrape_collector(tx)?;
    if !text.lines().any(|l| l == "collector_ebpf_enabled 1") {
        bail!(
            "the collector in {} did not attach its probes (collector_ebpf_enabled is not 1); see {}",
            tx.name,
            log.display()
        );
    }
    let attached: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("collector_ebpf_probe_attached{") && l.ends_with(" 1"))
        .filter_map(|l| l.split("program=\"").nth(1)?.split('"').next())
        .collect();
    let expected_ok = match config {
        Config::DropsOnly => attached == ["kfree_skb"],
        _ => attached.len() == config.programs(),
    };
    // A probe that fell back to classic in the tp_btf configuration (or the
    // reverse) would measure the wrong thing.
    let flavour = format!("flavour=\"{}\"", config.ebpf_flavour().unwrap_or_default());
    let wrong_flavour: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("collector_ebpf_probe_info{") && l.ends_with(" 1"))
        .filter(|l| !l.contains(&flavour))
        .collect();
    if !wrong_flavour.is_empty() {
        bail!(
            "the collector in {} ({}) runs probes in another flavour than {flavour}: {wrong_flavour:?}; see {}",
            tx.name,
            config.label(),
            log.display()
        );
    }
    if !expected_ok {
        bail!(
            "the collector in {} ({}) attached {attached:?}, expected {} program(s); see {}",
            tx.name,
            config.label(),
            config.programs(),
            log.display()
        );
    }
    Ok(server)
}

fn scrape_collector(tx: &Netns) -> Result<String> {
    tx.run_in(|| {
        scrape::get(COLLECTOR_PORT, "/metrics", Duration::from_secs(30))
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
    })
}

/// Sends TEST_DROPS datagrams from the receiving namespace to a closed
/// port in the sender's, where the kernel drops them on the sending veth
/// (NO_SOCKET), and returns how many of them the collector counted there.
fn test_drops(tx: &Netns, rx: &Netns) -> Result<u64> {
    let before = probe_drops(tx)?;
    rx.run_in(|| {
        let socket = UdpSocket::bind((RX_ADDR, 0)).context("binding the test-drop sender")?;
        for _ in 0..TEST_DROPS {
            socket.send_to(&[0u8; PAYLOAD], (TX_ADDR, TEST_DROP_PORT))?;
        }
        Ok(())
    })?;
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let counted = probe_drops(tx)?.saturating_sub(before);
        if counted >= TEST_DROPS || Instant::now() >= deadline {
            return Ok(counted);
        }
        sys::sleep_checked(Duration::from_millis(50))?;
    }
}

/// An attached round with the kernel's BPF run-time statistics on,
/// reading the collector's own programs' run_time_ns.
fn bpf_stats_round(
    tx: &Netns,
    rx: &Netns,
    collector: &Path,
    logs: &Path,
    seconds: f64,
    index: usize,
    config: Config,
) -> Result<BpfStats> {
    let log = logs.join(format!("datapath-collector-{index}.log"));
    let (server, ours) = start_collector_tracked(tx, collector, &log, config)?;
    sys::sleep_checked(Duration::from_millis(500))?;
    let (round, programs) =
        with_run_time_stats(&ours, || measure(tx, rx, Duration::from_secs_f64(seconds)))?;
    drop(server);
    let total_ns: f64 = programs.iter().map(|p| p.ns_per_run * p.runs as f64).sum();
    eprintln!(
        "bench: BPF statistics round ({}): {:.0} pkt/s, {} lost, the collector's programs ran {:.1} ns per packet ({})",
        config.label(),
        round.sent_pps,
        round.lost(),
        total_ns / round.sent.max(1) as f64,
        programs
            .iter()
            .map(|p| format!("{} {} runs", p.name, p.runs))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(BpfStats {
        sent: round.sent,
        sent_pps: round.sent_pps,
        lost: round.lost(),
        programs,
        bpf_ns_per_packet: total_ns / round.sent.max(1) as f64,
    })
}

/// [`start_collector`], and the ids of the BPF programs it loaded: those
/// bpftool lists after its start and did not before.
pub fn start_collector_tracked(
    tx: &Netns,
    collector: &Path,
    log: &Path,
    config: Config,
) -> Result<(Server, Vec<u64>)> {
    let before_start = probe_programs()?;
    let server = start_collector(tx, collector, log, config)?;
    let ours: Vec<u64> = probe_programs()?
        .into_iter()
        .filter(|p| !before_start.iter().any(|b| b.0 == p.0))
        .map(|p| p.0)
        .collect();
    if ours.is_empty() {
        bail!("cannot tell the collector's programs apart (bpftool shows none new)");
    }
    Ok((server, ours))
}

/// Runs `f` with the kernel's BPF run-time statistics on, through a
/// BPF_ENABLE_STATS fd (they switch off when it closes, also if this
/// process dies); returns what `f` returned and the runs and run time the
/// programs `ids` gained meanwhile.
pub fn with_run_time_stats<T>(
    ids: &[u64],
    f: impl FnOnce() -> Result<T>,
) -> Result<(T, Vec<ProgramRuntime>)> {
    let stats_fd = aya::sys::enable_stats(aya::sys::Stats::RunTime).context("BPF_ENABLE_STATS")?;
    let start = probe_programs()?;
    let value = f()?;
    let end = probe_programs()?;
    drop(stats_fd);
    let find = |list: &[(u64, String, u64, u64)], id: u64| list.iter().find(|p| p.0 == id).cloned();
    let programs = ids
        .iter()
        .filter_map(|&id| {
            let (a, b) = (find(&start, id)?, find(&end, id)?);
            let runs = b.3.saturating_sub(a.3);
            Some(ProgramRuntime {
                id,
                name: b.1,
                runs,
                ns_per_run: b.2.saturating_sub(a.2) as f64 / runs.max(1) as f64,
            })
        })
        .collect();
    Ok((value, programs))
}

/// Ratios, medians and spread of the rounds (also used by `--render`).
pub fn summarize(rounds: Vec<Round>) -> Datapath {
    let of = |config: Config| rounds.iter().filter(move |r| r.config() == config);
    let detached: Vec<f64> = of(Config::Detached).map(|r| r.sent_pps).collect();
    let detached_cpu: Vec<f64> = of(Config::Detached)
        .map(|r| r.thread_cpu_ns_per_packet)
        .collect();
    let rates: Vec<(bool, f64)> = rounds
        .iter()
        .map(|r| (r.config() == Config::Detached, r.sent_pps))
        .collect();
    let attached = |config: Config| -> Option<Attached> {
        let versus = Versus::of(&rates, |position| rounds[position].config() == config)?;
        let cpu: Vec<f64> = of(config).map(|r| r.thread_cpu_ns_per_packet).collect();
        Some(Attached {
            label: config.label().to_string(),
            ebpf_probes: config.ebpf_probes().unwrap_or_default().to_string(),
            rounds: cpu.len(),
            versus,
            thread_cpu_ns_per_packet: median(&cpu),
            sent: of(config).map(|r| r.sent).sum(),
            lost: of(config).map(|r| r.lost()).sum(),
        })
    };
    let foreign = unexpected_programs(
        rounds
            .iter()
            .map(|r| (r.index, r.config(), r.probe_programs_loaded)),
    );
    let unproven: Vec<String> = rounds
        .iter()
        .filter_map(|r| match r.config() {
            Config::AllProbes | Config::Classic => {
                r.probe_counted_tx_packets.filter(|&n| n < r.sent).map(|n| {
                    format!(
                        "round {}: TX probe counted {n} of {} packets",
                        r.index, r.sent
                    )
                })
            }
            Config::DropsOnly => r
                .probe_counted_test_drops
                .filter(|&n| n < TEST_DROPS)
                .map(|n| {
                    format!(
                        "round {}: drop probe counted {n} of {TEST_DROPS} test drops",
                        r.index
                    )
                }),
            Config::Detached | Config::Default => None,
        })
        .collect();
    Datapath {
        detached_pps_median: median(&detached),
        detached_pps_min_max: min_max(&detached),
        thread_cpu_ns_per_packet_detached: median(&detached_cpu),
        detached_lost: of(Config::Detached).map(|r| r.lost()).sum(),
        all_probes: attached(Config::AllProbes).unwrap_or_default(),
        classic: attached(Config::Classic),
        drops_only: attached(Config::DropsOnly),
        foreign_probe_warning: foreign,
        probe_check_warning: (!unproven.is_empty()).then(|| unproven.join("; ")),
        rounds,
        bpf_stats: None,
        bpf_stats_classic: None,
        bpf_stats_drops_only: None,
    }
}

impl Versus {
    /// `rates` holds every round in order: whether it was detached, and its
    /// rate. Compares the rounds at the positions `chosen` picks; `None`
    /// when it picks none.
    pub fn of(rates: &[(bool, f64)], chosen: impl Fn(usize) -> bool) -> Option<Versus> {
        // The mean of the nearest detached round on each side that exists.
        let neighbours = |position: usize| -> Option<f64> {
            let before = rates[..position].iter().rev().find(|r| r.0);
            let after = rates[position + 1..].iter().find(|r| r.0);
            let sides: Vec<f64> = before.into_iter().chain(after).map(|r| r.1).collect();
            (!sides.is_empty()).then(|| sides.iter().sum::<f64>() / sides.len() as f64)
        };
        let mut pps = Vec::new();
        let mut ratios = Vec::new();
        let mut ns = Vec::new();
        for (position, &(_, rate)) in rates.iter().enumerate() {
            if !chosen(position) {
                continue;
            }
            pps.push(rate);
            if let Some(d) = neighbours(position) {
                ratios.push(rate / d);
                ns.push(1e9 / rate - 1e9 / d);
            }
        }
        if pps.is_empty() {
            return None;
        }
        let ratio_median = median(&ratios);
        let (ratio_min, ratio_max) = min_max(&ratios);
        Some(Versus {
            pps_median: median(&pps),
            pps_min_max: min_max(&pps),
            ratios,
            ratio_median,
            ratio_min,
            ratio_max,
            cost_percent: (1.0 - ratio_median) * 100.0,
            ns_per_packet: median(&ns),
        })
    }
}

/// Smallest and largest value (infinities when there are none).
pub fn min_max(values: &[f64]) -> (f64, f64) {
    (
        values.iter().copied().fold(f64::INFINITY, f64::min),
        values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    )
}

/// A warning naming the rounds (index, configuration, probe programs
/// loaded) that did not see exactly their configuration's programs: a
/// collector or test of someone else's running beside the bench.
pub fn unexpected_programs(
    rounds: impl Iterator<Item = (usize, Config, Option<usize>)>,
) -> Option<String> {
    let foreign: Vec<String> = rounds
        .filter(|&(_, config, loaded)| loaded.is_some_and(|n| n != config.programs()))
        .map(|(index, config, loaded)| {
            format!(
                "round {index} ({}) saw {} probe programs, expected {}",
                config.label(),
                loaded.unwrap_or(0),
                config.programs()
            )
        })
        .collect();
    (!foreign.is_empty()).then(|| {
        format!(
            "other programs with the collector's probe names were loaded, or ours were missing (another collector or test running?): {}",
            foreign.join(", ")
        )
    })
}

/// network_interface_ebpf_tx_packets_total of dpa, from the collector in `tx`.
fn probe_tx_packets(tx: &Netns) -> Result<u64> {
    Ok(sum_for_dpa(
        &scrape_collector(tx)?,
        "network_interface_ebpf_tx_packets_total{",
    ))
}

/// network_interface_drops_total of dpa (every reason), from the collector in `tx`.
fn probe_drops(tx: &Netns) -> Result<u64> {
    Ok(sum_for_dpa(
        &scrape_collector(tx)?,
        "network_interface_drops_total{",
    ))
}

fn sum_for_dpa(text: &str, prefix: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(prefix) && l.contains("interface=\"dpa\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Loaded BPF programs carrying the collector's program names (kernel
/// names are cut at 15 characters): (id, name, run_time_ns, run_cnt).
fn probe_programs() -> Result<Vec<(u64, String, u64, u64)>> {
    let output = std::process::Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .context("running bpftool")?;
    let programs: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("parsing bpftool -j prog show")?;
    // bpftool shows the first 15 characters of a program's name.
    let names = [
        "netif_receive_s",
        "net_dev_start_x",
        "kfree_skb",
        "inet_sock_set_s",
        "tcp_retransmit_",
        "tcp_send_reset",
        "tcp_receive_res",
    ];
    Ok(programs
        .as_array()
        .context("bpftool output is not a list")?
        .iter()
        .filter_map(|p| {
            let name = p["name"].as_str()?;
            names.iter().any(|want| name.starts_with(want)).then(|| {
                (
                    p["id"].as_u64().unwrap_or(0),
                    name.to_string(),
                    p["run_time_ns"].as_u64().unwrap_or(0),
                    p["run_cnt"].as_u64().unwrap_or(0),
                )
            })
        })
        .collect())
}

/// How many of those are loaded; `None` without bpftool.
fn probe_programs_loaded() -> Option<usize> {
    probe_programs().ok().map(|p| p.len())
}

pub fn thread_cpu() -> Duration {
    // SAFETY: zeroed timespec is a valid out-parameter.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid clock id and pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn measure(tx: &Netns, rx: &Netns, duration: Duration) -> Result<Round> {
    let barrier = Barrier::new(2);
    let sender_done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let receiver = scope.spawn(|| -> Result<(u64, Option<u64>, Duration)> {
            let setup = (|| -> Result<UdpSocket> {
                rx.enter()?;
                let socket = UdpSocket::bind((RX_ADDR, PORT)).context("binding receiver")?;
                set_int_option(&socket, libc::SO_RCVBUFFORCE, RECEIVE_BUFFER)?;
                socket.set_read_timeout(Some(Duration::from_millis(200)))?;
                Ok(socket)
            })();
            // Both threads reach the barrier even when their setup failed.
            barrier.wait();
            let socket = setup?;
            let rcvbuf_errors_start = snmp_counter("Udp", "RcvbufErrors");
            let cpu_start = thread_cpu();
            let mut received = 0u64;
            let mut buffers = vec![[0u8; 2048]; BATCH];
            loop {
                match recv_batch(&socket, &mut buffers) {
                    Ok(n) => received += n as u64,
                    Err(error)
                        if matches!(
                            error.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        if sender_done.load(Ordering::SeqCst) {
                            break;
                        }
                    }
                    Err(error) => return Err(error.into()),
                }
            }
            let cpu = thread_cpu() - cpu_start;
            let rcvbuf_errors = rcvbuf_errors_start
                .zip(snmp_counter("Udp", "RcvbufErrors"))
                .map(|(start, end)| end.saturating_sub(start));
            Ok((received, rcvbuf_errors, cpu))
        });
        let sender = scope.spawn(|| -> Result<Sent> {
            let result = (|| {
                let setup = tx
                    .enter()
                    .and_then(|()| sender_socket(TX_ADDR, (RX_ADDR, PORT)));
                barrier.wait();
                send_for(&setup?, duration)
            })();
            sender_done.store(true, Ordering::SeqCst);
            result
        });
        let sent = sender
            .join()
            .map_err(|_| anyhow::anyhow!("sender panicked"))?;
        let received = receiver
            .join()
            .map_err(|_| anyhow::anyhow!("receiver panicked"))?;
        let Sent {
            datagrams: sent,
            elapsed,
            cpu: sender_cpu,
        } = sent?;
        let (received, udp_rcvbuf_errors, receiver_cpu) = received?;
        let seconds = elapsed.as_secs_f64();
        Ok(Round {
            index: 0,
            attached: false,
            ebpf_probes: None,
            ebpf_flavour: None,
            seconds,
            sent,
            received,
            udp_rcvbuf_errors,
            sent_pps: sent as f64 / seconds,
            received_pps: received as f64 / seconds,
            thread_cpu_ns_per_packet: (sender_cpu + receiver_cpu).as_nanos() as f64
                / sent.max(1) as f64,
            probe_programs_loaded: None,
            probe_counted_tx_packets: None,
            probe_counted_test_drops: None,
        })
    })
}

/// What one sender thread did in a round.
pub struct Sent {
    /// Datagrams sendmmsg took.
    pub datagrams: u64,
    pub elapsed: Duration,
    /// The thread's CPU time, softirq work done in its context included
    /// unless the kernel accounts softirq time apart.
    pub cpu: Duration,
}

/// A UDP socket of the calling thread's namespace, bound to `from` and
/// connected to `to`.
pub fn sender_socket(from: &str, to: (&str, u16)) -> Result<UdpSocket> {
    let socket = UdpSocket::bind((from, 0)).context("binding sender")?;
    socket.connect(to).context("connecting sender")?;
    Ok(socket)
}

/// Sends PAYLOAD-byte datagrams in sendmmsg batches of BATCH for `duration`.
pub fn send_for(socket: &UdpSocket, duration: Duration) -> Result<Sent> {
    let payload = [0x5au8; PAYLOAD];
    let cpu_start = thread_cpu();
    let start = Instant::now();
    let deadline = start + duration;
    let mut datagrams = 0u64;
    while Instant::now() < deadline {
        datagrams += send_batch(socket, &payload)? as u64;
    }
    Ok(Sent {
        datagrams,
        elapsed: start.elapsed(),
        cpu: thread_cpu() - cpu_start,
    })
}

/// A counter of the calling thread's network namespace from
/// /proc/net/snmp, by protocol (`Udp`, `Icmp`, ...) and column name.
pub fn snmp_counter(protocol: &str, column: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/net/snmp").ok()?;
    parse_snmp(&text, protocol, column)
}

fn parse_snmp(text: &str, protocol: &str, column: &str) -> Option<u64> {
    let prefix = format!("{protocol}: ");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    let (names, values) = (lines.next()?, lines.next()?);
    let position = names.split_whitespace().position(|n| n == column)?;
    values.split_whitespace().nth(position)?.parse().ok()
}

fn set_int_option(socket: &UdpSocket, option: libc::c_int, value: libc::c_int) -> Result<()> {
    // SAFETY: valid socket fd and an option value of the declared size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            &value as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        bail!("setsockopt: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// One mmsghdr per iovec, each carrying exactly that buffer.
fn message_headers(iovecs: &mut [libc::iovec]) -> Vec<libc::mmsghdr> {
    iovecs
        .iter_mut()
        .map(|iov| {
            // SAFETY: an all-zero mmsghdr is valid (no name, no control).
            let mut message: libc::mmsghdr = unsafe { std::mem::zeroed() };
            message.msg_hdr.msg_iov = iov;
            message.msg_hdr.msg_iovlen = 1;
            message
        })
        .collect()
}

fn send_batch(socket: &UdpSocket, payload: &[u8]) -> Result<usize> {
    let mut iovecs: Vec<libc::iovec> = (0..BATCH)
        .map(|_| libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: payload.len(),
        })
        .collect();
    let mut messages = message_headers(&mut iovecs);
    // SAFETY: messages point at live iovecs over a live payload.
    let rc = unsafe {
        libc::sendmmsg(
            socket.as_raw_fd(),
            messages.as_mut_ptr(),
            BATCH as libc::c_uint,
            0,
        )
    };
    if rc < 0 {
        let error = std::io::Error::last_os_error();
        // A full device backlog or socket buffer is a dropped batch, not a failure.
        if matches!(error.raw_os_error(), Some(libc::ENOBUFS | libc::EAGAIN)) {
            return Ok(0);
        }
        bail!("sendmmsg: {error}");
    }
    Ok(rc as usize)
}

fn recv_batch(socket: &UdpSocket, buffers: &mut [[u8; 2048]]) -> std::io::Result<usize> {
    let mut iovecs: Vec<libc::iovec> = buffers
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        })
        .collect();
    let mut messages = message_headers(&mut iovecs);
    // SAFETY: messages point at live, writable buffers. MSG_WAITFORONE
    // returns as soon as one datagram is there; SO_RCVTIMEO bounds the wait.
    let rc = unsafe {
        libc::recvmmsg(
            socket.as_raw_fd(),
            messages.as_mut_ptr(),
            messages.len() as libc::c_uint,
            libc::MSG_WAITFORONE,
            std::ptr::null_mut(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(rc as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(index: usize, config: Config, pps: f64) -> Round {
        Round {
            index,
            attached: config != Config::Detached,
            ebpf_probes: config.ebpf_probes().map(str::to_string),
            ebpf_flavour: config.ebpf_flavour().map(str::to_string),
            seconds: 1.0,
            sent: pps as u64,
            received: pps as u64,
            udp_rcvbuf_errors: Some(0),
            sent_pps: pps,
            received_pps: pps,
            thread_cpu_ns_per_packet: 1e9 / pps,
            probe_programs_loaded: Some(config.programs()),
            probe_counted_tx_packets: matches!(config, Config::AllProbes | Config::Classic)
                .then_some(pps as u64),
            probe_counted_test_drops: (config == Config::DropsOnly).then_some(TEST_DROPS),
        }
    }

    #[test]
    fn snmp_counters_by_protocol_and_column() {
        let text = "Icmp: InMsgs OutRateLimitGlobal OutDestUnreachs\n\
                    Icmp: 1 250000 3\n\
                    IcmpMsg: InType3\n\
                    IcmpMsg: 1\n\
                    Udp: InDatagrams NoPorts RcvbufErrors\n\
                    Udp: 101 250000 7\n\
                    UdpLite: InDatagrams NoPorts RcvbufErrors\n\
                    UdpLite: 0 0 0\n";
        assert_eq!(parse_snmp(text, "Udp", "NoPorts"), Some(250_000));
        assert_eq!(parse_snmp(text, "Udp", "RcvbufErrors"), Some(7));
        assert_eq!(parse_snmp(text, "Icmp", "OutDestUnreachs"), Some(3));
        assert_eq!(parse_snmp(text, "Udp", "MemErrors"), None);
        assert_eq!(parse_snmp(text, "Tcp", "InSegs"), None);
    }

    #[test]
    fn schedule_brackets_every_attached_round() {
        use Config::*;
        assert_eq!(
            schedule(2),
            [
                Detached, AllProbes, Detached, Classic, Detached, DropsOnly, //
                Detached, Classic, Detached, DropsOnly, Detached, AllProbes, //
                Detached
            ]
        );
    }

    #[test]
    fn ratio_and_cost_against_neighbouring_detached_rounds() {
        use Config::*;
        let summary = summarize(vec![
            round(0, Detached, 1_000_000.0),
            round(1, AllProbes, 980_000.0),
            round(2, DropsOnly, 1_000_000.0),
            round(3, Detached, 1_000_000.0),
            round(4, DropsOnly, 990_000.0),
            round(5, AllProbes, 960_000.0),
            round(6, Detached, 1_000_000.0),
        ]);
        let all = &summary.all_probes;
        assert_eq!(all.versus.ratios, vec![0.98, 0.96]);
        assert!((all.versus.ratio_median - 0.97).abs() < 1e-9);
        assert!((all.versus.cost_percent - 3.0).abs() < 1e-9);
        let ns = ((1e9 / 980_000.0 - 1e3) + (1e9 / 960_000.0 - 1e3)) / 2.0;
        assert!((all.versus.ns_per_packet - ns).abs() < 1e-6);
        let drops = summary.drops_only.as_ref().unwrap();
        assert_eq!(drops.versus.ratios, vec![1.0, 0.99]);
        assert!((drops.versus.cost_percent - 0.5).abs() < 1e-9);
        assert_eq!(drops.lost, 0);
        assert!(summary.foreign_probe_warning.is_none());
        assert!(summary.probe_check_warning.is_none());
    }

    #[test]
    fn neighbours_are_averaged_and_wrong_program_counts_warn() {
        use Config::*;
        let mut rounds = vec![
            round(0, Detached, 1_000_000.0),
            round(1, DropsOnly, 900_000.0),
            round(2, Detached, 800_000.0),
        ];
        rounds[1].probe_programs_loaded = Some(3);
        rounds[1].received = 890_000;
        let summary = summarize(rounds);
        let drops = summary.drops_only.unwrap();
        assert_eq!(drops.versus.ratios, vec![1.0]);
        assert_eq!(drops.lost, 10_000);
        assert!(summary.foreign_probe_warning.unwrap().contains("round 1"));
    }

    #[test]
    fn reports_from_before_drops_only_rounds_still_summarize() {
        // Old rounds: A/B pairs, no ebpf_probes field, no closing detached round.
        let old = r#"{"index":1,"attached":true,"seconds":1.0,"sent":980,"received":980,
            "sent_pps":980.0,"received_pps":980.0,"thread_cpu_ns_per_packet":1.0,
            "probe_programs_loaded":3,"probe_counted_tx_packets":980}"#;
        let attached: Round = serde_json::from_str(old).unwrap();
        // Their probes were classic tracepoints (there was no tp_btf yet).
        assert_eq!(attached.config(), Config::Classic);
        let summary = summarize(vec![round(0, Config::Detached, 1000.0), attached]);
        assert_eq!(summary.classic.unwrap().versus.ratios, vec![0.98]);
        assert!(summary.drops_only.is_none());
    }
}
