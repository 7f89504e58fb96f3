//! The durable store: every room's update log and snapshot, kept on disk.
//!
//! This module owns **what "saved" means**. The room layer hands each update that changed a
//! room to [`Store::append`] (synchronously, under its room lock, so log order equals apply
//! order) and gets a [`CommitTicket`]; [`Store::wait_durable`] resolves once that ticket, and
//! every ticket before it, is committed and fsync'd. Nothing above this layer talks to SQLite.
//!
//! The [`Store`] trait is small, async and object-safe (`Arc<dyn Store>`) so that a later layer
//! (S3 snapshots, see ARCHITECTURE.md) can wrap another store: it can fall back on a
//! [`Store::load`] miss, learn which rooms changed since a marker ([`Store::changed_since`]) and
//! list rooms ([`Store::list`]) without loading documents.
//!
//! # The embedded backend: [`SqliteStore`]
//!
//! One SQLite database, `DATA_DIR/ymesh.sqlite3`, in WAL mode with `synchronous=FULL`: with
//! WAL, FULL makes SQLite fsync the WAL file at every commit, so a committed transaction
//! survives power loss and `kill -9` (NORMAL would only sync at checkpoints). Incremental
//! auto-vacuum is enabled when the file is created.
//!
//! **One node per data directory.** `open` takes an exclusive non-blocking lock
//! (`File::try_lock`: `flock` on Unix) on `DATA_DIR/LOCK` and holds it for the store's
//! lifetime. The kernel drops the lock when the
//! process dies, so a crash never leaves a stale lock; the file itself may stay. A second
//! open of the same directory, in another process or in this one, fails with
//! [`StoreError::Locked`].
//!
//! **Schema.** `PRAGMA application_id` marks the file as ours (`0x594D5348`, "YMSH") and
//! `PRAGMA user_version` records the schema version ([`SCHEMA_VERSION`] = 6). A newer version is
//! refused ([`StoreError::SchemaTooNew`]); an older one is migrated in one transaction (version
//! 0 is the empty new file). A file that is not SQLite, or a SQLite database that is not ours,
//! is refused ([`StoreError::NotAStore`]) and never written to.
//!
//! ```text
//! meta    (key TEXT PRIMARY KEY, value INTEGER)       -- 'change_seq': global change counter;
//!                                                     -- 'peer_marker:{node id}': change
//!                                                     -- marker per mesh peer
//! rooms   (id INTEGER PRIMARY KEY,                    -- internal, referenced below
//!          name TEXT UNIQUE NOT NULL,                 -- room name as the room layer knows it
//!          snapshot_bytes, log_bytes, log_count,      -- logical sizes (bytes of blobs)
//!          state_vector BLOB NOT NULL,                -- v1 state vector, canonical (sorted)
//!          digest TEXT NOT NULL,                      -- hex sha256 of state_vector
//!          updated_at_ms INTEGER NOT NULL,            -- unix ms of the last committed append
//!          change_seq INTEGER NOT NULL)               -- meta.change_seq at that commit
//!          + index on change_seq
//! snapshots (room_id INTEGER PRIMARY KEY,             -- rooms.id
//!          data BLOB NOT NULL)                        -- v1 update of the folded log
//! updates (seq INTEGER PRIMARY KEY,                   -- rowid: increases with every commit
//!          room_id INTEGER NOT NULL,                  -- rooms.id
//!          data BLOB NOT NULL,                        -- the v1 updates one commit appended to
//!          count INTEGER NOT NULL DEFAULT 1)          -- the room, as it applied them: 1 is the
//!                                                     -- update itself, more are each length-
//!                                                     -- prefixed (sqlite/log.rs; schema 6)
//!          + index on (room_id, seq)
//! tombstones (room TEXT PRIMARY KEY,                  -- a deleted room's name
//!          deleted_ms INTEGER NOT NULL,               -- unix ms of the (latest) deletion
//!          state_vector BLOB NOT NULL,                -- v1 state vector of what was deleted
//!          origin TEXT NOT NULL,                      -- node id that deleted it
//!          change_seq INTEGER NOT NULL)               -- meta.change_seq when recorded
//!          + index on change_seq
//! applied_commands (id TEXT PRIMARY KEY,              -- maintenance commands applied here
//!          expires_ms INTEGER NOT NULL)               -- forgotten after this (unix ms)
//! room_schema (room TEXT PRIMARY KEY,                 -- schema version set by `migrate`
//!          version INTEGER NOT NULL)
//! ```
//!
//! **Deletion** ([`Store::delete_room`]) is a writer request like an append, so it is
//! ordered after every append queued before it: it removes the room's rows and records a
//! [`Tombstone`] in one transaction. A later append to that room (an edit the deleted state
//! did not have: the room layer lets only those through) removes the tombstone in the
//! transaction that stores it. Tombstones older than the retention are purged with
//! [`Store::purge_tombstones`].
//!
//! Snapshots live apart from the `rooms` row (schema version 2) because every commit
//! updates that row, and SQLite rewrites a row together with its overflow pages.
//!
//! A room's document is its snapshot followed by its `updates` in `seq` order.
//!
//! **Group commit.** One writer OS thread owns the only write connection. `append` assigns
//! the ticket and sends into a bounded channel (capacity
//! [`StoreOptions::queue_capacity`]) under one short std mutex, so tickets are in channel
//! order; it blocks only when the channel is full (backpressure). The writer blocks for one
//! request, drains whatever else is queued (up to [`StoreOptions::max_batch_items`] /
//! [`StoreOptions::max_batch_bytes`], optionally waiting [`StoreOptions::batch_window`]),
//! writes the whole batch in ONE transaction, commits, and publishes the highest committed
//! ticket on a `tokio::sync::watch` channel that `wait_durable` awaits. Because SQLite is
//! busy with an fsync while new appends queue up, batches grow with load on their own.
//! While **nobody waits** for a commit (no `wait_durable` pending: no 102 echo, HTTP write
//! or eviction asking), a small batch is held open for up to
//! [`StoreOptions::commit_delay`] (20 ms), parked so that appends queued meanwhile do not
//! wake the writer; `wait_durable` on an uncommitted ticket ends the hold at once. So an
//! acknowledgement never waits longer than before, and a trickle of updates over many rooms
//! (1,000 rooms typing at 2,000 updates/s) shares one commit and one fsync per hold instead
//! of paying one each. What is not acknowledged may stay in memory up to that much longer;
//! nothing a client was told is saved ever does.
//!
//! **Failures.** A failed commit is logged and recorded against the batch's ticket range;
//! waiters for those tickets get [`StoreError::CommitFailed`], and the writer goes on with the
//! next batch. The batch's rooms are marked unhealthy *before* those tickets are published
//! ([`Store::room_failure`], [`Store::health`]); the server's repair worker rewrites each
//! one's full state with [`Store::repair`] (with backoff) until a write commits, which heals
//! it. Until then the room keeps syncing in memory and its 102 echoes wait.
//!
//! **Compaction** folds a room's snapshot and log into a new snapshot (a fresh `yrs` doc,
//! `encode_state_as_update_v1`) in one transaction. The writer does it after a commit when a
//! room's log passes [`StoreOptions::compact_log_count`] or
//! [`StoreOptions::compact_log_bytes`], and on request ([`Store::compact`]).
//!
//! **Reads** (`load`, `list`, `meta`, `changed_since`) run on a fixed pool of reader threads
//! ([`StoreOptions::max_idle_readers`], default 2), each with its own read-only connection;
//! WAL lets them run while the writer commits. (On tokio's blocking pool, a burst of room
//! loads grew the pool by a thread per overlapping load, each keeping its stack and
//! allocator arena afterwards: about 4 kB per room opened in the burst.) A read sees every
//! committed append; an append that is queued but not yet committed may be missing, so the
//! room layer loads a room *before* it accepts appends for it.

mod sqlite;
mod state_vector;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use sqlite::{
    prepare_data_dir, SqliteStore, StoreStats, DB_FILE_NAME, LOCK_FILE_NAME, SCHEMA_VERSION,
};
pub(crate) use state_vector::{canonical_state_vector, digest_hex};
pub use state_vector::{merge_state_vectors, state_vector_covers};
// For the offline tools in `crate::ops` (backup, restore): the directory lock, and the
// checks that recognise a store file.
pub(crate) use sqlite::{check_header, DirLock, APPLICATION_ID};

/// A boxed, `Send` future borrowing the store; keeps [`Store`] object-safe.
pub type BoxFuture<'a, T> = futures_util::future::BoxFuture<'a, T>;

/// Errors from the store. Every variant names what it is about (room, file, directory).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem operation failed.
    #[error("store I/O error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The data directory cannot be used (it is a file, cannot be created, is not
    /// writable); `problem` says which, as a sentence.
    #[error("data directory {}: {problem}", dir.display())]
    DataDir {
        /// The data directory.
        dir: PathBuf,
        /// What is wrong and what to do.
        problem: String,
    },
    /// SQLite reported an error.
    #[error("SQLite error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A room's stored data does not decode; only that room is affected.
    #[error("stored data of room {room:?} is corrupt: {detail}")]
    Corrupt {
        /// The room whose data is corrupt.
        room: String,
        /// What failed to decode.
        detail: String,
    },
    /// The database was written by a newer ymesh; it is left untouched.
    #[error(
        "{path} has store schema version {found}, newer than version {supported} that this \
         ymesh supports; upgrade ymesh (the file was left untouched)"
    )]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// The version found in the file.
        found: i64,
        /// The newest version this build understands.
        supported: i64,
    },
    /// The database file is not a ymesh store (not SQLite, or someone else's SQLite database).
    #[error("{path} is not a ymesh store ({detail}); refusing to use or modify it")]
    NotAStore {
        /// The database file.
        path: PathBuf,
        /// Why it was refused.
        detail: String,
    },
    /// Another store (another process, or another open in this one) holds the directory.
    #[error(
        "data directory {dir} is locked: another ymesh node is using it{holder} \
         (one node per data directory)"
    )]
    Locked {
        /// The data directory.
        dir: PathBuf,
        /// Best-effort description of the holder, e.g. " (pid 1234)", or empty.
        holder: String,
    },
    /// The store was closed (or its writer stopped); nothing more can be written.
    #[error("store is closed")]
    Closed,
    /// The commit that contained this append failed; the append is not durable.
    #[error("commit failed: {0}")]
    CommitFailed(Arc<StoreError>),
    /// An internal invariant failed (e.g. a background thread panicked).
    #[error("store internal error: {0}")]
    Internal(String),
}

/// Ordered, monotonically increasing position of an appended update.
///
/// Tickets start at 1; ticket 0 ([`CommitTicket::NONE`]) is "nothing appended yet" and is
/// always durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct CommitTicket(pub u64);

impl CommitTicket {
    /// Precedes every real ticket; `wait_durable(NONE)` resolves at once.
    pub const NONE: CommitTicket = CommitTicket(0);
}

/// A room's stored state: apply `snapshot` (if any), then `updates` in order (all Yjs v1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadedRoom {
    /// The folded state at the last compaction, or `None` if never compacted.
    pub snapshot: Option<Vec<u8>>,
    /// Updates appended since, oldest first.
    pub updates: Vec<Vec<u8>>,
}

/// What the store knows about a room without loading its document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomMeta {
    /// The room name.
    pub name: String,
    /// Logical size: snapshot bytes plus log bytes (blob sizes, not pages on disk).
    pub bytes: u64,
    /// Number of updates in the log since the last compaction.
    pub log_count: u64,
    /// Unix time in milliseconds of the last committed append.
    pub updated_at_ms: u64,
    /// The room's encoded (v1) state vector after the last committed append, with entries in
    /// client-id order so that equal state vectors have equal bytes.
    pub state_vector: Vec<u8>,
    /// Lower-case hex SHA-256 of `state_vector`. Equal documents have equal digests. It
    /// covers inserted content only: an update that only deletes does not change a state
    /// vector, so it does not change the digest either.
    pub digest: String,
}

/// The record of a deleted room, kept so that a stale copy held by a node that was offline
/// does not bring it back: content covered by `state_vector` is what was deleted.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Tombstone {
    /// The deleted room's name.
    pub room: String,
    /// Unix time in milliseconds of the deletion (the latest, when merged).
    pub deleted_ms: u64,
    /// Encoded (v1) state vector of the deleted document: every insertion at or below it
    /// was deleted. Merged tombstones hold the per-client maximum.
    #[serde(serialize_with = "hex_bytes")]
    pub state_vector: Vec<u8>,
    /// Node id of the node where the room was deleted.
    pub origin: String,
}

fn hex_bytes<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    use std::fmt::Write;
    let mut out = String::with_capacity(v.len() * 2);
    for b in v {
        let _ = write!(out, "{b:02x}");
    }
    s.serialize_str(&out)
}

impl Tombstone {
    /// Merges `other` (a tombstone of the same room) into this one: the union of the two
    /// deleted states, the later deletion time, and that deletion's origin.
    pub fn merge(&mut self, other: &Tombstone) {
        self.state_vector = merge_state_vectors(&self.state_vector, &other.state_vector);
        if other.deleted_ms > self.deleted_ms {
            self.deleted_ms = other.deleted_ms;
            self.origin = other.origin.clone();
        }
    }

    /// Whether this tombstone already covers everything `other` deleted.
    pub fn covers(&self, other: &Tombstone) -> bool {
        state_vector_covers(&self.state_vector, &other.state_vector)
    }
}

/// Tuning of [`SqliteStore`]. `Default` gives the production values.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Compact a room once its log holds this many updates (default 500).
    pub compact_log_count: u64,
    /// Compact a room once its log holds this many bytes (default 1 MiB).
    pub compact_log_bytes: u64,
    /// Appends queued for the writer before `append` blocks (default 8192).
    pub queue_capacity: usize,
    /// Most requests committed in one transaction (default 1024).
    pub max_batch_items: usize,
    /// Stop adding to a batch once its updates reach this many bytes (default 8 MiB).
    pub max_batch_bytes: usize,
    /// After the first request of a batch, wait up to this long for more while the batch is
    /// small (default 0: the fsync of the previous batch is window enough under load).
    pub batch_window: Duration,
    /// While nobody waits for a commit (no 102 echo, HTTP write or `wait_durable` pending),
    /// gather a small batch for up to this long before committing it (default 20 ms). A
    /// waiter arriving meanwhile ends the wait, so acknowledgements are never delayed; it
    /// turns a trickle of updates over many rooms from one commit and fsync each into one
    /// per `commit_delay`.
    pub commit_delay: Duration,
    /// How long SQLite retries a locked database before failing (default 5 s).
    pub busy_timeout: Duration,
    /// Reader threads, each with its own read connection (default 2); reads beyond that
    /// many at once wait for one.
    pub max_idle_readers: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            compact_log_count: 500,
            compact_log_bytes: 1024 * 1024,
            queue_capacity: 8192,
            max_batch_items: 1024,
            max_batch_bytes: 8 * 1024 * 1024,
            batch_window: Duration::ZERO,
            commit_delay: Duration::from_millis(20),
            busy_timeout: Duration::from_secs(5),
            max_idle_readers: 2,
        }
    }
}

/// A durable home for rooms. Object-safe: use it as `Arc<dyn Store>`; a wrapper (e.g. S3
/// snapshots) can implement it around another `Store`.
pub trait Store: Send + Sync + 'static {
    /// Enqueues `update` for `room`; returns its ticket.
    ///
    /// Synchronous and cheap, callable while holding a std mutex: it never awaits, and blocks
    /// only while the writer's bounded queue is full. `state_vector` is the room's encoded
    /// state vector after the update; it is stored with the room (and its digest) at commit.
    /// Call it in the order the room applied its updates.
    fn append(
        &self,
        room: &str,
        update: bytes::Bytes,
        state_vector: Vec<u8>,
    ) -> Result<CommitTicket, StoreError>;

    /// [`Store::append`] with the room's name as the room layer holds it: a store may keep
    /// the shared name instead of copying it per append.
    fn append_shared(
        &self,
        room: &Arc<str>,
        update: bytes::Bytes,
        state_vector: Vec<u8>,
    ) -> Result<CommitTicket, StoreError> {
        self.append(room, update, state_vector)
    }

    /// Resolves when every append up to and including `ticket` is committed to disk, or with
    /// the error that prevented it ([`StoreError::CommitFailed`] for the commit holding
    /// `ticket`).
    fn wait_durable(&self, ticket: CommitTicket) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The stored state of `room`, or `None` if it was never stored. Sees every committed
    /// append (queued, uncommitted ones may be missing: load before appending). Blobs that do
    /// not decode as Yjs v1 updates give [`StoreError::Corrupt`] for this room only.
    fn load(&self, room: &str) -> BoxFuture<'_, Result<Option<LoadedRoom>, StoreError>>;

    /// Folds `room`'s log into one snapshot in one transaction. Returns the logical sizes
    /// `(bytes_before, bytes_after)`; `(0, 0)` if the room is not stored.
    fn compact(&self, room: &str) -> BoxFuture<'_, Result<(u64, u64), StoreError>>;

    /// Every stored room with its metadata, by name, without loading documents.
    fn list(&self) -> BoxFuture<'_, Result<Vec<RoomMeta>, StoreError>>;

    /// The metadata of one room, or `None` if it is not stored.
    fn meta(&self, room: &str) -> BoxFuture<'_, Result<Option<RoomMeta>, StoreError>>;

    /// Rooms whose content changed after `marker`, and the marker to pass next time. Markers
    /// are opaque; `0` means "from the beginning". Compaction does not count as a change.
    fn changed_since(&self, marker: u64) -> BoxFuture<'_, Result<(Vec<String>, u64), StoreError>>;

    /// Commits everything queued, then stops the writer and releases the data directory.
    /// Later appends and reads fail with [`StoreError::Closed`].
    fn close(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Enqueues a *repair* of `room`: its full state (`full_state`, a v1 update of the whole
    /// document) after a failed commit left a gap in its log. Like [`Store::append`], call it
    /// under the room lock. When it commits, the room is healthy again.
    fn repair(
        &self,
        room: &str,
        full_state: bytes::Bytes,
        state_vector: Vec<u8>,
    ) -> Result<CommitTicket, StoreError>;

    /// Why `room` is unhealthy: a commit holding one of its updates failed and no repair has
    /// committed since. The room keeps syncing in memory meanwhile.
    fn room_failure(&self, room: &str) -> Option<RoomFailure>;

    /// Every unhealthy room.
    fn failures(&self) -> Vec<(String, RoomFailure)>;

    /// A counter that changes whenever a room becomes unhealthy or healthy again.
    fn health(&self) -> tokio::sync::watch::Receiver<u64>;

    /// Logical bytes `room` holds on disk (snapshot + log) as of its last commit or load;
    /// `None` if not known (not stored, or not touched since start). Cheap and synchronous.
    fn stored_bytes(&self, room: &str) -> Option<u64>;

    /// Logical bytes of every room together, kept current at each commit and compaction.
    fn total_bytes(&self) -> u64;

    /// Deletes `tombstone.room` (its log, snapshot and metadata) and records the tombstone,
    /// merged with the stored state vector of the room and with an earlier tombstone, in one
    /// transaction ordered after every append queued before this call. Returns the tombstone
    /// as stored and whether room data was deleted. With no stored room it only records the
    /// tombstone.
    fn delete_room(
        &self,
        tombstone: Tombstone,
    ) -> BoxFuture<'_, Result<(Tombstone, bool), StoreError>>;

    /// Every recorded tombstone, by room name.
    fn tombstones(&self) -> BoxFuture<'_, Result<Vec<Tombstone>, StoreError>>;

    /// Tombstones recorded (or merged) after change marker `marker` (see
    /// [`Store::changed_since`]: a deletion counts as a change).
    fn tombstones_since(&self, marker: u64) -> BoxFuture<'_, Result<Vec<Tombstone>, StoreError>>;

    /// Forgets tombstones of deletions before `before_ms` (unix ms); returns how many.
    fn purge_tombstones(&self, before_ms: u64) -> BoxFuture<'_, Result<usize, StoreError>>;

    /// Removes `room`'s stored data *without* a tombstone (its copy is dropped to be synced
    /// again from a peer: the `invalidate` command), ordered after earlier appends. Returns
    /// whether there was data.
    fn discard_room(&self, room: &str) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Records that maintenance command `id` was applied here, remembered until
    /// `expires_ms`. Returns false if it was already recorded (do not apply it again).
    /// Forgets expired ids on the way.
    fn mark_command_applied(
        &self,
        id: &str,
        expires_ms: u64,
    ) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Sets the schema version `migrate` recorded for `room`.
    fn set_schema_version(&self, room: &str, version: u64)
        -> BoxFuture<'_, Result<(), StoreError>>;

    /// Every room's recorded schema version, by room name.
    fn schema_versions(&self) -> BoxFuture<'_, Result<Vec<(String, u64)>, StoreError>>;

    /// The change marker ([`Store::changed_since`]) recorded for mesh peer `peer`: rooms
    /// changed after it are re-synced with that peer when a link comes up, which carries
    /// changes a digest does not show (deletions) across restarts.
    fn peer_marker(&self, peer: &str) -> BoxFuture<'_, Result<Option<u64>, StoreError>>;

    /// Records the change marker for mesh peer `peer`.
    fn set_peer_marker(&self, peer: &str, marker: u64) -> BoxFuture<'_, Result<(), StoreError>>;
}

/// A room whose latest writes did not reach the disk.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RoomFailure {
    /// The error of the first failed commit.
    pub error: String,
    /// When it failed (unix ms).
    pub since_ms: u64,
    /// Failed commits since the room was last healthy.
    pub failed_commits: u64,
}
