//! WebSocket sessions: the upgrade handlers for the room routes and the per-connection loops.
//!
//! Each connection runs two tasks. The reader (this task) decodes frames and applies them to
//! the room; the writer drains the session's bounded queue, writing every queued frame before
//! one flush, sends pings, and sends the close frame when the session is kicked (malformed
//! input 4400, too slow 4429, liveness 4408, shutdown 1001, too big 1009).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{rejection::WebSocketUpgradeRejection, CloseFrame, Message as WsMessage};
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, RawPathParams, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use super::http::{room_document, room_param, ApiError, DocumentQuery};
use super::{
    AppState, CLOSE_AT_CAPACITY, CLOSE_FORBIDDEN, CLOSE_GOING_AWAY, CLOSE_MALFORMED, CLOSE_TIMEOUT,
    CLOSE_TOO_BIG,
};
use crate::protocol::{self, Message, SyncMessage};
use crate::room::{
    Applied, ClientId, CloseReason, Joined, Kick, OpenError, Room, RoomError, SessionKind,
    CLOSE_TOO_SLOW,
};
use crate::store::{CommitTicket, Store};

/// Read buffer per connection, allocated when the connection opens: it dominates idle memory
/// (tungstenite's default is 128 KiB). 2 KiB holds a typical y-websocket message; larger ones
/// take more reads. Measured in docs/benchmarks.md ("Memory per idle connection").
const READ_BUFFER: usize = 2 * 1024;
/// Write buffer per connection: frames are batched up to this size before a write.
const WRITE_BUFFER: usize = 16 * 1024;
/// Frames taken from the queue per flush.
const BATCH: usize = 64;
/// How long a closing session waits for its writer to finish.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Close code recorded when the connection ended without a close frame.
const CONNECTION_LOST: u16 = 1006;

/// `GET /rooms/{room}`: a WebSocket upgrade joins the room; a plain GET returns the document.
pub(crate) async fn room_route(
    State(app): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    params: Result<RawPathParams, axum::extract::rejection::RawPathParamsRejection>,
    Query(query): Query<HashMap<String, String>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let room = match room_param(&params) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match upgrade {
        Ok(ws) => accept(app, ws, room, peer, &query),
        Err(_) => {
            let doc_query = DocumentQuery {
                format: query.get("format").cloned(),
            };
            room_document(&app, &room, &doc_query).await
        }
    }
}

/// `GET /sync/{room}` and `GET /workspaces/{room}/sync`: WebSocket only.
pub(crate) async fn sync_route(
    State(app): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    params: Result<RawPathParams, axum::extract::rejection::RawPathParamsRejection>,
    Query(query): Query<HashMap<String, String>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let room = match room_param(&params) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match upgrade {
        Ok(ws) => accept(app, ws, room, peer, &query),
        Err(e) => ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            format!("this route takes a WebSocket upgrade: {e}"),
        )
        .into_response(),
    }
}

fn accept(
    app: Arc<AppState>,
    ws: WebSocketUpgrade,
    room: String,
    peer: SocketAddr,
    query: &HashMap<String, String>,
) -> Response {
    // Maintenance commands (type 103) go only to clients that ask for them.
    let commands = query.get("commands").is_some_and(|v| v == "1");
    let limits = &app.config.limits;
    let ws = ws
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(
            limits
                .max_message_bytes
                .saturating_mul(2)
                .max(WRITE_BUFFER * 2),
        )
        .max_message_size(limits.max_message_bytes)
        .max_frame_size(limits.max_message_bytes);
    // Counted until the session ends, however it ends.
    let slot = app.metrics.open_connection();
    let over = slot.before() >= limits.max_connections;
    let tracker = app.sessions.clone();
    ws.on_upgrade(move |socket| {
        tracker.track_future(async move {
            if over {
                tracing::warn!(%peer, room, "connection refused: node at connection limit");
                close_now(
                    socket,
                    CLOSE_AT_CAPACITY,
                    "node at capacity: too many connections",
                )
                .await;
                return;
            }
            run_session(app, socket, room, peer, commands).await;
            drop(slot);
        })
    })
}

async fn close_now(mut socket: WebSocket, code: u16, reason: &str) {
    let _ = socket
        .send(WsMessage::Close(Some(CloseFrame {
            code,
            reason: truncate_reason(reason).into(),
        })))
        .await;
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while socket.recv().await.is_some() {}
    })
    .await;
}

/// Close reasons must fit in 123 bytes.
fn truncate_reason(reason: &str) -> String {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}

/// Joins `name`, retrying if the room was evicted between lookup and join.
async fn join_room(
    app: &AppState,
    name: &str,
    id: u64,
    commands: bool,
) -> Result<(Arc<Room>, Joined), CloseReason> {
    for _ in 0..8 {
        // Load before sync: the room's stored state is in the document before we queue
        // this client's SyncStep1.
        let room = app.registry.open(name).await.map_err(|e| match e {
            OpenError::Registry(e) => CloseReason {
                code: CLOSE_AT_CAPACITY,
                reason: e.to_string(),
                by_peer: false,
                flush_first: false,
            },
            OpenError::Load(e) => CloseReason {
                code: super::CLOSE_ROOM_UNAVAILABLE,
                reason: format!("room could not be opened: {e}"),
                by_peer: false,
                flush_first: false,
            },
        })?;
        match room.join_opted(id, SessionKind::Client, commands) {
            Ok(joined) => return Ok((room, joined)),
            Err(RoomError::Closed) => continue,
            Err(e) => {
                return Err(CloseReason {
                    code: super::CLOSE_ROOM_UNAVAILABLE,
                    reason: e.to_string(),
                    by_peer: false,
                    flush_first: false,
                })
            }
        }
    }
    Err(CloseReason {
        code: super::CLOSE_ROOM_UNAVAILABLE,
        reason: "room could not be opened".into(),
        by_peer: false,
        flush_first: false,
    })
}

fn millis_since(app: &AppState) -> u64 {
    app.started.elapsed().as_millis() as u64
}

async fn run_session(
    app: Arc<AppState>,
    socket: WebSocket,
    room_name: String,
    peer: SocketAddr,
    commands: bool,
) {
    let id = app.next_session.fetch_add(1, Ordering::Relaxed);
    let (room, joined) = match join_room(&app, &room_name, id, commands).await {
        Ok(j) => j,
        Err(reason) => {
            tracing::warn!(room = room_name, %peer, reason = reason.reason, "connection refused");
            close_now(socket, reason.code, &reason.reason).await;
            return;
        }
    };
    tracing::info!(room = room_name, %peer, session = id, "connection opened");
    let Joined {
        outbound,
        reply,
        kick,
        ..
    } = joined;
    let (sink, stream) = socket.split();
    let last_seen = Arc::new(AtomicU64::new(millis_since(&app)));
    let writer = tokio::spawn(writer_worker(
        sink,
        outbound,
        kick.clone(),
        app.clone(),
        last_seen.clone(),
    ));
    let mut awareness_clients = HashSet::new();
    let mut acks = Acks::new(
        app.registry.store().cloned(),
        room_name.clone(),
        reply,
        kick.clone(),
    );
    acks.app = Some(app.clone());
    read_loop(
        &app,
        &room,
        id,
        stream,
        &mut acks,
        &kick,
        &last_seen,
        &mut awareness_clients,
    )
    .await;
    drop(acks);
    room.leave(id, &awareness_clients);
    kick.peer_closed(CONNECTION_LOST, "connection lost");
    let abort = writer.abort_handle();
    if tokio::time::timeout(CLOSE_GRACE, writer).await.is_err() {
        // The close frame could not be written (the client does not read): drop the socket.
        abort.abort();
    }
    if let Some(r) = kick.reason() {
        tracing::info!(
            room = room_name,
            %peer,
            session = id,
            code = r.code,
            reason = r.reason,
            by = if r.by_peer { "client" } else { "node" },
            "connection closed"
        );
    }
}

#[allow(clippy::too_many_arguments)]
async fn read_loop(
    app: &AppState,
    room: &Room,
    id: u64,
    mut stream: SplitStream<WebSocket>,
    acks: &mut Acks,
    kick: &Kick,
    last_seen: &AtomicU64,
    awareness_clients: &mut HashSet<ClientId>,
) {
    loop {
        let msg = tokio::select! {
            biased;
            _ = kick.kicked() => return,
            msg = stream.next() => msg,
        };
        let msg = match msg {
            None => return,
            Some(Err(e)) => {
                if is_capacity_error(&e) {
                    kick.kick(
                        CLOSE_TOO_BIG,
                        format!(
                            "message larger than the {} byte limit",
                            app.config.limits.max_message_bytes
                        ),
                    );
                } else {
                    kick.peer_closed(CONNECTION_LOST, format!("read failed: {e}"));
                }
                return;
            }
            Some(Ok(m)) => m,
        };
        last_seen.store(millis_since(app), Ordering::Relaxed);
        match msg {
            WsMessage::Binary(frame) => {
                if let Err(reason) = handle_frame(room, id, frame, acks, awareness_clients) {
                    tracing::debug!(session = id, reason = reason.reason, "closing session");
                    if reason.flush_first {
                        kick.kick_after_flush(reason.code, reason.reason);
                    } else {
                        kick.kick(reason.code, reason.reason);
                    }
                    return;
                }
            }
            WsMessage::Text(_) => {
                kick.kick(
                    CLOSE_MALFORMED,
                    "text frames are not part of the y-websocket protocol",
                );
                return;
            }
            WsMessage::Ping(_) | WsMessage::Pong(_) => {}
            WsMessage::Close(frame) => {
                let (code, reason) = frame
                    .map(|f| (f.code, f.reason.to_string()))
                    .unwrap_or((1005, String::new()));
                kick.peer_closed(code, reason);
                return;
            }
        }
    }
}

fn is_capacity_error(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(tokio_tungstenite::tungstenite::Error::Capacity(_)) =
            err.downcast_ref::<tokio_tungstenite::tungstenite::Error>()
        {
            return true;
        }
        source = err.source();
    }
    false
}

fn malformed(e: impl std::fmt::Display) -> CloseReason {
    CloseReason {
        code: CLOSE_MALFORMED,
        reason: format!("malformed message: {e}"),
        by_peer: false,
        flush_first: false,
    }
}

fn send_reply(reply: &mpsc::Sender<Bytes>, frame: Bytes) -> Result<(), CloseReason> {
    match reply.try_send(frame) {
        Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => Ok(()),
        Err(mpsc::error::TrySendError::Full(_)) => Err(CloseReason {
            code: CLOSE_TOO_SLOW,
            reason: "outbound queue full".into(),
            by_peer: false,
            flush_first: false,
        }),
    }
}

/// Handles every message of one frame. An error closes only this session.
fn handle_frame(
    room: &Room,
    id: u64,
    frame: Bytes,
    acks: &mut Acks,
    awareness_clients: &mut HashSet<ClientId>,
) -> Result<(), CloseReason> {
    let reply = &acks.reply.clone();
    let msgs = protocol::decode_frame(frame.clone()).map_err(malformed)?;
    let single = msgs.len() == 1;
    for msg in msgs {
        match msg {
            Message::Sync(SyncMessage::Step1(sv)) => {
                let answer = room.sync_step2_for(&sv).map_err(malformed)?;
                send_reply(reply, answer)?;
            }
            Message::Sync(SyncMessage::Step2(update))
            | Message::Sync(SyncMessage::Update(update)) => {
                let applied = match room.apply_update(&update, Some(id)) {
                    Ok(a) => a,
                    Err(RoomError::QuotaExceeded(reason)) => {
                        // Tell the client why (y-websocket logs AUTH denials), then close.
                        let _ = acks.reply.try_send(protocol::encode_auth_denied(&reason));
                        acks.quota_refused();
                        return Err(CloseReason {
                            code: CLOSE_FORBIDDEN,
                            reason,
                            by_peer: false,
                            flush_first: true,
                        });
                    }
                    Err(RoomError::Closed) => {
                        return Err(CloseReason {
                            code: crate::room::CLOSE_ROOM_DELETED,
                            reason: "room deleted".into(),
                            by_peer: false,
                            flush_first: false,
                        })
                    }
                    Err(e) => return Err(malformed(e)),
                };
                if applied.resurrected {
                    // The room was deleted and this client's edit is newer: ask the client
                    // for the document that edit belongs to (it answers with a SyncStep2).
                    let _ = acks
                        .reply
                        .try_send(protocol::encode_sync_step1(&room.state_vector()));
                }
                acks.record(&applied);
            }
            Message::Awareness(payload) => {
                let as_received = if single {
                    frame.clone()
                } else {
                    protocol::encode_awareness(&payload)
                };
                let change = room
                    .apply_awareness(&payload, &as_received, id)
                    .map_err(malformed)?;
                awareness_clients.extend(change.present);
                for c in change.removed {
                    awareness_clients.remove(&c);
                }
            }
            Message::QueryAwareness => send_reply(reply, room.awareness_frame())?,
            Message::SyncStatus(payload) => {
                let echo = if single {
                    frame.clone()
                } else {
                    protocol::encode_sync_status(&payload)
                };
                // Wait for the room's newest ticket, not only this session's: an update
                // that changed nothing here because the same content just came from
                // another connection is saved by that connection's (pending) commit.
                acks.sync_status(echo, room.last_ticket())?;
            }
            Message::AuthDenied(_) | Message::AuthOther(_) => {
                tracing::debug!(session = id, "ignoring auth message from client");
            }
            Message::Command { subtype, json } => {
                if subtype == protocol::COMMAND_SUBTYPE_RESULT {
                    if let Some(app) = &acks.app {
                        app.commands.client_result(id, &json);
                    }
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
    Ok(())
}

/// "Saved means durable": the SYNC_STATUS (102) echo for a client goes out only after every
/// update that client sent before it is committed to disk. Echoes keep their order: once one
/// has to wait, later ones queue behind it in a small per-session task.
struct Acks {
    app: Option<Arc<AppState>>,
    store: Option<Arc<dyn Store>>,
    room: String,
    reply: mpsc::Sender<Bytes>,
    kick: Arc<Kick>,
    /// Ticket of the last update this session sent that changed the room.
    last_ticket: Option<CommitTicket>,
    /// An update of this session could not be stored: withhold every later echo.
    failed: Arc<AtomicBool>,
    waiting: Option<mpsc::Sender<(Option<CommitTicket>, Bytes)>>,
}

/// Echoes that may wait for the disk at once, per session.
const PENDING_ACKS: usize = 256;

impl Acks {
    fn new(
        store: Option<Arc<dyn Store>>,
        room: String,
        reply: mpsc::Sender<Bytes>,
        kick: Arc<Kick>,
    ) -> Self {
        Acks {
            app: None,
            store,
            room,
            reply,
            kick,
            last_ticket: None,
            failed: Arc::new(AtomicBool::new(false)),
            waiting: None,
        }
    }

    fn quota_refused(&self) {
        if let Some(app) = &self.app {
            app.metrics.quota_refused();
        }
    }

    fn record(&mut self, applied: &Applied) {
        if applied.store_failed {
            self.failed.store(true, Ordering::Relaxed);
        }
        if let Some(t) = applied.ticket {
            self.last_ticket = Some(t);
        }
    }

    fn sync_status(
        &mut self,
        echo: Bytes,
        room_ticket: Option<CommitTicket>,
    ) -> Result<(), CloseReason> {
        if let Some(t) = room_ticket {
            self.last_ticket = Some(self.last_ticket.map_or(t, |own| own.max(t)));
        }
        if self.failed.load(Ordering::Relaxed) {
            tracing::warn!("withholding sync-status echo: an earlier update was not saved");
            return Ok(());
        }
        let Some(store) = self.store.clone() else {
            // No store (--memory): applied is as saved as it gets.
            return send_reply(&self.reply, echo);
        };
        let durable_now = store.room_failure(&self.room).is_none()
            && match self.last_ticket {
                None => true,
                Some(t) => matches!(
                    futures_util::FutureExt::now_or_never(store.wait_durable(t)),
                    Some(Ok(()))
                ),
            };
        if durable_now && self.waiting.is_none() {
            return send_reply(&self.reply, echo);
        }
        let tx = self.waiting.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel(PENDING_ACKS);
            tokio::spawn(ack_worker(
                store,
                self.room.clone(),
                rx,
                self.reply.clone(),
                self.kick.clone(),
                self.failed.clone(),
            ));
            tx
        });
        tx.try_send((self.last_ticket, echo))
            .map_err(|_| CloseReason {
                code: CLOSE_TOO_SLOW,
                reason: "too many sync-status messages waiting for the disk".into(),
                by_peer: false,
                flush_first: false,
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
    mut rx: mpsc::Receiver<(Option<CommitTicket>, Bytes)>,
    reply: mpsc::Sender<Bytes>,
    kick: Arc<Kick>,
    failed: Arc<AtomicBool>,
) {
    let mut health = store.health();
    while let Some((ticket, echo)) = rx.recv().await {
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
        if let Err(reason) = send_reply(&reply, echo) {
            kick.kick(reason.code, reason.reason);
            return;
        }
    }
}

async fn writer_worker(
    mut sink: SplitSink<WebSocket, WsMessage>,
    mut outbound: mpsc::Receiver<Bytes>,
    kick: Arc<Kick>,
    app: Arc<AppState>,
    last_seen: Arc<AtomicU64>,
) {
    let ping_every = app.config.limits.ping_interval;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_ping_at: Option<u64> = None;
    let mut batch: Vec<Bytes> = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            biased;
            _ = kick.kicked() => break,
            _ = app.shutdown.cancelled() => {
                kick.kick(CLOSE_GOING_AWAY, "node shutting down");
                break;
            }
            n = outbound.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    break;
                }
                // A client that stops reading blocks this write; stay responsive to kicks
                // and shutdown meanwhile (the queue behind us fills and kicks with 4429).
                let write = async {
                    for frame in batch.drain(..) {
                        sink.feed(WsMessage::Binary(frame)).await?;
                    }
                    sink.flush().await
                };
                let written = tokio::select! {
                    biased;
                    _ = kick.kicked() => None,
                    _ = app.shutdown.cancelled() => {
                        kick.kick(CLOSE_GOING_AWAY, "node shutting down");
                        None
                    }
                    r = write => Some(r),
                };
                match written {
                    None => {
                        batch.clear();
                        break;
                    }
                    Some(Err(_)) => {
                        batch.clear();
                        kick.peer_closed(CONNECTION_LOST, "write failed");
                        return;
                    }
                    Some(Ok(())) => {}
                }
            }
            _ = ping.tick() => {
                if let Some(at) = last_ping_at {
                    if last_seen.load(Ordering::Relaxed) < at {
                        kick.kick(CLOSE_TIMEOUT, "no answer to ping");
                        break;
                    }
                }
                last_ping_at = Some(millis_since(&app));
                if sink.send(WsMessage::Ping(Bytes::new())).await.is_err() {
                    kick.peer_closed(CONNECTION_LOST, "write failed");
                    return;
                }
            }
        }
    }
    let reason = kick.reason().cloned();
    if reason.as_ref().is_some_and(|r| r.flush_first) {
        // Bounded by the queue's capacity; the close follows right after.
        while let Ok(frame) = outbound.try_recv() {
            if sink.feed(WsMessage::Binary(frame)).await.is_err() {
                break;
            }
        }
    }
    match reason {
        Some(r) if !r.by_peer => {
            let _ = sink
                .send(WsMessage::Close(Some(CloseFrame {
                    code: r.code,
                    reason: truncate_reason(&r.reason).into(),
                })))
                .await;
        }
        _ => {
            let _ = sink.close().await;
        }
    }
}
