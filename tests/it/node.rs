//! Integration tests against in-process nodes on 127.0.0.1:0, spoken to over real sockets.

use std::time::Duration;

use crate::common::*;
use futures_util::StreamExt;
use ymesh::protocol::{self, Message, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::{Map, Text, Transact, WriteTxn};

#[tokio::test]
async fn two_clients_converge_and_the_sender_gets_its_echo() {
    let node = start(test_config()).await;
    let addr = node.local_addr();
    let mut a = SyncClient::connect(addr, "notes").await;
    let mut b = SyncClient::connect(addr, "notes").await;
    a.edit(|txn| {
        txn.get_or_insert_text("t").insert(txn, 0, "hello");
    })
    .await;
    // The sender receives its own update back (y-websocket v4 sync-status relies on it).
    let echoed = a
        .raw
        .recv_until(|m| matches!(m, Message::Sync(SyncMessage::Update(_))))
        .await;
    let Message::Sync(SyncMessage::Update(u)) = echoed else {
        unreachable!()
    };
    let fresh = yrs::Doc::new();
    fresh
        .transact_mut()
        .apply_update(yrs::Update::decode_v1(&u).unwrap())
        .unwrap();
    assert_eq!(text_of(&fresh, "t"), "hello");
    b.edit(|txn| {
        txn.get_or_insert_map("m").insert(txn, "k", "v");
    })
    .await;
    b.pump_until("b sees a's text", |d| text_of(d, "t") == "hello")
        .await;
    a.pump_until("a sees b's map", |d| {
        d.get_or_insert_map("m").len(&d.transact()) == 1
    })
    .await;
    node.shutdown().await;
}

#[tokio::test]
async fn step1_is_always_answered_with_step2_and_server_sends_step1() {
    let node = start(test_config()).await;
    let mut c = RawClient::connect(node.local_addr(), "/sync/fresh").await;
    // The server opens with its own SyncStep1 (the empty state vector).
    assert_eq!(
        c.recv().await,
        Message::Sync(SyncMessage::Step1(bytes::Bytes::from_static(&[0])))
    );
    c.send(protocol::encode_sync_step1(&[0])).await;
    match c.recv().await {
        Message::Sync(SyncMessage::Step2(u)) => assert_eq!(&u[..], &[0, 0]),
        other => panic!("expected SyncStep2, got {other:?}"),
    }
    node.shutdown().await;
}

#[tokio::test]
async fn all_three_routes_reach_the_same_room() {
    let node = start(test_config()).await;
    let addr = node.local_addr();
    let mut a = SyncClient::connect_with(addr, "/rooms/shared", yrs::Doc::new()).await;
    let mut b = SyncClient::connect_with(addr, "/sync/shared", yrs::Doc::new()).await;
    let mut c = SyncClient::connect_with(addr, "/workspaces/shared/sync", yrs::Doc::new()).await;
    a.edit(|t| t.get_or_insert_text("t").insert(t, 0, "x"))
        .await;
    b.pump_until("b", |d| text_of(d, "t") == "x").await;
    c.pump_until("c", |d| text_of(d, "t") == "x").await;
    let (_, rooms) = get_json(addr, "/rooms").await;
    assert_eq!(rooms["data"].as_array().unwrap().len(), 1);
    assert_eq!(rooms["data"][0]["connections"], 3);
    node.shutdown().await;
}

fn awareness(client: u64, clock: u32, json: &str) -> Vec<u8> {
    use yrs::sync::awareness::{AwarenessUpdate, AwarenessUpdateEntry};
    use yrs::updates::encoder::Encode;
    let mut clients = std::collections::HashMap::new();
    clients.insert(
        yrs::ClientID::new(client),
        AwarenessUpdateEntry {
            clock,
            json: json.into(),
        },
    );
    AwarenessUpdate { clients }.encode_v1()
}

fn awareness_entry(msg: &Message, client: u64) -> Option<(u32, String)> {
    let Message::Awareness(p) = msg else {
        return None;
    };
    let u = yrs::sync::awareness::AwarenessUpdate::decode_v1(p).ok()?;
    u.clients
        .get(&yrs::ClientID::new(client))
        .map(|e| (e.clock, e.json.to_string()))
}

#[tokio::test]
async fn awareness_is_echoed_answered_and_removed_on_abrupt_close() {
    let node = start(test_config()).await;
    let addr = node.local_addr();
    let mut a = RawClient::connect(addr, "/rooms/aw").await;
    let mut b = RawClient::connect(addr, "/rooms/aw").await;
    a.recv().await; // SyncStep1
    b.recv().await;
    a.send(protocol::encode_awareness(&awareness(
        77,
        1,
        r#"{"u":"a"}"#,
    )))
    .await;
    // Echo to the sender (keeps idle v3 clients connected) and delivery to the other.
    let got = a.recv_until(|m| awareness_entry(m, 77).is_some()).await;
    assert_eq!(awareness_entry(&got, 77).unwrap().0, 1);
    b.recv_until(|m| awareness_entry(m, 77).is_some()).await;
    // A late joiner sees it right after its SyncStep1.
    let mut c = RawClient::connect(addr, "/rooms/aw").await;
    assert!(matches!(
        c.recv().await,
        Message::Sync(SyncMessage::Step1(_))
    ));
    let late = c.recv().await;
    assert_eq!(
        awareness_entry(&late, 77),
        Some((1, r#"{"u":"a"}"#.to_string()))
    );
    // QueryAwareness is answered with every state.
    b.send(protocol::encode_query_awareness()).await;
    b.recv_until(|m| awareness_entry(m, 77).is_some()).await;
    // Abrupt close: drop the TCP connection without a close frame.
    drop(a);
    let removal = b
        .recv_until(|m| awareness_entry(m, 77).is_some_and(|(_, s)| s == "null"))
        .await;
    assert_eq!(awareness_entry(&removal, 77).unwrap().0, 2);
    node.shutdown().await;
}

#[tokio::test]
async fn malformed_frames_close_only_that_connection_with_4400() {
    let node = start(test_config()).await;
    let addr = node.local_addr();
    let mut good = SyncClient::connect(addr, "r").await;
    let bad_frames: Vec<&[u8]> = vec![
        &[0x80],
        &[0, 2, 0xff, 0xff, 0xff, 0xff, 0x0f],
        &[0, 7, 0],
        &[0, 2, 3, 1, 2, 3], // not a valid Yjs update
        &[1, 2, 0xff, 0xff], // not a valid awareness update
        &[],
    ];
    for frame in bad_frames {
        let mut bad = RawClient::connect(addr, "/rooms/r").await;
        bad.send(frame.to_vec()).await;
        let closed = bad.expect_close().await;
        assert_eq!(closed.code, 4400, "frame {frame:?}: {closed:?}");
        assert!(!closed.reason.is_empty());
    }
    // Unknown types are ignored; the connection keeps working.
    let mut odd = RawClient::connect(addr, "/rooms/r").await;
    odd.recv().await;
    odd.send(vec![77u8, 1, 2, 3]).await;
    odd.send(protocol::encode_query_awareness()).await;
    assert!(matches!(odd.recv().await, Message::Awareness(_)));
    // The room still works for everyone else.
    good.edit(|t| t.get_or_insert_text("t").insert(t, 0, "still"))
        .await;
    let mut late = SyncClient::connect(addr, "r").await;
    late.pump_until("content", |d| text_of(d, "t") == "still")
        .await;
    node.shutdown().await;
}

#[tokio::test]
async fn oversize_messages_close_with_1009() {
    let mut cfg = test_config();
    cfg.limits.max_message_bytes = 64 * 1024;
    let node = start(cfg).await;
    let mut c = RawClient::connect(node.local_addr(), "/rooms/big").await;
    c.recv().await;
    c.send(protocol::encode_sync_update(&vec![0u8; 100 * 1024]))
        .await;
    assert_eq!(c.expect_close().await.code, 1009);
    let (status, _) = get_json(node.local_addr(), "/healthz").await;
    assert_eq!(status, 200);
    node.shutdown().await;
}

#[tokio::test]
async fn sync_status_is_echoed_unchanged() {
    let node = start(test_config()).await;
    let mut c = SyncClient::connect(node.local_addr(), "s").await;
    c.edit(|t| t.get_or_insert_text("t").insert(t, 0, "a"))
        .await;
    let frame = [102u8, 2, 0xac, 0x02];
    c.raw.send(frame.to_vec()).await;
    let got = c
        .raw
        .recv_until(|m| matches!(m, Message::SyncStatus(_)))
        .await;
    assert_eq!(&got.encode()[..], &frame[..]);
    node.shutdown().await;
}

#[tokio::test]
async fn rooms_are_isolated_and_names_decoded() {
    let node = start(test_config()).await;
    let addr = node.local_addr();
    let names = ["a", "ab", "a%2Fb", "a+b", "a%20b", "%E6%97%A5%E6%9C%AC"];
    let mut clients = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let mut c = SyncClient::connect(addr, n).await;
        let s = format!("room{i}");
        c.edit(move |t| t.get_or_insert_text("t").insert(t, 0, &s))
            .await;
        clients.push(c);
    }
    for (i, n) in names.iter().enumerate() {
        let mut late = SyncClient::connect(addr, n).await;
        let want = format!("room{i}");
        late.pump_until(n, |d| text_of(d, "t") == want).await;
    }
    let (_, rooms) = get_json(addr, "/rooms").await;
    let mut listed: Vec<String> = rooms["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    listed.sort();
    let mut want = vec!["a", "ab", "a/b", "a+b", "a b", "日本"];
    want.sort();
    assert_eq!(listed, want);
    // The document API serves the same state for a decoded name, and 404s unknown rooms.
    let (status, body) = http(addr, "GET", "/rooms/a%2Fb").await;
    assert_eq!(status, 200);
    let doc = yrs::Doc::new();
    doc.transact_mut()
        .apply_update(yrs::Update::decode_v1(&body).unwrap())
        .unwrap();
    assert_eq!(text_of(&doc, "t"), "room2");
    let (status, v) = get_json(addr, "/rooms/nope").await;
    assert_eq!(status, 404);
    assert!(v["error"]["message"].as_str().unwrap().contains("nope"));
    let (_, rooms) = get_json(addr, "/rooms").await;
    assert!(!rooms["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == "nope"));
    // Decoded exactly once: %25 is a literal percent sign.
    let mut pct = SyncClient::connect(addr, "a%252Fb").await;
    pct.edit_acked(|t| t.get_or_insert_text("t").insert(t, 0, "pct"))
        .await;
    let (_, rooms) = get_json(addr, "/rooms").await;
    assert!(rooms["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == "a%2Fb"));
    // Not UTF-8 after decoding: a 400 in the JSON envelope.
    let (status, v) = get_json(addr, "/rooms/%FF").await;
    assert_eq!(status, 400);
    assert!(v["error"]["message"].as_str().unwrap().contains("UTF-8"));
    // A room without content does not exist yet: not listed, 404.
    let _empty = SyncClient::connect(addr, "empty").await;
    let (status, _) = get_json(addr, "/rooms/empty").await;
    assert_eq!(status, 404);
    let (_, rooms) = get_json(addr, "/rooms").await;
    assert!(!rooms["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == "empty"));
    // Control characters and over-long names are refused before the upgrade.
    let (status, v) = get_json(addr, "/rooms/a%0Ab").await;
    assert_eq!(status, 400);
    assert!(v["error"]["message"].is_string());
    let (status, _) = get_json(addr, &format!("/rooms/{}", "x".repeat(513))).await;
    assert_eq!(status, 400);
    node.shutdown().await;
}

#[tokio::test]
async fn http_basics_use_the_envelope() {
    let node = start(test_config()).await;
    let addr = node.local_addr();
    let (status, v) = get_json(addr, "/").await;
    assert_eq!(status, 200);
    assert_eq!(v["data"]["name"], "ymesh");
    assert_eq!(v["data"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["data"]["uptime_s"].is_u64());
    assert_eq!(v["data"]["rooms"], 0);
    let (status, v) = get_json(addr, "/healthz").await;
    assert_eq!((status, &v["data"]["status"]), (200, &"ok".into()));
    let (status, v) = get_json(addr, "/rooms").await;
    assert_eq!(status, 200);
    assert_eq!(v["data"], serde_json::json!([]));
    let (status, v) = get_json(addr, "/no/such/thing").await;
    assert_eq!(status, 404);
    assert!(v["error"]["message"].is_string());
    let (status, v) = get_json(addr, "/sync/x").await;
    assert_eq!(status, 426);
    assert!(v["error"]["message"].is_string());
    node.shutdown().await;
}

#[tokio::test]
async fn idle_rooms_are_evicted_but_pinned_rooms_stay() {
    let mut cfg = test_config();
    cfg.idle_timeout = Duration::from_millis(300);
    cfg.pinned_rooms.insert("keep".into());
    let node = start(cfg).await;
    let addr = node.local_addr();
    let mut c = SyncClient::connect(addr, "temp").await;
    c.edit(|t| t.get_or_insert_text("t").insert(t, 0, "x"))
        .await;
    c.pump_until("echo", |d| text_of(d, "t") == "x").await;
    assert!(node.rooms().get("temp").is_some());
    drop(c);
    let rooms = node.rooms().clone();
    wait_until("temp evicted", || rooms.get("temp").is_none()).await;
    assert!(rooms.get("keep").is_some());
    node.shutdown().await;
}

#[tokio::test]
async fn connection_and_room_limits_close_with_1013() {
    let mut cfg = test_config();
    cfg.limits.max_connections = 2;
    cfg.limits.max_rooms = 1;
    let node = start(cfg).await;
    let addr = node.local_addr();
    let _a = SyncClient::connect(addr, "one").await;
    let mut other_room = RawClient::connect(addr, "/rooms/two").await;
    let closed = other_room.expect_close().await;
    assert_eq!(closed.code, 1013, "{closed:?}");
    let rooms = node.rooms().clone();
    // Wait until the refused session released its connection slot.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, v) = get_json(addr, "/").await;
        if v["data"]["connections"].as_u64().unwrap() == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "slot released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _b = SyncClient::connect(addr, "one").await;
    let mut third = RawClient::connect(addr, "/rooms/one").await;
    assert_eq!(third.expect_close().await.code, 1013);
    assert_eq!(rooms.len(), 1);
    node.shutdown().await;
}

#[tokio::test]
async fn a_client_that_stops_answering_pings_is_dropped() {
    let mut cfg = test_config();
    cfg.limits.ping_interval = Duration::from_millis(200);
    let node = start(cfg).await;
    let addr = node.local_addr();
    let mut live = SyncClient::connect(addr, "p").await;
    // A client that never reads never answers pings.
    let mut silent = RawClient::connect(addr, "/rooms/p").await;
    let rooms = node.rooms().clone();
    // Keep reading on the live client (tungstenite answers pings while reading) until the
    // node has dropped the silent one.
    let deadline = tokio::time::Instant::now() + WAIT;
    while rooms.get("p").map(|r| r.session_count()) != Some(1) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "silent client dropped in time"
        );
        let _ = tokio::time::timeout(Duration::from_millis(50), live.raw.ws.next()).await;
    }
    let closed = silent.expect_close().await;
    assert_eq!(closed.code, 4408, "{closed:?}");
    // The live client answered every ping (tungstenite does on read) and is still served.
    live.edit(|t| t.get_or_insert_text("t").insert(t, 0, "ok"))
        .await;
    live.pump_until("echo", |d| text_of(d, "t") == "ok").await;
    node.shutdown().await;
}

#[tokio::test]
async fn a_client_that_cannot_keep_up_is_closed_with_4429() {
    let mut cfg = test_config();
    cfg.limits.outbound_queue = 4;
    let node = start(cfg).await;
    let addr = node.local_addr();
    let mut writer = SyncClient::connect(addr, "fast").await;
    // Connected but never reading: its socket buffers fill, then its queue.
    let mut slow = RawClient::connect(addr, "/rooms/fast").await;
    let rooms = node.rooms().clone();
    let chunk = "y".repeat(512 * 1024);
    for i in 0..200 {
        writer
            .edit(|t| t.get_or_insert_text("t").insert(t, 0, &chunk))
            .await;
        // Drain our own echoes so only the slow client falls behind.
        writer
            .raw
            .recv_until(|m| matches!(m, Message::Sync(SyncMessage::Update(_))))
            .await;
        if rooms.get("fast").map(|r| r.session_count()) == Some(1) {
            break;
        }
        assert!(i < 199, "slow client was never closed");
    }
    let closed = slow.expect_close().await;
    assert_eq!(closed.code, 4429, "{closed:?}");
    node.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_clients_with_1001() {
    let node = start(test_config()).await;
    let mut c = RawClient::connect(node.local_addr(), "/rooms/bye").await;
    c.recv().await;
    let closing = tokio::spawn(node.shutdown());
    let closed = c.expect_close().await;
    assert_eq!(closed.code, 1001);
    tokio::time::timeout(WAIT, closing).await.unwrap().unwrap();
}

#[tokio::test]
async fn late_joiner_and_reconnecting_client_get_full_state() {
    let node = start(test_config()).await;
    let addr = node.local_addr();
    let mut a = SyncClient::connect(addr, "late").await;
    a.edit_acked(|t| t.get_or_insert_text("t").insert(t, 0, "one "))
        .await;
    // b leaves, a edits, b comes back with its old doc and catches up.
    let b = SyncClient::connect(addr, "late").await;
    assert_eq!(text_of(&b.doc, "t"), "one ");
    let b_doc = b.doc.clone();
    drop(b);
    a.edit_acked(|t| {
        let text = t.get_or_insert_text("t");
        let len = text.len(t);
        text.insert(t, len, "two");
    })
    .await;
    let b = SyncClient::connect_with(addr, "/rooms/late", b_doc).await;
    assert_eq!(text_of(&b.doc, "t"), "one two");
    node.shutdown().await;
}
