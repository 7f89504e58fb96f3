//! HTTP API handlers. Every JSON body is `{"data": ...}` on success and
//! `{"error": {"message": ...}}` on failure.

use std::sync::Arc;

use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{Query, RawPathParams, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::json;

use super::AppState;
use crate::metrics::NodeStatus;

/// A JSON error response.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "error": { "message": self.message } })),
        )
            .into_response()
    }
}

/// Wraps a value in the success envelope.
pub(crate) fn data<T: serde::Serialize>(value: T) -> Response {
    Json(json!({ "data": value })).into_response()
}

pub(crate) async fn root(State(app): State<Arc<AppState>>) -> Response {
    data(NodeStatus {
        name: "ymesh",
        version: env!("CARGO_PKG_VERSION"),
        node_id: app.mesh.node_id().to_string(),
        uptime_s: app.started.elapsed().as_secs(),
        rooms: app.registry.len(),
        counters: app.metrics.node(),
        discovery: app.discovery.get().cloned().unwrap_or_default(),
    })
}

/// `GET /peers`: every configured peer and inbound link: node id, address, state, since
/// when, and messages and bytes each way per kind.
pub(crate) async fn list_peers(
    State(app): State<Arc<AppState>>,
    identity: Option<axum::Extension<crate::auth::Identity>>,
) -> Response {
    if let Err(refused) = unscoped_only(identity.as_deref()) {
        return refused.into_response();
    }
    data(app.mesh.peers_json())
}

/// `POST /peers/{node}/approve` (admin): admits node `node` from now on (persisted); its
/// waiting links come up.
pub(crate) async fn approve_peer(
    State(app): State<Arc<AppState>>,
    axum::extract::Path(node): axum::extract::Path<String>,
) -> Response {
    peer_decision(app, node, true).await
}

/// `POST /peers/{node}/deny` (admin): refuses node `node` from now on (persisted), whatever
/// else admits it; its links close.
pub(crate) async fn deny_peer(
    State(app): State<Arc<AppState>>,
    axum::extract::Path(node): axum::extract::Path<String>,
) -> Response {
    peer_decision(app, node, false).await
}

/// Records the decision (approvals.json is written and synced off the async workers).
async fn peer_decision(app: Arc<AppState>, node: String, approve: bool) -> Response {
    use crate::mesh::runtime::approvals::ApprovalsError;
    let mesh = app.mesh.clone();
    let id = node.clone();
    let result = tokio::task::spawn_blocking(move || {
        if approve {
            mesh.approve(&id)
        } else {
            mesh.deny(&id)
        }
    })
    .await;
    let Ok(result) = result else {
        return ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the decision was not recorded",
        )
        .into_response();
    };
    match result {
        Ok(()) => data(json!({
            "node_id": node,
            "decision": if approve { "approved" } else { "denied" },
        })),
        Err(e @ ApprovalsError::BadNodeId(_)) => {
            ApiError::new(StatusCode::BAD_REQUEST, e.to_string()).into_response()
        }
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Body of `POST /tokens`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenRequest {
    /// The room, or a prefix ending in `*`.
    room: String,
    /// `read` or `write` (default `write`).
    #[serde(default = "default_scope")]
    scope: crate::auth::scoped::Scope,
    /// Lifetime in seconds (default one hour, at most 30 days).
    #[serde(default = "default_ttl")]
    ttl_s: u64,
    /// The user id the token names, if any.
    #[serde(default)]
    user: Option<String>,
}

fn default_scope() -> crate::auth::scoped::Scope {
    crate::auth::scoped::Scope::Write
}

fn default_ttl() -> u64 {
    3600
}

/// `POST /tokens` (admin): mints a room-scoped token for an application server, signed with
/// the node's shared secret: `{"data": {"token": "...", "exp": unix seconds}}`.
pub(crate) async fn mint_token(
    State(app): State<Arc<AppState>>,
    body: Result<Json<TokenRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => {
            return ApiError::new(StatusCode::BAD_REQUEST, format!("bad token request: {e}"))
                .into_response()
        }
    };
    let live = app.live();
    let Some(secret) = live.config.shared_secret.as_deref() else {
        return ApiError::new(
            StatusCode::CONFLICT,
            "this node has no shared secret (--shared-secret, SYNC_SHARED_SECRET): room-scoped \
             tokens are signed with it",
        )
        .into_response();
    };
    let now = crate::auth::scoped::now_s();
    match crate::auth::scoped::mint(
        secret,
        &req.room,
        req.scope,
        req.ttl_s,
        req.user.as_deref(),
        now,
    ) {
        Ok(token) => data(json!({ "token": token, "exp": now + req.ttl_s })),
        Err(e) => ApiError::new(StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

pub(crate) async fn healthz() -> Response {
    data(json!({ "status": "ok" }))
}

/// Query of `GET /rooms`.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct ListQuery {
    /// Include rooms that are stored but not in memory.
    #[serde(default)]
    all: bool,
}

/// `GET /rooms`: rooms in memory with connection counts; `?all=true` adds every stored room
/// with its stored size (logical bytes of snapshot and log) and last-modified time.
pub(crate) async fn list_rooms(
    State(app): State<Arc<AppState>>,
    identity: Option<axum::Extension<crate::auth::Identity>>,
    Query(query): Query<ListQuery>,
) -> Response {
    if let Err(refused) = unscoped_only(identity.as_deref()) {
        return refused.into_response();
    }
    match room_rows(&app, query.all).await {
        Ok(rows) => data(rows),
        Err(e) => e.into_response(),
    }
}

/// The rows of `GET /rooms` (`all`: with the stored rooms).
pub(crate) async fn room_rows(
    app: &AppState,
    all: bool,
) -> Result<Vec<serde_json::Value>, ApiError> {
    let loaded = app.registry.list();
    let with_schema = |mut row: serde_json::Value| {
        if let Some(v) = row["name"]
            .as_str()
            .and_then(|n| app.commands.schema_version(n))
        {
            row["schema_version"] = json!(v);
        }
        row
    };
    if !all {
        return Ok(loaded.iter().map(|r| with_schema(json!(r))).collect());
    }
    let stored = match app.registry.store() {
        Some(store) => store.list().await.map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot list stored rooms: {e}"),
            )
        })?,
        None => Vec::new(),
    };
    let mut rows: std::collections::BTreeMap<String, serde_json::Value> = loaded
        .into_iter()
        .map(|r| {
            let mut row = json!({
                "name": r.name, "connections": r.connections, "pinned": r.pinned,
                "loaded": true, "stored": false, "bytes": null, "updated_at_ms": null,
            });
            if let Some(e) = r.store_error {
                row["store_error"] = json!(e);
            }
            (r.name, row)
        })
        .collect();
    for m in stored {
        let row = rows.entry(m.name.clone()).or_insert_with(
            || json!({ "name": m.name, "connections": 0, "pinned": false, "loaded": false }),
        );
        row["stored"] = json!(true);
        row["bytes"] = json!(m.bytes);
        row["updated_at_ms"] = json!(m.updated_at_ms);
    }
    Ok(rows.into_values().map(with_schema).collect())
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route")
}

/// Query parameters of the document API.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct DocumentQuery {
    /// `json` for a JSON rendering; anything else (or nothing) for the binary update.
    pub(crate) format: Option<String>,
}

/// `GET /rooms/{room}` without a WebSocket upgrade: the room's full state as one Yjs v1
/// update (`application/octet-stream`), or with `?format=json` its root types as JSON.
/// A room that does not exist is 404 (looking does not create it).
pub(crate) async fn room_document(app: &AppState, room: &str, query: &DocumentQuery) -> Response {
    let r = match app.registry.open_existing(room).await {
        Ok(Some(r)) => r,
        Ok(None) => return no_such_room(app, room),
        Err(e) => return unavailable(room, e),
    };
    match query.format.as_deref() {
        None | Some("binary") => budgeted(
            app,
            "application/octet-stream",
            Bytes::from(r.encode_state()),
        ),
        Some("json") => match serde_json::to_vec(&json!({ "data": r.to_json() })) {
            Ok(body) => budgeted(app, "application/json", Bytes::from(body)),
            Err(e) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
            }
        },
        Some(other) => ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("unknown format {other:?}; use json, or omit it for the binary update"),
        )
        .into_response(),
    }
}

/// Slices a document response is sent in: the connection's write deadline sees progress per
/// slice, and the bytes go back to the budget once the last one is taken.
const RESPONSE_SLICE: usize = 256 * 1024;

/// A document response drawn from the node's budget of document bytes in flight
/// (`limits.http_response_bytes`): 503 with `Retry-After` when it is spent. The budget is held
/// until the body has been handed to the connection, which a client that does not read ends
/// by the write deadline.
fn budgeted(app: &AppState, content_type: &'static str, body: Bytes) -> Response {
    let Some(guard) = app.responses.try_take(body.len()) else {
        app.metrics.refused(crate::metrics::Refusal::Limit);
        app.metrics.limit_hit(crate::metrics::Limit::ResponseBytes);
        tracing::warn!(
            bytes = body.len(),
            in_flight = app.responses.used(),
            "document response refused: too many document bytes being sent"
        );
        let mut refused = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many large documents being sent at once; retry shortly",
        )
        .into_response();
        refused
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return refused;
    };
    let len = body.len();
    let slices =
        futures_util::stream::unfold((body, Some(guard)), |(mut rest, guard)| async move {
            if rest.is_empty() {
                drop(guard);
                return None;
            }
            let slice = rest.split_to(rest.len().min(RESPONSE_SLICE));
            Some((Ok::<_, std::io::Error>(slice), (rest, guard)))
        });
    (
        [
            (
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(content_type),
            ),
            (header::CONTENT_LENGTH, header::HeaderValue::from(len)),
        ],
        axum::body::Body::from_stream(slices),
    )
        .into_response()
}

/// `GET /rooms/{room}` when `/rooms/{room}` is not a WebSocket route.
pub(crate) async fn get_room(
    State(app): State<Arc<AppState>>,
    identity: Option<axum::Extension<crate::auth::Identity>>,
    params: Result<RawPathParams, RawPathParamsRejection>,
    Query(query): Query<DocumentQuery>,
) -> Response {
    match room_param(&params) {
        Ok(room) => match scope_check(identity.as_deref(), &room, false) {
            Ok(()) => room_document(&app, &room, &query).await,
            Err(refused) => refused.into_response(),
        },
        Err(e) => e.into_response(),
    }
}

/// What a room-scoped token allows on the HTTP document API: its rooms only (403 with the
/// reason otherwise), and no writes with `scope: read`. Other credentials allow everything.
pub(crate) fn scope_check(
    identity: Option<&crate::auth::Identity>,
    room: &str,
    write: bool,
) -> Result<(), ApiError> {
    let Some(claims) = identity.and_then(|i| i.scoped.as_ref()) else {
        return Ok(());
    };
    if !claims.covers(room) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("this token is for room {:?}, not {room:?}", claims.room),
        ));
    }
    if write && claims.scope != crate::auth::scoped::Scope::Write {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this token is read-only: it may not change the room",
        ));
    }
    Ok(())
}

/// Routes that show more than one room's names or the mesh refuse room-scoped tokens.
pub(crate) fn unscoped_only(identity: Option<&crate::auth::Identity>) -> Result<(), ApiError> {
    match identity.and_then(|i| i.scoped.as_ref()) {
        Some(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "a room-scoped token may use only its rooms",
        )),
        None => Ok(()),
    }
}

fn unavailable(room: &str, e: impl std::fmt::Display) -> Response {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("room {room:?} cannot be opened: {e}"),
    )
    .into_response()
}

/// Query of `POST /rooms/{room}`.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct PostQuery {
    /// Restore a deleted room from this update even where the deletion covers it (see
    /// [`crate::room::with_undelete_marker`]).
    #[serde(default)]
    undelete: bool,
}

/// `POST /rooms/{room}`: applies a binary Yjs v1 update (creating the room if needed),
/// broadcasts it to connected clients, and answers once it is on disk:
/// `{"data": {"changed": bool, "undeleted": bool}}`. When the room was deleted and
/// everything in the update is older than the deletion, nothing is applied and the answer
/// says so: `{"changed": false, "undeleted": false, "deleted": {"deleted_ms", "origin"},
/// "message": ...}`; `?undelete=true` restores the room from such an update, here and on
/// every peer the change reaches.
pub(crate) async fn post_room(
    State(app): State<Arc<AppState>>,
    identity: Option<axum::Extension<crate::auth::Identity>>,
    params: Result<RawPathParams, RawPathParamsRejection>,
    Query(query): Query<PostQuery>,
    body: Bytes,
) -> Response {
    let room = match room_param(&params) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if let Err(refused) = scope_check(identity.as_deref(), &room, true) {
        return refused.into_response();
    }
    // Validate before creating the room, so garbage never creates one. The scan bounds every
    // count in the body by the body's size before yrs reserves anything for it.
    if let Err(e) = crate::protocol::scan::decode_update(&body) {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("body is not a valid Yjs v1 update: {e}"),
        )
        .into_response();
    }
    let name = room;
    let room = match app.registry.open(&name).await {
        Ok(r) => r,
        Err(e) => return unavailable(&name, e),
    };
    let tombstone = app.registry.tombstones().get(&name);
    let body = match (&tombstone, query.undelete) {
        (Some(t), true) => match crate::room::with_undelete_marker(&body, t) {
            Ok(marked) => Bytes::from(marked),
            Err(e) => {
                return ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("body is not a valid Yjs v1 update: {e}"),
                )
                .into_response()
            }
        },
        _ => body,
    };
    let applied = match room.apply_update(&body, None) {
        Ok(a) => a,
        Err(crate::room::RoomError::QuotaExceeded(reason)) => {
            app.metrics.quota_refused();
            return ApiError::new(StatusCode::FORBIDDEN, reason).into_response();
        }
        Err(e) => return ApiError::new(StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    if applied.store_failed {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "applied in memory, but the store did not accept it; it is not saved",
        )
        .into_response();
    }
    if let (Some(ticket), Some(store)) = (applied.ticket, app.registry.store()) {
        if let Err(e) = store.wait_durable(ticket).await {
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("applied in memory, but not saved: {e}"),
            )
            .into_response();
        }
    }
    if applied.stale {
        let (deleted_ms, origin) = tombstone
            .map(|t| (t.deleted_ms, t.origin))
            .unwrap_or_default();
        return data(json!({
            "changed": false,
            "undeleted": false,
            "deleted": { "deleted_ms": deleted_ms, "origin": origin },
            "message": format!(
                "room {name:?} was deleted, and everything in this update is older than the \
                 deletion, so it was dropped; to restore the room from it, post it again with \
                 ?undelete=true (ymesh import --undelete)"
            ),
        }));
    }
    data(json!({ "changed": applied.changed, "undeleted": applied.resurrected }))
}

/// Middleware of admin routes: the rule of [`crate::auth::admin_decision`] (bearer admin
/// token when one is configured, loopback only otherwise); 401 or 403 in the JSON envelope.
pub(crate) async fn require_admin(
    State(app): State<Arc<AppState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use crate::auth::{admin_decision, AdminDecision};
    // The listener is served with connect info; without it (a router served some other
    // way) the peer is unknown and treated as remote.
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.0);
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match admin_decision(
        app.live().config.admin_token.as_deref(),
        authorization,
        peer,
    ) {
        AdminDecision::Allow => next.run(req).await,
        AdminDecision::Unauthorized(message) => {
            let mut resp = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            resp
        }
        AdminDecision::Forbidden(message) => {
            ApiError::new(StatusCode::FORBIDDEN, message).into_response()
        }
    }
}

/// 404 for a room that does not exist, saying so when it was deleted.
fn no_such_room(app: &AppState, room: &str) -> Response {
    let message = match app.registry.tombstones().get(room) {
        Some(t) => format!(
            "room {room:?} was deleted (at unix ms {}, on node {})",
            t.deleted_ms, t.origin
        ),
        None => format!("room {room:?} does not exist"),
    };
    ApiError::new(StatusCode::NOT_FOUND, message).into_response()
}

/// `DELETE /rooms/{room}` (admin): deletes the room here and, through its tombstone, on
/// every peer that shares it. Connected clients are closed with 4410. Answers
/// `{"data": {"room", "deleted_ms", "state_vector", "origin"}}` (the tombstone); 404 when
/// the room does not exist.
pub(crate) async fn delete_room(
    State(app): State<Arc<AppState>>,
    params: Result<RawPathParams, RawPathParamsRejection>,
) -> Response {
    let room = match room_param(&params) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let live = app
        .registry
        .get(&room)
        .is_some_and(|r| r.is_loaded() && r.has_content());
    let stored = match app.registry.store() {
        Some(store) if !live => match store.meta(&room).await {
            Ok(m) => m.is_some(),
            Err(e) => return unavailable(&room, e),
        },
        _ => false,
    };
    if !live && !stored {
        return no_such_room(&app, &room);
    }
    match super::delete_room(&app, &room).await {
        Ok(d) => data(&d.tombstone),
        Err(e) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

/// Body of `POST /rooms/{room}/commands` and `POST /commands`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CommandRequest {
    kind: String,
    #[serde(default)]
    args: serde_json::Value,
    #[serde(default)]
    deadline_s: Option<u64>,
}

fn issue(app: &AppState, room: Option<String>, body: &[u8]) -> Response {
    let req: CommandRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"kind\": ..., \"args\": {{...}}, \"deadline_s\": ...}}: {e}"),
            )
            .into_response()
        }
    };
    match app
        .commands
        .issue(&req.kind, room, req.args, req.deadline_s)
    {
        Ok(c) => data(json!({ "id": c.id, "deadline_ms": c.deadline_ms })),
        Err(e) => ApiError::new(StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

/// `POST /rooms/{room}/commands` (admin): issues a maintenance command for one room;
/// answers `{"data": {"id", "deadline_ms"}}`.
pub(crate) async fn issue_room_command(
    State(app): State<Arc<AppState>>,
    params: Result<RawPathParams, RawPathParamsRejection>,
    body: Bytes,
) -> Response {
    let room = match room_param(&params) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    issue(&app, Some(room), &body)
}

/// `POST /commands` (admin): issues a maintenance command for every room.
pub(crate) async fn issue_command(State(app): State<Arc<AppState>>, body: Bytes) -> Response {
    issue(&app, None, &body)
}

/// `GET /commands/{id}` (admin): the aggregated results of a command issued here.
pub(crate) async fn command_report(
    State(app): State<Arc<AppState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    match app.commands.report(&id) {
        Some(v) => data(v),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no command {id:?} was issued on this node (or it is too old)"),
        )
        .into_response(),
    }
}

/// `POST /rooms/{room}/compact` (admin): folds the room's stored log into one snapshot and
/// answers `{"data": {"room", "bytes_before", "bytes_after"}}` (logical bytes: snapshot plus
/// log). 404 when the room is not stored; 409 when the node runs without a store.
pub(crate) async fn compact_room(
    State(app): State<Arc<AppState>>,
    params: Result<RawPathParams, RawPathParamsRejection>,
) -> Response {
    let room = match room_param(&params) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let Some(store) = app.registry.store() else {
        return ApiError::new(
            StatusCode::CONFLICT,
            "this node runs with --memory: there is no store to compact",
        )
        .into_response();
    };
    // Let the room's queued changes commit first, so a room that was just created is found
    // and the snapshot covers everything applied so far. A failed write does not stop the
    // compaction of what is stored.
    if let Some(r) = app.registry.get(&room) {
        let _ = r.wait_durable().await;
    }
    match store.meta(&room).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return ApiError::new(
                StatusCode::NOT_FOUND,
                format!("room {room:?} is not stored"),
            )
            .into_response()
        }
        Err(e) => return unavailable(&room, e),
    }
    match store.compact(&room).await {
        Ok((before, after)) => {
            tracing::info!(room, before, after, "room compacted on request");
            data(json!({ "room": room, "bytes_before": before, "bytes_after": after }))
        }
        Err(e) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot compact room {room:?}: {e}"),
        )
        .into_response(),
    }
}

/// The validated `{room}` path parameter. axum has already percent-decoded it once (so
/// `%2F` is a `/` in the name, `%252F` the three characters `%2F`); `+` stays a plus.
/// A segment that does not decode to UTF-8 is a 400 in the JSON envelope.
pub(crate) fn room_param(
    params: &Result<RawPathParams, RawPathParamsRejection>,
) -> Result<String, ApiError> {
    let params = params.as_ref().map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("room name is not valid UTF-8 after percent-decoding ({e})"),
        )
    })?;
    let name = params
        .iter()
        .find(|(k, _)| *k == "room")
        .map(|(_, v)| v)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no room in path"))?;
    crate::room::validate_room_name(name)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok(name.to_string())
}
