//! Which compiler builds the BPF crate. A rustup nightly with rust-src (the
//! usual aya set-up) wins; otherwise Debian's rustc-web with its library
//! source, unlocked for `-Z build-std` by RUSTC_BOOTSTRAP.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Result};

pub enum Toolchain {
    RustupNightly,
    DebianRustcWeb,
}

pub const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
pub const DEBIAN_CARGO: &str = "/usr/bin/cargo";
pub const DEBIAN_CORE_SRC: &str = "/usr/lib/rustlib/src/rust/library/core";

pub fn nightly_with_rust_src() -> bool {
    Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
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

pub fn detect() -> Result<Toolchain> {
    if nightly_with_rust_src() {
        return Ok(Toolchain::RustupNightly);
    }
    if debian_toolchain_present() {
        return Ok(Toolchain::DebianRustcWeb);
    }
    bail!("no toolchain can build BPF: need a rustup nightly with rust-src, or Debian's rustc-web + rust-web-src; run `cargo xtask setup`")
}

impl Toolchain {
    pub fn cargo(&self, crate_dir: &Path) -> Command {
        let mut command = match self {
            Toolchain::RustupNightly => {
                let mut c = Command::new("rustup");
                c.args(["run", "nightly", "cargo"]);
                c
            }
            Toolchain::DebianRustcWeb => {
                let mut c = Command::new(DEBIAN_CARGO);
                c.env("RUSTC", DEBIAN_RUSTC).env("RUSTC_BOOTSTRAP", "1");
                c
            }
        };
        // Outer cargo/rustup settings would leak into the inner build.
        for var in [
            "RUSTUP_TOOLCHAIN",
            "RUSTC_WRAPPER",
            "RUSTC_WORKSPACE_WRAPPER",
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET",
        ] {
            command.env_remove(var);
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
