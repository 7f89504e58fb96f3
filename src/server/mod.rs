//! The node's network shell: the axum router (HTTP API and WebSocket upgrades), the session
//! loops, the idle-room sweeper and orderly shutdown.
//!
//! [`Node::start`] binds the listener (first, before it opens the store or creates the node
//! key, so a port that is taken leaves nothing behind) and returns a [`Node`] handle; [`Node::shutdown`] stops
//! accepting, closes every WebSocket with 1001 and waits (bounded) for sessions to finish.
//! All protocol and room logic lives in `protocol` and `room`; this module only moves bytes.
//! [`serve_until_signal`] runs a node as the `ymesh serve` process (see `run.rs`).
//!
//! Connections are accepted by `listen.rs` (header-read and write deadlines, half-open
//! connections per address, the request-body deadline) before the router sees a request;
//! `limits.rs` holds the per-address counts and the message rate the session loops use.

mod access;
mod http;
mod limits;
mod listen;
mod reload;
mod routes;
use routes::{router, DOCUMENT_ROUTE};
mod run;
mod status;
mod ws;

pub use reload::{ConfigSource, ReloadError, ReloadReport};
pub use run::{load_config, raise_fd_limit, serve_until_signal, shutdown_signal, ServeError};

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::mesh::{transport::ws::accept_axum, Admission, Mesh, MeshSettings, NodeIdentity};
use crate::metrics::Metrics;
use crate::room::{Hooks, OpenError, Room, RoomRegistry, RoomSettings};
use crate::store::{SqliteStore, Store, StoreError, StoreOptions};

/// WebSocket close codes, by name; [`crate::room::CloseReason`] gives each close its code.
pub use crate::room::{
    CLOSE_AT_CAPACITY, CLOSE_FORBIDDEN, CLOSE_GOING_AWAY, CLOSE_MALFORMED, CLOSE_ROOM_UNAVAILABLE,
    CLOSE_TIMEOUT, CLOSE_TOO_BIG,
};

/// How long shutdown waits for sessions to close before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Errors starting a node.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Requested address.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The node's identity key could not be loaded or created.
    #[error("node identity: {0}")]
    Identity(String),
    /// The store could not be opened (locked by another node, corrupt, too new, ...).
    #[error("cannot open the store: {0}")]
    Store(StoreError),
    /// The mesh approvals file could not be read.
    #[error("mesh approvals: {0}")]
    Approvals(String),
    /// The mesh could not start (its libp2p transport).
    #[error("mesh: {0}")]
    Mesh(String),
    /// The TLS certificate, key or CA file cannot be used.
    #[error("TLS: {0}")]
    Tls(#[from] crate::net::tls::TlsError),
}

// Not `#[from]`: that would also make the store error the `source`, and `{:#}` chains would
// print its message twice.
impl From<StoreError> for ServerError {
    fn from(e: StoreError) -> Self {
        ServerError::Store(e)
    }
}

/// State shared by every handler and session of one node.
pub(crate) struct AppState {
    /// The settings in force ([`reload`]); read through [`AppState::live`].
    live: std::sync::RwLock<Arc<reload::Live>>,
    /// The listener's TLS, when `tls_cert` / `tls_key` are set.
    pub(crate) tls: Option<crate::net::tls::ServerTls>,
    /// Each client session's credential, judged again on reload.
    pub(crate) credentials: reload::ClientCredentials,
    /// How to re-read the config on reload.
    config_source: std::sync::Mutex<Option<ConfigSource>>,
    /// Held by the reload in progress.
    reloading: tokio::sync::Mutex<()>,
    pub(crate) registry: Arc<RoomRegistry>,
    pub(crate) started: Instant,
    /// Ids for client sessions and peer links alike (one space, so an update's origin is
    /// unambiguous).
    pub(crate) next_session: Arc<AtomicU64>,
    /// Server-to-server replication.
    pub(crate) mesh: Arc<Mesh>,
    /// Maintenance commands.
    pub(crate) commands: Arc<crate::command::CommandCenter>,
    /// The discovery sources that started (`mdns`, `tailnet`), for `GET /`.
    pub(crate) discovery: std::sync::OnceLock<Vec<&'static str>>,
    /// The node's counters (connections, refusals, the store's).
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) sessions: TaskTracker,
    /// Connections per client address (half-open ones, WebSocket sessions).
    pub(crate) addresses: limits::AddressCounts,
    /// Bytes of document responses being sent (`limits.http_response_bytes`).
    pub(crate) responses: Arc<crate::queue::ByteBudget>,
    /// The stored rooms as the sampler last counted them (the status feed's totals).
    pub(crate) stored_rooms: Arc<crate::ui::StoredRooms>,
}

impl AppState {
    /// The settings in force now (a cheap clone of an `Arc`; take it once per request or
    /// session, not per message).
    pub(crate) fn live(&self) -> Arc<reload::Live> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `https` when the node serves TLS, else `http`: the scheme of its own origin.
    pub(crate) fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

/// A running node. Dropping it does not stop the node; call [`Node::shutdown`].
pub struct Node {
    addr: SocketAddr,
    state: Arc<AppState>,
    server: tokio::task::JoinHandle<()>,
    sweeper: tokio::task::JoinHandle<()>,
    /// Discovery sources (mDNS, tailnet); they stop (mDNS says goodbye) on shutdown.
    discovery: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("addr", &self.addr).finish()
    }
}

impl Node {
    /// Binds `config.host:config.port` and starts serving. Logs the ready line
    /// `listening on http://HOST:PORT` with the real port.
    pub async fn start(config: Config) -> Result<Node, ServerError> {
        Self::start_with_hooks(config, Hooks::default()).await
    }

    /// Like [`Node::start`], delivering room events (created, evicted, changed) to `hooks`.
    pub async fn start_with_hooks(config: Config, hooks: Hooks) -> Result<Node, ServerError> {
        Self::start_on(config, hooks, None).await
    }

    /// Like [`Node::start_with_hooks`], serving on a listener the caller already bound (its
    /// address wins over `config.host` / `config.port`): for socket activation, or to know
    /// the port before the node starts.
    pub async fn start_on(
        config: Config,
        hooks: Hooks,
        listener: Option<TcpListener>,
    ) -> Result<Node, ServerError> {
        // The port first: a port another process holds must not leave a new store and node
        // key behind.
        let listener = match listener {
            Some(l) => l,
            None => {
                let bind = format!("{}:{}", config.host, config.port);
                TcpListener::bind(&bind)
                    .await
                    .map_err(|source| ServerError::Bind { addr: bind, source })?
            }
        };
        // Certificates next, for the same reason: a bad file is refused before anything is
        // written.
        let tls = match &config.tls {
            Some(files) => Some(crate::net::tls::ServerTls::load(&files.cert, &files.key)?),
            None => None,
        };
        if let Some(ca) = &config.tls_ca {
            crate::net::tls::trust_ca_file(ca)?;
        }
        let metrics = Metrics::new();
        let store: Option<Arc<dyn Store>> = if config.memory {
            tracing::warn!(
                "running with --memory: NOTHING IS STORED; every room is lost when this node stops"
            );
            None
        } else {
            let opts = StoreOptions {
                compact_log_count: config.store.compact_log_count,
                compact_log_bytes: config.store.compact_log_bytes,
                ..StoreOptions::default()
            };
            let dir = config.data_dir.clone();
            let store = tokio::task::spawn_blocking(move || SqliteStore::open(&dir, opts))
                .await
                .map_err(|e| StoreError::Internal(format!("opening the store: {e}")))??;
            metrics.attach_store(store.counters());
            Some(Arc::new(store))
        };
        let identity = match &store {
            Some(_) => {
                let dir = config.data_dir.clone();
                tokio::task::spawn_blocking(move || NodeIdentity::load_or_create(&dir))
                    .await
                    .map_err(|e| ServerError::Identity(format!("loading the node key: {e}")))?
                    .map_err(|e| ServerError::Identity(e.to_string()))?
            }
            None => NodeIdentity::ephemeral(),
        };
        Self::start_inner(
            config,
            hooks,
            store,
            metrics,
            Arc::new(identity),
            listener,
            tls,
        )
        .await
    }

    async fn start_inner(
        config: Config,
        hooks: Hooks,
        store: Option<Arc<dyn Store>>,
        metrics: Arc<Metrics>,
        identity: Arc<NodeIdentity>,
        listener: TcpListener,
        tls: Option<crate::net::tls::ServerTls>,
    ) -> Result<Node, ServerError> {
        let addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: format!("{}:{}", config.host, config.port),
            source,
        })?;
        let registry = Arc::new(RoomRegistry::with_store(
            RoomSettings {
                idle_timeout: config.idle_timeout,
                pinned: config.pinned_rooms.clone(),
                max_rooms: config.limits.max_rooms,
                outbound_queue: config.limits.outbound_queue,
                outbound_queue_bytes: config.limits.outbound_queue_bytes,
                quotas: crate::room::Quotas {
                    room_bytes: config.store.room_quota_bytes,
                    node_bytes: config.store.node_quota_bytes,
                },
            },
            hooks,
            store,
        ));
        if let Some(store) = registry.store() {
            // Tombstones first: a pinned room that was deleted must not load old content.
            let cutoff = now_ms().saturating_sub(config.tombstone_retention.as_millis() as u64);
            match store.purge_tombstones(cutoff).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(count = n, "expired tombstones of deleted rooms purged"),
                Err(e) => tracing::warn!(error = %e, "cannot purge expired tombstones"),
            }
            for t in store.tombstones().await? {
                registry.tombstones().merge(t);
            }
        }
        for room in registry.rooms() {
            if let Err(e) = room.load().await {
                tracing::error!(room = room.name(), error = %e, "pinned room could not be loaded");
            }
        }
        let shutdown = CancellationToken::new();
        let session_ids = Arc::new(AtomicU64::new(1));
        let admission = Admission {
            secret: config.mesh_secret.clone(),
            allow: config.allow_peers.clone(),
            open: config.mesh_open,
        };
        let loopback = addr.ip().is_loopback();
        if admission.open && !loopback {
            tracing::warn!(
                "mesh_open is set and this node listens on {addr}: any ymesh node that reaches \
                 it may replicate every room without approval; prefer --mesh-secret, \
                 --allow-peer or `ymesh peer approve`"
            );
            if config.discovery.mdns_enabled(addr.ip()) {
                tracing::warn!(
                    "mDNS discovery is on with an open mesh: ymesh nodes on this network will \
                     find this node and replicate every room with it"
                );
            }
        }
        let approvals_path = (!config.memory).then(|| {
            config
                .data_dir
                .join(crate::mesh::runtime::approvals::APPROVALS_FILE)
        });
        let approvals = match &approvals_path {
            Some(path) => crate::mesh::runtime::approvals::load(path)
                .map_err(|e| ServerError::Approvals(e.to_string()))?,
            None => Default::default(),
        };
        let (inbox, inbox_rx) = crate::command::inbox();
        let mesh = Mesh::new(
            identity.clone(),
            MeshSettings {
                peers: config.peers.clone(),
                admission,
                listen: Some(format!(
                    "{}://{addr}",
                    if tls.is_some() { "https" } else { "http" }
                )),
                handshake_timeout: config.limits.mesh_handshake_timeout,
                preauth: crate::mesh::proto::preauth::PreAuthLimits {
                    total: config.limits.mesh_preauth_total,
                    per_address: config.limits.mesh_preauth_per_address,
                },
                approvals,
                approvals_path,
                write_timeout: config.limits.write_timeout,
                p2p: config.p2p.clone(),
            },
            registry.clone(),
            session_ids.clone(),
            inbox,
            shutdown.child_token(),
        );
        // Room changes reach the mesh through the room layer's Replicator interface; a Weak,
        // since the mesh holds the registry.
        let replicator: std::sync::Weak<Mesh> = Arc::downgrade(&mesh);
        registry.set_replicator(replicator);
        let commands = crate::command::CommandCenter::new(
            identity.node_id(),
            mesh.boot_id(),
            registry.clone(),
            mesh.clone(),
        );
        commands.load().await?;
        commands.run_inbox(inbox_rx, shutdown.child_token());
        commands.attach_metrics(metrics.clone());
        mesh.attach_metrics(metrics.clone());
        registry.set_counters(metrics.room_counters());
        let live = reload::Live::new(config);
        let access = &live.access;
        let config = &live.config;
        for (what, value) in [
            ("the mesh secret (--mesh-secret)", &config.mesh_secret),
            ("the client token (--token)", &config.token),
            ("the shared secret (--shared-secret)", &config.shared_secret),
            ("the admin token (--admin-token)", &config.admin_token),
        ] {
            if let Some(warning) = value
                .as_deref()
                .and_then(|v| crate::auth::weak_secret_warning(what, v))
            {
                tracing::warn!("{warning}");
            }
        }
        if access.clients.is_on() {
            tracing::info!(modes = ?access.clients.modes(), "client authentication on");
        } else if !crate::auth::origin::is_loopback_host(&config.host) {
            tracing::warn!(
                "no client authentication and this node listens on {}: anyone who reaches it \
                 may read and write every room; set --token or --shared-secret (docs/security.md)",
                config.host
            );
        }
        let responses = crate::queue::ByteBudget::new(config.limits.response_bytes);
        let discovery_config = config.clone();
        let tombstone_retention = config.tombstone_retention;
        let state = Arc::new(AppState {
            live: std::sync::RwLock::new(Arc::new(live)),
            tls,
            credentials: reload::ClientCredentials::default(),
            config_source: std::sync::Mutex::new(None),
            reloading: tokio::sync::Mutex::new(()),
            registry: registry.clone(),
            started: Instant::now(),
            next_session: session_ids,
            mesh: mesh.clone(),
            commands,
            discovery: std::sync::OnceLock::new(),
            metrics,
            shutdown,
            sessions: TaskTracker::new(),
            addresses: limits::AddressCounts::default(),
            responses,
            stored_rooms: Arc::default(),
        });
        let source: Arc<dyn crate::metrics::StatusSource> = Arc::new(crate::ui::NodeSource::new(
            &mesh,
            registry.clone(),
            state.started,
        ));
        state.metrics.attach_source(Arc::downgrade(&source));
        tokio::spawn(crate::ui::sampler_worker(
            state.metrics.clone(),
            registry.store().cloned(),
            state.stored_rooms.clone(),
            source,
            state.shutdown.clone(),
        ));
        mesh.start().map_err(|e| ServerError::Mesh(e.to_string()))?;
        let (discovery, sources) =
            start_discovery(&discovery_config, &identity, addr, &mesh, &state.shutdown);
        let _ = state.discovery.set(sources);
        let app = router(state.clone());
        let token = state.shutdown.clone();
        let server = tokio::spawn(listen::serve(listener, app, state.clone(), token));
        let sweeper = tokio::spawn(sweeper_worker(
            registry.clone(),
            tombstone_retention,
            state.shutdown.clone(),
        ));
        if let Some(store) = registry.store().cloned() {
            tokio::spawn(repair_worker(registry, store, state.shutdown.clone()));
        }
        tracing::info!(node_id = identity.node_id(), "node identity");
        tracing::info!("listening on {}://{addr}", state.scheme());
        Ok(Node {
            addr,
            state,
            server,
            sweeper,
            discovery,
        })
    }

    /// The address the node listens on (with the real port when started with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The node's rooms in memory.
    pub fn rooms(&self) -> &Arc<RoomRegistry> {
        &self.state.registry
    }

    /// Opens a room (loading it from the store, creating it if needed) so the embedding
    /// program can read or edit its document with [`Room::with_doc`]; edits reach connected
    /// clients and the store like any update ([`Room::wait_durable`] waits for the disk).
    pub async fn room(&self, name: &str) -> Result<Arc<Room>, OpenError> {
        self.state.registry.open(name).await
    }

    /// Deletes a room on this node and, through the mesh, on every peer that shares it
    /// (see [`RoomRegistry::delete`]).
    pub async fn delete_room(
        &self,
        name: &str,
    ) -> Result<crate::room::Deleted, crate::room::DeleteError> {
        delete_room(&self.state, name).await
    }

    /// This node's id (the libp2p `PeerId` of its ed25519 key).
    pub fn node_id(&self) -> &str {
        self.state.mesh.node_id()
    }

    /// The node's mesh (peer links).
    pub fn mesh(&self) -> &Arc<Mesh> {
        &self.state.mesh
    }

    /// The node's counters: client connections, refusals and the store's (the mesh keeps
    /// each peer's traffic, see [`Mesh::counters_of`]).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.state.metrics
    }

    /// The store, unless the node runs with `--memory`.
    pub fn store(&self) -> Option<&Arc<dyn Store>> {
        self.state.registry.store()
    }

    /// Sets how [`Node::reload`] re-reads the configuration (`ymesh serve` passes the config
    /// file and the flags and environment it started with).
    pub fn set_config_source(&self, source: ConfigSource) {
        *self
            .state
            .config_source
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(source);
    }

    /// Re-reads the configuration and applies what can change while running (SIGHUP and
    /// `POST /reload` do this): tokens, secrets, origins, hosts, proxies, peers, limits and
    /// certificates. Settings that need a restart are reported, not applied; a config that
    /// does not load is refused and the running one stays.
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        reload::reload(&self.state).await
    }

    /// Applies `config` as a reload would (for a node embedded in a program that resolves
    /// its own configuration).
    pub fn reload_with(&self, config: Config) -> Result<ReloadReport, ReloadError> {
        reload::apply(&self.state, config)
    }

    /// Stops accepting, closes every WebSocket with 1001 and waits up to a few seconds for
    /// the sessions to finish.
    pub async fn shutdown(self) {
        tracing::info!("shutting down");
        self.state.shutdown.cancel();
        self.state.credentials.close_all();
        // mDNS sends its goodbye first, so peers drop this node right away.
        for task in self.discovery {
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, task).await;
        }
        self.state.sessions.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.state.sessions.wait())
            .await
            .is_err()
        {
            tracing::warn!("some sessions did not close in time");
        }
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, self.server).await;
        self.state.mesh.stop().await;
        self.state.commands.stop(SHUTDOWN_GRACE).await;
        self.sweeper.abort();
        if let Some(store) = self.state.registry.store() {
            if let Err(e) = store.close().await {
                tracing::error!(error = %e, "store did not close cleanly");
            }
        }
        tracing::info!("stopped");
    }
}

/// First retry delay after a room's write failed; doubles per attempt up to the cap.
const REPAIR_FIRST: Duration = Duration::from_millis(250);
const REPAIR_CAP: Duration = Duration::from_secs(30);

/// Failure isolation: a room whose commit failed (disk full, I/O error) keeps syncing in
/// memory; this worker rewrites its full state with backoff until a write succeeds, which
/// heals the room and releases its withheld 102 echoes. Other rooms are unaffected.
async fn repair_worker(
    registry: Arc<RoomRegistry>,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
) {
    let mut health = store.health();
    let mut schedule: std::collections::HashMap<String, (Instant, Duration)> =
        std::collections::HashMap::new();
    loop {
        let failures = store.failures();
        schedule.retain(|room, _| failures.iter().any(|(r, _)| r == room));
        let now = Instant::now();
        for (room, failure) in &failures {
            let (due, delay) = *schedule
                .entry(room.clone())
                .or_insert((now + REPAIR_FIRST, REPAIR_FIRST));
            if due > now {
                continue;
            }
            match registry.get(room) {
                Some(r) => match r.repair() {
                    Ok(_) => tracing::info!(
                        room,
                        error = failure.error,
                        failed_commits = failure.failed_commits,
                        "rewriting room after failed commit"
                    ),
                    Err(e) => tracing::warn!(room, error = %e, "cannot queue room repair"),
                },
                None => tracing::warn!(room, "unsaved room is no longer in memory"),
            }
            let next = (delay * 2).min(REPAIR_CAP);
            schedule.insert(room.clone(), (now + delay, next));
        }
        let wake = schedule
            .values()
            .map(|(due, _)| *due)
            .min()
            .unwrap_or(now + Duration::from_secs(3600));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = health.changed() => if r.is_err() { return },
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    }
}

/// Evicts idle rooms. Runs often enough that a room goes within about a quarter of the idle
/// timeout after it expires (at most every 5 s, at least every 50 ms).
/// Starts the discovery sources the config asks for and feeds them to the mesh. A source
/// that cannot start is reported and left off; the node runs without it.
fn start_discovery(
    config: &Config,
    identity: &NodeIdentity,
    addr: SocketAddr,
    mesh: &Arc<Mesh>,
    shutdown: &CancellationToken,
) -> (Vec<tokio::task::JoinHandle<()>>, Vec<&'static str>) {
    use crate::mesh::discovery::{spawn_mdns, spawn_tailnet, MdnsConfig};
    let mut sources = Vec::new();
    let d = &config.discovery;
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    let mut tasks = Vec::new();
    if d.mdns_enabled(addr.ip()) {
        let mut m = MdnsConfig::new(identity.node_id(), addr.port());
        m.tls = config.tls.is_some();
        m.service_type = d.mdns_service.clone();
        m.interfaces = d.mdns_interfaces.clone();
        m.exclude_interfaces = d.mdns_exclude_interfaces.clone();
        // A node bound to one address announces that one; bound to all, every interface's.
        m.announce_addr = d
            .mdns_announce_addr
            .or_else(|| (!addr.ip().is_unspecified()).then_some(addr.ip()));
        match spawn_mdns(m, tx.clone(), shutdown.child_token()) {
            Ok(handle) => {
                tracing::info!(service = d.mdns_service, "mDNS discovery on");
                tasks.push(tokio::spawn(handle.join()));
                sources.push("mdns");
            }
            Err(e) => tracing::error!(error = %e, "mDNS discovery could not start; it is off"),
        }
    } else {
        tracing::debug!("mDNS discovery off");
    }
    if let Some(t) = &d.tailnet {
        match spawn_tailnet(t.clone(), tx.clone(), shutdown.child_token()) {
            Ok(handle) => {
                tracing::info!(socket = %t.socket.display(), "tailnet discovery on");
                tasks.push(tokio::spawn(handle.join()));
                sources.push("tailnet");
            }
            Err(e) => tracing::error!(error = %e, "tailnet discovery could not start; it is off"),
        }
    }
    drop(tx);
    if !tasks.is_empty() {
        mesh.run_discovery(rx);
    }
    (tasks, sources)
}

/// How often expired tombstones are purged.
const TOMBSTONE_PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Unix time in milliseconds.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Deletes `name` here as the origin of the deletion; the registry's replicator (the mesh)
/// sends the tombstone to the peers.
pub(crate) async fn delete_room(
    state: &AppState,
    name: &str,
) -> Result<crate::room::Deleted, crate::room::DeleteError> {
    let tombstone = crate::store::Tombstone {
        room: name.to_string(),
        deleted_ms: now_ms(),
        state_vector: vec![0],
        origin: state.mesh.node_id().to_string(),
    };
    state.registry.delete(tombstone, false).await
}

async fn sweeper_worker(
    registry: Arc<RoomRegistry>,
    tombstone_retention: Duration,
    shutdown: CancellationToken,
) {
    let every = (registry.settings().idle_timeout / 4)
        .clamp(Duration::from_millis(50), Duration::from_secs(5));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut purge = tokio::time::interval(TOMBSTONE_PURGE_EVERY);
    purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = purge.tick() => {
                let cutoff = now_ms().saturating_sub(tombstone_retention.as_millis() as u64);
                let purged = registry.tombstones().purge(cutoff);
                if let Some(store) = registry.store() {
                    if let Err(e) = store.purge_tombstones(cutoff).await {
                        tracing::warn!(error = %e, "cannot purge expired tombstones");
                    }
                }
                if purged > 0 {
                    tracing::info!(count = purged, "expired tombstones of deleted rooms purged");
                }
            }
            _ = tick.tick() => {
                for name in registry.sweep(Instant::now()) {
                    tracing::info!(room = &*name, "room evicted after idle timeout");
                    if let Some(store) = registry.store().cloned() {
                        tokio::spawn(async move {
                            match store.compact(&name).await {
                                Ok((before, after)) => tracing::debug!(
                                    room = &*name, before, after, "evicted room compacted"
                                ),
                                Err(e) => tracing::warn!(
                                    room = &*name, error = %e, "compaction after eviction failed"
                                ),
                            }
                        });
                    }
                }
            }
        }
    }
}
