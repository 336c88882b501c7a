//! Months of pod churn in minutes: thousands of veth pairs created and
//! deleted while scraping, after which series, map entries and memory are
//! back at the baseline.

use super::*;

const CHURN_PAIRS: usize = 5_000;
const CHURN_BATCH: usize = 250;
/// RSS growth allowed over the churn. The collector keeps nothing per
/// deleted interface; what remains is the allocator holding on to the
/// buffers of the largest scrape (a batch of 500 live veths: ~3 MiB of
/// exposition text plus the snapshot), so 16 MiB is several times that.
const CHURN_RSS_GROWTH_KIB: u64 = 16 * 1024;

/// The drop families: a new reason seen on `lo`, or a drop the churn
/// itself causes elsewhere (deleting a veth purges its queues), is a real
/// new series, not a leftover.
const DROP_FAMILIES: [&str; 3] = [
    "network_interface_drops_total",
    "network_pod_drops_total",
    "network_netns_drops_total",
];

/// Per-interface series, drop reasons left out.
fn series_count(metrics: &Metrics) -> usize {
    metrics
        .samples
        .iter()
        .filter(|s| s.labels.contains_key("interface") && !DROP_FAMILIES.contains(&s.name.as_str()))
        .count()
}

#[test]
fn churn_of_5000_veth_pairs_returns_series_and_maps_to_baseline() {
    require_root();
    let ns = Netns::new("churn");
    // IPv6 on for the churned veths: their router solicitations and MLD
    // reports are the traffic that creates map entries to be cleaned up.
    ns.exec(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=0"]);
    let collector = CollectorProcess::start(&ns, &[]);
    let baseline = collector.scrape(&ns);
    let baseline_rss = rss_kib(collector.pid());
    let entries = |m: &Metrics| m.value("collector_ebpf_map_entries", &[("map", "traffic")]);

    let stop = Arc::new(AtomicBool::new(false));
    let peak_entries = Arc::new(AtomicU64::new(0));
    let scrapes = Arc::new(AtomicU64::new(0));
    let scraper = {
        let (stop, peak_entries, scrapes) = (
            Arc::clone(&stop),
            Arc::clone(&peak_entries),
            Arc::clone(&scrapes),
        );
        let ns_name = ns.name.clone();
        std::thread::spawn(move || {
            enter_netns(&ns_name);
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match raw_get("/metrics") {
                    Ok((200, body)) => {
                        let metrics = Metrics::parse(&body);
                        peak_entries.fetch_max(entries(&metrics) as u64, Ordering::Relaxed);
                        scrapes.fetch_add(1, Ordering::Relaxed);
                    }
                    other => failures.push(format!("{other:?}")),
                }
                // Continuous, but leaving the CPU to the churn itself.
                std::thread::sleep(Duration::from_millis(20));
            }
            failures
        })
    };

    let started = Instant::now();
    for batch in 0..CHURN_PAIRS / CHURN_BATCH {
        let names: Vec<usize> = (batch * CHURN_BATCH..(batch + 1) * CHURN_BATCH).collect();
        let mut create = String::new();
        for i in &names {
            create.push_str(&format!(
                "link add ca{i} type veth peer name cb{i}\nlink set ca{i} group 7 up\nlink set cb{i} group 7 up\n"
            ));
        }
        ip_batch(&ns, &create);
        std::thread::sleep(Duration::from_millis(300));
        // One rtnl operation per batch, as a node deleting many pods at once.
        ns.ip(&["link", "delete", "group", "7"]);
    }
    let churn_seconds = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let failures = scraper.join().unwrap();

    let after = collector.scrape(&ns);
    let rss_growth = rss_kib(collector.pid()).saturating_sub(baseline_rss);
    println!(
        "churned {CHURN_PAIRS} pairs in {churn_seconds:.1}s with {} scrapes; peak traffic-map entries {}; RSS {baseline_rss} KiB -> +{rss_growth} KiB",
        scrapes.load(Ordering::Relaxed),
        peak_entries.load(Ordering::Relaxed)
    );
    assert!(failures.is_empty(), "failed scrapes: {failures:?}");
    assert!(
        scrapes.load(Ordering::Relaxed) >= 10,
        "scraping kept up during the churn"
    );
    assert!(
        peak_entries.load(Ordering::Relaxed) as f64 > entries(&baseline) + 50.0,
        "churned veths created map entries"
    );
    assert_eq!(after.interfaces(), baseline.interfaces());
    assert_eq!(
        series_count(&after),
        series_count(&baseline),
        "no series of churned interfaces left"
    );
    assert_eq!(
        entries(&after),
        entries(&baseline),
        "traffic map back to baseline"
    );
    // Drop entries of this namespace's devices are only those of live
    // interfaces (the map also counts every other namespace's drops).
    let live: std::collections::BTreeSet<u32> = ns
        .ip_links()
        .values()
        .map(|l| l["ifindex"].as_u64().unwrap() as u32)
        .collect();
    let inode = ns.inode();
    let stale: Vec<DropMapKey> = drop_map_keys(collector.pid())
        .into_iter()
        .filter(|k| k.netns == inode && k.ifindex != 0 && !live.contains(&k.ifindex))
        .collect();
    assert!(
        stale.is_empty(),
        "drop entries of deleted interfaces: {stale:?}"
    );
    assert_eq!(
        after.value("collector_scrape_errors_total", &[("source", "netlink")]),
        0.0
    );
    assert!(
        rss_growth < CHURN_RSS_GROWTH_KIB,
        "RSS grew {rss_growth} KiB"
    );
}
