//! `cargo xtask fuzz`: bounded cargo-fuzz runs over the parsers of text and
//! bytes the kernel hands us (tracefs formats, BTF, netlink dumps).

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{run_command, workspace_root};

pub const TARGETS: [&str; 3] = ["tracefs_format", "btf", "netlink_dump"];

fn cargo_fuzz_installed() -> bool {
    Command::new("rustup")
        .args(["run", "nightly", "cargo", "fuzz", "--version"])
        .output()
        .map(|out| out.status.success())
        .unwrap_or(false)
}

pub fn run(seconds: u64, only: Option<&str>) -> Result<()> {
    let nightly = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output();
    if !nightly.map(|out| out.status.success()).unwrap_or(false) {
        bail!("cargo fuzz needs a rustup nightly toolchain (sanitizers); none is installed");
    }
    if !cargo_fuzz_installed() {
        run_command(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    let root = workspace_root();
    let targets: Vec<&str> = match only {
        Some(target) if TARGETS.contains(&target) => vec![target],
        Some(other) => bail!(
            "--target {other}: unknown fuzz target (have {})",
            TARGETS.join(", ")
        ),
        None => TARGETS.to_vec(),
    };
    for target in targets {
        let corpus = root.join("fuzz/corpus").join(target);
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("creating {}", corpus.display()))?;
        let seeds = root.join("fuzz/seeds").join(target);
        let mut command = Command::new("rustup");
        command
            .current_dir(&root)
            .args(["run", "nightly", "cargo", "fuzz", "run", target])
            .arg(&corpus)
            .arg(&seeds)
            .args([
                "--",
                &format!("-max_total_time={seconds}"),
                "-rss_limit_mb=2048",
                "-timeout=10",
            ]);
        if let Err(error) = run_command(&mut command) {
            let artifacts = root.join("fuzz/artifacts").join(target);
            bail!(
                "{error}\nfuzz target {target} found a crash; its input is in {}. Add it as a regression test next to the parser's unit tests, fix, rerun.",
                artifacts.display()
            );
        }
        report_corpus(target, &corpus);
    }
    Ok(())
}

fn report_corpus(target: &str, corpus: &Path) {
    let entries = std::fs::read_dir(corpus).map(|d| d.count()).unwrap_or(0);
    eprintln!("xtask fuzz: {target}: no crash; corpus holds {entries} inputs");
}
