//! Pods of plugins that cannot run here, from the result shapes their own
//! sources build (`tests/fixtures/cni`, with its README's citations): each
//! pod a real namespace and veth, its cache file the plugin's shape with
//! this pod's ids, namespace and address. The node has its own `eth0`, the
//! name azure-vnet's lone result entry carries.

use super::*;

/// (fixture, host veth, whether the plugin routes `<podIP>/32` to the veth).
const PLUGINS: [(&str, &str, bool); 7] = [
    ("azure-vnet-containerd-1.7.json", "azvc440f455693", true),
    ("azure-vnet-containerd-2.x.json", "azv0f1e2d3c4b5", true),
    ("cilium-1.14-containerd-1.7.json", "lxc1b2c3d4e5f60", false),
    ("cilium-1.13-containerd-1.7.json", "lxc2b3c4d5e6f70", false),
    ("calico-3.29-containerd-1.7.json", "cali05f4a1849c5", true),
    ("calico-3.31-containerd-1.7.json", "cali16a5b2950d6", true),
    ("aws-vpc-cni-containerd-1.7.json", "eni8ea2c11a1f4", true),
];

/// The fixture's cache file made this pod's: its sandbox id, pod args,
/// netns path (where the shape has one), host veth name and address.
fn cache_for(fixture: &str, pod: &CniPod, host_veth: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/cni/{fixture}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut cache: serde_json::Value = serde_json::from_str(&text).unwrap();
    cache["containerId"] = pod.container_id.clone().into();
    for arg in cache["cniArgs"].as_array_mut().unwrap() {
        let value = match arg[0].as_str().unwrap() {
            "K8S_POD_NAMESPACE" => pod.namespace.clone(),
            "K8S_POD_NAME" => pod.name.clone(),
            "K8S_POD_UID" => pod.uid.clone(),
            "K8S_POD_INFRA_CONTAINER_ID" => pod.container_id.clone(),
            _ => continue,
        };
        arg[1] = value.into();
    }
    if cache.get("netns").is_some() {
        cache["netns"] = pod.netns_path().into();
    }
    let result = &mut cache["result"];
    for interface in result["interfaces"].as_array_mut().unwrap() {
        let sandbox = interface.get("sandbox").and_then(|s| s.as_str());
        if sandbox.is_some_and(|s| s.starts_with('/')) {
            interface["sandbox"] = pod.netns_path().into();
        } else if sandbox.is_none() && interface["name"] != "eth0" {
            interface["name"] = host_veth.into();
        }
    }
    for ip in result["ips"].as_array_mut().unwrap() {
        ip["address"] = format!("{}/32", pod.pod_address).into();
    }
    serde_json::to_string(&cache).unwrap()
}

#[test]
fn each_plugins_cache_shape_names_its_pod_and_never_the_nodes_eth0() {
    require_root();
    let node = Netns::new("plugins");
    // No dummy driver on every kernel: a veth with its peer beside it.
    node.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "uplink0",
    ]);
    node.ip(&["link", "set", "eth0", "up"]);
    let results = tempfile::tempdir().unwrap();
    let dir = results.path();
    let mut pods = Vec::new();
    for (i, (fixture, veth, routed)) in PLUGINS.iter().enumerate() {
        let pod_name = format!("{}-0", fixture.split('-').next().unwrap());
        let pod = CniPod::start(&node, dir, ("shop", &pod_name), "net", veth, 100 + i as u8);
        let file = &pod.attachments[0].2;
        write_like_libcni(file, cache_for(fixture, &pod, veth).as_bytes());
        if *routed {
            let host_route = format!("{}/32", pod.pod_address);
            node.ip(&["route", "add", &host_route, "dev", veth]);
        }
        pods.push(pod);
    }
    // An azure-vnet pod whose address no host route leads to: it cannot be
    // placed, and says so.
    let lost = CniPod::start(&node, dir, ("shop", "lost-0"), "net", "azv9e8d7c6b5a4", 120);
    write_like_libcni(
        &lost.attachments[0].2,
        cache_for(PLUGINS[0].0, &lost, "azv9e8d7c6b5a4").as_bytes(),
    );

    let collector = start(&node, dir);
    let metrics = collector.scrape(&node);
    let expected: BTreeMap<_, _> = pods.iter().flat_map(expected_by_hand).collect();
    assert_eq!(pod_info(&metrics), expected);
    assert!(metrics.interfaces().contains("eth0"));
    assert_eq!(
        metrics.value(
            "collector_pod_identity_errors_total",
            &[("reason", "unplaced")]
        ),
        1.0,
        "the azure-vnet pod without a host route"
    );
    for reason in ["malformed", "file", "netns", "nsid"] {
        assert_eq!(
            metrics.value("collector_pod_identity_errors_total", &[("reason", reason)]),
            0.0,
            "{reason}"
        );
    }
}
