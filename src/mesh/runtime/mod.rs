//! The mesh's I/O shells around [`crate::mesh::proto`]: they carry out what the core decides
//! and report what happened, and decide nothing themselves.
//!
//! | module | owns |
//! |---|---|
//! | this one | [`Mesh`]: the core behind one short std lock, the action executor, timers, the public API (`GET /peers`, fan-out entry points, the command port) |
//! | `supervisor` | probing and dialing peers when the core says so |
//! | `link` | one link from handshake to close: whole frames over a [`LinkIo`](crate::mesh::transport::LinkIo), control messages to the core, room messages to the bridge, liveness pings |
//! | `room_port` | the room layer's [`Replicator`](crate::room::Replicator) port: room changes, presence and deletions enter the bridge here |
//! | `bridge` | rooms and links: applying room messages from peers, answering SyncStep1s, fan-out of room changes with split horizon, tombstones, plain y-websocket rooms |
//! | `traffic` | the kind of a frame, for the per-peer traffic counters in [`crate::metrics`] |
//! | `counted` | the links' refusals and limit hits (pre-authentication give-way, handshake deadline and refusals, full link queues), counted in the node's [`crate::metrics`] |
//!
//! # Concurrency
//!
//! The core is a plain struct behind a `std::sync::Mutex`: every event takes the lock, gets
//! its actions and releases it before anything is awaited; the actions then run outside the
//! lock. A link's own sends run on its task with backpressure (`send().await`); sends to
//! other links (a forwarded command, a room change) use `try_send`, and a full queue closes
//! that link (it resyncs when it comes back). Timers are tokio sleeps that feed
//! [`proto::Timer`](crate::mesh::proto::Timer) events back; no loop polls for state.
//!
//! # Strangers
//!
//! An inbound socket is in the pre-authentication budget
//! ([`PreAuthBudget`](crate::mesh::proto::preauth::PreAuthBudget), behind its own short std
//! lock) from [`Mesh::accept`] until its handshake ends; a [`PreAuthTicket`] held by its link
//! task releases it. When a new socket makes the budget overflow, the socket that gives way
//! is kicked (4408) and its link task closes it. Every handshake, inbound or dialed, has
//! [`MeshSettings::handshake_timeout`] to finish (4408 after).

pub mod approvals;
mod bridge;
mod counted;
mod link;
mod room_port;
mod supervisor;
mod traffic;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::discovery::DiscoveryEvent;
use super::identity::{new_boot_id, NodeIdentity};
use super::proto::approval::{Admission, Approvals};
use super::proto::manifest::SharePolicy;
use super::proto::preauth::{address_key, PreAuthBudget, PreAuthLimits};
use super::proto::{Action, CoreConfig, Event, LinkId, MeshCore, PeerConfig, PeerKey, Road};
use super::wire::{self, Control};
use crate::command::{self, Command, CommandResult, Inbound, MeshLinks, RoomScope};
use crate::metrics::{Limit, LimitCounter, LinkTraffic, Metrics, TrafficKind};
use crate::room::{CloseReason, Kick, RoomRegistry, SessionId};
use crate::store::Tombstone;

/// Application-level ping interval on a link.
pub(crate) const PING_EVERY: Duration = Duration::from_secs(15);
/// A link that received nothing for this long is considered dead.
pub(crate) const LINK_TIMEOUT: Duration = Duration::from_secs(45);

/// Our rooms when the link opened: name → (digest, canonical state vector).
pub(crate) type Ours = std::collections::BTreeMap<String, (String, Vec<u8>)>;

/// Settings of the mesh.
#[derive(Debug, Clone)]
pub struct MeshSettings {
    /// Peers to dial at start ([`Mesh::reconfigure`] changes them later).
    pub peers: Vec<PeerConfig>,
    /// Who may link, at start ([`Mesh::reconfigure`] changes it later).
    pub admission: Admission,
    /// This node's own HTTP URL, announced in the hello.
    pub listen: Option<String>,
    /// How long a link's handshake may take, inbound or dialed; then it is closed with 4408
    /// (`limits.mesh_handshake_timeout_s`).
    pub handshake_timeout: Duration,
    /// The budget of inbound sockets in their handshake (`limits.mesh_preauth_total`,
    /// `limits.mesh_preauth_per_address`).
    pub preauth: PreAuthLimits,
    /// Approvals and denials as loaded at start.
    pub approvals: Approvals,
    /// How long a write to a link may stay blocked (the peer does not read) before the link
    /// ends (`limits.write_timeout_s`); the peer redials and resyncs.
    pub write_timeout: Duration,
    /// Where approvals persist (`DATA_DIR/approvals.json`); `None` keeps them in memory
    /// (`--memory`).
    pub approvals_path: Option<std::path::PathBuf>,
    /// The libp2p transport: where it listens, the relays it reserves on, whether it is a
    /// relay (docs/p2p.md). With none of them and no multiaddr peer, no swarm runs.
    pub p2p: super::transport::P2pSettings,
}

/// Why the mesh could not start.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// The libp2p transport could not start (or is not in this build).
    #[error("p2p transport: {0}")]
    P2p(String),
}

/// Why a socket in its handshake was closed to make room for a newer one.
const GAVE_WAY: &str =
    "mesh handshake not finished: gave way to a newer connection (pre-authentication limit)";

/// The inbound sockets still in their handshake: the budget, and how to close each one.
struct PreAuth {
    budget: PreAuthBudget<LinkId, IpAddr>,
    kicks: HashMap<LinkId, Arc<Kick>>,
}

/// An inbound socket's place in the pre-authentication budget, held by its link task until
/// the handshake ends (or the task does): dropping it releases the place.
pub(crate) struct PreAuthTicket {
    mesh: Arc<Mesh>,
    link: LinkId,
    /// Raised when the socket must give way to a newer one.
    pub(crate) kick: Arc<Kick>,
}

impl PreAuthTicket {
    /// The socket sent its first handshake message.
    pub(crate) fn heard(&self) {
        lock(&self.mesh.preauth).budget.heard(&self.link);
    }
}

impl Drop for PreAuthTicket {
    fn drop(&mut self) {
        let mut p = lock(&self.mesh.preauth);
        p.budget.release(&self.link);
        p.kicks.remove(&self.link);
    }
}

/// What the core holds for each live link: where to queue frames, how to close it, and its
/// peer's traffic counters.
#[derive(Debug, Clone)]
pub struct LinkHandle {
    tx: crate::queue::Sender,
    kick: Arc<Kick>,
    counters: Arc<LinkTraffic>,
    /// Counts the link closed because its queue was full.
    queue_full: LimitCounter,
}

impl LinkHandle {
    /// Queues `frame` without waiting and counts it; a full queue closes the link (it
    /// resyncs when it comes back). False when the frame was not queued.
    pub(crate) fn offer(&self, frame: Bytes, kind: TrafficKind) -> bool {
        let len = frame.len();
        match self.tx.try_send(frame) {
            Ok(()) => {
                self.counters.sent().add(kind, len);
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!("link queue full; closing the link to resync");
                self.queue_full.hit();
                self.kick.kick(4429, "link queue full");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// The running mesh of one node.
pub struct Mesh {
    /// Itself, for tasks started from `&self` (the command port).
    me: std::sync::Weak<Mesh>,
    identity: Arc<NodeIdentity>,
    boot_id: String,
    settings: MeshSettings,
    registry: Arc<RoomRegistry>,
    session_ids: Arc<AtomicU64>,
    core: Mutex<MeshCore<LinkHandle>>,
    /// Inbound sockets in their handshake (never held together with `core`).
    preauth: Mutex<PreAuth>,
    /// The origin of the budget's clock (monotonic).
    epoch: Instant,
    /// Traffic per peer row, kept across reconnects.
    traffic: Mutex<HashMap<PeerKey, Arc<LinkTraffic>>>,
    /// Where commands and results that arrive over links go (the command center).
    inbox: command::Inbox,
    /// Link tasks waiting for the core's verdict on their peer.
    verdicts: Mutex<HashMap<LinkId, mpsc::Sender<super::proto::approval::Verdict>>>,
    /// Held while an approval is written and applied.
    approvals_file: Mutex<()>,
    /// The libp2p transport, once started ([`Mesh::start`]).
    #[cfg(feature = "p2p")]
    p2p: std::sync::OnceLock<super::transport::p2p::P2p>,
    /// The mesh secret in force (settings' at start; [`Mesh::reconfigure`] replaces it).
    secret: Mutex<Option<String>>,
    /// The node's metrics, once attached: refusals and limit hits of links.
    metrics: std::sync::OnceLock<Arc<Metrics>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("node_id", &self.identity.node_id())
            .finish_non_exhaustive()
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A share policy is the scope of a command that came over a link.
impl RoomScope for SharePolicy {
    fn allows(&self, room: &str) -> bool {
        SharePolicy::allows(self, room)
    }
}

impl Mesh {
    /// Creates the mesh; call [`Mesh::start`] to dial the configured peers. Commands and
    /// results arriving over links go to `inbox`.
    pub fn new(
        identity: Arc<NodeIdentity>,
        settings: MeshSettings,
        registry: Arc<RoomRegistry>,
        session_ids: Arc<AtomicU64>,
        inbox: command::Inbox,
        shutdown: CancellationToken,
    ) -> Arc<Mesh> {
        let mut cfg = CoreConfig::new(
            identity.node_id(),
            settings.peers.clone(),
            rand::random::<u64>(),
        );
        cfg.admission = settings.admission.policy();
        cfg.approvals = settings.approvals.clone();
        let preauth = PreAuth {
            budget: PreAuthBudget::new(settings.preauth),
            kicks: HashMap::new(),
        };
        let secret = settings.admission.secret.clone();
        Arc::new_cyclic(|me| Mesh {
            me: me.clone(),
            core: Mutex::new(MeshCore::new(cfg, now_ms())),
            preauth: Mutex::new(preauth),
            epoch: Instant::now(),
            identity,
            boot_id: new_boot_id(),
            settings,
            registry,
            session_ids,
            traffic: Mutex::new(HashMap::new()),
            inbox,
            verdicts: Mutex::new(HashMap::new()),
            approvals_file: Mutex::new(()),
            #[cfg(feature = "p2p")]
            p2p: std::sync::OnceLock::new(),
            secret: Mutex::new(secret),
            metrics: std::sync::OnceLock::new(),
            shutdown,
            tasks: TaskTracker::new(),
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        self.identity.node_id()
    }

    /// This run's boot id (new at every start).
    pub fn boot_id(&self) -> &str {
        &self.boot_id
    }

    /// Starts the libp2p transport when it is configured (or a peer is a multiaddr), dials
    /// the configured peers, and tells the core which rooms this node holds (so each peer's
    /// row lists them before any link carried them).
    pub fn start(self: &Arc<Self>) -> Result<(), MeshError> {
        self.start_p2p()?;
        self.run(Event::Start);
        let me = self.clone();
        self.spawn(async move {
            let mut rooms: Vec<String> = match me.registry.store() {
                Some(store) => match store.list().await {
                    Ok(list) => list.into_iter().map(|m| m.name).collect(),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot list stored rooms for peer status");
                        Vec::new()
                    }
                },
                None => Vec::new(),
            };
            rooms.extend(
                me.registry
                    .rooms()
                    .into_iter()
                    .filter(|r| r.has_content())
                    .map(|r| r.name().to_string()),
            );
            me.run(Event::LocalRooms { rooms });
        });
        Ok(())
    }

    /// Starts the swarm task and takes the mesh streams peers open.
    #[cfg(feature = "p2p")]
    fn start_p2p(self: &Arc<Self>) -> Result<(), MeshError> {
        let multiaddr_peer = self
            .settings
            .peers
            .iter()
            .any(|p| super::proto::url::is_multiaddr(&p.url));
        if !self.settings.p2p.is_on() && !multiaddr_peer {
            return Ok(());
        }
        let gate = Arc::new(counted::RelayAdmission(self.me.clone()));
        let (p2p, mut inbound) = super::transport::p2p::P2p::start(
            &self.identity,
            &self.settings.p2p,
            self.settings.write_timeout,
            gate,
            self.shutdown.clone(),
        )
        .map_err(|e| MeshError::P2p(e.to_string()))?;
        let _ = self.p2p.set(p2p);
        let me = self.clone();
        self.tasks.spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = me.shutdown.cancelled() => return,
                    s = inbound.recv() => s,
                };
                let Some(s) = stream else { return };
                let road = Road {
                    transport: super::proto::Transport::P2p,
                    relayed: s.relayed,
                };
                me.accept_link(s.io, s.ip, s.remote, road);
            }
        });
        Ok(())
    }

    /// A build without the `p2p` feature: the config layer refused every p2p setting.
    #[cfg(not(feature = "p2p"))]
    fn start_p2p(self: &Arc<Self>) -> Result<(), MeshError> {
        if self.settings.p2p.is_on() {
            return Err(MeshError::P2p(super::proto::url::P2P_MISSING.into()));
        }
        Ok(())
    }

    /// The libp2p transport, if it runs.
    #[cfg(feature = "p2p")]
    pub(crate) fn p2p(&self) -> Option<&super::transport::p2p::P2p> {
        self.p2p.get()
    }

    /// The libp2p addresses peers reach this node at (`…/p2p/<node id>`, circuit addresses
    /// once a relay reserved a slot); empty without the libp2p transport.
    pub fn p2p_addresses(&self) -> Vec<String> {
        #[cfg(feature = "p2p")]
        if let Some(p) = self.p2p.get() {
            return p.addresses();
        }
        Vec::new()
    }

    /// Consumes discovery events: a peer found enters the peer table and is dialed like a
    /// configured one; a peer lost is dropped once no link to it remains. Runs until the
    /// node stops.
    pub fn run_discovery(self: &Arc<Self>, mut rx: mpsc::Receiver<DiscoveryEvent>) {
        let me = self.clone();
        self.tasks.spawn(async move {
            loop {
                let event = tokio::select! {
                    _ = me.shutdown.cancelled() => return,
                    e = rx.recv() => e,
                };
                match event {
                    Some(DiscoveryEvent::Found(d)) => match d.node_id {
                        Some(node_id) => me.run(Event::Discovered {
                            node_id,
                            url: d.url,
                            source: d.source,
                        }),
                        None => {
                            tracing::debug!(url = d.url, "discovered a node without a node id")
                        }
                    },
                    Some(DiscoveryEvent::Lost {
                        node_id: Some(node_id),
                        source,
                        ..
                    }) => me.run(Event::Lost { node_id, source }),
                    Some(DiscoveryEvent::Lost { .. }) => {}
                    None => return,
                }
            }
        });
    }

    /// Stops every link and supervisor and waits (bounded) for them.
    pub async fn stop(&self) {
        self.shutdown.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tasks.wait()).await;
    }

    /// Feeds one event to the core; returns its actions (for the caller to carry out).
    pub(crate) fn decide(&self, event: Event<LinkHandle>) -> Vec<Action<LinkHandle>> {
        lock(&self.core).handle(event, now_ms())
    }

    /// Feeds one event to the core and carries out its actions.
    pub(crate) fn run(self: &Arc<Self>, event: Event<LinkHandle>) {
        let actions = self.decide(event);
        self.execute(actions);
    }

    /// Carries out actions that are not a link's own sends (those run on the link's task).
    pub(crate) fn execute(self: &Arc<Self>, actions: Vec<Action<LinkHandle>>) {
        for action in actions {
            match action {
                Action::Probe { peer, attempt, url } => {
                    self.spawn(supervisor::probe(self.clone(), peer, attempt, url))
                }
                Action::DialMesh {
                    peer,
                    attempt,
                    url,
                    transport,
                    expect,
                } => self.spawn(supervisor::dial(
                    self.clone(),
                    peer,
                    attempt,
                    url,
                    transport,
                    expect,
                )),
                Action::DialPlain {
                    peer,
                    attempt,
                    index,
                } => {
                    let config = lock(&self.core)
                        .configured()
                        .get(index)
                        .cloned()
                        .unwrap_or_default();
                    self.spawn(bridge::run_plain(self.clone(), peer, attempt, config))
                }
                Action::Close { handle, reason } => handle.kick.kick(1000, &reason),
                Action::Verdict { link, verdict } => self.deliver_verdict(link, verdict),
                Action::Send { link, control } => {
                    if let Some(h) = self.handle_of(link) {
                        h.offer(wire::encode_control(&control), TrafficKind::Control);
                    }
                }
                Action::ForwardCommand { links, command } => {
                    let me = self.clone();
                    self.spawn(async move { me.forward_command(links, command).await });
                }
                Action::DeliverCommand {
                    link,
                    peer,
                    policy,
                    command,
                    state_vector,
                } => self.deliver(Inbound::Command {
                    link,
                    peer,
                    scope: Arc::new(policy),
                    command,
                    state_vector: state_vector.as_deref().and_then(super::hex::decode),
                }),
                Action::DeliverResult { link, result } => {
                    self.deliver(Inbound::Result { link, result })
                }
                Action::PersistMarker { node, marker } => {
                    if let Some(store) = self.registry.store().cloned() {
                        self.spawn(async move {
                            if let Err(e) = store.set_peer_marker(&node, marker).await {
                                tracing::warn!(peer = node, error = %e, "cannot record the peer's change marker");
                            }
                        });
                    }
                }
                Action::SetTimer { after_ms, timer } => {
                    let me = self.clone();
                    self.spawn(async move {
                        tokio::time::sleep(Duration::from_millis(after_ms)).await;
                        me.run(Event::Timer(timer));
                    });
                }
                // Only a link's own task gets these, for itself.
                Action::Admit { .. } | Action::Reject { .. } | Action::SendStep1 { .. } => {
                    tracing::debug!("link action outside its link ignored");
                }
            }
        }
    }

    /// Spawns a task that stops with the node.
    pub(crate) fn spawn(&self, f: impl std::future::Future<Output = ()> + Send + 'static) {
        let stop = self.shutdown.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = f => {}
            }
        });
    }

    fn deliver(&self, inbound: Inbound) {
        if let Err(e) = self.inbox.try_send(inbound) {
            tracing::warn!(error = %e, "command inbox full or closed; dropped");
        }
    }

    /// The handle of ymesh link `link` if it is up.
    fn handle_of(&self, link: LinkId) -> Option<LinkHandle> {
        lock(&self.core).mesh_link(link, None).cloned()
    }

    /// A new link id (the same space as client sessions: a link is an update's origin).
    pub(crate) fn next_id(&self) -> LinkId {
        self.session_ids.fetch_add(1, Ordering::Relaxed)
    }

    /// The client token configured for peer row `key` (`[[peers]] token`), sent when it is
    /// probed and dialed.
    pub(crate) fn token_for(&self, key: PeerKey) -> Option<String> {
        match key {
            PeerKey::Configured(i) => lock(&self.core)
                .configured()
                .get(i)
                .and_then(|p| p.token.clone()),
            _ => None,
        }
    }

    /// The traffic counters of peer row `key`.
    pub(crate) fn traffic_for(&self, key: PeerKey) -> Arc<LinkTraffic> {
        lock(&self.traffic).entry(key).or_default().clone()
    }

    pub(crate) fn registry(&self) -> &Arc<RoomRegistry> {
        &self.registry
    }

    pub(crate) fn identity(&self) -> &Arc<NodeIdentity> {
        &self.identity
    }

    pub(crate) fn settings(&self) -> &MeshSettings {
        &self.settings
    }

    /// The mesh secret in force.
    pub(crate) fn secret(&self) -> Option<String> {
        lock(&self.secret).clone()
    }

    /// Applies a reloaded configuration: the configured peers and the admission rules
    /// (see the core's `reconfig.rs`: unchanged peers keep their links, removed ones are
    /// closed, new ones dialed; links that are no longer admitted are closed, pending ones
    /// that now are, welcomed).
    pub fn reconfigure(self: &Arc<Self>, peers: Vec<PeerConfig>, admission: Admission) {
        let secret_changed = {
            let mut secret = lock(&self.secret);
            let changed = *secret != admission.secret;
            *secret = admission.secret.clone();
            changed
        };
        self.run(Event::Reconfigure {
            peers,
            admission: admission.policy(),
            secret_changed,
        });
    }

    pub(crate) fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Sends `command` one hop further on each link (with this node's state vector of its
    /// room for `invalidate`).
    async fn forward_command(&self, links: Vec<LinkId>, command: Command) {
        let state_vector = match (&command.kind, &command.room) {
            (command::CommandKind::Invalidate, Some(room)) => Some(super::hex::encode(
                &bridge::current_state_vector(&self.registry, room).await,
            )),
            _ => None,
        };
        let control = Control::Command {
            command: command.next_hop(),
            state_vector,
        };
        let frame = wire::encode_control(&control);
        for link in links {
            let handle = lock(&self.core)
                .mesh_link(link, command.room.as_deref())
                .cloned();
            match handle {
                Some(h) => {
                    h.offer(frame.clone(), TrafficKind::Control);
                }
                None => tracing::debug!(link, "command not forwarded: link gone"),
            }
        }
    }

    /// Takes an inbound link (a peer dialed `/_mesh` from `remote`). It enters the
    /// pre-authentication budget; a socket that must give way to it is closed with 4408.
    pub fn accept(self: &Arc<Self>, io: super::transport::LinkIo, remote: SocketAddr) {
        self.accept_link(io, remote.ip(), remote.to_string(), Road::default());
    }

    /// Takes an inbound link of any transport from `ip` (`remote` for display), travelling
    /// `road`.
    fn accept_link(
        self: &Arc<Self>,
        io: super::transport::LinkIo,
        ip: IpAddr,
        remote: String,
        road: Road,
    ) {
        let link = self.next_id();
        let kick = Arc::new(Kick::default());
        let gone = {
            let mut p = lock(&self.preauth);
            let now = self.epoch.elapsed().as_millis() as u64;
            let victim = p.budget.admit(link, address_key(ip), now);
            p.kicks.insert(link, kick.clone());
            victim.and_then(|v| p.kicks.remove(&v))
        };
        if let Some(victim) = gone {
            self.limit_hit(Limit::MeshPreauth);
            victim.close(CloseReason::TimedOut(GAVE_WAY.into()));
        }
        let ticket = PreAuthTicket {
            mesh: self.clone(),
            link,
            kick,
        };
        self.run(Event::InboundOpened { link, remote });
        let me = self.clone();
        self.spawn(link::run(
            me,
            io,
            PeerKey::Inbound(link),
            link,
            Some(ticket),
            road,
        ));
    }

    /// Inbound sockets still in their handshake (in the pre-authentication budget).
    pub fn pending_inbound(&self) -> usize {
        lock(&self.preauth).budget.len()
    }

    /// The hook side of fan-out: queues `update` of `room` (a change the room applied) to
    /// every link but `origin`'s, encoded once.
    pub fn forward_update(&self, room: &str, update: &Bytes, origin: Option<SessionId>) {
        bridge::forward(self, room, origin, TrafficKind::Sync, || {
            crate::protocol::encode_sync_update(update)
        });
    }

    /// Like [`Mesh::forward_update`] for an awareness update (a client's presence or its
    /// removal), so clients on every node see each other.
    pub fn forward_awareness(&self, room: &str, update: &Bytes, origin: Option<SessionId>) {
        bridge::forward(self, room, origin, TrafficKind::Awareness, || {
            crate::protocol::encode_awareness(update)
        });
    }

    /// Sends a tombstone to every ymesh link whose policy shares the room, except
    /// `except`. A peer that already holds a covering tombstone ignores it, so a deletion
    /// crosses each link at most a bounded number of times even in a cyclic mesh.
    pub fn forward_tombstone(&self, tombstone: &Tombstone, except: Option<SessionId>) {
        let frame = wire::encode_control(&Control::Tombstones {
            rooms: vec![bridge::tombstone_entry(tombstone)],
        });
        let mut core = lock(&self.core);
        // A deleted room is no room of this node's any more: peers' rows stop listing it.
        core.forget_room(&tombstone.room);
        for (link, _) in core.links_for(Some(&tombstone.room), except) {
            if let Some(h) = core.mesh_link(link, None) {
                h.offer(frame.clone(), TrafficKind::Control);
            }
        }
    }

    /// `GET /peers`: every configured and discovered peer and every inbound link.
    pub fn peers_json(&self) -> serde_json::Value {
        let rows = lock(&self.core).rows();
        let mut traffic = lock(&self.traffic);
        traffic.retain(|k, _| rows.iter().any(|(r, _)| r == k));
        serde_json::Value::Array(
            rows.into_iter()
                .map(|(key, row)| {
                    let mut v = serde_json::to_value(&row).unwrap_or_default();
                    let counters = traffic.entry(key).or_default().snapshot();
                    if let Some(obj) = v.as_object_mut() {
                        obj.insert("sent".into(), serde_json::json!(counters.sent));
                        obj.insert("received".into(), serde_json::json!(counters.received));
                    }
                    v
                })
                .collect(),
        )
    }

    /// The rows of `GET /peers`, typed, each with its peer's traffic counters (for the
    /// metrics and the status page).
    pub fn peer_rows(&self) -> Vec<(super::proto::PeerRow, Arc<LinkTraffic>)> {
        let rows = lock(&self.core).rows();
        let mut traffic = lock(&self.traffic);
        rows.into_iter()
            .map(|(key, row)| (row, traffic.entry(key).or_default().clone()))
            .collect()
    }

    /// Traffic counters of the peer with `node_id` (for tests and metrics).
    pub fn counters_of(&self, node_id: &str) -> Option<Arc<LinkTraffic>> {
        let key = lock(&self.core)
            .rows()
            .into_iter()
            .find(|(_, r)| r.node_id.as_deref() == Some(node_id))
            .map(|(k, _)| k)?;
        Some(self.traffic_for(key))
    }

    /// Inbound links past their handshake (admitted). Sockets still in their handshake are
    /// counted apart ([`Mesh::pending_inbound`]).
    pub fn inbound_links(&self) -> usize {
        lock(&self.core).inbound_links()
    }

    /// Node ids of the peers with a live link.
    pub fn connected_peers(&self) -> Vec<String> {
        lock(&self.core).connected_peers()
    }
}

/// The command center's port into the mesh.
impl MeshLinks for Mesh {
    fn peers_for(&self, room: Option<&str>) -> Vec<String> {
        lock(&self.core)
            .links_for(room, None)
            .into_iter()
            .map(|(_, node)| node)
            .collect()
    }

    fn flood(&self, command: &Command) {
        let actions = self.decide(Event::IssueCommand {
            command: command.clone(),
        });
        if let Some(me) = self.me.upgrade() {
            me.execute(actions);
        }
    }

    fn send_result(&self, link: LinkId, result: CommandResult) -> bool {
        let Some(h) = self.handle_of(link) else {
            return false;
        };
        h.offer(
            wire::encode_control(&Control::CommandResult { result }),
            TrafficKind::Control,
        )
    }

    fn link_to(&self, node: &str) -> Option<LinkId> {
        lock(&self.core).link_to(node)
    }

    fn resync_from(&self, link: LinkId, room: &str) -> bool {
        let Some(h) = self.handle_of(link) else {
            return false;
        };
        let frame = wire::encode_room(room, &crate::protocol::encode_sync_step1(&[0]));
        h.offer(frame, TrafficKind::Sync)
    }
}
