use super::*;
use crate::model::PodIdentity;

fn pod(name: &str, sandbox: &str) -> PodNamespace {
    PodNamespace {
        identity: PodIdentity {
            namespace: "team-a".into(),
            pod: name.into(),
            pod_uid: format!("uid-{name}"),
            container_id: sandbox.into(),
            pod_interface: None,
            network: None,
        },
        interfaces: HashMap::from([(2, "eth0".to_string())]),
        created: None,
    }
}

fn reading(drops: &[(u32, u32, u64)]) -> EbpfReading {
    let mut reading = EbpfReading::default();
    for &(inode, ifindex, packets) in drops {
        reading
            .namespace_drops
            .entry((Netns::Inode(inode), ifindex))
            .or_default()
            .insert("NO_SOCKET".into(), packets);
    }
    reading
}

#[test]
fn a_namespace_whose_owner_changes_is_forgotten_so_no_pod_inherits_counts() {
    let mut ledger = NamespaceLedger::default();
    let now = Instant::now();
    let web = HashMap::from([(9, pod("web", "s1"))]);
    // The first collection is the baseline: nothing to compare with.
    assert!(ledger
        .forgotten(&reading(&[(9, 2, 5)]), Some(&web), now)
        .is_empty());
    assert!(ledger
        .forgotten(&reading(&[(9, 2, 6)]), Some(&web), now)
        .is_empty());
    // "web" deleted, "db" created on the same inode before the next read.
    let db = HashMap::from([(9, pod("db", "s2"))]);
    assert_eq!(
        ledger.forgotten(&reading(&[(9, 2, 7)]), Some(&db), now),
        [9].into()
    );
    assert!(ledger
        .forgotten(&reading(&[(9, 2, 1)]), Some(&db), now)
        .is_empty());
    // The same pod with a new sandbox has a new namespace too.
    let db_again = HashMap::from([(9, pod("db", "s3"))]);
    assert_eq!(
        ledger.forgotten(&reading(&[(9, 2, 2)]), Some(&db_again), now),
        [9].into()
    );
    // The pod gone: its namespace's counts go with it.
    let none = HashMap::new();
    assert_eq!(
        ledger.forgotten(&reading(&[(9, 2, 2)]), Some(&none), now),
        [9].into()
    );
    // Counts served for a namespace no pod owned are not a new pod's.
    assert!(ledger
        .forgotten(&reading(&[(10, 0, 1)]), Some(&none), now)
        .is_empty());
    let web_on_10 = HashMap::from([(10, pod("web", "s4"))]);
    assert_eq!(
        ledger.forgotten(&reading(&[(10, 0, 1)]), Some(&web_on_10), now),
        [10].into()
    );
}

#[test]
fn a_new_pods_drops_before_its_first_sighting_are_its_own() {
    let mut ledger = NamespaceLedger::default();
    let now = Instant::now();
    assert!(ledger
        .forgotten(&reading(&[]), Some(&HashMap::new()), now)
        .is_empty());
    // The pod's namespace was created, dropped packets, and its cache
    // file appeared, all between two collections.
    let web = HashMap::from([(9, pod("web", "s1"))]);
    assert!(ledger
        .forgotten(&reading(&[(9, 2, 5)]), Some(&web), now)
        .is_empty());
}

#[test]
fn unread_pod_identity_changes_no_owner() {
    let mut ledger = NamespaceLedger::default();
    let now = Instant::now();
    let web = HashMap::from([(9, pod("web", "s1"))]);
    ledger.forgotten(&reading(&[(9, 2, 5)]), Some(&web), now);
    // The results directory unreadable for a collection: owners unknown,
    // not gone; the counts stay, and so does the owner after it.
    let later = now + IDLE_NAMESPACE * 2;
    assert!(ledger
        .forgotten(&reading(&[(9, 2, 5)]), None, later)
        .is_empty());
    assert!(ledger
        .forgotten(&reading(&[(9, 2, 5)]), Some(&web), later)
        .is_empty());
}

#[test]
fn a_namespace_no_pod_owns_is_forgotten_once_idle() {
    let mut ledger = NamespaceLedger::default();
    let start = Instant::now();
    let pods = HashMap::new();
    let at = |minutes: u64| start + Duration::from_secs(60 * minutes);
    assert!(ledger
        .forgotten(&reading(&[(5, 0, 3)]), Some(&pods), at(0))
        .is_empty());
    assert!(ledger
        .forgotten(&reading(&[(5, 0, 3)]), Some(&pods), at(10))
        .is_empty());
    // A new drop restarts the clock.
    assert!(ledger
        .forgotten(&reading(&[(5, 0, 4)]), Some(&pods), at(14))
        .is_empty());
    assert!(ledger
        .forgotten(&reading(&[(5, 0, 4)]), Some(&pods), at(28))
        .is_empty());
    assert_eq!(
        ledger.forgotten(&reading(&[(5, 0, 4)]), Some(&pods), at(29)),
        [5].into()
    );
    // Forgotten entries were deleted: the next count starts a new clock.
    assert!(ledger
        .forgotten(&reading(&[(5, 0, 1)]), Some(&pods), at(30))
        .is_empty());
}

#[test]
fn drops_are_named_by_the_pod_owning_their_namespace_and_never_given_to_another() {
    let pods = HashMap::from([(9, pod("web", "s1"))]);
    let mut drops = BTreeMap::new();
    let reasons = |n: u64| BTreeMap::from([("NO_SOCKET".to_string(), n)]);
    drops.insert((Netns::Inode(9), 2), reasons(1));
    drops.insert((Netns::Inode(9), 0), reasons(2));
    drops.insert((Netns::Inode(9), 1), reasons(3));
    drops.insert((Netns::Inode(9), 7), reasons(4));
    drops.insert((Netns::Inode(5), 3), reasons(5));
    drops.insert((Netns::Inode(6), 1), reasons(6));
    drops.insert((Netns::Host, 0), reasons(7));
    drops.insert((Netns::Unknown, 0), reasons(8));
    let out = namespace_drops(drops, &pods, &[6].into());
    let seen: Vec<(Option<&str>, Netns, Option<&str>, u64)> = out
        .iter()
        .map(|d| {
            (
                d.pod.as_ref().map(|p| p.pod.as_str()),
                d.netns,
                d.interface.as_deref(),
                d.drops["NO_SOCKET"],
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (Some("web"), Netns::Inode(9), None, 2),
            (Some("web"), Netns::Inode(9), None, 4),
            (Some("web"), Netns::Inode(9), Some("eth0"), 1),
            (Some("web"), Netns::Inode(9), Some("lo"), 3),
            (None, Netns::Host, None, 7),
            (None, Netns::Inode(5), None, 5),
            (None, Netns::Unknown, None, 8),
        ]
    );
    assert_eq!(out[1].ifindex, 7);
}

#[test]
fn counts_older_than_a_new_pods_namespace_are_a_dead_namespaces() {
    let mut ledger = NamespaceLedger::default();
    let now = Instant::now();
    let none = HashMap::new();
    assert!(ledger.forgotten(&reading(&[]), Some(&none), now).is_empty());
    // Between two collections a pod lived, dropped and died on inode 9, and
    // "db" was made on it: the counts' first drop predates db's namespace.
    let db = |created| {
        HashMap::from([(
            9,
            PodNamespace {
                created: Some(created),
                ..pod("db", "s2")
            },
        )])
    };
    let mut inherited = reading(&[(9, 2, 40)]);
    inherited.first_drops.insert(9, 1_000);
    assert_eq!(
        ledger.forgotten(&inherited, Some(&db(2_000)), now),
        [9].into()
    );
    // db's own first drops, after its namespace was made, stay its own.
    let mut ledger = NamespaceLedger::default();
    assert!(ledger.forgotten(&reading(&[]), Some(&none), now).is_empty());
    let mut own = reading(&[(9, 2, 3)]);
    own.first_drops.insert(9, 3_000);
    assert!(ledger.forgotten(&own, Some(&db(2_000)), now).is_empty());
}

#[test]
fn a_departed_pods_teardown_drops_are_forgotten_for_a_few_collections() {
    let mut ledger = NamespaceLedger::default();
    let now = Instant::now();
    let web = HashMap::from([(9, pod("web", "s1"))]);
    let none = HashMap::new();
    assert!(ledger
        .forgotten(&reading(&[(9, 2, 5)]), Some(&web), now)
        .is_empty());
    // The cache file gone: the pod's counts go.
    assert_eq!(
        ledger.forgotten(&reading(&[(9, 2, 5)]), Some(&none), now),
        [9].into()
    );
    // Its namespace, still torn down, drops again: not kept for no one.
    for _ in 0..DEPARTED_COLLECTIONS {
        assert_eq!(
            ledger.forgotten(&reading(&[(9, 0, 3)]), Some(&none), now),
            [9].into()
        );
    }
    // Afterwards an unowned namespace on that inode is served as usual.
    assert!(ledger
        .forgotten(&reading(&[(9, 0, 3)]), Some(&none), now)
        .is_empty());
    // Pod identity unread: nothing departs, nothing is forgotten for it.
    let mut ledger = NamespaceLedger::default();
    ledger.forgotten(&reading(&[(9, 2, 5)]), Some(&web), now);
    assert!(ledger
        .forgotten(&reading(&[(9, 2, 6)]), None, now)
        .is_empty());
    // A new pod on the inode ends the departed pod's teardown.
    let mut ledger = NamespaceLedger::default();
    ledger.forgotten(&reading(&[(9, 2, 5)]), Some(&web), now);
    ledger.forgotten(&reading(&[]), Some(&none), now);
    let db = HashMap::from([(9, pod("db", "s2"))]);
    assert!(ledger
        .forgotten(&reading(&[(9, 2, 1)]), Some(&db), now)
        .is_empty());
    assert!(ledger
        .forgotten(&reading(&[(9, 2, 2)]), Some(&db), now)
        .is_empty());
}
