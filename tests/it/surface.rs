//! The node's surface: document API, route templates, embedding hooks, logs, precedence.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use serde_json::json;
use ymesh::room::Hooks;
use yrs::updates::decoder::Decode;
use yrs::{Array, Map, Text, Transact, WriteTxn};

fn sample_update() -> Vec<u8> {
    let doc = yrs::Doc::with_client_id(9);
    let mut txn = doc.transact_mut();
    txn.get_or_insert_text("title")
        .insert(&mut txn, 0, "Groceries");
    let map = txn.get_or_insert_map("meta");
    map.insert(&mut txn, "owner", "ann");
    map.insert(&mut txn, "count", 3);
    let list = txn.get_or_insert_array("items");
    list.insert(&mut txn, 0, "milk");
    list.insert(&mut txn, 1, "eggs");
    txn.encode_update_v1()
}

#[tokio::test]
async fn post_applies_and_broadcasts_and_get_renders_json() {
    let node = start(test_config()).await;
    let addr = node.local_addr();
    let mut watcher = SyncClient::connect(addr, "list").await;
    let (status, body) = http_body(addr, "POST", "/rooms/list", &sample_update()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["data"]["changed"], true);
    watcher
        .pump_until("broadcast", |d| text_of(d, "title") == "Groceries")
        .await;
    // The same update again changes nothing.
    let (_, body) = http_body(addr, "POST", "/rooms/list", &sample_update()).await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["data"]["changed"], false);
    // Roots the node only received over the wire are untyped: their type is inferred.
    let (status, v) = get_json(addr, "/rooms/list?format=json").await;
    assert_eq!(status, 200);
    assert_eq!(
        v["data"],
        json!({"title": "Groceries", "meta": {"owner": "ann", "count": 3}, "items": ["milk", "eggs"]})
    );
    // Binary form round-trips.
    let (status, bin) = http(addr, "GET", "/rooms/list").await;
    assert_eq!(status, 200);
    let doc = yrs::Doc::new();
    doc.transact_mut()
        .apply_update(yrs::Update::decode_v1(&bin).unwrap())
        .unwrap();
    assert_eq!(text_of(&doc, "title"), "Groceries");
    let (status, _) = get_json(addr, "/rooms/list?format=xml").await;
    assert_eq!(status, 400);
    node.shutdown().await;
}

#[tokio::test]
async fn typed_roots_render_by_type() {
    let node = start(test_config()).await;
    let room = node.room("typed").await.unwrap();
    room.with_doc(|doc| {
        let t = doc.get_or_insert_text("t");
        let m = doc.get_or_insert_map("m");
        let a = doc.get_or_insert_array("a");
        let _empty = doc.get_or_insert_map("empty");
        let mut txn = doc.transact_mut();
        t.insert(&mut txn, 0, "x");
        m.insert(&mut txn, "k", true);
        a.push_back(&mut txn, 1);
    });
    assert_eq!(
        room.to_json(),
        json!({"t": "x", "m": {"k": true}, "a": [1], "empty": {}})
    );
    node.shutdown().await;
}

#[tokio::test]
async fn bad_posts_are_400_and_create_nothing() {
    let node = start(test_config()).await;
    let addr = node.local_addr();
    let (status, body) = http_body(addr, "POST", "/rooms/junk", b"\xff\xfe garbage").await;
    assert_eq!(status, 400);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not a valid Yjs"));
    assert!(node.rooms().get("junk").is_none());
    let (status, _) = get_json(addr, "/rooms/junk").await;
    assert_eq!(status, 404);
    let (status, _) = http_body(addr, "POST", "/rooms/a%00b", &sample_update()).await;
    assert_eq!(status, 400);
    node.shutdown().await;
}

#[tokio::test]
async fn route_templates_are_configurable() {
    let mut cfg = test_config();
    cfg.routes = vec!["/sync/v1/{room}".into()];
    let node = start(cfg).await;
    let addr = node.local_addr();
    let mut a = SyncClient::connect_with(addr, "/sync/v1/doc", yrs::Doc::new()).await;
    a.edit_acked(|t| t.get_or_insert_text("t").insert(t, 0, "via template"))
        .await;
    // The document API still lives at /rooms/{room} ...
    let (status, v) = get_json(addr, "/rooms/doc?format=json").await;
    assert_eq!(status, 200);
    assert_eq!(v["data"]["t"], "via template");
    // ... but it no longer takes upgrades, and the default templates are gone.
    for path in ["/rooms/doc", "/sync/doc", "/workspaces/doc/sync"] {
        let url = format!("ws://{addr}{path}");
        assert!(
            tokio_tungstenite::connect_async(url).await.is_err(),
            "{path} still upgrades"
        );
    }
    node.shutdown().await;
}

#[tokio::test]
async fn hooks_hear_created_changed_and_evicted() {
    let events = Arc::new(Mutex::new(Vec::<String>::new()));
    let (e1, e2, e3) = (events.clone(), events.clone(), events.clone());
    let hooks = Hooks::new()
        .on_room_created(move |r| e1.lock().unwrap().push(format!("created {r}")))
        .on_room_changed(move |r, u| {
            assert!(yrs::Update::decode_v1(u).is_ok());
            e2.lock().unwrap().push(format!("changed {r}"))
        })
        .on_room_evicted(move |r| e3.lock().unwrap().push(format!("evicted {r}")));
    let mut cfg = test_config();
    cfg.idle_timeout = Duration::from_millis(200);
    let node = ymesh::Node::start_with_hooks(cfg, hooks).await.unwrap();
    let mut c = SyncClient::connect(node.local_addr(), "h").await;
    c.edit_acked(|t| t.get_or_insert_text("t").insert(t, 0, "x"))
        .await;
    // An update that changes nothing is not a change.
    c.edit_acked(|_| {}).await;
    drop(c);
    let ev = events.clone();
    wait_until("eviction hook", || {
        ev.lock().unwrap().iter().any(|e| e == "evicted h")
    })
    .await;
    assert_eq!(
        *events.lock().unwrap(),
        vec!["created h", "changed h", "evicted h"]
    );
    node.shutdown().await;
}

#[tokio::test]
async fn a_panicking_hook_does_not_hurt_the_session() {
    let hooks = Hooks::new().on_room_changed(|_, _| panic!("hook bug"));
    let node = ymesh::Node::start_with_hooks(test_config(), hooks)
        .await
        .unwrap();
    let mut a = SyncClient::connect(node.local_addr(), "p").await;
    a.edit_acked(|t| t.get_or_insert_text("t").insert(t, 0, "1"))
        .await;
    a.edit_acked(|t| t.get_or_insert_text("t").insert(t, 1, "2"))
        .await;
    let late = SyncClient::connect(node.local_addr(), "p").await;
    assert_eq!(text_of(&late.doc, "t"), "12");
    node.shutdown().await;
}
