//! Shared helpers for integration tests: in-process nodes on 127.0.0.1:0, a raw y-websocket
//! client, a yrs-backed syncing client, and HTTP requests through the crate's own client
//! (`ymesh::net::Client`).

pub mod netns;
pub mod process;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use ymesh::config::Config;
use ymesh::protocol::{self, Message, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

/// Default wait for any condition in tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// A fresh, empty directory for one test's store.
pub fn fresh_dir(tag: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Resolved, so tests that reach it through /proc/PID/root see the same path.
    std::fs::canonicalize(&dir).unwrap()
}

/// A config for tests: any free port on loopback, a store in a fresh directory, and an
/// open mesh (`mesh_open`), so tests about replication link without approvals. Tests about
/// admission turn it off ([`closed_mesh`]).
pub fn test_config() -> Config {
    Config {
        port: 0,
        data_dir: fresh_dir("node"),
        mesh_open: true,
        ..Config::default()
    }
}

/// `cfg` with the production default: peers admitted only by secret, allow list or approval.
pub fn closed_mesh(mut cfg: Config) -> Config {
    cfg.mesh_open = false;
    cfg
}

/// Polls `GET path` every 50 ms until `ok(status, json)` holds (or `WAIT` passes); returns
/// the JSON that satisfied it.
pub async fn poll_get(
    addr: SocketAddr,
    path: &str,
    what: &str,
    mut ok: impl FnMut(u16, &serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, v) = get_json(addr, path).await;
        if ok(status, &v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {status} {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// [`poll_get`] on the JSON alone.
pub async fn poll_json(
    addr: SocketAddr,
    path: &str,
    what: &str,
    mut ok: impl FnMut(&serde_json::Value) -> bool,
) -> serde_json::Value {
    poll_get(addr, path, what, |_, v| ok(v)).await
}

/// Polls `GET path` until its status is `want` (the body may be binary).
pub async fn poll_status(addr: SocketAddr, path: &str, what: &str, want: u16) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, _) = http(addr, "GET", path).await;
        if status == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: status {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A peer entry that dials `node` (a ymesh node on loopback).
pub fn peer(node: &ymesh::Node) -> ymesh::mesh::PeerConfig {
    ymesh::mesh::PeerConfig {
        url: format!("ws://{}", node.local_addr()),
        ..ymesh::mesh::PeerConfig::default()
    }
}

/// A test config that dials `peers`.
pub fn dialing(peers: Vec<ymesh::mesh::PeerConfig>) -> Config {
    let mut cfg = test_config();
    cfg.peers = peers;
    cfg
}

/// Waits until `node` has a link up with `other`.
pub async fn wait_linked(node: &ymesh::Node, other: &ymesh::Node) {
    let mesh = node.mesh().clone();
    let id = other.node_id().to_string();
    wait_until("link up", || mesh.connected_peers().contains(&id)).await;
}

/// Starts an in-process node.
pub async fn start(config: Config) -> ymesh::Node {
    ymesh::Node::start(config).await.expect("node starts")
}

/// Polls `cond` every 20 ms until it holds or `WAIT` passes.
pub async fn wait_until<F: FnMut() -> bool>(what: &str, mut cond: F) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A raw WebSocket client speaking frames.
pub struct RawClient {
    pub ws: Ws,
}

/// What a raw client saw when the server closed.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed {
    pub code: u16,
    pub reason: String,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr, path: &str) -> RawClient {
        let url = format!("ws://{addr}{path}");
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect in time")
            .expect("connect");
        RawClient { ws }
    }

    pub async fn send(&mut self, frame: impl Into<Bytes>) {
        self.ws
            .send(WsMessage::Binary(frame.into()))
            .await
            .expect("send");
    }

    /// Next y-protocol message (skipping pings); panics on timeout or close.
    pub async fn recv(&mut self) -> Message {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("message in time")
                .expect("stream open")
                .expect("no error");
            match msg {
                WsMessage::Binary(b) => {
                    let mut msgs = protocol::decode_frame(b).expect("server frames decode");
                    assert_eq!(msgs.len(), 1, "one message per frame");
                    return msgs.remove(0);
                }
                WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// Receives until `pred` matches, returning the match; fails on timeout.
    pub async fn recv_until(&mut self, mut pred: impl FnMut(&Message) -> bool) -> Message {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let msg = tokio::time::timeout(left, self.recv())
                .await
                .expect("matching message in time");
            if pred(&msg) {
                return msg;
            }
        }
    }

    /// Reads until the server's close frame (or the end of the stream).
    pub async fn expect_close(&mut self) -> Closed {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.ws.next())
                .await
                .expect("close in time")
            {
                Some(Ok(WsMessage::Close(Some(frame)))) => {
                    // Send the queued close reply so the server is not left waiting.
                    let _ = tokio::time::timeout(WAIT, self.ws.flush()).await;
                    return Closed {
                        code: u16::from(frame.code),
                        reason: frame.reason.to_string(),
                    };
                }
                Some(Ok(WsMessage::Close(None))) | None => {
                    return Closed {
                        code: u16::from(CloseCode::Status),
                        reason: String::new(),
                    }
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) => {
                    return Closed {
                        code: u16::from(CloseCode::Abnormal),
                        reason: String::new(),
                    }
                }
            }
        }
    }

    /// Expects no y-protocol message for `d` (pings are ignored).
    pub async fn expect_silence(&mut self, d: Duration) {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_)))) => continue,
                Ok(other) => panic!("expected silence, got {other:?}"),
            }
        }
    }
}

/// Opens a WebSocket to `path` with extra request headers.
pub async fn ws_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> RawClient {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .expect("connect in time")
        .expect("the upgrade is accepted");
    RawClient { ws }
}

/// A client that keeps a yrs document in sync with a room, like a y-websocket provider.
pub struct SyncClient {
    pub raw: RawClient,
    pub doc: Doc,
    pub synced: bool,
}

impl SyncClient {
    /// Connects and completes the initial handshake (our SyncStep1 answered by SyncStep2).
    pub async fn connect(addr: SocketAddr, room: &str) -> SyncClient {
        Self::connect_with(addr, &format!("/rooms/{room}"), Doc::new()).await
    }

    pub async fn connect_with(addr: SocketAddr, path: &str, doc: Doc) -> SyncClient {
        let raw = RawClient::connect(addr, path).await;
        let mut c = SyncClient {
            raw,
            doc,
            synced: false,
        };
        let sv = c.doc.transact().state_vector().encode_v1();
        c.raw.send(protocol::encode_sync_step1(&sv)).await;
        let deadline = tokio::time::Instant::now() + WAIT;
        while !c.synced {
            assert!(tokio::time::Instant::now() < deadline, "sync in time");
            c.pump_one().await;
        }
        c
    }

    /// Handles one incoming message.
    pub async fn pump_one(&mut self) -> Message {
        let msg = self.raw.recv().await;
        match &msg {
            Message::Sync(SyncMessage::Step1(sv)) => {
                let sv = StateVector::decode_v1(sv).unwrap();
                let update = self.doc.transact().encode_state_as_update_v1(&sv);
                self.raw.send(protocol::encode_sync_step2(&update)).await;
            }
            Message::Sync(SyncMessage::Step2(u)) => {
                self.apply(u);
                self.synced = true;
            }
            Message::Sync(SyncMessage::Update(u)) => self.apply(u),
            _ => {}
        }
        msg
    }

    fn apply(&self, u: &[u8]) {
        self.doc
            .transact_mut()
            .apply_update(Update::decode_v1(u).unwrap())
            .unwrap();
    }

    /// Makes a local change with `f` and sends it as an update.
    /// Root types are reached through the transaction (`yrs::WriteTxn`), since the doc
    /// cannot open a second transaction while this one is open.
    pub async fn edit(&mut self, f: impl FnOnce(&mut yrs::TransactionMut)) {
        let update = {
            let mut txn = self.doc.transact_mut();
            f(&mut txn);
            txn.encode_update_v1()
        };
        self.raw.send(protocol::encode_sync_update(&update)).await;
    }

    /// Like [`SyncClient::edit`], then waits until the node has applied the edit: a 102
    /// frame sent after it comes back only after the node processed everything before it.
    pub async fn edit_acked(&mut self, f: impl FnOnce(&mut yrs::TransactionMut)) {
        self.edit(f).await;
        let marker: [u8; 4] = [102, 2, 0xff, 0x01];
        self.raw.send(marker.to_vec()).await;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let msg = tokio::time::timeout(left, self.pump_one())
                .await
                .expect("sync-status echo in time");
            if matches!(msg, Message::SyncStatus(_)) {
                return;
            }
        }
    }

    /// Pumps messages until `cond(doc)` holds.
    pub async fn pump_until(&mut self, what: &str, mut cond: impl FnMut(&Doc) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !cond(&self.doc) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if tokio::time::timeout(left, self.pump_one()).await.is_err() {
                panic!("timed out waiting for {what}");
            }
        }
    }
}

/// Text of root `Y.Text` `name`.
pub fn text_of(doc: &Doc, name: &str) -> String {
    use yrs::GetString;
    let t = doc.get_or_insert_text(name);
    let txn = doc.transact();
    t.get_string(&txn)
}

/// A client of the node at `addr`: the crate's HTTP client, every request bounded by `WAIT`.
pub fn client(addr: SocketAddr) -> ymesh::net::Client {
    ymesh::net::Client::new(&format!("http://{addr}"), None)
        .expect("a valid base URL")
        .with_timeout(WAIT)
}

/// One HTTP request; returns (status, body).
pub async fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, Vec<u8>) {
    http_body(addr, method, path, &[]).await
}

/// One HTTP request with a body (`application/octet-stream`); returns (status, body).
pub async fn http_body(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    http_body_within(addr, method, path, body, WAIT).await
}

/// [`http_body`] bounded by `limit` instead of `WAIT` (the whole exchange, and the silence
/// before the answer): for bodies of tens of MiB, which a debug build on a loaded 2-core
/// machine can take longer than `WAIT` to apply.
pub async fn http_body_within(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    limit: Duration,
) -> (u16, Vec<u8>) {
    let method = ymesh::net::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
    let req = ymesh::net::Request::new(method, path).bytes(body.to_vec());
    // The node answers once the body is applied: the whole bound may pass in silence.
    let resp = client(addr)
        .with_timeout(limit)
        .with_idle_timeout(limit)
        .send(req)
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    (resp.status, resp.body.to_vec())
}

/// GET returning parsed JSON.
pub async fn get_json(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = http(addr, "GET", path).await;
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {}", String::from_utf8_lossy(&body)));
    (status, v)
}

/// Spawns `cmd` (a `ymesh serve` command, possibly wrapped) with stderr piped and HOST /
/// PORT / YMESH_DATA_DIR removed unless the caller set them, waits for the ready line, and keeps
/// draining the log (echoed to the test's stderr) so the child never blocks on a full pipe.
/// Returns the child, the ready line and the port. Kills the child if it never gets ready.
pub fn spawn_until_ready(mut cmd: std::process::Command) -> (std::process::Child, String, u16) {
    use std::io::BufRead;
    for key in ["HOST", "PORT", "YMESH_DATA_DIR"] {
        if !cmd.get_envs().any(|(k, _)| k == key) {
            cmd.env_remove(key);
        }
    }
    cmd.env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null());
    let mut child = cmd.spawn().expect("spawn");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            eprintln!("node: {line}");
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            let _ = child.kill();
            let status = child.wait();
            panic!("no ready line in time; the node exited with {status:?}");
        };
        let ready = line
            .split("listening on http://")
            .nth(1)
            .or_else(|| line.split("listening on https://").nth(1));
        if let Some(rest) = ready {
            let addr: String = rest
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '"')
                .collect();
            let port = addr
                .rsplit(':')
                .next()
                .unwrap_or_default()
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect::<String>()
                .parse()
                .expect("port in the ready line");
            std::thread::spawn(move || while rx.recv().is_ok() {});
            return (child, line, port);
        }
    }
}

/// A CA and a server certificate for localhost / 127.0.0.1 in a fresh directory; the CA is
/// trusted by this process's TLS client from now on.
pub fn certificates(tag: &str) -> PathBuf {
    let dir = fresh_dir(tag);
    issue(&dir, None);
    ymesh::net::tls::trust_ca_file(&dir.join("ca.pem")).expect("the test CA loads");
    dir
}

/// Issues `NAME.pem` / `NAME.key` (or cert.pem / key.pem) from the CA in `dir`.
pub fn issue(dir: &Path, name: Option<&str>) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gen-cert.sh");
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(script).arg(dir);
    if let Some(n) = name {
        cmd.arg(n);
    }
    let out = cmd.output().expect("bash and openssl run");
    assert!(
        out.status.success(),
        "gen-cert.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Dials the `/_mesh` of the node at `addr` as a new node and completes the secure channel:
/// the link's I/O, the identity it dialed as, and the channel's binding for the mesh
/// handshake (the node it reached, the handshake hash, this end's role).
pub async fn secure_dial(
    addr: SocketAddr,
) -> (
    ymesh::mesh::transport::LinkIo,
    std::sync::Arc<ymesh::mesh::NodeIdentity>,
    ymesh::mesh::proto::handshake::Binding,
) {
    let x = std::sync::Arc::new(ymesh::mesh::NodeIdentity::ephemeral());
    let security = ymesh::mesh::transport::ws::Security::Dial {
        identity: x.clone(),
        expect: None,
    };
    let url = format!("ws://{addr}/_mesh");
    let write_timeout = ymesh::mesh::transport::LINK_WRITE_TIMEOUT;
    let mut io = ymesh::mesh::transport::ws::dial(&url, None, security, write_timeout)
        .await
        .expect("dial");
    let securing = io.securing.take().expect("a secured link");
    let info = tokio::time::timeout(WAIT, securing.done)
        .await
        .expect("channel in time")
        .unwrap()
        .expect("channel up");
    let binding = ymesh::mesh::proto::handshake::Binding {
        remote: info.remote,
        hash: info.hash,
        role: info.role,
    };
    (io, x, binding)
}
