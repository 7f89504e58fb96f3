use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rusqlite::Connection;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

use super::*;

/// A unique directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "ymesh-store-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn db(&self) -> PathBuf {
        self.0.join(DB_FILE_NAME)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A document that produces text updates the way a room would store them.
struct Writer {
    doc: Doc,
}

impl Writer {
    fn new(client_id: u64) -> Writer {
        Writer {
            doc: Doc::with_client_id(client_id),
        }
    }

    /// Appends `s` to the text; returns the update and the state vector after it.
    fn push(&self, s: &str) -> (Bytes, Vec<u8>) {
        let text = self.doc.get_or_insert_text("t");
        let before = self.doc.transact().state_vector();
        {
            let mut txn = self.doc.transact_mut();
            text.push(&mut txn, s);
        }
        let txn = self.doc.transact();
        (
            Bytes::from(txn.encode_diff_v1(&before)),
            txn.state_vector().encode_v1(),
        )
    }

    fn append(&self, store: &dyn Store, room: &str, s: &str) -> CommitTicket {
        let (update, sv) = self.push(s);
        store.append(room, update, sv).expect("append")
    }
}

fn rebuild(loaded: &LoadedRoom) -> Doc {
    let doc = Doc::new();
    {
        let mut txn = doc.transact_mut();
        for blob in loaded.snapshot.iter().chain(loaded.updates.iter()) {
            txn.apply_update(Update::decode_v1(blob).expect("decode"))
                .expect("apply");
        }
    }
    doc
}

fn text_of(loaded: &LoadedRoom) -> String {
    let doc = rebuild(loaded);
    let text = doc.get_or_insert_text("t");
    let txn = doc.transact();
    text.get_string(&txn)
}

fn opts() -> StoreOptions {
    StoreOptions::default()
}

fn raw(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("raw open");
    conn.busy_timeout(Duration::from_secs(5)).expect("busy");
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_wait_load_round_trip() {
    let dir = TempDir::new("roundtrip");
    let store = SqliteStore::open(dir.path(), opts()).expect("open");
    let w = Writer::new(1);
    let mut last = CommitTicket::NONE;
    for s in ["hello", " ", "world"] {
        last = w.append(&store, "room-1", s);
    }
    store.wait_durable(last).await.expect("durable");
    let loaded = store.load("room-1").await.expect("load").expect("stored");
    assert_eq!(loaded.snapshot, None);
    assert_eq!(loaded.updates.len(), 3);
    assert_eq!(text_of(&loaded), "hello world");
    assert!(store.load("missing").await.expect("load").is_none());
    assert!(store.wait_durable(CommitTicket::NONE).await.is_ok());
    store.close().await.expect("close");
}

/// A burst of loads (a thousand clients opening a thousand rooms at once) reuses the pooled
/// read connections: reads beyond the pool wait for one instead of opening their own (each
/// connection and blocking thread opened for one read left memory behind).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_loads_opens_no_more_read_connections_than_the_pool() {
    let dir = TempDir::new("readburst");
    let store = Arc::new(
        SqliteStore::open(
            dir.path(),
            StoreOptions {
                max_idle_readers: 2,
                ..opts()
            },
        )
        .expect("open"),
    );
    // Enough log for each load to take a while, so that the loads overlap.
    let w = Writer::new(1);
    let mut last = CommitTicket::NONE;
    for _ in 0..400 {
        last = w.append(&*store, "stored", "some typing ");
    }
    store.wait_durable(last).await.expect("durable");
    let loads: Vec<_> = (0..64)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let room = if i % 2 == 0 {
                    "stored".to_owned()
                } else {
                    format!("new-{i}")
                };
                store.load(&room).await.expect("load").is_some()
            })
        })
        .collect();
    let mut found = 0;
    for l in loads {
        found += usize::from(l.await.expect("join"));
    }
    assert_eq!(found, 32);
    let opened = store.stats().read_connections;
    assert!(
        opened <= 2,
        "{opened} read connections opened for 64 loads with a pool of 2"
    );
    store.close().await.expect("close");
}

/// A store whose writer holds every batch nobody waits for far longer than any test runs.
fn holding_opts() -> StoreOptions {
    StoreOptions {
        commit_delay: Duration::from_secs(600),
        ..opts()
    }
}

/// Appends nobody waits for are gathered while the writer holds its batch open, and one
/// `wait_durable` ends the hold at once: all of them in one commit, and the waited-for ticket
/// is on disk (another connection reads it) when the wait resolves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_nobody_waits_for_share_one_commit_and_a_waiter_ends_the_hold() {
    let dir = TempDir::new("hold");
    let store = SqliteStore::open(dir.path(), holding_opts()).expect("open");
    let writers: Vec<Writer> = (0..10).map(|i| Writer::new(100 + i)).collect();
    let mut last = CommitTicket::NONE;
    for round in 0..10 {
        for (i, w) in writers.iter().enumerate() {
            last = w.append(&store, &format!("room-{i}"), &format!("{round} "));
        }
    }
    assert_eq!(store.stats().commits, 0, "nothing waited for yet");
    tokio::time::timeout(Duration::from_secs(30), store.wait_durable(last))
        .await
        .expect("a waiter ends the hold; it does not wait out commit_delay")
        .expect("durable");
    let stats = store.stats();
    assert_eq!((stats.commits, stats.appends), (1, 100), "{stats:?}");
    // One log row per room for the commit, holding that room's ten updates.
    let (rows, on_disk): (i64, i64) = raw(&dir.path().join(DB_FILE_NAME))
        .query_row("SELECT count(*), sum(count) FROM updates", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("count");
    assert_eq!((rows, on_disk), (10, 100));
    for i in 0..10 {
        let loaded = store
            .load(&format!("room-{i}"))
            .await
            .expect("load")
            .expect("stored");
        assert_eq!(loaded.updates.len(), 10, "room-{i}: one update per append");
        let want: String = (0..10).map(|round| format!("{round} ")).collect();
        assert_eq!(text_of(&loaded), want, "room-{i}: in append order");
    }
    store.close().await.expect("close");
}

/// While the writer holds a batch, asking whether a ticket is durable without waiting (what
/// a 102 echo does first) also ends the hold, and a request with a reply is answered
/// without waiting out the delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_or_a_request_ends_the_hold() {
    use futures_util::FutureExt;
    let dir = TempDir::new("hold-ask");
    let store = SqliteStore::open(dir.path(), holding_opts()).expect("open");
    let w = Writer::new(7);
    let t = w.append(&store, "a", "x");
    assert!(
        store.wait_durable(t).now_or_never().is_none(),
        "not on disk yet"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.stats().durable_ticket < t.0 {
        assert!(Instant::now() < deadline, "asking did not end the hold");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let t2 = w.append(&store, "a", "y");
    let compacted = tokio::time::timeout(Duration::from_secs(30), store.compact("a"))
        .await
        .expect("a request ends the hold")
        .expect("compact");
    assert!(compacted.1 > 0);
    assert!(
        store.stats().durable_ticket >= t2.0,
        "queued before the request"
    );
    store.close().await.expect("close");
}

/// Closing commits what the writer holds, without waiting out the delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_commits_a_held_batch() {
    let dir = TempDir::new("hold-close");
    let store = SqliteStore::open(dir.path(), holding_opts()).expect("open");
    let w = Writer::new(9);
    for s in ["held ", "until ", "close"] {
        w.append(&store, "r", s);
    }
    tokio::time::timeout(Duration::from_secs(30), store.close())
        .await
        .expect("close does not wait out commit_delay")
        .expect("close");
    drop(store);
    let store = SqliteStore::open(dir.path(), opts()).expect("reopen");
    let loaded = store.load("r").await.expect("load").expect("stored");
    assert_eq!(text_of(&loaded), "held until close");
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_are_ordered_and_resolve_only_after_commit() {
    let dir = TempDir::new("tickets");
    let store = Arc::new(SqliteStore::open(dir.path(), opts()).expect("open"));
    let w = Writer::new(7);
    let tickets: Vec<CommitTicket> = (0..200)
        .map(|i| w.append(&*store, "r", &format!("{i},")))
        .collect();
    assert!(tickets.windows(2).all(|p| p[0] < p[1]), "tickets increase");
    assert_eq!(tickets[0], CommitTicket(1));

    // Whenever a ticket resolves, a separate connection sees at least that many updates.
    let check = raw(&dir.db());
    for t in &tickets {
        store.wait_durable(*t).await.expect("durable");
        let n: i64 = check
            .query_row("SELECT sum(count) FROM updates", [], |r| r.get(0))
            .expect("count");
        assert!(
            n as u64 >= t.0,
            "ticket {} resolved with only {n} updates committed",
            t.0
        );
    }

    // Hold SQLite's write lock from outside: the commit cannot happen, so nothing resolves.
    let blocker = raw(&dir.db());
    blocker.execute_batch("BEGIN IMMEDIATE").expect("lock");
    let t = w.append(&*store, "r", "blocked");
    let waiter = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.wait_durable(t).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "resolved before its commit");
    blocker.execute_batch("ROLLBACK").expect("unlock");
    waiter.await.expect("join").expect("durable after unlock");
    let loaded = store.load("r").await.expect("load").expect("stored");
    assert!(text_of(&loaded).ends_with("199,blocked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_commit_is_reported_to_its_waiters() {
    let dir = TempDir::new("fail");
    let store = SqliteStore::open(
        dir.path(),
        StoreOptions {
            busy_timeout: Duration::from_millis(50),
            ..opts()
        },
    )
    .expect("open");
    let w = Writer::new(3);
    let ok = w.append(&store, "r", "a");
    store.wait_durable(ok).await.expect("durable");

    let blocker = raw(&dir.db());
    blocker.execute_batch("BEGIN IMMEDIATE").expect("lock");
    let failed = w.append(&store, "r", "b");
    let err = store.wait_durable(failed).await.expect_err("must fail");
    assert!(matches!(err, StoreError::CommitFailed(_)), "{err}");
    assert!(err.to_string().contains("commit failed"), "{err}");
    blocker.execute_batch("ROLLBACK").expect("unlock");

    // Earlier tickets stay good, the writer carries on.
    store.wait_durable(ok).await.expect("still durable");
    let later = w.append(&store, "r", "c");
    store.wait_durable(later).await.expect("durable again");
    let stats = store.stats();
    assert_eq!(stats.failed_commits, 1);
    assert!(stats.commits >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_are_group_committed() {
    let dir = TempDir::new("batch");
    let store = Arc::new(SqliteStore::open(dir.path(), opts()).expect("open"));
    const THREADS: u64 = 4;
    const PER_THREAD: usize = 2000;
    let handles: Vec<_> = (0..THREADS)
        .map(|n| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let w = Writer::new(100 + n);
                let room = format!("room-{n}");
                let mut last = CommitTicket::NONE;
                for i in 0..PER_THREAD {
                    let t = w.append(&*store, &room, &format!("{i} "));
                    assert!(t > last);
                    last = t;
                }
                last
            })
        })
        .collect();
    let mut last = Vec::new();
    for h in handles {
        last.push(h.join().expect("thread"));
    }
    for t in last {
        store.wait_durable(t).await.expect("durable");
    }
    let stats = store.stats();
    let total = THREADS * PER_THREAD as u64;
    assert_eq!(stats.appends, total);
    assert_eq!(stats.durable_ticket, total);
    assert!(
        stats.commits * 10 <= total,
        "expected batching, got {} commits for {total} appends",
        stats.commits
    );
    assert!(stats.max_batch > 10, "{stats:?}");
    // Past the default threshold of 500, rooms were compacted along the way.
    assert!(stats.compactions >= THREADS, "{stats:?}");
    let expected: String = (0..PER_THREAD).map(|i| format!("{i} ")).collect();
    for n in 0..THREADS {
        let loaded = store
            .load(&format!("room-{n}"))
            .await
            .expect("load")
            .expect("stored");
        assert_eq!(text_of(&loaded), expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_data() {
    let dir = TempDir::new("reopen");
    let w = Writer::new(9);
    {
        let store = SqliteStore::open(dir.path(), opts()).expect("open");
        let t = w.append(&store, "doc", "saved");
        store.wait_durable(t).await.expect("durable");
        // Dropped without close: Drop stops the writer and releases the lock.
    }
    {
        let store = SqliteStore::open(dir.path(), opts()).expect("reopen");
        let loaded = store.load("doc").await.expect("load").expect("stored");
        assert_eq!(text_of(&loaded), "saved");
        // Queued but not awaited: close commits it.
        w.append(&store, "doc", " twice");
        store.close().await.expect("close");
    }
    let store = SqliteStore::open(dir.path(), opts()).expect("reopen again");
    let loaded = store.load("doc").await.expect("load").expect("stored");
    assert_eq!(text_of(&loaded), "saved twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_preserves_content() {
    let dir = TempDir::new("compact");
    let store = SqliteStore::open(
        dir.path(),
        StoreOptions {
            compact_log_count: 1_000_000,
            compact_log_bytes: u64::MAX,
            ..opts()
        },
    )
    .expect("open");
    let w = Writer::new(11);
    let mut last = CommitTicket::NONE;
    for i in 0..50 {
        last = w.append(&store, "c", &format!("line {i}\n"));
    }
    store.wait_durable(last).await.expect("durable");
    let before_meta = store.meta("c").await.expect("meta").expect("stored");
    assert_eq!(before_meta.log_count, 50);
    let expected = text_of(&store.load("c").await.expect("load").expect("stored"));

    let (before, after) = store.compact("c").await.expect("compact");
    assert_eq!(before, before_meta.bytes);
    assert!(after > 0 && after < before, "{before} -> {after}");
    let meta = store.meta("c").await.expect("meta").expect("stored");
    assert_eq!(meta.log_count, 0);
    assert_eq!(meta.bytes, after);
    assert_eq!(meta.digest, before_meta.digest);
    let loaded = store.load("c").await.expect("load").expect("stored");
    assert!(loaded.snapshot.is_some());
    assert!(loaded.updates.is_empty());
    assert_eq!(text_of(&loaded), expected);

    // Snapshot + a new log tail.
    let t = w.append(&store, "c", "tail");
    store.wait_durable(t).await.expect("durable");
    let loaded = store.load("c").await.expect("load").expect("stored");
    assert_eq!(loaded.updates.len(), 1);
    assert_eq!(text_of(&loaded), format!("{expected}tail"));

    assert_eq!(
        store.compact("never-stored").await.expect("compact"),
        (0, 0)
    );
    assert_eq!(store.stats().compactions, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_compaction_past_thresholds() {
    let dir = TempDir::new("auto");
    let store = SqliteStore::open(
        dir.path(),
        StoreOptions {
            compact_log_count: 10,
            ..opts()
        },
    )
    .expect("open");
    let w = Writer::new(12);
    let mut expected = String::new();
    for i in 0..25 {
        let s = format!("{i};");
        expected.push_str(&s);
        let t = w.append(&store, "auto", &s);
        store.wait_durable(t).await.expect("durable");
    }
    let meta = store.meta("auto").await.expect("meta").expect("stored");
    assert!(meta.log_count < 10, "log_count {}", meta.log_count);
    assert_eq!(store.stats().compactions, 2);
    let loaded = store.load("auto").await.expect("load").expect("stored");
    assert!(loaded.snapshot.is_some());
    assert_eq!(text_of(&loaded), expected);
    store.close().await.expect("close");

    // The byte threshold too.
    let dir = TempDir::new("auto-bytes");
    let store = SqliteStore::open(
        dir.path(),
        StoreOptions {
            compact_log_bytes: 1000,
            ..opts()
        },
    )
    .expect("open");
    let big = "x".repeat(600);
    for _ in 0..2 {
        let t = w.append(&store, "big", &big);
        store.wait_durable(t).await.expect("durable");
    }
    // Automatic compaction runs right after the commit that crossed the threshold, before the
    // writer's next batch: one more committed append is a barrier.
    let t = Writer::new(13).append(&store, "barrier", ".");
    store.wait_durable(t).await.expect("durable");
    assert_eq!(store.stats().compactions, 1);
    let meta = store.meta("big").await.expect("meta").expect("stored");
    assert_eq!(meta.log_count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_meta_describe_rooms() {
    let dir = TempDir::new("meta");
    let store = SqliteStore::open(dir.path(), opts()).expect("open");
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;

    // Two clients; room "x" gets A's update then B's, room "y" the reverse: equal documents.
    let a = Writer::new(21);
    let b = Writer::new(22);
    let (ua, sva) = a.push("from a");
    let (ub, svb) = b.push("from b");
    let merged_sv = |first: &[u8], second: &[u8]| {
        let doc = Doc::new();
        let mut txn = doc.transact_mut();
        for u in [first, second] {
            txn.apply_update(Update::decode_v1(u).expect("decode"))
                .expect("apply");
        }
        txn.state_vector().encode_v1()
    };
    store.append("x", ua.clone(), sva.clone()).expect("append");
    let tx = store
        .append("x", ub.clone(), merged_sv(&ua, &ub))
        .expect("append");
    store.append("y", ub.clone(), svb).expect("append");
    let ty = store
        .append("y", ua.clone(), merged_sv(&ub, &ua))
        .expect("append");
    store.wait_durable(tx.max(ty)).await.expect("durable");

    let x = store.meta("x").await.expect("meta").expect("stored");
    let y = store.meta("y").await.expect("meta").expect("stored");
    assert_eq!(x.bytes, (ua.len() + ub.len()) as u64);
    assert_eq!(x.log_count, 2);
    let end = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    assert!(
        (start..=end).contains(&x.updated_at_ms),
        "{} not in {start}..={end}",
        x.updated_at_ms
    );
    let sv = StateVector::decode_v1(&x.state_vector).expect("state vector decodes");
    let loaded_x = rebuild(&store.load("x").await.expect("load").expect("stored"));
    assert_eq!(sv, loaded_x.transact().state_vector());
    assert_eq!(x.digest.len(), 64);
    assert_eq!(x.digest, digest_hex(&x.state_vector));
    assert_eq!(x.state_vector, y.state_vector, "canonical encoding");
    assert_eq!(x.digest, y.digest, "equal documents, equal digests");

    let list = store.list().await.expect("list");
    assert_eq!(
        list.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        ["x", "y"]
    );
    assert_eq!(list[0], x);

    // Content changes: the digest changes.
    let t = a.append(&store, "x", " more");
    store.wait_durable(t).await.expect("durable");
    let x2 = store.meta("x").await.expect("meta").expect("stored");
    assert_ne!(x2.digest, x.digest);
    assert!(x2.bytes > x.bytes);
    assert!(x2.updated_at_ms >= x.updated_at_ms);
    assert!(store.meta("nope").await.expect("meta").is_none());
}

#[test]
fn canonical_state_vector_round_trips() {
    let doc = Doc::new();
    let text = doc.get_or_insert_text("t");
    let mut all = Vec::new();
    for id in [5u64, 900_000, 3, 77] {
        let w = Writer::new(id);
        let (u, _) = w.push("z");
        all.push(u);
    }
    {
        let mut txn = doc.transact_mut();
        for u in &all {
            txn.apply_update(Update::decode_v1(u).expect("decode"))
                .expect("apply");
        }
        text.push(&mut txn, "!");
    }
    let sv = doc.transact().state_vector();
    let canonical = canonical_state_vector("r", &sv.encode_v1());
    assert_eq!(StateVector::decode_v1(&canonical).expect("decode"), sv);
    // Undecodable bytes are kept as they are.
    assert_eq!(canonical_state_vector("r", &[0xff]), vec![0xff]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_since_reports_rooms_after_a_marker() {
    let dir = TempDir::new("changed");
    let store = SqliteStore::open(dir.path(), opts()).expect("open");
    assert_eq!(store.changed_since(0).await.expect("changed"), (vec![], 0));
    let w = Writer::new(31);
    w.append(&store, "a", "1");
    let t = w.append(&store, "b", "2");
    store.wait_durable(t).await.expect("durable");
    let (mut rooms, m1) = store.changed_since(0).await.expect("changed");
    rooms.sort();
    assert_eq!(rooms, ["a", "b"]);
    assert!(m1 > 0);
    assert_eq!(
        store.changed_since(m1).await.expect("changed"),
        (vec![], m1)
    );

    w.append(&store, "c", "3");
    let t = w.append(&store, "a", "4");
    store.wait_durable(t).await.expect("durable");
    let (mut rooms, m2) = store.changed_since(m1).await.expect("changed");
    rooms.sort();
    assert_eq!(rooms, ["a", "c"]);
    assert!(m2 > m1);

    // Compaction is not a change.
    store.compact("a").await.expect("compact");
    assert_eq!(
        store.changed_since(m2).await.expect("changed"),
        (vec![], m2)
    );
    store.close().await.expect("close");
    drop(store);

    // Markers survive a restart.
    let store = SqliteStore::open(dir.path(), opts()).expect("reopen");
    assert_eq!(
        store.changed_since(m2).await.expect("changed"),
        (vec![], m2)
    );
    let t = w.append(&store, "b", "5");
    store.wait_durable(t).await.expect("durable");
    let (rooms, m3) = store.changed_since(m2).await.expect("changed");
    assert_eq!(rooms, ["b"]);
    assert!(m3 > m2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_records_a_tombstone_found_after_older_markers_and_cleared_by_an_append() {
    use super::Tombstone;
    let dir = TempDir::new("tombstones");
    let store = SqliteStore::open(dir.path(), opts()).expect("open");
    let w = Writer::new(41);
    let t = w.append(&store, "gone", "1");
    store.wait_durable(t).await.expect("durable");
    let (_, before) = store.changed_since(0).await.expect("changed");
    let (stored, existed) = store
        .delete_room(Tombstone {
            room: "gone".into(),
            deleted_ms: 5,
            state_vector: vec![0],
            origin: "n".into(),
        })
        .await
        .expect("delete");
    assert!(existed);
    // The stored state vector went into the tombstone; the room's data is gone.
    assert_ne!(stored.state_vector, vec![0]);
    assert!(store.load("gone").await.expect("load").is_none());
    assert_eq!(store.list().await.expect("list").len(), 0);
    // A deletion is a change: found after the older marker, not after the newer one.
    let (_, after) = store.changed_since(0).await.expect("changed");
    assert!(after > before);
    let found = store.tombstones_since(before).await.expect("since");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].room, "gone");
    assert!(store
        .tombstones_since(after)
        .await
        .expect("since")
        .is_empty());
    assert_eq!(store.tombstones().await.expect("all").len(), 1);
    // An append (an edit the deletion did not cover) removes the tombstone; it survives
    // a restart until then.
    store.close().await.expect("close");
    drop(store);
    let store = SqliteStore::open(dir.path(), opts()).expect("reopen");
    assert_eq!(store.tombstones().await.expect("all").len(), 1);
    let t = w.append(&store, "gone", "2");
    store.wait_durable(t).await.expect("durable");
    assert!(store.tombstones().await.expect("all").is_empty());
    assert_eq!(store.purge_tombstones(u64::MAX).await.expect("purge"), 0);
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_open_of_a_directory_is_locked() {
    let dir = TempDir::new("lock");
    let first = SqliteStore::open(dir.path(), opts()).expect("open");
    // Same process, second open file description: flock conflicts.
    let err = SqliteStore::open(dir.path(), opts()).expect_err("second open must fail");
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("locked"), "{msg}");
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    assert!(msg.contains(&std::process::id().to_string()), "{msg}");

    let w = Writer::new(41);
    let t = w.append(&first, "r", "kept");
    first.wait_durable(t).await.expect("durable");
    drop(first);
    // The lock file stays; the kernel lock does not.
    assert!(dir.path().join(LOCK_FILE_NAME).exists());
    let second = SqliteStore::open(dir.path(), opts()).expect("open after drop");
    let loaded = second.load("r").await.expect("load").expect("stored");
    assert_eq!(text_of(&loaded), "kept");
}

/// A dropped store lets go of its directory only after every connection to the database
/// closed: the next open never finds the file mid-checkpoint (it once found it "truncated",
/// when reader threads closed their connections after the lock was released).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_store_is_whole_when_the_directory_is_opened_again() {
    let dir = TempDir::new("reopen");
    let w = Writer::new(43);
    for round in 0..30 {
        let store = SqliteStore::open(dir.path(), opts()).expect("open");
        if round > 0 {
            let loaded = store.load("r").await.expect("load").expect("stored");
            assert_eq!(text_of(&loaded), "x".repeat(round), "round {round}");
        }
        let t = w.append(&store, "r", "x");
        store.wait_durable(t).await.expect("durable");
        drop(store);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_schema_version_is_refused() {
    let dir = TempDir::new("schema");
    {
        let store = SqliteStore::open(dir.path(), opts()).expect("open");
        let t = Writer::new(51).append(&store, "r", "v1");
        store.wait_durable(t).await.expect("durable");
        store.close().await.expect("close");
    }
    raw(&dir.db())
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .expect("bump");
    let err = SqliteStore::open(dir.path(), opts()).expect_err("must refuse");
    assert!(
        matches!(
            err,
            StoreError::SchemaTooNew {
                found,
                supported,
                ..
            } if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("version {}", SCHEMA_VERSION + 1))
            && msg.contains(&format!("version {SCHEMA_VERSION}")),
        "{msg}"
    );
    assert!(msg.contains(DB_FILE_NAME), "{msg}");
    let version: i64 = raw(&dir.db())
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("version");
    assert_eq!(version, SCHEMA_VERSION + 1, "left untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_sqlite_is_refused_and_untouched() {
    let dir = TempDir::new("notdb");
    std::fs::create_dir_all(dir.path()).expect("mkdir");
    let content = b"these are my notes, not a database\n".repeat(10);
    std::fs::write(dir.db(), &content).expect("write");
    let err = SqliteStore::open(dir.path(), opts()).expect_err("must refuse");
    assert!(matches!(err, StoreError::NotAStore { .. }), "{err}");
    assert!(
        err.to_string().contains(&dir.db().display().to_string()),
        "{err}"
    );
    assert_eq!(std::fs::read(dir.db()).expect("read"), content);
    assert!(!dir.path().join("ymesh.sqlite3-wal").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_sqlite_database_is_refused_and_untouched() {
    let dir = TempDir::new("foreign");
    std::fs::create_dir_all(dir.path()).expect("mkdir");
    {
        let conn = raw(&dir.db());
        conn.execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('hi');")
            .expect("create");
    }
    let content = std::fs::read(dir.db()).expect("read");
    let err = SqliteStore::open(dir.path(), opts()).expect_err("must refuse");
    assert!(matches!(err, StoreError::NotAStore { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&dir.db().display().to_string()) && msg.contains("1 tables"),
        "{msg}"
    );
    assert_eq!(std::fs::read(dir.db()).expect("read"), content);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_blob_affects_only_its_room() {
    let dir = TempDir::new("corrupt");
    let w = Writer::new(61);
    {
        let store = SqliteStore::open(dir.path(), opts()).expect("open");
        // Committed one at a time: the second update has a log row of its own.
        let t = w.append(&store, "bad", "one");
        store.wait_durable(t).await.expect("durable");
        let t = w.append(&store, "bad", "two");
        store.wait_durable(t).await.expect("durable");
        let t = Writer::new(62).append(&store, "good", "fine");
        store.wait_durable(t).await.expect("durable");
        store.close().await.expect("close");
    }
    let garbage: &[u8] = &[0xff; 12];
    assert!(
        Update::decode_v1(garbage).is_err(),
        "test data must not decode"
    );
    raw(&dir.db())
        .execute(
            "UPDATE updates SET data = ?1 WHERE seq = (SELECT max(seq) FROM updates
             WHERE room_id = (SELECT id FROM rooms WHERE name = 'bad'))",
            [garbage],
        )
        .expect("corrupt");

    let store = SqliteStore::open(dir.path(), opts()).expect("reopen");
    let err = store.load("bad").await.expect_err("corrupt");
    match &err {
        StoreError::Corrupt { room, detail } => {
            assert_eq!(room, "bad");
            assert!(detail.contains("log update #2"), "{detail}");
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    assert!(err.to_string().contains("\"bad\""), "{err}");
    let good = store.load("good").await.expect("load").expect("stored");
    assert_eq!(text_of(&good), "fine");
    assert!(matches!(
        store.compact("bad").await,
        Err(StoreError::Corrupt { .. })
    ));
    // The room's rows are unchanged by the failed compaction.
    assert_eq!(
        store
            .meta("bad")
            .await
            .expect("meta")
            .expect("stored")
            .log_count,
        2
    );
    assert_eq!(store.list().await.expect("list").len(), 2);
}

/// A log row holding several updates (one commit's updates of one room) that does not unpack
/// is reported as corrupt for its room alone, naming the first update it holds; a row whose
/// updates unpack but one of which does not decode is named by that update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_row_of_many_updates_affects_only_its_room() {
    let dir = TempDir::new("corrupt-row");
    let w = Writer::new(63);
    {
        let store = SqliteStore::open(dir.path(), holding_opts()).expect("open");
        let t = w.append(&store, "bad", "zero");
        store.wait_durable(t).await.expect("durable");
        // Held together: one row of three updates, after the row of the first.
        w.append(&store, "bad", "one");
        w.append(&store, "bad", "two");
        w.append(&store, "bad", "three");
        let t = Writer::new(64).append(&store, "good", "fine");
        store.wait_durable(t).await.expect("durable");
        store.close().await.expect("close");
    }
    let db = raw(&dir.db());
    let last_row = "(SELECT max(seq) FROM updates
                     WHERE room_id = (SELECT id FROM rooms WHERE name = 'bad'))";
    let (count, data): (i64, Vec<u8>) = db
        .query_row(
            &format!("SELECT count, data FROM updates WHERE seq = {last_row}"),
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("row");
    assert_eq!(count, 3, "one row for the commit's three updates");

    // Its second update no longer decodes (its first byte claims a huge client count).
    let mut second_bad = data.clone();
    let first_len = usize::from(data[0]);
    second_bad[1 + first_len + 1] = 0xff;
    db.execute(
        &format!("UPDATE updates SET data = ?1 WHERE seq = {last_row}"),
        [&second_bad],
    )
    .expect("corrupt");
    let store = SqliteStore::open(dir.path(), opts()).expect("reopen");
    match store.load("bad").await.expect_err("corrupt") {
        StoreError::Corrupt { room, detail } => {
            assert_eq!(room, "bad");
            assert!(detail.contains("log update #3"), "{detail}");
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    store.close().await.expect("close");

    // The row itself does not unpack: cut short.
    db.execute(
        &format!("UPDATE updates SET data = ?1 WHERE seq = {last_row}"),
        [&data[..data.len() - 1]],
    )
    .expect("truncate");
    let store = SqliteStore::open(dir.path(), opts()).expect("reopen");
    match store.load("bad").await.expect_err("corrupt") {
        StoreError::Corrupt { room, detail } => {
            assert_eq!(room, "bad");
            assert!(
                detail.contains("from update #2 on is malformed"),
                "{detail}"
            );
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    assert!(matches!(
        store.compact("bad").await,
        Err(StoreError::Corrupt { .. })
    ));
    let good = store.load("good").await.expect("load").expect("stored");
    assert_eq!(text_of(&good), "fine");
    assert_eq!(
        store
            .meta("bad")
            .await
            .expect("meta")
            .expect("stored")
            .log_count,
        4,
        "the failed compaction left the log as it was"
    );

    // Put back, the room loads whole.
    db.execute(
        &format!("UPDATE updates SET data = ?1 WHERE seq = {last_row}"),
        [&data],
    )
    .expect("restore");
    let loaded = store.load("bad").await.expect("load").expect("stored");
    assert_eq!(loaded.updates.len(), 4);
    assert_eq!(text_of(&loaded), "zeroonetwothree");
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_store_refuses_everything_and_frees_the_directory() {
    let dir = TempDir::new("closed");
    let store = SqliteStore::open(dir.path(), opts()).expect("open");
    let w = Writer::new(71);
    let t = w.append(&store, "r", "before close");
    store.close().await.expect("close");
    store.wait_durable(t).await.expect("committed by close");
    let (u, sv) = w.push("after");
    assert!(matches!(store.append("r", u, sv), Err(StoreError::Closed)));
    assert!(matches!(store.compact("r").await, Err(StoreError::Closed)));
    assert!(matches!(store.load("r").await, Err(StoreError::Closed)));
    store.close().await.expect("close twice");
    // The directory is free for the next store although this one is still alive.
    let next = SqliteStore::open(dir.path(), opts()).expect("reopen after close");
    assert!(next.load("r").await.expect("load").is_some());
    next.close().await.expect("close");
    drop(store);
}

#[test]
fn store_is_object_safe() {
    fn takes(_: Option<Arc<dyn Store>>) {}
    takes(None);
}

/// Throughput of the durable path; run with
/// `cargo test --release --lib store::tests::measure -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a test"]
async fn measure_append_throughput() {
    for window_us in [0u64, 1000] {
        let dir = TempDir::new("measure");
        let store = Arc::new(
            SqliteStore::open(
                dir.path(),
                StoreOptions {
                    batch_window: Duration::from_micros(window_us),
                    ..opts()
                },
            )
            .expect("open"),
        );
        let w = Writer::new(81);
        let updates: Vec<_> = (0..20_000).map(|i| w.push(&format!("{i} "))).collect();

        // 1. One writer, waiting for each append.
        let n = 500;
        let start = Instant::now();
        for (u, sv) in updates.iter().take(n) {
            let t = store
                .append("serial", u.clone(), sv.clone())
                .expect("append");
            store.wait_durable(t).await.expect("durable");
        }
        let serial = n as f64 / start.elapsed().as_secs_f64();

        // 2. Appends without waiting, then one wait (bulk).
        let before = store.stats();
        let start = Instant::now();
        let mut last = CommitTicket::NONE;
        for (u, sv) in &updates {
            last = store.append("bulk", u.clone(), sv.clone()).expect("append");
        }
        store.wait_durable(last).await.expect("durable");
        let bulk = updates.len() as f64 / start.elapsed().as_secs_f64();
        let bulk_commits = store.stats().commits - before.commits;

        // 3. 100 concurrent writers (100 rooms), each waiting for each append.
        let before = store.stats();
        let per = 50;
        let start = Instant::now();
        let mut tasks = Vec::new();
        for k in 0..100 {
            let store = Arc::clone(&store);
            let mine: Vec<_> = updates[k * per..(k + 1) * per].to_vec();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                for (u, sv) in mine {
                    let t0 = Instant::now();
                    let t = store.append(&format!("room-{k}"), u, sv).expect("append");
                    store.wait_durable(t).await.expect("durable");
                    lat.push(t0.elapsed());
                }
                lat
            }));
        }
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await.expect("task"));
        }
        let concurrent = (100 * per) as f64 / start.elapsed().as_secs_f64();
        lat.sort();
        let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
        let commits = store.stats().commits - before.commits;
        eprintln!(
            "window {window_us} us: serial append+wait {serial:.0}/s | bulk {bulk:.0}/s \
             ({bulk_commits} commits) | 100 waiting writers {concurrent:.0}/s, {commits} commits, \
             latency p50 {:?} p99 {:?}",
            p(0.5),
            p(0.99)
        );
        store.close().await.expect("close");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_store_is_migrated_with_its_snapshots() {
    let dir = TempDir::new("migrate-v1");
    std::fs::create_dir_all(dir.path()).unwrap();
    let doc = yrs::Doc::with_client_id(9);
    let snapshot = {
        let text = doc.get_or_insert_text("t");
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, 0, "from v1");
        txn.encode_update_v1()
    };
    {
        let conn = rusqlite::Connection::open(dir.path().join(DB_FILE_NAME)).unwrap();
        conn.execute_batch(&format!(
            "PRAGMA application_id = {}; {}",
            super::sqlite::schema::APPLICATION_ID,
            super::sqlite::schema::MIGRATIONS[0]
        ))
        .unwrap();
        conn.execute(
            "INSERT INTO rooms (name, snapshot, snapshot_bytes, state_vector, digest,
                                updated_at_ms, change_seq)
             VALUES ('old', ?1, ?2, x'00', 'd', 1, 0)",
            rusqlite::params![snapshot, snapshot.len() as i64],
        )
        .unwrap();
        conn.execute_batch("PRAGMA user_version = 1;").unwrap();
    }
    let store = SqliteStore::open(dir.path(), opts()).expect("migrates");
    let loaded = store.load("old").await.unwrap().expect("room kept");
    assert_eq!(loaded.snapshot.as_deref(), Some(&snapshot[..]));
    // Compaction and appends work on the new layout.
    store.compact("old").await.unwrap();
    store.close().await.unwrap();
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE_NAME)).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let has_column: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM pragma_table_info('rooms') WHERE name = 'snapshot'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(has_column, 0, "snapshots moved out of the rooms row");
}
