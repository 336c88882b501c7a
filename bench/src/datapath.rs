//! BPF datapath cost: UDP packets/s through one veth pair with the probes
//! detached (no collector) and attached (a `collector serve` running in the
//! sender's namespace), alternating A/B/A/B so drift in machine load hits
//! both sides alike.
//!
//! One sender thread (sendmmsg, 64 datagrams of 64 bytes per call) and one
//! receiver thread (recvmmsg). On veth the receive softirq runs in the
//! sender's context, so the sender thread carries the whole per-packet path
//! (both tracepoints included) and its rate is the packets/s reported.

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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Round {
    pub index: usize,
    pub attached: bool,
    pub seconds: f64,
    pub sent: u64,
    pub received: u64,
    pub sent_pps: f64,
    pub received_pps: f64,
    /// CPU time of the sender and receiver threads per sent packet (the
    /// softirq work the sender's context does is included unless the
    /// kernel accounts softirq time separately).
    pub thread_cpu_ns_per_packet: f64,
    /// BPF programs named like the collector's that were loaded when the
    /// round started (expected: 0 detached, 3 attached); `None` without bpftool.
    pub probe_programs_loaded: Option<usize>,
    /// For attached rounds: packets the collector's TX probe counted on the
    /// sending veth during the round (shows the probes really ran).
    pub probe_counted_tx_packets: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Datapath {
    pub rounds: Vec<Round>,
    pub detached_pps_median: f64,
    pub attached_pps_median: f64,
    pub detached_pps_min_max: (f64, f64),
    pub attached_pps_min_max: (f64, f64),
    /// attached / detached of each adjacent A/B pair.
    pub pair_ratios: Vec<f64>,
    pub ratio_median: f64,
    pub ratio_min: f64,
    pub ratio_max: f64,
    /// (1 - median ratio) x 100.
    pub cost_percent: f64,
    /// 1e9/attached - 1e9/detached (medians): extra time per packet on the
    /// sender's path.
    pub ns_per_packet: f64,
    pub thread_cpu_ns_per_packet_detached: f64,
    pub thread_cpu_ns_per_packet_attached: f64,
    pub foreign_probe_warning: Option<String>,
    /// One extra attached round with BPF run-time statistics on (not used
    /// in the ratio: the statistics themselves cost time per run).
    pub bpf_stats: Option<BpfStats>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BpfStats {
    pub sent: u64,
    pub sent_pps: f64,
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
    tx.ip(&[
        "link", "add", "dpa", "type", "veth", "peer", "name", "dpb", "netns", &rx.name,
    ])?;
    tx.ip(&["addr", "add", &format!("{TX_ADDR}/24"), "dev", "dpa"])?;
    rx.ip(&["addr", "add", &format!("{RX_ADDR}/24"), "dev", "dpb"])?;
    tx.ip(&["link", "set", "dpa", "up"])?;
    rx.ip(&["link", "set", "dpb", "up"])?;
    let (mac_a, mac_b) = (tx.mac("dpa")?, rx.mac("dpb")?);
    tx.ip(&[
        "neigh",
        "replace",
        RX_ADDR,
        "lladdr",
        &mac_b,
        "dev",
        "dpa",
        "nud",
        "permanent",
    ])?;
    rx.ip(&[
        "neigh",
        "replace",
        TX_ADDR,
        "lladdr",
        &mac_a,
        "dev",
        "dpb",
        "nud",
        "permanent",
    ])?;

    let mut results = Vec::new();
    for index in 0..rounds * 2 {
        sys::check_interrupted()?;
        let attached = index % 2 == 1;
        let collector_process = if attached {
            Some(start_collector(&tx, collector, logs, index)?)
        } else {
            None
        };
        let before = match &collector_process {
            Some(_) => Some(probe_tx_packets(&tx)?),
            None => None,
        };
        // Let the previous round's collector teardown and the load settle.
        sys::sleep_checked(Duration::from_millis(500))?;
        let loaded = probe_programs_loaded();
        let mut round = measure(&tx, &rx, Duration::from_secs_f64(seconds))?;
        round.index = index;
        round.attached = attached;
        round.probe_programs_loaded = loaded;
        if let Some(before) = before {
            round.probe_counted_tx_packets = Some(probe_tx_packets(&tx)?.saturating_sub(before));
        }
        drop(collector_process);
        eprintln!(
            "bench: datapath round {index} ({}): {:.0} pkt/s sent, {:.0} pkt/s received, {:.0} thread-CPU ns/pkt",
            if attached { "attached" } else { "detached" },
            round.sent_pps,
            round.received_pps,
            round.thread_cpu_ns_per_packet
        );
        results.push(round);
    }
    let mut summary = summarize(results);
    sys::check_interrupted()?;
    summary.bpf_stats = match bpf_stats_round(&tx, &rx, collector, logs, seconds, rounds * 2) {
        Ok(stats) => Some(stats),
        Err(error) => {
            eprintln!("bench: BPF run-time statistics round skipped: {error:#}");
            None
        }
    };
    Ok(summary)
}

fn start_collector(tx: &Netns, collector: &Path, logs: &Path, index: usize) -> Result<Server> {
    let args: Vec<String> = [
        "serve",
        "--listen",
        &format!("127.0.0.1:{COLLECTOR_PORT}"),
        "--node-name",
        "bench",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let log = logs.join(format!("datapath-collector-{index}.log"));
    let server = Server::start(
        tx,
        "collector (datapath)",
        collector,
        &args,
        COLLECTOR_PORT,
        &log,
    )?;
    let text = tx.run_in(|| {
        scrape::get(COLLECTOR_PORT, "/metrics", Duration::from_secs(30))
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
    })?;
    if !text.lines().any(|l| l == "collector_ebpf_enabled 1") {
        bail!(
            "the collector in {} did not attach its probes (collector_ebpf_enabled is not 1); see {}",
            tx.name,
            log.display()
        );
    }
    Ok(server)
}

/// An attached round with the kernel's BPF run-time statistics enabled
/// through a BPF_ENABLE_STATS fd (they switch off when it closes, also if
/// this process dies), reading the collector's own programs' run_time_ns.
fn bpf_stats_round(
    tx: &Netns,
    rx: &Netns,
    collector: &Path,
    logs: &Path,
    seconds: f64,
    index: usize,
) -> Result<BpfStats> {
    let before_start = probe_programs()?;
    let server = start_collector(tx, collector, logs, index)?;
    let ours: Vec<u64> = probe_programs()?
        .into_iter()
        .filter(|p| !before_start.iter().any(|b| b.0 == p.0))
        .map(|p| p.0)
        .collect();
    if ours.is_empty() {
        bail!("cannot tell the collector's programs apart (bpftool shows none new)");
    }
    let stats_fd = enable_bpf_stats()?;
    sys::sleep_checked(Duration::from_millis(500))?;
    let start = probe_programs()?;
    let round = measure(tx, rx, Duration::from_secs_f64(seconds))?;
    let end = probe_programs()?;
    // SAFETY: closing the fd enable_bpf_stats returned.
    unsafe { libc::close(stats_fd) };
    drop(server);
    let mut programs = Vec::new();
    for id in ours {
        let find = |list: &[(u64, String, u64, u64)]| list.iter().find(|p| p.0 == id).cloned();
        if let (Some(a), Some(b)) = (find(&start), find(&end)) {
            let runs = b.3.saturating_sub(a.3);
            programs.push(ProgramRuntime {
                id,
                name: b.1,
                runs,
                ns_per_run: b.2.saturating_sub(a.2) as f64 / runs.max(1) as f64,
            });
        }
    }
    let total_ns: f64 = programs.iter().map(|p| p.ns_per_run * p.runs as f64).sum();
    eprintln!(
        "bench: BPF statistics round: {:.0} pkt/s, the collector's programs ran {:.0} ns per packet",
        round.sent_pps,
        total_ns / round.sent.max(1) as f64
    );
    Ok(BpfStats {
        sent: round.sent,
        sent_pps: round.sent_pps,
        programs,
        bpf_ns_per_packet: total_ns / round.sent.max(1) as f64,
    })
}

/// bpf(BPF_ENABLE_STATS, BPF_STATS_RUN_TIME): statistics stay on while the fd is open.
fn enable_bpf_stats() -> Result<libc::c_int> {
    const BPF_ENABLE_STATS: libc::c_long = 32;
    let attr: [u32; 2] = [0, 0]; // enable_stats.type = BPF_STATS_RUN_TIME
                                 // SAFETY: attr is a valid, zero-padded bpf_attr prefix of the given size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_ENABLE_STATS,
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd < 0 {
        bail!("BPF_ENABLE_STATS: {}", std::io::Error::last_os_error());
    }
    Ok(fd as libc::c_int)
}

/// Ratios, medians and spread of the rounds (also used by `--render`).
pub fn summarize(rounds: Vec<Round>) -> Datapath {
    let pick = |attached: bool| -> Vec<f64> {
        rounds
            .iter()
            .filter(|r| r.attached == attached)
            .map(|r| r.sent_pps)
            .collect()
    };
    let cpu = |attached: bool| -> f64 {
        median(
            &rounds
                .iter()
                .filter(|r| r.attached == attached)
                .map(|r| r.thread_cpu_ns_per_packet)
                .collect::<Vec<_>>(),
        )
    };
    let (detached, attached) = (pick(false), pick(true));
    let pair_ratios: Vec<f64> = detached.iter().zip(&attached).map(|(d, a)| a / d).collect();
    let min_max = |v: &[f64]| {
        (
            v.iter().copied().fold(f64::INFINITY, f64::min),
            v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        )
    };
    let (detached_median, attached_median) = (median(&detached), median(&attached));
    let ratio_median = median(&pair_ratios);
    let (ratio_min, ratio_max) = min_max(&pair_ratios);
    let foreign: Vec<String> = rounds
        .iter()
        .filter(|r| match r.probe_programs_loaded {
            Some(n) => n != if r.attached { 3 } else { 0 },
            None => false,
        })
        .map(|r| {
            format!(
                "round {} saw {} probe programs",
                r.index,
                r.probe_programs_loaded.unwrap_or(0)
            )
        })
        .collect();
    Datapath {
        detached_pps_median: detached_median,
        attached_pps_median: attached_median,
        detached_pps_min_max: min_max(&detached),
        attached_pps_min_max: min_max(&attached),
        ratio_median,
        ratio_min,
        ratio_max,
        cost_percent: (1.0 - ratio_median) * 100.0,
        ns_per_packet: 1e9 / attached_median - 1e9 / detached_median,
        thread_cpu_ns_per_packet_detached: cpu(false),
        thread_cpu_ns_per_packet_attached: cpu(true),
        pair_ratios,
        foreign_probe_warning: (!foreign.is_empty()).then(|| {
            format!(
                "other programs with the collector's probe names were loaded (another collector or test running?): {}",
                foreign.join(", ")
            )
        }),
        rounds,
        bpf_stats: None,
    }
}

/// network_interface_ebpf_tx_packets_total of dpa, from the collector in `tx`.
fn probe_tx_packets(tx: &Netns) -> Result<u64> {
    let text = tx.run_in(|| {
        scrape::get(COLLECTOR_PORT, "/metrics", Duration::from_secs(30))
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
    })?;
    Ok(text
        .lines()
        .find(|l| {
            l.starts_with("network_interface_ebpf_tx_packets_total{")
                && l.contains("interface=\"dpa\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or(0))
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
    let names = ["netif_receive_s", "net_dev_start_x", "kfree_skb"];
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

fn thread_cpu() -> Duration {
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
        let receiver = scope.spawn(|| -> Result<(u64, Duration)> {
            let setup = (|| -> Result<UdpSocket> {
                rx.enter()?;
                let socket = UdpSocket::bind((RX_ADDR, PORT)).context("binding receiver")?;
                set_int_option(&socket, libc::SO_RCVBUFFORCE, 32 << 20)?;
                socket.set_read_timeout(Some(Duration::from_millis(200)))?;
                Ok(socket)
            })();
            // Both threads reach the barrier even when their setup failed.
            barrier.wait();
            let socket = setup?;
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
            Ok((received, thread_cpu() - cpu_start))
        });
        let sender = scope.spawn(|| -> Result<(u64, Duration, Duration)> {
            let result = (|| {
                let setup = (|| -> Result<UdpSocket> {
                    tx.enter()?;
                    let socket = UdpSocket::bind((TX_ADDR, 0)).context("binding sender")?;
                    socket.connect((RX_ADDR, PORT))?;
                    Ok(socket)
                })();
                barrier.wait();
                let socket = setup?;
                let payload = [0x5au8; PAYLOAD];
                let cpu_start = thread_cpu();
                let start = Instant::now();
                let deadline = start + duration;
                let mut sent = 0u64;
                while Instant::now() < deadline {
                    sent += send_batch(&socket, &payload)? as u64;
                }
                Ok((sent, start.elapsed(), thread_cpu() - cpu_start))
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
        let (sent, elapsed, sender_cpu) = sent?;
        let (received, receiver_cpu) = received?;
        let seconds = elapsed.as_secs_f64();
        Ok(Round {
            index: 0,
            attached: false,
            seconds,
            sent,
            received,
            sent_pps: sent as f64 / seconds,
            received_pps: received as f64 / seconds,
            thread_cpu_ns_per_packet: (sender_cpu + receiver_cpu).as_nanos() as f64
                / sent.max(1) as f64,
            probe_programs_loaded: None,
            probe_counted_tx_packets: None,
        })
    })
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

fn send_batch(socket: &UdpSocket, payload: &[u8]) -> Result<usize> {
    let mut iovecs: Vec<libc::iovec> = (0..BATCH)
        .map(|_| libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: payload.len(),
        })
        .collect();
    let mut messages: Vec<libc::mmsghdr> = iovecs
        .iter_mut()
        .map(|iov| {
            // SAFETY: an all-zero mmsghdr is valid (no name, no control).
            let mut message: libc::mmsghdr = unsafe { std::mem::zeroed() };
            message.msg_hdr.msg_iov = iov;
            message.msg_hdr.msg_iovlen = 1;
            message
        })
        .collect();
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
    let mut messages: Vec<libc::mmsghdr> = iovecs
        .iter_mut()
        .map(|iov| {
            // SAFETY: an all-zero mmsghdr is valid (no name, no control).
            let mut message: libc::mmsghdr = unsafe { std::mem::zeroed() };
            message.msg_hdr.msg_iov = iov;
            message.msg_hdr.msg_iovlen = 1;
            message
        })
        .collect();
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

    fn round(index: usize, attached: bool, pps: f64) -> Round {
        Round {
            index,
            attached,
            seconds: 1.0,
            sent: pps as u64,
            received: pps as u64,
            sent_pps: pps,
            received_pps: pps,
            thread_cpu_ns_per_packet: 1e9 / pps,
            probe_programs_loaded: Some(if attached { 3 } else { 0 }),
            probe_counted_tx_packets: None,
        }
    }

    #[test]
    fn ratio_and_cost_from_alternating_rounds() {
        let summary = summarize(vec![
            round(0, false, 1_000_000.0),
            round(1, true, 980_000.0),
            round(2, false, 1_000_000.0),
            round(3, true, 960_000.0),
        ]);
        assert_eq!(summary.pair_ratios, vec![0.98, 0.96]);
        assert!((summary.ratio_median - 0.97).abs() < 1e-9);
        assert!((summary.cost_percent - 3.0).abs() < 1e-9);
        assert!((summary.ns_per_packet - (1e9 / 970_000.0 - 1e9 / 1_000_000.0)).abs() < 1e-6);
        assert!(summary.foreign_probe_warning.is_none());
    }
}
