//! HTTP API handlers. Every JSON body is `{"data": ...}` on success and
//! `{"error": {"message": ...}}` on failure.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Query, RawPathParams, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::json;
use yrs::updates::decoder::Decode;

use super::AppState;

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
    data(json!({
        "name": "ymesh",
        "version": env!("CARGO_PKG_VERSION"),
        // The node's identity arrives with the mesh; until then there is none to show.
        "node_id": serde_json::Value::Null,
        "uptime_s": app.started.elapsed().as_secs(),
        "rooms": app.registry.len(),
        "connections": app.connections.load(Ordering::Relaxed),
    }))
}

pub(crate) async fn healthz() -> Response {
    data(json!({ "status": "ok" }))
}

pub(crate) async fn list_rooms(State(app): State<Arc<AppState>>) -> Response {
    data(app.registry.list())
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
pub(crate) fn room_document(app: &AppState, room: &str, query: &DocumentQuery) -> Response {
    let Some(r) = app.registry.get(room) else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            format!("room {room:?} does not exist"),
        )
        .into_response();
    };
    match query.format.as_deref() {
        None | Some("binary") => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            r.encode_state(),
        )
            .into_response(),
        Some("json") => data(r.to_json()),
        Some(other) => ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("unknown format {other:?}; use json, or omit it for the binary update"),
        )
        .into_response(),
    }
}

/// `GET /rooms/{room}` when `/rooms/{room}` is not a WebSocket route.
pub(crate) async fn get_room(
    State(app): State<Arc<AppState>>,
    params: RawPathParams,
    Query(query): Query<DocumentQuery>,
) -> Response {
    match room_param(&params) {
        Ok(room) => room_document(&app, &room, &query),
        Err(e) => e.into_response(),
    }
}

/// `POST /rooms/{room}`: applies a binary Yjs v1 update (creating the room if needed) and
/// broadcasts it to connected clients. Answers `{"data": {"changed": bool}}`.
pub(crate) async fn post_room(
    State(app): State<Arc<AppState>>,
    params: RawPathParams,
    body: Bytes,
) -> Response {
    let room = match room_param(&params) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    // Validate before creating the room, so garbage never creates one.
    if let Err(e) = yrs::Update::decode_v1(&body) {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("body is not a valid Yjs v1 update: {e}"),
        )
        .into_response();
    }
    let room = match app.registry.get_or_create(&room) {
        Ok(r) => r,
        Err(e) => {
            return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response()
        }
    };
    match room.apply_update(&body, None) {
        Ok(changed) => data(json!({ "changed": changed })),
        Err(e) => ApiError::new(StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

/// The decoded, validated `{room}` path parameter.
pub(crate) fn room_param(params: &RawPathParams) -> Result<String, ApiError> {
    let raw = params
        .iter()
        .find(|(k, _)| *k == "room")
        .map(|(_, v)| v)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no room in path"))?;
    crate::room::decode_room_segment(raw)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))
}
