//! `ymesh restore-backup`: putting a backup in place as the store of a data directory, under
//! the directory's lock (so never under a running node), after checking the backup and
//! refusing to replace a store that holds rooms unless forced.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::backup::{
    inspect, inspect_store_file, remove_if_exists, sync_dir, sync_file, StoreFileInfo,
};
use super::dir::node_running;
use super::{io_err, rooms, OpsError};
use crate::store::{DirLock, StoreError, DB_FILE_NAME, LOCK_FILE_NAME};

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

/// What `ymesh restore-backup` prints: `backup` went into `dir`.
pub fn report(backup: &Path, dir: &Path, restored: &Restored) -> String {
    let mut out = String::new();
    if let Some(n) = restored.replaced_rooms.filter(|n| *n > 0) {
        out.push_str(&format!(
            "replaced the store in {} ({})\n",
            dir.display(),
            rooms(n)
        ));
    }
    out.push_str(&format!(
        "restored {} into {}: {}, {} bytes stored, schema version {}\n",
        backup.display(),
        dir.display(),
        rooms(restored.info.rooms),
        restored.info.bytes,
        restored.info.schema_version
    ));
    out
}
