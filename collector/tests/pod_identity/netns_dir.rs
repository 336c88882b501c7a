//! Where the collector finds the pods' netns files: in the netns directory
//! the DaemonSet mounts, as bind mounts a runtime made.

use super::*;

/// Unmounts a bind mount the test made; dropped before the pod whose
/// namespace it holds (declared after it), so the namespace can go.
struct BindMount(std::path::PathBuf);

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).output();
    }
}

#[test]
fn netns_files_are_looked_up_in_the_netns_dir_the_daemonset_mounts() {
    require_root();
    let node = Netns::new("nsdir");
    let runtime = PodRuntime::start(&node, 87);
    let pod = runtime.run_pod(("shop", "bound-0"));
    // A copy of the pod's cache naming a netns path that exists nowhere on
    // this machine; only its file name, looked up in --netns-dir, finds
    // the namespace (as a container sees the host's /var/run/netns at its
    // mountPath).
    let name = format!("cni-elsewhere-{}", &pod.container_id[..12]);
    let results = tempfile::tempdir().unwrap();
    let cached = std::fs::read_to_string(pod.cache_file())
        .unwrap()
        .replace(&pod.netns_path(), &format!("/var/run/netns/{name}"));
    write_like_libcni(
        &results.path().join(pod.cache_file().file_name().unwrap()),
        cached.as_bytes(),
    );
    let netns_dir = tempfile::tempdir().unwrap();
    let target = netns_dir.path().join(&name);
    std::fs::File::create(&target).unwrap();
    run(
        "mount",
        &["--bind", &pod.netns_path(), target.to_str().unwrap()],
    );
    let _mounted = BindMount(target);
    let collector = CollectorProcess::start(
        &node,
        &[
            "--no-ebpf",
            "--cni-results-dir",
            results.path().to_str().unwrap(),
            "--netns-dir",
            netns_dir.path().to_str().unwrap(),
        ],
    );
    let metrics = collector.scrape(&node);
    assert_eq!(pod_info(&metrics), expected(&[&pod]));
    assert_eq!(
        metrics.value(
            "collector_pod_identity_errors_total",
            &[("reason", "netns")]
        ),
        0.0
    );
}
