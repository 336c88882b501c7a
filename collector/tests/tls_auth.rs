//! `--web.config.file`: TLS, certificate rotation, mutual TLS and basic
//! auth on the main listener, checked with curl inside a namespace the test
//! creates; a bad file stops the start with an error naming the problem.

mod common;

#[path = "tls_auth/attack.rs"]
mod attack;
#[path = "tls_auth/reload.rs"]
mod reload;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// curl inside `ns`; its exit code, and the body and status when it got
/// an HTTP answer.
fn curl(ns: &Netns, args: &[&str]) -> (i32, String, u16) {
    let output = Command::new("ip")
        .args(["netns", "exec", &ns.name, "curl", "-sS", "--max-time", "10"])
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("REQUIRED TOOL MISSING: curl ({e}); cargo xtask setup installs it")
        });
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let (body, status) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    (
        output.status.code().unwrap_or(-1),
        body.to_string(),
        status.trim().parse().unwrap_or(0),
    )
}

const METRICS: &str = "https://127.0.0.1:2112/metrics";

#[test]
fn https_with_basic_auth_admits_only_the_right_credentials_on_every_path() {
    require_root();
    let ns = Netns::new("tlsauth");
    let pki = TlsFixture::new("", &basic_auth_users("prometheus", "scrape-me"));
    let ca = pki.path("ca.pem");
    let ca = ca.to_str().unwrap();
    let _collector =
        CollectorProcess::start(&ns, &["--no-ebpf", "--web.config.file", &pki.web_config()]);

    let (_, body, status) = curl(
        &ns,
        &["--cacert", ca, "-u", "prometheus:scrape-me", METRICS],
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("network_interface_stats_mtu{interface=\"lo\""),
        "{body:.300}"
    );
    let (_, _, status) = curl(
        &ns,
        &[
            "--cacert",
            ca,
            "--compressed",
            "-u",
            "prometheus:scrape-me",
            METRICS,
        ],
    );
    assert_eq!(status, 200, "gzip over TLS");

    for (credentials, url) in [
        (None, METRICS),
        (Some("prometheus:wrong"), METRICS),
        (Some("someone:scrape-me"), METRICS),
        (None, "https://127.0.0.1:2112/healthz"),
    ] {
        let mut args = vec!["--cacert", ca, "-i", url];
        if let Some(credentials) = credentials {
            args.extend(["-u", credentials]);
        }
        let (_, body, status) = curl(&ns, &args);
        assert_eq!(status, 401, "{credentials:?} {url}: {body}");
        assert!(
            body.to_lowercase().contains("www-authenticate: basic"),
            "{body}"
        );
    }
    // Plain HTTP on the TLS port gets no HTTP answer; an unknown CA no handshake.
    let (code, _, status) = curl(&ns, &["http://127.0.0.1:2112/metrics"]);
    assert!(code != 0 && status != 200, "plain HTTP answered {status}");
    let (code, _, _) = curl(&ns, &["-u", "prometheus:scrape-me", METRICS]);
    assert_eq!(code, 60, "the certificate is not trusted without the CA");
    // The kubelet's probes: plain HTTP, no credentials, on their own port.
    let (_, body, status) = curl(&ns, &["http://127.0.0.1:2113/healthz"]);
    assert_eq!((status, body.as_str()), (200, "ok\n"));
}

#[test]
fn a_rotated_certificate_is_served_without_a_restart() {
    require_root();
    let ns = Netns::new("tlsrot");
    let pki = TlsFixture::new("", "");
    let _collector =
        CollectorProcess::start(&ns, &["--no-ebpf", "--web.config.file", &pki.web_config()]);
    let next = TestCa::new("the next CA");
    let next_ca = pki.path("next-ca.pem");
    std::fs::write(&next_ca, next.pem()).unwrap();
    let trusts =
        |ca: &std::path::Path| curl(&ns, &["--cacert", ca.to_str().unwrap(), METRICS]).2 == 200;
    assert!(trusts(&pki.path("ca.pem")));
    assert!(!trusts(&next_ca));

    pki.install_server_cert(&next);
    // Reloaded at the next handshake (bounded wait, in case the file's
    // mtime granularity hides the change for a moment).
    let deadline = Instant::now() + Duration::from_secs(5);
    while !trusts(&next_ca) {
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!trusts(&pki.path("ca.pem")), "the old certificate is gone");

    // A rotation that does not load keeps the last good certificate.
    replace(&pki.path("server.pem"), "not a certificate\n");
    for _ in 0..3 {
        assert!(trusts(&next_ca), "still served after a broken rotation");
    }
    let (_, stderr) = _collector.stop();
    assert!(stderr.contains("TLS certificate reloaded"), "{stderr}");
    assert!(stderr.contains("do not load"), "{stderr}");
}

#[test]
fn mutual_tls_admits_only_certificates_of_the_client_ca() {
    require_root();
    let ns = Netns::new("mtls");
    let tls_extra =
        "  client_ca_file: clients.pem\n  client_auth_type: RequireAndVerifyClientCert\n";
    let pki = TlsFixture::new(tls_extra, "");
    let clients = TestCa::new("client CA");
    std::fs::write(pki.path("clients.pem"), clients.pem()).unwrap();
    for (name, ca) in [("good", &clients), ("stranger", &TestCa::new("another CA"))] {
        let (cert, key) = ca.leaf(&["prometheus"], true);
        std::fs::write(pki.path(&format!("{name}.pem")), cert).unwrap();
        std::fs::write(pki.path(&format!("{name}.key")), key).unwrap();
    }
    let _collector =
        CollectorProcess::start(&ns, &["--no-ebpf", "--web.config.file", &pki.web_config()]);
    let ca = pki.path("ca.pem");
    let with = |name: Option<&str>| {
        let mut args = vec!["--cacert".to_string(), ca.to_str().unwrap().to_string()];
        if let Some(name) = name {
            for (flag, ext) in [("--cert", "pem"), ("--key", "key")] {
                args.push(flag.to_string());
                args.push(
                    pki.path(&format!("{name}.{ext}"))
                        .to_str()
                        .unwrap()
                        .to_string(),
                );
            }
        }
        args.push(METRICS.to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(&ns, &args)
    };
    assert_eq!(with(Some("good")).2, 200);
    for refused in [None, Some("stranger")] {
        let (code, body, status) = with(refused);
        assert!(
            code != 0 && status != 200,
            "{refused:?}: {code} {status} {body}"
        );
    }
}

/// A start with `web.yml` holding `config` (after `prepare` ran in the
/// fixture's directory) exits 1 within seconds, saying `expected`.
fn refused(ns: &Netns, config: &str, prepare: fn(&std::path::Path), expected: &str) {
    let pki = TlsFixture::new("", "");
    std::fs::write(pki.path("web.yml"), config).unwrap();
    prepare(pki.dir.path());
    let started = Instant::now();
    let output = collector_command("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "timeout",
            "30",
            COLLECTOR,
            "--no-ebpf",
        ])
        .args([
            "--listen",
            "127.0.0.1:2112",
            "--health-listen",
            "127.0.0.1:2113",
        ])
        .args(["--web.config.file", &pki.web_config()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{config:?}: {stderr}");
    assert!(
        stderr.contains(expected),
        "{config:?}: expected {expected:?} in {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn a_bad_web_config_stops_the_start_naming_the_problem() {
    require_root();
    let ns = Netns::new("badweb");
    let tls = "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n";
    type Prepare = fn(&std::path::Path);
    let nothing: Prepare = |_| {};
    let cases: [(String, Prepare, &str); 7] = [
        ("tls_server_config: [".into(), nothing, "web.yml"),
        (
            format!("{tls}  cipher_suites: []\n"),
            nothing,
            "unknown field `cipher_suites`",
        ),
        (
            "basic_auth_users:\n  alice: hunter2\n".into(),
            nothing,
            "user `alice`",
        ),
        (
            tls.replace("server.pem", "missing.pem"),
            nothing,
            "missing.pem",
        ),
        (
            tls.into(),
            |dir| std::fs::write(dir.join("server.pem"), "garbage\n").unwrap(),
            "holds no certificate",
        ),
        (
            tls.into(),
            |dir| std::fs::write(dir.join("server.key"), "garbage\n").unwrap(),
            "server.key",
        ),
        (
            tls.into(),
            |dir| {
                std::fs::remove_file(dir.join("server.pem")).unwrap();
                std::fs::create_dir(dir.join("server.pem")).unwrap();
            },
            "server.pem",
        ),
    ];
    for (config, prepare, expected) in cases {
        refused(&ns, &config, prepare, expected);
    }
    let output = collector_command("ip")
        .args(["netns", "exec", &ns.name, COLLECTOR, "--no-ebpf"])
        .args(["--web.config.file", "/nonexistent/web.yml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/web.yml"));
}
