//! State shared by the store handle ([`super::SqliteStore`]), the writer thread
//! ([`super::writer`]) and read tasks: the durable-ticket watch, failed ticket ranges, the
//! writer's counters, stored sizes, room health, the tombstoned-room set, the writer's
//! hold (who waits for a commit, waking the parked writer) and the reader threads
//! ([`super::readers`]); plus the small conversions both sides need.
//!
//! It sits below both the handle and the writer, which both hold an `Arc<Shared>`: neither
//! imports the other's internals through it. Every lock here is a short std mutex, never
//! held across an `.await`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::Connection;
use tokio::sync::watch;

use super::readers::ReaderPool;
use crate::metrics::StoreCounters;
use crate::store::{RoomFailure, StoreError, StoreOptions};

/// How many failed ticket ranges are remembered for late `wait_durable` callers.
const MAX_FAILED_RANGES: usize = 1024;

/// State shared by the store handle, the writer thread and read tasks.
pub(super) struct Shared {
    pub(super) opts: StoreOptions,
    db_path: PathBuf,
    /// Highest ticket the writer has finished (committed, or failed and recorded).
    durable: watch::Sender<u64>,
    pub(super) failures: Failures,
    /// The writer's counters (shared with the node's metrics registry).
    pub(super) stats: Arc<StoreCounters>,
    /// The reader threads and their connections.
    pub(super) readers: ReaderPool,
    /// Logical stored bytes (snapshot + log) per room as last committed or read, and their
    /// total over all rooms: what storage quotas are checked against.
    pub(super) sizes: Mutex<SizeCache>,
    /// Rooms whose writes failed and are not repaired yet.
    pub(super) unhealthy: Mutex<HashMap<String, RoomFailure>>,
    /// Bumped whenever `unhealthy` changes.
    pub(super) health: watch::Sender<u64>,
    /// Rooms with a tombstone (the writer's copy of the `tombstones` table's keys): an
    /// append to one of them removes its tombstone in the same transaction.
    pub(super) tombstoned: Mutex<HashSet<String>>,
    /// The highest ticket someone waits for (`wait_durable`): the writer commits at once
    /// rather than holding a batch for `commit_delay` while this is above `durable`.
    flush_wanted: AtomicU64,
    /// The writer thread is parked holding a batch open (see [`Shared::park_writer`]).
    writer_parked: AtomicBool,
    /// The writer thread, to wake it from a hold.
    writer_thread: OnceLock<std::thread::Thread>,
    /// Set by `close`: no new reader connections; the directory lock is released.
    closed: AtomicBool,
    /// Why the writer stopped, if it died rather than being closed.
    dead: OnceLock<Arc<StoreError>>,
}

/// Ticket ranges whose commit failed, so their waiters get the error.
#[derive(Default)]
pub(super) struct Failures {
    any: AtomicBool,
    log: Mutex<FailureLog>,
}

/// The failed ranges behind [`Failures`]' mutex.
#[derive(Default)]
struct FailureLog {
    /// Ascending, disjoint `(first, last, error)`.
    ranges: VecDeque<(u64, u64, Arc<StoreError>)>,
    /// Ranges up to this ticket were forgotten (too many failures): their outcome is unknown.
    forgotten_through: u64,
}

/// Locks `m`, ignoring poisoning: every value behind these mutexes stays consistent
/// between statements.
pub(super) fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Failures {
    /// Records that tickets `first..=last` failed with `error`.
    pub(super) fn record(&self, first: u64, last: u64, error: Arc<StoreError>) {
        let mut log = locked(&self.log);
        log.ranges.push_back((first, last, error));
        while log.ranges.len() > MAX_FAILED_RANGES {
            if let Some((_, last, _)) = log.ranges.pop_front() {
                log.forgotten_through = last;
            }
        }
        self.any.store(true, Ordering::Release);
    }

    /// `Ok` unless `ticket`'s commit failed (or its outcome was forgotten: then, to be safe,
    /// it is reported as failed).
    pub(super) fn check(&self, ticket: u64) -> Result<(), StoreError> {
        if !self.any.load(Ordering::Acquire) {
            return Ok(());
        }
        let log = locked(&self.log);
        let i = log.ranges.partition_point(|(_, last, _)| *last < ticket);
        if let Some((first, _, error)) = log.ranges.get(i) {
            if *first <= ticket {
                return Err(StoreError::CommitFailed(Arc::clone(error)));
            }
        }
        if ticket <= log.forgotten_through {
            return Err(StoreError::CommitFailed(Arc::new(StoreError::Internal(
                format!("too many failed commits since ticket {ticket}; its outcome is unknown"),
            ))));
        }
        Ok(())
    }
}

impl Shared {
    /// The state of a store just opened on `db_path`, reading through `readers`, with
    /// `total_bytes` stored over all rooms.
    pub(super) fn new(
        db_path: PathBuf,
        opts: StoreOptions,
        readers: ReaderPool,
        total_bytes: u64,
    ) -> Shared {
        Shared {
            db_path,
            durable: watch::channel(0).0,
            failures: Failures::default(),
            stats: Arc::default(),
            readers,
            unhealthy: Mutex::new(HashMap::new()),
            tombstoned: Mutex::new(HashSet::new()),
            sizes: Mutex::new(SizeCache {
                rooms: HashMap::new(),
                total: total_bytes,
            }),
            health: watch::channel(0).0,
            flush_wanted: AtomicU64::new(0),
            writer_parked: AtomicBool::new(false),
            writer_thread: OnceLock::new(),
            closed: AtomicBool::new(false),
            dead: OnceLock::new(),
            opts,
        }
    }

    /// The database file.
    pub(super) fn db_path(&self) -> &Path {
        &self.db_path
    }

    /// The highest ticket the writer has finished with (committed or failed).
    pub(super) fn durable_ticket(&self) -> u64 {
        *self.durable.borrow()
    }

    /// Someone waits for `ticket` to be durable: if the writer holds a batch open (see
    /// [`Shared::park_writer`]), it commits now.
    pub(super) fn want_flush(&self, ticket: u64) {
        if ticket <= self.durable_ticket() {
            return;
        }
        self.flush_wanted.fetch_max(ticket, Ordering::SeqCst);
        // Paired with `park_writer`: either the writer sees `flush_wanted` before parking,
        // or this sees `writer_parked` and wakes it.
        if self.writer_parked.load(Ordering::SeqCst) {
            self.wake_writer();
        }
    }

    /// Whether a ticket someone waits for is not durable yet.
    pub(super) fn flush_wanted(&self) -> bool {
        self.flush_wanted.load(Ordering::SeqCst) > self.durable_ticket()
    }

    /// Wakes the writer from a hold (a request with a reply arrived, or the store closes).
    pub(super) fn wake_writer(&self) {
        if let Some(t) = self.writer_thread.get() {
            t.unpark();
        }
    }

    /// Called by the writer thread when it starts.
    pub(super) fn set_writer_thread(&self, thread: std::thread::Thread) {
        let _ = self.writer_thread.set(thread);
    }

    /// The writer holds a batch open for up to `timeout`. Appends queued meanwhile do not
    /// wake it (they wake the writer only while it blocks in `recv` for a batch's first
    /// request); a waiter ([`Shared::want_flush`]), a request with a reply or closing does.
    /// With `awaited`, someone waits already and only `batch_window` is being honoured.
    pub(super) fn park_writer(&self, timeout: std::time::Duration, awaited: bool) {
        self.writer_parked.store(true, Ordering::SeqCst);
        if awaited || !self.flush_wanted() {
            std::thread::park_timeout(timeout);
        }
        self.writer_parked.store(false, Ordering::SeqCst);
    }

    /// Watches the highest finished ticket.
    pub(super) fn subscribe_durable(&self) -> watch::Receiver<u64> {
        self.durable.subscribe()
    }

    /// Read connections opened since the store was opened.
    pub(super) fn readers_opened(&self) -> u64 {
        self.readers.opened()
    }

    /// After `close`: no new reads; the reader threads finish the queued ones, close their
    /// connections and are joined (blocking).
    pub(super) fn close_readers(&self) {
        self.closed.store(true, Ordering::Release);
        self.readers.close();
    }

    /// Marks every ticket up to `ticket` as finished.
    pub(super) fn publish(&self, ticket: u64) {
        self.durable.send_if_modified(|done| {
            let advance = ticket > *done;
            if advance {
                *done = ticket;
            }
            advance
        });
    }

    /// Marks rooms unhealthy after a failed commit (before the failed tickets are published,
    /// so a waiter that sees its ticket done also sees the room's failure).
    pub(super) fn mark_failed<'a>(&self, rooms: impl IntoIterator<Item = &'a str>, error: &str) {
        let now = now_ms();
        let mut map = locked(&self.unhealthy);
        for room in rooms {
            map.entry(room.to_owned())
                .and_modify(|f| f.failed_commits += 1)
                .or_insert_with(|| RoomFailure {
                    error: error.to_owned(),
                    since_ms: now,
                    failed_commits: 1,
                });
        }
        drop(map);
        self.health.send_modify(|g| *g += 1);
    }

    /// Marks rooms healthy after a repair committed.
    pub(super) fn mark_repaired<'a>(&self, rooms: impl IntoIterator<Item = &'a str>) {
        let mut map = locked(&self.unhealthy);
        let mut changed = false;
        for room in rooms {
            changed |= map.remove(room).is_some();
        }
        drop(map);
        if changed {
            self.health.send_modify(|g| *g += 1);
        }
    }

    /// The writer stopped for good: fail everything outstanding and everything later.
    pub(super) fn writer_died(&self, error: Arc<StoreError>) {
        let _ = self.dead.set(Arc::clone(&error));
        let done = *self.durable.borrow();
        self.failures
            .record(done.saturating_add(1), u64::MAX, error);
        self.publish(u64::MAX);
    }

    pub(super) fn closed_error(&self) -> StoreError {
        match self.dead.get() {
            Some(e) => StoreError::CommitFailed(Arc::clone(e)),
            None => StoreError::Closed,
        }
    }
}

/// Stored sizes, kept current by the writer.
#[derive(Debug, Default)]
pub(super) struct SizeCache {
    pub(super) rooms: HashMap<String, u64>,
    pub(super) total: u64,
}

/// Runs a read on a reader thread (see [`super::readers`]).
pub(super) async fn read<T: Send + 'static>(
    shared: Arc<Shared>,
    f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    if shared.closed.load(Ordering::Acquire) {
        return Err(StoreError::Closed);
    }
    shared.readers.read(f).await
}

/// SQLite integers are `i64`; our counters are `u64` and never near `i64::MAX`.
pub(super) fn to_sql_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The inverse of [`to_sql_int`]; a negative value (never written by us) reads as 0.
pub(super) fn from_sql_int(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Unix time in milliseconds (0 if the clock is before 1970).
pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
