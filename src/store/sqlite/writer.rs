//! The writer thread: the only owner of the write connection. Group commit and compaction.
//!
//! It blocks for one request, drains what else is queued into a batch (holding a small batch
//! that nobody waits for open a little longer, see [`super::batch`]), writes every append
//! of the batch in one transaction, commits (one fsync), publishes the batch's last ticket,
//! then compacts rooms whose log passed a threshold and serves explicit compaction requests.

use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use yrs::{Doc, ReadTxn, StateVector, Transact};

use super::batch::{hold_until, Append, Batch, Request};
use super::shared::{from_sql_int, now_ms, to_sql_int, Shared};
use crate::store::{
    canonical_state_vector, digest_hex, merge_state_vectors, StoreError, Tombstone,
};

/// Free pages above which the writer returns space to the file system after a compaction.
const VACUUM_FREE_PAGES: i64 = 4096;

/// Starts the writer thread on `conn`. When every sender is gone it commits what is queued
/// and exits; if it panics, every outstanding and future ticket fails instead of hanging.
pub(crate) fn start(
    conn: Connection,
    rx: Receiver<Request>,
    shared: Arc<Shared>,
) -> Result<JoinHandle<()>, StoreError> {
    let mut writer = Writer::new(conn, Arc::clone(&shared))?;
    std::thread::Builder::new()
        .name("ymesh-store-writer".into())
        .spawn(move || {
            shared.set_writer_thread(std::thread::current());
            if catch_unwind(AssertUnwindSafe(|| writer.run(rx))).is_err() {
                tracing::error!("store writer panicked; the store accepts no more writes");
                shared.writer_died(Arc::new(StoreError::Internal(
                    "store writer thread panicked".into(),
                )));
            }
        })
        .map_err(|e| StoreError::Internal(format!("cannot start the store writer thread: {e}")))
}

/// A room row as compaction reads it.
struct StoredRoom {
    id: i64,
    snapshot: Option<Vec<u8>>,
    /// Logical size: snapshot plus log bytes.
    bytes: u64,
    log_count: u64,
}

/// What the commit learnt about one room, for the compaction check.
struct Touched {
    name: String,
    log_count: u64,
    log_bytes: u64,
    snapshot_bytes: u64,
}

struct Writer {
    conn: Connection,
    shared: Arc<Shared>,
    /// `meta.change_seq` as committed.
    change_seq: u64,
    /// Rooms whose automatic compaction failed (e.g. corrupt data): not retried
    /// automatically until an explicit compaction succeeds, so a bad room cannot make every
    /// batch re-read its log.
    compaction_failed: HashSet<String>,
}

impl Writer {
    fn new(conn: Connection, shared: Arc<Shared>) -> Result<Writer, StoreError> {
        let change_seq: i64 =
            conn.query_row("SELECT value FROM meta WHERE key = 'change_seq'", [], |r| {
                r.get(0)
            })?;
        let change_seq = from_sql_int(change_seq);
        {
            let mut stmt = conn.prepare("SELECT room FROM tombstones")?;
            let rooms = stmt
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<HashSet<_>, _>>()?;
            *shared.tombstoned.lock().unwrap_or_else(|e| e.into_inner()) = rooms;
        }
        Ok(Writer {
            conn,
            shared,
            change_seq,
            compaction_failed: HashSet::new(),
        })
    }

    fn run(&mut self, rx: Receiver<Request>) {
        let opts = self.shared.opts.clone();
        loop {
            let Ok(first) = rx.recv() else {
                tracing::debug!("store writer: all senders gone, stopping");
                return;
            };
            let started = Instant::now();
            let mut batch = Batch::default();
            batch.push(first);
            loop {
                let disconnected = batch.drain(&rx, &opts);
                if disconnected || batch.closed(&opts) {
                    break;
                }
                // Someone waits for this commit (a 102 echo, an HTTP write, `is it on disk
                // yet?`) or for a reply: hold the batch only for `batch_window`. Nobody
                // waits: gather for up to `commit_delay`, without being woken per append.
                let awaited = !batch.others.is_empty() || self.shared.flush_wanted();
                let Some(until) = hold_until(started, &opts, awaited, batch.items) else {
                    break;
                };
                let now = Instant::now();
                if now >= until {
                    break;
                }
                self.shared.park_writer(until - now, awaited);
            }
            self.process(batch.appends, batch.others);
        }
    }

    fn process(&mut self, appends: Vec<Append>, others: Vec<Request>) {
        if let (Some(first), Some(last)) = (appends.first(), appends.last()) {
            let (first, last) = (first.ticket, last.ticket);
            let started = Instant::now();
            let committed = self.commit(&appends);
            self.shared.stats.commit_took(
                started.elapsed(),
                committed.is_ok().then_some(appends.len() as u64),
            );
            match committed {
                Ok(touched) => {
                    let repaired: Vec<&str> = appends
                        .iter()
                        .filter(|a| a.repair)
                        .map(|a| &*a.room)
                        .collect();
                    if !repaired.is_empty() {
                        self.shared.mark_repaired(repaired);
                    }
                    self.shared.stats.committed(appends.len() as u64);
                    self.shared.publish(last);
                    drop(appends);
                    self.auto_compact(touched);
                }
                Err(e) => {
                    tracing::error!(
                        error = %e,
                        first_ticket = first,
                        last_ticket = last,
                        appends = appends.len(),
                        "store commit failed; those appends are not durable"
                    );
                    self.rollback_if_open();
                    self.shared.stats.commit_failed();
                    let message = e.to_string();
                    self.shared
                        .mark_failed(appends.iter().map(|a| &*a.room), &message);
                    self.shared.failures.record(first, last, Arc::new(e));
                    self.shared.publish(last);
                }
            }
        }
        // The requesters may have given up; that is fine.
        for req in others {
            match req {
                Request::Compact { room, reply } => {
                    let result = self.compact(&room);
                    match &result {
                        Ok(_) => {
                            self.compaction_failed.remove(&room);
                        }
                        Err(e) => tracing::warn!(room = %room, error = %e, "compaction failed"),
                    }
                    let _ = reply.send(result);
                }
                Request::Delete { tombstone, reply } => {
                    let result = self.delete_room(tombstone);
                    if let Err(e) = &result {
                        self.rollback_if_open();
                        tracing::error!(error = %e, "room deletion failed");
                    }
                    let _ = reply.send(result);
                }
                Request::PurgeTombstones { before_ms, reply } => {
                    let result = self.purge_tombstones(before_ms);
                    let _ = reply.send(result);
                }
                Request::Discard { room, reply } => {
                    let result = self.discard_room(&room);
                    if let Err(e) = &result {
                        self.rollback_if_open();
                        tracing::error!(room, error = %e, "discarding a room failed");
                    }
                    let _ = reply.send(result);
                }
                Request::MarkApplied {
                    id,
                    expires_ms,
                    reply,
                } => {
                    let result = self.mark_applied(&id, expires_ms);
                    let _ = reply.send(result);
                }
                Request::SetMeta { key, value, reply } => {
                    let result = if key == "change_seq" {
                        Err(StoreError::Internal(
                            "change_seq is the writer's own".into(),
                        ))
                    } else {
                        self.conn
                            .execute(
                                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                                params![key, to_sql_int(value)],
                            )
                            .map(|_| ())
                            .map_err(StoreError::from)
                    };
                    let _ = reply.send(result);
                }
                Request::SetSchema {
                    room,
                    version,
                    reply,
                } => {
                    let result = self
                        .conn
                        .execute(
                            "INSERT INTO room_schema (room, version) VALUES (?1, ?2)
                             ON CONFLICT (room) DO UPDATE SET version = excluded.version",
                            params![room, to_sql_int(version)],
                        )
                        .map(|_| ())
                        .map_err(StoreError::from);
                    let _ = reply.send(result);
                }
                Request::Append(_) => unreachable!("appends are batched separately"),
            }
        }
    }

    /// Deletes a room's rows and records its tombstone in one transaction.
    fn delete_room(&mut self, mut tombstone: Tombstone) -> Result<(Tombstone, bool), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let room = tombstone.room.clone();
        let row: Option<(i64, Vec<u8>, i64)> = tx
            .query_row(
                "SELECT id, state_vector, snapshot_bytes + log_bytes FROM rooms WHERE name = ?1",
                params![room],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let earlier: Option<Tombstone> = tx
            .query_row(
                "SELECT deleted_ms, state_vector, origin FROM tombstones WHERE room = ?1",
                params![room],
                |r| {
                    Ok(Tombstone {
                        room: room.clone(),
                        deleted_ms: from_sql_int(r.get(0)?),
                        state_vector: r.get(1)?,
                        origin: r.get(2)?,
                    })
                },
            )
            .optional()?;
        if let Some(earlier) = &earlier {
            tombstone.merge(earlier);
        }
        let mut freed = 0;
        match &row {
            Some((id, sv, bytes)) => {
                tombstone.state_vector = merge_state_vectors(&tombstone.state_vector, sv);
                delete_room_rows(&tx, *id)?;
                freed = from_sql_int(*bytes);
            }
            // Canonical form of whatever the caller passed.
            None => {
                tombstone.state_vector = merge_state_vectors(&tombstone.state_vector, &[0]);
            }
        }
        tx.execute("DELETE FROM room_schema WHERE room = ?1", params![room])?;
        // A deletion is a change: it gets the next change counter, like a commit of appends,
        // so `tombstones_since` finds it for peers whose marker is older.
        let seq = self.change_seq + 1;
        tx.execute(
            "INSERT INTO tombstones (room, deleted_ms, state_vector, origin, change_seq)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (room) DO UPDATE SET deleted_ms = excluded.deleted_ms,
                 state_vector = excluded.state_vector, origin = excluded.origin,
                 change_seq = excluded.change_seq",
            params![
                room,
                to_sql_int(tombstone.deleted_ms),
                tombstone.state_vector,
                tombstone.origin,
                to_sql_int(seq)
            ],
        )?;
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'change_seq'",
            params![to_sql_int(seq)],
        )?;
        tx.commit()?;
        self.change_seq = seq;
        self.tombstoned().insert(room.clone());
        self.forget_room(&room, freed);
        Ok((tombstone, row.is_some()))
    }

    /// The rooms with a tombstone (only the writer changes them).
    fn tombstoned(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.shared
            .tombstoned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// After a room's rows were deleted (`freed` logical bytes): its size, health and
    /// compaction state go, and the file may shrink.
    fn forget_room(&mut self, room: &str, freed: u64) {
        {
            let mut cache = self.shared.sizes.lock().unwrap_or_else(|e| e.into_inner());
            let cached = cache.rooms.remove(room).unwrap_or(freed);
            cache.total = cache.total.saturating_sub(cached);
        }
        self.compaction_failed.remove(room);
        self.shared.mark_repaired([room]);
        self.maybe_vacuum();
    }

    /// Deletes a room's rows (no tombstone), keeping its recorded schema version.
    fn discard_room(&mut self, room: &str) -> Result<bool, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let row: Option<(i64, i64)> = tx
            .query_row(
                "SELECT id, snapshot_bytes + log_bytes FROM rooms WHERE name = ?1",
                params![room],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((id, bytes)) = row else {
            return Ok(false);
        };
        delete_room_rows(&tx, id)?;
        tx.commit()?;
        self.forget_room(room, from_sql_int(bytes));
        Ok(true)
    }

    fn mark_applied(&mut self, id: &str, expires_ms: u64) -> Result<bool, StoreError> {
        self.conn.execute(
            "DELETE FROM applied_commands WHERE expires_ms < ?1",
            params![to_sql_int(now_ms())],
        )?;
        let inserted = self.conn.execute(
            "INSERT OR IGNORE INTO applied_commands (id, expires_ms) VALUES (?1, ?2)",
            params![id, to_sql_int(expires_ms)],
        )?;
        Ok(inserted == 1)
    }

    fn purge_tombstones(&mut self, before_ms: u64) -> Result<usize, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("DELETE FROM tombstones WHERE deleted_ms < ?1 RETURNING room")?;
        let rooms = stmt
            .query_map(params![to_sql_int(before_ms)], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        drop(stmt);
        let mut set = self.tombstoned();
        for r in &rooms {
            set.remove(r);
        }
        Ok(rooms.len())
    }

    /// Writes one batch in one transaction. Returns the new log sizes of the rooms touched.
    fn commit(&mut self, appends: &[Append]) -> Result<Vec<Touched>, StoreError> {
        // Group by room, keeping first-appearance order and per-room append order.
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut groups: Vec<(&str, Vec<&Append>)> = Vec::new();
        for a in appends {
            let i = *index.entry(&*a.room).or_insert_with(|| {
                groups.push((&*a.room, Vec::new()));
                groups.len() - 1
            });
            groups[i].1.push(a);
        }

        let seq = self.change_seq + 1;
        let now = now_ms();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut touched = Vec::with_capacity(groups.len());
        let mut sizes = Vec::with_capacity(groups.len());
        let mut resurrected = Vec::new();
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO rooms (name, snapshot_bytes, log_bytes, log_count,
                                    state_vector, digest, updated_at_ms, change_seq)
                 VALUES (?1, 0, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (name) DO UPDATE SET
                     log_bytes = log_bytes + excluded.log_bytes,
                     log_count = log_count + excluded.log_count,
                     state_vector = excluded.state_vector,
                     digest = excluded.digest,
                     updated_at_ms = excluded.updated_at_ms,
                     change_seq = excluded.change_seq
                 RETURNING id, log_count, log_bytes, snapshot_bytes",
            )?;
            let mut insert = tx
                .prepare_cached("INSERT INTO updates (room_id, data, count) VALUES (?1, ?2, ?3)")?;
            let mut row: Vec<&[u8]> = Vec::new();
            // Only the writer changes this set; holding it for the loop costs nothing.
            let tombstoned = self
                .shared
                .tombstoned
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for (room, items) in &groups {
                if tombstoned.contains(*room) {
                    // An edit the deleted state did not have: the room lives again.
                    tx.execute("DELETE FROM tombstones WHERE room = ?1", params![room])?;
                    resurrected.push((*room).to_owned());
                }
                let added_bytes: u64 = items.iter().map(|a| a.update.len() as u64).sum();
                let last_sv = items
                    .last()
                    .map(|a| a.state_vector.as_slice())
                    .unwrap_or(&[]);
                let state_vector = canonical_state_vector(room, last_sv);
                let digest = digest_hex(&state_vector);
                let (id, log_count, log_bytes, snapshot_bytes): (i64, i64, i64, i64) = upsert
                    .query_row(
                        params![
                            room,
                            to_sql_int(added_bytes),
                            to_sql_int(items.len() as u64),
                            state_vector,
                            digest,
                            to_sql_int(now),
                            to_sql_int(seq)
                        ],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                    )?;
                sizes.push((
                    (*room).to_owned(),
                    added_bytes,
                    from_sql_int(log_bytes) + from_sql_int(snapshot_bytes),
                ));
                // One row for the room's updates of this commit (see `log`).
                row.clear();
                row.extend(items.iter().map(|a| &a.update[..]));
                let (blob, count) = super::log::pack(&row);
                insert.execute(params![id, &*blob, to_sql_int(count as u64)])?;
                touched.push(Touched {
                    name: (*room).to_owned(),
                    log_count: from_sql_int(log_count),
                    log_bytes: from_sql_int(log_bytes),
                    snapshot_bytes: from_sql_int(snapshot_bytes),
                });
            }
        }
        tx.prepare_cached("UPDATE meta SET value = ?1 WHERE key = 'change_seq'")?
            .execute(params![to_sql_int(seq)])?;
        tx.commit()?;
        self.change_seq = seq;
        if !resurrected.is_empty() {
            let mut set = self.tombstoned();
            for r in &resurrected {
                set.remove(r);
            }
        }
        let mut cache = self.shared.sizes.lock().unwrap_or_else(|e| e.into_inner());
        for (room, added, now_bytes) in sizes {
            cache.total += added;
            cache.rooms.insert(room, now_bytes);
        }
        drop(cache);
        Ok(touched)
    }

    /// After a failed statement, make sure no transaction is left open on the connection.
    fn rollback_if_open(&self) {
        if !self.conn.is_autocommit() {
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                tracing::error!(error = %e, "store rollback failed");
            }
        }
    }

    fn auto_compact(&mut self, touched: Vec<Touched>) {
        let opts = &self.shared.opts;
        let (max_count, max_bytes) = (opts.compact_log_count, opts.compact_log_bytes);
        for t in touched {
            // Past a threshold, but only once the log is at least half the snapshot: folding
            // rewrites the whole snapshot, so a big document with a small log would otherwise
            // be rewritten every few hundred keystrokes. This bounds the rewrite cost to three
            // times the log bytes.
            let past_threshold = t.log_count >= max_count || t.log_bytes >= max_bytes;
            let worth_it = t.log_bytes.saturating_mul(2) >= t.snapshot_bytes;
            if !past_threshold || !worth_it || self.compaction_failed.contains(&t.name) {
                continue;
            }
            match self.compact(&t.name) {
                Ok((before, after)) => tracing::debug!(
                    room = %t.name,
                    log_count = t.log_count,
                    before,
                    after,
                    "compacted room"
                ),
                Err(e) => {
                    tracing::warn!(
                        room = %t.name,
                        error = %e,
                        "automatic compaction failed; not retried until an explicit compaction"
                    );
                    self.compaction_failed.insert(t.name);
                }
            }
        }
    }

    /// Folds `room`'s snapshot and log into a new snapshot in one transaction.
    fn compact(&mut self, room: &str) -> Result<(u64, u64), StoreError> {
        let result = self.compact_in_transaction(room);
        if result.is_err() {
            self.rollback_if_open();
        }
        result
    }

    fn compact_in_transaction(&mut self, room: &str) -> Result<(u64, u64), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let row = tx
            .query_row(
                "SELECT r.id, s.data, r.snapshot_bytes, r.log_bytes, r.log_count
                 FROM rooms r LEFT JOIN snapshots s ON s.room_id = r.id WHERE r.name = ?1",
                params![room],
                |r| {
                    Ok(StoredRoom {
                        id: r.get(0)?,
                        snapshot: r.get(1)?,
                        bytes: from_sql_int(r.get(2)?) + from_sql_int(r.get(3)?),
                        log_count: from_sql_int(r.get(4)?),
                    })
                },
            )
            .optional()?;
        let Some(StoredRoom {
            id,
            snapshot,
            bytes: before,
            log_count,
        }) = row
        else {
            return Ok((0, 0));
        };
        if log_count == 0 && snapshot.is_some() {
            // Already one snapshot (e.g. an idle room evicted twice): nothing to fold.
            return Ok((before, before));
        }
        let blobs = super::read_log(&tx, room, id)?;
        let folded = fold(room, snapshot.as_deref(), &blobs)?;
        let after = folded.len() as u64;
        tx.execute(
            "INSERT INTO snapshots (room_id, data) VALUES (?1, ?2)
             ON CONFLICT (room_id) DO UPDATE SET data = excluded.data",
            params![id, folded],
        )?;
        tx.execute(
            "UPDATE rooms SET snapshot_bytes = ?1, log_bytes = 0, log_count = 0 WHERE id = ?2",
            params![to_sql_int(after), id],
        )?;
        tx.execute("DELETE FROM updates WHERE room_id = ?1", params![id])?;
        tx.commit()?;
        {
            let mut cache = self.shared.sizes.lock().unwrap_or_else(|e| e.into_inner());
            cache.total = cache.total.saturating_sub(before).saturating_add(after);
            cache.rooms.insert(room.to_owned(), after);
        }
        self.shared.stats.compacted();
        self.maybe_vacuum();
        Ok((before, after))
    }

    /// Returns free pages to the file system once there are many (incremental auto-vacuum).
    fn maybe_vacuum(&self) {
        let free: rusqlite::Result<i64> =
            self.conn
                .pragma_query_value(None, "freelist_count", |r| r.get(0));
        if matches!(free, Ok(n) if n > VACUUM_FREE_PAGES) {
            if let Err(e) = self.conn.execute_batch("PRAGMA incremental_vacuum") {
                tracing::warn!(error = %e, "incremental vacuum failed");
            }
        }
    }
}

/// Applies `snapshot` then `updates` to a fresh document and encodes its full state (v1).
/// A blob that does not decode (or makes the decoder panic) is reported as corrupt.
pub(crate) fn fold(
    room: &str,
    snapshot: Option<&[u8]>,
    updates: &[Vec<u8>],
) -> Result<Vec<u8>, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        room: room.to_owned(),
        detail,
    };
    let result = catch_unwind(AssertUnwindSafe(|| -> Result<Vec<u8>, String> {
        let doc = Doc::new();
        {
            let mut txn = doc.transact_mut();
            let blobs = snapshot
                .into_iter()
                .chain(updates.iter().map(Vec::as_slice));
            for (i, blob) in blobs.enumerate() {
                let what = match (snapshot.is_some(), i) {
                    (true, 0) => "snapshot".to_owned(),
                    (true, i) => format!("log update #{i}"),
                    (false, i) => format!("log update #{}", i + 1),
                };
                let update = crate::protocol::scan::decode_update(blob)
                    .map_err(|e| format!("{what} does not decode: {e}"))?;
                txn.apply_update(update)
                    .map_err(|e| format!("{what} does not apply: {e}"))?;
            }
        }
        let txn = doc.transact();
        let folded = txn.encode_state_as_update_v1(&StateVector::default());
        Ok(folded)
    }));
    match result {
        Ok(Ok(folded)) => Ok(folded),
        Ok(Err(detail)) => Err(corrupt(detail)),
        Err(_) => Err(corrupt("the Yjs decoder panicked on it".into())),
    }
}

/// Deletes a room's log, snapshot and row (inside the caller's transaction).
fn delete_room_rows(tx: &rusqlite::Transaction<'_>, id: i64) -> Result<(), StoreError> {
    tx.execute("DELETE FROM updates WHERE room_id = ?1", params![id])?;
    tx.execute("DELETE FROM snapshots WHERE room_id = ?1", params![id])?;
    tx.execute("DELETE FROM rooms WHERE id = ?1", params![id])?;
    Ok(())
}
