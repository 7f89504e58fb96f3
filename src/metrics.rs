//! The node's counters, in one home: what they count, how they are bumped, and the typed
//! snapshots that `GET /`, `GET /peers` and `ymesh status` show.
//!
//! Three owners bump counters, each through a handle it resolves once (never a lookup per
//! message):
//!
//! - the **server** holds the node's [`Metrics`]: open client connections (a
//!   [`ConnectionSlot`] per connection, released on drop) and refused updates;
//! - the **store**'s writer thread holds its [`StoreCounters`] (appends, commits, failed
//!   commits, compactions, largest batch); the node attaches them to its [`Metrics`];
//! - the **mesh** holds one [`LinkTraffic`] per peer (messages and bytes each way, per
//!   [`TrafficKind`]), kept across that peer's reconnects and listed by `GET /peers` with
//!   the peer's other state.
//!
//! Every counter is a relaxed atomic: counting costs one uncontended atomic add, and a
//! snapshot reads each counter on its own (counters read together are not one consistent
//! cut, which is fine for monitoring). Snapshots derive `Serialize`; the HTTP layer wraps
//! them in its `{"data": ...}` envelope, whose JSON maps sort their keys, so a snapshot
//! serialises exactly as the hand-built JSON it replaced.
//!
//! This module is a leaf: it depends on nothing else in the crate, so every layer may use
//! it. Telling a frame's [`TrafficKind`] from its bytes is the mesh's job (it knows its wire
//! format); this module only counts.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

/// The node-wide registry: client connections, refusals, and the store's counters.
///
/// Shared as `Arc<Metrics>` by the server's handlers and sessions.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Client WebSocket connections open now (including ones being refused at the limit,
    /// until they are closed).
    connections: AtomicUsize,
    /// Updates refused because they would pass a storage quota.
    quota_refusals: AtomicU64,
    /// The store's counters, once a store is attached (none with `--memory`).
    store: OnceLock<Arc<StoreCounters>>,
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Arc<Metrics> {
        Arc::default()
    }

    /// Counts one client connection as open until the returned slot is dropped.
    /// [`ConnectionSlot::before`] says how many were open before it (for the connection
    /// limit).
    pub fn open_connection(self: &Arc<Self>) -> ConnectionSlot {
        let before = self.connections.fetch_add(1, Ordering::Relaxed);
        ConnectionSlot {
            metrics: self.clone(),
            before,
        }
    }

    /// Client connections open now.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Counts one update refused because it would pass a storage quota.
    pub fn quota_refused(&self) {
        self.quota_refusals.fetch_add(1, Ordering::Relaxed);
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
#[derive(Debug, Default)]
pub struct StoreCounters {
    appends: AtomicU64,
    commits: AtomicU64,
    failed_commits: AtomicU64,
    compactions: AtomicU64,
    max_batch: AtomicU64,
}

impl StoreCounters {
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
}

impl LinkTraffic {
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
