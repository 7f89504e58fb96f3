//! What rooms tell the world outside the room layer: [`Hooks`], the callbacks an embedding
//! program registers, and [`Replicator`], the interface through which room changes reach the
//! node's replication (the mesh implements it; the room layer owns it, so the dependency
//! points from the mesh down to rooms, never back).
//!
//! Both are called on the task that caused the event, after the room lock is released, hooks
//! first and then the replicator. A panic in either is caught and logged.

use std::sync::{Arc, OnceLock, Weak};

use bytes::Bytes;

use super::SessionId;
use crate::store::Tombstone;

/// Something that happened to a room, delivered to [`Hooks`].
#[derive(Debug, Clone, Copy)]
pub enum RoomEvent<'a> {
    /// The room was created in memory (first client, first POST, pinned at start).
    Created {
        /// Room name.
        room: &'a str,
    },
    /// A client session joined the room (after its credential was checked); `user` is the
    /// authenticated user id of a signed user token.
    Joined {
        /// Room name.
        room: &'a str,
        /// The session; [`RoomEvent::Changed`] names it as `origin`.
        session: SessionId,
        /// The authenticated user, if any.
        user: Option<&'a str>,
    },
    /// A client session left the room.
    Left {
        /// Room name.
        room: &'a str,
        /// The session.
        session: SessionId,
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
    /// The room was deleted ([`RoomRegistry::delete`](super::RoomRegistry::delete)): its sessions were closed, its stored
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

/// How room changes reach the node's replication. The mesh implements this; the
/// [`RoomRegistry`](super::RoomRegistry) holds one (set once when the node is wired, see
/// [`RoomRegistry::set_replicator`](super::RoomRegistry::set_replicator)) and calls it
/// after every change, outside the room lock. Calls must be short and must not block.
pub trait Replicator: Send + Sync {
    /// `update` (a Yjs v1 update) changed `room`; `origin` is the session or link it came
    /// from (`None` for the node itself). Never send it back to `origin` (split horizon).
    fn changed(&self, room: &str, update: &Bytes, origin: Option<SessionId>);
    /// Awareness of `room` changed; `update` is the encoded awareness update. `origin` as
    /// for [`Replicator::changed`] (`None` for removals the node made itself).
    fn awareness(&self, room: &str, update: &Bytes, origin: Option<SessionId>);
    /// A room was deleted here and `tombstone` recorded.
    fn deleted(&self, tombstone: &Tombstone);
}

/// Where a registry and its rooms send their events: the embedding program's hooks, then the
/// replicator once one is set, and the change counters. Cloned into every room (three reference
/// counts).
#[derive(Clone)]
pub(crate) struct Outlets {
    hooks: Arc<Hooks>,
    replicator: Arc<OnceLock<Weak<dyn Replicator>>>,
    /// The node's change counters, once set ([`Outlets::set_counters`]).
    counters: Arc<OnceLock<crate::metrics::RoomCounters>>,
}

impl Outlets {
    /// Events go to `hooks` (and to a replicator once [`Outlets::set_replicator`] is called
    /// on this value or a clone of it).
    pub(crate) fn new(hooks: Arc<Hooks>) -> Self {
        Outlets {
            hooks,
            replicator: Arc::default(),
            counters: Arc::default(),
        }
    }

    /// Sets the counters of document and awareness changes, once; returns whether this call
    /// set them.
    pub(crate) fn set_counters(&self, counters: crate::metrics::RoomCounters) -> bool {
        self.counters.set(counters).is_ok()
    }

    /// Sets the replicator, once; returns whether this call set it.
    pub(crate) fn set_replicator(&self, replicator: Weak<dyn Replicator>) -> bool {
        self.replicator.set(replicator).is_ok()
    }

    /// The change counters, once set.
    pub(crate) fn counters(&self) -> Option<&crate::metrics::RoomCounters> {
        self.counters.get()
    }

    fn replicator(&self) -> Option<Arc<dyn Replicator>> {
        self.replicator.get().and_then(Weak::upgrade)
    }

    /// Runs `f` on the replicator, if one is set and alive; a panic is caught and logged.
    fn replicate(&self, what: &str, f: impl FnOnce(&dyn Replicator)) {
        if let Some(r) = self.replicator() {
            let run = std::panic::AssertUnwindSafe(|| f(&*r));
            if std::panic::catch_unwind(run).is_err() {
                tracing::error!(event = what, "the room replicator panicked");
            }
        }
    }

    pub(crate) fn created(&self, room: &str) {
        self.hooks.emit(RoomEvent::Created { room });
    }

    pub(crate) fn evicted(&self, room: &str) {
        self.hooks.emit(RoomEvent::Evicted { room });
    }

    pub(crate) fn joined(&self, room: &str, session: SessionId, user: Option<&str>) {
        if !self.hooks.is_empty() {
            self.hooks.emit(RoomEvent::Joined {
                room,
                session,
                user,
            });
        }
    }

    pub(crate) fn left(&self, room: &str, session: SessionId) {
        if !self.hooks.is_empty() {
            self.hooks.emit(RoomEvent::Left { room, session });
        }
    }

    pub(crate) fn changed(&self, room: &str, update: &Bytes, origin: Option<SessionId>) {
        if let Some(c) = self.counters.get() {
            c.update_applied();
        }
        if !self.hooks.is_empty() {
            self.hooks.emit(RoomEvent::Changed {
                room,
                update,
                origin,
            });
        }
        self.replicate("changed", |r| r.changed(room, update, origin));
    }

    pub(crate) fn awareness(&self, room: &str, update: &Bytes, origin: Option<SessionId>) {
        if let Some(c) = self.counters.get() {
            c.awareness_applied();
        }
        if !self.hooks.is_empty() {
            self.hooks.emit(RoomEvent::Awareness {
                room,
                update,
                origin,
            });
        }
        self.replicate("awareness", |r| r.awareness(room, update, origin));
    }

    pub(crate) fn deleted(&self, room: &str, tombstone: &Tombstone) {
        self.hooks.emit(RoomEvent::Deleted { room, tombstone });
        self.replicate("deleted", |r| r.deleted(tombstone));
    }
}
