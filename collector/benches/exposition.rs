//! Prometheus text encoding of a 1,000-interface snapshot, eBPF counts and
//! a drop reason per interface included (the default deployment's shape).

use std::collections::BTreeMap;
use std::hint::black_box;

use collector::model::{
    EbpfInterface, EbpfStatus, Flavour, HttpStats, Interface, LinkCounters, ProbeAttachment,
    Snapshot, SourceStatus,
};
use collector::output::prometheus::render;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const INTERFACES: usize = 1_000;

fn interface(index: usize) -> Interface {
    let n = index as u64;
    let counters = LinkCounters {
        rx_packets: 1_000_000 + n,
        tx_packets: 2_000_000 + n,
        rx_bytes: 1 << 36 | n,
        tx_bytes: 1 << 37 | n,
        rx_dropped: n % 7,
        multicast: n % 11,
        ..LinkCounters::default()
    };
    Interface {
        ifindex: index as u32 + 1,
        name: format!("veth{index:08x}"),
        admin_up: true,
        lower_up: true,
        carrier: Some(true),
        oper_state: "up".into(),
        mtu: 1500,
        kind: Some("veth".into()),
        master_ifindex: None,
        mac_address: Some(format!(
            "02:42:00:00:{:02x}:{:02x}",
            index >> 8 & 0xff,
            index & 0xff
        )),
        carrier_changes: Some(2),
        counters,
        link_netnsid: None,
        link_ifindex: None,
        master: None,
        speed_bytes: None,
        ebpf: Some(EbpfInterface {
            rx_packets: counters.rx_packets,
            rx_bytes: counters.rx_bytes,
            tx_packets: counters.tx_packets,
            tx_bytes: counters.tx_bytes,
            drops: BTreeMap::from([("NO_SOCKET".to_string(), n % 5)]),
        }),
        pod: None,
    }
}

fn snapshot() -> Snapshot {
    let attachments = [
        ("netif_receive_skb", "net/netif_receive_skb"),
        ("net_dev_start_xmit", "net/net_dev_start_xmit"),
        ("kfree_skb", "skb/kfree_skb"),
    ]
    .into_iter()
    .map(|(program, tracepoint)| ProbeAttachment {
        program: program.into(),
        tracepoint: tracepoint.into(),
        flavour: Flavour::Btf,
        attached: true,
        error: None,
    })
    .collect();
    Snapshot {
        node: "aks-nodepool1-12345678-vmss000000".into(),
        labels: vec![
            ("cluster".into(), "aks-cluster".into()),
            ("environment".into(), "aks".into()),
        ],
        interfaces: (0..INTERFACES).map(interface).collect(),
        namespace_drops: Vec::new(),
        namespace_tcp: Vec::new(),
        pod_netstat: Vec::new(),
        conntrack: None,
        sources: SourceStatus {
            netlink_error: None,
            ebpf: EbpfStatus {
                enabled: true,
                attachments,
                traffic_map_entries: INTERFACES,
                drop_map_entries: INTERFACES,
                ..EbpfStatus::default()
            },
            errors_total: BTreeMap::from([("ebpf", 0), ("netlink", 0)]),
            netlink_timeouts_total: 0,
            netlink_skipped_attributes_total: 0,
            collections_total: 1,
            pod_identity: Default::default(),
            pod_netstat: Default::default(),
            conntrack_error: None,
        },
        collection_seconds: 0.002,
    }
}

fn exposition(c: &mut Criterion) {
    let snapshot = snapshot();
    let http = HttpStats::default();
    let text = render(&snapshot, &http);
    assert!(text.contains("interface=\"veth000003e7\""));
    let mut group = c.benchmark_group("exposition");
    group.throughput(Throughput::Elements(INTERFACES as u64));
    eprintln!(
        "exposition of {INTERFACES} interfaces: {} bytes",
        text.len()
    );
    group.bench_function("render_1000_interfaces", |b| {
        b.iter(|| render(black_box(&snapshot), &http))
    });
    group.finish();
}

criterion_group!(benches, exposition);
criterion_main!(benches);
