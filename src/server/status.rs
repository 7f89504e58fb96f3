//! `GET /metrics` (Prometheus text), the status page `GET /ui` with its embedded assets, and
//! the page's JSON feed `GET /ui/state`. Access is the access layer's (`access.rs`): the
//! static page is public, the metrics and the feed need a client credential when a client
//! mode is on; room-scoped tokens are refused here as on `GET /peers` (these show every room
//! and the mesh). The handlers only gather: [`crate::metrics`] encodes, [`crate::ui`] holds
//! the page, the mesh and the registry hold the state.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::http::{data, unscoped_only, ApiError};
use super::AppState;

/// Commands the feed lists.
const RECENT_COMMANDS: usize = 20;

/// `GET /metrics`: every metric in the OpenMetrics text format Prometheus scrapes.
pub(crate) async fn metrics(
    State(app): State<Arc<AppState>>,
    identity: Option<axum::Extension<crate::auth::Identity>>,
) -> Response {
    if let Err(refused) = unscoped_only(identity.as_deref()) {
        return refused.into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        app.metrics.encode(),
    )
        .into_response()
}

/// Headers of the page and its assets: no framing, no sniffing, nothing from elsewhere.
fn page_headers(content_type: &'static str) -> [(header::HeaderName, HeaderValue); 5] {
    [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(crate::ui::CSP),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ]
}

/// `GET /ui`: the status page.
pub(crate) async fn page() -> Response {
    (
        page_headers("text/html; charset=utf-8"),
        crate::ui::INDEX_HTML,
    )
        .into_response()
}

/// `GET /ui/assets/{file}`: the page's script and style sheet.
pub(crate) async fn asset(Path(file): Path<String>) -> Response {
    match crate::ui::asset(&file) {
        Some((content_type, body)) => (page_headers(content_type), body).into_response(),
        None => ApiError::new(StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

/// `GET /ui/state`: what the page shows, in one JSON document (docs/operations.md): the node,
/// room totals, the peer rows of `GET /peers`, at most [`crate::ui::ROOMS_SHOWN`] rooms,
/// recent commands, and the samples of the last minutes. Its cost does not grow with the
/// rooms on disk: stored rooms come from the sampler's last count.
pub(crate) async fn state(
    State(app): State<Arc<AppState>>,
    identity: Option<axum::Extension<crate::auth::Identity>>,
) -> Response {
    if let Err(refused) = unscoped_only(identity.as_deref()) {
        return refused.into_response();
    }
    let clients = app.metrics.connections();
    let stored = app.registry.store().map(|_| &*app.stored_rooms);
    let (totals, mut rooms) = crate::ui::summarize(
        app.registry.list(),
        stored,
        clients as u64,
        crate::ui::ROOMS_SHOWN,
    );
    for row in &mut rooms {
        row.schema_version = app.commands.schema_version(&row.name);
    }
    let addresses = app
        .mesh
        .settings()
        .listen
        .as_deref()
        .map(crate::ui::node_addresses)
        .unwrap_or_default();
    data(json!({
        "now_ms": super::now_ms(),
        "node": {
            "node_id": app.mesh.node_id(),
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": app.started.elapsed().as_secs(),
            "addresses": addresses,
            "stored": !app.live().config.memory,
            "rooms": app.registry.len(),
            "connections": clients,
            "updates_applied": app.metrics.updates_applied(),
            "discovery": app.discovery.get().cloned().unwrap_or_default(),
        },
        "totals": totals,
        "peers": app.mesh.peers_json(),
        "rooms": rooms,
        "commands": app.commands.recent(RECENT_COMMANDS),
        "history": app.metrics.history(),
    }))
}
