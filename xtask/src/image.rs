//! The container image, built with podman the way this machine allows:
//! `--storage-driver vfs --cgroup-manager cgroupfs` (no overlay, no
//! systemd), `build --isolation chroot` and `--runtime runc`, in a storage
//! of the workspace's own under `target/podman/` so the machine's podman
//! state (if any) is neither used nor changed.
//!
//! - `cargo xtask image` builds the Dockerfile as written, both stages. No
//!   base image can be pulled here, so `debian:bookworm` for the builder
//!   stage is made with debootstrap and `podman import` (cached).
//! - `cargo xtask test` builds the Dockerfile's run stage, as written, around
//!   a static collector built outside the image with the builder stage's own
//!   flags, because the builder stage (apt, bpf-linker, two release builds)
//!   takes longer than CI allows; `collector/tests/image.rs` then runs it
//!   with the rendered DaemonSet's security context.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};

use crate::{debian_base, output, run_command, setup, workspace_root};

/// Debian packages the image tasks run.
pub const PACKAGES: [&str; 2] = ["podman", "runc"];
/// The one line of the run stage that takes the builder stage's output.
const COPY_FROM_BUILDER: &str = "COPY --from=builder /out/collector /usr/local/bin/collector";
/// Where the test image's context is assembled.
const TEST_CONTEXT: &str = "target/podman/context";
/// The local name of the base the builder stage starts `FROM`.
const BASE: &str = "debian:bookworm";

/// podman with this workspace's storage and the flags this machine needs.
pub fn podman() -> Command {
    let mut command = Command::new("podman");
    command.args(global_args());
    command
}

/// podman's global flags, also handed to the image test (it runs the same
/// storage).
pub fn global_args() -> Vec<String> {
    let root = workspace_root().join("target/podman");
    vec![
        "--root".into(),
        root.join("storage").display().to_string(),
        "--runroot".into(),
        runroot().display().to_string(),
        "--storage-driver".into(),
        "vfs".into(),
        "--cgroup-manager".into(),
        "cgroupfs".into(),
        "--runtime".into(),
        "runc".into(),
        "--events-backend".into(),
        "file".into(),
        "--tmpdir".into(),
        root.join("tmp").display().to_string(),
    ]
}

/// State of running containers: on /run (cleared at boot, as podman
/// expects), and short, since conmon's socket paths live under it. One per
/// workspace, so two checkouts' tests never share locks.
fn runroot() -> PathBuf {
    let mut hash: u32 = 2166136261;
    for byte in workspace_root().as_os_str().as_encoded_bytes() {
        hash = (hash ^ u32::from(*byte)).wrapping_mul(16777619);
    }
    PathBuf::from(format!("/run/netif-podman-{hash:08x}"))
}

/// The crate version, which the collector shares with xtask through the
/// workspace (`version.workspace = true` in both).
fn version() -> Result<String> {
    Ok(env!("CARGO_PKG_VERSION").to_string())
}

fn host_target() -> Result<String> {
    let output = Command::new("rustc").arg("-vV").output()?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_string)
        .context("rustc -vV printed no host")
}

/// Builds the static collector exactly as the Dockerfile's builder stage
/// does (`+crt-static`, an explicit `--target`, release, `--locked`), with
/// the release profile as it is: a cheaper-looking one (no LTO, more
/// codegen units) costs more CPU in all, not less.
fn build_static_collector() -> Result<PathBuf> {
    let target = host_target()?;
    eprintln!("xtask: static release build of the collector for the image ({target})");
    run_command(
        crate::cargo()
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .args(["build", "--release", "--locked", "-p", "collector"])
            .args(["--target", &target]),
    )?;
    let binary = workspace_root().join(format!("target/{target}/release/collector"));
    ensure_static(&binary)?;
    Ok(binary)
}

/// A `FROM scratch` image has no dynamic loader: an ELF with a PT_INTERP
/// program header would fail there with a bare "no such file or directory".
fn ensure_static(binary: &Path) -> Result<()> {
    let elf = std::fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    ensure!(
        elf.len() > 64 && elf.starts_with(b"\x7fELF\x02\x01"),
        "{} is not a 64-bit little-endian ELF",
        binary.display()
    );
    let word = |at: usize, n: usize| -> u64 {
        elf[at..at + n]
            .iter()
            .rev()
            .fold(0, |v, b| (v << 8) | u64::from(*b))
    };
    let (phoff, phentsize, phnum) = (
        word(0x20, 8) as usize,
        word(0x36, 2) as usize,
        word(0x38, 2),
    );
    for i in 0..phnum as usize {
        const PT_INTERP: u64 = 3;
        if word(phoff + i * phentsize, 4) == PT_INTERP {
            bail!(
                "{} is dynamically linked (has an interpreter); the image needs +crt-static",
                binary.display()
            );
        }
    }
    Ok(())
}

/// The Dockerfile's run stage (from its last `FROM` on), with the builder's
/// output taken from the context instead. Fails when the Dockerfile no
/// longer has that shape, so the test never runs a stage it made up.
fn run_stage(dockerfile: &str) -> Result<String> {
    let start = dockerfile
        .lines()
        .enumerate()
        .filter(|(_, l)| l.starts_with("FROM "))
        .map(|(i, _)| i)
        .last()
        .context("the Dockerfile has no FROM")?;
    let lines: Vec<&str> = dockerfile.lines().skip(start).collect();
    ensure!(
        lines[0].trim() == "FROM scratch",
        "the Dockerfile's run stage starts with `{}`, not `FROM scratch`",
        lines[0]
    );
    let copies = lines
        .iter()
        .filter(|l| l.trim() == COPY_FROM_BUILDER)
        .count();
    ensure!(
        copies == 1,
        "the Dockerfile's run stage must take the binary with exactly one `{COPY_FROM_BUILDER}` (found {copies})"
    );
    ensure!(
        !lines.iter().any(|l| l.contains("--from=") && l.trim() != COPY_FROM_BUILDER),
        "the Dockerfile's run stage copies something else from another stage; the image test only knows the binary"
    );
    let mut stage = String::from(
        "# Generated by cargo xtask test from the Dockerfile's run stage; the\n\
         # binary was built outside with the builder stage's flags.\n",
    );
    for line in lines {
        if line.trim() == COPY_FROM_BUILDER {
            stage.push_str("COPY collector /usr/local/bin/collector\n");
        } else {
            stage.push_str(line);
            stage.push('\n');
        }
    }
    Ok(stage)
}

/// Builds the test image and returns what `collector/tests/image.rs` reads:
/// the image, podman's storage flags (one per line), moby's profile.
pub fn test_env() -> Result<Vec<(&'static str, String)>> {
    let image = build_for_tests()?;
    let profile = ensure_moby_profile()?;
    Ok(vec![
        ("NETIF_TEST_IMAGE", image),
        ("NETIF_TEST_PODMAN_ARGS", global_args().join("\n")),
        ("NETIF_TEST_MOBY_PROFILE", profile.display().to_string()),
    ])
}

/// moby's seccomp profile as Debian 12 ships it (Docker 20.10's, in
/// golang-github-docker-docker-dev), unpacked under target/test-tools/:
/// the image test runs under it and under the profile moby has since 23.0,
/// which it derives from this one. Taken from Debian's archive, the
/// registry this machine reaches, rather than copied into the repository.
pub fn ensure_moby_profile() -> Result<PathBuf> {
    const PACKAGE: &str = "golang-github-docker-docker-dev";
    const INSIDE: &str =
        "usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json";
    let dir = workspace_root().join("target/test-tools/moby-seccomp");
    let profile = dir.join("default.json");
    if profile.exists() {
        return Ok(profile);
    }
    let download = dir.join("download");
    if download.exists() {
        std::fs::remove_dir_all(&download)?;
    }
    std::fs::create_dir_all(&download)?;
    run_command(
        Command::new("apt-get")
            .args(["download", PACKAGE])
            .current_dir(&download),
    )?;
    let deb = std::fs::read_dir(&download)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| format!("apt-get download {PACKAGE} left no .deb"))?;
    let unpacked = download.join("x");
    run_command(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    std::fs::copy(unpacked.join(INSIDE), &profile)
        .with_context(|| format!("{PACKAGE} has no {INSIDE}"))?;
    eprintln!(
        "xtask: moby's seccomp profile from {} at {}",
        deb.file_name().unwrap_or_default().to_string_lossy(),
        profile.display()
    );
    std::fs::remove_dir_all(&download)?;
    Ok(profile)
}

/// The image `collector/tests/image.rs` runs: the Dockerfile's run stage
/// around a static build. Returns its tag.
pub fn build_for_tests() -> Result<String> {
    setup::ensure_packages("image tools", &PACKAGES, false)?;
    let binary = build_static_collector()?;
    let root = workspace_root();
    let context = root.join(TEST_CONTEXT);
    std::fs::create_dir_all(&context)?;
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile"))?;
    std::fs::write(context.join("Containerfile"), run_stage(&dockerfile)?)?;
    std::fs::copy(&binary, context.join("collector"))?;
    let tag = format!("localhost/netif-collector:{}-test", version()?);
    let started = Instant::now();
    run_command(
        podman_build(&tag)
            .arg("-f")
            .arg(context.join("Containerfile"))
            .arg(&context)
            // Progress is for people; stdout carries `--run-stage`'s output.
            .stdout(std::io::stderr()),
    )?;
    eprintln!(
        "xtask: image {tag} built in {:.1} s, {}",
        started.elapsed().as_secs_f64(),
        image_size(&tag)?
    );
    Ok(tag)
}

/// `podman build -t TAG` as both builds run it. Docker's image format: the
/// OCI one has no SHELL, and podman would run the builder's RUNs without
/// the Dockerfile's `pipefail`. Never pulls: this machine can't.
fn podman_build(tag: &str) -> Command {
    let mut command = podman();
    command.args([
        "build",
        "--format",
        "docker",
        "--isolation",
        "chroot",
        "--pull=never",
    ]);
    command.args(["-t", tag]);
    command
}

fn image_size(tag: &str) -> Result<String> {
    let output = podman()
        .args(["image", "inspect", "--format", "{{.Size}}", tag])
        .output()?;
    ensure!(output.status.success(), "podman image inspect {tag} failed");
    let bytes: f64 = String::from_utf8_lossy(&output.stdout).trim().parse()?;
    Ok(format!("{:.1} MiB", bytes / 1048576.0))
}

/// `cargo xtask image`: the Dockerfile as written, both stages.
pub fn build_dockerfile() -> Result<()> {
    setup::ensure_packages(
        "image tools",
        &[PACKAGES[0], PACKAGES[1], "debootstrap"],
        false,
    )?;
    ensure_base()?;
    let tag = format!("ghcr.io/example/netif-collector:{}", version()?);
    let root = workspace_root();
    let started = Instant::now();
    let mut build = podman_build(&tag);
    // The machine reaches the registries through extra CA certificates;
    // the builder's `apt-get install ca-certificates` adds whatever is in
    // /usr/local/share/ca-certificates, so lend it for the build's RUNs
    // (not a layer of the image: build volumes are not committed).
    let local_cas = Path::new("/usr/local/share/ca-certificates");
    if local_cas.is_dir() {
        build.arg("--volume").arg(format!(
            "{}:/usr/local/share/ca-certificates:ro",
            local_cas.display()
        ));
    }
    build.arg("-f").arg(root.join("Dockerfile")).arg(&root);
    run_command(&mut build)?;
    eprintln!(
        "xtask: image {tag} built from the Dockerfile in {:.0} s, {}",
        started.elapsed().as_secs_f64(),
        image_size(&tag)?
    );
    Ok(())
}

/// `debian:bookworm` in the workspace's storage, imported from the shared
/// debootstrap base (cached under /var/tmp, like fresh-check's).
fn ensure_base() -> Result<()> {
    let exists = podman().args(["image", "exists", BASE]).status()?;
    if exists.success() {
        return Ok(());
    }
    // The machine's sources (bookworm-security carries the 1.96
    // rustc-web the builder installs).
    let sources = Path::new("/etc/apt/sources.list.d/debian.sources");
    let digest = output(Command::new("sha256sum").arg(sources))
        .context("reading this machine's apt sources")?;
    let copy_sources = |root: &Path| -> Result<()> {
        std::fs::copy(sources, root.join("etc/apt/sources.list.d/debian.sources"))
            .context("copying this machine's apt sources into the base")?;
        let _ = std::fs::remove_file(root.join("etc/apt/sources.list"));
        Ok(())
    };
    let base = debian_base::Base {
        cache: Path::new("/var/tmp/collector-image"),
        options: "--variant=minbase",
        finish: Some((
            format!("its apt sources {}", digest.split(' ').next().unwrap_or("")),
            &copy_sources,
        )),
    };
    let tarball = base.tarball(&run_command)?;
    run_command(podman().arg("import").arg(&tarball).arg(BASE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_stage_is_taken_as_written_with_the_binary_from_the_context() {
        let dockerfile = std::fs::read_to_string(workspace_root().join("Dockerfile")).unwrap();
        let stage = run_stage(&dockerfile).unwrap();
        assert!(stage.contains("\nFROM scratch\n"));
        assert!(stage.contains("COPY collector /usr/local/bin/collector\n"));
        assert!(!stage.contains("--from="));
        let tail = &dockerfile[dockerfile.rfind("FROM scratch").unwrap()..];
        for line in tail.lines().filter(|l| !l.contains("--from=builder")) {
            assert!(stage.contains(line), "{line} missing from the run stage");
        }
    }

    #[test]
    fn a_dockerfile_of_another_shape_is_refused() {
        assert!(run_stage("FROM debian:bookworm\nRUN true\n").is_err());
        assert!(run_stage("FROM x AS builder\nFROM scratch\nCOPY --from=builder /a /b\n").is_err());
    }
}
