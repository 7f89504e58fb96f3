//! WebSocket sessions: the upgrade handlers for the room routes and the socket I/O of each
//! client connection.
//!
//! This module owns the socket and nothing else: a connection's state (outbound queue, 102
//! acknowledgements, awareness ids, opt-ins, grant) is a [`Session`] in the room layer. Each
//! connection runs two tasks. The reader (this task) reads frames and hands them to
//! [`Session::handle_frame`]; the writer drains the session's bounded queue, writing every
//! queued frame before one flush, sends pings, and sends the close frame named by the
//! session's [`CloseReason`] when it is kicked (malformed input 4400, too slow 4429, liveness
//! 4408, shutdown 1001, too big 1009, ...).
//!
//! Bounds, each closing only its own connection: the session's queue (frames and bytes,
//! [`crate::queue`]) and the write deadline (`limits.write_timeout_s`: a client whose socket
//! takes no bytes for that long is closed with 4429, so the writer never waits forever and a
//! non-reading client is dropped even while no ping is due), the first-message deadline
//! (4408), the message rate (`limits.message_rate`, 4429) and the per-address connection cap
//! (`limits.max_connections_per_address`, 4429).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
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

use super::access::Presented;
use super::http::{room_document, room_param, ApiError, DocumentQuery};
use super::limits::RateLimit;
use super::listen::WriteProgress;
use super::AppState;
use crate::auth::Identity;
use crate::queue;
use crate::room::{CloseReason, Grant, Kick, Session, SessionOptions};

/// Read buffer per connection, allocated when the connection opens: it dominates idle memory
/// (tungstenite's default is 128 KiB). 2 KiB holds a typical y-websocket message; larger ones
/// take more reads. Measured in docs/benchmarks.md ("Memory per idle connection").
const READ_BUFFER: usize = 2 * 1024;
/// Write buffer per connection: frames are batched up to this size before a write.
const WRITE_BUFFER: usize = 16 * 1024;
/// Frames taken from the queue per flush.
const BATCH: usize = 64;
/// Bytes taken from the queue per flush (the first frame always): what a writer holds while
/// its socket drains, on top of what its queue holds.
const BATCH_BYTES: usize = 1024 * 1024;

/// Frames at least this large are handled inside `block_in_place`: a frame of millions of
/// small messages takes long enough to walk (O(size), but seconds for 64 MiB in a debug
/// build) that the worker's other tasks, other clients among them, must move to another
/// thread meanwhile.
const LARGE_FRAME: usize = 256 * 1024;

/// Whether `block_in_place` may be used here (not on a current-thread runtime, as in tests
/// that embed a node).
fn multi_threaded() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// How long a closing session waits for its writer to finish.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// `GET /rooms/{room}`: a WebSocket upgrade joins the room; a plain GET returns the document.
pub(crate) async fn room_route(
    State(app): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    client: Client,
    progress: Option<axum::Extension<WriteProgress>>,
    params: Result<RawPathParams, axum::extract::rejection::RawPathParamsRejection>,
    Query(query): Query<HashMap<String, String>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let room = match room_param(&params) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match upgrade {
        Ok(ws) => accept(app, ws, room, peer, &query, client, progress.map(|p| p.0)),
        Err(_) => {
            if let Err(refused) = super::http::scope_check(Some(&client.identity), &room, false) {
                return refused.into_response();
            }
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
    client: Client,
    progress: Option<axum::Extension<WriteProgress>>,
    params: Result<RawPathParams, axum::extract::rejection::RawPathParamsRejection>,
    Query(query): Query<HashMap<String, String>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let room = match room_param(&params) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match upgrade {
        Ok(ws) => accept(app, ws, room, peer, &query, client, progress.map(|p| p.0)),
        Err(e) => ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            format!("this route takes a WebSocket upgrade: {e}"),
        )
        .into_response(),
    }
}

/// Who a client proved to be, and the credential it did it with (judged again on reload),
/// as the access layer left them on the request.
pub(crate) struct Client {
    identity: Identity,
    credential: Option<Arc<str>>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Client {
            identity: parts
                .extensions
                .get::<Identity>()
                .cloned()
                .unwrap_or_default(),
            credential: parts
                .extensions
                .get::<Presented>()
                .and_then(|p| p.0.clone()),
        })
    }
}

fn accept(
    app: Arc<AppState>,
    ws: WebSocketUpgrade,
    room: String,
    peer: SocketAddr,
    query: &HashMap<String, String>,
    client: Client,
    progress: Option<WriteProgress>,
) -> Response {
    let options = SessionOptions {
        // Maintenance commands (type 103) go only to clients that ask for them.
        commands: query.get("commands").is_some_and(|v| v == "1"),
    };
    // The limits in force when the connection opened hold for its whole life.
    let live = app.live();
    let limits = &live.config.limits;
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
    // This address's share (`limits.max_connections_per_address`), held as long.
    let per_address = app.addresses.connection(peer.ip(), limits);
    let per_address_limit = limits.max_connections_per_address;
    let tracker = app.sessions.clone();
    ws.on_upgrade(move |socket| {
        tracker.track_future(async move {
            if over {
                tracing::warn!(%peer, room, "connection refused: node at connection limit");
                let reason =
                    CloseReason::AtCapacity("node at capacity: too many connections".into());
                close_now(socket, &reason).await;
                return;
            }
            let Some(per_address) = per_address else {
                tracing::warn!(%peer, room, "connection refused: too many connections from this address");
                let reason = CloseReason::TooSlow(format!(
                    "too many connections from this address (limit {per_address_limit})"
                ));
                close_now(socket, &reason).await;
                return;
            };
            run_session(app, socket, room, peer, options, client, progress).await;
            drop(per_address);
            drop(slot);
        })
    })
}

pub(crate) async fn close_now(mut socket: WebSocket, reason: &CloseReason) {
    let close = socket.send(WsMessage::Close(Some(CloseFrame {
        code: reason.code(),
        reason: truncate_reason(&reason.to_string()).into(),
    })));
    if tokio::time::timeout(CLOSE_GRACE, close).await.is_err() {
        return;
    }
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

fn millis_since(app: &AppState) -> u64 {
    app.started.elapsed().as_millis() as u64
}

/// The session grant of an authenticated client: every room, read and write (or any client
/// of an open node), unless a room-scoped token limits it to its rooms and scope.
pub(crate) fn grant_of(identity: Identity) -> Grant {
    let Some(claims) = identity.scoped else {
        return Grant::all_write().with_user(identity.user);
    };
    let rooms = match claims.room.strip_suffix('*') {
        Some(prefix) => crate::room::RoomScope::Prefix(prefix.to_string()),
        None => crate::room::RoomScope::Exact(claims.room.clone()),
    };
    let write = claims.scope == crate::auth::scoped::Scope::Write;
    Grant::new(rooms, write).with_user(identity.user)
}

async fn run_session(
    app: Arc<AppState>,
    socket: WebSocket,
    room_name: String,
    peer: SocketAddr,
    options: SessionOptions,
    client: Client,
    progress: Option<WriteProgress>,
) {
    let id = app.next_session.fetch_add(1, Ordering::Relaxed);
    let expires = client.identity.scoped.as_ref().map(|c| c.exp);
    let grant = grant_of(client.identity);
    let (mut session, outbound) = match Session::open(&app.registry, &room_name, id, grant, options)
        .await
    {
        Ok(s) => s,
        Err(reason) => {
            tracing::warn!(room = room_name, %peer, code = reason.code(), reason = %reason, "connection refused");
            close_now(socket, &reason).await;
            return;
        }
    };
    tracing::info!(room = room_name, %peer, session = id, user = session.grant().user(), "connection opened");
    let kick = session.kick().clone();
    // A reload that makes this credential invalid closes the session (4401).
    let _registered = app
        .credentials
        .register(id, client.credential, kick.clone());
    // A room-scoped token holds until its `exp`, connected or not: then the session ends
    // (4401) and the application reconnects with a fresh token.
    let _expiry = expires.map(|exp| {
        let kick = kick.clone();
        let left = Duration::from_secs(exp.saturating_sub(crate::auth::scoped::now_s()));
        tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
            tokio::time::sleep(left).await;
            kick.close(CloseReason::Unauthorized(
                "token expired: reconnect with a new token".into(),
            ));
        }))
    });
    let (sink, stream) = socket.split();
    let last_seen = Arc::new(AtomicU64::new(millis_since(&app)));
    let writer = tokio::spawn(writer_worker(
        sink,
        outbound,
        kick.clone(),
        app.clone(),
        last_seen.clone(),
        progress,
    ));
    read_loop(&app, &mut session, stream, &last_seen).await;
    // Leaves the room and removes the client's awareness states.
    drop(session);
    kick.close(CloseReason::ConnectionLost("connection lost".into()));
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
            code = r.code(),
            reason = r.reason,
            by = if r.by_peer() { "client" } else { "node" },
            "connection closed"
        );
    }
}

async fn read_loop(
    app: &AppState,
    session: &mut Session,
    mut stream: SplitStream<WebSocket>,
    last_seen: &AtomicU64,
) {
    let kick = session.kick().clone();
    let id = session.id();
    // A client speaks first thing (every y-websocket client sends its SyncStep1 on open):
    // a socket that stays silent is not one, and is closed (4408). The timer lives on the
    // heap until the first message and is freed then, so an idle connection keeps none.
    let live = app.live();
    let limits = &live.config.limits;
    let limit = limits.first_message_timeout;
    let mut first: Option<std::pin::Pin<Box<tokio::time::Sleep>>> =
        Some(Box::pin(tokio::time::sleep(limit)));
    let mut rate = RateLimit::new(limits.message_rate);
    loop {
        let msg = tokio::select! {
            biased;
            _ = kick.kicked() => return,
            _ = async {
                match first.as_mut() {
                    Some(timer) => timer.await,
                    None => std::future::pending().await,
                }
            } => {
                kick.close(CloseReason::TimedOut(format!(
                    "no message within {} s of connecting",
                    limit.as_secs()
                )));
                return;
            }
            msg = stream.next() => msg,
        };
        first = None;
        let msg = match msg {
            None => return,
            Some(Err(e)) => {
                if is_capacity_error(&e) {
                    kick.close(CloseReason::TooBig {
                        limit: limits.max_message_bytes,
                    });
                } else {
                    kick.close(CloseReason::ConnectionLost(format!("read failed: {e}")));
                }
                return;
            }
            Some(Ok(m)) => m,
        };
        last_seen.store(millis_since(app), Ordering::Relaxed);
        match msg {
            WsMessage::Binary(frame) => {
                if !rate.allow(tokio::time::Instant::now()) {
                    kick.close(CloseReason::TooSlow(format!(
                        "too many messages: more than {} per second",
                        limits.message_rate
                    )));
                    return;
                }
                let large = frame.len() >= LARGE_FRAME;
                let handle =
                    || session.handle_frame(frame, |json| app.commands.client_result(id, json));
                let handled = if large && multi_threaded() {
                    tokio::task::block_in_place(handle)
                } else {
                    handle()
                };
                if let Err(reason) = handled {
                    // The session raised its kick already.
                    if matches!(reason, CloseReason::QuotaExceeded(_)) {
                        app.metrics.quota_refused();
                    }
                    tracing::debug!(session = id, reason = %reason, "closing session");
                    return;
                }
            }
            WsMessage::Text(_) => {
                kick.close(CloseReason::Malformed(
                    "text frames are not part of the y-websocket protocol".into(),
                ));
                return;
            }
            WsMessage::Ping(_) | WsMessage::Pong(_) => {}
            WsMessage::Close(frame) => {
                let (code, reason) = frame
                    .map(|f| (f.code, f.reason.to_string()))
                    .unwrap_or((1005, String::new()));
                kick.close(CloseReason::PeerClosed { code, reason });
                return;
            }
        }
    }
}

/// Resolves once a write started now has moved no byte for `limit`: measured on the socket
/// when its progress is known, else the whole write's time.
async fn stalled(progress: Option<&WriteProgress>, limit: Duration) {
    let started = std::time::Instant::now();
    let Some(progress) = progress else {
        return tokio::time::sleep(limit).await;
    };
    let check = (limit / 4).max(Duration::from_millis(50));
    loop {
        let stalled = progress.stalled(started);
        if stalled >= limit {
            return;
        }
        tokio::time::sleep((limit - stalled).min(check)).await;
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

async fn writer_worker(
    mut sink: SplitSink<WebSocket, WsMessage>,
    mut outbound: queue::Receiver,
    kick: Arc<Kick>,
    app: Arc<AppState>,
    last_seen: Arc<AtomicU64>,
    progress: Option<WriteProgress>,
) {
    let (ping_every, write_timeout) = {
        let live = app.live();
        (
            live.config.limits.ping_interval,
            live.config.limits.write_timeout,
        )
    };
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_ping_at: Option<u64> = None;
    // Grows to the largest batch this connection has seen: an idle connection never holds
    // room for 64 frames (2 KiB of `Bytes` handles) it does not use.
    let mut batch: Vec<Bytes> = Vec::new();
    // A client that does not read blocks the write; past this it is closed (4429).
    let stuck = || {
        CloseReason::TooSlow(format!(
            "too slow: did not read for {} s",
            write_timeout.as_secs_f64()
        ))
    };
    loop {
        tokio::select! {
            biased;
            _ = kick.kicked() => break,
            _ = app.shutdown.cancelled() => {
                kick.close(CloseReason::ShuttingDown);
                break;
            }
            n = outbound.recv_many(&mut batch, BATCH, BATCH_BYTES) => {
                if n == 0 {
                    break;
                }
                // A client that stops reading blocks this write; stay responsive to kicks
                // and shutdown meanwhile (the queue behind us fills and kicks with 4429),
                // and give up once no byte went out for the write deadline (4429 too). A
                // slow reader of a large frame keeps making progress and is not cut off.
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
                        kick.close(CloseReason::ShuttingDown);
                        None
                    }
                    r = write => Some(Ok(r)),
                    _ = stalled(progress.as_ref(), write_timeout) => Some(Err(())),
                };
                match written {
                    None => {
                        batch.clear();
                        break;
                    }
                    Some(Err(_)) => {
                        batch.clear();
                        kick.close(stuck());
                        break;
                    }
                    Some(Ok(Err(_))) => {
                        batch.clear();
                        kick.close(CloseReason::ConnectionLost("write failed".into()));
                        return;
                    }
                    Some(Ok(Ok(()))) => {}
                }
            }
            _ = ping.tick() => {
                if let Some(at) = last_ping_at {
                    if last_seen.load(Ordering::Relaxed) < at {
                        kick.close(CloseReason::TimedOut("no answer to ping".into()));
                        break;
                    }
                }
                last_ping_at = Some(millis_since(&app));
                match tokio::time::timeout(write_timeout, sink.send(WsMessage::Ping(Bytes::new())))
                    .await
                {
                    Err(_) => {
                        kick.close(stuck());
                        break;
                    }
                    Ok(Err(_)) => {
                        kick.close(CloseReason::ConnectionLost("write failed".into()));
                        return;
                    }
                    Ok(Ok(())) => {}
                }
            }
        }
    }
    let reason = kick.reason().cloned();
    // The close is bounded like any write: a client that does not read never gets it.
    let _ = tokio::time::timeout(write_timeout.min(CLOSE_GRACE), async {
        if reason.as_ref().is_some_and(|r| r.flush_first) {
            // Bounded by the queue's capacity; the close follows right after.
            while let Ok(frame) = outbound.try_recv() {
                if sink.feed(WsMessage::Binary(frame)).await.is_err() {
                    break;
                }
            }
        }
        match reason {
            Some(r) if !r.by_peer() => {
                let _ = sink
                    .send(WsMessage::Close(Some(CloseFrame {
                        code: r.code(),
                        reason: truncate_reason(&r.reason).into(),
                    })))
                    .await;
            }
            _ => {
                let _ = sink.close().await;
            }
        }
    })
    .await;
}
