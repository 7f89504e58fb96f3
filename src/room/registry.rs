//! [`RoomRegistry`]: every room in memory, by name. It creates rooms on demand (capped at
//! `max_rooms`), loads a room's stored state before anyone syncs it, keeps pinned rooms,
//! evicts rooms idle past the timeout (driven from outside through [`RoomRegistry::sweep`]),
//! and deletes or discards rooms while barring them from being reopened meanwhile.
//!
//! The registry map sits behind a short `std` mutex (never held across an `.await`; a
//! room's own lock may be taken inside it, never the other way round). It owns the room
//! layer's outlets: the embedding program's [`Hooks`] and the [`Replicator`] set once at
//! wiring time, shared by every room.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::hooks::Outlets;
use super::{lock, CloseReason, Hooks, Quotas, Replicator, Room, Tombstones};
use crate::store::{Store, StoreError, Tombstone};

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
    /// Outbound queue bound per session, in bytes (the last frame aside).
    pub outbound_queue_bytes: usize,
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
            outbound_queue_bytes: super::DEFAULT_QUEUE_BYTES,
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
    /// Hooks and replicator, shared with every room.
    outlets: Outlets,
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
        let registry = RoomRegistry {
            rooms: Mutex::new(HashMap::new()),
            deleting: Mutex::new(HashMap::new()),
            tombstones: Arc::new(Tombstones::new()),
            outlets: Outlets::new(Arc::new(hooks)),
            settings,
            store,
        };
        for name in &registry.settings.pinned {
            let name: Arc<str> = Arc::from(name.as_str());
            let room = Arc::new(registry.new_room(&name, true));
            lock(&registry.rooms).insert(name.clone(), room);
            registry.outlets.created(&name);
        }
        registry
    }

    /// Sends every room's changes, awareness and deletions to `replicator` (after the
    /// hooks, outside the room lock), from now on and for rooms already in memory. Set once,
    /// when the node is wired; later calls are ignored and return `false`. A `Weak`, so a
    /// replicator that holds the registry does not keep itself alive.
    pub fn set_replicator(&self, replicator: Weak<dyn Replicator>) -> bool {
        self.outlets.set_replicator(replicator)
    }

    /// Counts every document and awareness change of this registry's rooms in `counters`
    /// (once; a second call is ignored and returns false).
    pub fn set_counters(&self, counters: crate::metrics::RoomCounters) -> bool {
        self.outlets.set_counters(counters)
    }

    /// A new room of this registry (not yet registered).
    fn new_room(&self, name: &str, pinned: bool) -> Room {
        Room::create(
            name,
            pinned,
            self.settings.outbound_queue,
            self.outlets.clone(),
            self.store.clone(),
        )
        .with_quotas(self.settings.quotas)
        .with_queue_bytes(self.settings.outbound_queue_bytes)
        .with_tombstones(self.tombstones.clone())
    }

    /// The tombstones of deleted rooms (load them from the store at start).
    pub fn tombstones(&self) -> &Arc<Tombstones> {
        &self.tombstones
    }

    /// Deletes room `tombstone.room`: closes it (its sessions get
    /// [`CloseReason::RoomDeleted`], 4410), removes it from memory and from the store, and records the
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
            .close_and_bar(&name, covering, &CloseReason::RoomDeleted)
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
        self.outlets.deleted(&name, &deleted.tombstone);
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
        reason: &CloseReason,
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
                            Some(room) => match room.close_for_delete(covering, reason) {
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
    /// kept. Sessions are closed with [`CloseReason::RoomReset`] (1012; they reconnect). No tombstone is recorded.
    /// Returns whether there was a copy.
    pub async fn discard(&self, name: &str, covering: &[u8]) -> Result<bool, DeleteError> {
        self.check_stored_covered(name, covering).await?;
        let (live, done) = self
            .close_and_bar(name, Some(covering), &CloseReason::RoomReset)
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
            room.mark_closed();
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
        let room = Arc::new(self.new_room(name, pinned));
        rooms.insert(Arc::from(name), room.clone());
        Ok(room)
    }

    /// Announces a room created by [`RoomRegistry::create_locked`] (lock released).
    fn created(&self, name: &str) {
        tracing::debug!(room = name, "room created");
        self.outlets.created(name);
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
            .filter(|(_, r)| !r.is_pinned() && r.idle_since().is_some())
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
            self.outlets.evicted(name);
        }
        evicted
    }
}
