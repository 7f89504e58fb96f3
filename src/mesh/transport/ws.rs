//! The WebSocket transport: dialing a peer's `/_mesh` (or a plain y-websocket room URL,
//! whose frames are bare y-protocols messages) with tokio-tungstenite, and taking an inbound
//! axum upgrade; both become a [`LinkIo`] through one reader and one writer task.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{LinkIo, LINK_QUEUE, LINK_QUEUE_BYTES, LINK_WRITE_TIMEOUT};
use crate::mesh::wire::MAX_FRAME_LEN;

/// Dials `url` (a peer's `/_mesh`, or a room on a plain server), sending `token` (the
/// peer's client token, if one is configured for it) as `Authorization: Bearer`, and wraps
/// the socket into frame channels.
pub async fn dial(url: &str, token: Option<&str>) -> Result<LinkIo, String> {
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
    let config = WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(16 * 1024)
        .max_message_size(Some(MAX_FRAME_LEN as usize))
        .max_frame_size(Some(MAX_FRAME_LEN as usize));
    // `true`: TCP_NODELAY, so small frames go out at once.
    let connect = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
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
            TMessage::Close(_) => Incoming::Closed,
            _ => Incoming::Other,
        },
    ))
}

/// Wraps an accepted axum WebSocket (an inbound `/_mesh` connection) into frame channels.
pub fn accept_axum(socket: axum::extract::ws::WebSocket) -> LinkIo {
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
            AMessage::Close(_) => Incoming::Closed,
            _ => Incoming::Other,
        },
    )
}

/// What a socket message means to a link.
enum Incoming {
    Frame(Bytes),
    Closed,
    Other,
}

/// Splits a WebSocket (either library's) into a writer and a reader task that exchange whole
/// frames with the link over bounded channels. Closing: cancel `LinkIo::close`; the writer
/// still sends what was queued first (a `refused` sent just before the close must go out),
/// then the close frame set by [`LinkIo::close_with`] (`close_msg` builds it), if any.
fn pump<W, M, E>(
    socket: W,
    binary: fn(Bytes) -> M,
    close_msg: fn(u16, String) -> M,
    classify: fn(M) -> Incoming,
) -> LinkIo
where
    W: futures_util::Sink<M> + futures_util::Stream<Item = Result<M, E>> + Send + 'static,
    M: Send + 'static,
    E: Send + 'static,
{
    let (mut sink, mut stream) = socket.split();
    let (out_tx, mut out_rx) = crate::queue::channel(LINK_QUEUE, LINK_QUEUE_BYTES);
    let (in_tx, in_rx) = mpsc::channel::<Bytes>(256);
    let close = CancellationToken::new();
    let close_frame: Arc<OnceLock<(u16, String)>> = Arc::default();
    let c1 = close.clone();
    let frame = close_frame.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                f = out_rx.recv() => match f {
                    Some(f) => match tokio::time::timeout(LINK_WRITE_TIMEOUT, sink.send(binary(f))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break,
                        Err(_) => {
                            // The peer does not read: end the link (no close frame could get
                            // through); it redials and resyncs.
                            tracing::warn!("link write blocked too long; closing the link");
                            c1.cancel();
                            return;
                        }
                    },
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
    let c2 = close.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = c2.cancelled() => break,
                m = stream.next() => match m.map(|r| r.map(classify)) {
                    Some(Ok(Incoming::Frame(b))) => if in_tx.send(b).await.is_err() { break },
                    Some(Ok(Incoming::Closed)) | Some(Err(_)) | None => break,
                    Some(Ok(Incoming::Other)) => {}
                },
            }
        }
        c2.cancel();
    });
    LinkIo {
        tx: out_tx,
        rx: in_rx,
        close,
        close_frame,
    }
}
