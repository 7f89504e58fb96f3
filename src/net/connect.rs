//! The connectors of [`super::Client`]: TCP, TLS over TCP (`https://`, [`super::tls`]), and
//! (on Unix) a Unix socket.
//!
//! A client talks to one endpoint, so its connector ignores the request URI and connects to
//! the endpoint it was made for: `host:port` over TCP, or a socket path (tailscaled's
//! LocalAPI). The URI still names the origin, which hyper sends as `Host` and uses as the
//! key of its connection pool. Each connect (the TLS handshake included) is bounded by the client's connect timeout, and
//! a failure is a [`ConnectFailed`] that [`super::Client`] recognises in hyper's error chain
//! to tell "cannot connect" and "timed out" apart from everything that happens later.

use std::future::Future;
#[cfg(unix)]
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Where a connector connects.
#[derive(Debug, Clone)]
pub(crate) enum Endpoint {
    /// `host:port` over TCP (the host is resolved at each connect).
    Tcp {
        /// Host name or address, IPv6 without brackets.
        host: Arc<str>,
        /// Port.
        port: u16,
        /// Run TLS over the connection, verifying the certificate for `host`.
        tls: bool,
    },
    /// A Unix domain socket.
    #[cfg(unix)]
    Unix(Arc<Path>),
}

/// Why a connect failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectFailed {
    /// The connect did not finish within the limit.
    #[error("connect timed out after {} ms", .0.as_millis())]
    TimedOut(Duration),
    /// The connect failed.
    #[error(transparent)]
    Io(std::io::Error),
}

/// A `tower_service::Service<Uri>` that opens a connection to one [`Endpoint`].
#[derive(Debug, Clone)]
pub(crate) struct Connector {
    endpoint: Endpoint,
    timeout: Duration,
}

impl Connector {
    /// A connector to `endpoint` whose connects give up after `timeout`.
    pub fn new(endpoint: Endpoint, timeout: Duration) -> Self {
        Connector { endpoint, timeout }
    }
}

type Connecting = Pin<Box<dyn Future<Output = Result<TokioIo<Stream>, ConnectFailed>> + Send>>;

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = ConnectFailed;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let endpoint = self.endpoint.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let connect = async {
                match endpoint {
                    Endpoint::Tcp { host, port, tls } => {
                        let stream = TcpStream::connect((&*host, port)).await?;
                        // Requests are small and answered at once: do not hold them back.
                        stream.set_nodelay(true)?;
                        if tls {
                            let secured = super::tls::connect(stream, &host).await?;
                            return Ok(Stream::Tls(Box::new(secured)));
                        }
                        Ok::<_, std::io::Error>(Stream::Tcp(stream))
                    }
                    #[cfg(unix)]
                    Endpoint::Unix(path) => {
                        Ok(Stream::Unix(tokio::net::UnixStream::connect(&*path).await?))
                    }
                }
            };
            match tokio::time::timeout(timeout, connect).await {
                Err(_) => Err(ConnectFailed::TimedOut(timeout)),
                Ok(Err(e)) => Err(ConnectFailed::Io(e)),
                Ok(Ok(stream)) => Ok(TokioIo::new(stream)),
            }
        })
    }
}

/// An open connection: TCP, TLS over TCP, or Unix socket.
#[derive(Debug)]
pub(crate) enum Stream {
    /// TCP.
    Tcp(TcpStream),
    /// TLS over TCP.
    Tls(Box<super::tls::ClientStream>),
    /// Unix domain socket.
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            #[cfg(unix)]
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            #[cfg(unix)]
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            #[cfg(unix)]
            Stream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
            #[cfg(unix)]
            Stream::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            #[cfg(unix)]
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            #[cfg(unix)]
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
