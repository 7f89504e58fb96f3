//! The status feed `GET /ui/state` on a node with more rooms than it lists: at most
//! `ROOMS_SHOWN` rows (rooms with clients first), exact totals, and how many were left out;
//! with a store, the stored rooms counted without the feed listing the store.

use std::net::SocketAddr;

use super::value;
use crate::common::{get_json, http_body, poll_json, start, test_config, SyncClient};

const SHOWN: usize = ymesh::ui::ROOMS_SHOWN;
const ROOMS: usize = SHOWN + 5;

async fn create_rooms(addr: SocketAddr) {
    for i in 0..ROOMS {
        let update = {
            use yrs::{Text, Transact, WriteTxn};
            let doc = yrs::Doc::new();
            let mut t = doc.transact_mut();
            t.get_or_insert_text("t").insert(&mut t, 0, "x");
            t.encode_update_v1()
        };
        let (status, _) = http_body(addr, "POST", &format!("/rooms/room-{i:03}"), &update).await;
        assert_eq!(status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_lists_at_most_the_cap_with_exact_totals() {
    let cfg = ymesh::config::Config {
        memory: true,
        ..test_config()
    };
    let node = start(cfg).await;
    let addr = node.local_addr();
    create_rooms(addr).await;
    let _c = SyncClient::connect(addr, "room-104").await;
    let feed = poll_json(addr, "/ui/state", "the client counted", |v| {
        v["data"]["totals"]["clients"] == 1
    })
    .await;
    let data = &feed["data"];
    let rooms = data["rooms"].as_array().expect("rooms");
    assert_eq!(rooms.len(), SHOWN);
    assert_eq!(rooms[0]["name"], "room-104", "the room with a client first");
    assert_eq!(rooms[0]["connections"], 1);
    assert_eq!(
        data["totals"],
        serde_json::json!({
            "rooms_loaded": ROOMS,
            "rooms_stored": null,
            "rooms": ROOMS,
            "clients": 1,
            "rooms_shown": SHOWN,
            "rooms_omitted": ROOMS - SHOWN,
        })
    );
    // The metrics agree.
    let text = super::scrape(addr).await;
    assert_eq!(value(&text, "ymesh_rooms_loaded"), Some(ROOMS as f64));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_rooms_are_counted_for_the_feed_not_listed_per_poll() {
    let cfg = test_config();
    let node = start(cfg.clone()).await;
    create_rooms(node.local_addr()).await;
    node.shutdown().await;
    // Started again: the rooms are on disk, none in memory. The sampler counts them at
    // start; the feed shows the most recent ones and the count.
    let node = start(cfg).await;
    let addr = node.local_addr();
    let feed = poll_json(addr, "/ui/state", "the stored rooms counted", |v| {
        v["data"]["totals"]["rooms_stored"] == ROOMS
    })
    .await;
    let data = &feed["data"];
    let rooms = data["rooms"].as_array().expect("rooms");
    assert_eq!(rooms.len(), SHOWN);
    assert!(
        rooms
            .iter()
            .all(|r| r["stored"] == true && r["loaded"] == false && r["bytes"].as_u64() > Some(0)),
        "{rooms:?}"
    );
    assert_eq!(data["totals"]["rooms_loaded"], 0);
    assert_eq!(data["totals"]["rooms"], ROOMS);
    assert_eq!(data["totals"]["rooms_omitted"], ROOMS - SHOWN);
    // Most recently updated first.
    let times: Vec<u64> = rooms
        .iter()
        .filter_map(|r| r["updated_at_ms"].as_u64())
        .collect();
    assert_eq!(times.len(), SHOWN);
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    let (status, _) = get_json(addr, "/rooms?all=true").await;
    assert_eq!(status, 200, "GET /rooms?all=true still lists every room");
    node.shutdown().await;
}
