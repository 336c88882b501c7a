//! Resource requests and limits against a measurement at 1,000 interfaces.

use super::*;

/// VmHWM / VmRSS of a process, in bytes.
fn memory(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kilobytes: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .parse()
        .unwrap();
    kilobytes * 1024.0
}

/// User + system CPU seconds a process used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th of the whole line.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / ticks
}

#[test]
fn resource_requests_and_limits_cover_usage_measured_with_1000_interfaces() {
    require_root();
    require_python_modules();
    let objects = render_overlay("overlays/azure");
    let resources = &collector_container(only(&objects, "DaemonSet"))["resources"];
    let memory_limit = quantity(&resources["limits"]["memory"]);
    let memory_request = quantity(&resources["requests"]["memory"]);
    let cpu_limit = quantity(&resources["limits"]["cpu"]);
    let cpu_request = quantity(&resources["requests"]["cpu"]);
    let interval = seconds(
        only(&objects, "PodMonitor")["spec"]["podMetricsEndpoints"][0]["interval"]
            .as_str()
            .unwrap(),
    );

    let ns = Netns::new("sizing");
    let pairs = 500;
    let batch = tempfile::NamedTempFile::new().unwrap();
    {
        let mut file = batch.reopen().unwrap();
        for i in 0..pairs {
            writeln!(file, "link add sa{i} type veth peer name sb{i}").unwrap();
            writeln!(file, "link set sa{i} up").unwrap();
            writeln!(file, "link set sb{i} up").unwrap();
        }
    }
    ns.ip(&["-batch", batch.path().to_str().unwrap()]);
    let collector = CollectorProcess::start(&ns, &[]);
    let pids = run("ip", &["netns", "pids", &ns.name]);
    let pid: u32 = String::from_utf8_lossy(&pids.stdout)
        .split_whitespace()
        .next()
        .expect("the collector runs in the namespace")
        .parse()
        .unwrap();
    let start_peak = memory(pid, "VmHWM");
    let start_cpu = cpu_seconds(pid);

    let interfaces = collector.scrape(&ns).interfaces().len();
    assert!(interfaces > 2 * pairs, "scraped {interfaces} interfaces");
    let scrapes = 20;
    let before = cpu_seconds(pid);
    let last_interface = format!("interface=\"sb{}\"", pairs - 1);
    for _ in 0..scrapes {
        let body = collector.scrape_text(&ns);
        assert!(body.contains(&last_interface), "complete scrape");
    }
    let per_scrape = (cpu_seconds(pid) - before) / scrapes as f64;
    let steady = memory(pid, "VmRSS");
    let peak = memory(pid, "VmHWM");
    let mib = |bytes: f64| bytes / 1048576.0;
    println!(
        "{interfaces} interfaces, {} build: start-up {:.0} ms CPU, peak RSS {:.1} MiB (start-up {:.1}), RSS after {scrapes} scrapes {:.1} MiB, {:.1} ms CPU per scrape = {:.2} millicores at {interval} s",
        if cfg!(debug_assertions) { "debug" } else { "release" },
        start_cpu * 1e3,
        mib(peak),
        mib(start_peak),
        mib(steady),
        per_scrape * 1e3,
        per_scrape / interval * 1e3
    );
    // This is the debug build `cargo test` made (slower and larger than the
    // release image), so passing here leaves the image more headroom.
    assert!(
        peak <= 0.8 * memory_limit,
        "peak RSS {:.1} MiB too close to the {:.0} MiB limit",
        mib(peak),
        mib(memory_limit)
    );
    assert!(
        steady <= memory_request,
        "steady RSS {:.1} MiB above the {:.0} MiB request",
        mib(steady),
        mib(memory_request)
    );
    assert!(
        per_scrape / interval <= cpu_request,
        "{:.2} millicores per {interval} s scrape exceed the {cpu_request} core request",
        per_scrape / interval * 1e3
    );
    // Throttled to the limit, a scrape must still finish well inside the
    // scrape interval (Prometheus' default timeout is 10 s).
    assert!(
        per_scrape / cpu_limit < interval.min(10.0) / 4.0,
        "a scrape at the {cpu_limit} core limit takes {:.1} s",
        per_scrape / cpu_limit
    );
}
