//! Durability: "saved" means on disk. Crash (SIGKILL) rounds against a child-process node,
//! restarts, compaction, eviction and reload, one node per data directory, schema refusal.

use std::collections::HashMap;

use std::path::Path;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use ymesh::protocol::{self, Message, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::{Map, ReadTxn, Text, Transact, WriteTxn};

/// Starts the binary on `dir`, returns the child and its port.
fn spawn_node(dir: &Path) -> (Child, u16) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ymesh"));
    cmd.args(["serve", "--port", "0", "--data-dir"]).arg(dir);
    let (child, _, port) = spawn_until_ready(cmd);
    (child, port)
}

fn sigkill(child: &mut Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

fn status_frame(n: u64) -> Vec<u8> {
    let mut inner = Vec::new();
    let mut v = n;
    while v >= 0x80 {
        inner.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    inner.push(v as u8);
    protocol::encode_sync_status(&inner).to_vec()
}

fn status_value(payload: &[u8]) -> u64 {
    let mut r = protocol::Reader::new(bytes::Bytes::copy_from_slice(payload));
    r.read_var_uint().unwrap()
}

/// One writer: inserts `w{id}-{n}` = n into map "m", sends a 102 after every 10 updates
/// (at most two outstanding, like a client that waits for "saved"), and records the highest
/// n whose 102 came back. Runs until the connection dies.
async fn writer(port: u16, room: String, id: u64, acked: Arc<Mutex<HashMap<u64, u64>>>) {
    let url = format!("ws://127.0.0.1:{port}/rooms/{room}");
    let Ok((ws, _)) = tokio_tungstenite::connect_async(url).await else {
        return;
    };
    let (mut tx, mut rx) = ws.split();
    let (seen_tx, mut seen) = tokio::sync::watch::channel(0u64);
    let reader_acked = acked.clone();
    let reader = tokio::spawn(async move {
        while let Some(Ok(msg)) = rx.next().await {
            if let WsMessage::Binary(b) = msg {
                if let Ok(msgs) = protocol::decode_frame(b) {
                    for m in msgs {
                        if let Message::SyncStatus(p) = m {
                            let n = status_value(&p);
                            let mut a = reader_acked.lock().unwrap();
                            let e = a.entry(id).or_insert(0);
                            *e = (*e).max(n);
                            let _ = seen_tx.send(*e);
                        }
                    }
                }
            }
        }
    });
    let doc = yrs::Doc::with_client_id(id);
    for n in 1..=100_000u64 {
        let update = {
            let mut txn = doc.transact_mut();
            let m = txn.get_or_insert_map("m");
            m.insert(&mut txn, format!("w{id}-{n}"), n as i64);
            txn.encode_update_v1()
        };
        if tx
            .send(WsMessage::Binary(protocol::encode_sync_update(&update)))
            .await
            .is_err()
        {
            break;
        }
        if n % 10 == 0 {
            if tx
                .send(WsMessage::Binary(status_frame(n).into()))
                .await
                .is_err()
            {
                break;
            }
            // Keep at most two acknowledgements outstanding.
            let want = n.saturating_sub(20);
            let ok = tokio::time::timeout(WAIT, seen.wait_for(|&s| s >= want)).await;
            if !matches!(ok, Ok(Ok(_))) {
                break;
            }
        }
    }
    reader.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_updates_survive_sigkill_over_several_rounds() {
    let dir = fresh_dir("crash");
    let mut must_have: Vec<String> = Vec::new();
    for round in 0..3u64 {
        let (mut child, port) = spawn_node(&dir);
        // Everything acknowledged in earlier rounds is there after the restart.
        let mut check = SyncClient::connect(([127, 0, 0, 1], port).into(), "crash").await;
        {
            let txn = check.doc.transact();
            let m = txn.get_map("m");
            for key in &must_have {
                assert!(
                    m.as_ref().is_some_and(|m| m.contains_key(&txn, key)),
                    "round {round}: acknowledged {key} lost"
                );
            }
        }
        check.raw.ws.close(None).await.ok();
        let acked = Arc::new(Mutex::new(HashMap::new()));
        let mut writers = Vec::new();
        for w in 0..4u64 {
            let id = 1000 + round * 10 + w;
            let room = "crash".to_string();
            writers.push(tokio::spawn(writer(port, room, id, acked.clone())));
        }
        // Let them write until a good number of acknowledgements came back, then kill -9.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let total: u64 = acked.lock().unwrap().values().sum();
            if total >= 200 {
                break;
            }
            assert!(Instant::now() < deadline, "writers made progress");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        sigkill(&mut child);
        for w in writers {
            let _ = tokio::time::timeout(WAIT, w).await;
        }
        let acked = acked.lock().unwrap().clone();
        for (id, n) in acked {
            for k in 1..=n {
                must_have.push(format!("w{id}-{k}"));
            }
        }
    }
    // Final check after the last kill.
    let (mut child, port) = spawn_node(&dir);
    let check = SyncClient::connect(([127, 0, 0, 1], port).into(), "crash").await;
    let txn = check.doc.transact();
    let m = txn.get_map("m").expect("map exists");
    let lost: Vec<&String> = must_have
        .iter()
        .filter(|k| !m.contains_key(&txn, k))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged updates lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert!(must_have.len() >= 600);
    drop(txn);
    sigkill(&mut child);
}

#[tokio::test]
async fn graceful_restart_keeps_many_rooms_and_loads_before_sync() {
    let cfg = test_config();
    let dir = cfg.data_dir.clone();
    let node = start(cfg).await;
    let addr = node.local_addr();
    for i in 0..50 {
        let mut c = SyncClient::connect(addr, &format!("room-{i}")).await;
        c.edit_acked(move |t| {
            t.get_or_insert_text("t")
                .insert(t, 0, &format!("content {i}"))
        })
        .await;
    }
    node.shutdown().await;

    let mut cfg = test_config();
    cfg.data_dir = dir;
    let node = start(cfg).await;
    let addr = node.local_addr();
    assert!(node.rooms().is_empty(), "loading is lazy");
    let (_, v) = get_json(addr, "/rooms?all=true").await;
    let rooms = v["data"].as_array().unwrap();
    assert_eq!(rooms.len(), 50);
    assert!(rooms.iter().all(|r| r["stored"] == true
        && r["loaded"] == false
        && r["bytes"].as_u64().unwrap() > 0
        && r["updated_at_ms"].as_u64().unwrap() > 0));
    let (_, v) = get_json(addr, "/rooms").await;
    assert_eq!(v["data"].as_array().unwrap().len(), 0);
    // The node's first SyncStep1 already carries the stored state (load before sync).
    let mut raw = RawClient::connect(addr, "/rooms/room-7").await;
    match raw.recv().await {
        Message::Sync(SyncMessage::Step1(sv)) => {
            let sv = yrs::StateVector::decode_v1(&sv).unwrap();
            assert!(!sv.is_empty(), "stored state loaded before SyncStep1");
        }
        other => panic!("{other:?}"),
    }
    for i in [0, 25, 49] {
        let c = SyncClient::connect(addr, &format!("room-{i}")).await;
        assert_eq!(text_of(&c.doc, "t"), format!("content {i}"));
    }
    node.shutdown().await;
}

#[tokio::test]
async fn compaction_and_eviction_preserve_content() {
    let mut cfg = test_config();
    cfg.store.compact_log_count = 5;
    cfg.idle_timeout = Duration::from_millis(200);
    let dir = cfg.data_dir.clone();
    let node = start(cfg).await;
    let addr = node.local_addr();
    let mut c = SyncClient::connect(addr, "compact").await;
    for i in 0..40 {
        c.edit(move |t| {
            let text = t.get_or_insert_text("t");
            let len = text.len(t);
            text.insert(t, len, &format!("{i},"));
        })
        .await;
    }
    c.edit_acked(|_| {}).await;
    let want: String = (0..40).map(|i| format!("{i},")).collect();
    let store = node.store().unwrap().clone();
    // Automatic compaction runs right after the commit that crossed the threshold.
    let deadline = Instant::now() + WAIT;
    loop {
        let meta = store.meta("compact").await.unwrap().unwrap();
        if meta.log_count < 40 {
            break;
        }
        assert!(Instant::now() < deadline, "log was compacted: {meta:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(c);
    let rooms = node.rooms().clone();
    wait_until("eviction", || rooms.get("compact").is_none()).await;
    // Reopened from the store after eviction (and its compaction).
    let again = SyncClient::connect(addr, "compact").await;
    assert_eq!(text_of(&again.doc, "t"), want);
    node.shutdown().await;
    // And after a restart.
    let mut cfg = test_config();
    cfg.data_dir = dir;
    let node = start(cfg).await;
    let again = SyncClient::connect(node.local_addr(), "compact").await;
    assert_eq!(text_of(&again.doc, "t"), want);
    let (_, v) = get_json(node.local_addr(), "/rooms/compact?format=json").await;
    assert_eq!(v["data"]["t"], want);
    node.shutdown().await;
}

#[tokio::test]
async fn post_is_saved_when_it_answers() {
    let dir = fresh_dir("post");
    let (mut child, port) = spawn_node(&dir);
    let doc = yrs::Doc::with_client_id(5);
    let update = {
        let mut txn = doc.transact_mut();
        txn.get_or_insert_text("t").insert(&mut txn, 0, "posted");
        txn.encode_update_v1()
    };
    let (status, _) = http_body(([127, 0, 0, 1], port).into(), "POST", "/rooms/p", &update).await;
    assert_eq!(status, 200);
    sigkill(&mut child);
    let (mut child, port) = spawn_node(&dir);
    let (status, v) = get_json(([127, 0, 0, 1], port).into(), "/rooms/p?format=json").await;
    assert_eq!(status, 200);
    assert_eq!(v["data"]["t"], "posted");
    sigkill(&mut child);
}

#[tokio::test]
async fn one_node_per_data_directory() {
    let cfg = test_config();
    let dir = cfg.data_dir.clone();
    let node = start(cfg).await;
    let mut second = test_config();
    second.data_dir = dir.clone();
    let err = ymesh::Node::start(second).await.unwrap_err().to_string();
    assert!(err.contains("lock") || err.contains("Lock"), "{err}");
    assert!(err.contains(&dir.display().to_string()), "{err}");
    // The first node is unaffected.
    let (status, _) = get_json(node.local_addr(), "/healthz").await;
    assert_eq!(status, 200);
    node.shutdown().await;
    // After it stopped, the directory can be used again.
    let mut again = test_config();
    again.data_dir = dir;
    start(again).await.shutdown().await;
}

#[tokio::test]
async fn newer_schema_and_foreign_files_are_refused_untouched() {
    let dir = fresh_dir("schema");
    {
        let conn = rusqlite::Connection::open(dir.join("ymesh.sqlite3")).unwrap();
        conn.execute_batch("PRAGMA application_id = 1498239816; PRAGMA user_version = 99;")
            .unwrap();
        conn.execute_batch("CREATE TABLE future (x)").unwrap();
    }
    let before = std::fs::read(dir.join("ymesh.sqlite3")).unwrap();
    let mut cfg = test_config();
    cfg.data_dir = dir.clone();
    let err = ymesh::Node::start(cfg).await.unwrap_err().to_string();
    let supported = format!("version {}", ymesh::store::SCHEMA_VERSION);
    assert!(err.contains("99") && err.contains(&supported), "{err}");
    assert_eq!(std::fs::read(dir.join("ymesh.sqlite3")).unwrap(), before);

    let dir = fresh_dir("foreign");
    std::fs::write(dir.join("ymesh.sqlite3"), b"this is not a database at all").unwrap();
    let mut cfg = test_config();
    cfg.data_dir = dir.clone();
    let err = ymesh::Node::start(cfg).await.unwrap_err().to_string();
    assert!(err.contains("ymesh.sqlite3"), "{err}");
    assert_eq!(
        std::fs::read(dir.join("ymesh.sqlite3")).unwrap(),
        b"this is not a database at all"
    );
}

#[tokio::test]
async fn memory_mode_stores_nothing() {
    let mut cfg = test_config();
    cfg.memory = true;
    let dir = cfg.data_dir.clone();
    let node = start(cfg).await;
    assert!(node.store().is_none());
    let mut c = SyncClient::connect(node.local_addr(), "m").await;
    c.edit_acked(|t| t.get_or_insert_text("t").insert(t, 0, "x"))
        .await;
    node.shutdown().await;
    assert!(
        std::fs::read_dir(&dir).unwrap().next().is_none(),
        "nothing written"
    );
}

#[tokio::test]
async fn quotas_refuse_growth_with_a_reason_and_keep_existing_data() {
    let mut cfg = test_config();
    cfg.store.room_quota_bytes = Some(4_000);
    cfg.store.node_quota_bytes = Some(10_000);
    let node = start(cfg).await;
    let addr = node.local_addr();
    let mut a = SyncClient::connect(addr, "q").await;
    a.edit_acked(|t| t.get_or_insert_text("t").insert(t, 0, "small"))
        .await;
    // A separate document holding the room's state before the refused edit.
    let before = yrs::Doc::new();
    {
        let full = a
            .doc
            .transact()
            .encode_state_as_update_v1(&yrs::StateVector::default());
        before
            .transact_mut()
            .apply_update(yrs::Update::decode_v1(&full).unwrap())
            .unwrap();
    }
    // A big insert would pass the room quota: AUTH denied with the reason, then 4403.
    let big = "z".repeat(8_000);
    a.edit(move |t| t.get_or_insert_text("t").insert(t, 5, &big))
        .await;
    let denied = a
        .raw
        .recv_until(|m| matches!(m, Message::AuthDenied(_)))
        .await;
    let Message::AuthDenied(reason) = denied else {
        unreachable!()
    };
    assert!(reason.contains("room quota"), "{reason}");
    let closed = a.raw.expect_close().await;
    assert_eq!(closed.code, 4403, "{closed:?}");
    // Existing data is untouched, and a client holding that state still syncs.
    let b = SyncClient::connect_with(addr, "/rooms/q", yrs::Doc::new()).await;
    assert_eq!(text_of(&b.doc, "t"), "small");
    let mut again = SyncClient::connect_with(addr, "/rooms/q", before).await;
    assert_eq!(text_of(&again.doc, "t"), "small");
    // Its full-state SyncStep2 added nothing, so it was not refused: it can still write.
    again
        .edit_acked(|t| t.get_or_insert_text("t").insert(t, 0, "!"))
        .await;
    let (_, v) = get_json(addr, "/").await;
    assert_eq!(v["data"]["quota_refusals"], 1);
    // Over HTTP: 403 with the reason.
    let doc = yrs::Doc::with_client_id(77);
    let update = {
        let mut txn = doc.transact_mut();
        txn.get_or_insert_text("t")
            .insert(&mut txn, 0, &"w".repeat(8_000));
        txn.encode_update_v1()
    };
    let (status, body) = http_body(addr, "POST", "/rooms/q", &update).await;
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("room quota"));
    // The node quota counts every room together.
    for i in 0..3 {
        let mut c = SyncClient::connect(addr, &format!("n{i}")).await;
        let s = "n".repeat(3_000);
        c.edit_acked(move |t| t.get_or_insert_text("t").insert(t, 0, &s))
            .await;
    }
    let mut last = SyncClient::connect(addr, "n-last").await;
    let s = "n".repeat(3_000);
    last.edit(move |t| t.get_or_insert_text("t").insert(t, 0, &s))
        .await;
    let denied = last
        .raw
        .recv_until(|m| matches!(m, Message::AuthDenied(_)))
        .await;
    assert!(matches!(denied, Message::AuthDenied(r) if r.contains("node quota")));
    node.shutdown().await;
}
