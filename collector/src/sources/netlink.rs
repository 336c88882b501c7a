//! Link state and IFLA_STATS64 counters from one rtnetlink RTM_GETLINK dump.
//!
//! The dump is the same data `ip -s link` prints, read without a subprocess.
//! Decoding is lenient per attribute: `netlink-packet-route` parses each
//! attribute, and one that fails (a name that is not UTF-8, an attribute a
//! newer kernel changed) is skipped or decoded by hand, so one odd interface
//! never blanks the others. The socket has a receive timeout and the dump a
//! deadline, so a wedged kernel reply fails one scrape instead of hanging all.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NlaBuffer, NlasIterator,
    ParseableParametrized, NLMSG_DONE, NLMSG_ERROR, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_packet_route::link::{
    InfoKind, LinkAttribute, LinkFlags, LinkHeader, LinkInfo, LinkMessage, State, Stats64,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use serde::Serialize;

/// Kernel dump messages are at most 32 KiB; a larger buffer never truncates.
const RECV_BUFFER_BYTES: usize = 64 * 1024;
/// An interrupted dump (links changed while the kernel walked them) is
/// retried this many times before its partial result is used.
const DUMP_ATTEMPTS: usize = 3;
/// How long one whole dump may take by default. 10,000 interfaces dump in
/// well under a second here; a reply that has not come by then never will.
pub const DEFAULT_DUMP_TIMEOUT: Duration = Duration::from_secs(5);
const RTM_NEWLINK: u16 = 16;
const LINK_HEADER_LEN: usize = 16;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("opening rtnetlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("sending RTM_GETLINK dump request: {0}")]
    Send(#[source] std::io::Error),
    #[error("receiving RTM_GETLINK dump: {0}")]
    Receive(#[source] std::io::Error),
    #[error("RTM_GETLINK dump did not complete within {0:?}")]
    Timeout(Duration),
    #[error("decoding RTM_GETLINK reply: {0}")]
    Decode(String),
    #[error("kernel refused RTM_GETLINK dump: errno {0}")]
    Kernel(i32),
}

impl NetlinkError {
    pub fn is_timeout(&self) -> bool {
        matches!(self, NetlinkError::Timeout(_))
    }
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
    /// Attributes that failed to decode and were skipped (the link is kept).
    pub skipped_attributes: u64,
}

/// Dumps all links of the caller's network namespace within
/// [`DEFAULT_DUMP_TIMEOUT`].
pub fn dump_links() -> Result<LinkDump, NetlinkError> {
    dump_links_within(DEFAULT_DUMP_TIMEOUT)
}

/// Dumps all links, failing with [`NetlinkError::Timeout`] when the whole
/// dump (retries included) takes longer than `timeout`.
pub fn dump_links_within(timeout: Duration) -> Result<LinkDump, NetlinkError> {
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Socket)?;
    socket.bind_auto().map_err(NetlinkError::Socket)?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(NetlinkError::Socket)?;
    let deadline = Instant::now() + timeout;
    let mut buffer = vec![0u8; RECV_BUFFER_BYTES];
    let mut last = LinkDump::default();
    for attempt in 1..=DUMP_ATTEMPTS {
        send_dump_request(&socket, attempt as u32)?;
        last = receive_dump(&socket, &mut buffer, attempt as u32, deadline, timeout)?;
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

fn send_dump_request(socket: &Socket, sequence: u32) -> Result<(), NetlinkError> {
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
    Ok(())
}

/// Sets the socket's receive timeout to what is left until `deadline`, so a
/// `recv` never blocks past it.
fn set_receive_timeout(socket: &Socket, left: Duration) -> std::io::Result<()> {
    // At least 1 ms: a zero timeval would mean "block forever".
    let left = left.max(Duration::from_millis(1));
    let timeval = libc::timeval {
        tv_sec: left.as_secs() as libc::time_t,
        tv_usec: left.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: the fd is the socket's, the option value a valid timeval of the given size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeval as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Receives one dump's datagrams until NLMSG_DONE or `deadline`.
fn receive_dump(
    socket: &Socket,
    buffer: &mut [u8],
    sequence: u32,
    deadline: Instant,
    timeout: Duration,
) -> Result<LinkDump, NetlinkError> {
    let mut dump = LinkDump::default();
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
            .ok_or(NetlinkError::Timeout(timeout))?;
        set_receive_timeout(socket, left).map_err(NetlinkError::Socket)?;
        let received = match socket.recv(&mut &mut buffer[..], 0) {
            Ok(received) => received,
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(NetlinkError::Timeout(timeout))
            }
            Err(error) => return Err(NetlinkError::Receive(error)),
        };
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

/// Parses every message of one datagram into `dump`. Only a broken message
/// header is an error (the next message cannot be found after it); inside a
/// link message, what fails to decode is skipped.
fn parse_datagram(
    mut bytes: &[u8],
    sequence: u32,
    dump: &mut LinkDump,
) -> Result<DumpProgress, NetlinkError> {
    while !bytes.is_empty() {
        let message =
            NetlinkBuffer::new_checked(bytes).map_err(|e| NetlinkError::Decode(e.to_string()))?;
        // new_checked guarantees 16 <= length <= bytes.len().
        let length = message.length() as usize;
        let (message_type, flags, payload) =
            (message.message_type(), message.flags(), message.payload());
        let this_sequence = message.sequence_number();
        bytes = &bytes[align_to_nlmsg(length).min(bytes.len())..];
        if this_sequence != sequence {
            continue;
        }
        if flags & NLM_F_DUMP_INTR != 0 {
            dump.interrupted = true;
        }
        match message_type {
            NLMSG_DONE => return Ok(DumpProgress::Done),
            NLMSG_ERROR => {
                let code = payload
                    .get(..4)
                    .map(|b| i32::from_ne_bytes(b.try_into().expect("four bytes")))
                    .unwrap_or(0);
                // Saturating: a forged i32::MIN must not overflow (found by fuzzing).
                return Err(NetlinkError::Kernel(code.saturating_neg()));
            }
            RTM_NEWLINK => match link_from_payload(payload) {
                Some((link, skipped)) => {
                    dump.skipped_attributes += skipped;
                    dump.links.push(link);
                }
                None => dump.skipped_attributes += 1,
            },
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

/// Interface names are bytes to the kernel (anything but NUL, `/`, `:` and
/// white space), but label values and JSON strings are UTF-8. The policy,
/// the same in every output: valid UTF-8 is kept as is, and each byte that is
/// not part of valid UTF-8 becomes the four characters `\xNN` (lower-case
/// hex), so the name stays readable, distinct from its neighbours and
/// reversible to the kernel's bytes.
pub fn name_from_bytes(bytes: &[u8]) -> String {
    let bytes = bytes.split(|b| *b == 0).next().unwrap_or_default();
    let mut name = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        name.push_str(chunk.valid());
        for byte in chunk.invalid() {
            name.push_str(&format!("\\x{byte:02x}"));
        }
    }
    name
}

/// Decodes one RTM_NEWLINK payload: the header, then each attribute on its
/// own. Returns the link and how many attributes were skipped; `None` when
/// even the fixed header is missing.
fn link_from_payload(payload: &[u8]) -> Option<(Link, u64)> {
    let header = LinkHeader::parse(payload).ok()?;
    let mut link = link_from_header(&header);
    let mut skipped = 0;
    for nla in NlasIterator::new(&payload[LINK_HEADER_LEN.min(payload.len())..]) {
        let Ok(nla) = nla else {
            // A broken attribute length: nothing after it can be found.
            skipped += 1;
            break;
        };
        match nla.kind() {
            // Decoded by hand: the crate rejects names that are not UTF-8.
            IFLA_IFNAME => link.name = name_from_bytes(nla.value()),
            kind => match LinkAttribute::parse_with_param(&nla, header.interface_family) {
                Ok(attribute) => apply_attribute(&mut link, &attribute),
                Err(error) => {
                    skipped += 1;
                    if kind == IFLA_LINKINFO {
                        link.kind = kind_by_hand(nla.value());
                    }
                    tracing::debug!(ifindex = link.ifindex, kind, %error, "skipping an attribute that does not decode");
                }
            },
        }
    }
    Some((link, skipped))
}

/// IFLA_INFO_KIND out of an IFLA_LINKINFO the crate could not decode whole
/// (its kind-specific data may be what failed).
fn kind_by_hand(linkinfo: &[u8]) -> Option<String> {
    NlasIterator::new(linkinfo)
        .map_while(Result::ok)
        .find(|nla: &NlaBuffer<&[u8]>| nla.kind() == IFLA_INFO_KIND)
        .map(|nla| name_from_bytes(nla.value()))
}

fn link_from_header(header: &LinkHeader) -> Link {
    let flags = header.flags;
    Link {
        ifindex: header.index,
        admin_up: flags.contains(LinkFlags::Up),
        lower_up: flags.contains(LinkFlags::LowerUp),
        oper_state: "unknown".to_string(),
        ..Link::default()
    }
}

fn apply_attribute(link: &mut Link, attribute: &LinkAttribute) {
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

/// Copies the attributes the collector uses out of one decoded RTM_NEWLINK
/// message (what `parse_datagram` does attribute by attribute).
pub fn link_from_message(message: &LinkMessage) -> Link {
    let mut link = link_from_header(&message.header);
    for attribute in &message.attributes {
        apply_attribute(&mut link, attribute);
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

    /// Replaces the first occurrence of `from` in `bytes` with `to` (same length).
    fn patch(bytes: &mut [u8], from: &[u8], to: &[u8]) {
        let at = bytes
            .windows(from.len())
            .position(|w| w == from)
            .expect("pattern present");
        bytes[at..at + to.len()].copy_from_slice(to);
    }

    #[test]
    fn a_name_that_is_not_utf8_keeps_its_link_and_every_other() {
        let mut datagram = encoded(sample_link(1, "okpeer"), 5);
        let mut odd = encoded(sample_link(2, "zzQQ"), 5);
        // The kernel accepts any byte but NUL, '/', ':' and white space.
        patch(&mut odd, b"zzQQ", &[0xff, 0xfe, b'a', 0xc3]);
        datagram.extend(odd);
        datagram.extend(encoded(sample_link(3, "eth0"), 5));
        let mut dump = LinkDump::default();
        parse_datagram(&datagram, 5, &mut dump).expect("decodes");
        let names: Vec<_> = dump.links.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["okpeer", "\\xff\\xfea\\xc3", "eth0"]);
        // Everything else of the odd link is still read.
        assert_eq!(dump.links[1].counters.rx_missed_errors, 7);
        assert_eq!(dump.links[1].mtu, 9000);
        assert_eq!(dump.skipped_attributes, 0);
    }

    #[test]
    fn an_attribute_that_does_not_decode_is_skipped_not_the_link() {
        let mut message = sample_link(4, "veth9");
        // IFLA_MTU with a 2-byte value: the crate rejects it.
        message
            .attributes
            .push(LinkAttribute::Other(netlink_packet_core::DefaultNla::new(
                4,
                vec![1, 2],
            )));
        let datagram = encoded(message, 6);
        let mut dump = LinkDump::default();
        parse_datagram(&datagram, 6, &mut dump).expect("decodes");
        assert_eq!(dump.links.len(), 1);
        assert_eq!(dump.links[0].name, "veth9");
        assert_eq!(dump.links[0].mtu, 9000, "the good IFLA_MTU before it stays");
        assert_eq!(dump.skipped_attributes, 1);
    }

    #[test]
    fn name_policy_escapes_only_bytes_that_are_not_utf8() {
        assert_eq!(name_from_bytes(b"eth0\0"), "eth0");
        assert_eq!(name_from_bytes("caf\u{e9}".as_bytes()), "caf\u{e9}");
        assert_eq!(name_from_bytes(&[b'a', 0x80, b'b']), "a\\x80b");
    }

    #[test]
    fn a_dump_that_never_answers_times_out() {
        // A socket that sent no request: nothing will ever arrive, which is
        // what a wedged dump looks like from here.
        let mut socket = Socket::new(NETLINK_ROUTE).expect("netlink socket");
        socket.bind_auto().expect("bind");
        let timeout = Duration::from_millis(200);
        let started = Instant::now();
        let mut buffer = vec![0u8; RECV_BUFFER_BYTES];
        let result = receive_dump(&socket, &mut buffer, 1, Instant::now() + timeout, timeout);
        assert!(
            matches!(result, Err(NetlinkError::Timeout(_))),
            "{result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
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
