//! Node configuration: the `mesh.toml` schema, its defaults, and validation.
//!
//! Settings come from four places, highest precedence first: command-line flags,
//! environment variables, the config file, built-in defaults. This module owns the file
//! schema ([`FileConfig`], strict: an unknown key is an error) and the resolved [`Config`]
//! that the node runs with. Every error names the file, line and column and the key.

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::room::validate_room_name;

/// Default listen address.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// Default port.
pub const DEFAULT_PORT: u16 = 3913;

/// A configuration problem, with where it is when it comes from a file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema (unknown key, wrong type).
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong, naming the key.
        message: String,
    },
    /// A value has the right type but is not allowed.
    #[error("{location}: `{key}`: {message}")]
    Invalid {
        /// `file:line:column`, or where the value came from (flag, env).
        location: String,
        /// The key, dotted (`limits.max_rooms`).
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?}; use text or json")),
        }
    }
}

/// `[rooms]` in mesh.toml.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoomsSection {
    /// Seconds a room with no clients stays in memory.
    pub idle_timeout_s: Option<Spanned<u64>>,
    /// Rooms kept in memory for the node's whole life.
    pub pinned: Option<Vec<Spanned<String>>>,
}

/// `[limits]` in mesh.toml.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Largest WebSocket message accepted, in bytes.
    pub max_message_bytes: Option<Spanned<u64>>,
    /// Most rooms in memory.
    pub max_rooms: Option<Spanned<u64>>,
    /// Most WebSocket connections.
    pub max_connections: Option<Spanned<u64>>,
    /// Outbound queue per connection, in messages.
    pub outbound_queue: Option<Spanned<u64>>,
    /// Seconds between WebSocket pings; a client that misses one is dropped.
    pub ping_interval_s: Option<Spanned<u64>>,
}

/// The schema of `mesh.toml`. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// Listen address.
    pub host: Option<Spanned<String>>,
    /// Listen port (0 picks a free one).
    pub port: Option<Spanned<u16>>,
    /// `text` or `json`.
    pub log_format: Option<LogFormat>,
    /// Room behaviour.
    pub rooms: RoomsSection,
    /// Limits.
    pub limits: LimitsSection,
    #[serde(skip)]
    source: Option<(PathBuf, String)>,
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(offset, |i| offset - i - 1) + 1;
    (line, column)
}

impl FileConfig {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses config text; `path` is used in error messages.
    pub fn parse(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
        let mut cfg: FileConfig = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((1, 1), |s| line_col(text, s.start));
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })?;
        cfg.source = Some((path.to_path_buf(), text.to_string()));
        Ok(cfg)
    }

    fn location(&self, span: Range<usize>) -> String {
        match &self.source {
            Some((path, text)) => {
                let (line, column) = line_col(text, span.start);
                format!("{}:{line}:{column}", path.display())
            }
            None => "config".to_string(),
        }
    }

    fn invalid(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            location: self.location(span),
            key: key.to_string(),
            message: message.into(),
        }
    }
}

/// Values given on the command line or in the environment; `None` means "not given".
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--host` / `HOST`.
    pub host: Option<String>,
    /// `--port` / `PORT`.
    pub port: Option<u16>,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
}

/// Resource limits of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest WebSocket message accepted (bytes); larger ones close with 1009.
    pub max_message_bytes: usize,
    /// Most rooms in memory; more close with 1013.
    pub max_rooms: usize,
    /// Most WebSocket connections; more close with 1013.
    pub max_connections: usize,
    /// Outbound queue per connection (messages); overflow closes with 4429.
    pub outbound_queue: usize,
    /// WebSocket ping interval; a client that misses one ping is dropped (4408).
    pub ping_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 64 * 1024 * 1024,
            max_rooms: 100_000,
            max_connections: 50_000,
            outbound_queue: 1024,
            ping_interval: Duration::from_secs(30),
        }
    }
}

/// The resolved configuration a node runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address (an IP address or `localhost`).
    pub host: String,
    /// Listen port; 0 picks a free one.
    pub port: u16,
    /// Log format.
    pub log_format: LogFormat,
    /// Seconds a room with no client stays in memory.
    pub idle_timeout: Duration,
    /// Rooms never evicted.
    pub pinned_rooms: HashSet<String>,
    /// Limits.
    pub limits: Limits,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: DEFAULT_HOST.to_string(),
            port: DEFAULT_PORT,
            log_format: LogFormat::Text,
            idle_timeout: Duration::from_secs(60),
            pinned_rooms: HashSet::new(),
            limits: Limits::default(),
        }
    }
}

fn positive(file: &FileConfig, v: &Spanned<u64>, key: &str, min: u64) -> Result<u64, ConfigError> {
    let value = *v.get_ref();
    if value < min {
        return Err(file.invalid(
            v.span(),
            key,
            format!("must be at least {min}, got {value}"),
        ));
    }
    Ok(value)
}

impl Config {
    /// Resolves a config: defaults, then the file, then overrides.
    pub fn resolve(file: &FileConfig, over: &Overrides) -> Result<Config, ConfigError> {
        let mut cfg = Config::default();
        if let Some(h) = &file.host {
            cfg.host = h.get_ref().clone();
        }
        if let Some(p) = &file.port {
            cfg.port = *p.get_ref();
        }
        if let Some(f) = file.log_format {
            cfg.log_format = f;
        }
        if let Some(v) = &file.rooms.idle_timeout_s {
            cfg.idle_timeout = Duration::from_secs(*v.get_ref());
        }
        if let Some(list) = &file.rooms.pinned {
            for (i, name) in list.iter().enumerate() {
                validate_room_name(name.get_ref()).map_err(|e| {
                    file.invalid(name.span(), &format!("rooms.pinned[{i}]"), e.to_string())
                })?;
                cfg.pinned_rooms.insert(name.get_ref().clone());
            }
        }
        let l = &file.limits;
        if let Some(v) = &l.max_message_bytes {
            cfg.limits.max_message_bytes =
                positive(file, v, "limits.max_message_bytes", 1024)? as usize;
        }
        if let Some(v) = &l.max_rooms {
            cfg.limits.max_rooms = positive(file, v, "limits.max_rooms", 1)? as usize;
        }
        if let Some(v) = &l.max_connections {
            cfg.limits.max_connections = positive(file, v, "limits.max_connections", 1)? as usize;
        }
        if let Some(v) = &l.outbound_queue {
            cfg.limits.outbound_queue = positive(file, v, "limits.outbound_queue", 4)? as usize;
        }
        if let Some(v) = &l.ping_interval_s {
            cfg.limits.ping_interval =
                Duration::from_secs(positive(file, v, "limits.ping_interval_s", 1)?);
        }
        if let Some(h) = &over.host {
            cfg.host = h.clone();
        }
        if let Some(p) = over.port {
            cfg.port = p;
        }
        if let Some(f) = over.log_format {
            cfg.log_format = f;
        }
        if cfg.host != "localhost" && cfg.host.parse::<std::net::IpAddr>().is_err() {
            let location = match (&over.host, &file.host) {
                (Some(_), _) => "--host / HOST".to_string(),
                (None, Some(h)) => file.location(h.span()),
                (None, None) => "default".to_string(),
            };
            return Err(ConfigError::Invalid {
                location,
                key: "host".into(),
                message: format!("{:?} is not an IP address or `localhost`", cfg.host),
            });
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let file = FileConfig::parse(Path::new("mesh.toml"), text)?;
        Config::resolve(&file, &Overrides::default())
    }

    #[test]
    fn empty_file_is_the_defaults() {
        let cfg = parse("").unwrap();
        assert_eq!(cfg.host, "127.0.0.1");
        assert_eq!(cfg.port, 3913);
        assert_eq!(cfg.idle_timeout, Duration::from_secs(60));
        assert_eq!(cfg.limits, Limits::default());
    }

    #[test]
    fn repo_mesh_toml_is_all_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("mesh.toml");
        let file = FileConfig::load(&path).unwrap();
        let cfg = Config::resolve(&file, &Overrides::default()).unwrap();
        let def = Config::default();
        assert_eq!(cfg.host, def.host);
        assert_eq!(cfg.port, def.port);
        assert_eq!(cfg.limits, def.limits);
        assert!(cfg.pinned_rooms.is_empty());
    }

    #[test]
    fn values_and_precedence() {
        let text = "host = \"0.0.0.0\"\nport = 4000\n[rooms]\nidle_timeout_s = 5\npinned = [\"a\", \"b/c\"]\n[limits]\nmax_rooms = 10\n";
        let file = FileConfig::parse(Path::new("m.toml"), text).unwrap();
        let cfg = Config::resolve(&file, &Overrides::default()).unwrap();
        assert_eq!(cfg.host, "0.0.0.0");
        assert_eq!(cfg.port, 4000);
        assert_eq!(cfg.idle_timeout, Duration::from_secs(5));
        assert!(cfg.pinned_rooms.contains("b/c"));
        assert_eq!(cfg.limits.max_rooms, 10);
        let over = Overrides {
            port: Some(0),
            ..Default::default()
        };
        assert_eq!(Config::resolve(&file, &over).unwrap().port, 0);
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = parse("port = 1\n\n[limits]\nmax_roms = 3\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("mesh.toml:4:"), "{msg}");
        assert!(msg.contains("max_roms"), "{msg}");
    }

    #[test]
    fn wrong_type_names_line() {
        let msg = parse("\nport = \"x\"\n").unwrap_err().to_string();
        assert!(msg.starts_with("mesh.toml:2:"), "{msg}");
        let msg = parse("port = 70000\n").unwrap_err().to_string();
        assert!(msg.starts_with("mesh.toml:1:"), "{msg}");
    }

    #[test]
    fn invalid_values_name_key_and_line() {
        let msg = parse("[limits]\n\nmax_rooms = 0\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("mesh.toml:3:13"), "{msg}");
        assert!(msg.contains("limits.max_rooms"), "{msg}");
        let msg = parse("[rooms]\npinned = [\"ok\", \"\"]\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("rooms.pinned[1]"), "{msg}");
        assert!(msg.contains("mesh.toml:2:"), "{msg}");
        let msg = parse("host = \"not a host\"\n").unwrap_err().to_string();
        assert!(
            msg.contains("`host`") && msg.contains("mesh.toml:1:8"),
            "{msg}"
        );
    }
}
