//! Operator tools against real nodes: `ymesh export`, `import`, `compact`, `backup`,
//! `restore-backup` (the binary), and the admin rule of `POST /rooms/{room}/compact`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::common::*;
use ymesh::config::Config;
use ymesh::store::{SqliteStore, Store, StoreOptions};
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, Text, Transact, Update, WriteTxn};

/// The binary, isolated from the caller's environment and working directory.
fn bin(cwd: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ymesh"));
    cmd.current_dir(cwd)
        .env_remove("YMESH_DATA_DIR")
        .env_remove("YMESH_ADMIN_TOKEN")
        .env_remove("RUST_LOG");
    cmd
}

/// Runs the binary on a blocking thread (the node under test keeps serving meanwhile).
async fn run(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("ymesh runs"))
        .await
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "failed: {:?}\nstdout: {}\nstderr: {}",
        o.status,
        stdout(o),
        stderr(o)
    );
}

#[track_caller]
fn assert_fails_with(o: &Output, needles: &[&str]) {
    assert!(!o.status.success(), "succeeded: {}", stdout(o));
    let err = stderr(o);
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
}

/// A node config on `dir` (any free port, logs compacted only on request).
fn config_on(dir: &Path) -> Config {
    let mut cfg = test_config();
    cfg.data_dir = dir.to_path_buf();
    cfg.store.compact_log_count = 1_000_000;
    cfg.store.compact_log_bytes = 1 << 40;
    cfg
}

/// Appends `text` to root text "t" of `room` in `pieces` separate changes; waits for disk.
async fn write(node: &ymesh::Node, room: &str, text: &str, pieces: usize) {
    let r = node.room(room).await.unwrap();
    let chunk = text.len().div_ceil(pieces.max(1)).max(1);
    for part in text.as_bytes().chunks(chunk) {
        let part = std::str::from_utf8(part).unwrap();
        r.with_doc(|doc| {
            let t = doc.get_or_insert_text("t");
            let mut txn = doc.transact_mut();
            let len = t.len(&txn);
            t.insert(&mut txn, len, part);
        });
    }
    r.wait_durable().await.unwrap();
}

/// Root text "t" of a Yjs v1 update.
fn text_of_update(update: &[u8]) -> String {
    let doc = Doc::new();
    doc.transact_mut()
        .apply_update(Update::decode_v1(update).unwrap())
        .unwrap();
    text_of(&doc, "t")
}

async fn room_text(node: &ymesh::Node, room: &str) -> String {
    node.room(room).await.unwrap().with_doc(|doc| {
        let t = doc.get_or_insert_text("t");
        let txn = doc.transact();
        t.get_string(&txn)
    })
}

/// Stored log length of `room` in the store of a stopped node's `dir`.
async fn stored_log_count(dir: &Path, room: &str) -> u64 {
    let store = SqliteStore::open(dir, StoreOptions::default()).unwrap();
    let meta = store.meta(room).await.unwrap().expect("room stored");
    store.close().await.unwrap();
    meta.log_count
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// `POST path` with an empty body and an optional `Authorization`; returns (status, JSON
/// body).
async fn post_json(
    addr: SocketAddr,
    path: &str,
    authorization: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut req = ymesh::net::Request::post(path);
    if let Some(a) = authorization {
        req = req.header("Authorization", a);
    }
    let resp = client(addr).send(req).await.unwrap();
    let body = serde_json::from_slice(&resp.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&resp.body)));
    (resp.status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_and_import_on_a_stopped_nodes_directory() {
    let dir = fresh_dir("ops-stopped");
    let work = fresh_dir("ops-stopped-work");
    let room = "notes/a b+c";
    let node = start(config_on(&dir)).await;
    write(&node, room, "hello from a stopped node", 5).await;
    node.shutdown().await;

    // Export to a file and to standard output: the same update, holding the text.
    let file = work.join("notes.yjs");
    let out = run({
        let mut c = bin(&work);
        c.args(["export", room, "-o"])
            .arg(&file)
            .arg("--data-dir")
            .arg(&dir);
        c
    })
    .await;
    assert_ok(&out);
    let exported = std::fs::read(&file).unwrap();
    assert_eq!(text_of_update(&exported), "hello from a stopped node");
    let out = run({
        let mut c = bin(&work);
        c.args(["export", room]).env("YMESH_DATA_DIR", &dir);
        c
    })
    .await;
    assert_ok(&out);
    assert_eq!(text_of_update(&out.stdout), "hello from a stopped node");

    // A room that is not stored, and a directory without a store, are errors.
    let out = run({
        let mut c = bin(&work);
        c.args(["export", "nope", "-o", "x", "--data-dir"])
            .arg(&dir);
        c
    })
    .await;
    assert_fails_with(&out, &["\"nope\"", "not stored"]);
    let empty = work.join("no-store");
    let out = run({
        let mut c = bin(&work);
        c.args(["export", room, "-o", "x", "--data-dir"])
            .arg(&empty);
        c
    })
    .await;
    assert_fails_with(&out, &["no ymesh store"]);
    assert!(!empty.exists(), "export must not create a store");

    // Import into a fresh directory, twice (the second changes nothing), then serve it.
    let copy_dir = work.join("copy");
    for expect in ["imported", "nothing changed"] {
        let out = run({
            let mut c = bin(&work);
            c.args(["import", "copy"])
                .arg(&file)
                .arg("--data-dir")
                .arg(&copy_dir);
            c
        })
        .await;
        assert_ok(&out);
        assert!(stdout(&out).contains(expect), "{}", stdout(&out));
    }
    // Garbage is refused before anything is written.
    std::fs::write(work.join("garbage"), b"\xff\xff\xff\xff not yjs").unwrap();
    let untouched = work.join("untouched");
    let out = run({
        let mut c = bin(&work);
        c.args(["import", "x", "garbage", "--data-dir"])
            .arg(&untouched);
        c
    })
    .await;
    assert_fails_with(&out, &["garbage", "not a valid Yjs v1 update"]);
    assert!(!untouched.exists());

    // Merge: import into the original room a concurrent edit made elsewhere.
    let other = Doc::new();
    other
        .transact_mut()
        .apply_update(Update::decode_v1(&exported).unwrap())
        .unwrap();
    let edit = {
        let t = other.get_or_insert_text("t");
        let mut txn = other.transact_mut();
        t.insert(&mut txn, 0, ">> ");
        txn.encode_update_v1()
    };
    std::fs::write(work.join("edit.yjs"), &edit).unwrap();
    let out = run({
        let mut c = bin(&work);
        c.args(["import", room, "edit.yjs", "--data-dir"]).arg(&dir);
        c
    })
    .await;
    assert_ok(&out);

    let node = start(config_on(&copy_dir)).await;
    assert_eq!(room_text(&node, "copy").await, "hello from a stopped node");
    node.shutdown().await;
    let node = start(config_on(&dir)).await;
    assert_eq!(room_text(&node, room).await, ">> hello from a stopped node");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_and_import_against_a_running_node() {
    let dir = fresh_dir("ops-running");
    let work = fresh_dir("ops-running-work");
    let node = start(config_on(&dir)).await;
    let addr = node.local_addr();
    let room = "live/room %2F é";
    write(&node, room, "live text", 3).await;

    // The data directory of a running node is refused with a pointer to --node.
    let out = run({
        let mut c = bin(&work);
        c.args(["export", room, "-o", "x", "--data-dir"]).arg(&dir);
        c
    })
    .await;
    assert_fails_with(&out, &["a node is running on this directory", "--node URL"]);
    for args in [vec!["compact"], vec!["import", room, "x"]] {
        std::fs::write(work.join("x"), [0u8, 0]).unwrap();
        let out = run({
            let mut c = bin(&work);
            c.args(&args).arg("--data-dir").arg(&dir);
            c
        })
        .await;
        assert_fails_with(&out, &["a node is running on this directory", "--node URL"]);
    }

    let out = run({
        let mut c = bin(&work);
        c.args(["export", room, "-o", "live.yjs", "--node", &url(addr)]);
        c
    })
    .await;
    assert_ok(&out);
    let exported = std::fs::read(work.join("live.yjs")).unwrap();
    assert_eq!(text_of_update(&exported), "live text");

    // Missing room: the node's 404 message comes through.
    let out = run({
        let mut c = bin(&work);
        c.args(["export", "missing", "-o", "m", "--node", &url(addr)]);
        c
    })
    .await;
    assert_fails_with(&out, &["404", "does not exist"]);

    // Import into another room over HTTP; a connected client sees it at once.
    let mut client = SyncClient::connect(addr, "imported").await;
    let out = run({
        let mut c = bin(&work);
        c.args(["import", "imported", "live.yjs", "--node", &url(addr)]);
        c
    })
    .await;
    assert_ok(&out);
    assert!(stdout(&out).contains("saved"), "{}", stdout(&out));
    client
        .pump_until("imported text", |doc| text_of(doc, "t") == "live text")
        .await;
    let meta = node.store().unwrap().meta("imported").await.unwrap();
    assert!(meta.is_some(), "committed before the answer");

    // --data-dir and --node together are a usage error.
    let out = run({
        let mut c = bin(&work);
        c.args(["export", room, "--node", &url(addr), "--data-dir"])
            .arg(&dir);
        c
    })
    .await;
    assert_fails_with(&out, &["cannot be used with"]);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compact_one_room_and_all_rooms() {
    let dir = fresh_dir("ops-compact");
    let work = fresh_dir("ops-compact-work");
    let node = start(config_on(&dir)).await;
    let addr = node.local_addr();
    write(&node, "a", "aaaaaaaaaaaaaaaaaaaa", 20).await;
    write(&node, "b", "bbbbbbbbbbbbbbbbbbbb", 20).await;
    let store = node.store().unwrap().clone();
    let log = |room: &'static str| {
        let store = store.clone();
        async move { store.meta(room).await.unwrap().unwrap().log_count }
    };
    assert_eq!((log("a").await, log("b").await), (20, 20));

    let out = run({
        let mut c = bin(&work);
        c.args(["compact", "a", "--node", &url(addr)]);
        c
    })
    .await;
    assert_ok(&out);
    assert!(stdout(&out).starts_with("\"a\": "), "{}", stdout(&out));
    assert_eq!((log("a").await, log("b").await), (0, 20));

    let out = run({
        let mut c = bin(&work);
        c.args(["compact", "--node", &url(addr)]);
        c
    })
    .await;
    assert_ok(&out);
    let text = stdout(&out);
    assert!(
        text.contains("\"a\": ") && text.contains("\"b\": "),
        "{text}"
    );
    assert_eq!((log("a").await, log("b").await), (0, 0));
    assert_eq!(room_text(&node, "a").await, "aaaaaaaaaaaaaaaaaaaa");

    let out = run({
        let mut c = bin(&work);
        c.args(["compact", "missing", "--node", &url(addr)]);
        c
    })
    .await;
    assert_fails_with(&out, &["404", "not stored"]);

    // More edits, then the stopped node's directory.
    write(&node, "a", "A", 1).await;
    write(&node, "b", "BB", 2).await;
    drop(store);
    node.shutdown().await;
    assert_eq!(stored_log_count(&dir, "a").await, 1);
    let out = run({
        let mut c = bin(&work);
        c.args(["compact", "b", "--data-dir"]).arg(&dir);
        c
    })
    .await;
    assert_ok(&out);
    assert_eq!(stored_log_count(&dir, "a").await, 1);
    assert_eq!(stored_log_count(&dir, "b").await, 0);
    let out = run({
        let mut c = bin(&work);
        c.args(["compact"]).env("YMESH_DATA_DIR", &dir);
        c
    })
    .await;
    assert_ok(&out);
    assert_eq!(stdout(&out).lines().count(), 2, "{}", stdout(&out));
    assert_eq!(stored_log_count(&dir, "a").await, 0);
    let out = run({
        let mut c = bin(&work);
        c.args(["compact", "missing", "--data-dir"]).arg(&dir);
        c
    })
    .await;
    assert_fails_with(&out, &["not stored"]);

    let node = start(config_on(&dir)).await;
    assert_eq!(room_text(&node, "a").await, "aaaaaaaaaaaaaaaaaaaaA");
    assert_eq!(room_text(&node, "b").await, "bbbbbbbbbbbbbbbbbbbbBB");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_clients_write_then_restore_and_serve() {
    let dir = fresh_dir("ops-backup");
    let work = fresh_dir("ops-backup-work");
    let node = start(config_on(&dir)).await;
    let addr = node.local_addr();
    write(&node, "kept", "written before the backup", 4).await;

    // A client keeps writing (each edit acknowledged) while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let edits = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn({
        let (stop, edits) = (stop.clone(), edits.clone());
        async move {
            let mut client = SyncClient::connect(addr, "busy").await;
            while !stop.load(Ordering::Relaxed) {
                client
                    .edit_acked(|txn| {
                        let t = txn.get_or_insert_text("t");
                        let len = t.len(txn);
                        t.insert(txn, len, "x");
                    })
                    .await;
                edits.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    wait_until("the client to write", || {
        edits.load(Ordering::Relaxed) >= 20
    })
    .await;
    let backup = work.join("first.backup");
    let out = run({
        let mut c = bin(&work);
        c.arg("backup").arg(&backup).arg("--data-dir").arg(&dir);
        c
    })
    .await;
    assert_ok(&out);
    assert!(stdout(&out).contains("2 rooms"), "{}", stdout(&out));
    let during = edits.load(Ordering::Relaxed);
    wait_until("more writes after the backup", || {
        edits.load(Ordering::Relaxed) >= during + 20
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    // Never overwrites.
    let out = run({
        let mut c = bin(&work);
        c.arg("backup").arg(&backup).arg("--data-dir").arg(&dir);
        c
    })
    .await;
    assert_fails_with(&out, &["already exists"]);

    // Restoring under the running node is refused.
    let out = run({
        let mut c = bin(&work);
        c.arg("restore-backup")
            .arg(&backup)
            .arg("--data-dir")
            .arg(&dir);
        c
    })
    .await;
    assert_fails_with(&out, &["a node is running on this directory", "stop it"]);
    node.shutdown().await;

    // Restore into a fresh directory and serve it.
    let fresh = work.join("restored");
    let out = run({
        let mut c = bin(&work);
        c.arg("restore-backup")
            .arg(&backup)
            .arg("--data-dir")
            .arg(&fresh);
        c
    })
    .await;
    assert_ok(&out);
    assert!(stdout(&out).contains("2 rooms"), "{}", stdout(&out));
    let node = start(config_on(&fresh)).await;
    assert_eq!(room_text(&node, "kept").await, "written before the backup");
    let busy = room_text(&node, "busy").await;
    assert!(
        busy.len() >= 20 && busy.chars().all(|c| c == 'x'),
        "busy room restored with {} edits",
        busy.len()
    );
    node.shutdown().await;

    // A store with rooms is only replaced with --force.
    let out = run({
        let mut c = bin(&work);
        c.arg("restore-backup")
            .arg(&backup)
            .arg("--data-dir")
            .arg(&dir);
        c
    })
    .await;
    assert_fails_with(&out, &["--force", "2 room(s)"]);
    let out = run({
        let mut c = bin(&work);
        c.arg("restore-backup")
            .arg(&backup)
            .arg("--force")
            .arg("--data-dir")
            .arg(&dir);
        c
    })
    .await;
    assert_ok(&out);
    let node = start(config_on(&dir)).await;
    assert_eq!(room_text(&node, "busy").await, busy, "the backup's state");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_files_that_are_not_ymesh_stores() {
    let work = fresh_dir("ops-foreign");
    let target = work.join("target");
    // Not SQLite at all.
    std::fs::write(work.join("junk"), vec![7u8; 8192]).unwrap();
    // SQLite, but someone else's database.
    {
        let conn = rusqlite::Connection::open(work.join("foreign.db")).unwrap();
        conn.execute_batch("CREATE TABLE rooms (x); INSERT INTO rooms VALUES (1);")
            .unwrap();
    }
    // Ours, but from a newer ymesh.
    {
        let newer = work.join("newer-dir");
        let store = SqliteStore::open(&newer, StoreOptions::default()).unwrap();
        store.close().await.unwrap();
        drop(store);
        let conn = rusqlite::Connection::open(newer.join("ymesh.sqlite3")).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode = DELETE;")
            .unwrap();
        drop(conn);
        std::fs::copy(newer.join("ymesh.sqlite3"), work.join("newer.db")).unwrap();
    }
    for (file, why) in [
        ("junk", "not a ymesh store"),
        ("foreign.db", "not a ymesh store"),
        ("newer.db", "newer than version"),
        ("missing.db", "no such file"),
    ] {
        let out = run({
            let mut c = bin(&work);
            c.args(["restore-backup", file, "--data-dir"]).arg(&target);
            c
        })
        .await;
        assert_fails_with(&out, &[why]);
        assert!(!target.join("ymesh.sqlite3").exists(), "{file}");
    }
    // Backing up something that is not a store is refused as well.
    let not_store = work.join("not-store");
    std::fs::create_dir_all(&not_store).unwrap();
    std::fs::copy(work.join("foreign.db"), not_store.join("ymesh.sqlite3")).unwrap();
    let out = run({
        let mut c = bin(&work);
        c.args(["backup", "b", "--data-dir"]).arg(&not_store);
        c
    })
    .await;
    assert_fails_with(&out, &["not a ymesh store"]);
    assert!(!work.join("b").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_keep_schema_and_incremental_vacuum() {
    let dir = fresh_dir("ops-backup-format");
    let node = start(config_on(&dir)).await;
    write(&node, "r", "content", 2).await;
    let dest: PathBuf = fresh_dir("ops-backup-format-out").join("b.sqlite3");
    let info = tokio::task::spawn_blocking({
        let (dir, dest) = (dir.clone(), dest.clone());
        move || ymesh::ops::backup(&dir, &dest)
    })
    .await
    .unwrap()
    .unwrap();
    node.shutdown().await;
    assert_eq!(
        (info.rooms, info.schema_version),
        (1, ymesh::store::SCHEMA_VERSION)
    );
    let conn = rusqlite::Connection::open(&dest).unwrap();
    let auto_vacuum: i64 = conn
        .pragma_query_value(None, "auto_vacuum", |r| r.get(0))
        .unwrap();
    assert_eq!(
        auto_vacuum, 2,
        "incremental auto-vacuum survives the backup"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_compaction_over_http() {
    // No admin token: loopback is enough.
    let node = start(config_on(&fresh_dir("ops-admin-open"))).await;
    let addr = node.local_addr();
    write(&node, "r", "abc", 3).await;
    let (status, body) = post_json(addr, "/rooms/r/compact", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["room"], "r");
    assert!(body["data"]["bytes_before"].as_u64().unwrap() > 0);
    assert!(body["data"]["bytes_after"].as_u64().unwrap() > 0);
    let (status, body) = post_json(addr, "/rooms/nope/compact", None).await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not stored"));
    // The document API stays public.
    let (status, _) = http(addr, "GET", "/rooms/r").await;
    assert_eq!(status, 200);
    // A non-loopback peer without a configured token gets 403: tests only talk to
    // loopback, so that branch is covered by the unit tests of `auth::admin_decision`.
    node.shutdown().await;

    // With an admin token, even loopback needs it.
    let mut cfg = config_on(&fresh_dir("ops-admin-token"));
    cfg.admin_token = Some("s3cret".into());
    let node = start(cfg).await;
    let addr = node.local_addr();
    write(&node, "r", "abc", 3).await;
    for auth in [None, Some("Bearer wrong"), Some("Basic s3cret")] {
        let (status, body) = post_json(addr, "/rooms/r/compact", auth).await;
        assert_eq!(status, 401, "{auth:?}: {body}");
        assert!(body["error"]["message"].is_string(), "{body}");
    }
    let (status, body) = post_json(addr, "/rooms/r/compact", Some("Bearer s3cret")).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = http(addr, "GET", "/rooms/r").await;
    assert_eq!(status, 200, "reading stays public");

    // The CLI: refused without the token, works with the flag or the env var.
    let work = fresh_dir("ops-admin-cli");
    let out = run({
        let mut c = bin(&work);
        c.args(["compact", "r", "--node", &url(addr)]);
        c
    })
    .await;
    assert_fails_with(&out, &["401", "Authorization: Bearer"]);
    let out = run({
        let mut c = bin(&work);
        c.args([
            "compact",
            "r",
            "--admin-token",
            "s3cret",
            "--node",
            &url(addr),
        ]);
        c
    })
    .await;
    assert_ok(&out);
    let out = run({
        let mut c = bin(&work);
        c.args(["compact", "--node", &url(addr)])
            .env("YMESH_ADMIN_TOKEN", "s3cret");
        c
    })
    .await;
    assert_ok(&out);
    assert!(stdout(&out).contains("\"r\": "), "{}", stdout(&out));
    node.shutdown().await;

    // A node without a store has nothing to compact.
    let mut cfg = test_config();
    cfg.memory = true;
    let node = start(cfg).await;
    write(&node, "r", "abc", 1).await;
    let (status, body) = post_json(node.local_addr(), "/rooms/r/compact", None).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("--memory"));
    node.shutdown().await;
}
