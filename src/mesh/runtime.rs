//! The mesh's I/O shell: links over WebSockets, one supervisor per configured peer, and the
//! bridge between links and rooms.
//!
//! Everything that decides (handshake, manifest diff, backoff) lives in the pure modules
//! beside this one; this module owns sockets, tasks and timers:
//!
//! - **Links.** A link is one connection to one peer node, inbound (a peer dialed our
//!   `/_mesh`) or outbound (our supervisor dialed theirs). Each socket is split into a reader
//!   and a writer task that exchange whole frames with the link task over bounded channels,
//!   so the link logic is the same whatever carries the frames (a libp2p stream later).
//! - **Rooms over a link.** After the handshake both sides send their manifest (rooms and
//!   state-vector digests, read from the store without loading documents). Every room that
//!   one side lacks or whose digest differs gets a SyncStep1 from each side, all pipelined;
//!   each SyncStep1 is answered with a SyncStep2. A room a peer sends data for is opened
//!   (loaded, or created) like a client would open it; links never pin rooms in memory.
//! - **Fan-out with split horizon.** A room change (from a client, the HTTP API or a link)
//!   reaches the mesh through a room hook, is encoded once as a ROOM frame and queued to
//!   every link except the one it came from. Only changes travel: an update that changes
//!   nothing produces no hook call, which is what ends propagation in a cyclic mesh.
//! - **Supervision.** One task per configured peer owns every reconnect decision: one dial
//!   in flight, exponential backoff with jitter (1 s to 60 s, reset after a stable minute),
//!   application-level pings so a half-open link is noticed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::backoff::{Backoff, BackoffConfig};
use super::discovery::{Discovered, DiscoveryEvent, DiscoverySource};
use super::handshake::{Action, Admission, Handshake, Outcome, HANDSHAKE_TIMEOUT};
use super::identity::{new_boot_id, NodeIdentity};
use super::manifest::{PeerManifest, SharePolicy};
use super::wire::{self, Control, Frame, MAX_FRAME_LEN};
use crate::protocol::{self, Message, SyncMessage};
use crate::room::{validate_room_name, DeleteError, Kick, RoomError, RoomRegistry, SessionId};
use crate::store::Tombstone;

/// Frames queued towards one link before it counts as too slow and is closed (it resyncs
/// through the manifest when it comes back).
const LINK_QUEUE: usize = 4096;
/// Application-level ping interval on a link.
const PING_EVERY: Duration = Duration::from_secs(15);
/// A link that received nothing for this long is considered dead.
const LINK_TIMEOUT: Duration = Duration::from_secs(45);

/// A peer to dial, from `--peer` or `[[peers]]`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PeerConfig {
    /// As the user wrote it: `ws://host:3913`, `http://host:3913`, or a room URL template
    /// such as `ws://host:3913/rooms/{id}`; ymesh peers are reached at the origin's `/_mesh`.
    pub url: String,
    /// The node id the peer must prove, if known.
    pub node_id: Option<String>,
    /// Which rooms are shared with this peer (every room by default). Applies to links in
    /// both directions: with a configured `node_id`, also to links that peer dials.
    pub share: SharePolicy,
    /// For a peer that is not a ymesh node (a plain y-websocket server, which cannot list
    /// its rooms): the rooms to replicate with it, one y-websocket connection each.
    pub rooms: Vec<String>,
    /// Sent as `?token=` on those connections.
    pub token: Option<String>,
}

// By hand so that the token never reaches a log line through `{:?}`.
impl std::fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConfig")
            .field("url", &self.url)
            .field("node_id", &self.node_id)
            .field("share", &self.share)
            .field("rooms", &self.rooms)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The y-websocket URL of `room` on a plain server: `{id}` in the peer URL is replaced by
/// the percent-encoded room name, or the name is appended as the last path segment.
pub fn room_url(peer_url: &str, room: &str, token: Option<&str>) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    let encoded = percent_encoding::utf8_percent_encode(room, SEGMENT).to_string();
    let base = peer_url
        .replacen("http://", "ws://", 1)
        .replacen("https://", "wss://", 1);
    let mut url = if base.contains("{id}") {
        base.replace("{id}", &encoded)
    } else {
        format!("{}/{encoded}", base.trim_end_matches('/'))
    };
    if let Some(t) = token {
        let t = percent_encoding::utf8_percent_encode(t, SEGMENT);
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("token={t}"));
    }
    url
}

/// Why a peer URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("peer URL {url:?}: {reason}")]
pub struct PeerUrlError {
    /// The URL.
    pub url: String,
    /// What is wrong.
    pub reason: String,
}

/// The control-channel URL (`ws://host:port/_mesh`) of a peer URL.
pub fn mesh_url(url: &str) -> Result<String, PeerUrlError> {
    let err = |reason: &str| PeerUrlError {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| err("needs a scheme, e.g. ws://host:3913"))?;
    let scheme = match scheme {
        "ws" | "http" => "ws",
        "wss" | "https" => {
            return Err(err(
                "TLS peers (wss://, https://) are not supported by this version yet",
            ))
        }
        _ => return Err(err("the scheme must be ws:// or http://")),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err(err("has no host"));
    }
    Ok(format!("{scheme}://{authority}/_mesh"))
}

/// What a peer link is doing, as `GET /peers` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum LinkState {
    /// Dialing or in the handshake.
    Connecting,
    /// The link is up.
    Connected,
    /// Waiting before the next dial.
    BackingOff {
        /// When the next dial happens (unix ms).
        next_retry_ms: u64,
    },
    /// One side refused the link (admission, version); the supervisor still retries slowly.
    Refused {
        /// Why.
        reason: String,
        /// When the next dial happens (unix ms).
        next_retry_ms: u64,
    },
    /// The address leads back to this node; it is not dialed again.
    IsSelf,
}

/// Messages and bytes one way, per kind.
#[derive(Debug, Default)]
struct DirCounters {
    control: [AtomicU64; 2],
    sync: [AtomicU64; 2],
    awareness: [AtomicU64; 2],
    other: [AtomicU64; 2],
}

impl DirCounters {
    fn add(&self, kind: Kind, bytes: usize) {
        let slot = match kind {
            Kind::Control => &self.control,
            Kind::Sync => &self.sync,
            Kind::Awareness => &self.awareness,
            Kind::Other => &self.other,
        };
        slot[0].fetch_add(1, Ordering::Relaxed);
        slot[1].fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn snapshot(&self) -> serde_json::Value {
        let pair = |a: &[AtomicU64; 2]| {
            serde_json::json!({
                "messages": a[0].load(Ordering::Relaxed),
                "bytes": a[1].load(Ordering::Relaxed),
            })
        };
        serde_json::json!({
            "control": pair(&self.control),
            "sync": pair(&self.sync),
            "awareness": pair(&self.awareness),
            "other": pair(&self.other),
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Control,
    Sync,
    Awareness,
    Other,
}

/// Classifies a frame from its first bytes, without decoding it:
/// `varUint(len) · varUint(kind) · body`, where a room body is `varString(room) · message`.
fn kind_of(frame: &Bytes) -> Kind {
    let mut r = protocol::Reader::new(frame.clone());
    let kind = (|| {
        r.read_var_uint().ok()?;
        match r.read_var_uint().ok()? {
            wire::KIND_CONTROL => Some(Kind::Control),
            wire::KIND_ROOM => {
                r.read_var_bytes().ok()?;
                match r.rest().first() {
                    Some(0) => Some(Kind::Sync),
                    Some(1) => Some(Kind::Awareness),
                    _ => Some(Kind::Other),
                }
            }
            _ => Some(Kind::Other),
        }
    })();
    kind.unwrap_or(Kind::Other)
}

/// Traffic of one peer, both ways, kept across reconnects; and what the current link knows
/// about each shared room.
#[derive(Debug, Default)]
pub struct PeerCounters {
    sent: DirCounters,
    received: DirCounters,
    rooms: Mutex<BTreeMap<String, RoomStatus>>,
}

/// One room on one link, as `GET /peers` shows it.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
struct RoomStatus {
    /// The initial exchange on the current link finished (digests agreed, or the peer's
    /// SyncStep2 arrived), and every change since was queued to the peer.
    synced: bool,
    /// When a sync message for this room last crossed the link (unix ms; 0 = not yet).
    last_exchange_ms: u64,
}

impl PeerCounters {
    fn room(&self, room: &str, synced: Option<bool>, exchanged: bool) {
        let mut rooms = lock(&self.rooms);
        // A room first seen through a live change is new on this link: the change carries
        // all of it.
        let st = rooms.entry(room.to_string()).or_insert(RoomStatus {
            synced: true,
            last_exchange_ms: 0,
        });
        if let Some(s) = synced {
            st.synced = s;
        }
        if exchanged {
            st.last_exchange_ms = now_ms();
        }
    }

    fn link_changed(&self, up: bool) {
        let mut rooms = lock(&self.rooms);
        if up {
            rooms.clear();
        } else {
            for st in rooms.values_mut() {
                st.synced = false;
            }
        }
    }

    fn rooms_json(&self) -> serde_json::Value {
        serde_json::Value::Array(
            lock(&self.rooms)
                .iter()
                .map(|(name, st)| {
                    serde_json::json!({
                        "name": name,
                        "synced": st.synced,
                        "last_exchange_ms": (st.last_exchange_ms > 0).then_some(st.last_exchange_ms),
                    })
                })
                .collect(),
        )
    }
}

impl PeerCounters {
    /// Messages of every kind sent to this peer (all links so far).
    pub fn messages_sent(&self) -> u64 {
        let s = &self.sent;
        [&s.control, &s.sync, &s.awareness, &s.other]
            .iter()
            .map(|a| a[0].load(Ordering::Relaxed))
            .sum()
    }

    /// Room sync messages (step1/step2/update) sent to this peer.
    pub fn sync_messages_sent(&self) -> u64 {
        self.sent.sync[0].load(Ordering::Relaxed)
    }
}

/// Status of one peer for `GET /peers`.
#[derive(Debug)]
struct PeerEntry {
    /// Configured URL (outbound) or the remote address (inbound).
    address: String,
    /// `config` or `inbound`.
    source: &'static str,
    node_id: Option<String>,
    state: LinkState,
    since_ms: u64,
    last_error: Option<String>,
    counters: Arc<PeerCounters>,
}

/// A live link: where to queue frames for it, and how to close it.
struct LinkEntry {
    peer_node: String,
    /// Whether this node dialed the link.
    outbound: bool,
    /// Rooms shared over this link.
    policy: SharePolicy,
    /// `Some(room)` for a plain y-websocket connection to a foreign server: frames are bare
    /// y-protocols messages for that one room, not mesh frames.
    plain_room: Option<String>,
    tx: mpsc::Sender<Bytes>,
    kick: Arc<Kick>,
    counters: Arc<PeerCounters>,
}

/// The `host:port` of a `ws://` or `http://` URL, lower-cased (to tell a discovered
/// address from a configured one).
fn authority(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let host_port = rest.split(['/', '?']).next()?;
    (!host_port.is_empty()).then(|| host_port.to_ascii_lowercase())
}

/// A link up this long has finished its initial exchange: the peer's change marker moves
/// to where the store was when the link came up.
const MARKER_SETTLE: Duration = Duration::from_secs(10);

/// Tombstones per [`Control::Tombstones`] message at link-up.
const TOMBSTONES_PER_MESSAGE: usize = 500;

fn tombstone_entry(t: &Tombstone) -> wire::TombstoneEntry {
    wire::TombstoneEntry {
        name: t.room.clone(),
        deleted_ms: t.deleted_ms,
        state_vector: super::hex::encode(&t.state_vector),
        origin: t.origin.clone(),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Settings of the mesh.
#[derive(Debug, Clone, Default)]
pub struct MeshSettings {
    /// Peers to dial.
    pub peers: Vec<PeerConfig>,
    /// Who may link.
    pub admission: Admission,
    /// This node's own HTTP URL, announced in the hello.
    pub listen: Option<String>,
}

/// The running mesh of one node.
pub struct Mesh {
    identity: Arc<NodeIdentity>,
    boot_id: String,
    settings: MeshSettings,
    registry: Arc<RoomRegistry>,
    session_ids: Arc<AtomicU64>,
    links: Mutex<HashMap<SessionId, LinkEntry>>,
    /// Peer table: configured peers first (by index), inbound links after (by link id).
    peers: Mutex<BTreeMap<(u8, u64), PeerEntry>>,
    /// Per peer node id: the store's change marker when its last link went down. Rooms that
    /// changed since are re-synced on reconnect even when their digests agree (a digest
    /// counts insertions only, so a deletion alone would otherwise never travel).
    markers: Mutex<HashMap<String, u64>>,
    /// Peers found by discovery (mDNS, tailnet), by node id.
    discovered: Mutex<HashMap<String, DiscoveredPeer>>,
    /// Next key for a discovered peer's row in `peers`.
    next_discovered: AtomicU64,
    /// The node's command engine.
    commands: std::sync::OnceLock<std::sync::Weak<dyn CommandSink>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// Where the mesh hands maintenance commands and results that arrive over links (the
/// node's command engine, [`crate::command::node`]). Called on the link's task: keep it
/// short and spawn anything slow.
pub trait CommandSink: Send + Sync {
    /// A command arrived over `link` from node `peer`, with the sender's state vector of
    /// the room for `invalidate`. `policy` is what this node shares with that peer: a
    /// command for every room acts only on the rooms it allows (a command for one room
    /// arrives only when the policy allows that room).
    fn on_command(
        &self,
        link: SessionId,
        peer: &str,
        policy: &SharePolicy,
        command: crate::command::Command,
        state_vector: Option<Vec<u8>>,
    );
    /// A result arrived over `link`.
    fn on_result(&self, link: SessionId, result: crate::command::CommandResult);
    /// A link to `peer` is up (after the manifest went out): commands still running can be
    /// sent to it.
    fn on_link_up(&self, link: SessionId, peer: &str);
}

/// A peer found by discovery, and the supervisor dialing it (if this side dials).
struct DiscoveredPeer {
    source: DiscoverySource,
    url: String,
    /// Its row in `peers` while a supervisor runs for it.
    key: Option<(u8, u64)>,
    /// Stops its supervisor.
    stop: CancellationToken,
    /// Its announcement is gone: drop it once no link to it remains.
    gone: bool,
}

/// Most peers taken from discovery at once: anything on the network can announce itself,
/// and each discovered peer gets a supervisor.
const MAX_DISCOVERED_PEERS: usize = 256;

/// How long the node with the higher id waits for a discovered peer (which has the lower
/// id, so it dials) before dialing it itself.
const DISCOVERY_DEFER: Duration = Duration::from_secs(3);

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("node_id", &self.identity.node_id())
            .field("links", &lock(&self.links).len())
            .finish_non_exhaustive()
    }
}

/// How one link ended.
enum LinkEnd {
    /// The handshake found this node at the other end.
    IsSelf,
    /// One side refused.
    Refused(String),
    /// The link was up (or never came up) and closed.
    Closed(String),
    /// Both nodes dialed each other; the other link (the one the lower node id dialed) is
    /// kept and this one was closed. Carries the peer's node id.
    Duplicate(String),
}

/// A socket turned into frame channels by its reader and writer tasks.
pub struct LinkIo {
    /// Frames to send.
    pub tx: mpsc::Sender<Bytes>,
    /// Frames received; ends when the socket closes.
    pub rx: mpsc::Receiver<Bytes>,
    /// Cancelled to close the socket.
    pub close: CancellationToken,
}

impl Mesh {
    /// Creates the mesh; call [`Mesh::start`] to dial the configured peers.
    pub fn new(
        identity: Arc<NodeIdentity>,
        settings: MeshSettings,
        registry: Arc<RoomRegistry>,
        session_ids: Arc<AtomicU64>,
        shutdown: CancellationToken,
    ) -> Arc<Mesh> {
        Arc::new(Mesh {
            identity,
            boot_id: new_boot_id(),
            settings,
            registry,
            session_ids,
            links: Mutex::new(HashMap::new()),
            peers: Mutex::new(BTreeMap::new()),
            markers: Mutex::new(HashMap::new()),
            discovered: Mutex::new(HashMap::new()),
            next_discovered: AtomicU64::new(0),
            commands: std::sync::OnceLock::new(),
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

    /// Starts one supervisor per configured peer.
    pub fn start(self: &Arc<Self>) {
        for (i, peer) in self.settings.peers.iter().enumerate() {
            let key = (0u8, i as u64);
            lock(&self.peers).insert(
                key,
                PeerEntry {
                    address: peer.url.clone(),
                    source: "config",
                    node_id: peer.node_id.clone(),
                    state: LinkState::Connecting,
                    since_ms: now_ms(),
                    last_error: None,
                    counters: Arc::new(PeerCounters::default()),
                },
            );
            let me = self.clone();
            let peer = peer.clone();
            let stop = self.shutdown.clone();
            self.tasks
                .spawn(async move { me.supervise(key, peer, stop, None).await });
        }
    }

    /// Consumes discovery events: a peer found enters the address book with its own
    /// supervisor (the same dialing, handshake and admission as a configured peer); a peer
    /// lost is dropped once no link to it remains. Runs until the node stops.
    pub fn run_discovery(self: &Arc<Self>, mut rx: mpsc::Receiver<DiscoveryEvent>) {
        let me = self.clone();
        self.tasks.spawn(async move {
            loop {
                let event = tokio::select! {
                    _ = me.shutdown.cancelled() => return,
                    e = rx.recv() => e,
                };
                match event {
                    Some(DiscoveryEvent::Found(d)) => me.on_found(d),
                    Some(DiscoveryEvent::Lost {
                        node_id, source, ..
                    }) => {
                        if let Some(id) = node_id {
                            me.on_lost(&id, source);
                        }
                    }
                    None => return,
                }
            }
        });
    }

    fn on_found(self: &Arc<Self>, d: Discovered) {
        let Some(id) = d.node_id.clone() else {
            tracing::debug!(url = d.url, "discovered a node without a node id; ignored");
            return;
        };
        if id == self.identity.node_id() {
            return;
        }
        // A configured peer is dialed by its own supervisor: never twice.
        let configured = self.settings.peers.iter().any(|p| {
            p.node_id.as_deref() == Some(id.as_str())
                || authority(&p.url).is_some_and(|a| Some(a) == authority(&d.url))
        }) || lock(&self.peers)
            .iter()
            .any(|(k, p)| k.0 == 0 && p.node_id.as_deref() == Some(id.as_str()));
        if configured {
            tracing::debug!(peer = id, source = %d.source, "discovered a configured peer");
            return;
        }
        let mut discovered = lock(&self.discovered);
        if let Some(known) = discovered.get_mut(&id) {
            known.gone = false;
            if known.url == d.url {
                return;
            }
            // It moved: restart its supervisor at the new address.
            known.stop.cancel();
            if let Some(key) = known.key.take() {
                lock(&self.peers).remove(&key);
            }
            discovered.remove(&id);
        }
        if discovered.len() >= MAX_DISCOVERED_PEERS {
            tracing::warn!(
                peer = id,
                url = d.url,
                "discovered peer ignored: already {MAX_DISCOVERED_PEERS} discovered peers"
            );
            return;
        }
        tracing::info!(peer = id, url = d.url, source = %d.source, "discovered a peer");
        let n = self.next_discovered.fetch_add(1, Ordering::Relaxed);
        let key = (2u8, n);
        let stop = self.shutdown.child_token();
        lock(&self.peers).insert(
            key,
            PeerEntry {
                address: d.url.clone(),
                source: d.source.as_str(),
                node_id: Some(id.clone()),
                state: LinkState::Connecting,
                since_ms: now_ms(),
                last_error: None,
                counters: Arc::new(PeerCounters::default()),
            },
        );
        discovered.insert(
            id.clone(),
            DiscoveredPeer {
                source: d.source,
                url: d.url.clone(),
                key: Some(key),
                stop: stop.clone(),
                gone: false,
            },
        );
        drop(discovered);
        let peer = PeerConfig {
            url: d.url,
            node_id: Some(id.clone()),
            ..PeerConfig::default()
        };
        // Both nodes discover each other: the one with the lower id dials; the other waits
        // for that link and dials only if it does not come.
        let defer = self.identity.node_id() > id.as_str();
        let me = self.clone();
        self.tasks.spawn(async move {
            me.clone().supervise(key, peer, stop, Some(defer)).await;
            lock(&me.peers).remove(&key);
            let mut discovered = lock(&me.discovered);
            if discovered.get(&id).is_some_and(|p| p.key == Some(key)) {
                discovered.remove(&id);
            }
        });
    }

    fn on_lost(&self, id: &str, source: DiscoverySource) {
        let mut discovered = lock(&self.discovered);
        let Some(p) = discovered.get_mut(id) else {
            return;
        };
        if p.source != source {
            return;
        }
        tracing::info!(peer = id, source = %source, "peer's announcement is gone");
        p.gone = true;
        if !self.connected_peers().iter().any(|c| c == id) {
            p.stop.cancel();
        }
    }

    /// Whether discovery lost `node` (its supervisor then stops once its link is gone).
    fn discovery_gone(&self, node: &str) -> bool {
        lock(&self.discovered).get(node).is_none_or(|p| p.gone)
    }

    /// The share policy of a link: a configured peer's own, or for an inbound link the policy
    /// of the configured peer with that node id; every room otherwise.
    fn policy_for(&self, key: (u8, u64), peer: &str) -> SharePolicy {
        let configured = if key.0 == 0 {
            self.settings.peers.get(key.1 as usize)
        } else {
            self.settings
                .peers
                .iter()
                .find(|p| p.node_id.as_deref() == Some(peer))
        };
        configured.map(|p| p.share.clone()).unwrap_or_default()
    }

    /// Stops every link and supervisor and waits (bounded) for them.
    pub async fn stop(&self) {
        self.shutdown.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tasks.wait()).await;
    }

    /// The hook side of fan-out: queues `update` of `room` (a change the room applied) to
    /// every link but `origin`'s, encoded once.
    pub fn forward_update(&self, room: &str, update: &Bytes, origin: Option<SessionId>) {
        self.forward(room, origin, Kind::Sync, || {
            protocol::encode_sync_update(update)
        });
    }

    /// Like [`Mesh::forward_update`] for an awareness update (a client's presence or its
    /// removal), so clients on every node see each other.
    pub fn forward_awareness(&self, room: &str, update: &Bytes, origin: Option<SessionId>) {
        self.forward(room, origin, Kind::Awareness, || {
            protocol::encode_awareness(update)
        });
    }

    /// Sets where commands and results arriving over links go.
    pub fn set_command_sink(&self, sink: std::sync::Weak<dyn CommandSink>) {
        let _ = self.commands.set(sink);
    }

    fn command_sink(&self) -> Option<Arc<dyn CommandSink>> {
        self.commands.get().and_then(std::sync::Weak::upgrade)
    }

    /// Queues `control` on ymesh link `link` if its share policy allows `room` (`None`: a
    /// message about every room). False when the link is gone, refuses the room, or is full.
    pub fn send_control(&self, link: SessionId, control: &Control, room: Option<&str>) -> bool {
        let links = lock(&self.links);
        let Some(l) = links.get(&link) else {
            return false;
        };
        if l.plain_room.is_some() || room.is_some_and(|r| !l.policy.allows(r)) {
            return false;
        }
        let frame = wire::encode_control(control);
        match l.tx.try_send(frame.clone()) {
            Ok(()) => {
                l.counters.sent.add(Kind::Control, frame.len());
                true
            }
            Err(_) => false,
        }
    }

    /// The ymesh links (id and peer node id) whose share policy allows `room` (`None`:
    /// every ymesh link), except `except`.
    pub fn links_for(
        &self,
        room: Option<&str>,
        except: Option<SessionId>,
    ) -> Vec<(SessionId, String)> {
        let mut v: Vec<(SessionId, String)> = lock(&self.links)
            .iter()
            .filter(|(id, l)| {
                Some(**id) != except
                    && l.plain_room.is_none()
                    && room.is_none_or(|r| l.policy.allows(r))
            })
            .map(|(id, l)| (*id, l.peer_node.clone()))
            .collect();
        v.sort();
        v
    }

    /// A ymesh link to node `node`, if one is up.
    pub fn link_to(&self, node: &str) -> Option<SessionId> {
        lock(&self.links)
            .iter()
            .find(|(_, l)| l.plain_room.is_none() && l.peer_node == node)
            .map(|(id, _)| *id)
    }

    /// Asks `link` for its whole copy of `room` (a SyncStep1 with an empty state vector),
    /// after this node dropped its own (`invalidate`).
    pub fn resync_from(&self, link: SessionId, room: &str) -> bool {
        let links = lock(&self.links);
        let Some(l) = links.get(&link) else {
            return false;
        };
        let frame = wire::encode_room(room, &protocol::encode_sync_step1(&[0]));
        match l.tx.try_send(frame.clone()) {
            Ok(()) => {
                l.counters.sent.add(Kind::Sync, frame.len());
                true
            }
            Err(_) => false,
        }
    }

    /// Sends a tombstone to every ymesh link whose policy shares the room, except
    /// `except`. A peer that already holds a covering tombstone ignores it, so a deletion
    /// crosses each link at most a bounded number of times even in a cyclic mesh.
    pub fn forward_tombstone(&self, tombstone: &Tombstone, except: Option<SessionId>) {
        let frame = wire::encode_control(&Control::Tombstones {
            rooms: vec![tombstone_entry(tombstone)],
        });
        for (id, link) in lock(&self.links).iter() {
            if Some(*id) == except
                || link.plain_room.is_some()
                || !link.policy.allows(&tombstone.room)
            {
                continue;
            }
            match link.tx.try_send(frame.clone()) {
                Ok(()) => link.counters.sent.add(Kind::Control, frame.len()),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    // The peer gets every tombstone again when the link comes back.
                    link.kick.kick(4429, "link queue full");
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }

    /// Applies tombstones a peer sent: deletes each room whose content they cover, and
    /// announces back (as a manifest delta) each room that holds edits they do not cover,
    /// so the peer fetches those edits and the room lives again there.
    async fn on_tombstones(
        &self,
        io: &LinkIo,
        counters: &PeerCounters,
        peer: &str,
        policy: &SharePolicy,
        rooms: Vec<wire::TombstoneEntry>,
    ) -> Result<(), String> {
        let mut keep = Vec::new();
        for entry in rooms {
            if validate_room_name(&entry.name).is_err() || !policy.allows(&entry.name) {
                continue;
            }
            let Some(sv) = super::hex::decode(&entry.state_vector) else {
                return Err(format!("bad tombstone state vector for {:?}", entry.name));
            };
            let tombstone = Tombstone {
                room: entry.name,
                deleted_ms: entry.deleted_ms,
                state_vector: sv,
                origin: entry.origin,
            };
            if self
                .registry
                .tombstones()
                .get(&tombstone.room)
                .is_some_and(|t| t.covers(&tombstone) && t.deleted_ms >= tombstone.deleted_ms)
            {
                continue;
            }
            match self.registry.delete(tombstone, true).await {
                Ok(d) => tracing::info!(
                    peer,
                    room = d.tombstone.room,
                    existed = d.existed,
                    "room deleted by a peer's tombstone"
                ),
                Err(DeleteError::NotCovered { room }) => {
                    tracing::info!(
                        peer,
                        room,
                        "peer deleted a room that has newer edits here; keeping it"
                    );
                    if let Some(entry) = self.manifest_entry(&room).await {
                        keep.push(entry);
                    }
                }
                Err(e) => tracing::warn!(peer, error = %e, "cannot apply a peer's tombstone"),
            }
        }
        if !keep.is_empty() {
            let delta = Control::ManifestDelta { changed: keep };
            if !self.send(io, counters, wire::encode_control(&delta)).await {
                return Err("connection closed".into());
            }
        }
        Ok(())
    }

    /// The manifest entry (name and digest) of one room, live or stored.
    async fn manifest_entry(&self, room: &str) -> Option<wire::ManifestEntry> {
        let canonical = match self.registry.get(room).filter(|r| r.is_loaded()) {
            Some(r) => crate::store::canonical_state_vector(room, &r.state_vector()),
            None => self.registry.store()?.meta(room).await.ok()??.state_vector,
        };
        Some(wire::ManifestEntry {
            name: room.to_string(),
            digest: crate::store::digest_hex(&canonical),
        })
    }

    fn forward(
        &self,
        room: &str,
        origin: Option<SessionId>,
        kind: Kind,
        message: impl FnOnce() -> Bytes,
    ) {
        let links = lock(&self.links);
        if links.is_empty() || (links.len() == 1 && origin.is_some_and(|o| links.contains_key(&o)))
        {
            return;
        }
        let message = message();
        let mut framed: Option<Bytes> = None;
        for (id, link) in links.iter() {
            if Some(*id) == origin || !link.policy.allows(room) {
                continue;
            }
            let frame = match &link.plain_room {
                Some(r) if r == room => message.clone(),
                Some(_) => continue,
                None => framed
                    .get_or_insert_with(|| wire::encode_room(room, &message))
                    .clone(),
            };
            match link.tx.try_send(frame.clone()) {
                Ok(()) => {
                    link.counters.sent.add(kind, frame.len());
                    link.counters.room(room, None, true);
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(
                        peer = link.peer_node,
                        "link queue full; closing the link to resync"
                    );
                    link.kick.kick(4429, "link queue full");
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }

    /// `GET /peers`: every configured peer and every inbound link.
    pub fn peers_json(&self) -> serde_json::Value {
        let found: HashMap<String, &'static str> = lock(&self.discovered)
            .iter()
            .map(|(id, d)| (id.clone(), d.source.as_str()))
            .collect();
        let peers = lock(&self.peers);
        serde_json::Value::Array(
            peers
                .values()
                .map(|p| {
                    // How the peer was found: config, mdns or tailnet; an inbound link from
                    // a peer we discovered too says how we found it.
                    let found_by = match p.source {
                        "inbound" => p
                            .node_id
                            .as_ref()
                            .and_then(|id| found.get(id).copied())
                            .unwrap_or("inbound"),
                        other => other,
                    };
                    let mut v = serde_json::json!({
                        "address": p.address,
                        "source": p.source,
                        "found_by": found_by,
                        "node_id": p.node_id,
                        "since_ms": p.since_ms,
                        "last_error": p.last_error,
                        "sent": p.counters.sent.snapshot(),
                        "received": p.counters.received.snapshot(),
                        "rooms": p.counters.rooms_json(),
                    });
                    if let (Some(obj), Ok(serde_json::Value::Object(state))) =
                        (v.as_object_mut(), serde_json::to_value(&p.state))
                    {
                        obj.extend(state);
                    }
                    v
                })
                .collect(),
        )
    }

    /// Traffic counters of the peer with `node_id` (for tests and metrics).
    pub fn counters_of(&self, node_id: &str) -> Option<Arc<PeerCounters>> {
        lock(&self.peers)
            .values()
            .find(|p| p.node_id.as_deref() == Some(node_id))
            .map(|p| p.counters.clone())
    }

    /// Inbound links, established or in their handshake.
    pub fn inbound_links(&self) -> usize {
        lock(&self.peers)
            .keys()
            .filter(|(kind, _)| *kind == 1)
            .count()
    }

    /// Node ids of the peers with a live link.
    pub fn connected_peers(&self) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.links)
            .values()
            .map(|l| l.peer_node.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    fn set_state(&self, key: (u8, u64), state: LinkState, error: Option<String>) {
        if let Some(p) = lock(&self.peers).get_mut(&key) {
            if p.state != state {
                p.since_ms = now_ms();
            }
            p.state = state;
            if error.is_some() {
                p.last_error = error;
            }
        }
    }

    /// Dials one peer until `stop`: with backoff, and for a discovered peer (`discovered` =
    /// `Some(defer)`) only while its announcement stands and no other link to it is up;
    /// with `defer`, only after the peer had [`DISCOVERY_DEFER`] to dial us first.
    async fn supervise(
        self: Arc<Self>,
        key: (u8, u64),
        peer: PeerConfig,
        stop: CancellationToken,
        discovered: Option<bool>,
    ) {
        let url = match mesh_url(&peer.url) {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(error = %e, "peer not dialed");
                self.set_state(
                    key,
                    LinkState::Refused {
                        reason: e.to_string(),
                        next_retry_ms: 0,
                    },
                    Some(e.to_string()),
                );
                return;
            }
        };
        let mut backoff = Backoff::new(BackoffConfig::default());
        loop {
            if let (Some(defer), Some(node)) = (discovered, peer.node_id.as_deref()) {
                if !self.discovered_turn(key, node, defer, &stop).await {
                    return;
                }
            }
            self.set_state(key, LinkState::Connecting, None);
            let started = Instant::now();
            // A ymesh node says so on GET /; anything else is treated as a plain y-websocket
            // server (replicated room by room, for the rooms configured for it).
            let foreign = match is_ymesh_node(&peer.url).await {
                Ok(true) => false,
                Ok(false) if !peer.rooms.is_empty() => true,
                Ok(false) => {
                    let reason = "not a ymesh node; list its rooms in [[peers]] rooms = [...] to \
                                  replicate with it as a plain y-websocket server"
                        .to_string();
                    let delay = backoff.next_delay_random();
                    self.set_state(
                        key,
                        LinkState::Refused {
                            reason: reason.clone(),
                            next_retry_ms: now_ms() + delay.as_millis() as u64,
                        },
                        Some(reason),
                    );
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    continue;
                }
                // Unreachable or not answering: let the dial below report it.
                Err(_) => false,
            };
            let (end, error) = if foreign {
                (Some(self.clone().run_plain(key, &peer).await), None)
            } else {
                match dial(&url).await {
                    Ok(io) => {
                        let end = self.clone().run_link(io, key, peer.node_id.clone()).await;
                        (Some(end), None)
                    }
                    Err(e) => (None, Some(e)),
                }
            };
            let delay = {
                backoff.link_closed(started.elapsed());
                backoff.next_delay_random()
            };
            let next_retry_ms = now_ms() + delay.as_millis() as u64;
            match (end, error) {
                (Some(LinkEnd::IsSelf), _) => {
                    tracing::warn!(
                        url,
                        "peer address leads back to this node; not dialing it again"
                    );
                    self.set_state(key, LinkState::IsSelf, None);
                    return;
                }
                (Some(LinkEnd::Refused(reason)), _) => {
                    tracing::warn!(url, reason, "peer link refused");
                    self.set_state(
                        key,
                        LinkState::Refused {
                            reason: reason.clone(),
                            next_retry_ms,
                        },
                        Some(reason),
                    );
                }
                (Some(LinkEnd::Duplicate(node)), _) => {
                    // The peer's own link to us carries the rooms; dial again only once it
                    // is gone.
                    self.set_state(
                        key,
                        LinkState::Connected,
                        Some("linked through the connection the peer dialed".into()),
                    );
                    while self.connected_peers().contains(&node) {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                    backoff.reset();
                    continue;
                }
                (Some(LinkEnd::Closed(reason)), _) => {
                    tracing::info!(url, reason, "peer link closed");
                    self.set_state(key, LinkState::BackingOff { next_retry_ms }, Some(reason));
                }
                (None, Some(e)) => {
                    tracing::debug!(url, error = e, "dial failed");
                    self.set_state(key, LinkState::BackingOff { next_retry_ms }, Some(e));
                }
                (None, None) => {}
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// For a discovered peer: waits until this side should dial it. False when the peer is
    /// gone (its announcement withdrawn and no link left) or the supervisor is stopped.
    async fn discovered_turn(
        &self,
        key: (u8, u64),
        node: &str,
        defer: bool,
        stop: &CancellationToken,
    ) -> bool {
        let mut waited = Duration::ZERO;
        loop {
            let linked = self.connected_peers().iter().any(|c| c == node);
            if !linked && self.discovery_gone(node) {
                return false;
            }
            if linked {
                waited = Duration::ZERO;
                self.set_state(key, LinkState::Connected, None);
            } else if !defer || waited >= DISCOVERY_DEFER {
                return true;
            }
            let step = Duration::from_millis(250);
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = tokio::time::sleep(step) => waited += step,
            }
        }
    }

    /// Replicates the configured rooms with a plain y-websocket server: one client
    /// connection per room, all up until one ends.
    async fn run_plain(self: Arc<Self>, key: (u8, u64), peer: &PeerConfig) -> LinkEnd {
        let counters = lock(&self.peers)
            .get(&key)
            .map(|p| p.counters.clone())
            .unwrap_or_default();
        let mut tasks = tokio::task::JoinSet::new();
        for room in &peer.rooms {
            let url = room_url(&peer.url, room, peer.token.as_deref());
            let me = self.clone();
            let room = room.clone();
            let counters = counters.clone();
            tasks.spawn(async move { me.plain_room_link(url, room, counters).await });
        }
        self.set_state(key, LinkState::Connected, None);
        if let Some(p) = lock(&self.peers).get_mut(&key) {
            p.node_id = None;
        }
        let reason = match tasks.join_next().await {
            Some(Ok(reason)) => reason,
            Some(Err(e)) => format!("room connection task failed: {e}"),
            None => "no rooms configured".into(),
        };
        tasks.abort_all();
        counters.link_changed(false);
        LinkEnd::Closed(reason)
    }

    /// One room with a plain y-websocket server, as a stock client would do it.
    async fn plain_room_link(
        self: Arc<Self>,
        url: String,
        room_name: String,
        counters: Arc<PeerCounters>,
    ) -> String {
        let room = match self.registry.open(&room_name).await {
            Ok(r) => r,
            Err(e) => return format!("cannot open room {room_name:?}: {e}"),
        };
        let mut io = match dial_plain(&url).await {
            Ok(io) => io,
            Err(e) => return e,
        };
        let link_id = self.session_ids.fetch_add(1, Ordering::Relaxed);
        let kick = Arc::new(Kick::default());
        lock(&self.links).insert(
            link_id,
            LinkEntry {
                peer_node: url.clone(),
                outbound: true,
                policy: SharePolicy::List(vec![room_name.clone()]),
                plain_room: Some(room_name.clone()),
                tx: io.tx.clone(),
                kick: kick.clone(),
                counters: counters.clone(),
            },
        );
        counters.room(&room_name, Some(false), false);
        let step1 = protocol::encode_sync_step1(&room.state_vector());
        counters.sent.add(Kind::Sync, step1.len());
        let mut relayed = std::collections::HashSet::new();
        // A plain server answers every SyncStep1 with a SyncStep2: sending one every
        // PING_EVERY is this link's liveness probe (and a catch-up, should anything have been
        // missed). A link that hears nothing for LINK_TIMEOUT is closed and redialed.
        let mut probe =
            tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
        let mut last_seen = Instant::now();
        let end = if io.tx.send(step1).await.is_err() {
            "connection closed".to_string()
        } else {
            loop {
                let frame = tokio::select! {
                    _ = self.shutdown.cancelled() => break "node shutting down".to_string(),
                    _ = kick.kicked() => break kick.reason().map_or("closed".into(), |r| r.reason.clone()),
                    _ = probe.tick() => {
                        if last_seen.elapsed() > LINK_TIMEOUT {
                            break format!("nothing received for {} s", LINK_TIMEOUT.as_secs());
                        }
                        let step1 = protocol::encode_sync_step1(&room.state_vector());
                        counters.sent.add(Kind::Sync, step1.len());
                        if io.tx.send(step1).await.is_err() {
                            break "connection closed".to_string();
                        }
                        continue;
                    }
                    f = io.rx.recv() => f,
                };
                let Some(frame) = frame else {
                    break "connection closed".to_string();
                };
                last_seen = Instant::now();
                let msgs = match protocol::decode_frame(frame.clone()) {
                    Ok(m) => m,
                    Err(e) => break format!("malformed message from {url}: {e}"),
                };
                counters.received.add(
                    match msgs.first() {
                        Some(Message::Awareness(_)) => Kind::Awareness,
                        Some(Message::Sync(_)) => Kind::Sync,
                        _ => Kind::Other,
                    },
                    frame.len(),
                );
                let mut failed = None;
                for msg in msgs {
                    match msg {
                        Message::Sync(SyncMessage::Step1(sv)) => match room.sync_step2_for(&sv) {
                            Ok(reply) => {
                                counters.sent.add(Kind::Sync, reply.len());
                                counters.room(&room_name, None, true);
                                if io.tx.send(reply).await.is_err() {
                                    failed = Some("connection closed".to_string());
                                }
                            }
                            Err(e) => failed = Some(format!("bad state vector: {e}")),
                        },
                        Message::Sync(SyncMessage::Step2(u))
                        | Message::Sync(SyncMessage::Update(u)) => {
                            counters.room(&room_name, Some(true), true);
                            if let Err(e) = room.apply_update(&u, Some(link_id)) {
                                failed = Some(format!("bad update from {url}: {e}"));
                            }
                        }
                        Message::Awareness(payload) => {
                            let frame = protocol::encode_awareness(&payload);
                            if let Ok(change) = room.apply_awareness(&payload, &frame, link_id) {
                                relayed.extend(change.present);
                                for c in change.removed {
                                    relayed.remove(&c);
                                }
                            }
                        }
                        _ => {}
                    }
                }
                if let Some(reason) = failed {
                    break reason;
                }
            }
        };
        lock(&self.links).remove(&link_id);
        room.remove_awareness(&relayed);
        io.close.cancel();
        end
    }

    /// Takes an inbound link (a peer dialed `/_mesh`).
    pub fn accept(self: &Arc<Self>, io: LinkIo, remote: String) {
        let id = self.session_ids.fetch_add(1, Ordering::Relaxed);
        let key = (1u8, id);
        lock(&self.peers).insert(
            key,
            PeerEntry {
                address: remote,
                source: "inbound",
                node_id: None,
                state: LinkState::Connecting,
                since_ms: now_ms(),
                last_error: None,
                counters: Arc::new(PeerCounters::default()),
            },
        );
        let me = self.clone();
        self.tasks.spawn(async move {
            let end = me.clone().run_link(io, key, None).await;
            if let LinkEnd::Refused(reason) | LinkEnd::Closed(reason) | LinkEnd::Duplicate(reason) =
                &end
            {
                tracing::info!(reason, "inbound peer link ended");
            }
            lock(&me.peers).remove(&key);
        });
    }

    async fn send(&self, io: &LinkIo, counters: &PeerCounters, frame: Bytes) -> bool {
        counters.sent.add(kind_of(&frame), frame.len());
        io.tx.send(frame).await.is_ok()
    }

    /// Runs one link from handshake to close.
    async fn run_link(
        self: Arc<Self>,
        mut io: LinkIo,
        key: (u8, u64),
        expect: Option<String>,
    ) -> LinkEnd {
        let counters = lock(&self.peers)
            .get(&key)
            .map(|p| p.counters.clone())
            .unwrap_or_default();
        let end = self.link_inner(&mut io, key, expect, &counters).await;
        io.close.cancel();
        end
    }

    async fn link_inner(
        self: &Arc<Self>,
        io: &mut LinkIo,
        key: (u8, u64),
        expect: Option<String>,
        counters: &Arc<PeerCounters>,
    ) -> LinkEnd {
        // 1. Handshake.
        let mut hs = Handshake::new(
            self.identity.clone(),
            self.settings.admission.clone(),
            self.boot_id.clone(),
            self.settings.listen.clone(),
        );
        if let Some(id) = expect {
            hs = hs.expect_peer(id);
        }
        let mut actions = hs.start();
        let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
        let info = loop {
            let mut finished = None;
            let mut send_failed = false;
            for action in actions.drain(..) {
                match action {
                    Action::Send(c) => {
                        if !send_failed && !self.send(io, counters, wire::encode_control(&c)).await
                        {
                            send_failed = true;
                        }
                    }
                    Action::Finish(outcome) => finished = Some(outcome),
                }
            }
            if send_failed && finished.is_none() {
                // The peer closed first; if it said why, report that, not a bare close.
                return match refusal_in(&mut io.rx) {
                    Some(reason) => LinkEnd::Refused(format!("refused by the peer: {reason}")),
                    None => LinkEnd::Closed("connection closed during the handshake".into()),
                };
            }
            match finished {
                Some(Outcome::Established(info)) => break info,
                Some(Outcome::SelfConnection) => return LinkEnd::IsSelf,
                Some(Outcome::Refused(e)) => return LinkEnd::Refused(e.to_string()),
                Some(Outcome::RefusedByPeer(reason)) => {
                    return LinkEnd::Refused(format!("refused by the peer: {reason}"))
                }
                None => {}
            }
            let frame = tokio::select! {
                _ = self.shutdown.cancelled() => return LinkEnd::Closed("node shutting down".into()),
                _ = tokio::time::sleep_until(deadline) => return LinkEnd::Closed("handshake timed out".into()),
                f = io.rx.recv() => f,
            };
            let Some(frame) = frame else {
                return LinkEnd::Closed("connection closed during the handshake".into());
            };
            counters.received.add(kind_of(&frame), frame.len());
            match wire::decode_frame(frame, MAX_FRAME_LEN) {
                Ok(Frame::Control(c)) => actions = hs.on_message(c),
                Ok(_) => return LinkEnd::Closed("room data before the handshake finished".into()),
                Err(e) => return LinkEnd::Closed(format!("malformed frame: {e}")),
            }
        };
        let peer = info.node_id.clone();
        if let Some(p) = lock(&self.peers).get_mut(&key) {
            p.node_id = Some(peer.clone());
        }
        let policy = self.policy_for(key, &peer);
        // 2. Register the link; if both nodes dialed each other, keep exactly one: the link
        //    dialed by the lower node id (both sides apply the same rule).
        let outbound = key.0 == 0;
        let link_id = self.session_ids.fetch_add(1, Ordering::Relaxed);
        let kick = Arc::new(Kick::default());
        {
            let mut links = lock(&self.links);
            let me = self.identity.node_id();
            let preferred_dialer = if me < peer.as_str() {
                me
            } else {
                peer.as_str()
            };
            let dialer = |outbound: bool| if outbound { me } else { peer.as_str() };
            let existing = links
                .iter()
                .find(|(_, l)| l.peer_node == peer)
                .map(|(id, l)| (*id, l.outbound, l.kick.clone()));
            if let Some((_, other_outbound, other_kick)) = existing {
                let keep_new = dialer(outbound) == preferred_dialer
                    && dialer(other_outbound) != preferred_dialer;
                if !keep_new {
                    tracing::debug!(peer, "duplicate link closed; the other one is kept");
                    return LinkEnd::Duplicate(peer);
                }
                other_kick.kick(1000, "duplicate link: the other one is kept");
            }
            links.insert(
                link_id,
                LinkEntry {
                    peer_node: peer.clone(),
                    outbound,
                    policy: policy.clone(),
                    plain_room: None,
                    tx: io.tx.clone(),
                    kick: kick.clone(),
                    counters: counters.clone(),
                },
            );
        }
        self.set_state(key, LinkState::Connected, None);
        counters.link_changed(true);
        tracing::info!(peer, boot = info.boot_id, "peer link up");
        // Where the store was when this peer last had everything from us: re-synced from
        // there at link-up. Kept on disk, so it survives a restart (or a crash: the marker
        // only moves when a link ends).
        let store = self.registry.store().cloned();
        let mut marker = lock(&self.markers).get(&peer).copied();
        if let (None, Some(store)) = (marker, &store) {
            marker = store.peer_marker(&peer).await.ok().flatten();
        }
        let up_at = match &store {
            Some(store) => store
                .changed_since(i64::MAX as u64)
                .await
                .ok()
                .map(|(_, m)| m),
            None => None,
        };
        let up_since = Instant::now();
        let end = self
            .serve_link(io, link_id, &peer, &kick, counters, policy, marker)
            .await;
        lock(&self.links).remove(&link_id);
        counters.link_changed(false);
        // The next link re-syncs what changed since this one came up, if it lived long
        // enough to finish its initial exchange; otherwise from the old marker again.
        // Conservative: changes forwarded live but still queued when the link died are
        // covered too.
        let next = if up_since.elapsed() >= MARKER_SETTLE {
            up_at.or(marker)
        } else {
            marker.or(up_at)
        };
        if let (Some(next), Some(store)) = (next, &store) {
            lock(&self.markers).insert(peer.clone(), next);
            if Some(next) != marker {
                if let Err(e) = store.set_peer_marker(&peer, next).await {
                    tracing::warn!(peer, error = %e, "cannot record the peer's change marker");
                }
            }
        }
        tracing::info!(peer, reason = end, "peer link down");
        LinkEnd::Closed(end)
    }

    /// Our rooms for a manifest: stored rooms' digests, overridden by the live digest of
    /// rooms in memory.
    async fn our_digests(&self) -> BTreeMap<String, (String, Vec<u8>)> {
        let mut out = BTreeMap::new();
        if let Some(store) = self.registry.store() {
            match store.list().await {
                Ok(list) => {
                    for m in list {
                        out.insert(m.name.clone(), (m.digest.clone(), m.state_vector.clone()));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot list stored rooms for a manifest"),
            }
        }
        for room in self.registry.rooms() {
            if !room.has_content() {
                continue;
            }
            let sv = room.state_vector();
            let canonical = crate::store::canonical_state_vector(room.name(), &sv);
            let digest = crate::store::digest_hex(&canonical);
            out.insert(room.name().to_string(), (digest, canonical));
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    async fn serve_link(
        self: &Arc<Self>,
        io: &mut LinkIo,
        link_id: SessionId,
        peer: &str,
        kick: &Kick,
        counters: &Arc<PeerCounters>,
        policy: SharePolicy,
        marker: Option<u64>,
    ) -> String {
        // Deleted rooms first, so the peer drops stale copies before it syncs: those recorded
        // since this peer's change marker (every one when there is none, or no store).
        let recorded = match (marker, self.registry.store()) {
            (Some(m), Some(store)) => match store.tombstones_since(m).await {
                Ok(list) => list,
                Err(e) => {
                    tracing::warn!(peer, error = %e, "cannot read tombstones; sending all");
                    self.registry.tombstones().all()
                }
            },
            _ => self.registry.tombstones().all(),
        };
        let tombstones: Vec<wire::TombstoneEntry> = recorded
            .iter()
            .filter(|t| policy.allows(&t.room))
            .map(tombstone_entry)
            .collect();
        for chunk in tombstones.chunks(TOMBSTONES_PER_MESSAGE) {
            let c = Control::Tombstones {
                rooms: chunk.to_vec(),
            };
            if !self.send(io, counters, wire::encode_control(&c)).await {
                return "connection closed".into();
            }
        }
        let mut manifest = PeerManifest::new(policy);
        let ours_full = self.our_digests().await;
        let ours: BTreeMap<String, String> = ours_full
            .iter()
            .map(|(k, (d, _))| (k.clone(), d.clone()))
            .collect();
        for c in manifest.outgoing_manifest(&ours) {
            if !self.send(io, counters, wire::encode_control(&c)).await {
                return "connection closed".into();
            }
        }
        // Rooms that changed here since the last link to this peer: announce them so the
        // peer asks for them (its SyncStep1 brings back our whole delete set), and ask for
        // its side too.
        if let (Some(marker), Some(store)) = (marker, self.registry.store()) {
            match store.changed_since(marker).await {
                Ok((changed, _)) if !changed.is_empty() => {
                    let entries: Vec<wire::ManifestEntry> = changed
                        .iter()
                        .filter_map(|name| {
                            ours.get(name).map(|d| wire::ManifestEntry {
                                name: name.clone(),
                                digest: d.clone(),
                            })
                        })
                        .collect();
                    if let Some(delta) = manifest.outgoing_delta(entries) {
                        if !self.send(io, counters, wire::encode_control(&delta)).await {
                            return "connection closed".into();
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(peer, error = %e, "cannot read changed rooms"),
            }
        }
        // Presence of clients already connected here.
        for room in self.registry.rooms() {
            if !manifest.policy().allows(room.name()) {
                continue;
            }
            let frame = room.awareness_frame();
            if frame[..] != [1, 1, 0]
                && !self
                    .send(io, counters, wire::encode_room(room.name(), &frame))
                    .await
            {
                return "connection closed".into();
            }
        }
        if let Some(sink) = self.command_sink() {
            sink.on_link_up(link_id, peer);
        }
        let mut relayed: HashMap<String, std::collections::HashSet<crate::room::ClientId>> =
            HashMap::new();
        let end = self
            .link_loop(
                io,
                link_id,
                peer,
                kick,
                counters,
                &mut manifest,
                &ours,
                &ours_full,
                &mut relayed,
            )
            .await;
        // Presence this link relayed goes away with it.
        for (room, clients) in relayed {
            if let Some(r) = self.registry.get(&room) {
                r.remove_awareness(&clients);
            }
        }
        end
    }

    #[allow(clippy::too_many_arguments)]
    async fn link_loop(
        self: &Arc<Self>,
        io: &mut LinkIo,
        link_id: SessionId,
        peer: &str,
        kick: &Kick,
        counters: &Arc<PeerCounters>,
        manifest: &mut PeerManifest,
        ours: &BTreeMap<String, String>,
        ours_full: &BTreeMap<String, (String, Vec<u8>)>,
        relayed: &mut HashMap<String, std::collections::HashSet<crate::room::ClientId>>,
    ) -> String {
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
        let mut last_seen = Instant::now();
        loop {
            let frame = tokio::select! {
                _ = self.shutdown.cancelled() => return "node shutting down".into(),
                _ = kick.kicked() => {
                    return kick.reason().map_or("closed".into(), |r| r.reason.clone());
                }
                _ = ping.tick() => {
                    if last_seen.elapsed() > LINK_TIMEOUT {
                        return format!("nothing received for {} s", LINK_TIMEOUT.as_secs());
                    }
                    let c = Control::Ping { t: now_ms() };
                    if !self.send(io, counters, wire::encode_control(&c)).await {
                        return "connection closed".into();
                    }
                    continue;
                }
                f = io.rx.recv() => f,
            };
            let Some(frame) = frame else {
                return "connection closed".into();
            };
            last_seen = Instant::now();
            counters.received.add(kind_of(&frame), frame.len());
            let decoded = match wire::decode_frame(frame, MAX_FRAME_LEN) {
                Ok(f) => f,
                Err(e) => return format!("malformed frame: {e}"),
            };
            match decoded {
                Frame::Control(Control::Manifest { rooms, complete }) => {
                    let forced = BTreeSet::new();
                    if let Some(todo) = manifest.on_manifest(rooms, complete, ours, &forced) {
                        tracing::debug!(peer, rooms = todo.len(), "syncing rooms with peer");
                        let pending: std::collections::HashSet<&str> =
                            todo.iter().map(|r| r.room.as_str()).collect();
                        for name in ours.keys().filter(|n| manifest.policy().allows(n)) {
                            if !pending.contains(name.as_str()) {
                                counters.room(name, Some(true), false);
                            }
                        }
                        for r in &todo {
                            counters.room(&r.room, Some(false), false);
                        }
                        let rooms: Vec<String> = todo.into_iter().map(|r| r.room).collect();
                        if !self.send_step1s(io, counters, &rooms, ours_full).await {
                            return "connection closed".into();
                        }
                    }
                }
                Frame::Control(Control::ManifestDelta { changed }) => {
                    let rooms: Vec<String> = manifest
                        .on_delta(changed)
                        .into_iter()
                        .map(|r| r.room)
                        .collect();
                    if !self.send_step1s(io, counters, &rooms, ours_full).await {
                        return "connection closed".into();
                    }
                }
                Frame::Control(Control::Tombstones { rooms }) => {
                    let policy = manifest.policy().clone();
                    if let Err(reason) =
                        self.on_tombstones(io, counters, peer, &policy, rooms).await
                    {
                        return reason;
                    }
                }
                Frame::Control(Control::Command {
                    command,
                    state_vector,
                }) => {
                    let allowed = command
                        .room
                        .as_deref()
                        .is_none_or(|r| manifest.policy().allows(r));
                    if let (true, Some(sink)) = (allowed, self.command_sink()) {
                        let sv = state_vector.as_deref().and_then(super::hex::decode);
                        sink.on_command(link_id, peer, manifest.policy(), command, sv);
                    }
                }
                Frame::Control(Control::CommandResult { result }) => {
                    if let Some(sink) = self.command_sink() {
                        sink.on_result(link_id, result);
                    }
                }
                Frame::Control(Control::Ping { t }) => {
                    if !self
                        .send(io, counters, wire::encode_control(&Control::Pong { t }))
                        .await
                    {
                        return "connection closed".into();
                    }
                }
                Frame::Control(Control::Refused { reason }) => {
                    return format!("refused by the peer: {reason}");
                }
                Frame::Control(_) | Frame::Unknown(_) => {}
                Frame::Room { room, .. } if !manifest.policy().allows(&room) => {
                    tracing::debug!(
                        peer,
                        room,
                        "dropping a frame for a room not shared with this peer"
                    );
                }
                Frame::Room { room, message } => {
                    if let Err(reason) = self
                        .on_room_frame(io, link_id, counters, &room, message, relayed)
                        .await
                    {
                        return reason;
                    }
                }
            }
        }
    }

    /// Sends a SyncStep1 for each room, pipelined; false once the link is gone.
    async fn send_step1s(
        &self,
        io: &LinkIo,
        counters: &PeerCounters,
        rooms: &[String],
        ours: &BTreeMap<String, (String, Vec<u8>)>,
    ) -> bool {
        for room in rooms {
            let sv = self.state_vector_of(room, ours);
            let msg = protocol::encode_sync_step1(&sv);
            if !self.send(io, counters, wire::encode_room(room, &msg)).await {
                return false;
            }
        }
        true
    }

    /// The state vector to announce for `room`: live if in memory, else as stored.
    fn state_vector_of(&self, room: &str, ours: &BTreeMap<String, (String, Vec<u8>)>) -> Vec<u8> {
        if let Some(r) = self.registry.get(room) {
            if r.is_loaded() {
                return r.state_vector();
            }
        }
        ours.get(room)
            .map(|(_, sv)| sv.clone())
            .unwrap_or_else(|| vec![0])
    }

    async fn on_room_frame(
        &self,
        io: &LinkIo,
        link_id: SessionId,
        counters: &PeerCounters,
        room_name: &str,
        message: Bytes,
        relayed: &mut HashMap<String, std::collections::HashSet<crate::room::ClientId>>,
    ) -> Result<(), String> {
        if let Err(e) = validate_room_name(room_name) {
            return Err(format!("peer sent a bad room name: {e}"));
        }
        let msgs = protocol::decode_frame(message)
            .map_err(|e| format!("malformed message for room {room_name:?}: {e}"))?;
        for msg in msgs {
            match msg {
                Message::Sync(SyncMessage::Step1(sv)) => {
                    let room = match self.registry.open(room_name).await {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::warn!(room = room_name, error = %e, "cannot open room for a peer");
                            continue;
                        }
                    };
                    let reply = room
                        .sync_step2_for(&sv)
                        .map_err(|e| format!("bad state vector for {room_name:?}: {e}"))?;
                    let frame = wire::encode_room(room_name, &reply);
                    counters.sent.add(Kind::Sync, frame.len());
                    counters.room(room_name, None, true);
                    if io.tx.send(frame).await.is_err() {
                        return Err("connection closed".into());
                    }
                }
                msg @ (Message::Sync(SyncMessage::Step2(_))
                | Message::Sync(SyncMessage::Update(_))) => {
                    let (is_step2, u) = match msg {
                        Message::Sync(SyncMessage::Step2(u)) => (true, u),
                        Message::Sync(SyncMessage::Update(u)) => (false, u),
                        _ => unreachable!("matched above"),
                    };
                    // The peer's SyncStep2 (its answer to ours) completes the initial
                    // exchange for this room on this link.
                    counters.room(room_name, is_step2.then_some(true), true);
                    let room = match self.registry.open(room_name).await {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::warn!(room = room_name, error = %e, "cannot open room for a peer");
                            continue;
                        }
                    };
                    match room.apply_update(&u, Some(link_id)) {
                        Ok(applied) if applied.resurrected => {
                            // The room was deleted here and this edit is newer: fetch the
                            // rest of the document it belongs to.
                            let step1 = protocol::encode_sync_step1(&room.state_vector());
                            let frame = wire::encode_room(room_name, &step1);
                            counters.sent.add(Kind::Sync, frame.len());
                            if io.tx.send(frame).await.is_err() {
                                return Err("connection closed".into());
                            }
                        }
                        Ok(_) => {}
                        Err(RoomError::QuotaExceeded(reason)) => {
                            tracing::warn!(room = room_name, reason, "update from peer refused");
                        }
                        Err(e) => return Err(format!("bad update for {room_name:?}: {e}")),
                    }
                }
                Message::Awareness(payload) => {
                    let room = match self.registry.open(room_name).await {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::warn!(room = room_name, error = %e, "cannot open room for a peer");
                            continue;
                        }
                    };
                    let frame = protocol::encode_awareness(&payload);
                    let change = room
                        .apply_awareness(&payload, &frame, link_id)
                        .map_err(|e| format!("bad awareness for {room_name:?}: {e}"))?;
                    let set = relayed.entry(room_name.to_string()).or_default();
                    set.extend(change.present);
                    for c in change.removed {
                        set.remove(&c);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Whether the peer at `url` is a ymesh node (`GET /` answers `{"data":{"name":"ymesh"}}`).
/// `Ok(false)` only when the peer answered otherwise (an error status, or a body that is not
/// ymesh's root document); `Err` when it cannot be asked (down, refusing connections, timed
/// out, not speaking HTTP).
async fn is_ymesh_node(url: &str) -> Result<bool, String> {
    let http = url
        .replacen("ws://", "http://", 1)
        .replacen("wss://", "https://", 1);
    let origin = match http.split_once("://") {
        Some((scheme, rest)) => {
            format!(
                "{scheme}://{}",
                rest.split(['/', '?', '#']).next().unwrap_or_default()
            )
        }
        None => return Err(format!("bad URL {url}")),
    };
    let client = crate::net::Client::new(&origin, None)
        .map_err(|e| e.to_string())?
        .with_timeout(Duration::from_secs(5))
        .with_max_body(1 << 20);
    match client
        .get_json::<crate::net::Envelope<serde_json::Value>>("/")
        .await
    {
        Ok(root) => Ok(root.data["name"] == "ymesh"),
        Err(e) if e.answered() => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}

/// A `refused` control message already received (queued) on a closing connection.
fn refusal_in(rx: &mut mpsc::Receiver<Bytes>) -> Option<String> {
    while let Ok(frame) = rx.try_recv() {
        if let Ok(Frame::Control(Control::Refused { reason })) =
            wire::decode_frame(frame, MAX_FRAME_LEN)
        {
            return Some(reason);
        }
    }
    None
}

/// Dials a peer's `/_mesh` and wraps the socket into frame channels.
async fn dial(url: &str) -> Result<LinkIo, String> {
    use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
    use tokio_tungstenite::tungstenite::Message as TMessage;
    let config = WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(16 * 1024)
        .max_message_size(Some(MAX_FRAME_LEN as usize))
        .max_frame_size(Some(MAX_FRAME_LEN as usize));
    // `true`: TCP_NODELAY, so small frames go out at once.
    let connect = tokio_tungstenite::connect_async_with_config(url, Some(config), true);
    let (ws, _) = tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(resp) => format!(
                "{url} answered HTTP {} (is it a ymesh node?)",
                resp.status()
            ),
            other => format!("cannot connect to {url}: {other}"),
        })?;
    Ok(pump(ws, TMessage::Binary, |m| match m {
        TMessage::Binary(b) => Incoming::Frame(b),
        TMessage::Close(_) => Incoming::Closed,
        _ => Incoming::Other,
    }))
}

/// Dials a plain y-websocket room URL (a foreign server); frames are bare messages.
async fn dial_plain(url: &str) -> Result<LinkIo, String> {
    dial(url).await
}

/// Wraps an accepted axum WebSocket (an inbound `/_mesh` connection) into frame channels.
pub fn accept_axum(socket: axum::extract::ws::WebSocket) -> LinkIo {
    use axum::extract::ws::Message as AMessage;
    pump(socket, AMessage::Binary, |m| match m {
        AMessage::Binary(b) => Incoming::Frame(b),
        AMessage::Close(_) => Incoming::Closed,
        _ => Incoming::Other,
    })
}

/// What a socket message means to a link.
enum Incoming {
    Frame(Bytes),
    Closed,
    Other,
}

/// Splits a WebSocket (either library's) into a writer and a reader task that exchange whole
/// frames with the link over bounded channels. Closing: cancel `LinkIo::close`; the writer
/// still sends what was queued first (a `refused` sent just before the close must go out).
fn pump<W, M, E>(socket: W, binary: fn(Bytes) -> M, classify: fn(M) -> Incoming) -> LinkIo
where
    W: futures_util::Sink<M> + futures_util::Stream<Item = Result<M, E>> + Send + 'static,
    M: Send + 'static,
    E: Send + 'static,
{
    let (mut sink, mut stream) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(LINK_QUEUE);
    let (in_tx, in_rx) = mpsc::channel::<Bytes>(256);
    let close = CancellationToken::new();
    let c1 = close.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                f = out_rx.recv() => match f {
                    Some(f) => if sink.send(binary(f)).await.is_err() { break },
                    None => break,
                },
                _ = c1.cancelled() => break,
            }
        }
        let _ = sink.close().await;
    });
    let c2 = close.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = c2.cancelled() => break,
                m = stream.next() => match m.map(|r| r.map(classify)) {
                    Some(Ok(Incoming::Frame(b))) => if in_tx.send(b).await.is_err() { break },
                    Some(Ok(Incoming::Closed)) | Some(Err(_)) | None => break,
                    Some(Ok(Incoming::Other)) => {}
                },
            }
        }
        c2.cancel();
    });
    LinkIo {
        tx: out_tx,
        rx: in_rx,
        close,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_discovered_address_matches_a_configured_one_by_host_and_port() {
        assert_eq!(
            authority("http://10.0.0.2:3913"),
            authority("ws://10.0.0.2:3913/rooms/{id}")
        );
        assert_eq!(
            authority("ws://Desk.LAN:3913?x"),
            Some("desk.lan:3913".into())
        );
        assert_ne!(
            authority("ws://10.0.0.2:3913"),
            authority("ws://10.0.0.2:3914")
        );
        assert_eq!(authority("not a url"), None);
    }

    #[test]
    fn room_urls_for_plain_servers() {
        assert_eq!(room_url("ws://h:1234", "notes", None), "ws://h:1234/notes");
        assert_eq!(
            room_url("ws://h:1234/", "a/b c", None),
            "ws://h:1234/a%2Fb%20c"
        );
        assert_eq!(
            room_url("ws://h/sync/{id}/ws", "x", Some("t&k")),
            "ws://h/sync/x/ws?token=t%26k"
        );
        assert_eq!(room_url("http://h:1/y", "r", None), "ws://h:1/y/r");
    }

    #[test]
    fn mesh_urls_come_from_origins() {
        assert_eq!(
            mesh_url("ws://desktop:3913").unwrap(),
            "ws://desktop:3913/_mesh"
        );
        assert_eq!(
            mesh_url("ws://desktop.tail.ts.net:3913/rooms/{id}").unwrap(),
            "ws://desktop.tail.ts.net:3913/_mesh"
        );
        assert_eq!(
            mesh_url("http://10.0.0.2:4000/").unwrap(),
            "ws://10.0.0.2:4000/_mesh"
        );
        assert!(mesh_url("wss://x:1").unwrap_err().reason.contains("TLS"));
        assert!(mesh_url("desktop:3913").is_err());
        assert!(mesh_url("ftp://x").is_err());
        assert!(mesh_url("ws:///rooms").is_err());
    }
}
