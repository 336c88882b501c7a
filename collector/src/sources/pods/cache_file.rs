//! One libcni result cache file, as `libcni/api.go` writes it (`cachedInfo`):
//! `{"kind":"cniCacheV1","containerId":…,"config":<base64>,"ifName":…,
//! "networkName":…,"netns":…,"cniArgs":[["K8S_POD_NAMESPACE",…],…],
//! "result":{…}}`, mode 0600 in a 0700 directory. Only what the match needs
//! is read; the config and every other field are ignored.

use serde::Deserialize;

/// The libcni cache format this reads (`CNICacheV1`).
const KIND: &str = "cniCacheV1";

/// One pod attachment from the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniAttachment {
    pub container_id: String,
    pub network: String,
    pub if_name: String,
    /// The pod's netns path; `None` when the runtime gave none.
    pub netns: Option<String>,
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    /// Host-side interfaces the CNI result lists (entries without a
    /// `sandbox`), which tell Multus attachments in one namespace apart.
    pub host_interfaces: Vec<String>,
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
    let host_interfaces = info
        .result
        .map(|r| r.interfaces)
        .unwrap_or_default()
        .into_iter()
        .filter(|i| i.sandbox.is_empty() && !i.name.is_empty())
        .map(|i| i.name)
        .collect();
    Ok(Some(CniAttachment {
        namespace: arg("K8S_POD_NAMESPACE").unwrap_or_default(),
        pod,
        pod_uid: arg("K8S_POD_UID").unwrap_or_default(),
        netns: (!info.netns.is_empty()).then_some(info.netns),
        container_id: info.container_id,
        network: info.network_name,
        if_name: info.if_name,
        host_interfaces,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As containerd 1.7 with Azure CNI leaves it (values shortened).
    const AZURE: &str = r#"{"kind":"cniCacheV1","containerId":"5c1f0a","config":"eyJjbmlWZXJzaW9uIjoiMC4zLjAifQ==","ifName":"eth0","networkName":"azure","netns":"/var/run/netns/cni-9d6a4a4e-1d1b-8f0e-52c4-3d5e0b2c7a11","cniArgs":[["K8S_POD_NAMESPACE","kube-system"],["K8S_POD_NAME","coredns-5d78c9869d-x2x4q"],["K8S_POD_INFRA_CONTAINER_ID","5c1f0a"],["K8S_POD_UID","0f7c2a5e-7e0b-4b3a-9d1e-2f6c8a4b1d33"],["IgnoreUnknown","1"]],"result":{"cniVersion":"0.3.0","interfaces":[{"name":"azv1a2b3c4d5e6","mac":"aa:aa:aa:aa:aa:aa"},{"name":"eth0","mac":"12:34:56:78:9a:bc","sandbox":"/var/run/netns/cni-9d6a4a4e-1d1b-8f0e-52c4-3d5e0b2c7a11"}],"ips":[{"version":"4","address":"10.224.0.35/16","interface":1}]}}"#;

    #[test]
    fn reads_the_pod_and_its_netns_from_a_libcni_cache() {
        let attachment = parse_cache_file(AZURE.as_bytes()).unwrap().unwrap();
        assert_eq!(attachment.namespace, "kube-system");
        assert_eq!(attachment.pod, "coredns-5d78c9869d-x2x4q");
        assert_eq!(attachment.pod_uid, "0f7c2a5e-7e0b-4b3a-9d1e-2f6c8a4b1d33");
        assert_eq!(attachment.container_id, "5c1f0a");
        assert_eq!(
            (attachment.network.as_str(), attachment.if_name.as_str()),
            ("azure", "eth0")
        );
        assert_eq!(
            attachment.netns.as_deref(),
            Some("/var/run/netns/cni-9d6a4a4e-1d1b-8f0e-52c4-3d5e0b2c7a11")
        );
        assert_eq!(attachment.host_interfaces, ["azv1a2b3c4d5e6"]);
    }

    #[test]
    fn broken_foreign_and_podless_caches_are_told_apart() {
        for cut in [0, 1, AZURE.len() / 2, AZURE.len() - 1] {
            assert!(
                matches!(
                    parse_cache_file(&AZURE.as_bytes()[..cut]),
                    Err(CacheFileError::Json(_))
                ),
                "truncated at {cut}"
            );
        }
        let legacy = AZURE.replace("cniCacheV1", "cniCacheV0");
        assert_eq!(
            parse_cache_file(legacy.as_bytes()),
            Err(CacheFileError::Kind("cniCacheV0".into()))
        );
        // A container run outside Kubernetes (nerdctl): no pod to name.
        let plain = r#"{"kind":"cniCacheV1","containerId":"c","config":"","ifName":"eth0","networkName":"bridge","netns":"/proc/1/ns/net"}"#;
        assert_eq!(parse_cache_file(plain.as_bytes()), Ok(None));
        // A pod without a netns path (what a hostNetwork sandbox would have).
        let no_netns = AZURE.replace(
            r#""netns":"/var/run/netns/cni-9d6a4a4e-1d1b-8f0e-52c4-3d5e0b2c7a11","#,
            "",
        );
        let attachment = parse_cache_file(no_netns.as_bytes()).unwrap().unwrap();
        assert_eq!(attachment.netns, None);
    }
}
