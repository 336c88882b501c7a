//! `cargo xtask fresh-check`: the README's test command on a clean Debian 12
//! root holding only what a new machine has (rustup's toolchain, a clone of
//! HEAD, the registry settings of this machine), so that an install step
//! missing from `setup` or a test leaning on this machine's state fails here
//! and not on the next new machine.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{describe, run_command, setup, workspace_root};

/// Outside the repository, so that neither `git clean` nor a fresh clone
/// throws the base away, and outside /tmp, which may be a size-capped tmpfs.
const CACHE: &str = "/var/tmp/collector-fresh-check";
const SUITE: &str = "bookworm";
const DEBOOTSTRAP_ARGS: [&str; 2] = [
    "--variant=minbase",
    "--include=git,ca-certificates,gcc,libc6-dev",
];
/// Files deciding how apt, pip and cargo reach the registries (and name
/// lookups) here, copied to the same place in the root when present.
const HOST_FILES: [&str; 4] = [
    "/etc/apt/sources.list",
    "/etc/pip.conf",
    "/etc/resolv.conf",
    "/etc/hosts",
];
/// Directories whose entries are copied likewise, with the name suffix they must have.
const HOST_DIRS: [(&str, &str); 4] = [
    ("/etc/apt/sources.list.d", ".sources"),
    ("/etc/apt/trusted.gpg.d", ""),
    ("/etc/apt/keyrings", ""),
    ("/usr/local/share/ca-certificates", ""),
];
const ENV_PREFIXES: [&str; 3] = ["SSL_", "PIP_", "RUSTUP_"];
const PATH_INSIDE: &str =
    "/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Run in a private mount and PID namespace with `$1` the root and `$2`
/// ~/.rustup: fresh kernel filesystems (no tracefs, no bpffs: tests mount
/// what they need), a minimal /dev, the toolchain read-only, then chroot.
/// Everything mounted here and every process left behind ends with the
/// namespace.
const NAMESPACE_SCRIPT: &str = r#"set -eu
root=$1 rustup=$2
shift 2
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount -t tmpfs -o mode=0755,nosuid tmpfs "$root/dev"
for node in null zero full random urandom tty; do
  touch "$root/dev/$node"
  mount --bind "/dev/$node" "$root/dev/$node"
done
mkdir "$root/dev/pts" "$root/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$root/dev/pts"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/dev/shm"
ln -s pts/ptmx "$root/dev/ptmx"
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$root/run"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/tmp"
mkdir -p "$root/root/.rustup"
mount --bind "$rustup" "$root/root/.rustup"
mount -o remount,bind,ro "$root/root/.rustup"
chroot "$root" "$@"
"#;

pub fn run() -> Result<()> {
    if !setup::is_root() {
        bail!("fresh-check needs root (debootstrap, mounts, chroot and the privileged tests)");
    }
    install_signal_handlers();
    let mut phases: Vec<(&str, Duration)> = Vec::new();
    let result = phased(&mut phases);
    eprintln!("xtask fresh-check: elapsed time per phase");
    for (phase, took) in &phases {
        eprintln!("  {phase:<14} {:>8.1} s", took.as_secs_f64());
    }
    let total: Duration = phases.iter().map(|(_, took)| *took).sum();
    eprintln!("  {:<14} {:>8.1} s", "total", total.as_secs_f64());
    match result {
        Ok(()) => {
            eprintln!("xtask fresh-check: PASSED: the README's test command works on a clean Debian 12 root");
            Ok(())
        }
        Err(error) => Err(error.context(
            "fresh-check FAILED: the README's test command does not work on a clean Debian 12 root (see above)",
        )),
    }
}

fn phased(phases: &mut Vec<(&'static str, Duration)>) -> Result<()> {
    let mut timed = |name: &'static str, phase: &mut dyn FnMut() -> Result<()>| {
        let start = Instant::now();
        let result = phase();
        phases.push((name, start.elapsed()));
        result
    };
    let cache = Path::new(CACHE);
    fs::create_dir_all(cache)?;
    remove_stale_roots(cache)?;
    let mut base = PathBuf::new();
    timed("base", &mut || {
        base = ensure_base(cache)?;
        Ok(())
    })?;
    let root = RunRoot(cache.join(format!("run-{}", std::process::id())));
    timed("copy", &mut || {
        fs::create_dir(&root.0)?;
        guarded(
            Command::new("tar")
                .args(["-xpf"])
                .arg(&base)
                .args(["--numeric-owner", "-C"])
                .arg(&root.0),
        )
    })?;
    let mut test_command = String::new();
    timed("setup of root", &mut || {
        test_command = populate(&root.0)?;
        Ok(())
    })?;
    timed("test", &mut || run_inside(&root.0, &test_command))
}

/// The pristine base as a tarball named after everything that went into it,
/// built once; every run unpacks a copy, so nothing a run does reaches it.
fn ensure_base(cache: &Path) -> Result<PathBuf> {
    if Command::new("debootstrap")
        .arg("--version")
        .output()
        .is_err()
    {
        run_command(Command::new("apt-get").args(["install", "-y", "-q", "debootstrap"]))?;
    }
    let version = output(Command::new("debootstrap").arg("--version"))?;
    let mirror = apt_mirror().unwrap_or_default();
    let key = format!(
        "{} {} {SUITE} {mirror} arch {}",
        version.trim(),
        DEBOOTSTRAP_ARGS.join(" "),
        output(Command::new("dpkg").arg("--print-architecture"))?.trim()
    );
    let digest =
        output(Command::new("sh").args(["-c", "printf %s \"$1\" | sha256sum", "sh", &key]))?;
    let tarball = cache.join(format!("base-{}.tar", &digest[..16]));
    if tarball.exists() {
        eprintln!("xtask fresh-check: base {} ({key})", tarball.display());
        return Ok(tarball);
    }
    eprintln!("xtask fresh-check: building the base ({key})");
    let staging = RunRoot(cache.join(format!("debootstrap-{}", std::process::id())));
    // In its own mount namespace, so a debootstrap that fails half-way never
    // leaves its /proc or /sys mounted inside the cache.
    guarded(
        Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "--pid",
                "--fork",
                "--kill-child",
            ])
            .arg("debootstrap")
            .args(DEBOOTSTRAP_ARGS)
            .arg(SUITE)
            .arg(&staging.0)
            .args((!mirror.is_empty()).then_some(&mirror)),
    )?;
    let partial = tarball.with_extension("tar.partial");
    guarded(
        Command::new("tar")
            .args(["-cf"])
            .arg(&partial)
            .args(["--numeric-owner", "-C"])
            .arg(&staging.0)
            .arg("."),
    )?;
    for old in fs::read_dir(cache)? {
        let old = old?.path();
        if old.extension().is_some_and(|e| e == "tar") {
            fs::remove_file(old)?;
        }
    }
    fs::rename(&partial, &tarball)?;
    fs::write(tarball.with_extension("key"), key)?;
    Ok(tarball)
}

/// The URI apt uses here for the suite, so debootstrap goes the same way.
fn apt_mirror() -> Option<String> {
    let dir = fs::read_dir("/etc/apt/sources.list.d").ok()?;
    let mut texts: Vec<String> = dir
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "sources"))
        .filter_map(|e| fs::read_to_string(e.path()).ok())
        .collect();
    texts.sort();
    let stanzas = texts.iter().flat_map(|t| t.split("\n\n"));
    let field = |stanza: &str, name: &str| {
        stanza
            .lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
    };
    let deb822 = stanzas
        .filter(|s| field(s, "Suites:").is_some_and(|v| v.split_whitespace().any(|x| x == SUITE)))
        .find_map(|s| {
            field(s, "URIs:")?
                .split_whitespace()
                .next()
                .map(String::from)
        });
    deb822.or_else(|| {
        let list = fs::read_to_string("/etc/apt/sources.list").ok()?;
        list.lines().find_map(|l| {
            let words: Vec<&str> = l
                .split_whitespace()
                .filter(|w| !w.starts_with('['))
                .collect();
            (words.first() == Some(&"deb") && words.get(2) == Some(&SUITE))
                .then(|| words[1].to_string())
        })
    })
}

/// Gives the copied root what a new machine has, and returns the test command
/// read from the clone's README.
fn populate(root: &Path) -> Result<String> {
    let inside = |path: &Path| root.join(path.strip_prefix("/").unwrap_or(path));
    fs::remove_file(inside(Path::new("/etc/apt/sources.list"))).ok();
    let mut copies: Vec<PathBuf> = HOST_FILES.iter().map(PathBuf::from).collect();
    for (dir, suffix) in HOST_DIRS {
        if let Ok(entries) = fs::read_dir(dir) {
            for entry in entries {
                let path = entry?.path();
                if path.to_string_lossy().ends_with(suffix) {
                    copies.push(path);
                }
            }
        }
    }
    copies.extend(signed_by_keyrings(&copies));
    copies.extend(local_apt_settings()?);
    for path in copies.iter().filter(|p| p.exists()) {
        let target = inside(path);
        fs::create_dir_all(target.parent().unwrap())?;
        run_command(
            Command::new("cp")
                .args(["-a", "--remove-destination"])
                .arg(path)
                .arg(&target),
        )?;
    }
    // A chroot must not start the services apt installs: nothing would stop them.
    let policy = inside(Path::new("/usr/sbin/policy-rc.d"));
    fs::write(&policy, "#!/bin/sh\nexit 101\n")?;
    fs::set_permissions(&policy, fs::Permissions::from_mode(0o755))?;
    run_command(chroot_env(root).arg("update-ca-certificates"))?;
    copy_rustup_bin(&inside(Path::new("/root/.cargo/bin")))?;

    let head = output(
        Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(workspace_root()),
    )?;
    let dirty = output(
        Command::new("git")
            .args(["status", "--porcelain"])
            .current_dir(workspace_root()),
    )?;
    if !dirty.trim().is_empty() {
        eprintln!(
            "xtask fresh-check: warning: uncommitted changes are not tested; checking HEAD {}",
            head.trim()
        );
    }
    let src = inside(Path::new("/root/src"));
    run_command(
        Command::new("git")
            .args(["clone", "--quiet", "--no-checkout"])
            .arg(workspace_root())
            .arg(&src),
    )?;
    run_command(
        Command::new("git")
            .args(["checkout", "--quiet", "--detach", head.trim()])
            .current_dir(&src),
    )?;
    readme_test_command(&fs::read_to_string(src.join("README.md"))?)
}

/// Keyring files named by `Signed-By:` in the copied sources.
fn signed_by_keyrings(copies: &[PathBuf]) -> Vec<PathBuf> {
    copies
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "sources"))
        .filter_map(|p| fs::read_to_string(p).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|l| {
                    l.strip_prefix("Signed-By:")
                        .map(|v| PathBuf::from(v.trim()))
                })
                .filter(|p| p.is_absolute())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// apt.conf.d files that no package installed: this machine's own settings.
fn local_apt_settings() -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir("/etc/apt/apt.conf.d")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    let owned = Command::new("dpkg").arg("-S").args(&files).output()?;
    let owned = String::from_utf8_lossy(&owned.stdout);
    let owned: Vec<&str> = owned.lines().filter_map(|l| l.split(": ").nth(1)).collect();
    files.retain(|f| !owned.contains(&f.to_string_lossy().as_ref()));
    Ok(files)
}

/// rustup and its proxies (the files identical to it), and cargo-nextest;
/// never what `cargo install` added, such as bpf-linker.
fn copy_rustup_bin(target: &Path) -> Result<()> {
    let home = PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?);
    let bin = home.join(".cargo/bin");
    let rustup = fs::read(bin.join("rustup")).context("no rustup in ~/.cargo/bin")?;
    fs::create_dir_all(target)?;
    let mut copies = Vec::new();
    for entry in fs::read_dir(&bin)? {
        let path = entry?.path();
        if fs::read(&path).is_ok_and(|bytes| bytes == rustup) {
            copies.push(path);
        }
    }
    let nextest = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join("cargo-nextest"))
        .find(|p| p.is_file());
    copies.extend(nextest);
    run_command(Command::new("cp").arg("-a").args(&copies).arg(target))
}

/// The command under "Run every test" in README.md, exactly as written.
fn readme_test_command(readme: &str) -> Result<String> {
    let after = readme
        .split_once("\nRun every test")
        .context("README.md has no \"Run every test\" paragraph")?
        .1;
    let block = after
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .context("no ```sh block after \"Run every test\" in README.md")?
        .0;
    Ok(block.trim().to_string())
}

fn run_inside(root: &Path, test_command: &str) -> Result<()> {
    let home = PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?);
    let mut command = Command::new("unshare");
    command
        .args([
            "--mount",
            "--propagation",
            "private",
            "--pid",
            "--fork",
            "--kill-child",
        ])
        .args(["/bin/sh", "-c", NAMESPACE_SCRIPT, "sh"])
        .arg(root)
        .arg(home.join(".rustup"))
        .args(chroot_env(root).get_args().skip(1))
        .args(["/bin/sh", "-c", &format!("cd /root/src && {test_command}")]);
    eprintln!(
        "xtask fresh-check: running `{test_command}` in the clean root {}",
        root.display()
    );
    guarded(&mut command).with_context(|| format!("`{test_command}` failed in the clean root"))
}

/// `chroot ROOT env -i` with only the environment a new machine's shell has,
/// plus how this one reaches the registries.
fn chroot_env(root: &Path) -> Command {
    let mut command = Command::new("chroot");
    command.arg(root).args(["/usr/bin/env", "-i"]);
    command.args(["HOME=/root", "LANG=C.UTF-8", &format!("PATH={PATH_INSIDE}")]);
    for (name, value) in std::env::vars() {
        if ENV_PREFIXES.iter().any(|p| name.starts_with(p)) || name == "CI" {
            command.arg(format!("{name}={value}"));
        }
    }
    command
}

/// A directory under the cache removed when dropped, on success, error or
/// Ctrl-C, but never through a mount point.
struct RunRoot(PathBuf);

impl Drop for RunRoot {
    fn drop(&mut self) {
        if let Err(error) = remove_root(&self.0) {
            eprintln!("xtask fresh-check: warning: {error:#}");
        }
    }
}

fn remove_root(root: &Path) -> Result<()> {
    if !root.exists() {
        return Ok(());
    }
    let mounts = fs::read_to_string("/proc/self/mountinfo")?;
    let prefix = format!("{}/", root.display());
    if let Some(line) = mounts
        .lines()
        .find(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&prefix)))
    {
        bail!("not removing {}: still mounted: {line}", root.display());
    }
    run_command(
        Command::new("rm")
            .args(["-rf", "--one-file-system"])
            .arg(root),
    )
}

/// Roots of runs that were killed before they could clean up.
fn remove_stale_roots(cache: &Path) -> Result<()> {
    for entry in fs::read_dir(cache)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let pid = name
            .strip_prefix("run-")
            .or_else(|| name.strip_prefix("debootstrap-"));
        if pid.is_some_and(|pid| !Path::new("/proc").join(pid).exists()) {
            remove_root(&path)?;
        }
    }
    Ok(())
}

fn output(command: &mut Command) -> Result<String> {
    let out = command
        .output()
        .with_context(|| format!("starting {}", describe(command)))?;
    if !out.status.success() {
        bail!("{} failed with {}", describe(command), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

static CHILD: AtomicI32 = AtomicI32::new(0);
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" {
    fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
    fn kill(pid: i32, sig: i32) -> i32;
}
const SIGHUP: i32 = 1;
const SIGINT: i32 = 2;
const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;

/// Ctrl-C or a CI timeout kills the running child (for `unshare
/// --kill-child`, its whole PID namespace), and the run then cleans up
/// instead of dying with a root and mounts left behind.
extern "C" fn on_signal(_: i32) {
    INTERRUPTED.store(true, Ordering::SeqCst);
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { kill(pid, SIGKILL) };
    }
}

fn install_signal_handlers() {
    for sig in [SIGHUP, SIGINT, SIGTERM] {
        // SAFETY: the handler only touches atomics and calls kill.
        unsafe { signal(sig, on_signal) };
    }
}

/// Like [`run_command`], with the child registered for [`on_signal`].
fn guarded(command: &mut Command) -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    eprintln!("xtask: $ {}", describe(command));
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {}", describe(command)))?;
    CHILD.store(child.id() as i32, Ordering::SeqCst);
    let status = child.wait();
    CHILD.store(0, Ordering::SeqCst);
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    let status = status?;
    if !status.success() {
        bail!("{} failed with {status}", describe(command));
    }
    Ok(())
}
