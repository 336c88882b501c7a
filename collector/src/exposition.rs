//! Prometheus text exposition (format 0.0.4) of a [`Snapshot`].
//!
//! Written directly into one `String`: a 1,000-interface node yields ~40,000
//! samples per scrape, and building the `prometheus` crate's protobuf model
//! for each (a struct and owned strings per label) costs more than the
//! netlink dump itself.

use std::fmt::Write;

use crate::kernel::layout::Probe;
use crate::snapshot::{Interface, Snapshot};
use crate::sources::netlink::LinkCounters;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// (metric name, help, which counter).
type CounterFamily = (&'static str, &'static str, fn(&LinkCounters) -> u64);

/// The twelve counters the Telegraf seed exposed, with its names (no
/// `_total`, kept on purpose for existing dashboards) and `state` label.
const SEED_COUNTERS: [CounterFamily; 12] = [
    (
        "network_interface_stats_rx_bytes",
        "Received bytes (ip -s link RX bytes).",
        |c| c.rx_bytes,
    ),
    (
        "network_interface_stats_rx_packets",
        "Received packets (ip -s link RX packets).",
        |c| c.rx_packets,
    ),
    (
        "network_interface_stats_rx_errors",
        "Receive errors (ip -s link RX errors).",
        |c| c.rx_errors,
    ),
    (
        "network_interface_stats_rx_dropped",
        "Received packets dropped (ip -s link RX dropped).",
        |c| c.rx_dropped,
    ),
    (
        "network_interface_stats_rx_missed",
        "Received packets missed by the NIC (ip -s link RX missed).",
        |c| c.rx_missed_errors,
    ),
    (
        "network_interface_stats_rx_multicast",
        "Received multicast packets (ip -s link RX mcast).",
        |c| c.multicast,
    ),
    (
        "network_interface_stats_tx_bytes",
        "Transmitted bytes (ip -s link TX bytes).",
        |c| c.tx_bytes,
    ),
    (
        "network_interface_stats_tx_packets",
        "Transmitted packets (ip -s link TX packets).",
        |c| c.tx_packets,
    ),
    (
        "network_interface_stats_tx_errors",
        "Transmission errors (ip -s link TX errors).",
        |c| c.tx_errors,
    ),
    (
        "network_interface_stats_tx_dropped",
        "Transmitted packets dropped (ip -s link TX dropped).",
        |c| c.tx_dropped,
    ),
    (
        "network_interface_stats_tx_carrier",
        "Carrier errors (ip -s link TX carrier).",
        |c| c.tx_carrier_errors,
    ),
    (
        "network_interface_stats_tx_collisions",
        "Collisions (ip -s link TX collsns).",
        |c| c.collisions,
    ),
];

/// IFLA_STATS64 counters `ip -s link` hides without `-s -s`.
const DETAIL_COUNTERS: [CounterFamily; 13] = [
    (
        "network_interface_rx_length_errors_total",
        "Received frames with a bad length field.",
        |c| c.rx_length_errors,
    ),
    (
        "network_interface_rx_over_errors_total",
        "Receive ring buffer overruns.",
        |c| c.rx_over_errors,
    ),
    (
        "network_interface_rx_crc_errors_total",
        "Received frames with a CRC error.",
        |c| c.rx_crc_errors,
    ),
    (
        "network_interface_rx_frame_errors_total",
        "Received frames with an alignment error.",
        |c| c.rx_frame_errors,
    ),
    (
        "network_interface_rx_fifo_errors_total",
        "Receive FIFO errors.",
        |c| c.rx_fifo_errors,
    ),
    (
        "network_interface_rx_missed_errors_total",
        "Received packets missed by the NIC (same as network_interface_stats_rx_missed).",
        |c| c.rx_missed_errors,
    ),
    (
        "network_interface_rx_nohandler_total",
        "Received packets dropped for lack of a protocol handler.",
        |c| c.rx_nohandler,
    ),
    (
        "network_interface_rx_compressed_total",
        "Received compressed packets.",
        |c| c.rx_compressed,
    ),
    (
        "network_interface_tx_aborted_errors_total",
        "Transmissions aborted.",
        |c| c.tx_aborted_errors,
    ),
    (
        "network_interface_tx_fifo_errors_total",
        "Transmit FIFO errors.",
        |c| c.tx_fifo_errors,
    ),
    (
        "network_interface_tx_heartbeat_errors_total",
        "Transmit heartbeat (SQE) errors.",
        |c| c.tx_heartbeat_errors,
    ),
    (
        "network_interface_tx_window_errors_total",
        "Late collisions (transmit window errors).",
        |c| c.tx_window_errors,
    ),
    (
        "network_interface_tx_compressed_total",
        "Transmitted compressed packets.",
        |c| c.tx_compressed,
    ),
];

type EbpfValue = fn(&crate::snapshot::EbpfInterface) -> u64;
/// (metric name, help, probe that counts it, which value).
const EBPF_COUNTERS: [(&str, &str, Probe, EbpfValue); 4] = [
    (
        "network_interface_ebpf_rx_packets_total",
        "Packets seen by the net:netif_receive_skb probe.",
        Probe::Rx,
        |e| e.rx_packets,
    ),
    (
        "network_interface_ebpf_rx_bytes_total",
        "Bytes seen by net:netif_receive_skb (skb->len: L2 header already pulled).",
        Probe::Rx,
        |e| e.rx_bytes,
    ),
    (
        "network_interface_ebpf_tx_packets_total",
        "Packets handed to the driver, seen by net:net_dev_start_xmit.",
        Probe::Tx,
        |e| e.tx_packets,
    ),
    (
        "network_interface_ebpf_tx_bytes_total",
        "Bytes handed to the driver (skb->len including the L2 header).",
        Probe::Tx,
        |e| e.tx_bytes,
    ),
];

/// Counters of the HTTP server; zero when rendering outside it (`snapshot`),
/// so both print the same families.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpStats {
    pub connections_rejected: u64,
}

/// Renders everything `/metrics` serves.
pub fn render(snapshot: &Snapshot, http: &HttpStats) -> String {
    let mut out = String::with_capacity(256 + snapshot.interfaces.len() * 6_000);
    let identities: Vec<String> = snapshot
        .interfaces
        .iter()
        .map(|i| identity_labels(snapshot, &i.link.name))
        .collect();
    let rows = || {
        snapshot
            .interfaces
            .iter()
            .zip(identities.iter().map(String::as_str))
    };

    for (name, help, value) in SEED_COUNTERS {
        header(&mut out, name, help, "counter");
        for (interface, identity) in rows() {
            sample_with_state(
                &mut out,
                name,
                identity,
                interface,
                value(&interface.link.counters),
            );
        }
    }
    header(
        &mut out,
        "network_interface_stats_mtu",
        "Maximum transmission unit in bytes.",
        "gauge",
    );
    for (interface, identity) in rows() {
        sample_with_state(
            &mut out,
            "network_interface_stats_mtu",
            identity,
            interface,
            u64::from(interface.link.mtu),
        );
    }
    for (name, help, value) in DETAIL_COUNTERS {
        header(&mut out, name, help, "counter");
        for (interface, identity) in rows() {
            sample(
                &mut out,
                name,
                identity,
                &[],
                value(&interface.link.counters),
            );
        }
    }
    state_families(&mut out, snapshot, &identities);
    ebpf_families(&mut out, snapshot, &identities);
    self_families(&mut out, snapshot);
    header(
        &mut out,
        "collector_http_connections_rejected_total",
        "Connections closed on accept because the connection limit was reached.",
        "counter",
    );
    let _ = writeln!(
        out,
        "collector_http_connections_rejected_total {}",
        http.connections_rejected
    );
    out
}

fn state_families(out: &mut String, snapshot: &Snapshot, identities: &[String]) {
    let rows = || {
        snapshot
            .interfaces
            .iter()
            .zip(identities.iter().map(String::as_str))
    };
    header(
        out,
        "network_interface_up",
        "1 when the interface is administratively up (IFF_UP).",
        "gauge",
    );
    for (interface, identity) in rows() {
        sample(
            out,
            "network_interface_up",
            identity,
            &[],
            u64::from(interface.link.admin_up),
        );
    }
    header(
        out,
        "network_interface_carrier",
        "1 when the interface has carrier (IFLA_CARRIER).",
        "gauge",
    );
    for (interface, identity) in rows() {
        if let Some(carrier) = interface.link.carrier {
            sample(
                out,
                "network_interface_carrier",
                identity,
                &[],
                u64::from(carrier),
            );
        }
    }
    header(
        out,
        "network_interface_oper_state",
        "RFC 2863 operational state as IF-MIB ifOperStatus: 1 up, 2 down, 3 testing, 4 unknown, 5 dormant, 6 notpresent, 7 lowerlayerdown.",
        "gauge",
    );
    for (interface, identity) in rows() {
        sample(
            out,
            "network_interface_oper_state",
            identity,
            &[],
            if_oper_status(&interface.link.oper_state),
        );
    }
    header(
        out,
        "network_interface_carrier_changes_total",
        "Carrier up/down transitions since the device was created.",
        "counter",
    );
    for (interface, identity) in rows() {
        if let Some(changes) = interface.link.carrier_changes {
            sample(
                out,
                "network_interface_carrier_changes_total",
                identity,
                &[],
                u64::from(changes),
            );
        }
    }
    header(
        out,
        "network_interface_speed_bytes",
        "Negotiated link speed in bytes per second, where the driver reports one.",
        "gauge",
    );
    for (interface, identity) in rows() {
        if let Some(speed) = interface.speed_bytes {
            sample(out, "network_interface_speed_bytes", identity, &[], speed);
        }
    }
    header(
        out,
        "network_interface_info",
        "Interface attributes as labels; value is always 1.",
        "gauge",
    );
    for (interface, identity) in rows() {
        let link = &interface.link;
        let ifindex = link.ifindex.to_string();
        let attributes = [
            ("ifindex", ifindex.as_str()),
            ("kind", link.kind.as_deref().unwrap_or("")),
            ("master", interface.master.as_deref().unwrap_or("")),
            ("address", link.mac_address.as_deref().unwrap_or("")),
            ("operstate", link.oper_state.as_str()),
        ];
        sample(out, "network_interface_info", identity, &attributes, 1);
    }
}

fn ebpf_families(out: &mut String, snapshot: &Snapshot, identities: &[String]) {
    let status = &snapshot.sources.ebpf;
    if !status.enabled {
        return;
    }
    let rows = || {
        snapshot
            .interfaces
            .iter()
            .zip(identities.iter().map(String::as_str))
            .filter_map(|(i, identity)| i.ebpf.as_ref().map(|e| (e, identity)))
    };
    // A probe that is not attached (not selected, or its tracepoint
    // missing) would only serve zeros that look like "no traffic".
    let attached = |probe: Probe| {
        status
            .attachments
            .iter()
            .any(|a| a.attached && a.program == probe.program())
    };
    for (name, help, probe, value) in EBPF_COUNTERS {
        if !attached(probe) {
            continue;
        }
        header(out, name, help, "counter");
        for (ebpf, identity) in rows() {
            sample(out, name, identity, &[], value(ebpf));
        }
    }
    if !attached(Probe::Drop) {
        return;
    }
    header(
        out,
        "network_interface_drops_total",
        "Packets freed as dropped (skb:kfree_skb), by the kernel's drop reason.",
        "counter",
    );
    for (ebpf, identity) in rows() {
        for (reason, packets) in &ebpf.drops {
            sample(
                out,
                "network_interface_drops_total",
                identity,
                &[("reason", reason)],
                *packets,
            );
        }
    }
}

fn self_families(out: &mut String, snapshot: &Snapshot) {
    let status = &snapshot.sources.ebpf;
    header(
        out,
        "collector_build_info",
        "Build of the running collector; value is always 1.",
        "gauge",
    );
    let _ = writeln!(
        out,
        "collector_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    header(
        out,
        "collector_scrape_duration_seconds",
        "Time the last collection took.",
        "gauge",
    );
    let _ = writeln!(
        out,
        "collector_scrape_duration_seconds {}",
        snapshot.collection_seconds
    );
    header(
        out,
        "collector_collections_total",
        "Collections (netlink dump and map read) since start; concurrent scrapes share one.",
        "counter",
    );
    let _ = writeln!(
        out,
        "collector_collections_total {}",
        snapshot.sources.collections_total
    );
    header(
        out,
        "collector_scrape_errors_total",
        "Failed collections per source since start.",
        "counter",
    );
    for (source, errors) in &snapshot.sources.errors_total {
        let _ = writeln!(
            out,
            "collector_scrape_errors_total{{source=\"{source}\"}} {errors}"
        );
    }
    header(
        out,
        "collector_ebpf_enabled",
        "1 when the eBPF probes are loaded and attached.",
        "gauge",
    );
    let _ = writeln!(out, "collector_ebpf_enabled {}", u8::from(status.enabled));
    if !status.attachments.is_empty() {
        header(
            out,
            "collector_ebpf_probe_info",
            "Each BPF program, the tracepoint it attaches to and its flavour (btf or classic); 1 when attached.",
            "gauge",
        );
        for a in &status.attachments {
            let _ = writeln!(
                out,
                "collector_ebpf_probe_info{{program=\"{}\",tracepoint=\"{}\",flavour=\"{}\"}} {}",
                escape(&a.program),
                escape(&a.tracepoint),
                a.flavour.as_str(),
                u8::from(a.attached)
            );
        }
    }
    if status.enabled {
        let c = &status.probe_counters;
        header(
            out,
            "collector_ebpf_map_full_total",
            "Probe updates lost because a BPF map was full.",
            "counter",
        );
        let _ = writeln!(
            out,
            "collector_ebpf_map_full_total{{map=\"traffic\"}} {}",
            c.traffic_map_full
        );
        let _ = writeln!(
            out,
            "collector_ebpf_map_full_total{{map=\"drops\"}} {}",
            c.drop_map_full
        );
        header(
            out,
            "collector_ebpf_kernel_read_errors_total",
            "Probe reads of kernel memory that failed.",
            "counter",
        );
        let _ = writeln!(
            out,
            "collector_ebpf_kernel_read_errors_total {}",
            c.kernel_read_errors
        );
        header(out, "collector_ebpf_drops_without_device_total", "Dropped packets with no device to attribute them to (not in network_interface_drops_total).", "counter");
        let _ = writeln!(
            out,
            "collector_ebpf_drops_without_device_total {}",
            c.drops_without_device
        );
        header(
            out,
            "collector_ebpf_map_entries",
            "Entries in each BPF map after stale interfaces were removed.",
            "gauge",
        );
        let _ = writeln!(
            out,
            "collector_ebpf_map_entries{{map=\"traffic\"}} {}",
            status.traffic_map_entries
        );
        let _ = writeln!(
            out,
            "collector_ebpf_map_entries{{map=\"drops\"}} {}",
            status.drop_map_entries
        );
        program_stats(out, status);
    }
}

/// Each attached program's own cost, as the kernel accounts it.
fn program_stats(out: &mut String, status: &crate::snapshot::EbpfStatus) {
    if let Some(enabled) = status.bpf_stats_enabled {
        header(
            out,
            "collector_ebpf_bpf_stats_enabled",
            "kernel.bpf_stats_enabled: program runs and run time only advance while 1.",
            "gauge",
        );
        let _ = writeln!(
            out,
            "collector_ebpf_bpf_stats_enabled {}",
            u8::from(enabled)
        );
    }
    if status.programs.is_empty() {
        return;
    }
    header(
        out,
        "collector_ebpf_program_runs_total",
        "Runs of each attached BPF program (counted while kernel.bpf_stats_enabled is 1).",
        "counter",
    );
    for p in &status.programs {
        let _ = writeln!(
            out,
            "collector_ebpf_program_runs_total{{program=\"{}\"}} {}",
            escape(&p.program),
            p.run_cnt
        );
    }
    header(
        out,
        "collector_ebpf_program_run_seconds_total",
        "Time spent in each attached BPF program (counted while kernel.bpf_stats_enabled is 1).",
        "counter",
    );
    for p in &status.programs {
        let _ = writeln!(
            out,
            "collector_ebpf_program_run_seconds_total{{program=\"{}\"}} {}",
            escape(&p.program),
            p.run_time_ns as f64 / 1e9
        );
    }
    if status.programs.iter().any(|p| p.recursion_misses.is_some()) {
        header(
            out,
            "collector_ebpf_program_recursion_misses_total",
            "Runs of each BPF program the kernel skipped because it was already running on that CPU.",
            "counter",
        );
        for p in &status.programs {
            if let Some(misses) = p.recursion_misses {
                let _ = writeln!(
                    out,
                    "collector_ebpf_program_recursion_misses_total{{program=\"{}\"}} {misses}",
                    escape(&p.program)
                );
            }
        }
    }
}

fn if_oper_status(oper_state: &str) -> u64 {
    match oper_state {
        "up" => 1,
        "down" => 2,
        "testing" => 3,
        "dormant" => 5,
        "notpresent" => 6,
        "lowerlayerdown" => 7,
        _ => 4,
    }
}

/// `interface="eth0",host="n",hostname="n",cluster="c"`: the labels every
/// per-interface series carries.
fn identity_labels(snapshot: &Snapshot, interface: &str) -> String {
    let node = escape(&snapshot.node);
    let mut labels = format!(
        "interface=\"{}\",host=\"{node}\",hostname=\"{node}\"",
        escape(interface)
    );
    for (key, value) in &snapshot.labels {
        let _ = write!(labels, ",{key}=\"{}\"", escape(value));
    }
    labels
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn sample_with_state(
    out: &mut String,
    name: &str,
    identity: &str,
    interface: &Interface,
    value: u64,
) {
    let state = if interface.link.admin_up {
        "up"
    } else {
        "down"
    };
    sample(out, name, identity, &[("state", state)], value);
}

fn sample(out: &mut String, name: &str, identity: &str, extra: &[(&str, &str)], value: u64) {
    out.push_str(name);
    out.push('{');
    out.push_str(identity);
    for (key, label_value) in extra {
        let _ = write!(out, ",{key}=\"{}\"", escape(label_value));
    }
    let _ = writeln!(out, "}} {value}");
}

/// Label value escaping per the text format: backslash, quote, newline.
fn escape(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut escaped = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            other => escaped.push(other),
        }
    }
    std::borrow::Cow::Owned(escaped)
}
