//! `GET /metrics` and the status page's feed `GET /ui/state`: what they count, that they
//! show the same link states and per-room sync status as `GET /peers`, and that they sit
//! behind the node's access rules (client token, origins) while the static page does not
//! need a token. `limits`: every refusal and limit hit counted; `feed`: the feed's room
//! totals and its capped room list.

mod feed;
mod limits;

use std::net::SocketAddr;
use std::time::Duration;

use ymesh::config::Config;
use ymesh::net::Request;
use yrs::{Text, WriteTxn};

use crate::common::{
    client, dialing, get_json, peer, poll_json, start, test_config, wait_linked, wait_until,
    SyncClient, WAIT,
};

/// `GET /metrics` (with `token` as a bearer when given): status, content type, body.
async fn scrape_with(addr: SocketAddr, token: Option<&str>) -> (u16, String, String) {
    let mut req = Request::get("/metrics");
    if let Some(t) = token {
        req = req.header("authorization", &format!("Bearer {t}"));
    }
    let resp = client(addr).send(req).await.expect("an answer");
    (
        resp.status,
        resp.content_type().unwrap_or_default().to_string(),
        String::from_utf8_lossy(&resp.body).into_owned(),
    )
}

async fn scrape(addr: SocketAddr) -> String {
    let (status, _, body) = scrape_with(addr, None).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of one series (`name{labels}` exactly as exposed), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Scrapes until `series` satisfies `ok` (or `WAIT` passes); returns the last scrape.
async fn scrape_until(addr: SocketAddr, series: &str, ok: impl Fn(f64) -> bool) -> String {
    scrape_until_within(addr, series, ok, WAIT).await
}

/// Scrapes until `series` satisfies `ok` (or `within` passes); returns the last scrape.
async fn scrape_until_within(
    addr: SocketAddr,
    series: &str,
    ok: impl Fn(f64) -> bool,
    within: Duration,
) -> String {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let text = scrape(addr).await;
        if value(&text, series).is_some_and(&ok) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} never as wanted:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_client_edit_is_counted_by_type_and_its_echo_timed() {
    let node = start(test_config()).await;
    let addr = node.local_addr();
    let mut c = SyncClient::connect(addr, "counted").await;
    c.edit_acked(|txn| {
        let t = txn.get_or_insert_text("t");
        t.insert(txn, 0, "hello");
    })
    .await;

    let (status, content_type, text) = scrape_with(addr, None).await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(text.ends_with("# EOF\n"), "the exposition is complete");
    let at_least = |series: &str, min: f64| {
        let v = value(&text, series).unwrap_or_else(|| panic!("{series} missing:\n{text}"));
        assert!(v >= min, "{series} = {v}, wanted at least {min}");
    };
    at_least(r#"ymesh_client_connections{route="/rooms/{room}"}"#, 1.0);
    at_least(
        r#"ymesh_client_connections_opened_total{route="/rooms/{room}"}"#,
        1.0,
    );
    at_least(r#"ymesh_connections{kind="client"}"#, 1.0);
    at_least(
        r#"ymesh_client_messages_total{direction="in",type="sync_step1"}"#,
        1.0,
    );
    at_least(
        r#"ymesh_client_messages_total{direction="in",type="sync_update"}"#,
        1.0,
    );
    at_least(
        r#"ymesh_client_messages_total{direction="in",type="sync_status"}"#,
        1.0,
    );
    at_least(
        r#"ymesh_client_messages_total{direction="out",type="sync_step2"}"#,
        1.0,
    );
    at_least(
        r#"ymesh_client_messages_total{direction="out",type="sync_status"}"#,
        1.0,
    );
    at_least(
        r#"ymesh_client_bytes_total{direction="in",type="sync_update"}"#,
        5.0,
    );
    at_least("ymesh_updates_applied_total", 1.0);
    at_least("ymesh_sync_status_ack_seconds_count", 1.0);
    at_least("ymesh_rooms_loaded", 1.0);
    at_least("ymesh_store_commits_total", 1.0);
    at_least("ymesh_store_appends_total", 1.0);
    at_least("ymesh_store_commit_seconds_count", 1.0);
    at_least("ymesh_store_commit_batch_size_count", 1.0);
    assert_eq!(
        value(
            &text,
            r#"ymesh_client_messages_total{direction="in",type="other"}"#
        ),
        Some(0.0),
        "every frame of a stock client has a known type"
    );

    // The connection closes: its route's gauge goes back to zero.
    drop(c);
    scrape_until(
        addr,
        r#"ymesh_client_connections{route="/rooms/{room}"}"#,
        |v| v == 0.0,
    )
    .await;
    node.shutdown().await;
}

#[tokio::test]
async fn peer_metrics_and_the_feed_show_what_get_peers_shows() {
    let b = start(test_config()).await;
    let a = start(dialing(vec![peer(&b)])).await;
    wait_linked(&a, &b).await;
    let addr = a.local_addr();
    let b_id = b.node_id().to_string();
    let mut c = SyncClient::connect(addr, "shared-room").await;
    c.edit_acked(|txn| {
        let t = txn.get_or_insert_text("t");
        t.insert(txn, 0, "to the peer");
    })
    .await;
    // GET /peers is the truth: wait until it says the room is synced with B.
    poll_json(addr, "/peers", "the room synced with B", |v| {
        v["data"].as_array().is_some_and(|rows| {
            rows.iter().any(|r| {
                r["node_id"] == b_id.as_str()
                    && r["rooms"].as_array().is_some_and(|rooms| {
                        rooms
                            .iter()
                            .any(|room| room["name"] == "shared-room" && room["status"] == "synced")
                    })
            })
        })
    })
    .await;
    let text = scrape(addr).await;
    // Every per-peer series carries the link's transport, as GET /peers shows it.
    let peer_series =
        |name: &str, extra: &str| format!(r#"{name}{{peer="{b_id}",transport="ws"{extra}}}"#);
    assert_eq!(
        value(&text, &peer_series("ymesh_peer_up", "")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            &peer_series("ymesh_peer_state", r#",state="connected""#)
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            &peer_series("ymesh_peer_state", r#",state="backing_off""#)
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &text,
            &peer_series("ymesh_peer_rooms", r#",status="synced""#)
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            &peer_series("ymesh_peer_rooms", r#",status="pending""#)
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &text,
            &peer_series("ymesh_peer_links_established_total", "")
        ),
        Some(1.0)
    );
    assert!(
        value(
            &text,
            &peer_series(
                "ymesh_peer_messages_total",
                r#",direction="out",type="sync""#
            )
        )
        .is_some_and(|v| v >= 1.0),
        "{text}"
    );
    assert_eq!(value(&text, r#"ymesh_connections{kind="peer"}"#), Some(1.0));

    // The feed carries the same rows as GET /peers.
    let (status, feed) = get_json(addr, "/ui/state").await;
    assert_eq!(status, 200, "{feed}");
    let (_, peers) = get_json(addr, "/peers").await;
    let state_of = |rows: &serde_json::Value| {
        rows.as_array()
            .and_then(|rows| rows.iter().find(|r| r["node_id"] == b_id.as_str()))
            .map(|r| (r["state"].clone(), r["rooms"].clone()))
    };
    assert_eq!(state_of(&feed["data"]["peers"]), state_of(&peers["data"]));
    assert_eq!(feed["data"]["node"]["node_id"], a.node_id());
    assert!(feed["data"]["rooms"]
        .as_array()
        .is_some_and(|r| r.iter().any(|r| r["name"] == "shared-room")));

    // B goes away: the peer is down in the metrics exactly as GET /peers says.
    drop(c);
    b.shutdown().await;
    let peers = poll_json(addr, "/peers", "B's link down", |v| {
        v["data"].as_array().is_some_and(|rows| {
            rows.iter()
                .any(|r| r["node_id"] == b_id.as_str() && r["state"] != "connected")
        })
    })
    .await["data"]
        .clone();
    let text = scrape_until(addr, &peer_series("ymesh_peer_up", ""), |v| v == 0.0).await;
    let shown = peers
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["node_id"] == b_id.as_str()))
        .and_then(|r| r["state"].as_str())
        .unwrap_or_default()
        .to_string();
    // The state may move on (backing off, connecting) between the two reads; it is one of
    // the link states, and the metric marks exactly one of them.
    let marked: Vec<&str> = ymesh::mesh::LinkState::NAMES
        .iter()
        .copied()
        .filter(|s| {
            value(
                &text,
                &peer_series("ymesh_peer_state", &format!(r#",state="{s}""#)),
            ) == Some(1.0)
        })
        .collect();
    assert_eq!(
        marked.len(),
        1,
        "one state marked: {marked:?} (GET /peers said {shown})"
    );
    assert_ne!(marked[0], "connected");
    a.shutdown().await;
}

fn with_token(token: &str) -> Config {
    Config {
        token: Some(token.into()),
        ..test_config()
    }
}

#[tokio::test]
async fn metrics_and_feed_need_the_client_token_and_the_page_does_not() {
    let node = start(with_token("tok-metrics")).await;
    let addr = node.local_addr();
    let (status, _, _) = scrape_with(addr, None).await;
    assert_eq!(status, 401, "no token, no metrics");
    let (status, _, _) = scrape_with(addr, Some("wrong")).await;
    assert_eq!(status, 401);
    let (status, _, text) = scrape_with(addr, Some("tok-metrics")).await;
    assert_eq!(status, 200, "Prometheus sends the token as a bearer");
    assert!(text.contains("ymesh_rooms_loaded"));

    let get = |path: &str| {
        let req = Request::get(path);
        async move { client(addr).send(req).await.expect("an answer") }
    };
    let page = get("/ui").await;
    assert_eq!(page.status, 200, "the static page needs no token");
    assert!(page
        .content_type()
        .is_some_and(|t| t.starts_with("text/html")));
    let html = String::from_utf8_lossy(&page.body);
    assert!(html.contains("ui/assets/app.js"));
    assert_eq!(get("/ui/assets/app.js").await.status, 200);
    assert_eq!(get("/ui/assets/app.css").await.status, 200);
    assert_eq!(get("/ui/assets/nope.js").await.status, 404);
    assert_eq!(
        get("/ui/state").await.status,
        401,
        "the feed needs the token"
    );
    let feed = client(addr)
        .send(Request::get("/ui/state").header("authorization", "Bearer tok-metrics"))
        .await
        .expect("an answer");
    assert_eq!(feed.status, 200);

    // A page of another origin gets neither, even with the token.
    for path in ["/metrics", "/ui/state"] {
        let resp = client(addr)
            .send(
                Request::get(path)
                    .header("authorization", "Bearer tok-metrics")
                    .header("origin", "http://evil.test"),
            )
            .await
            .expect("an answer");
        assert_eq!(resp.status, 403, "{path} from a foreign origin");
    }

    let (_, _, text) = scrape_with(addr, Some("tok-metrics")).await;
    assert!(
        value(&text, r#"ymesh_refused_total{reason="auth"}"#).is_some_and(|v| v >= 3.0),
        "{text}"
    );
    assert!(
        value(&text, r#"ymesh_refused_total{reason="origin"}"#).is_some_and(|v| v >= 2.0),
        "{text}"
    );
    node.shutdown().await;
}

#[tokio::test]
async fn a_connection_over_the_limit_is_counted_as_a_limit_hit() {
    let mut cfg = test_config();
    cfg.limits.max_connections = 1;
    let node = start(cfg).await;
    let addr = node.local_addr();
    let _first = SyncClient::connect(addr, "one").await;
    let mut second = crate::common::RawClient::connect(addr, "/rooms/two").await;
    let closed = second.expect_close().await;
    assert_eq!(closed.code, 1013);
    let text = scrape(addr).await;
    assert_eq!(
        value(&text, r#"ymesh_limit_hits_total{limit="max_connections"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, r#"ymesh_refused_total{reason="limit"}"#),
        Some(1.0)
    );
    node.shutdown().await;
}

#[tokio::test]
async fn the_feed_keeps_samples_for_the_charts() {
    let node = start(test_config()).await;
    let addr = node.local_addr();
    let mut c = SyncClient::connect(addr, "sampled").await;
    c.edit_acked(|txn| {
        let t = txn.get_or_insert_text("t");
        t.insert(txn, 0, "x");
    })
    .await;
    // The sampler takes one at start and then every two seconds.
    let feed = poll_json(addr, "/ui/state", "two samples", |v| {
        v["data"]["history"]["samples"]
            .as_array()
            .is_some_and(|s| s.len() >= 2)
    })
    .await;
    let history = &feed["data"]["history"];
    assert_eq!(history["every_ms"], 2000);
    let last = history["samples"]
        .as_array()
        .and_then(|s| s.last())
        .cloned();
    let last = last.expect("a sample");
    assert!(last["updates"].as_u64().is_some_and(|u| u >= 1), "{last}");
    assert!(last["t_ms"].as_u64().is_some());
    drop(c);
    wait_until("the node idles", || node.metrics().connections() == 0).await;
    node.shutdown().await;
}

#[tokio::test]
async fn a_command_is_counted_issued_delivered_and_answered() {
    let node = start(test_config()).await;
    let addr = node.local_addr();
    // A client that opts in to commands, in the room the command is for.
    let path = "/rooms/cmd-room?commands=1";
    let _c = SyncClient::connect_with(addr, path, yrs::Doc::new()).await;
    let body = serde_json::json!({ "kind": "compact", "deadline_s": 5 });
    let (status, answer) = crate::common::http_body(
        addr,
        "POST",
        "/rooms/cmd-room/commands",
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    scrape_until(addr, "ymesh_commands_issued_total", |v| v == 1.0).await;
    // Delivered to the one opted-in session (the node acts on a command off the request).
    scrape_until(addr, "ymesh_commands_delivered_total", |v| v == 1.0).await;
    // The node answers for itself: one result, whatever its status.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = scrape(addr).await;
        let results: f64 = text
            .lines()
            .filter(|l| l.starts_with("ymesh_command_results_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if results >= 1.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no result counted:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.shutdown().await;
}

#[tokio::test]
async fn a_foreign_host_name_is_counted_as_refused() {
    let node = start(test_config()).await;
    let addr = node.local_addr();
    let resp = client(addr)
        .send(Request::get("/metrics").header("host", "rebound.example:3913"))
        .await
        .expect("an answer");
    assert_eq!(
        resp.status, 403,
        "DNS rebinding: a loopback node answers loopback names"
    );
    let text = scrape(addr).await;
    assert_eq!(
        value(&text, r#"ymesh_refused_total{reason="host"}"#),
        Some(1.0),
        "{text}"
    );
    node.shutdown().await;
}
