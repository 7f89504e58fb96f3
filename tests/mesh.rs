//! Server-to-server replication between real nodes on loopback (mDNS is not involved).

mod common;

use std::time::{Duration, Instant};

use common::*;
use ymesh::config::Config;
use ymesh::mesh::PeerConfig;
use yrs::{Map, Text, Transact, WriteTxn};

fn peer(node: &ymesh::Node) -> PeerConfig {
    PeerConfig {
        url: format!("ws://{}", node.local_addr()),
        node_id: None,
    }
}

fn dialing(peers: Vec<PeerConfig>) -> Config {
    let mut cfg = test_config();
    cfg.peers = peers;
    cfg
}

async fn wait_linked(node: &ymesh::Node, other: &ymesh::Node) {
    let mesh = node.mesh().clone();
    let id = other.node_id().to_string();
    wait_until("link up", || mesh.connected_peers().contains(&id)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_replicate_both_ways_and_converge() {
    let b = start(test_config()).await;
    let a = start(dialing(vec![peer(&b)])).await;
    wait_linked(&a, &b).await;
    wait_linked(&b, &a).await;
    let mut on_a = SyncClient::connect(a.local_addr(), "notes").await;
    let mut on_b = SyncClient::connect(b.local_addr(), "notes").await;
    on_a.edit(|t| t.get_or_insert_text("t").insert(t, 0, "from A"))
        .await;
    on_b.pump_until("A's edit on B", |d| text_of(d, "t") == "from A")
        .await;
    on_b.edit(|t| {
        t.get_or_insert_map("m").insert(t, "b", "from B");
    })
    .await;
    on_a.pump_until("B's edit on A", |d| {
        d.get_or_insert_map("m").len(&d.transact()) == 1
    })
    .await;
    // Concurrent edits on both sides converge.
    on_a.edit(|t| t.get_or_insert_text("t").insert(t, 0, "1"))
        .await;
    on_b.edit(|t| t.get_or_insert_text("t").insert(t, 0, "2"))
        .await;
    on_a.pump_until("converged on A", |d| text_of(d, "t").len() == 8)
        .await;
    on_b.pump_until("converged on B", |d| text_of(d, "t").len() == 8)
        .await;
    assert_eq!(text_of(&on_a.doc, "t"), text_of(&on_b.doc, "t"));
    // Status: A dialed B (config), B sees an inbound link; both know the other's id.
    let (_, peers) = get_json(a.local_addr(), "/peers").await;
    let p = &peers["data"][0];
    assert_eq!(p["state"], "connected");
    assert_eq!(p["source"], "config");
    assert_eq!(p["node_id"], b.node_id());
    assert!(p["sent"]["sync"]["messages"].as_u64().unwrap() > 0);
    assert!(p["received"]["sync"]["bytes"].as_u64().unwrap() > 0);
    let (_, peers) = get_json(b.local_addr(), "/peers").await;
    assert_eq!(peers["data"][0]["source"], "inbound");
    assert_eq!(peers["data"][0]["node_id"], a.node_id());
    let (_, root) = get_json(a.local_addr(), "/").await;
    assert_eq!(root["data"]["node_id"], a.node_id());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_converges_through_the_middle_node() {
    let a = start(test_config()).await;
    let c = start(test_config()).await;
    let b = start(dialing(vec![peer(&a), peer(&c)])).await;
    wait_linked(&b, &a).await;
    wait_linked(&b, &c).await;
    let mut on_a = SyncClient::connect(a.local_addr(), "line").await;
    let mut on_c = SyncClient::connect(c.local_addr(), "line").await;
    on_a.edit(|t| t.get_or_insert_text("t").insert(t, 0, "A"))
        .await;
    on_c.pump_until("A's edit reaches C via B", |d| text_of(d, "t") == "A")
        .await;
    on_c.edit(|t| t.get_or_insert_text("t").insert(t, 1, "C"))
        .await;
    on_a.pump_until("C's edit reaches A via B", |d| text_of(d, "t") == "AC")
        .await;
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_from_a_partition_pulls_new_rooms_and_pushes_offline_edits() {
    let a = start(test_config()).await;
    let mut c_cfg = dialing(vec![peer(&a)]);
    let c_dir = c_cfg.data_dir.clone();
    let c = start(c_cfg).await;
    wait_linked(&c, &a).await;
    let mut on_a = SyncClient::connect(a.local_addr(), "shared").await;
    on_a.edit_acked(|t| t.get_or_insert_text("t").insert(t, 0, "before"))
        .await;
    let mut on_c = SyncClient::connect(c.local_addr(), "shared").await;
    on_c.pump_until("shared on C", |d| text_of(d, "t") == "before")
        .await;
    // C edits while connected, then goes away.
    on_c.edit_acked(|t| {
        t.get_or_insert_map("m").insert(t, "c", "online");
    })
    .await;
    drop(on_c);
    c.shutdown().await;
    // While C is down: A edits the existing room and creates a new one; C's last edit
    // already reached A.
    on_a.edit_acked(|t| {
        let text = t.get_or_insert_text("t");
        let len = text.len(t);
        text.insert(t, len, " after");
    })
    .await;
    let mut fresh = SyncClient::connect(a.local_addr(), "created-while-away").await;
    fresh
        .edit_acked(|t| t.get_or_insert_text("t").insert(t, 0, "new room"))
        .await;
    // C comes back on its data directory; no client opens the new room on C.
    c_cfg = dialing(vec![peer(&a)]);
    c_cfg.data_dir = c_dir;
    let c = start(c_cfg).await;
    wait_linked(&c, &a).await;
    let addr = c.local_addr();
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, v) = get_json(addr, "/rooms?all=true").await;
        let stored = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "created-while-away" && r["stored"] == true);
        if stored {
            break;
        }
        assert!(Instant::now() < deadline, "new room pulled and stored: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, v) = get_json(addr, "/rooms/created-while-away?format=json").await;
    assert_eq!(v["data"]["t"], "new room");
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, v) = get_json(addr, "/rooms/shared?format=json").await;
        if v["data"]["t"] == "before after" {
            assert_eq!(v["data"]["m"]["c"], "online");
            break;
        }
        assert!(Instant::now() < deadline, "existing room caught up: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_edits_are_pushed_when_the_link_comes_back() {
    let a = start(test_config()).await;
    let mut b_cfg = test_config();
    let b_dir = b_cfg.data_dir.clone();
    let b = start(b_cfg).await;
    // B edits offline (no peer configured yet).
    let mut on_b = SyncClient::connect(b.local_addr(), "offline").await;
    on_b.edit_acked(|t| t.get_or_insert_text("t").insert(t, 0, "written offline"))
        .await;
    drop(on_b);
    b.shutdown().await;
    b_cfg = dialing(vec![peer(&a)]);
    b_cfg.data_dir = b_dir;
    let b = start(b_cfg).await;
    wait_linked(&b, &a).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, v) = get_json(a.local_addr(), "/rooms/offline?format=json").await;
        if status == 200 && v["data"]["t"] == "written offline" {
            break;
        }
        assert!(Instant::now() < deadline, "offline edit pushed: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_refuses_unknown_peers_with_a_reason() {
    let mut b_cfg = test_config();
    b_cfg.mesh_secret = Some("right".into());
    let b = start(b_cfg).await;
    let mut a_cfg = dialing(vec![peer(&b)]);
    a_cfg.mesh_secret = Some("wrong".into());
    let a = start(a_cfg).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, v) = get_json(a.local_addr(), "/peers").await;
        let p = &v["data"][0];
        if p["state"] == "refused" {
            assert!(p["reason"].as_str().unwrap().contains("secret"), "{p}");
            break;
        }
        assert!(Instant::now() < deadline, "refused in status: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(a.mesh().connected_peers().is_empty());
    // With the right secret the link comes up.
    let mut c_cfg = dialing(vec![peer(&b)]);
    c_cfg.mesh_secret = Some("right".into());
    let c = start(c_cfg).await;
    wait_linked(&c, &b).await;
    a.shutdown().await;
    b.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_address_that_is_this_node_is_not_dialed_again() {
    let cfg = test_config();
    // Bind first to learn the port, then point the node at itself.
    let probe = start(cfg).await;
    let port = probe.local_addr().port();
    probe.shutdown().await;
    let mut cfg = test_config();
    cfg.port = port;
    cfg.peers = vec![PeerConfig {
        url: format!("ws://127.0.0.1:{port}"),
        node_id: None,
    }];
    let node = start(cfg).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, v) = get_json(node.local_addr(), "/peers").await;
        if v["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["state"] == "is_self")
        {
            break;
        }
        assert!(Instant::now() < deadline, "self-connection detected: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.shutdown().await;
}

/// Offline catch-up of many rooms; `YMESH_CATCHUP_ROOMS` overrides the count (1,000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_catch_up_of_many_rooms() {
    let rooms: usize = std::env::var("YMESH_CATCHUP_ROOMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let a = start(test_config()).await;
    for i in 0..rooms {
        let doc = yrs::Doc::with_client_id(1 + i as u64);
        let update = {
            let mut txn = doc.transact_mut();
            txn.get_or_insert_text("t")
                .insert(&mut txn, 0, &format!("room {i}"));
            txn.encode_update_v1()
        };
        let (status, _) = http_body(a.local_addr(), "POST", &format!("/rooms/r{i}"), &update).await;
        assert_eq!(status, 200);
    }
    let started = Instant::now();
    let c = start(dialing(vec![peer(&a)])).await;
    let store = c.store().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = store.list().await.unwrap().len();
        if n == rooms {
            break;
        }
        assert!(Instant::now() < deadline, "caught up {n} of {rooms} rooms");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();
    eprintln!(
        "offline catch-up: {rooms} rooms stored on the new node in {:.2} s",
        took.as_secs_f64()
    );
    let (_, v) = get_json(
        c.local_addr(),
        &format!("/rooms/r{}?format=json", rooms - 1),
    )
    .await;
    assert_eq!(v["data"]["t"], format!("room {}", rooms - 1));
    a.shutdown().await;
    c.shutdown().await;
}
