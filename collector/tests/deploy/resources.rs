//! Resource requests and limits against a measurement at 1,000 interfaces.
//!
//! The memory limit covers more than the process's RSS: the kernel charges
//! the pod's memory cgroup for its BPF maps and programs (5.11+) and, on
//! cgroup v2, for its sockets' buffers. All three are measured and summed.

use std::net::{SocketAddr, TcpStream};

use super::*;

/// Clients asking for /metrics and never reading: more than any
/// connection limit should allow, so the socket memory measured is the
/// most the collector lets clients make it hold.
const STALLED_CLIENTS: usize = 600;

/// Kernel memory of every BPF map and program the process holds (fdinfo
/// `memlock`, what the kernel charges).
fn bpf_memlock(pid: u32) -> f64 {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap();
    fds.filter_map(|fd| std::fs::read_to_string(fd.ok()?.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("memlock:"))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .sum()
}

/// Buffer memory of the sockets serving `port` in `ns`: what `ss` reports
/// per socket as queued for receive (r), queued for send (w) and reserved
/// ahead (f), the amounts the kernel charges.
fn socket_memory(ns: &Netns, port: u16) -> f64 {
    let filter = format!("( sport = :{port} )");
    let output = ns.exec(&["ss", "-tmnH", &filter]);
    let skmem = regex::Regex::new(r"skmem:\(r(\d+),rb\d+,t\d+,tb\d+,f(\d+),w(\d+)").unwrap();
    skmem
        .captures_iter(&String::from_utf8_lossy(&output.stdout))
        .map(|c| (1..=3).map(|i| c[i].parse::<f64>().unwrap()).sum::<f64>())
        .sum()
}

/// The most socket memory `STALLED_CLIENTS` clients that never read make
/// the collector hold, sampled over three seconds.
fn stalled_socket_peak(ns: &Netns, port: u16) -> f64 {
    let clients: Vec<TcpStream> = ns.run_in(|| {
        (0..STALLED_CLIENTS)
            .filter_map(|_| {
                let socket =
                    socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                        .ok()?;
                socket.set_recv_buffer_size(4096).ok()?;
                let address: SocketAddr = ([127, 0, 0, 1], port).into();
                socket
                    .connect_timeout(&address.into(), Duration::from_secs(2))
                    .ok()?;
                let mut stream: TcpStream = socket.into();
                stream
                    .write_all(
                        b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: identity\r\n\r\n",
                    )
                    .ok()?;
                Some(stream)
            })
            .collect()
    });
    let mut peak: f64 = 0.0;
    for _ in 0..15 {
        std::thread::sleep(Duration::from_millis(200));
        peak = peak.max(socket_memory(ns, port));
    }
    drop(clients);
    peak
}

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
    let bpf = bpf_memlock(pid);
    let sockets = stalled_socket_peak(&ns, collector.port);
    let peak = memory(pid, "VmHWM");
    let charged = peak + bpf + sockets;
    let mib = |bytes: f64| bytes / 1048576.0;
    println!(
        "{interfaces} interfaces, {} build: BPF maps and programs {:.1} MiB, sockets of {STALLED_CLIENTS} clients that never read {:.1} MiB at most, peak RSS {:.1} MiB, {:.1} MiB charged in all",
        if cfg!(debug_assertions) { "debug" } else { "release" },
        mib(bpf),
        mib(sockets),
        mib(peak),
        mib(charged),
    );
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
    assert!(bpf > 0.0, "the collector holds its maps and programs");
    assert!(
        charged <= 0.8 * memory_limit,
        "peak RSS {:.1} + BPF {:.1} + sockets {:.1} MiB too close to the {:.0} MiB limit",
        mib(peak),
        mib(bpf),
        mib(sockets),
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
