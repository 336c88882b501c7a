use super::*;

/// A plugin's cache file from `tests/fixtures/cni` (see its README).
fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/cni/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

const NETNS: &str = "/var/run/netns/cni-9d6a4a4e-1d1b-8f0e-52c4-3d5e0b2c7a11";

/// (fixture, netns found, host interfaces listed, pod address).
const PLUGINS: [(&str, Option<&str>, &[&str], &str); 7] = [
    ("azure-vnet-containerd-1.7.json", None, &[], "10.224.0.35"),
    (
        "azure-vnet-containerd-2.x.json",
        Some(NETNS),
        &[],
        "10.224.0.35",
    ),
    (
        "cilium-1.14-containerd-1.7.json",
        Some(NETNS),
        &["lxc1b2c3d4e5f60"],
        "10.0.1.23",
    ),
    (
        "cilium-1.13-containerd-1.7.json",
        Some(NETNS),
        &[],
        "10.0.1.23",
    ),
    (
        "calico-3.29-containerd-1.7.json",
        None,
        &["cali05f4a1849c5"],
        "192.168.84.2",
    ),
    (
        "calico-3.31-containerd-1.7.json",
        Some(NETNS),
        &["cali05f4a1849c5"],
        "192.168.84.2",
    ),
    (
        "aws-vpc-cni-containerd-1.7.json",
        Some(NETNS),
        &["eni8ea2c11a1f4"],
        "192.168.23.117",
    ),
];

#[test]
fn each_plugins_result_gives_the_pod_its_namespace_and_addresses() {
    for (name, netns, hosts, address) in PLUGINS {
        let attachment = parse_cache_file(fixture(name).as_bytes())
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .unwrap_or_else(|| panic!("{name}: no pod"));
        assert_eq!(attachment.namespace, "kube-system", "{name}");
        assert_eq!(attachment.pod, "coredns-5d78c9869d-x2x4q", "{name}");
        assert_eq!(
            attachment.pod_uid, "0f7c2a5e-7e0b-4b3a-9d1e-2f6c8a4b1d33",
            "{name}"
        );
        assert_eq!(attachment.container_id, "5c1f0a3b".repeat(8), "{name}");
        assert_eq!(attachment.if_name, "eth0", "{name}");
        // The namespace from `netns`, else from the `sandbox` of `ifName`;
        // AWS's `dummy…` entry (sandbox "0") is never taken for it.
        assert_eq!(attachment.netns.as_deref(), netns, "{name}");
        // `ifName` (azure-vnet's lone `eth0`) is never a host interface.
        assert_eq!(attachment.host_interfaces, hosts, "{name}");
        assert_eq!(
            attachment.addresses,
            [address.parse::<IpAddr>().unwrap()],
            "{name}"
        );
        assert!(!attachment.is_loopback(), "{name}");
    }
}

/// What containerd 1.6.20 wrote here for one CRI pod (libcni 1.1, the
/// bridge plugin): no `netns`, the bridge and host veth first, the pod's
/// `eth0` with its `sandbox`; and go-cni's loopback attachment.
#[test]
fn without_a_netns_key_the_namespace_is_the_sandbox_of_if_name() {
    const SANDBOX: &str = "/var/run/netns/cni-5d617646-38d9-addc-8a0a-fc3c0b1c4bbe";
    let bridge = fixture("bridge-containerd-1.6.json");
    assert!(!bridge.contains(r#""netns""#), "the real file has no netns");
    let attachment = parse_cache_file(bridge.as_bytes()).unwrap().unwrap();
    assert_eq!(
        (attachment.namespace.as_str(), attachment.pod.as_str()),
        ("shop", "cart-0")
    );
    assert_eq!(attachment.netns.as_deref(), Some(SANDBOX));
    assert_eq!(attachment.host_interfaces, ["cni0", "veth62bb8aee"]);
    assert_eq!(
        attachment.addresses,
        ["198.18.61.2".parse::<IpAddr>().unwrap()]
    );
    assert!(!attachment.is_loopback());
    let lo = parse_cache_file(fixture("loopback-containerd-1.6.json").as_bytes())
        .unwrap()
        .unwrap();
    assert!(lo.is_loopback());
    assert_eq!(lo.netns.as_deref(), Some(SANDBOX));
    assert_eq!(lo.container_id, attachment.container_id);
}

#[test]
fn broken_foreign_and_podless_caches_are_told_apart() {
    let azure = fixture("azure-vnet-containerd-2.x.json");
    let azure = azure.trim_end();
    for cut in [0, 1, azure.len() / 2, azure.len() - 1] {
        assert!(
            matches!(
                parse_cache_file(&azure.as_bytes()[..cut]),
                Err(CacheFileError::Json(_))
            ),
            "truncated at {cut}"
        );
    }
    let legacy = azure.replace("cniCacheV1", "cniCacheV0");
    assert_eq!(
        parse_cache_file(legacy.as_bytes()),
        Err(CacheFileError::Kind("cniCacheV0".into()))
    );
    // A container run outside Kubernetes (nerdctl): no pod to name.
    let plain = r#"{"kind":"cniCacheV1","containerId":"c","config":"","ifName":"eth0","networkName":"bridge","netns":"/proc/1/ns/net"}"#;
    assert_eq!(parse_cache_file(plain.as_bytes()), Ok(None));
}
