//! The Debian 12 root fresh-check unpacks for each run and `cargo xtask
//! image` imports as `debian:bookworm`: debootstrap into a staging
//! directory, packed into a tarball named after everything that went into
//! it, so it is built once per cache and rebuilt when any input changes.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;

use crate::output;

pub const SUITE: &str = "bookworm";
/// Isolates a process tree: its mounts and processes end with it, and with
/// `unshare` when that is killed.
pub const UNSHARE: &str = "--mount --propagation private --pid --fork --kill-child --";

/// A step on the root before it is packed.
pub type Finish<'a> = &'a dyn Fn(&Path) -> Result<()>;

/// What goes into one base.
pub struct Base<'a> {
    /// Where its tarball and the key it was built from are kept; the other
    /// tarballs there are removed when a new one is built.
    pub cache: &'a Path,
    /// debootstrap's options before the suite.
    pub options: &'a str,
    /// What is done to the root before it is packed, described for the key
    /// (so that a change to it builds a new base).
    pub finish: Option<(String, Finish<'a>)>,
}

impl Base<'_> {
    /// The base's tarball, built when not cached; `run` runs each step (a
    /// caller that handles interruption passes its own).
    pub fn tarball(&self, run: &dyn Fn(&mut Command) -> Result<()>) -> Result<PathBuf> {
        if Command::new("debootstrap")
            .arg("--version")
            .output()
            .is_err()
        {
            crate::run_command(Command::new("apt-get").args([
                "install",
                "-y",
                "-q",
                "debootstrap",
            ]))?;
        }
        // The mirror apt uses here for the suite, so debootstrap goes the same way.
        let sites = output(Command::new("apt-get").args([
            "indextargets",
            "--format",
            "$(SITE) $(RELEASE)",
        ]))?;
        let mirror = sites
            .lines()
            .find_map(|l| l.strip_suffix(&format!(" {SUITE}")));
        let key = key(
            output(Command::new("debootstrap").arg("--version"))?.trim(),
            self.options,
            mirror,
            output(Command::new("dpkg").arg("--print-architecture"))?.trim(),
            self.finish.as_ref().map(|(what, _)| what.as_str()),
        );
        let digest =
            output(Command::new("sh").args(["-c", "printf %s \"$1\" | sha256sum", "-", &key]))?;
        let tarball = self.cache.join(format!("base-{}.tar", &digest[..16]));
        if tarball.exists() {
            eprintln!("xtask: cached base {} ({key})", tarball.display());
            return Ok(tarball);
        }
        eprintln!("xtask: building the base ({key})");
        fs::create_dir_all(self.cache)?;
        let staging = Staging(
            self.cache
                .join(format!("debootstrap-{}", std::process::id())),
        );
        let mut debootstrap = Command::new("unshare");
        debootstrap
            .args(UNSHARE.split(' '))
            .arg("debootstrap")
            .args(self.options.split(' '));
        run(debootstrap.arg(SUITE).arg(&staging.0).args(mirror))?;
        if let Some((_, finish)) = &self.finish {
            finish(&staging.0)?;
        }
        let partial = tarball.with_extension(format!("partial-{}", std::process::id()));
        let mut tar = Command::new("tar");
        run(tar
            .arg("-cf")
            .arg(&partial)
            .args(["--numeric-owner", "-C"])
            .arg(&staging.0)
            .arg("."))?;
        for old in fs::read_dir(self.cache)? {
            let old = old?.path();
            if old.extension().is_some_and(|e| e == "tar" || e == "key") {
                fs::remove_file(old)?;
            }
        }
        fs::write(tarball.with_extension("key"), &key)?;
        fs::rename(&partial, &tarball)?;
        Ok(tarball)
    }
}

/// Everything a base is built from, in one line (plus what `finish` does).
fn key(
    debootstrap_version: &str,
    options: &str,
    mirror: Option<&str>,
    architecture: &str,
    finish: Option<&str>,
) -> String {
    let mut key = format!(
        "{debootstrap_version} {options} {SUITE} {} {architecture}",
        mirror.unwrap_or("(default mirror)")
    );
    if let Some(finish) = finish {
        key.push_str(&format!(" then {finish}"));
    }
    key
}

/// The debootstrap target, removed when dropped; `--one-file-system`, so a
/// mount left inside it is never followed.
struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        if self.0.exists() {
            let removed = Command::new("rm")
                .args(["-rf", "--one-file-system"])
                .arg(&self.0)
                .status();
            if !removed.is_ok_and(|status| status.success()) {
                eprintln!("xtask: warning: could not remove {}", self.0.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_input_is_in_the_key() {
        let plain = key(
            "debootstrap 1.0.128",
            "--variant=minbase",
            None,
            "amd64",
            None,
        );
        assert_eq!(
            plain,
            "debootstrap 1.0.128 --variant=minbase bookworm (default mirror) amd64"
        );
        let mirrored = key(
            "debootstrap 1.0.128",
            "--variant=minbase",
            Some("http://deb.debian.org/debian"),
            "amd64",
            None,
        );
        let finished = key(
            "debootstrap 1.0.128",
            "--variant=minbase",
            None,
            "amd64",
            Some("sources A"),
        );
        let refinished = key(
            "debootstrap 1.0.128",
            "--variant=minbase",
            None,
            "amd64",
            Some("sources B"),
        );
        let keys = [&plain, &mirrored, &finished, &refinished];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
