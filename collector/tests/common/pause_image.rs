//! The sandbox image of the pods containerd makes for the tests, built
//! locally (no registry can be reached): `pause.c` compiled statically is
//! its one file, written as an OCI image layout archive that
//! `ctr images import` takes.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

/// The name containerd's CRI plugin is configured to run sandboxes from.
pub const PAUSE_IMAGE: &str = "localhost/collector-test/pause:1";

const PAUSE_SOURCE: &str = include_str!("pause.c");

/// Builds the image under `dir`; returns the archive's path.
pub fn build_pause_image(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    let blobs = dir.join("layout/blobs/sha256");
    std::fs::create_dir_all(&rootfs).unwrap();
    std::fs::create_dir_all(&blobs).unwrap();
    let source = dir.join("pause.c");
    std::fs::write(&source, PAUSE_SOURCE).unwrap();
    let binary = rootfs.join("pause");
    run(
        "gcc",
        &[
            "-static",
            "-Os",
            "-s",
            "-o",
            binary.to_str().unwrap(),
            source.to_str().unwrap(),
        ],
    );

    // One uncompressed layer holding /pause, owned by root.
    let layer = dir.join("layer.tar");
    run(
        "tar",
        &[
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--mtime=@0",
            "-C",
            rootfs.to_str().unwrap(),
            "-cf",
            layer.to_str().unwrap(),
            "pause",
        ],
    );
    let layer = std::fs::read(&layer).unwrap();
    let layer_digest = blob(&blobs, &layer);
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": ["/pause"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": blob(&blobs, &config),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer.len(),
        }],
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    // containerd's importer takes the image's full name from this annotation.
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": blob(&blobs, &manifest),
            "size": manifest.len(),
            "annotations": {"io.containerd.image.name": PAUSE_IMAGE},
            "platform": {"architecture": "amd64", "os": "linux"},
        }],
    });
    let layout = dir.join("layout");
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let archive = dir.join("pause-image.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&archive)
        .arg(".")
        .status()
        .expect("starting tar");
    assert!(status.success(), "tar of the image layout failed");
    archive
}

/// Stores `data` as a content-addressed blob; returns its digest.
fn blob(blobs: &Path, data: &[u8]) -> String {
    let hex: String = ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(blobs.join(&hex), data).unwrap();
    format!("sha256:{hex}")
}
