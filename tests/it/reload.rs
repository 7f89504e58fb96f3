//! Live reload: SIGHUP and `POST /reload` re-read the config file of a running `ymesh serve`
//! process; tokens, peers and admission change without a restart, a client whose credential
//! no longer holds is closed with 4401, settings that need a restart are named, and a broken
//! file is refused with its line while the running config stays.

use std::path::Path;

use ymesh::config::Config;

use crate::common::process::ProcessNode;
use crate::common::*;

const FIRST: &str = "first-client-token-6f1d0c93a2";
const SECOND: &str = "second-client-token-91be7d2c40";
const ADMIN: &str = "admin-token-for-reload-5e0a8c";

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn sighup(node: &ProcessNode) {
    // SAFETY: kill(2) with a pid this test spawned and a valid signal number.
    let rc = unsafe { libc::kill(node.pid() as libc::pid_t, libc::SIGHUP) };
    assert_eq!(rc, 0, "SIGHUP sent");
}

/// Waits until a client with `token` is admitted (the node applied the reload).
async fn wait_accepts(node: &ProcessNode, token: &str) {
    let c = ymesh::net::Client::new(&format!("http://{}", node.addr), Some(token.into()))
        .unwrap()
        .with_timeout(WAIT);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let resp = c
            .send(ymesh::net::Request::new(ymesh::net::Method::GET, "/rooms"))
            .await
            .unwrap();
        if resp.status == 200 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "token not accepted in time: {}",
            resp.status
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sighup_revokes_a_token_while_its_client_is_connected() {
    let dir = fresh_dir("reload-sighup");
    let file = dir.join("mesh.toml");
    write(&file, &format!("token = \"{FIRST}\"\n"));
    let node = ProcessNode::start(&["--memory", "--config", file.to_str().unwrap()]);
    let mut revoked = SyncClient::connect_with(
        node.addr,
        &format!("/rooms/notes?token={FIRST}"),
        yrs::Doc::new(),
    )
    .await;

    write(&file, &format!("token = \"{SECOND}\"\n"));
    sighup(&node);
    let closed = revoked.raw.expect_close().await;
    assert_eq!(closed.code, 4401, "{closed:?}");
    assert!(closed.reason.contains("reload"), "{closed:?}");

    // The new token works at once; the old one is refused before any sync message.
    let mut kept = SyncClient::connect_with(
        node.addr,
        &format!("/rooms/notes?token={SECOND}"),
        yrs::Doc::new(),
    )
    .await;
    kept.edit_acked(|t| {
        use yrs::{Text, WriteTxn};
        t.get_or_insert_text("t").insert(t, 0, "after reload")
    })
    .await;
    let mut old = RawClient::connect(node.addr, &format!("/rooms/notes?token={FIRST}")).await;
    assert_eq!(old.expect_close().await.code, 4401);
}

#[tokio::test]
async fn post_reload_names_restart_only_settings_and_refuses_a_broken_file() {
    let dir = fresh_dir("reload-post");
    let file = dir.join("mesh.toml");
    write(
        &file,
        &format!("token = \"{FIRST}\"\nadmin_token = \"{ADMIN}\"\n"),
    );
    let node = ProcessNode::start(&["--memory", "--config", file.to_str().unwrap()]);
    let admin = ymesh::net::Client::new(&format!("http://{}", node.addr), Some(ADMIN.into()))
        .unwrap()
        .with_timeout(WAIT);
    let reload = || async {
        admin
            .send(ymesh::net::Request::new(
                ymesh::net::Method::POST,
                "/reload",
            ))
            .await
            .unwrap()
    };
    // A client keeps its connection through a reload that leaves its token valid.
    let mut staying = SyncClient::connect_with(
        node.addr,
        &format!("/rooms/notes?token={FIRST}"),
        yrs::Doc::new(),
    )
    .await;

    write(
        &file,
        &format!(
            "token = \"{FIRST}\"\nadmin_token = \"{ADMIN}\"\n\n[limits]\nmessage_rate = 500\nmax_rooms = 50\n"
        ),
    );
    let resp = reload().await;
    let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(resp.status, 200, "{body}");
    assert_eq!(
        body["data"]["needs_restart"],
        serde_json::json!(["limits.max_rooms"])
    );
    assert_eq!(
        body["data"]["applied"],
        serde_json::json!(["limits.message_rate"])
    );
    assert_eq!(body["data"]["closed_clients"], 0);
    staying
        .edit_acked(|t| {
            use yrs::{Text, WriteTxn};
            t.get_or_insert_text("t").insert(t, 0, "still here")
        })
        .await;

    // A file that no longer parses: refused with its line; the running config stays.
    write(
        &file,
        &format!("token = \"{SECOND}\"\nadmin_token = \"{ADMIN}\"\nlimits = nope\n"),
    );
    let resp = reload().await;
    let text = String::from_utf8_lossy(&resp.body).to_string();
    assert_eq!(resp.status, 400, "{text}");
    assert!(text.contains("mesh.toml:3"), "{text}");
    wait_accepts(&node, FIRST).await;
    let c = ymesh::net::Client::new(&format!("http://{}", node.addr), Some(SECOND.into()))
        .unwrap()
        .with_timeout(WAIT);
    let resp = c
        .send(ymesh::net::Request::new(ymesh::net::Method::GET, "/rooms"))
        .await
        .unwrap();
    assert_eq!(resp.status, 401);

    // Without the admin token, no reload.
    let stranger = ymesh::net::Client::new(&format!("http://{}", node.addr), Some(FIRST.into()))
        .unwrap()
        .with_timeout(WAIT);
    let resp = stranger
        .send(ymesh::net::Request::new(
            ymesh::net::Method::POST,
            "/reload",
        ))
        .await
        .unwrap();
    assert_eq!(resp.status, 401);
}

/// In-process: peers and admission change on reload; the mesh links, unlinks and holds the
/// peer as pending, and links again, with no restart.
#[tokio::test]
async fn reload_adds_a_peer_and_a_narrowed_allow_list_closes_its_link() {
    let a_config = closed_mesh(test_config());
    let a = start(a_config.clone()).await;
    let b_config = Config {
        allow_peers: vec![a.node_id().to_string()],
        ..closed_mesh(test_config())
    };
    let b = start(b_config.clone()).await;

    // A learns of B by reload.
    let report = a
        .reload_with(Config {
            peers: vec![peer(&b)],
            ..a_config.clone()
        })
        .unwrap();
    assert_eq!(report.applied, vec!["peers"]);
    wait_linked(&a, &b).await;
    wait_linked(&b, &a).await;
    let mut on_a = SyncClient::connect(a.local_addr(), "shared").await;
    on_a.edit_acked(|t| {
        use yrs::{Text, WriteTxn};
        t.get_or_insert_text("t").insert(t, 0, "before")
    })
    .await;
    let room = b.room("shared").await.unwrap();
    wait_until("the edit crossed", || {
        room.with_doc(|d| text_of(d, "t")) == "before"
    })
    .await;

    // B drops A from its allow list: the link closes, A's redial waits as pending at B.
    let report = b
        .reload_with(Config {
            allow_peers: vec![],
            ..b_config.clone()
        })
        .unwrap();
    assert_eq!(report.applied, vec!["allow_peers"]);
    let b_mesh = b.mesh().clone();
    let a_id = a.node_id().to_string();
    wait_until("A is no longer linked at B", || {
        !b_mesh.connected_peers().contains(&a_id)
    })
    .await;
    poll_json(b.local_addr(), "/peers", "A pending at B", |v| {
        v["data"].as_array().is_some_and(|rows| {
            rows.iter()
                .any(|r| r["node_id"] == a_id.as_str() && r["state"] == "pending")
        })
    })
    .await;

    // Allowed again: the waiting link is welcomed without a redial.
    b.reload_with(b_config).unwrap();
    wait_linked(&b, &a).await;
    a.shutdown().await;
    b.shutdown().await;
}
