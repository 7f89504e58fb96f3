//! The client against a fake node written here with tokio-tungstenite: no ymesh server.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::WebSocketStream;
use yrs::updates::decoder::Decode;
use yrs::{GetString, Map, StateVector, Text, Update};

use super::*;

const WAIT: Duration = Duration::from_secs(5);

/// The node's end of one connection, driven by the test.
struct FakeNode {
    ws: WebSocketStream<TcpStream>,
    /// Request path and query of the upgrade.
    uri: String,
    doc: Doc,
}

impl FakeNode {
    // The callback's signature, with its large error type, is tungstenite's.
    #[allow(clippy::result_large_err)]
    async fn accept(listener: &TcpListener, doc: Doc) -> FakeNode {
        let (stream, _) = tokio::time::timeout(WAIT, listener.accept())
            .await
            .expect("a client connects")
            .expect("accept");
        let uri = Arc::new(Mutex::new(String::new()));
        let seen = uri.clone();
        let ws =
            tokio_tungstenite::accept_hdr_async(stream, move |req: &Request, resp: Response| {
                *seen.lock().unwrap() = req.uri().to_string();
                Ok(resp)
            })
            .await
            .expect("handshake");
        let uri = uri.lock().unwrap().clone();
        FakeNode { ws, uri, doc }
    }

    async fn send(&mut self, frame: Bytes) {
        self.ws.send(WsMessage::Binary(frame)).await.expect("send");
    }

    /// The next y-protocols message from the client (one per frame, as the client sends).
    async fn recv(&mut self) -> Message {
        loop {
            let frame = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame from the client in time")
                .expect("connection open")
                .expect("frame");
            if let WsMessage::Binary(frame) = frame {
                let mut messages = protocol::decode_frame(frame).expect("well-formed frame");
                assert_eq!(messages.len(), 1, "one message per frame");
                return messages.remove(0);
            }
        }
    }

    /// Answers the client's SyncStep1 and sends our own; returns after applying the client's
    /// SyncStep2.
    async fn sync(&mut self) {
        let Message::Sync(SyncMessage::Step1(sv)) = self.recv().await else {
            panic!("the client starts with SyncStep1")
        };
        let sv = StateVector::decode_v1(&sv).unwrap();
        let update = self.doc.transact().encode_state_as_update_v1(&sv);
        self.send(protocol::encode_sync_step2(&update)).await;
        let Message::Awareness(_) = self.recv().await else {
            panic!("the client announces itself with an awareness state")
        };
        let own = self.doc.transact().state_vector().encode_v1();
        self.send(protocol::encode_sync_step1(&own)).await;
        let Message::Sync(SyncMessage::Step2(update)) = self.recv().await else {
            panic!("the client answers SyncStep1 with SyncStep2")
        };
        self.apply(&update);
    }

    fn apply(&self, update: &[u8]) {
        self.doc
            .transact_mut()
            .apply_update(Update::decode_v1(update).unwrap())
            .unwrap();
    }

    /// Reads messages until a command result arrives, applying updates on the way.
    async fn next_result(&mut self) -> CommandResult {
        loop {
            match self.recv().await {
                Message::Command { subtype: 1, json } => {
                    let CommandMessage::Result(result) = command::decode(1, &json).unwrap() else {
                        unreachable!()
                    };
                    return result;
                }
                Message::Sync(SyncMessage::Update(update)) => self.apply(&update),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

fn text_of(doc: &Doc) -> String {
    let text = doc.get_or_insert_text("content");
    let txn = doc.transact();
    text.get_string(&txn)
}

fn command(id: &str, kind: &str) -> Bytes {
    let json = json!({
        "id": id, "kind": kind, "room": "notes", "args": {"version": 3}, "origin": "node-a",
        "boot": "b", "seq": 1, "issued_ms": now_ms(), "deadline_ms": now_ms() + 30_000, "hops": 0
    });
    protocol::encode_command(0, &json.to_string())
}

async fn listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    (listener, url)
}

#[tokio::test]
async fn syncs_a_document_both_ways() {
    let (listener, server) = listener().await;
    let node_doc = Doc::new();
    node_doc
        .get_or_insert_text("content")
        .insert(&mut node_doc.transact_mut(), 0, "hello");
    let doc = Doc::new();
    let builder = RoomClient::builder(server.clone() + "/", "café/notes 1");
    assert_eq!(
        builder.url(),
        format!("{server}/rooms/caf%C3%A9%2Fnotes%201")
    );
    let (client, mut node) = tokio::join!(
        builder.connect(doc.clone()),
        FakeNode::accept(&listener, node_doc.clone())
    );
    let client = client.unwrap();
    assert_eq!(
        node.uri, "/rooms/caf%C3%A9%2Fnotes%201",
        "no commands=1 unless asked"
    );
    assert_eq!(client.state(), ConnectionState::Syncing);
    node.sync().await;
    client.wait_synced(WAIT).await.unwrap();
    assert_eq!(client.state(), ConnectionState::Synced);
    assert_eq!(text_of(&doc), "hello");

    // Local change -> Update to the node.
    doc.get_or_insert_text("content")
        .insert(&mut doc.transact_mut(), 5, " world");
    let Message::Sync(SyncMessage::Update(update)) = node.recv().await else {
        panic!("a local change is sent as an Update")
    };
    node.apply(&update);
    assert_eq!(text_of(&node_doc), "hello world");

    // A change from the node is applied and not sent back: the next frame the node gets is
    // the one that follows a second local change.
    let before = node_doc.transact().state_vector();
    node_doc
        .get_or_insert_text("content")
        .insert(&mut node_doc.transact_mut(), 0, ">");
    let diff = node_doc.transact().encode_state_as_update_v1(&before);
    node.send(protocol::encode_sync_update(&diff)).await;
    // Unknown types and awareness are ignored without closing.
    node.send(Bytes::from_static(&[99, 1, 2, 3])).await;
    node.send(protocol::encode_query_awareness()).await;
    wait_until(|| text_of(&doc) == ">hello world").await;
    doc.get_or_insert_text("content")
        .insert(&mut doc.transact_mut(), 12, "!");
    let Message::Sync(SyncMessage::Update(update)) = node.recv().await else {
        panic!("an update")
    };
    node.apply(&update);
    assert_eq!(text_of(&node_doc), ">hello world!");
    assert_eq!(client.state(), ConnectionState::Synced);

    close_both(client, &mut node).await;
    // No more observer: local changes after close go nowhere and do not fail.
    doc.get_or_insert_text("content")
        .insert(&mut doc.transact_mut(), 0, "x");
}

/// Closes `client` while `node` reads: the node must see the close frame next (nothing else
/// was sent) and completes the close handshake, so `close` does not wait for its timeout.
async fn close_both(client: RoomClient, node: &mut FakeNode) {
    let node_side = async {
        let next = tokio::time::timeout(WAIT, node.ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(next, WsMessage::Close(None), "no echo, no extra result");
        // Reading on flushes tungstenite's close reply; then the stream ends.
        while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, node.ws.next()).await {}
    };
    let started = std::time::Instant::now();
    let (closed, ()) = tokio::join!(client.close(), node_side);
    closed.unwrap();
    assert!(
        started.elapsed() < CLOSE_HANDSHAKE_TIMEOUT,
        "the close handshake completed"
    );
}

/// Polls `cond` every few milliseconds until it holds, failing after [`WAIT`].
async fn wait_until(mut cond: impl FnMut() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("condition reached in time");
}

#[tokio::test]
async fn runs_a_command_once_and_answers_unknown_kinds_unsupported() {
    let (listener, server) = listener().await;
    let doc = Doc::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let builder = RoomClient::builder(server, "notes")
        .commands(true)
        .param("token", "a b&c")
        .on_command(CommandKind::Compact, move |_doc, cmd| {
            counted.fetch_add(1, Ordering::SeqCst);
            Outcome::ok(json!({"compacted": cmd.id}))
        })
        .on_command(CommandKind::Migrate, |doc, cmd| {
            let version = cmd.args["version"].as_u64().unwrap_or(0);
            let meta = doc.get_or_insert_map("meta");
            meta.insert(&mut doc.transact_mut(), "schema_version", version as f64);
            Outcome::ok(json!({"version": version}))
        })
        .on_command(CommandKind::Reindex, |_doc, _cmd| panic!("index is gone"));
    let (client, mut node) = tokio::join!(
        builder.connect(doc.clone()),
        FakeNode::accept(&listener, Doc::new())
    );
    let client = client.unwrap();
    assert_eq!(node.uri, "/rooms/notes?commands=1&token=a%20b%26c");
    node.sync().await;
    client.wait_synced(WAIT).await.unwrap();
    let client_id = doc.client_id().get().to_string();

    // The same command twice on one connection: one handler call, one result.
    node.send(command("cmd-1", "compact")).await;
    node.send(command("cmd-1", "compact")).await;
    let result = node.next_result().await;
    assert_eq!(result.id, "cmd-1");
    assert_eq!(result.status, ResultStatus::Ok);
    assert_eq!(result.responder, client_id);
    assert_eq!(result.responder_kind, ResponderKind::Client);
    assert_eq!(result.room.as_deref(), Some("notes"));
    assert_eq!(result.detail, json!({"compacted": "cmd-1"}));

    // An unknown kind: unsupported. It is the next result, so the duplicate got none.
    node.send(command("cmd-2", "defragment")).await;
    let result = node.next_result().await;
    assert_eq!(
        (result.id.as_str(), result.status),
        ("cmd-2", ResultStatus::Unsupported)
    );
    assert_eq!(
        result.detail,
        json!("command kind \"defragment\" is not supported")
    );

    // A known kind without a handler: unsupported too.
    node.send(command("cmd-3", "invalidate")).await;
    let result = node.next_result().await;
    assert_eq!(
        (result.id.as_str(), result.status),
        ("cmd-3", ResultStatus::Unsupported)
    );

    // A handler that changes the doc: its update reaches the node before the result.
    node.send(command("cmd-4", "migrate")).await;
    let Message::Sync(SyncMessage::Update(update)) = node.recv().await else {
        panic!("the migration's update comes first")
    };
    node.apply(&update);
    let version = {
        let meta = node.doc.get_or_insert_map("meta");
        let txn = node.doc.transact();
        meta.get(&txn, "schema_version")
    };
    assert_eq!(version, Some(yrs::Out::Any(yrs::Any::Number(3.0.into()))));
    let result = node.next_result().await;
    assert_eq!(
        (result.id.as_str(), result.status),
        ("cmd-4", ResultStatus::Ok)
    );

    // A panicking handler: error. Malformed commands and results from the node are ignored.
    node.send(protocol::encode_command(0, "{not json")).await;
    node.send(protocol::encode_command(1, "{}")).await;
    node.send(command("cmd-5", "reindex")).await;
    let result = node.next_result().await;
    assert_eq!(
        (result.id.as_str(), result.status),
        ("cmd-5", ResultStatus::Error)
    );
    assert!(
        result.detail.as_str().unwrap().contains("handler failed"),
        "{}",
        result.detail
    );

    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Nothing else was sent: the next frame is the close.
    close_both(client, &mut node).await;
}

#[tokio::test]
async fn a_shared_dedup_acts_once_across_connections() {
    let (listener, server) = listener().await;
    let doc = Doc::new();
    let dedup = CommandDedup::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let build = |calls: Arc<AtomicUsize>| {
        RoomClient::builder(server.clone(), "notes")
            .commands(true)
            .dedup(dedup.clone())
            .on_command(CommandKind::Compact, move |_doc, _cmd| {
                calls.fetch_add(1, Ordering::SeqCst);
                Outcome::ok(Value::Null)
            })
    };
    let (a, mut node_a) = tokio::join!(
        build(calls.clone()).connect(doc.clone()),
        FakeNode::accept(&listener, Doc::new())
    );
    let (b, mut node_b) = tokio::join!(
        build(calls.clone()).connect(doc.clone()),
        FakeNode::accept(&listener, Doc::new())
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    node_a.sync().await;
    node_b.sync().await;
    a.wait_synced(WAIT).await.unwrap();
    b.wait_synced(WAIT).await.unwrap();

    node_a.send(command("shared-1", "compact")).await;
    assert_eq!(node_a.next_result().await.id, "shared-1");
    node_b.send(command("shared-1", "compact")).await;
    node_b.send(command("shared-2", "compact")).await;
    // Node B's first result is for shared-2: shared-1 was not run or answered again.
    assert_eq!(node_b.next_result().await.id, "shared-2");
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // A change made through one connection reaches the other node (bridging), and is not
    // sent back to the node it came from.
    let update = {
        let d = Doc::new();
        d.get_or_insert_text("content")
            .insert(&mut d.transact_mut(), 0, "via a");
        let update = d
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        update
    };
    node_a.send(protocol::encode_sync_update(&update)).await;
    let Message::Sync(SyncMessage::Update(bridged)) = node_b.recv().await else {
        panic!("node B gets the change that came from node A")
    };
    node_b.apply(&bridged);
    assert_eq!(text_of(&node_b.doc), "via a");
    close_both(a, &mut node_a).await;
    close_both(b, &mut node_b).await;
}

#[tokio::test]
async fn reports_connection_failures_and_server_close() {
    let (listener, server) = listener().await;
    let err = RoomClient::builder("http://127.0.0.1:1", "r")
        .connect(Doc::new())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::InvalidUrl { .. }), "{err}");

    let (client, mut node) = tokio::join!(
        RoomClient::builder(server, "r").connect(Doc::new()),
        FakeNode::accept(&listener, Doc::new())
    );
    let client = client.unwrap();
    let Message::Sync(SyncMessage::Step1(_)) = node.recv().await else {
        panic!("step 1")
    };
    // A malformed update closes the client's connection with a clear reason.
    node.send(protocol::encode_sync_update(&[0xff, 0xff])).await;
    let err = client.wait_synced(WAIT).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Closed(reason) if reason.contains("bad update in Update")),
        "{err}"
    );
    assert!(client
        .closed()
        .await
        .contains("malformed message from the node"));
    drop(listener);
    let refused = RoomClient::builder(
        format!("ws://{}", node.ws.get_ref().local_addr().unwrap()),
        "r",
    )
    .connect(Doc::new())
    .await;
    assert!(matches!(refused, Err(ClientError::Connect { .. })));
}

#[tokio::test]
async fn times_out_waiting_for_sync() {
    let (listener, server) = listener().await;
    let (client, _node) = tokio::join!(
        RoomClient::builder(server, "r").connect(Doc::new()),
        FakeNode::accept(&listener, Doc::new())
    );
    let client = client.unwrap();
    let err = client
        .wait_synced(Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Timeout(_)), "{err}");
}

#[test]
fn dedup_keeps_ids_at_least_ten_minutes() {
    let dedup = CommandDedup::new(10);
    let cmd = crate::command::CommandIssuer::new("n", "b").issue(
        CommandKind::Compact,
        None,
        json!({}),
        1_000,
        10,
    );
    assert!(dedup.first_sight(&cmd, 1_000));
    assert!(!dedup.first_sight(&cmd, 1_000 + MIN_DEDUP_RETENTION_MS - 1));
    assert!(dedup.first_sight(&cmd, 1_000 + MIN_DEDUP_RETENTION_MS + 1));
}
