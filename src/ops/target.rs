//! Where a room operation runs: a stopped node's data directory or a running node
//! ([`Target`]), which data directory a tool uses when none is named ([`data_dir`]), and
//! which node a client command asks when `--node` is not given ([`node_url`]).

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

    /// Merges `update` into `room`; `undelete` restores a deleted room from it (see
    /// [`super::import`]).
    pub async fn import(
        &self,
        room: &str,
        update: &[u8],
        undelete: bool,
    ) -> Result<Imported, OpsError> {
        match self {
            Target::Dir(dir) => import_dir(dir, room, update, undelete).await,
            Target::Node(node) => node.import(room, update, undelete).await,
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

/// The URL of the running node a client command (`status`, `rooms`, `command`) asks:
/// `flag` when given, else `http://HOST:PORT` from the config file (`config`, or
/// ./mesh.toml when it exists), else the defaults (`http://127.0.0.1:3913`). A wildcard
/// listen address (`0.0.0.0`, `::`) is reached on loopback.
pub fn node_url(flag: Option<&str>, config: Option<&Path>) -> Result<String, OpsError> {
    if let Some(url) = flag {
        return Ok(url.to_string());
    }
    let file = FileConfig::locate(config)?;
    let resolved = Config::resolve(&file, &Overrides::default())?;
    if resolved.port == 0 {
        return Err(OpsError::Refused(
            "the config file sets port = 0 (a free port is picked at each start); give --node \
             URL with the port from the node's `listening on` line"
                .into(),
        ));
    }
    let host = match resolved.host.as_str() {
        "0.0.0.0" => "127.0.0.1".to_string(),
        "::" | "[::]" => "[::1]".to_string(),
        h if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
        h => h.to_string(),
    };
    Ok(format!("http://{host}:{}", resolved.port))
}

#[cfg(test)]
mod tests {
    use super::node_url;

    fn url_from(text: &str) -> Result<String, super::OpsError> {
        let dir = std::env::temp_dir().join(format!(
            "ymesh-node-url-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("mesh.toml");
        std::fs::write(&path, text).unwrap();
        let url = node_url(None, Some(&path));
        let _ = std::fs::remove_dir_all(&dir);
        url
    }

    #[test]
    fn the_node_comes_from_the_flag_else_the_config_file() {
        assert_eq!(
            node_url(Some("http://h:1"), None).unwrap(),
            "http://h:1".to_string()
        );
        assert_eq!(url_from("").unwrap(), "http://127.0.0.1:3913");
        assert_eq!(url_from("port = 4000\n").unwrap(), "http://127.0.0.1:4000");
        assert_eq!(
            url_from("host = \"0.0.0.0\"\nport = 4001\n").unwrap(),
            "http://127.0.0.1:4001"
        );
        assert_eq!(url_from("host = \"::\"\n").unwrap(), "http://[::1]:3913");
        assert_eq!(
            url_from("host = \"::1\"\nport = 5\n").unwrap(),
            "http://[::1]:5"
        );
        let err = url_from("port = 0\n").unwrap_err().to_string();
        assert!(err.contains("port = 0") && err.contains("--node"), "{err}");
        let err = url_from("port = \"x\"\n").unwrap_err().to_string();
        assert!(err.contains("`port`"), "{err}");
    }
}
