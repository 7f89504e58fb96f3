//! The data directory of a stopped node: finding its store file, opening the store under
//! the directory lock, and rebuilding a room's document from what is stored.
//!
//! Every operation on a directory goes through `with_store`, which closes the store (and
//! so releases the lock) whatever the operation returned.

use std::path::{Path, PathBuf};

use yrs::{Doc, Transact};

use super::{io_err, OpsError};
use crate::store::{LoadedRoom, SqliteStore, Store, StoreError, StoreOptions, DB_FILE_NAME};

/// The database file of `dir`, which must exist (reading tools never create a store).
pub(crate) fn existing_db(dir: &Path) -> Result<PathBuf, OpsError> {
    if dir.is_file() {
        return Err(OpsError::Refused(format!(
            "{} is a file, not a data directory; pass --data-dir DIR",
            dir.display()
        )));
    }
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

/// A locked directory as [`OpsError::NodeRunning`] with `hint`; other errors unchanged.
pub(crate) fn node_running(e: StoreError, hint: &'static str) -> OpsError {
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
pub(crate) async fn with_store<T>(
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

/// The document of `room` as stored: its snapshot, then its logged updates.
pub(crate) fn doc_from(room: &str, loaded: &LoadedRoom) -> Result<Doc, OpsError> {
    let doc = Doc::new();
    {
        let mut txn = doc.transact_mut();
        for blob in loaded.snapshot.iter().chain(loaded.updates.iter()) {
            let corrupt = |detail: String| StoreError::Corrupt {
                room: room.to_owned(),
                detail,
            };
            let update =
                crate::protocol::scan::decode_update(blob).map_err(|e| corrupt(e.to_string()))?;
            txn.apply_update(update)
                .map_err(|e| corrupt(e.to_string()))?;
        }
    }
    Ok(doc)
}

/// The error for a room that `dir`'s store does not hold.
pub(crate) fn not_stored(room: &str, dir: &Path) -> OpsError {
    OpsError::Refused(format!("room {room:?} is not stored in {}", dir.display()))
}
