//! Every kustomization rendered and validated against Kubernetes and CRD
//! schemas, and the overlays' cross-references.

use super::*;

#[test]
fn every_kustomization_renders_and_passes_kubernetes_and_crd_schema_validation() {
    require_python_modules();
    let found = kustomizations();
    let names: BTreeSet<String> = found.iter().map(|(dir, _)| relative(dir)).collect();
    for required in [
        "base",
        "overlays/azure",
        "overlays/prometheus-operator",
        "components/coredns",
    ] {
        assert!(
            names.contains(required),
            "manifests/{required} missing: {names:?}"
        );
    }
    let validator = manifests().join("validate.py");
    let mut built_from = BTreeSet::new();
    for (dir, is_component) in &found {
        let objects = render(dir);
        let input = serde_json::to_vec(&objects).unwrap();
        let output = tool("python3", &[validator.to_str().unwrap()], Some(&input));
        let report = text(&output);
        println!(
            "--- {}{}\n{report}",
            relative(dir),
            if *is_component { " (Component)" } else { "" }
        );
        assert!(
            output.status.success(),
            "{}: validation failed:\n{report}",
            relative(dir)
        );
        assert!(
            report.contains(&format!("validated {} objects, 0 failed", objects.len())),
            "{}: validator did not check every object:\n{report}",
            relative(dir)
        );
        let listed = render_output(dir, "--list-files");
        built_from.extend(
            String::from_utf8_lossy(&listed.stdout)
                .lines()
                .map(PathBuf::from),
        );
    }
    // A YAML file no kustomization uses would escape every check above.
    let mut orphans = Vec::new();
    let mut pending = vec![manifests()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() && path.file_name().unwrap() != "schemas" {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml")
                && path.file_stem().unwrap() != "kustomization"
                && !built_from.contains(&path)
            {
                orphans.push(path);
            }
        }
    }
    assert!(
        orphans.is_empty(),
        "YAML files no kustomization renders: {orphans:?}"
    );
}

#[test]
fn schema_validation_rejects_a_mistyped_field_and_a_bad_scrape_interval() {
    require_python_modules();
    let mut objects = render_overlay("overlays/prometheus-operator");
    for object in &mut objects {
        match object["kind"].as_str() {
            Some("DaemonSet") => {
                object["spec"]["template"]["spec"]["containers"][0]["securityContext"]
                    ["readOnlyRootFileSystem"] = json!(true);
            }
            Some("PodMonitor") => {
                object["spec"]["podMetricsEndpoints"][0]["interval"] = json!("30 seconds");
            }
            _ => {}
        }
    }
    let validator = manifests().join("validate.py");
    let input = serde_json::to_vec(&objects).unwrap();
    let output = tool("python3", &[validator.to_str().unwrap()], Some(&input));
    let report = text(&output);
    assert!(!output.status.success(), "broken objects passed:\n{report}");
    assert!(
        report.contains("FAIL apps/v1 DaemonSet") && report.contains("readOnlyRootFileSystem"),
        "{report}"
    );
    assert!(
        report.contains("FAIL monitoring.coreos.com/v1 PodMonitor")
            && report.contains("30 seconds"),
        "{report}"
    );
}

#[test]
fn overlay_objects_refer_to_each_other_by_names_and_labels_that_exist() {
    require_python_modules();
    for overlay in ["overlays/azure", "overlays/prometheus-operator"] {
        let objects = render_overlay(overlay);
        let daemonset = only(&objects, "DaemonSet");
        let spec = pod_spec(daemonset);
        let pod_labels = daemonset["spec"]["template"]["metadata"]["labels"]
            .as_object()
            .unwrap();
        let container = collector_container(daemonset);
        let port_names: BTreeSet<&str> = container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        let selects_pods = |selector: &Value| {
            selector
                .as_object()
                .unwrap()
                .iter()
                .all(|(k, v)| pod_labels.get(k) == Some(v))
        };

        assert!(
            selects_pods(&daemonset["spec"]["selector"]["matchLabels"]),
            "{overlay}: DaemonSet selector"
        );
        let monitor = only(&objects, "PodMonitor");
        assert!(
            selects_pods(&monitor["spec"]["selector"]["matchLabels"]),
            "{overlay}: PodMonitor selector"
        );
        for endpoint in monitor["spec"]["podMetricsEndpoints"].as_array().unwrap() {
            let port = endpoint["port"].as_str().unwrap();
            assert!(
                port_names.contains(port),
                "{overlay}: PodMonitor port {port} not on the container"
            );
        }
        let service = only(&objects, "Service");
        assert!(
            selects_pods(&service["spec"]["selector"]),
            "{overlay}: Service selector"
        );
        for port in service["spec"]["ports"].as_array().unwrap() {
            let target = port["targetPort"].as_str().unwrap();
            assert!(
                port_names.contains(target),
                "{overlay}: Service targetPort {target}"
            );
        }
        for probe in ["livenessProbe", "readinessProbe"] {
            let port = container[probe]["httpGet"]["port"].as_str().unwrap();
            assert!(port_names.contains(port), "{overlay}: {probe} port {port}");
        }
        let account = spec["serviceAccountName"].as_str().unwrap();
        assert!(
            objects
                .iter()
                .any(|o| o["kind"] == "ServiceAccount" && o["metadata"]["name"] == account),
            "{overlay}: ServiceAccount {account} not rendered"
        );
        let volumes: BTreeSet<&str> = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        for mount in container["volumeMounts"].as_array().unwrap() {
            assert!(
                volumes.contains(mount["name"].as_str().unwrap()),
                "{overlay}: {mount}"
            );
        }
        // Resolves envFrom against the rendered ConfigMaps (panics if absent).
        let labels = manifest_labels(&objects);
        assert!(
            labels.contains_key("cluster"),
            "{overlay}: COLLECTOR_LABEL must set cluster, has {labels:?}"
        );
    }
}

/// The `podMetricsEndpoints` examples of docs/operations.md (https with
/// basic auth, and mutual TLS), each put into both overlays' PodMonitor
/// and validated against that API group's CRD schema, so the documented
/// settings are ones the operators accept; and each keeps the shipped
/// endpoint's `honorLabels`, without which the app pods' `namespace` and
/// `pod` become `exported_namespace` and `exported_pod`.
#[test]
fn the_documented_tls_scrape_settings_pass_both_podmonitor_schemas() {
    require_python_modules();
    let examples = documented_scrape_endpoints();
    assert_eq!(examples.len(), 2, "https+basicAuth and mutual TLS");
    let validator = manifests().join("validate.py");
    for overlay in ["overlays/azure", "overlays/prometheus-operator"] {
        let objects = render_overlay(overlay);
        let original = only(&objects, "PodMonitor");
        let shipped = &original["spec"]["podMetricsEndpoints"][0];
        assert_eq!(shipped["honorLabels"], true, "{overlay}: {shipped}");
        for example in &examples {
            assert_eq!(
                example["honorLabels"], shipped["honorLabels"],
                "docs/operations.md: {example}"
            );
            let mut monitor = original.clone();
            let mut endpoint = example.clone();
            endpoint["interval"] = shipped["interval"].clone();
            assert_eq!(endpoint["scheme"], "https");
            monitor["spec"]["podMetricsEndpoints"] = json!([endpoint]);
            let input = serde_json::to_vec(&[&monitor]).unwrap();
            let output = tool("python3", &[validator.to_str().unwrap()], Some(&input));
            let report = text(&output);
            assert!(
                output.status.success() && report.contains("validated 1 objects, 0 failed"),
                "{overlay}: {endpoint}:\n{report}"
            );
        }
    }
}
