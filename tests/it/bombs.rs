//! Allocation bombs and per-frame work: a few bytes that claim a huge count, and large frames
//! made of many tiny messages, sent to a node in its own process. Each test reads the node's
//! peak resident memory (`VmHWM`) before and after the attack and asserts the attack added
//! at most a stated budget, while a well-behaved client ([`Liveness`]) keeps editing and
//! calling `GET /healthz` and must be answered throughout.
//!
//! Budgets: a bomb of a few bytes may cost the node at most 32 MiB (it costs nothing
//! measurable); a frame of up to 64 MiB at most 192 MiB, three times its size (the WebSocket
//! layer holds the frame while it arrives, then the node while it is handled; measured: the
//! frame's size and no more). Before the input bounds these attacks took 0.27 to 2.7 GB.

use std::time::Duration;

use bytes::Bytes;
use ymesh::protocol::{self, Message, SyncMessage};

use crate::common::process::{assert_peak_within, Liveness, ProcessNode};
use crate::common::{http_body, RawClient};

/// What a bomb of a few bytes may add to the node's peak resident memory.
const SMALL_BOMB_BUDGET_MIB: u64 = 32;
/// What a frame of up to 64 MiB may add.
const BIG_FRAME_BUDGET_MIB: u64 = 192;
/// The slowest round trip the well-behaved client may see.
const MAX_ROUND_TRIP: Duration = Duration::from_secs(5);

/// `varUint(n)`.
fn var_uint(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out
}

/// Connects a raw client to `room` and reads the node's opening SyncStep1.
async fn attacker(node: &ProcessNode, room: &str) -> RawClient {
    let mut c = RawClient::connect(node.addr, &format!("/rooms/{room}")).await;
    let first = c.recv().await;
    assert!(
        matches!(first, Message::Sync(SyncMessage::Step1(_))),
        "{first:?}"
    );
    c
}

/// How long a large frame may take to be handled: a debug build decodes some ten million
/// small messages a second, a release build ten times as many.
const BIG_FRAME_WAIT: Duration = Duration::from_secs(90);

/// Sends a SYNC_STATUS marker and returns every message received before its echo, which
/// comes once the frames before it are handled (within [`BIG_FRAME_WAIT`]).
async fn until_marker(c: &mut RawClient) -> Vec<Message> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message as WsMessage;
    c.send(protocol::encode_sync_status(b"marker")).await;
    let deadline = tokio::time::Instant::now() + BIG_FRAME_WAIT;
    let mut before = Vec::new();
    loop {
        let msg = tokio::time::timeout_at(deadline, c.ws.next())
            .await
            .expect("the marker echo in time")
            .expect("the connection stays open")
            .expect("no error");
        let frame = match msg {
            WsMessage::Binary(b) => b,
            WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
            other => panic!("unexpected {other:?} after {before:?}"),
        };
        match protocol::decode_frame(frame)
            .expect("frames decode")
            .remove(0)
        {
            Message::SyncStatus(p) if &p[..] == b"marker" => return before,
            other => before.push(other),
        }
        assert!(before.len() < 1_000, "no marker echo after 1,000 messages");
    }
}

/// Reads until the node's close frame, for up to `wait`; returns its code.
async fn close_within(c: &mut RawClient, wait: Duration) -> u16 {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message as WsMessage;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, c.ws.next())
            .await
            .expect("the close in time")
        {
            Some(Ok(WsMessage::Close(Some(frame)))) => return u16::from(frame.code),
            Some(Ok(_)) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_vector_claiming_2_pow_29_entries_costs_nothing() {
    let mut node = ProcessNode::start(&[]);
    let mut c = attacker(&node, "sv-bomb").await;
    let live = Liveness::start(node.addr).await;
    let baseline = node.peak_rss_mib();
    // SyncStep1 whose state vector claims 2^29 entries and holds none.
    let mut sv = var_uint(1 << 29);
    sv.extend_from_slice(&[0, 0]);
    let frame = protocol::encode_sync_step1(&sv);
    assert!(frame.len() <= 10, "{} bytes", frame.len());
    c.send(frame).await;
    let closed = c.expect_close().await;
    assert_eq!(closed.code, 4400, "{closed:?}");
    live.stop(MAX_ROUND_TRIP).await;
    assert!(node.alive());
    assert_peak_within(&node, baseline, SMALL_BOMB_BUDGET_MIB, "state-vector bomb");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_body_claiming_2_pow_27_clients_costs_nothing() {
    let node = ProcessNode::start(&[]);
    let live = Liveness::start(node.addr).await;
    let baseline = node.peak_rss_mib();
    // A 9-byte "update" claiming 2^27 clients, eight times at once.
    let mut body = var_uint(1 << 27);
    body.resize(9, 0);
    let posts = (0..8).map(|i| {
        let body = body.clone();
        let addr = node.addr;
        tokio::spawn(async move {
            http_body(addr, "POST", &format!("/rooms/post-bomb-{i}"), &body).await
        })
    });
    for post in posts {
        let (status, answer) = post.await.unwrap();
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(&answer));
    }
    live.stop(MAX_ROUND_TRIP).await;
    assert_peak_within(&node, baseline, SMALL_BOMB_BUDGET_MIB, "POST body bomb");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_frame_of_query_awareness_is_answered_once() {
    let node = ProcessNode::start(&[]);
    let mut c = attacker(&node, "query-flood").await;
    let live = Liveness::start(node.addr).await;
    let baseline = node.peak_rss_mib();
    c.send(Bytes::from(vec![3u8; 64 * 1024 * 1024])).await;
    let before = until_marker(&mut c).await;
    let answers = before
        .iter()
        .filter(|m| matches!(m, Message::Awareness(_)))
        .count();
    assert_eq!(answers, 1, "one awareness answer per frame: {before:?}");
    live.stop(MAX_ROUND_TRIP).await;
    assert_peak_within(
        &node,
        baseline,
        BIG_FRAME_BUDGET_MIB,
        "64 MiB of QueryAwareness",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_60_mib_frame_of_zeros_is_refused_without_decoding_it_into_memory() {
    let node = ProcessNode::start(&[]);
    let mut c = attacker(&node, "zero-flood").await;
    let live = Liveness::start(node.addr).await;
    let baseline = node.peak_rss_mib();
    // `00 00 00` over and over: SyncStep1 messages with an empty (invalid) state vector.
    c.send(Bytes::from(vec![0u8; 60 * 1024 * 1024])).await;
    let closed = close_within(&mut c, BIG_FRAME_WAIT).await;
    assert_eq!(closed, 4400);
    live.stop(MAX_ROUND_TRIP).await;
    assert_peak_within(&node, baseline, BIG_FRAME_BUDGET_MIB, "60 MiB of zeros");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_16_mib_frame_of_sync_step1s_is_answered_once() {
    let node = ProcessNode::start(&[]);
    let mut c = attacker(&node, "step1-flood").await;
    let live = Liveness::start(node.addr).await;
    let baseline = node.peak_rss_mib();
    // `00 00 01 00` over and over: 4.2 million valid SyncStep1s (empty state vector). Each
    // is decoded; one is answered.
    let step1 = protocol::encode_sync_step1(&[0]);
    let frame: Vec<u8> = step1
        .iter()
        .copied()
        .cycle()
        .take(16 * 1024 * 1024)
        .collect();
    c.send(Bytes::from(frame)).await;
    let before = until_marker(&mut c).await;
    let answers = before
        .iter()
        .filter(|m| matches!(m, Message::Sync(SyncMessage::Step2(_))))
        .count();
    assert_eq!(
        answers,
        1,
        "one SyncStep2 per frame: {} messages",
        before.len()
    );
    live.stop(MAX_ROUND_TRIP).await;
    assert_peak_within(
        &node,
        baseline,
        BIG_FRAME_BUDGET_MIB,
        "16 MiB of SyncStep1s",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_nested_a_million_levels_deep_does_not_kill_the_node() {
    let mut node = ProcessNode::start(&[]);
    let mut c = attacker(&node, "deep").await;
    let live = Liveness::start(node.addr).await;
    let baseline = node.peak_rss_mib();
    // One item in root "a" holding an Any value of a million nested one-element arrays:
    // 2 MB that a recursive decoder needs a million stack frames for.
    let mut update = vec![1, 1, 1, 0, 8, 1, 1, b'a', 1];
    for _ in 0..1_000_000 {
        update.extend([117, 1]);
    }
    update.extend([126, 0]);
    c.send(protocol::encode_sync_update(&update)).await;
    let closed = c.expect_close().await;
    assert_eq!(closed.code, 4400, "{closed:?}");
    live.stop(MAX_ROUND_TRIP).await;
    assert!(node.alive(), "the node is still running");
    assert_peak_within(
        &node,
        baseline,
        SMALL_BOMB_BUDGET_MIB,
        "deeply nested update",
    );
}
