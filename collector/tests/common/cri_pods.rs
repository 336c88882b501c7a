//! Pods made as the kubelet makes them: RunPodSandbox through containerd's
//! CRI, deleted with StopPodSandbox and RemovePodSandbox. What the
//! collector reads of them (the `cni-…` namespace, the host veth on the
//! bridge, libcni's cache files) is what containerd and the CNI plugins
//! wrote. Only where `TEST_PODS_BY_HAND=1` (the kernel matrix's guests) are
//! they laid out by hand instead, in the same shape (`hand_pods.rs`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

use super::*;

/// Sysctls every test pod gets through its sandbox config: no IPv6, so
/// no router solicitation or MLD report adds packets the tests did not
/// send.
const POD_SYSCTLS: [(&str, &str); 2] = [
    ("net.ipv6.conf.all.disable_ipv6", "1"),
    ("net.ipv6.conf.default.disable_ipv6", "1"),
];

/// Where a test's pods come from: a containerd of its own in `node` (or,
/// with `TEST_PODS_BY_HAND=1`, the harness laying them out by hand).
pub struct PodRuntime {
    node: String,
    maker: Maker,
}

enum Maker {
    Containerd(Box<Containerd>),
    /// With the number of pods made so far.
    ByHand(HandMade, AtomicU8),
}

/// A pod sandbox the runtime made; stopped and removed on drop.
pub struct Pod<'a> {
    runtime: &'a PodRuntime,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The sandbox id, which the kubelet passes to CNI as
    /// K8S_POD_INFRA_CONTAINER_ID.
    pub container_id: String,
    /// The pod's network namespace (`cni-<uuid>`): containerd deletes it at
    /// StopPodSandbox; one made by hand goes with this `Pod`.
    pub netns: Netns,
    /// The pod's `eth0` address, from the sandbox status.
    pub pod_address: String,
    /// The host side of the pod's veth pair, in the node namespace.
    veth: String,
    /// The cache files of a pod made by hand, removed at its deletion.
    files_by_hand: Vec<PathBuf>,
    deleted: bool,
}

impl PodRuntime {
    /// A runtime whose pods are addressed from 198.18.`subnet`.0/24, their
    /// host veths in `node`.
    pub fn start(node: &Netns, subnet: u8) -> PodRuntime {
        if pods_by_hand() {
            PodRuntime::by_hand(node, subnet)
        } else {
            PodRuntime::containerd(node, subnet)
        }
    }

    pub fn containerd(node: &Netns, subnet: u8) -> PodRuntime {
        PodRuntime {
            node: node.name.clone(),
            maker: Maker::Containerd(Box::new(Containerd::start(node, subnet))),
        }
    }

    pub fn by_hand(node: &Netns, subnet: u8) -> PodRuntime {
        PodRuntime {
            node: node.name.clone(),
            maker: Maker::ByHand(HandMade::start(node, subnet), AtomicU8::new(0)),
        }
    }

    /// The libcni cache directory, for `--cni-results-dir`.
    pub fn results_dir(&self) -> PathBuf {
        match &self.maker {
            Maker::Containerd(containerd) => containerd.results_dir(),
            Maker::ByHand(made, _) => made.results_dir(),
        }
    }

    /// Starts a pod named `name` in `namespace` with a fresh UID.
    pub fn run_pod(&self, pod: (&str, &str)) -> Pod<'_> {
        let uid = unique_uuid();
        match &self.maker {
            Maker::Containerd(containerd) => self.run_through_cri(containerd, pod, uid),
            Maker::ByHand(made, count) => {
                let index = count.fetch_add(1, Ordering::Relaxed);
                let made = made.run_pod(pod, &uid, index);
                Pod {
                    runtime: self,
                    namespace: pod.0.into(),
                    name: pod.1.into(),
                    uid,
                    container_id: made.container_id,
                    netns: made.netns,
                    pod_address: made.address,
                    veth: made.veth,
                    files_by_hand: made.files,
                    deleted: false,
                }
            }
        }
    }

    fn run_through_cri<'a>(
        &'a self,
        containerd: &Containerd,
        (namespace, name): (&str, &str),
        uid: String,
    ) -> Pod<'a> {
        // Named as the kubelet names it, under containerd's own directory.
        let logs = containerd
            .pod_logs()
            .join(format!("{namespace}_{name}_{uid}"));
        let mut cri = containerd.cri();
        let id = cri
            .run_pod_sandbox((namespace, name, &uid), &logs, &POD_SYSCTLS)
            .unwrap_or_else(|e| {
                panic!(
                    "RunPodSandbox {namespace}/{name}: {e}\n{}",
                    containerd.log()
                )
            });
        let network = cri
            .sandbox_network(&id)
            .unwrap_or_else(|e| panic!("{e}\n{}", containerd.log()));
        drop(cri);
        let netns = netns_name(&network.netns_path);
        let veth = self.host_veth(&netns);
        Pod {
            runtime: self,
            namespace: namespace.into(),
            name: name.into(),
            uid,
            container_id: id,
            netns,
            pod_address: network.ip,
            veth,
            files_by_hand: Vec::new(),
            deleted: false,
        }
    }

    /// The node-side peer of the pod's `eth0`: the link its `link_index`
    /// names in the node namespace.
    fn host_veth(&self, pod: &Netns) -> String {
        let peer = pod.ip_links()["eth0"]["link_index"]
            .as_u64()
            .expect("the pod's eth0 is a veth");
        let node = Netns::existing(self.node.clone());
        node.ip_links()
            .into_iter()
            .find(|(_, link)| link["ifindex"].as_u64() == Some(peer))
            .map(|(name, _)| name)
            .unwrap_or_else(|| panic!("no link {peer} in {}", self.node))
    }
}

/// The name in /var/run/netns of the namespace file at `path`.
fn netns_name(path: &Path) -> Netns {
    assert_eq!(
        path.parent(),
        Some(Path::new("/var/run/netns")),
        "containerd made the namespace elsewhere"
    );
    Netns::existing(path.file_name().unwrap().to_string_lossy().into_owned())
}

impl Pod<'_> {
    /// The host veth, the interface the collector names after this pod.
    pub fn veth(&self) -> &str {
        &self.veth
    }

    pub fn netns_path(&self) -> String {
        format!("/var/run/netns/{}", self.netns.name)
    }

    /// Permanent neighbour entries between the node and the pod (as
    /// [`VethPair`] sets), so no ARP exchange delays or queues the
    /// packets a test sends, and no queue overflow adds drops.
    pub fn pin_neighbours(&self) {
        let node = Netns::existing(self.runtime.node.clone());
        let gateway = node.ip_links()[BRIDGE]["address"]
            .as_str()
            .unwrap()
            .to_string();
        let gateway_address = self.gateway();
        let pod_mac = self.netns.mac("eth0");
        node.ip(&[
            "neigh",
            "replace",
            &self.pod_address,
            "lladdr",
            &pod_mac,
            "dev",
            BRIDGE,
            "nud",
            "permanent",
        ]);
        self.netns.ip(&[
            "neigh",
            "replace",
            &gateway_address,
            "lladdr",
            &gateway,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ]);
    }

    /// The pod's gateway: the bridge's address, `.1` of the pod's /24.
    pub fn gateway(&self) -> String {
        let (network, _) = self.pod_address.rsplit_once('.').unwrap();
        format!("{network}.1")
    }

    /// The libcni cache file of the pod's `eth0` attachment.
    pub fn cache_file(&self) -> PathBuf {
        self.runtime
            .results_dir()
            .join(format!("{NETWORK}-{}-eth0", self.container_id))
    }

    /// Deletes the pod as the kubelet does: StopPodSandbox (CNI DEL, the
    /// cache files and the namespace go), then RemovePodSandbox.
    pub fn delete(mut self) {
        let Maker::Containerd(containerd) = &self.runtime.maker else {
            // Drop removes the files, then the namespace goes with `netns`.
            return;
        };
        self.deleted = true;
        let mut cri = containerd.cri();
        for (call, result) in [
            ("StopPodSandbox", cri.stop_pod_sandbox(&self.container_id)),
            (
                "RemovePodSandbox",
                cri.remove_pod_sandbox(&self.container_id),
            ),
        ] {
            if let Err(e) = result {
                panic!("{call} {}: {e}\n{}", self.container_id, containerd.log());
            }
        }
        drop(cri);
        reap_shims(None);
    }
}

impl Drop for Pod<'_> {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        let Maker::Containerd(containerd) = &self.runtime.maker else {
            for file in &self.files_by_hand {
                let _ = std::fs::remove_file(file);
            }
            return;
        };
        let mut cri = containerd.cri();
        let _ = cri.stop_pod_sandbox(&self.container_id);
        let _ = cri.remove_pod_sandbox(&self.container_id);
        drop(cri);
        reap_shims(None);
    }
}

/// A unique id in UUID form (8-4-4-4-12 hex digits), as pod UIDs and
/// containerd's `cni-<uuid>` namespace names are.
pub fn unique_uuid() -> String {
    let hex = unique_hex(32);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Unique per test process and call: UIDs and ids. The call's counter
/// comes first, so even the first 8 digits (a veth's name) differ between
/// calls of one process.
pub fn unique_hex(width: usize) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let counter = super::netns::NEXT_NETNS.fetch_add(1, Ordering::Relaxed);
    let text = format!("{:08x}{:08x}{:08x}", counter, nanos, std::process::id());
    text.chars().cycle().take(width).collect()
}
