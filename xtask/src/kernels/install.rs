//! What the matrix needs installed: virtme-ng in a virtualenv, and the
//! kernel packages, downloaded with apt and extracted into the cache.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{cache_dir, KernelSpec, Suite};
use crate::run_command;

/// virtme-ng release the matrix was verified with.
const VIRTME_NG: &str = "virtme-ng==1.42";
/// Package lists younger than this are used as they are: a warm run does
/// not wait on the mirrors (the newest kernel ABI is at most a day late).
const LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// virtme-ng in a virtualenv of its own (never the system Python); returns
/// the venv's bin directory, which must be first on PATH (vng runs
/// virtme-run from there).
pub fn ensure_vng() -> Result<PathBuf> {
    let venv = cache_dir().join("vng-venv");
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

/// A kernel extracted under the cache, in `<package>/`.
pub struct Kernel {
    pub package: String,
    pub release: String,
    pub image: PathBuf,
}

fn apt_options(suite: Suite) -> Vec<String> {
    match suite {
        Suite::Host => Vec::new(),
        Suite::Bullseye => {
            let apt = cache_dir().join("apt-bullseye");
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

/// Bullseye's package lists, fetched into the cache (the machine's apt
/// setup is left alone), again only once they are older than a day. Same
/// form and keyring as the host's debian.sources.
fn prepare_bullseye() -> Result<()> {
    let apt = cache_dir().join("apt-bullseye");
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
    let stamp = apt.join("updated");
    let fresh = std::fs::metadata(&stamp)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < LISTS_MAX_AGE));
    if fresh {
        eprintln!("xtask kernels: bullseye package lists are less than a day old");
        return Ok(());
    }
    run_command(
        Command::new("apt-get")
            .args(apt_options(Suite::Bullseye))
            .args(["update", "-q"]),
    )?;
    // apt dates the lists by the mirror's Last-Modified, not by the fetch.
    std::fs::write(stamp, "")?;
    Ok(())
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

pub fn install_kernel(spec: &KernelSpec) -> Result<Kernel> {
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
    let root = cache_dir().join(&package);
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
    let debs = cache_dir().join("debs");
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
