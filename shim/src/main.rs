//! The `wasmcri` command: the CRI daemon, the hidden per-container runner, and image tools.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use wasmcri::config::Config;

mod cli;

#[derive(Parser)]
#[command(
    name = "wasmcri",
    version,
    about = "Kubernetes CRI runtime for WebAssembly (wasmtime)"
)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, global = true, env = "WASMCRI_CONFIG")]
    config: Option<PathBuf>,
    /// Persistent root (images, metadata).
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    /// Volatile state directory (network namespaces).
    #[arg(long, global = true)]
    state: Option<PathBuf>,
    /// CRI socket path (the `image` commands' way to the daemon too).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// Log filter (e.g. `info`, `wasmcri=debug`).
    #[arg(long, global = true)]
    log_level: Option<String>,
    /// CRI runtime that runs every non-Wasm pod, e.g. `unix:///run/containerd/containerd.sock`.
    #[arg(long, global = true)]
    delegate_endpoint: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the CRI on the unix socket.
    Serve,
    /// Run one container (started by the daemon).
    #[command(hide = true)]
    Runner {
        /// The runner spec written by the daemon.
        #[arg(required_unless_present = "standby")]
        spec: Option<PathBuf>,
        /// Start ahead of need and read the spec (one line of JSON) from stdin.
        #[arg(long, conflicts_with = "spec")]
        standby: bool,
    },
    /// Manage wasmcri's image store: through the daemon on `--socket` while one listens
    /// there, else directly (refused while a daemon owns `--root`).
    Image {
        #[command(subcommand)]
        cmd: cli::ImageCmd,
    },
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = match &cli.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(v) = &cli.root {
        config.root = v.clone();
    }
    if let Some(v) = &cli.state {
        config.state = v.clone();
    }
    if let Some(v) = &cli.socket {
        config.socket = v.clone();
    }
    if let Some(v) = &cli.log_level {
        config.log_level = v.clone();
    }
    if let Some(v) = &cli.delegate_endpoint {
        config.delegate.endpoint = v.clone();
    }
    Ok(config)
}

fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal, not for journald or a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Cmd::Runner { spec, standby } = &cli.cmd {
        // Before anything else: the runner must stay single-threaded until it has joined
        // its cgroup and network namespace.
        match spec {
            Some(spec) if !standby => wasmcri::runner::run(spec),
            _ => wasmcri::runner::standby(),
        }
    }
    let config = load_config(&cli)?;
    init_tracing(&config.log_level);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Serve => wasmcri::daemon::serve(config).await,
            Cmd::Runner { .. } => unreachable!("handled above"),
            Cmd::Image { cmd } => cli::run(config, cmd).await,
        }
    })
}
