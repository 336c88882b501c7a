//! Scrapes from everywhere: many concurrent scrapers, slow clients that must
//! not hold connections, and the listen address.

use super::*;

const SCRAPERS: usize = 200;
const LOAD_SECONDS: u64 = 30;
/// RSS ceiling under load: 200 in-flight responses of a small node are a
/// few MiB; anything near this means per-connection state leaks.
const LOAD_RSS_KIB: u64 = 64 * 1024;

#[test]
fn two_hundred_concurrent_scrapers_for_30s_see_no_errors() {
    require_root();
    let ns = Netns::new("load");
    let peer = Netns::new("loadp");
    VethPair::new(&ns, "eth0", &peer, "pod0", 30);
    let collector = CollectorProcess::start(&ns, &[]);
    let deadline = Instant::now() + Duration::from_secs(LOAD_SECONDS);
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..SCRAPERS)
        .map(|_| {
            let (latencies, errors, ns_name) =
                (Arc::clone(&latencies), Arc::clone(&errors), ns.name.clone());
            std::thread::spawn(move || {
                enter_netns(&ns_name);
                let mut mine = Vec::new();
                while Instant::now() < deadline {
                    let started = Instant::now();
                    match raw_get("/metrics") {
                        Ok((200, body))
                            if body.contains(
                                "network_interface_stats_rx_bytes{interface=\"eth0\"",
                            ) =>
                        {
                            mine.push(started.elapsed())
                        }
                        other => errors
                            .lock()
                            .unwrap()
                            .push(format!("{:?}", other.map(|(s, b)| (s, b.len())))),
                    }
                }
                latencies.lock().unwrap().extend(mine);
            })
        })
        .collect();
    let mut peak_rss = 0;
    while Instant::now() < deadline {
        peak_rss = peak_rss.max(rss_kib(collector.pid()));
        std::thread::sleep(Duration::from_millis(500));
    }
    for worker in workers {
        worker.join().unwrap();
    }
    let mut latencies = latencies.lock().unwrap().clone();
    latencies.sort();
    let quantile = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    let metrics = collector.scrape(&ns);
    println!(
        "{} scrapes by {SCRAPERS} clients in {LOAD_SECONDS}s: p50 {:?}, p99 {:?}, max {:?}; {} collections; peak RSS {peak_rss} KiB; connections displaced {}, responses cut {}",
        latencies.len(),
        quantile(0.5),
        quantile(0.99),
        latencies.last().unwrap(),
        metrics.value("collector_collections_total", &[]),
        metrics.value("collector_http_connections_rejected_total", &[]),
        metrics.value("collector_http_responses_cut_total", &[("why", "stalled")])
            + metrics.value("collector_http_responses_cut_total", &[("why", "evicted")]),
    );
    let errors = errors.lock().unwrap();
    assert!(
        errors.is_empty(),
        "{} failed scrapes, first: {:?}",
        errors.len(),
        errors.first()
    );
    assert!(
        latencies.len() > SCRAPERS * 10,
        "every client scraped repeatedly"
    );
    assert!(peak_rss < LOAD_RSS_KIB, "RSS peaked at {peak_rss} KiB");
    // Shared collections: far fewer netlink dumps than scrapes.
    assert!(metrics.value("collector_collections_total", &[]) < latencies.len() as f64);
}

#[test]
fn slow_clients_are_cut_off_and_cannot_exhaust_connections() {
    require_root();
    let ns = Netns::new("slow");
    let collector = CollectorProcess::start(&ns, &["--no-ebpf"]);
    // More half-sent requests than the 512-connection limit.
    let slow: Vec<TcpStream> = ns.run_in(|| {
        (0..600)
            .filter_map(|_| {
                let mut stream = TcpStream::connect("127.0.0.1:2112").ok()?;
                stream
                    .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                    .ok()?;
                Some(stream)
            })
            .collect()
    });
    assert_eq!(
        slow.len(),
        600,
        "connections are accepted (then closed) beyond the limit"
    );
    std::thread::sleep(Duration::from_millis(200));
    let busy = ns.run_in(|| raw_get("/healthz"));
    println!("while 600 slow clients hold connections: {busy:?}");

    // The header-read timeout (5 s) closes every slow connection.
    std::thread::sleep(Duration::from_secs(6));
    for mut stream in slow {
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut buffer = Vec::new();
        // EOF (closed after the timeout) or a reset (closed at accept with
        // the request unread) both end the connection; only a read timeout
        // means the server still holds it.
        let still_open = matches!(
            stream.read_to_end(&mut buffer),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
        );
        assert!(
            !still_open,
            "a slow client was still connected after the header timeout"
        );
    }
    let (status, body) = ns
        .run_in(|| raw_get("/metrics"))
        .expect("scrape after slow clients left");
    assert_eq!(status, 200);
    let metrics = Metrics::parse(&body);
    assert!(
        metrics.value("collector_http_connections_rejected_total", &[]) >= 88.0,
        "limit of 512 enforced"
    );

    // A request head larger than 16 KiB is refused, not buffered.
    let oversized = ns.run_in(|| {
        let mut stream = TcpStream::connect("127.0.0.1:2112").unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let header = format!(
            "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Filler: {}\r\n\r\n",
            "a".repeat(64 * 1024)
        );
        let _ = stream.write_all(header.as_bytes());
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response
    });
    assert!(
        oversized.is_empty() || oversized.starts_with("HTTP/1.1 431"),
        "{oversized:.80}"
    );
    drop(collector);
}

#[test]
fn listen_on_a_specific_address_is_honoured() {
    require_root();
    let ns = Netns::new("bind");
    let peer = Netns::new("bindp");
    let pair = VethPair::new(&ns, "eth0", &peer, "pod0", 31);
    let _collector = CollectorProcess::start(&ns, &["--no-ebpf"]);
    let (on_loopback, on_veth) = ns.run_in(|| {
        (
            TcpStream::connect("127.0.0.1:2112").is_ok(),
            TcpStream::connect(format!("{}:2112", pair.a_addr)).is_ok(),
        )
    });
    assert!(on_loopback);
    assert!(
        !on_veth,
        "bound to 127.0.0.1 only, yet reachable on {}",
        pair.a_addr
    );
}
