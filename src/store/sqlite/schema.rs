//! Opening the database file: recognising it, refusing foreign or newer files, pragmas and
//! migrations. See the module docs of [`crate::store`] for the table layout.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::store::{StoreError, StoreOptions};

/// The schema version this build writes and reads (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 6;

/// `PRAGMA application_id` of a ymesh store: "YMSH".
pub(crate) const APPLICATION_ID: i64 = 0x594D_5348;

/// `MIGRATIONS[v]` brings a database from version `v` to `v + 1`. Version 0 is the empty
/// file. Every step runs inside the one migration transaction.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 0 -> 1
    "CREATE TABLE meta (
         key   TEXT PRIMARY KEY NOT NULL,
         value INTEGER NOT NULL
     );
     INSERT INTO meta (key, value) VALUES ('change_seq', 0);
     CREATE TABLE rooms (
         id             INTEGER PRIMARY KEY,
         name           TEXT NOT NULL UNIQUE,
         snapshot       BLOB,
         snapshot_bytes INTEGER NOT NULL DEFAULT 0,
         log_bytes      INTEGER NOT NULL DEFAULT 0,
         log_count      INTEGER NOT NULL DEFAULT 0,
         state_vector   BLOB NOT NULL,
         digest         TEXT NOT NULL,
         updated_at_ms  INTEGER NOT NULL,
         change_seq     INTEGER NOT NULL
     );
     CREATE INDEX rooms_by_change_seq ON rooms (change_seq);
     CREATE TABLE updates (
         seq     INTEGER PRIMARY KEY,
         room_id INTEGER NOT NULL,
         data    BLOB NOT NULL
     );
     CREATE INDEX updates_by_room ON updates (room_id, seq);",
    // 1 -> 2: snapshots move out of the rooms row. Every commit updates that row (state
    // vector, digest, sizes), and SQLite rewrites a row with all of its overflow pages, so a
    // snapshot inside it was rewritten on every commit of its room.
    "CREATE TABLE snapshots (
         room_id INTEGER PRIMARY KEY,
         data    BLOB NOT NULL
     );
     INSERT INTO snapshots (room_id, data)
         SELECT id, snapshot FROM rooms WHERE snapshot IS NOT NULL;
     ALTER TABLE rooms DROP COLUMN snapshot;",
    // 2 -> 3: tombstones of deleted rooms, kept so that a copy on a node that was offline
    // does not bring the room back (see docs/storage.md, "Deleting rooms").
    "CREATE TABLE tombstones (
         room         TEXT PRIMARY KEY NOT NULL,
         deleted_ms   INTEGER NOT NULL,
         state_vector BLOB NOT NULL,
         origin       TEXT NOT NULL
     );",
    // 3 -> 4: maintenance commands. Ids of commands this node applied (until they expire),
    // so a restart does not apply one again; the schema version `migrate` set per room.
    "CREATE TABLE applied_commands (
         id         TEXT PRIMARY KEY NOT NULL,
         expires_ms INTEGER NOT NULL
     );
     CREATE TABLE room_schema (
         room    TEXT PRIMARY KEY NOT NULL,
         version INTEGER NOT NULL
     );",
    // 4 -> 5: tombstones carry the change counter of the commit that recorded them, so a
    // link sends a peer only the tombstones recorded since their last exchange.
    "ALTER TABLE tombstones ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;
     CREATE INDEX tombstones_by_change_seq ON tombstones (change_seq);",
    // 5 -> 6: a log row holds every update one commit appended to its room (`count` of
    // them, length-prefixed when more than one: see `log`); earlier rows hold one each.
    "ALTER TABLE updates ADD COLUMN count INTEGER NOT NULL DEFAULT 1;",
];

const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Opens (creating if needed) the database at `path` as the store's write connection:
/// checks that it is ours and not newer, sets WAL + `synchronous=FULL`, and migrates it.
/// Returns the connection and whether the file was created by this call.
pub(crate) fn open_writer(
    path: &Path,
    opts: &StoreOptions,
) -> Result<(Connection, bool), StoreError> {
    let existed = check_header(path)?;
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(opts.busy_timeout)?;

    let not_ours = |detail: String| StoreError::NotAStore {
        path: path.to_path_buf(),
        detail,
    };
    let app_id: i64 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(|e| not_ours(format!("cannot read it as SQLite: {e}")))?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let tables: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%'",
        [],
        |r| r.get(0),
    )?;

    if app_id != APPLICATION_ID {
        if app_id != 0 || version != 0 || tables != 0 {
            return Err(not_ours(format!(
                "a SQLite database with application_id {app_id}, user_version {version} \
                 and {tables} tables that ymesh did not create"
            )));
        }
        // A brand-new (empty) database: auto_vacuum must be chosen before the first table.
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    } else if version > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            path: path.to_path_buf(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }

    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Internal(format!(
            "{}: SQLite refused WAL mode (journal_mode is {mode})",
            path.display()
        )));
    }
    // With WAL, FULL fsyncs the WAL at every commit: "saved means on disk".
    conn.pragma_update(None, "synchronous", "FULL")?;
    let sync: i64 = conn.pragma_query_value(None, "synchronous", |r| r.get(0))?;
    if sync != 2 {
        return Err(StoreError::Internal(format!(
            "{}: SQLite did not accept synchronous=FULL (got {sync})",
            path.display()
        )));
    }
    // Keep the WAL file from staying huge after a burst (truncated at checkpoints).
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;

    migrate(&mut conn, path, version)?;
    Ok((conn, !existed))
}

/// Opens a read connection to the store's database (after the writer set it up).
pub(crate) fn open_reader(path: &Path, opts: &StoreOptions) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(opts.busy_timeout)?;
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}

/// Refuses a non-empty file that does not start with the SQLite header, before SQLite opens
/// it. Returns whether the file existed with content.
pub(crate) fn check_header(path: &Path) -> Result<bool, StoreError> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let mut head = Vec::with_capacity(100);
    (&mut file)
        .take(100)
        .read_to_end(&mut head)
        .map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if head.is_empty() {
        return Ok(false);
    }
    if head.len() < SQLITE_MAGIC.len() || &head[..SQLITE_MAGIC.len()] != SQLITE_MAGIC {
        return Err(StoreError::NotAStore {
            path: path.to_path_buf(),
            detail: "not a SQLite database file".into(),
        });
    }
    if let Some(detail) = truncation(&head, &file) {
        return Err(StoreError::NotAStore {
            path: path.to_path_buf(),
            detail,
        });
    }
    Ok(true)
}

/// Detects a database file cut short (a bad copy, a full disk during a copy): the header
/// records how many pages the file holds as of the last checkpoint; the file must be at
/// least that long. Cheap: one `stat`, no page is read.
fn truncation(head: &[u8], file: &File) -> Option<String> {
    if head.len() < 100 {
        return Some(format!(
            "header is {} bytes; a database header has 100",
            head.len()
        ));
    }
    let page_size = match u16::from_be_bytes([head[16], head[17]]) {
        1 => 65_536u64,
        n => u64::from(n),
    };
    let pages = u64::from(u32::from_be_bytes([head[28], head[29], head[30], head[31]]));
    let change_counter = &head[24..28];
    let valid_for = &head[92..96];
    // The in-header size is only trustworthy when it was written with the change counter.
    if pages == 0 || change_counter != valid_for {
        return None;
    }
    let len = file.metadata().ok()?.len();
    let want = pages * page_size;
    (len < want).then(|| {
        format!("file is truncated: {len} bytes, but its header says {pages} pages of {page_size} bytes ({want} bytes)")
    })
}

fn migrate(conn: &mut Connection, path: &Path, from: i64) -> Result<(), StoreError> {
    if from >= SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for step in from..SCHEMA_VERSION {
        let sql = usize::try_from(step)
            .ok()
            .and_then(|i| MIGRATIONS.get(i))
            .ok_or_else(|| StoreError::Internal(format!("no migration from version {step}")))?;
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "application_id", APPLICATION_ID)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    if from == 0 {
        tracing::info!(path = %path.display(), version = SCHEMA_VERSION, "created store");
    } else {
        tracing::info!(
            path = %path.display(),
            from,
            to = SCHEMA_VERSION,
            "migrated store schema"
        );
    }
    Ok(())
}
