//! How the BPF crate (`collector-ebpf`) is built, for `collector`'s build
//! script, which embeds the object, and for xtask. The BPF crate needs a
//! compiler that takes `-Z build-std=core` and the bpf-linker that `cargo
//! xtask setup` installs, neither of which the userspace toolchain has, so
//! it is built by a cargo of its own, with an environment cleared of what
//! the outer cargo or rustup set.
//!
//! The compiler: a rustup nightly with rust-src (the usual aya set-up) wins;
//! otherwise Debian's rustc-web with its library source, unlocked for
//! `-Z build-std` by RUSTC_BOOTSTRAP.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

pub const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
pub const DEBIAN_CARGO: &str = "/usr/bin/cargo";
pub const DEBIAN_CORE_SRC: &str = "/usr/lib/rustlib/src/rust/library/core";
pub const BPF_TARGET: &str = "bpfel-unknown-none";

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("no toolchain can build BPF: need a rustup nightly with rust-src, or Debian's rustc-web + rust-web-src; run `cargo xtask setup`")]
    NoToolchain,
    #[error("cannot start `{command}`")]
    Start {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed with {status}")]
    Failed { command: String, status: ExitStatus },
}

pub enum Toolchain {
    RustupNightly,
    DebianRustcWeb,
}

pub fn nightly_with_rust_src() -> bool {
    Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .env_remove("RUSTUP_TOOLCHAIN")
        .output()
        .map(|out| {
            out.status.success()
                && String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .any(|l| l.starts_with("rust-src"))
        })
        .unwrap_or(false)
}

pub fn debian_toolchain_present() -> bool {
    Path::new(DEBIAN_RUSTC).exists()
        && Path::new(DEBIAN_CARGO).exists()
        && Path::new(DEBIAN_CORE_SRC).is_dir()
}

impl Toolchain {
    pub fn detect() -> Result<Toolchain, BuildError> {
        if nightly_with_rust_src() {
            return Ok(Toolchain::RustupNightly);
        }
        if debian_toolchain_present() {
            return Ok(Toolchain::DebianRustcWeb);
        }
        Err(BuildError::NoToolchain)
    }

    /// `cargo` of this toolchain in `crate_dir`, in an environment without
    /// the outer build's settings.
    pub fn cargo(&self, crate_dir: &Path) -> Command {
        let mut command = match self {
            Toolchain::RustupNightly => {
                let mut c = Command::new("rustup");
                c.args(["run", "nightly", "cargo"]);
                c
            }
            Toolchain::DebianRustcWeb => Command::new(DEBIAN_CARGO),
        };
        for (name, _) in std::env::vars_os() {
            if name.to_str().is_some_and(leaks_into_inner_build) {
                command.env_remove(name);
            }
        }
        if let Toolchain::DebianRustcWeb = self {
            command
                .env("RUSTC", DEBIAN_RUSTC)
                .env("RUSTC_BOOTSTRAP", "1");
        }
        if let Some(home) = std::env::var_os("HOME") {
            // bpf-linker is installed by `cargo install` into ~/.cargo/bin.
            let cargo_bin = Path::new(&home).join(".cargo/bin");
            let path = std::env::var_os("PATH").unwrap_or_default();
            let mut paths = vec![cargo_bin];
            paths.extend(std::env::split_paths(&path));
            if let Ok(joined) = std::env::join_paths(paths) {
                command.env("PATH", joined);
            }
        }
        command.current_dir(crate_dir);
        command
    }
}

/// Whether a variable of this process would change what the inner cargo
/// builds. A build script sees everything the outer cargo sets for it
/// (`CARGO_ENCODED_RUSTFLAGS`, `RUSTC`, `RUSTC_WORKSPACE_WRAPPER` for
/// clippy, `TARGET`, `PROFILE`, `OUT_DIR`, its jobserver...), and `CARGO_*`
/// is also how cargo reads its configuration (`CARGO_TARGET_DIR`,
/// `CARGO_BUILD_TARGET`, `CARGO_PROFILE_*`). Kept: where crates come from
/// and how they are fetched.
fn leaks_into_inner_build(name: &str) -> bool {
    const KEPT_CARGO: [&str; 7] = [
        "CARGO_HOME",
        "CARGO_NET_",
        "CARGO_HTTP_",
        "CARGO_REGISTRIES_",
        "CARGO_REGISTRY_",
        "CARGO_SOURCE_",
        "CARGO_TERM_",
    ];
    const BUILD_SCRIPT: [&str; 10] = [
        "TARGET",
        "HOST",
        "OUT_DIR",
        "PROFILE",
        "OPT_LEVEL",
        "DEBUG",
        "NUM_JOBS",
        "RUSTFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ];
    (name.starts_with("CARGO") && !KEPT_CARGO.iter().any(|kept| name.starts_with(kept)))
        || name.starts_with("__CARGO")
        || name.starts_with("RUSTC")
        || name.starts_with("RUSTDOC")
        || name.starts_with("RUSTUP_TOOLCHAIN")
        || BUILD_SCRIPT.contains(&name)
}

/// One build of the BPF crate.
pub struct Build {
    /// The `collector-ebpf` directory.
    pub crate_dir: PathBuf,
    /// Its own `target/` when `None`.
    pub target_dir: Option<PathBuf>,
    pub release: bool,
}

impl Build {
    /// The object this build writes.
    pub fn object(&self) -> PathBuf {
        let target_dir = self
            .target_dir
            .clone()
            .unwrap_or_else(|| self.crate_dir.join("target"));
        let profile = if self.release { "release" } else { "debug" };
        target_dir
            .join(BPF_TARGET)
            .join(profile)
            .join("collector-ebpf")
    }

    /// Builds the object (cargo's own freshness check makes an unchanged
    /// crate cheap) and returns its path. The inner cargo's output goes to
    /// stderr: a build script's stdout is read by cargo as instructions.
    pub fn run(&self, toolchain: &Toolchain) -> Result<PathBuf, BuildError> {
        let mut command = toolchain.cargo(&self.crate_dir);
        command.args(["build", "-Z", "build-std=core", "--target", BPF_TARGET]);
        if self.release {
            command.arg("--release");
        }
        if let Some(target_dir) = &self.target_dir {
            command.arg("--target-dir").arg(target_dir);
        }
        command.stdout(Stdio::from(std::io::stderr()));
        let described = describe(&command);
        eprintln!("ebpf-build: $ {described}");
        let status = command.status().map_err(|source| BuildError::Start {
            command: described.clone(),
            source,
        })?;
        if !status.success() {
            return Err(BuildError::Failed {
                command: described,
                status,
            });
        }
        Ok(self.object())
    }

    /// The crate's dep-info: every source file the object was built from
    /// (the BPF crate's, collector-common's, aya-ebpf's), as cargo wrote it
    /// beside the object. Empty before the first build.
    pub fn sources(&self) -> Vec<PathBuf> {
        let dep_info = self.object().with_extension("d");
        let Ok(text) = std::fs::read_to_string(dep_info) else {
            return Vec::new();
        };
        text.lines()
            .filter_map(|line| line.split_once(": ").map(|(_, deps)| deps))
            .flat_map(split_dep_paths)
            .map(PathBuf::from)
            .collect()
    }
}

/// Paths of a dep-info line: separated by spaces, a space inside a path
/// escaped with a backslash.
fn split_dep_paths(deps: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut current = String::new();
    let mut chars = deps.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => current.extend(chars.next()),
            ' ' => {
                if !current.is_empty() {
                    paths.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        paths.push(current);
    }
    paths
}

fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outer_builds_settings_are_dropped_and_the_registrys_kept() {
        for name in [
            "CARGO",
            "CARGO_ENCODED_RUSTFLAGS",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET",
            "CARGO_PROFILE_RELEASE_LTO",
            "CARGO_MAKEFLAGS",
            "CARGO_PKG_NAME",
            "CARGO_CFG_TARGET_ARCH",
            "__CARGO_FIX_PLZ",
            "RUSTC",
            "RUSTC_WORKSPACE_WRAPPER",
            "RUSTC_BOOTSTRAP",
            "RUSTDOCFLAGS",
            "RUSTFLAGS",
            "RUSTUP_TOOLCHAIN",
            "TARGET",
            "PROFILE",
            "OUT_DIR",
        ] {
            assert!(leaks_into_inner_build(name), "{name}");
        }
        for name in [
            "CARGO_HOME",
            "CARGO_NET_OFFLINE",
            "CARGO_HTTP_CAINFO",
            "CARGO_REGISTRIES_CRATES_IO_PROTOCOL",
            "RUSTUP_HOME",
            "PATH",
            "HOME",
            "TARGETED",
        ] {
            assert!(!leaks_into_inner_build(name), "{name}");
        }
    }

    #[test]
    fn dep_info_paths_keep_their_escaped_spaces() {
        assert_eq!(
            split_dep_paths("/a/main.rs /b\\ c/lib.rs  /d.rs"),
            ["/a/main.rs", "/b c/lib.rs", "/d.rs"]
        );
    }
}
