//! The web config file reloaded while serving: users and TLS settings
//! change without a restart (which would reset every eBPF counter), and a
//! file that does not load leaves the last good one in force, logged and
//! counted.

use std::time::{Duration, Instant};

use super::{curl, METRICS};
use crate::common::*;

/// `web.yml` naming `cert` and `key`, with one user.
fn web_yml(cert: &str, key: &str, users: &str) -> String {
    format!("tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n{users}")
}

#[test]
fn a_changed_web_config_is_served_without_a_restart_and_a_bad_one_is_not() {
    require_root();
    let ns = Netns::new("webreload");
    let pki = TlsFixture::new("", &basic_auth_users("prometheus", "first"));
    let collector =
        CollectorProcess::start(&ns, &["--no-ebpf", "--web.config.file", &pki.web_config()]);
    let next = TestCa::new("the next CA");
    let (cert, key) = next.leaf(&["127.0.0.1"], false);
    std::fs::write(pki.path("next.pem"), cert).unwrap();
    std::fs::write(pki.path("next.key"), key).unwrap();
    std::fs::write(pki.path("next-ca.pem"), next.pem()).unwrap();
    let status = |ca: &str, credentials: &str| {
        let ca = pki.path(ca);
        curl(
            &ns,
            &["--cacert", ca.to_str().unwrap(), "-u", credentials, METRICS],
        )
        .2
    };
    assert_eq!(status("ca.pem", "prometheus:first"), 200);

    // Another certificate and another password, in one edit of the file.
    let changed = web_yml(
        "next.pem",
        "next.key",
        &basic_auth_users("prometheus", "second"),
    );
    replace(&pki.path("web.yml"), &changed);
    let started = Instant::now();
    while status("next-ca.pem", "prometheus:second") != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the changed web config was not served within 5 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("changed web config served after {:?}", started.elapsed());
    assert_eq!(status("next-ca.pem", "prometheus:first"), 401);
    assert_ne!(status("ca.pem", "prometheus:second"), 200, "the old CA");

    // Files that do not load keep the last good configuration: a hash that
    // is not bcrypt, then a certificate file that is missing.
    let bad = [
        web_yml(
            "next.pem",
            "next.key",
            "basic_auth_users:\n  prometheus: plain\n",
        ),
        web_yml(
            "gone.pem",
            "next.key",
            &basic_auth_users("prometheus", "third"),
        ),
    ];
    for (failures, bad) in bad.iter().enumerate() {
        replace(&pki.path("web.yml"), bad);
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(status("next-ca.pem", "prometheus:second"), 200, "{bad}");
        assert_eq!(status("next-ca.pem", "prometheus:third"), 401, "{bad}");
        let ca = pki.path("next-ca.pem");
        let (_, body, _) = curl(
            &ns,
            &[
                "--cacert",
                ca.to_str().unwrap(),
                "-u",
                "prometheus:second",
                METRICS,
            ],
        );
        let metrics = Metrics::parse(&body);
        assert_eq!(
            metrics.value("collector_http_web_config_reload_failures_total", &[]),
            (failures + 1) as f64,
            "{bad}"
        );
    }
    let (_, stderr) = collector.stop();
    assert!(stderr.contains("web config reloaded"), "{stderr}");
    assert!(stderr.contains("user `prometheus`"), "{stderr}");
    assert!(stderr.contains("gone.pem"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
