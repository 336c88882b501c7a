//! The snapshot's view of pod drops: the pods with most drops and their
//! reasons, as an operator reads them on a node.

use super::*;

#[test]
fn snapshot_lists_the_pods_with_most_drops_and_their_reasons() {
    let _guard = beside_others();
    require_root();
    let has_reason = kfree_skb_has_reason();
    let (node, runtime) = node_with_runtime(46);
    let pod = traffic_pod(&runtime, ("team-c", "busy"));
    let snapshot = collector_command("ip")
        .args(["netns", "exec", &node.name, COLLECTOR, "snapshot"])
        .args(["--window", "3s", "--format", "table"])
        .args(["--cni-results-dir", runtime.results_dir().to_str().unwrap()])
        .args(["--netns-dir", "/var/run/netns"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting collector snapshot");
    // Within its window, which starts once its probes are attached.
    let deadline = std::time::Instant::now() + start_timeout();
    let attached = |pid| {
        BpfHeld::of(pid)
            .program_names()
            .iter()
            .any(|n| n.starts_with("kfree_skb"))
    };
    while !attached(snapshot.id()) {
        assert!(
            std::time::Instant::now() < deadline,
            "snapshot attached no probe"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    send_udp(&node, &format!("{}:9", pod.pod_address), 30, PAYLOAD);
    let output = snapshot.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "snapshot: {stderr}");
    let table = String::from_utf8(output.stdout).unwrap();
    let reason = if has_reason { "NO_SOCKET" } else { "unknown" };
    let row = table
        .lines()
        .skip_while(|l| !l.starts_with("DROPS INSIDE PODS"))
        .find(|l| l.starts_with("team-c/busy"))
        .unwrap_or_else(|| panic!("no row for the pod:\n{table}\n{stderr}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells,
        ["team-c/busy", "30", &format!("{reason}=30")],
        "{table}"
    );
}
