//! The resolved configuration a node runs with ([`Config`] and its parts) and the built-in
//! defaults.
//!
//! Each default the config layer owns is written once, below, with `defaults!`: as a typed
//! constant that the `Default` impls use, and as the TOML text of the same literal that
//! [`SETTINGS`](super::SETTINGS) shows (and so docs/configuration.md and mesh.toml, which
//! tests check against the table). Defaults owned by the discovery code (mDNS service type,
//! excluded interfaces, tailnet socket, port and interval) stay in `crate::mesh::discovery`;
//! a test checks that the table agrees with them.
//!
//! No I/O and no validation here: this is the shape the loader and the merge fill in.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Declares built-in defaults, each once: a typed constant for the code and a `*_TOML`
/// constant holding the same literal as TOML text (`stringify!` of it: `"127.0.0.1"` keeps
/// its quotes, numbers are written without `_` so the text is what mesh.toml shows).
macro_rules! defaults {
    ($($(#[$doc:meta])* $vis:vis $name:ident, $toml:ident: $ty:ty = $value:literal;)*) => {
        $(
            $(#[$doc])*
            $vis const $name: $ty = $value;
            #[doc = concat!("[`", stringify!($name), "`] as TOML text, for the settings table.")]
            pub(super) const $toml: &str = stringify!($value);
        )*
    };
}

defaults! {
    /// Default listen address.
    pub DEFAULT_HOST, DEFAULT_HOST_TOML: &str = "127.0.0.1";
    /// Default port.
    pub DEFAULT_PORT, DEFAULT_PORT_TOML: u16 = 3913;
    /// Default store directory, relative to the working directory.
    pub DEFAULT_DATA_DIR, DEFAULT_DATA_DIR_TOML: &str = "./ymesh-data";
    /// Whether a node runs without a store unless told otherwise.
    pub(crate) DEFAULT_MEMORY, DEFAULT_MEMORY_TOML: bool = false;
    /// Whether every ymesh node is admitted without approval unless told otherwise.
    pub(crate) DEFAULT_MESH_OPEN, DEFAULT_MESH_OPEN_TOML: bool = false;
    /// Fold a room's log into a snapshot past this many updates.
    pub(crate) DEFAULT_COMPACT_LOG_COUNT, DEFAULT_COMPACT_LOG_COUNT_TOML: u64 = 500;
    /// Fold a room's log into a snapshot past this many bytes (1 MiB).
    pub(crate) DEFAULT_COMPACT_LOG_BYTES, DEFAULT_COMPACT_LOG_BYTES_TOML: u64 = 1048576;
    /// Storage quota of one room, in bytes (0 = no limit).
    pub(crate) DEFAULT_ROOM_QUOTA_BYTES, DEFAULT_ROOM_QUOTA_BYTES_TOML: u64 = 0;
    /// Storage quota of all rooms together, in bytes (0 = no limit).
    pub(crate) DEFAULT_NODE_QUOTA_BYTES, DEFAULT_NODE_QUOTA_BYTES_TOML: u64 = 0;
    /// Seconds a room with no client stays in memory.
    pub(crate) DEFAULT_IDLE_TIMEOUT_S, DEFAULT_IDLE_TIMEOUT_S_TOML: u64 = 60;
    /// Days a deleted room's tombstone is kept.
    pub(crate) DEFAULT_TOMBSTONE_DAYS, DEFAULT_TOMBSTONE_DAYS_TOML: u64 = 90;
    /// Largest WebSocket message accepted, in bytes (64 MiB).
    pub(crate) DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_MESSAGE_BYTES_TOML: usize = 67108864;
    /// Most rooms in memory.
    pub(crate) DEFAULT_MAX_ROOMS, DEFAULT_MAX_ROOMS_TOML: usize = 100000;
    /// Seconds a new client connection has to send its first message (4408 after).
    pub(crate) DEFAULT_FIRST_MESSAGE_TIMEOUT_S, DEFAULT_FIRST_MESSAGE_TIMEOUT_S_TOML: u64 = 10;
    /// Most WebSocket connections.
    pub(crate) DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_TOML: usize = 50000;
    /// Outbound queue per connection, in messages.
    pub(crate) DEFAULT_OUTBOUND_QUEUE, DEFAULT_OUTBOUND_QUEUE_TOML: usize = 1024;
    /// Outbound queue per connection, in bytes (32 MiB).
    pub(crate) DEFAULT_OUTBOUND_QUEUE_BYTES, DEFAULT_OUTBOUND_QUEUE_BYTES_TOML: usize = 33554432;
    /// Seconds a write to a connection may stay blocked (the peer does not read).
    pub(crate) DEFAULT_WRITE_TIMEOUT_S, DEFAULT_WRITE_TIMEOUT_S_TOML: u64 = 30;
    /// Seconds to receive a request's headers (and an idle keep-alive connection's next ones).
    pub(crate) DEFAULT_HEADER_TIMEOUT_S, DEFAULT_HEADER_TIMEOUT_S_TOML: u64 = 10;
    /// Seconds to receive a whole request body.
    pub(crate) DEFAULT_BODY_TIMEOUT_S, DEFAULT_BODY_TIMEOUT_S_TOML: u64 = 60;
    /// Bytes of document responses (`GET /rooms/{room}`) in flight at once (256 MiB).
    pub(crate) DEFAULT_RESPONSE_BYTES, DEFAULT_RESPONSE_BYTES_TOML: usize = 268435456;
    /// Connections from one address that have not sent their first request yet.
    pub(crate) DEFAULT_HALF_OPEN_PER_ADDRESS, DEFAULT_HALF_OPEN_PER_ADDRESS_TOML: usize = 256;
    /// WebSocket connections from one address (0 = no limit).
    pub(crate) DEFAULT_CONNECTIONS_PER_ADDRESS, DEFAULT_CONNECTIONS_PER_ADDRESS_TOML: usize = 0;
    /// Whether the per-address limits apply to loopback addresses.
    pub(crate) DEFAULT_PER_ADDRESS_LOOPBACK, DEFAULT_PER_ADDRESS_LOOPBACK_TOML: bool = false;
    /// Messages per second one connection may send (0 = no limit).
    pub(crate) DEFAULT_MESSAGE_RATE, DEFAULT_MESSAGE_RATE_TOML: u64 = 0;
    /// Seconds between WebSocket pings.
    pub(crate) DEFAULT_PING_INTERVAL_S, DEFAULT_PING_INTERVAL_S_TOML: u64 = 30;
    /// Seconds a mesh link has to finish its handshake (4408 after).
    pub(crate) DEFAULT_MESH_HANDSHAKE_TIMEOUT_S, DEFAULT_MESH_HANDSHAKE_TIMEOUT_S_TOML: u64 = 5;
    /// Most `/_mesh` sockets in their handshake at once, from all addresses.
    pub(crate) DEFAULT_MESH_PREAUTH_TOTAL, DEFAULT_MESH_PREAUTH_TOTAL_TOML: usize = 64;
    /// Most `/_mesh` sockets in their handshake at once from one address.
    pub(crate) DEFAULT_MESH_PREAUTH_PER_ADDRESS, DEFAULT_MESH_PREAUTH_PER_ADDRESS_TOML: usize = 16;
}

/// Default WebSocket route templates.
pub const DEFAULT_ROUTES: [&str; 3] = ["/rooms/{room}", "/sync/{room}", "/workspaces/{room}/sync"];

/// A storage quota as written in the file: `0` means no limit.
pub(super) fn quota(bytes: u64) -> Option<u64> {
    Some(bytes).filter(|q| *q > 0)
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
    /// Outbound queue per connection (bytes; one frame may pass it); overflow closes with
    /// 4429.
    pub outbound_queue_bytes: usize,
    /// How long a write may stay blocked because the other side does not read: a client is
    /// closed with 4429, a peer link ends, an HTTP connection is dropped.
    pub write_timeout: Duration,
    /// Time to receive a request's headers from the moment the connection opens (or an idle
    /// keep-alive connection's next request); the connection is dropped after it.
    pub header_timeout: Duration,
    /// Time to receive a whole request body; a slower one is answered 408.
    pub body_timeout: Duration,
    /// Bytes of `GET /rooms/{room}` document responses being sent at once; past it, more
    /// are answered 503 (`Retry-After`).
    pub response_bytes: usize,
    /// Connections from one address (an IPv6 address by its /64) that have not sent their
    /// first request's headers; more are dropped at accept.
    pub max_half_open_per_address: usize,
    /// WebSocket connections from one address (an IPv6 address by its /64); more are closed
    /// with 4429. 0 = no limit.
    pub max_connections_per_address: usize,
    /// Whether the per-address limits apply to loopback addresses too (off: a reverse proxy
    /// on the same host is not one client).
    pub per_address_loopback: bool,
    /// Messages per second one WebSocket connection may send on average (bursts of one
    /// second's worth); faster ones are closed with 4429. 0 = no limit.
    pub message_rate: u64,
    /// WebSocket ping interval; a client that misses one ping is dropped (4408).
    pub ping_interval: Duration,
    /// Time a new client connection has to send its first message; a silent one is closed
    /// with 4408.
    pub first_message_timeout: Duration,
    /// Time a mesh link (inbound or dialed) has to finish its handshake; a slower one is
    /// closed with 4408.
    pub mesh_handshake_timeout: Duration,
    /// Most inbound `/_mesh` sockets in their handshake at once, from all addresses; past
    /// it, the one that waited longest gives way (4408).
    pub mesh_preauth_total: usize,
    /// Most inbound `/_mesh` sockets in their handshake at once from one address (an IPv6
    /// address counts by its /64); past it, that address's oldest gives way (4408).
    pub mesh_preauth_per_address: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_rooms: DEFAULT_MAX_ROOMS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            outbound_queue: DEFAULT_OUTBOUND_QUEUE,
            outbound_queue_bytes: DEFAULT_OUTBOUND_QUEUE_BYTES,
            write_timeout: Duration::from_secs(DEFAULT_WRITE_TIMEOUT_S),
            header_timeout: Duration::from_secs(DEFAULT_HEADER_TIMEOUT_S),
            body_timeout: Duration::from_secs(DEFAULT_BODY_TIMEOUT_S),
            response_bytes: DEFAULT_RESPONSE_BYTES,
            max_half_open_per_address: DEFAULT_HALF_OPEN_PER_ADDRESS,
            max_connections_per_address: DEFAULT_CONNECTIONS_PER_ADDRESS,
            per_address_loopback: DEFAULT_PER_ADDRESS_LOOPBACK,
            message_rate: DEFAULT_MESSAGE_RATE,
            ping_interval: Duration::from_secs(DEFAULT_PING_INTERVAL_S),
            first_message_timeout: Duration::from_secs(DEFAULT_FIRST_MESSAGE_TIMEOUT_S),
            mesh_handshake_timeout: Duration::from_secs(DEFAULT_MESH_HANDSHAKE_TIMEOUT_S),
            mesh_preauth_total: DEFAULT_MESH_PREAUTH_TOTAL,
            mesh_preauth_per_address: DEFAULT_MESH_PREAUTH_PER_ADDRESS,
        }
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
            compact_log_count: DEFAULT_COMPACT_LOG_COUNT,
            compact_log_bytes: DEFAULT_COMPACT_LOG_BYTES,
            room_quota_bytes: quota(DEFAULT_ROOM_QUOTA_BYTES),
            node_quota_bytes: quota(DEFAULT_NODE_QUOTA_BYTES),
        }
    }
}

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
    /// `mesh_open`: every ymesh node is admitted without a person's approval.
    pub mesh_open: bool,
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
    /// Static token every client must present (`?token=` or `Authorization: Bearer`).
    pub token: Option<String>,
    /// Secret that signs user tokens (`userId:hex(HMAC-SHA256(secret, userId))`).
    pub shared_secret: Option<String>,
    /// Browser origins allowed besides the node's own, loopback ones and `tauri://localhost`.
    pub allowed_origins: Vec<String>,
    /// Host names a node bound to loopback answers besides loopback names and addresses.
    pub allowed_hosts: Vec<String>,
    /// How peers are found besides configuration: mDNS and the tailnet.
    pub discovery: Discovery,
    /// The libp2p transport (docs/p2p.md).
    pub p2p: crate::mesh::transport::P2pSettings,
    /// The listener's certificate chain and key: set, the node serves `https://` and
    /// `wss://` only.
    pub tls: Option<TlsFiles>,
    /// A CA certificate file (PEM) trusted besides the system's when this node dials
    /// `wss://` peers and `https://` nodes.
    pub tls_ca: Option<PathBuf>,
    /// Reverse proxies whose `X-Forwarded-For` / `Forwarded` headers name the client.
    pub trusted_proxies: Vec<crate::auth::proxy::IpNet>,
}

/// The PEM files of the listener's TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
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
            .field("mesh_open", &self.mesh_open)
            .field("idle_timeout", &self.idle_timeout)
            .field("pinned_rooms", &self.pinned_rooms)
            .field("limits", &self.limits)
            .field("admin_token", &self.admin_token.as_ref().map(|_| REDACTED))
            .field("token", &self.token.as_ref().map(|_| REDACTED))
            .field(
                "shared_secret",
                &self.shared_secret.as_ref().map(|_| REDACTED),
            )
            .field("allowed_origins", &self.allowed_origins)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("tls", &self.tls)
            .field("tls_ca", &self.tls_ca)
            .field("trusted_proxies", &self.trusted_proxies)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: DEFAULT_HOST.to_string(),
            port: DEFAULT_PORT,
            log_format: LogFormat::default(),
            routes: DEFAULT_ROUTES.iter().map(|r| r.to_string()).collect(),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            memory: DEFAULT_MEMORY,
            store: StoreTuning::default(),
            peers: Vec::new(),
            mesh_secret: None,
            allow_peers: Vec::new(),
            mesh_open: DEFAULT_MESH_OPEN,
            idle_timeout: Duration::from_secs(DEFAULT_IDLE_TIMEOUT_S),
            pinned_rooms: HashSet::new(),
            tombstone_retention: tombstone_retention(DEFAULT_TOMBSTONE_DAYS),
            limits: Limits::default(),
            admin_token: None,
            token: None,
            shared_secret: None,
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            discovery: Discovery::default(),
            p2p: crate::mesh::transport::P2pSettings::default(),
            tls: None,
            tls_ca: None,
            trusted_proxies: Vec::new(),
        }
    }
}

/// `rooms.tombstone_days` as a duration.
pub(super) fn tombstone_retention(days: u64) -> Duration {
    Duration::from_secs(days.saturating_mul(86_400))
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
