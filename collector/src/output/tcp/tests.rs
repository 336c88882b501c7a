//! The "TCP trouble in pods" section: order, columns, rates.
use super::*;
use crate::model::{PodIdentity, PodNetstat};

fn pod(name: &str, counters: &[(&'static str, u64)]) -> PodNetstat {
    PodNetstat {
        pod: PodIdentity {
            namespace: "shop".into(),
            pod: name.into(),
            pod_uid: format!("uid-{name}"),
            container_id: "c".into(),
            pod_interface: None,
            network: None,
        },
        netns: 1,
        counters: counters.iter().copied().collect(),
    }
}

fn snapshot(pods: Vec<PodNetstat>) -> Snapshot {
    let mut snapshot = crate::model::tests::empty_snapshot();
    snapshot.pod_netstat = pods;
    snapshot.sources.pod_netstat.enabled = true;
    snapshot
}

#[test]
fn pods_with_most_trouble_come_first_with_every_column() {
    let mut snapshot = snapshot(vec![
        pod(
            "web",
            &[
                ("Tcp_RetransSegs", 30),
                ("Tcp_OutSegs", 1000),
                ("TcpExt_TCPSynRetrans", 4),
                ("TcpExt_TCPTimeouts", 5),
                ("Tcp_OutRsts", 2),
                ("TcpExt_ListenOverflows", 0),
            ],
        ),
        pod(
            "api",
            &[
                ("Tcp_RetransSegs", 1),
                ("Tcp_OutSegs", 0),
                ("Tcp_OutRsts", 0),
                ("TcpExt_ListenOverflows", 90),
            ],
        ),
        // No trouble: not listed, however busy.
        pod(
            "idle",
            &[
                ("Tcp_RetransSegs", 0),
                ("Tcp_OutSegs", 99999),
                ("TcpExt_TCPTimeouts", 7),
            ],
        ),
    ]);
    // The probes' events of web: 3 failed connects of 7, 1 abort; and of
    // a pod without its own counters, which still has trouble to show.
    let web = snapshot.pod_netstat[0].pod.clone();
    let mut db = web.clone();
    db.pod = "db".into();
    let key = |event: TcpEvent, outcome: Outcome| (event as u16, outcome as u16);
    snapshot.namespace_tcp = vec![
        crate::model::NamespaceTcp {
            netns: crate::model::Netns::Inode(1),
            pod: Some(web),
            events: BTreeMap::from([
                (key(TcpEvent::Connect, Outcome::Established), 4),
                (key(TcpEvent::Connect, Outcome::Refused), 2),
                (key(TcpEvent::Connect, Outcome::TimedOut), 1),
                (key(TcpEvent::Abort, Outcome::Reset), 1),
            ]),
        },
        crate::model::NamespaceTcp {
            netns: crate::model::Netns::Inode(2),
            pod: Some(db),
            events: BTreeMap::from([(key(TcpEvent::Connect, Outcome::Unreachable), 9)]),
        },
    ];
    let text = tcp_section(&snapshot, &tcp_by_pod(&snapshot), "T", |n| {
        format!("{n:.0}")
    })
    .unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "",
            "T",
            "POD       RETRANS RETRANS% SYN RETRANS      RTO RST SENT LISTEN OVF CONN FAIL   ABORTS",
            "shop/api        1        -           -        -        0         90         -        -",
            "shop/web       30     3.0%           4        5        2          0         3        1",
            "shop/db         -        -           -        -        -          -         9        -",
        ]
    );
}

#[test]
fn nothing_without_pods_counters_and_none_without_trouble() {
    let mut quiet = snapshot(vec![pod(
        "web",
        &[("Tcp_RetransSegs", 0), ("Tcp_OutSegs", 5)],
    )]);
    let pods = tcp_by_pod(&quiet);
    assert_eq!(
        tcp_section(&quiet, &pods, "T", |n| n.to_string()).as_deref(),
        Some("\nT: none\n")
    );
    quiet.sources.pod_netstat.enabled = false;
    assert_eq!(tcp_section(&quiet, &pods, "T", |n| n.to_string()), None);
}

#[test]
fn rates_are_deltas_per_second_and_restart_after_a_reset() {
    let before = snapshot(vec![
        pod("web", &[("Tcp_RetransSegs", 10), ("Tcp_OutSegs", 100)]),
        pod("api", &[("Tcp_RetransSegs", 50)]),
    ]);
    let now = snapshot(vec![
        pod("web", &[("Tcp_RetransSegs", 30), ("Tcp_OutSegs", 500)]),
        // Made again: its counters restarted below the old ones.
        pod("api", &[("Tcp_RetransSegs", 4)]),
        pod("new", &[("Tcp_RetransSegs", 6)]),
    ]);
    let rates = tcp_rates(&before, &now, 2.0);
    assert_eq!(rates["shop/web"]["Tcp_RetransSegs"], 10.0);
    assert_eq!(rates["shop/web"]["Tcp_OutSegs"], 200.0);
    assert_eq!(rates["shop/api"]["Tcp_RetransSegs"], 2.0);
    assert_eq!(rates["shop/new"]["Tcp_RetransSegs"], 3.0);
    let text = tcp_section(&now, &rates, "T/s", |n| format!("{n:.1}")).unwrap();
    assert!(
        text.contains("shop/web     10.0     5.0%"),
        "the ratio of the rates: {text}"
    );
}
