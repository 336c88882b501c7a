//! What the probes cost and keep: map entries of deleted interfaces, a full
//! map, map memory, and each program's own run count and run time.

use super::*;

#[test]
fn deleting_an_interface_removes_its_series_and_map_entries() {
    each_flavour(deleting_an_interface_removes_its_entries);
}

fn deleting_an_interface_removes_its_entries(flavour: &str) {
    let left = Netns::new("gl");
    let right = Netns::new("gr");
    let keep = VethPair::new(&left, "keep0", &right, "keep1", 5);
    let gone = VethPair::new(&left, "gone0", &right, "gone1", 6);
    let collector = start(&left, flavour, &[]);
    send_udp(&left, &format!("{}:9", keep.b_addr), 10, PAYLOAD);
    send_udp(&left, &format!("{}:9", gone.b_addr), 10, PAYLOAD);
    // Drops with a device in `left`: packets to a closed port of our own address.
    send_udp(&right, &format!("{}:9", gone.a_addr), 10, PAYLOAD);
    std::thread::sleep(std::time::Duration::from_millis(100));

    let before = collector.scrape(&left);
    assert!(before.interfaces().contains("gone0"));
    // 10 datagrams plus the ICMP port-unreachable replies to `right`.
    assert!(traffic(&before, "gone0")[2] >= 10.0);
    assert!(drops(&before, "gone0", "NO_SOCKET") >= 10.0);
    let traffic_entries = before.value("collector_ebpf_map_entries", &[("map", "traffic")]);
    // The drop map also counts every other namespace on the machine, so
    // its entries of the deleted device are looked for by key.
    let (left_inode, gone_ifindex) = (left.inode(), left.ifindex("gone0"));
    let gone_key = |k: &DropMapKey| k.netns == left_inode && k.ifindex == gone_ifindex;
    assert!(drop_map_keys(collector.pid()).iter().any(gone_key));

    left.ip(&["link", "del", "gone0"]);
    let after = collector.scrape(&left);
    assert!(!after.interfaces().contains("gone0"));
    assert!(after
        .samples
        .iter()
        .all(|s| s.labels.get("interface").map(String::as_str) != Some("gone0")));
    assert_eq!(
        after.value("collector_ebpf_map_entries", &[("map", "traffic")]),
        traffic_entries - 1.0
    );
    assert!(!drop_map_keys(collector.pid()).iter().any(gone_key));
}

#[test]
fn a_full_map_loses_updates_visibly() {
    each_flavour(full_map_loses_updates_visibly);
}

fn full_map_loses_updates_visibly(flavour: &str) {
    let left = Netns::new("full");
    let right = Netns::new("fullp");
    let pairs: Vec<VethPair> = (0..3)
        .map(|i| VethPair::new(&left, &format!("f{i}"), &right, &format!("g{i}"), 40 + i))
        .collect();
    let collector = start(&left, flavour, &["--ebpf-max-interfaces", "2"]);
    for pair in &pairs {
        send_udp(&left, &format!("{}:9", pair.b_addr), 5, PAYLOAD);
    }
    let metrics = collector.scrape(&left);
    assert_eq!(
        metrics.value("collector_ebpf_map_entries", &[("map", "traffic")]),
        2.0
    );
    assert!(metrics.value("collector_ebpf_map_full_total", &[("map", "traffic")]) >= 5.0);
    // netlink still reports every interface.
    assert!(["f0", "f1", "f2"]
        .iter()
        .all(|i| metrics.interfaces().contains(*i)));
}

/// Kernel BPF run-time statistics, on while this fd is open (closed when
/// the test ends, also when it panics): `bpf(BPF_ENABLE_STATS)`. The
/// collector itself never turns them on: they cost every program run two
/// clock reads.
fn enable_bpf_stats() -> std::os::fd::OwnedFd {
    aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .unwrap_or_else(|error| panic!("BPF_ENABLE_STATS: {error}"))
}

#[test]
fn each_program_reports_its_own_runs_and_run_time() {
    each_flavour(programs_report_runs_and_run_time);
}

fn programs_report_runs_and_run_time(flavour: &str) {
    let left = Netns::new("statl");
    let right = Netns::new("statr");
    let pair = VethPair::new(&left, "sleft", &right, "sright", 7);
    let collector = start(&left, flavour, &[]);
    let stats = enable_bpf_stats();
    let before = collector.scrape(&left);
    // To a closed port: every datagram is transmitted, received and dropped.
    send_udp(&left, &format!("{}:9", pair.b_addr), DATAGRAMS, PAYLOAD);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let after = collector.scrape(&left);
    drop(stats);
    for program in ["netif_receive_skb", "net_dev_start_xmit", "kfree_skb"] {
        let selector = [("program", program)];
        let delta = |name: &str| after.value(name, &selector) - before.value(name, &selector);
        let (runs, seconds) = (
            delta("collector_ebpf_program_runs_total"),
            delta("collector_ebpf_program_run_seconds_total"),
        );
        println!("{flavour} {program}: {runs} runs, {seconds} s");
        // The programs run for every packet on the machine, so other
        // traffic can only add runs.
        assert!(runs >= DATAGRAMS as f64, "{program} ran {runs} times");
        assert!(seconds > 0.0, "{program} ran for {seconds} s");
        // 6.18 reports recursion misses (5.12+); their count is the kernel's.
        assert_eq!(
            after
                .select("collector_ebpf_program_recursion_misses_total", &selector)
                .count(),
            1,
            "{program} has a recursion-miss series"
        );
    }
    assert_eq!(
        after.types["collector_ebpf_program_run_seconds_total"],
        "counter"
    );
}

/// CPUs the kernel lays per-CPU map values out for.
fn possible_cpus() -> f64 {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap();
    text.trim()
        .split(',')
        .map(|range| match range.split_once('-') {
            Some((a, b)) => b.parse::<f64>().unwrap() - a.parse::<f64>().unwrap() + 1.0,
            None => 1.0,
        })
        .sum()
}

#[test]
fn map_memory_is_reported_and_the_traffic_map_costs_nothing_without_rx_tx() {
    require_root();
    let ns = Netns::new("mem");
    let cpus = possible_cpus();
    for (probes, traffic_used) in [("drops", false), ("rx,tx,drops", true)] {
        let collector = CollectorProcess::start(
            &ns,
            &["--ebpf-probes", probes, "--ebpf-max-interfaces", "512"],
        );
        let metrics = collector.scrape(&ns);
        let memory = |map: &str| metrics.value("collector_ebpf_map_memory_bytes", &[("map", map)]);
        println!(
            "--ebpf-probes {probes}, 512 interfaces, {cpus} possible CPUs: traffic {} B, drops {} B, first_drops {} B",
            memory("traffic"),
            memory("drops"),
            memory("first_drops")
        );
        // One entry per interface slot, not per CPU: a key and a time each.
        let first_drops = memory("first_drops");
        assert!(
            (512.0 * 16.0..=512.0 * 128.0).contains(&first_drops),
            "{first_drops}"
        );
        // Preallocated per-CPU values alone: entries x value size x CPUs.
        assert!(memory("drops") >= 4.0 * 512.0 * 8.0 * cpus);
        if traffic_used {
            assert!(memory("traffic") >= 512.0 * 32.0 * cpus);
        } else {
            assert!(memory("traffic") < 32.0 * 32.0 * cpus, "a one-entry map");
        }
        drop(collector);
    }
}
