//! The WebSocket opening handshake of a client connection (RFC 6455 section 4.2) as an axum
//! extractor, [`Upgrade`]: it checks the request the way axum's `WebSocketUpgrade` does,
//! answers 101 with the `Sec-WebSocket-Accept` key, and hands the raw upgraded connection
//! to the session. Why not axum's: it gives a tungstenite socket, which keeps read and write
//! buffers for the connection's whole life; [`super::conn`] frames the bytes itself.

use std::future::Future;

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;

/// The upgraded connection, as tokio I/O.
pub(crate) type Io = TokioIo<hyper::upgrade::Upgraded>;

/// A valid WebSocket upgrade request, not answered yet.
pub(crate) struct Upgrade {
    key: HeaderValue,
    on_upgrade: hyper::upgrade::OnUpgrade,
}

/// Why a request is not a WebSocket upgrade this server takes.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpgradeRejection {
    /// Not HTTP/1.1 GET.
    #[error("Request method must be `GET`")]
    MethodNotGet,
    /// No `Connection: upgrade`.
    #[error("Connection header did not include 'upgrade'")]
    InvalidConnectionHeader,
    /// No `Upgrade: websocket`.
    #[error("`Upgrade` header did not include 'websocket'")]
    InvalidUpgradeHeader,
    /// No `Sec-WebSocket-Version: 13`.
    #[error("`Sec-WebSocket-Version` header did not include '13'")]
    InvalidWebSocketVersionHeader,
    /// No `Sec-WebSocket-Key`.
    #[error("`Sec-WebSocket-Key` header missing")]
    WebSocketKeyHeaderMissing,
    /// The connection cannot be taken over (not served by hyper with upgrades).
    #[error("WebSocket request couldn't be upgraded since no upgrade state was present")]
    ConnectionNotUpgradable,
}

impl IntoResponse for UpgradeRejection {
    fn into_response(self) -> Response {
        let status = match self {
            UpgradeRejection::MethodNotGet => StatusCode::METHOD_NOT_ALLOWED,
            UpgradeRejection::ConnectionNotUpgradable => StatusCode::UPGRADE_REQUIRED,
            _ => StatusCode::BAD_REQUEST,
        };
        (status, self.to_string()).into_response()
    }
}

fn header_eq(headers: &HeaderMap, key: HeaderName, value: &str) -> bool {
    headers
        .get(&key)
        .is_some_and(|h| h.as_bytes().eq_ignore_ascii_case(value.as_bytes()))
}

fn header_contains(headers: &HeaderMap, key: HeaderName, value: &str) -> bool {
    let Some(h) = headers.get(&key).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    h.split(',')
        .any(|part| part.trim().eq_ignore_ascii_case(value))
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Upgrade {
    type Rejection = UpgradeRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if parts.version > Version::HTTP_11 || parts.method != Method::GET {
            return Err(UpgradeRejection::MethodNotGet);
        }
        if !header_contains(&parts.headers, header::CONNECTION, "upgrade") {
            return Err(UpgradeRejection::InvalidConnectionHeader);
        }
        if !header_eq(&parts.headers, header::UPGRADE, "websocket") {
            return Err(UpgradeRejection::InvalidUpgradeHeader);
        }
        let key = parts
            .headers
            .get(header::SEC_WEBSOCKET_KEY)
            .ok_or(UpgradeRejection::WebSocketKeyHeaderMissing)?
            .clone();
        if !header_eq(&parts.headers, header::SEC_WEBSOCKET_VERSION, "13") {
            return Err(UpgradeRejection::InvalidWebSocketVersionHeader);
        }
        let on_upgrade = parts
            .extensions
            .remove::<hyper::upgrade::OnUpgrade>()
            .ok_or(UpgradeRejection::ConnectionNotUpgradable)?;
        Ok(Upgrade { key, on_upgrade })
    }
}

/// The connection of an answered upgrade, until hyper hands it over.
pub(crate) struct Upgrading(hyper::upgrade::OnUpgrade);

impl Upgrading {
    /// The upgraded connection, or `None` when the upgrade failed (the client went away).
    pub(crate) async fn connection(self) -> Option<Io> {
        match self.0.await {
            Ok(upgraded) => Some(TokioIo::new(upgraded)),
            Err(e) => {
                tracing::debug!(error = %e, "WebSocket upgrade failed");
                None
            }
        }
    }
}

impl Upgrade {
    /// Answers 101 and spawns the future `session` makes of the pending connection as a
    /// task of its own. The task is that future and nothing around it (a wrapper's
    /// captures would be kept beside the future for the connection's whole life), so
    /// `session` awaits [`Upgrading::connection`] itself.
    pub(crate) fn on_upgrade<F, Fut>(self, session: F) -> Response
    where
        F: FnOnce(Upgrading) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let accept =
            tokio_tungstenite::tungstenite::handshake::derive_accept_key(self.key.as_bytes());
        tokio::spawn(session(Upgrading(self.on_upgrade)));
        let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(v) = HeaderValue::from_str(&accept) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::FromRequestParts;

    #[test]
    fn the_accept_key_is_the_rfc_example() {
        // RFC 6455 section 1.3.
        assert_eq!(
            tokio_tungstenite::tungstenite::handshake::derive_accept_key(
                b"dGhlIHNhbXBsZSBub25jZQ=="
            ),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[tokio::test]
    async fn a_request_that_is_not_an_upgrade_is_refused_with_the_reason() {
        let request = |f: fn(axum::http::request::Builder) -> axum::http::request::Builder| {
            let b = axum::http::Request::builder()
                .uri("/rooms/a")
                .header("connection", "keep-alive, Upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-version", "13")
                .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
            f(b).body(()).unwrap().into_parts().0
        };
        let check = |mut parts: Parts| async move {
            Upgrade::from_request_parts(&mut parts, &()).await.err()
        };
        // Everything right but the upgrade state (not served by hyper here).
        assert!(matches!(
            check(request(|b| b)).await,
            Some(UpgradeRejection::ConnectionNotUpgradable)
        ));
        assert!(matches!(
            check(request(|b| b.method("POST"))).await,
            Some(UpgradeRejection::MethodNotGet)
        ));
        let mut plain = axum::http::Request::builder()
            .uri("/rooms/a")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        assert!(matches!(
            Upgrade::from_request_parts(&mut plain, &()).await.err(),
            Some(UpgradeRejection::InvalidConnectionHeader)
        ));
    }
}
