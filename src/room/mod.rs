//! Rooms: one Yjs document with its awareness and the sessions connected to it.
//!
//! A [`Room`] owns a `yrs` [`Doc`] (inside an [`Awareness`]) behind a short `std` mutex that is
//! never held across an `.await`: applying an update, encoding the change once, and handing the
//! same [`Bytes`] to every session's bounded queue all happen inside one critical section, so
//! every session sees changes in the same order. A session whose queue is full is kicked with
//! close code 4429 (it resyncs when it reconnects) instead of silently losing frames.
//!
//! The [`RoomRegistry`] creates rooms on demand, caps how many are in memory, and evicts rooms
//! that have had no session for the idle timeout (pinned rooms excepted). Everything here is
//! free of socket I/O; the WebSocket shell lives in `server::ws`.

mod name;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use yrs::sync::awareness::{Awareness, AwarenessUpdate};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

pub use name::{decode_room_segment, validate_room_name, RoomNameError, MAX_ROOM_NAME_BYTES};

use crate::protocol;
use crate::store::{CommitTicket, Store, StoreError, Tombstone};

mod tombstones;
pub use tombstones::{update_covered, Gate, Tombstones};

/// Identifies one session (client or peer link) within the node.
pub type SessionId = u64;

/// A Yjs client id as used in awareness entries.
pub type ClientId = yrs::ClientID;

/// WebSocket close code: the client's outbound queue overflowed.
pub const CLOSE_TOO_SLOW: u16 = 4429;

/// WebSocket close code: the room was deleted while the client was connected.
pub const CLOSE_ROOM_DELETED: u16 = 4410;

/// Errors from room operations. None of them affect other sessions or rooms.
#[derive(Debug, thiserror::Error)]
pub enum RoomError {
    /// The bytes are not a valid Yjs v1 update.
    #[error("invalid update: {0}")]
    InvalidUpdate(String),
    /// The bytes are not a valid encoded state vector.
    #[error("invalid state vector: {0}")]
    InvalidStateVector(String),
    /// The bytes are not a valid awareness update.
    #[error("invalid awareness update: {0}")]
    InvalidAwareness(String),
    /// The room was evicted after the caller looked it up; look it up again.
    #[error("room was closed")]
    Closed,
    /// The room's stored state could not be loaded (corrupt data, I/O error).
    #[error("room could not be loaded: {0}")]
    Load(String),
    /// Storing the update would exceed a storage quota; nothing was applied.
    #[error("{0}")]
    QuotaExceeded(String),
}

/// Storage quotas in logical bytes (snapshot + log), checked before an update that adds
/// content is applied. `None` = no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quotas {
    /// Per room.
    pub room_bytes: Option<u64>,
    /// All rooms together.
    pub node_bytes: Option<u64>,
}

/// What applying an update did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    /// Whether the document changed (only then was anything broadcast or stored).
    pub changed: bool,
    /// The store ticket of the change, when it changed and a store is attached.
    pub ticket: Option<CommitTicket>,
    /// The change could not even be queued for the store: it is in memory only.
    pub store_failed: bool,
    /// The room had been deleted and this update carried only deleted content: dropped.
    pub stale: bool,
    /// The room had been deleted and this update carried an edit the deleted state did not
    /// have: the room lives again. It may hold only that edit; ask the sender for the rest
    /// (a SyncStep1).
    pub resurrected: bool,
}

/// Why a session is being closed, and the close code to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// WebSocket close code.
    pub code: u16,
    /// Human-readable reason (truncated to fit a close frame by the sender).
    pub reason: String,
    /// The other side closed or vanished: there is no close frame of ours to send.
    pub by_peer: bool,
    /// Write what is already queued (e.g. an AUTH denial explaining the close) first.
    pub flush_first: bool,
}

/// A one-shot "close this session" signal that any task may raise; the first reason wins.
#[derive(Debug, Default)]
pub struct Kick {
    token: CancellationToken,
    reason: OnceLock<CloseReason>,
}

impl Kick {
    /// Asks the session to close with `code`. Later calls are ignored.
    pub fn kick(&self, code: u16, reason: impl Into<String>) {
        self.set(CloseReason {
            code,
            reason: reason.into(),
            by_peer: false,
            flush_first: false,
        })
    }

    /// Like [`Kick::kick`], but the frames already queued are written before the close.
    pub fn kick_after_flush(&self, code: u16, reason: impl Into<String>) {
        self.set(CloseReason {
            code,
            reason: reason.into(),
            by_peer: false,
            flush_first: true,
        })
    }

    /// Records that the other side closed (with `code`, 1006 when the connection was lost).
    pub fn peer_closed(&self, code: u16, reason: impl Into<String>) {
        self.set(CloseReason {
            code,
            reason: reason.into(),
            by_peer: true,
            flush_first: false,
        })
    }

    fn set(&self, reason: CloseReason) {
        if self.reason.set(reason).is_ok() {
            self.token.cancel();
        }
    }

    /// Whether a close was requested.
    pub fn is_kicked(&self) -> bool {
        self.token.is_cancelled()
    }

    /// The close reason, once kicked.
    pub fn reason(&self) -> Option<&CloseReason> {
        self.reason.get()
    }

    /// Resolves once a close was requested.
    pub async fn kicked(&self) {
        self.token.cancelled().await
    }
}

/// Something that happened to a room, delivered to [`Hooks`].
#[derive(Debug, Clone, Copy)]
pub enum RoomEvent<'a> {
    /// The room was created in memory (first client, first POST, pinned at start).
    Created {
        /// Room name.
        room: &'a str,
    },
    /// The room was evicted from memory after its idle timeout.
    Evicted {
        /// Room name.
        room: &'a str,
    },
    /// Awareness changed (a client's presence, or its removal); `update` is the encoded
    /// awareness update (the body of a type-1 message). Delivered outside the room lock.
    Awareness {
        /// Room name.
        room: &'a str,
        /// The awareness update.
        update: &'a Bytes,
        /// The session it came from; `None` for removals the node made itself.
        origin: Option<SessionId>,
    },
    /// The room was deleted ([`RoomRegistry::delete`]): its sessions were closed, its stored
    /// data removed and `tombstone` recorded. Delivered outside every lock.
    Deleted {
        /// Room name.
        room: &'a str,
        /// What was deleted.
        tombstone: &'a Tombstone,
    },
    /// An update changed the room's document; `update` is the change as a Yjs v1 update.
    /// Delivered after the change is applied, outside the room lock.
    Changed {
        /// Room name.
        room: &'a str,
        /// The change.
        update: &'a Bytes,
        /// The session (client or peer link) it came from; `None` for the node itself
        /// (HTTP API, embedding program).
        origin: Option<SessionId>,
    },
}

type HookFn = dyn Fn(&RoomEvent<'_>) + Send + Sync;

/// Callbacks an embedding program registers to hear about rooms. They run on the task that
/// caused the event, so keep them short and never block; spawn for anything slow.
#[derive(Clone, Default)]
pub struct Hooks {
    hooks: Vec<Arc<HookFn>>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("count", &self.hooks.len())
            .finish()
    }
}

impl Hooks {
    /// No hooks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Calls `f` for every [`RoomEvent`].
    pub fn on_event(mut self, f: impl Fn(&RoomEvent<'_>) + Send + Sync + 'static) -> Self {
        self.hooks.push(Arc::new(f));
        self
    }

    /// Calls `f(room)` when a room is created in memory.
    pub fn on_room_created(self, f: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.on_event(move |e| {
            if let RoomEvent::Created { room } = e {
                f(room)
            }
        })
    }

    /// Calls `f(room)` when an idle room is evicted.
    pub fn on_room_evicted(self, f: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.on_event(move |e| {
            if let RoomEvent::Evicted { room } = e {
                f(room)
            }
        })
    }

    /// Calls `f(room, update)` after a change was applied to a room.
    pub fn on_room_changed(self, f: impl Fn(&str, &Bytes) + Send + Sync + 'static) -> Self {
        self.on_event(move |e| {
            if let RoomEvent::Changed { room, update, .. } = e {
                f(room, update)
            }
        })
    }

    /// Whether any hook is registered.
    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }

    /// Delivers `event` to every hook. A panicking hook is caught and logged, so it cannot
    /// take a session down with it.
    pub fn emit(&self, event: RoomEvent<'_>) {
        for h in &self.hooks {
            let h = h.clone();
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h(&event))).is_err() {
                tracing::error!(?event, "a room hook panicked");
            }
        }
    }
}

/// What a session gets when it joins a room.
#[derive(Debug)]
pub struct Joined {
    /// The session's id within the node.
    pub id: SessionId,
    /// Frames to write to this session, in order. The room already queued the opening
    /// SyncStep1 and the current awareness states.
    pub outbound: mpsc::Receiver<Bytes>,
    /// Sender for replies addressed only to this session (e.g. SyncStep2).
    pub reply: mpsc::Sender<Bytes>,
    /// Raised to close this session.
    pub kick: Arc<Kick>,
}

/// How a session takes part in fan-out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// A y-websocket client: receives the echo of its own updates and awareness.
    Client,
    /// A replication link: never receives back what it sent (split horizon).
    Link,
}

struct SessionEntry {
    id: SessionId,
    kind: SessionKind,
    tx: mpsc::Sender<Bytes>,
    kick: Arc<Kick>,
    /// Opted in to maintenance commands (`commands=1`).
    commands: bool,
    /// The session's own Yjs client id: the one entry of the first awareness message it sent
    /// (a stock client announces itself right after connecting; later messages may carry
    /// other clients' states, which y-websocket re-sends).
    client: Option<ClientId>,
    /// Whether the session sent an awareness message yet.
    announced: bool,
}

/// A session a maintenance command was queued for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandDelivery {
    /// The session.
    pub session: SessionId,
    /// Its Yjs client id, when its first awareness message named exactly one client.
    pub client: Option<ClientId>,
}

struct RoomState {
    awareness: Awareness,
    sessions: Vec<SessionEntry>,
    closed: bool,
    /// When the last session left (None while sessions are connected).
    idle_since: Option<Instant>,
}

/// Summary of an applied awareness update, for the session's bookkeeping.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AwarenessChange {
    /// Client ids whose state is now present (added or renewed).
    pub present: Vec<ClientId>,
    /// Client ids whose state was removed.
    pub removed: Vec<ClientId>,
}

/// One document and its connected sessions. See the module docs for the locking rules.
pub struct Room {
    name: Arc<str>,
    pinned: bool,
    hooks: Arc<Hooks>,
    queue_capacity: usize,
    quotas: Quotas,
    store: Option<Arc<dyn Store>>,
    /// Tombstones of deleted rooms: updates for this room name are checked against them.
    tombstones: Option<Arc<Tombstones>>,
    /// Set once the stored state is in the document (load before sync).
    loaded: tokio::sync::OnceCell<()>,
    /// Highest store ticket issued for this room (0 = none).
    last_ticket: std::sync::atomic::AtomicU64,
    state: Mutex<RoomState>,
    /// Filled by the doc's update observer during a commit, taken right after it.
    captured: Arc<Mutex<Option<Vec<u8>>>>,
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Room")
            .field("name", &self.name)
            .field("pinned", &self.pinned)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a room lock leaves yrs state that is still consistent at the
    // transaction level; keep serving rather than poisoning the whole room forever.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Room {
    /// Creates an empty room. `queue_capacity` bounds each session's outbound queue (frames).
    pub fn new(name: impl Into<Arc<str>>, pinned: bool, queue_capacity: usize) -> Self {
        Self::with_hooks(name, pinned, queue_capacity, Arc::new(Hooks::default()))
    }

    /// Like [`Room::new`], delivering [`RoomEvent::Changed`] to `hooks`.
    pub fn with_hooks(
        name: impl Into<Arc<str>>,
        pinned: bool,
        queue_capacity: usize,
        hooks: Arc<Hooks>,
    ) -> Self {
        Self::with_store(name, pinned, queue_capacity, hooks, None)
    }

    /// A room whose changes are appended to `store` (when given). Call [`Room::load`] before
    /// anything else touches its document.
    pub fn with_store(
        name: impl Into<Arc<str>>,
        pinned: bool,
        queue_capacity: usize,
        hooks: Arc<Hooks>,
        store: Option<Arc<dyn Store>>,
    ) -> Self {
        let doc = Doc::new();
        let captured: Arc<Mutex<Option<Vec<u8>>>> = Arc::new(Mutex::new(None));
        let slot = captured.clone();
        doc.observe_update_v1("ymesh-room", move |_txn, event| {
            let mut slot = lock(&slot);
            match slot.as_mut() {
                // Several commits inside one critical section: merge them.
                Some(prev) => {
                    let merged = yrs::merge_updates_v1([prev.as_slice(), event.update.as_slice()])
                        .unwrap_or_else(|_| event.update.clone());
                    *prev = merged;
                }
                None => *slot = Some(event.update.clone()),
            }
        })
        .expect("a fresh doc has no open transaction");
        Room {
            name: name.into(),
            pinned,
            hooks,
            queue_capacity: queue_capacity.max(4),
            loaded: tokio::sync::OnceCell::new(),
            quotas: Quotas::default(),
            last_ticket: std::sync::atomic::AtomicU64::new(0),
            store,
            tombstones: None,
            state: Mutex::new(RoomState {
                awareness: Awareness::new(doc),
                sessions: Vec::new(),
                closed: false,
                idle_since: Some(Instant::now()),
            }),
            captured,
        }
    }

    /// Sets the storage quotas this room enforces.
    pub fn with_quotas(mut self, quotas: Quotas) -> Self {
        self.quotas = quotas;
        self
    }

    /// Checks every update against `tombstones` (see [`Tombstones::gate`]).
    pub fn with_tombstones(mut self, tombstones: Arc<Tombstones>) -> Self {
        self.tombstones = Some(tombstones);
        self
    }

    /// Refuses an update that adds content when storing it would pass a quota. Updates that
    /// add no insertion (duplicates, a reconnecting client's full state the room already
    /// has, pure deletions) always pass, so a room at its quota still syncs.
    fn check_quota(&self, st: &RoomState, update: &Update, len: usize) -> Result<(), RoomError> {
        let (Some(store), q) = (&self.store, self.quotas) else {
            return Ok(());
        };
        if q.room_bytes.is_none() && q.node_bytes.is_none() {
            return Ok(());
        }
        let have = st.awareness.doc().transact().state_vector();
        if !update.extends(&have) {
            return Ok(());
        }
        let len = len as u64;
        if let Some(max) = q.room_bytes {
            let now = store.stored_bytes(&self.name).unwrap_or(0);
            if now + len > max {
                return Err(RoomError::QuotaExceeded(format!(
                    "room quota exceeded: room {:?} stores {now} bytes; {len} more would pass its quota of {max}",
                    &*self.name
                )));
            }
        }
        if let Some(max) = q.node_bytes {
            let now = store.total_bytes();
            if now + len > max {
                return Err(RoomError::QuotaExceeded(format!(
                    "node quota exceeded: the node stores {now} bytes; {len} more would pass its quota of {max}"
                )));
            }
        }
        Ok(())
    }

    /// The room's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the room is exempt from idle eviction.
    pub fn is_pinned(&self) -> bool {
        self.pinned
    }

    /// Loads the room's stored state into its document, once; later calls return at once.
    /// Without a store there is nothing to load. Sessions join only after this succeeded,
    /// so a client's first SyncStep1 already reflects what is on disk.
    pub async fn load(&self) -> Result<(), RoomError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        self.loaded
            .get_or_try_init(|| async {
                let stored = store
                    .load(&self.name)
                    .await
                    .map_err(|e| RoomError::Load(e.to_string()))?;
                let Some(stored) = stored else {
                    return Ok(());
                };
                let st = lock(&self.state);
                let doc = st.awareness.doc();
                let mut txn = doc.transact_mut();
                for blob in stored.snapshot.iter().chain(stored.updates.iter()) {
                    let update = Update::decode_v1(blob).map_err(|e| {
                        RoomError::Load(format!("stored update does not decode: {e}"))
                    })?;
                    txn.apply_update(update)
                        .map_err(|e| RoomError::Load(format!("stored update: {e}")))?;
                }
                drop(txn);
                // Loading is not a change: nothing to broadcast or store again.
                lock(&self.captured).take();
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// Whether the stored state was loaded (always true without a store).
    pub fn is_loaded(&self) -> bool {
        self.store.is_none() || self.loaded.initialized()
    }

    /// Resolves when every change of this room so far is committed to disk. Without a store
    /// it resolves at once.
    pub async fn wait_durable(&self) -> Result<(), StoreError> {
        let ticket = self.last_ticket.load(std::sync::atomic::Ordering::Acquire);
        match &self.store {
            Some(store) if ticket > 0 => store.wait_durable(CommitTicket(ticket)).await,
            _ => Ok(()),
        }
    }

    /// Writes the room's full in-memory state to the store after a failed commit left a gap
    /// in its log (enqueued under the room lock, so it covers every earlier change). The
    /// store marks the room healthy once it commits.
    pub fn repair(&self) -> Result<Option<CommitTicket>, StoreError> {
        let Some(store) = &self.store else {
            return Ok(None);
        };
        let st = lock(&self.state);
        let txn = st.awareness.doc().transact();
        let full = txn.encode_state_as_update_v1(&StateVector::default());
        let sv = txn.state_vector().encode_v1();
        drop(txn);
        let ticket = store.repair(&self.name, Bytes::from(full), sv)?;
        self.last_ticket
            .fetch_max(ticket.0, std::sync::atomic::Ordering::AcqRel);
        drop(st);
        Ok(Some(ticket))
    }

    /// Why the room's latest changes are not on disk, if they are not.
    pub fn store_failure(&self) -> Option<crate::store::RoomFailure> {
        self.store.as_ref()?.room_failure(&self.name)
    }

    /// Whether every change so far is durable, without waiting.
    fn is_durable_now(&self) -> bool {
        if self.store_failure().is_some() {
            return false;
        }
        use futures_util::FutureExt;
        let ticket = self.last_ticket.load(std::sync::atomic::Ordering::Acquire);
        match &self.store {
            Some(store) if ticket > 0 => matches!(
                store.wait_durable(CommitTicket(ticket)).now_or_never(),
                Some(Ok(()))
            ),
            _ => true,
        }
    }

    /// Whether the document holds anything. A room *exists* (is listed, stored, announced
    /// to peers) only once it has content.
    pub fn has_content(&self) -> bool {
        let st = lock(&self.state);
        let txn = st.awareness.doc().transact();
        !txn.state_vector().is_empty() || txn.has_missing_updates()
    }

    /// Number of connected sessions.
    pub fn session_count(&self) -> usize {
        lock(&self.state).sessions.len()
    }

    /// Adds a session. Its queue starts with SyncStep1 and, if any, all awareness states.
    pub fn join(&self, id: SessionId, kind: SessionKind) -> Result<Joined, RoomError> {
        self.join_opted(id, kind, false)
    }

    /// Like [`Room::join`]; `commands` opts the session in to maintenance commands
    /// ([`Room::deliver_command`]).
    pub fn join_opted(
        &self,
        id: SessionId,
        kind: SessionKind,
        commands: bool,
    ) -> Result<Joined, RoomError> {
        let mut st = lock(&self.state);
        if st.closed {
            return Err(RoomError::Closed);
        }
        let (tx, rx) = mpsc::channel(self.queue_capacity);
        let sv = st.awareness.doc().transact().state_vector().encode_v1();
        // The channel is new and has room for at least 4 frames.
        let _ = tx.try_send(protocol::encode_sync_step1(&sv));
        if let Some(frame) = full_awareness_frame(&st.awareness) {
            let _ = tx.try_send(frame);
        }
        let kick = Arc::new(Kick::default());
        st.sessions.push(SessionEntry {
            id,
            kind,
            tx: tx.clone(),
            kick: kick.clone(),
            commands,
            client: None,
            announced: false,
        });
        st.idle_since = None;
        Ok(Joined {
            id,
            outbound: rx,
            reply: tx,
            kick,
        })
    }

    /// Removes a session and the awareness states it introduced, broadcasting their removal to
    /// the sessions that remain.
    pub fn leave(&self, id: SessionId, awareness_clients: &HashSet<ClientId>) {
        let mut st = lock(&self.state);
        st.sessions.retain(|s| s.id != id);
        let removal = remove_awareness_locked(&mut st, awareness_clients);
        if st.sessions.is_empty() {
            st.idle_since = Some(Instant::now());
        }
        drop(st);
        if let Some(update) = removal {
            self.emit_awareness(&update, None);
        }
    }

    /// Removes awareness states (e.g. those a peer link relayed, when the link drops) and
    /// broadcasts their removal to every session and, through the hooks, to other links.
    pub fn remove_awareness(&self, clients: &HashSet<ClientId>) {
        let removal = {
            let mut st = lock(&self.state);
            remove_awareness_locked(&mut st, clients)
        };
        if let Some(update) = removal {
            self.emit_awareness(&update, None);
        }
    }

    fn emit_awareness(&self, update: &Bytes, origin: Option<SessionId>) {
        if !self.hooks.is_empty() {
            self.hooks.emit(RoomEvent::Awareness {
                room: &self.name,
                update,
                origin,
            });
        }
    }

    /// Answers a SyncStep1: the SyncStep2 frame holding what `state_vector` lacks (possibly an
    /// empty update, which the stock client still needs to consider itself synced).
    pub fn sync_step2_for(&self, state_vector: &[u8]) -> Result<Bytes, RoomError> {
        let sv = StateVector::decode_v1(state_vector)
            .map_err(|e| RoomError::InvalidStateVector(e.to_string()))?;
        let st = lock(&self.state);
        let update = st.awareness.doc().transact().encode_state_as_update_v1(&sv);
        drop(st);
        Ok(protocol::encode_sync_step2(&update))
    }

    /// Applies an update from session `from` (or from the node itself when `None`). If it
    /// changed the document, the change is encoded once, queued to every session (the
    /// sender included, unless it is a replication link) and appended to the store, all in
    /// the order the room applied it.
    pub fn apply_update(
        &self,
        update: &[u8],
        from: Option<SessionId>,
    ) -> Result<Applied, RoomError> {
        let decoded =
            Update::decode_v1(update).map_err(|e| RoomError::InvalidUpdate(e.to_string()))?;
        let st = lock(&self.state);
        if st.closed {
            return Err(RoomError::Closed);
        }
        let gate = match &self.tombstones {
            Some(t) => t.gate(&self.name, &decoded),
            None => Gate::Open,
        };
        if gate == Gate::Covered {
            return Ok(Applied {
                stale: true,
                ..Applied::default()
            });
        }
        if gate == Gate::Resurrect {
            tracing::info!(
                room = &*self.name,
                "deleted room edited again: it lives again"
            );
        }
        self.check_quota(&st, &decoded, update.len())?;
        let waiting = {
            let mut txn = st.awareness.doc().transact_mut();
            txn.apply_update(decoded)
                .map_err(|e| RoomError::InvalidUpdate(e.to_string()))?;
            txn.has_missing_updates()
        };
        // An update whose dependencies have not arrived yet is held by yrs and changes
        // nothing visible; store it as received so it survives a crash all the same.
        let held = if waiting {
            self.store_raw(&st, update)
        } else {
            None
        };
        let change = lock(&self.captured).take();
        let mut applied = match change {
            Some(change) => self.commit_change(st, change, from),
            None => Applied::default(),
        };
        if let Some(held) = held {
            applied.store_failed |= held.is_err();
            if let Ok(t) = held {
                applied.ticket = Some(applied.ticket.map_or(t, |a| a.max(t)));
            }
        }
        applied.resurrected = gate == Gate::Resurrect;
        Ok(applied)
    }

    /// Appends `update` exactly as received (`st` is the caller's room lock).
    fn store_raw(&self, st: &RoomState, update: &[u8]) -> Option<Result<CommitTicket, StoreError>> {
        let store = self.store.as_ref()?;
        let sv = st.awareness.doc().transact().state_vector().encode_v1();
        let r = store.append(&self.name, Bytes::copy_from_slice(update), sv);
        if let Ok(t) = &r {
            self.last_ticket
                .fetch_max(t.0, std::sync::atomic::Ordering::AcqRel);
        }
        Some(r)
    }

    /// The newest store ticket of this room: once it is durable, every change the room has
    /// applied so far is on disk.
    pub fn last_ticket(&self) -> Option<CommitTicket> {
        match self.last_ticket.load(std::sync::atomic::Ordering::Acquire) {
            0 => None,
            t => Some(CommitTicket(t)),
        }
    }

    /// Broadcasts and stores a captured change (room lock held), then runs hooks (released).
    fn commit_change(
        &self,
        st: MutexGuard<'_, RoomState>,
        change: Vec<u8>,
        from: Option<SessionId>,
    ) -> Applied {
        let frame = protocol::encode_sync_update(&change);
        broadcast(&st.sessions, &frame, from);
        let change = Bytes::from(change);
        let mut applied = Applied {
            changed: true,
            ..Applied::default()
        };
        if let Some(store) = &self.store {
            let sv = st.awareness.doc().transact().state_vector().encode_v1();
            match store.append(&self.name, change.clone(), sv) {
                Ok(ticket) => {
                    self.last_ticket
                        .fetch_max(ticket.0, std::sync::atomic::Ordering::AcqRel);
                    applied.ticket = Some(ticket);
                }
                Err(e) => {
                    tracing::error!(room = &*self.name, error = %e, "cannot queue update for the store; it is in memory only");
                    applied.store_failed = true;
                }
            }
        }
        drop(st);
        if !self.hooks.is_empty() {
            self.hooks.emit(RoomEvent::Changed {
                room: &self.name,
                update: &change,
                origin: from,
            });
        }
        applied
    }

    /// Applies an awareness update from session `from` and forwards `frame` (the message as
    /// received) to every session, the sender included, when it changed anything. Stock v3
    /// clients need the echo of their own 15-second renewal to stay connected.
    pub fn apply_awareness(
        &self,
        payload: &Bytes,
        frame: &Bytes,
        from: SessionId,
    ) -> Result<AwarenessChange, RoomError> {
        let update = AwarenessUpdate::decode_v1(payload)
            .map_err(|e| RoomError::InvalidAwareness(e.to_string()))?;
        let mut st = lock(&self.state);
        // The session's own client id, from its first awareness message, whether or not
        // that message is news here (the client may be known through another node already).
        if let Some(s) = st
            .sessions
            .iter_mut()
            .find(|s| s.id == from && !s.announced)
        {
            s.announced = true;
            if let [(client, entry)] = update.clients.iter().collect::<Vec<_>>()[..] {
                if &*entry.json != "null" {
                    s.client = Some(*client);
                }
            }
        }
        let summary = st
            .awareness
            .apply_update_summary(update)
            .map_err(|e| RoomError::InvalidAwareness(e.to_string()))?;
        let Some(summary) = summary else {
            return Ok(AwarenessChange::default());
        };
        broadcast(&st.sessions, frame, Some(from));
        drop(st);
        self.emit_awareness(payload, Some(from));
        let mut present = summary.added;
        present.extend(summary.updated);
        Ok(AwarenessChange {
            present,
            removed: summary.removed,
        })
    }

    /// All current awareness states as one frame (the answer to QueryAwareness). An empty
    /// update (zero entries) when nobody has state.
    pub fn awareness_frame(&self) -> Bytes {
        let st = lock(&self.state);
        full_awareness_frame(&st.awareness).unwrap_or_else(|| protocol::encode_awareness(&[0]))
    }

    /// The whole document as one v1 update.
    pub fn encode_state(&self) -> Vec<u8> {
        let st = lock(&self.state);
        let update = st
            .awareness
            .doc()
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        update
    }

    /// The document's root types as JSON (see [`doc_to_json`]).
    pub fn to_json(&self) -> serde_json::Value {
        let st = lock(&self.state);
        doc_to_json(st.awareness.doc())
    }

    /// The document's encoded state vector.
    pub fn state_vector(&self) -> Vec<u8> {
        lock(&self.state)
            .awareness
            .doc()
            .transact()
            .state_vector()
            .encode_v1()
    }

    /// Runs `f` with the room's document under the room lock. Changes `f` makes are
    /// broadcast to every session like any other update. Do not hold the lock long: `f` must
    /// not block or await.
    pub fn with_doc<R>(&self, f: impl FnOnce(&Doc) -> R) -> R {
        let st = lock(&self.state);
        let out = f(st.awareness.doc());
        let change = lock(&self.captured).take();
        if let Some(change) = change {
            self.commit_change(st, change, None);
        }
        out
    }

    /// Idle since when, if no session is connected.
    fn idle_since(&self) -> Option<Instant> {
        lock(&self.state).idle_since
    }

    /// Marks the room closed if it is still idle; returns whether it was closed.
    fn close_if_idle(&self, idle_for: Duration, now: Instant) -> bool {
        // A room whose changes are not all on disk yet stays until they are: a reload right
        // after eviction must find them in the store.
        if !self.is_durable_now() {
            return false;
        }
        let mut st = lock(&self.state);
        match st.idle_since {
            Some(since) if st.sessions.is_empty() && now.duration_since(since) >= idle_for => {
                st.closed = true;
                true
            }
            _ => false,
        }
    }

    /// Closes the room for deletion: no update is applied after this. When `covering` is
    /// given, only if the document holds nothing beyond that state vector (else `Err` with
    /// the room's state vector, and the room stays open). Sessions are closed with
    /// [`CLOSE_ROOM_DELETED`]. Returns the room's state vector.
    fn close_for_delete(
        &self,
        covering: Option<&[u8]>,
        code: u16,
        reason: &str,
    ) -> Result<Vec<u8>, Vec<u8>> {
        let mut st = lock(&self.state);
        let sv = st.awareness.doc().transact().state_vector().encode_v1();
        if let Some(covering) = covering {
            if !crate::store::state_vector_covers(covering, &sv) {
                return Err(sv);
            }
        }
        st.closed = true;
        for s in &st.sessions {
            s.kick.kick(code, reason);
        }
        Ok(sv)
    }

    /// Queues a maintenance command frame (type 103) for every session that opted in, and
    /// returns them. A session whose queue is full is closed (4429) as for any frame.
    pub fn deliver_command(&self, frame: &Bytes) -> Vec<CommandDelivery> {
        let st = lock(&self.state);
        let mut out = Vec::new();
        for s in st.sessions.iter().filter(|s| s.commands) {
            match s.tx.try_send(frame.clone()) {
                Ok(()) => out.push(CommandDelivery {
                    session: s.id,
                    client: s.client,
                }),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    s.kick.kick(CLOSE_TOO_SLOW, "outbound queue full");
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        out
    }

    /// Asks every session to close with `code` (used at shutdown).
    pub fn kick_all(&self, code: u16, reason: &str) {
        for s in &lock(&self.state).sessions {
            s.kick.kick(code, reason);
        }
    }
}

/// Renders every root type of `doc` as JSON: `{root name: value}`.
///
/// Typed roots render by their type: text as a string, maps as objects, arrays as arrays,
/// XML as its XML string. A node never declares types itself, so roots it only received
/// over the wire are untyped; their type is inferred from their content the way yrs does:
/// only keyed entries → object; a sequence starting with text → string (with keyed entries
/// too, formatted XML text → its XML string); other sequences → array; keyed entries and a
/// non-text sequence → XML element string; no content at all → `{}`.
pub fn doc_to_json(doc: &Doc) -> serde_json::Value {
    use yrs::types::AsPrelim;
    use yrs::types::{GetString, ToJson};
    use yrs::{ArrayRef, In, MapRef, Out, TextRef, XmlElementRef, XmlTextRef};
    let txn = doc.transact();
    let mut roots = serde_json::Map::new();
    for (name, value) in txn.root_refs() {
        let any_json = |any: yrs::Any| serde_json::to_value(any).unwrap_or(serde_json::Value::Null);
        let rendered = match value {
            Out::YText(t) => serde_json::Value::String(t.get_string(&txn)),
            Out::YMap(m) => any_json(m.to_json(&txn)),
            Out::YArray(a) => any_json(a.to_json(&txn)),
            Out::YXmlFragment(x) => serde_json::Value::String(x.get_string(&txn)),
            Out::YXmlElement(x) => serde_json::Value::String(x.get_string(&txn)),
            Out::YXmlText(x) => serde_json::Value::String(x.get_string(&txn)),
            Out::UndefinedRef(ptr) => match Out::UndefinedRef(ptr).as_prelim(&txn) {
                In::Text(_) => serde_json::Value::String(TextRef::from(ptr).get_string(&txn)),
                In::Array(_) => any_json(ArrayRef::from(ptr).to_json(&txn)),
                In::XmlText(_) => serde_json::Value::String(XmlTextRef::from(ptr).get_string(&txn)),
                In::XmlElement(_) => {
                    serde_json::Value::String(XmlElementRef::from(ptr).get_string(&txn))
                }
                _ => any_json(MapRef::from(ptr).to_json(&txn)),
            },
            other => any_json(other.to_json(&txn)),
        };
        roots.insert(name.to_string(), rendered);
    }
    serde_json::Value::Object(roots)
}

/// Removes the states of `clients` that are present and broadcasts the removal; returns the
/// encoded awareness update (for the hooks) if anything was removed.
fn remove_awareness_locked(st: &mut RoomState, clients: &HashSet<ClientId>) -> Option<Bytes> {
    let present: HashSet<ClientId> = st
        .awareness
        .iter()
        .filter(|(id, s)| s.data.is_some() && clients.contains(id))
        .map(|(id, _)| id)
        .collect();
    if present.is_empty() {
        return None;
    }
    for &client in &present {
        st.awareness.remove_state(client);
    }
    let update = st.awareness.update_with_clients(present).ok()?;
    let payload = Bytes::from(update.encode_v1());
    let frame = protocol::encode_awareness(&payload);
    broadcast(&st.sessions, &frame, None);
    Some(payload)
}

fn full_awareness_frame(awareness: &Awareness) -> Option<Bytes> {
    let update = awareness.update().ok()?;
    if update.clients.is_empty() {
        return None;
    }
    Some(protocol::encode_awareness(&update.encode_v1()))
}

/// Queues `frame` to every session; a link session does not get back what it sent.
fn broadcast(sessions: &[SessionEntry], frame: &Bytes, from: Option<SessionId>) {
    for s in sessions {
        if s.kind == SessionKind::Link && Some(s.id) == from {
            continue;
        }
        if s.kick.is_kicked() {
            continue;
        }
        match s.tx.try_send(frame.clone()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(session = s.id, "outbound queue full; closing the session");
                s.kick.kick(CLOSE_TOO_SLOW, "outbound queue full");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// Limits and policies for the registry.
#[derive(Debug, Clone)]
pub struct RoomSettings {
    /// How long a room with no sessions stays in memory.
    pub idle_timeout: Duration,
    /// Rooms that are never evicted (created at start).
    pub pinned: HashSet<String>,
    /// Most rooms in memory at once.
    pub max_rooms: usize,
    /// Outbound queue length per session, in frames.
    pub outbound_queue: usize,
    /// Storage quotas.
    pub quotas: Quotas,
}

impl Default for RoomSettings {
    fn default() -> Self {
        RoomSettings {
            idle_timeout: Duration::from_secs(60),
            pinned: HashSet::new(),
            max_rooms: 100_000,
            outbound_queue: 1024,
            quotas: Quotas::default(),
        }
    }
}

/// Errors from the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// `max_rooms` rooms are already in memory.
    #[error("node at capacity: {0} rooms in memory")]
    AtCapacity(usize),
}

/// Why a room could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Too many rooms in memory.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The stored state could not be loaded.
    #[error("room could not be loaded: {0}")]
    Load(String),
}

/// A snapshot of one room for listings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RoomInfo {
    /// Room name.
    pub name: String,
    /// Connected sessions.
    pub connections: usize,
    /// Exempt from idle eviction.
    pub pinned: bool,
    /// Why its latest changes are not on disk (the room keeps syncing in memory and the
    /// node retries), if they are not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_error: Option<crate::store::RoomFailure>,
}

/// Why a room could not be deleted.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    /// The room holds content the tombstone does not cover (edits the deleting node never
    /// saw); deleting it would lose them, so it stays.
    #[error("room {room:?} holds edits the deletion did not cover; it is kept")]
    NotCovered {
        /// Room name.
        room: String,
    },
    /// The store could not delete it.
    #[error("room {room:?} could not be deleted: {source}")]
    Store {
        /// Room name.
        room: String,
        /// The store's error.
        source: StoreError,
    },
}

/// What [`RoomRegistry::delete`] did.
#[derive(Debug, Clone)]
pub struct Deleted {
    /// The tombstone as recorded (merged with the room's stored state and earlier ones).
    pub tombstone: Tombstone,
    /// Whether there was a room with content to delete (else only the tombstone was
    /// recorded).
    pub existed: bool,
}

/// All rooms in memory, created on demand.
pub struct RoomRegistry {
    rooms: Mutex<HashMap<Arc<str>, Arc<Room>>>,
    /// Rooms being deleted: opening one waits until the deletion is done (so that it cannot
    /// load the old content from the store before the deletion commits).
    deleting: Mutex<HashMap<String, tokio::sync::watch::Receiver<bool>>>,
    tombstones: Arc<Tombstones>,
    settings: RoomSettings,
    hooks: Arc<Hooks>,
    store: Option<Arc<dyn Store>>,
}

impl std::fmt::Debug for RoomRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomRegistry")
            .field("rooms", &self.len())
            .field("settings", &self.settings)
            .field("store", &self.store.is_some())
            .finish()
    }
}

impl RoomRegistry {
    /// Creates the registry and its pinned rooms.
    pub fn new(settings: RoomSettings) -> Self {
        Self::with_hooks(settings, Hooks::default())
    }

    /// Creates the registry and its pinned rooms, delivering room events to `hooks`.
    pub fn with_hooks(settings: RoomSettings, hooks: Hooks) -> Self {
        Self::with_store(settings, hooks, None)
    }

    /// A registry whose rooms load from and append to `store`.
    pub fn with_store(settings: RoomSettings, hooks: Hooks, store: Option<Arc<dyn Store>>) -> Self {
        let hooks = Arc::new(hooks);
        let tombstones = Arc::new(Tombstones::new());
        let mut rooms = HashMap::new();
        for name in &settings.pinned {
            let name: Arc<str> = Arc::from(name.as_str());
            rooms.insert(
                name.clone(),
                Arc::new(
                    Room::with_store(
                        name.clone(),
                        true,
                        settings.outbound_queue,
                        hooks.clone(),
                        store.clone(),
                    )
                    .with_quotas(settings.quotas)
                    .with_tombstones(tombstones.clone()),
                ),
            );
            hooks.emit(RoomEvent::Created { room: &name });
        }
        RoomRegistry {
            rooms: Mutex::new(rooms),
            deleting: Mutex::new(HashMap::new()),
            tombstones,
            settings,
            hooks,
            store,
        }
    }

    /// The tombstones of deleted rooms (load them from the store at start).
    pub fn tombstones(&self) -> &Arc<Tombstones> {
        &self.tombstones
    }

    /// Deletes room `tombstone.room`: closes it (its sessions get
    /// [`CLOSE_ROOM_DELETED`]), removes it from memory and from the store, and records the
    /// tombstone, merged with the room's state and any earlier tombstone, so that stale
    /// copies of the deleted content are dropped from then on. Opening the room meanwhile
    /// waits for the deletion to finish.
    ///
    /// With `require_covered` (a deletion that came from a peer), the room is deleted only if
    /// it holds nothing beyond `tombstone.state_vector`; otherwise it is kept
    /// ([`DeleteError::NotCovered`]), because those edits would be lost.
    pub async fn delete(
        &self,
        tombstone: Tombstone,
        require_covered: bool,
    ) -> Result<Deleted, DeleteError> {
        let name = tombstone.room.clone();
        let covering = require_covered.then_some(tombstone.state_vector.as_slice());
        if let Some(covering) = covering {
            self.check_stored_covered(&name, covering).await?;
        }
        let (live, done) = self
            .close_and_bar(&name, covering, CLOSE_ROOM_DELETED, "room deleted")
            .await?;
        let result = self.delete_closed(tombstone, live).await;
        self.unbar(&name, done);
        let deleted = result?;
        tracing::info!(
            room = name,
            existed = deleted.existed,
            origin = deleted.tombstone.origin,
            "room deleted"
        );
        self.hooks.emit(RoomEvent::Deleted {
            room: &name,
            tombstone: &deleted.tombstone,
        });
        Ok(deleted)
    }

    /// Closes `name` in memory (only if its state is within `covering`, when given), takes
    /// it out of the registry and bars opening it until the returned sender is dropped or
    /// signalled (see [`RoomRegistry::open`]). Waits for another deletion of it to finish.
    #[allow(clippy::type_complexity)]
    async fn close_and_bar(
        &self,
        name: &str,
        covering: Option<&[u8]>,
        code: u16,
        reason: &str,
    ) -> Result<
        (
            Option<(Arc<Room>, Vec<u8>)>,
            tokio::sync::watch::Sender<bool>,
        ),
        DeleteError,
    > {
        let (done, _keep) = tokio::sync::watch::channel(false);
        loop {
            let wait = {
                let mut rooms = lock(&self.rooms);
                let mut deleting = lock(&self.deleting);
                match deleting.get(name) {
                    Some(rx) => rx.clone(),
                    None => {
                        let live = match rooms.get(name) {
                            Some(room) => match room.close_for_delete(covering, code, reason) {
                                Ok(sv) => Some((room.clone(), sv)),
                                Err(_) => {
                                    return Err(DeleteError::NotCovered {
                                        room: name.to_string(),
                                    })
                                }
                            },
                            None => None,
                        };
                        rooms.remove(name);
                        deleting.insert(name.to_string(), done.subscribe());
                        return Ok((live, done));
                    }
                }
            };
            let mut rx = wait;
            // Another deletion of this room is running; go after it.
            let _ = rx.wait_for(|d| *d).await;
        }
    }

    /// Refuses (before anything is closed) when the stored copy of `name` holds more than
    /// `covering`. Edits made after this check reach the room in memory, which
    /// [`RoomRegistry::close_and_bar`] checks under its lock (a room that is not loaded yet
    /// has no sessions, so nothing can edit it).
    async fn check_stored_covered(&self, name: &str, covering: &[u8]) -> Result<(), DeleteError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let meta = store
            .meta(name)
            .await
            .map_err(|source| DeleteError::Store {
                room: name.to_string(),
                source,
            })?;
        match meta {
            Some(m) if !crate::store::state_vector_covers(covering, &m.state_vector) => {
                Err(DeleteError::NotCovered {
                    room: name.to_string(),
                })
            }
            _ => Ok(()),
        }
    }

    /// Lifts the bar [`RoomRegistry::close_and_bar`] set.
    fn unbar(&self, name: &str, done: tokio::sync::watch::Sender<bool>) {
        lock(&self.deleting).remove(name);
        let _ = done.send(true);
    }

    /// Drops this node's copy of room `name` so that it can be synced again from a peer
    /// (the `invalidate` maintenance command): only if the copy holds nothing beyond
    /// `covering` (the peer's state vector), else [`DeleteError::NotCovered`] and the room is
    /// kept. Sessions are closed with 1012 (they reconnect). No tombstone is recorded.
    /// Returns whether there was a copy.
    pub async fn discard(&self, name: &str, covering: &[u8]) -> Result<bool, DeleteError> {
        self.check_stored_covered(name, covering).await?;
        let (live, done) = self
            .close_and_bar(name, Some(covering), 1012, "room reset: syncing it again")
            .await?;
        let result = async {
            let mut existed = live.as_ref().is_some_and(|(r, _)| r.has_content());
            if let Some(store) = &self.store {
                let err = |source| DeleteError::Store {
                    room: name.to_string(),
                    source,
                };
                existed |= store.discard_room(name).await.map_err(err)?;
            }
            Ok(existed)
        }
        .await;
        self.unbar(name, done);
        result
    }

    /// The store and tombstone half of [`RoomRegistry::delete`], with the room closed.
    async fn delete_closed(
        &self,
        mut tombstone: Tombstone,
        live: Option<(Arc<Room>, Vec<u8>)>,
    ) -> Result<Deleted, DeleteError> {
        let name = tombstone.room.clone();
        let mut existed = false;
        if let Some((room, sv)) = &live {
            existed = room.has_content();
            tombstone.state_vector = crate::store::merge_state_vectors(&tombstone.state_vector, sv);
        }
        let store_err = |source| DeleteError::Store {
            room: name.clone(),
            source,
        };
        if let Some(store) = &self.store {
            let (stored, had_rows) = store.delete_room(tombstone).await.map_err(store_err)?;
            existed |= had_rows;
            tombstone = stored;
        }
        let tombstone = self.tombstones.merge(tombstone);
        Ok(Deleted { tombstone, existed })
    }

    /// The store rooms persist to, if any.
    pub fn store(&self) -> Option<&Arc<dyn Store>> {
        self.store.as_ref()
    }

    /// Returns the room with its stored state loaded, creating it if needed. A room whose
    /// stored state cannot be loaded is dropped from memory again and reported; other rooms
    /// are unaffected.
    pub async fn open(&self, name: &str) -> Result<Arc<Room>, OpenError> {
        let room = loop {
            let wait = lock(&self.deleting).get(name).cloned();
            match wait {
                Some(mut rx) => {
                    let _ = rx.wait_for(|d| *d).await;
                }
                None => match self.create_unless_deleting(name)? {
                    Some(room) => break room,
                    None => continue,
                },
            }
        };
        if let Err(e) = room.load().await {
            let mut rooms = lock(&self.rooms);
            if rooms.get(name).is_some_and(|r| Arc::ptr_eq(r, &room)) {
                rooms.remove(name);
            }
            tracing::error!(room = name, error = %e, "room could not be opened");
            return Err(OpenError::Load(e.to_string()));
        }
        Ok(room)
    }

    /// Opens a room only if it exists: in memory, or in the store. `Ok(None)` otherwise;
    /// looking never creates a room.
    pub async fn open_existing(&self, name: &str) -> Result<Option<Arc<Room>>, OpenError> {
        if let Some(room) = self.get(name) {
            room.load()
                .await
                .map_err(|e| OpenError::Load(e.to_string()))?;
            return Ok(room.has_content().then_some(room));
        }
        {
            let Some(store) = &self.store else {
                return Ok(None);
            };
            match store.meta(name).await {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(None),
                Err(e) => return Err(OpenError::Load(e.to_string())),
            }
        }
        self.open(name).await.map(Some)
    }

    /// The settings in force.
    pub fn settings(&self) -> &RoomSettings {
        &self.settings
    }

    /// Returns the room, creating it if needed. Concurrent callers get the same room. A
    /// room that is being deleted is returned closed: prefer [`RoomRegistry::open`], which
    /// waits for the deletion.
    pub fn get_or_create(&self, name: &str) -> Result<Arc<Room>, RegistryError> {
        let mut rooms = lock(&self.rooms);
        if let Some(room) = rooms.get(name) {
            return Ok(room.clone());
        }
        if lock(&self.deleting).contains_key(name) {
            // Being deleted: a closed room that nothing can join or edit.
            let room = Room::new(name, false, self.settings.outbound_queue);
            lock(&room.state).closed = true;
            return Ok(Arc::new(room));
        }
        let room = self.create_locked(&mut rooms, name)?;
        drop(rooms);
        self.created(name);
        Ok(room)
    }

    /// Like [`RoomRegistry::get_or_create`], but `None` while the room is being deleted.
    fn create_unless_deleting(&self, name: &str) -> Result<Option<Arc<Room>>, RegistryError> {
        let mut rooms = lock(&self.rooms);
        if let Some(room) = rooms.get(name) {
            return Ok(Some(room.clone()));
        }
        if lock(&self.deleting).contains_key(name) {
            return Ok(None);
        }
        let room = self.create_locked(&mut rooms, name)?;
        drop(rooms);
        self.created(name);
        Ok(Some(room))
    }

    /// Creates and registers a room (the registry lock held by the caller).
    fn create_locked(
        &self,
        rooms: &mut HashMap<Arc<str>, Arc<Room>>,
        name: &str,
    ) -> Result<Arc<Room>, RegistryError> {
        if rooms.len() >= self.settings.max_rooms {
            return Err(RegistryError::AtCapacity(rooms.len()));
        }
        let pinned = self.settings.pinned.contains(name);
        let room = Arc::new(
            Room::with_store(
                name,
                pinned,
                self.settings.outbound_queue,
                self.hooks.clone(),
                self.store.clone(),
            )
            .with_quotas(self.settings.quotas)
            .with_tombstones(self.tombstones.clone()),
        );
        rooms.insert(Arc::from(name), room.clone());
        Ok(room)
    }

    /// Announces a room created by [`RoomRegistry::create_locked`] (lock released).
    fn created(&self, name: &str) {
        tracing::debug!(room = name, "room created");
        self.hooks.emit(RoomEvent::Created { room: name });
    }

    /// The room if it is in memory.
    pub fn get(&self, name: &str) -> Option<Arc<Room>> {
        lock(&self.rooms).get(name).cloned()
    }

    /// Rooms in memory.
    pub fn len(&self) -> usize {
        lock(&self.rooms).len()
    }

    /// Whether no room is in memory.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rooms in memory that have content (a room exists once it has content) and pinned
    /// rooms, by name.
    pub fn list(&self) -> Vec<RoomInfo> {
        let rooms: Vec<Arc<Room>> = lock(&self.rooms).values().cloned().collect();
        let mut out: Vec<RoomInfo> = rooms
            .iter()
            .filter(|r| r.is_pinned() || r.has_content())
            .map(|r| RoomInfo {
                name: r.name().to_string(),
                connections: r.session_count(),
                pinned: r.is_pinned(),
                store_error: r.store_failure(),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Every room in memory.
    pub fn rooms(&self) -> Vec<Arc<Room>> {
        lock(&self.rooms).values().cloned().collect()
    }

    /// Evicts rooms that have had no session for the idle timeout. Returns their names.
    pub fn sweep(&self, now: Instant) -> Vec<Arc<str>> {
        let idle_for = self.settings.idle_timeout;
        let mut rooms = lock(&self.rooms);
        let candidates: Vec<Arc<str>> = rooms
            .iter()
            .filter(|(_, r)| !r.pinned && r.idle_since().is_some())
            .map(|(k, _)| k.clone())
            .collect();
        let mut evicted = Vec::new();
        for name in candidates {
            let close = rooms
                .get(&name)
                .is_some_and(|r| r.close_if_idle(idle_for, now));
            if close {
                rooms.remove(&name);
                tracing::debug!(room = &*name, "idle room evicted");
                evicted.push(name);
            }
        }
        drop(rooms);
        for name in &evicted {
            self.hooks.emit(RoomEvent::Evicted { room: name });
        }
        evicted
    }
}

#[cfg(test)]
mod tests;
