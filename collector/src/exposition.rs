//! Prometheus text exposition (format 0.0.4) of a [`Snapshot`].
//!
//! Written directly into one `String`: a 1,000-interface node yields ~40,000
//! samples per scrape, and building the `prometheus` crate's protobuf model
//! for each (a struct and owned strings per label) costs more than the
//! netlink dump itself.

use std::fmt::Write;

#[cfg(test)]
mod golden;
mod pods;

use crate::snapshot::{Interface, Snapshot};
use crate::sources::ebpf::layout::Probe;
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

/// IFLA_STATS64 counters `ip -s link` hides without `-s -s`, served with
/// `--detailed-metrics` only: on the veths that make up most of a node they
/// are zero, and each is one more series per interface to store and bill.
/// (`rx_missed_errors` is not here: the seed's `_stats_rx_missed` serves it.)
const DETAIL_COUNTERS: [CounterFamily; 12] = [
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
    /// /metrics responses so far, by encoding (this one included).
    pub plain_responses: u64,
    pub gzip_responses: u64,
    /// Responses cut because the client read nothing for the stall timeout.
    pub stalled_responses_cut: u64,
    /// Responses cut because their body was let go for newer ones.
    pub evicted_responses_cut: u64,
    /// Rendered bodies held for unfinished responses.
    pub retained_bodies: u64,
}

/// Which families are served: the lean default, or every counter the kernel
/// has (node_exporter's `--collector.netdev.enable-detailed-metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Profile {
    /// The seed's 13 families, link state, info, eBPF and drops by reason.
    #[default]
    Default,
    /// Also the rest of IFLA_STATS64 and carrier changes.
    Detailed,
}

/// Renders what `/metrics` serves in the default profile.
pub fn render(snapshot: &Snapshot, http: &HttpStats) -> String {
    render_profile(snapshot, http, Profile::Default)
}

/// Renders everything `/metrics` serves in `profile`.
pub fn render_profile(snapshot: &Snapshot, http: &HttpStats, profile: Profile) -> String {
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
    let detail: &[CounterFamily] = match profile {
        Profile::Default => &[],
        Profile::Detailed => &DETAIL_COUNTERS,
    };
    for &(name, help, value) in detail {
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
    state_families(&mut out, snapshot, &identities, profile);
    pods::info_family(&mut out, snapshot, &identities);
    ebpf_families(&mut out, snapshot, &identities);
    self_families(&mut out, snapshot);
    pods::self_families(&mut out, snapshot);
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
    header(
        &mut out,
        "collector_http_responses_total",
        "/metrics responses by content encoding (gzip when the scraper accepts it, as Prometheus does).",
        "counter",
    );
    let _ = writeln!(
        out,
        "collector_http_responses_total{{encoding=\"identity\"}} {}\ncollector_http_responses_total{{encoding=\"gzip\"}} {}",
        http.plain_responses, http.gzip_responses
    );
    header(
        &mut out,
        "collector_http_responses_cut_total",
        "Responses cut before their end: `stalled` (the client read nothing for 10s), `evicted` (it read slower than newer scrapes arrived).",
        "counter",
    );
    let _ = writeln!(
        out,
        "collector_http_responses_cut_total{{why=\"stalled\"}} {}\ncollector_http_responses_cut_total{{why=\"evicted\"}} {}",
        http.stalled_responses_cut, http.evicted_responses_cut
    );
    header(
        &mut out,
        "collector_http_retained_bodies",
        "Rendered /metrics bodies held for responses still being read (bounded).",
        "gauge",
    );
    let _ = writeln!(
        out,
        "collector_http_retained_bodies {}",
        http.retained_bodies
    );
    out
}

/// (metric name, help, type, value of an interface when it has one, the
/// profile that serves it) of the per-interface state families.
type StateFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Interface) -> Option<u64>,
    Profile,
);

const STATE_FAMILIES: [StateFamily; 5] = [
    (
        "network_interface_up",
        "1 when the interface is administratively up (IFF_UP).",
        "gauge",
        |i| Some(u64::from(i.link.admin_up)),
        Profile::Default,
    ),
    (
        "network_interface_carrier",
        "1 when the interface has carrier (IFLA_CARRIER).",
        "gauge",
        |i| i.link.carrier.map(u64::from),
        Profile::Default,
    ),
    (
        "network_interface_oper_state",
        "RFC 2863 operational state as IF-MIB ifOperStatus: 1 up, 2 down, 3 testing, 4 unknown, 5 dormant, 6 notpresent, 7 lowerlayerdown.",
        "gauge",
        |i| Some(if_oper_status(&i.link.oper_state)),
        Profile::Default,
    ),
    (
        "network_interface_carrier_changes_total",
        "Carrier up/down transitions since the device was created.",
        "counter",
        |i| i.link.carrier_changes.map(u64::from),
        Profile::Detailed,
    ),
    (
        "network_interface_speed_bytes",
        "Negotiated link speed in bytes per second, where the driver reports one.",
        "gauge",
        |i| i.speed_bytes,
        Profile::Default,
    ),
];

fn state_families(out: &mut String, snapshot: &Snapshot, identities: &[String], profile: Profile) {
    let rows = || {
        snapshot
            .interfaces
            .iter()
            .zip(identities.iter().map(String::as_str))
    };
    for (name, help, kind, value, served_in) in STATE_FAMILIES {
        if served_in == Profile::Detailed && profile != Profile::Detailed {
            continue;
        }
        header(out, name, help, kind);
        for (interface, identity) in rows() {
            if let Some(value) = value(interface) {
                sample(out, name, identity, &[], value);
            }
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
        // A virtual device's MAC (a veth's is random) tells an operator
        // nothing, yet it is the one label here that gzip cannot shrink: a
        // fifth of a 1,000-veth scrape on the wire. The default profile keeps
        // it for devices without an rtnl kind, the physical NICs and VFs.
        let address = match (profile, &link.kind) {
            (Profile::Default, Some(_)) => "",
            _ => link.mac_address.as_deref().unwrap_or(""),
        };
        let attributes = [
            ("ifindex", ifindex.as_str()),
            ("kind", link.kind.as_deref().unwrap_or("")),
            ("master", interface.master.as_deref().unwrap_or("")),
            ("address", address),
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
        "collector_netlink_dump_timeouts_total",
        "Netlink link dumps that did not complete within --netlink-timeout (also counted as netlink errors).",
        "counter",
    );
    let _ = writeln!(
        out,
        "collector_netlink_dump_timeouts_total {}",
        snapshot.sources.netlink_timeouts_total
    );
    header(
        out,
        "collector_netlink_attributes_skipped_total",
        "Link attributes that did not decode and were skipped; their interface is still served.",
        "counter",
    );
    let _ = writeln!(
        out,
        "collector_netlink_attributes_skipped_total {}",
        snapshot.sources.netlink_skipped_attributes_total
    );
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
            "Each selected BPF program, the tracepoint it attaches to and its flavour (btf: tp_btf, classic: tracepoint); value is always 1.",
            "gauge",
        );
        for a in &status.attachments {
            let _ = writeln!(
                out,
                "collector_ebpf_probe_info{{program=\"{}\",tracepoint=\"{}\",flavour=\"{}\"}} 1",
                escape(&a.program),
                escape(&a.tracepoint),
                a.flavour.as_str(),
            );
        }
        header(
            out,
            "collector_ebpf_probe_attached",
            "1 when the program is attached, 0 when it could not be (its warning is logged).",
            "gauge",
        );
        for a in &status.attachments {
            let _ = writeln!(
                out,
                "collector_ebpf_probe_attached{{program=\"{}\"}} {}",
                escape(&a.program),
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
        header(
            out,
            "collector_ebpf_map_memory_bytes",
            "Kernel memory each BPF map holds (fdinfo memlock), charged to the pod's memory cgroup; per-CPU maps scale with the possible CPUs.",
            "gauge",
        );
        let memory = &status.map_memory;
        for (map, bytes) in [
            ("traffic", memory.traffic),
            ("drops", memory.drops),
            ("counters", memory.counters),
        ] {
            let _ = writeln!(
                out,
                "collector_ebpf_map_memory_bytes{{map=\"{map}\"}} {bytes}"
            );
        }
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

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use openmetrics_parser::prometheus::parse_prometheus;
    use openmetrics_parser::{MetricNumber, PrometheusType, PrometheusValue};

    use super::*;
    use crate::snapshot::{EbpfInterface, EbpfStatus, SourceStatus};
    use crate::sources::ebpf::{Attachment, ProbeCounters};
    use crate::sources::netlink::Link;
    use crate::sources::pods::{PodIdentity, PodStatus};

    /// An interface name with every character the text format escapes
    /// (Linux allows quotes and backslashes in names), and a label value
    /// with those plus other control characters and non-ASCII text.
    const ODD_INTERFACE: &str = "we\"ird\\if";
    const ODD_LABEL: &str = "line1\nline2 \"q\" back\\slash tab\tsoh\u{1}del\u{7f} é";

    fn interface(ifindex: u32, name: &str, kind: Option<&str>, seed: u64) -> Interface {
        let mut link = Link {
            ifindex,
            name: name.into(),
            admin_up: ifindex.is_multiple_of(2),
            lower_up: true,
            carrier: Some(true),
            oper_state: "up".into(),
            mtu: 1500 + ifindex,
            kind: kind.map(String::from),
            master_ifindex: None,
            mac_address: Some(format!("02:00:00:00:00:{ifindex:02x}")),
            carrier_changes: Some(3 * ifindex),
            ..Link::default()
        };
        // Distinct values per counter and interface, so a value rendered
        // under the wrong name or interface is caught; one beyond 2^53
        // checks that large counters survive as integers.
        let c = &mut link.counters;
        c.rx_bytes = (1 << 60) + seed;
        c.rx_packets = seed + 1;
        c.rx_errors = seed + 2;
        c.rx_dropped = seed + 3;
        c.rx_missed_errors = seed + 4;
        c.multicast = seed + 5;
        c.tx_bytes = seed + 6;
        c.tx_packets = seed + 7;
        c.tx_errors = seed + 8;
        c.tx_dropped = seed + 9;
        c.tx_carrier_errors = seed + 10;
        c.collisions = seed + 11;
        c.rx_crc_errors = seed + 12;
        c.tx_window_errors = seed + 13;
        let drops = BTreeMap::from([
            ("NO_SOCKET".to_string(), seed + 20),
            ("NETFILTER_DROP".to_string(), seed + 21),
        ]);
        Interface {
            link,
            master: kind.map(|_| "br0".to_string()),
            speed_bytes: kind.is_none().then_some(125_000_000),
            ebpf: Some(EbpfInterface {
                rx_packets: seed + 30,
                rx_bytes: seed + 31,
                tx_packets: seed + 32,
                tx_bytes: seed + 33,
                drops,
            }),
            // The veth is a pod's; the NIC is the node's own.
            pod: kind.map(|_| PodIdentity {
                namespace: "team-a".into(),
                pod: "web-7d9f\"x".into(),
                pod_uid: "0f7c2a5e-7e0b-4b3a-9d1e-2f6c8a4b1d33".into(),
                container_id: "5c1f0a".into(),
                pod_interface: Some("eth0".into()),
                network: Some("azure".into()),
            }),
        }
    }

    /// A snapshot exercising every family: eBPF on with all probes
    /// attached, a physical NIC and a veth with an awkward name.
    fn snapshot() -> Snapshot {
        let attachments = [Probe::Rx, Probe::Tx, Probe::Drop]
            .into_iter()
            .map(|probe| {
                let (category, event) = probe.tracepoint();
                Attachment {
                    program: probe.program().into(),
                    tracepoint: format!("{category}:{event}"),
                    attached: true,
                    error: None,
                    flavour: crate::sources::ebpf::Flavour::Btf,
                }
            })
            .collect();
        Snapshot {
            node: "node-1".into(),
            labels: vec![
                ("cluster".into(), "aks \"prod\"".into()),
                ("environment".into(), ODD_LABEL.into()),
            ],
            interfaces: vec![
                interface(2, "eth0", None, 1000),
                interface(7, ODD_INTERFACE, Some("veth"), 2000),
            ],
            sources: SourceStatus {
                netlink_error: None,
                ebpf: EbpfStatus {
                    enabled: true,
                    attachments,
                    probe_counters: ProbeCounters {
                        traffic_map_full: 4,
                        drop_map_full: 5,
                        kernel_read_errors: 6,
                        drops_without_device: 7,
                    },
                    traffic_map_entries: 2,
                    drop_map_entries: 4,
                    ..EbpfStatus::default()
                },
                errors_total: BTreeMap::from([("netlink", 1), ("ebpf", 0)]),
                netlink_timeouts_total: 1,
                netlink_skipped_attributes_total: 2,
                collections_total: 9,
                pod_identity: PodStatus {
                    enabled: true,
                    up: true,
                    errors_total: BTreeMap::from([("malformed", 3), ("netns", 0)]),
                    ..PodStatus::default()
                },
            },
            collection_seconds: 0.25,
        }
    }

    #[test]
    fn label_values_escape_backslash_quote_and_newline() {
        assert_eq!(escape(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape("two\nlines"), r"two\nlines");
        assert_eq!(escape(r#"\""#), r#"\\\""#, "each character escaped once");
        assert!(
            matches!(escape("eth0"), std::borrow::Cow::Borrowed("eth0")),
            "plain values are not copied"
        );
        // Through render: the interface label, the node and --label values.
        let text = render(&snapshot(), &HttpStats::default());
        assert!(text.contains(r#"interface="we\"ird\\if""#), "{text}");
        assert!(text.contains(r#"cluster="aks \"prod\"""#));
        assert!(text.contains(r#"environment="line1\nline2 \"q\" back\\slash"#));
    }

    #[test]
    fn other_control_characters_are_written_as_they_are() {
        // Format 0.0.4 has exactly three escapes; any other is an error to
        // Prometheus ("invalid escape sequence '\t'" from promtool), while
        // raw control characters other than the newline are valid label
        // value text. So they must pass unchanged, and cannot break a line.
        let controls: String = (0u8..0x20)
            .chain([0x7f])
            .map(char::from)
            .filter(|c| *c != '\n')
            .collect();
        assert_eq!(escape(&controls), controls.as_str());
        assert_eq!(escape("\r\n"), "\r\\n");
        let text = render(&snapshot(), &HttpStats::default());
        for line in text.lines() {
            assert!(
                line.starts_with('#') || line.rsplit_once(' ').is_some(),
                "a label value split a sample across lines: {line:?}"
            );
        }
        assert!(text.contains("tab\tsoh\u{1}del\u{7f} é\""));
    }

    #[test]
    fn every_family_has_help_then_type_once_before_its_samples() {
        let text = render(
            &snapshot(),
            &HttpStats {
                connections_rejected: 3,
                plain_responses: 4,
                gzip_responses: 5,
                stalled_responses_cut: 2,
                evicted_responses_cut: 1,
                retained_bodies: 1,
            },
        );
        assert!(text.ends_with('\n'), "the last line is terminated");
        let lines: Vec<&str> = text.lines().collect();
        let mut declared = BTreeSet::new();
        let mut current: Option<&str> = None;
        let mut samples: BTreeMap<&str, usize> = BTreeMap::new();
        let mut i = 0;
        while i < lines.len() {
            let line = lines[i];
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("HELP has a text");
                assert!(!help.trim().is_empty(), "{name} has an empty HELP");
                assert!(declared.insert(name), "{name} declared twice");
                let kind = lines
                    .get(i + 1)
                    .and_then(|l| l.strip_prefix(&format!("# TYPE {name} ")))
                    .unwrap_or_else(|| panic!("HELP of {name} not followed by its TYPE"));
                assert!(["counter", "gauge"].contains(&kind), "{name}: {kind}");
                if kind == "counter" && !name.starts_with("network_interface_stats_") {
                    assert!(name.ends_with("_total"), "counter {name} without _total");
                }
                current = Some(name);
                i += 2;
                continue;
            }
            assert!(!line.starts_with('#'), "stray comment line: {line}");
            assert!(!line.is_empty(), "empty line {i}");
            let name = line
                .split(['{', ' '])
                .next()
                .expect("a sample line starts with its name");
            assert!(
                declared.contains(name),
                "sample of {name} before or without its HELP/TYPE: {line}"
            );
            assert_eq!(
                Some(name),
                current,
                "sample of {name} outside its family's block: {line}"
            );
            *samples.entry(name).or_default() += 1;
            i += 1;
        }
        // Both interfaces are in every per-interface family (only the NIC
        // has a speed), so an output that lost samples cannot pass.
        for name in &declared {
            let count = samples.get(name).copied().unwrap_or(0);
            let least = match *name {
                "network_interface_speed_bytes" | "network_interface_pod_info" => 1,
                n if n.starts_with("network_interface_") => 2,
                _ => 1,
            };
            assert!(count >= least, "{name}: {count} samples");
        }
        for name in [
            "network_interface_stats_rx_bytes",
            "collector_http_connections_rejected_total",
        ] {
            assert!(declared.contains(name), "{name} missing");
        }
    }

    /// `name{labels}` -> value for every sample the parser returned.
    type Parsed = BTreeMap<(String, BTreeMap<String, String>), f64>;

    fn parse(text: &str) -> (Parsed, BTreeMap<String, PrometheusType>) {
        let exposition = parse_prometheus(text)
            .unwrap_or_else(|e| panic!("not valid text format: {e:?}\n{text}"));
        let mut samples = Parsed::new();
        let mut types = BTreeMap::new();
        for (name, family) in &exposition.families {
            types.insert(name.clone(), family.family_type.clone());
            for sample in family.iter_samples() {
                let labels = sample
                    .get_labelset()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let value = match &sample.value {
                    PrometheusValue::Counter(c) => c.value,
                    PrometheusValue::Gauge(v) | PrometheusValue::Unknown(v) => *v,
                    other => panic!("{name}: unexpected {other:?}"),
                };
                let value = match value {
                    MetricNumber::Int(i) => i as f64,
                    MetricNumber::Float(f) => f,
                };
                let previous = samples.insert((name.clone(), labels), value);
                assert!(previous.is_none(), "{name}: a series twice");
            }
        }
        (samples, types)
    }

    fn identity(snapshot: &Snapshot, interface: &str) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::from([
            ("interface".to_string(), interface.to_string()),
            ("host".to_string(), snapshot.node.clone()),
            ("hostname".to_string(), snapshot.node.clone()),
        ]);
        labels.extend(snapshot.labels.iter().cloned());
        labels
    }

    #[test]
    fn render_parses_back_with_a_prometheus_parser_and_values_and_labels_round_trip() {
        let snapshot = snapshot();
        let text = render_profile(
            &snapshot,
            &HttpStats {
                connections_rejected: 3,
                plain_responses: 4,
                gzip_responses: 5,
                stalled_responses_cut: 2,
                evicted_responses_cut: 1,
                retained_bodies: 1,
            },
            Profile::Detailed,
        );
        let (samples, types) = parse(&text);
        let sample_lines = text.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(samples.len(), sample_lines, "the parser kept every sample");

        let value = |name: &str, labels: &BTreeMap<String, String>| {
            samples
                .get(&(name.to_string(), labels.clone()))
                .copied()
                .unwrap_or_else(|| panic!("no {name}{labels:?} in\n{text}"))
        };
        for interface in &snapshot.interfaces {
            let link = &interface.link;
            let base = identity(&snapshot, &link.name);
            let mut with_state = base.clone();
            let state = if link.admin_up { "up" } else { "down" };
            with_state.insert("state".into(), state.into());
            for (name, _, counter) in SEED_COUNTERS {
                // Exact below 2^53; rx_bytes (2^60 + n) as the nearest f64.
                assert_eq!(
                    value(name, &with_state),
                    counter(&link.counters) as f64,
                    "{name}"
                );
                assert_eq!(types[name], PrometheusType::Counter);
            }
            assert_eq!(
                value("network_interface_stats_mtu", &with_state),
                f64::from(link.mtu)
            );
            for (name, _, counter) in DETAIL_COUNTERS {
                assert_eq!(value(name, &base), counter(&link.counters) as f64, "{name}");
            }
            assert_eq!(
                value("network_interface_up", &base),
                f64::from(u8::from(link.admin_up))
            );
            assert_eq!(value("network_interface_oper_state", &base), 1.0);
            assert_eq!(
                value("network_interface_carrier_changes_total", &base),
                f64::from(link.carrier_changes.unwrap())
            );
            let mut info = base.clone();
            info.extend([
                ("ifindex".to_string(), link.ifindex.to_string()),
                ("kind".to_string(), link.kind.clone().unwrap_or_default()),
                (
                    "master".to_string(),
                    interface.master.clone().unwrap_or_default(),
                ),
                ("address".to_string(), link.mac_address.clone().unwrap()),
                ("operstate".to_string(), link.oper_state.clone()),
            ]);
            assert_eq!(value("network_interface_info", &info), 1.0);
            let ebpf = interface.ebpf.as_ref().unwrap();
            assert_eq!(
                value("network_interface_ebpf_rx_packets_total", &base),
                ebpf.rx_packets as f64
            );
            assert_eq!(
                value("network_interface_ebpf_tx_bytes_total", &base),
                ebpf.tx_bytes as f64
            );
            for (reason, packets) in &ebpf.drops {
                let mut labels = base.clone();
                labels.insert("reason".into(), reason.clone());
                assert_eq!(
                    value("network_interface_drops_total", &labels),
                    *packets as f64
                );
            }
        }
        // Only the NIC reports a speed.
        let speeds: Vec<_> = samples
            .keys()
            .filter(|(name, _)| name == "network_interface_speed_bytes")
            .map(|(_, labels)| labels["interface"].as_str())
            .collect();
        assert_eq!(speeds, ["eth0"]);
        // Only the veth is a pod's, under its pod's labels.
        let mut pod_info = identity(&snapshot, ODD_INTERFACE);
        pod_info.extend([
            ("namespace".to_string(), "team-a".to_string()),
            ("pod".to_string(), "web-7d9f\"x".to_string()),
            (
                "pod_uid".to_string(),
                "0f7c2a5e-7e0b-4b3a-9d1e-2f6c8a4b1d33".to_string(),
            ),
        ]);
        assert_eq!(value("network_interface_pod_info", &pod_info), 1.0);
        let pods = samples
            .keys()
            .filter(|(name, _)| name == "network_interface_pod_info")
            .count();
        assert_eq!(pods, 1, "the NIC has no pod");
        assert_eq!(value("collector_pod_identity_up", &BTreeMap::new()), 1.0);
        let reason = |r: &str| BTreeMap::from([("reason".to_string(), r.to_string())]);
        assert_eq!(
            value("collector_pod_identity_errors_total", &reason("malformed")),
            3.0
        );

        let none = BTreeMap::new();
        assert_eq!(
            value("collector_http_connections_rejected_total", &none),
            3.0
        );
        assert_eq!(value("collector_collections_total", &none), 9.0);
        assert_eq!(value("collector_scrape_duration_seconds", &none), 0.25);
        assert_eq!(
            types["collector_scrape_duration_seconds"],
            PrometheusType::Gauge
        );
        let source = |s: &str| BTreeMap::from([("source".to_string(), s.to_string())]);
        assert_eq!(
            value("collector_scrape_errors_total", &source("netlink")),
            1.0
        );
        let map = |m: &str| BTreeMap::from([("map".to_string(), m.to_string())]);
        assert_eq!(value("collector_ebpf_map_full_total", &map("drops")), 5.0);
        assert_eq!(value("collector_ebpf_map_entries", &map("traffic")), 2.0);
        let why = |w: &str| BTreeMap::from([("why".to_string(), w.to_string())]);
        assert_eq!(
            value("collector_http_responses_cut_total", &why("stalled")),
            2.0
        );
        assert_eq!(
            value("collector_http_responses_cut_total", &why("evicted")),
            1.0
        );
        assert_eq!(value("collector_netlink_dump_timeouts_total", &none), 1.0);
        assert_eq!(
            value("collector_netlink_attributes_skipped_total", &none),
            2.0
        );
    }

    #[test]
    fn the_default_profile_leaves_out_the_detail_counters_and_serves_no_family_twice() {
        let text = render(&snapshot(), &HttpStats::default());
        let (samples, types) = parse(&text);
        for (name, _, _) in DETAIL_COUNTERS {
            assert!(!types.contains_key(name), "{name} in the default profile");
        }
        assert!(!types.contains_key("network_interface_carrier_changes_total"));
        // Counted per interface, every family is one series (drops aside).
        let eth0: Vec<&String> = samples
            .keys()
            .filter(|(_, labels)| labels.get("interface").map(String::as_str) == Some("eth0"))
            .map(|(name, _)| name)
            .filter(|name| *name != "network_interface_drops_total")
            .collect();
        let unique: BTreeSet<&String> = eth0.iter().copied().collect();
        assert_eq!(unique.len(), eth0.len(), "{eth0:?}");
        let address_of = |interface: &str| {
            samples
                .keys()
                .find(|(name, labels)| {
                    name == "network_interface_info" && labels["interface"] == interface
                })
                .map(|(_, labels)| labels["address"].clone())
                .unwrap()
        };
        assert!(!address_of("eth0").is_empty(), "a NIC keeps its MAC");
        assert_eq!(
            address_of(ODD_INTERFACE),
            "",
            "a veth's random MAC is left out"
        );
        let detailed = render_profile(&snapshot(), &HttpStats::default(), Profile::Detailed);
        let (_, detailed_types) = parse(&detailed);
        assert_eq!(
            detailed_types.len(),
            types.len() + DETAIL_COUNTERS.len() + 1
        );
    }

    #[test]
    fn every_escaped_character_round_trips_through_the_parser() {
        let snapshot = snapshot();
        let (samples, _) = parse(&render(&snapshot, &HttpStats::default()));
        let labels_of_odd: Vec<&BTreeMap<String, String>> = samples
            .keys()
            .filter(|(name, labels)| {
                name == "network_interface_up" && labels["interface"] == ODD_INTERFACE
            })
            .map(|(_, labels)| labels)
            .collect();
        assert_eq!(
            labels_of_odd.len(),
            1,
            "the odd interface's series, unescaped"
        );
        assert_eq!(labels_of_odd[0]["environment"], ODD_LABEL);
        assert_eq!(labels_of_odd[0]["cluster"], "aks \"prod\"");
    }
}
