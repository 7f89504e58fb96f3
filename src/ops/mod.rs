//! Operator tools: the work behind `ymesh export`, `import`, `compact`, `delete`, `backup`,
//! `restore-backup`, `status`, `rooms` and `command`, and the text each one prints.
//!
//! Each room operation works in two places, chosen by a [`Target`]:
//!
//! - against the **data directory of a stopped node** (`dir.rs`): the store is opened
//!   directly ([`SqliteStore::open`](crate::store::SqliteStore::open) takes the directory's
//!   lock, so this fails with [`OpsError::NodeRunning`] while a node uses the directory);
//! - against a **running node** over its HTTP API ([`NodeClient`], on the crate's one HTTP
//!   client, [`crate::net`]): `GET /rooms/{room}` exports, `POST /rooms/{room}` imports
//!   (answered after commit), and the admin routes `POST /rooms/{room}/compact` and
//!   `DELETE /rooms/{room}` compact and delete.
//!
//! [`backup()`] copies a store while a node may be running on it: it opens the database
//! read-only *without* the directory lock (SQLite's own locking and WAL make a concurrent
//! reader safe) and writes a consistent snapshot with `VACUUM INTO`. [`restore_backup`]
//! takes the lock (so never under a running node), checks the backup, and moves it into
//! place atomically.
//!
//! | module | owns |
//! |---|---|
//! | [`target`] | [`Target`]: a stopped node's directory or a running node; the data directory as `serve` would use it; the node `status`, `rooms` and `command` ask ([`node_url`]: `--node`, else the config file's host and port) |
//! | `dir` | opening a stopped node's store under its lock, and reading a room's document from it |
//! | [`remote`] | [`NodeClient`]: a running node's HTTP API, room paths, the `{"data": ...}` envelope |
//! | [`export`] | a room as one Yjs v1 update, from either place |
//! | [`import`] | merging a Yjs v1 update into a room, in either place; refusing an update a room's deletion covers, or restoring the room from it (`--undelete`) |
//! | [`compact`] | folding update logs into snapshots, in either place |
//! | [`delete`] | deleting a room and recording its tombstone, in either place |
//! | [`backup`](mod@backup) | the online backup, and checking a store file |
//! | [`restore`] | putting a backup in place |
//! | [`command`] | issuing a maintenance command, following its results, naming the peers it has not reached, failing when a responder failed |
//! | [`status`] | `ymesh status` and `ymesh rooms`: fetching and rendering |
//! | `table` | aligned text tables |
//!
//! `ops` uses [`crate::net`], [`crate::store`], [`crate::room`] (room names, the tombstone
//! check and the undelete marker), [`crate::command`] (which result statuses are failures),
//! [`crate::mesh::identity`] (the node id of a tombstone), [`crate::metrics`] (the shape of
//! the traffic counters `GET /peers` reports) and the public API of [`crate::config`]; it
//! never reaches into a running node's internals.

pub mod backup;
pub mod command;
pub mod compact;
pub mod delete;
mod dir;
pub mod export;
pub mod import;
pub mod remote;
pub mod restore;
pub mod status;
mod table;
pub mod target;

use std::path::{Path, PathBuf};

use yrs::updates::decoder::Decode;
use yrs::Update;

pub use backup::{backup, inspect_store_file, StoreFileInfo};
pub use compact::{compact_dir, Compacted};
pub use delete::{delete_dir, DeletedRoom};
pub use export::export_dir;
pub use import::{import_dir, Imported};
pub use remote::NodeClient;
pub use restore::{restore_backup, Restored};
pub use status::{render_rooms, render_status};
pub use target::Target;
pub use target::{data_dir, node_url};

use crate::store::StoreError;

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
    /// The node could not be reached, answered with an error status, or answered garbage.
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
    /// The configuration file that names the data directory is unusable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The request cannot be carried out as asked (room not stored, refusal, bad input).
    #[error("{0}")]
    Refused(String),
    /// A maintenance command ran, but some responder failed, refused it or timed out.
    #[error("{0}")]
    CommandFailed(String),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> OpsError + '_ {
    move |source| OpsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Checks that `update` is a Yjs v1 update, before anything is written anywhere.
pub fn validate_update(update: &[u8]) -> Result<(), OpsError> {
    // Scanned first, like every update the node takes in: no count in a file reserves more
    // than the file holds.
    crate::protocol::scan::update_v1(update)
        .map_err(|e| OpsError::Refused(format!("not a valid Yjs v1 update: {e}")))?;
    let decoded = std::panic::catch_unwind(|| Update::decode_v1(update).map(|_| ()));
    match decoded {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(OpsError::Refused(format!("not a valid Yjs v1 update: {e}"))),
        Err(_) => Err(OpsError::Refused(
            "not a valid Yjs v1 update (the decoder panicked on it)".into(),
        )),
    }
}

pub(crate) fn check_room_name(room: &str) -> Result<(), OpsError> {
    crate::room::validate_room_name(room).map_err(|e| OpsError::Refused(e.to_string()))
}

/// `n room` or `n rooms`.
pub(crate) fn rooms(n: u64) -> String {
    format!("{n} room{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_are_validated() {
        assert!(validate_update(&[0, 0]).is_ok());
        assert!(validate_update(b"not an update at all").is_err());
    }
}
