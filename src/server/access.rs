//! The one router-wide access layer: every request passes here before any handler, and
//! handlers never decide access themselves (the admin rule of admin routes sits on top).
//!
//! In order ([`crate::auth`] holds the rules):
//!
//! 1. **Host** (DNS rebinding): a node bound to loopback answers only loopback or
//!    `allowed_hosts` names; others get 403.
//! 2. **Origin**, in every mode: a request with an `Origin` the node does not allow gets 403;
//!    `/_mesh` refuses any `Origin` (nodes never send one).
//! 3. **Credential**, when a client mode is on: every route but `GET /healthz` needs the
//!    static token or a signed user token, as `?token=` or `Authorization: Bearer`; `/_mesh`
//!    too while the mesh is open to any node (`mesh_open`; otherwise peers are admitted by
//!    the mesh handshake: secret, allow list or approval). Refused: HTTP 401.
//!
//! A refused WebSocket upgrade is accepted and then closed (4403, 4401) with the reason,
//! before any sync message: browsers cannot read an HTTP status of a failed upgrade, but
//! they see the close code. The authenticated [`Identity`] travels on as a request
//! extension. No credential is ever logged or echoed.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::http::ApiError;
use super::AppState;
use crate::auth::origin::{HostPolicy, OriginPolicy};
use crate::auth::{bearer, AuthError, ClientAuth, Identity};
use crate::room::CloseReason;

/// What the access layer needs, built once at start.
#[derive(Debug, Clone)]
pub(crate) struct AccessRules {
    pub(crate) clients: ClientAuth,
    pub(crate) origins: OriginPolicy,
    pub(crate) hosts: HostPolicy,
    /// `/_mesh` needs a client credential too (a client mode is on and the mesh admits any
    /// node).
    pub(crate) mesh_needs_credential: bool,
}

/// The credential a request presented (`None`: none), kept by a WebSocket session so that a
/// reload can judge it again.
#[derive(Debug, Clone)]
pub(crate) struct Presented(pub(crate) Option<Arc<str>>);

/// The route exempt from credentials (load balancers, probes).
const HEALTHZ: &str = "/healthz";
/// The node-to-node control channel.
const MESH: &str = "/_mesh";

/// The layer; see the module docs.
pub(crate) async fn access_layer(
    State(app): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    let live = app.live();
    let rules = &live.access;
    let path = req.uri().path().to_string();
    let headers = req.headers();
    let host = header_str(headers, header::HOST);
    if !rules.hosts.allows(host) {
        tracing::warn!(%peer, host = host.unwrap_or(""), path, "request refused: Host not allowed");
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "this node answers only loopback host names (DNS rebinding protection); \
             add the name to allowed_hosts in mesh.toml to use it",
        )
        .into_response();
    }
    let mut refusal = None;
    if let Some(origin) = header_str(headers, header::ORIGIN) {
        if path == MESH {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "/_mesh takes connections from ymesh nodes, not from web pages",
            )
            .into_response();
        }
        if !rules.origins.allows(origin, host, app.scheme()) {
            tracing::warn!(%peer, origin, path, "request refused: origin not allowed");
            refusal = Some(CloseReason::Forbidden(format!(
                "origin {origin} is not allowed; list it in allowed_origins in mesh.toml"
            )));
        }
    }
    // A CORS preflight carries no credential; the request it announces will.
    let preflight = req.method() == Method::OPTIONS
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let needs_credential = rules.clients.is_on()
        && !preflight
        && !(path == HEALTHZ && req.method() == Method::GET)
        && (path != MESH || rules.mesh_needs_credential);
    let mut identity = Identity::default();
    let credential = credential(headers, req.uri().query());
    if refusal.is_none() && needs_credential {
        match rules.clients.check(credential.as_deref()) {
            Ok(id) => identity = id,
            Err(e) => {
                tracing::warn!(%peer, path, reason = %e, "request refused: not authenticated");
                refusal = Some(CloseReason::Unauthorized(e.to_string()));
            }
        }
    }
    if let Some(reason) = refusal {
        if path == MESH {
            // Nodes read the HTTP status of a refused dial.
            return ApiError::new(status_of(&reason), reason.to_string()).into_response();
        }
        return refuse(req, reason).await;
    }
    if let Some(user) = &identity.user {
        tracing::debug!(%peer, user, path, "authenticated");
    }
    req.extensions_mut().insert(identity);
    req.extensions_mut()
        .insert(Presented(credential.map(Arc::from)));
    next.run(req).await
}

/// A refused request: HTTP 401/403, or for a WebSocket upgrade an accepted socket closed
/// with 4401/4403 and the reason.
async fn refuse(req: Request, reason: CloseReason) -> Response {
    let is_upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if is_upgrade {
        let (mut parts, _) = req.into_parts();
        if let Ok(ws) = WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            return ws.on_upgrade(move |socket| async move {
                super::ws::close_now(socket, &reason).await
            });
        }
        return ApiError::new(status_of(&reason), reason.to_string()).into_response();
    }
    ApiError::new(status_of(&reason), reason.to_string()).into_response()
}

fn status_of(reason: &CloseReason) -> StatusCode {
    match reason {
        CloseReason::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        _ => StatusCode::FORBIDDEN,
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The credential of a request: `Authorization: Bearer`, else `?token=`.
fn credential(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(b) = header_str(headers, header::AUTHORIZATION).and_then(bearer) {
        return Some(b.to_string());
    }
    let query = query?;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == "token").then(|| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

impl From<AuthError> for CloseReason {
    fn from(e: AuthError) -> Self {
        CloseReason::Unauthorized(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_from_header_or_query() {
        let mut h = HeaderMap::new();
        assert_eq!(
            credential(&h, Some("a=1&token=t%2Bk&b=2")),
            Some("t+k".into())
        );
        assert_eq!(credential(&h, Some("tokens=x")), None);
        assert_eq!(credential(&h, None), None);
        h.insert(header::AUTHORIZATION, "Bearer hdr".parse().unwrap());
        assert_eq!(credential(&h, Some("token=q")), Some("hdr".into()));
    }
}
