//! `cargo xtask kernels`: the privileged probe tests on real Debian kernels
//! (5.10, 6.1, 6.12) booted under qemu with virtme-ng, next to the host's own.
//!
//! Built once on the host (BPF object, then the test binaries); each guest
//! boots a stock `linux-image-*-amd64` kernel with the host's root
//! filesystem shared read-only and runs the already-built test binaries
//! with name filters, one test at a time. Results, captured tracefs
//! `format` files and logs come back through one read-write directory per
//! kernel under `target/kernels/run/`.
//!
//! Everything that does not depend on the checkout is cached outside it, in
//! [`CACHE`]: the kernel packages (downloaded with apt and only extracted,
//! never installed: virtme-ng finds the modules next to the image, so
//! neither /boot nor the host's /lib/modules changes), virtme-ng's
//! virtualenv, and the cargo target directories of the BPF object and of
//! the test binaries. A fresh clone (as CI makes) then rebuilds only the
//! workspace's own crates. A lock on the cache serialises concurrent runs.

mod binaries;
mod guest;
mod install;
mod report;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{setup, workspace_root};
use report::KernelReport;

/// Survives a fresh clone (CI clones main into an empty directory), like
/// fresh-check's debootstrap base in /var/tmp/collector-fresh-check. The
/// guests see it through `--rodir`: virtme-ng mounts a tmpfs on /var/tmp.
const CACHE: &str = "/var/tmp/collector-kernels";

/// Debian packages on the host: qemu to emulate, busybox for the initramfs
/// virtme-ng builds (9p and virtio modules load from it), kmod for depmod
/// on the host and modprobe in the guest (veth, nf_tables, 8021q, bonding
/// are modules), and what the guest suite drives from the shared root:
/// `ip`, bpftool, nft, setpriv.
const HOST_PACKAGES: [&str; 8] = [
    "qemu-system-x86",
    "busybox-static",
    "kmod",
    "iproute2",
    "procps",
    "bpftool",
    "nftables",
    "util-linux",
];

#[derive(Clone, Copy, PartialEq)]
enum Suite {
    /// The machine's own sources (bookworm).
    Host,
    /// Bullseye, through a sources list of its own in the cache.
    Bullseye,
}

struct KernelSpec {
    /// Version as given on the command line and used for fixture directories.
    name: &'static str,
    /// Package names of this series; the newest ABI found is used.
    prefix: &'static str,
    suffix: &'static str,
    suite: Suite,
}

/// The generic `-amd64` flavour: the `-cloud-amd64` one has no 9p module,
/// which virtme-ng needs to share the root filesystem.
const KERNELS: [KernelSpec; 3] = [
    KernelSpec {
        name: "5.10",
        prefix: "linux-image-5.10.0-",
        suffix: "-amd64",
        suite: Suite::Bullseye,
    },
    KernelSpec {
        name: "6.1",
        prefix: "linux-image-6.1.0-",
        suffix: "-amd64",
        suite: Suite::Host,
    },
    KernelSpec {
        name: "6.12",
        prefix: "linux-image-6.12.",
        suffix: "+deb12-amd64",
        suite: Suite::Host,
    },
];

/// The focused in-guest suite: emulated code is slow, so only the tests that
/// prove the probes on this kernel. (test binary, test name). Each runs with
/// `--exact --include-ignored`: the VLAN and bond tests are `#[ignore]`d on
/// the host, whose kernel has neither 802.1Q nor bonding.
const TESTS: [(&str, &str); 17] = [
    (
        "ebpf_probes",
        "probes_count_exact_udp_traffic_on_both_ends_of_a_veth_pair",
    ),
    (
        "ebpf_probes",
        "drops_carry_the_kernel_reason_no_socket_and_netfilter",
    ),
    (
        "ebpf_probes",
        "traffic_in_an_unrelated_namespace_is_not_counted",
    ),
    (
        "ebpf_probes",
        "drops_only_attaches_kfree_skb_and_serves_no_traffic_families",
    ),
    ("ebpf_probes", "shutdown_detaches_every_program"),
    (
        "reliability",
        "a_missing_tracepoint_disables_only_its_probe",
    ),
    (
        "hostile_input",
        "after_attach_the_server_holds_no_capability_yet_counts_and_prunes",
    ),
    (
        "stacked_devices",
        "vlan_receive_is_counted_on_the_lower_veth_only",
    ),
    (
        "stacked_devices",
        "bond_receive_is_counted_on_the_slave_only",
    ),
    (
        "pod_drops",
        "drops_inside_a_pod_are_its_own_by_kernel_reason_exactly",
    ),
    (
        "pod_drops",
        "drops_in_a_namespace_no_pod_owns_never_reach_a_pod",
    ),
    (
        "pod_drops",
        "a_pod_created_on_a_deleted_pods_namespace_inode_starts_at_zero",
    ),
    (
        "pod_drops",
        "without_tracefs_the_btf_typed_probe_names_pod_drops_from_btf",
    ),
    (
        "pod_drops",
        "out_of_order_and_fragment_queue_drops_are_the_pods",
    ),
    (
        "pod_drops",
        "drops_while_a_namespace_is_torn_down_are_never_its_inodes",
    ),
    (
        "pod_tcp",
        "connect_outcomes_retransmits_and_resets_are_each_pods_own_exactly",
    ),
    (
        "pod_tcp",
        "tcp_events_of_a_namespace_no_pod_owns_never_reach_a_pod_and_a_new_pod_starts_at_zero",
    ),
];

/// tracefs events whose `format` files are captured as fixtures.
const FORMATS: [(&str, &str); 8] = [
    ("net", "netif_receive_skb"),
    ("net", "net_dev_start_xmit"),
    ("skb", "kfree_skb"),
    ("sock", "inet_sock_set_state"),
    ("tcp", "tcp_retransmit_skb"),
    ("tcp", "tcp_retransmit_synack"),
    ("tcp", "tcp_send_reset"),
    ("tcp", "tcp_receive_reset"),
];

/// The probes' programs, in table order (rx, tx, drops, TCP: the state
/// change stands for the five TCP programs, which the same tests check).
const PROBES: [&str; 4] = [
    "netif_receive_skb",
    "net_dev_start_xmit",
    "kfree_skb",
    "inet_sock_set_state",
];

pub struct Options {
    pub kernels: Vec<String>,
    pub timeout: Duration,
    pub update_fixtures: bool,
}

pub fn run(options: &Options) -> Result<()> {
    crate::require_root("the kernel matrix (the guests run the privileged tests as root)")?;
    let selected = select(&options.kernels)?;
    let started = Instant::now();
    std::fs::create_dir_all(cache_dir())?;
    let _lock = CacheLock::acquire(&cache_dir().join("lock"))?;
    let mut phases = Vec::new();
    let phase = Instant::now();
    setup::ensure_build()?;
    setup::ensure_packages("kernel matrix tools", &HOST_PACKAGES, false)?;
    let vng = install::ensure_vng()?;
    phases.push(("tools", phase.elapsed()));
    let phase = Instant::now();
    let binaries = binaries::build()?;
    phases.push(("build", phase.elapsed()));

    let mut reports = Vec::new();
    for spec in selected {
        // A kernel that cannot be installed or booted is a failed row, not a
        // skipped one; the others still run.
        let phase = Instant::now();
        let report = match install::install_kernel(spec) {
            Ok(kernel) => guest::run_guest(spec, &kernel, &vng, &binaries, options.timeout),
            Err(error) => KernelReport::failed(spec.name, format!("{error:#}")),
        };
        phases.push((spec.name, phase.elapsed()));
        report::print_report(&report);
        if options.update_fixtures {
            report::write_fixtures(&report)?;
        }
        reports.push(report);
    }
    let table = report::markdown_table(&reports);
    let tests = report::tests_table(&reports);
    println!("\n{table}\n{tests}");
    let matrix = kernels_dir().join("matrix.md");
    std::fs::create_dir_all(kernels_dir())?;
    std::fs::write(&matrix, format!("{table}\n{tests}"))
        .with_context(|| format!("writing {}", matrix.display()))?;
    // A run over every kernel is the one docs/testing.md refers to: its
    // figures are kept where the run writes them, never copied into prose.
    if options.kernels.is_empty() {
        let docs = workspace_root().join("docs/kernels/matrix.md");
        std::fs::create_dir_all(docs.parent().expect("a file in docs/kernels"))?;
        let header = "# Kernel matrix: the last full run of `cargo xtask kernels`\n\n\
                      Written by that run; see docs/testing.md#the-kernel-matrix for what it does.\n\n";
        std::fs::write(&docs, format!("{header}{table}\n{tests}"))
            .with_context(|| format!("writing {}", docs.display()))?;
    }
    let phases: Vec<String> = phases
        .iter()
        .map(|(what, took)| format!("{what} {:.0} s", took.as_secs_f64()))
        .collect();
    eprintln!(
        "xtask kernels: matrix wall time {:.0} s ({}; table also in {})",
        started.elapsed().as_secs_f64(),
        phases.join(", "),
        matrix.display()
    );
    let failed: Vec<&str> = reports
        .iter()
        .filter(|r| !r.passed())
        .map(|r| r.name.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("kernel matrix failed on {}", failed.join(", "));
    }
    Ok(())
}

fn select(names: &[String]) -> Result<Vec<&'static KernelSpec>> {
    if names.is_empty() {
        return Ok(KERNELS.iter().collect());
    }
    names
        .iter()
        .map(|name| {
            KERNELS.iter().find(|k| k.name == name).with_context(|| {
                let known: Vec<&str> = KERNELS.iter().map(|k| k.name).collect();
                format!("unknown kernel {name:?}; known: {}", known.join(", "))
            })
        })
        .collect()
}

/// This checkout's results: run directories and matrix.md.
fn kernels_dir() -> PathBuf {
    workspace_root().join("target/kernels")
}

fn cache_dir() -> PathBuf {
    PathBuf::from(CACHE)
}

/// An exclusive flock(2) on the cache, held for the whole run: two runs
/// (two clones, or CI next to a developer) share the cached target
/// directories and kernels, and one must not rebuild a binary the other's
/// guest is running. Released when the file closes, even on a crash.
struct CacheLock(#[allow(dead_code)] std::fs::File);

extern "C" {
    fn flock(fd: i32, operation: i32) -> i32;
}

impl CacheLock {
    fn acquire(path: &Path) -> Result<CacheLock> {
        use std::os::fd::AsRawFd;
        const LOCK_EX: i32 = 2;
        const LOCK_NB: i32 = 4;
        let file =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        // SAFETY: flock(2) on a descriptor this function owns.
        if unsafe { flock(file.as_raw_fd(), LOCK_EX | LOCK_NB) } != 0 {
            eprintln!(
                "xtask kernels: another run holds {}; waiting for it",
                path.display()
            );
            // SAFETY: as above, blocking this time.
            if unsafe { flock(file.as_raw_fd(), LOCK_EX) } != 0 {
                bail!(
                    "flock {}: {}",
                    path.display(),
                    std::io::Error::last_os_error()
                );
            }
        }
        Ok(CacheLock(file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The guest runs `<target> --exact <test>`, which matches a test only
    /// by its full path: each one must be a `#[test]` at the root of its
    /// target's crate (tests/<target>.rs or tests/<target>/main.rs), not in a
    /// module, or the guest would run nothing and report it as a failure.
    #[test]
    fn every_matrix_test_is_a_root_test_of_its_target() {
        let tests_dir = crate::workspace_root().join("collector/tests");
        for (target, test) in TESTS {
            let file = [
                tests_dir.join(format!("{target}.rs")),
                tests_dir.join(target).join("main.rs"),
            ]
            .into_iter()
            .find(|path| path.is_file())
            .unwrap_or_else(|| panic!("no test target {target} in {}", tests_dir.display()));
            let source = std::fs::read_to_string(&file).unwrap();
            let lines: Vec<&str> = source.lines().collect();
            let signature = format!("fn {test}() {{");
            // The attributes right above the function, `#[test]` among them
            // (with `#[ignore]` for the ones only the matrix runs).
            let declared = lines
                .iter()
                .position(|line| *line == signature)
                .is_some_and(|at| {
                    lines[..at]
                        .iter()
                        .rev()
                        .take_while(|line| line.starts_with("#["))
                        .any(|line| *line == "#[test]")
                });
            assert!(
                declared,
                "{test} is not a root #[test] of {}",
                file.display()
            );
        }
    }
}
