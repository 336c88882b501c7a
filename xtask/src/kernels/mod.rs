//! `cargo xtask kernels`: the privileged probe tests on real Debian kernels
//! (5.10, 6.1, 6.12) booted under qemu with virtme-ng, next to the host's own.
//!
//! Built once on the host (BPF object, then the release test binaries);
//! each guest boots a stock `linux-image-*-amd64` kernel with the host's
//! root filesystem shared read-only and runs the already-built test
//! binaries with name filters, one test at a time. Results, captured tracefs
//! `format` files and logs come back through one read-write directory per
//! kernel under `target/kernels/run/`.
//!
//! Kernel packages are downloaded with apt and only extracted under
//! `target/kernels/`, never installed: virtme-ng finds the modules next to
//! the image (`<root>/lib/modules/<release>`) and links them into the guest,
//! so neither /boot nor the host's /lib/modules changes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{run_command, setup, workspace_root};

/// virtme-ng release the matrix was verified with.
const VIRTME_NG: &str = "virtme-ng==1.42";
/// Debian packages on the host: qemu to emulate, busybox for the initramfs
/// virtme-ng builds (9p and virtio modules load from it), kmod for depmod
/// on the host and modprobe in the guest (veth, nf_tables are modules).
const HOST_PACKAGES: [&str; 3] = ["qemu-system-x86", "busybox-static", "kmod"];

#[derive(Clone, Copy, PartialEq)]
enum Suite {
    /// The machine's own sources (bookworm).
    Host,
    /// Bullseye, through a sources list of its own under target/.
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
/// prove the probes on this kernel. (test binary, test name).
const TESTS: [(&str, &str); 7] = [
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
];

/// The test binaries [`TESTS`] needs, each once.
fn test_targets() -> impl Iterator<Item = &'static str> {
    let mut targets: Vec<&str> = TESTS.iter().map(|(target, _)| *target).collect();
    targets.dedup();
    targets.into_iter()
}

/// tracefs events whose `format` files are captured as fixtures.
const FORMATS: [(&str, &str); 3] = [
    ("net", "netif_receive_skb"),
    ("net", "net_dev_start_xmit"),
    ("skb", "kfree_skb"),
];

/// The probes' programs, in table order (rx, tx, drops).
const PROBES: [&str; 3] = ["netif_receive_skb", "net_dev_start_xmit", "kfree_skb"];

pub struct Options {
    pub kernels: Vec<String>,
    pub timeout: Duration,
    pub update_fixtures: bool,
}

pub fn run(options: &Options) -> Result<()> {
    crate::require_root("the kernel matrix (the guests run the privileged tests as root)")?;
    let selected = select(&options.kernels)?;
    let started = Instant::now();
    setup::ensure_build()?;
    setup::ensure_test_tools()?;
    setup::ensure_packages("kernel matrix tools", &HOST_PACKAGES, false)?;
    let vng = ensure_vng()?;
    let binaries = build()?;

    let mut reports = Vec::new();
    for spec in selected {
        // A kernel that cannot be installed or booted is a failed row, not a
        // skipped one; the others still run.
        let report = match install_kernel(spec) {
            Ok(kernel) => run_guest(spec, &kernel, &vng, &binaries, options.timeout),
            Err(error) => KernelReport::failed(spec.name, format!("{error:#}")),
        };
        print_report(&report);
        if options.update_fixtures {
            write_fixtures(&report)?;
        }
        reports.push(report);
    }
    let table = markdown_table(&reports);
    println!("\n{table}");
    let matrix = workspace_root().join("target/kernels/matrix.md");
    std::fs::write(&matrix, &table).with_context(|| format!("writing {}", matrix.display()))?;
    eprintln!(
        "xtask kernels: matrix wall time {:.0} s (table also in {})",
        started.elapsed().as_secs_f64(),
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

fn kernels_dir() -> PathBuf {
    workspace_root().join("target/kernels")
}

/// virtme-ng in a virtualenv of its own (never the system Python); returns
/// the venv's bin directory, which must be first on PATH (vng runs
/// virtme-run from there).
fn ensure_vng() -> Result<PathBuf> {
    let venv = workspace_root().join("target/test-tools/vng-venv");
    let bin = venv.join("bin");
    let version = Command::new(bin.join("vng")).arg("--version").output();
    let wanted = VIRTME_NG.rsplit("==").next().unwrap_or_default();
    if let Ok(out) = &version {
        if out.status.success() && String::from_utf8_lossy(&out.stdout).contains(wanted) {
            eprintln!("xtask kernels: {VIRTME_NG} present in {}", venv.display());
            return Ok(bin);
        }
    }
    eprintln!(
        "xtask kernels: installing {VIRTME_NG} into {}",
        venv.display()
    );
    run_command(
        Command::new("/usr/bin/python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv),
    )?;
    run_command(
        Command::new(bin.join("python3")).args(["-m", "pip", "install", "--quiet", VIRTME_NG]),
    )?;
    Ok(bin)
}

/// The test binaries the guests run, by target name.
struct Binaries {
    tests: Vec<(String, PathBuf)>,
    collector: PathBuf,
}

impl Binaries {
    fn test(&self, target: &str) -> Result<&Path> {
        self.tests
            .iter()
            .find(|(name, _)| name == target)
            .map(|(_, path)| path.as_path())
            .with_context(|| format!("cargo built no test binary named {target}"))
    }
}

/// Builds once on the host: the BPF object, then the collector's test
/// binaries in release (the debug collector parses the kernel's BTF too
/// slowly under emulation to become ready within the tests' 20 s), found
/// through cargo's own JSON messages rather than guessed hashes.
fn build() -> Result<Binaries> {
    crate::build_ebpf(true)?;
    eprintln!("xtask kernels: building the release test binaries");
    let output = crate::cargo()
        .args(["test", "--release", "-p", "collector", "--no-run"])
        // Only the test binaries the guests run (each links with LTO).
        .args(test_targets().flat_map(|t| ["--test", t]))
        .arg("--message-format=json")
        .stderr(Stdio::inherit())
        .output()
        .context("starting cargo test --no-run")?;
    if !output.status.success() {
        bail!("cargo test --release -p collector --no-run failed");
    }
    let mut tests = Vec::new();
    let mut collector = None;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(executable) = message["executable"].as_str() else {
            continue;
        };
        let name = message["target"]["name"].as_str().unwrap_or_default();
        let kinds = &message["target"]["kind"];
        let is_test = message["profile"]["test"].as_bool() == Some(true)
            && kinds
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "test"));
        if is_test {
            tests.push((name.to_string(), PathBuf::from(executable)));
        } else if name == "collector"
            && kinds
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"))
        {
            collector = Some(PathBuf::from(executable));
        }
    }
    let binaries = Binaries {
        tests,
        collector: collector.context("cargo reported no collector binary")?,
    };
    for (target, _) in TESTS {
        binaries.test(target)?;
    }
    Ok(binaries)
}

/// A kernel extracted under target/kernels/<package>/.
struct Kernel {
    package: String,
    release: String,
    image: PathBuf,
}

fn apt_options(suite: Suite) -> Vec<String> {
    match suite {
        Suite::Host => Vec::new(),
        Suite::Bullseye => {
            let apt = kernels_dir().join("apt-bullseye");
            vec![
                format!(
                    "-o=Dir::Etc::SourceList={}",
                    apt.join("bullseye.sources").display()
                ),
                "-o=Dir::Etc::SourceParts=/dev/null".into(),
                format!("-o=Dir::State::Lists={}", apt.join("lists").display()),
                format!("-o=Dir::Cache={}", apt.join("cache").display()),
            ]
        }
    }
}

/// Bullseye's package lists, fetched into target/ (the machine's apt setup
/// is left alone). Same form and keyring as the host's debian.sources.
fn prepare_bullseye() -> Result<()> {
    let apt = kernels_dir().join("apt-bullseye");
    for dir in ["lists/partial", "cache/archives/partial"] {
        std::fs::create_dir_all(apt.join(dir))?;
    }
    std::fs::write(
        apt.join("bullseye.sources"),
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bullseye\nComponents: main\n\
         Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
         Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bullseye-security\n\
         Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
    )?;
    run_command(
        Command::new("apt-get")
            .args(apt_options(Suite::Bullseye))
            .args(["update", "-q"]),
    )
}

/// Package names of `spec`'s series the suite offers.
fn candidates(spec: &KernelSpec) -> Result<Vec<String>> {
    let pattern = format!(
        "^{}[0-9]+{}$",
        regex_escape(spec.prefix),
        regex_escape(spec.suffix)
    );
    let out = Command::new("apt-cache")
        .args(apt_options(spec.suite))
        .args(["search", "--names-only", &pattern])
        .output()
        .context("starting apt-cache")?;
    if !out.status.success() {
        bail!(
            "apt-cache search {pattern} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect())
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| match c {
            '.' | '+' => vec!['\\', c],
            c => vec![c],
        })
        .collect()
}

/// The number between the series prefix and suffix: the ABI (6.1.0-57) or
/// the point release (6.12.117).
fn abi(spec: &KernelSpec, package: &str) -> Option<u64> {
    package
        .strip_prefix(spec.prefix)?
        .strip_suffix(spec.suffix)?
        .parse()
        .ok()
}

fn install_kernel(spec: &KernelSpec) -> Result<Kernel> {
    if spec.suite == Suite::Bullseye {
        prepare_bullseye()?;
    }
    let mut found = candidates(spec)?;
    if found.is_empty() && spec.suite == Suite::Host {
        run_command(Command::new("apt-get").args(["update", "-q"]))?;
        found = candidates(spec)?;
    }
    let package = found
        .into_iter()
        .filter_map(|p| abi(spec, &p).map(|n| (n, p)))
        .max()
        .map(|(_, p)| p)
        .with_context(|| {
            format!(
                "no {}N{} package in apt (kernel {} cannot be installed)",
                spec.prefix, spec.suffix, spec.name
            )
        })?;
    let release = package
        .strip_prefix("linux-image-")
        .unwrap_or(&package)
        .to_string();
    let root = kernels_dir().join(&package);
    let image = root.join(format!("boot/vmlinuz-{release}"));
    let modules = root.join("lib/modules").join(&release);
    let kernel = Kernel {
        package: package.clone(),
        release: release.clone(),
        image: image.clone(),
    };
    if image.exists() && modules.join("modules.dep").exists() {
        eprintln!("xtask kernels: {package} present in {}", root.display());
        return Ok(kernel);
    }
    let debs = kernels_dir().join("debs");
    std::fs::create_dir_all(&debs)?;
    let deb = find_deb(&debs, &package)?;
    let deb = match deb {
        Some(deb) => deb,
        None => {
            run_command(
                Command::new("apt-get")
                    .args(apt_options(spec.suite))
                    .args(["download", "-q", &package])
                    .current_dir(&debs),
            )?;
            find_deb(&debs, &package)?
                .with_context(|| format!("apt-get download left no {package} .deb"))?
        }
    };
    let _ = std::fs::remove_dir_all(&root);
    run_command(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    // The package ships no modules.dep (its postinst would run depmod);
    // modprobe in the guest needs one.
    run_command(
        Command::new("depmod")
            .arg("-a")
            .arg("-b")
            .arg(&root)
            .arg(&release),
    )?;
    if !image.exists() {
        bail!("{} has no {}", deb.display(), image.display());
    }
    Ok(kernel)
}

fn find_deb(dir: &Path, package: &str) -> Result<Option<PathBuf>> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with(&format!("{package}_")) && name.ends_with(".deb") {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

#[derive(Default)]
struct KernelReport {
    name: String,
    release: String,
    /// Why the kernel could not be installed, booted or finished.
    failure: Option<String>,
    seconds: f64,
    /// (test, passed, seconds)
    tests: Vec<(String, bool, f64)>,
    /// (program, attached, error)
    attachments: Vec<(String, bool, Option<String>)>,
    unprivileged_bpf_disabled: String,
    kfree_skb_has_reason: Option<bool>,
    run_dir: PathBuf,
}

impl KernelReport {
    fn failed(name: &str, why: String) -> KernelReport {
        KernelReport {
            name: name.into(),
            failure: Some(why),
            ..Default::default()
        }
    }

    fn passed(&self) -> bool {
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

/// The script the guest runs (as root, from the shared read-only root). It
/// writes everything into `out`, the one directory the guest may write on
/// the host; vng's exit status is not the script's (its console fallback
/// loses it), so completion is a `done` file the host checks.
fn guest_script(out: &Path, binaries: &Binaries) -> Result<String> {
    let out = out.display();
    let mut script = format!(
        "#!/bin/sh\n\
         # Generated by cargo xtask kernels; runs inside the guest.\n\
         OUT={out}\n\
         exec >\"$OUT/guest.log\" 2>&1\n\
         set -x\n\
         # Emulated: a collector takes seconds to parse the BTF and attach.\n\
         export TEST_START_TIMEOUT_SECS=120\n\
         uname -r >\"$OUT/release\"\n\
         cat /proc/sys/kernel/unprivileged_bpf_disabled >\"$OUT/unprivileged_bpf_disabled\"\n\
         # veth and nf_tables are modules on Debian kernels: load them from\n\
         # the guest kernel's own tree now, so a missing one shows here.\n\
         modprobe veth && modprobe nf_tables && echo ok >\"$OUT/modules\"\n\
         # The real format files, from a tracefs mounted only for the copy.\n\
         mkdir -p /tmp/xtask-tracefs \"$OUT/tracefs\"\n\
         mount -t tracefs tracefs /tmp/xtask-tracefs\n"
    );
    for (category, event) in FORMATS {
        writeln!(
            script,
            "cp /tmp/xtask-tracefs/events/{category}/{event}/format \"$OUT/tracefs/{event}.format\""
        )?;
    }
    writeln!(
        script,
        "umount /tmp/xtask-tracefs\n\
         # What attaches on this kernel, from the collector itself, in a\n\
         # namespace of its own (its tracefs mount stays there too).\n\
         ip netns add xtask-probe\n\
         ip netns exec xtask-probe {} snapshot --format json --window 0s >\"$OUT/snapshot.json\" 2>\"$OUT/snapshot.stderr\"\n\
         ip netns del xtask-probe\n\
         mkdir -p \"$OUT/tests\"",
        binaries.collector.display()
    )?;
    for (target, test) in TESTS {
        writeln!(
            script,
            "start=$(date +%s%N)\n\
             {} --exact {test} --test-threads=1 --nocapture >\"$OUT/tests/{test}.log\" 2>&1\n\
             rc=$?\n\
             echo \"{test} $rc $(( ($(date +%s%N) - start) / 1000000 ))\" >>\"$OUT/results\"",
            binaries.test(target)?.display()
        )?;
    }
    script.push_str("echo done >\"$OUT/done\"\n");
    Ok(script)
}

/// A child in a process group of its own (vng, virtme-run, qemu), killed
/// as a group when dropped: a guest that hangs or an error on the way out
/// leaves no qemu behind.
struct GuestProcess(Child);

impl Drop for GuestProcess {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            // SAFETY: kill(2) on the process group we created for the child.
            unsafe { libc_kill(-(self.0.id() as i32), 9) };
            let _ = self.0.wait();
        }
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

fn run_guest(
    spec: &KernelSpec,
    kernel: &Kernel,
    vng: &Path,
    binaries: &Binaries,
    timeout: Duration,
) -> KernelReport {
    let out = kernels_dir().join("run").join(spec.name);
    let mut report = KernelReport {
        name: spec.name.into(),
        release: kernel.release.clone(),
        run_dir: out.clone(),
        ..Default::default()
    };
    if let Err(error) = boot(kernel, vng, binaries, timeout, &out, &mut report) {
        report.failure = Some(format!("{error:#}"));
    }
    collect_results(&out, &mut report);
    report
}

fn boot(
    kernel: &Kernel,
    vng: &Path,
    binaries: &Binaries,
    timeout: Duration,
    out: &Path,
    report: &mut KernelReport,
) -> Result<()> {
    let _ = std::fs::remove_dir_all(out);
    std::fs::create_dir_all(out)?;
    let script = out.join("guest.sh");
    std::fs::write(&script, guest_script(out, binaries)?)?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let console = std::fs::File::create(out.join("console.log"))?;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![vng.to_path_buf()];
    paths.extend(std::env::split_paths(&path));
    let mut command = Command::new(vng.join("vng"));
    command
        .arg("--verbose")
        .arg("--run")
        .arg(&kernel.image)
        // KVM aborts on an MSR on this kind of host: software emulation.
        .args([
            "--disable-kvm",
            "--user",
            "root",
            "--cpus",
            "2",
            "--memory",
            "2G",
        ])
        .arg(format!("--rwdir={}", out.display()))
        .arg("--")
        .arg(&script)
        .env("PATH", std::env::join_paths(paths)?)
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .stdout(console.try_clone()?)
        .stderr(console);
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    eprintln!(
        "xtask kernels: booting {} ({}), timeout {} s, logs in {}",
        kernel.release,
        kernel.package,
        timeout.as_secs(),
        out.display()
    );
    let started = Instant::now();
    let mut guest = GuestProcess(command.spawn().context("starting vng")?);
    loop {
        if guest.0.try_wait()?.is_some() {
            break;
        }
        if started.elapsed() > timeout {
            drop(guest);
            report.seconds = started.elapsed().as_secs_f64();
            bail!(
                "guest did not finish within {} s: killed (console in {})",
                timeout.as_secs(),
                out.join("console.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    report.seconds = started.elapsed().as_secs_f64();
    if !out.join("done").exists() {
        bail!(
            "guest stopped before its script finished (console in {}, script log {})",
            out.join("console.log").display(),
            out.join("guest.log").display()
        );
    }
    Ok(())
}

fn collect_results(out: &Path, report: &mut KernelReport) {
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap_or_default();
    if let Some(release) = read("release").lines().next() {
        report.release = release.to_string();
    }
    report.unprivileged_bpf_disabled = read("unprivileged_bpf_disabled").trim().to_string();
    if read("modules").trim() != "ok" && out.join("done").exists() {
        report.failure.get_or_insert_with(|| {
            "modprobe veth / nf_tables failed in the guest (see guest.log)".into()
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
            report.attachments.push((
                a["program"].as_str().unwrap_or_default().to_string(),
                a["attached"].as_bool() == Some(true),
                a["error"].as_str().map(str::to_string),
            ));
        }
    }
}

fn print_report(report: &KernelReport) {
    println!(
        "\n== kernel {} ({}): boot+suite {:.0} s",
        report.name, report.release, report.seconds
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
    for (program, attached, error) in &report.attachments {
        println!(
            "   probe {program}: {}{}",
            if *attached {
                "attached"
            } else {
                "NOT attached"
            },
            error
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

fn write_fixtures(report: &KernelReport) -> Result<()> {
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

/// One cell of the matrix: did the probe attach on that kernel, and did the
/// tests that check its numbers pass there.
fn probe_cell(report: &KernelReport, program: &str) -> String {
    if let Some(why) = &report.failure {
        if report.attachments.is_empty() {
            return format!("not run: {}", why.lines().next().unwrap_or_default());
        }
    }
    let Some((_, attached, error)) = report.attachments.iter().find(|(p, _, _)| p == program)
    else {
        return "no attach result".into();
    };
    if !attached {
        return format!("not attached: {}", error.clone().unwrap_or_default());
    }
    let checks: &[&str] = match program {
        "kfree_skb" => &["drops_carry_the_kernel_reason_no_socket_and_netfilter"],
        _ => &[
            "probes_count_exact_udp_traffic_on_both_ends_of_a_veth_pair",
            "traffic_in_an_unrelated_namespace_is_not_counted",
        ],
    };
    let failed: Vec<&str> = checks
        .iter()
        .copied()
        .filter(|t| report.test_passed(t) != Some(true))
        .collect();
    let what = match (program, report.kfree_skb_has_reason) {
        ("kfree_skb", Some(true)) => "NO_SOCKET, NETFILTER_DROP exact",
        ("kfree_skb", _) => "reason=\"unknown\" exact",
        _ => "exact counts",
    };
    if failed.is_empty() {
        format!("pass: attached, {what}")
    } else {
        format!("FAIL: attached, {} failed", failed.join(", "))
    }
}

fn markdown_table(reports: &[KernelReport]) -> String {
    let mut table = String::from(
        "| Kernel | `netif_receive_skb` (rx) | `net_dev_start_xmit` (tx) | `kfree_skb` (drops) | Suite | Boot+suite |\n\
         |---|---|---|---|---|---:|\n",
    );
    for report in reports {
        let passed = report.tests.iter().filter(|(_, ok, _)| *ok).count();
        let _ = writeln!(
            table,
            "| {} (`{}`) | {} | {} | {} | {passed}/{} passed | {:.0} s |",
            report.name,
            report.release,
            probe_cell(report, PROBES[0]),
            probe_cell(report, PROBES[1]),
            probe_cell(report, PROBES[2]),
            TESTS.len(),
            report.seconds
        );
    }
    table
}
