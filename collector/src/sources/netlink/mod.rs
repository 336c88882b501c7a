//! Link state and IFLA_STATS64 counters from rtnetlink, the numbers
//! `ip -s link` prints, read without a subprocess.
//!
//! - [`socket`]: requests and the receive loop, with a deadline per dump so a
//!   wedged reply fails one collection instead of hanging every later one.
//! - [`decode`]: lenient decoding: each attribute on its own, so one odd
//!   interface (a name that is not UTF-8) never blanks the others.
//! - [`cache`]: what a scrape costs. Counters come from `RTM_GETSTATS` with
//!   only `IFLA_STATS_LINK_64`, a fraction of the full `RTM_GETLINK` dump's
//!   cost (docs/bench has the figures); the link attributes come from a
//!   cache refreshed by a full dump only when an `RTNLGRP_LINK` notification
//!   says something changed.

pub mod cache;
pub mod decode;
pub mod socket;

use std::time::Duration;

use netlink_packet_route::link::Stats64;

pub use cache::LinkCache;
pub use decode::{link_from_message, name_from_bytes, parse_dump};

/// How long one whole dump may take by default: many times what the
/// largest node's dump needs, so a reply that has not come by then never
/// will.
pub const DEFAULT_DUMP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("opening rtnetlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("sending {request} dump request: {source}")]
    Send {
        request: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("receiving {request} dump: {source}")]
    Receive {
        request: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{request} dump did not complete within {timeout:?}")]
    Timeout {
        request: &'static str,
        timeout: Duration,
    },
    #[error("decoding {request} reply: {message}")]
    Decode {
        request: &'static str,
        message: String,
    },
    #[error("kernel refused {request} dump: errno {errno}")]
    Kernel { request: &'static str, errno: i32 },
}

impl NetlinkError {
    pub fn is_timeout(&self) -> bool {
        matches!(self, NetlinkError::Timeout { .. })
    }
}

pub use crate::model::LinkCounters;

// Decoding the kernel's struct is the netlink source's business, so the
// model's type gets its constructor here.
impl From<&Stats64> for LinkCounters {
    fn from(s: &Stats64) -> Self {
        LinkCounters {
            rx_packets: s.rx_packets,
            tx_packets: s.tx_packets,
            rx_bytes: s.rx_bytes,
            tx_bytes: s.tx_bytes,
            rx_errors: s.rx_errors,
            tx_errors: s.tx_errors,
            rx_dropped: s.rx_dropped,
            tx_dropped: s.tx_dropped,
            multicast: s.multicast,
            collisions: s.collisions,
            rx_length_errors: s.rx_length_errors,
            rx_over_errors: s.rx_over_errors,
            rx_crc_errors: s.rx_crc_errors,
            rx_frame_errors: s.rx_frame_errors,
            rx_fifo_errors: s.rx_fifo_errors,
            rx_missed_errors: s.rx_missed_errors,
            tx_aborted_errors: s.tx_aborted_errors,
            tx_carrier_errors: s.tx_carrier_errors,
            tx_fifo_errors: s.tx_fifo_errors,
            tx_heartbeat_errors: s.tx_heartbeat_errors,
            tx_window_errors: s.tx_window_errors,
            rx_compressed: s.rx_compressed,
            tx_compressed: s.tx_compressed,
            rx_nohandler: s.rx_nohandler,
        }
    }
}

/// One interface as the kernel describes it in RTM_NEWLINK: the model's
/// interface with only its link attributes and counters filled in.
pub use crate::model::Interface as Link;

/// Result of one collection: the links and whether the kernel flagged the
/// dump as interrupted on every attempt (then the list may miss a link that
/// changed).
#[derive(Debug, Default)]
pub struct LinkDump {
    pub links: Vec<Link>,
    pub interrupted: bool,
    /// Attributes that failed to decode and were skipped (the link is kept).
    pub skipped_attributes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_stats64_of_any_kernel_length_map_by_position() {
        // Older kernels send fewer fields (rx_nohandler came in 4.6), newer
        // ones more (rx_otherhost_dropped in 5.19): missing ones read 0,
        // extra ones are ignored.
        let raw: Vec<u8> = (1..=26u64).flat_map(|v| v.to_ne_bytes()).collect();
        let counters = |bytes: &[u8]| LinkCounters::from(&Stats64::parse(bytes).unwrap());
        let all = counters(&raw);
        assert_eq!((all.rx_packets, all.rx_missed_errors), (1, 16));
        assert_eq!((all.tx_carrier_errors, all.rx_nohandler), (18, 24));
        // A 4.5 kernel: 23 fields, no rx_nohandler.
        let old = counters(&raw[..23 * 8]);
        assert_eq!((old.tx_compressed, old.rx_nohandler), (23, 0));
        // The field order is the crate's too.
        let mut stats = Stats64::default();
        stats.rx_missed_errors = 16;
        stats.rx_packets = 1;
        let by_name = LinkCounters::from(&stats);
        assert_eq!(by_name.rx_missed_errors, all.rx_missed_errors);
    }
}
