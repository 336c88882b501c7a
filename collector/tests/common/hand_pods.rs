//! Pods laid out by hand as containerd 1.6 and the bridge plugin lay them
//! out, for where containerd is not run: the kernel matrix's guests
//! (`TEST_PODS_BY_HAND`, set by `cargo xtask kernels`), whose root is the
//! host's, shared read-only. The same topology as containerd's (a
//! `cni-<uuid>` namespace, a `veth…` on the `cni0` bridge, `eth0` inside)
//! and the cache files containerd really wrote here
//! (`fixtures/cni/*-containerd-1.6.json`) with this pod's values put in.

use std::path::PathBuf;

use super::*;

/// Set in the environment where pods are made by hand instead.
pub const BY_HAND: &str = "TEST_PODS_BY_HAND";

const BRIDGE_CACHE: &str = include_str!("../fixtures/cni/bridge-containerd-1.6.json");
const LOOPBACK_CACHE: &str = include_str!("../fixtures/cni/loopback-containerd-1.6.json");

/// The values of the pod those files were captured from.
const CAPTURED: Captured<'static> = Captured {
    container_id: "36d995e11c36",
    namespace: "\"shop\"",
    name: "\"cart-0\"",
    uid: "00002952-7e0b-4b3a-9d1e-000029520000",
    netns: "cni-5d617646-38d9-addc-8a0a-fc3c0b1c4bbe",
    veth: "veth62bb8aee",
    bridge_mac: "c6:06:0f:14:54:93",
    veth_mac: "a2:93:63:ce:0d:d7",
    pod_mac: "9a:56:38:b4:6b:ac",
    address: "198.18.61.2/24",
    gateway: "198.18.61.1\"",
};

struct Captured<'a> {
    container_id: &'a str,
    namespace: &'a str,
    name: &'a str,
    uid: &'a str,
    netns: &'a str,
    veth: &'a str,
    bridge_mac: &'a str,
    veth_mac: &'a str,
    pod_mac: &'a str,
    address: &'a str,
    gateway: &'a str,
}

/// The node side: the bridge, and the results directory libcni would write.
pub struct HandMade {
    node: String,
    subnet: u8,
    results: tempfile::TempDir,
}

/// What a hand-made pod is, for the caller to fill its `Pod` with.
pub struct HandMadePod {
    pub container_id: String,
    /// Owned: deleted when the pod is, after its cache files.
    pub netns: Netns,
    pub address: String,
    pub veth: String,
    pub files: Vec<PathBuf>,
}

impl HandMade {
    pub fn start(node: &Netns, subnet: u8) -> HandMade {
        check_templates();
        let gateway = format!("198.18.{subnet}.1/24");
        add_bridge(node);
        node.ip(&["addr", "add", &gateway, "dev", BRIDGE]);
        node.ip(&["link", "set", BRIDGE, "up"]);
        HandMade {
            node: node.name.clone(),
            subnet,
            results: tempfile::tempdir().unwrap(),
        }
    }

    /// Where the cache files go; made at the first pod, as libcni does.
    pub fn results_dir(&self) -> PathBuf {
        self.results.path().join("results")
    }

    /// Pod number `index` (from 0) of this node: address .(index + 2).
    pub fn run_pod(&self, (namespace, name): (&str, &str), uid: &str, index: u8) -> HandMadePod {
        let netns_name = format!("cni-{}", unique_uuid());
        // IPv6 off and lo up before eth0 exists: as the sysctls containerd's
        // pods get, without the router solicitation eth0 would send first.
        let pod = Netns::named(netns_name.clone());
        let node = Netns::existing(self.node.clone());
        let veth = format!("veth{}", &unique_hex(8));
        let address = format!("198.18.{}.{}", self.subnet, index + 2);
        let gateway = format!("198.18.{}.1", self.subnet);
        node.ip(&[
            "link",
            "add",
            &veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &netns_name,
        ]);
        node.ip(&["link", "set", &veth, "master", BRIDGE, "up"]);
        pod.ip(&["addr", "add", &format!("{address}/24"), "dev", "eth0"]);
        pod.ip(&["link", "set", "eth0", "up"]);

        let container_id = unique_hex(64);
        let (namespace, name) = (
            serde_json::to_string(namespace).unwrap(),
            serde_json::to_string(name).unwrap(),
        );
        let (bridge_mac, veth_mac, pod_mac) = (node.mac(BRIDGE), node.mac(&veth), pod.mac("eth0"));
        let (cidr, gateway_end) = (format!("{address}/24"), format!("{gateway}\""));
        let values = Captured {
            container_id: &container_id,
            namespace: &namespace,
            name: &name,
            uid,
            netns: &netns_name,
            veth: &veth,
            bridge_mac: &bridge_mac,
            veth_mac: &veth_mac,
            pod_mac: &pod_mac,
            address: &cidr,
            gateway: &gateway_end,
        };
        let results = self.results_dir();
        let files = vec![
            results.join(format!("{NETWORK}-{container_id}-eth0")),
            results.join(format!("cni-loopback-{container_id}-lo")),
        ];
        let with_config = BRIDGE_CACHE.replace(
            &captured_config(),
            &base64(conflist(self.subnet).as_bytes()),
        );
        let bridge = fill(&with_config, &values);
        write_like_libcni(&files[0], bridge.as_bytes());
        write_like_libcni(&files[1], fill(LOOPBACK_CACHE, &values).as_bytes());
        HandMadePod {
            container_id,
            netns: pod,
            address,
            veth,
            files,
        }
    }
}

/// The captured file with each captured value replaced by this pod's.
fn fill(template: &str, pod: &Captured<'_>) -> String {
    let mut text = template.to_string();
    for (captured, value) in [
        (CAPTURED.container_id, pod.container_id),
        (CAPTURED.namespace, pod.namespace),
        (CAPTURED.name, pod.name),
        (CAPTURED.uid, pod.uid),
        (CAPTURED.netns, pod.netns),
        (CAPTURED.veth, pod.veth),
        (CAPTURED.bridge_mac, pod.bridge_mac),
        (CAPTURED.veth_mac, pod.veth_mac),
        (CAPTURED.pod_mac, pod.pod_mac),
        (CAPTURED.address, pod.address),
        (CAPTURED.gateway, pod.gateway),
    ] {
        text = text.replace(captured, value);
    }
    text
}

/// The `config` of the captured bridge file (the conflist of subnet 61).
fn captured_config() -> String {
    let info: serde_json::Value = serde_json::from_str(BRIDGE_CACHE).unwrap();
    info["config"].as_str().unwrap().to_string()
}

/// The captured files hold every value `fill` replaces, and their config
/// is the harness's conflist: a changed fixture fails here, not as a pod
/// the collector cannot place.
pub fn check_templates() {
    for (captured, file) in [
        (CAPTURED.container_id, BRIDGE_CACHE),
        (CAPTURED.netns, BRIDGE_CACHE),
        (CAPTURED.veth, BRIDGE_CACHE),
        (CAPTURED.bridge_mac, BRIDGE_CACHE),
        (CAPTURED.veth_mac, BRIDGE_CACHE),
        (CAPTURED.pod_mac, BRIDGE_CACHE),
        (CAPTURED.address, BRIDGE_CACHE),
        (CAPTURED.gateway, BRIDGE_CACHE),
        (CAPTURED.uid, BRIDGE_CACHE),
        (CAPTURED.namespace, BRIDGE_CACHE),
        (CAPTURED.name, BRIDGE_CACHE),
        (CAPTURED.container_id, LOOPBACK_CACHE),
        (CAPTURED.netns, LOOPBACK_CACHE),
        (CAPTURED.uid, LOOPBACK_CACHE),
    ] {
        assert!(file.contains(captured), "fixture lacks {captured}");
    }
    assert_eq!(captured_config(), base64(conflist(61).as_bytes()));
}

/// Whether this process makes its pods by hand.
pub fn pods_by_hand() -> bool {
    std::env::var_os(BY_HAND).is_some_and(|v| v == "1")
}
