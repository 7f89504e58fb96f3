//! WebSocket sessions: the upgrade handlers for the room routes, admission (connection caps,
//! the room's grant), and the life of each client connection around its [`Session`].
//!
//! This module owns the connection and nothing else: a connection's state (outbound queue,
//! 102 acknowledgements, awareness ids, opt-ins, grant) is a [`Session`] in the room layer.
//! The handshake is [`upgrade`], the framing [`frame`], and the socket I/O [`conn`]: one task
//! per connection, which reads frames and hands them to [`Session::handle_frame`], drains the
//! session's bounded queue (every queued frame written before one flush), sends pings, and
//! sends the close frame named by the session's [`CloseReason`] when it is kicked (malformed
//! input 4400, too slow 4429, liveness 4408, shutdown 1001, too big 1009, token expiry or
//! revocation 4401, ...).
//!
//! Bounds, each closing only its own connection: the session's queue (frames and bytes,
//! [`crate::queue`]) and the write deadline (`limits.write_timeout_s`: a client whose socket
//! takes no bytes for that long is closed with 4429, so a write never waits forever and a
//! non-reading client is dropped even while no ping is due), the first-message deadline
//! (4408), the message rate (`limits.message_rate`, 4429) and the per-address connection cap
//! (`limits.max_connections_per_address`, 4429). Memory per idle connection is measured in
//! docs/benchmarks.md ("Memory per idle connection").

mod conn;
mod frame;
mod upgrade;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::WebSocket;
use axum::extract::ws::{CloseFrame, Message as WsMessage};
use axum::extract::{ConnectInfo, Query, RawPathParams, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::access::Presented;
use super::http::{room_document, room_param, ApiError, DocumentQuery};
use super::listen::WriteProgress;
use super::AppState;
use crate::auth::Identity;
use crate::metrics::{Limit, Refusal};
use crate::room::{CloseReason, Grant, Session, SessionOptions};
use upgrade::{Io, Upgrade, UpgradeRejection, Upgrading};

pub(crate) use conn::Limits as ConnectionLimits;
use conn::CLOSE_GRACE;

/// `GET /rooms/{room}`: a WebSocket upgrade joins the room; a plain GET returns the document.
pub(crate) async fn room_route(
    State(app): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    client: Client,
    progress: Option<axum::Extension<WriteProgress>>,
    params: Result<RawPathParams, axum::extract::rejection::RawPathParamsRejection>,
    Query(query): Query<HashMap<String, String>>,
    upgrade: Result<Upgrade, UpgradeRejection>,
) -> Response {
    let room = match room_param(&params) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match upgrade {
        Ok(ws) => accept(
            app,
            ws,
            (room, super::DOCUMENT_ROUTE),
            peer,
            &query,
            client,
            progress.map(|p| p.0),
        ),
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
    upgrade: Result<Upgrade, UpgradeRejection>,
) -> Response {
    let room = match room_param(&params) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match upgrade {
        Ok(ws) => {
            let route = client.route.clone();
            accept(
                app,
                ws,
                (room, &route),
                peer,
                &query,
                client,
                progress.map(|p| p.0),
            )
        }
        Err(e) => ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            format!("this route takes a WebSocket upgrade: {e}"),
        )
        .into_response(),
    }
}

/// Who a client proved to be, and the credential it did it with (judged again on reload),
/// as the access layer left them on the request; and the route template that matched
/// (`/sync/{room}`), for the per-route connection counts.
pub(crate) struct Client {
    identity: Identity,
    credential: Option<Arc<str>>,
    route: String,
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
            route: parts
                .extensions
                .get::<axum::extract::MatchedPath>()
                .map(|m| m.as_str().to_string())
                .unwrap_or_default(),
        })
    }
}

fn accept(
    app: Arc<AppState>,
    ws: Upgrade,
    (room, route): (String, &str),
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
    // Counted until the session ends, however it ends.
    let slot = app.metrics.open_connection_on(route);
    let over = slot.before() >= limits.max_connections;
    // This address's share (`limits.max_connections_per_address`), held as long.
    let per_address = app.addresses.connection(peer.ip(), limits);
    let per_address_limit = limits.max_connections_per_address;
    let tracker = app.sessions.clone();
    // Everything the task needs to open the session, in one box: what an idle connection's
    // task holds for its whole life is only what it uses (see `Live`).
    let mut admission = Box::new(Admission {
        upgrading: None,
        app: app.clone(),
        room,
        peer,
        options,
        identity: client.identity,
        credential: client.credential,
        progress,
        slot,
        over,
        per_address,
        per_address_limit,
    });
    ws.on_upgrade(move |upgrading| {
        // In the box too: what the task's future captures it holds for its whole life.
        admission.upgrading = Some(upgrading);
        tracker.track_future(async move {
            // Admission and the room's loading run in a boxed future of their own, freed
            // once the session is open.
            let Some((mut live, credential)) = Box::pin(admit(admission)).await else {
                return;
            };
            let app = live.app.clone();
            let Some(kick) = live.session.as_ref().map(|s| s.kick().clone()) else {
                return;
            };
            // A reload that makes this credential invalid closes the session (4401).
            // Shutdown closes it through the same list.
            let _registered = app.credentials.register(live.id, credential, kick.clone());
            let id = live.id;
            let command_result = |json: &str| app.commands.client_result(id, json);
            let env = conn::Env {
                metrics: &app.metrics,
                progress: live.progress.as_ref(),
                command_result: &command_result,
            };
            if let Some(session) = live.session.as_mut() {
                live.conn.drive(session, &env).await;
            }
            // Leaves the room (removing the client's awareness states) before the close
            // frame goes out.
            let room = live.session.take().map(|s| s.room().clone());
            let room = room.as_ref().map_or("", |r| r.name());
            Box::pin(live.conn.close(&kick, &env)).await;
            finished(&app, &kick, room, live.peer, id);
        })
    })
}

/// What a connection's task opens its session with.
struct Admission {
    /// The connection, once hyper hands it over.
    upgrading: Option<Upgrading>,
    app: Arc<AppState>,
    room: String,
    peer: SocketAddr,
    options: SessionOptions,
    identity: Identity,
    credential: Option<Arc<str>>,
    progress: Option<WriteProgress>,
    /// Counted until the session ends, however it ends.
    slot: crate::metrics::ConnectionSlot,
    /// Over the node's connection limit: refused.
    over: bool,
    /// This address's share (`limits.max_connections_per_address`), held as long; `None`
    /// when the address has its fill: refused.
    per_address: Option<super::limits::AddressSlot>,
    per_address_limit: usize,
}

/// What an open session's task holds while it runs: the connection, the session, and what
/// the end of it needs (the counts it holds, names for the log).
struct Live {
    conn: conn::Conn<Io>,
    /// Until the session ends.
    session: Option<Session>,
    app: Arc<AppState>,
    id: u64,
    peer: SocketAddr,
    progress: Option<WriteProgress>,
    _slot: crate::metrics::ConnectionSlot,
    _per_address: super::limits::AddressSlot,
}

/// Refuses the connection (limits, the room's grant or capacity), closing it with the
/// reason, or opens its session (and hands back the credential it presented).
async fn admit(admission: Box<Admission>) -> Option<(Live, Option<Arc<str>>)> {
    let Admission {
        upgrading,
        app,
        room,
        peer,
        options,
        identity,
        credential,
        progress,
        slot,
        over,
        per_address,
        per_address_limit,
    } = *admission;
    let socket = upgrading?.connection().await?;
    if over {
        tracing::warn!(%peer, room, "connection refused: node at connection limit");
        app.metrics.refused(Refusal::Limit);
        app.metrics.limit_hit(Limit::Connections);
        let reason = CloseReason::AtCapacity("node at capacity: too many connections".into());
        close_io(socket, &reason).await;
        return None;
    }
    let Some(per_address) = per_address else {
        tracing::warn!(%peer, room, "connection refused: too many connections from this address");
        app.metrics.refused(Refusal::Limit);
        app.metrics.limit_hit(Limit::ConnectionsPerAddress);
        let reason = CloseReason::TooSlow(format!(
            "too many connections from this address (limit {per_address_limit})"
        ));
        close_io(socket, &reason).await;
        return None;
    };
    let id = app.next_session.fetch_add(1, Ordering::Relaxed);
    let expires = identity.scoped.as_ref().map(|c| c.exp);
    let grant = grant_of(identity);
    let (session, outbound) = match Session::open(&app.registry, &room, id, grant, options).await {
        Ok(s) => s,
        Err(reason) => {
            tracing::warn!(room, %peer, code = reason.code(), reason = %reason, "connection refused");
            if reason.code() == crate::room::CLOSE_AT_CAPACITY {
                app.metrics.limit_hit(Limit::Rooms);
            }
            close_io(socket, &reason).await;
            return None;
        }
    };
    tracing::info!(room, %peer, session = id, user = session.grant().user(), "connection opened");
    // The limits of the config snapshot in force now, shared with every connection opened
    // under it.
    let limits = app.live().connection_limits.clone();
    // A room-scoped token holds until its `exp`, connected or not: then the session ends
    // (4401) and the application reconnects with a fresh token.
    let expires = expires.map(|exp| {
        tokio::time::Instant::now()
            + Duration::from_secs(exp.saturating_sub(crate::auth::scoped::now_s()))
    });
    let live = Live {
        conn: conn::Conn::new(socket, outbound, limits, expires),
        session: Some(session),
        app,
        id,
        peer,
        progress,
        _slot: slot,
        _per_address: per_address,
    };
    Some((live, credential))
}

/// Counts and logs how a session ended.
fn finished(app: &AppState, kick: &crate::room::Kick, room: &str, peer: SocketAddr, id: u64) {
    if let Some(limit) = kick.reason().and_then(limit_of) {
        app.metrics.limit_hit(limit);
    }
    if let Some(r) = kick.reason() {
        tracing::info!(
            room,
            %peer,
            session = id,
            code = r.code(),
            reason = r.reason,
            by = if r.by_peer() { "client" } else { "node" },
            "connection closed"
        );
    }
}

/// The limit behind a close the node made, for `ymesh_limit_hits_total` (storage quotas
/// are counted where they refuse).
fn limit_of(close: &crate::room::Close) -> Option<Limit> {
    if close.by_peer() {
        return None;
    }
    match &close.cause {
        CloseReason::TooBig { .. } => Some(Limit::MessageSize),
        CloseReason::AtCapacity(_) => Some(Limit::Rooms),
        CloseReason::TimedOut(_) => Some(Limit::Timeout),
        CloseReason::TooSlow(r) if r.starts_with("too many messages") => Some(Limit::MessageRate),
        CloseReason::TooSlow(_) => Some(Limit::OutboundQueue),
        _ => None,
    }
}

/// Closes a connection that never got a session (refused at admission) with `reason`, then
/// waits (bounded) for the client to answer or leave, so the close frame is read before the
/// socket goes.
async fn close_io<IO: AsyncRead + AsyncWrite + Unpin>(mut io: IO, reason: &CloseReason) {
    let mut out = Vec::new();
    frame::encode(
        frame::Outgoing::Close(Some((reason.code(), &reason.to_string()))),
        &mut out,
    );
    let close = async {
        io.write_all(&out).await?;
        io.flush().await
    };
    if !matches!(tokio::time::timeout(CLOSE_GRACE, close).await, Ok(Ok(()))) {
        return;
    }
    // What the client sends meanwhile is read and dropped, up to its close or the end.
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        let mut sink = [0u8; 512];
        while matches!(io.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// Closes an axum WebSocket (a refused upgrade, [`super::access`]) with `reason`, then waits
/// (bounded) for the client's answer.
pub(crate) async fn close_now(mut socket: WebSocket, reason: &CloseReason) {
    let close = socket.send(WsMessage::Close(Some(CloseFrame {
        code: reason.code(),
        reason: frame::truncate(&reason.to_string(), 123).to_string().into(),
    })));
    if tokio::time::timeout(CLOSE_GRACE, close).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while socket.recv().await.is_some() {}
    })
    .await;
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
