//! Parse cost of one RTM_GETLINK dump of 1,000 links: the bytes the kernel
//! would send (built here by serializing `LinkMessage`s, as the unit tests
//! in `sources/netlink.rs` do) through `parse_dump`, i.e. message decoding
//! by netlink-packet-route plus the copy into `Link`.
//!
//! Each message carries what a veth's RTM_NEWLINK carries except AF_SPEC
//! (per-family devconf) and XDP, so a real dump is somewhat larger.

use std::hint::black_box;

use collector::sources::netlink::parse_dump;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use netlink_packet_core::{
    DoneMessage, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_MULTIPART,
};
use netlink_packet_route::link::{
    InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, State, Stats, Stats64,
};
use netlink_packet_route::RouteNetlinkMessage;

const LINKS: u32 = 1_000;
const SEQUENCE: u32 = 7;

fn veth(index: u32) -> LinkMessage {
    let mut message = LinkMessage::default();
    message.header.index = index;
    message.header.flags = LinkFlags::Up
        | LinkFlags::Broadcast
        | LinkFlags::Multicast
        | LinkFlags::LowerUp
        | LinkFlags::Running;
    let n = u64::from(index);
    // Both stats structs are #[non_exhaustive]: start from default.
    let mut stats64 = Stats64::default();
    stats64.rx_packets = 1_000_000 + n;
    stats64.tx_packets = 2_000_000 + n;
    stats64.rx_bytes = 1 << 36 | n;
    stats64.tx_bytes = 1 << 37 | n;
    stats64.rx_dropped = n % 7;
    stats64.multicast = n % 11;
    let mut stats = Stats::default();
    stats.rx_packets = stats64.rx_packets as u32;
    stats.tx_packets = stats64.tx_packets as u32;
    stats.rx_bytes = stats64.rx_bytes as u32;
    stats.tx_bytes = stats64.tx_bytes as u32;
    let mac = vec![
        0x02,
        0x42,
        0,
        (index >> 16) as u8,
        (index >> 8) as u8,
        index as u8,
    ];
    message.attributes = vec![
        LinkAttribute::IfName(format!("veth{index:08x}")),
        LinkAttribute::TxQueueLen(1000),
        LinkAttribute::OperState(State::Up),
        LinkAttribute::Mtu(1500),
        LinkAttribute::MinMtu(68),
        LinkAttribute::MaxMtu(65535),
        LinkAttribute::Group(0),
        LinkAttribute::Promiscuity(0),
        LinkAttribute::AllMulticast(0),
        LinkAttribute::NumTxQueues(2),
        LinkAttribute::NumRxQueues(2),
        LinkAttribute::GsoMaxSegs(65535),
        LinkAttribute::GsoMaxSize(65536),
        LinkAttribute::GroMaxSize(65536),
        LinkAttribute::GsoIpv4MaxSize(65536),
        LinkAttribute::GroIpv4MaxSize(65536),
        LinkAttribute::TsoMaxSize(524280),
        LinkAttribute::TsoMaxSegs(65535),
        LinkAttribute::Link(index + 10_000),
        LinkAttribute::Controller(3),
        LinkAttribute::Carrier(1),
        LinkAttribute::Qdisc("noqueue".into()),
        LinkAttribute::CarrierChanges(2),
        LinkAttribute::CarrierUpCount(1),
        LinkAttribute::CarrierDownCount(1),
        LinkAttribute::ProtoDown(0),
        LinkAttribute::Address(mac),
        LinkAttribute::Broadcast(vec![0xff; 6]),
        LinkAttribute::Stats64(stats64),
        LinkAttribute::Stats(stats),
        LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Veth)]),
        LinkAttribute::LinkNetNsId(0),
    ];
    message
}

fn encode(payload: NetlinkPayload<RouteNetlinkMessage>, out: &mut Vec<u8>) {
    let mut message = NetlinkMessage::new(NetlinkHeader::default(), payload);
    message.header.sequence_number = SEQUENCE;
    message.header.flags = NLM_F_MULTIPART;
    message.finalize();
    let start = out.len();
    out.resize(start + message.buffer_len(), 0);
    message.serialize(&mut out[start..]);
}

/// The whole dump: 1,000 RTM_NEWLINK messages and the NLMSG_DONE.
fn dump() -> Vec<u8> {
    let mut bytes = Vec::new();
    for index in 1..=LINKS {
        encode(
            NetlinkPayload::from(RouteNetlinkMessage::NewLink(veth(index))),
            &mut bytes,
        );
    }
    encode(NetlinkPayload::Done(DoneMessage::default()), &mut bytes);
    bytes
}

fn netlink_parse(c: &mut Criterion) {
    let bytes = dump();
    let links = parse_dump(&bytes).expect("the dump parses");
    assert_eq!(links.len(), LINKS as usize);
    assert_eq!(links[999].name, "veth000003e8");
    assert_eq!(links[0].counters.rx_packets, 1_000_001);
    let mut group = c.benchmark_group("netlink");
    group.throughput(Throughput::Elements(u64::from(LINKS)));
    eprintln!("netlink dump of {LINKS} links: {} bytes", bytes.len());
    group.bench_function("parse_dump_1000_links", |b| {
        b.iter(|| parse_dump(black_box(&bytes)).expect("parses"))
    });
    group.finish();
}

criterion_group!(benches, netlink_parse);
criterion_main!(benches);
