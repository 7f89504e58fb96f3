//! Who may link: the mesh secret, device approval (`ymesh peer approve` and the admin
//! route), denial, and what a pending peer gets (nothing).

use std::time::{Duration, Instant};

use crate::common::*;
use yrs::{Text, WriteTxn};

/// The row of `node`'s `/peers` whose node id is `id`, if any.
async fn row_of(node: &ymesh::Node, id: &str) -> Option<serde_json::Value> {
    let (_, v) = get_json(node.local_addr(), "/peers").await;
    v["data"]
        .as_array()?
        .iter()
        .find(|p| p["node_id"] == id)
        .cloned()
}

/// Waits until `node` shows `id` in state `state`; returns the row.
async fn wait_row(node: &ymesh::Node, id: &str, state: &str) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let row = row_of(node, id).await;
        if let Some(r) = &row {
            if r["state"] == state {
                return r.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {id} to be {state}: {row:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A closed node with mesh secret `secret` (the production default: no open mesh).
fn with_secret(cfg: ymesh::config::Config, secret: &str) -> ymesh::config::Config {
    let mut cfg = closed_mesh(cfg);
    cfg.mesh_secret = Some(secret.into());
    cfg
}

/// A peer with the wrong secret is held as `pending` at both ends (with the reason and the
/// command to run), receives no room while it waits, links once a person approves it with
/// `ymesh peer approve`, and is shut out again by a denial (its link closes, later dials
/// are refused). The approval and denial persist in the data directory. A third node with
/// the right secret links at once, without anybody's approval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_the_secret_waits_gets_nothing_and_links_once_approved() {
    let b_cfg = with_secret(test_config(), "right");
    let b_dir = b_cfg.data_dir.clone();
    let b = start(b_cfg).await;
    let a = start(with_secret(dialing(vec![peer(&b)]), "wrong")).await;
    let (id_a, id_b) = (a.node_id().to_string(), b.node_id().to_string());

    // A dialed B, so B counts as approved at A; B holds A.
    let at_a = wait_row(&a, &id_b, "pending").await;
    assert_eq!(at_a["waiting_for"], "peer", "{at_a}");
    let why = at_a["last_error"].as_str().unwrap_or_default();
    assert!(why.contains("mesh secret"), "{at_a}");
    assert!(
        why.contains(&format!("ymesh peer approve {id_a}")),
        "{at_a}"
    );
    let at_b = wait_row(&b, &id_a, "pending").await;
    assert_eq!(at_b["waiting_for"], "this_node", "{at_b}");

    // A room on A does not reach B while A waits.
    let mut on_a = SyncClient::connect(a.local_addr(), "private").await;
    on_a.edit(|t| t.get_or_insert_text("t").insert(t, 0, "must not leave A"))
        .await;
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        let (status, _) = get_json(b.local_addr(), "/rooms/private").await;
        assert_eq!(status, 404, "B got the room of a pending peer");
        let (_, rooms) = get_json(b.local_addr(), "/rooms?all=true").await;
        assert_eq!(rooms["data"], serde_json::json!([]), "{rooms}");
        assert!(a.mesh().connected_peers().is_empty());
        assert!(b.mesh().connected_peers().is_empty());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // `ymesh peer approve` on B: the waiting link comes up at once and the room crosses.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ymesh"))
        .args(["peer", "approve", &id_a, "--node"])
        .arg(format!("http://{}", b.local_addr()))
        .output()
        .expect("ymesh peer approve runs");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("approved {id_a}")
    );
    wait_linked(&a, &b).await;
    wait_linked(&b, &a).await;
    poll_get(
        b.local_addr(),
        "/rooms/private?format=json",
        "the room on B after approval",
        |s, _| s == 200,
    )
    .await;
    let file = b_dir.join("approvals.json");
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).expect("approvals.json written")).unwrap();
    assert_eq!(saved["approved"], serde_json::json!([id_a]), "{saved}");

    // A denial closes the link and refuses the next dials, whatever A proves.
    let (status, body) = http(b.local_addr(), "POST", &format!("/peers/{id_a}/deny")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let refused = wait_row(&a, &id_b, "refused").await;
    assert!(
        refused["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("denied"),
        "{refused}"
    );
    assert!(!b.mesh().connected_peers().contains(&id_a));
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(saved["denied"], serde_json::json!([id_a]), "{saved}");
    assert_eq!(saved["approved"], serde_json::json!([]), "{saved}");

    // A node that proves the secret needs nobody's approval.
    let c = start(with_secret(dialing(vec![peer(&b)]), "right")).await;
    wait_linked(&c, &b).await;
    wait_linked(&b, &c).await;
    a.shutdown().await;
    b.shutdown().await;
    c.shutdown().await;
}

/// Approvals are admin actions: a node id that is not one is refused with 400, and a
/// remote caller without the admin token is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_routes_check_their_input() {
    let node = start(closed_mesh(test_config())).await;
    let (status, body) = http(node.local_addr(), "POST", "/peers/not-a-node-id/approve").await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("not-a-node-id"));
    node.shutdown().await;
}

/// Without a secret, an allow list or `mesh_open`, two nodes that did not configure each
/// other (as after discovery) both wait; approving on both sides links them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_devices_wait_for_approval_on_the_side_that_did_not_dial() {
    let b = start(closed_mesh(test_config())).await;
    let a = start(closed_mesh(dialing(vec![peer(&b)]))).await;
    let (id_a, id_b) = (a.node_id().to_string(), b.node_id().to_string());
    let at_b = wait_row(&b, &id_a, "pending").await;
    assert!(
        at_b["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("new device"),
        "{at_b}"
    );
    wait_row(&a, &id_b, "pending").await;
    let (status, _) = http(b.local_addr(), "POST", &format!("/peers/{id_a}/approve")).await;
    assert_eq!(status, 200);
    wait_linked(&a, &b).await;
    wait_linked(&b, &a).await;
    a.shutdown().await;
    b.shutdown().await;
}

/// Approving and denying are admin actions: with an admin token configured, a caller
/// without it (or with a client credential only) is refused and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_routes_refuse_a_caller_without_the_admin_token() {
    let mut cfg = closed_mesh(test_config());
    cfg.admin_token = Some("admin-token-for-approvals".into());
    let node = start(cfg).await;
    let addr = node.local_addr();
    let stranger = ymesh::mesh::NodeIdentity::ephemeral();
    let id = stranger.node_id().to_string();
    for verb in ["approve", "deny"] {
        let (status, body) = http(addr, "POST", &format!("/peers/{id}/{verb}")).await;
        assert_eq!(status, 401, "{verb}: {}", String::from_utf8_lossy(&body));
    }
    assert_eq!(node.mesh().approvals(), ymesh::mesh::Approvals::default());
    let req = ymesh::net::Request::post(format!("/peers/{id}/approve"))
        .header("authorization", "Bearer admin-token-for-approvals");
    let resp = client(addr).send(req).await.expect("an answer");
    assert_eq!(resp.status, 200);
    assert!(node.mesh().approvals().approved.contains(&id));
    node.shutdown().await;
}
