//! Faults for real: a full disk (a tiny tmpfs as the data directory), unwritable storage (a
//! read-only bind mount), a corrupted room blob and a truncated database file. The mount
//! tests need root and util-linux (`unshare`, `mount`); with `CI=true` they must run, never
//! skip. Every mount lives in a private mount namespace that dies with the node.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use ymesh::protocol::Message;
use yrs::updates::decoder::Decode;
use yrs::{Text, Transact, WriteTxn};

/// Whether this machine can run the mount tests; with CI=true a "no" is a failure.
fn can_mount(test: &str) -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    let tools = ["unshare", "mount"].iter().all(|t| {
        Command::new(t)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    });
    let ok = root && tools;
    if !ok {
        let why = format!(
            "{test}: needs root and util-linux (unshare, mount): root={root} tools={tools}"
        );
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{why}; with CI=true this test must run");
        }
        eprintln!("skipping {why}");
    }
    ok
}

/// Runs `script` (sh, `$1` = data dir, `$2` = ymesh binary) in a private mount namespace; the
/// script ends by exec'ing the node. Returns the child (its pid is the node's) and the port.
fn spawn_in_namespace(dir: &Path, script: &str) -> (Child, u16) {
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(dir)
        .arg(env!("CARGO_BIN_EXE_ymesh"));
    let (child, _, port) = spawn_until_ready(cmd);
    (child, port)
}

/// Reads a room's stored content straight from a database file (snapshot + log).
fn stored_text(db: &Path, room: &str) -> String {
    // Read-write flags (a WAL reader needs the shared-memory file), but only reads.
    let conn = rusqlite::Connection::open(db).unwrap();
    let (id, snapshot): (i64, Option<Vec<u8>>) = conn
        .query_row(
            "SELECT r.id, s.data FROM rooms r LEFT JOIN snapshots s ON s.room_id = r.id
             WHERE r.name = ?1",
            [room],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let mut stmt = conn
        .prepare("SELECT data, count FROM updates WHERE room_id = ?1 ORDER BY seq")
        .unwrap();
    let rows: Vec<(Vec<u8>, i64)> = stmt
        .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    // A row holds `count` updates: the update itself when 1, else each length-prefixed
    // (docs/storage.md, the `updates` table).
    let mut updates: Vec<Vec<u8>> = Vec::new();
    for (data, count) in rows {
        if count == 1 {
            updates.push(data);
            continue;
        }
        let mut rest = &data[..];
        for _ in 0..count {
            let (mut len, mut shift) = (0usize, 0);
            loop {
                let b = rest[0];
                rest = &rest[1..];
                len |= usize::from(b & 0x7f) << shift;
                shift += 7;
                if b & 0x80 == 0 {
                    break;
                }
            }
            updates.push(rest[..len].to_vec());
            rest = &rest[len..];
        }
        assert!(
            rest.is_empty(),
            "a log row of {count} updates has bytes left over"
        );
    }
    let doc = yrs::Doc::new();
    {
        let mut txn = doc.transact_mut();
        for blob in snapshot.iter().chain(updates.iter()) {
            txn.apply_update(yrs::Update::decode_v1(blob).unwrap())
                .unwrap();
        }
    }
    text_of(&doc, "t")
}

fn room_row(v: &serde_json::Value, room: &str) -> serde_json::Value {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == room)
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_keeps_the_room_syncing_and_releases_echoes_once_written() {
    if !can_mount("full_disk") {
        return;
    }
    let dir = fresh_dir("full");
    // 8 MiB tmpfs, 7 MiB of it taken by a filler file the test deletes later.
    let (mut child, port) = spawn_in_namespace(
        &dir,
        r#"mount -t tmpfs -o size=8m tmpfs "$1" && dd if=/dev/zero of="$1/filler" bs=1024 count=7168 status=none && exec "$2" serve --port 0 --data-dir "$1""#,
    );
    let addr = ([127, 0, 0, 1], port).into();
    let mut writer = SyncClient::connect(addr, "full").await;
    let mut reader = SyncClient::connect(addr, "full").await;
    let chunk = "x".repeat(64 * 1024);
    // Write until the disk is full: the 102 echo no longer comes back.
    let mut withheld = None;
    for i in 0u64..64 {
        let c = chunk.clone();
        writer
            .edit(move |t| {
                let text = t.get_or_insert_text("t");
                let len = text.len(t);
                text.insert(t, len, &c);
            })
            .await;
        let marker = vec![102u8, 2, 0x80 | (i as u8 & 0x7f), (i >> 7) as u8 + 1];
        writer.raw.send(marker.clone()).await;
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut echoed = false;
        while Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_millis(200), writer.pump_one()).await {
                Ok(Message::SyncStatus(p)) if p[..] == marker[2..] => {
                    echoed = true;
                    break;
                }
                _ => {}
            }
        }
        if !echoed {
            withheld = Some(marker);
            break;
        }
    }
    let marker = withheld.expect("the disk filled up and an echo was withheld");
    // The node is up, says what is wrong, and the room keeps syncing in memory.
    let (status, _) = get_json(addr, "/healthz").await;
    assert_eq!(status, 200);
    let (_, v) = get_json(addr, "/rooms").await;
    let row = room_row(&v, "full");
    assert!(
        row["store_error"]["error"].is_string(),
        "GET /rooms shows the failure: {row}"
    );
    let want_len = text_of(&writer.doc, "t").len();
    reader
        .pump_until("in-memory sync", |d| text_of(d, "t").len() == want_len)
        .await;
    // Space comes back: the node rewrites the room and releases the withheld echo.
    let filler = PathBuf::from(format!("/proc/{}/root", child.id()))
        .join(dir.strip_prefix("/").unwrap().join("filler"));
    std::fs::remove_file(&filler).expect("remove the filler inside the namespace");
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        assert!(
            Instant::now() < deadline,
            "withheld echo released after repair"
        );
        if let Ok(Message::SyncStatus(p)) =
            tokio::time::timeout(Duration::from_millis(200), writer.pump_one()).await
        {
            if p[..] == marker[2..] {
                break;
            }
        }
    }
    let (_, v) = get_json(addr, "/rooms").await;
    assert!(room_row(&v, "full")["store_error"].is_null());
    // Everything the writer sent is on disk.
    // SQLite resolves symlinks in paths (/proc/PID/root would lead back to our own
    // namespace), so copy the database and its WAL out of the node's namespace first.
    let inside =
        PathBuf::from(format!("/proc/{}/root", child.id())).join(dir.strip_prefix("/").unwrap());
    let copy = fresh_dir("full-copy");
    for f in ["ymesh.sqlite3", "ymesh.sqlite3-wal"] {
        if inside.join(f).exists() {
            std::fs::copy(inside.join(f), copy.join(f)).unwrap();
        }
    }
    assert_eq!(
        stored_text(&copy.join("ymesh.sqlite3"), "full").len(),
        want_len
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn read_only_storage_is_a_clear_start_error() {
    if !can_mount("read_only") {
        return;
    }
    let dir = fresh_dir("ro");
    std::fs::write(dir.join("keep"), b"x").unwrap();
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && exec "$2" serve --port 0 --data-dir "$1""#)
        .arg("sh")
        .arg(&dir)
        .arg(env!("CARGO_BIN_EXE_ymesh"))
        .env_remove("YMESH_DATA_DIR")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a node cannot run on read-only storage"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot open the store"), "{err}");
    assert!(err.contains(&dir.display().to_string()), "{err}");
    assert!(!err.contains("listening on"), "{err}");
}

#[tokio::test]
async fn a_corrupt_room_fails_alone() {
    let cfg = test_config();
    let dir = cfg.data_dir.clone();
    let node = start(cfg).await;
    for room in ["good", "bad"] {
        let mut c = SyncClient::connect(node.local_addr(), room).await;
        let text = format!("{room} content");
        c.edit_acked(move |t| t.get_or_insert_text("t").insert(t, 0, &text))
            .await;
    }
    node.shutdown().await;
    {
        let conn = rusqlite::Connection::open(dir.join("ymesh.sqlite3")).unwrap();
        let n = conn
            .execute(
                "UPDATE updates SET data = x'00ff13ff' WHERE room_id = (SELECT id FROM rooms WHERE name = 'bad')",
                [],
            )
            .unwrap();
        assert!(n > 0);
    }
    let mut cfg = test_config();
    cfg.data_dir = dir;
    let node = start(cfg).await;
    let addr = node.local_addr();
    let (status, v) = get_json(addr, "/rooms/bad?format=json").await;
    assert_eq!(status, 503, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("bad"));
    let mut ws = RawClient::connect(addr, "/rooms/bad").await;
    let closed = ws.expect_close().await;
    assert_eq!(closed.code, 1011, "{closed:?}");
    assert!(!closed.reason.is_empty());
    let good = SyncClient::connect(addr, "good").await;
    assert_eq!(text_of(&good.doc, "t"), "good content");
    let (status, _) = get_json(addr, "/healthz").await;
    assert_eq!(status, 200);
    node.shutdown().await;
}

#[tokio::test]
async fn a_truncated_database_stops_start_up_and_is_not_touched() {
    let cfg = test_config();
    let dir = cfg.data_dir.clone();
    let node = start(cfg).await;
    for i in 0..30 {
        let mut c = SyncClient::connect(node.local_addr(), &format!("r{i}")).await;
        let text = "y".repeat(4096);
        c.edit_acked(move |t| t.get_or_insert_text("t").insert(t, 0, &text))
            .await;
    }
    node.shutdown().await;
    let db = dir.join("ymesh.sqlite3");
    // Fold the WAL into the main file, as after a clean checkpoint, then cut it short.
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
    }
    let len = std::fs::metadata(&db).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    file.set_len(len / 2).unwrap();
    drop(file);
    let before = std::fs::read(&db).unwrap();
    let mut cfg = test_config();
    cfg.data_dir = dir.clone();
    let err = ymesh::Node::start(cfg).await.unwrap_err().to_string();
    assert!(err.contains("ymesh.sqlite3"), "{err}");
    assert!(err.contains("truncated"), "{err}");
    assert_eq!(std::fs::read(&db).unwrap(), before, "never overwritten");
}
