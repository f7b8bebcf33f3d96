//! The `wasmcri` command: the CRI daemon, the hidden per-container runner, and image tools.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use wasmcri::config::Config;

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
    /// CRI socket path.
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
    /// Manage the local image store.
    Image {
        #[command(subcommand)]
        cmd: ImageCmd,
    },
}

#[derive(Subcommand)]
enum ImageCmd {
    /// Import an OCI image layout (directory or tar).
    Import {
        /// The layout directory or tar file.
        path: PathBuf,
        /// Tag the image with this reference.
        #[arg(long)]
        name: Option<String>,
    },
    /// List images.
    Ls,
    /// Remove an image by reference or ID.
    Rm {
        /// Reference or ID.
        image: String,
    },
    /// Pull an image from a registry.
    Pull {
        /// Reference.
        image: String,
        /// Registry user.
        #[arg(long)]
        user: Option<String>,
        /// Registry password.
        #[arg(long, env = "WASMCRI_REGISTRY_PASSWORD")]
        password: Option<String>,
    },
    /// Publish a .wasm module or component as an OCI Wasm artifact.
    Push {
        /// The .wasm file.
        file: PathBuf,
        /// Target reference (e.g. localhost:5000/hello:v1).
        reference: String,
        /// Registry user.
        #[arg(long)]
        user: Option<String>,
        /// Registry password.
        #[arg(long, env = "WASMCRI_REGISTRY_PASSWORD")]
        password: Option<String>,
        /// Speak plain HTTP to this registry.
        #[arg(long)]
        insecure: bool,
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
            Cmd::Image { cmd } => image_cmd(config, cmd).await,
        }
    })
}

/// Registry credentials from the `--user`/`--password` flags.
fn pull_auth(user: Option<String>, password: Option<String>) -> wasmcri::images::PullAuth {
    wasmcri::images::PullAuth {
        username: user.unwrap_or_default(),
        password: password.unwrap_or_default(),
        ..Default::default()
    }
}

async fn image_cmd(config: Config, cmd: ImageCmd) -> anyhow::Result<()> {
    use wasmcri::images::ImageStore;
    // The same precompile step the daemon runs on import/pull.
    let hook = wasmcri::wasm::precompile_hook(wasmcri::wasm::engine()?, config.cache_dir());
    let store = ImageStore::open(config.images_dir(), Some(hook)).context("open image store")?;
    match cmd {
        ImageCmd::Import { path, name } => {
            for img in store.import_layout(&path, name.as_deref()).await? {
                println!("{} {}", img.id, img.repo_tags.join(","));
            }
        }
        ImageCmd::Ls => {
            println!("{:<71} {:>10} TAGS", "ID", "SIZE");
            for img in store.list(&Default::default())? {
                println!(
                    "{:<71} {:>10} {}",
                    img.id,
                    img.size,
                    img.repo_tags.join(",")
                );
            }
        }
        ImageCmd::Rm { image } => {
            store.remove(&image).await?;
            println!("removed {image}");
        }
        ImageCmd::Pull {
            image,
            user,
            password,
        } => {
            let auth = pull_auth(user, password);
            let img = store.pull(&image, &auth, &config.registry).await?;
            println!("{}", img.id);
        }
        ImageCmd::Push {
            file,
            reference,
            user,
            password,
            insecure,
        } => {
            let auth = pull_auth(user, password);
            let mut registry = config.registry.clone();
            if insecure && let Some(host) = reference.split('/').next() {
                registry.insecure.push(host.to_owned());
            }
            let pushed = store.push_wasm(&file, &reference, &auth, &registry).await?;
            println!("{pushed:?}");
        }
    }
    Ok(())
}
