//! Lenient decoding of rtnetlink replies: `netlink-packet-route` parses
//! each attribute on its own, and one that fails (a name that is not UTF-8,
//! an attribute a newer kernel changed) is skipped or decoded by hand, so
//! one odd interface never blanks the others.

use netlink_packet_core::{
    Emitable, NetlinkBuffer, NlaBuffer, NlasIterator, Parseable, ParseableParametrized, NLMSG_DONE,
    NLMSG_ERROR, NLM_F_DUMP_INTR,
};
use netlink_packet_route::link::{
    InfoKind, LinkAttribute, LinkFlags, LinkHeader, LinkInfo, LinkMessage, State,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteLwEnCapType, RouteType,
};
use netlink_packet_route::stats::{StatsAttribute, StatsHeader};

use super::{Link, LinkCounters, LinkDump, NetlinkError};

pub const RTM_NEWLINK: u16 = 16;
pub const RTM_NEWSTATS: u16 = 92;
pub const RTM_NEWROUTE: u16 = 24;
const LINK_HEADER_LEN: usize = 16;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;

/// Where a dump stands after one datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    More,
    Done,
}

/// Walks every message of one datagram of the dump numbered `sequence`,
/// handing each data message's type and payload to `on_message`. Only a
/// broken message header is an error (nothing after it can be found);
/// what a message holds is for `on_message` to decode leniently.
pub fn parse_datagram(
    mut bytes: &[u8],
    sequence: u32,
    request: &'static str,
    interrupted: &mut bool,
    on_message: &mut dyn FnMut(u16, &[u8]),
) -> Result<Progress, NetlinkError> {
    while !bytes.is_empty() {
        let message = NetlinkBuffer::new_checked(bytes).map_err(|e| NetlinkError::Decode {
            request,
            message: e.to_string(),
        })?;
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
            *interrupted = true;
        }
        match message_type {
            NLMSG_DONE => return Ok(Progress::Done),
            NLMSG_ERROR => {
                let code = payload
                    .get(..4)
                    .map(|b| i32::from_ne_bytes(b.try_into().expect("four bytes")))
                    .unwrap_or(0);
                // Saturating: a forged i32::MIN must not overflow.
                return Err(NetlinkError::Kernel {
                    request,
                    errno: code.saturating_neg(),
                });
            }
            other => on_message(other, payload),
        }
    }
    Ok(Progress::More)
}

/// One datagram of an `RTM_GETLINK` dump into `dump`.
pub fn parse_link_datagram(
    bytes: &[u8],
    sequence: u32,
    dump: &mut LinkDump,
) -> Result<Progress, NetlinkError> {
    let (links, skipped) = (&mut dump.links, &mut dump.skipped_attributes);
    parse_datagram(
        bytes,
        sequence,
        "RTM_GETLINK",
        &mut dump.interrupted,
        &mut |message_type, payload| {
            if message_type != RTM_NEWLINK {
                return;
            }
            match link_from_payload(payload) {
                Some((link, skipped_here)) => {
                    *skipped += skipped_here;
                    links.push(link);
                }
                None => *skipped += 1,
            }
        },
    )
}

/// The ifindex and counters of one `RTM_NEWSTATS` message asked for with
/// only `IFLA_STATS_LINK_64`; `None` when it carries neither. Each
/// attribute is decoded on its own, so one that does not decode hides no
/// other.
pub fn stats_from_payload(payload: &[u8]) -> Option<(u32, LinkCounters)> {
    let header = StatsHeader::parse(payload).ok()?;
    let stats = NlasIterator::new(payload.get(header.buffer_len()..)?)
        .map_while(Result::ok)
        .find_map(|nla| match StatsAttribute::parse(&nla) {
            Ok(StatsAttribute::Link64(stats)) => Some(stats),
            _ => None,
        })?;
    Some((header.ifindex, LinkCounters::from(&stats)))
}

/// The destination and output interface of one `RTM_NEWROUTE` message when
/// it is a unicast host route (`/32`, `/128`) of the main table; attributes
/// decoded one by one, as everywhere here.
pub fn host_route_from_payload(payload: &[u8]) -> Option<(std::net::IpAddr, u32)> {
    let header = RouteHeader::parse(payload).ok()?;
    let full = match header.address_family {
        netlink_packet_route::AddressFamily::Inet => 32,
        netlink_packet_route::AddressFamily::Inet6 => 128,
        _ => return None,
    };
    if header.destination_prefix_length != full || header.kind != RouteType::Unicast {
        return None;
    }
    let (mut destination, mut oif) = (None, None);
    let mut table = u32::from(header.table);
    let attributes = payload.get(header.buffer_len()..)?;
    for nla in NlasIterator::new(attributes).map_while(Result::ok) {
        // Host routes carry no lightweight-tunnel encapsulation.
        let parameters = (header.address_family, header.kind, RouteLwEnCapType::None);
        match RouteAttribute::parse_with_param(&nla, parameters) {
            Ok(RouteAttribute::Destination(RouteAddress::Inet(a))) => destination = Some(a.into()),
            Ok(RouteAttribute::Destination(RouteAddress::Inet6(a))) => destination = Some(a.into()),
            Ok(RouteAttribute::Oif(index)) => oif = Some(index),
            // RTA_TABLE holds tables above 255 the header cannot.
            Ok(RouteAttribute::Table(id)) => table = id,
            _ => {}
        }
    }
    (table == u32::from(RouteHeader::RT_TABLE_MAIN)).then_some(())?;
    Some((destination?, oif?))
}

/// Parses the messages of a whole `RTM_GETLINK` dump reply (datagrams
/// concatenated, the sequence number taken from the first message) without
/// a socket; the entry point of the micro-benchmarks and the fuzzer.
pub fn parse_dump(bytes: &[u8]) -> Result<Vec<Link>, NetlinkError> {
    let Some(sequence) = bytes.get(8..12) else {
        return Ok(Vec::new());
    };
    let sequence = u32::from_ne_bytes(sequence.try_into().expect("four bytes"));
    let mut dump = LinkDump::default();
    parse_link_datagram(bytes, sequence, &mut dump)?;
    Ok(dump.links)
}

fn align_to_nlmsg(length: usize) -> usize {
    (length + 3) & !3
}

/// Interface names are bytes to the kernel (anything but NUL, `/`, `:` and
/// white space), but label values and JSON strings are UTF-8. The policy,
/// the same in every output: valid UTF-8 is kept as is but for the
/// backslash, which becomes `\\`, and each byte that is not part of valid
/// UTF-8 becomes the four characters `\xNN` (lower-case hex). Escaping the
/// escape character keeps the mapping injective (the four-character name
/// `\xff` is `\\xff`, the byte 0xff is `\xff`), so two interfaces never
/// share a name and each is reversible to the kernel's bytes.
pub fn name_from_bytes(bytes: &[u8]) -> String {
    let bytes = bytes.split(|b| *b == 0).next().unwrap_or_default();
    let mut name = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for (index, part) in chunk.valid().split('\\').enumerate() {
            if index > 0 {
                name.push_str("\\\\");
            }
            name.push_str(part);
        }
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
        // The kernel assigns an id when it reports a peer in another
        // namespace, so a dumped veth always carries a real one; a negative
        // (NETNSA_NSID_NOT_ASSIGNED) would match nothing, so it is dropped.
        LinkAttribute::LinkNetNsId(id) if *id >= 0 => link.link_netnsid = Some(*id),
        LinkAttribute::Link(peer) if *peer > 0 => link.link_ifindex = Some(*peer),
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
    use netlink_packet_route::link::Stats64;
    use netlink_packet_route::RouteNetlinkMessage;

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
            LinkAttribute::LinkNetNsId(3),
            LinkAttribute::Link(2),
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
        assert_eq!(link.link_netnsid, Some(3));
        assert_eq!(link.link_ifindex, Some(2));
    }

    #[test]
    fn stats_are_read_past_an_attribute_that_does_not_decode() {
        use netlink_packet_route::stats::StatsMessage;
        let payload = |attributes: Vec<StatsAttribute>| {
            let mut message = StatsMessage::default();
            message.header.ifindex = 7;
            message.attributes = attributes;
            let mut bytes = vec![0u8; message.buffer_len()];
            message.emit(&mut bytes);
            bytes
        };
        // IFLA_STATS_LINK_XSTATS whose nested attribute is cut short.
        let broken = StatsAttribute::Other(netlink_packet_core::DefaultNla::new(2, vec![1, 2, 3]));
        let mut stats = Stats64::default();
        stats.rx_bytes = 1 << 40;
        stats.tx_carrier_errors = 3;
        let (ifindex, counters) = stats_from_payload(&payload(vec![
            broken.clone(),
            StatsAttribute::Link64(stats),
        ]))
        .expect("the counters after it are read");
        assert_eq!(ifindex, 7);
        assert_eq!(
            (counters.rx_bytes, counters.tx_carrier_errors),
            (1 << 40, 3)
        );
        assert_eq!(stats_from_payload(&payload(vec![broken])), None);
        assert_eq!(stats_from_payload(&[0u8; 8]), None, "no whole header");
    }

    #[test]
    fn parses_several_messages_in_one_datagram_and_skips_foreign_sequences() {
        let mut datagram = encoded(sample_link(1, "a"), 9);
        datagram.extend(encoded(sample_link(2, "b"), 8));
        datagram.extend(encoded(sample_link(3, "c"), 9));
        let mut dump = LinkDump::default();
        assert!(matches!(
            parse_link_datagram(&datagram, 9, &mut dump),
            Ok(Progress::More)
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
        match parse_link_datagram(&datagram, 0x7e00_0001, &mut dump) {
            Err(NetlinkError::Kernel { errno, .. }) => assert_eq!(errno, i32::MAX),
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
        parse_link_datagram(&datagram, 5, &mut dump).expect("decodes");
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
        parse_link_datagram(&datagram, 6, &mut dump).expect("decodes");
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
    fn name_policy_is_injective_a_backslash_is_escaped_too() {
        // The four characters `\xff` and the one byte 0xff are two names.
        assert_ne!(name_from_bytes(b"\\xff"), name_from_bytes(&[0xff]));
        assert_eq!(name_from_bytes(b"\\xff"), "\\\\xff");
        assert_eq!(name_from_bytes(&[0xff]), "\\xff");
        assert_eq!(name_from_bytes(b"a\\b"), "a\\\\b");
        // Distinct byte strings, distinct names, over every short mix of
        // the characters that matter.
        let alphabet: [&[u8]; 5] = [b"\\", b"x", b"f", &[0xff], &[0xc3]];
        let mut seen = std::collections::HashMap::new();
        for a in alphabet {
            for b in alphabet {
                for c in alphabet {
                    let bytes = [a, b, c].concat();
                    if let Some(other) = seen.insert(name_from_bytes(&bytes), bytes.clone()) {
                        assert_eq!(other, bytes, "two byte strings share a name");
                    }
                }
            }
        }
    }

    #[test]
    fn truncated_datagram_is_an_error_not_a_panic() {
        let datagram = encoded(sample_link(1, "a"), 1);
        for cut in [1, 8, 16, datagram.len() - 1] {
            let mut dump = LinkDump::default();
            assert!(
                parse_link_datagram(&datagram[..cut], 1, &mut dump).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn host_routes_of_the_main_table_are_read_and_all_else_skipped() {
        use netlink_packet_route::route::{RouteMessage, RouteProtocol, RouteScope};
        use netlink_packet_route::AddressFamily;
        let route = |destination: std::net::IpAddr, prefix: u8, table: u32, kind: RouteType| {
            let mut message = RouteMessage::default();
            message.header.address_family = match destination {
                std::net::IpAddr::V4(_) => AddressFamily::Inet,
                std::net::IpAddr::V6(_) => AddressFamily::Inet6,
            };
            message.header.destination_prefix_length = prefix;
            message.header.table = table.min(255) as u8;
            message.header.protocol = RouteProtocol::Boot;
            message.header.scope = RouteScope::Link;
            message.header.kind = kind;
            message.attributes = vec![
                RouteAttribute::Table(table),
                RouteAttribute::Destination(destination.into()),
                RouteAttribute::Oif(7),
            ];
            let mut bytes = vec![0u8; message.buffer_len()];
            message.emit(&mut bytes);
            host_route_from_payload(&bytes)
        };
        let pod: std::net::IpAddr = "10.224.0.35".parse().unwrap();
        let pod6: std::net::IpAddr = "fd00::35".parse().unwrap();
        assert_eq!(route(pod, 32, 254, RouteType::Unicast), Some((pod, 7)));
        assert_eq!(route(pod6, 128, 254, RouteType::Unicast), Some((pod6, 7)));
        // A subnet, another table (one above 255 too), a local route.
        assert_eq!(route(pod, 24, 254, RouteType::Unicast), None);
        assert_eq!(route(pod, 32, 255, RouteType::Unicast), None);
        assert_eq!(route(pod, 32, 1000, RouteType::Unicast), None);
        assert_eq!(route(pod, 32, 254, RouteType::Local), None);
        assert_eq!(host_route_from_payload(&[2, 32]), None, "truncated");
    }
}
