//! Basic auth under attack: connections sending wrong passwords as fast as
//! they are answered must not keep a scraper with the right one from its
//! answer within Prometheus' default scrape timeout (curl's 10 s here).
//! The attack comes from one address (a pod) and the scrape from another
//! (Prometheus), as in a cluster: 127.0.0.1 and 127.0.0.2 on `lo`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;

use super::curl;
use crate::common::*;

/// More than the 32 connection slots of the main listener.
const ATTACKERS: usize = 40;

/// One attacker: keep-alive requests, reconnecting whenever cut or
/// closed. Odd ones send a password not tried before each time (so no
/// cache can answer it: each costs a bcrypt check), even ones the same one
/// again and again (answered from the cache at once, back to back).
fn attack(attacker: usize, stop: &AtomicBool, refused: &AtomicU64) {
    let mut stream: Option<TcpStream> = None;
    let mut guess = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let connection = match stream.as_mut() {
            Some(connection) => connection,
            None => {
                let Ok(connection) = TcpStream::connect_timeout(
                    &"127.0.0.1:2112".parse().unwrap(),
                    Duration::from_secs(1),
                ) else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = connection.set_read_timeout(Some(Duration::from_secs(30)));
                stream.insert(connection)
            }
        };
        guess += attacker as u64 % 2;
        let credentials = base64::engine::general_purpose::STANDARD
            .encode(format!("prometheus:guess-{attacker}-{guess}"));
        let request = format!(
            "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic {credentials}\r\n\r\n"
        );
        if connection.write_all(request.as_bytes()).is_err() {
            stream = None;
            continue;
        }
        // The 401's body ends the response; anything else (a reset, a
        // timeout) starts a new connection. An attacker waits for its answer
        // however long the queue of checks.
        let mut response = Vec::new();
        let mut buffer = [0u8; 1024];
        let answered = loop {
            match connection.read(&mut buffer) {
                Ok(0) | Err(_) => break false,
                Ok(n) => response.extend_from_slice(&buffer[..n]),
            }
            if response.ends_with(b"unauthorized\n") {
                break true;
            }
        };
        if answered && response.starts_with(b"HTTP/1.1 401") {
            refused.fetch_add(1, Ordering::Relaxed);
        }
        if !answered || response_closes(&response) {
            stream = None;
        }
    }
}

fn response_closes(response: &[u8]) -> bool {
    String::from_utf8_lossy(response)
        .to_ascii_lowercase()
        .contains("connection: close")
}

#[test]
fn wrong_passwords_on_every_slot_do_not_keep_a_scrape_from_its_answer() {
    require_root();
    let ns = Netns::new("authatk");
    let dir = tempfile::tempdir().unwrap();
    // Cost 10, as exporter-toolkit's examples: tens of ms per check, so the
    // queue of checks the attack builds is a real one.
    let hash = bcrypt::hash("scrape-me", 10).unwrap();
    let config = dir.path().join("web.yml");
    std::fs::write(
        &config,
        format!("basic_auth_users:\n  prometheus: '{hash}'\n"),
    )
    .unwrap();
    let _collector = CollectorProcess::start(
        &ns,
        &["--no-ebpf", "--web.config.file", config.to_str().unwrap()],
    );
    let (stop, refused) = (AtomicBool::new(false), AtomicU64::new(0));
    let (status, took, body) = std::thread::scope(|scope| {
        for attacker in 0..ATTACKERS {
            let (ns, stop, refused) = (&ns, &stop, &refused);
            scope.spawn(move || {
                ns.enter_this_thread();
                attack(attacker, stop, refused);
            });
        }
        // Long enough for every slot to hold a wrong password and the
        // checks to queue.
        std::thread::sleep(Duration::from_secs(3));
        let started = Instant::now();
        let (_, body, status) = curl(
            &ns,
            &[
                "--interface",
                "127.0.0.2",
                "-u",
                "prometheus:scrape-me",
                "http://127.0.0.1:2112/metrics",
            ],
        );
        let took = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        (status, took, body)
    });
    let refused = refused.load(Ordering::Relaxed);
    println!("scrape: {status} after {took:?}; {refused} wrong passwords refused meanwhile");
    assert!(refused > 0, "the attack never got an answer: no attack");
    assert_eq!(
        status, 200,
        "no answer to the right password within 10 s: {body:.200}"
    );
    assert!(
        body.contains("network_interface_stats_mtu{interface=\"lo\""),
        "{body:.300}"
    );
}
