//! [`NetError`]: what can go wrong with one request, sorted by what the caller does next.

use std::time::Duration;

/// Why a request failed. The variants fall in three groups that callers treat differently:
///
/// - **not reached** ([`NetError::is_unreachable`]): [`Connect`](NetError::Connect) and
///   [`Timeout`](NetError::Timeout). Nothing (or nothing in time) answered: the server may
///   be down, still starting, or on the far side of a partition.
/// - **answered with an error status**: [`Status`](NetError::Status), with the message of
///   the `{"error": {"message": ...}}` envelope when the body carries one.
/// - **answered, but not usefully** ([`NetError::answered`] covers this and the previous
///   group): [`Body`](NetError::Body), a success whose body is too large, not JSON, or not
///   of the expected shape.
///
/// [`Exchange`](NetError::Exchange) (the connection broke mid-way, or the peer does not
/// speak HTTP/1) and [`InvalidRequest`](NetError::InvalidRequest) (the URL, path or a header
/// cannot be sent) belong to none of them.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The base URL, a path or a header value cannot be used.
    #[error("{url:?}: {reason}")]
    InvalidRequest {
        /// The URL (or URL and path) concerned.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No connection could be made (refused, no route, name not resolved, no socket file).
    #[error("{url}: cannot connect: {source}")]
    Connect {
        /// The request's URL.
        url: String,
        /// The connect error.
        source: std::io::Error,
    },
    /// Connecting, or waiting for (a part of) the answer, took longer than allowed.
    #[error("{url}: timed out {waiting} (after {} ms)", after.as_millis())]
    Timeout {
        /// The request's URL.
        url: String,
        /// What it was waiting for: `connecting`, `waiting for the answer`, ...
        waiting: &'static str,
        /// The limit that ran out.
        after: Duration,
    },
    /// The connection was made but the exchange failed: closed early, reset, or the answer
    /// is not HTTP/1.
    #[error("{url}: {message}")]
    Exchange {
        /// The request's URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The server answered with a status outside 200-299.
    #[error("{url} answered {status}: {message}")]
    Status {
        /// The request's URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The message of its `{"error": {"message": ...}}` envelope, else the start of its
        /// body.
        message: String,
    },
    /// The server answered with success, but the body is unusable: larger than the limit,
    /// not JSON, or not the expected document.
    #[error("{url}: {message}")]
    Body {
        /// The request's URL.
        url: String,
        /// What is wrong with the body.
        message: String,
    },
}

impl NetError {
    /// Nothing answered, or nothing answered in time: connect errors and timeouts.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, NetError::Connect { .. } | NetError::Timeout { .. })
    }

    /// The server gave a complete HTTP answer that was not what the caller wanted: an error
    /// status, or a success with an unusable body.
    pub fn answered(&self) -> bool {
        matches!(self, NetError::Status { .. } | NetError::Body { .. })
    }

    /// The HTTP status of a [`NetError::Status`].
    pub fn status(&self) -> Option<u16> {
        match self {
            NetError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The same error, reported under `url` (e.g. the server's base URL rather than the
    /// request's).
    pub fn with_url(mut self, new: impl Into<String>) -> NetError {
        match &mut self {
            NetError::InvalidRequest { url, .. }
            | NetError::Connect { url, .. }
            | NetError::Timeout { url, .. }
            | NetError::Exchange { url, .. }
            | NetError::Status { url, .. }
            | NetError::Body { url, .. } => *url = new.into(),
        }
        self
    }

    /// The URL of the request that failed.
    pub fn url(&self) -> &str {
        match self {
            NetError::InvalidRequest { url, .. }
            | NetError::Connect { url, .. }
            | NetError::Timeout { url, .. }
            | NetError::Exchange { url, .. }
            | NetError::Status { url, .. }
            | NetError::Body { url, .. } => url,
        }
    }
}

/// The message of an error answer: the `error.message` of ymesh's JSON envelope, else the
/// first 200 characters of the body as text.
pub(crate) fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            text.trim().chars().take(200).collect()
        })
}
