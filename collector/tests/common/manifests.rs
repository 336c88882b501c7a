//! The manifests as the deploy and image tests read them: each
//! kustomization rendered by `manifests/render.py`, which needs only python3
//! and PyYAML, so the tests do not depend on a kustomize being installed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// The workspace's manifests/, without `..`: render.py lists the files it
/// read as normalised paths, which must compare equal to paths under this.
pub fn manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("collector/ is inside the workspace")
        .join("manifests")
}

/// `dir` relative to manifests/, for messages and for matching names.
pub fn relative(dir: &Path) -> String {
    dir.strip_prefix(manifests()).unwrap().display().to_string()
}

/// Every directory under manifests/ with a kustomization.yaml, and whether
/// it is a Component.
pub fn kustomizations() -> Vec<(PathBuf, bool)> {
    fn walk(dir: &Path, found: &mut Vec<(PathBuf, bool)>) {
        let file = dir.join("kustomization.yaml");
        if file.is_file() {
            let body = std::fs::read_to_string(&file).unwrap();
            found.push((dir.to_path_buf(), body.contains("kind: Component")));
        }
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir())
            .collect();
        entries.sort();
        for entry in entries {
            walk(&entry, found);
        }
    }
    let mut found = Vec::new();
    walk(&manifests(), &mut found);
    found
}

/// `render.py DIR FLAG`, whatever its exit status.
pub fn render_output(dir: &Path, flag: &str) -> Output {
    let script = manifests().join("render.py");
    Command::new("python3")
        .args([script.to_str().unwrap(), dir.to_str().unwrap(), flag])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("REQUIRED TOOL MISSING: python3 ({e}); install: apt-get install python3 python3-yaml")
        })
}

/// `render.py DIR --json`: the objects `kubectl apply -k DIR` would send.
pub fn render(dir: &Path) -> Vec<Value> {
    let output = render_output(dir, "--json");
    assert!(
        output.status.success(),
        "render.py {}: {}",
        relative(dir),
        super::text(&output)
    );
    let objects: Vec<Value> =
        serde_json::from_slice(&output.stdout).expect("render.py --json prints a JSON array");
    assert!(!objects.is_empty(), "{} renders nothing", relative(dir));
    objects
}

/// [`render`] of a kustomization named relative to manifests/, e.g.
/// `overlays/azure`.
pub fn render_overlay(name: &str) -> Vec<Value> {
    render(&manifests().join(name))
}
