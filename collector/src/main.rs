//! `collector`: serve metrics, or print one snapshot.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use collector::cli::{Cli, Command, CommonArgs, SnapshotArgs, SnapshotFormat};
use collector::collect::{Collector, CollectorConfig, EbpfMode};
use collector::server::{self, Scraper};
use collector::sources::ebpf::{EbpfSource, KernelSources};
use collector::{exposition, table};

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Snapshot(args)) => snapshot(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("collector: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn build_collector(common: &CommonArgs) -> Collector {
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
    };
    let ebpf = if common.no_ebpf {
        EbpfMode::Disabled {
            reason: "disabled by --no-ebpf".to_string(),
        }
    } else {
        let sources = KernelSources {
            btf_path: common.btf.clone(),
            tracefs_root: common.tracefs.clone(),
        };
        match EbpfSource::start(&sources) {
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
    Collector::new(config, ebpf)
}

fn serve(args: collector::cli::ServeArgs) -> anyhow::Result<()> {
    let collector = Arc::new(build_collector(&args.common));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let scraper = Scraper::new(collector);
        // Warm-up collection so /readyz turns ready without waiting for Prometheus.
        let warm = Arc::clone(&scraper);
        tokio::spawn(async move {
            warm.snapshot().await;
        });
        server::serve(scraper, args.listen, shutdown_signal()).await?;
        tracing::info!("shut down; BPF programs detached");
        Ok(())
    })
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
    let collector = build_collector(&args.common);
    let snapshot = collector.collect();
    let text = match args.format {
        SnapshotFormat::Prometheus => exposition::render(&snapshot),
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
