//! The data-directory lock: an exclusive, non-blocking lock on `DATA_DIR/LOCK`
//! (`File::try_lock`: `flock(LOCK_EX | LOCK_NB)` on Unix, `LockFileEx` on Windows).
//!
//! The lock belongs to the open file, so the OS releases it when the file is closed,
//! including when the process is killed: a crash never leaves a stale lock. A second open +
//! lock of the same file conflicts even inside one process.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::store::StoreError;

/// Holds the exclusive lock on a data directory until dropped.
#[derive(Debug)]
pub(crate) struct DirLock {
    // Closing the file releases the lock.
    _file: File,
}

impl DirLock {
    /// Locks `dir` through the file `dir/name`, creating it if needed, and writes our pid into
    /// it (for the error message of whoever tries next).
    pub(crate) fn acquire(dir: &Path, name: &str) -> Result<DirLock, StoreError> {
        let path = dir.join(name);
        let io_err = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let holder = match file.read_to_string(&mut text) {
                    Ok(_) if !text.trim().is_empty() => format!(" (pid {})", text.trim()),
                    _ => String::new(),
                };
                return Err(StoreError::Locked {
                    dir: dir_name(dir),
                    holder,
                });
            }
            Err(TryLockError::Error(err)) => return Err(io_err(err)),
        }
        // Best effort: the pid is only a hint in error messages.
        let _ = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", std::process::id()));
        Ok(DirLock { _file: file })
    }
}

/// The directory as given, or "." for an empty path, for messages.
fn dir_name(dir: &Path) -> PathBuf {
    if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir.to_path_buf()
    }
}
