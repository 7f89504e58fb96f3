//! The WebSocket transport: dialing a peer's `/_mesh` (or a plain y-websocket room URL,
//! whose frames are bare y-protocols messages) with tokio-tungstenite, over TCP or, for
//! `wss://`, over TLS ([`crate::net::tls`]), and taking an inbound
//! axum upgrade; both become a [`LinkIo`] through one reader and one writer task.
//!
//! A mesh connection first runs the secure channel's Noise handshake
//! ([`crate::mesh::proto::channel`]) over its first three binary messages, in one task that
//! owns the socket; then the writer seals every frame and the reader opens every frame, so
//! everything above sees plain frames from a proven node. A message that fails to open
//! closes the connection (4400).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{
    ChannelInfo, LinkIo, SecureError, Securing, LINK_QUEUE, LINK_QUEUE_BYTES, MAX_SEALED_LEN,
};
use crate::mesh::identity::NodeIdentity;
use crate::mesh::proto::channel::{Channel, ChannelError, ChannelHandshake, Opener, Sealer, Step};
use crate::mesh::wire::{self, Control, MAX_FRAME_LEN, MESH_PROTOCOL_VERSION};

/// Whether and how a connection is secured.
#[derive(Clone)]
pub enum Security {
    /// No channel: a plain y-websocket server's room.
    Plain,
    /// A mesh link this node dials: the Noise initiator, expecting node `expect` if given.
    Dial {
        /// This node's identity.
        identity: Arc<NodeIdentity>,
        /// The node the configuration expects at the address.
        expect: Option<String>,
    },
    /// A mesh link a peer dialed: the Noise responder.
    Accept {
        /// This node's identity.
        identity: Arc<NodeIdentity>,
    },
}

/// Dials `url` (a peer's `/_mesh`, or a room on a plain server), sending `token` (the
/// peer's client token, if one is configured for it) as `Authorization: Bearer`, and wraps
/// the socket into frame channels, secured as `security` says.
/// A write the peer does not take within `write_timeout` ends the link.
pub async fn dial(
    url: &str,
    token: Option<&str>,
    security: Security,
    write_timeout: Duration,
) -> Result<LinkIo, String> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
    use tokio_tungstenite::tungstenite::Message as TMessage;
    let mut request = url
        .into_client_request()
        .map_err(|e| format!("bad peer URL {url}: {e}"))?;
    if let Some(token) = token {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| "the peer's token is not a valid header value".to_string())?;
        request
            .headers_mut()
            .insert(axum::http::header::AUTHORIZATION, value);
    }
    let max = match security {
        Security::Plain => MAX_FRAME_LEN as usize,
        _ => MAX_SEALED_LEN,
    };
    let config = WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(16 * 1024)
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    let connect = connect_ws(request, config);
    let (ws, _) = tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(resp) if resp.status() == 401 => format!(
                "{url} needs a client token: set token in the peer's [[peers]] entry, or \
                 give both nodes a mesh secret"
            ),
            tokio_tungstenite::tungstenite::Error::Http(resp) => format!(
                "{url} answered HTTP {} (is it a ymesh node?)",
                resp.status()
            ),
            other => format!("cannot connect to {url}: {other}"),
        })?;
    Ok(pump(
        ws,
        TMessage::Binary,
        |code, reason| {
            TMessage::Close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: code.into(),
                reason: reason.into(),
            }))
        },
        |m| match m {
            TMessage::Binary(b) => Incoming::Frame(b),
            TMessage::Close(frame) => {
                Incoming::Closed(frame.map(|f| (u16::from(f.code), f.reason.to_string())))
            }
            _ => Incoming::Other,
        },
        security,
        write_timeout,
    ))
}

/// A byte stream a WebSocket can run over.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// A stream under a dialed WebSocket: plain TCP (`ws://`) or TLS over TCP (`wss://`).
type DialStream = Box<dyn Io>;

/// Opens the WebSocket of `request`: TCP (with TCP_NODELAY, so small frames go out at once),
/// TLS for `wss://` (verified against the system's roots and the configured CA,
/// [`crate::net::tls`]), then the upgrade.
async fn connect_ws(
    request: tokio_tungstenite::tungstenite::handshake::client::Request,
    config: tokio_tungstenite::tungstenite::protocol::WebSocketConfig,
) -> Result<
    (
        tokio_tungstenite::WebSocketStream<DialStream>,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    use tokio_tungstenite::tungstenite::error::{Error as WsError, UrlError};
    let uri = request.uri();
    let tls = match uri.scheme_str() {
        Some("wss") => true,
        Some("ws") => false,
        _ => return Err(WsError::Url(UrlError::UnsupportedUrlScheme)),
    };
    let host = uri
        .host()
        .ok_or(WsError::Url(UrlError::NoHostName))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    tcp.set_nodelay(true)?;
    let stream: DialStream = if tls {
        Box::new(crate::net::tls::connect(tcp, &host).await?)
    } else {
        Box::new(tcp)
    };
    tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await
}

/// Wraps an accepted axum WebSocket (an inbound `/_mesh` connection) into frame channels,
/// after the secure channel as responder for `identity`.
pub fn accept_axum(
    socket: axum::extract::ws::WebSocket,
    identity: Arc<NodeIdentity>,
    write_timeout: Duration,
) -> LinkIo {
    use axum::extract::ws::Message as AMessage;
    pump(
        socket,
        AMessage::Binary,
        |code, reason| {
            AMessage::Close(Some(axum::extract::ws::CloseFrame {
                code,
                reason: reason.into(),
            }))
        },
        |m| match m {
            AMessage::Binary(b) => Incoming::Frame(b),
            AMessage::Close(frame) => {
                Incoming::Closed(frame.map(|f| (f.code, f.reason.to_string())))
            }
            _ => Incoming::Other,
        },
        Security::Accept { identity },
        write_timeout,
    )
}

/// What a socket message means to a link.
enum Incoming {
    Frame(Bytes),
    /// A close, with the peer's code and reason if it sent them.
    Closed(Option<(u16, String)>),
    Other,
}

/// The shared ends of one connection's tasks.
struct Ends<M> {
    out_rx: crate::queue::Receiver,
    in_tx: mpsc::Sender<Bytes>,
    close: CancellationToken,
    close_frame: Arc<OnceLock<(u16, String)>>,
    peer_close: Arc<OnceLock<(u16, String)>>,
    binary: fn(Bytes) -> M,
    close_msg: fn(u16, String) -> M,
    classify: fn(M) -> Incoming,
    /// How long one write may stay blocked before the link ends.
    write_timeout: Duration,
}

/// Splits a WebSocket (either library's) into a writer and a reader task that exchange whole
/// frames with the link over bounded channels; a mesh connection first runs the secure
/// channel (see the module docs). Closing: cancel `LinkIo::close`; the writer still sends
/// what was queued first (a `refused` sent just before the close must go out), then the
/// close frame set by [`LinkIo::close_with`] (`close_msg` builds it), if any.
fn pump<W, M, E>(
    socket: W,
    binary: fn(Bytes) -> M,
    close_msg: fn(u16, String) -> M,
    classify: fn(M) -> Incoming,
    security: Security,
    write_timeout: Duration,
) -> LinkIo
where
    W: futures_util::Sink<M> + futures_util::Stream<Item = Result<M, E>> + Send + Unpin + 'static,
    M: Send + 'static,
    E: Send + 'static,
{
    let (out_tx, out_rx) = crate::queue::channel(LINK_QUEUE, LINK_QUEUE_BYTES);
    let (in_tx, in_rx) = mpsc::channel::<Bytes>(256);
    let close = CancellationToken::new();
    let close_frame: Arc<OnceLock<(u16, String)>> = Arc::default();
    let peer_close: Arc<OnceLock<(u16, String)>> = Arc::default();
    let ends = Ends {
        out_rx,
        in_tx,
        close: close.clone(),
        close_frame: close_frame.clone(),
        peer_close: peer_close.clone(),
        binary,
        close_msg,
        classify,
        write_timeout,
    };
    let securing = match security {
        Security::Plain => {
            run(socket, ends, None);
            None
        }
        Security::Dial { identity, expect } => {
            let (heard_tx, heard) = oneshot::channel();
            let (done_tx, done) = oneshot::channel();
            tokio::spawn(secure(
                socket, ends, identity, expect, true, heard_tx, done_tx,
            ));
            Some(Securing { heard, done })
        }
        Security::Accept { identity } => {
            let (heard_tx, heard) = oneshot::channel();
            let (done_tx, done) = oneshot::channel();
            tokio::spawn(secure(
                socket, ends, identity, None, false, heard_tx, done_tx,
            ));
            Some(Securing { heard, done })
        }
    };
    LinkIo {
        tx: out_tx,
        rx: in_rx,
        close,
        close_frame,
        peer_close,
        securing,
    }
}

/// The close code this side sends when its channel handshake fails.
fn failure_code(e: &ChannelError) -> u16 {
    match e {
        ChannelError::SelfConnection { .. } => 1000,
        ChannelError::UnexpectedPeer { .. } => 4403,
        _ => 4400,
    }
}

/// Runs the channel handshake on `socket`, reports it on `done`, then pumps sealed frames.
async fn secure<W, M, E>(
    mut socket: W,
    ends: Ends<M>,
    identity: Arc<NodeIdentity>,
    expect: Option<String>,
    initiator: bool,
    heard: oneshot::Sender<()>,
    done: oneshot::Sender<Result<ChannelInfo, SecureError>>,
) where
    W: futures_util::Sink<M> + futures_util::Stream<Item = Result<M, E>> + Send + Unpin + 'static,
    M: Send + 'static,
    E: Send + 'static,
{
    let result = handshake(&mut socket, &ends, identity, expect, initiator, heard).await;
    match result {
        Ok(channel) => {
            let info = ChannelInfo {
                remote: channel.remote.clone(),
                hash: channel.hash,
                role: channel.role,
            };
            if done.send(Ok(info)).is_ok() {
                run(socket, ends, Some((channel.sealer, channel.opener)));
            }
        }
        Err(e) => {
            if let SecureError::Channel(c) = &e {
                let _ = ends
                    .close_frame
                    .set((failure_code(c), super::cut_reason(&c.to_string())));
            }
            if let Some((code, reason)) = ends.close_frame.get() {
                let _ = socket.send((ends.close_msg)(*code, reason.clone())).await;
            }
            let _ = socket.close().await;
            let _ = done.send(Err(e));
        }
    }
}

/// The three Noise messages, in this task; the link's deadline cancels `ends.close`.
async fn handshake<W, M, E>(
    socket: &mut W,
    ends: &Ends<M>,
    identity: Arc<NodeIdentity>,
    expect: Option<String>,
    initiator: bool,
    heard: oneshot::Sender<()>,
) -> Result<Box<Channel>, SecureError>
where
    W: futures_util::Sink<M> + futures_util::Stream<Item = Result<M, E>> + Send + Unpin + 'static,
{
    let mut heard = Some(heard);
    let mut hs = if initiator {
        let (hs, first) = ChannelHandshake::initiator(identity, MESH_PROTOCOL_VERSION, expect)?;
        if socket.send((ends.binary)(first.into())).await.is_err() {
            return Err(SecureError::Closed);
        }
        hs
    } else {
        ChannelHandshake::responder(identity, MESH_PROTOCOL_VERSION)?
    };
    loop {
        let msg = tokio::select! {
            _ = ends.close.cancelled() => return Err(SecureError::Closed),
            m = socket.next() => m,
        };
        let bytes = match msg.map(|r| r.map(ends.classify)) {
            Some(Ok(Incoming::Frame(b))) => b,
            Some(Ok(Incoming::Other)) => continue,
            Some(Ok(Incoming::Closed(Some((code, reason))))) => {
                let _ = ends.peer_close.set((code, reason.clone()));
                return Err(SecureError::ClosedByPeer { code, reason });
            }
            Some(Ok(Incoming::Closed(None))) | Some(Err(_)) | None => {
                return Err(SecureError::Closed)
            }
        };
        if let Some(h) = heard.take() {
            let _ = h.send(());
        }
        // A node of mesh protocol 1 opens with a clear-text hello: answer in its terms.
        if let Some(theirs) = wire::plaintext_hello_version(&bytes) {
            let e = ChannelError::Version {
                theirs,
                ours: MESH_PROTOCOL_VERSION,
            };
            if !initiator {
                let refused = Control::Refused {
                    reason: e.to_string(),
                };
                let _ = socket
                    .send((ends.binary)(wire::encode_control(&refused)))
                    .await;
            }
            return Err(e.into());
        }
        match hs.on_message(&bytes)? {
            Step::Send(m) => {
                if socket.send((ends.binary)(m.into())).await.is_err() {
                    return Err(SecureError::Closed);
                }
            }
            Step::Done { send, channel } => {
                if let Some(m) = send {
                    if socket.send((ends.binary)(m.into())).await.is_err() {
                        return Err(SecureError::Closed);
                    }
                }
                return Ok(channel);
            }
        }
    }
}

/// The writer and reader tasks; with a channel, they seal and open every frame.
fn run<W, M, E>(socket: W, ends: Ends<M>, channel: Option<(Sealer, Opener)>)
where
    W: futures_util::Sink<M> + futures_util::Stream<Item = Result<M, E>> + Send + 'static,
    M: Send + 'static,
    E: Send + 'static,
{
    let Ends {
        mut out_rx,
        in_tx,
        close,
        close_frame,
        peer_close,
        binary,
        close_msg,
        classify,
        write_timeout,
    } = ends;
    let (mut sealer, mut opener) = match channel {
        Some((s, o)) => (Some(s), Some(o)),
        None => (None, None),
    };
    let (mut sink, mut stream) = socket.split();
    let c1 = close.clone();
    let frame = close_frame.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                f = out_rx.recv() => match f {
                    Some(f) => {
                        let f = match sealer.as_mut().map(|s| s.seal(&f)) {
                            None => f,
                            Some(Ok(sealed)) => sealed,
                            Some(Err(_)) => break,
                        };
                        match tokio::time::timeout(write_timeout, sink.send(binary(f))).await {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) => break,
                            Err(_) => {
                                super::write_blocked(write_timeout, &frame, &c1);
                                return;
                            }
                        }
                    }
                    None => break,
                },
                _ = c1.cancelled() => break,
            }
        }
        // `close_with` sets it before cancelling `close`, and the link holds its sender until
        // then, so it is seen whichever way the loop ended.
        if let Some((code, reason)) = frame.get() {
            let _ = sink.send(close_msg(*code, reason.clone())).await;
        }
        let _ = sink.close().await;
    });
    let c2 = close;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = c2.cancelled() => break,
                m = stream.next() => match m.map(|r| r.map(classify)) {
                    Some(Ok(Incoming::Frame(b))) => {
                        let b = match opener.as_mut().map(|o| o.open(&b)) {
                            None => b,
                            Some(Ok(frame)) => frame,
                            Some(Err(e)) => {
                                tracing::debug!(error = %e, "mesh frame failed to open");
                                let _ = close_frame.set((
                                    4400,
                                    "a frame failed authentication".into(),
                                ));
                                break;
                            }
                        };
                        if in_tx.send(b).await.is_err() { break }
                    }
                    Some(Ok(Incoming::Closed(frame))) => {
                        if let Some(f) = frame {
                            let _ = peer_close.set(f);
                        }
                        break;
                    }
                    Some(Err(_)) | None => break,
                    Some(Ok(Incoming::Other)) => {}
                },
            }
        }
        c2.cancel();
    });
}
