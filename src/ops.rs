//! Operator tools behind `ymesh export`, `import`, `compact`, `backup` and `restore-backup`.
//!
//! Each room operation works in two places:
//!
//! - against the **data directory of a stopped node**: the store is opened directly
//!   ([`SqliteStore::open`] takes the directory's lock, so this fails with
//!   [`OpsError::NodeRunning`] while a node uses the directory);
//! - against a **running node** over its HTTP API ([`NodeClient`]): `GET /rooms/{room}`
//!   exports, `POST /rooms/{room}` imports (answered after commit), and the admin route
//!   `POST /rooms/{room}/compact` compacts.
//!
//! [`backup`] copies a store while a node may be running on it: it opens the database
//! read-only *without* the directory lock (SQLite's own locking and WAL make a concurrent
//! reader safe) and writes a consistent snapshot with `VACUUM INTO`. [`restore_backup`]
//! takes the lock (so never under a running node), checks the backup, and moves it into
//! place atomically.
//!
//! The HTTP client is a minimal HTTP/1.1 one over a tokio `TcpStream` (plain `http://`,
//! `Content-Length` or chunked responses, one request per connection): enough for the
//! node's own API without another dependency.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

use crate::store::{
    check_header, DirLock, LoadedRoom, SqliteStore, Store, StoreError, StoreOptions,
    APPLICATION_ID, DB_FILE_NAME, LOCK_FILE_NAME, SCHEMA_VERSION,
};

/// Errors of the operator tools. Each message says what to do next where there is a choice.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// A node holds the data directory's lock.
    #[error("{}: a node is running on this directory{holder}; {hint}", dir.display())]
    NodeRunning {
        /// The data directory.
        dir: PathBuf,
        /// " pid N" when known, or empty.
        holder: String,
        /// What to do instead.
        hint: &'static str,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The node could not be reached or answered garbage.
    #[error("{url}: {message}")]
    Http {
        /// The node's URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The node answered with an error status.
    #[error("{url} answered {status}: {message}")]
    Status {
        /// The node's URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// The message of its error envelope (or the start of its body).
        message: String,
    },
    /// The request cannot be carried out as asked (room not stored, refusal, bad input).
    #[error("{0}")]
    Refused(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> OpsError + '_ {
    move |source| OpsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What compacting one room did (logical bytes: snapshot plus log).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Compacted {
    /// The room.
    pub room: String,
    /// Stored bytes before.
    pub bytes_before: u64,
    /// Stored bytes after.
    pub bytes_after: u64,
}

/// A deleted room, as `DELETE /rooms/{room}` and `ymesh delete` report it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct DeletedRoom {
    /// The room.
    pub room: String,
    /// Unix ms of the deletion.
    pub deleted_ms: u64,
    /// Node id of the node that deleted it.
    pub origin: String,
}

/// What importing an update did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Imported {
    /// Whether the room changed (an update it already contained changes nothing).
    pub changed: bool,
}

/// What a store file holds, as checked by [`inspect_store_file`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreFileInfo {
    /// Its schema version (`PRAGMA user_version`).
    pub schema_version: i64,
    /// Stored rooms.
    pub rooms: u64,
    /// Logical bytes of every room (snapshots plus logs).
    pub bytes: u64,
    /// Size of the file.
    pub file_bytes: u64,
}

/// Checks that `update` is a Yjs v1 update, before anything is written anywhere.
pub fn validate_update(update: &[u8]) -> Result<(), OpsError> {
    let decoded = std::panic::catch_unwind(|| Update::decode_v1(update).map(|_| ()));
    match decoded {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(OpsError::Refused(format!("not a valid Yjs v1 update: {e}"))),
        Err(_) => Err(OpsError::Refused(
            "not a valid Yjs v1 update (the decoder panicked on it)".into(),
        )),
    }
}

fn check_room_name(room: &str) -> Result<(), OpsError> {
    crate::room::validate_room_name(room).map_err(|e| OpsError::Refused(e.to_string()))
}

// ---------------------------------------------------------------------------------------
// The data directory of a stopped node.

/// The database file of `dir`, which must exist (reading tools never create a store).
fn existing_db(dir: &Path) -> Result<PathBuf, OpsError> {
    let db = dir.join(DB_FILE_NAME);
    match std::fs::metadata(&db) {
        Ok(m) if m.is_file() => Ok(db),
        Ok(_) => Err(OpsError::Refused(format!("{} is not a file", db.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(OpsError::Refused(format!(
            "no ymesh store in {} ({DB_FILE_NAME} not found); pass --data-dir DIR, or --node URL \
             for a running node",
            dir.display()
        ))),
        Err(e) => Err(io_err(&db)(e)),
    }
}

fn node_running(e: StoreError, hint: &'static str) -> OpsError {
    match e {
        StoreError::Locked { dir, holder } => OpsError::NodeRunning { dir, holder, hint },
        other => OpsError::Store(other),
    }
}

/// Opens the store of a stopped node (taking the directory lock).
async fn open_store(dir: &Path) -> Result<SqliteStore, OpsError> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || SqliteStore::open(&dir, StoreOptions::default()))
        .await
        .map_err(|e| OpsError::Refused(format!("opening the store: {e}")))?
        .map_err(|e| node_running(e, "use --node URL to reach it"))
}

/// Runs `f` on the store of `dir`, then closes the store whatever `f` returned.
async fn with_store<T>(
    dir: &Path,
    f: impl AsyncFnOnce(&SqliteStore) -> Result<T, OpsError>,
) -> Result<T, OpsError> {
    let store = open_store(dir).await?;
    let result = f(&store).await;
    let closed = store.close().await;
    let value = result?;
    closed?;
    Ok(value)
}

fn doc_from(room: &str, loaded: &LoadedRoom) -> Result<Doc, OpsError> {
    let doc = Doc::new();
    {
        let mut txn = doc.transact_mut();
        for blob in loaded.snapshot.iter().chain(loaded.updates.iter()) {
            let corrupt = |detail: String| StoreError::Corrupt {
                room: room.to_owned(),
                detail,
            };
            let update = Update::decode_v1(blob).map_err(|e| corrupt(e.to_string()))?;
            txn.apply_update(update)
                .map_err(|e| corrupt(e.to_string()))?;
        }
    }
    Ok(doc)
}

/// The whole document of `room` in the store of a stopped node, as one Yjs v1 update.
pub async fn export_dir(dir: &Path, room: &str) -> Result<Vec<u8>, OpsError> {
    check_room_name(room)?;
    existing_db(dir)?;
    let loaded = with_store(dir, async |store| Ok(store.load(room).await?)).await?;
    let Some(loaded) = loaded else {
        return Err(OpsError::Refused(format!(
            "room {room:?} is not stored in {}",
            dir.display()
        )));
    };
    let doc = doc_from(room, &loaded)?;
    let update = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    Ok(update)
}

/// Merges `update` (a Yjs v1 update) into `room` in the store of a stopped node, creating
/// the room (and the store) if needed; returns once it is committed to disk.
pub async fn import_dir(dir: &Path, room: &str, update: &[u8]) -> Result<Imported, OpsError> {
    check_room_name(room)?;
    validate_update(update)?;
    with_store(dir, async |store| {
        let doc = match store.load(room).await? {
            Some(loaded) => doc_from(room, &loaded)?,
            None => Doc::new(),
        };
        let (diff, waiting) = {
            let mut txn = doc.transact_mut();
            let decoded = Update::decode_v1(update)
                .map_err(|e| OpsError::Refused(format!("not a valid Yjs v1 update: {e}")))?;
            txn.apply_update(decoded)
                .map_err(|e| OpsError::Refused(format!("the update does not apply: {e}")))?;
            (txn.encode_update_v1(), txn.has_missing_updates())
        };
        // Like the room layer: store what changed; an update still waiting for what it
        // depends on is stored as received, so it is there when the rest arrives.
        let to_store = if waiting {
            update.to_vec()
        } else if diff != [0, 0] {
            diff
        } else {
            return Ok(Imported { changed: false });
        };
        let sv = doc.transact().state_vector().encode_v1();
        let ticket = store.append(room, bytes::Bytes::from(to_store), sv)?;
        store.wait_durable(ticket).await?;
        Ok(Imported { changed: true })
    })
    .await
}

/// Compacts `room` (or, with `None`, every stored room) in the store of a stopped node.
pub async fn compact_dir(dir: &Path, room: Option<&str>) -> Result<Vec<Compacted>, OpsError> {
    if let Some(room) = room {
        check_room_name(room)?;
    }
    existing_db(dir)?;
    with_store(dir, async |store| {
        let rooms = match room {
            Some(room) => match store.meta(room).await? {
                Some(_) => vec![room.to_owned()],
                None => {
                    return Err(OpsError::Refused(format!(
                        "room {room:?} is not stored in {}",
                        dir.display()
                    )))
                }
            },
            None => store.list().await?.into_iter().map(|m| m.name).collect(),
        };
        let mut out = Vec::with_capacity(rooms.len());
        for room in rooms {
            let (bytes_before, bytes_after) = store.compact(&room).await?;
            out.push(Compacted {
                room,
                bytes_before,
                bytes_after,
            });
        }
        Ok(out)
    })
    .await
}

/// Deletes `room` from the store of a stopped node and records its tombstone (with this
/// node's id as the origin), which the node sends to its peers when it next links with
/// them, so they delete their copies too.
pub async fn delete_dir(dir: &Path, room: &str) -> Result<DeletedRoom, OpsError> {
    check_room_name(room)?;
    existing_db(dir)?;
    let identity = crate::mesh::NodeIdentity::load_or_create(dir)
        .map_err(|e| OpsError::Refused(format!("{}: node key: {e}", dir.display())))?;
    with_store(dir, async |store| {
        if store.meta(room).await?.is_none() {
            return Err(OpsError::Refused(format!(
                "room {room:?} is not stored in {}",
                dir.display()
            )));
        }
        let tombstone = crate::store::Tombstone {
            room: room.to_owned(),
            deleted_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            state_vector: vec![0],
            origin: identity.node_id().to_owned(),
        };
        let (t, _) = store.delete_room(tombstone).await?;
        Ok(DeletedRoom {
            room: t.room,
            deleted_ms: t.deleted_ms,
            origin: t.origin,
        })
    })
    .await
}

// ---------------------------------------------------------------------------------------
// Backup and restore.

/// A `file:` URI for `path` with `immutable=1`: SQLite reads only the main file (no WAL, no
/// locks). Only for files nobody writes: backups.
fn immutable_uri(path: &Path) -> Result<String, OpsError> {
    let abs = std::path::absolute(path).map_err(io_err(path))?;
    let text = abs
        .to_str()
        .ok_or_else(|| OpsError::Refused(format!("{}: path is not valid UTF-8", path.display())))?;
    let mut uri = String::from("file:");
    for c in text.chars() {
        match c {
            '%' => uri.push_str("%25"),
            '?' => uri.push_str("%3F"),
            '#' => uri.push_str("%23"),
            c => uri.push(c),
        }
    }
    uri.push_str("?immutable=1");
    Ok(uri)
}

/// Checks that `conn` is a ymesh store this build can read and returns what it holds.
fn inspect(conn: &Connection, path: &Path) -> Result<StoreFileInfo, OpsError> {
    let not_ours = |detail: String| {
        OpsError::Store(StoreError::NotAStore {
            path: path.to_path_buf(),
            detail,
        })
    };
    let app_id: i64 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(|e| not_ours(format!("cannot read it as SQLite: {e}")))?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| not_ours(format!("cannot read it as SQLite: {e}")))?;
    if app_id != APPLICATION_ID {
        return Err(not_ours(format!(
            "a SQLite database with application_id {app_id}, not ymesh's"
        )));
    }
    if version > SCHEMA_VERSION {
        return Err(OpsError::Store(StoreError::SchemaTooNew {
            path: path.to_path_buf(),
            found: version,
            supported: SCHEMA_VERSION,
        }));
    }
    if version < 1 {
        return Err(not_ours(format!("schema version {version}")));
    }
    for table in ["meta", "rooms", "updates"] {
        let found: Option<String> = conn
            .query_row(
                "SELECT name FROM sqlite_schema WHERE type = 'table' AND name = ?1",
                [table],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| not_ours(format!("cannot read its schema: {e}")))?;
        if found.is_none() {
            return Err(not_ours(format!("table {table:?} is missing")));
        }
    }
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| not_ours(format!("integrity check failed: {e}")))?;
    if check != "ok" {
        return Err(not_ours(format!("integrity check failed: {check}")));
    }
    let (rooms, bytes): (i64, i64) = conn
        .query_row(
            "SELECT count(*), coalesce(sum(snapshot_bytes + log_bytes), 0) FROM rooms",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(|e| not_ours(format!("cannot read its rooms: {e}")))?;
    let file_bytes = std::fs::metadata(path).map_err(io_err(path))?.len();
    Ok(StoreFileInfo {
        schema_version: version,
        rooms: u64::try_from(rooms).unwrap_or(0),
        bytes: u64::try_from(bytes).unwrap_or(0),
        file_bytes,
    })
}

/// Checks that the file at `path` (a backup, or any copy of a store file that nobody is
/// writing) is a ymesh store of a schema this build reads, and intact (`quick_check`).
pub fn inspect_store_file(path: &Path) -> Result<StoreFileInfo, OpsError> {
    if !check_header(path)? {
        return Err(OpsError::Refused(format!(
            "{}: no such file, or it is empty",
            path.display()
        )));
    }
    let conn = Connection::open_with_flags(
        immutable_uri(path)?,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| {
        OpsError::Store(StoreError::NotAStore {
            path: path.to_path_buf(),
            detail: format!("SQLite cannot open it: {e}"),
        })
    })?;
    inspect(&conn, path)
}

fn sync_dir(dir: &Path) -> Result<(), OpsError> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

fn sync_file(path: &Path) -> Result<(), OpsError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_err(path))
}

fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

fn remove_if_exists(path: &Path) -> Result<(), OpsError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// A sibling of `path` in the same directory, for writing before an atomic rename.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "ymesh".into());
    path.with_file_name(format!(".{name}.{suffix}-{}", std::process::id()))
}

/// Writes a consistent copy of the store in `dir` to `dest` (a new file) while a node may
/// be running on `dir` and writing to it. The copy is a snapshot of one moment: everything
/// committed before it, nothing after. It opens the database read-only without the
/// directory lock, writes with `VACUUM INTO` to a temporary file next to `dest`, syncs it,
/// checks that it opens as a ymesh store, and links it to `dest` (never overwriting).
pub fn backup(dir: &Path, dest: &Path) -> Result<StoreFileInfo, OpsError> {
    let db = existing_db(dir)?;
    if exists(dest) {
        return Err(OpsError::Refused(format!(
            "{} already exists; refusing to overwrite it",
            dest.display()
        )));
    }
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(OpsError::Refused(format!(
            "directory {} does not exist",
            parent.display()
        )));
    }
    check_header(&db)?;
    let src = Connection::open_with_flags(
        &db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(StoreError::from)?;
    src.busy_timeout(Duration::from_secs(30))
        .map_err(StoreError::from)?;
    {
        // Refuse someone else's database before copying it anywhere.
        let app_id: i64 = src
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .map_err(StoreError::from)?;
        if app_id != APPLICATION_ID {
            return Err(OpsError::Store(StoreError::NotAStore {
                path: db,
                detail: format!("application_id {app_id}"),
            }));
        }
    }
    let tmp = sibling(dest, "ymesh-backup-tmp");
    remove_if_exists(&tmp)?;
    let tmp_text = tmp
        .to_str()
        .ok_or_else(|| OpsError::Refused(format!("{}: path is not valid UTF-8", dest.display())))?;
    let result = (|| {
        src.execute("VACUUM INTO ?1", [tmp_text])
            .map_err(|e| OpsError::Refused(format!("backup of {} failed: {e}", db.display())))?;
        drop(src);
        sync_file(&tmp)?;
        let info = inspect_store_file(&tmp)?;
        // A hard link never replaces an existing file (a rename would).
        match std::fs::hard_link(&tmp, dest) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(OpsError::Refused(format!(
                    "{} already exists; refusing to overwrite it",
                    dest.display()
                )))
            }
            Err(_) if !exists(dest) => std::fs::rename(&tmp, dest).map_err(io_err(dest))?,
            Err(e) => return Err(io_err(dest)(e)),
        }
        remove_if_exists(&tmp)?;
        sync_dir(parent)?;
        Ok(info)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// What [`restore_backup`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// What the restored store holds.
    pub info: StoreFileInfo,
    /// Rooms of the store it replaced (with `force`), if there was one.
    pub replaced_rooms: Option<u64>,
}

/// Puts the backup `backup` in place as the store of `dir` (created if needed). Refuses
/// while a node runs on `dir` (it takes the directory lock), refuses a file that is not a
/// ymesh store of a supported schema, and refuses to replace a store holding rooms unless
/// `force`. The copy is written next to the store, synced, and renamed over it; the old
/// store's WAL and shared-memory files are removed first so they are never applied to the
/// restored file.
pub fn restore_backup(backup: &Path, dir: &Path, force: bool) -> Result<Restored, OpsError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let _lock = DirLock::acquire(dir, LOCK_FILE_NAME)
        .map_err(|e| node_running(e, "stop it before restoring a backup into its directory"))?;
    let mut backup_wal = backup.as_os_str().to_owned();
    backup_wal.push("-wal");
    if std::fs::metadata(&backup_wal).is_ok_and(|m| m.len() > 0) {
        return Err(OpsError::Refused(format!(
            "{} has a write-ahead log beside it ({}) whose changes a copy of the file alone \
             would lose; make backups with `ymesh backup`",
            backup.display(),
            Path::new(&backup_wal).display()
        )));
    }
    let info = inspect_store_file(backup)?;
    let db = dir.join(DB_FILE_NAME);
    let side = |suffix: &str| {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        PathBuf::from(p)
    };
    let mut replaced_rooms = None;
    if std::fs::metadata(&db).is_ok_and(|m| m.len() > 0) {
        // We hold the lock: nobody writes it. A normal read-only open sees its WAL too.
        let current = Connection::open_with_flags(
            &db,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(StoreError::from)
        .map_err(OpsError::from)
        .and_then(|c| inspect(&c, &db));
        match current {
            Ok(cur) if cur.rooms == 0 => replaced_rooms = Some(0),
            Ok(cur) if force => replaced_rooms = Some(cur.rooms),
            Ok(cur) => {
                return Err(OpsError::Refused(format!(
                    "{} already holds a store with {} room(s); pass --force to replace it, \
                     or restore into an empty directory",
                    db.display(),
                    cur.rooms
                )))
            }
            Err(_) if force => {}
            Err(e) => {
                return Err(OpsError::Refused(format!(
                    "{} exists and is not a readable ymesh store ({e}); pass --force to \
                     replace it",
                    db.display()
                )))
            }
        }
    }
    let tmp = dir.join(format!(".{DB_FILE_NAME}.restore-tmp"));
    let result = (|| {
        std::fs::copy(backup, &tmp).map_err(io_err(&tmp))?;
        sync_file(&tmp)?;
        // Stale WAL / shared memory / rollback journal of the old file would be applied
        // to the new one: remove them before it takes the name.
        for suffix in ["-wal", "-shm", "-journal"] {
            remove_if_exists(&side(suffix))?;
        }
        std::fs::rename(&tmp, &db).map_err(io_err(&db))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    Ok(Restored {
        info,
        replaced_rooms,
    })
}

// ---------------------------------------------------------------------------------------
// A running node, over HTTP.

/// How long connecting to a node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the node may stay silent mid-request (large rooms take a while to encode).
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest response accepted (a room export can be large).
const MAX_RESPONSE: usize = 1 << 31;

/// Characters kept as they are in a room's path segment; everything else is
/// percent-encoded (the node decodes the segment once; `+` stays a plus).
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'~');

/// A client of a running node's HTTP API (`--node URL`).
#[derive(Clone)]
pub struct NodeClient {
    url: String,
    host: String,
    port: u16,
    authority: String,
    base_path: String,
    admin_token: Option<Arc<str>>,
}

impl std::fmt::Debug for NodeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeClient")
            .field("url", &self.url)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// One HTTP response.
#[derive(Debug)]
struct Response {
    status: u16,
    body: Vec<u8>,
}

impl NodeClient {
    /// A client of the node at `url` (`http://HOST[:PORT][/prefix]`); `admin_token` is sent
    /// as `Authorization: Bearer` on admin routes.
    pub fn new(url: &str, admin_token: Option<String>) -> Result<NodeClient, OpsError> {
        let bad = |why: &str| OpsError::Refused(format!("--node {url:?}: {why}"));
        let rest = if let Some(rest) = url.strip_prefix("http://") {
            rest
        } else if url.starts_with("https://") {
            return Err(bad(
                "https is not supported by this client; use the node's http:// address",
            ));
        } else {
            return Err(bad("expected http://HOST:PORT, e.g. http://127.0.0.1:3913"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if path.contains(['?', '#']) || authority.contains('@') {
            return Err(bad(
                "expected http://HOST:PORT[/PATH] without query or user",
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("unclosed [ in the address"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(bad("junk after the IPv6 address")),
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| bad("the port is not a number"))?,
            None => 80,
        };
        Ok(NodeClient {
            url: url.trim_end_matches('/').to_string(),
            host,
            port,
            authority: authority.to_string(),
            base_path: path.trim_end_matches('/').to_string(),
            admin_token: admin_token.map(Arc::from),
        })
    }

    fn room_path(room: &str) -> String {
        format!(
            "/rooms/{}",
            percent_encoding::utf8_percent_encode(room, SEGMENT)
        )
    }

    /// `GET /rooms/{room}`: the room's whole document as one Yjs v1 update.
    pub async fn export(&self, room: &str) -> Result<Vec<u8>, OpsError> {
        check_room_name(room)?;
        let resp = self
            .request("GET", &Self::room_path(room), &[], false)
            .await?;
        let resp = self.ok(resp)?;
        validate_update(&resp.body).map_err(|e| OpsError::Http {
            url: self.url.clone(),
            message: format!("the export of room {room:?} is {e}"),
        })?;
        Ok(resp.body)
    }

    /// `POST /rooms/{room}`: merges `update` into the room; answered once it is on disk.
    pub async fn import(&self, room: &str, update: &[u8]) -> Result<Imported, OpsError> {
        check_room_name(room)?;
        validate_update(update)?;
        let resp = self
            .request("POST", &Self::room_path(room), update, false)
            .await?;
        let v: serde_json::Value = self.json(self.ok(resp)?)?;
        Ok(Imported {
            changed: v["changed"].as_bool().unwrap_or(true),
        })
    }

    /// `POST /rooms/{room}/compact` (admin).
    pub async fn compact(&self, room: &str) -> Result<Compacted, OpsError> {
        check_room_name(room)?;
        let path = format!("{}/compact", Self::room_path(room));
        let resp = self.request("POST", &path, &[], true).await?;
        let v = self.json(self.ok(resp)?)?;
        serde_json::from_value(v).map_err(|e| OpsError::Http {
            url: self.url.clone(),
            message: format!("unexpected answer to compact: {e}"),
        })
    }

    /// `DELETE /rooms/{room}` (admin): deletes the room on the node and across the mesh.
    pub async fn delete(&self, room: &str) -> Result<DeletedRoom, OpsError> {
        check_room_name(room)?;
        let resp = self
            .request("DELETE", &Self::room_path(room), &[], true)
            .await?;
        let v = self.json(self.ok(resp)?)?;
        serde_json::from_value(v).map_err(|e| OpsError::Http {
            url: self.url.clone(),
            message: format!("unexpected answer to delete: {e}"),
        })
    }

    /// Issues a maintenance command (`POST /rooms/{room}/commands`, or `POST /commands` for
    /// every room; admin). Returns its id.
    pub async fn issue_command(
        &self,
        kind: &str,
        room: Option<&str>,
        args: serde_json::Value,
        deadline_s: Option<u64>,
    ) -> Result<String, OpsError> {
        let path = match room {
            Some(r) => {
                check_room_name(r)?;
                format!("{}/commands", Self::room_path(r))
            }
            None => "/commands".to_string(),
        };
        let mut body = serde_json::json!({ "kind": kind, "args": args });
        if let Some(d) = deadline_s {
            body["deadline_s"] = d.into();
        }
        let resp = self
            .request("POST", &path, body.to_string().as_bytes(), true)
            .await?;
        let v = self.json(self.ok(resp)?)?;
        v["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| OpsError::Http {
                url: self.url.clone(),
                message: "the answer to a command carries no id".into(),
            })
    }

    /// `GET /commands/{id}` (admin): the aggregated results of a command issued there.
    pub async fn command_report(&self, id: &str) -> Result<serde_json::Value, OpsError> {
        let path = format!(
            "/commands/{}",
            percent_encoding::utf8_percent_encode(id, SEGMENT)
        );
        let resp = self.request("GET", &path, &[], true).await?;
        self.json(self.ok(resp)?)
    }

    /// The `data` of a JSON `GET` (e.g. `/peers`, `/rooms?all=true`, `/`).
    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value, OpsError> {
        let resp = self.request("GET", path, &[], false).await?;
        self.json(self.ok(resp)?)
    }

    /// Names of every stored room (`GET /rooms?all=true`).
    pub async fn stored_rooms(&self) -> Result<Vec<String>, OpsError> {
        let resp = self.request("GET", "/rooms?all=true", &[], false).await?;
        let v = self.json(self.ok(resp)?)?;
        let rows = v.as_array().ok_or_else(|| OpsError::Http {
            url: self.url.clone(),
            message: "GET /rooms did not answer a list".into(),
        })?;
        Ok(rows
            .iter()
            .filter(|r| r["stored"].as_bool() == Some(true))
            .filter_map(|r| r["name"].as_str().map(str::to_owned))
            .collect())
    }

    /// Compacts `room`, or every stored room with `None`.
    pub async fn compact_all(&self, room: Option<&str>) -> Result<Vec<Compacted>, OpsError> {
        let rooms = match room {
            Some(r) => vec![r.to_owned()],
            None => self.stored_rooms().await?,
        };
        let mut out = Vec::with_capacity(rooms.len());
        for room in rooms {
            out.push(self.compact(&room).await?);
        }
        Ok(out)
    }

    fn ok(&self, resp: Response) -> Result<Response, OpsError> {
        if (200..300).contains(&resp.status) {
            return Ok(resp);
        }
        let message = serde_json::from_slice::<serde_json::Value>(&resp.body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| {
                let text = String::from_utf8_lossy(&resp.body);
                text.chars().take(200).collect::<String>()
            });
        Err(OpsError::Status {
            url: self.url.clone(),
            status: resp.status,
            message,
        })
    }

    /// The `data` of a success envelope.
    fn json(&self, resp: Response) -> Result<serde_json::Value, OpsError> {
        let mut v: serde_json::Value =
            serde_json::from_slice(&resp.body).map_err(|e| OpsError::Http {
                url: self.url.clone(),
                message: format!("the answer is not JSON: {e}"),
            })?;
        Ok(v["data"].take())
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        admin: bool,
    ) -> Result<Response, OpsError> {
        let fail = |message: String| OpsError::Http {
            url: self.url.clone(),
            message,
        };
        let mut stream = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| fail("timed out connecting".into()))?
        .map_err(|e| fail(format!("cannot connect: {e}")))?;
        let mut head = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ymesh/{}\r\n\
             Accept: */*\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.base_path,
            self.authority,
            env!("CARGO_PKG_VERSION"),
            body.len()
        );
        if !body.is_empty() {
            head.push_str("Content-Type: application/octet-stream\r\n");
        }
        if let (true, Some(token)) = (admin, &self.admin_token) {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        head.push_str("\r\n");
        let write = async {
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(body).await?;
            stream.flush().await
        };
        tokio::time::timeout(IDLE_TIMEOUT, write)
            .await
            .map_err(|_| fail("timed out sending the request".into()))?
            .map_err(|e| fail(format!("sending the request: {e}")))?;
        let mut raw = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = tokio::time::timeout(IDLE_TIMEOUT, stream.read(&mut buf))
                .await
                .map_err(|_| fail("timed out waiting for the answer".into()))?
                .map_err(|e| fail(format!("reading the answer: {e}")))?;
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
            if raw.len() > MAX_RESPONSE {
                return Err(fail("the answer is too large".into()));
            }
        }
        parse_response(&raw).map_err(fail)
    }
}

/// Parses a whole HTTP/1.1 response read to the end of the connection.
fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the connection closed before a complete HTTP answer")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "the HTTP head is not text")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(format!("bad status line {status_line:?}"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1 answer: {status_line:?}"));
    }
    let status: u16 = code
        .parse()
        .map_err(|_| format!("bad status line {status_line:?}"))?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("bad Content-Length {value:?}"))?,
            );
        }
    }
    let rest = &raw[end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(n) = length {
        if rest.len() < n {
            return Err(format!(
                "the answer was cut short: {} of {n} bytes",
                rest.len()
            ));
        }
        rest[..n].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response { status, body })
}

/// Decodes a chunked body (trailers ignored).
fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("chunked answer cut short")?;
        let line = std::str::from_utf8(&b[..line_end]).map_err(|_| "bad chunk header")?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size =
            usize::from_str_radix(size_text, 16).map_err(|_| format!("bad chunk size {line:?}"))?;
        b = &b[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            return Err("chunked answer cut short".into());
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_urls() {
        let c = NodeClient::new("http://127.0.0.1:3913", None).unwrap();
        assert_eq!((c.host.as_str(), c.port), ("127.0.0.1", 3913));
        assert_eq!(c.base_path, "");
        let c = NodeClient::new("http://[::1]:4000/ymesh/", None).unwrap();
        assert_eq!((c.host.as_str(), c.port), ("::1", 4000));
        assert_eq!(
            (c.authority.as_str(), c.base_path.as_str()),
            ("[::1]:4000", "/ymesh")
        );
        let c = NodeClient::new("http://example.com", None).unwrap();
        assert_eq!(c.port, 80);
        for bad in [
            "https://x:1",
            "ws://x:1",
            "127.0.0.1:3913",
            "http://:1",
            "http://x:port",
            "http://x:1/?a",
            "http://u@x:1",
        ] {
            assert!(NodeClient::new(bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn room_paths_are_one_encoded_segment() {
        assert_eq!(NodeClient::room_path("a-b_c~d"), "/rooms/a-b_c~d");
        assert_eq!(
            NodeClient::room_path("a/b c+d.é"),
            "/rooms/a%2Fb%20c%2Bd%2E%C3%A9"
        );
    }

    #[test]
    fn responses_parse() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"abc"[..]));
        let r = parse_response(
            b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"abcde"[..]));
        let r = parse_response(b"HTTP/1.0 500 X\r\n\r\nall of it").unwrap();
        assert_eq!(r.body, b"all of it");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab")
                .is_err()
        );
    }

    #[test]
    fn updates_are_validated() {
        assert!(validate_update(&[0, 0]).is_ok());
        assert!(validate_update(b"not an update at all").is_err());
    }
}

/// Renders `ymesh status` from a node's `GET /`, `GET /peers` and `GET /rooms?all=true`
/// answers (their `data`), as plain-text tables.
pub fn render_status(
    node: &serde_json::Value,
    peers: &serde_json::Value,
    rooms: &serde_json::Value,
) -> String {
    let s = cell;
    let mut out = format!(
        "node {}  version {}  up {} s  rooms in memory {}  connections {}\n\n",
        s(&node["node_id"]),
        s(&node["version"]),
        s(&node["uptime_s"]),
        s(&node["rooms"]),
        s(&node["connections"]),
    );
    let peer_rows: Vec<Vec<String>> = peers
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|p| {
            // Messages of every kind one way (missing or unreadable counts as 0).
            let total = |dir: &str| {
                <crate::metrics::DirTrafficSnapshot as serde::Deserialize>::deserialize(&p[dir])
                    .unwrap_or_default()
                    .messages()
                    .to_string()
            };
            let detail = p["reason"]
                .as_str()
                .or_else(|| p["last_error"].as_str())
                .unwrap_or("")
                .to_string();
            let rooms = p["rooms"]
                .as_array()
                .map(|a| a.as_slice())
                .unwrap_or_default();
            let synced = rooms.iter().filter(|r| r["synced"] == true).count();
            let found_by = match &p["found_by"] {
                serde_json::Value::Null => s(&p["source"]),
                v => s(v),
            };
            vec![
                s(&p["state"]),
                found_by,
                s(&p["address"]),
                s(&p["node_id"]),
                format!("{synced}/{}", rooms.len()),
                total("sent"),
                total("received"),
                detail,
            ]
        })
        .collect();
    out.push_str(&format!("peers ({})\n", peer_rows.len()));
    if peer_rows.is_empty() {
        out.push_str("  none configured or connected\n");
    } else {
        out.push_str(&table(
            &[
                "STATE", "FOUND BY", "ADDRESS", "NODE ID", "SYNCED", "SENT", "RECEIVED", "DETAIL",
            ],
            peer_rows,
        ));
    }
    out.push('\n');
    out.push_str(&render_rooms(rooms));
    out
}

/// A JSON value as a table cell: strings bare, null as "-".
fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "-".to_string(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An aligned text table with `header`.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

/// The rooms table of `ymesh status` and `ymesh rooms`, from `GET /rooms?all=true`.
pub fn render_rooms(rooms: &serde_json::Value) -> String {
    let s = cell;
    let room_rows: Vec<Vec<String>> = rooms
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|r| {
            vec![
                s(&r["name"]),
                s(&r["connections"]),
                if r["loaded"] == true { "yes" } else { "no" }.to_string(),
                s(&r["bytes"]),
                s(&r["schema_version"]),
                r["store_error"]["error"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect();
    let mut out = format!("rooms ({})\n", room_rows.len());
    if room_rows.is_empty() {
        out.push_str("  none\n");
    } else {
        out.push_str(&table(
            &[
                "ROOM",
                "CONNECTIONS",
                "IN MEMORY",
                "STORED BYTES",
                "SCHEMA",
                "STORE ERROR",
            ],
            room_rows,
        ));
    }
    out
}

#[cfg(test)]
mod status_tests {
    use super::render_status;
    use serde_json::json;

    #[test]
    fn status_renders_aligned_tables() {
        let out = render_status(
            &json!({"node_id": "12D3KooWX", "version": "0.1.0", "uptime_s": 5, "rooms": 1, "connections": 2}),
            &json!([{"state": "connected", "source": "config", "found_by": "mdns", "address": "ws://b:3913",
                     "node_id": "12D3KooWB", "sent": {"sync": {"messages": 3}}, "received": {"control": {"messages": 2}},
                     "last_error": null}]),
            &json!([{"name": "notes", "connections": 2, "loaded": true, "bytes": 120}]),
        );
        assert!(out.starts_with("node 12D3KooWX  version 0.1.0"), "{out}");
        assert!(out.contains("STATE      FOUND BY  ADDRESS"), "{out}");
        assert!(
            out.contains("connected  mdns      ws://b:3913  12D3KooWB  0/0     3     2"),
            "{out}"
        );
        assert!(
            out.contains("notes  2            yes        120           -"),
            "{out}"
        );
        let empty = render_status(&json!({}), &json!([]), &json!([]));
        assert!(empty.contains("none configured or connected") && empty.contains("rooms (0)"));
    }
}
