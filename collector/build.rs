//! Embeds the BPF object that `cargo xtask build-ebpf` produced.
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let object = manifest.join("../target/bpf/collector-ebpf.o");
    println!("cargo::rerun-if-changed={}", object.display());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("collector-ebpf.o");
    match std::fs::metadata(&object) {
        Ok(meta) if meta.len() > 0 => {
            std::fs::copy(&object, &out).unwrap();
        }
        _ => {
            println!(
                "cargo::error=BPF object {} is missing: run `cargo xtask build-ebpf` first (or `cargo xtask test`/`cargo xtask run`, which do it)",
                object.display()
            );
        }
    }
}
