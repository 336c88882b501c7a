//! Project tasks: `cargo xtask <setup|build-ebpf|lint|deny|test|run|bench|fuzz|fresh-check|kernels|image>`.
//!
//! Everything a fresh Debian/Ubuntu machine needs is installed by `setup`,
//! which `test` and `run` call first, so the README's two commands work from
//! a clean clone.

mod debian_base;
#[cfg(test)]
mod doc_links;
mod fresh_check;
mod fuzz;
mod image;
mod kernels;
mod setup;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Build, test and run the collector")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need (apt packages, bpf-linker,
    /// the Python test tools' virtualenv). Idempotent.
    Setup,
    /// Build the BPF object on its own; `collector`'s build script builds
    /// and embeds the release one in any `cargo build`.
    BuildEbpf {
        #[arg(long)]
        release: bool,
    },
    /// rustfmt and clippy -D warnings: userspace, then the BPF crate in its own pass.
    Lint,
    /// cargo-deny's licenses, bans and sources checks (deny.toml), offline,
    /// as `test` runs them; needs `setup` first.
    Deny,
    /// Setup, BPF build, lint, cargo-deny (licenses, bans, sources; offline),
    /// unit tests, then the privileged integration tests.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
    /// Build everything (release) and start the collector with the given arguments.
    Run {
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Bounded cargo-fuzz runs over the tracefs, BTF and netlink parsers (nightly).
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only this target (tracefs_format, btf, netlink_dump).
        #[arg(long)]
        target: Option<String>,
    },
    /// The README's test command on a clean Debian 12 root (debootstrap,
    /// cached under /var/tmp) holding only rustup's toolchain and a clone of
    /// HEAD: proves a new machine needs nothing beyond `setup` (root).
    FreshCheck {
        /// For iterating only: extra `cargo test` arguments appended to the
        /// README's command (e.g. `-- --no-fail-fast`).
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
    /// The privileged probe tests on real Debian 5.10, 6.1 and 6.12 kernels
    /// under qemu (virtme-ng, software emulation); prints the matrix as a
    /// markdown table. E.g. `cargo xtask kernels --kernel 6.1`.
    Kernels {
        /// Only this kernel (5.10, 6.1, 6.12); repeatable. Default: all.
        #[arg(long = "kernel")]
        kernels: Vec<String>,
        /// Minutes after which a guest that has not finished is killed.
        #[arg(long, default_value_t = 15)]
        timeout_minutes: u64,
        /// Write the captured tracefs format files to
        /// collector/tests/fixtures/tracefs/<version>/.
        #[arg(long)]
        update_fixtures: bool,
    },
    /// Build the image from the Dockerfile as written (podman, both stages;
    /// the builder's `debian:bookworm` made with debootstrap), tagged
    /// ghcr.io/example/netif-collector:<crate version>. Root; not part of CI
    /// (the builder stage alone takes longer than CI allows).
    Image {
        /// Only the run stage around a static build made outside, as
        /// `cargo xtask test` does for the image test; prints the
        /// environment that test needs.
        #[arg(long)]
        run_stage: bool,
    },
    /// Release build, then the side-by-side benchmark (root): collector vs
    /// node_exporter vs the seed script; results in target/bench and, for a
    /// full run, docs/bench. E.g. `cargo xtask bench --quick`.
    Bench {
        /// Arguments for the bench binary (`--quick`, `--sizes 100,1000`, ...).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::ensure_all(),
        Task::BuildEbpf { release } => build_ebpf(release),
        Task::Lint => lint(),
        Task::Deny => deny(),
        Task::Test { cargo_args } => test(&cargo_args),
        Task::Run { args } => run(&args),
        Task::Bench { args } => bench(&args),
        Task::Image { run_stage } => {
            require_root("building the image (podman as root)")?;
            if !run_stage {
                return image::build_dockerfile();
            }
            for (key, value) in image::test_env()? {
                println!("export {key}='{value}'");
            }
            Ok(())
        }
        Task::FreshCheck { cargo_args } => fresh_check::run(&cargo_args),
        Task::Kernels {
            kernels,
            timeout_minutes,
            update_fixtures,
        } => kernels::run(&kernels::Options {
            kernels,
            timeout: std::time::Duration::from_secs(timeout_minutes * 60),
            update_fixtures,
        }),
        Task::Fuzz { seconds, target } => {
            build_ebpf(true)?;
            fuzz::run(seconds, target.as_deref())
        }
    }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Runs a command, echoing it, failing with its exit status.
pub fn run_command(command: &mut Command) -> Result<()> {
    eprintln!("xtask: $ {}", describe(command));
    let status = command
        .status()
        .with_context(|| format!("starting {}", describe(command)))?;
    if !status.success() {
        bail!("{} failed with {status}", describe(command));
    }
    Ok(())
}

/// A command's standard output; its failure is an error.
pub fn output(command: &mut Command) -> Result<String> {
    let out = command
        .output()
        .with_context(|| format!("starting {}", describe(command)))?;
    if !out.status.success() {
        bail!("{} failed with {}", describe(command), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

/// The same build as `collector`'s build script, shown on its own, so that
/// a missing toolchain or a compile error in the probes reads first.
fn build_ebpf(release: bool) -> Result<()> {
    let toolchain = ebpf_build::Toolchain::detect()?;
    let build = ebpf_build::Build {
        crate_dir: workspace_root().join("collector-ebpf"),
        target_dir: None,
        release,
    };
    let object = build.run(&toolchain)?;
    eprintln!(
        "xtask: BPF object at {} ({} bytes)",
        object.display(),
        std::fs::metadata(&object)?.len()
    );
    Ok(())
}

fn lint() -> Result<()> {
    run_command(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run_command(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The BPF crate is not a workspace member; lint it in its own pass on the
    // host target (as aya-template does), which clippy can check without a
    // BPF sysroot.
    let manifest = workspace_root().join("collector-ebpf/Cargo.toml");
    let manifest = manifest.to_str().context("non-UTF-8 path")?;
    run_command(cargo().args(["fmt", "--manifest-path", manifest, "--", "--check"]))?;
    run_command(
        cargo()
            .args(["clippy", "--manifest-path", manifest, "--target-dir"])
            .arg(workspace_root().join("target/ebpf-lint"))
            .args(["--", "-D", "warnings"])
            .args(["-D", "clippy::undocumented_unsafe_blocks"])
            .args(["-D", "clippy::missing_safety_doc"]),
    )?;
    Ok(())
}

/// cargo-deny's licenses, bans and sources checks (deny.toml) on the
/// workspace and on the BPF crate, offline: after the lint pass has fetched
/// every crate, nothing here needs the network. The advisories check needs
/// the RustSec database, which CI cannot fetch; docs/testing.md says how to
/// run it.
fn deny() -> Result<()> {
    let root = workspace_root();
    let config = root.join("deny.toml");
    let checks = ["check", "licenses", "bans", "sources"];
    let binary = setup::cargo_deny();
    if !binary.exists() {
        bail!(
            "{} is missing: `cargo xtask setup` installs cargo-deny into the test tools' virtualenv",
            binary.display()
        );
    }
    let cargo_deny = || {
        let mut command = Command::new(&binary);
        command
            .current_dir(&root)
            .arg("--offline")
            .arg("--config")
            .arg(&config);
        command
    };
    run_command(cargo_deny().args(checks))?;
    // One policy for both graphs; the BPF crate's few dependencies leave
    // most allowances and skips unused, which is not worth a warning there.
    run_command(
        cargo_deny()
            .arg("--manifest-path")
            .arg(root.join("collector-ebpf/Cargo.toml"))
            .args(checks)
            .args(["-A", "license-not-encountered", "-A", "unmatched-skip"]),
    )
}

fn require_root(what: &str) -> Result<()> {
    if !setup::is_root() {
        bail!("{what} needs root (BPF load/attach, network namespaces); re-run as root or with sudo -E");
    }
    Ok(())
}

/// `cargo` with the Python test tools' virtualenv first on PATH, so the
/// tests' `python3` and `hadolint` are the pinned ones, never the system's.
fn cargo_for_tests() -> Result<Command> {
    let mut command = cargo();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![setup::python_venv().join("bin")];
    paths.extend(std::env::split_paths(&path));
    command.env("PATH", std::env::join_paths(paths).context("joining PATH")?);
    Ok(command)
}

fn test(cargo_args: &[String]) -> Result<()> {
    setup::ensure_all()?;
    build_ebpf(true)?;
    lint()?;
    deny()?;
    eprintln!("xtask: unit tests");
    run_command(
        cargo_for_tests()?
            .args(["test", "--workspace", "--lib", "--bins"])
            .args(cargo_args),
    )?;
    require_root("the integration tests")?;
    // collector/tests/image.rs runs this image as the DaemonSet would.
    let image_env = image::test_env()?;
    eprintln!("xtask: privileged integration tests (BPF, netns, the image)");
    run_command(
        cargo_for_tests()?
            .envs(image_env)
            .args(["test", "--workspace", "--test", "*"])
            .args(cargo_args)
            .args(["--", "--test-threads=1"]),
    )?;
    Ok(())
}

fn run(args: &[String]) -> Result<()> {
    // Running needs the BPF toolchain only; test tools stay off the machine.
    setup::ensure_build()?;
    build_ebpf(true)?;
    run_command(cargo().args(["build", "--release", "-p", "collector"]))?;
    if let Err(error) = require_root("loading the eBPF probes") {
        eprintln!("xtask: warning: {error}; the collector will serve netlink metrics only");
    }
    let binary = workspace_root().join("target/release/collector");
    run_command(Command::new(binary).args(args))
}

fn bench(args: &[String]) -> Result<()> {
    require_root("the benchmark (network namespaces, veths, BPF)")?;
    setup::ensure_build()?;
    setup::ensure_test_tools()?;
    setup::ensure_bench_tools()?;
    build_ebpf(true)?;
    run_command(cargo().args(["build", "--release", "-p", "collector"]))?;
    let root = workspace_root();
    run_command(
        cargo()
            .args(["run", "--release", "-p", "bench", "--", "--collector"])
            .arg(root.join("target/release/collector"))
            .arg("--out")
            .arg(root.join("target/bench"))
            .arg("--docs")
            .arg(root.join("docs/bench"))
            .args(args),
    )
}
