//! Approvals in the runtime: the file they persist in (`DATA_DIR/approvals.json`), the API
//! the admin routes use (`POST /peers/{id}/approve`, `/deny`), and verdicts reaching the
//! link tasks that wait for them.
//!
//! The decisions themselves are the core's ([`crate::mesh::proto::approval`]); this module
//! only stores them and carries them out. A change is written to disk (atomically: a
//! temporary file, fsync, rename) before it takes effect, so an approval that was
//! acknowledged survives a crash.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::{lock, Mesh};
use crate::mesh::identity;
use crate::mesh::proto::approval::{Approvals, Verdict};
use crate::mesh::proto::{Event, LinkId};

/// The approvals file in the data directory.
pub const APPROVALS_FILE: &str = "approvals.json";

/// Why approvals could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalsError {
    /// The file exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not the JSON this node writes.
    #[error("{path} is not a valid approvals file ({source}); fix or remove it")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// The file cannot be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The text is not a node id.
    #[error("{0}")]
    BadNodeId(String),
}

/// Reads the approvals at `path` (none when the file does not exist).
pub fn load(path: &Path) -> Result<Approvals, ApprovalsError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| ApprovalsError::Corrupt {
            path: path.to_path_buf(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Approvals::default()),
        Err(source) => Err(ApprovalsError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes `approvals` to `path` atomically.
pub fn save(path: &Path, approvals: &Approvals) -> Result<(), ApprovalsError> {
    let werr = |source| ApprovalsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("json.tmp");
    let mut json = serde_json::to_vec_pretty(approvals)
        .unwrap_or_else(|e| unreachable!("approvals always serialize: {e}"));
    json.push(b'\n');
    let mut f = std::fs::File::create(&tmp).map_err(werr)?;
    f.write_all(&json).map_err(werr)?;
    f.sync_all().map_err(werr)?;
    std::fs::rename(&tmp, path).map_err(werr)?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

impl Mesh {
    /// Approves `node_id`: persisted first, then its waiting links are welcomed.
    pub fn approve(self: &Arc<Self>, node_id: &str) -> Result<(), ApprovalsError> {
        self.change_approvals(node_id, true)
    }

    /// Denies `node_id`: persisted first, then its links are refused or closed.
    pub fn deny(self: &Arc<Self>, node_id: &str) -> Result<(), ApprovalsError> {
        self.change_approvals(node_id, false)
    }

    /// The approvals and denials in effect.
    pub fn approvals(&self) -> Approvals {
        lock(&self.core).approvals().clone()
    }

    fn change_approvals(
        self: &Arc<Self>,
        node_id: &str,
        approve: bool,
    ) -> Result<(), ApprovalsError> {
        identity::parse_node_id(node_id).map_err(|e| ApprovalsError::BadNodeId(e.to_string()))?;
        // One change at a time, so two changes cannot both start from the same snapshot.
        let _file = lock(&self.approvals_file);
        let mut next = self.approvals();
        if approve {
            next.approve(node_id);
        } else {
            next.deny(node_id);
        }
        if let Some(path) = &self.settings.approvals_path {
            save(path, &next)?;
        }
        let node_id = node_id.to_string();
        self.run(if approve {
            Event::Approve { node_id }
        } else {
            Event::Deny { node_id }
        });
        Ok(())
    }

    /// Registers link `link` for verdicts of the core (its own, and later ones on approval
    /// or denial).
    pub(crate) fn wait_verdicts(&self, link: LinkId) -> mpsc::Receiver<Verdict> {
        let (tx, rx) = mpsc::channel(4);
        lock(&self.verdicts).insert(link, tx);
        rx
    }

    /// Link `link` no longer waits for verdicts.
    pub(crate) fn forget_verdicts(&self, link: LinkId) {
        lock(&self.verdicts).remove(&link);
    }

    /// Hands a verdict to the link task waiting for it.
    pub(crate) fn deliver_verdict(&self, link: LinkId, verdict: Verdict) {
        if let Some(tx) = lock(&self.verdicts).get(&link) {
            let _ = tx.try_send(verdict);
        }
    }
}
