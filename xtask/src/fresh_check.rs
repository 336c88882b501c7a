//! `cargo xtask fresh-check`: the README's test command on a clean Debian 12
//! root holding only what a new machine has (rustup's toolchain, a clone of
//! HEAD, this machine's way to the registries), so that an install step
//! missing from `setup`, or a test leaning on this machine's state, fails
//! here and not on the next new machine.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::debian_base::{self, UNSHARE};
use crate::{describe, output, run_command, setup, workspace_root};

/// Outside the repository, so neither `git clean` nor a new clone throws the
/// base away, and outside /tmp, which may be a size-capped tmpfs.
const CACHE: &str = "/var/tmp/collector-fresh-check";
const DEBOOTSTRAP_ARGS: &str = "--variant=minbase --include=git,ca-certificates,gcc,libc6-dev";
const ENV_PREFIXES: [&str; 3] = ["SSL_", "PIP_", "RUSTUP_"];
const PATH_INSIDE: &str =
    "/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `$1` root, `$2` repository, `$3` commit. Gives the unpacked base what a
/// new machine has: how this machine reaches the registries (apt sources,
/// keyrings and its own apt settings, i.e. the files no package installed;
/// local CAs; pip and name-service settings), rustup with its proxies (not
/// what `cargo install` added, such as bpf-linker), cargo-nextest, a clone.
const SETUP_SCRIPT: &str = r#"set -eu
root=$1 repo=$2 commit=$3
copy() { for f in "$@"; do if [ -e "$f" ]; then cp -RL --preserve=mode,timestamps --parents --remove-destination "$f" "$root"; fi; done; }
rm -f "$root/etc/apt/sources.list"
copy /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/trusted.gpg.d/* /etc/apt/keyrings/* \
  /usr/local/share/ca-certificates/* /etc/pip.conf /etc/resolv.conf /etc/hosts
copy $(sed -n 's|^Signed-By: *\(/.*\)|\1|p' /etc/apt/sources.list.d/*.sources 2>/dev/null)
for f in /etc/apt/apt.conf.d/*; do dpkg -S "$f" >/dev/null 2>&1 || copy "$f"; done
# A chroot must not start the services apt installs: nothing would stop them.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
mkdir -p "$root/root/.cargo/bin"
for f in "$HOME"/.cargo/bin/*; do if cmp -s "$f" "$HOME/.cargo/bin/rustup"; then cp -a "$f" "$root/root/.cargo/bin/"; fi; done
if nextest=$(command -v cargo-nextest); then cp "$nextest" "$root/root/.cargo/bin/"; fi
git clone --quiet --no-checkout "$repo" "$root/root/src"
git -C "$root/root/src" checkout --quiet --detach "$commit"
"#;

/// `$1` root, `$2` ~/.rustup, then the command to run in it. Fresh kernel
/// filesystems (no tracefs, no bpffs: tests mount what they need), a minimal
/// /dev, empty /run and /tmp, the toolchain read-only.
const NAMESPACE_SCRIPT: &str = r#"set -eu
root=$1 rustup=$2
shift 2
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
# The cgroup hierarchy, as a machine's init mounts it (podman needs it for
# the image test); the same tree as the host's, like any process sees.
mount --rbind /sys/fs/cgroup "$root/sys/fs/cgroup"
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
for fd in 0:stdin 1:stdout 2:stderr; do ln -s "/proc/self/fd/${fd%:*}" "$root/dev/${fd#*:}"; done
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$root/run"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/tmp"
mkdir -p "$root/root/.rustup"
mount --bind "$rustup" "$root/root/.rustup"
mount -o remount,bind,ro "$root/root/.rustup"
# pivot_root, not a bare chroot: the root must be the mount namespace's own
# root, as on a machine. Joining a mount namespace (runc does it for
# `podman exec`) puts a process at that namespace's root, which under a
# chroot is the host's /: the exec'd command then finds none of the
# container's files.
cd "$root"
mkdir -p .oldroot
pivot_root . .oldroot
umount -l /.oldroot
rmdir /.oldroot
exec chroot . "$@"
"#;

pub fn run(extra: &[String]) -> Result<()> {
    if !setup::is_root() {
        bail!("fresh-check needs root (debootstrap, mounts, chroot, the privileged tests)");
    }
    install_signal_handlers();
    let mut phases = Phases::default();
    let result = check(&mut phases, extra);
    eprintln!("xtask fresh-check: elapsed time per phase");
    let total: Duration = phases.0.iter().map(|(_, took)| *took).sum();
    for (phase, took) in phases.0.iter().chain([&("total", total)]) {
        eprintln!("  {phase:<14} {:>7.1} s", took.as_secs_f64());
    }
    result
        .context("fresh-check FAILED: the README's test command fails on a clean Debian 12 root")?;
    eprintln!("xtask fresh-check: PASSED on a clean Debian 12 root");
    Ok(())
}

#[derive(Default)]
struct Phases(Vec<(&'static str, Duration)>);

impl Phases {
    fn time<T>(&mut self, name: &'static str, phase: impl FnOnce() -> Result<T>) -> Result<T> {
        let start = Instant::now();
        let result = phase();
        self.0.push((name, start.elapsed()));
        result
    }
}

fn check(phases: &mut Phases, extra: &[String]) -> Result<()> {
    let cache = Path::new(CACHE);
    fs::create_dir_all(cache)?;
    remove_stale_roots(cache)?;
    let base = phases.time("base", || ensure_base(cache))?;
    let root = RunRoot(cache.join(format!("run-{}", std::process::id())));
    let result = test_in_root(phases, &base, &root.0, extra);
    let _ = Command::new("df").arg("-h").arg(&root.0).status();
    let cleaned = phases.time("cleanup", || remove_root(&root.0));
    result.and(cleaned)
}

fn test_in_root(phases: &mut Phases, base: &Path, root: &Path, extra: &[String]) -> Result<()> {
    phases.time("copy", || {
        mount_image(root)?;
        let mut tar = Command::new("tar");
        guarded(
            tar.arg("-xpf")
                .arg(base)
                .args(["--numeric-owner", "-C"])
                .arg(root),
        )
    })?;
    let mut test_command = phases.time("setup of root", || populate(root))?;
    if !extra.is_empty() {
        eprintln!(
            "xtask fresh-check: warning: extra arguments: not the README's command as written"
        );
        test_command.push_str(" --");
        for arg in extra {
            test_command.push_str(&format!(" '{}'", arg.replace('\'', r"'\''")));
        }
    }
    phases.time("test", || {
        let home = PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?);
        let mut inside = Command::new("unshare");
        inside
            .args(UNSHARE.split(' '))
            .args(["/bin/sh", "-c", NAMESPACE_SCRIPT, "sh"])
            .arg(root)
            .arg(home.join(".rustup"))
            .args(chroot_env(root).get_args().skip(1))
            .args(["/bin/sh", "-c", &format!("cd /root/src && {test_command}")]);
        eprintln!(
            "xtask fresh-check: `{test_command}` in the clean root {}",
            root.display()
        );
        guarded(&mut inside).with_context(|| format!("`{test_command}` failed in the clean root"))
    })
}

/// The pristine base, built once; each run unpacks its own copy, so no run
/// can change it.
fn ensure_base(cache: &Path) -> Result<PathBuf> {
    let base = debian_base::Base {
        cache,
        options: DEBOOTSTRAP_ARGS,
        finish: None,
    };
    base.tarball(&guarded)
}

/// Fills the root (see [`SETUP_SCRIPT`]) and returns the README's test command.
fn populate(root: &Path) -> Result<String> {
    let repo = workspace_root();
    let git = |args: &[&str]| output(Command::new("git").args(args).current_dir(&repo));
    let head = git(&["rev-parse", "HEAD"])?;
    if !git(&["status", "--porcelain"])?.trim().is_empty() {
        eprintln!(
            "xtask fresh-check: warning: uncommitted changes are not checked, only HEAD {}",
            head.trim()
        );
    }
    let mut script = Command::new("sh");
    script
        .args(["-c", SETUP_SCRIPT, "sh"])
        .arg(root)
        .arg(&repo)
        .arg(head.trim());
    run_command(&mut script)?;
    run_command(chroot_env(root).arg("update-ca-certificates"))?;
    let readme = fs::read_to_string(root.join("root/src/README.md"))?;
    // The command under "Run every test", exactly as the README writes it.
    let block = readme
        .split_once("\nRun every test")
        .and_then(|(_, after)| after.split_once("```sh\n"))
        .and_then(|(_, rest)| rest.split_once("```"))
        .context("README.md has no ```sh block after \"Run every test\"")?;
    Ok(block.0.trim().to_string())
}

/// `chroot ROOT env -i` with the environment of a new machine's root shell,
/// plus how this machine reaches the registries.
fn chroot_env(root: &Path) -> Command {
    let mut command = Command::new("chroot");
    command
        .arg(root)
        .args(["/usr/bin/env", "-i", "HOME=/root", "LANG=C.UTF-8"]);
    command.arg(format!("PATH={PATH_INSIDE}"));
    // rustup's cargo proxy pins the toolchain for `cargo xtask` itself; a new
    // machine's shell has no such pin unless the user set one.
    let pinned_by_proxy = std::env::var("RUSTUP_TOOLCHAIN_SOURCE").is_ok_and(|s| s != "env");
    for (name, value) in std::env::vars() {
        let proxy_pin = name.starts_with("RUSTUP_TOOLCHAIN");
        if (ENV_PREFIXES.iter().any(|p| name.starts_with(p)) && !(proxy_pin && pinned_by_proxy))
            || name == "CI"
        {
            command.arg(format!("{name}={value}"));
        }
    }
    command
}

/// A root under the cache (a directory, or an image mounted on one), removed
/// when dropped: on success, error or interruption, never through a mount
/// left inside it.
struct RunRoot(PathBuf);

impl Drop for RunRoot {
    fn drop(&mut self) {
        if let Err(error) = remove_root(&self.0) {
            eprintln!("xtask fresh-check: warning: {error:#}");
        }
    }
}

/// The per-run root is an ext4 image on a loop device, not a directory:
/// removing a tree of a whole toolchain's and target's files is slow where
/// the host filesystem discards, removing one image file is not.
/// It also makes / a mount point in the root, as on a machine, which `ip
/// netns exec` needs.
fn mount_image(root: &Path) -> Result<()> {
    let image = root.with_extension("img");
    fs::create_dir(root)?;
    run_command(Command::new("truncate").args(["-s", "48G"]).arg(&image))?;
    let mut mkfs = Command::new("mkfs.ext4");
    run_command(
        mkfs.args(["-q", "-F", "-i", "65536", "-E", "nodiscard"])
            .arg(&image),
    )?;
    run_command(
        Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(root),
    )
}

fn remove_root(root: &Path) -> Result<()> {
    let mounts = fs::read_to_string("/proc/self/mountinfo")?;
    let mounted: Vec<&str> = mounts.lines().filter_map(|l| l.split(' ').nth(4)).collect();
    let inside = format!("{}/", root.display());
    if let Some(mount) = mounted.iter().find(|m| m.starts_with(&inside)) {
        bail!("not removing {}: {mount} is still mounted", root.display());
    }
    if mounted.contains(&root.to_string_lossy().as_ref()) {
        run_command(Command::new("umount").arg(root))?;
    }
    if root.exists() {
        run_command(
            Command::new("rm")
                .args(["-rf", "--one-file-system"])
                .arg(root),
        )?;
    }
    let image = root.with_extension("img");
    if image.exists() {
        fs::remove_file(&image).with_context(|| format!("removing {}", image.display()))?;
    }
    Ok(())
}

/// Roots of earlier runs that were killed before they could clean up.
fn remove_stale_roots(cache: &Path) -> Result<()> {
    for entry in fs::read_dir(cache)? {
        let name = entry?
            .file_name()
            .to_string_lossy()
            .trim_end_matches(".img")
            .to_string();
        let pid = name
            .strip_prefix("run-")
            .or_else(|| name.strip_prefix("debootstrap-"));
        if pid.is_some_and(|pid| !Path::new("/proc").join(pid).exists()) {
            remove_root(&cache.join(&name))?;
        }
    }
    Ok(())
}

static CHILD: AtomicI32 = AtomicI32::new(0);
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" {
    fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
    fn kill(pid: i32, sig: i32) -> i32;
}

/// Ctrl-C, a hang-up or a CI timeout kills the running child (with `unshare
/// --kill-child`, its whole PID namespace); the run then cleans up and fails
/// instead of dying with its root left mounted.
extern "C" fn on_signal(_: i32) {
    INTERRUPTED.store(true, Ordering::SeqCst);
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe; 9 is SIGKILL.
        unsafe { kill(pid, 9) };
    }
}

fn install_signal_handlers() {
    for signum in [1, 2, 15] {
        // SAFETY: for SIGHUP, SIGINT, SIGTERM; the handler only touches atomics and calls kill.
        unsafe { signal(signum, on_signal) };
    }
}

/// [`run_command`] with the child registered for [`on_signal`].
fn guarded(command: &mut Command) -> Result<()> {
    let interrupted = || INTERRUPTED.load(Ordering::SeqCst);
    let shown = describe(command)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    if interrupted() {
        bail!("interrupted before {shown}");
    }
    eprintln!("xtask: $ {shown}");
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {shown}"))?;
    CHILD.store(child.id() as i32, Ordering::SeqCst);
    let status = child.wait();
    CHILD.store(0, Ordering::SeqCst);
    match status? {
        _ if interrupted() => bail!("interrupted: {shown}"),
        status if !status.success() => bail!("{shown} failed with {status}"),
        _ => Ok(()),
    }
}
