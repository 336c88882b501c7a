//! The pods the kernel matrix's guests lay out by hand (`TEST_PODS_BY_HAND`)
//! stand for containerd's only if they leave what containerd leaves: the
//! same cache files, value for value but the pod's own ids, and the same
//! links.

use super::*;

/// The pod's cache files (by name with the sandbox id taken out), each
/// with the values only this pod has replaced by placeholders and the
/// `cniArgs` (go-cni's Go map order) sorted. MACs are the links' own (a
/// bridge takes its lowest port's as its own): `eth0`'s is checked, then
/// every one but loopback's is a placeholder.
fn normalised(runtime: &PodRuntime, pod: &Pod) -> BTreeMap<String, serde_json::Value> {
    let own = [
        (pod.container_id.clone(), "<sandbox id>"),
        (pod.uid.clone(), "<uid>"),
        (pod.netns.name.clone(), "<netns>"),
        (pod.veth().to_string(), "<veth>"),
    ];
    let eth0_mac = pod.netns.mac("eth0");
    std::fs::read_dir(runtime.results_dir())
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let mut name = entry.file_name().to_string_lossy().into_owned();
            let mut text = std::fs::read_to_string(entry.path()).unwrap();
            for (value, placeholder) in &own {
                name = name.replace(value.as_str(), placeholder);
                text = text.replace(value.as_str(), placeholder);
            }
            let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
            json["cniArgs"]
                .as_array_mut()
                .unwrap()
                .sort_by_key(|arg| arg.to_string());
            for interface in json["result"]["interfaces"].as_array_mut().unwrap() {
                if interface["name"] == "eth0" {
                    assert_eq!(interface["mac"], eth0_mac.as_str());
                }
                if interface["name"] != "lo" {
                    interface["mac"] = "<mac>".into();
                }
            }
            (name, json)
        })
        .collect()
}

/// (interface, master, addresses) of `names` in `ns`.
fn links(ns: &Netns, names: &[&str]) -> Vec<(String, String, Vec<String>)> {
    let output = ns.ip(&["-j", "addr", "show"]);
    let links: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    names
        .iter()
        .map(|name| {
            let link = links.iter().find(|l| l["ifname"] == *name).unwrap();
            let addresses = link["addr_info"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| format!("{}/{}", a["local"], a["prefixlen"]))
                .collect();
            let master = link["master"].as_str().unwrap_or_default().to_string();
            (name.to_string(), master, addresses)
        })
        .collect()
}

#[test]
fn pods_laid_out_by_hand_leave_what_containerd_leaves() {
    require_root();
    let pod = ("shop", "cart-0");
    let (real_node, hand_node) = (Netns::new("shapecd"), Netns::new("shapehand"));
    // One subnet for both: their namespaces are apart, and the addresses
    // and conflists are then the same.
    let real = PodRuntime::containerd(&real_node, 88);
    let hand = PodRuntime::by_hand(&hand_node, 88);
    let (real_pod, hand_pod) = (real.run_pod(pod), hand.run_pod(pod));
    let files = normalised(&real, &real_pod);
    assert_eq!(files.len(), 2, "eth0 and go-cni's loopback: {files:?}");
    assert_eq!(normalised(&hand, &hand_pod), files);
    assert_eq!(real_pod.pod_address, hand_pod.pod_address);
    // The pods' routes: host-local adds none but the subnet's own.
    let routes = |pod: &Pod| text(&pod.netns.ip(&["route", "show"]));
    assert_eq!(routes(&real_pod), routes(&hand_pod));
    for (ns, pod) in [(&real_node, &real_pod), (&hand_node, &hand_pod)] {
        let node_side = links(ns, &[BRIDGE, pod.veth()]);
        assert_eq!(node_side[0].2, ["\"198.18.88.1\"/24"]);
        assert_eq!(node_side[1].1, BRIDGE, "the veth is on the bridge");
        let pod_side = links(&pod.netns, &["lo", "eth0"]);
        assert_eq!(pod_side[1].2, [format!("\"{}\"/24", pod.pod_address)]);
    }
}
