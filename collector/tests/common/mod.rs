//! Shared harness of the privileged integration tests: network namespaces
//! and veth pairs the test creates (and removes on drop, also when a test
//! panics), the collector binary started inside a namespace, and a parser
//! for what it serves. Traffic only ever uses 198.18.0.0/15 inside those
//! namespaces.
#![allow(dead_code)]

mod bpf;
mod containerd;
mod cri;
mod cri_pods;
mod hand_pods;
mod manifests;
mod metrics;
mod netns;
mod pause_image;
mod pods;
mod process;
mod tls;

use std::process::{Command, Output};

// Every test binary includes the whole harness and uses part of it.
#[allow(unused_imports)]
pub use bpf::*;
#[allow(unused_imports)]
pub use containerd::*;
#[allow(unused_imports)]
pub use cri::*;
#[allow(unused_imports)]
pub use cri_pods::*;
#[allow(unused_imports)]
pub use hand_pods::*;
#[allow(unused_imports)]
pub use manifests::*;
#[allow(unused_imports)]
pub use metrics::*;
#[allow(unused_imports)]
pub use netns::*;
#[allow(unused_imports)]
pub use pause_image::*;
#[allow(unused_imports)]
pub use pods::*;
#[allow(unused_imports)]
pub use process::*;
#[allow(unused_imports)]
pub use tls::*;

pub const COLLECTOR: &str = env!("CARGO_BIN_EXE_collector");

/// Fails loudly: these tests are part of CI and must never pass by skipping.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(uid, 0, "PRIVILEGED TEST CANNOT RUN: needs root for BPF and network namespaces (run `cargo xtask test` as root)");
    println!("privileged test running as root: BPF and netns available");
}

/// A finished command's stdout and stderr, for assertion messages.
pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

pub fn run(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("starting {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        text(&output)
    );
    output
}
