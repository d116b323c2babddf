//! hearthd: parse flags, load the config, start tracing, serve the CRI.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use hearthd::config::Config;

/// Hearth: a Kubernetes CRI runtime that runs every pod in its own microVM.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Config file.
    #[arg(long, default_value = "/etc/hearth/config.toml")]
    config: PathBuf,
    /// CRI socket (overrides `address`).
    #[arg(long)]
    address: Option<PathBuf>,
    /// Persistent state directory (overrides `root`).
    #[arg(long)]
    root: Option<PathBuf>,
    /// Runtime state directory (overrides `state`).
    #[arg(long)]
    state: Option<PathBuf>,
    /// Log filter (overrides `log_level`).
    #[arg(long)]
    log_level: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config = if args.config.exists() {
        Config::load(&args.config)?
    } else if args.config.as_os_str() == "/etc/hearth/config.toml" {
        Config::default()
    } else {
        anyhow::bail!("config file {} does not exist", args.config.display());
    };
    if let Some(a) = args.address {
        config.address = a;
    }
    if let Some(r) = args.root {
        config.root = r;
    }
    if let Some(s) = args.state {
        config.state = s;
    }
    if let Some(l) = args.log_level {
        config.log_level = l;
    }
    config.validate()?;
    init_tracing(&config)?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let runtime = hearthd::build(&config).await?;
        let listener = hearthd::bind(&config.address)
            .with_context(|| format!("binding {}", config.address.display()))?;
        tracing::info!(address = %config.address.display(), "hearthd serving the CRI");
        hearthd::serve(listener, runtime, shutdown_signal()).await?;
        tracing::info!("hearthd stopped; sandboxes keep running");
        Ok(())
    })
}

fn init_tracing(config: &Config) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .with_context(|| format!("log_level {:?}", config.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}
