//! The accept loop and the deadlines every HTTP connection lives under, before a request
//! reaches the router.
//!
//! Each accepted TCP connection:
//! - takes a place among its address's half-open connections
//!   (`limits.max_half_open_per_address`, see [`super::limits`]) until its first request's
//!   headers arrive; an address that has its fill gets new connections dropped at accept;
//! - has `limits.http_header_timeout_s` to send a request's headers, counted from the moment
//!   it opens (a silent socket included) and again for each next request of a keep-alive
//!   connection (hyper's header-read timeout); then it is dropped;
//! - writes under a deadline ([`DeadlineIo`]): a write that stays blocked (the other side
//!   does not read) for `limits.write_timeout_s` plus a grace fails and ends the connection.
//!   This is the backstop under everything, a large HTTP response or an upgraded WebSocket
//!   alike; a WebSocket session closes a stuck client itself first, with 4429 (`ws.rs`).
//!
//! The request body has its own deadline (`limits.http_body_timeout_s`, [`body_deadline`]):
//! a body not received in time fails the request with 408.
//!
//! With TLS configured (`tls_cert`, `tls_key`), each connection first completes a rustls
//! handshake, within the header deadline; a plain HTTP request there is answered 400 in
//! plain text. Behind a trusted proxy (`trusted_proxies`) each request's client address is
//! taken from its forwarding header ([`crate::auth::proxy`]) before the router sees it.
//! Limits are read from the node's live config at each accept, so a reload changes them
//! for the connections that follow. What they drop is counted in the node's metrics
//! (`ymesh_limit_hits_total`): a connection dropped at accept for its address's half-open
//! ones, one that missed the header deadline before its first request (TLS handshake
//! included; an idle keep-alive connection the deadline closes is not counted), a body that
//! missed its deadline.
//!
//! The loop stops accepting on shutdown, asks each connection to finish its request and
//! close, and returns once they have.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures_util::StreamExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::http::ApiError;
use super::AppState;

/// How long past `limits.write_timeout_s` a blocked write of a connection lasts before the
/// connection fails: a WebSocket session gets to close its stuck client with 4429 first.
pub(crate) const WRITE_GRACE: Duration = Duration::from_secs(5);

/// Serves `router` on `listener` until `shutdown`, then waits for open connections to end.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    app: Arc<AppState>,
    shutdown: CancellationToken,
) {
    let connections = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // The limits in force now (a reload changes them for the connections after it).
        let live = app.live();
        let limits = &live.config.limits;
        let Some(half_open) = app.addresses.half_open(peer.ip(), limits) else {
            tracing::debug!(%peer, "connection dropped: too many half-open connections from this address");
            app.metrics.refused(crate::metrics::Refusal::Limit);
            app.metrics
                .limit_hit(crate::metrics::Limit::HalfOpenPerAddress);
            drop(tcp);
            continue;
        };
        // Small frames (an echo, then a 102) must not wait for a delayed ACK (Nagle).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let progress = WriteProgress::default();
        let header_timeout = limits.header_timeout;
        let io = DeadlineIo::new(tcp, limits.write_timeout + WRITE_GRACE)
            .with_progress(progress.clone());
        // Given back when the first request's headers are in (or the connection ends).
        let half_open = Arc::new(Mutex::new(Some(half_open)));
        let waiting = half_open.clone();
        let router = router.clone();
        let app_of_request = app.clone();
        let service =
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                if let Ok(mut slot) = half_open.lock() {
                    slot.take();
                }
                let mut req = req.map(axum::body::Body::new);
                // Behind a trusted proxy, the client is who its forwarding header names;
                // everything after this (limits, the admin rule, logs) sees that address.
                let client = app_of_request
                    .live()
                    .proxies
                    .client_addr(peer.ip(), req.headers());
                let client = if client == peer.ip() {
                    peer
                } else {
                    SocketAddr::new(client, 0)
                };
                req.extensions_mut().insert(ConnectInfo(client));
                req.extensions_mut().insert(progress.clone());
                let mut router = router.clone();
                tower_service::Service::call(&mut router, req)
            });
        let shutdown = shutdown.clone();
        let tls = app.tls.clone();
        let late = header_deadline_counter(&app, &waiting);
        connections.spawn(async move {
            let Some(tls) = tls else {
                let io = TokioIo::new(io);
                return serve_connection(io, service, header_timeout, shutdown, peer, late).await;
            };
            // The handshake counts against the header deadline, like a slow request line.
            let handshake = async {
                if !speaks_tls(io.get_ref()).await {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "plain HTTP on a TLS port",
                    ));
                }
                tls.acceptor().accept(io).await
            };
            match tokio::time::timeout(header_timeout, handshake).await {
                Ok(Ok(stream)) => {
                    serve_connection(
                        TokioIo::new(stream),
                        service,
                        header_timeout,
                        shutdown,
                        peer,
                        late,
                    )
                    .await
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => {
                    late();
                    tracing::debug!(%peer, "TLS handshake timed out");
                }
            }
        });
    }
    connections.close();
    connections.wait().await;
}

/// Whether the first byte a client sends opens a TLS handshake (a record of type 22). A
/// plain HTTP request on the TLS port is answered 400 in plain text, saying to use https,
/// rather than left with a broken handshake.
async fn speaks_tls(tcp: &TcpStream) -> bool {
    let mut first = [0u8; 1];
    match tcp.peek(&mut first).await {
        Ok(1) if first[0] == 0x16 => true,
        Ok(1) => {
            let answer = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 46\r\n\r\nthis node speaks TLS: use https:// or wss://\r\n";
            let _ = tcp.try_write(answer.as_bytes());
            false
        }
        _ => false,
    }
}

/// What counts a connection dropped by the header deadline: only one still waiting for its
/// first request's headers (`waiting`, its half-open place, still held) counts as a limit
/// hit; an idle keep-alive connection the deadline closes after a request does not.
fn header_deadline_counter<T: Send + 'static>(
    app: &AppState,
    waiting: &Arc<Mutex<Option<T>>>,
) -> impl FnOnce() + Send + 'static {
    let counter = app
        .metrics
        .limit_counter(crate::metrics::Limit::HeaderTimeout);
    let waiting = waiting.clone();
    move || {
        if waiting.lock().is_ok_and(|slot| slot.is_some()) {
            counter.hit();
        }
    }
}

/// Serves HTTP/1.1 (with upgrades) on one connection until it ends or the node shuts down;
/// `late` is called when the header deadline drops it.
async fn serve_connection<I, S>(
    io: I,
    service: S,
    header_timeout: Duration,
    shutdown: CancellationToken,
    peer: SocketAddr,
    late: impl FnOnce(),
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming> + Send,
    S::Future: Send + 'static,
    S::ResBody: Send + 'static,
    <S::ResBody as hyper::body::Body>::Data: Send,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let conn = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                if e.is_timeout() {
                    late();
                }
                tracing::debug!(%peer, error = %e, "connection ended");
            }
            return;
        }
        _ = shutdown.cancelled() => conn.as_mut().graceful_shutdown(),
    }
    if let Err(e) = conn.await {
        tracing::debug!(%peer, error = %e, "connection ended");
    }
}

/// A connection whose writes fail once one has stayed blocked for `limit`: the other side
/// does not read. The timer is set when a write first returns `Pending` and cleared only by
/// the next write that moves bytes (a flush is no progress: on TCP it is always ready).
#[derive(Debug)]
pub(crate) struct DeadlineIo<T> {
    inner: T,
    limit: Duration,
    blocked: Option<Pin<Box<Sleep>>>,
    progress: Option<WriteProgress>,
}

/// When a connection last moved bytes out, shared with whoever serves it (the WebSocket
/// writer reads it to tell a slow reader from one that stopped reading: a large frame may
/// take longer than the deadline to go out while every write makes progress).
#[derive(Debug, Clone, Default)]
pub(crate) struct WriteProgress(Arc<std::sync::atomic::AtomicU64>);

fn since_start_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

impl WriteProgress {
    fn record(&self) {
        self.0.store(since_start_ms(), Ordering::Relaxed);
    }

    /// How long no byte has gone out, counting from `since` at the latest.
    pub(crate) fn stalled(&self, since: std::time::Instant) -> Duration {
        let last = Duration::from_millis(self.0.load(Ordering::Relaxed));
        let now = Duration::from_millis(since_start_ms());
        let from_since = since.elapsed();
        now.saturating_sub(last).min(from_since)
    }
}

impl<T> DeadlineIo<T> {
    /// The wrapped connection.
    pub(crate) fn get_ref(&self) -> &T {
        &self.inner
    }

    /// `inner` with a write deadline of `limit`.
    pub(crate) fn new(inner: T, limit: Duration) -> Self {
        DeadlineIo {
            inner,
            limit,
            blocked: None,
            progress: None,
        }
    }

    /// Records each write that moves bytes in `progress`.
    pub(crate) fn with_progress(mut self, progress: WriteProgress) -> Self {
        self.progress = Some(progress);
        self
    }

    /// A flush or shutdown: it fails once the deadline passed, and it does not count as
    /// progress (a TCP flush is always ready; only bytes written are).
    fn on_flush(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<()>>,
    ) -> Poll<io::Result<()>> {
        match polled {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => self.wait(cx),
        }
    }

    fn wait<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        let limit = self.limit;
        let timer = self
            .blocked
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "write blocked for {} s: the other side does not read",
                    limit.as_secs_f64()
                ),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn on_write(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match polled {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.blocked = None;
                    if let Some(p) = &self.progress {
                        p.record();
                    }
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.wait(cx),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for DeadlineIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for DeadlineIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.on_write(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.on_write(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.on_flush(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.on_flush(cx, polled)
    }
}

/// Middleware: a request body must arrive whole within `limits.http_body_timeout_s` of the
/// request reaching the router; a slower one fails the request with 408.
pub(crate) async fn body_deadline(
    State(app): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    use axum::body::HttpBody;
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let limit = app.live().config.limits.body_timeout;
    let deadline = tokio::time::Instant::now() + limit;
    let late = Arc::new(AtomicBool::new(false));
    let flag = late.clone();
    let req = req.map(move |body| {
        let chunks = body.into_data_stream();
        axum::body::Body::from_stream(futures_util::stream::unfold(Some(chunks), move |chunks| {
            let flag = flag.clone();
            async move {
                let mut chunks = chunks?;
                match tokio::time::timeout_at(deadline, chunks.next()).await {
                    Ok(Some(chunk)) => Some((chunk, Some(chunks))),
                    Ok(None) => None,
                    Err(_) => {
                        flag.store(true, Ordering::Relaxed);
                        let late = io::Error::new(io::ErrorKind::TimedOut, "request body too slow");
                        Some((Err(axum::Error::new(late)), None))
                    }
                }
            }
        }))
    });
    let response = next.run(req).await;
    if late.load(Ordering::Relaxed) {
        app.metrics.limit_hit(crate::metrics::Limit::BodyTimeout);
        return ApiError::new(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            format!("request body not received within {} s", limit.as_secs_f64()),
        )
        .into_response();
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_write_blocked_past_the_deadline_fails_and_flushes_do_not_reset_it() {
        let limit = Duration::from_millis(300);
        let (near, _far) = tokio::io::duplex(64);
        let mut io = DeadlineIo::new(near, limit);
        io.write_all(&[0u8; 64]).await.unwrap();
        io.flush().await.unwrap();
        let started = tokio::time::Instant::now();
        let blocked = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                // A writer that flushes between attempts still hits the deadline.
                if let Err(e) = io.flush().await {
                    return e;
                }
                if let Err(e) = io.write_all(&[1u8; 64]).await {
                    return e;
                }
            }
        })
        .await
        .expect("the deadline fires");
        assert_eq!(blocked.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= limit);
    }

    #[tokio::test]
    async fn a_slow_reader_that_keeps_reading_keeps_the_writer_going() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut io = DeadlineIo::new(near, Duration::from_millis(300));
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let mut total = 0;
            while total < 64 * 10 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                total += far.read(&mut buf).await.unwrap();
            }
        });
        for _ in 0..10 {
            io.write_all(&[2u8; 64]).await.unwrap();
            io.flush().await.unwrap();
        }
        reader.await.unwrap();
    }
}
