//! The host-side build: the collector's test binaries the guests run, and
//! with them the BPF object, both into cargo target directories in the
//! cache so that a fresh clone rebuilds only the workspace's own crates.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context, Result};

use super::{cache_dir, TESTS};

/// The cargo profile of the guests' binaries: release without LTO and with
/// more codegen units. Release's thin LTO relinks every test binary across
/// all its dependencies; the guests spend their time in the kernel and in
/// the emulator, not in this code, and start as fast. Defined here with
/// `--config` so that the workspace manifest's profiles stay as they are.
const PROFILE: &str = "kernels";
const PROFILE_CONFIG: [&str; 4] = [
    "profile.kernels.inherits=\"release\"",
    "profile.kernels.lto=false",
    "profile.kernels.codegen-units=16",
    "profile.kernels.incremental=false",
];

/// The test binaries the guests run, by target name.
pub struct Binaries {
    tests: Vec<(String, PathBuf)>,
    pub collector: PathBuf,
}

impl Binaries {
    pub fn test(&self, target: &str) -> Result<&Path> {
        self.tests
            .iter()
            .find(|(name, _)| name == target)
            .map(|(_, path)| path.as_path())
            .with_context(|| format!("cargo built no test binary named {target}"))
    }
}

/// The test binaries [`TESTS`] needs, each once.
fn test_targets() -> Vec<&'static str> {
    let mut targets: Vec<&str> = TESTS.iter().map(|(target, _)| *target).collect();
    targets.sort_unstable();
    targets.dedup();
    targets
}

/// Builds once on the host: the collector's test binaries in the
/// [`PROFILE`] profile (an unoptimised collector parses the kernel's BTF too
/// slowly under emulation to become ready in time), found through cargo's
/// own JSON messages rather than guessed hashes. The collector's build
/// script builds the BPF object, here with the BPF crate's target directory
/// in the cache (its `-Z build-std=core` alone takes minutes from nothing).
pub fn build() -> Result<Binaries> {
    let target_dir = cache_dir().join("target");
    eprintln!(
        "xtask kernels: building the test binaries (profile {PROFILE}) in {}",
        target_dir.display()
    );
    let mut command = crate::cargo();
    command
        .env("COLLECTOR_EBPF_TARGET_DIR", cache_dir().join("bpf-target"))
        .args(["test", "-p", "collector", "--no-run", "--profile", PROFILE])
        .args(PROFILE_CONFIG.iter().flat_map(|c| ["--config", c]))
        .arg("--target-dir")
        .arg(&target_dir)
        .args(test_targets().into_iter().flat_map(|t| ["--test", t]))
        .arg("--message-format=json")
        .stderr(Stdio::inherit());
    let output = command.output().context("starting cargo test --no-run")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let messages = || {
        stdout
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
    };
    if !output.status.success() {
        // With JSON messages, the compiler's errors are on stdout only.
        for message in messages().filter(|m| m["reason"] == "compiler-message") {
            if let Some(rendered) = message["message"]["rendered"].as_str() {
                eprint!("{rendered}");
            }
        }
        bail!("cargo test -p collector --no-run --profile {PROFILE} failed");
    }
    let mut tests = Vec::new();
    let mut collector = None;
    for message in messages() {
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(executable) = message["executable"].as_str() else {
            continue;
        };
        let name = message["target"]["name"].as_str().unwrap_or_default();
        let kinds = &message["target"]["kind"];
        let has_kind = |kind: &str| {
            kinds
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == kind))
        };
        if message["profile"]["test"].as_bool() == Some(true) && has_kind("test") {
            tests.push((name.to_string(), PathBuf::from(executable)));
        } else if name == "collector" && has_kind("bin") {
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
