//! HTTP API handlers. Every JSON body is `{"data": ...}` on success and
//! `{"error": {"message": ...}}` on failure.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

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

/// `GET /rooms/{room}` without a WebSocket upgrade: the room's full state as one Yjs v1
/// update. A room that is not in memory is 404 (looking does not create it).
pub(crate) fn room_document(app: &AppState, room: &str) -> Response {
    match app.registry.get(room) {
        Some(r) => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            r.encode_state(),
        )
            .into_response(),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            format!("room {room:?} does not exist"),
        )
        .into_response(),
    }
}
