//! Server-to-server replication between real nodes on loopback (mDNS is not involved).
//! `preauth`: strangers on `/_mesh` (the pre-authentication budget, the handshake deadline).
//! `approval`: who may link (secret, approval, denial, pending peers get nothing).
//! `slow_peer`: a peer that stops reading is cut off at the write deadline.
//! `status`: what `/peers` says about a peer that is down and comes back.
//! `channel`: attacks on the secure channel (relay, reflection, replay, tampering, offline
//! guessing of the mesh secret).
//! `p2p`: links over libp2p (multiaddr peers, admission over the stream's binding).

mod approval;
mod channel;
mod p2p;
mod preauth;
mod slow_peer;
mod status;

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::common::*;
use ymesh::mesh::PeerConfig;
use yrs::{Map, Text, Transact, WriteTxn};

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
    // Per room: synced once B acknowledged A's updates (acks are coalesced, about twice a
    // second), and when it last crossed the link.
    let peers = poll_json(a.local_addr(), "/peers", "notes synced with B", |v| {
        v["data"][0]["rooms"].as_array().is_some_and(|rs| {
            rs.iter()
                .any(|r| r["name"] == "notes" && r["status"] == "synced")
        })
    })
    .await;
    let p = &peers["data"][0];
    let notes = p["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "notes")
        .cloned()
        .unwrap();
    assert_eq!(notes["synced"], true, "{p}");
    assert!(notes["last_exchange_ms"].as_u64().unwrap() > 0, "{p}");
    let (_, peers) = get_json(b.local_addr(), "/peers").await;
    assert_eq!(peers["data"][0]["source"], "inbound");
    assert_eq!(peers["data"][0]["node_id"], a.node_id());
    let (_, root) = get_json(a.local_addr(), "/").await;
    assert_eq!(root["data"]["node_id"], a.node_id());
    // A stops: B cannot dial it back (A dialed in), but still lists it, offline.
    let a_id = a.node_id().to_string();
    a.shutdown().await;
    let peers = poll_json(b.local_addr(), "/peers", "A listed as offline", |v| {
        v["data"][0]["state"] == "offline"
    })
    .await;
    let rows = peers["data"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{peers}");
    assert_eq!(rows[0]["node_id"], a_id.as_str(), "{peers}");
    assert_eq!(rows[0]["source"], "inbound", "{peers}");
    assert!(rows[0]["last_error"].is_string(), "{peers}");
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
    // C's status says the pulled room is synced with A.
    poll_json(addr, "/peers", "room synced in C's status", |v| {
        v["data"][0]["rooms"].as_array().is_some_and(|rooms| {
            rooms
                .iter()
                .any(|r| r["name"] == "created-while-away" && r["synced"] == true)
        })
    })
    .await;
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
async fn a_peer_address_that_is_this_node_is_not_dialed_again() {
    // Bind first to learn the port, then point the node at itself.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut cfg = test_config();
    cfg.peers = vec![PeerConfig {
        url: format!("ws://127.0.0.1:{port}"),
        ..PeerConfig::default()
    }];
    let node = ymesh::Node::start_on(cfg, ymesh::room::Hooks::new(), Some(listener))
        .await
        .unwrap();
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

/// Starts the binary on `dir` dialing `peer`; returns the child and its port.
fn spawn_node(dir: &Path, peer: &str) -> (Child, u16) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ymesh"));
    cmd.args(["serve", "--port", "0", "--peer", peer, "--data-dir"])
        .arg(dir);
    let (child, _, port) = spawn_until_ready(cmd);
    (child, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_with_sigkill_heals_when_it_returns() {
    let a = start(test_config()).await;
    let peer_a = format!("ws://{}", a.local_addr());
    let c_dir = fresh_dir("killed-c");
    let (mut c, port) = spawn_node(&c_dir, &peer_a);
    let c_addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let mut on_a = SyncClient::connect(a.local_addr(), "shared").await;
    on_a.edit_acked(|t| t.get_or_insert_text("t").insert(t, 0, "before"))
        .await;
    poll_json(
        c_addr,
        "/rooms/shared?format=json",
        "shared reaches C",
        |v| v["data"]["t"] == "before",
    )
    .await;
    // C is killed; A edits the existing room and creates a new one meanwhile.
    c.kill().unwrap();
    c.wait().unwrap();
    on_a.edit_acked(|t| {
        let text = t.get_or_insert_text("t");
        let len = text.len(t);
        text.insert(t, len, " after");
    })
    .await;
    let mut fresh = SyncClient::connect(a.local_addr(), "made-while-c-was-dead").await;
    fresh
        .edit_acked(|t| t.get_or_insert_text("t").insert(t, 0, "new"))
        .await;
    // C restarts on its directory; no client opens anything on C.
    let (mut c, port) = spawn_node(&c_dir, &peer_a);
    let c_addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    poll_json(c_addr, "/rooms?all=true", "new room listed on C", |v| {
        v["data"].as_array().is_some_and(|rooms| {
            rooms
                .iter()
                .any(|r| r["name"] == "made-while-c-was-dead" && r["stored"] == true)
        })
    })
    .await;
    poll_json(
        c_addr,
        "/rooms/shared?format=json",
        "both edits on C",
        |v| v["data"]["t"] == "before after",
    )
    .await;
    let (_, v) = get_json(c_addr, "/rooms/made-while-c-was-dead?format=json").await;
    assert_eq!(v["data"]["t"], "new");
    c.kill().unwrap();
    c.wait().unwrap();
    a.shutdown().await;
}

fn sync_sent(nodes: &[&ymesh::Node]) -> u64 {
    let mut total = 0;
    for n in nodes {
        for other in nodes {
            if let Some(c) = n.mesh().counters_of(other.node_id()) {
                total += c.sync_messages_sent();
            }
        }
    }
    total
}

/// Waits until the mesh-wide count of sync messages stops moving (bounded).
async fn quiet_count(nodes: &[&ymesh::Node]) -> u64 {
    let deadline = Instant::now() + WAIT;
    let mut last = sync_sent(nodes);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = sync_sent(nodes);
        if now == last {
            return now;
        }
        assert!(Instant::now() < deadline, "mesh never went quiet");
        last = now;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_triangle_carries_one_edit_a_bounded_number_of_times() {
    let a = start(test_config()).await;
    let b = start(dialing(vec![peer(&a)])).await;
    let c = start(dialing(vec![peer(&a), peer(&b)])).await;
    wait_linked(&b, &a).await;
    wait_linked(&c, &a).await;
    wait_linked(&c, &b).await;
    let mut on_a = SyncClient::connect(a.local_addr(), "tri").await;
    let mut on_b = SyncClient::connect(b.local_addr(), "tri").await;
    let mut on_c = SyncClient::connect(c.local_addr(), "tri").await;
    on_a.edit(|t| t.get_or_insert_text("t").insert(t, 0, "warm"))
        .await;
    on_b.pump_until("b", |d| text_of(d, "t") == "warm").await;
    on_c.pump_until("c", |d| text_of(d, "t") == "warm").await;
    let nodes = [&a, &b, &c];
    let before = quiet_count(&nodes).await;
    on_b.edit(|t| t.get_or_insert_text("t").insert(t, 0, "1"))
        .await;
    on_a.pump_until("a", |d| text_of(d, "t") == "1warm").await;
    on_c.pump_until("c", |d| text_of(d, "t") == "1warm").await;
    let after = quiet_count(&nodes).await;
    // B sends to A and C; A and C each forward once to the other; the copies that change
    // nothing stop there. At most 4 messages, never a storm.
    let used = after - before;
    assert!(
        (2..=4).contains(&used),
        "one edit crossed the triangle {used} times"
    );
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_on_two_nodes_converges_with_bounded_traffic() {
    let a = start(test_config()).await;
    let b = start(dialing(vec![peer(&a)])).await;
    wait_linked(&b, &a).await;
    // One document, one provider per node (the phone that keeps both open).
    let doc = yrs::Doc::new();
    let mut via_a = SyncClient::connect_with(a.local_addr(), "/rooms/phone", doc.clone()).await;
    let mut via_b = SyncClient::connect_with(b.local_addr(), "/rooms/phone", doc.clone()).await;
    let nodes = [&a, &b];
    let before = quiet_count(&nodes).await;
    let update = {
        let mut txn = doc.transact_mut();
        txn.get_or_insert_text("t").insert(&mut txn, 0, "edit");
        txn.encode_update_v1()
    };
    via_a
        .raw
        .send(ymesh::protocol::encode_sync_update(&update))
        .await;
    via_b
        .raw
        .send(ymesh::protocol::encode_sync_update(&update))
        .await;
    let mut other = SyncClient::connect(b.local_addr(), "phone").await;
    other
        .pump_until("edit everywhere", |d| text_of(d, "t") == "edit")
        .await;
    let _ = &mut via_b;
    let after = quiet_count(&nodes).await;
    assert!(
        after - before <= 2,
        "{} messages for one edit",
        after - before
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_that_dial_each_other_keep_one_link() {
    // Bind B's listener first so A can dial it, then start B on it (no port-reuse race).
    let b_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b_port = b_listener.local_addr().unwrap().port();
    let a = start(dialing(vec![PeerConfig {
        url: format!("ws://127.0.0.1:{b_port}"),
        ..PeerConfig::default()
    }]))
    .await;
    let b = ymesh::Node::start_on(
        dialing(vec![peer(&a)]),
        ymesh::room::Hooks::new(),
        Some(b_listener),
    )
    .await
    .unwrap();
    wait_linked(&a, &b).await;
    wait_linked(&b, &a).await;
    // Give both supervisors time to have dialed; exactly one link remains on each side.
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, pa) = get_json(a.local_addr(), "/peers").await;
        let (_, pb) = get_json(b.local_addr(), "/peers").await;
        let live = |v: &serde_json::Value| {
            v["data"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["state"] == "connected" && p["last_error"].is_null())
                .count()
        };
        if live(&pa) + live(&pb) == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "one link: A {pa} B {pb}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut on_a = SyncClient::connect(a.local_addr(), "both").await;
    let mut on_b = SyncClient::connect(b.local_addr(), "both").await;
    on_a.edit(|t| t.get_or_insert_text("t").insert(t, 0, "x"))
        .await;
    on_b.pump_until("x on B", |d| text_of(d, "t") == "x").await;
    a.shutdown().await;
    b.shutdown().await;
}

fn awareness_of(msg: &ymesh::protocol::Message, client: u64) -> Option<String> {
    use yrs::updates::decoder::Decode;
    let ymesh::protocol::Message::Awareness(p) = msg else {
        return None;
    };
    let u = yrs::sync::awareness::AwarenessUpdate::decode_v1(p).ok()?;
    u.clients
        .get(&yrs::ClientID::new(client))
        .map(|e| e.json.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_crosses_the_mesh_and_leaves_with_the_client_or_the_link() {
    use yrs::updates::encoder::Encode;
    let a = start(test_config()).await;
    let b = start(dialing(vec![peer(&a)])).await;
    wait_linked(&b, &a).await;
    let mut watcher = RawClient::connect(b.local_addr(), "/rooms/pres").await;
    let mut laptop = RawClient::connect(a.local_addr(), "/rooms/pres").await;
    let mut clients = std::collections::HashMap::new();
    clients.insert(
        yrs::ClientID::new(4242),
        yrs::sync::awareness::AwarenessUpdateEntry {
            clock: 1,
            json: r#"{"cursor":7}"#.into(),
        },
    );
    let update = yrs::sync::awareness::AwarenessUpdate { clients }.encode_v1();
    laptop
        .send(ymesh::protocol::encode_awareness(&update))
        .await;
    let seen = watcher
        .recv_until(|m| awareness_of(m, 4242).is_some_and(|s| s != "null"))
        .await;
    assert_eq!(awareness_of(&seen, 4242).unwrap(), r#"{"cursor":7}"#);
    // The laptop leaves: its presence is removed on B too.
    drop(laptop);
    watcher
        .recv_until(|m| awareness_of(m, 4242).as_deref() == Some("null"))
        .await;
    // Presence relayed over a link goes when the link goes.
    let mut laptop = RawClient::connect(a.local_addr(), "/rooms/pres").await;
    let mut clients = std::collections::HashMap::new();
    clients.insert(
        yrs::ClientID::new(4343),
        yrs::sync::awareness::AwarenessUpdateEntry {
            clock: 1,
            json: r#"{"cursor":9}"#.into(),
        },
    );
    let update = yrs::sync::awareness::AwarenessUpdate { clients }.encode_v1();
    laptop
        .send(ymesh::protocol::encode_awareness(&update))
        .await;
    watcher
        .recv_until(|m| awareness_of(m, 4343).is_some_and(|s| s != "null"))
        .await;
    a.shutdown().await;
    watcher
        .recv_until(|m| awareness_of(m, 4343).as_deref() == Some("null"))
        .await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_policy_keeps_other_rooms_off_a_link_both_ways() {
    let b = start(test_config()).await;
    let mut cfg = test_config();
    cfg.peers = vec![PeerConfig {
        share: ymesh::mesh::SharePolicy::Globs(vec!["team-*".into(), "exact".into()]),
        ..peer(&b)
    }];
    let a = start(cfg).await;
    wait_linked(&a, &b).await;
    for (node, room, text) in [
        (&a, "team-1", "shared from A"),
        (&a, "private-a", "A only"),
        (&b, "exact", "shared from B"),
        (&b, "private-b", "B only"),
    ] {
        let mut c = SyncClient::connect(node.local_addr(), room).await;
        c.edit_acked(move |t| t.get_or_insert_text("t").insert(t, 0, text))
            .await;
    }
    poll_json(
        b.local_addr(),
        "/rooms/team-1?format=json",
        "team-1 on B",
        |v| v["data"]["t"] == "shared from A",
    )
    .await;
    poll_json(
        a.local_addr(),
        "/rooms/exact?format=json",
        "exact on A",
        |v| v["data"]["t"] == "shared from B",
    )
    .await;
    // The unshared rooms never cross, in either direction (also not after a reconnect's
    // manifest exchange, which has happened by now for the shared ones).
    let (status, _) = get_json(b.local_addr(), "/rooms/private-a").await;
    assert_eq!(status, 404);
    let (status, _) = get_json(a.local_addr(), "/rooms/private-b").await;
    assert_eq!(status, 404);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_made_while_apart_crosses_even_after_a_restart() {
    // A digest counts insertions only: a room whose only change while apart was a deletion
    // is found through the peer's change marker, which is kept on disk.
    let mut a_cfg = test_config();
    let a_dir = a_cfg.data_dir.clone();
    let a = start(a_cfg).await;
    let mut b_cfg = dialing(vec![peer(&a)]);
    let b_dir = b_cfg.data_dir.clone();
    let b = start(b_cfg).await;
    wait_linked(&b, &a).await;
    let mut on_a = SyncClient::connect(a.local_addr(), "trim").await;
    on_a.edit_acked(|t| t.get_or_insert_text("t").insert(t, 0, "abc"))
        .await;
    poll_json(b.local_addr(), "/rooms/trim?format=json", "abc on B", |v| {
        v["data"]["t"] == "abc"
    })
    .await;
    b.shutdown().await;
    // While apart, A deletes a character, then A restarts (its in-memory state is gone).
    on_a.edit_acked(|t| t.get_or_insert_text("t").remove_range(t, 1, 1))
        .await;
    drop(on_a);
    a.shutdown().await;
    a_cfg = test_config();
    a_cfg.data_dir = a_dir;
    let a = start(a_cfg).await;
    b_cfg = dialing(vec![peer(&a)]);
    b_cfg.data_dir = b_dir;
    let b = start(b_cfg).await;
    wait_linked(&b, &a).await;
    poll_json(
        b.local_addr(),
        "/rooms/trim?format=json",
        "the deletion on B",
        |v| v["data"]["t"] == "ac",
    )
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

/// A plain y-websocket server (not a ymesh node) that answers every SyncStep1 with an
/// empty SyncStep2 and counts the SyncStep1s it gets.
async fn plain_server(
    step1s: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> std::net::SocketAddr {
    use axum::extract::ws::{Message as AMessage, WebSocketUpgrade};
    use axum::routing::get;
    use ymesh::protocol::{self, Message, SyncMessage};
    let app = axum::Router::new()
        .route("/", get(|| async { "not ymesh" }))
        .route(
            "/{room}",
            get(move |ws: WebSocketUpgrade| {
                let step1s = step1s.clone();
                async move {
                    ws.on_upgrade(move |mut socket| async move {
                        while let Some(Ok(msg)) = socket.recv().await {
                            let AMessage::Binary(frame) = msg else {
                                continue;
                            };
                            let Ok(msgs) = protocol::decode_frame(frame) else {
                                return;
                            };
                            for m in msgs {
                                if let Message::Sync(SyncMessage::Step1(_)) = m {
                                    step1s.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                    let empty = [0u8, 0];
                                    let reply = protocol::encode_sync_step2(&empty);
                                    if socket.send(AMessage::Binary(reply)).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                    })
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_to_a_plain_server_probes_it_with_sync_step1s() {
    // The probe (every 15 s) keeps the link alive-checked; the first comes with the link.
    let step1s = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let addr = plain_server(step1s.clone()).await;
    let mut cfg = test_config();
    cfg.peers = vec![ymesh::mesh::PeerConfig {
        url: format!("ws://{addr}"),
        rooms: vec!["plain".into()],
        ..ymesh::mesh::PeerConfig::default()
    }];
    let node = start(cfg).await;
    let deadline = Instant::now() + Duration::from_secs(40);
    while step1s.load(std::sync::atomic::Ordering::SeqCst) < 2 {
        assert!(
            Instant::now() < deadline,
            "a second SyncStep1 (the probe) reached the plain server"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node.shutdown().await;
}

/// The probe of a configured peer's `GET /` tells "cannot be reached" from "answered, but
/// not as a ymesh node": a peer that is down is dialed again later (backing off with the
/// connect error), not declared a foreign server; one that answers 404 to `GET /` is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_peer_is_not_taken_for_a_foreign_server() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let down = closed.local_addr().unwrap();
    drop(closed);
    // Answers 404 to everything.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let web = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, axum::Router::new()).await;
    });
    let node = start(dialing(vec![
        PeerConfig {
            url: format!("ws://{down}"),
            ..PeerConfig::default()
        },
        PeerConfig {
            url: format!("ws://{web}"),
            ..PeerConfig::default()
        },
    ]))
    .await;
    let row = |v: &serde_json::Value, addr: std::net::SocketAddr| {
        v.as_array()
            .into_iter()
            .flatten()
            .find(|p| {
                p["address"]
                    .as_str()
                    .is_some_and(|a| a.contains(&addr.to_string()))
            })
            .cloned()
            .unwrap_or_default()
    };
    let v = poll_json(node.local_addr(), "/peers", "both peers tried", |v| {
        row(&v["data"], down)["last_error"].is_string()
            && row(&v["data"], web)["last_error"].is_string()
    })
    .await;
    let (down_row, web_row) = (row(&v["data"], down), row(&v["data"], web));
    assert_ne!(down_row["state"], "refused", "{down_row}");
    let error = down_row["last_error"].as_str().unwrap_or_default();
    assert!(!error.contains("not a ymesh node"), "{down_row}");
    assert_eq!(web_row["state"], "refused", "{web_row}");
    assert!(
        web_row["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("not a ymesh node")),
        "{web_row}"
    );
    node.shutdown().await;
}
