//! What the collector serves over HTTP and how it fails to start: the three
//! paths, gzip, a port in use, bad flags, and the netlink-only fallback.

use super::*;

#[test]
fn http_surface_serves_three_paths_and_nothing_else() {
    require_root();
    let ns = Netns::new("http");
    let collector = CollectorProcess::start(&ns, &["--no-ebpf"]);
    let status = |method: &str, path: &str| http(&ns, collector.port, method, path).unwrap().0;
    assert_eq!(status("GET", "/healthz"), 200);
    assert_eq!(status("GET", "/readyz"), 200);
    assert_eq!(status("GET", "/metrics"), 200);
    assert_eq!(status("HEAD", "/metrics"), 200);
    assert_eq!(status("GET", "/"), 404);
    assert_eq!(status("GET", "/metrics/extra"), 404);
    assert_eq!(status("POST", "/metrics"), 405);
    assert_eq!(status("DELETE", "/healthz"), 405);
}

/// HEAD /metrics is answered without a collection (it would only have
/// counted a body that is never sent): three HEADs between two GETs leave
/// one collection between them, the GET's.
#[test]
fn head_on_metrics_answers_without_collecting() {
    require_root();
    let ns = Netns::new("head");
    let collector = CollectorProcess::start(&ns, &["--no-ebpf"]);
    let collections = || {
        collector
            .scrape(&ns)
            .value("collector_collections_total", &[])
    };
    let before = collections();
    for _ in 0..3 {
        let (status, body) = http(&ns, collector.port, "HEAD", "/metrics").unwrap();
        assert_eq!(status, 200);
        assert!(body.is_empty(), "a HEAD response has no body: {body}");
    }
    assert_eq!(collections(), before + 1.0, "only the second GET collected");
}

#[test]
fn missing_btf_or_tracefs_degrades_to_netlink_with_one_log_line() {
    require_root();
    let ns = Netns::new("degr");
    // Without tracefs only the classic programs are lost (the BTF-typed
    // ones need none: pod_drops.rs), so that case forces them.
    let cases: [(&[(&str, &str)], &str); 2] = [
        (
            &[("COLLECTOR_BTF", "/nonexistent/vmlinux")],
            "kernel BTF unavailable",
        ),
        (
            &[
                ("COLLECTOR_TRACEFS", "/nonexistent/tracing"),
                ("COLLECTOR_EBPF_FLAVOUR", "classic"),
            ],
            "tracefs unavailable",
        ),
    ];
    for (env, needle) in cases {
        let collector = CollectorProcess::start_with_env(&ns, env, &[]);
        let metrics = collector.scrape(&ns);
        assert_eq!(metrics.value("collector_ebpf_enabled", &[]), 0.0);
        assert!(metrics.value("network_interface_stats_mtu", &[("interface", "lo")]) > 0.0);
        assert_eq!(
            metrics
                .select("network_interface_ebpf_rx_packets_total", &[])
                .count(),
            0
        );
        let (status, stderr) = collector.stop();
        assert!(status.success());
        let lines: Vec<_> = stderr
            .lines()
            .filter(|l| l.contains("eBPF disabled"))
            .collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(
            lines[0].contains(needle) && lines[0].contains("serving netlink metrics only"),
            "{}",
            lines[0]
        );
    }
}

#[test]
fn port_in_use_exits_non_zero_naming_the_address() {
    require_root();
    let ns = Netns::new("busy");
    let _holder = ns.run_in(|| std::net::TcpListener::bind("127.0.0.1:2112").unwrap());
    let output = collector_command("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            COLLECTOR,
            "--no-ebpf",
            "--listen",
            "127.0.0.1:2112",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot listen on 127.0.0.1:2112") && stderr.contains("in use"),
        "{stderr}"
    );
}

#[test]
fn malformed_flags_exit_2_naming_the_flag() {
    for (args, needle) in [
        (&["--listen", "localhost"][..], "--listen"),
        (&["--label", "cluster"][..], "--label"),
        (&["--include", "(["][..], "--include"),
        (
            &["--label", "a=1", "--label", "a=2"][..],
            "--label: key `a` given more than once",
        ),
    ] {
        let output = collector_command(COLLECTOR)
            .args(args)
            .env("COLLECTOR_NO_EBPF", "true")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    let output = collector_command(COLLECTOR)
        .env("COLLECTOR_LISTEN", "nowhere")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--listen"));
}

/// One HTTP/1.0 GET of /metrics with `accept` as its Accept-Encoding;
/// (headers, body bytes).
fn get_metrics_encoded(ns: &Netns, accept: &str) -> (String, Vec<u8>) {
    let request =
        format!("GET /metrics HTTP/1.0\r\nHost: localhost\r\nAccept-Encoding: {accept}\r\n\r\n");
    ns.run_in(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect("127.0.0.1:2112").unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a header block");
        let headers = String::from_utf8(response[..split].to_vec()).unwrap();
        (headers.to_ascii_lowercase(), response[split + 4..].to_vec())
    })
}

#[test]
fn gzip_when_the_scraper_accepts_it_plain_otherwise() {
    require_root();
    let node = node_with_traffic("gzip");
    let collector = CollectorProcess::start(&node.ns, &["--no-ebpf"]);
    // What Prometheus sends on every scrape.
    let (headers, zipped) = get_metrics_encoded(&node.ns, "gzip");
    assert!(headers.contains("content-encoding: gzip"), "{headers}");
    assert!(headers.contains("vary: accept-encoding"), "{headers}");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&zipped[..]), &mut text)
        .expect("a valid gzip stream");
    let unzipped = Metrics::parse(&text);
    let (headers, plain) = get_metrics_encoded(&node.ns, "gzip;q=0, identity");
    assert!(!headers.contains("content-encoding"), "{headers}");
    let plain = Metrics::parse(std::str::from_utf8(&plain).unwrap());
    println!(
        "{} bytes gzip for {} bytes of text",
        zipped.len(),
        text.len()
    );
    assert!(zipped.len() * 4 < text.len());
    assert_eq!(unzipped.interfaces(), plain.interfaces());
    assert_eq!(
        unzipped.value("network_interface_stats_mtu", &[("interface", "idle0")]),
        9000.0
    );
    let by_encoding = |e: &str| plain.value("collector_http_responses_total", &[("encoding", e)]);
    assert!(by_encoding("gzip") >= 1.0 && by_encoding("identity") >= 1.0);
    drop(collector);
}
