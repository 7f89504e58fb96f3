//! The `ymesh` command line: a thin shell over the library. It parses flags (clap),
//! dispatches each subcommand to the library (`ymesh::ops` for the operator tools,
//! `ymesh::server` for `serve`), sets up logging, prints what the library renders, and
//! turns errors into one `ymesh: error: ...` line and exit code 1 (anyhow lives only here).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use ymesh::config::{LogFormat, Overrides};
use ymesh::ops::Target;

/// A Yjs sync node: y-websocket server, mesh replication, durable rooms.
#[derive(Debug, Parser)]
#[command(name = "ymesh", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
// `Command` below is the `ymesh command` subcommand, named as users type it.
#[allow(clippy::enum_variant_names)]
enum Command {
    /// Run a node.
    Serve(ServeArgs),
    /// Write a room as one Yjs v1 update (from a stopped node's store, or a running node).
    Export(ExportArgs),
    /// Merge a Yjs v1 update into a room (in a stopped node's store, or a running node).
    Import(ImportArgs),
    /// Fold rooms' update logs into snapshots; prints logical bytes before and after.
    Compact(CompactArgs),
    /// Delete a room, here and (through a tombstone) on every peer that shares it.
    Delete(DeleteArgs),
    /// Copy the store to a new file, consistently, while a node may be running on it.
    Backup(BackupArgs),
    /// Put a backup in place as the store of a data directory (no node may run on it).
    RestoreBackup(RestoreArgs),
    /// Show a running node's peers and rooms as tables.
    Status(StatusArgs),
    /// List a running node's rooms (in memory and stored) as a table.
    Rooms(RoomsArgs),
    /// Issue a maintenance command (migrate, reindex, compact, invalidate) on a running node;
    /// it reaches every node of the mesh and every client that opted in.
    Command(CommandArgs),
    /// Approve or deny a peer node on a running node (`ymesh peer approve NODE_ID`); the
    /// decision persists in that node's data directory.
    #[command(subcommand)]
    Peer(PeerCommand),
    /// Print this node's id (creating its key in the data directory if there is none yet,
    /// so the id can go into peers' allow lists before the first start).
    Id(IdArgs),
    /// Print a new random secret (256 bits, hex) for --mesh-secret, --token,
    /// --shared-secret or --admin-token.
    Secret,
    /// Print a signed user token (`userId:signature`) for a node started with
    /// --shared-secret; the token is the last line of the output.
    Token(TokenArgs),
}

/// `ymesh peer ...`.
#[derive(Debug, Subcommand)]
enum PeerCommand {
    /// Admit a node from now on (a pending link to it comes up at once).
    Approve(PeerArgs),
    /// Refuse a node from now on, whatever else admits it (its links close).
    Deny(PeerArgs),
}

#[derive(Debug, clap::Args)]
struct PeerArgs {
    /// The peer's node id (as `GET /peers` and the node's log show it).
    node_id: String,
    /// The node to tell.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:3913")]
    node: String,
    #[command(flatten)]
    admin: AdminTokenArg,
}

#[derive(Debug, clap::Args)]
struct TokenArgs {
    /// The user id the token names (a signed user token; with --room, the token's `sub`).
    #[arg(long, value_name = "ID")]
    user: Option<String>,
    /// A room-scoped token (HS256 JWT) for this room, or a prefix ending in `*`.
    #[arg(long, value_name = "ROOM")]
    room: Option<String>,
    /// With --room: the token may read, not write.
    #[arg(long, requires = "room")]
    read_only: bool,
    /// With --room: how long the token lives, e.g. 90s, 30m, 1h, 7d (default 1h, at most 30d).
    #[arg(long, value_name = "DURATION", requires = "room")]
    ttl: Option<String>,
    /// The node's shared secret [default: shared_secret of the config file].
    #[arg(
        long,
        env = "SYNC_SHARED_SECRET",
        value_name = "S",
        hide_env_values = true
    )]
    shared_secret: Option<String>,
    /// Config file to read shared_secret from (default: ./mesh.toml when it exists).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

/// Which running node a client command asks.
#[derive(Debug, clap::Args)]
struct NodeArg {
    /// The node to ask [default: http://HOST:PORT from the config file, else
    /// http://127.0.0.1:3913].
    #[arg(long, value_name = "URL")]
    node: Option<String>,
    /// Config file whose host and port name the node when --node is not given (default:
    /// ./mesh.toml when it exists).
    #[arg(long, value_name = "PATH", conflicts_with = "node")]
    config: Option<PathBuf>,
    #[command(flatten)]
    admin: AdminTokenArg,
}

impl NodeArg {
    fn client(self) -> anyhow::Result<ymesh::ops::NodeClient> {
        let url = ymesh::ops::node_url(self.node.as_deref(), self.config.as_deref())?;
        Ok(ymesh::ops::NodeClient::new(&url, self.admin.credential())?)
    }
}

#[derive(Debug, clap::Args)]
struct StatusArgs {
    #[command(flatten)]
    node: NodeArg,
    /// Only this room (in the per-peer sync table and the rooms table).
    #[arg(long, value_name = "ROOM")]
    room: Option<String>,
    /// Print one JSON document ({"node", "peers", "rooms"}) instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct RoomsArgs {
    #[command(flatten)]
    node: NodeArg,
}

#[derive(Debug, clap::Args)]
struct CommandArgs {
    /// migrate, reindex, compact or invalidate.
    kind: String,
    /// The room; every room when omitted (invalidate needs one).
    #[arg(long)]
    room: Option<String>,
    /// Arguments as a JSON object, e.g. '{"version": 3}' for migrate.
    #[arg(long, value_name = "JSON")]
    args: Option<String>,
    /// Seconds the command stays answerable [default: 30].
    #[arg(long, value_name = "S")]
    deadline: Option<u64>,
    /// Print results as they arrive until every responder answered or the deadline passed.
    #[arg(long)]
    wait: bool,
    /// The node that issues it.
    #[command(flatten)]
    node: NodeArg,
}

/// `--admin-token` and `--token` of the client subcommands.
#[derive(Debug, clap::Args)]
struct AdminTokenArg {
    /// Admin token, sent as a bearer token (it also serves as a client credential).
    #[arg(
        long,
        env = "YMESH_ADMIN_TOKEN",
        value_name = "T",
        hide_env_values = true
    )]
    admin_token: Option<String>,
    /// Client token (static token or signed user token) for a node with client
    /// authentication on; sent when no admin token is given.
    #[arg(long, env = "YMESH_TOKEN", value_name = "T", hide_env_values = true)]
    token: Option<String>,
}

impl AdminTokenArg {
    /// The bearer credential to send: the admin token, else the client token.
    fn credential(self) -> Option<String> {
        self.admin_token.or(self.token)
    }
}

#[derive(Debug, clap::Args)]
struct IdArgs {
    #[command(flatten)]
    dir: DirArgs,
}

/// A node's data directory, for commands that only work on one (never on `--node`).
#[derive(Debug, clap::Args)]
struct DirArgs {
    /// Store directory [default: data_dir of the config, else ./ymesh-data].
    #[arg(long, env = "YMESH_DATA_DIR", value_name = "PATH")]
    data_dir: Option<PathBuf>,
    /// Config file whose data_dir to use (default: ./mesh.toml when it exists).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

impl DirArgs {
    fn resolve(self) -> anyhow::Result<PathBuf> {
        Ok(ymesh::ops::data_dir(self.data_dir, self.config.as_deref())?)
    }
}

/// Where a room operation runs: a stopped node's data directory, or a running node.
#[derive(Debug, clap::Args)]
struct TargetArgs {
    /// Store directory of a stopped node [env: YMESH_DATA_DIR] [default: data_dir of the
    /// config, else ./ymesh-data].
    // The env var is read by `data_dir()`, not clap: clap would count it as given and
    // refuse it next to --node.
    #[arg(long, value_name = "PATH", conflicts_with = "node")]
    data_dir: Option<PathBuf>,
    /// Config file whose data_dir to use (default: ./mesh.toml when it exists).
    #[arg(long, value_name = "PATH", conflicts_with = "node")]
    config: Option<PathBuf>,
    /// A running node instead of a data directory, e.g. http://127.0.0.1:3913.
    #[arg(long, value_name = "URL")]
    node: Option<String>,
    #[command(flatten)]
    admin: AdminTokenArg,
}

impl TargetArgs {
    fn resolve(self) -> anyhow::Result<Target> {
        Ok(Target::resolve(
            self.node.as_deref(),
            self.admin.credential(),
            self.data_dir,
            self.config.as_deref(),
        )?)
    }
}

#[derive(Debug, clap::Args)]
struct ExportArgs {
    /// The room.
    room: String,
    /// Write to FILE instead of standard output (which must not be a terminal).
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(flatten)]
    target: TargetArgs,
}

#[derive(Debug, clap::Args)]
struct ImportArgs {
    /// The room (created if it does not exist).
    room: String,
    /// A file holding one Yjs v1 update (`-` for standard input).
    file: PathBuf,
    /// Restore a deleted room from this update (an export taken before the deletion, which
    /// is otherwise refused); the room comes back on every peer as the change reaches it.
    #[arg(long)]
    undelete: bool,
    #[command(flatten)]
    target: TargetArgs,
}

#[derive(Debug, clap::Args)]
struct CompactArgs {
    /// The room; every stored room when omitted.
    room: Option<String>,
    #[command(flatten)]
    target: TargetArgs,
}

#[derive(Debug, clap::Args)]
struct DeleteArgs {
    /// The room.
    room: String,
    #[command(flatten)]
    target: TargetArgs,
}

#[derive(Debug, clap::Args)]
struct BackupArgs {
    /// The backup file to write (must not exist).
    path: PathBuf,
    #[command(flatten)]
    dir: DirArgs,
}

#[derive(Debug, clap::Args)]
struct RestoreArgs {
    /// A backup written by `ymesh backup`.
    backup: PathBuf,
    /// The store to restore into.
    #[command(flatten)]
    dir: DirArgs,
    /// Replace a store that holds rooms.
    #[arg(long)]
    force: bool,
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
    /// Admit every ymesh node without a secret or approval (mesh.toml `mesh_open`).
    #[arg(long)]
    mesh_open: bool,
    /// Peer node to dial, repeatable: ws://host:3913 (or a room URL template).
    #[arg(long = "peer", value_name = "URL")]
    peers: Vec<String>,
    /// Shared mesh secret that admits peers.
    #[arg(
        long,
        env = "YMESH_MESH_SECRET",
        value_name = "S",
        hide_env_values = true
    )]
    mesh_secret: Option<String>,
    /// Node id admitted to the mesh without the secret, repeatable.
    #[arg(long = "allow-peer", value_name = "NODE_ID")]
    allow_peers: Vec<String>,
    /// Static token every client must present (`?token=` or `Authorization: Bearer`).
    #[arg(long, env = "YMESH_TOKEN", value_name = "T", hide_env_values = true)]
    token: Option<String>,
    /// Secret that signs user tokens (`ymesh token --user ID` prints one).
    #[arg(
        long,
        env = "SYNC_SHARED_SECRET",
        value_name = "S",
        hide_env_values = true
    )]
    shared_secret: Option<String>,
    /// Bearer token for admin routes; without one they are accepted only from loopback.
    #[arg(
        long,
        env = "YMESH_ADMIN_TOKEN",
        value_name = "T",
        hide_env_values = true
    )]
    admin_token: Option<String>,
    /// Turn mDNS discovery on (default: on only when listening on a non-loopback address).
    #[arg(long, conflicts_with = "no_mdns")]
    mdns: bool,
    /// Turn mDNS discovery off.
    #[arg(long)]
    no_mdns: bool,
    /// libp2p listen multiaddr, repeatable: /ip4/0.0.0.0/tcp/4001 (docs/p2p.md).
    #[arg(long = "p2p-listen", value_name = "MULTIADDR")]
    p2p_listen: Vec<String>,
    /// Reserve a slot on this libp2p relay, repeatable: /ip4/ADDR/tcp/PORT/p2p/RELAY_ID.
    #[arg(long = "p2p-relay", value_name = "MULTIADDR")]
    p2p_relay: Vec<String>,
    /// Be a libp2p circuit relay v2 server.
    #[arg(long)]
    p2p_relay_server: bool,
    /// TLS certificate chain, PEM: serve https:// and wss:// (needs --tls-key).
    #[arg(long, value_name = "PATH")]
    tls_cert: Option<PathBuf>,
    /// TLS private key, PEM, of --tls-cert.
    #[arg(long, value_name = "PATH")]
    tls_key: Option<PathBuf>,
    /// CA certificate (PEM) trusted besides the system's when dialing wss:// peers.
    #[arg(long, env = "YMESH_TLS_CA", value_name = "PATH")]
    tls_ca: Option<PathBuf>,
}

fn init_logging(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
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

fn overrides(args: &ServeArgs) -> Overrides {
    Overrides {
        host: args.host.clone(),
        port: args.port,
        log_format: args.log_format,
        data_dir: args.data_dir.clone(),
        memory: args.memory,
        admin_token: args.admin_token.clone(),
        token: args.token.clone(),
        shared_secret: args.shared_secret.clone(),
        peers: args.peers.clone(),
        mesh_secret: args.mesh_secret.clone(),
        allow_peers: args.allow_peers.clone(),
        mesh_open: args.mesh_open,
        mdns: match (args.mdns, args.no_mdns) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
        p2p_listen: args.p2p_listen.clone(),
        p2p_relay: args.p2p_relay.clone(),
        p2p_relay_server: args.p2p_relay_server,
        tls_cert: args.tls_cert.clone(),
        tls_key: args.tls_key.clone(),
        tls_ca: args.tls_ca.clone(),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = match ymesh::server::load_config(args.config.as_deref(), &overrides(&args)) {
        Ok(c) => c,
        Err(e) => {
            init_logging(args.log_format.unwrap_or_default(), "info");
            return Err(e.into());
        }
    };
    init_logging(config.log_format, "info");
    // A reload re-reads the same file; the flags and environment given now keep winning.
    let path = args.config.clone();
    let over = overrides(&args);
    let source: ymesh::server::ConfigSource =
        Box::new(move || ymesh::server::load_config(path.as_deref(), &over));
    ymesh::server::serve_until_signal(config, Some(source)).await?;
    Ok(())
}

async fn export(args: ExportArgs) -> anyhow::Result<()> {
    use std::io::{IsTerminal, Write};
    let to_stdout = args.output.as_ref().is_none_or(|p| p.as_os_str() == "-");
    if to_stdout && std::io::stdout().is_terminal() {
        anyhow::bail!(
            "refusing to write a binary Yjs update to a terminal; use -o FILE or redirect \
             standard output"
        );
    }
    let update = args
        .target
        .resolve()?
        .export(&args.room)
        .await
        .with_context(|| format!("exporting room {:?}", args.room))?;
    match args.output.filter(|_| !to_stdout) {
        Some(path) => {
            std::fs::write(&path, &update)
                .with_context(|| format!("writing {}", path.display()))?;
            eprint!(
                "{}",
                ymesh::ops::export::report(&args.room, &path, update.len())
            );
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(&update)
                .and_then(|()| out.flush())
                .context("writing to standard output")?;
        }
    }
    Ok(())
}

async fn import(args: ImportArgs) -> anyhow::Result<()> {
    let update = if args.file.as_os_str() == "-" {
        use std::io::Read;
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading standard input")?;
        buf
    } else {
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?
    };
    ymesh::ops::validate_update(&update)
        .with_context(|| format!("{} cannot be imported", args.file.display()))?;
    let imported = args
        .target
        .resolve()?
        .import(&args.room, &update, args.undelete)
        .await
        .with_context(|| format!("importing into room {:?}", args.room))?;
    print!("{}", imported.report(&args.room, update.len(), &args.file));
    Ok(())
}

async fn compact(args: CompactArgs) -> anyhow::Result<()> {
    let done = args
        .target
        .resolve()?
        .compact(args.room.as_deref())
        .await
        .context("compacting")?;
    print!("{}", ymesh::ops::compact::report(&done));
    Ok(())
}

async fn command(args: CommandArgs) -> anyhow::Result<()> {
    let node = args.node.client()?;
    let cmd_args = match &args.args {
        Some(text) => serde_json::from_str(text).context("--args is not JSON")?,
        None => serde_json::json!({}),
    };
    let id = node
        .issue_command(&args.kind, args.room.as_deref(), cmd_args, args.deadline)
        .await
        .context("issuing the command")?;
    print!("{}", ymesh::ops::command::issued(&id));
    if args.wait {
        node.follow_command(&id, &mut std::io::stdout()).await?;
    }
    Ok(())
}

async fn delete(args: DeleteArgs) -> anyhow::Result<()> {
    let target = args.target.resolve()?;
    let deleted = target.delete(&args.room).await.context("deleting")?;
    print!("{}", ymesh::ops::delete::report(&deleted, target.is_node()));
    Ok(())
}

async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let dir = args.dir.resolve()?;
    let path = args.path;
    let source = dir.clone();
    let dest = path.clone();
    let info = tokio::task::spawn_blocking(move || ymesh::ops::backup(&source, &dest))
        .await
        .context("backup task")?
        .with_context(|| format!("backing up {}", dir.display()))?;
    print!("{}", ymesh::ops::backup::report(&dir, &path, &info));
    Ok(())
}

async fn restore_backup(args: RestoreArgs) -> anyhow::Result<()> {
    let dir = args.dir.resolve()?;
    let (source, target, force) = (args.backup.clone(), dir.clone(), args.force);
    let restored =
        tokio::task::spawn_blocking(move || ymesh::ops::restore_backup(&source, &target, force))
            .await
            .context("restore task")?
            .with_context(|| {
                format!("restoring {} into {}", args.backup.display(), dir.display())
            })?;
    print!(
        "{}",
        ymesh::ops::restore::report(&args.backup, &dir, &restored)
    );
    Ok(())
}

async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let node = args.node.client()?;
    if args.json {
        let doc = node.status_json(args.room.as_deref()).await?;
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", node.status_text(args.room.as_deref()).await?);
    }
    Ok(())
}

async fn peer(cmd: PeerCommand) -> anyhow::Result<()> {
    let (args, approve) = match cmd {
        PeerCommand::Approve(a) => (a, true),
        PeerCommand::Deny(a) => (a, false),
    };
    let node = ymesh::ops::NodeClient::new(&args.node, args.admin.credential())?;
    node.decide_peer(&args.node_id, approve).await?;
    println!(
        "{} {}",
        if approve { "approved" } else { "denied" },
        args.node_id
    );
    Ok(())
}

async fn rooms(args: RoomsArgs) -> anyhow::Result<()> {
    let node = args.node.client()?;
    print!("{}", node.rooms_text().await?);
    Ok(())
}

async fn id(args: IdArgs) -> anyhow::Result<()> {
    let dir = args.dir.resolve()?;
    ymesh::store::prepare_data_dir(&dir)?;
    let identity = ymesh::mesh::NodeIdentity::load_or_create(&dir)?;
    println!("{}", identity.node_id());
    Ok(())
}

fn token(args: TokenArgs) -> anyhow::Result<()> {
    let secret = match args.shared_secret {
        Some(s) => s,
        None => {
            let file = ymesh::config::FileConfig::locate(args.config.as_deref())?;
            let config = ymesh::config::Config::resolve(&file, &Overrides::default())?;
            config.shared_secret.context(
                "no shared secret: give --shared-secret, set SYNC_SHARED_SECRET, or set \
                 shared_secret in mesh.toml",
            )?
        }
    };
    anyhow::ensure!(!secret.is_empty(), "the shared secret must not be empty");
    if let Some(user) = &args.user {
        anyhow::ensure!(
            !user.is_empty() && user.len() <= ymesh::auth::client::MAX_USER_ID,
            "the user id must be 1 to {} bytes",
            ymesh::auth::client::MAX_USER_ID
        );
    }
    if let Some(room) = &args.room {
        use ymesh::auth::scoped::{self, Scope};
        let ttl = match &args.ttl {
            Some(t) => parse_duration(t)?,
            None => 3600,
        };
        let scope = if args.read_only {
            Scope::Read
        } else {
            Scope::Write
        };
        let now = scoped::now_s();
        let token = scoped::mint(&secret, room, scope, ttl, args.user.as_deref(), now)?;
        eprintln!(
            "room-scoped {} token for {room:?}, expires in {ttl} s",
            if args.read_only {
                "read-only"
            } else {
                "read-write"
            }
        );
        println!("{token}");
        return Ok(());
    }
    let user = args
        .user
        .context("give --user ID (a signed user token) or --room ROOM (a room-scoped token)")?;
    println!("{}", ymesh::auth::sign_user(&secret, &user));
    Ok(())
}

/// `90s`, `30m`, `1h`, `7d` or a number of seconds.
fn parse_duration(text: &str) -> anyhow::Result<u64> {
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = digits
        .parse()
        .with_context(|| format!("{text:?} is not a duration (e.g. 90s, 30m, 1h, 7d)"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => anyhow::bail!("unknown unit {other:?} in {text:?}: use s, m, h or d"),
    };
    Ok(n.saturating_mul(unit))
}

/// The error and its causes on one line, leaving out a cause whose text an earlier message
/// already includes (several library errors put their source in their own message).
fn error_chain(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
    }
    msg
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
            other => {
                // Tools print their results; logs only for warnings unless RUST_LOG says more.
                init_logging(LogFormat::Text, "warn");
                // `https://` nodes with a certificate from a private CA.
                if let Some(ca) = std::env::var_os("YMESH_TLS_CA").filter(|v| !v.is_empty()) {
                    if let Err(e) = ymesh::net::tls::trust_ca_file(std::path::Path::new(&ca)) {
                        return Err(anyhow::anyhow!("YMESH_TLS_CA: {e}"));
                    }
                }
                match other {
                    Command::Serve(_) => unreachable!("handled above"),
                    Command::Export(args) => export(args).await,
                    Command::Import(args) => import(args).await,
                    Command::Compact(args) => compact(args).await,
                    Command::Delete(args) => delete(args).await,
                    Command::Command(args) => command(args).await,
                    Command::Backup(args) => backup(args).await,
                    Command::RestoreBackup(args) => restore_backup(args).await,
                    Command::Status(args) => status(args).await,
                    Command::Rooms(args) => rooms(args).await,
                    Command::Id(args) => id(args).await,
                    Command::Peer(cmd) => peer(cmd).await,
                    Command::Token(args) => token(args),
                    Command::Secret => {
                        println!("{}", ymesh::auth::new_secret());
                        Ok(())
                    }
                }
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ymesh: error: {}", error_chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
