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
/// Default WebSocket route templates.
pub const DEFAULT_ROUTES: [&str; 3] = ["/rooms/{room}", "/sync/{room}", "/workspaces/{room}/sync"];
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
    /// Static client token.
    pub token: Option<Spanned<toml::Value>>,
    /// Secret for signed client tokens.
    pub shared_secret: Option<Spanned<toml::Value>>,
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
    pub tls_cert: Option<Spanned<toml::Value>>,
    /// TLS private key (PEM).
    pub tls_key: Option<Spanned<toml::Value>>,
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

    fn planned_settings(&self) -> [(&'static str, &Option<Spanned<toml::Value>>); 4] {
        [
            ("token", &self.token),
            ("shared_secret", &self.shared_secret),
            ("tls_cert", &self.tls_cert),
            ("tls_key", &self.tls_key),
        ]
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
    /// `--data-dir` / `YMESH_DATA_DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--memory` (only `true` overrides).
    pub memory: bool,
    /// `--peer` (added to the file's peers).
    pub peers: Vec<String>,
    /// `--mesh-secret` / `YMESH_MESH_SECRET`.
    pub mesh_secret: Option<String>,
    /// `--allow-peer` (added to the file's list).
    pub allow_peers: Vec<String>,
    /// `--admin-token` / `YMESH_ADMIN_TOKEN`.
    pub admin_token: Option<String>,
    /// `--mdns` (`Some(true)`) / `--no-mdns` (`Some(false)`).
    pub mdns: Option<bool>,
    /// Settings given on the command line or in the environment that this version cannot
    /// act on yet: (flag or env name, key).
    pub planned: Vec<(String, &'static str)>,
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

/// Shown in place of a secret in debug output.
const REDACTED: &str = "<redacted>";

// By hand so that secrets never reach a log line through `{:?}`.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("log_format", &self.log_format)
            .field("routes", &self.routes)
            .field("data_dir", &self.data_dir)
            .field("memory", &self.memory)
            .field("store", &self.store)
            .field("peers", &self.peers)
            .field("mesh_secret", &self.mesh_secret.as_ref().map(|_| REDACTED))
            .field("allow_peers", &self.allow_peers)
            .field("idle_timeout", &self.idle_timeout)
            .field("pinned_rooms", &self.pinned_rooms)
            .field("limits", &self.limits)
            .field("admin_token", &self.admin_token.as_ref().map(|_| REDACTED))
            .finish()
    }
}

/// Store tuning knobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreTuning {
    /// Fold a room's log into a snapshot past this many updates.
    pub compact_log_count: u64,
    /// Fold a room's log into a snapshot past this many bytes.
    pub compact_log_bytes: u64,
    /// Most logical bytes one room may store; `None` = no limit.
    pub room_quota_bytes: Option<u64>,
    /// Most logical bytes all rooms together may store; `None` = no limit.
    pub node_quota_bytes: Option<u64>,
}

impl Default for StoreTuning {
    fn default() -> Self {
        StoreTuning {
            compact_log_count: 500,
            compact_log_bytes: 1024 * 1024,
            room_quota_bytes: None,
            node_quota_bytes: None,
        }
    }
}

/// Default store directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "./ymesh-data";

/// The resolved configuration a node runs with.
#[derive(Clone)]
pub struct Config {
    /// Listen address (an IP address or `localhost`).
    pub host: String,
    /// Listen port; 0 picks a free one.
    pub port: u16,
    /// Log format.
    pub log_format: LogFormat,
    /// WebSocket route templates (each holds one `{room}` segment).
    pub routes: Vec<String>,
    /// Directory of the durable store.
    pub data_dir: PathBuf,
    /// Run without a store: nothing survives a restart.
    pub memory: bool,
    /// Store tuning.
    pub store: StoreTuning,
    /// Peer nodes to dial.
    pub peers: Vec<crate::mesh::PeerConfig>,
    /// Shared mesh secret.
    pub mesh_secret: Option<String>,
    /// Node ids admitted to the mesh without the secret.
    pub allow_peers: Vec<String>,
    /// Seconds a room with no client stays in memory.
    pub idle_timeout: Duration,
    /// Rooms never evicted.
    pub pinned_rooms: HashSet<String>,
    /// How long a deleted room's tombstone is kept (and so how long a node may stay offline
    /// without bringing a deleted room back).
    pub tombstone_retention: Duration,
    /// Limits.
    pub limits: Limits,
    /// Bearer token that admin routes require. `None`: admin routes are accepted only from
    /// loopback connections.
    pub admin_token: Option<String>,
    /// How peers are found besides configuration: mDNS and the tailnet.
    pub discovery: Discovery,
}

/// Discovery settings (docs/discovery.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    /// mDNS on (`Some(true)`), off (`Some(false)`), or on only when the node listens on a
    /// non-loopback address (`None`, the default).
    pub mdns: Option<bool>,
    /// Service type announced and browsed.
    pub mdns_service: String,
    /// Interfaces mDNS uses (names or `*`/`?` globs); empty = all.
    pub mdns_interfaces: Vec<String>,
    /// Interfaces mDNS never uses; wins over `mdns_interfaces`.
    pub mdns_exclude_interfaces: Vec<String>,
    /// The one address to announce; `None` announces the addresses of the interfaces used.
    pub mdns_announce_addr: Option<std::net::IpAddr>,
    /// Tailnet discovery; `None` = off.
    pub tailnet: Option<crate::mesh::discovery::TailnetConfig>,
}

impl Default for Discovery {
    fn default() -> Self {
        Discovery {
            mdns: None,
            mdns_service: crate::mesh::discovery::DEFAULT_SERVICE_TYPE.to_string(),
            mdns_interfaces: Vec::new(),
            mdns_exclude_interfaces: crate::mesh::discovery::DEFAULT_EXCLUDE_INTERFACES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            mdns_announce_addr: None,
            tailnet: None,
        }
    }
}

impl Discovery {
    /// Whether mDNS runs for a node listening on `listen`.
    pub fn mdns_enabled(&self, listen: std::net::IpAddr) -> bool {
        self.mdns.unwrap_or(!listen.is_loopback())
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: DEFAULT_HOST.to_string(),
            port: DEFAULT_PORT,
            log_format: LogFormat::Text,
            routes: DEFAULT_ROUTES.iter().map(|r| r.to_string()).collect(),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            memory: false,
            store: StoreTuning::default(),
            peers: Vec::new(),
            mesh_secret: None,
            allow_peers: Vec::new(),
            idle_timeout: Duration::from_secs(60),
            pinned_rooms: HashSet::new(),
            tombstone_retention: Duration::from_secs(90 * 86_400),
            limits: Limits::default(),
            admin_token: None,
            discovery: Discovery::default(),
        }
    }
}

fn planned_message(key: &str) -> String {
    let feature = SETTINGS
        .iter()
        .find(|s| s.key == key)
        .and_then(|s| match s.status {
            Status::Planned(what) => Some(what),
            Status::Available => None,
        })
        .unwrap_or("a later release");
    format!("not supported by this version of ymesh yet (comes with {feature}); remove it")
}

/// The discovery keys of the file (docs/discovery.md).
fn resolve_discovery(file: &FileConfig, d: &mut Discovery) -> Result<(), ConfigError> {
    use crate::mesh::discovery::{MdnsConfig, TailnetConfig};
    d.mdns = file.mdns;
    if let Some(v) = &file.mdns_service {
        let mut probe = MdnsConfig::new("probe", 1);
        probe.service_type = v.get_ref().clone();
        probe
            .validate()
            .map_err(|e| file.invalid(v.span(), "mdns_service", e.to_string()))?;
        d.mdns_service = v.get_ref().clone();
    }
    if let Some(v) = &file.mdns_interfaces {
        d.mdns_interfaces = v.clone();
    }
    if let Some(v) = &file.mdns_exclude_interfaces {
        d.mdns_exclude_interfaces = v.clone();
    }
    if let Some(v) = &file.mdns_announce_addr {
        let ip = v.get_ref().parse().map_err(|_| {
            file.invalid(
                v.span(),
                "mdns_announce_addr",
                format!("{:?} is not an IP address", v.get_ref()),
            )
        })?;
        d.mdns_announce_addr = Some(ip);
    }
    let any_tailnet_key = file.tailnet_socket.is_some()
        || file.tailnet_tags.is_some()
        || file.tailnet_hostnames.is_some()
        || file.tailnet_port.is_some()
        || file.tailnet_interval_s.is_some();
    if file.tailnet != Some(true) {
        if let (Some(false) | None, true) = (file.tailnet, any_tailnet_key) {
            tracing::debug!("tailnet_* settings given but tailnet discovery is off");
        }
        d.tailnet = None;
        return Ok(());
    }
    let mut t = TailnetConfig::default();
    if let Some(v) = &file.tailnet_socket {
        if v.get_ref().is_empty() {
            return Err(file.invalid(v.span(), "tailnet_socket", "must not be empty"));
        }
        t.socket = PathBuf::from(v.get_ref());
    }
    if let Some(v) = &file.tailnet_tags {
        t.tags = v.clone();
    }
    if let Some(v) = &file.tailnet_hostnames {
        t.hostnames = v.clone();
    }
    if let Some(v) = &file.tailnet_port {
        if *v.get_ref() == 0 {
            return Err(file.invalid(v.span(), "tailnet_port", "must be a port, 1-65535"));
        }
        t.port = *v.get_ref();
    }
    if let Some(v) = &file.tailnet_interval_s {
        t.interval = Duration::from_secs(positive(file, v, "tailnet_interval_s", 1)?);
    }
    d.tailnet = Some(t);
    Ok(())
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
        for (key, value) in file.planned_settings() {
            if let Some(v) = value {
                return Err(file.invalid(v.span(), key, planned_message(key)));
            }
        }
        if let Some((flag, key)) = over.planned.first() {
            return Err(ConfigError::Invalid {
                location: flag.clone(),
                key: (*key).to_string(),
                message: planned_message(key),
            });
        }
        if let Some(routes) = &file.routes {
            if routes.get_ref().is_empty() {
                return Err(file.invalid(routes.span(), "routes", "needs at least one route"));
            }
            let mut seen = HashSet::new();
            cfg.routes.clear();
            for (i, r) in routes.get_ref().iter().enumerate() {
                let key = format!("routes[{i}]");
                validate_route(r.get_ref()).map_err(|m| file.invalid(r.span(), &key, m))?;
                if !seen.insert(r.get_ref().clone()) {
                    return Err(file.invalid(r.span(), &key, "listed twice"));
                }
                cfg.routes.push(r.get_ref().clone());
            }
        }
        if let Some(d) = &file.data_dir {
            if d.get_ref().is_empty() {
                return Err(file.invalid(d.span(), "data_dir", "must not be empty"));
            }
            cfg.data_dir = PathBuf::from(d.get_ref());
        }
        if let Some(m) = file.memory {
            cfg.memory = m;
        }
        if let Some(v) = &file.store.compact_log_count {
            cfg.store.compact_log_count = positive(file, v, "store.compact_log_count", 1)?;
        }
        if let Some(v) = &file.store.compact_log_bytes {
            cfg.store.compact_log_bytes = positive(file, v, "store.compact_log_bytes", 1)?;
        }
        if let Some(v) = &file.store.room_quota_bytes {
            cfg.store.room_quota_bytes = Some(*v.get_ref()).filter(|q| *q > 0);
        }
        if let Some(v) = &file.store.node_quota_bytes {
            cfg.store.node_quota_bytes = Some(*v.get_ref()).filter(|q| *q > 0);
        }
        if let Some(v) = &file.rooms.idle_timeout_s {
            cfg.idle_timeout = Duration::from_secs(*v.get_ref());
        }
        if let Some(v) = &file.rooms.tombstone_days {
            let days = positive(file, v, "rooms.tombstone_days", 1)?;
            cfg.tombstone_retention = Duration::from_secs(days.saturating_mul(86_400));
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
        resolve_discovery(file, &mut cfg.discovery)?;
        if over.mdns.is_some() {
            cfg.discovery.mdns = over.mdns;
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
        if let Some(d) = &over.data_dir {
            cfg.data_dir = d.clone();
        }
        if over.memory {
            cfg.memory = true;
        }
        for (i, p) in file.peers.iter().flatten().enumerate() {
            let key = format!("peers[{i}]");
            crate::mesh::mesh_url(&p.get_ref().url)
                .map_err(|e| file.invalid(p.span(), &format!("{key}.url"), e.reason))?;
            if let Some(id) = &p.get_ref().node_id {
                crate::mesh::identity::parse_node_id(id).map_err(|e| {
                    file.invalid(p.span(), &format!("{key}.node_id"), e.to_string())
                })?;
            }
            let share = match &p.get_ref().share {
                None => crate::mesh::SharePolicy::All,
                Some(list) => {
                    if let Some(bad) = list.iter().find(|g| g.is_empty()) {
                        return Err(file.invalid(
                            p.span(),
                            &format!("{key}.share"),
                            format!("{bad:?}: an empty pattern shares nothing; remove it"),
                        ));
                    }
                    crate::mesh::SharePolicy::Globs(list.clone())
                }
            };
            let rooms = p.get_ref().rooms.clone().unwrap_or_default();
            for (j, r) in rooms.iter().enumerate() {
                validate_room_name(r).map_err(|e| {
                    file.invalid(p.span(), &format!("{key}.rooms[{j}]"), e.to_string())
                })?;
            }
            cfg.peers.push(crate::mesh::PeerConfig {
                url: p.get_ref().url.clone(),
                node_id: p.get_ref().node_id.clone(),
                share,
                rooms,
                token: p.get_ref().token.clone(),
            });
        }
        for url in &over.peers {
            crate::mesh::mesh_url(url).map_err(|e| ConfigError::Invalid {
                location: "--peer".into(),
                key: "peers".into(),
                message: e.to_string(),
            })?;
            cfg.peers.push(crate::mesh::PeerConfig {
                url: url.clone(),
                ..Default::default()
            });
        }
        if let Some(sv) = &file.mesh_secret {
            if sv.get_ref().is_empty() {
                return Err(file.invalid(sv.span(), "mesh_secret", "must not be empty"));
            }
            cfg.mesh_secret = Some(sv.get_ref().clone());
        }
        if let Some(sv) = &over.mesh_secret {
            if sv.is_empty() {
                return Err(ConfigError::Invalid {
                    location: "--mesh-secret / YMESH_MESH_SECRET".into(),
                    key: "mesh_secret".into(),
                    message: "must not be empty".into(),
                });
            }
            cfg.mesh_secret = Some(sv.clone());
        }
        for (i, id) in file.allow_peers.iter().flatten().enumerate() {
            crate::mesh::identity::parse_node_id(id.get_ref()).map_err(|e| {
                file.invalid(id.span(), &format!("allow_peers[{i}]"), e.to_string())
            })?;
            cfg.allow_peers.push(id.get_ref().clone());
        }
        for id in &over.allow_peers {
            crate::mesh::identity::parse_node_id(id).map_err(|e| ConfigError::Invalid {
                location: "--allow-peer".into(),
                key: "allow_peers".into(),
                message: e.to_string(),
            })?;
            cfg.allow_peers.push(id.clone());
        }
        if let Some(t) = &file.admin_token {
            if t.get_ref().is_empty() {
                return Err(file.invalid(t.span(), "admin_token", "must not be empty"));
            }
            cfg.admin_token = Some(t.get_ref().clone());
        }
        if let Some(t) = &over.admin_token {
            if t.is_empty() {
                return Err(ConfigError::Invalid {
                    location: "--admin-token / YMESH_ADMIN_TOKEN".into(),
                    key: "admin_token".into(),
                    message: "must not be empty".into(),
                });
            }
            cfg.admin_token = Some(t.clone());
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

/// Whether a setting works in this version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Implemented.
    Available,
    /// Accepted by the parser but refused at start, naming the feature it waits for.
    Planned(&'static str),
}

/// Documentation of one setting: the single source for `--help`-independent docs,
/// docs/configuration.md (checked by a test) and mesh.toml (checked by a test).
#[derive(Debug, Clone, Copy)]
pub struct SettingDoc {
    /// Dotted mesh.toml key.
    pub key: &'static str,
    /// Command-line flag, if any.
    pub flag: Option<&'static str>,
    /// Environment variable, if any.
    pub env: Option<&'static str>,
    /// Default, as it is written in TOML (empty when unset by default).
    pub default: &'static str,
    /// What it does.
    pub description: &'static str,
    /// Whether it is implemented.
    pub status: Status,
}

const fn setting(
    key: &'static str,
    flag: Option<&'static str>,
    env: Option<&'static str>,
    default: &'static str,
    description: &'static str,
    status: Status,
) -> SettingDoc {
    SettingDoc {
        key,
        flag,
        env,
        default,
        description,
        status,
    }
}

use Status::{Available, Planned};

/// Every setting a node reads, in mesh.toml order.
pub const SETTINGS: &[SettingDoc] = &[
    setting("host", Some("--host"), Some("HOST"), "\"127.0.0.1\"", "Listen address: an IP address or `localhost`. `0.0.0.0` accepts connections from other hosts.", Available),
    setting("port", Some("--port"), Some("PORT"), "3913", "Listen port. `0` picks a free port; the ready line shows it.", Available),
    setting("log_format", Some("--log-format"), None, "\"text\"", "`text` for people, `json` for one JSON object per line. `RUST_LOG` sets the level (default `info`).", Available),
    setting("routes", None, None, "[\"/rooms/{room}\", \"/sync/{room}\", \"/workspaces/{room}/sync\"]", "WebSocket route templates; each holds `{room}` once as a whole segment (e.g. `/sync/v1/{room}`). `GET`/`POST /rooms/{room}` stay the document API either way.", Available),
    setting("data_dir", Some("--data-dir"), Some("YMESH_DATA_DIR"), "\"./ymesh-data\"", "Directory of the durable store (SQLite, `ymesh.sqlite3`). One node per directory: a second node on it refuses to start.", Available),
    setting("memory", Some("--memory"), None, "false", "Run without a store: nothing survives a restart. The node says so loudly at start.", Available),
    setting("peers", Some("--peer"), None, "[]", "Peer nodes to dial: `--peer URL` (repeatable) or `[[peers]]` tables with `url`, an optional expected `node_id`, an optional `share` list of room names or `*`/`?` patterns (every room when absent; with a `node_id` it also applies to links that peer dials), and for a peer that is not a ymesh node (a plain y-websocket server) the `rooms` to replicate with it, one y-websocket connection each, with an optional `token` sent as `?token=`. A URL may be a room template such as `ws://desktop:3913/rooms/{id}`; ymesh peers are reached at its origin's `/_mesh`.", Available),
    setting("mesh_secret", Some("--mesh-secret"), Some("YMESH_MESH_SECRET"), "", "Shared secret that admits peers to the mesh (proved by HMAC, never sent). With a secret or an allow list set, unknown peers are refused; with neither the mesh is open.", Available),
    setting("allow_peers", Some("--allow-peer"), None, "[]", "Node ids admitted to the mesh without the secret (`--allow-peer ID`, repeatable).", Available),
    setting("token", Some("--token"), Some("YMESH_TOKEN"), "", "Static token clients must present.", Planned("authentication")),
    setting("shared_secret", Some("--shared-secret"), Some("SYNC_SHARED_SECRET"), "", "Secret that signs client tokens (HS256).", Planned("authentication")),
    setting("admin_token", Some("--admin-token"), Some("YMESH_ADMIN_TOKEN"), "", "Bearer token that admin routes (`POST /rooms/{room}/compact`, `DELETE /rooms/{room}`, ...) require as `Authorization: Bearer <token>`. Unset: admin routes are accepted only from loopback connections.", Available),
    setting("mdns", Some("--mdns / --no-mdns"), None, "", "mDNS discovery on the LAN (docs/discovery.md): announce `_ymesh._tcp.local.` and dial the ymesh nodes found. Unset: on only when the node listens on a non-loopback address.", Available),
    setting("mdns_service", None, None, "\"_ymesh._tcp.local.\"", "mDNS service type announced and browsed; nodes with different service types do not see each other.", Available),
    setting("mdns_interfaces", None, None, "[]", "Interfaces mDNS uses, as names or `*`/`?` globs (`[\"eth0\", \"wlan*\"]`); empty = every interface.", Available),
    setting("mdns_exclude_interfaces", None, None, "[\"docker*\", \"tailscale*\"]", "Interfaces mDNS never uses (wins over `mdns_interfaces`). Tailnets carry no multicast: use `tailnet` there.", Available),
    setting("mdns_announce_addr", None, None, "", "The one IP address to announce; unset announces the addresses of the interfaces used.", Available),
    setting("tailnet", None, None, "false", "Find peers on a Tailscale tailnet from the local tailscaled's LocalAPI (docs/discovery.md): online peers matching `tailnet_tags` / `tailnet_hostnames` are probed and the ymesh nodes among them dialed.", Available),
    setting("tailnet_socket", None, None, "\"/var/run/tailscale/tailscaled.sock\"", "tailscaled's LocalAPI Unix socket.", Available),
    setting("tailnet_tags", None, None, "[]", "Probe tailnet peers carrying any of these ACL tags (e.g. `[\"tag:ymesh\"]`). With neither tags nor hostnames, every online peer is probed.", Available),
    setting("tailnet_hostnames", None, None, "[]", "Probe tailnet peers whose host name matches any of these `*`/`?` globs.", Available),
    setting("tailnet_port", None, None, "3913", "Port probed (`GET /`) and dialed on tailnet peers.", Available),
    setting("tailnet_interval_s", None, None, "30", "Seconds between polls of tailscaled.", Available),
    setting("tls_cert", Some("--tls-cert"), None, "", "TLS certificate chain (PEM).", Planned("TLS")),
    setting("tls_key", Some("--tls-key"), None, "", "TLS private key (PEM).", Planned("TLS")),
    setting("store.compact_log_count", None, None, "500", "Fold a room's update log into a snapshot once it holds this many updates and is at least half the snapshot's size (also done when an idle room is evicted).", Available),
    setting("store.compact_log_bytes", None, None, "1048576", "Fold a room's update log into a snapshot once it holds this many bytes.", Available),
    setting("store.room_quota_bytes", None, None, "0", "Most logical bytes (snapshot + log) one room may store; `0` = no limit. An update that would pass it is refused: AUTH permission-denied with the reason, then close 4403 (HTTP 403). Existing data is untouched.", Available),
    setting("store.node_quota_bytes", None, None, "0", "Most logical bytes all rooms together may store; `0` = no limit. Refused like the room quota.", Available),
    setting("rooms.idle_timeout_s", None, None, "60", "Seconds a room with no client stays in memory before it is evicted.", Available),
    setting("rooms.pinned", None, None, "[]", "Rooms kept in memory for the node's whole life.", Available),
    setting("rooms.tombstone_days", None, None, "90", "Days a deleted room's tombstone is kept and sent to peers, so that a node offline for less than that cannot bring the room back. Keep it longer than any node stays offline; after it, a stale copy would return the room (with its old content: nothing is lost).", Available),
    setting("limits.max_message_bytes", None, None, "67108864", "Largest WebSocket message (bytes); larger ones close the connection with 1009.", Available),
    setting("limits.max_rooms", None, None, "100000", "Most rooms in memory; one more closes the connection with 1013.", Available),
    setting("limits.max_connections", None, None, "50000", "Most WebSocket connections; one more is closed with 1013.", Available),
    setting("limits.outbound_queue", None, None, "1024", "Messages queued per connection; a client that falls this far behind is closed with 4429 (a client that reconnects resyncs; y-websocket 3.1 treats 44xx as final unless the app reconnects, see docs/protocol.md).", Available),
    setting("limits.ping_interval_s", None, None, "30", "Seconds between WebSocket pings; a client that sent nothing since the previous ping is closed with 4408.", Available),
];

/// The settings reference as Markdown (the generated part of docs/configuration.md).
pub fn reference_markdown() -> String {
    let mut out = String::from(
        "| key | flag | env | default | status | meaning |\n|---|---|---|---|---|---|\n",
    );
    for s in SETTINGS {
        let code = |v: Option<&str>| v.map_or("—".to_string(), |v| format!("`{v}`"));
        let default = if s.default.is_empty() {
            "unset".to_string()
        } else {
            format!("`{}`", s.default)
        };
        let status = match s.status {
            Available => "available".to_string(),
            Planned(what) => format!("planned: {what}"),
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} |\n",
            s.key,
            code(s.flag),
            code(s.env),
            default,
            status,
            s.description
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let file = FileConfig::parse(Path::new("mesh.toml"), text)?;
        Config::resolve(&file, &Overrides::default())
    }

    #[test]
    fn debug_output_hides_secrets() {
        let cfg = Config {
            mesh_secret: Some("mesh-s3cret".into()),
            admin_token: Some("admin-s3cret".into()),
            peers: vec![crate::mesh::PeerConfig {
                url: "ws://x:1".into(),
                token: Some("peer-s3cret".into()),
                ..Default::default()
            }],
            ..Config::default()
        };
        let text = format!("{cfg:?}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(
            text.contains("<redacted>") && text.contains("ws://x:1"),
            "{text}"
        );
    }

    #[test]
    fn empty_file_is_the_defaults() {
        let cfg = parse("").unwrap();
        assert_eq!(cfg.host, "127.0.0.1");
        assert_eq!(cfg.port, 3913);
        assert_eq!(cfg.idle_timeout, Duration::from_secs(60));
        assert_eq!(cfg.limits, Limits::default());
    }

    /// docs/configuration.md carries the generated settings table verbatim.
    #[test]
    fn configuration_doc_matches_the_code() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
        let doc = std::fs::read_to_string(&path).unwrap();
        let begin = "<!-- BEGIN GENERATED SETTINGS -->\n";
        let end = "<!-- END GENERATED SETTINGS -->";
        let (b, e) = (
            doc.find(begin).unwrap() + begin.len(),
            doc.find(end).unwrap(),
        );
        let want = reference_markdown();
        if std::env::var_os("YMESH_UPDATE_DOCS").is_some() {
            let updated = format!("{}{}{}", &doc[..b], want, &doc[e..]);
            std::fs::write(&path, updated).unwrap();
            return;
        }
        assert_eq!(
            &doc[b..e],
            want,
            "docs/configuration.md is stale: run YMESH_UPDATE_DOCS=1 cargo test --lib config"
        );
    }

    /// mesh.toml documents every setting, commented out, at its default; uncommenting every
    /// available setting gives exactly the built-in defaults.
    #[test]
    fn mesh_toml_lists_every_setting_at_its_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("mesh.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut section = String::new();
        let mut found = HashSet::new();
        let mut uncommented = String::new();
        for line in text.lines() {
            let t = line.trim();
            if t.starts_with('[') {
                section = t.trim_matches(|c| c == '[' || c == ']').to_string();
                uncommented.push_str(line);
                uncommented.push('\n');
                continue;
            }
            let Some(rest) = t.strip_prefix("# ") else {
                assert!(
                    t.is_empty() || t.starts_with('#'),
                    "uncommented line: {line}"
                );
                continue;
            };
            let Some((key, value)) = rest.split_once(" = ") else {
                continue;
            };
            if key.contains(' ') {
                continue;
            }
            let dotted = if section.is_empty() {
                key.to_string()
            } else {
                format!("{section}.{key}")
            };
            let setting = SETTINGS
                .iter()
                .find(|s| s.key == dotted)
                .unwrap_or_else(|| panic!("mesh.toml documents unknown key {dotted}"));
            if !setting.default.is_empty() {
                assert_eq!(value, setting.default, "mesh.toml default of {dotted}");
            }
            found.insert(dotted);
            if setting.status == Status::Available {
                uncommented.push_str(rest);
                uncommented.push('\n');
            }
        }
        for s in SETTINGS {
            assert!(
                found.contains(s.key),
                "mesh.toml does not document {}",
                s.key
            );
        }
        let file = FileConfig::parse(&path, &uncommented).unwrap();
        let cfg = Config::resolve(&file, &Overrides::default()).unwrap();
        let def = Config::default();
        assert_eq!(
            (
                cfg.host,
                cfg.port,
                cfg.log_format,
                cfg.routes,
                cfg.idle_timeout
            ),
            (
                def.host,
                def.port,
                def.log_format,
                def.routes,
                def.idle_timeout
            )
        );
        assert_eq!(cfg.limits, def.limits);
        assert_eq!(cfg.pinned_rooms, def.pinned_rooms);
    }

    #[test]
    fn planned_settings_are_refused_with_the_feature_named() {
        let msg = parse("\ntoken = \"abc\"\n").unwrap_err().to_string();
        assert!(msg.contains("mesh.toml:2:9"), "{msg}");
        assert!(msg.contains("authentication"), "{msg}");
        let file = FileConfig::default();
        let over = Overrides {
            planned: vec![("--tls-cert".into(), "tls_cert")],
            ..Default::default()
        };
        let msg = Config::resolve(&file, &over).unwrap_err().to_string();
        assert!(msg.contains("--tls-cert") && msg.contains("TLS"), "{msg}");
    }

    #[test]
    fn discovery_settings_resolve_and_bad_values_name_the_key_and_line() {
        let cfg = parse("").unwrap();
        assert_eq!(cfg.discovery.mdns, None);
        assert!(!cfg.discovery.mdns_enabled("127.0.0.1".parse().unwrap()));
        assert!(cfg.discovery.mdns_enabled("0.0.0.0".parse().unwrap()));
        assert!(cfg.discovery.tailnet.is_none());
        let cfg = parse(
            "mdns = false\nmdns_interfaces = [\"eth*\"]\nmdns_announce_addr = \"10.0.0.5\"\n\
             tailnet = true\ntailnet_tags = [\"tag:ymesh\"]\ntailnet_port = 4000\n\
             tailnet_interval_s = 5\n",
        )
        .unwrap();
        assert!(!cfg.discovery.mdns_enabled("0.0.0.0".parse().unwrap()));
        assert_eq!(cfg.discovery.mdns_interfaces, vec!["eth*".to_string()]);
        assert_eq!(
            cfg.discovery.mdns_announce_addr,
            Some("10.0.0.5".parse().unwrap())
        );
        let t = cfg.discovery.tailnet.unwrap();
        assert_eq!(t.tags, vec!["tag:ymesh".to_string()]);
        assert_eq!((t.port, t.interval), (4000, Duration::from_secs(5)));
        let over = Overrides {
            mdns: Some(true),
            ..Default::default()
        };
        let cfg = Config::resolve(&FileConfig::default(), &over).unwrap();
        assert!(cfg.discovery.mdns_enabled("127.0.0.1".parse().unwrap()));

        let msg = parse("\nmdns_service = \"_ymesh._udp.local.\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("mesh.toml:2:") && msg.contains("mdns_service"),
            "{msg}"
        );
        let msg = parse("mdns_announce_addr = \"laptop\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("mdns_announce_addr") && msg.contains("not an IP"),
            "{msg}"
        );
        let msg = parse("tailnet = true\ntailnet_port = 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("mesh.toml:2:") && msg.contains("tailnet_port"),
            "{msg}"
        );
    }

    #[test]
    fn admin_token_from_file_and_override() {
        let cfg = parse("").unwrap();
        assert_eq!(cfg.admin_token, None);
        let file = FileConfig::parse(Path::new("mesh.toml"), "admin_token = \"f\"\n").unwrap();
        let cfg = Config::resolve(&file, &Overrides::default()).unwrap();
        assert_eq!(cfg.admin_token.as_deref(), Some("f"));
        let over = Overrides {
            admin_token: Some("flag".into()),
            ..Default::default()
        };
        let cfg = Config::resolve(&file, &over).unwrap();
        assert_eq!(cfg.admin_token.as_deref(), Some("flag"));
        let msg = parse("\nadmin_token = \"\"\n").unwrap_err().to_string();
        assert!(
            msg.contains("mesh.toml:2:") && msg.contains("admin_token"),
            "{msg}"
        );
    }

    #[test]
    fn peers_parse_with_node_ids_and_share_policies() {
        let id = crate::mesh::NodeIdentity::ephemeral().node_id().to_string();
        let text = format!(
            "[[peers]]\nurl = \"ws://desktop:3913/rooms/{{id}}\"\nnode_id = \"{id}\"\nshare = [\"notes/*\", \"todo\"]\n\n[[peers]]\nurl = \"http://cloud:3913\"\n"
        );
        let cfg = parse(&text).unwrap();
        assert_eq!(cfg.peers.len(), 2);
        assert_eq!(cfg.peers[0].node_id.as_deref(), Some(id.as_str()));
        assert!(cfg.peers[0].share.allows("notes/today"));
        assert!(!cfg.peers[0].share.allows("secret"));
        assert!(cfg.peers[1].share.allows("anything"));
        let msg = parse("[[peers]]\nurl = \"ws://x:1\"\nshare = [\"\"]\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("peers[0].share"), "{msg}");
        let msg = parse("[[peers]]\nurl = \"wss://x:1\"\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("peers[0].url") && msg.contains("TLS"), "{msg}");
        let msg = parse("[[peers]]\nurl = \"ws://x:1\"\nnode_id = \"nope\"\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("peers[0].node_id"), "{msg}");
        let msg = parse("allow_peers = [\"nope\"]\n").unwrap_err().to_string();
        assert!(msg.contains("allow_peers[0]"), "{msg}");
    }

    #[test]
    fn route_templates_are_validated() {
        assert!(validate_route("/sync/v1/{room}").is_ok());
        assert!(validate_route("/a/{room}/ws").is_ok());
        for bad in [
            "sync/{room}",
            "/sync",
            "/{room}",
            "/a/{room}/{room}",
            "/a/x{room}",
            "/a/{other}/{room}",
            "/a//{room}",
            "/healthz/{room}",
            "/_mesh/{room}",
        ] {
            assert!(validate_route(bad).is_err(), "{bad} accepted");
        }
        let cfg = parse("routes = [\"/sync/v1/{room}\"]\n").unwrap();
        assert_eq!(cfg.routes, vec!["/sync/v1/{room}".to_string()]);
        let msg = parse("routes = [\"/x/{room}\", \"/x/{room}\"]\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("routes[1]") && msg.contains("twice"), "{msg}");
        let msg = parse("routes = []\n").unwrap_err().to_string();
        assert!(msg.contains("at least one"), "{msg}");
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
