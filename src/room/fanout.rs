//! Fan-out: the record a room keeps of each session, and the broadcast that hands one
//! encoded frame to every session's bounded queue.
//!
//! Everything here runs under the room lock and never waits: a queue that is full (in frames,
//! `limits.outbound_queue`, or in bytes, `limits.outbound_queue_bytes`; see [`crate::queue`])
//! gets its session kicked (4429, it resyncs on reconnect) instead of a frame silently dropped, and
//! every receiver shares the same `Bytes` (a clone is a reference-count increment).

use std::sync::Arc;

use bytes::Bytes;

use super::{ClientId, CloseReason, Kick, SessionId};
use crate::queue::{self, TrySendError};

/// What a session gets when it joins a room.
#[derive(Debug)]
pub struct Joined {
    /// The session's id within the node.
    pub id: SessionId,
    /// Frames to write to this session, in order. The room already queued the opening
    /// SyncStep1 and the current awareness states.
    pub outbound: queue::Receiver,
    /// Sender for replies addressed only to this session (e.g. SyncStep2).
    pub reply: queue::Sender,
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

/// A room's record of one session: what fan-out needs, kept under the room lock.
pub(super) struct SessionEntry {
    pub(super) id: SessionId,
    pub(super) kind: SessionKind,
    pub(super) tx: queue::Sender,
    pub(super) kick: Arc<Kick>,
    /// Opted in to maintenance commands (`commands=1`).
    pub(super) commands: bool,
    /// The session's own Yjs client id: the one entry of the first awareness message it sent
    /// (a stock client announces itself right after connecting; later messages may carry
    /// other clients' states, which y-websocket re-sends).
    pub(super) client: Option<ClientId>,
    /// Whether the session sent an awareness message yet.
    pub(super) announced: bool,
}

/// A session a maintenance command was queued for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandDelivery {
    /// The session.
    pub session: SessionId,
    /// Its Yjs client id, when its first awareness message named exactly one client.
    pub client: Option<ClientId>,
}

/// Summary of an applied awareness update, for the session's bookkeeping.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AwarenessChange {
    /// Client ids whose state is now present (added or renewed).
    pub present: Vec<ClientId>,
    /// Client ids whose state was removed.
    pub removed: Vec<ClientId>,
}

/// Queues `frame` to every session; a link session does not get back what it sent.
pub(super) fn broadcast(sessions: &[SessionEntry], frame: &Bytes, from: Option<SessionId>) {
    for s in sessions {
        if s.kind == SessionKind::Link && Some(s.id) == from {
            continue;
        }
        if s.kick.is_kicked() {
            continue;
        }
        match s.tx.try_send(frame.clone()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                tracing::warn!(session = s.id, "outbound queue full; closing the session");
                s.kick.close(too_slow());
            }
            Err(TrySendError::Closed(_)) => {}
        }
    }
}

/// The reason a session whose queue overflowed is closed with.
pub(super) fn too_slow() -> CloseReason {
    CloseReason::TooSlow("outbound queue full".into())
}
