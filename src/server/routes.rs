//! The router: every route of the node with its layers (access, admin rule, body limit and
//! deadline, CORS), the config reload route and the `/_mesh` upgrade.
//!
//! Handlers live in `http.rs`, `ws.rs` and `status.rs`; this file only says which path goes
//! where and in which order the layers run.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::*;

/// The document API's path; it also takes WebSocket upgrades when it is a route template.
pub(super) const DOCUMENT_ROUTE: &str = "/rooms/{room}";
/// Compacts a stored room (admin).
const COMPACT_ROUTE: &str = "/rooms/{room}/compact";

/// The node's router over `state`.
pub(super) fn router(state: Arc<AppState>) -> Router {
    let live = state.live();
    let limit = live.config.limits.max_message_bytes;
    let mut router = Router::new()
        .route("/", get(http::root))
        .route("/healthz", get(http::healthz))
        .route("/peers", get(http::list_peers))
        .route("/_mesh", get(mesh_upgrade))
        .route("/rooms", get(http::list_rooms))
        .route("/metrics", get(status::metrics))
        .route("/ui", get(status::page))
        .route("/ui/state", get(status::state))
        .route("/ui/assets/{file}", get(status::asset));
    // Admin routes: the admin rule runs before the handler (see `crate::auth`). Layered on
    // the handler, so a WebSocket route template on the same path keeps its own GET.
    let admin = axum::middleware::from_fn_with_state(state.clone(), http::require_admin);
    let ws_on_documents = live.config.routes.iter().any(|r| r == DOCUMENT_ROUTE);
    router = router.route(
        DOCUMENT_ROUTE,
        if ws_on_documents {
            get(ws::room_route)
        } else {
            get(http::get_room)
        }
        .post(http::post_room)
        .delete(axum::handler::Handler::layer(
            http::delete_room,
            admin.clone(),
        ))
        .layer(axum::extract::DefaultBodyLimit::max(limit)),
    );
    router = router.route(
        COMPACT_ROUTE,
        axum::routing::post(axum::handler::Handler::layer(
            http::compact_room,
            admin.clone(),
        )),
    );
    router = router
        .route(
            "/rooms/{room}/commands",
            axum::routing::post(axum::handler::Handler::layer(
                http::issue_room_command,
                admin.clone(),
            )),
        )
        .route(
            "/commands",
            axum::routing::post(axum::handler::Handler::layer(
                http::issue_command,
                admin.clone(),
            )),
        )
        .route(
            "/commands/{id}",
            get(axum::handler::Handler::layer(
                http::command_report,
                admin.clone(),
            )),
        )
        .route(
            "/peers/{node}/approve",
            axum::routing::post(axum::handler::Handler::layer(
                http::approve_peer,
                admin.clone(),
            )),
        )
        .route(
            "/tokens",
            axum::routing::post(axum::handler::Handler::layer(
                http::mint_token,
                admin.clone(),
            )),
        )
        .route(
            "/reload",
            axum::routing::post(axum::handler::Handler::layer(reload_route, admin.clone())),
        )
        .route(
            "/peers/{node}/deny",
            axum::routing::post(axum::handler::Handler::layer(http::deny_peer, admin)),
        );
    for template in &live.config.routes {
        if template != DOCUMENT_ROUTE {
            router = router.route(template, get(ws::sync_route));
        }
    }
    let access = axum::middleware::from_fn_with_state(state.clone(), access::access_layer);
    let cors = cors_layer(state.clone());
    let body_deadline = axum::middleware::from_fn_with_state(state.clone(), listen::body_deadline);
    router
        .fallback(http::not_found)
        .layer(body_deadline)
        .layer(cors)
        // Outermost: host and origin are checked before anything answers, preflights too
        // (which carry no credential, so the access layer lets them through to CORS).
        .layer(access)
        .with_state(state)
}

/// CORS for the HTTP API, preflight included: the same origins the access layer allows.
/// CORS answers for the allowed origins, as the live config has them.
fn cors_layer(app: Arc<AppState>) -> tower_http::cors::CorsLayer {
    use axum::http::{header, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, parts| {
            let host = parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok());
            origin
                .to_str()
                .is_ok_and(|o| app.live().access.origins.allows(o, host, app.scheme()))
        }))
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(Duration::from_secs(600))
}

/// `POST /reload` (admin): re-reads the config; answers what was applied and what needs a
/// restart, or 400 with the reason (file and line) when the config does not load.
async fn reload_route(
    axum::extract::State(app): axum::extract::State<Arc<AppState>>,
) -> axum::response::Response {
    match reload::reload(&app).await {
        Ok(report) => axum::Json(serde_json::json!({ "data": report })).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "reload refused");
            let status = match e {
                ReloadError::NoSource => axum::http::StatusCode::CONFLICT,
                _ => axum::http::StatusCode::BAD_REQUEST,
            };
            http::ApiError::new(status, e.to_string()).into_response()
        }
    }
}

/// Most established (admitted) inbound `/_mesh` links at once. Sockets still in their
/// handshake do not count: they have their own budget in the mesh (`limits.mesh_preauth_*`),
/// where the oldest gives way to a new one, so strangers can neither fill this cap nor keep
/// a peer out.
const MAX_INBOUND_LINKS: usize = 1024;

/// `/_mesh`: a peer node's control channel.
async fn mesh_upgrade(
    axum::extract::State(app): axum::extract::State<Arc<AppState>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    ws: axum::extract::ws::WebSocketUpgrade,
) -> axum::response::Response {
    // Admitted links are capped here; unauthenticated sockets are bounded by the mesh's
    // pre-authentication budget (`Mesh::accept`), which never refuses a newcomer.
    if app.mesh.inbound_links() >= MAX_INBOUND_LINKS {
        app.metrics.refused(crate::metrics::Refusal::Limit);
        app.metrics.limit_hit(crate::metrics::Limit::InboundLinks);
        return http::ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "node at capacity: too many inbound peer links",
        )
        .into_response();
    }
    let max = crate::mesh::transport::MAX_SEALED_LEN;
    let tracker = app.sessions.clone();
    ws.read_buffer_size(16 * 1024)
        .write_buffer_size(16 * 1024)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| {
            tracker.track_future(async move {
                let io = accept_axum(
                    socket,
                    app.mesh.identity().clone(),
                    app.live().config.limits.write_timeout,
                );
                app.mesh.accept(io, peer);
            })
        })
}
