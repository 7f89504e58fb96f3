//! Loading `mesh.toml` and the checks on single values: the file schema ([`FileConfig`],
//! strict serde: an unknown key or a wrong type is an error), [`ConfigError`] with the file,
//! line and column of the value at fault and its dotted key (`limits.max_rooms`, found with
//! `serde_path_to_error`, with the expected type said in words), and the value checks the
//! merge applies (route templates, lower bounds).
//!
//! The file keeps every value's span ([`Spanned`]) and its own text, so that a value found
//! wrong later, while merging, is still reported as `file:line:column`.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::schema::LogFormat;

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

/// `[rooms]` in mesh.toml.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoomsSection {
    /// Seconds a room with no clients stays in memory.
    pub idle_timeout_s: Option<Spanned<u64>>,
    /// Rooms kept in memory for the node's whole life.
    pub pinned: Option<Vec<Spanned<String>>>,
    /// Days a deleted room's tombstone is kept.
    pub tombstone_days: Option<Spanned<u64>>,
}

/// One `[[peers]]` entry in mesh.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSection {
    /// `ws://host:3913`, `http://host:3913`, or a room URL template like
    /// `ws://host:3913/rooms/{id}`.
    pub url: String,
    /// The node id the peer must prove (optional).
    pub node_id: Option<String>,
    /// Rooms shared with this peer: exact names or patterns with `*` and `?`. Every room
    /// when absent.
    pub share: Option<Vec<String>>,
    /// For a peer that is not a ymesh node (a plain y-websocket server): the rooms to
    /// replicate with it.
    pub rooms: Option<Vec<String>>,
    /// For such a peer: a token sent as `?token=`.
    pub token: Option<String>,
}

/// `[store]` in mesh.toml.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// Fold a room's log into a snapshot past this many updates.
    pub compact_log_count: Option<Spanned<u64>>,
    /// Fold a room's log into a snapshot past this many bytes.
    pub compact_log_bytes: Option<Spanned<u64>>,
    /// Most logical bytes one room may store (0 = no limit).
    pub room_quota_bytes: Option<Spanned<u64>>,
    /// Most logical bytes all rooms together may store (0 = no limit).
    pub node_quota_bytes: Option<Spanned<u64>>,
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
    /// Outbound queue per connection, in bytes.
    pub outbound_queue_bytes: Option<Spanned<u64>>,
    /// Seconds a write may stay blocked.
    pub write_timeout_s: Option<Spanned<u64>>,
    /// Seconds to receive a request's headers.
    pub http_header_timeout_s: Option<Spanned<u64>>,
    /// Seconds to receive a request body.
    pub http_body_timeout_s: Option<Spanned<u64>>,
    /// Bytes of document responses in flight.
    pub http_response_bytes: Option<Spanned<u64>>,
    /// Connections per address that have not sent a request yet.
    pub max_half_open_per_address: Option<Spanned<u64>>,
    /// WebSocket connections per address (0 = no limit).
    pub max_connections_per_address: Option<Spanned<u64>>,
    /// Whether per-address limits apply to loopback.
    pub per_address_loopback: Option<bool>,
    /// Messages per second per connection (0 = no limit).
    pub message_rate: Option<Spanned<u64>>,
    /// Seconds between WebSocket pings; a client that misses one is dropped.
    pub ping_interval_s: Option<Spanned<u64>>,
    /// Seconds a new client connection has to send its first message.
    pub first_message_timeout_s: Option<Spanned<u64>>,
    /// Seconds a mesh link has to finish its handshake.
    pub mesh_handshake_timeout_s: Option<Spanned<u64>>,
    /// Most `/_mesh` sockets in their handshake at once, in total.
    pub mesh_preauth_total: Option<Spanned<u64>>,
    /// Most `/_mesh` sockets in their handshake at once from one address.
    pub mesh_preauth_per_address: Option<Spanned<u64>>,
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
    /// WebSocket route templates, each with one `{room}` segment.
    pub routes: Option<Spanned<Vec<Spanned<String>>>>,
    /// Data directory of the store.
    pub data_dir: Option<Spanned<String>>,
    /// Run without a store.
    pub memory: Option<bool>,
    /// Store tuning.
    pub store: StoreSection,
    /// Peer nodes to dial.
    pub peers: Option<Vec<Spanned<PeerSection>>>,
    /// Shared mesh secret.
    pub mesh_secret: Option<Spanned<String>>,
    /// Node ids admitted to the mesh.
    pub allow_peers: Option<Vec<Spanned<String>>>,
    /// Admit every ymesh node without approval.
    pub mesh_open: Option<bool>,
    /// Static client token.
    pub token: Option<Spanned<String>>,
    /// Secret for signed user tokens.
    pub shared_secret: Option<Spanned<String>>,
    /// Browser origins allowed besides the built-in ones.
    pub allowed_origins: Option<Vec<Spanned<String>>>,
    /// Host names a loopback-bound node answers besides loopback ones.
    pub allowed_hosts: Option<Vec<Spanned<String>>>,
    /// Bearer token for admin routes.
    pub admin_token: Option<Spanned<String>>,
    /// mDNS discovery: `true`, `false`, or absent (on only when listening on a non-loopback
    /// address).
    pub mdns: Option<bool>,
    /// mDNS service type.
    pub mdns_service: Option<Spanned<String>>,
    /// Interfaces mDNS uses (names or globs); all when absent.
    pub mdns_interfaces: Option<Vec<String>>,
    /// Interfaces mDNS never uses (names or globs).
    pub mdns_exclude_interfaces: Option<Vec<String>>,
    /// The one address to announce over mDNS.
    pub mdns_announce_addr: Option<Spanned<String>>,
    /// Tailnet discovery through the local tailscaled.
    pub tailnet: Option<bool>,
    /// tailscaled's LocalAPI socket.
    pub tailnet_socket: Option<Spanned<String>>,
    /// Tailnet peers carrying any of these tags are probed.
    pub tailnet_tags: Option<Vec<String>>,
    /// Tailnet peers whose host name matches any of these globs are probed.
    pub tailnet_hostnames: Option<Vec<String>>,
    /// Port probed on tailnet peers.
    pub tailnet_port: Option<Spanned<u16>>,
    /// Seconds between polls of tailscaled.
    pub tailnet_interval_s: Option<Spanned<u64>>,
    /// TLS certificate chain (PEM).
    pub tls_cert: Option<Spanned<String>>,
    /// TLS private key (PEM).
    pub tls_key: Option<Spanned<String>>,
    /// CA file trusted when dialing TLS peers (PEM).
    pub tls_ca: Option<Spanned<String>>,
    /// Reverse proxies whose forwarding headers are believed (addresses or CIDRs).
    pub trusted_proxies: Option<Vec<Spanned<String>>>,
    /// libp2p listen multiaddrs (docs/p2p.md).
    pub p2p_listen: Option<Vec<Spanned<String>>>,
    /// Be a libp2p circuit relay v2 server.
    pub p2p_relay_server: Option<Spanned<bool>>,
    /// libp2p relays to reserve a slot on.
    pub p2p_relay: Option<Vec<Spanned<String>>>,
    /// Relay server: reservations held at once.
    pub p2p_relay_max_reservations: Option<usize>,
    /// Relay server: relayed connections at once.
    pub p2p_relay_max_circuits: Option<usize>,
    /// Relay server: bytes per relayed connection and direction.
    pub p2p_relay_circuit_bytes: Option<u64>,
    /// Relay server: seconds a relayed connection may last.
    pub p2p_relay_circuit_duration_s: Option<u64>,
    /// Room behaviour.
    pub rooms: RoomsSection,
    /// Limits.
    pub limits: LimitsSection,
    #[serde(skip)]
    source: Option<(PathBuf, String)>,
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(offset, |i| offset - i - 1) + 1;
    (line, column)
}

/// The key `path` leads to, dotted as in the docs (`limits.max_rooms`, `peers[0].url`);
/// `None` at the top level. Leaves out the fields `toml::Spanned` uses inside.
fn dotted_key(path: &serde_path_to_error::Path) -> Option<String> {
    use serde_path_to_error::Segment;
    let mut key = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => key.push_str(&format!("[{index}]")),
            Segment::Map { key: k } | Segment::Enum { variant: k } => {
                if k.starts_with("$__") {
                    continue;
                }
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(k);
            }
            Segment::Unknown => {}
        }
    }
    (!key.is_empty()).then_some(key)
}

/// A deserializer's message with Rust type names said in words: `expected u16` becomes
/// `expected an integer from 0 to 65535`.
fn readable(message: &str) -> String {
    message
        .replace("expected u16", "expected an integer from 0 to 65535")
        .replace("expected u64", "expected a whole number (0 or more)")
        .replace("expected a sequence", "expected an array")
        .replace(
            "expected struct PeerSection",
            "expected a table (`[[peers]]`)",
        )
}

/// The config file a command uses when none is named: `mesh.toml` in the working directory.
pub const DEFAULT_FILE: &str = "mesh.toml";

impl FileConfig {
    /// The file at `path`, or `mesh.toml` in the working directory when it exists, or
    /// no file (every setting at its default). How `serve` and the offline tools find their
    /// configuration.
    pub fn locate(path: Option<&Path>) -> Result<FileConfig, ConfigError> {
        match path {
            Some(path) => FileConfig::load(path),
            None if Path::new(DEFAULT_FILE).is_file() => FileConfig::load(Path::new(DEFAULT_FILE)),
            None => Ok(FileConfig::default()),
        }
    }

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
        let at = |e: &toml::de::Error, key: Option<String>| {
            let (line, column) = e.span().map_or((1, 1), |s| line_col(text, s.start));
            let message = readable(e.message().trim());
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                column,
                message: match key {
                    // An unknown key: named in full (`limits.max_roms`, not `max_roms`).
                    Some(key) if message.starts_with("unknown field `") => {
                        let rest = message["unknown field `".len()..]
                            .split_once('`')
                            .map_or("", |(_, rest)| rest);
                        format!("unknown key `{key}`{rest}")
                    }
                    Some(key) => format!("`{key}`: {message}"),
                    None => message,
                },
            }
        };
        let de = toml::Deserializer::parse(text).map_err(|e| at(&e, None))?;
        let mut cfg: FileConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = dotted_key(e.path());
            at(e.inner(), key)
        })?;
        cfg.source = Some((path.to_path_buf(), text.to_string()));
        Ok(cfg)
    }

    pub(super) fn location(&self, span: Range<usize>) -> String {
        match &self.source {
            Some((path, text)) => {
                let (line, column) = line_col(text, span.start);
                format!("{}:{line}:{column}", path.display())
            }
            None => "config".to_string(),
        }
    }

    /// An [`ConfigError::Invalid`] for the value at `span`.
    pub(super) fn invalid(
        &self,
        span: Range<usize>,
        key: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            location: self.location(span),
            key: key.to_string(),
            message: message.into(),
        }
    }
}

/// `v` if it is at least `min`, else an error naming `key` and where `v` is.
pub(super) fn positive(
    file: &FileConfig,
    v: &Spanned<u64>,
    key: &str,
    min: u64,
) -> Result<u64, ConfigError> {
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

/// Paths the HTTP API owns; a route template may not shadow them.
const RESERVED_PREFIXES: [&str; 8] = [
    "/healthz",
    "/peers",
    "/commands",
    "/tokens",
    "/metrics",
    "/ui",
    "/openapi.json",
    "/_mesh",
];

/// Checks a WebSocket route template: starts with `/`, holds exactly one `{room}` as a whole
/// path segment and no other braces, and does not shadow an API route.
pub fn validate_route(template: &str) -> Result<(), String> {
    if !template.starts_with('/') {
        return Err(format!("{template:?} must start with `/`"));
    }
    let segments: Vec<&str> = template[1..].split('/').collect();
    let rooms = segments.iter().filter(|s| **s == "{room}").count();
    if rooms != 1 {
        return Err(format!(
            "{template:?} must contain `{{room}}` exactly once, as a whole path segment"
        ));
    }
    if segments
        .iter()
        .any(|s| s.is_empty() || (*s != "{room}" && (s.contains('{') || s.contains('}'))))
    {
        return Err(format!(
            "{template:?} has an empty segment or a placeholder other than `{{room}}`"
        ));
    }
    if segments[0] == "{room}" {
        return Err(format!(
            "{template:?} must start with a fixed segment, e.g. `/sync/{{room}}`"
        ));
    }
    if let Some(p) = RESERVED_PREFIXES
        .iter()
        .find(|p| template == **p || template.starts_with(&format!("{p}/")))
    {
        return Err(format!("{template:?} would shadow the API route {p}"));
    }
    Ok(())
}
