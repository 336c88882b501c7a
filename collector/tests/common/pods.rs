//! CNI pods as containerd and a CNI plugin leave them on a node.

use std::io::Write;

use super::*;

/// A pod as containerd and a CNI plugin leave it on a node: a network
/// namespace named as CNI names them (`cni-<uuid>` in /var/run/netns), a
/// veth pair with the host side in `node` and `eth0` (or Multus' `net1`) in
/// the pod, and one libcni result cache file per attachment in a results
/// directory, written as libcni writes them. Torn down on drop: cache files
/// first, then the namespace (which takes its veths with it).
pub struct CniPod {
    pub netns: Netns,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub container_id: String,
    /// The node-side address of the first attachment (198.18.<subnet>.1).
    pub host_address: String,
    /// The pod-side address of the first attachment (198.18.<subnet>.2).
    pub pod_address: String,
    /// (host veth, pod-side ifName, cache file) per attachment.
    pub attachments: Vec<(String, String, std::path::PathBuf)>,
}

impl CniPod {
    /// A pod with one attachment: `host_veth` in `node`, `eth0` inside,
    /// addressed from 198.18.`subnet`.0/24, cached under `network`.
    pub fn start(
        node: &Netns,
        results: &std::path::Path,
        (namespace, name): (&str, &str),
        network: &str,
        host_veth: &str,
        subnet: u8,
    ) -> CniPod {
        let netns = Netns::named(format!("cni-{}", unique_uuid()));
        let mut pod = CniPod {
            netns,
            namespace: namespace.into(),
            name: name.into(),
            uid: format!("{}-7e0b-4b3a-9d1e-{}", unique_hex(8), unique_hex(12)),
            container_id: unique_hex(64),
            host_address: String::new(),
            pod_address: String::new(),
            attachments: Vec::new(),
        };
        let pair = pod.attach(node, results, network, "eth0", host_veth, subnet);
        (pod.host_address, pod.pod_address) = (pair.a_addr, pair.b_addr);
        pod
    }

    /// One more attachment (a Multus delegate): another veth into the
    /// same namespace and its own cache file.
    pub fn attach(
        &mut self,
        node: &Netns,
        results: &std::path::Path,
        network: &str,
        if_name: &str,
        host_veth: &str,
        subnet: u8,
    ) -> VethPair {
        let pair = VethPair::new(node, host_veth, &self.netns, if_name, subnet);
        let file = results.join(format!("{network}-{}-{if_name}", self.container_id));
        let body = self.cache_json(network, if_name, Some(host_veth), Some(&pair.b_addr));
        write_like_libcni(&file, body.as_bytes());
        self.attachments
            .push((host_veth.to_string(), if_name.to_string(), file));
        pair
    }

    pub fn netns_path(&self) -> String {
        format!("/var/run/netns/{}", self.netns.name)
    }

    /// The cache file libcni's `cacheAdd` writes: `cachedInfo` marshalled
    /// by encoding/json (struct fields in order, `config` as base64, the
    /// result a map with sorted keys). `host_veth`: the host-side interface
    /// the plugin lists in its result, as the bridge, ptp and Azure plugins
    /// do; `None` for plugins that list only the pod side.
    pub fn cache_json(
        &self,
        network: &str,
        if_name: &str,
        host_veth: Option<&str>,
        address: Option<&str>,
    ) -> String {
        let config = format!(
            r#"{{"cniVersion":"1.0.0","name":"{network}","plugins":[{{"type":"{network}"}}]}}"#
        );
        let netns = self.netns_path();
        let mut interfaces = Vec::new();
        if let Some(host) = host_veth {
            interfaces.push(serde_json::json!({"mac": "aa:aa:aa:aa:aa:aa", "name": host}));
        }
        interfaces.push(
            serde_json::json!({"mac": "12:34:56:78:9a:bc", "name": if_name, "sandbox": netns}),
        );
        let ips: Vec<serde_json::Value> = address
            .map(|a| serde_json::json!({"address": format!("{a}/24"), "interface": interfaces.len() - 1}))
            .into_iter()
            .collect();
        let result = serde_json::json!({"cniVersion": "1.0.0", "dns": {}, "interfaces": interfaces, "ips": ips});
        let cni_args = serde_json::json!([
            ["K8S_POD_NAMESPACE", self.namespace],
            ["K8S_POD_NAME", self.name],
            ["K8S_POD_INFRA_CONTAINER_ID", self.container_id],
            ["K8S_POD_UID", self.uid],
            ["IgnoreUnknown", "1"],
        ]);
        format!(
            r#"{{"kind":"cniCacheV1","containerId":"{}","config":"{}","ifName":"{if_name}","networkName":"{network}","netns":"{netns}","cniArgs":{cni_args},"result":{result}}}"#,
            self.container_id,
            base64(config.as_bytes()),
        )
    }

    /// The host veth of the first attachment.
    pub fn veth(&self) -> &str {
        &self.attachments[0].0
    }
}

impl Drop for CniPod {
    fn drop(&mut self) {
        for (_, _, file) in &self.attachments {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// `os.WriteFile(name, data, 0o600)` into a directory made 0700, as libcni.
pub fn write_like_libcni(file: &std::path::Path, data: &[u8]) {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = file.parent().unwrap();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(file)
        .and_then(|mut f| f.write_all(data))
        .unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
}

/// Standard base64 with padding (encoding/json's []byte encoding).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A process standing in for a hand-made pod's sandbox (pause) process:
/// `sleep` in the pod's network namespace, in a cgroup named as runc names
/// containerd's sandboxes (`/k8s.io/<sandbox id>`), so the collector finds
/// it by its cgroup and serves the pod's own SNMP counters. Killed, and
/// its cgroup removed, on drop.
pub struct HandSandbox {
    child: std::process::Child,
    cgroup: std::path::PathBuf,
}

impl CniPod {
    pub fn sandbox_process(&self) -> HandSandbox {
        // Any one hierarchy names the id in /proc/PID/cgroup: the pids
        // controller's on a v1 host, the unified root on a v2 one.
        let root = ["/sys/fs/cgroup/pids", "/sys/fs/cgroup"]
            .iter()
            .map(std::path::Path::new)
            .find(|h| h.join("cgroup.procs").exists())
            .expect("a cgroup hierarchy to put the sandbox process in");
        let cgroup = root.join("k8s.io").join(&self.container_id);
        std::fs::create_dir_all(&cgroup).unwrap_or_else(|e| panic!("{}: {e}", cgroup.display()));
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", &self.netns.name, "sleep", "3600"])
            .spawn()
            .expect("starting the sandbox process");
        let sandbox = HandSandbox { child, cgroup };
        // Into the cgroup only once it is in the pod's namespace, so the
        // collector never reads the node's files for the pod.
        let inode = self.netns.inode() as u64;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::fs::metadata(format!("/proc/{}/ns/net", sandbox.child.id()))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .ok()
            != Some(inode)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the sandbox process never entered {}",
                self.netns.name
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        std::fs::write(
            sandbox.cgroup.join("cgroup.procs"),
            sandbox.child.id().to_string(),
        )
        .expect("moving the sandbox process into its cgroup");
        sandbox
    }
}

impl Drop for HandSandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir(&self.cgroup);
        // The parent too, once no sandbox (a containerd's included) is in it.
        if let Some(parent) = self.cgroup.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}
