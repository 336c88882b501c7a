//! What a guest left in its run directory, read back into a report: the
//! console lines, the fixtures, and the matrix tables.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::{FORMATS, PROBES, TESTS};
use crate::workspace_root;

#[derive(Default)]
pub struct KernelReport {
    pub name: String,
    pub release: String,
    /// Why the kernel could not be installed, booted or finished.
    pub failure: Option<String>,
    /// vng start to guest power-off.
    pub seconds: f64,
    /// Guest uptime when its script started (kernel boot and virtme init).
    boot_seconds: Option<f64>,
    /// The all-probes `collector snapshot` (BTF parse, load, attach).
    snapshot_seconds: Option<f64>,
    /// (test, passed, seconds)
    tests: Vec<(String, bool, f64)>,
    /// From that snapshot: (program, flavour, attached, error)
    attachments: Vec<Attachment>,
    unprivileged_bpf_disabled: String,
    kfree_skb_has_reason: Option<bool>,
    pub run_dir: PathBuf,
}

struct Attachment {
    program: String,
    flavour: String,
    attached: bool,
    error: Option<String>,
}

impl KernelReport {
    pub fn new(name: &str, release: &str, run_dir: PathBuf) -> KernelReport {
        KernelReport {
            name: name.into(),
            release: release.into(),
            run_dir,
            ..Default::default()
        }
    }

    pub fn failed(name: &str, why: String) -> KernelReport {
        KernelReport {
            name: name.into(),
            failure: Some(why),
            ..Default::default()
        }
    }

    pub fn passed(&self) -> bool {
        self.failure.is_none()
            && self.tests.len() == TESTS.len()
            && self.tests.iter().all(|(_, ok, _)| *ok)
    }

    fn test_passed(&self, name: &str) -> Option<bool> {
        self.tests
            .iter()
            .find(|(test, _, _)| test == name)
            .map(|(_, ok, _)| *ok)
    }
}

pub fn collect_results(out: &Path, report: &mut KernelReport) {
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap_or_default();
    if let Some(release) = read("release").lines().next() {
        report.release = release.to_string();
    }
    report.unprivileged_bpf_disabled = read("unprivileged_bpf_disabled").trim().to_string();
    report.boot_seconds = read("script_started").trim().parse().ok();
    report.snapshot_seconds = read("snapshot_millis")
        .trim()
        .parse::<f64>()
        .ok()
        .map(|ms| ms / 1000.0);
    if read("modules").trim() != "ok" && out.join("done").exists() {
        report.failure.get_or_insert_with(|| {
            "modprobe of the suite's modules failed in the guest (see guest.log)".into()
        });
    }
    for line in read("results").lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [test, rc, millis] = fields[..] {
            let seconds = millis.parse::<f64>().unwrap_or_default() / 1000.0;
            report.tests.push((test.to_string(), rc == "0", seconds));
        }
    }
    let kfree = read("tracefs/kfree_skb.format");
    if !kfree.is_empty() {
        report.kfree_skb_has_reason = Some(kfree.contains(" reason;"));
    }
    if let Ok(snapshot) = serde_json::from_str::<serde_json::Value>(&read("snapshot.json")) {
        let attachments = snapshot["sources"]["ebpf"]["attachments"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for a in attachments {
            report.attachments.push(Attachment {
                program: a["program"].as_str().unwrap_or_default().to_string(),
                flavour: a["flavour"].as_str().unwrap_or_default().to_string(),
                attached: a["attached"].as_bool() == Some(true),
                error: a["error"].as_str().map(str::to_string),
            });
        }
    }
}

pub fn print_report(report: &KernelReport) {
    println!(
        "\n== kernel {} ({}): boot+suite {:.0} s (boot {}, all-probes snapshot {})",
        report.name,
        report.release,
        report.seconds,
        seconds(report.boot_seconds),
        seconds(report.snapshot_seconds)
    );
    if let Some(why) = &report.failure {
        println!("   FAILED: {why}");
    }
    if !report.unprivileged_bpf_disabled.is_empty() {
        println!(
            "   kernel.unprivileged_bpf_disabled = {}",
            report.unprivileged_bpf_disabled
        );
    }
    for a in &report.attachments {
        println!(
            "   probe {} ({}): {}{}",
            a.program,
            a.flavour,
            if a.attached {
                "attached"
            } else {
                "NOT attached"
            },
            a.error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
    }
    for (_, test) in TESTS {
        match report.tests.iter().find(|(t, _, _)| t == test) {
            Some((_, ok, seconds)) => println!(
                "   {} {test} ({seconds:.1} s)",
                if *ok { "pass" } else { "FAIL" }
            ),
            None => println!("   not run {test}"),
        }
    }
    for (test, ok, _) in &report.tests {
        if !ok {
            println!(
                "   log of {test}: {}",
                report
                    .run_dir
                    .join("tests")
                    .join(format!("{test}.log"))
                    .display()
            );
        }
    }
}

pub fn write_fixtures(report: &KernelReport) -> Result<()> {
    let captured = report.run_dir.join("tracefs");
    let fixtures = workspace_root()
        .join("collector/tests/fixtures/tracefs")
        .join(&report.name);
    for (_, event) in FORMATS {
        let file = format!("{event}.format");
        let source = captured.join(&file);
        if !source.exists() {
            bail!(
                "kernel {}: no captured {} to write as a fixture",
                report.name,
                source.display()
            );
        }
        std::fs::create_dir_all(&fixtures)?;
        std::fs::copy(&source, fixtures.join(&file))?;
    }
    eprintln!(
        "xtask kernels: fixtures of {} ({}) written to {}",
        report.name,
        report.release,
        fixtures.display()
    );
    Ok(())
}

/// The suite's tests that check a probe's numbers (each under both program
/// flavours, BTF-typed and classic).
fn checks(program: &str) -> &'static [&'static str] {
    match program {
        "kfree_skb" => &[
            "drops_carry_the_kernel_reason_no_socket_and_netfilter",
            "drops_only_attaches_kfree_skb_and_serves_no_traffic_families",
        ],
        "inet_sock_set_state" => &[
            "connect_outcomes_retransmits_and_resets_are_each_pods_own_exactly",
            "tcp_events_of_a_namespace_no_pod_owns_never_reach_a_pod_and_a_new_pod_starts_at_zero",
        ],
        _ => &[
            "probes_count_exact_udp_traffic_on_both_ends_of_a_veth_pair",
            "traffic_in_an_unrelated_namespace_is_not_counted",
        ],
    }
}

/// One cell of the matrix: how the probe attached in the guest's
/// all-probes snapshot (default flavour), and whether the tests that check
/// its numbers passed there; each part says where it comes from.
fn probe_cell(report: &KernelReport, program: &str) -> String {
    if let Some(why) = &report.failure {
        if report.attachments.is_empty() && report.tests.is_empty() {
            return format!("not run: {}", why.lines().next().unwrap_or_default());
        }
    }
    let attach = match report.attachments.iter().find(|a| a.program == program) {
        None => "no snapshot result".to_string(),
        Some(a) if a.attached => format!("attached ({})", a.flavour),
        Some(a) => format!(
            "NOT attached ({}: {})",
            a.flavour,
            a.error.as_deref().unwrap_or("no error given")
        ),
    };
    let attached = report
        .attachments
        .iter()
        .any(|a| a.program == program && a.attached);
    let mut failed = Vec::new();
    let mut not_run = Vec::new();
    for test in checks(program) {
        match report.test_passed(test) {
            Some(true) => {}
            Some(false) => failed.push(*test),
            None => not_run.push(*test),
        }
    }
    let what = match (program, report.kfree_skb_has_reason) {
        ("kfree_skb", Some(true)) => "NO_SOCKET, NETFILTER_DROP exact",
        ("kfree_skb", _) => "reason=\"unknown\" exact",
        ("inet_sock_set_state", _) => "connect outcomes, retransmits, resets exact",
        _ => "exact counts",
    };
    if !failed.is_empty() {
        format!("FAIL: {attach}; {} failed", failed.join(", "))
    } else if !not_run.is_empty() {
        format!("FAIL: {attach}; {} not run", not_run.join(", "))
    } else if !attached {
        format!("FAIL: {attach}; tests passed")
    } else {
        format!("pass: {attach}; {what} (btf and classic)")
    }
}

fn seconds(value: Option<f64>) -> String {
    value.map_or_else(|| "?".into(), |s| format!("{s:.0} s"))
}

pub fn markdown_table(reports: &[KernelReport]) -> String {
    let mut table = String::from(
        "| Kernel | `netif_receive_skb` (rx) | `net_dev_start_xmit` (tx) | `kfree_skb` (drops) | `inet_sock_set_state` and `tcp:*` (TCP) | Suite | Boot | Boot+suite |\n\
         |---|---|---|---|---|---|---:|---:|\n",
    );
    for report in reports {
        let passed = report.tests.iter().filter(|(_, ok, _)| *ok).count();
        let _ = writeln!(
            table,
            "| {} (`{}`) | {} | {} | {} | {} | {passed}/{} passed | {} | {:.0} s |",
            report.name,
            report.release,
            probe_cell(report, PROBES[0]),
            probe_cell(report, PROBES[1]),
            probe_cell(report, PROBES[2]),
            probe_cell(report, PROBES[3]),
            TESTS.len(),
            seconds(report.boot_seconds),
            report.seconds
        );
    }
    table
}

/// Each test of the suite on each kernel: pass/FAIL and its seconds.
pub fn tests_table(reports: &[KernelReport]) -> String {
    let mut table = String::from("| Test |");
    let mut rule = String::from("|---|");
    for report in reports {
        let _ = write!(table, " {} |", report.name);
        rule.push_str("---|");
    }
    let _ = writeln!(table, "\n{rule}");
    let rows = TESTS
        .iter()
        .map(|(_, test)| (*test, test.to_string()))
        .chain([("", "all-probes snapshot".to_string())]);
    for (test, label) in rows {
        let _ = write!(table, "| {label} |");
        for report in reports {
            let cell = if test.is_empty() {
                seconds(report.snapshot_seconds)
            } else {
                match report.tests.iter().find(|(t, _, _)| t == test) {
                    Some((_, true, secs)) => format!("pass {secs:.0} s"),
                    Some((_, false, secs)) => format!("FAIL {secs:.0} s"),
                    None => "not run".into(),
                }
            };
            let _ = write!(table, " {cell} |");
        }
        table.push('\n');
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(attached: &[(&str, bool)], failing: &[&str]) -> KernelReport {
        let mut report = KernelReport::new("6.1", "6.1.0-57-amd64", PathBuf::new());
        report.kfree_skb_has_reason = Some(true);
        for (program, ok) in attached {
            report.attachments.push(Attachment {
                program: program.to_string(),
                flavour: "btf".into(),
                attached: *ok,
                error: (!ok).then(|| "EINVAL".into()),
            });
        }
        for (_, test) in TESTS {
            report
                .tests
                .push((test.to_string(), !failing.contains(&test), 1.0));
        }
        report
    }

    #[test]
    fn a_cell_passes_only_when_the_probe_attached_and_its_tests_passed() {
        let all = [
            ("netif_receive_skb", true),
            ("net_dev_start_xmit", true),
            ("kfree_skb", true),
        ];
        let ok = report(&all, &[]);
        assert!(ok.passed());
        assert_eq!(
            probe_cell(&ok, "netif_receive_skb"),
            "pass: attached (btf); exact counts (btf and classic)"
        );
        assert!(probe_cell(&ok, "kfree_skb").contains("NO_SOCKET"));
        let unrelated = "traffic_in_an_unrelated_namespace_is_not_counted";
        let failed = report(&all, &[unrelated]);
        assert!(!failed.passed());
        assert!(probe_cell(&failed, "net_dev_start_xmit").starts_with("FAIL"));
        assert!(probe_cell(&failed, "kfree_skb").starts_with("pass"));
        let tx_off = report(&[("kfree_skb", true), ("net_dev_start_xmit", false)], &[]);
        assert_eq!(
            probe_cell(&tx_off, "net_dev_start_xmit"),
            "FAIL: NOT attached (btf: EINVAL); tests passed"
        );
        assert!(probe_cell(&tx_off, "netif_receive_skb").contains("no snapshot result"));
    }

    #[test]
    fn the_tests_table_has_a_row_per_test_and_a_column_per_kernel() {
        let table = tests_table(&[report(&[], &["shutdown_detaches_every_program"])]);
        assert_eq!(table.lines().count(), 2 + TESTS.len() + 1);
        assert!(table.contains("| shutdown_detaches_every_program | FAIL 1 s |"));
        assert!(table.contains("| all-probes snapshot | ? |"));
    }
}
