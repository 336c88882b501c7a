//! `collector`: composition only. Flags -> a `Collector` (sources chosen
//! and started) -> serve over HTTP, print one snapshot, or watch rates.

use std::io::{IsTerminal, Write};
use std::sync::Arc;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use collector::cli::{Cli, Command, CommonArgs, SnapshotArgs, SnapshotFormat, WatchArgs};
use collector::collect::{Collector, CollectorConfig, EbpfMode};
use collector::http;
use collector::model::{HttpStats, NetstatSet};
use collector::output::prometheus::Profile;
use collector::output::{prometheus, table, watch};
use collector::privileges::{self, Kept};
use collector::share::Scraper;
use collector::sources::conntrack::ConntrackSource;
use collector::sources::ebpf::{EbpfConfig, EbpfSource};
use collector::sources::netstat::PodNetstatSource;
use collector::sources::pods::PodSource;

fn main() -> std::process::ExitCode {
    limit_retained_heap();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Escape codes only for a person at a terminal, never into
        // `kubectl logs` or a log shipper; NO_COLOR (no-color.org) wins.
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Snapshot(args)) => snapshot(args),
        Some(Command::Watch(args)) => watch_rates(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("collector: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// glibc keeps freed memory in per-thread arenas, so a multi-MiB response
/// built on each tokio worker would stay resident between scrapes. Two
/// arenas, and a fixed mmap threshold below a scrape's buffers, hand those
/// buffers back to the OS as soon as a scrape is done.
fn limit_retained_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only tunes glibc's allocator; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

/// The collector of a command; `may_mount_tracefs` only for `serve` (see
/// [`EbpfConfig::may_mount_tracefs`]). `served`: the `/metrics` profile
/// when `/metrics` is all the command outputs (`serve`), so that pods'
/// files holding none of its counters are not read; None reads them all.
fn build_collector(
    common: &CommonArgs,
    may_mount_tracefs: bool,
    served: Option<Profile>,
) -> Collector {
    let labels = match common.sorted_labels() {
        Ok(labels) => labels,
        Err(message) => Cli::command()
            .error(clap::error::ErrorKind::ValueValidation, message)
            .exit(),
    };
    let config = CollectorConfig {
        node: common.node_name(),
        labels,
        filter: common.filter(),
        netlink_timeout: common.netlink_timeout,
    };
    let ebpf = if common.no_ebpf {
        EbpfMode::Disabled {
            reason: "disabled by --no-ebpf".to_string(),
        }
    } else {
        let config = EbpfConfig {
            btf_path: common.btf.clone(),
            tracefs_root: common.tracefs.clone(),
            max_interfaces: common.ebpf_max_interfaces,
            probes: common
                .ebpf_probes
                .iter()
                .flat_map(|choice| choice.probes().iter().copied())
                .collect(),
            flavour: common.ebpf_flavour.policy(),
            may_mount_tracefs,
        };
        match EbpfSource::start(&config) {
            Ok(source) => {
                let attached: Vec<_> = source
                    .attachments()
                    .iter()
                    .filter(|a| a.attached)
                    .map(|a| a.tracepoint.as_str())
                    .collect();
                tracing::info!(probes = %attached.join(", "), "eBPF probes attached");
                EbpfMode::Enabled(Box::new(source))
            }
            Err(error) => {
                tracing::warn!("eBPF disabled, serving netlink metrics only: {error}");
                EbpfMode::Disabled {
                    reason: error.to_string(),
                }
            }
        }
    };
    let collector = Collector::new(config, ebpf)
        .with_pod_source(PodSource::new(common.pod_config()))
        .with_conntrack_source(ConntrackSource::default());
    if common.no_pod_netstat {
        collector
    } else {
        let source = PodNetstatSource::new(common.host_proc.clone());
        collector.with_netstat_source(match served {
            Some(Profile::Default) => source.serving(&[NetstatSet::Default]),
            Some(Profile::Detailed) | None => source,
        })
    }
}

fn serve(args: collector::cli::ServeArgs) -> anyhow::Result<()> {
    if args.health_listen == args.listen {
        Cli::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                format!("--health-listen {} is the --listen address", args.listen),
            )
            .exit();
    }
    // Read before anything touches the kernel: a bad file stops the start.
    let web = args
        .web_config_file
        .as_deref()
        .map(http::ReloadingWeb::load)
        .transpose()?
        .map(Arc::new);
    if let Some(web) = &web {
        let settings = web.in_force();
        if settings.auth.is_some() && settings.tls.is_none() {
            tracing::warn!("basic auth without TLS: passwords cross the network in clear text");
        }
    }
    let collector = Arc::new(build_collector(
        &args.common,
        true,
        Some(args.common.profile()),
    ));
    // Bound before the capabilities go, so a privileged port still works.
    let main = http::Endpoint {
        listener: http::bind(args.listen, http::Routes::All)?,
        routes: http::Routes::All,
        web,
    };
    let health = http::Endpoint {
        listener: http::bind(args.health_listen, http::Routes::Health)?,
        routes: http::Routes::Health,
        web: None,
    };
    drop_capabilities(&collector);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let wedged_after = args.common.netlink_timeout * 2 + std::time::Duration::from_secs(5);
    runtime.block_on(async move {
        let scraper = Scraper::new(collector, wedged_after, args.common.profile());
        // Warm-up collection so /readyz turns ready without waiting for Prometheus.
        let warm = Arc::clone(&scraper);
        tokio::spawn(async move {
            warm.collect().await;
        });
        let result = tokio::select! {
            served = http::serve(Arc::clone(&scraper), main) => served.context("serving /metrics"),
            served = http::serve(scraper, health) => served.context("serving health"),
            () = shutdown_signal() => Ok(()),
        };
        tracing::info!("shut down; BPF programs detached");
        result
    })
}

/// Once the probes are attached, nothing the long-running commands do needs
/// a capability (see `privileges`); a failure to drop is logged, not fatal.
fn drop_capabilities(collector: &collector::collect::Collector) {
    match privileges::drop_after_attach(|| collector.ebpf_maps_readable()) {
        Ok(Kept::Nothing) => tracing::info!("dropped all capabilities"),
        Ok(Kept::Bpf) => tracing::info!(
            "dropped all capabilities but CAP_BPF, which this kernel requires for map reads"
        ),
        Err(error) => tracing::warn!(%error, "could not drop capabilities"),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

fn snapshot(args: SnapshotArgs) -> anyhow::Result<()> {
    let collector = build_collector(&args.common, false, None);
    if collector.ebpf_enabled() {
        // The probes were attached a moment ago; let them see some traffic.
        std::thread::sleep(args.window);
    } else {
        eprintln!("collector: eBPF unavailable, netlink counters only (see the warning above)");
    }
    let snapshot = collector.collect();
    let terminal = std::io::stdout().is_terminal();
    let format = args.format.unwrap_or(if terminal {
        SnapshotFormat::Table
    } else {
        SnapshotFormat::Json
    });
    let text = match format {
        SnapshotFormat::Prometheus => {
            prometheus::render_profile(&snapshot, &HttpStats::default(), args.common.profile())
        }
        SnapshotFormat::Json => {
            serde_json::to_string_pretty(&snapshot).context("encoding JSON")? + "\n"
        }
        SnapshotFormat::Table => table::render(&snapshot),
    };
    std::io::stdout()
        .write_all(text.as_bytes())
        .context("writing to stdout")?;
    Ok(())
}

fn watch_rates(args: WatchArgs) -> anyhow::Result<()> {
    let collector = build_collector(&args.common, false, None);
    drop_capabilities(&collector);
    let refresh = watch::Refresh {
        interval: args.interval,
        sort: args.sort,
        count: args.count,
        terminal: std::io::stdout().is_terminal(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime
        .block_on(watch::run(
            || collector.collect(),
            refresh,
            &mut std::io::stdout(),
        ))
        .context("writing to stdout")?;
    // Dropping the collector detaches the probes before we exit 0.
    Ok(())
}
