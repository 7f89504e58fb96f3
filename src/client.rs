//! A Rust client for one ymesh room: keeps a [`yrs::Doc`] in sync over the y-websocket
//! protocol and, when it opts in with `commands=1`, answers maintenance commands (type 103).
//!
//! ```no_run
//! use std::time::Duration;
//! use ymesh::client::{Outcome, RoomClient};
//! use ymesh::command::CommandKind;
//!
//! # async fn run() -> Result<(), ymesh::client::ClientError> {
//! let doc = yrs::Doc::new();
//! let client = RoomClient::builder("ws://127.0.0.1:3913", "notes")
//!     .commands(true) // adds ?commands=1: without it the node sends no commands
//!     .on_command(CommandKind::Compact, |_doc, _cmd| {
//!         // rewrite local storage of the document here
//!         Outcome::ok(serde_json::json!({"compacted": true}))
//!     })
//!     .connect(doc.clone())
//!     .await?;
//! client.wait_synced(Duration::from_secs(10)).await?;
//! // edit `doc` as usual: local changes are sent to the node
//! client.close().await?;
//! # Ok(())
//! # }
//! ```
//!
//! What the client does on the wire (docs/protocol.md, sections 3–5):
//!
//! - sends SyncStep1 when the connection opens, answers every SyncStep1 with a SyncStep2,
//!   applies SyncStep2 and Update messages to the document, and counts itself synced at the
//!   first SyncStep2 ([`RoomClient::wait_synced`]);
//! - sends every local change of the document as an Update. Changes it applied from the
//!   node carry this client's transaction origin ([`RoomClient::origin`]) and are not sent
//!   back; changes from another [`RoomClient`] on the same document are (so one document
//!   connected to two nodes bridges them, as with the JavaScript provider);
//! - announces itself with an empty awareness state (`{}`) when it connects, so the node
//!   knows which Yjs client id answers commands on the connection, and otherwise ignores
//!   awareness, QueryAwareness, AUTH and unknown message types;
//! - for a command (type 103, subtype 0): remembers its id in a [`CommandDedup`] (shared
//!   between clients with [`RoomClientBuilder::dedup`], so a document connected to two nodes
//!   acts once), runs the handler registered for its kind on a blocking thread, or answers
//!   `unsupported` without one, and sends the result (subtype 1) with `responder` = the
//!   document's client id and `responder_kind` = `"client"`. Duplicates get no second
//!   result.
//!
//! The client does not reconnect: when the connection ends, [`RoomClient::state`] turns to
//! [`ConnectionState::Closed`] with the reason, and a new client can be connected on the same
//! document (the sync exchange catches up both sides).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use yrs::updates::encoder::Encode;
use yrs::{Doc, Origin, ReadTxn, Transact};

use crate::command::{
    self, encode_result, Command, CommandKind, CommandMessage, CommandResult, ResponderKind,
    ResultStatus, SeenSet, DEFAULT_SEEN_CAPACITY,
};
use crate::protocol::{self, scan, Message, SyncMessage, COMMAND_SUBTYPE_COMMAND};

/// A client remembers a command id at least this long (10 minutes), even when the command's
/// deadline is sooner: the deadline is on the node's clock, which may differ from the client's.
pub const MIN_DEDUP_RETENTION_MS: u64 = 10 * 60 * 1000;

/// How long [`RoomClient::close`] waits for the node to answer the close frame.
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// Characters percent-encoded in a room name: everything but RFC 3986 "unreserved".
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Why a client could not connect or lost its connection.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server URL is not `ws://...` (this client has no TLS).
    #[error("invalid server URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The WebSocket connection could not be opened.
    #[error("could not connect to {url}: {source}")]
    Connect {
        /// The full room URL.
        url: String,
        /// The WebSocket error (refused, HTTP status, ...).
        source: tungstenite::Error,
    },
    /// The document had a transaction open, so the client could not observe it.
    #[error("the document has an open transaction; close it before connecting")]
    DocBusy,
    /// The first SyncStep2 did not arrive in time.
    #[error("not synced after {0:?}")]
    Timeout(Duration),
    /// The connection is closed (by either side, or after an error); the reason says which.
    #[error("connection closed: {0}")]
    Closed(String),
    /// Sending or receiving failed.
    #[error("WebSocket error: {0}")]
    WebSocket(#[from] tungstenite::Error),
    /// The node sent something this client cannot apply (a malformed frame or update).
    #[error("malformed message from the node: {0}")]
    Protocol(String),
}

/// What a command handler reports back.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The result status. Handlers should not use [`ResultStatus::Timeout`].
    pub status: ResultStatus,
    /// Free-form detail sent in the result's `detail` field.
    pub detail: Value,
}

impl Outcome {
    /// Done, with `detail` (use `Value::Null` for none).
    pub fn ok(detail: Value) -> Self {
        Outcome {
            status: ResultStatus::Ok,
            detail,
        }
    }

    /// Tried and failed.
    pub fn error(message: impl Into<String>) -> Self {
        Outcome {
            status: ResultStatus::Error,
            detail: Value::String(message.into()),
        }
    }

    /// Declined on purpose.
    pub fn refused(reason: impl Into<String>) -> Self {
        Outcome {
            status: ResultStatus::Refused,
            detail: Value::String(reason.into()),
        }
    }

    /// This kind is not handled here.
    pub fn unsupported(kind: &CommandKind) -> Self {
        Outcome {
            status: ResultStatus::Unsupported,
            detail: Value::String(format!("command kind {:?} is not supported", kind.as_str())),
        }
    }
}

/// A command handler: runs on a blocking thread with the client's document and the command.
pub type CommandHandler = Arc<dyn Fn(&Doc, &Command) -> Outcome + Send + Sync + 'static>;

/// The set of command ids already acted on, shareable between clients: clients built with
/// the same `CommandDedup` (for example one document connected to two nodes) act on each
/// command once. Cloning shares the set.
#[derive(Clone, Debug)]
pub struct CommandDedup(Arc<Mutex<SeenSet>>);

impl Default for CommandDedup {
    fn default() -> Self {
        CommandDedup::new(DEFAULT_SEEN_CAPACITY)
    }
}

impl CommandDedup {
    /// A set remembering at most `capacity` ids.
    pub fn new(capacity: usize) -> Self {
        CommandDedup(Arc::new(Mutex::new(SeenSet::new(capacity))))
    }

    /// Records `command`'s id, kept until its deadline or [`MIN_DEDUP_RETENTION_MS`] from
    /// `now_ms`, whichever is later. Returns `true` the first time (act on it).
    pub fn first_sight(&self, command: &Command, now_ms: u64) -> bool {
        let expires = command
            .deadline_ms
            .max(now_ms.saturating_add(MIN_DEDUP_RETENTION_MS));
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(&command.id, expires, now_ms)
    }
}

/// The connection's state, as seen by [`RoomClient::state`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// Connected, waiting for the node's first SyncStep2.
    Syncing,
    /// The first SyncStep2 was applied.
    Synced,
    /// The connection ended; the reason says how.
    Closed(String),
}

/// Sets up a [`RoomClient`]: server, room, query parameters, command handlers.
pub struct RoomClientBuilder {
    server: String,
    room: String,
    params: Vec<(String, String)>,
    commands: bool,
    handlers: HashMap<CommandKind, CommandHandler>,
    dedup: Option<CommandDedup>,
}

impl std::fmt::Debug for RoomClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomClientBuilder")
            .field("server", &self.server)
            .field("room", &self.room)
            .field("commands", &self.commands)
            .field("handlers", &self.handlers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl RoomClientBuilder {
    /// Whether to opt in to maintenance commands (`commands=1` in the URL). Off by default:
    /// handlers registered without it are never called.
    pub fn commands(mut self, on: bool) -> Self {
        self.commands = on;
        self
    }

    /// Runs `handler` for commands of `kind` (replacing an earlier one for the same kind).
    /// Kinds without a handler are answered `unsupported`. The handler runs on a blocking
    /// thread; a panic in it is answered `error`. Changes it makes to the document are sent to
    /// the node before its result.
    pub fn on_command<F>(mut self, kind: CommandKind, handler: F) -> Self
    where
        F: Fn(&Doc, &Command) -> Outcome + Send + Sync + 'static,
    {
        self.handlers.insert(kind, Arc::new(handler));
        self
    }

    /// Adds a query parameter to the WebSocket URL (for example a token); both parts are
    /// percent-encoded.
    pub fn param(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.push((key.into(), value.into()));
        self
    }

    /// Shares command dedup with other clients built with the same [`CommandDedup`].
    pub fn dedup(mut self, dedup: CommandDedup) -> Self {
        self.dedup = Some(dedup);
        self
    }

    /// The WebSocket URL this builder connects to:
    /// `{server}/rooms/{percent-encoded room}[?commands=1&...]`.
    pub fn url(&self) -> String {
        let mut url = format!(
            "{}/rooms/{}",
            self.server.trim_end_matches('/'),
            utf8_percent_encode(&self.room, SEGMENT)
        );
        let mut params: Vec<(&str, &str)> = Vec::new();
        if self.commands {
            params.push(("commands", "1"));
        }
        params.extend(self.params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        for (i, (key, value)) in params.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.extend(utf8_percent_encode(key, SEGMENT));
            url.push('=');
            url.extend(utf8_percent_encode(value, SEGMENT));
        }
        url
    }

    /// Opens the connection, starts observing `doc` and sends SyncStep1. Returns once the
    /// WebSocket is open; wait for the initial sync with [`RoomClient::wait_synced`].
    pub async fn connect(self, doc: Doc) -> Result<RoomClient, ClientError> {
        let url = self.url();
        if !self.server.starts_with("ws://") {
            return Err(ClientError::InvalidUrl {
                url: self.server,
                reason: "the URL must start with ws:// (this client has no TLS)",
            });
        }
        let (mut ws, _response) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .map_err(|source| ClientError::Connect {
                url: url.clone(),
                source,
            })?;

        static NEXT_CLIENT: AtomicU64 = AtomicU64::new(1);
        let key = format!(
            "ymesh-client-{}",
            NEXT_CLIENT.fetch_add(1, Ordering::Relaxed)
        );
        let origin = Origin::from(key.as_str());
        let (out_tx, out_rx) = mpsc::unbounded_channel::<Bytes>();
        let local = out_tx.clone();
        let skip = origin.clone();
        doc.observe_update_v1(key.as_str(), move |txn, event| {
            if txn.origin() != Some(&skip) {
                // The receiver is gone only after the connection ended; nothing to do then.
                let _ = local.send(protocol::encode_sync_update(&event.update));
            }
        })
        .map_err(|_| ClientError::DocBusy)?;

        let step1 = {
            let txn = doc.transact();
            protocol::encode_sync_step1(&txn.state_vector().encode_v1())
        };
        if let Err(err) = ws.send(WsMessage::Binary(step1)).await {
            let _ = doc.unobserve_update_v1(key.as_str());
            return Err(ClientError::WebSocket(err));
        }
        // Announce this client (an empty awareness state, as the JavaScript provider does):
        // the node then knows which Yjs client id answers commands on this connection.
        if let Err(err) = ws
            .send(WsMessage::Binary(presence_frame(doc.client_id().get())))
            .await
        {
            let _ = doc.unobserve_update_v1(key.as_str());
            return Err(ClientError::WebSocket(err));
        }
        tracing::debug!(%url, client_id = doc.client_id().get(), "room client connected");

        let (state_tx, state_rx) = watch::channel(ConnectionState::Syncing);
        let cancel = CancellationToken::new();
        let connection = Connection {
            doc: doc.clone(),
            origin: origin.clone(),
            out_tx,
            handlers: Arc::new(self.handlers),
            dedup: self.dedup.unwrap_or_default(),
            state: state_tx,
            url: url.clone(),
        };
        let task = tokio::spawn(connection.run(ws, out_rx, cancel.clone()));
        Ok(RoomClient {
            doc,
            url,
            key,
            origin,
            state: state_rx,
            cancel,
            task: Some(task),
        })
    }
}

/// A connection of one document to one room. Dropping it stops the connection without the
/// close handshake; prefer [`RoomClient::close`].
#[derive(Debug)]
pub struct RoomClient {
    doc: Doc,
    url: String,
    /// Key of the update observer registered on `doc`.
    key: String,
    /// Transaction origin of changes applied from the node.
    origin: Origin,
    state: watch::Receiver<ConnectionState>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl RoomClient {
    /// Starts building a client for `room` on the node at `server` (`ws://HOST:PORT`).
    pub fn builder(server: impl Into<String>, room: impl Into<String>) -> RoomClientBuilder {
        RoomClientBuilder {
            server: server.into(),
            room: room.into(),
            params: Vec::new(),
            commands: false,
            handlers: HashMap::new(),
            dedup: None,
        }
    }

    /// The synced document.
    pub fn doc(&self) -> &Doc {
        &self.doc
    }

    /// The WebSocket URL in use.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The transaction origin of changes this client applied from the node.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The current connection state.
    pub fn state(&self) -> ConnectionState {
        self.state.borrow().clone()
    }

    /// Waits until the node's first SyncStep2 has been applied. Fails with
    /// [`ClientError::Timeout`] after `timeout`, or [`ClientError::Closed`] if the connection
    /// ends first.
    pub async fn wait_synced(&self, timeout: Duration) -> Result<(), ClientError> {
        let mut state = self.state.clone();
        let reached = tokio::time::timeout(
            timeout,
            state.wait_for(|s| !matches!(s, ConnectionState::Syncing)),
        )
        .await
        .map_err(|_| ClientError::Timeout(timeout))?;
        match reached.map(|s| s.clone()) {
            Ok(ConnectionState::Synced) => Ok(()),
            Ok(ConnectionState::Closed(reason)) => Err(ClientError::Closed(reason)),
            Ok(ConnectionState::Syncing) | Err(_) => {
                Err(ClientError::Closed("connection task ended".into()))
            }
        }
    }

    /// Waits until the connection has ended (either side closed it, or it failed) and returns
    /// the reason.
    pub async fn closed(&self) -> String {
        let mut state = self.state.clone();
        let reason = match state
            .wait_for(|s| matches!(s, ConnectionState::Closed(_)))
            .await
        {
            Ok(s) => match &*s {
                ConnectionState::Closed(reason) => reason.clone(),
                _ => String::new(),
            },
            Err(_) => "connection task ended".to_string(),
        };
        reason
    }

    /// Sends the changes still queued, closes the connection (waiting briefly for the node's
    /// close frame) and stops observing the document.
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            if let Err(err) = task.await {
                tracing::warn!(error = %err, "room client task failed");
            }
        }
        self.unobserve();
        Ok(())
    }

    fn unobserve(&self) {
        if self.doc.unobserve_update_v1(self.key.as_str()).is_err() {
            // A transaction is open elsewhere. The observer stays registered, but its channel
            // is closed, so it only drops the updates it sees.
            tracing::debug!(key = %self.key, "could not unobserve the document");
        }
    }
}

impl Drop for RoomClient {
    fn drop(&mut self) {
        if self.task.is_some() {
            self.cancel.cancel();
            self.unobserve();
        }
    }
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The connection task's state.
struct Connection {
    doc: Doc,
    origin: Origin,
    /// Local updates (from the doc observer) and command results, in order.
    out_tx: mpsc::UnboundedSender<Bytes>,
    handlers: Arc<HashMap<CommandKind, CommandHandler>>,
    dedup: CommandDedup,
    state: watch::Sender<ConnectionState>,
    url: String,
}

impl Connection {
    async fn run(
        self,
        mut ws: Socket,
        mut out_rx: mpsc::UnboundedReceiver<Bytes>,
        cancel: CancellationToken,
    ) {
        let reason = loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    break self.shutdown(&mut ws, &mut out_rx).await;
                }
                Some(frame) = out_rx.recv() => {
                    if let Err(err) = ws.send(WsMessage::Binary(frame)).await {
                        break format!("send failed: {err}");
                    }
                }
                incoming = ws.next() => match incoming {
                    None => break "connection closed by the node".to_string(),
                    Some(Err(err)) => break format!("receive failed: {err}"),
                    Some(Ok(WsMessage::Binary(frame))) => {
                        if let Err(err) = self.handle_frame(&mut ws, frame).await {
                            tracing::warn!(url = %self.url, error = %err, "closing the room client");
                            let _ = ws.close(None).await;
                            break err.to_string();
                        }
                    }
                    Some(Ok(WsMessage::Close(frame))) => {
                        let reason = match frame {
                            Some(f) => format!("closed by the node: {} {}", u16::from(f.code), f.reason),
                            None => "closed by the node".to_string(),
                        };
                        // tungstenite has queued the close reply; flush it and stop.
                        let _ = ws.flush().await;
                        break reason;
                    }
                    Some(Ok(WsMessage::Text(_))) => {
                        tracing::debug!(url = %self.url, "ignoring a text frame");
                    }
                    Some(Ok(_)) => {} // ping (answered by tungstenite), pong, raw frames
                }
            }
        };
        tracing::debug!(url = %self.url, %reason, "room client connection ended");
        self.state.send_replace(ConnectionState::Closed(reason));
    }

    /// Sends what is still queued, then closes with the handshake.
    async fn shutdown(
        &self,
        ws: &mut Socket,
        out_rx: &mut mpsc::UnboundedReceiver<Bytes>,
    ) -> String {
        while let Ok(frame) = out_rx.try_recv() {
            if ws.feed(WsMessage::Binary(frame)).await.is_err() {
                break;
            }
        }
        if ws.close(None).await.is_ok() {
            // Read until the node's close frame, which completes the handshake (or give up
            // after a short while). Frames before it are dropped: the client is leaving.
            let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
                while let Some(Ok(frame)) = ws.next().await {
                    if frame.is_close() {
                        break;
                    }
                }
            })
            .await;
        }
        "closed by the client".to_string()
    }

    async fn handle_frame(&self, ws: &mut Socket, frame: Bytes) -> Result<(), ClientError> {
        // One message at a time, payloads scanned before yrs decodes them: what a node sends
        // is bounded like what a client sends to a node.
        protocol::check_frame(&frame).map_err(|e| ClientError::Protocol(e.to_string()))?;
        for message in protocol::messages(frame) {
            match message.map_err(|e| ClientError::Protocol(e.to_string()))? {
                Message::Sync(SyncMessage::Step1(sv)) => {
                    let sv = scan::decode_state_vector(&sv).map_err(|e| {
                        ClientError::Protocol(format!("bad state vector in SyncStep1: {e}"))
                    })?;
                    let update = self.doc.transact().encode_state_as_update_v1(&sv);
                    ws.send(WsMessage::Binary(protocol::encode_sync_step2(&update)))
                        .await?;
                }
                Message::Sync(SyncMessage::Step2(update)) => {
                    self.apply(&update, "SyncStep2")?;
                    self.state.send_if_modified(|s| {
                        let first = *s == ConnectionState::Syncing;
                        if first {
                            *s = ConnectionState::Synced;
                        }
                        first
                    });
                }
                Message::Sync(SyncMessage::Update(update)) => self.apply(&update, "Update")?,
                Message::Command { subtype, json } if subtype == COMMAND_SUBTYPE_COMMAND => {
                    self.handle_command(subtype, &json);
                }
                Message::AuthDenied(reason) => {
                    tracing::warn!(url = %self.url, %reason, "permission denied by the node");
                }
                other => {
                    tracing::trace!(url = %self.url, kind = other.kind(), "ignoring a message");
                }
            }
        }
        Ok(())
    }

    fn apply(&self, update: &[u8], what: &str) -> Result<(), ClientError> {
        let update = scan::decode_update(update)
            .map_err(|e| ClientError::Protocol(format!("bad update in {what}: {e}")))?;
        self.doc
            .transact_mut_with(self.origin.clone())
            .apply_update(update)
            .map_err(|e| ClientError::Protocol(format!("could not apply {what}: {e}")))
    }

    fn handle_command(&self, subtype: u64, json: &str) {
        let command = match command::decode(subtype, json) {
            Ok(CommandMessage::Command(command)) => command,
            Ok(CommandMessage::Result(_)) => return,
            Err(err) => {
                tracing::warn!(url = %self.url, error = %err, "ignoring a malformed command");
                return;
            }
        };
        if !self.dedup.first_sight(&command, now_ms()) {
            tracing::debug!(id = %command.id, "ignoring a command already handled");
            return;
        }
        tracing::info!(id = %command.id, kind = %command.kind, "running a command");
        let handler = self.handlers.get(&command.kind).cloned();
        let doc = self.doc.clone();
        let responder = self.doc.client_id().get().to_string();
        let out_tx = self.out_tx.clone();
        tokio::spawn(async move {
            let outcome = match handler {
                None => Outcome::unsupported(&command.kind),
                Some(handler) => {
                    let cmd = command.clone();
                    match tokio::task::spawn_blocking(move || handler(&doc, &cmd)).await {
                        Ok(outcome) => outcome,
                        Err(err) => Outcome::error(format!("the command handler failed: {err}")),
                    }
                }
            };
            let result = CommandResult::for_command(
                &command,
                responder,
                ResponderKind::Client,
                outcome.status,
                outcome.detail,
                now_ms(),
            );
            tracing::debug!(id = %command.id, status = %result.status, "command done");
            if out_tx.send(encode_result(&result)).is_err() {
                tracing::warn!(id = %command.id, "connection closed before the command's result could be sent");
            }
        });
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests;

/// An awareness message announcing `client` with an empty state (`{}`, clock 1).
fn presence_frame(client: u64) -> bytes::Bytes {
    fn var(out: &mut Vec<u8>, mut n: u64) {
        while n >= 0x80 {
            out.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }
    let mut payload = Vec::with_capacity(16);
    var(&mut payload, 1); // one entry
    var(&mut payload, client);
    var(&mut payload, 1); // clock
    var(&mut payload, 2); // "{}"
    payload.extend_from_slice(b"{}");
    protocol::encode_awareness(&payload)
}
