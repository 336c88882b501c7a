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
    let mut previous = (collect(), Instant::now());
    let mut frames = 0u64;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(refresh.interval) => {}
            _ = tokio::signal::ctrl_c() => break,
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
mod tests {
    use super::*;
    use crate::model::{EbpfInterface, EbpfStatus, SourceStatus};

    fn snapshot(rx_bytes: u64, no_socket: u64, ifindex: u32) -> Snapshot {
        let mut ebpf = EbpfInterface::default();
        ebpf.drops.insert("NO_SOCKET".into(), no_socket);
        let mut interface = Interface {
            ifindex,
            name: "eth0".into(),
            admin_up: true,
            ebpf: Some(ebpf),
            ..Interface::default()
        };
        interface.counters.rx_bytes = rx_bytes;
        interface.counters.rx_packets = rx_bytes / 100;
        Snapshot {
            node: "n".into(),
            labels: vec![],
            interfaces: vec![interface],
            namespace_drops: Vec::new(),
            sources: SourceStatus {
                netlink_error: None,
                ebpf: EbpfStatus {
                    enabled: true,
                    ..EbpfStatus::default()
                },
                errors_total: BTreeMap::new(),
                netlink_timeouts_total: 0,
                netlink_skipped_attributes_total: 0,
                collections_total: 1,
                pod_identity: Default::default(),
            },
            collection_seconds: 0.0,
        }
    }

    #[test]
    fn pod_drop_rates_are_deltas_per_second_and_restart_after_a_reset() {
        use crate::model::{NamespaceDrops, Netns, PodIdentity};
        let with = |count: u64| {
            let mut s = snapshot(0, 0, 2);
            s.namespace_drops = vec![NamespaceDrops {
                netns: Netns::Inode(9),
                pod: Some(PodIdentity {
                    namespace: "ns".into(),
                    pod: "dns".into(),
                    pod_uid: "u".into(),
                    container_id: "c".into(),
                    pod_interface: None,
                    network: None,
                }),
                ifindex: 2,
                interface: Some("eth0".into()),
                drops: BTreeMap::from([("SOCKET_RCVBUFF".to_string(), count)]),
            }];
            s
        };
        let rates = pod_drop_rates(&with(10), &with(30), 2.0);
        assert_eq!(rates["ns/dns"]["SOCKET_RCVBUFF"], 10.0);
        let reset = pod_drop_rates(&with(30), &with(4), 2.0);
        assert_eq!(reset["ns/dns"]["SOCKET_RCVBUFF"], 2.0);
    }

    #[test]
    fn rates_are_deltas_over_the_interval() {
        let r = rates(
            &snapshot(1_000, 5, 2),
            &snapshot(3_000, 25, 2),
            2.0,
            SortKey::Rx,
        );
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].rx_bytes, 1_000.0);
        assert_eq!(r[0].rx_packets, 10.0);
        assert_eq!(r[0].drops_by_reason["NO_SOCKET"], 10.0);
        let frame = render(&r, &snapshot(0, 0, 2), 2.0, false);
        assert!(
            frame.contains("1000B/s") && frame.contains("NO_SOCKET=10.0"),
            "{frame}"
        );
        assert!(!frame.contains('\x1b'), "no escape codes off a terminal");
        let idle = rates(&snapshot(0, 0, 2), &snapshot(0, 0, 2), 1.0, SortKey::Drops);
        assert!(!render(&idle, &snapshot(0, 0, 2), 1.0, false).contains("-0.0"));
    }

    #[test]
    fn a_pods_interface_shows_its_pod_next_to_its_name() {
        let plain = rates(&snapshot(0, 0, 2), &snapshot(100, 0, 2), 1.0, SortKey::Rx);
        assert!(!render(&plain, &snapshot(0, 0, 2), 1.0, false).contains("POD"));
        let mut now = snapshot(100, 0, 2);
        now.interfaces[0].pod = Some(crate::model::PodIdentity {
            namespace: "shop".into(),
            pod: "cart-0".into(),
            pod_uid: "u".into(),
            container_id: "c".into(),
            pod_interface: Some("eth0".into()),
            network: None,
        });
        let r = rates(&snapshot(0, 0, 2), &now, 1.0, SortKey::Rx);
        let frame = render(&r, &now, 1.0, false);
        let lines: Vec<&str> = frame.lines().collect();
        assert!(lines[1].starts_with("INTERFACE        POD "), "{frame}");
        assert!(
            lines[2].starts_with("eth0             shop/cart-0 up "),
            "{frame}"
        );
    }

    #[test]
    fn the_node_name_and_interface_names_reach_the_terminal_escaped() {
        // A node name comes from $NODE_NAME or a flag: ESC, a bell and a
        // right-to-left override (U+202E, which reorders what follows on
        // screen) must all be shown, not obeyed.
        let mut now = snapshot(100, 0, 2);
        now.node = "node\x1b[2J\u{7}\u{202e}evil".into();
        now.interfaces[0].name = "e\u{2066}th0\u{200b}".into();
        let mut before = snapshot(0, 0, 2);
        before.interfaces[0].name = now.interfaces[0].name.clone();
        let r = rates(&before, &now, 1.0, SortKey::Rx);
        let frame = render(&r, &now, 1.0, false);
        for hidden in ['\x1b', '\u{7}', '\u{202e}', '\u{2066}', '\u{200b}'] {
            assert!(!frame.contains(hidden), "{hidden:?} in {frame:?}");
        }
        assert!(
            frame.contains("node node\\x1b[2J\\x07\\u{202e}evil "),
            "{frame}"
        );
        assert!(frame.contains("e\\u{2066}th0\\u{200b}"), "{frame}");
    }

    #[test]
    fn recreated_interfaces_restart_instead_of_going_negative() {
        assert!(rates(
            &snapshot(9_000, 0, 2),
            &snapshot(100, 0, 3),
            1.0,
            SortKey::Rx
        )
        .is_empty());
        let r = rates(
            &snapshot(9_000, 9, 2),
            &snapshot(100, 0, 2),
            1.0,
            SortKey::Rx,
        );
        assert_eq!((r[0].rx_bytes, r[0].drops()), (0.0, 0.0));
    }
}
