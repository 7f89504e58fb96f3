//! Admitted peers that misbehave: one that stops reading its link is cut off at the write
//! deadline (`limits.write_timeout_s`) instead of the node holding its frames; one that
//! sends a frame of thousands of SyncStep1s gets one answer, not thousands.

use std::sync::Arc;
use std::time::Duration;

use ymesh::mesh::proto::approval::{AdmittedBy, Verdict};
use ymesh::mesh::proto::handshake::{self, Handshake, Outcome};
use ymesh::mesh::wire::{self, Frame, MAX_FRAME_LEN};
use ymesh::mesh::NodeIdentity;

use crate::common::*;

/// Links to the node at `addr` as a new node (the mesh is open in tests): the link's I/O
/// and the node id it linked as.
async fn link_as_stranger(
    addr: std::net::SocketAddr,
) -> (ymesh::mesh::transport::LinkIo, Arc<NodeIdentity>) {
    let (mut io, x, binding) = secure_dial(addr).await;
    let mut hs = Handshake::new(x.node_id(), "boot", None, binding, None);
    let mut actions = hs.start();
    loop {
        let mut done = false;
        for act in std::mem::take(&mut actions) {
            match act {
                handshake::Action::Send(c) => io.tx.send(wire::encode_control(&c)).await.unwrap(),
                handshake::Action::Authenticated(_) => {
                    actions.extend(hs.verdict(Verdict::Welcome(AdmittedBy::Configured)))
                }
                handshake::Action::Finish(Outcome::Established(_)) => done = true,
                other => panic!("{other:?}"),
            }
        }
        if done {
            break;
        }
        if !actions.is_empty() {
            continue;
        }
        let frame = tokio::time::timeout(WAIT, io.rx.recv())
            .await
            .expect("the node answers")
            .expect("open");
        if let Ok(Frame::Control(c)) = wire::decode_frame(frame, MAX_FRAME_LEN) {
            actions = hs.on_message(c);
        }
    }
    (io, x)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_is_cut_off_at_the_write_deadline() {
    let mut cfg = test_config();
    cfg.limits.write_timeout = Duration::from_secs(2);
    let a = start(cfg).await;
    let addr = a.local_addr();
    // X links (the mesh is open in tests), then never reads again.
    let (io, x) = link_as_stranger(addr).await;
    let xid = x.node_id().to_string();
    let mesh = a.mesh().clone();
    wait_until("X linked", || mesh.connected_peers().contains(&xid)).await;

    // 330 updates of 256 KiB (to 330 rooms) flow towards X, which reads nothing: its receive channel
    // (256 frames) and the socket buffers fill, and the node's write blocks. The rest waits in
    // the link's queue, far below its 64 MiB bound, so only the write deadline can end the
    // link, 2 s after the write blocked.
    let chunk = "x".repeat(256 * 1024);
    for i in 0..330u64 {
        let update = {
            use yrs::{Text, Transact, WriteTxn};
            let doc = yrs::Doc::with_client_id(1000 + i);
            let mut t = doc.transact_mut();
            t.get_or_insert_text("t").insert(&mut t, 0, &chunk);
            t.encode_update_v1()
        };
        // A room each: the node's work per POST stays small (one room of 80 MiB would be
        // compacted, re-encoded whole, while the test runs; on a loaded machine one such
        // POST outlasted the client's bound), and every update still flows towards X.
        let (status, _) = http_body(addr, "POST", &format!("/rooms/flood-{i}"), &update).await;
        assert_eq!(status, 200);
    }
    let m = mesh.clone();
    wait_until("the node ended X's link", || {
        !m.connected_peers().contains(&xid)
    })
    .await;
    // The node keeps serving.
    let (status, _) = get_json(addr, "/healthz").await;
    assert_eq!(status, 200);
    drop(io);
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_of_many_sync_step1s_gets_one_answer() {
    let a = start(test_config()).await;
    let addr = a.local_addr();
    let update = {
        use yrs::{Text, Transact, WriteTxn};
        let doc = yrs::Doc::new();
        let mut t = doc.transact_mut();
        t.get_or_insert_text("t")
            .insert(&mut t, 0, &"b".repeat(256 * 1024));
        t.encode_update_v1()
    };
    let (status, _) = http_body(addr, "POST", "/rooms/big", &update).await;
    assert_eq!(status, 200);
    let (mut io, x) = link_as_stranger(addr).await;
    let xid = x.node_id().to_string();
    let mesh = a.mesh().clone();
    wait_until("X linked", || mesh.connected_peers().contains(&xid)).await;
    // 2,000 SyncStep1s with an empty state vector in one ROOM frame (6 KB): before, each got
    // the whole 256 KiB room back (half a gigabyte for one frame).
    let step1 = ymesh::protocol::encode_sync_step1(&[0]);
    let many: Vec<u8> = step1
        .iter()
        .copied()
        .cycle()
        .take(step1.len() * 2000)
        .collect();
    io.tx.send(wire::encode_room("big", &many)).await.unwrap();
    let mut answers = 0;
    // Read until the node has been quiet for a second (bounded: at most 200 frames).
    for _ in 0..200 {
        let Ok(Some(frame)) = tokio::time::timeout(Duration::from_secs(1), io.rx.recv()).await
        else {
            break;
        };
        if let Ok(Frame::Room { room, message }) = wire::decode_frame(frame, MAX_FRAME_LEN) {
            let step2 = ymesh::protocol::decode_frame(message)
                .unwrap()
                .into_iter()
                .filter(|m| {
                    matches!(
                        m,
                        ymesh::protocol::Message::Sync(ymesh::protocol::SyncMessage::Step2(_))
                    )
                })
                .count();
            if room == "big" {
                answers += step2;
            }
        }
    }
    assert_eq!(answers, 1, "one answer for one frame");
    a.shutdown().await;
}
