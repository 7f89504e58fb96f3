//! [`Session`]: the state of one client connection on one room, and what it does with each
//! frame the client sends.
//!
//! A session owns everything about a connection that is not socket I/O: the sending side of
//! its bounded outbound queue (the connection's task in `server::ws` drains the other end), its
//! [`Kick`], the SYNC_STATUS (102) acknowledgements that wait for the disk, the awareness
//! client ids it introduced (removed when it leaves), its opt-ins (`commands=1`) and its
//! [`Grant`]. Joining checks the grant's rooms; an update or SyncStep2 from a session without
//! write is never applied. The server builds the grant (today always [`Grant::all_write`]);
//! authentication plugs in there without touching this module or the room.
//!
//! Nothing here waits while holding a lock: [`Session::handle_frame`] is synchronous and every
//! queue is written with `try_send`. Only a 102 echo that must wait for a commit goes to a
//! small per-session task (the ack worker), which keeps echoes in order.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;
use yrs::StateVector;

use super::awareness::ClientIds;
use super::fanout::too_slow;
use super::{
    Applied, ClientId, CloseReason, Grant, Kick, OpenError, Room, RoomError, RoomRegistry,
    SessionId, SessionKind,
};
use crate::protocol::{self, scan, Message, SyncMessage};
use crate::queue::{self, TrySendError};
use crate::store::{CommitTicket, Store};

/// What a client asked for when it connected (query parameters of its WebSocket URL).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionOptions {
    /// Receive maintenance commands (type 103): `commands=1`. No other client ever gets a
    /// 103 frame.
    pub commands: bool,
}

/// One client connection on one room. Dropping it leaves the room and removes the awareness
/// states the client introduced (their removal is broadcast).
pub struct Session {
    id: SessionId,
    room: Arc<Room>,
    grant: Grant,
    options: SessionOptions,
    /// Replies addressed only to this client (SyncStep2, 102 echoes, AUTH denials): the
    /// same bounded queue the room fans out to.
    reply: queue::Sender,
    kick: Arc<Kick>,
    /// Awareness client ids this client introduced and has not removed.
    awareness: ClientIds,
    acks: Acks,
    /// A read-only client was told (AUTH permission denied) that its edits are refused;
    /// told once per connection.
    denied: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("room", &self.room.name())
            .field("grant", &self.grant)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// How often [`Session::open`] looks a room up again when it was evicted between the lookup
/// and the join.
const JOIN_ATTEMPTS: usize = 8;

impl Session {
    /// Opens room `name` through `registry` (loading it first: load before sync) and joins
    /// it as session `id` holding `grant`. Returns the session and the receiving end of its
    /// outbound queue, which already holds the opening SyncStep1 and the room's awareness.
    ///
    /// Refused with the reason to close the connection with: [`CloseReason::Forbidden`]
    /// when the grant does not cover the room (checked before the room is created),
    /// [`CloseReason::AtCapacity`], or [`CloseReason::RoomUnavailable`].
    pub async fn open(
        registry: &RoomRegistry,
        name: &str,
        id: SessionId,
        grant: Grant,
        options: SessionOptions,
    ) -> Result<(Session, queue::Receiver), CloseReason> {
        if !grant.allows_room(name) {
            return Err(not_allowed(name));
        }
        for _ in 0..JOIN_ATTEMPTS {
            let room = registry.open(name).await.map_err(|e| match e {
                OpenError::Registry(e) => CloseReason::AtCapacity(e.to_string()),
                OpenError::Load(e) => {
                    CloseReason::RoomUnavailable(format!("room could not be opened: {e}"))
                }
            })?;
            match Session::join(room, id, grant.clone(), options) {
                Ok(joined) => return Ok(joined),
                Err(RoomError::Closed) => continue,
                Err(RoomError::NotAllowed(name)) => return Err(not_allowed(&name)),
                Err(e) => return Err(CloseReason::RoomUnavailable(e.to_string())),
            }
        }
        Err(CloseReason::RoomUnavailable(
            "room could not be opened".into(),
        ))
    }

    /// Joins `room` (already loaded) as session `id` holding `grant`; see
    /// [`Session::open`]. Fails with [`RoomError::NotAllowed`] when the grant does not cover
    /// the room and [`RoomError::Closed`] when the room was evicted or deleted meanwhile.
    pub fn join(
        room: Arc<Room>,
        id: SessionId,
        grant: Grant,
        options: SessionOptions,
    ) -> Result<(Session, queue::Receiver), RoomError> {
        let joined = room.join_as(id, SessionKind::Client, &grant, options.commands)?;
        let mut acks = Acks::new(
            room.store().cloned(),
            joined.reply.clone(),
            joined.kick.clone(),
        );
        acks.counters = room.counters().cloned();
        room.emit_session(id, true, grant.user());
        let session = Session {
            id,
            room,
            grant,
            options,
            reply: joined.reply,
            kick: joined.kick,
            awareness: ClientIds::default(),
            acks,
            denied: false,
        };
        Ok((session, joined.outbound))
    }

    /// The session's id within the node (the origin of the updates it applies).
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The room it joined.
    pub fn room(&self) -> &Arc<Room> {
        &self.room
    }

    /// What it may do.
    pub fn grant(&self) -> &Grant {
        &self.grant
    }

    /// What it opted in to.
    pub fn options(&self) -> SessionOptions {
        self.options
    }

    /// Raised to close it (by the room when its queue overflows or the room is deleted, by
    /// the session on a bad frame, by the socket shell on I/O events).
    pub fn kick(&self) -> &Arc<Kick> {
        &self.kick
    }

    /// The awareness client ids it introduced and has not removed.
    pub fn awareness_clients(&self) -> impl Iterator<Item = ClientId> + '_ {
        self.awareness.iter().copied()
    }

    /// Handles every message of one binary frame from the client: applies updates and
    /// awareness, answers SyncStep1 and QueryAwareness, echoes 102 once durable, and hands
    /// each maintenance-command result (type 103, subtype 1) to `command_result` as JSON.
    ///
    /// An error closes only this session: its [`Kick`] is already raised with the returned
    /// reason (after the frames already queued when the client was told why with an AUTH
    /// denial: quota exceeded, read-only), and the caller stops reading.
    pub fn handle_frame(
        &mut self,
        frame: Bytes,
        command_result: impl FnMut(&str),
    ) -> Result<(), CloseReason> {
        let handled = self.handle_messages(frame, command_result);
        if let Err(reason) = &handled {
            if matches!(
                reason,
                CloseReason::QuotaExceeded(_) | CloseReason::ReadOnly
            ) {
                self.kick.close_after_flush(reason.clone());
            } else {
                self.kick.close(reason.clone());
            }
        }
        handled
    }

    fn handle_messages(
        &mut self,
        frame: Bytes,
        mut command_result: impl FnMut(&str),
    ) -> Result<(), CloseReason> {
        let id = self.id;
        // The framing of the whole frame is checked before any of it is acted on, without
        // keeping its messages: a frame of millions of one-byte messages costs no more
        // memory than one message.
        let count = protocol::check_frame(&frame).map_err(CloseReason::malformed)?;
        let single = count == 1;
        let mut once = OncePerFrame::default();
        for msg in protocol::messages(frame.clone()) {
            match msg.map_err(CloseReason::malformed)? {
                Message::Sync(SyncMessage::Step1(sv)) => {
                    let sv = scan::decode_state_vector(&sv).map_err(|e| {
                        CloseReason::malformed(RoomError::InvalidStateVector(e.to_string()))
                    })?;
                    if let Some(first) = once.step1(sv) {
                        send_reply(&self.reply, self.room.sync_step2_for_state_vector(first))?;
                    }
                }
                Message::Sync(SyncMessage::Step2(update))
                | Message::Sync(SyncMessage::Update(update)) => {
                    if self.grant.can_write() {
                        self.apply_update(&update)?;
                    } else {
                        self.refuse_edit(&update)?;
                    }
                }
                Message::Awareness(payload) => {
                    let as_received = if single {
                        frame.clone()
                    } else {
                        protocol::encode_awareness(&payload)
                    };
                    let change = self
                        .room
                        .apply_awareness(&payload, &as_received, id)
                        .map_err(CloseReason::malformed)?;
                    for c in change.present {
                        self.awareness.insert(c);
                    }
                    for c in change.removed {
                        self.awareness.remove(&c);
                    }
                }
                Message::QueryAwareness => {
                    if !once.queried {
                        once.queried = true;
                        send_reply(&self.reply, self.room.awareness_frame())?;
                    }
                }
                Message::SyncStatus(payload) => {
                    let echo = if single {
                        frame.clone()
                    } else {
                        protocol::encode_sync_status(&payload)
                    };
                    // Wait for the room's newest ticket, not only this session's: an update
                    // that changed nothing here because the same content just came from
                    // another connection is saved by that connection's (pending) commit.
                    self.acks
                        .sync_status(self.room.name(), echo, self.room.last_ticket())?;
                }
                Message::AuthDenied(_) | Message::AuthOther(_) => {
                    tracing::debug!(session = id, "ignoring auth message from client");
                }
                Message::Command { subtype, json } => {
                    if subtype == protocol::COMMAND_SUBTYPE_RESULT {
                        command_result(&json);
                    } else {
                        tracing::debug!(session = id, subtype, "ignoring a command from a client");
                    }
                }
                Message::Unknown(t) => {
                    tracing::debug!(
                        session = id,
                        message_type = t,
                        "ignoring unknown message type"
                    );
                }
            }
        }
        if let Some(sv) = once.pending.take() {
            send_reply(&self.reply, self.room.sync_step2_for_state_vector(&sv))?;
        }
        Ok(())
    }

    /// An update or SyncStep2 from a session that may write.
    fn apply_update(&mut self, update: &[u8]) -> Result<(), CloseReason> {
        let applied = match self.room.apply_update(update, Some(self.id)) {
            Ok(a) => a,
            Err(RoomError::QuotaExceeded(reason)) => {
                // Tell the client why (y-websocket logs AUTH denials), then close.
                let _ = self.reply.try_send(protocol::encode_auth_denied(&reason));
                return Err(CloseReason::QuotaExceeded(reason));
            }
            Err(RoomError::Closed) => return Err(CloseReason::RoomDeleted),
            Err(e) => return Err(CloseReason::malformed(e)),
        };
        if applied.resurrected {
            // The room was deleted and this client's edit is newer: ask the client for the
            // document that edit belongs to (it answers with a SyncStep2).
            let _ = self
                .reply
                .try_send(protocol::encode_sync_step1(&self.room.state_vector()));
        }
        self.acks.record(&applied);
        Ok(())
    }

    /// An update or SyncStep2 from a session without write: never applied. One that holds
    /// only what the room already has (a read-only client's SyncStep2 after it synced) is
    /// harmless and passes; an edit is refused: AUTH denied, then close 4403.
    /// A read-only client's edit: not applied. An edit that brings something new is answered
    /// with the y-protocols AUTH permission-denied message, once per connection; the
    /// connection stays open (the client keeps receiving the document and live updates).
    fn refuse_edit(&mut self, update: &[u8]) -> Result<(), CloseReason> {
        match self.room.covers_update(update) {
            Ok(true) => Ok(()),
            Ok(false) => {
                if !std::mem::replace(&mut self.denied, true) {
                    send_reply(
                        &self.reply,
                        protocol::encode_auth_denied(&CloseReason::ReadOnly.to_string()),
                    )?;
                }
                Ok(())
            }
            Err(e) => Err(CloseReason::malformed(e)),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.room.leave(self.id, self.awareness.iter());
        self.room.emit_session(self.id, false, None);
    }
}

/// What one frame has been answered already, so that the work a frame causes is bounded by
/// its size whatever it repeats: QueryAwareness is answered once per frame (awareness that
/// changes later reaches the session through the room's fan-out anyway), and SyncStep1 once,
/// plus at most one more answer at the end of the frame for later state vectors that lack
/// something the first did not (only a client that lost state between its own messages
/// sends one).
#[derive(Default)]
struct OncePerFrame {
    /// The state vector the frame's first SyncStep1 was answered for.
    answered: Option<StateVector>,
    /// The per-client minimum of later state vectors not covering `answered`.
    pending: Option<StateVector>,
    /// QueryAwareness answered.
    queried: bool,
}

impl OncePerFrame {
    /// Records a SyncStep1's state vector; returns it when it is the frame's first, to be
    /// answered now.
    fn step1(&mut self, sv: StateVector) -> Option<&StateVector> {
        let Some(answered) = &self.answered else {
            return Some(self.answered.insert(sv));
        };
        // Everything the room had beyond `answered` went out with the first answer, and
        // every later change reaches the session through fan-out.
        if answered
            .iter()
            .all(|(client, clock)| sv.get(client) >= *clock)
        {
            return None;
        }
        self.pending = Some(match self.pending.take() {
            None => sv,
            Some(pending) => min_state_vector(&pending, &sv),
        });
        None
    }
}

/// The per-client minimum of two state vectors (a client missing from either counts as 0).
fn min_state_vector(a: &StateVector, b: &StateVector) -> StateVector {
    let mut out = StateVector::default();
    for (client, clock) in a.iter() {
        let m = (*clock).min(b.get(client));
        if m > 0 {
            out.set_max(*client, m);
        }
    }
    out
}

fn not_allowed(room: &str) -> CloseReason {
    CloseReason::Forbidden(RoomError::NotAllowed(room.to_string()).to_string())
}

/// Queues a reply for this client only; a full queue closes the session (4429).
fn send_reply(reply: &queue::Sender, frame: Bytes) -> Result<(), CloseReason> {
    match reply.try_send(frame) {
        Ok(()) | Err(TrySendError::Closed(_)) => Ok(()),
        Err(TrySendError::Full(_)) => Err(too_slow()),
    }
}

/// "Saved means durable": the SYNC_STATUS (102) echo for a client goes out only after every
/// update that client sent before it is committed to disk. Echoes keep their order: once one
/// has to wait, later ones queue behind it in a small per-session task.
///
/// An idle session's share is only what it must hold: no copy of the room's name and no
/// shared flag until an echo has to wait (the ack worker gets both when it starts).
struct Acks {
    store: Option<Arc<dyn Store>>,
    reply: queue::Sender,
    kick: Arc<Kick>,
    /// Ticket of the last update this session sent that changed the room.
    last_ticket: Option<CommitTicket>,
    /// An update of this session could not be stored: withhold every later echo.
    failed: bool,
    /// `failed`, shared with the ack worker once it runs (it may find a failure too).
    shared_failed: Option<Arc<AtomicBool>>,
    waiting: Option<mpsc::Sender<(Option<CommitTicket>, Bytes, Instant)>>,
    /// Where the time from a 102 to its echo is recorded (a node's rooms).
    counters: Option<crate::metrics::RoomCounters>,
}

/// Echoes that may wait for the disk at once, per session.
const PENDING_ACKS: usize = 256;

impl Acks {
    fn new(store: Option<Arc<dyn Store>>, reply: queue::Sender, kick: Arc<Kick>) -> Self {
        Acks {
            store,
            reply,
            kick,
            last_ticket: None,
            failed: false,
            shared_failed: None,
            waiting: None,
            counters: None,
        }
    }

    fn failed(&self) -> bool {
        self.failed
            || self
                .shared_failed
                .as_ref()
                .is_some_and(|f| f.load(Ordering::Relaxed))
    }

    fn record(&mut self, applied: &Applied) {
        if applied.store_failed {
            self.failed = true;
            if let Some(f) = &self.shared_failed {
                f.store(true, Ordering::Relaxed);
            }
        }
        if let Some(t) = applied.ticket {
            self.last_ticket = Some(t);
        }
    }

    /// A 102 from the client, in room `room`.
    fn sync_status(
        &mut self,
        room: &str,
        echo: Bytes,
        room_ticket: Option<CommitTicket>,
    ) -> Result<(), CloseReason> {
        if let Some(t) = room_ticket {
            self.last_ticket = Some(self.last_ticket.map_or(t, |own| own.max(t)));
        }
        if self.failed() {
            tracing::warn!("withholding sync-status echo: an earlier update was not saved");
            return Ok(());
        }
        let received = Instant::now();
        let Some(store) = self.store.clone() else {
            // No store (--memory): applied is as saved as it gets.
            if let Some(c) = &self.counters {
                c.ack_echoed(received.elapsed());
            }
            return send_reply(&self.reply, echo);
        };
        let durable_now = store.room_failure(room).is_none()
            && match self.last_ticket {
                None => true,
                Some(t) => matches!(
                    futures_util::FutureExt::now_or_never(store.wait_durable(t)),
                    Some(Ok(()))
                ),
            };
        if durable_now && self.waiting.is_none() {
            if let Some(c) = &self.counters {
                c.ack_echoed(received.elapsed());
            }
            return send_reply(&self.reply, echo);
        }
        let failed = self
            .shared_failed
            .get_or_insert_with(|| Arc::new(AtomicBool::new(self.failed)))
            .clone();
        let tx = self.waiting.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel(PENDING_ACKS);
            tokio::spawn(ack_worker(
                store,
                room.to_string(),
                rx,
                self.reply.clone(),
                self.kick.clone(),
                failed,
                self.counters.clone(),
            ));
            tx
        });
        tx.try_send((self.last_ticket, echo, received))
            .map_err(|_| {
                CloseReason::TooSlow("too many sync-status messages waiting for the disk".into())
            })
    }
}

/// Releases queued echoes in order. An echo waits until its ticket's commit finished and
/// the room is healthy: a failed commit marks the room unhealthy before its tickets finish,
/// and only a committed repair (the full in-memory state, written after the failure) heals
/// it, so a released echo always means "on disk".
async fn ack_worker(
    store: Arc<dyn Store>,
    room: String,
    mut rx: mpsc::Receiver<(Option<CommitTicket>, Bytes, Instant)>,
    reply: queue::Sender,
    kick: Arc<Kick>,
    failed: Arc<AtomicBool>,
    counters: Option<crate::metrics::RoomCounters>,
) {
    let mut health = store.health();
    while let Some((ticket, echo, received)) = rx.recv().await {
        if failed.load(Ordering::Relaxed) {
            continue;
        }
        if let Some(t) = ticket {
            match store.wait_durable(t).await {
                Ok(()) | Err(crate::store::StoreError::CommitFailed(_)) => {}
                Err(e) => {
                    tracing::error!(room, error = %e, "store unavailable; withholding sync-status echoes");
                    failed.store(true, Ordering::Relaxed);
                    continue;
                }
            }
        }
        let mut logged = false;
        while store.room_failure(&room).is_some() {
            if !logged {
                tracing::warn!(
                    room,
                    "withholding sync-status echo until the room is saved again"
                );
                logged = true;
            }
            if health.changed().await.is_err() {
                return;
            }
        }
        if let Some(c) = &counters {
            c.ack_echoed(received.elapsed());
        }
        if let Err(reason) = send_reply(&reply, echo) {
            kick.close(reason);
            return;
        }
    }
}

#[cfg(test)]
mod tests;
