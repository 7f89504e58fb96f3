//! [`SqliteStore`]: the embedded [`Store`] on SQLite. See the module docs of [`crate::store`].
//!
//! This file is the store handle: opening, the writer's queue and tickets, and the reads.
//! Below it, one way: [`writer`] (the writer thread) -> [`batch`] (what one transaction
//! gathers and how long a small batch is held open), [`shared`] (state the handle and the
//! writer both hold) -> [`readers`] (the reader threads), [`schema`] (opening and migrating the file) and [`lock`] (the
//! data-directory lock). The writer and the handle meet only through [`shared::Shared`] and
//! the [`batch::Request`] queue.

mod batch;
mod lock;
mod log;
mod readers;
pub(super) mod schema;
mod shared;
mod writer;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;
use rusqlite::{params, Connection, OptionalExtension, Row};
use tokio::sync::{oneshot, watch};

use self::batch::{Append, Request};
use self::shared::{from_sql_int, locked, read, to_sql_int, Shared};
use crate::metrics::StoreCounters;
use crate::store::{
    BoxFuture, CommitTicket, LoadedRoom, RoomFailure, RoomMeta, Store, StoreError, StoreOptions,
    Tombstone,
};

pub(crate) use lock::DirLock;
pub use schema::SCHEMA_VERSION;
pub(crate) use schema::{check_header, APPLICATION_ID};

/// The database file inside the data directory.
pub const DB_FILE_NAME: &str = "ymesh.sqlite3";

/// The lock file inside the data directory (locked exclusively while a store is open).
pub const LOCK_FILE_NAME: &str = "LOCK";

/// The writer's counters ([`StoreCounters`]) and the ticket positions, for tests and
/// benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Appends committed.
    pub appends: u64,
    /// Transactions that committed appends (one per batch).
    pub commits: u64,
    /// Batches whose commit failed.
    pub failed_commits: u64,
    /// Compactions done (automatic and requested).
    pub compactions: u64,
    /// The largest number of appends committed in one transaction.
    pub max_batch: u64,
    /// The highest ticket issued by `append` (0 if none).
    pub issued_ticket: u64,
    /// The highest ticket the writer has finished with (committed or failed).
    pub durable_ticket: u64,
    /// Read connections opened since the store was opened (one per reader thread,
    /// `max_idle_readers` of them; reads beyond that many at once wait in their queue).
    pub read_connections: u64,
}

/// The embedded store: one SQLite database in a data directory, one writer thread with group
/// commit, read connections on blocking threads. Holds the directory lock until closed
/// and dropped.
///
/// Prefer [`Store::close`] before dropping: `Drop` also stops the writer, but it blocks the
/// calling thread until the queued appends are committed.
pub struct SqliteStore {
    shared: Arc<Shared>,
    /// The writer's queue and the next ticket, under one mutex so tickets are in queue
    /// order. `None` once closed.
    queue: Mutex<Option<Queue>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    dir: PathBuf,
    /// Released by [`Store::close`] once the writer and the readers are gone, or dropped
    /// last (fields drop in order, after `Drop::drop` joined the writer), so the directory
    /// stays locked until the write connection is closed.
    lock: Mutex<Option<DirLock>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("db_path", &self.shared.db_path())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

struct Queue {
    tx: SyncSender<Request>,
    next_ticket: u64,
}

/// Creates `dir` if needed; a path that is a file, or that cannot be created, is a
/// [`StoreError::DataDir`] with a sentence saying what is wrong.
pub fn prepare_data_dir(dir: &Path) -> Result<(), StoreError> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(StoreError::DataDir {
            dir: dir.to_path_buf(),
            problem: "it is a file, not a directory; give --data-dir (or data_dir in \
                      mesh.toml) a directory, or move the file away"
                .into(),
        }),
        Err(_) => std::fs::create_dir_all(dir).map_err(|e| data_dir_error(dir, &e)),
    }
}

/// An I/O error on the data directory as a sentence.
fn data_dir_error(dir: &Path, e: &std::io::Error) -> StoreError {
    use std::io::ErrorKind;
    let problem = match e.kind() {
        ErrorKind::PermissionDenied => "this user may not create or write files there; choose \
             another --data-dir, or give this user write access to it"
            .to_string(),
        ErrorKind::ReadOnlyFilesystem => "it is on a read-only file system; choose another \
             --data-dir"
            .to_string(),
        ErrorKind::AlreadyExists | ErrorKind::NotADirectory => "a part of its path is a file, \
             not a directory; choose another --data-dir"
            .to_string(),
        ErrorKind::StorageFull => "the disk is full".to_string(),
        _ => format!("cannot be created or used: {e}"),
    };
    StoreError::DataDir {
        dir: dir.to_path_buf(),
        problem,
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `dir`: takes the directory lock, checks or
    /// creates the database, and starts the writer thread.
    ///
    /// Fails with [`StoreError::Locked`] if another store holds `dir`,
    /// [`StoreError::SchemaTooNew`] if a newer ymesh wrote it, and [`StoreError::NotAStore`]
    /// if `dir/ymesh.sqlite3` is not a ymesh database (the file is left untouched).
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<SqliteStore, StoreError> {
        let mut opts = opts;
        opts.queue_capacity = opts.queue_capacity.max(1);
        opts.max_batch_items = opts.max_batch_items.max(1);
        opts.max_batch_bytes = opts.max_batch_bytes.max(1);
        opts.compact_log_count = opts.compact_log_count.max(1);

        prepare_data_dir(dir)?;
        let lock = DirLock::acquire(dir, LOCK_FILE_NAME).map_err(|e| match e {
            StoreError::Io { source, .. } => data_dir_error(dir, &source),
            other => other,
        })?;
        let db_path = dir.join(DB_FILE_NAME);
        let (conn, created) = schema::open_writer(&db_path, &opts)?;
        if created {
            // Make the new file's directory entry durable too.
            sync_dir(dir)?;
        }
        // Fail now rather than at the first read if readers cannot open.
        let reader = schema::open_reader(&db_path, &opts)?;
        let total_bytes: i64 = reader.query_row(
            "SELECT COALESCE(SUM(snapshot_bytes + log_bytes), 0) FROM rooms",
            [],
            |r| r.get(0),
        )?;
        let total_bytes = from_sql_int(total_bytes);

        let readers = readers::ReaderPool::start(db_path.clone(), &opts, reader)?;
        let shared = Arc::new(Shared::new(db_path.clone(), opts, readers, total_bytes));
        let (tx, rx) = sync_channel(shared.opts.queue_capacity);
        let handle = writer::start(conn, rx, Arc::clone(&shared))?;
        tracing::info!(path = %db_path.display(), "store opened");
        Ok(SqliteStore {
            shared,
            queue: Mutex::new(Some(Queue { tx, next_ticket: 1 })),
            writer: Mutex::new(Some(handle)),
            dir: dir.to_path_buf(),
            lock: Mutex::new(Some(lock)),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The database file.
    pub fn db_path(&self) -> &Path {
        self.shared.db_path()
    }

    /// Counters of the writer's work so far, with the ticket positions.
    pub fn stats(&self) -> StoreStats {
        let c = self.shared.stats.counts();
        let issued_ticket = locked(&self.queue)
            .as_ref()
            .map_or(0, |q| q.next_ticket - 1);
        StoreStats {
            appends: c.appends,
            commits: c.commits,
            failed_commits: c.failed_commits,
            compactions: c.compactions,
            max_batch: c.max_batch,
            issued_ticket,
            durable_ticket: self.shared.durable_ticket(),
            read_connections: self.shared.readers_opened(),
        }
    }

    /// The writer's counters, live (for the node's metrics registry).
    pub fn counters(&self) -> Arc<StoreCounters> {
        self.shared.stats.clone()
    }

    /// Disconnects the queue; the writer commits what is queued, then exits.
    fn stop_queue(&self) {
        drop(locked(&self.queue).take());
        self.shared.wake_writer();
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.stop_queue();
        let handle = locked(&self.writer).take();
        if let Some(handle) = handle {
            if handle.join().is_err() {
                tracing::error!("store writer thread panicked");
            }
        }
        // The reader threads close their connections before the directory lock goes (the
        // last connection to close checkpoints the WAL into the file: a node opening the
        // directory next must not see that half done).
        self.shared.close_readers();
    }
}

impl SqliteStore {
    /// Assigns the next ticket and queues the append, under one lock so tickets are in
    /// queue order.
    fn enqueue(
        &self,
        room: Arc<str>,
        update: Bytes,
        state_vector: Vec<u8>,
        repair: bool,
    ) -> Result<CommitTicket, StoreError> {
        let mut queue = locked(&self.queue);
        let Some(q) = queue.as_mut() else {
            return Err(self.shared.closed_error());
        };
        let ticket = q.next_ticket;
        q.tx.send(Request::Append(Append {
            ticket,
            room,
            update,
            state_vector,
            repair,
        }))
        .map_err(|_| self.shared.closed_error())?;
        q.next_ticket += 1;
        Ok(CommitTicket(ticket))
    }
}

impl SqliteStore {
    /// Queues a request built around a reply channel and waits for the writer's answer.
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Request,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.request(make(reply)).await?;
        answer.await.map_err(|_| self.shared.closed_error())?
    }

    /// Queues a non-append request for the writer, in order with appends.
    async fn request(&self, req: Request) -> Result<(), StoreError> {
        let tx = match locked(&self.queue).as_ref() {
            Some(q) => q.tx.clone(),
            None => return Err(self.shared.closed_error()),
        };
        // Someone awaits the reply: a writer holding a batch open commits it now.
        let sent = tx.try_send(req);
        self.shared.wake_writer();
        match sent {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(req)) => {
                // Queue full: wait for room on a blocking thread, not the runtime's.
                tokio::task::spawn_blocking(move || tx.send(req))
                    .await
                    .map_err(|e| StoreError::Internal(format!("store request: {e}")))?
                    .map_err(|_| self.shared.closed_error())
            }
            Err(TrySendError::Disconnected(_)) => Err(self.shared.closed_error()),
        }
    }
}

impl Store for SqliteStore {
    fn append(
        &self,
        room: &str,
        update: Bytes,
        state_vector: Vec<u8>,
    ) -> Result<CommitTicket, StoreError> {
        self.enqueue(Arc::from(room), update, state_vector, false)
    }

    fn append_shared(
        &self,
        room: &Arc<str>,
        update: Bytes,
        state_vector: Vec<u8>,
    ) -> Result<CommitTicket, StoreError> {
        self.enqueue(Arc::clone(room), update, state_vector, false)
    }

    fn repair(
        &self,
        room: &str,
        full_state: Bytes,
        state_vector: Vec<u8>,
    ) -> Result<CommitTicket, StoreError> {
        self.enqueue(Arc::from(room), full_state, state_vector, true)
    }

    fn room_failure(&self, room: &str) -> Option<RoomFailure> {
        locked(&self.shared.unhealthy).get(room).cloned()
    }

    fn failures(&self) -> Vec<(String, RoomFailure)> {
        let mut out: Vec<_> = locked(&self.shared.unhealthy)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn health(&self) -> watch::Receiver<u64> {
        self.shared.health.subscribe()
    }

    fn wait_durable(&self, ticket: CommitTicket) -> BoxFuture<'_, Result<(), StoreError>> {
        // Asking is waiting: a batch held open for more appends is committed now.
        self.shared.want_flush(ticket.0);
        let mut done = self.shared.subscribe_durable();
        Box::pin(async move {
            if ticket.0 == 0 {
                return Ok(());
            }
            // The sender lives in `shared`, which outlives this borrow of `self`.
            done.wait_for(|&d| d >= ticket.0)
                .await
                .map_err(|_| StoreError::Closed)?;
            self.shared.failures.check(ticket.0)
        })
    }

    fn load(&self, room: &str) -> BoxFuture<'_, Result<Option<LoadedRoom>, StoreError>> {
        let room = room.to_owned();
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let name = room.clone();
            let loaded = read(Arc::clone(&shared), move |conn| load_room(conn, &room)).await?;
            if let Some(l) = &loaded {
                let bytes = l.snapshot.as_ref().map_or(0, |s| s.len() as u64)
                    + l.updates.iter().map(|u| u.len() as u64).sum::<u64>();
                locked(&shared.sizes).rooms.entry(name).or_insert(bytes);
            }
            Ok(loaded)
        })
    }

    fn stored_bytes(&self, room: &str) -> Option<u64> {
        locked(&self.shared.sizes).rooms.get(room).copied()
    }

    fn total_bytes(&self) -> u64 {
        locked(&self.shared.sizes).total
    }

    fn compact(&self, room: &str) -> BoxFuture<'_, Result<(u64, u64), StoreError>> {
        let room = room.to_owned();
        Box::pin(async move { self.ask(|reply| Request::Compact { room, reply }).await })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<RoomMeta>, StoreError>> {
        Box::pin(read(Arc::clone(&self.shared), |conn| {
            let mut stmt = conn.prepare_cached(&format!("{META_SELECT} ORDER BY name"))?;
            let rows = stmt.query_map([], meta_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        }))
    }

    fn meta(&self, room: &str) -> BoxFuture<'_, Result<Option<RoomMeta>, StoreError>> {
        let room = room.to_owned();
        Box::pin(read(Arc::clone(&self.shared), move |conn| {
            let mut stmt = conn.prepare_cached(&format!("{META_SELECT} WHERE name = ?1"))?;
            Ok(stmt.query_row(params![room], meta_from_row).optional()?)
        }))
    }

    fn changed_since(&self, marker: u64) -> BoxFuture<'_, Result<(Vec<String>, u64), StoreError>> {
        Box::pin(read(Arc::clone(&self.shared), move |conn| {
            // One read transaction: the rooms and the new marker come from the same commit.
            let tx = conn.transaction()?;
            let rooms = {
                let mut stmt = tx.prepare_cached(
                    "SELECT name FROM rooms WHERE change_seq > ?1 ORDER BY change_seq, name",
                )?;
                let rows =
                    stmt.query_map(params![to_sql_int(marker)], |r| r.get::<_, String>(0))?;
                rows.collect::<Result<Vec<_>, _>>()?
            };
            let now: i64 =
                tx.query_row("SELECT value FROM meta WHERE key = 'change_seq'", [], |r| {
                    r.get(0)
                })?;
            tx.finish()?;
            Ok((rooms, from_sql_int(now)))
        }))
    }

    fn delete_room(
        &self,
        tombstone: Tombstone,
    ) -> BoxFuture<'_, Result<(Tombstone, bool), StoreError>> {
        Box::pin(async move { self.ask(|reply| Request::Delete { tombstone, reply }).await })
    }

    fn tombstones(&self) -> BoxFuture<'_, Result<Vec<Tombstone>, StoreError>> {
        self.tombstones_since(0)
    }

    fn tombstones_since(&self, marker: u64) -> BoxFuture<'_, Result<Vec<Tombstone>, StoreError>> {
        Box::pin(read(Arc::clone(&self.shared), move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT room, deleted_ms, state_vector, origin FROM tombstones
                 WHERE change_seq > ?1 OR ?1 = 0 ORDER BY room",
            )?;
            let rows = stmt.query_map(params![to_sql_int(marker)], |r| {
                Ok(Tombstone {
                    room: r.get(0)?,
                    deleted_ms: from_sql_int(r.get(1)?),
                    state_vector: r.get(2)?,
                    origin: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        }))
    }

    fn purge_tombstones(&self, before_ms: u64) -> BoxFuture<'_, Result<usize, StoreError>> {
        Box::pin(async move {
            self.ask(|reply| Request::PurgeTombstones { before_ms, reply })
                .await
        })
    }

    fn discard_room(&self, room: &str) -> BoxFuture<'_, Result<bool, StoreError>> {
        let room = room.to_owned();
        Box::pin(async move { self.ask(|reply| Request::Discard { room, reply }).await })
    }

    fn mark_command_applied(
        &self,
        id: &str,
        expires_ms: u64,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        let id = id.to_owned();
        Box::pin(async move {
            self.ask(|reply| Request::MarkApplied {
                id,
                expires_ms,
                reply,
            })
            .await
        })
    }

    fn set_schema_version(
        &self,
        room: &str,
        version: u64,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        let room = room.to_owned();
        Box::pin(async move {
            self.ask(|reply| Request::SetSchema {
                room,
                version,
                reply,
            })
            .await
        })
    }

    fn schema_versions(&self) -> BoxFuture<'_, Result<Vec<(String, u64)>, StoreError>> {
        Box::pin(read(Arc::clone(&self.shared), |conn| {
            let mut stmt =
                conn.prepare_cached("SELECT room, version FROM room_schema ORDER BY room")?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, from_sql_int(r.get(1)?)))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        }))
    }

    fn peer_marker(&self, peer: &str) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        let key = format!("peer_marker:{peer}");
        Box::pin(read(Arc::clone(&self.shared), move |conn| {
            let v: Option<i64> = conn
                .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
                    r.get(0)
                })
                .optional()?;
            Ok(v.map(from_sql_int))
        }))
    }

    fn set_peer_marker(&self, peer: &str, marker: u64) -> BoxFuture<'_, Result<(), StoreError>> {
        let key = format!("peer_marker:{peer}");
        Box::pin(async move {
            self.ask(|reply| Request::SetMeta {
                key,
                value: marker,
                reply,
            })
            .await
        })
    }

    fn close(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.stop_queue();
            let handle = locked(&self.writer).take();
            if let Some(handle) = handle {
                let joined = tokio::task::spawn_blocking(move || handle.join())
                    .await
                    .map_err(|e| StoreError::Internal(format!("store close: {e}")))?;
                if joined.is_err() {
                    return Err(StoreError::Internal("store writer thread panicked".into()));
                }
                tracing::info!(path = %self.shared.db_path().display(), "store closed");
            }
            // Close the readers (their threads finish the reads queued and close their
            // connections), then free the directory for the next node, even while other
            // tasks still hold this (now closed) store.
            let shared = Arc::clone(&self.shared);
            tokio::task::spawn_blocking(move || shared.close_readers())
                .await
                .map_err(|e| StoreError::Internal(format!("store close: {e}")))?;
            locked(&self.lock).take();
            Ok(())
        })
    }
}

const META_SELECT: &str = "SELECT name, snapshot_bytes + log_bytes, log_count, updated_at_ms, \
                           state_vector, digest FROM rooms";

fn meta_from_row(r: &Row<'_>) -> rusqlite::Result<RoomMeta> {
    Ok(RoomMeta {
        name: r.get(0)?,
        bytes: from_sql_int(r.get(1)?),
        log_count: from_sql_int(r.get(2)?),
        updated_at_ms: from_sql_int(r.get(3)?),
        state_vector: r.get(4)?,
        digest: r.get(5)?,
    })
}

fn load_room(conn: &mut Connection, room: &str) -> Result<Option<LoadedRoom>, StoreError> {
    // One read transaction: the snapshot and the log come from the same commit.
    let tx = conn.transaction()?;
    let row: Option<(i64, Option<Vec<u8>>)> = tx
        .query_row(
            "SELECT r.id, s.data FROM rooms r LEFT JOIN snapshots s ON s.room_id = r.id
             WHERE r.name = ?1",
            params![room],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((id, snapshot)) = row else {
        return Ok(None);
    };
    let updates = read_log(&tx, room, id)?;
    tx.finish()?;
    check_decodes(room, snapshot.as_deref(), &updates)?;
    Ok(Some(LoadedRoom { snapshot, updates }))
}

/// The updates of room `id`'s log, in order, each as the room applied it (a row holds every
/// update one commit appended to the room: [`log`]).
pub(super) fn read_log(
    tx: &rusqlite::Transaction<'_>,
    room: &str,
    id: i64,
) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut stmt =
        tx.prepare_cached("SELECT data, count FROM updates WHERE room_id = ?1 ORDER BY seq")?;
    let mut rows = stmt.query(params![id])?;
    let mut updates = Vec::new();
    while let Some(row) = rows.next()? {
        let first = updates.len() + 1;
        log::unpack(row.get(0)?, row.get(1)?, &mut updates).map_err(|detail| {
            StoreError::Corrupt {
                room: room.to_owned(),
                detail: format!("the log row from update #{first} on is malformed: {detail}"),
            }
        })?;
    }
    Ok(updates)
}

/// Every blob must decode as a Yjs v1 update; otherwise the room is corrupt.
fn check_decodes(
    room: &str,
    snapshot: Option<&[u8]>,
    updates: &[Vec<u8>],
) -> Result<(), StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        room: room.to_owned(),
        detail,
    };
    let decode = |what: &dyn Fn() -> String, blob: &[u8]| -> Result<(), StoreError> {
        // Scanned first: a count claiming more than the blob holds, or values nested deep
        // enough to overflow yrs's recursive decoder (an abort, not a panic), are refused.
        match catch_unwind(AssertUnwindSafe(|| {
            crate::protocol::scan::decode_update(blob)
        })) {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(corrupt(format!("{} does not decode: {e}", what()))),
            Err(_) => Err(corrupt(format!("{} made the Yjs decoder panic", what()))),
        }
    };
    if let Some(s) = snapshot {
        decode(&|| "snapshot".to_owned(), s)?;
    }
    for (i, u) in updates.iter().enumerate() {
        decode(&|| format!("log update #{}", i + 1), u)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })
}
