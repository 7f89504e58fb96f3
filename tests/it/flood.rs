//! A flood of hostile frames at a live node (in its own process): thousands of random,
//! mutated, truncated, oversize and bomb frames on many sockets at once, at the three client
//! routes and at `/_mesh`. Afterwards the node must be running, its peak resident memory
//! must have stayed within a stated budget, and a normal pair of clients must converge. A
//! well-behaved client keeps editing throughout and must be answered in time.
//!
//! Bounded in count (sockets, frames per socket, reconnects) and in time (every wait). The
//! frames come from a seeded generator, so a run is repeatable up to thread scheduling.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use ymesh::mesh::wire;
use ymesh::protocol;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Text, Transact, WriteTxn};

use crate::common::process::{assert_peak_within, Liveness, ProcessNode};
use crate::common::{fresh_dir, text_of, SyncClient, WAIT};

/// The node's message limit in this test, so that oversize frames are cheap to send.
const MAX_MESSAGE: usize = 1 << 20;
/// Client sockets (spread over the three client routes) and `/_mesh` sockets.
const CLIENT_SOCKETS: usize = 24;
const MESH_SOCKETS: usize = 8;
/// Frames each socket sends, reconnecting when the node closes it.
const FRAMES_PER_SOCKET: usize = 120;
/// Connections each attacker may open (the node closes most after one frame).
const MAX_CONNECTIONS: usize = 200;
/// What the whole flood may add to the node's peak resident memory. Up to 32 sockets each
/// have a frame of up to 1 MiB in flight, a few bombs claim gigabytes.
const FLOOD_BUDGET_MIB: u64 = 256;
/// How long the flood may take.
const FLOOD_TIME: Duration = Duration::from_secs(120);

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn var(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out
}

/// Valid client frames to mutate and cut short.
fn valid_frames() -> Vec<Vec<u8>> {
    let doc = Doc::with_client_id(99);
    let text = doc.get_or_insert_text("t");
    let update = {
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, 0, "flood");
        txn.encode_update_v1()
    };
    let sv = doc.transact().state_vector().encode_v1();
    let full = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    let awareness = [&[1u8, 42, 1, 2][..], b"{}"].concat();
    vec![
        protocol::encode_sync_step1(&sv).to_vec(),
        protocol::encode_sync_step2(&full).to_vec(),
        protocol::encode_sync_update(&update).to_vec(),
        protocol::encode_awareness(&awareness).to_vec(),
        protocol::encode_query_awareness().to_vec(),
        protocol::encode_sync_status(&[7]).to_vec(),
        protocol::encode_command(1, r#"{"id":"x","status":"ok"}"#).to_vec(),
    ]
}

/// Bombs: a few bytes that claim much, and frames of many small messages.
fn bombs() -> Vec<Vec<u8>> {
    let sv_bomb = [var(1 << 29), vec![0, 0]].concat();
    let update_bomb = [var(1 << 27), vec![0; 5]].concat();
    let awareness_bomb = [var(1 << 40), vec![1, 1, 1]].concat();
    let mut nested = vec![1, 1, 1, 0, 8, 1, 1, b'a', 1];
    for _ in 0..100_000 {
        nested.extend([117, 1]);
    }
    nested.extend([126, 0]);
    let not_json = [&[1u8, 43, 1, 9][..], b"{not json"].concat();
    vec![
        protocol::encode_sync_step1(&sv_bomb).to_vec(),
        protocol::encode_sync_update(&update_bomb).to_vec(),
        protocol::encode_sync_step2(&update_bomb).to_vec(),
        protocol::encode_awareness(&awareness_bomb).to_vec(),
        protocol::encode_sync_update(&nested).to_vec(),
        protocol::encode_awareness(&not_json).to_vec(),
        vec![3; 256 * 1024],
        vec![0; 256 * 1024],
        [0u8, 0, 1, 0].repeat(64 * 1024),
        [102u8, 0].repeat(64 * 1024),
    ]
}

/// The next hostile client frame.
fn client_frame(rng: &mut Rng, valid: &[Vec<u8>], bombs: &[Vec<u8>]) -> Vec<u8> {
    match rng.below(10) {
        // Random bytes.
        0 | 1 => {
            let n = rng.below(2048);
            rng.bytes(n)
        }
        // A valid frame with a few bytes changed or a huge varint spliced in.
        2..=4 => {
            let mut f = valid[rng.below(valid.len())].clone();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(f.len() + 1);
                if rng.below(2) == 0 && at < f.len() {
                    f[at] = rng.next() as u8;
                } else {
                    let v = [1 << 29, u64::from(u32::MAX), 1 << 53, rng.next()][rng.below(4)];
                    f.splice(at..at, var(v));
                }
            }
            f
        }
        // A valid frame cut short.
        5 => {
            let f = &valid[rng.below(valid.len())];
            f[..rng.below(f.len())].to_vec()
        }
        // Larger than the message limit (closed with 1009), now and then.
        6 if rng.below(8) == 0 => vec![0u8; MAX_MESSAGE + 1 + rng.below(1024)],
        // A bomb.
        6..=8 => bombs[rng.below(bombs.len())].clone(),
        // A valid frame: the node must go on handling those too.
        _ => valid[rng.below(valid.len())].clone(),
    }
}

/// The next hostile `/_mesh` frame: wire frames with random or huge lengths, bad control
/// JSON, room frames before any handshake, client bombs wrapped in room frames.
fn mesh_frame(rng: &mut Rng, valid: &[Vec<u8>], bombs: &[Vec<u8>]) -> Vec<u8> {
    match rng.below(6) {
        0 => {
            let n = rng.below(1024);
            rng.bytes(n)
        }
        1 => [
            var(wire::MAX_FRAME_LEN + 1 + rng.below(100) as u64),
            vec![0; 8],
        ]
        .concat(),
        2 => [var(1 << 20), rng.bytes(64)].concat(),
        3 => {
            let json = String::from_utf8_lossy(&rng.bytes(64)).into_owned();
            wire::encode_control(&wire::Control::Refused { reason: json }).to_vec()
        }
        4 => wire::encode_room("flood-mesh", &bombs[rng.below(bombs.len())]).to_vec(),
        _ => wire::encode_room("flood-mesh", &valid[rng.below(valid.len())]).to_vec(),
    }
}

/// The SYNC_STATUS marker a client attacker sends after each frame: its echo says the node
/// handled the frame (and kept the connection).
const MARKER: [u8; 3] = [102, 1, 0x77];

/// One attacking socket: connects to `path` and sends its frames one by one, each followed
/// by [`MARKER`] on a client route. It waits until the node echoes the marker (the frame was
/// handled) or closes the connection (then it reconnects); on `/_mesh`, which echoes
/// nothing, until the node closes or a second passes. Returns (frames sent, connections).
async fn attack(addr: SocketAddr, path: String, seed: u64, mesh: bool) -> (usize, usize) {
    let valid = valid_frames();
    let bombs = bombs();
    let mut rng = Rng(seed | 1);
    let (mut sent, mut connections) = (0, 0);
    while sent < FRAMES_PER_SOCKET && connections < MAX_CONNECTIONS {
        connections += 1;
        let url = format!("ws://{addr}{path}");
        let Ok(Ok((ws, _))) =
            tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url)).await
        else {
            continue;
        };
        let (mut sink, mut stream) = ws.split();
        // Drains everything the node sends; reports each marker echo; ends at the close.
        let (echo_tx, mut echoes) = tokio::sync::mpsc::channel::<()>(FRAMES_PER_SOCKET);
        let drain = tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                if matches!(&msg, WsMessage::Binary(b) if b[..] == MARKER) {
                    let _ = echo_tx.try_send(());
                }
            }
        });
        while sent < FRAMES_PER_SOCKET {
            let frame = if mesh {
                mesh_frame(&mut rng, &valid, &bombs)
            } else {
                client_frame(&mut rng, &valid, &bombs)
            };
            sent += 1;
            let mut ok = matches!(
                tokio::time::timeout(WAIT, sink.send(WsMessage::Binary(Bytes::from(frame)))).await,
                Ok(Ok(()))
            );
            if ok && !mesh {
                ok = matches!(
                    tokio::time::timeout(
                        WAIT,
                        sink.send(WsMessage::Binary(Bytes::from_static(&MARKER)))
                    )
                    .await,
                    Ok(Ok(()))
                );
            }
            if !ok {
                break;
            }
            let wait = if mesh { Duration::from_secs(1) } else { WAIT };
            match tokio::time::timeout(wait, echoes.recv()).await {
                // Handled, connection open: next frame.
                Ok(Some(())) => {}
                // Closed by the node: reconnect.
                Ok(None) => break,
                Err(_) if mesh => {}
                Err(_) => panic!("the node neither handled a frame nor closed within {WAIT:?}"),
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
        drain.abort();
    }
    (sent, connections)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_hostile_frames_leaves_the_node_up_small_and_syncing() {
    let dir = fresh_dir("flood-config");
    let config = dir.join("mesh.toml");
    std::fs::write(
        &config,
        format!("[limits]\nmax_message_bytes = {MAX_MESSAGE}\n"),
    )
    .unwrap();
    let mut node = ProcessNode::start(&["--config", config.to_str().unwrap()]);
    let addr = node.addr;
    let live = Liveness::start(addr).await;
    let baseline = node.peak_rss_mib();

    let routes = ["/rooms/flood-", "/sync/flood-", "/workspaces/flood-"];
    let mut attackers = Vec::new();
    for i in 0..CLIENT_SOCKETS {
        let route = routes[i % routes.len()];
        let path = if route.starts_with("/workspaces") {
            format!("{route}{}/sync", i % 4)
        } else {
            format!("{route}{}", i % 4)
        };
        attackers.push(tokio::spawn(attack(addr, path, 0x5eed + i as u64, false)));
    }
    for i in 0..MESH_SOCKETS {
        attackers.push(tokio::spawn(attack(
            addr,
            "/_mesh".into(),
            0xa11 + i as u64,
            true,
        )));
    }
    let (mut frames, mut connections) = (0, 0);
    let all = futures_util::future::join_all(attackers);
    for result in tokio::time::timeout(FLOOD_TIME, all)
        .await
        .expect("the flood ends in time")
    {
        let (s, c) = result.expect("attacker did not panic");
        frames += s;
        connections += c;
    }
    eprintln!("flood: {frames} frames on {connections} connections");
    assert!(frames >= 3_000, "{frames} frames");
    live.stop(Duration::from_secs(10)).await;

    assert!(node.alive(), "the node is still running");
    assert_peak_within(&node, baseline, FLOOD_BUDGET_MIB, "flood");

    // A normal pair of clients converges.
    let mut a = SyncClient::connect(addr, "after-flood").await;
    let mut b = SyncClient::connect(addr, "after-flood").await;
    a.edit(|txn| {
        let t = txn.get_or_insert_text("t");
        t.insert(txn, 0, "converged");
    })
    .await;
    b.pump_until("b to get a's edit", |doc| text_of(doc, "t") == "converged")
        .await;
    b.edit(|txn| {
        let t = txn.get_or_insert_text("t");
        t.push(txn, "!");
    })
    .await;
    a.pump_until("a to get b's edit", |doc| text_of(doc, "t") == "converged!")
        .await;
}
