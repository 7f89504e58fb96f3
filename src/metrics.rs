//! The node's counters, in one home: what they count, how they are bumped, and the typed
//! snapshots that `GET /`, `GET /peers` and `ymesh status` show.
//!
//! Four owners bump counters, each through a handle it resolves once (never a lookup per
//! message):
//!
//! - the **server** holds the node's [`Metrics`]: open client connections (a
//!   [`ConnectionSlot`] per connection, released on drop, counted per route), refused
//!   updates, client frames per [`MessageType`], refusals ([`Refusal`]), limit hits
//!   ([`Limit`]), 102 latencies, commands;
//! - the **store**'s writer thread holds its [`StoreCounters`] (appends, commits, failed
//!   commits, compactions, largest batch, commit latency and batch size histograms); the
//!   node attaches them to its [`Metrics`];
//! - the **room** layer holds a [`RoomCounters`] (document and awareness changes applied);
//! - the **mesh** holds one [`LinkTraffic`] per peer (messages and bytes each way, per
//!   [`TrafficKind`], links established), kept across that peer's reconnects and listed by
//!   `GET /peers` with the peer's other state.
//!
//! Every counter is a relaxed atomic (histograms take a short uncontended lock per
//! observation: one per commit, one per 102 echo): counting costs one atomic add, and a
//! snapshot reads each counter on its own (counters read together are not one consistent
//! cut, which is fine for monitoring). Snapshots derive `Serialize`; the HTTP layer wraps
//! them in its `{"data": ...}` envelope, whose JSON maps sort their keys, so a snapshot
//! serialises exactly as the hand-built JSON it replaced.
//!
//! On top of these, the Prometheus exposition of `GET /metrics` ([`Metrics::encode`], in
//! `prom.rs`): client traffic per message type, refusals and limit hits, document and
//! awareness changes, the 102 acknowledgement latency, commands, connections per route
//! (`prometheus-client` handles, resolved once), plus what other layers already keep (rooms,
//! each peer's link state and sync status, per-peer traffic, the store's counters and
//! commit latency), read at scrape time through the [`StatusSource`] the node attaches. The
//! same source feeds a ring buffer of samples (`history.rs`, [`Metrics::sample`], called by the
//! node's sampler in `crate::ui`) that the
//! status page at `GET /ui` draws its charts from.
//!
//! This module is a leaf: it depends on nothing else in the crate, so every layer may use
//! it. Telling a frame's [`TrafficKind`] from its bytes is the mesh's job (it knows its wire
//! format); this module only counts. Client frames are classified here ([`MessageType`]):
//! one or two leading bytes, no decoding.

mod history;
mod prom;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use serde::{Deserialize, Serialize};

pub use history::{History, HistoryView, Sample, SAMPLES, SAMPLE_EVERY};
pub use prom::{Limit, MessageType, Refusal};

/// The node-wide registry: client connections, refusals, and the store's counters.
///
/// Shared as `Arc<Metrics>` by the server's handlers and sessions.
#[derive(Debug)]
pub struct Metrics {
    /// Client WebSocket connections open now (including ones being refused at the limit,
    /// until they are closed).
    connections: AtomicUsize,
    /// Updates refused because they would pass a storage quota.
    quota_refusals: AtomicU64,
    /// The store's counters, once a store is attached (none with `--memory`).
    store: OnceLock<Arc<StoreCounters>>,
    /// The Prometheus handles the hot paths bump.
    handles: prom::Handles,
    /// Where scrapes and samples read the other layers' state (attached at start).
    source: OnceLock<Weak<dyn StatusSource>>,
    /// The last minutes, for the status page.
    history: Mutex<History>,
    /// Rooms in the store as of the last sample (`u64::MAX`: not known).
    rooms_stored: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            connections: AtomicUsize::new(0),
            quota_refusals: AtomicU64::new(0),
            store: OnceLock::new(),
            handles: prom::Handles::new(),
            source: OnceLock::new(),
            history: Mutex::new(History::default()),
            rooms_stored: AtomicU64::new(u64::MAX),
        }
    }
}

/// What a node's other layers show the metrics: read once per scrape and per sample.
///
/// The node implements it over its mesh and rooms (`crate::ui::NodeSource`); the metrics
/// module only reads it, so it stays a leaf.
pub trait StatusSource: Send + Sync {
    /// The node now.
    fn view(&self) -> NodeView;
}

/// Every `state` a peer link can be in, as `GET /peers` names them (checked against the
/// mesh's list by a test of `crate::ui`).
pub const LINK_STATES: &[&str] = &[
    "connecting",
    "handshaking",
    "connected",
    "backing_off",
    "refused",
    "incompatible",
    "is_self",
    "pending",
    "offline",
];

/// The node as scrapes and samples see it.
#[derive(Debug, Clone, Default)]
pub struct NodeView {
    /// Seconds since the node started.
    pub uptime_s: u64,
    /// Rooms in memory.
    pub rooms_loaded: usize,
    /// Rooms in the store, when known.
    pub rooms_stored: Option<u64>,
    /// Logical bytes in the store (snapshots and logs), with a store.
    pub store_bytes: Option<u64>,
    /// Every peer row of `GET /peers`.
    pub peers: Vec<PeerView>,
}

/// One peer row, reduced to what metrics count.
#[derive(Debug, Clone, Default)]
pub struct PeerView {
    /// The peer's node id, once known.
    pub node_id: Option<String>,
    /// Its address (configured or discovered URL, or the remote address of an inbound link).
    pub address: String,
    /// Its link state, one of [`LINK_STATES`].
    pub state: &'static str,
    /// Rooms by status, as `GET /peers` gives each room.
    pub rooms_synced: u64,
    /// Rooms the peer lacks changes of, or whose initial exchange runs.
    pub rooms_pending: u64,
    /// Rooms whose state with the peer is not known yet (no link in this run).
    pub rooms_unknown: u64,
    /// Rooms the share policy keeps from the peer.
    pub rooms_not_shared: u64,
    /// Age of the oldest unacknowledged change, in seconds, if any room is pending.
    pub oldest_pending_s: Option<u64>,
    /// Links whose handshake finished in this run.
    pub links_established: u64,
    /// Traffic with the peer.
    pub traffic: LinkTrafficSnapshot,
}

impl PeerView {
    /// The `peer` label: the node id, or the address while the id is not known.
    pub fn label(&self) -> String {
        self.node_id.clone().unwrap_or_else(|| self.address.clone())
    }
}

/// Document and awareness changes, counted by the room layer (a handle per registry).
#[derive(Debug, Clone, Default)]
pub struct RoomCounters {
    updates: Counter,
    awareness: Counter,
    acks: Option<Histogram>,
}

impl RoomCounters {
    /// Counts one document change applied.
    pub fn update_applied(&self) {
        self.updates.inc();
    }

    /// Counts one awareness update that changed presence.
    pub fn awareness_applied(&self) {
        self.awareness.inc();
    }

    /// Records the time from a client's 102 to its echo.
    pub fn ack_echoed(&self, took: Duration) {
        if let Some(h) = &self.acks {
            h.observe(took.as_secs_f64());
        }
    }
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Arc<Metrics> {
        Arc::default()
    }

    /// Attaches the view of the other layers that scrapes and samples read (once; a second
    /// call is ignored and returns false). Held weakly: the source may hold this registry.
    pub fn attach_source(&self, source: Weak<dyn StatusSource>) -> bool {
        self.source.set(source).is_ok()
    }

    fn view(&self) -> Option<NodeView> {
        let mut view = self.source.get().and_then(Weak::upgrade)?.view();
        let stored = self.rooms_stored.load(Ordering::Relaxed);
        if view.rooms_stored.is_none() && stored != u64::MAX {
            view.rooms_stored = Some(stored);
        }
        Some(view)
    }

    /// Records how many rooms the store holds (the sampler counts them now and then).
    pub fn set_rooms_stored(&self, rooms: u64) {
        self.rooms_stored.store(rooms, Ordering::Relaxed);
    }

    /// The handle the room layer counts changes with.
    pub fn room_counters(&self) -> RoomCounters {
        RoomCounters {
            updates: self.handles.updates_applied.clone(),
            awareness: self.handles.awareness_updates.clone(),
            acks: Some(self.handles.ack_seconds.clone()),
        }
    }

    /// Document changes applied so far.
    pub fn updates_applied(&self) -> u64 {
        self.handles.updates_applied.get()
    }

    /// Awareness updates that changed presence so far.
    pub fn awareness_updates(&self) -> u64 {
        self.handles.awareness_updates.get()
    }

    /// Counts a client frame received (by its message type).
    #[inline]
    pub fn client_received(&self, frame: &[u8]) {
        let pair = &self.handles.client[0][MessageType::of(frame) as usize];
        pair.messages.inc();
        pair.bytes.inc_by(frame.len() as u64);
    }

    /// Counts a client frame sent (by its message type).
    #[inline]
    pub fn client_sent(&self, frame: &[u8]) {
        let pair = &self.handles.client[1][MessageType::of(frame) as usize];
        pair.messages.inc();
        pair.bytes.inc_by(frame.len() as u64);
    }

    /// Counts a batch of client frames sent in one write: tallied locally first, so a
    /// writer adds to each shared counter once per batch and type rather than per frame
    /// (writers of many sessions run on many threads at once).
    pub fn client_sent_batch<B: AsRef<[u8]>>(&self, frames: &[B]) {
        if let [one] = frames {
            return self.client_sent(one.as_ref());
        }
        let mut tally = [(0u64, 0u64); MessageType::ALL.len()];
        for f in frames {
            let f = f.as_ref();
            let t = &mut tally[MessageType::of(f) as usize];
            t.0 += 1;
            t.1 += f.len() as u64;
        }
        for (pair, (messages, bytes)) in self.handles.client[1].iter().zip(tally) {
            if messages > 0 {
                pair.messages.inc_by(messages);
                pair.bytes.inc_by(bytes);
            }
        }
    }

    /// Client frames of `kind` so far, `(received, sent)`.
    pub fn client_messages(&self, kind: MessageType) -> (u64, u64) {
        let i = kind as usize;
        (
            self.handles.client[0][i].messages.get(),
            self.handles.client[1][i].messages.get(),
        )
    }

    /// Counts one request or connection refused for `reason`.
    pub fn refused(&self, reason: Refusal) {
        self.handles.refused[reason as usize].inc();
    }

    /// Refusals for `reason` so far.
    pub fn refusals(&self, reason: Refusal) -> u64 {
        self.handles.refused[reason as usize].get()
    }

    /// Counts one client connection refused or closed by `limit`.
    pub fn limit_hit(&self, limit: Limit) {
        self.handles.limits[limit as usize].inc();
    }

    /// Hits of `limit` so far.
    pub fn limit_hits(&self, limit: Limit) -> u64 {
        self.handles.limits[limit as usize].get()
    }

    /// Counts one command issued here.
    pub fn command_issued(&self) {
        self.handles.commands_issued.inc();
    }

    /// Counts a command delivered to `sessions` client sessions.
    pub fn commands_delivered(&self, sessions: u64) {
        self.handles.commands_delivered.inc_by(sessions);
    }

    /// Counts one result of a command issued here, by status (`ok`, `error`, ...).
    pub fn command_result(&self, status: &str) {
        self.handles
            .command_results
            .get_or_create(&[("status", status.to_string())])
            .inc();
    }

    /// The Prometheus text exposition of every metric (`GET /metrics`).
    pub fn encode(&self) -> String {
        let scrape = prom::Scrape {
            node: self.node(),
            store: self
                .store
                .get()
                .map(|s| (s.counts(), s.commit_seconds.clone(), s.batch_sizes.clone())),
            view: self.view(),
        };
        scrape.encode_with(&self.handles)
    }

    /// Takes one sample for the history (the sampler calls this).
    pub fn sample(&self, now_ms: u64) {
        let peers = self
            .view()
            .map(|v| v.peers.iter().map(|p| (p.label(), p.state)).collect())
            .unwrap_or_default();
        let sample = Sample {
            t_ms: now_ms,
            updates: self.updates_applied(),
            awareness: self.awareness_updates(),
            connections: self.connections(),
            peers,
        };
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(sample);
    }

    /// The samples of the last minutes, oldest first.
    pub fn history(&self) -> HistoryView {
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .view()
    }

    /// Counts one client connection as open until the returned slot is dropped.
    /// [`ConnectionSlot::before`] says how many were open before it (for the connection
    /// limit).
    pub fn open_connection(self: &Arc<Self>) -> ConnectionSlot {
        let before = self.connections.fetch_add(1, Ordering::Relaxed);
        ConnectionSlot {
            metrics: self.clone(),
            before,
            route: None,
        }
    }

    /// [`Metrics::open_connection`], also counted under its route template (the route's
    /// gauge is resolved here, once per connection).
    pub fn open_connection_on(self: &Arc<Self>, route: &str) -> ConnectionSlot {
        let mut slot = self.open_connection();
        let labels = [("route", route.to_string())];
        self.handles.client_opened.get_or_create(&labels).inc();
        let gauge = self.handles.client_open.get_or_create(&labels).clone();
        gauge.inc();
        slot.route = Some(gauge);
        slot
    }

    /// Client connections open now.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Counts one update refused because it would pass a storage quota.
    pub fn quota_refused(&self) {
        self.quota_refusals.fetch_add(1, Ordering::Relaxed);
        self.limit_hit(Limit::StorageQuota);
    }

    /// Updates refused so far because they would pass a storage quota.
    pub fn quota_refusals(&self) -> u64 {
        self.quota_refusals.load(Ordering::Relaxed)
    }

    /// Attaches the store's counters (once; a second call is ignored and returns false).
    pub fn attach_store(&self, counters: Arc<StoreCounters>) -> bool {
        self.store.set(counters).is_ok()
    }

    /// The node's own counters (as `GET /` shows them).
    pub fn node(&self) -> NodeCounters {
        NodeCounters {
            connections: self.connections(),
            quota_refusals: self.quota_refusals(),
        }
    }

    /// Every counter of the registry.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            node: self.node(),
            store: self.store.get().map(|s| s.counts()),
        }
    }
}

/// One open client connection, counted in [`Metrics`] until dropped (however the session
/// ends).
#[derive(Debug)]
pub struct ConnectionSlot {
    metrics: Arc<Metrics>,
    before: usize,
    /// The gauge of its route, when opened on one.
    route: Option<Gauge>,
}

impl ConnectionSlot {
    /// How many connections were open when this one was counted.
    pub fn before(&self) -> usize {
        self.before
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.metrics.connections.fetch_sub(1, Ordering::Relaxed);
        if let Some(g) = &self.route {
            g.dec();
        }
    }
}

/// The node's counters, as `GET /` shows them (beside its identity).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeCounters {
    /// Client WebSocket connections open now.
    pub connections: usize,
    /// Updates refused so far because they would pass a storage quota.
    pub quota_refusals: u64,
}

/// Every counter of a [`Metrics`] registry at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MetricsSnapshot {
    /// The node's counters.
    pub node: NodeCounters,
    /// The store's counters (`None` without a store).
    pub store: Option<StoreCounts>,
}

/// `GET /`: who the node is, how long it has run, and its counters.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    /// Always `ymesh`.
    pub name: &'static str,
    /// The crate version.
    pub version: &'static str,
    /// The node id.
    pub node_id: String,
    /// Seconds since the node started.
    pub uptime_s: u64,
    /// Rooms in memory.
    pub rooms: usize,
    /// The node's counters, as fields of this object.
    #[serde(flatten)]
    pub counters: NodeCounters,
    /// The discovery sources that run (`mdns`, `tailnet`).
    pub discovery: Vec<&'static str>,
}

/// The store writer's counters. The writer thread bumps them; anyone may read them.
#[derive(Debug)]
pub struct StoreCounters {
    appends: AtomicU64,
    commits: AtomicU64,
    failed_commits: AtomicU64,
    compactions: AtomicU64,
    max_batch: AtomicU64,
    /// Seconds per commit (write and fsync), failed ones included.
    commit_seconds: Histogram,
    /// Appends per committed batch.
    batch_sizes: Histogram,
}

impl Default for StoreCounters {
    fn default() -> Self {
        StoreCounters {
            appends: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            failed_commits: AtomicU64::new(0),
            compactions: AtomicU64::new(0),
            max_batch: AtomicU64::new(0),
            commit_seconds: Histogram::new(prom::latency_buckets()),
            batch_sizes: Histogram::new(prom::batch_buckets()),
        }
    }
}

impl StoreCounters {
    /// Records how long one commit took (committed or failed), and for a committed one its
    /// batch size; the writer calls this beside [`StoreCounters::committed`] or
    /// [`StoreCounters::commit_failed`].
    pub fn commit_took(&self, took: Duration, appends: Option<u64>) {
        self.commit_seconds.observe(took.as_secs_f64());
        if let Some(n) = appends {
            self.batch_sizes.observe(n as f64);
        }
    }

    /// Counts one committed transaction holding `appends` appends.
    pub fn committed(&self, appends: u64) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.appends.fetch_add(appends, Ordering::Relaxed);
        self.max_batch.fetch_max(appends, Ordering::Relaxed);
    }

    /// Counts one batch whose commit failed.
    pub fn commit_failed(&self) {
        self.failed_commits.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one compaction (automatic or requested).
    pub fn compacted(&self) {
        self.compactions.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn counts(&self) -> StoreCounts {
        StoreCounts {
            appends: self.appends.load(Ordering::Relaxed),
            commits: self.commits.load(Ordering::Relaxed),
            failed_commits: self.failed_commits.load(Ordering::Relaxed),
            compactions: self.compactions.load(Ordering::Relaxed),
            max_batch: self.max_batch.load(Ordering::Relaxed),
        }
    }
}

/// A snapshot of [`StoreCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StoreCounts {
    /// Appends committed.
    pub appends: u64,
    /// Transactions that committed appends (one per batch).
    pub commits: u64,
    /// Batches whose commit failed.
    pub failed_commits: u64,
    /// Compactions done (automatic and requested).
    pub compactions: u64,
    /// The largest number of appends committed in one transaction.
    pub max_batch: u64,
}

/// What a mesh frame carries, for traffic counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrafficKind {
    /// Control channel: hello, manifests, pings, commands, tombstones.
    Control,
    /// A room's sync message (step 1, step 2, update).
    Sync,
    /// A room's awareness message.
    Awareness,
    /// Anything else (other room messages, unknown frames).
    Other,
}

impl TrafficKind {
    /// Every kind, in the order of [`DirTraffic`]'s slots.
    pub const ALL: [TrafficKind; 4] = [
        TrafficKind::Control,
        TrafficKind::Sync,
        TrafficKind::Awareness,
        TrafficKind::Other,
    ];

    fn slot(self) -> usize {
        match self {
            TrafficKind::Control => 0,
            TrafficKind::Sync => 1,
            TrafficKind::Awareness => 2,
            TrafficKind::Other => 3,
        }
    }
}

/// Messages and bytes one way (sent or received), per [`TrafficKind`].
#[derive(Debug, Default)]
pub struct DirTraffic {
    /// `[messages, bytes]` per kind, in the order of [`TrafficKind::ALL`].
    slots: [[AtomicU64; 2]; 4],
}

impl DirTraffic {
    /// Counts one message of `kind` and `bytes` bytes.
    pub fn add(&self, kind: TrafficKind, bytes: usize) {
        let slot = &self.slots[kind.slot()];
        slot[0].fetch_add(1, Ordering::Relaxed);
        slot[1].fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Messages and bytes of one kind so far.
    pub fn of(&self, kind: TrafficKind) -> TrafficCount {
        let slot = &self.slots[kind.slot()];
        TrafficCount {
            messages: slot[0].load(Ordering::Relaxed),
            bytes: slot[1].load(Ordering::Relaxed),
        }
    }

    /// Messages of every kind so far.
    pub fn messages(&self) -> u64 {
        self.slots
            .iter()
            .map(|s| s[0].load(Ordering::Relaxed))
            .sum()
    }

    /// Every kind's count now.
    pub fn snapshot(&self) -> DirTrafficSnapshot {
        DirTrafficSnapshot {
            control: self.of(TrafficKind::Control),
            sync: self.of(TrafficKind::Sync),
            awareness: self.of(TrafficKind::Awareness),
            other: self.of(TrafficKind::Other),
        }
    }
}

/// Messages and bytes of one kind, one way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrafficCount {
    /// Messages (frames).
    pub messages: u64,
    /// Bytes, frame headers included.
    pub bytes: u64,
}

/// A snapshot of [`DirTraffic`]: `{"control": {"messages", "bytes"}, "sync": ...,
/// "awareness": ..., "other": ...}` in `GET /peers`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DirTrafficSnapshot {
    /// Control channel frames.
    pub control: TrafficCount,
    /// Room sync messages.
    pub sync: TrafficCount,
    /// Room awareness messages.
    pub awareness: TrafficCount,
    /// Everything else.
    pub other: TrafficCount,
}

impl DirTrafficSnapshot {
    /// Messages of every kind.
    pub fn messages(&self) -> u64 {
        [self.control, self.sync, self.awareness, self.other]
            .iter()
            .map(|c| c.messages)
            .sum()
    }
}

/// Traffic with one peer, both ways, over all its links so far (kept across reconnects).
#[derive(Debug, Default)]
pub struct LinkTraffic {
    sent: DirTraffic,
    received: DirTraffic,
    /// Links whose handshake finished.
    links: AtomicU64,
}

impl LinkTraffic {
    /// Counts one link to the peer whose handshake finished.
    pub fn linked(&self) {
        self.links.fetch_add(1, Ordering::Relaxed);
    }

    /// Links to the peer whose handshake finished so far.
    pub fn links_established(&self) -> u64 {
        self.links.load(Ordering::Relaxed)
    }

    /// What was sent to the peer.
    pub fn sent(&self) -> &DirTraffic {
        &self.sent
    }

    /// What was received from the peer.
    pub fn received(&self) -> &DirTraffic {
        &self.received
    }

    /// Messages of every kind sent to the peer.
    pub fn messages_sent(&self) -> u64 {
        self.sent.messages()
    }

    /// Room sync messages (step 1, step 2, update) sent to the peer.
    pub fn sync_messages_sent(&self) -> u64 {
        self.sent.of(TrafficKind::Sync).messages
    }

    /// Both directions now.
    pub fn snapshot(&self) -> LinkTrafficSnapshot {
        LinkTrafficSnapshot {
            sent: self.sent.snapshot(),
            received: self.received.snapshot(),
        }
    }
}

/// A snapshot of [`LinkTraffic`]: the `sent` and `received` fields of a `GET /peers` entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LinkTrafficSnapshot {
    /// Sent to the peer.
    pub sent: DirTrafficSnapshot,
    /// Received from the peer.
    pub received: DirTrafficSnapshot,
}

#[cfg(test)]
mod tests;
