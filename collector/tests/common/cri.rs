//! A synchronous client of the Kubernetes CRI runtime service (`runtime.v1`,
//! the version containerd 1.6 serves), over containerd's unix socket: the
//! calls the kubelet makes to start and delete a pod's sandbox.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    LinuxPodSandboxConfig, ListPodSandboxRequest, PodSandboxConfig, PodSandboxMetadata,
    PodSandboxStatusRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StatusRequest,
    StopPodSandboxRequest, VersionRequest,
};
use tonic::transport::{Channel, Endpoint, Uri};

/// Every call's deadline: a sandbox start runs the CNI plugins and the
/// runtime, seconds at most on an idle machine.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A CRI runtime service connection with its own single-threaded runtime,
/// so the synchronous tests can call it from any thread.
pub struct Cri {
    runtime: tokio::runtime::Runtime,
    client: RuntimeServiceClient<Channel>,
}

/// What a sandbox's status says about its network.
pub struct SandboxNetwork {
    /// The pod's IP (of the default interface, `eth0`).
    pub ip: String,
    /// The network namespace file containerd made (`/var/run/netns/cni-…`).
    pub netns_path: PathBuf,
}

impl Cri {
    pub fn connect(socket: &Path) -> Result<Cri, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        let socket = socket.to_path_buf();
        let channel = runtime
            .block_on(async move {
                // The authority is never used: every connection goes to the socket.
                Endpoint::from_static("http://localhost")
                    .timeout(CALL_TIMEOUT)
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let socket = socket.clone();
                        async move {
                            let stream = tokio::net::UnixStream::connect(socket).await?;
                            Ok::<_, std::io::Error>(TokioIo::new(stream))
                        }
                    }))
                    .await
            })
            .map_err(|e| format!("connecting to the CRI socket: {e}"))?;
        Ok(Cri {
            runtime,
            client: RuntimeServiceClient::new(channel),
        })
    }

    /// (runtime name, runtime version, CRI API version).
    pub fn version(&mut self) -> Result<(String, String, String), tonic::Status> {
        let request = VersionRequest {
            version: "v1".into(),
        };
        let reply = self
            .runtime
            .block_on(self.client.version(request))?
            .into_inner();
        Ok((
            reply.runtime_name,
            reply.runtime_version,
            reply.runtime_api_version,
        ))
    }

    /// Whether the runtime reports its pod network ready (its CNI config
    /// loaded): until then RunPodSandbox fails.
    pub fn network_ready(&mut self) -> Result<(), String> {
        let reply = self
            .runtime
            .block_on(self.client.status(StatusRequest { verbose: false }))
            .map_err(|e| format!("Status: {e}"))?
            .into_inner();
        let conditions = reply.status.map(|s| s.conditions).unwrap_or_default();
        match conditions.iter().find(|c| c.r#type == "NetworkReady") {
            Some(ready) if ready.status => Ok(()),
            other => Err(format!("network not ready: {other:?}")),
        }
    }

    /// The ids of every sandbox the runtime knows.
    pub fn list_pod_sandboxes(&mut self) -> Result<Vec<String>, tonic::Status> {
        let reply = self
            .runtime
            .block_on(
                self.client
                    .list_pod_sandbox(ListPodSandboxRequest { filter: None }),
            )?
            .into_inner();
        Ok(reply.items.into_iter().map(|s| s.id).collect())
    }

    /// Starts a pod's sandbox as the kubelet does (metadata, hostname, log
    /// directory, `sysctls` applied inside the pod); returns its id.
    pub fn run_pod_sandbox(
        &mut self,
        (namespace, name, uid): (&str, &str, &str),
        log_directory: &Path,
        sysctls: &[(&str, &str)],
    ) -> Result<String, tonic::Status> {
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: uid.into(),
                namespace: namespace.into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: log_directory.to_string_lossy().into_owned(),
            linux: Some(LinuxPodSandboxConfig {
                sysctls: sysctls
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let request = RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        };
        let reply = self
            .runtime
            .block_on(self.client.run_pod_sandbox(request))?
            .into_inner();
        Ok(reply.pod_sandbox_id)
    }

    /// The sandbox's IP and network namespace, from its verbose status.
    pub fn sandbox_network(&mut self, id: &str) -> Result<SandboxNetwork, String> {
        let request = PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        };
        let reply = self
            .runtime
            .block_on(self.client.pod_sandbox_status(request))
            .map_err(|e| format!("PodSandboxStatus {id}: {e}"))?
            .into_inner();
        let ip = reply
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .filter(|ip| !ip.is_empty())
            .ok_or_else(|| format!("sandbox {id} has no IP"))?;
        let netns_path = netns_of(&reply.info)
            .ok_or_else(|| format!("sandbox {id}: no network namespace in {:?}", reply.info))?;
        Ok(SandboxNetwork { ip, netns_path })
    }

    /// Stops the sandbox: containerd tears its network down (CNI DEL, the
    /// cache files and the `cni-…` namespace go) and stops its processes.
    pub fn stop_pod_sandbox(&mut self, id: &str) -> Result<(), tonic::Status> {
        let request = StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        self.runtime
            .block_on(self.client.stop_pod_sandbox(request))?;
        Ok(())
    }

    pub fn remove_pod_sandbox(&mut self, id: &str) -> Result<(), tonic::Status> {
        let request = RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        self.runtime
            .block_on(self.client.remove_pod_sandbox(request))?;
        Ok(())
    }
}

/// The network namespace path in containerd's verbose sandbox info: the
/// runtime spec it gave the sandbox container names it.
fn netns_of(info: &HashMap<String, String>) -> Option<PathBuf> {
    let info: serde_json::Value = serde_json::from_str(info.get("info")?).ok()?;
    info["runtimeSpec"]["linux"]["namespaces"]
        .as_array()?
        .iter()
        .find(|ns| ns["type"] == "network")
        .and_then(|ns| ns["path"].as_str())
        .map(PathBuf::from)
}
