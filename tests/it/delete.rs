//! Deleting rooms: `DELETE /rooms/{room}`, `ymesh delete`, tombstones across the mesh, and
//! edits made after a deletion (which bring the room back rather than being lost).

use std::net::SocketAddr;

use crate::common::*;
use yrs::updates::decoder::Decode;
use yrs::{GetString, ReadTxn, Text, Transact, Update, WriteTxn};

async fn text_on(addr: SocketAddr, room: &str) -> Option<String> {
    let (status, v) = get_json(addr, &format!("/rooms/{room}?format=json")).await;
    (status == 200).then(|| v["data"]["t"].as_str().unwrap_or_default().to_string())
}

fn listed(v: &serde_json::Value, room: &str) -> bool {
    v["data"]
        .as_array()
        .is_some_and(|rows| rows.iter().any(|r| r["name"] == room))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_closes_clients_removes_the_room_and_survives_a_restart() {
    let mut cfg = test_config();
    let dir = cfg.data_dir.clone();
    let node = start(cfg).await;
    let addr = node.local_addr();
    let mut client = SyncClient::connect(addr, "doomed").await;
    client
        .edit_acked(|t| t.get_or_insert_text("t").insert(t, 0, "old content"))
        .await;
    let mut other = SyncClient::connect(addr, "kept").await;
    other
        .edit_acked(|t| t.get_or_insert_text("t").insert(t, 0, "stays"))
        .await;

    // Deleting a room that does not exist is a 404 and records nothing.
    let (status, _) = http(addr, "DELETE", "/rooms/never-was").await;
    assert_eq!(status, 404);

    let (status, body) = http(addr, "DELETE", "/rooms/doomed").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["data"]["room"], "doomed");
    assert_eq!(v["data"]["origin"], node.node_id());
    assert!(v["data"]["deleted_ms"].as_u64().unwrap() > 0);

    // The connected client is closed with 4410; the other room is untouched.
    let closed = client.raw.expect_close().await;
    assert_eq!(closed.code, 4410, "{closed:?}");
    let (status, body) = http(addr, "GET", "/rooms/doomed").await;
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("was deleted"));
    let (_, v) = get_json(addr, "/rooms?all=true").await;
    assert!(!listed(&v, "doomed"), "{v}");
    assert_eq!(text_on(addr, "kept").await.as_deref(), Some("stays"));

    // The old client reconnects with its stale copy: the room stays empty.
    let stale = client.doc.clone();
    let mut back = SyncClient::connect_with(addr, "/rooms/doomed", stale.clone()).await;
    back.raw.send(vec![102u8, 2, 0xff, 0x01]).await;
    back.raw
        .recv_until(|m| matches!(m, ymesh::protocol::Message::SyncStatus(_)))
        .await;
    assert_eq!(text_on(addr, "doomed").await, None);
    drop(back);
    drop(other);
    node.shutdown().await;

    // After a restart the room is still gone and still refuses the stale content.
    cfg = test_config();
    cfg.data_dir = dir;
    let node = start(cfg).await;
    let addr = node.local_addr();
    assert_eq!(text_on(addr, "doomed").await, None);
    let full = stale
        .transact()
        .encode_state_as_update_v1(&yrs::StateVector::default());
    let (status, _) = http_body(addr, "POST", "/rooms/doomed", &full).await;
    assert_eq!(status, 200);
    assert_eq!(text_on(addr, "doomed").await, None);
    let (_, v) = get_json(addr, "/rooms?all=true").await;
    assert!(!listed(&v, "doomed"), "{v}");

    // A new edit on top of the old copy is not lost: the room lives again, and a client
    // that holds the rest of the document gives it back.
    let mut client = SyncClient::connect_with(addr, "/rooms/doomed", stale).await;
    client
        .edit_acked(|t| {
            let text = t.get_or_insert_text("t");
            let len = text.len(t);
            text.insert(t, len, " + new")
        })
        .await;
    poll_get(
        addr,
        "/rooms/doomed?format=json",
        "resurrected room",
        |s, v| s == 200 && v["data"]["t"] == "old content + new",
    )
    .await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_needs_the_admin_token_when_one_is_set() {
    let mut cfg = test_config();
    cfg.admin_token = Some("sesame".into());
    let node = start(cfg).await;
    let addr = node.local_addr();
    let update = {
        let doc = yrs::Doc::new();
        doc.get_or_insert_text("t")
            .insert(&mut doc.transact_mut(), 0, "x");
        let u = doc
            .transact()
            .encode_state_as_update_v1(&yrs::StateVector::default());
        u
    };
    let (status, _) = http_body(addr, "POST", "/rooms/guarded", &update).await;
    assert_eq!(status, 200);
    let (status, _) = http(addr, "DELETE", "/rooms/guarded").await;
    assert_eq!(status, 401);
    assert_eq!(text_on(addr, "guarded").await.as_deref(), Some("x"));
    let client =
        ymesh::ops::NodeClient::new(&format!("http://{addr}"), Some("sesame".into())).unwrap();
    let deleted = client.delete("guarded").await.unwrap();
    assert_eq!(deleted.room, "guarded");
    assert_eq!(text_on(addr, "guarded").await, None);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_reaches_peers_and_a_node_that_was_offline() {
    let a = start(test_config()).await;
    let mut b_cfg = dialing(vec![peer(&a)]);
    let b_dir = b_cfg.data_dir.clone();
    let b = start(b_cfg).await;
    let c = start(dialing(vec![peer(&a)])).await;
    wait_linked(&b, &a).await;
    wait_linked(&c, &a).await;
    let mut on_a = SyncClient::connect(a.local_addr(), "gone").await;
    on_a.edit_acked(|t| t.get_or_insert_text("t").insert(t, 0, "bye"))
        .await;
    drop(on_a);
    for n in [&b, &c] {
        poll_get(
            n.local_addr(),
            "/rooms?all=true",
            "room on every node",
            |_, v| listed(v, "gone"),
        )
        .await;
    }
    // Wait until B stored it, then take B offline.
    poll_get(
        b.local_addr(),
        "/rooms/gone?format=json",
        "room on B",
        |s, v| s == 200 && v["data"]["t"] == "bye",
    )
    .await;
    b.shutdown().await;

    // Deleting on C (a peer of A only) reaches A through the mesh.
    let (status, _) = http(c.local_addr(), "DELETE", "/rooms/gone").await;
    assert_eq!(status, 200);
    poll_status(a.local_addr(), "/rooms/gone", "deleted on A", 404).await;

    // B comes back with its stale copy: it deletes it, and the room does not come back
    // to A or C.
    b_cfg = dialing(vec![peer(&a)]);
    b_cfg.data_dir = b_dir;
    let b = start(b_cfg).await;
    wait_linked(&b, &a).await;
    poll_status(b.local_addr(), "/rooms/gone", "deleted on B", 404).await;
    let (_, v) = get_json(b.local_addr(), "/rooms?all=true").await;
    assert!(!listed(&v, "gone"), "{v}");
    // A round trip over the link after the tombstone: B's manifest has been handled.
    let mut probe = SyncClient::connect(b.local_addr(), "probe").await;
    probe
        .edit_acked(|t| t.get_or_insert_text("t").insert(t, 0, "p"))
        .await;
    poll_get(
        a.local_addr(),
        "/rooms/probe?format=json",
        "probe on A",
        |s, _| s == 200,
    )
    .await;
    for n in [&a, &b, &c] {
        let (status, _) = http(n.local_addr(), "GET", "/rooms/gone").await;
        assert_eq!(status, 404, "room came back on {}", n.local_addr());
    }
    a.shutdown().await;
    b.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_made_offline_after_a_deletion_brings_the_room_back_everywhere() {
    let a = start(test_config()).await;
    let mut b_cfg = dialing(vec![peer(&a)]);
    let b_dir = b_cfg.data_dir.clone();
    let b = start(b_cfg).await;
    wait_linked(&b, &a).await;
    let mut on_a = SyncClient::connect(a.local_addr(), "contested").await;
    on_a.edit_acked(|t| t.get_or_insert_text("t").insert(t, 0, "shared"))
        .await;
    drop(on_a);
    poll_get(
        b.local_addr(),
        "/rooms/contested?format=json",
        "room on B",
        |s, v| s == 200 && v["data"]["t"] == "shared",
    )
    .await;
    b.shutdown().await;

    // A deletes the room while B is away.
    let (status, _) = http(a.local_addr(), "DELETE", "/rooms/contested").await;
    assert_eq!(status, 200);

    // B, cut off, has a user who keeps writing in it.
    b_cfg = test_config();
    b_cfg.data_dir = b_dir.clone();
    let b = start(b_cfg).await;
    let mut on_b = SyncClient::connect(b.local_addr(), "contested").await;
    on_b.edit_acked(|t| {
        let text = t.get_or_insert_text("t");
        let len = text.len(t);
        text.insert(t, len, " and more")
    })
    .await;
    drop(on_b);
    b.shutdown().await;

    // B links again: the deletion does not cover B's edit, so B keeps the room and A gets
    // it back, whole.
    b_cfg = dialing(vec![peer(&a)]);
    b_cfg.data_dir = b_dir;
    let b = start(b_cfg).await;
    wait_linked(&b, &a).await;
    poll_get(
        a.local_addr(),
        "/rooms/contested?format=json",
        "room back on A",
        |s, v| s == 200 && v["data"]["t"] == "shared and more",
    )
    .await;
    assert_eq!(
        text_on(b.local_addr(), "contested").await.as_deref(),
        Some("shared and more")
    );
    let (_, v) = get_json(a.local_addr(), "/rooms?all=true").await;
    assert!(listed(&v, "contested"), "{v}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ymesh_delete_works_on_a_data_dir_and_the_tombstone_travels_later() {
    let mut a_cfg = test_config();
    let a_dir = a_cfg.data_dir.clone();
    let a = start(a_cfg).await;
    let b = start(test_config()).await;
    let mut on_a = SyncClient::connect(a.local_addr(), "offline-delete").await;
    on_a.edit_acked(|t| t.get_or_insert_text("t").insert(t, 0, "v"))
        .await;
    drop(on_a);
    let a_id = a.node_id().to_string();
    a.shutdown().await;
    // B already has a copy (e.g. replicated earlier).
    let copy = {
        let doc = yrs::Doc::new();
        let update = ymesh::ops::export_dir(&a_dir, "offline-delete")
            .await
            .unwrap();
        doc.transact_mut()
            .apply_update(Update::decode_v1(&update).unwrap())
            .unwrap();
        assert_eq!(doc.get_or_insert_text("t").get_string(&doc.transact()), "v");
        update
    };
    let (status, _) = http_body(b.local_addr(), "POST", "/rooms/offline-delete", &copy).await;
    assert_eq!(status, 200);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ymesh"))
        .args(["delete", "offline-delete", "--data-dir"])
        .arg(&a_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("deleted room \"offline-delete\""), "{said}");
    assert!(said.contains(&a_id), "{said}");
    // A second delete names the problem.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ymesh"))
        .args(["delete", "offline-delete", "--data-dir"])
        .arg(&a_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not stored"));

    // A starts linked to B: B deletes its copy.
    a_cfg = dialing(vec![peer(&b)]);
    a_cfg.data_dir = a_dir;
    let a = start(a_cfg).await;
    wait_linked(&a, &b).await;
    poll_status(b.local_addr(), "/rooms/offline-delete", "deleted on B", 404).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ymesh_delete_against_a_running_node() {
    let node = start(test_config()).await;
    let addr = node.local_addr();
    let mut c = SyncClient::connect(addr, "via-cli").await;
    c.edit_acked(|t| t.get_or_insert_text("t").insert(t, 0, "x"))
        .await;
    drop(c);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ymesh"))
        .args(["delete", "via-cli", "--node", &format!("http://{addr}")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text_on(addr, "via-cli").await, None);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ymesh"))
        .args(["delete", "via-cli", "--node", &format!("http://{addr}")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("404"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    node.shutdown().await;
}

/// Runs the `ymesh` binary with `args` off the runtime's workers (the nodes are in-process).
async fn ymesh_cli(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_ymesh"))
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_an_export_into_a_deleted_room_is_refused_and_undelete_restores_it_everywhere() {
    let a = start(test_config()).await;
    let b = start(dialing(vec![peer(&a)])).await;
    let mut c_cfg = dialing(vec![peer(&a)]);
    let c_dir = c_cfg.data_dir.clone();
    let c = start(c_cfg).await;
    wait_linked(&b, &a).await;
    wait_linked(&c, &a).await;
    let mut on_a = SyncClient::connect(a.local_addr(), "precious").await;
    on_a.edit_acked(|t| t.get_or_insert_text("t").insert(t, 0, "keep me"))
        .await;
    drop(on_a);
    for n in [&b, &c] {
        poll_get(
            n.local_addr(),
            "/rooms/precious?format=json",
            "room on every node",
            |s, v| s == 200 && v["data"]["t"] == "keep me",
        )
        .await;
    }
    // An export taken before the deletion.
    let (status, export) = http(a.local_addr(), "GET", "/rooms/precious").await;
    assert_eq!(status, 200);
    let file = fresh_dir("undelete-export").join("precious.yjs");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, &export).unwrap();

    let (status, _) = http(a.local_addr(), "DELETE", "/rooms/precious").await;
    assert_eq!(status, 200);
    for n in [&b, &c] {
        poll_status(n.local_addr(), "/rooms/precious", "deleted everywhere", 404).await;
    }
    // C is away while the room is restored.
    c.shutdown().await;

    let node = format!("http://{}", a.local_addr());
    let file_arg = file.to_str().unwrap().to_string();
    let import = |extra: &[&str]| {
        let mut args: Vec<String> = ["import", "precious", &file_arg, "--node", &node]
            .map(String::from)
            .to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        ymesh_cli(args)
    };
    // Without --undelete: refused, saying why and how to restore.
    let out = import(&[]).await;
    let said = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}{err}");
    assert!(!said.contains("nothing changed"), "{said}");
    assert!(
        err.contains("room \"precious\" was deleted") && err.contains("--undelete"),
        "{err}"
    );
    assert_eq!(text_on(a.local_addr(), "precious").await, None);

    // With --undelete: restored here, then on B as the change reaches it.
    let out = import(&["--undelete"]).await;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("restored deleted room \"precious\""),
        "{said}"
    );
    assert_eq!(
        text_on(a.local_addr(), "precious").await.as_deref(),
        Some("keep me")
    );
    poll_get(
        b.local_addr(),
        "/rooms/precious?format=json",
        "restored on B",
        |s, v| s == 200 && v["data"]["t"] == "keep me",
    )
    .await;
    // The marker is invisible: the document has its one root, as exported.
    let (_, v) = get_json(b.local_addr(), "/rooms/precious?format=json").await;
    assert_eq!(v["data"].as_object().map(|o| o.len()), Some(1), "{v}");

    // C, which still holds the tombstone, gets the room when it links again.
    c_cfg = dialing(vec![peer(&a)]);
    c_cfg.data_dir = c_dir;
    let c = start(c_cfg).await;
    wait_linked(&c, &a).await;
    poll_get(
        c.local_addr(),
        "/rooms/precious?format=json",
        "restored on C after it came back",
        |s, v| s == 200 && v["data"]["t"] == "keep me",
    )
    .await;
    // And A kept it: C's tombstone does not cover the restored room.
    assert_eq!(
        text_on(a.local_addr(), "precious").await.as_deref(),
        Some("keep me")
    );
    a.shutdown().await;
    b.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_into_a_deleted_room_of_a_data_dir_is_refused_and_undelete_restores_it() {
    let mut cfg = test_config();
    let dir = cfg.data_dir.clone();
    let node = start(cfg).await;
    let mut c = SyncClient::connect(node.local_addr(), "gone-offline").await;
    c.edit_acked(|t| t.get_or_insert_text("t").insert(t, 0, "old"))
        .await;
    drop(c);
    node.shutdown().await;
    let export = ymesh::ops::export_dir(&dir, "gone-offline").await.unwrap();
    ymesh::ops::delete_dir(&dir, "gone-offline").await.unwrap();

    let err = ymesh::ops::import_dir(&dir, "gone-offline", &export, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("was deleted") && err.contains("--undelete"),
        "{err}"
    );
    let imported = ymesh::ops::import_dir(&dir, "gone-offline", &export, true)
        .await
        .unwrap();
    assert!(imported.changed && imported.undeleted, "{imported:?}");

    // The node starts with the room restored.
    cfg = test_config();
    cfg.data_dir = dir;
    let node = start(cfg).await;
    assert_eq!(
        text_on(node.local_addr(), "gone-offline").await.as_deref(),
        Some("old")
    );
    node.shutdown().await;
}
