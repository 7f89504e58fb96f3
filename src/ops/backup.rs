//! `ymesh backup`: a consistent copy of a store while a node may be running on it, and the
//! check that a file is a ymesh store this build reads ([`inspect_store_file`]), which
//! `ymesh restore-backup` uses too.
//!
//! The backup opens the database read-only *without* the directory lock (SQLite's own
//! locking and WAL make a concurrent reader safe) and writes a snapshot of one moment with
//! `VACUUM INTO` to a temporary file next to the destination, syncs it, checks it, and links
//! it into place without ever overwriting a file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::dir::existing_db;
use super::{io_err, rooms, OpsError};
use crate::store::{check_header, StoreError, APPLICATION_ID, SCHEMA_VERSION};

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
pub(super) fn inspect(conn: &Connection, path: &Path) -> Result<StoreFileInfo, OpsError> {
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

pub(super) fn sync_dir(dir: &Path) -> Result<(), OpsError> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

pub(super) fn sync_file(path: &Path) -> Result<(), OpsError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_err(path))
}

fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

pub(super) fn remove_if_exists(path: &Path) -> Result<(), OpsError> {
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

/// The line `ymesh backup` prints: `dir`'s store went to `dest`.
pub fn report(dir: &Path, dest: &Path, info: &StoreFileInfo) -> String {
    format!(
        "backed up {} to {}: {}, {} bytes stored, file {} bytes, schema version {}\n",
        dir.display(),
        dest.display(),
        rooms(info.rooms),
        info.bytes,
        info.file_bytes,
        info.schema_version
    )
}
