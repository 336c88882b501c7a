//! Builds the BPF crate (`collector-ebpf`) and embeds its object, as
//! aya-template's build script does: after `cargo xtask setup`, a plain
//! `cargo build` or `cargo run -p collector` builds both. The BPF crate
//! has a toolchain of its own (see the `ebpf-build` crate).
use std::path::{Path, PathBuf};

use ebpf_build::{Build, Toolchain};

/// Another target directory for the BPF crate than its own `target/`:
/// `cargo xtask kernels` keeps one in its cache, so that a fresh clone does
/// not rebuild `core` for BPF.
const TARGET_DIR_VAR: &str = "COLLECTOR_EBPF_TARGET_DIR";

fn main() {
    if let Err(error) = embed_object() {
        let mut text = error.to_string();
        let mut cause = error.source();
        while let Some(next) = cause {
            text.push_str(&format!(": {next}"));
            cause = next.source();
        }
        println!("cargo::error=building the BPF object: {text}");
        // A failing exit, not only the error line: cargo then shows this
        // script's stderr, where the BPF crate's compiler errors are.
        std::process::exit(1);
    }
}

fn embed_object() -> Result<(), Box<dyn std::error::Error>> {
    let manifest =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").ok_or("no CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("no OUT_DIR")?);
    let crate_dir = manifest
        .parent()
        .ok_or("collector has no parent directory")?
        .join("collector-ebpf");
    println!("cargo::rerun-if-env-changed={TARGET_DIR_VAR}");
    // Always the release profile, whatever collector's (aya-build does the
    // same): the object is what the kernel verifies and runs.
    let build = Build {
        crate_dir: crate_dir.clone(),
        target_dir: std::env::var_os(TARGET_DIR_VAR).map(PathBuf::from),
        release: true,
    };
    // The crate's own files, a new module included (the directory is
    // scanned), then every file its last build read (collector-common's
    // too), so that no list of programs or crates is kept here.
    for path in ["src", "Cargo.toml", "Cargo.lock"] {
        rerun_if_changed(&crate_dir.join(path));
    }
    let object = build.run(&Toolchain::detect()?)?;
    for source in build.sources() {
        rerun_if_changed(&source);
    }
    // An unchanged object is left alone: a new mtime would recompile the
    // collector, which includes it.
    let embedded = out_dir.join("collector-ebpf.o");
    let bytes =
        std::fs::read(&object).map_err(|error| format!("reading {}: {error}", object.display()))?;
    if std::fs::read(&embedded).ok() != Some(bytes) {
        std::fs::copy(&object, &embedded)
            .map_err(|error| format!("copying {}: {error}", object.display()))?;
    }
    Ok(())
}

fn rerun_if_changed(path: &Path) {
    println!("cargo::rerun-if-changed={}", path.display());
}
