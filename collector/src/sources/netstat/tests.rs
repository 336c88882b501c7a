//! The MIB parser on files the kernel wrote (`tests/fixtures/netstat/`),
//! their malformed variants, the cgroup rule, and the source over a
//! directory laid out like `/proc`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::parse::{parse_into, ParseError};
use super::sandbox::{ids_in_cgroup, usable_id};
use super::*;
use crate::model::{PodIdentity, NETSTAT_FIELDS};

const SNMP: &str = include_str!("../../../tests/fixtures/netstat/snmp-6.18");
const NETSTAT: &str = include_str!("../../../tests/fixtures/netstat/netstat-6.18");
const SNMP6: &str = include_str!("../../../tests/fixtures/netstat/snmp6-6.18");

/// Every served counter of the fixtures, read off the files by eye.
const EXPECTED: [(&str, u64); 34] = [
    ("Tcp_ActiveOpens", 9),
    ("Tcp_PassiveOpens", 2),
    ("Tcp_CurrEstab", 4),
    ("Tcp_InSegs", 22),
    ("Tcp_OutSegs", 18),
    ("Tcp_RetransSegs", 4),
    ("Tcp_InErrs", 0),
    ("Tcp_OutRsts", 3),
    ("TcpExt_SyncookiesSent", 0),
    ("TcpExt_SyncookiesRecv", 0),
    ("TcpExt_SyncookiesFailed", 0),
    ("TcpExt_ListenOverflows", 8),
    ("TcpExt_ListenDrops", 8),
    ("TcpExt_TCPSynRetrans", 4),
    ("TcpExt_TCPTimeouts", 4),
    ("TcpExt_TCPOFOQueue", 0),
    ("TcpExt_TCPRcvQDrop", 0),
    ("Udp_InDatagrams", 0),
    ("Udp_OutDatagrams", 12),
    ("Udp_NoPorts", 5),
    ("Udp_InErrors", 0),
    ("Udp_RcvbufErrors", 0),
    ("Udp_SndbufErrors", 0),
    ("Udp6_InDatagrams", 0),
    ("Udp6_OutDatagrams", 13),
    ("Udp6_NoPorts", 4),
    ("Udp6_InErrors", 0),
    ("Udp6_RcvbufErrors", 0),
    ("Udp6_SndbufErrors", 0),
    ("Ip_Forwarding", 2),
    ("IpExt_InOctets", 11861),
    ("IpExt_OutOctets", 11861),
    ("Icmp_InMsgs", 5),
    ("Icmp_OutMsgs", 5),
];

fn parse_all(
    snmp: &str,
    netstat: &str,
    snmp6: &str,
) -> Result<BTreeMap<&'static str, u64>, ParseError> {
    let mut counters = BTreeMap::new();
    parse_into(NetstatFile::Snmp, snmp, &mut counters)?;
    parse_into(NetstatFile::Netstat, netstat, &mut counters)?;
    parse_into(NetstatFile::Snmp6, snmp6, &mut counters)?;
    Ok(counters)
}

#[test]
fn the_kernels_files_give_every_served_counter_exactly() {
    let counters = parse_all(SNMP, NETSTAT, SNMP6).unwrap();
    let expected: BTreeMap<&str, u64> = EXPECTED.into_iter().collect();
    assert_eq!(counters, expected);
    // The table and the expectation name the same fields.
    let keys: Vec<&str> = NETSTAT_FIELDS.iter().map(|f| f.key).collect();
    assert_eq!(keys.len(), EXPECTED.len());
    assert!(keys.iter().all(|k| expected.contains_key(k)));
}

#[test]
fn a_field_an_older_kernel_lacks_is_left_out() {
    // Without TCPRcvQDrop (added in 5.0): its column gone from both lines.
    let netstat: String = NETSTAT
        .lines()
        .map(|line| {
            if !line.starts_with("TcpExt:") {
                return line.to_string();
            }
            let words: Vec<&str> = line.split(' ').collect();
            let header = NETSTAT.lines().next().unwrap();
            let at = header.split(' ').position(|w| w == "TCPRcvQDrop").unwrap();
            let kept: Vec<&str> = words
                .iter()
                .enumerate()
                .filter(|(n, _)| *n != at)
                .map(|(_, w)| *w)
                .collect();
            kept.join(" ")
        })
        .map(|l| l + "\n")
        .collect();
    let counters = parse_all(SNMP, &netstat, SNMP6).unwrap();
    assert!(!counters.contains_key("TcpExt_TCPRcvQDrop"));
    assert_eq!(counters.len(), EXPECTED.len() - 1);
    assert_eq!(counters["TcpExt_ListenOverflows"], 8);
    // A kernel without IPv6 has no snmp6: the rest stands.
    let counters = parse_all(SNMP, NETSTAT, "").unwrap();
    assert_eq!(counters.len(), EXPECTED.len() - 6);
}

#[test]
fn malformed_files_are_errors_naming_the_line() {
    let cut = |text: &str, keep: usize| -> String { text.chars().take(keep).collect() };
    // A line of Tcp values shorter than its names.
    let at = SNMP.find("Tcp: 1").unwrap() + 12;
    let error = parse_all(&(cut(SNMP, at) + "\n"), NETSTAT, SNMP6).unwrap_err();
    assert!(
        matches!(error, ParseError::Mismatch { ref section, .. } if section == "Tcp"),
        "{error}"
    );
    // Cut after a line of names.
    let at = SNMP.find("Udp: InDatagrams").unwrap();
    let at = at + SNMP[at..].find('\n').unwrap() + 1;
    let error = parse_all(&cut(SNMP, at), NETSTAT, SNMP6).unwrap_err();
    assert!(
        matches!(error, ParseError::Unpaired { line: 9, .. }),
        "{error}"
    );
    // A served counter that is not a number, and one that is negative.
    for bad in ["x", "-1", "18446744073709551616"] {
        let snmp = SNMP.replace("Icmp: 5 ", &format!("Icmp: {bad} "));
        let error = parse_all(&snmp, NETSTAT, SNMP6).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("net/snmp: line 4: Icmp_InMsgs is `{bad}`, not a counter")
        );
    }
    // Not the kernel's layout at all.
    let error = parse_all("no colon here\n", NETSTAT, SNMP6).unwrap_err();
    assert!(matches!(error, ParseError::Line { line: 1, .. }), "{error}");
    let error = parse_all(SNMP, NETSTAT, "Udp6InDatagrams 1 2\n").unwrap_err();
    assert!(matches!(error, ParseError::Line { line: 1, .. }), "{error}");
    // Unserved fields are never parsed: `Tcp MaxConn` is -1.
    assert!(SNMP.contains("Tcp: 1 200 120000 -1 "));
}

#[test]
fn a_file_cut_anywhere_is_an_error_or_gives_only_true_values() {
    let expected: BTreeMap<&str, u64> = EXPECTED.into_iter().collect();
    for (file, text) in [
        (NetstatFile::Snmp, SNMP),
        (NetstatFile::Netstat, NETSTAT),
        (NetstatFile::Snmp6, SNMP6),
    ] {
        for cut in (0..text.len()).filter(|at| text.is_char_boundary(*at)) {
            let mut counters = BTreeMap::new();
            if parse_into(file, &text[..cut], &mut counters).is_ok() {
                for (key, value) in &counters {
                    assert_eq!(expected[key], *value, "{key} from {file:?} cut at {cut}");
                }
            }
        }
    }
    let error = parse_all(&SNMP[..SNMP.len() - 1], NETSTAT, SNMP6).unwrap_err();
    assert_eq!(
        error.to_string(),
        "net/snmp: the last line is not terminated: the file was cut"
    );
}

#[test]
fn sandbox_ids_are_found_as_runtimes_write_cgroups() {
    let id = "5f0c4e8ba1d2c3b4a5968778695a4b3c2d1e0f0a1b2c3d4e5f60718293a4b5c6";
    assert!(usable_id(id));
    let layouts = [
        // containerd with cgroupfs (the tests' containerd).
        format!("0::/k8s.io/{id}\n"),
        // containerd with the systemd driver, as AKS runs it.
        format!("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod8d3f1a2b_4c5d_6e7f_8091_a2b3c4d5e6f7.slice/cri-containerd-{id}.scope\n"),
        // CRI-O, cgroup v1.
        format!("12:pids:/kubepods/burstable/pod8d3f1a2b-4c5d-6e7f-8091-a2b3c4d5e6f7/crio-{id}\n1:name=systemd:/kubepods/burstable/pod8d3f1a2b-4c5d-6e7f-8091-a2b3c4d5e6f7/crio-{id}\n"),
    ];
    for layout in &layouts {
        let ids: Vec<&str> = ids_in_cgroup(layout).collect();
        assert!(ids.iter().all(|found| *found == id), "{layout}: {ids:?}");
        assert!(!ids.is_empty(), "{layout}");
    }
    // Another container of the pod, or a prefix of the id, is not it.
    assert!(!ids_in_cgroup(&format!("0::/k8s.io/{id}0\n")).any(|f| f == id));
    assert!(!ids_in_cgroup(&format!("0::/k8s.io/{}\n", &id[..40])).any(|f| f == id));
    // What cannot be looked for: empty, short, not hex.
    assert!(!usable_id(""));
    assert!(!usable_id("5f0c4e8b"));
    assert!(!usable_id(&id.replace('5', "/")));
}

/// A process under `proc` as procfs lays it out: its cgroup and MIB files.
fn process(proc: &Path, pid: u32, sandbox: &str, snmp: &str) {
    let dir = proc.join(pid.to_string());
    std::fs::create_dir_all(dir.join("net")).unwrap();
    std::fs::write(dir.join("cgroup"), format!("0::/k8s.io/{sandbox}\n")).unwrap();
    std::fs::write(dir.join("net/snmp"), snmp).unwrap();
    std::fs::write(dir.join("net/netstat"), NETSTAT).unwrap();
    std::fs::write(dir.join("net/snmp6"), SNMP6).unwrap();
}

fn pod(name: &str, sandbox: &str) -> PodNamespace {
    PodNamespace {
        identity: PodIdentity {
            namespace: "default".into(),
            pod: name.into(),
            pod_uid: format!("uid-{name}"),
            container_id: sandbox.into(),
            pod_interface: None,
            network: None,
        },
        interfaces: HashMap::new(),
        created: None,
    }
}

#[test]
fn each_pod_is_read_on_its_own_and_failures_count_once() {
    // Held files (the default) and files opened at each read (past the
    // open-files share) behave alike until a process exits.
    for max_held_files in [usize::MAX, 0] {
        let proc = tempfile::tempdir().unwrap();
        let (good, bad, gone) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
        process(proc.path(), 100, &good, SNMP);
        process(
            proc.path(),
            200,
            &bad,
            &SNMP.replace("Icmp: 5 ", "Icmp: x "),
        );
        // A process of another container, not a sandbox: never read.
        process(proc.path(), 300, &"d".repeat(64), SNMP);
        let namespaces = HashMap::from([
            (1, pod("good", &good)),
            (2, pod("bad", &bad)),
            (3, pod("gone", &gone)),
            (4, pod("short-id", "abc")),
        ]);
        let mut source = PodNetstatSource::new(proc.path().to_path_buf());
        source.max_held_files = max_held_files;
        for round in 0..3 {
            if round == 1 {
                // New counts are read, from the same files or anew.
                std::fs::write(
                    proc.path().join("100/net/snmp"),
                    SNMP.replace("Icmp: 5 ", "Icmp: 6 "),
                )
                .unwrap();
            }
            let (pods, status) = source.read(&namespaces);
            assert_eq!(pods.len(), 1, "{pods:?}");
            assert_eq!(pods[0].pod.pod, "good");
            assert_eq!(pods[0].netns, 1);
            assert_eq!(pods[0].counters.len(), 34);
            assert_eq!(
                pods[0].counters["Icmp_InMsgs"],
                if round == 0 { 5 } else { 6 }
            );
            let errors =
                BTreeMap::from([("malformed", 1), ("proc", 0), ("process", 2), ("read", 0)]);
            assert_eq!(status.errors_total, errors, "counted once, not per read");
        }
        let held = source.state.lock().unwrap().held.len();
        assert_eq!(held, if max_held_files == 0 { 0 } else { 2 });
        // The good pod's process exits. Held files still read its
        // namespace (the kernel's file holds it); without them its files
        // are not read through a new process, and it is a new failure.
        std::fs::remove_dir_all(proc.path().join("100")).unwrap();
        let (pods, status) = source.read(&namespaces);
        if max_held_files == 0 {
            assert!(pods.is_empty(), "{pods:?}");
            assert_eq!(status.errors_total["process"], 3);
        } else {
            assert_eq!(pods.len(), 1, "{pods:?}");
            assert_eq!(status.errors_total["process"], 2);
        }
        // The pod is gone from the list: its files are closed.
        let (pods, _) = source.read(&HashMap::from([(2, pod("bad", &bad))]));
        assert!(pods.is_empty());
        assert!(source.state.lock().unwrap().held.len() <= 1);
    }
}

#[test]
fn serving_the_default_set_reads_no_snmp6_and_keeps_every_default_counter() {
    let proc = tempfile::tempdir().unwrap();
    let id = "e".repeat(64);
    process(proc.path(), 100, &id, SNMP);
    // A malformed snmp6 would fail the pod if it were read.
    std::fs::write(proc.path().join("100/net/snmp6"), "Udp6InDatagrams x\n").unwrap();
    let namespaces = HashMap::from([(1, pod("lean", &id))]);

    let lean = PodNetstatSource::new(proc.path().to_path_buf()).serving(&[NetstatSet::Default]);
    let (pods, status) = lean.read(&namespaces);
    assert_eq!(pods.len(), 1, "{:?}", status.errors_total);
    let default_keys: Vec<&str> = NETSTAT_FIELDS
        .iter()
        .filter(|f| f.set == NetstatSet::Default)
        .map(|f| f.key)
        .collect();
    assert!(!default_keys.is_empty());
    for key in &default_keys {
        assert!(pods[0].counters.contains_key(key), "{key} missing");
    }
    assert!(pods[0].counters.keys().all(|k| !k.starts_with("Udp6_")));

    // Every file, as `snapshot` reads them: the bad snmp6 fails the pod.
    let all = PodNetstatSource::new(proc.path().to_path_buf());
    let (pods, status) = all.read(&namespaces);
    assert!(pods.is_empty());
    assert_eq!(status.errors_total["malformed"], 1);
}
