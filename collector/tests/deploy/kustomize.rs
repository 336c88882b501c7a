//! render.py against the real kustomize, on machines that have one.
//!
//! The other deploy tests read render.py's output because the clean root
//! of `cargo xtask fresh-check` has no kustomize 5 (Debian's kubectl embeds
//! 2.0.3, which predates Components). Where `kubectl` with kustomize 5 or
//! later is installed, this test makes sure render.py still builds exactly
//! what `kubectl kustomize` builds.

use super::*;

/// The kustomize embedded in `kubectl` (its major version and as printed),
/// or why there is none to compare with.
fn kubectl_kustomize() -> Result<(u64, String), String> {
    let output = match Command::new("kubectl")
        .args(["version", "--client"])
        .stdin(Stdio::null())
        .output()
    {
        Ok(output) => output,
        Err(e) => return Err(format!("kubectl is not installed ({e})")),
    };
    let report = text(&output);
    // kubectl prints the embedded kustomize since 1.24; an older kubectl
    // carries kustomize 2 or 3, which predate Components.
    let Some(version) = report
        .lines()
        .find_map(|line| line.trim().strip_prefix("Kustomize Version:"))
    else {
        return Err(format!(
            "kubectl reports no kustomize version, so it embeds kustomize older than 5: {}",
            report.trim()
        ));
    };
    let version = version.trim().to_string();
    let major = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|major| major.parse().ok())
        .ok_or_else(|| format!("unreadable kustomize version {version:?}"))?;
    Ok((major, version))
}

/// The objects of a YAML stream, as JSON values so they compare with
/// render.py's `--json` output.
fn yaml_objects(stream: &[u8]) -> Vec<Value> {
    // Empty documents (a stream may end in one) are no objects and are
    // skipped.
    serde_saphyr::from_slice_multiple(stream).expect("kustomize prints valid YAML")
}

/// `Kind/namespace/name` of an object.
fn identity(object: &Value) -> String {
    let metadata = &object["metadata"];
    format!(
        "{}/{}/{}",
        object["kind"].as_str().unwrap_or("?"),
        metadata["namespace"].as_str().unwrap_or(""),
        metadata["name"].as_str().unwrap_or("?")
    )
}

#[test]
fn render_py_builds_what_kubectl_kustomize_builds() {
    let version = match kubectl_kustomize() {
        Ok((major, version)) if major >= 5 => version,
        Ok((_, version)) => {
            println!(
                "NOT COMPARED with kubectl kustomize: its kustomize is {version}, older than 5, \
                 which the manifests need (Components); render.py is still checked by the other deploy tests"
            );
            return;
        }
        Err(why) => {
            println!(
                "NOT COMPARED with kubectl kustomize: {why}; render.py is still checked by the other deploy tests"
            );
            return;
        }
    };
    let found = kustomizations();
    assert!(!found.is_empty(), "no kustomization under manifests/");
    for (dir, _) in &found {
        let output = tool("kubectl", &["kustomize", dir.to_str().unwrap()], None);
        assert!(
            output.status.success(),
            "kubectl kustomize {}: {}",
            relative(dir),
            text(&output)
        );
        let expected = yaml_objects(&output.stdout);
        let rendered = render(dir);
        // Parsed, not textual: kustomize and PyYAML choose different but
        // equivalent scalar styles (block vs quoted strings). Order is
        // compared too, since render.py reproduces kustomize's output order.
        // Identities first, so a renamed or missing object reads in one
        // line, then each object field for field.
        let identities = |objects: &[Value]| objects.iter().map(identity).collect::<Vec<String>>();
        assert_eq!(
            identities(&rendered),
            identities(&expected),
            "render.py {} builds other objects, or in another order, than kubectl kustomize \
             (kustomize {version})",
            relative(dir)
        );
        for (ours, theirs) in rendered.iter().zip(&expected) {
            assert_eq!(
                ours,
                theirs,
                "render.py {} renders {} other than kubectl kustomize (kustomize {version})",
                relative(dir),
                identity(ours)
            );
        }
        println!(
            "render.py {} equals kubectl kustomize (kustomize {version}): {} objects",
            relative(dir),
            expected.len()
        );
    }
}
