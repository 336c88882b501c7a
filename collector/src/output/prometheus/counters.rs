//! The IFLA_STATS64 counter families: rows of (name, help, counter),
//! served as counters with the identity labels (and, for the seed's,
//! `state`).

use crate::model::LinkCounters;

/// (metric name, help, which counter).
pub type CounterFamily = (&'static str, &'static str, fn(&LinkCounters) -> u64);

/// The twelve counters the Telegraf seed exposed, with its names (no
/// `_total`, kept on purpose for existing dashboards) and `state` label.
pub const SEED_COUNTERS: [CounterFamily; 12] = [
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
pub const DETAIL_COUNTERS: [CounterFamily; 12] = [
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
