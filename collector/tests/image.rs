//! The image, run the way the DaemonSet runs it.
//!
//! `cargo xtask test` builds the image (the Dockerfile's run stage around a
//! static release build, `xtask/src/image.rs`) and hands it over in
//! `NETIF_TEST_IMAGE`, with podman's storage flags in
//! `NETIF_TEST_PODMAN_ARGS` and Debian's copy of moby's seccomp profile in
//! `NETIF_TEST_MOBY_PROFILE`. The container gets exactly what the rendered
//! DaemonSet (`manifests/overlays/azure`, what AKS users apply) asks of a
//! runtime: security context, host namespaces, env (with the ConfigMap
//! behind `envFrom`), host-path mounts and their propagation, args, limits,
//! grace period. [`PodRun::from_daemonset`] refuses any pod field it does
//! not know how to give, so the manifest cannot grow a setting this test
//! silently leaves out.
//!
//! The node is a network namespace of the test's (the container joins it as
//! its "host" network), with tracefs mounted in a mount namespace of the
//! test's, as on a node where the kubelet's host has it mounted.

mod common;
#[path = "image/container.rs"]
mod container;
#[path = "image/pod_run.rs"]
mod pod_run;
#[path = "image/seccomp.rs"]
mod seccomp;

use std::time::Duration;

use common::*;
use container::*;
use pod_run::{HostDirs, PodRun};
use seccomp::Profile;

const IMAGE_ENV: &str = "NETIF_TEST_IMAGE";
const PODMAN_ENV: &str = "NETIF_TEST_PODMAN_ARGS";
const MOBY_PROFILE_ENV: &str = "NETIF_TEST_MOBY_PROFILE";
/// The node name the kubelet would put in `spec.nodeName`.
const NODE_NAME: &str = "aks-nodepool1-00000000-vmss000000";
const DATAGRAMS: usize = 100;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "IMAGE TEST CANNOT RUN: {name} is not set. `cargo xtask test` builds the image and sets it \
             (podman, a static release build); run the tests through it."
        )
    })
}

/// A node namespace with a veth to a peer, and the pod run from the manifest.
struct Node {
    node: Netns,
    peer: Netns,
    veth: VethPair,
    run: PodRun,
    profiles: tempfile::TempDir,
}

impl Node {
    fn new(tag: &str, subnet: u8) -> Node {
        require_root();
        let node = Netns::new(&format!("{tag}n"));
        let peer = Netns::new(&format!("{tag}p"));
        let veth = VethPair::new(
            &node,
            &format!("{tag}node"),
            &peer,
            &format!("{tag}peer"),
            subnet,
        );
        Node {
            node,
            peer,
            veth,
            run: PodRun::from_daemonset(&render_overlay("overlays/azure")),
            profiles: tempfile::tempdir().unwrap(),
        }
    }

    fn start(&self, profile: Profile, tag: &str) -> Container {
        assert_eq!(
            self.run.seccomp, "RuntimeDefault",
            "the DaemonSet's seccomp profile type"
        );
        let file = profile.file(self.profiles.path());
        Container::start(&self.node, &self.run, &file, tag)
    }

    /// Datagrams from the peer to a closed port on the node: each one a
    /// NO_SOCKET drop on the node's veth.
    fn drop_datagrams(&self) {
        send_udp(
            &self.peer,
            &format!("{}:9", self.veth.a_addr),
            DATAGRAMS,
            64,
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn under_the_runtime_default_profile_the_probes_attach_count_and_detach_on_sigterm() {
    let node = Node::new("imd", 70);
    let _dirs = HostDirs::prepare(&node.run);
    let container = node.start(Profile::RuntimeDefault, "default");
    container.wait_ready(&node.node, &node.run);
    let before = container.scrape(&node.node, &node.run);
    assert_eq!(
        before.value("collector_ebpf_enabled", &[]),
        1.0,
        "logs:\n{}",
        container.logs()
    );
    assert_eq!(
        before.value("collector_ebpf_probe_attached", &[("program", "kfree_skb")]),
        1.0
    );
    let held = BpfHeld::of(container.pid());
    assert!(
        held.attachments() >= 1,
        "the container's collector holds no attachment: {held:?}"
    );
    println!("the container's collector holds {:?}", held.program_names());

    node.drop_datagrams();
    let after = container.scrape(&node.node, &node.run);
    let interface = [("interface", node.veth.a.as_str())];
    let reason = if kfree_skb_has_reason() {
        "NO_SOCKET"
    } else {
        "unknown"
    };
    let dropped = |m: &Metrics| {
        m.value(
            "network_interface_drops_total",
            &[interface[0], ("reason", reason)],
        )
    };
    assert_eq!(
        dropped(&after) - dropped(&before),
        DATAGRAMS as f64,
        "drops counted by the probe"
    );
    let rx = |m: &Metrics| m.value("network_interface_stats_rx_packets", &interface);
    assert!(
        rx(&after) - rx(&before) >= DATAGRAMS as f64,
        "netlink counted the datagrams"
    );
    let host = after
        .select("network_interface_stats_mtu", &interface)
        .next()
        .map(|s| s.labels.get("host").cloned().unwrap_or_default());
    assert_eq!(
        host.as_deref(),
        Some(NODE_NAME),
        "NODE_NAME from the downward API"
    );

    // The `kubectl exec` path: the CLI in the running container loads its
    // own probes (no capability was dropped from the exec'd process).
    // Drops sent during its window must show up under the kernel's reason.
    let snapshot = std::thread::scope(|scope| {
        let exec = scope.spawn(|| {
            container.exec(
                &node.node,
                &[
                    "collector",
                    "snapshot",
                    "--format",
                    "table",
                    "--window",
                    "4s",
                ],
            )
        });
        std::thread::sleep(Duration::from_millis(2000));
        node.drop_datagrams();
        exec.join().unwrap()
    });
    assert!(
        snapshot.status.success(),
        "collector snapshot: {}",
        text(&snapshot)
    );
    let table = String::from_utf8_lossy(&snapshot.stdout);
    println!("collector snapshot in the container:\n{table}");
    assert!(
        table.contains(&node.veth.a),
        "snapshot lists the veth:\n{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&node.veth.a) && l.contains(reason)),
        "the exec'd snapshot counted the drops under {reason} with its own probes:\n{table}"
    );
    assert!(
        !text(&snapshot).contains("eBPF: off"),
        "snapshot ran without probes:\n{}",
        text(&snapshot)
    );
    let watch = container.exec(&node.node, &["collector", "watch", "--count", "2"]);
    assert!(
        watch.status.success(),
        "collector watch --count 2: {}",
        text(&watch)
    );
    assert!(
        String::from_utf8_lossy(&watch.stdout)
            .matches(node.veth.a.as_str())
            .count()
            >= 2
    );

    let (took, logs) = container.stop(&node.run);
    println!("stopped in {took:?}");
    assert!(
        took < node.run.grace,
        "SIGTERM to exit took {took:?}, the grace period is {:?}",
        node.run.grace
    );
    assert!(logs.contains("SIGTERM received"), "logs:\n{logs}");
    held.assert_released("after podman stop");
}

#[test]
fn under_stricter_profiles_the_probes_are_refused_with_a_seccomp_hint_and_netlink_still_serves() {
    let node = Node::new("ims", 71);
    let _dirs = HostDirs::prepare(&node.run);
    for (profile, tag) in [
        (Profile::Docker2010, "docker2010"),
        (Profile::ContainersCommon, "common"),
    ] {
        let container = node.start(profile, tag);
        container.wait_ready(&node.node, &node.run);
        let metrics = container.scrape(&node.node, &node.run);
        let logs = container.logs();
        assert_eq!(
            metrics.value("collector_ebpf_enabled", &[]),
            0.0,
            "{tag}: logs:\n{logs}"
        );
        assert!(
            logs.contains("a seccomp profile or an LSM") && logs.contains("seccompProfile"),
            "{tag}: the refusal must point at seccomp and the manifest line, logs:\n{logs}"
        );
        assert!(
            !logs.contains("needs CAP_BPF and CAP_PERFMON"),
            "{tag}: wrong hint:\n{logs}"
        );
        assert!(
            metrics.interfaces().contains(&node.veth.a),
            "{tag}: netlink metrics served"
        );
        assert!(BpfHeld::of(container.pid()).programs.is_empty());
        let (took, _) = container.stop(&node.run);
        assert!(
            took < node.run.grace,
            "{tag}: SIGTERM to exit took {took:?}"
        );
        let hint = logs
            .lines()
            .find(|l| l.contains("seccomp"))
            .unwrap_or_default();
        println!("{tag}: probes refused, netlink served, stopped in {took:?}; logged: {hint}");
    }
}

#[test]
fn every_runtime_setting_of_the_daemonset_is_given_to_the_container() {
    let run = PodRun::from_daemonset(&render_overlay("overlays/azure"));
    let joined = run.flags.join(" ");
    for expected in [
        "--network host",
        "--user 0:0",
        "--security-opt no-new-privileges",
        "--read-only",
        "--cap-drop ALL",
        "--cap-add BPF",
        "--cap-add PERFMON",
        "--volume /sys/kernel/tracing:/sys/kernel/tracing:ro",
        "--volume /var/run/netns:/var/run/netns:ro,rslave",
        "--volume /proc:/host/proc:ro",
        "--env COLLECTOR_HOST_PROC=/host/proc",
        &format!("--env NODE_NAME={NODE_NAME}"),
        "--env COLLECTOR_LISTEN=0.0.0.0:2112",
        "--env COLLECTOR_HEALTH_LISTEN=0.0.0.0:2113",
        "--memory 128m",
    ] {
        assert!(
            joined.contains(expected),
            "{expected} missing from {joined}"
        );
    }
    assert!(
        joined.contains("--env COLLECTOR_LABEL="),
        "envFrom's ConfigMap: {joined}"
    );
    assert_eq!(run.args, ["serve"]);
    assert_eq!(run.seccomp, "RuntimeDefault");
    assert_eq!(run.grace, Duration::from_secs(10));
    // A field the test does not know fails it instead of being skipped.
    let mut objects = render_overlay("overlays/azure");
    let daemonset = objects
        .iter_mut()
        .find(|o| o["kind"] == "DaemonSet")
        .unwrap();
    daemonset["spec"]["template"]["spec"]["containers"][0]["securityContext"]["procMount"] =
        "Unmasked".into();
    let refused = std::panic::catch_unwind(|| PodRun::from_daemonset(&objects));
    assert!(
        refused.is_err(),
        "an unknown securityContext field must fail the test"
    );
}
