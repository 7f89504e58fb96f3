//! The node's network shell: the axum router (HTTP API and WebSocket upgrades), the session
//! loops, the idle-room sweeper and orderly shutdown.
//!
//! [`Node::start`] binds the listener and returns a [`Node`] handle; [`Node::shutdown`] stops
//! accepting, closes every WebSocket with 1001 and waits (bounded) for sessions to finish.
//! All protocol and room logic lives in `protocol` and `room`; this module only moves bytes.

mod http;
mod ws;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::room::{Hooks, OpenError, Room, RoomRegistry, RoomSettings};
use crate::store::{SqliteStore, Store, StoreError, StoreOptions};

/// WebSocket close code: the node is shutting down.
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// WebSocket close code: a message exceeded the size limit.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// WebSocket close code: the room could not be opened.
pub const CLOSE_ROOM_UNAVAILABLE: u16 = 1011;
/// WebSocket close code: the node is at capacity (connections or rooms).
pub const CLOSE_AT_CAPACITY: u16 = 1013;
/// WebSocket close code: malformed message.
pub const CLOSE_MALFORMED: u16 = 4400;
/// WebSocket close code: liveness timeout.
pub const CLOSE_TIMEOUT: u16 = 4408;

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
    /// The store could not be opened (locked by another node, corrupt, too new, ...).
    #[error("cannot open the store: {0}")]
    Store(StoreError),
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
    pub(crate) config: Config,
    pub(crate) registry: Arc<RoomRegistry>,
    pub(crate) started: Instant,
    pub(crate) next_session: AtomicU64,
    pub(crate) connections: AtomicUsize,
    pub(crate) shutdown: CancellationToken,
    pub(crate) sessions: TaskTracker,
}

/// A running node. Dropping it does not stop the node; call [`Node::shutdown`].
pub struct Node {
    addr: SocketAddr,
    state: Arc<AppState>,
    server: tokio::task::JoinHandle<()>,
    sweeper: tokio::task::JoinHandle<()>,
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
            tracing::info!(path = %store.db_path().display(), "store opened");
            Some(Arc::new(store))
        };
        Self::start_inner(config, hooks, store).await
    }

    async fn start_inner(
        config: Config,
        hooks: Hooks,
        store: Option<Arc<dyn Store>>,
    ) -> Result<Node, ServerError> {
        let bind = format!("{}:{}", config.host, config.port);
        let listener = TcpListener::bind(&bind)
            .await
            .map_err(|source| ServerError::Bind {
                addr: bind.clone(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: bind.clone(),
            source,
        })?;
        let registry = Arc::new(RoomRegistry::with_store(
            RoomSettings {
                idle_timeout: config.idle_timeout,
                pinned: config.pinned_rooms.clone(),
                max_rooms: config.limits.max_rooms,
                outbound_queue: config.limits.outbound_queue,
            },
            hooks,
            store,
        ));
        for room in registry.rooms() {
            if let Err(e) = room.load().await {
                tracing::error!(room = room.name(), error = %e, "pinned room could not be loaded");
            }
        }
        let state = Arc::new(AppState {
            config,
            registry: registry.clone(),
            started: Instant::now(),
            next_session: AtomicU64::new(1),
            connections: AtomicUsize::new(0),
            shutdown: CancellationToken::new(),
            sessions: TaskTracker::new(),
        });
        let app = router(state.clone());
        let token = state.shutdown.clone();
        let server = tokio::spawn(async move {
            let serve = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move { token.cancelled().await });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "listener failed");
            }
        });
        let sweeper = tokio::spawn(sweeper_worker(registry.clone(), state.shutdown.clone()));
        if let Some(store) = registry.store().cloned() {
            tokio::spawn(repair_worker(registry, store, state.shutdown.clone()));
        }
        tracing::info!("listening on http://{addr}");
        Ok(Node {
            addr,
            state,
            server,
            sweeper,
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

    /// The store, unless the node runs with `--memory`.
    pub fn store(&self) -> Option<&Arc<dyn Store>> {
        self.state.registry.store()
    }

    /// Stops accepting, closes every WebSocket with 1001 and waits up to a few seconds for
    /// the sessions to finish.
    pub async fn shutdown(self) {
        tracing::info!("shutting down");
        self.state.shutdown.cancel();
        self.state.sessions.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.state.sessions.wait())
            .await
            .is_err()
        {
            tracing::warn!("some sessions did not close in time");
        }
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, self.server).await;
        self.sweeper.abort();
        if let Some(store) = self.state.registry.store() {
            if let Err(e) = store.close().await {
                tracing::error!(error = %e, "store did not close cleanly");
            }
        }
        tracing::info!("stopped");
    }
}

/// The document API's path; it also takes WebSocket upgrades when it is a route template.
const DOCUMENT_ROUTE: &str = "/rooms/{room}";

fn router(state: Arc<AppState>) -> Router {
    let limit = state.config.limits.max_message_bytes;
    let mut router = Router::new()
        .route("/", get(http::root))
        .route("/healthz", get(http::healthz))
        .route("/rooms", get(http::list_rooms));
    let ws_on_documents = state.config.routes.iter().any(|r| r == DOCUMENT_ROUTE);
    router = router.route(
        DOCUMENT_ROUTE,
        if ws_on_documents {
            get(ws::room_route)
        } else {
            get(http::get_room)
        }
        .post(http::post_room)
        .layer(axum::extract::DefaultBodyLimit::max(limit)),
    );
    for template in &state.config.routes {
        if template != DOCUMENT_ROUTE {
            router = router.route(template, get(ws::sync_route));
        }
    }
    router.fallback(http::not_found).with_state(state)
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
async fn sweeper_worker(registry: Arc<RoomRegistry>, shutdown: CancellationToken) {
    let every = (registry.settings().idle_timeout / 4)
        .clamp(Duration::from_millis(50), Duration::from_secs(5));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
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
