//! The `ymesh` command line. Parses flags, sets up logging and runs the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use ymesh::config::{Config, FileConfig, LogFormat, Overrides};

/// A Yjs sync node: y-websocket server, mesh replication, durable rooms.
#[derive(Debug, Parser)]
#[command(name = "ymesh", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node.
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Config file (default: ./mesh.toml when it exists).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Listen address [default: 127.0.0.1].
    #[arg(long, env = "HOST", value_name = "ADDR")]
    host: Option<String>,
    /// Listen port; 0 picks a free one [default: 3913].
    #[arg(long, env = "PORT", value_name = "N")]
    port: Option<u16>,
    /// Log format: text or json [default: text].
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
    /// Store directory [default: ./ymesh-data].
    #[arg(long, env = "YMESH_DATA_DIR", value_name = "PATH")]
    data_dir: Option<PathBuf>,
    /// Run without a store: nothing survives a restart.
    #[arg(long)]
    memory: bool,
    /// Peer node to dial, repeatable (planned: mesh replication).
    #[arg(long = "peer", value_name = "URL")]
    peers: Vec<String>,
    /// Shared mesh secret (planned: mesh replication).
    #[arg(
        long,
        env = "YMESH_MESH_SECRET",
        value_name = "S",
        hide_env_values = true
    )]
    mesh_secret: Option<String>,
    /// Node id admitted to the mesh, repeatable (planned: mesh replication).
    #[arg(long = "allow-peer", value_name = "NODE_ID")]
    allow_peers: Vec<String>,
    /// Static client token (planned: authentication).
    #[arg(long, env = "YMESH_TOKEN", value_name = "T", hide_env_values = true)]
    token: Option<String>,
    /// Secret for signed client tokens (planned: authentication).
    #[arg(
        long,
        env = "SYNC_SHARED_SECRET",
        value_name = "S",
        hide_env_values = true
    )]
    shared_secret: Option<String>,
    /// Admin bearer token (planned: authentication).
    #[arg(
        long,
        env = "YMESH_ADMIN_TOKEN",
        value_name = "T",
        hide_env_values = true
    )]
    admin_token: Option<String>,
    /// Turn mDNS discovery on (planned: discovery).
    #[arg(long, conflicts_with = "no_mdns")]
    mdns: bool,
    /// Turn mDNS discovery off.
    #[arg(long)]
    no_mdns: bool,
    /// TLS certificate chain, PEM (planned: TLS).
    #[arg(long, value_name = "PATH")]
    tls_cert: Option<PathBuf>,
    /// TLS private key, PEM (planned: TLS).
    #[arg(long, value_name = "PATH")]
    tls_key: Option<PathBuf>,
}

impl ServeArgs {
    /// Flags given for settings this version cannot act on yet.
    fn planned(&self) -> Vec<(String, &'static str)> {
        let mut out = Vec::new();
        let mut check = |given: bool, flag: &str, key: &'static str| {
            if given {
                out.push((flag.to_string(), key));
            }
        };
        check(!self.peers.is_empty(), "--peer", "peers");
        check(
            self.mesh_secret.is_some(),
            "--mesh-secret / YMESH_MESH_SECRET",
            "mesh_secret",
        );
        check(!self.allow_peers.is_empty(), "--allow-peer", "allow_peers");
        check(self.token.is_some(), "--token / YMESH_TOKEN", "token");
        check(
            self.shared_secret.is_some(),
            "--shared-secret / SYNC_SHARED_SECRET",
            "shared_secret",
        );
        check(
            self.admin_token.is_some(),
            "--admin-token / YMESH_ADMIN_TOKEN",
            "admin_token",
        );
        check(self.mdns, "--mdns", "mdns");
        check(self.tls_cert.is_some(), "--tls-cert", "tls_cert");
        check(self.tls_key.is_some(), "--tls-key", "tls_key");
        out
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => {
            use std::io::IsTerminal;
            builder.with_ansi(std::io::stderr().is_terminal()).init()
        }
    }
}

/// Raises the open-file limit to the hard limit so many connections fit.
fn raise_fd_limit() {
    #[cfg(unix)]
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let old = lim.rlim_cur;
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                tracing::debug!(from = old, to = lim.rlim_max, "raised open-file limit");
            }
        }
    }
}

/// Installs the SIGINT/SIGTERM handlers now (before the ready line, so a signal sent right
/// after it is never fatal) and returns a future that resolves on the first signal.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
        Ok(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

fn load_config(args: &ServeArgs) -> anyhow::Result<Config> {
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => {
            let default = PathBuf::from("mesh.toml");
            if default.is_file() {
                FileConfig::load(&default)?
            } else {
                FileConfig::default()
            }
        }
    };
    let over = Overrides {
        host: args.host.clone(),
        port: args.port,
        log_format: args.log_format,
        data_dir: args.data_dir.clone(),
        memory: args.memory,
        planned: args.planned(),
    };
    Ok(Config::resolve(&file, &over)?)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = match load_config(&args) {
        Ok(c) => c,
        Err(e) => {
            init_logging(args.log_format.unwrap_or_default());
            return Err(e);
        }
    };
    init_logging(config.log_format);
    raise_fd_limit();
    let signal = shutdown_signal()?;
    let node = ymesh::Node::start(config).await?;
    signal.await;
    node.shutdown().await;
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ymesh: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ymesh: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
