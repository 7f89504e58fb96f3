//! Where a room operation runs: a stopped node's data directory or a running node
//! ([`Target`]), and which data directory a tool uses when none is named ([`data_dir`]).

use std::path::{Path, PathBuf};

use super::{
    compact_dir, delete_dir, export_dir, import_dir, Compacted, DeletedRoom, Imported, NodeClient,
    OpsError,
};
use crate::config::{Config, FileConfig, Overrides};

/// A stopped node's store, or a running node.
#[derive(Debug)]
pub enum Target {
    /// The data directory of a stopped node.
    Dir(PathBuf),
    /// A running node's HTTP API (boxed: the client is much larger than a path).
    Node(Box<NodeClient>),
}

impl Target {
    /// The running node at `node` when given (with `admin_token` for admin routes), else the
    /// data directory [`data_dir`] picks from `data_dir` and `config`.
    pub fn resolve(
        node: Option<&str>,
        admin_token: Option<String>,
        data_dir: Option<PathBuf>,
        config: Option<&Path>,
    ) -> Result<Target, OpsError> {
        match node {
            Some(url) => Ok(Target::Node(Box::new(NodeClient::new(url, admin_token)?))),
            None => Ok(Target::Dir(self::data_dir(data_dir, config)?)),
        }
    }

    /// `room` as one Yjs v1 update.
    pub async fn export(&self, room: &str) -> Result<Vec<u8>, OpsError> {
        match self {
            Target::Dir(dir) => export_dir(dir, room).await,
            Target::Node(node) => node.export(room).await,
        }
    }

    /// Merges `update` into `room`.
    pub async fn import(&self, room: &str, update: &[u8]) -> Result<Imported, OpsError> {
        match self {
            Target::Dir(dir) => import_dir(dir, room, update).await,
            Target::Node(node) => node.import(room, update).await,
        }
    }

    /// Compacts `room`, or every stored room with `None`.
    pub async fn compact(&self, room: Option<&str>) -> Result<Vec<Compacted>, OpsError> {
        match self {
            Target::Dir(dir) => compact_dir(dir, room).await,
            Target::Node(node) => node.compact_all(room).await,
        }
    }

    /// Deletes `room` (and records its tombstone).
    pub async fn delete(&self, room: &str) -> Result<DeletedRoom, OpsError> {
        match self {
            Target::Dir(dir) => delete_dir(dir, room).await,
            Target::Node(node) => node.delete(room).await,
        }
    }

    /// Whether this is a running node.
    pub fn is_node(&self) -> bool {
        matches!(self, Target::Node(_))
    }
}

/// The data directory as `serve` would use it: `flag` or `YMESH_DATA_DIR`, then the config
/// file (`config`, or ./mesh.toml when it exists), then the default.
pub fn data_dir(flag: Option<PathBuf>, config: Option<&Path>) -> Result<PathBuf, OpsError> {
    let env = std::env::var_os("YMESH_DATA_DIR").filter(|v| !v.is_empty());
    if let Some(dir) = flag.or(env.map(PathBuf::from)) {
        return Ok(dir);
    }
    let file = FileConfig::locate(config)?;
    Ok(Config::resolve(&file, &Overrides::default())?.data_dir)
}
