//! Flag parsing: labels, filters, durations, environment variables, help.

use super::*;
use clap::{CommandFactory, FromArgMatches};

/// Parses like the binary, but blind to the environment: a developer's
/// shell with COLLECTOR_LISTEN set must not change what these assert.
fn parse<'a>(args: impl IntoIterator<Item = &'a str>) -> Result<Cli, clap::Error> {
    fn without_env(command: clap::Command) -> clap::Command {
        command
            .mut_args(|arg| arg.env(None))
            .mut_subcommands(without_env)
    }
    let matches = without_env(Cli::command()).try_get_matches_from(args)?;
    Cli::from_arg_matches(&matches)
}

fn error_of(args: &[&str]) -> String {
    let error = parse(args.iter().copied()).unwrap_err();
    assert_eq!(error.exit_code(), 2, "{error}");
    error.to_string()
}

#[test]
fn malformed_values_are_rejected_naming_the_flag() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["collector", "--listen", "nowhere"],
            &["--listen", "nowhere"],
        ),
        (&["collector", "--listen", "1.2.3.4:99999"], &["--listen"]),
        (
            &["collector", "--label", "cluster"],
            &["--label", "not KEY=VALUE"],
        ),
        (
            &["collector", "--label", "9x=y"],
            &["--label", "not a Prometheus label name"],
        ),
        (
            &["collector", "--label", "__name__=y"],
            &["--label", "reserved"],
        ),
        (
            &["collector", "--label", "interface=y"],
            &["--label", "set by the collector"],
        ),
        (
            &["collector", "--label", "pod=y"],
            &["--label", "set by the collector"],
        ),
        (
            &["collector", "--label", &format!("{}=x", "n".repeat(129))],
            &["--label", "129 characters, at most 128"],
        ),
        (
            &[
                "collector",
                "--label",
                &format!("cluster={}", "v".repeat(1024)),
            ],
            &["--label", "1024 characters, at most 1023", "Azure"],
        ),
        (
            &["collector", "--node-name", &"n".repeat(254)],
            &["--node-name", "254 characters"],
        ),
        (
            &["collector", "--label", "cluster="],
            &[
                "--label",
                "`cluster` has an empty value",
                "cluster-labels.env",
            ],
        ),
        (
            &["collector", "--label", "job=y"],
            &["--label", "target labels"],
        ),
        (
            &["collector", "--include", "("],
            &["--include", "invalid regex"],
        ),
        (
            &["collector", "--exclude", "[z-a]"],
            &["--exclude", "invalid regex"],
        ),
        (
            &["collector", "--include", "a", "--exclude", "b"],
            &["--include", "--exclude"],
        ),
        (
            &["collector", "--node-name", " "],
            &["--node-name", "empty"],
        ),
        (
            &["collector", "snapshot", "--format", "xml"],
            &["--format", "xml"],
        ),
        (
            &["collector", "snapshot", "--window", "soon"],
            &["--window", "not a duration"],
        ),
        (
            &["collector", "watch", "--interval", "10ms"],
            &["--interval", "shorter than 100ms"],
        ),
        (
            &["collector", "watch", "--sort", "size"],
            &["--sort", "size"],
        ),
        (
            &["collector", "watch", "--count", "many"],
            &["--count", "many"],
        ),
        (
            &["collector", "--ebpf-probes", "rx,bogus"],
            &["--ebpf-probes", "bogus"],
        ),
        (
            &["collector", "--ebpf-max-interfaces", "0"],
            &["--ebpf-max-interfaces", "0"],
        ),
        (
            &["collector", "--ebpf-flavour", "fentry"],
            &["--ebpf-flavour", "fentry"],
        ),
    ];
    for (args, needles) in cases {
        let message = error_of(args);
        for needle in *needles {
            assert!(
                message.contains(needle),
                "{args:?}: `{needle}` not in: {message}"
            );
        }
    }
}

#[test]
fn bare_invocation_serves_with_defaults() {
    let cli = parse([
        "collector",
        "--label",
        "cluster=a",
        "--label",
        "environment=b",
    ])
    .unwrap();
    assert!(cli.command.is_none());
    assert_eq!(cli.serve.listen.to_string(), "0.0.0.0:2112");
    // The kubelet's probes on their own listener; TLS and auth off.
    assert_eq!(cli.serve.health_listen.to_string(), "0.0.0.0:2113");
    assert!(cli.serve.web_config_file.is_none());
    // rx/tx cost more than 3 % of packets/s on a small-packet flood even
    // as tp_btf programs: they are opt-in; drops (free for delivered
    // packets) and tcp (per connection event) are the default, in the
    // flavour that loads.
    assert_eq!(
        cli.serve.common.ebpf_probes,
        [ProbeChoice::Drops, ProbeChoice::Tcp]
    );
    assert_eq!(cli.serve.common.ebpf_flavour, FlavourChoice::Auto);
    assert_eq!(cli.serve.common.sorted_labels().unwrap().len(), 2);
    let pods = cli.serve.common.pod_config();
    assert_eq!(
        pods.results_dir,
        std::path::Path::new("/var/lib/cni/results")
    );
    assert_eq!(pods.netns_dir, std::path::Path::new("/var/run/netns"));
    // Pods' own counters on, from the /proc of a collector run on the host;
    // the DaemonSet points it at its mount of the host's.
    assert_eq!(cli.serve.common.host_proc, std::path::Path::new("/proc"));
    assert!(!cli.serve.common.no_pod_netstat);
}

#[test]
fn the_web_config_flag_has_node_exporters_name() {
    let cli = parse([
        "collector",
        "--web.config.file",
        "/etc/web.yml",
        "--health-listen",
        "127.0.0.1:9",
    ])
    .unwrap();
    assert_eq!(
        cli.serve.web_config_file.as_deref(),
        Some(std::path::Path::new("/etc/web.yml"))
    );
    assert_eq!(cli.serve.health_listen.to_string(), "127.0.0.1:9");
    assert!(parse(["collector", "--health-listen", "nowhere"]).is_err());
}

#[test]
fn more_labels_than_the_bound_are_rejected_and_the_bound_itself_is_taken() {
    let pairs: Vec<String> = (0..=MAX_LABELS).map(|n| format!("l{n}=v")).collect();
    let args = |count: usize| {
        let mut args = vec!["collector"];
        for pair in &pairs[..count] {
            args.extend(["--label", pair.as_str()]);
        }
        args
    };
    let cli = parse(args(MAX_LABELS)).unwrap();
    assert_eq!(cli.serve.common.sorted_labels().unwrap().len(), MAX_LABELS);
    let cli = parse(args(MAX_LABELS + 1)).unwrap();
    let error = cli.serve.common.sorted_labels().unwrap_err();
    assert!(error.contains("33 labels given, at most 32"), "{error}");
}

#[test]
fn duplicate_label_keys_are_rejected() {
    let cli = parse(["collector", "--label", "a=1", "--label", "a=2"]).unwrap();
    assert!(cli
        .serve
        .common
        .sorted_labels()
        .unwrap_err()
        .contains("`a` given more than once"));
}
