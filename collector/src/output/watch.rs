//! `collector watch`: per-interface rates between two snapshots, for a
//! terminal, refreshed by [`run`]. Rates are computed here for display
//! only; `/metrics` always serves the kernel's totals.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::{Duration, Instant};

use crate::model::{Interface, Snapshot};
use crate::output::table::{human_bytes, top_reasons};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SortKey {
    Rx,
    Tx,
    Drops,
}

/// Rates of one interface over one refresh interval.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InterfaceRates {
    pub name: String,
    /// `namespace/pod` when the interface is a pod's, else empty.
    pub pod: String,
    pub up: bool,
    pub rx_bytes: f64,
    pub rx_packets: f64,
    pub tx_bytes: f64,
    pub tx_packets: f64,
    /// netlink rx+tx errors per second.
    pub errors: f64,
    /// Drops per second: eBPF by reason when available.
    pub drops_by_reason: BTreeMap<String, f64>,
    /// netlink rx_dropped + tx_dropped per second.
    pub netlink_drops: f64,
}

impl InterfaceRates {
    pub fn drops(&self) -> f64 {
        // fold, not sum: an empty f64 sum is -0.0, which prints as "-0.0".
        let ebpf = self
            .drops_by_reason
            .values()
            .fold(0.0, |total, rate| total + rate);
        ebpf.max(self.netlink_drops)
    }
}

fn per_second(now: u64, before: u64, seconds: f64) -> f64 {
    // A counter that went backwards belongs to a re-created interface.
    now.saturating_sub(before) as f64 / seconds
}

fn interface_rates(now: &Interface, before: &Interface, seconds: f64) -> InterfaceRates {
    let (c, p) = (&now.counters, &before.counters);
    let mut drops_by_reason = BTreeMap::new();
    if let (Some(now_ebpf), Some(before_ebpf)) = (&now.ebpf, &before.ebpf) {
        for (reason, count) in &now_ebpf.drops {
            let previous = before_ebpf.drops.get(reason).copied().unwrap_or(0);
            let rate = per_second(*count, previous, seconds);
            if rate > 0.0 {
                drops_by_reason.insert(reason.clone(), rate);
            }
        }
    }
    InterfaceRates {
        name: now.name.clone(),
        pod: crate::output::table::pod_label(now.pod.as_ref()),
        up: now.admin_up,
        rx_bytes: per_second(c.rx_bytes, p.rx_bytes, seconds),
        rx_packets: per_second(c.rx_packets, p.rx_packets, seconds),
        tx_bytes: per_second(c.tx_bytes, p.tx_bytes, seconds),
        tx_packets: per_second(c.tx_packets, p.tx_packets, seconds),
        errors: per_second(
            c.rx_errors + c.tx_errors,
            p.rx_errors + p.tx_errors,
            seconds,
        ),
        drops_by_reason,
        netlink_drops: per_second(
            c.rx_dropped + c.tx_dropped,
            p.rx_dropped + p.tx_dropped,
            seconds,
        ),
    }
}

/// Rates of the interfaces present in both snapshots (same ifindex and name).
pub fn rates(
    before: &Snapshot,
    now: &Snapshot,
    seconds: f64,
    sort: SortKey,
) -> Vec<InterfaceRates> {
    let previous: BTreeMap<(u32, &str), &Interface> = before
        .interfaces
        .iter()
        .map(|i| ((i.ifindex, i.name.as_str()), i))
        .collect();
    let mut rates: Vec<InterfaceRates> = now
        .interfaces
        .iter()
        .filter_map(|i| {
            previous
                .get(&(i.ifindex, i.name.as_str()))
                .map(|p| interface_rates(i, p, seconds.max(1e-3)))
        })
        .collect();
    let key = |r: &InterfaceRates| match sort {
        SortKey::Rx => r.rx_bytes,
        SortKey::Tx => r.tx_bytes,
        SortKey::Drops => r.drops(),
    };
    rates.sort_by(|a, b| key(b).total_cmp(&key(a)).then_with(|| a.name.cmp(&b.name)));
    rates
}

/// Each pod's drops per second inside its namespace, by reason: a count
/// that went down (the pod's namespace recreated) restarts from zero.
pub fn pod_drop_rates(
    before: &Snapshot,
    now: &Snapshot,
    seconds: f64,
) -> BTreeMap<String, BTreeMap<String, f64>> {
    let previous = crate::output::table::drops_by_pod(before);
    let mut pods = crate::output::table::drops_by_pod(now);
    for (pod, reasons) in &mut pods {
        for (reason, count) in reasons.iter_mut() {
            let earlier = previous.get(pod).and_then(|r| r.get(reason)).copied();
            let delta = match earlier {
                Some(earlier) if earlier <= *count => *count - earlier,
                _ => *count,
            };
            *count = delta / seconds.max(1e-3);
        }
    }
    pods
}

pub fn human_rate(bytes_per_second: f64) -> String {
    format!("{}/s", human_bytes(bytes_per_second))
}

/// One frame of the watch view. `ansi` adds bold headers (terminals only).
pub fn render(rates: &[InterfaceRates], snapshot: &Snapshot, interval: f64, ansi: bool) -> String {
    let (bold, plain) = if ansi {
        ("\x1b[1m", "\x1b[0m")
    } else {
        ("", "")
    };
    let mut out = String::new();
    let ebpf = if snapshot.sources.ebpf.enabled {
        "eBPF drop reasons on"
    } else {
        "eBPF off: netlink drops only"
    };
    let _ = writeln!(
        out,
        "collector watch  node {}  every {interval:.1}s  {ebpf}  (Ctrl-C to quit)",
        crate::output::table::printable(&snapshot.node)
    );
    let width = crate::output::table::pod_column_width(rates.iter().map(|r| r.pod.as_str()));
    let pod_cell = |text: &str| width.map(|w| format!("{text:<w$} ")).unwrap_or_default();
    let _ = writeln!(
        out,
        "{bold}{:<16} {}{:<5} {:>12} {:>10} {:>12} {:>10} {:>9} {:>9}  TOP DROP REASONS/s{plain}",
        "INTERFACE",
        pod_cell("POD"),
        "STATE",
        "RX",
        "RX PPS",
        "TX",
        "TX PPS",
        "ERR/s",
        "DROP/s"
    );
    for r in rates {
        let top = top_reasons(r.drops_by_reason.iter(), |rate| format!("{rate:.1}"));
        let _ = writeln!(
            out,
            "{:<16} {}{:<5} {:>12} {:>10.1} {:>12} {:>10.1} {:>9.1} {:>9.1}  {}",
            crate::output::table::printable(&r.name),
            pod_cell(&r.pod),
            if r.up { "up" } else { "down" },
            human_rate(r.rx_bytes),
            r.rx_packets,
            human_rate(r.tx_bytes),
            r.tx_packets,
            r.errors,
            r.drops(),
            top
        );
    }
    out
}

/// How `watch` refreshes.
#[derive(Debug, Clone, Copy)]
pub struct Refresh {
    pub interval: Duration,
    pub sort: SortKey,
    /// Stop after this many frames; `None`: until Ctrl-C.
    pub count: Option<u64>,
    /// A person at a terminal: each frame replaces the last, with colour.
    pub terminal: bool,
}

/// Collects every `refresh.interval` and writes the rates since the
/// previous collection to `out`, until Ctrl-C or `refresh.count` frames.
pub async fn run(
    collect: impl Fn() -> Snapshot,
    refresh: Refresh,
    out: &mut impl std::io::Write,
) -> std::io::Result<()> {
    // One listener for the whole run, made before the first collection:
    // a Ctrl-C that arrives while `collect` blocks is kept for the next
    // select (a listener made afresh each turn would miss it, and the
    // default handler, which would have ended the process, is gone).
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut previous = (collect(), Instant::now());
    let mut frames = 0u64;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(refresh.interval) => {}
            _ = interrupt.recv() => break,
        }
        let now = (collect(), Instant::now());
        let seconds = now.1.duration_since(previous.1).as_secs_f64();
        let rates = rates(&previous.0, &now.0, seconds, refresh.sort);
        let mut frame = render(&rates, &now.0, seconds, refresh.terminal);
        let pods = pod_drop_rates(&previous.0, &now.0, seconds);
        let title = "DROPS INSIDE PODS/s (eBPF, by kernel reason)";
        let show = |rate: f64| format!("{rate:.1}");
        if let Some(section) = crate::output::table::pod_drops_section(&now.0, &pods, title, show) {
            frame.push_str(&section);
        }
        let tcp = crate::output::tcp::tcp_rates(&previous.0, &now.0, seconds);
        let title = "TCP TROUBLE IN PODS/s (their own counters)";
        if let Some(section) = crate::output::tcp::tcp_section(&now.0, &tcp, title, show) {
            frame.push_str(&section);
        }
        // On a terminal each frame replaces the last; piped output keeps
        // every frame, separated by a blank line.
        let text = if refresh.terminal {
            format!("\x1b[H\x1b[2J{frame}")
        } else {
            format!("{frame}\n")
        };
        out.write_all(text.as_bytes())?;
        out.flush()?;
        previous = now;
        frames += 1;
        if refresh.count.is_some_and(|count| frames >= count) {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
