//! [`Room`]: one Yjs document with its awareness and the table of sessions connected to it.
//!
//! The document and its [`AwarenessTable`] live behind one short `std` mutex that is never held
//! across an `.await`. Applying an update, encoding the change from the transaction that
//! applied it (once), queueing that one `Bytes` to every session and appending it to the store
//! happen inside one critical section, so every session and the store's log see changes in
//! the order the room applied them. Hooks and the replicator run after the lock is released.
//! The room never touches a socket; sessions reach it through [`super::Session`].

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Transact};

use super::awareness::AwarenessTable;
use super::fanout::{broadcast, too_slow, SessionEntry};
use super::hooks::Outlets;
use super::{
    doc_to_json, lock, AwarenessChange, ClientId, CloseReason, CommandDelivery, Gate, Grant, Hooks,
    Joined, Kick, Quotas, SessionId, SessionKind, Tombstones,
};
use crate::protocol::{self, scan};
use crate::store::{CommitTicket, Store};

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
    /// The session's [`Grant`] does not cover this room.
    #[error("room {0:?} is not allowed for this connection")]
    NotAllowed(String),
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

/// Everything behind the room lock.
pub(super) struct RoomState {
    pub(super) doc: Doc,
    pub(super) awareness: AwarenessTable,
    sessions: Vec<SessionEntry>,
    closed: bool,
    /// When the last session left (None while sessions are connected).
    idle_since: Option<Instant>,
}

/// One document and its connected sessions. See the module docs for the locking rules.
pub struct Room {
    pub(super) name: Arc<str>,
    pinned: bool,
    /// Hooks, then the replicator: told of every change after the lock is released.
    outlets: Outlets,
    queue_capacity: usize,
    /// Bound of each session's outbound queue in bytes (see [`crate::queue`]).
    queue_bytes: usize,
    quotas: Quotas,
    pub(super) store: Option<Arc<dyn Store>>,
    /// Tombstones of deleted rooms: updates for this room name are checked against them.
    tombstones: Option<Arc<Tombstones>>,
    /// Set once the stored state is in the document (load before sync).
    pub(super) loaded: tokio::sync::OnceCell<()>,
    /// Highest store ticket issued for this room (0 = none).
    pub(super) last_ticket: std::sync::atomic::AtomicU64,
    pub(super) state: Mutex<RoomState>,
}

/// Default bound of a session's outbound queue in bytes (32 MiB; `limits.outbound_queue_bytes`).
pub const DEFAULT_QUEUE_BYTES: usize = 32 * 1024 * 1024;

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Room")
            .field("name", &self.name)
            .field("pinned", &self.pinned)
            .finish_non_exhaustive()
    }
}

impl Room {
    /// Creates an empty room. `queue_capacity` bounds each session's outbound queue (frames).
    pub fn new(name: impl Into<Arc<str>>, pinned: bool, queue_capacity: usize) -> Self {
        Self::with_hooks(name, pinned, queue_capacity, Arc::new(Hooks::default()))
    }

    /// Like [`Room::new`], delivering [`RoomEvent::Changed`](super::RoomEvent::Changed) to `hooks`.
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
        Self::create(name, pinned, queue_capacity, Outlets::new(hooks), store)
    }

    /// [`Room::with_store`] sending events to `outlets` (a registry's hooks and replicator).
    pub(super) fn create(
        name: impl Into<Arc<str>>,
        pinned: bool,
        queue_capacity: usize,
        outlets: Outlets,
        store: Option<Arc<dyn Store>>,
    ) -> Self {
        let doc = Doc::with_options(yrs::Options {
            // The node relays: formatting clean-up is the editing clients' (stock Yjs cleans
            // up after remote changes itself). With it off, nothing in a commit changes the
            // document after the update is applied, so the change can be encoded from the
            // transaction itself (see `apply_update`) and no observer is needed.
            cleanup_formatting: false,
            ..yrs::Options::default()
        });
        Room {
            name: name.into(),
            pinned,
            outlets,
            queue_capacity: queue_capacity.max(4),
            queue_bytes: DEFAULT_QUEUE_BYTES,
            loaded: tokio::sync::OnceCell::new(),
            quotas: Quotas::default(),
            last_ticket: std::sync::atomic::AtomicU64::new(0),
            store,
            tombstones: None,
            state: Mutex::new(RoomState {
                doc,
                awareness: AwarenessTable::default(),
                sessions: Vec::new(),
                closed: false,
                idle_since: Some(Instant::now()),
            }),
        }
    }

    /// This room with each session's outbound queue bounded at `bytes` (default
    /// [`DEFAULT_QUEUE_BYTES`]); a session whose queue holds that much is closed with 4429.
    pub fn with_queue_bytes(mut self, bytes: usize) -> Self {
        self.queue_bytes = bytes.max(1);
        self
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

    /// The room's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the room is exempt from idle eviction.
    pub fn is_pinned(&self) -> bool {
        self.pinned
    }

    /// Whether the document holds anything. A room *exists* (is listed, stored, announced
    /// to peers) only once it has content.
    pub fn has_content(&self) -> bool {
        let st = lock(&self.state);
        let txn = st.doc.transact();
        !txn.state_vector().is_empty() || txn.has_missing_updates()
    }

    /// Number of connected sessions.
    pub fn session_count(&self) -> usize {
        lock(&self.state).sessions.len()
    }

    /// Adds a session that may do everything ([`Grant::all_write`]), not opted in to
    /// maintenance commands. Its queue starts with SyncStep1 and, if any, all awareness
    /// states. Client connections join through [`super::Session`], which holds their grant.
    pub fn join(&self, id: SessionId, kind: SessionKind) -> Result<Joined, RoomError> {
        self.join_as(id, kind, &Grant::all_write(), false)
    }

    /// Like [`Room::join`] for a session holding `grant`: refused with
    /// [`RoomError::NotAllowed`] unless the grant covers this room. `commands` opts the
    /// session in to maintenance commands ([`Room::deliver_command`]).
    pub fn join_as(
        &self,
        id: SessionId,
        kind: SessionKind,
        grant: &Grant,
        commands: bool,
    ) -> Result<Joined, RoomError> {
        if !grant.allows_room(&self.name) {
            return Err(RoomError::NotAllowed(self.name.to_string()));
        }
        let mut st = lock(&self.state);
        if st.closed {
            return Err(RoomError::Closed);
        }
        let (tx, rx) = crate::queue::channel(self.queue_capacity, self.queue_bytes);
        let sv = st.doc.transact().state_vector().encode_v1();
        // The channel is new and has room for at least 4 frames.
        let _ = tx.try_send(protocol::encode_sync_step1(&sv));
        if let Some(frame) = st
            .awareness
            .encode_present()
            .map(|u| protocol::encode_awareness(&u))
        {
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
    pub fn leave<'a>(
        &self,
        id: SessionId,
        awareness_clients: impl IntoIterator<Item = &'a ClientId>,
    ) {
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

    /// Tells the hooks a client session joined (`true`) or left.
    pub(crate) fn emit_session(&self, session: SessionId, joined: bool, user: Option<&str>) {
        if joined {
            self.outlets.joined(&self.name, session, user);
        } else {
            self.outlets.left(&self.name, session);
        }
    }

    /// The node's change counters, when the room belongs to a node's registry.
    pub(crate) fn counters(&self) -> Option<&crate::metrics::RoomCounters> {
        self.outlets.counters()
    }

    fn emit_awareness(&self, update: &Bytes, origin: Option<SessionId>) {
        self.outlets.awareness(&self.name, update, origin);
    }

    /// Answers a SyncStep1: the SyncStep2 frame holding what `state_vector` lacks (possibly an
    /// empty update, which the stock client still needs to consider itself synced).
    pub fn sync_step2_for(&self, state_vector: &[u8]) -> Result<Bytes, RoomError> {
        let sv = scan::decode_state_vector(state_vector)
            .map_err(|e| RoomError::InvalidStateVector(e.to_string()))?;
        Ok(self.sync_step2_for_state_vector(&sv))
    }

    /// [`Room::sync_step2_for`] with the state vector decoded already.
    pub fn sync_step2_for_state_vector(&self, sv: &StateVector) -> Bytes {
        let st = lock(&self.state);
        let update = st.doc.transact().encode_state_as_update_v1(sv);
        drop(st);
        protocol::encode_sync_step2(&update)
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
            scan::decode_update(update).map_err(|e| RoomError::InvalidUpdate(e.to_string()))?;
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
        self.quotas
            .check(
                self.store.as_deref(),
                &self.name,
                &st.doc,
                &decoded,
                update.len(),
            )
            .map_err(RoomError::QuotaExceeded)?;
        let (waiting, change) = {
            let mut txn = st.doc.transact_mut();
            txn.apply_update(decoded)
                .map_err(|e| RoomError::InvalidUpdate(e.to_string()))?;
            // The change, encoded before the commit squashes the new blocks into their
            // neighbours: after the squash, a keystroke at the end of a typed run would be
            // sliced out of the whole merged run, walking it from its start, so each update
            // cost O(length of the run) (docs/benchmarks.md, finding 5). Before it, the new
            // block stands alone. Only a transaction that changed something has a change.
            let change = changed(&txn).then(|| txn.encode_update_v1());
            (txn.has_missing_updates(), change)
        };
        // An update whose dependencies have not arrived yet is held by yrs and changes
        // nothing visible; store it as received so it survives a crash all the same.
        let held = if waiting {
            self.store_raw(&st, update)
        } else {
            None
        };
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
            let sv = st.doc.transact().state_vector().encode_v1();
            match store.append_shared(&self.name, change.clone(), sv) {
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
        self.outlets.changed(&self.name, &change, from);
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
        // Scanned first: counts bounded by the payload, every state valid JSON (a state that
        // is not would break every client it reached, so none of the update is applied).
        let entries = scan::decode_awareness(payload)
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
            if let [e] = entries[..] {
                if !e.is_removal() {
                    s.client = Some(ClientId::new(e.client));
                }
            }
        }
        let summary = st.awareness.apply(&entries);
        let Some(summary) = summary else {
            return Ok(AwarenessChange::default());
        };
        broadcast(&st.sessions, frame, Some(from));
        drop(st);
        self.emit_awareness(payload, Some(from));
        Ok(summary)
    }

    /// All current awareness states as one frame (the answer to QueryAwareness). An empty
    /// update (zero entries) when nobody has state.
    pub fn awareness_frame(&self) -> Bytes {
        let st = lock(&self.state);
        protocol::encode_awareness(&st.awareness.encode_present().unwrap_or_else(|| vec![0]))
    }

    /// The whole document as one v1 update.
    pub fn encode_state(&self) -> Vec<u8> {
        let st = lock(&self.state);
        let update = st
            .doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        update
    }

    /// The document's root types as JSON (see [`doc_to_json`]).
    pub fn to_json(&self) -> serde_json::Value {
        let st = lock(&self.state);
        doc_to_json(&st.doc)
    }

    /// The document's encoded state vector.
    pub fn state_vector(&self) -> Vec<u8> {
        lock(&self.state).doc.transact().state_vector().encode_v1()
    }

    /// Runs `f` with the room's document under the room lock. Changes `f` makes are
    /// broadcast to every session like any other update. Do not hold the lock long: `f` must
    /// not block or await.
    pub fn with_doc<R>(&self, f: impl FnOnce(&Doc) -> R) -> R {
        let st = lock(&self.state);
        // `f` may run any number of transactions: an observer, there for the call only,
        // captures what each changed (before the commit squashes it, as `apply_update`).
        let captured: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
        let slot = captured.clone();
        let observing = st
            .doc
            .observe_after_transaction(WITH_DOC_OBSERVER, move |txn| {
                if changed(txn) {
                    let update = txn.encode_update_v1();
                    let mut slot = lock(&slot);
                    *slot = Some(match slot.take() {
                        // Several commits: merged into one change.
                        Some(prev) => yrs::merge_updates_v1([prev.as_slice(), update.as_slice()])
                            .unwrap_or(update),
                        None => update,
                    });
                }
            })
            .is_ok();
        let out = f(&st.doc);
        if observing {
            // No transaction is open: every one of this room is made and ended under the
            // room lock, which is held.
            let _ = st.doc.unobserve_after_transaction(WITH_DOC_OBSERVER);
        } else {
            tracing::error!(
                room = &*self.name,
                "cannot observe the document; edits made through with_doc are not broadcast"
            );
        }
        let change = lock(&captured).take();
        if let Some(change) = change {
            self.commit_change(st, change, None);
        }
        out
    }

    /// Closes the room at once: nothing can join or edit it any more.
    pub(super) fn mark_closed(&self) {
        lock(&self.state).closed = true;
    }

    /// Idle since when, if no session is connected.
    pub(super) fn idle_since(&self) -> Option<Instant> {
        lock(&self.state).idle_since
    }

    /// Marks the room closed if it is still idle; returns whether it was closed.
    pub(super) fn close_if_idle(&self, idle_for: Duration, now: Instant) -> bool {
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
    /// `reason` ([`CloseReason::RoomDeleted`], or [`CloseReason::RoomReset`] for a
    /// discard). Returns the room's state vector.
    pub(super) fn close_for_delete(
        &self,
        covering: Option<&[u8]>,
        reason: &CloseReason,
    ) -> Result<Vec<u8>, Vec<u8>> {
        let mut st = lock(&self.state);
        let sv = st.doc.transact().state_vector().encode_v1();
        if let Some(covering) = covering {
            if !crate::store::state_vector_covers(covering, &sv) {
                return Err(sv);
            }
        }
        st.closed = true;
        for s in &st.sessions {
            s.kick.close(reason.clone());
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
                Err(crate::queue::TrySendError::Full(_)) => s.kick.close(too_slow()),
                Err(crate::queue::TrySendError::Closed(_)) => {}
            }
        }
        out
    }

    /// Asks every session to close for `reason`.
    pub fn kick_all(&self, reason: &CloseReason) {
        for s in &lock(&self.state).sessions {
            s.kick.close(reason.clone());
        }
    }

    /// Whether the document already holds everything `update` carries: every insertion and
    /// every deletion (so applying it would change nothing). Used to tell a read-only
    /// session's harmless echo of known state from an edit it may not make.
    pub fn covers_update(&self, update: &[u8]) -> Result<bool, RoomError> {
        let decoded =
            scan::decode_update(update).map_err(|e| RoomError::InvalidUpdate(e.to_string()))?;
        let st = lock(&self.state);
        let txn = st.doc.transact();
        let sv = txn.state_vector();
        let inserted = decoded
            .insertions(true)
            .iter()
            .all(|(client, ranges)| ranges.iter().all(|r| r.end <= sv.get(client)));
        if !inserted {
            return Ok(false);
        }
        if decoded.delete_set().is_empty() {
            return Ok(true);
        }
        // Only now walk the document's blocks for its delete set.
        let deleted = txn.snapshot().delete_set;
        Ok(decoded.delete_set().iter().all(|(client, ranges)| {
            let mut have: Vec<std::ops::Range<u32>> = deleted
                .iter()
                .find(|(c, _)| *c == client)
                .map(|(_, r)| r.iter().cloned().collect())
                .unwrap_or_default();
            have.sort_by_key(|r| r.start);
            ranges.iter().all(|r| range_covered(r, &have))
        }))
    }
}

/// Whether the ranges `have` (sorted by start) cover all of `want`.
fn range_covered(want: &std::ops::Range<u32>, have: &[std::ops::Range<u32>]) -> bool {
    let mut at = want.start;
    for r in have {
        if at >= want.end {
            break;
        }
        if r.start <= at && r.end > at {
            at = r.end;
        }
    }
    at >= want.end
}

/// The key of the observer [`Room::with_doc`] holds while `f` runs.
const WITH_DOC_OBSERVER: &str = "ymesh-with-doc";

/// Whether a transaction changed the document (yrs's condition for an update event: its
/// state after differs from its state before, or it deleted something). The state moves
/// exactly when something was inserted, so no state vector is built to compare.
fn changed(txn: &yrs::TransactionMut<'_>) -> bool {
    !txn.delete_set().is_empty() || !txn.insert_set().is_empty()
}

/// Removes the states of `clients` that are present and broadcasts the removal; returns the
/// encoded awareness update (for the hooks) if anything was removed.
fn remove_awareness_locked<'a>(
    st: &mut RoomState,
    clients: impl IntoIterator<Item = &'a ClientId>,
) -> Option<Bytes> {
    let payload = Bytes::from(st.awareness.remove(clients)?);
    let frame = protocol::encode_awareness(&payload);
    broadcast(&st.sessions, &frame, None);
    Some(payload)
}
