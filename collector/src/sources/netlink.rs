//! Link state and IFLA_STATS64 counters from one rtnetlink RTM_GETLINK dump.
//!
//! The dump is the same data `ip -s link` prints, read without a subprocess.
//! Parsing is left to `netlink-packet-route`; this module only drives the
//! socket and copies the attributes the collector exposes.

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_packet_route::link::{
    InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, State, Stats64,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use serde::Serialize;

/// Kernel dump messages are at most 32 KiB; a larger buffer never truncates.
const RECV_BUFFER_BYTES: usize = 64 * 1024;
/// An interrupted dump (links changed while the kernel walked them) is
/// retried this many times before its partial result is used.
const DUMP_ATTEMPTS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("opening rtnetlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("sending RTM_GETLINK dump request: {0}")]
    Send(#[source] std::io::Error),
    #[error("receiving RTM_GETLINK dump: {0}")]
    Receive(#[source] std::io::Error),
    #[error("decoding RTM_GETLINK reply: {0}")]
    Decode(String),
    #[error("kernel refused RTM_GETLINK dump: errno {0}")]
    Kernel(i32),
}

/// Every IFLA_STATS64 counter, named as in `struct rtnl_link_stats64`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LinkCounters {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
    pub multicast: u64,
    pub collisions: u64,
    pub rx_length_errors: u64,
    pub rx_over_errors: u64,
    pub rx_crc_errors: u64,
    pub rx_frame_errors: u64,
    pub rx_fifo_errors: u64,
    pub rx_missed_errors: u64,
    pub tx_aborted_errors: u64,
    pub tx_carrier_errors: u64,
    pub tx_fifo_errors: u64,
    pub tx_heartbeat_errors: u64,
    pub tx_window_errors: u64,
    pub rx_compressed: u64,
    pub tx_compressed: u64,
    pub rx_nohandler: u64,
}

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

/// One interface as the kernel describes it in RTM_NEWLINK.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Link {
    pub ifindex: u32,
    pub name: String,
    /// IFF_UP: the administrative state `ip link set up/down` changes.
    pub admin_up: bool,
    /// IFF_LOWER_UP: the driver reports a usable physical layer.
    pub lower_up: bool,
    pub carrier: Option<bool>,
    /// RFC 2863 operational state, lower case as `ip` prints it.
    pub oper_state: String,
    pub mtu: u32,
    /// `rtnl_link_ops` kind (veth, bridge, vxlan...); `None` for physical NICs.
    pub kind: Option<String>,
    /// ifindex of the master (bridge, bond, vrf) device.
    pub master_ifindex: Option<u32>,
    pub mac_address: Option<String>,
    pub carrier_changes: Option<u32>,
    pub counters: LinkCounters,
}

/// Result of one dump: the links and whether the kernel flagged it as
/// interrupted on every attempt (then the list may miss a link that changed).
#[derive(Debug, Default)]
pub struct LinkDump {
    pub links: Vec<Link>,
    pub interrupted: bool,
}

/// Dumps all links of the caller's network namespace.
pub fn dump_links() -> Result<LinkDump, NetlinkError> {
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Socket)?;
    socket.bind_auto().map_err(NetlinkError::Socket)?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(NetlinkError::Socket)?;
    let mut buffer = vec![0u8; RECV_BUFFER_BYTES];
    let mut last = LinkDump::default();
    for attempt in 1..=DUMP_ATTEMPTS {
        last = dump_once(&socket, &mut buffer, attempt as u32)?;
        if !last.interrupted {
            break;
        }
        tracing::debug!(
            attempt,
            "RTM_GETLINK dump interrupted by a link change, retrying"
        );
    }
    Ok(last)
}

fn dump_once(socket: &Socket, buffer: &mut [u8], sequence: u32) -> Result<LinkDump, NetlinkError> {
    let mut request = NetlinkMessage::new(
        NetlinkHeader::default(),
        NetlinkPayload::from(RouteNetlinkMessage::GetLink(LinkMessage::default())),
    );
    request.header.flags = NLM_F_DUMP | NLM_F_REQUEST;
    request.header.sequence_number = sequence;
    request.finalize();
    let mut bytes = vec![0u8; request.buffer_len()];
    request.serialize(&mut bytes);
    socket.send(&bytes, 0).map_err(NetlinkError::Send)?;

    let mut dump = LinkDump::default();
    loop {
        let received = socket
            .recv(&mut &mut buffer[..], 0)
            .map_err(NetlinkError::Receive)?;
        if received > buffer.len() {
            return Err(NetlinkError::Decode(format!(
                "datagram of {received} bytes exceeds the {} byte buffer",
                buffer.len()
            )));
        }
        match parse_datagram(&buffer[..received], sequence, &mut dump)? {
            DumpProgress::More => continue,
            DumpProgress::Done => return Ok(dump),
        }
    }
}

enum DumpProgress {
    More,
    Done,
}

/// Parses every message of one datagram into `dump`.
fn parse_datagram(
    mut bytes: &[u8],
    sequence: u32,
    dump: &mut LinkDump,
) -> Result<DumpProgress, NetlinkError> {
    while !bytes.is_empty() {
        let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes)
            .map_err(|e| NetlinkError::Decode(e.to_string()))?;
        let length = message.header.length as usize;
        if length == 0 || length > bytes.len() {
            return Err(NetlinkError::Decode(format!(
                "message length {length} is out of bounds"
            )));
        }
        bytes = &bytes[align_to_nlmsg(length).min(bytes.len())..];
        if message.header.sequence_number != sequence {
            continue;
        }
        if message.header.flags & NLM_F_DUMP_INTR != 0 {
            dump.interrupted = true;
        }
        match message.payload {
            NetlinkPayload::Done(_) => return Ok(DumpProgress::Done),
            NetlinkPayload::Error(error) => {
                let code = error.code.map(|c| c.get()).unwrap_or(0);
                // Saturating: a forged i32::MIN must not overflow (found by fuzzing).
                return Err(NetlinkError::Kernel(code.saturating_neg()));
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                dump.links.push(link_from_message(&link));
            }
            _ => {}
        }
    }
    Ok(DumpProgress::More)
}

/// Parses the messages of a whole dump reply (datagrams concatenated, the
/// sequence number taken from the first message) without a socket; the
/// entry point of the micro-benchmarks in `collector/benches`.
pub fn parse_dump(bytes: &[u8]) -> Result<Vec<Link>, NetlinkError> {
    let Some(sequence) = bytes.get(8..12) else {
        return Ok(Vec::new());
    };
    let sequence = u32::from_ne_bytes(sequence.try_into().expect("four bytes"));
    let mut dump = LinkDump::default();
    parse_datagram(bytes, sequence, &mut dump)?;
    Ok(dump.links)
}

fn align_to_nlmsg(length: usize) -> usize {
    (length + 3) & !3
}

/// Copies the attributes the collector uses out of one RTM_NEWLINK message.
pub fn link_from_message(message: &LinkMessage) -> Link {
    let flags = message.header.flags;
    let mut link = Link {
        ifindex: message.header.index,
        admin_up: flags.contains(LinkFlags::Up),
        lower_up: flags.contains(LinkFlags::LowerUp),
        oper_state: "unknown".to_string(),
        ..Link::default()
    };
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => link.name = name.clone(),
            LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
            LinkAttribute::Stats64(stats) => link.counters = LinkCounters::from(stats),
            LinkAttribute::OperState(state) => link.oper_state = oper_state_name(state),
            LinkAttribute::Carrier(carrier) => link.carrier = Some(*carrier != 0),
            LinkAttribute::CarrierChanges(changes) => link.carrier_changes = Some(*changes),
            LinkAttribute::Controller(master) => link.master_ifindex = Some(*master),
            LinkAttribute::Address(address) => link.mac_address = Some(format_mac(address)),
            LinkAttribute::LinkInfo(infos) => link.kind = link_kind(infos),
            _ => {}
        }
    }
    link
}

fn link_kind(infos: &[LinkInfo]) -> Option<String> {
    infos.iter().find_map(|info| match info {
        LinkInfo::Kind(InfoKind::Other(kind)) => Some(kind.clone()),
        LinkInfo::Kind(kind) => Some(kind.to_string()),
        _ => None,
    })
}

fn oper_state_name(state: &State) -> String {
    match state {
        State::Unknown => "unknown",
        State::NotPresent => "notpresent",
        State::Down => "down",
        State::LowerLayerDown => "lowerlayerdown",
        State::Testing => "testing",
        State::Dormant => "dormant",
        State::Up => "up",
        _ => "unknown",
    }
    .to_string()
}

fn format_mac(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 3);
    for (i, byte) in bytes.iter().enumerate() {
        if i > 0 {
            text.push(':');
        }
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};

    fn encoded(link: LinkMessage, sequence: u32) -> Vec<u8> {
        let mut message = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::from(RouteNetlinkMessage::NewLink(link)),
        );
        message.header.sequence_number = sequence;
        message.finalize();
        let mut bytes = vec![0u8; message.buffer_len()];
        message.serialize(&mut bytes);
        bytes
    }

    fn sample_link(index: u32, name: &str) -> LinkMessage {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.header.flags = LinkFlags::Up | LinkFlags::LowerUp;
        let mut stats = Stats64::default();
        stats.rx_bytes = 1 << 40;
        stats.rx_missed_errors = 7;
        stats.tx_carrier_errors = 3;
        message.attributes = vec![
            LinkAttribute::IfName(name.to_string()),
            LinkAttribute::Mtu(9000),
            LinkAttribute::Stats64(stats),
            LinkAttribute::OperState(State::Up),
            LinkAttribute::Address(vec![0x02, 0, 0, 0, 0, 0xab]),
            LinkAttribute::Controller(4),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Veth)]),
        ];
        message
    }

    #[test]
    fn copies_attributes_of_a_link() {
        let link = link_from_message(&sample_link(3, "veth0"));
        assert_eq!(link.ifindex, 3);
        assert_eq!(link.name, "veth0");
        assert!(link.admin_up && link.lower_up);
        assert_eq!(link.mtu, 9000);
        assert_eq!(link.counters.rx_bytes, 1 << 40);
        assert_eq!(link.counters.rx_missed_errors, 7);
        assert_eq!(link.counters.tx_carrier_errors, 3);
        assert_eq!(link.oper_state, "up");
        assert_eq!(link.kind.as_deref(), Some("veth"));
        assert_eq!(link.master_ifindex, Some(4));
        assert_eq!(link.mac_address.as_deref(), Some("02:00:00:00:00:ab"));
    }

    #[test]
    fn parses_several_messages_in_one_datagram_and_skips_foreign_sequences() {
        let mut datagram = encoded(sample_link(1, "a"), 9);
        datagram.extend(encoded(sample_link(2, "b"), 8));
        datagram.extend(encoded(sample_link(3, "c"), 9));
        let mut dump = LinkDump::default();
        assert!(matches!(
            parse_datagram(&datagram, 9, &mut dump),
            Ok(DumpProgress::More)
        ));
        let names: Vec<_> = dump.links.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["a", "c"]);
    }

    #[test]
    fn fuzz_found_error_code_i32_min_is_an_error_not_an_overflow() {
        // NLMSG_ERROR (type 2) carrying errno i32::MIN, from `cargo xtask fuzz`.
        let datagram = [
            0x14, 0, 0, 0, 0x02, 0, 0x23, 0x14, 0x01, 0, 0, 0x7e, 0xfb, 0xff, 0xff, 0x0f, 0, 0, 0,
            0x80, 0, 0, 0x23, 0x09,
        ];
        let mut dump = LinkDump::default();
        match parse_datagram(&datagram, 0x7e00_0001, &mut dump) {
            Err(NetlinkError::Kernel(code)) => assert_eq!(code, i32::MAX),
            other => panic!("expected a kernel error, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn truncated_datagram_is_an_error_not_a_panic() {
        let datagram = encoded(sample_link(1, "a"), 1);
        for cut in [1, 8, 16, datagram.len() - 1] {
            let mut dump = LinkDump::default();
            assert!(
                parse_datagram(&datagram[..cut], 1, &mut dump).is_err(),
                "cut at {cut}"
            );
        }
    }
}
