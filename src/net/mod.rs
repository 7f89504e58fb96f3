//! The one HTTP client of the crate: every outgoing HTTP request goes through [`Client`].
//!
//! Its users are the operator commands that talk to a running node (`ymesh status`,
//! `export --node`, `command`, ...), the mesh's probe of a peer's `GET /`, and tailnet
//! discovery (tailscaled's LocalAPI over its Unix socket, and `GET /` on each candidate).
//! It owns the HTTP/1.1 exchange and nothing above it: which paths to ask and what the
//! answers mean stay with the callers.
//!
//! Under it is hyper-util's connection-pooling client over hyper 1 (already built for the
//! server side through axum), HTTP/1.1 only, `http://` or `https://` ([`tls`]: rustls, the
//! system's trust store plus configured CA files), so the dependency tree gains a few small
//! crates, not another HTTP stack. It imports nothing else from this crate; [`tls`] also
//! serves the listener and the mesh's `wss://` dials.
//!
//! A [`Client`] talks to **one endpoint**: a base URL `http[s]://HOST[:PORT][/PREFIX]` over
//! TCP, or (Unix only) a socket path with the `Host` to send ([`Client::unix`]). Requests
//! name a path under it. Every request is bounded:
//!
//! - **connect timeout** (default [`DEFAULT_CONNECT_TIMEOUT`]): time to open a connection;
//! - **idle timeout** (default [`DEFAULT_IDLE_TIMEOUT`]): time the server may stay silent,
//!   waiting for the answer's head and between parts of its body, so a large answer that
//!   keeps coming is not cut off;
//! - **request timeout** (none by default; [`Client::with_timeout`], [`Request::timeout`]):
//!   time for the whole exchange, for probes that must not take long whatever happens;
//! - **body limit** (default [`DEFAULT_MAX_BODY`]): a larger answer is refused, not
//!   buffered.
//!
//! Failures are [`NetError`]s sorted by what the caller does next: nothing answered
//! ([`NetError::is_unreachable`]), the server answered with an error status (the message of
//! ymesh's `{"error": {"message": ...}}` envelope surfaced), or it answered with a body
//! that is unusable.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ymesh::net::NetError> {
//! use ymesh::net::{Client, Envelope};
//!
//! let node = Client::new("http://127.0.0.1:3913", None)?;
//! let root: Envelope<serde_json::Value> = node.get_json("/").await?;
//! println!("node {}", root.data["node_id"]);
//! # Ok(())
//! # }
//! ```

mod connect;
mod error;
pub mod tls;
mod url;

#[cfg(unix)]
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::Uri;
use hyper_util::client::legacy::Client as Pooled;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use connect::{ConnectFailed, Connector, Endpoint};
pub use error::NetError;
pub use hyper::Method;

/// Default time allowed to open a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time the server may stay silent mid-request (before the answer's head, and
/// between parts of its body).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default largest answer body accepted: 64 MiB, the node's own HTTP body limit.
pub const DEFAULT_MAX_BODY: usize = 64 << 20;
/// How long an idle pooled connection is kept for the next request.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// ymesh's success envelope, `{"data": ...}`; a missing `data` reads as `T::default()`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Envelope<T> {
    /// The answer's `data`.
    #[serde(default)]
    pub data: T,
}

/// The origin requests go to, as sent and as shown in errors.
#[derive(Debug)]
struct Origin {
    /// `Host` and URI authority.
    authority: String,
    /// Path prefix, without a trailing `/`.
    base_path: String,
    /// The base URL as shown to people.
    shown: String,
    /// The socket the requests really go to, for a Unix-socket client.
    #[cfg(unix)]
    socket: Option<std::path::PathBuf>,
}

impl Origin {
    fn uri(&self, path: &str) -> String {
        format!("http://{}{}{path}", self.authority, self.base_path)
    }

    fn shown(&self, path: &str) -> String {
        let uri = self.uri(path);
        #[cfg(unix)]
        if let Some(socket) = &self.socket {
            return format!("{uri} via {}", socket.display());
        }
        uri
    }
}

/// An HTTP/1.1 client of one endpoint; cheap to clone (clones share the connection pool).
#[derive(Clone)]
pub struct Client {
    pooled: Pooled<Connector, Full<Bytes>>,
    endpoint: Endpoint,
    origin: Arc<Origin>,
    bearer: Option<Arc<str>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    timeout: Option<Duration>,
    max_body: usize,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.origin.shown)
            .field("bearer", &self.bearer.as_ref().map(|_| "<set>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("timeout", &self.timeout)
            .field("max_body", &self.max_body)
            .finish()
    }
}

fn pool(endpoint: &Endpoint, connect_timeout: Duration) -> Pooled<Connector, Full<Bytes>> {
    Pooled::builder(TokioExecutor::new())
        // `Host:`, not `host:`: what the hand-written clients before this one sent, and what
        // simple servers (and test stand-ins) that compare header names verbatim expect.
        .http1_title_case_headers(true)
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE)
        .build(Connector::new(endpoint.clone(), connect_timeout))
}

impl Client {
    /// A client of `base_url` (`http[s]://HOST[:PORT][/PREFIX]`; port 80, or 443 for
    /// `https`, when none is given).
    /// `bearer`, when set, is sent as `Authorization: Bearer <token>` with every request.
    pub fn new(base_url: &str, bearer: Option<String>) -> Result<Client, NetError> {
        let base = url::BaseUrl::parse(base_url).map_err(|reason| NetError::InvalidRequest {
            url: base_url.to_string(),
            reason: reason.to_string(),
        })?;
        let endpoint = Endpoint::Tcp {
            host: Arc::from(base.host.as_str()),
            port: base.port,
            tls: base.tls,
        };
        let origin = Origin {
            authority: base.authority,
            base_path: base.base_path,
            shown: base.url,
            #[cfg(unix)]
            socket: None,
        };
        Ok(Self::with_parts(endpoint, origin, bearer))
    }

    /// A client of the HTTP server on the Unix socket `socket`, sending `Host: host` (for
    /// tailscaled's LocalAPI: `local-tailscaled.sock`).
    #[cfg(unix)]
    pub fn unix(socket: impl AsRef<Path>, host: &str) -> Result<Client, NetError> {
        let socket = socket.as_ref();
        let shown = format!("http://{host} via {}", socket.display());
        match host.parse::<hyper::http::uri::Authority>() {
            Ok(a) if a.as_str() == host => {}
            _ => {
                return Err(NetError::InvalidRequest {
                    url: shown,
                    reason: format!("{host:?} is not a host name"),
                })
            }
        }
        let origin = Origin {
            authority: host.to_string(),
            base_path: String::new(),
            shown,
            socket: Some(socket.to_path_buf()),
        };
        Ok(Self::with_parts(
            Endpoint::Unix(Arc::from(socket)),
            origin,
            None,
        ))
    }

    fn with_parts(endpoint: Endpoint, origin: Origin, bearer: Option<String>) -> Client {
        Client {
            pooled: pool(&endpoint, DEFAULT_CONNECT_TIMEOUT),
            endpoint,
            origin: Arc::new(origin),
            bearer: bearer.map(Arc::from),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            timeout: None,
            max_body: DEFAULT_MAX_BODY,
        }
    }

    /// Sets the time allowed to open a connection (a new, empty connection pool).
    pub fn with_connect_timeout(mut self, limit: Duration) -> Client {
        self.connect_timeout = limit;
        self.pooled = pool(&self.endpoint, limit);
        self
    }

    /// Sets the time the server may stay silent mid-request.
    pub fn with_idle_timeout(mut self, limit: Duration) -> Client {
        self.idle_timeout = limit;
        self
    }

    /// Sets a limit on the whole of every request (connect, answer and body); a request's
    /// own [`Request::timeout`] takes precedence.
    pub fn with_timeout(mut self, limit: Duration) -> Client {
        self.timeout = Some(limit);
        self
    }

    /// Sets the largest answer body accepted, in bytes.
    pub fn with_max_body(mut self, bytes: usize) -> Client {
        self.max_body = bytes;
        self
    }

    /// The base URL, as given (without a trailing `/`), or the `Host` and socket of a
    /// Unix-socket client.
    pub fn base_url(&self) -> &str {
        &self.origin.shown
    }

    /// The URL of `path` under the base URL, as shown in errors.
    pub fn url(&self, path: &str) -> String {
        self.origin.shown(path)
    }

    /// Sends `req` and reads the whole answer, whatever its status.
    pub async fn send(&self, req: Request) -> Result<Response, NetError> {
        let url = self.origin.shown(&req.path);
        let invalid = |reason: String| NetError::InvalidRequest {
            url: url.clone(),
            reason,
        };
        if let Some(reason) = req.invalid {
            return Err(invalid(reason));
        }
        if !req.path.starts_with('/') {
            return Err(invalid("the path must start with /".into()));
        }
        let uri: Uri = self
            .origin
            .uri(&req.path)
            .parse()
            .map_err(|e| invalid(format!("{e}")))?;
        let mut builder = hyper::Request::builder()
            .method(req.method)
            .uri(uri)
            .header(
                hyper::header::USER_AGENT,
                concat!("ymesh/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(content_type) = req.content_type {
            builder = builder.header(CONTENT_TYPE, content_type);
        }
        if let Some(token) = &self.bearer {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| invalid("the bearer token is not a valid header value".into()))?;
            builder = builder.header(AUTHORIZATION, value);
        }
        for (name, value) in &req.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid(format!("bad header name {name:?}")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| invalid(format!("bad value for header {name}")))?;
            builder = builder.header(name, value);
        }
        let request = builder
            .body(Full::new(req.body))
            .map_err(|e| invalid(e.to_string()))?;
        let exchange = self.exchange(request, &url);
        match req.timeout.or(self.timeout) {
            Some(limit) => {
                tokio::time::timeout(limit, exchange)
                    .await
                    .map_err(|_| NetError::Timeout {
                        url: url.clone(),
                        waiting: "completing the request",
                        after: limit,
                    })?
            }
            None => exchange.await,
        }
    }

    async fn exchange(
        &self,
        request: hyper::Request<Full<Bytes>>,
        url: &str,
    ) -> Result<Response, NetError> {
        let timeout = |waiting, after| NetError::Timeout {
            url: url.to_string(),
            waiting,
            after,
        };
        let head = tokio::time::timeout(self.idle_timeout, self.pooled.request(request))
            .await
            .map_err(|_| timeout("waiting for the answer", self.idle_timeout))?
            .map_err(|e| classify(url, &e))?;
        let status = head.status().as_u16();
        let content_type = head
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let success = (200..300).contains(&status);
        let too_large = |what: String| {
            if success {
                NetError::Body {
                    url: url.to_string(),
                    message: format!("{what} is larger than the limit of {} bytes", self.max_body),
                }
            } else {
                NetError::Status {
                    url: url.to_string(),
                    status,
                    message: format!("({what} not read: too large)"),
                }
            }
        };
        let announced = head
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(len) = announced.filter(|len| *len > self.max_body as u64) {
            return Err(too_large(format!("the answer of {len} bytes")));
        }
        let mut body = head.into_body();
        let mut buf = BytesMut::new();
        loop {
            let frame = match tokio::time::timeout(self.idle_timeout, body.frame()).await {
                Err(_) => return Err(timeout("reading the answer", self.idle_timeout)),
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    return Err(NetError::Exchange {
                        url: url.to_string(),
                        message: format!("reading the answer: {}", chain(&e)),
                    })
                }
                Ok(Some(Ok(frame))) => frame,
            };
            if let Ok(data) = frame.into_data() {
                if buf.len().saturating_add(data.len()) > self.max_body {
                    return Err(too_large("the answer".into()));
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(Response {
            status,
            content_type,
            body: buf.freeze(),
            url: url.to_string(),
        })
    }

    /// `GET path`, a success answer's body as JSON `T`.
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<T, NetError> {
        self.send(Request::get(path))
            .await?
            .error_for_status()?
            .json()
    }

    /// `POST path` with `body` as JSON, a success answer's body as JSON `T`.
    pub async fn post_json<T, B>(&self, path: &str, body: &B) -> Result<T, NetError>
    where
        T: serde::de::DeserializeOwned,
        B: serde::Serialize + ?Sized,
    {
        self.send(Request::post(path).json(body))
            .await?
            .error_for_status()?
            .json()
    }

    /// `GET path`, a success answer's body as bytes.
    pub async fn get_bytes(&self, path: &str) -> Result<Bytes, NetError> {
        Ok(self
            .send(Request::get(path))
            .await?
            .error_for_status()?
            .body)
    }

    /// `POST path` with `body` (`application/octet-stream`); the success answer.
    pub async fn post_bytes(
        &self,
        path: &str,
        body: impl Into<Bytes>,
    ) -> Result<Response, NetError> {
        self.send(Request::post(path).bytes(body))
            .await?
            .error_for_status()
    }

    /// `DELETE path`; the success answer.
    pub async fn delete(&self, path: &str) -> Result<Response, NetError> {
        self.send(Request::delete(path)).await?.error_for_status()
    }
}

/// What went wrong inside hyper, as a [`NetError`]: the connector's own error when it is in
/// the chain (cannot connect, or timed out connecting), else a failed exchange.
fn classify(url: &str, e: &hyper_util::client::legacy::Error) -> NetError {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(failed) = s.downcast_ref::<ConnectFailed>() {
            return match failed {
                ConnectFailed::TimedOut(after) => NetError::Timeout {
                    url: url.to_string(),
                    waiting: "connecting",
                    after: *after,
                },
                ConnectFailed::Io(io) => NetError::Connect {
                    url: url.to_string(),
                    source: std::io::Error::new(io.kind(), io.to_string()),
                },
            };
        }
        source = s.source();
    }
    if e.is_connect() {
        return NetError::Connect {
            url: url.to_string(),
            source: std::io::Error::other(chain(e)),
        };
    }
    NetError::Exchange {
        url: url.to_string(),
        message: chain(e),
    }
}

/// The messages of `e`'s causes, joined with `: ` (hyper-util's own message only names an
/// error kind, so it is left out when there is a cause).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    if parts.is_empty() {
        e.to_string()
    } else {
        parts.join(": ")
    }
}

/// One request: method, path under the client's base URL, body, extra headers, timeout.
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    path: String,
    body: Bytes,
    content_type: Option<String>,
    headers: Vec<(String, String)>,
    timeout: Option<Duration>,
    /// Why the request cannot be sent (a body that did not serialize), reported by
    /// [`Client::send`].
    invalid: Option<String>,
}

impl Request {
    /// A request with `method` for `path` (starting with `/`, may carry a query), no body.
    pub fn new(method: Method, path: impl Into<String>) -> Request {
        Request {
            method,
            path: path.into(),
            body: Bytes::new(),
            content_type: None,
            headers: Vec::new(),
            timeout: None,
            invalid: None,
        }
    }

    /// `GET path`.
    pub fn get(path: impl Into<String>) -> Request {
        Request::new(Method::GET, path)
    }

    /// `POST path` (no body until one is set).
    pub fn post(path: impl Into<String>) -> Request {
        Request::new(Method::POST, path)
    }

    /// `DELETE path`.
    pub fn delete(path: impl Into<String>) -> Request {
        Request::new(Method::DELETE, path)
    }

    /// Sets the body and its `Content-Type`.
    pub fn body(mut self, content_type: &str, body: impl Into<Bytes>) -> Request {
        self.content_type = Some(content_type.to_string());
        self.body = body.into();
        self
    }

    /// Sets a binary body (`application/octet-stream`).
    pub fn bytes(self, body: impl Into<Bytes>) -> Request {
        self.body("application/octet-stream", body)
    }

    /// Sets `value` as a JSON body (`application/json`).
    pub fn json<B: serde::Serialize + ?Sized>(self, value: &B) -> Request {
        match serde_json::to_vec(value) {
            Ok(body) => self.body("application/json", body),
            Err(e) => Request {
                invalid: Some(format!("the JSON body does not serialize: {e}")),
                ..self
            },
        }
    }

    /// Adds a header (checked when the request is sent).
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Limits the whole of this request (connect, answer and body), whatever the client's
    /// [`Client::with_timeout`] says.
    pub fn timeout(mut self, limit: Duration) -> Request {
        self.timeout = Some(limit);
        self
    }
}

/// A whole answer: status and body.
#[derive(Debug, Clone)]
pub struct Response {
    /// The HTTP status.
    pub status: u16,
    /// The body (de-chunked).
    pub body: Bytes,
    content_type: Option<String>,
    url: String,
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The `Content-Type` of the answer, if it has one.
    pub fn content_type(&self) -> Option<&str> {
        self.content_type.as_deref()
    }

    /// The URL the request went to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The answer itself when its status is 2xx, else [`NetError::Status`] with the message
    /// of its `{"error": {"message": ...}}` envelope (or the start of its body).
    pub fn error_for_status(self) -> Result<Response, NetError> {
        if self.is_success() {
            return Ok(self);
        }
        Err(NetError::Status {
            message: error::error_message(&self.body),
            url: self.url,
            status: self.status,
        })
    }

    /// The body as JSON `T`; [`NetError::Body`] when it is not JSON or not a `T`.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, NetError> {
        serde_json::from_slice(&self.body).map_err(|e| NetError::Body {
            url: self.url.clone(),
            message: if e.is_data() {
                format!("the answer is not the expected document: {e}")
            } else {
                format!("the answer is not JSON: {e}")
            },
        })
    }
}

#[cfg(test)]
mod tests;
