//! One libcni result cache file, as `libcni/api.go` writes it (`cachedInfo`):
//! `{"kind":"cniCacheV1","containerId":…,"config":<base64>,"ifName":…,
//! "networkName":…,"netns":…,"cniArgs":[["K8S_POD_NAMESPACE",…],…],
//! "result":{…}}`, mode 0600 in a 0700 directory. Only what the match needs
//! is read; the config and every other field are ignored.
//!
//! The top-level `netns` exists only from libcni 1.2 (containerd 2.x);
//! containerd 1.6 and 1.7 write none, and the namespace is then the
//! `sandbox` of the result's interface named `ifName`. Some plugins give
//! neither (azure-vnet's result is `[{"name":"eth0"}]`): such a pod is
//! placed from its addresses in `result.ips` (see `super::routes`).

use std::net::IpAddr;

use serde::Deserialize;

/// The libcni cache format this reads (`CNICacheV1`).
const KIND: &str = "cniCacheV1";

/// One pod attachment from the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniAttachment {
    pub container_id: String,
    pub network: String,
    pub if_name: String,
    /// The pod's netns path: the runtime's `netns`, else the `sandbox` of
    /// the result's `ifName` interface; `None` when neither is there.
    pub netns: Option<String>,
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    /// Host-side interfaces the CNI result lists (entries without a
    /// `sandbox`, other than `ifName`), which tell Multus attachments in one
    /// namespace apart.
    pub host_interfaces: Vec<String>,
    /// The pod's addresses (`result.ips`, without prefix length).
    pub addresses: Vec<IpAddr>,
}

impl CniAttachment {
    /// go-cni's own `cni-loopback` attachment (`lo` in the pod): it names
    /// the pod's namespace but never owns a host interface.
    pub fn is_loopback(&self) -> bool {
        self.if_name == "lo"
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CacheFileError {
    #[error("not JSON of a libcni cache: {0}")]
    Json(String),
    #[error("kind {0:?} is not {KIND}")]
    Kind(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CachedInfo {
    kind: String,
    #[serde(default)]
    container_id: String,
    #[serde(default)]
    if_name: String,
    #[serde(default)]
    network_name: String,
    #[serde(default)]
    netns: String,
    #[serde(default)]
    cni_args: Vec<(String, String)>,
    #[serde(default)]
    result: Option<CniResult>,
}

#[derive(Deserialize)]
struct CniResult {
    #[serde(default)]
    interfaces: Vec<CniInterface>,
    #[serde(default)]
    ips: Vec<CniIp>,
}

#[derive(Deserialize)]
struct CniIp {
    /// CIDR notation, `10.224.0.35/16`.
    #[serde(default)]
    address: String,
}

#[derive(Deserialize)]
struct CniInterface {
    #[serde(default)]
    name: String,
    #[serde(default)]
    sandbox: String,
}

/// Parses one cache file. `Ok(None)`: a valid cache of something that is
/// not a Kubernetes pod (no `K8S_POD_NAME`), which has no identity to give.
pub fn parse_cache_file(bytes: &[u8]) -> Result<Option<CniAttachment>, CacheFileError> {
    let info: CachedInfo =
        serde_json::from_slice(bytes).map_err(|e| CacheFileError::Json(e.to_string()))?;
    if info.kind != KIND {
        return Err(CacheFileError::Kind(info.kind));
    }
    let arg = |key: &str| {
        info.cni_args
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let Some(pod) = arg("K8S_POD_NAME").filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let result = info.result.unwrap_or(CniResult {
        interfaces: Vec::new(),
        ips: Vec::new(),
    });
    let sandbox = result
        .interfaces
        .iter()
        .find(|i| i.name == info.if_name && i.sandbox.starts_with('/'))
        .map(|i| i.sandbox.clone());
    let netns = Some(info.netns).filter(|n| !n.is_empty()).or(sandbox);
    let host_interfaces = result
        .interfaces
        .into_iter()
        .filter(|i| i.sandbox.is_empty() && !i.name.is_empty() && i.name != info.if_name)
        .map(|i| i.name)
        .collect();
    let addresses = result
        .ips
        .iter()
        .filter_map(|ip| ip.address.split('/').next()?.parse().ok())
        .collect();
    Ok(Some(CniAttachment {
        namespace: arg("K8S_POD_NAMESPACE").unwrap_or_default(),
        pod,
        pod_uid: arg("K8S_POD_UID").unwrap_or_default(),
        netns,
        container_id: info.container_id,
        network: info.network_name,
        if_name: info.if_name,
        host_interfaces,
        addresses,
    }))
}

#[cfg(test)]
mod tests;
