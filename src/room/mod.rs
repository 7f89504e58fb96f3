//! Rooms: one Yjs document with its awareness, the sessions connected to it, and the
//! registry that keeps rooms in memory.
//!
//! A [`Room`] owns a `yrs` [`Doc`](yrs::Doc) and its clients' awareness states behind a short `std` mutex that is never held across
//! an `.await`: applying an update, encoding the change once, and handing the same
//! [`Bytes`](bytes::Bytes) to every session's bounded queue all happen inside one critical
//! section, so every session sees changes in the same order. A session whose queue is full
//! (in frames or in bytes, [`crate::queue`]) is
//! kicked with close code 4429 (it resyncs when it reconnects) instead of silently losing
//! frames.
//!
//! | module | owns |
//! |---|---|
//! | `doc` | [`Room`]: the document, awareness, the room's session table, apply and answer |
//! | `awareness` | the room's awareness states by client id: which update is news, tombstones, the full state for joiners |
//! | `persist` | a room's side of durability: load before sync, tickets, durable-now, repair |
//! | `fanout` | the per-session entries a room keeps and the one-buffer broadcast to them |
//! | `registry` | [`RoomRegistry`]: on-demand create, load-before-sync, capacity, idle eviction, pinning, delete and discard |
//! | `session` | [`Session`]: one client connection's state (queue, 102 acknowledgements, awareness ids, opt-ins, [`Grant`]) and its message handling |
//! | `grant` | [`Grant`]: which rooms a client may join and whether it may write |
//! | `close` | [`CloseReason`] (every close and refusal, with its code) and [`Kick`] |
//! | `hooks` | [`Hooks`] for embedding programs and [`Replicator`], the interface the mesh implements |
//! | `quotas` | [`Quotas`] and the check an update passes before it is applied |
//! | `json` | [`doc_to_json`] |
//! | `name` | room-name validation and decoding |
//! | `tombstones` | tombstones of deleted rooms in memory and the gate every update passes |
//!
//! Dependencies point down: `room` uses `protocol` and `store`, and reaches the mesh only
//! through [`Replicator`], which the mesh implements. Everything here is free of socket I/O;
//! the WebSocket shell (one task per connection: reads, writes, pings, close frames) lives
//! in `server::ws` and drives a [`Session`].

mod awareness;
mod close;
mod doc;
mod fanout;
mod grant;
mod hooks;
mod json;
mod name;
mod persist;
mod quotas;
mod registry;
mod session;
mod tombstones;

use std::sync::{Mutex, MutexGuard};

pub use close::{
    Close, CloseReason, Kick, CLOSE_AT_CAPACITY, CLOSE_CONNECTION_LOST, CLOSE_FORBIDDEN,
    CLOSE_GOING_AWAY, CLOSE_MALFORMED, CLOSE_NORMAL, CLOSE_ROOM_DELETED, CLOSE_ROOM_RESET,
    CLOSE_ROOM_UNAVAILABLE, CLOSE_TIMEOUT, CLOSE_TOO_BIG, CLOSE_TOO_SLOW, CLOSE_UNAUTHORIZED,
};
pub use doc::{Applied, Room, RoomError, DEFAULT_QUEUE_BYTES};
pub use fanout::{AwarenessChange, CommandDelivery, Joined, SessionKind};
pub use grant::{Grant, RoomScope};
pub use hooks::{Hooks, Replicator, RoomEvent};
pub use json::doc_to_json;
pub use name::{decode_room_segment, validate_room_name, RoomNameError, MAX_ROOM_NAME_BYTES};
pub use quotas::Quotas;
pub use registry::{
    DeleteError, Deleted, OpenError, RegistryError, RoomInfo, RoomRegistry, RoomSettings,
};
pub use session::{Session, SessionOptions};
pub use tombstones::{update_covered, with_undelete_marker, Gate, Tombstones};

/// Identifies one session (client or peer link) within the node.
pub type SessionId = u64;

/// A Yjs client id as used in awareness entries.
pub type ClientId = yrs::ClientID;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a room lock leaves yrs state that is still consistent at the
    // transaction level; keep serving rather than poisoning the whole room forever.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests;
