//! The settings table ([`SETTINGS`]): every setting a node reads, once, with its mesh.toml
//! key, flag, environment variable, default and meaning. It is the single source of
//! docs/configuration.md's generated table ([`reference_markdown`]) and of mesh.toml's list of
//! keys and defaults (both checked by tests), of the names the merge uses when it reports a
//! value given by flag or environment ([`given_by`]), and of the feature a planned setting
//! waits for (none at present).
//!
//! The defaults the config layer owns are the constants of [`super::schema`], shown here as
//! their TOML text; the others are literals that a test checks against the built-in
//! defaults.

use super::schema::{
    DEFAULT_BODY_TIMEOUT_S_TOML, DEFAULT_COMPACT_LOG_BYTES_TOML, DEFAULT_COMPACT_LOG_COUNT_TOML,
    DEFAULT_CONNECTIONS_PER_ADDRESS_TOML, DEFAULT_DATA_DIR_TOML,
    DEFAULT_FIRST_MESSAGE_TIMEOUT_S_TOML, DEFAULT_HALF_OPEN_PER_ADDRESS_TOML,
    DEFAULT_HEADER_TIMEOUT_S_TOML, DEFAULT_HOST_TOML, DEFAULT_IDLE_TIMEOUT_S_TOML,
    DEFAULT_MAX_CONNECTIONS_TOML, DEFAULT_MAX_MESSAGE_BYTES_TOML, DEFAULT_MAX_ROOMS_TOML,
    DEFAULT_MEMORY_TOML, DEFAULT_MESH_HANDSHAKE_TIMEOUT_S_TOML, DEFAULT_MESH_OPEN_TOML,
    DEFAULT_MESH_PREAUTH_PER_ADDRESS_TOML, DEFAULT_MESH_PREAUTH_TOTAL_TOML,
    DEFAULT_MESSAGE_RATE_TOML, DEFAULT_NODE_QUOTA_BYTES_TOML, DEFAULT_OUTBOUND_QUEUE_BYTES_TOML,
    DEFAULT_OUTBOUND_QUEUE_TOML, DEFAULT_PER_ADDRESS_LOOPBACK_TOML, DEFAULT_PING_INTERVAL_S_TOML,
    DEFAULT_PORT_TOML, DEFAULT_RESPONSE_BYTES_TOML, DEFAULT_ROOM_QUOTA_BYTES_TOML,
    DEFAULT_TOMBSTONE_DAYS_TOML, DEFAULT_WRITE_TIMEOUT_S_TOML,
};

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

/// Where a value given on the command line or in the environment came from, for error
/// messages: the setting's flag and environment variable, as in `--host / HOST`.
pub(super) fn given_by(key: &str) -> String {
    let row = SETTINGS.iter().find(|s| s.key == key);
    match (row.and_then(|s| s.flag), row.and_then(|s| s.env)) {
        (Some(flag), Some(env)) => format!("{flag} / {env}"),
        (Some(name), None) | (None, Some(name)) => name.to_string(),
        (None, None) => key.to_string(),
    }
}

/// Every setting a node reads, in mesh.toml order.
pub const SETTINGS: &[SettingDoc] = &[
    setting("host", Some("--host"), Some("HOST"), DEFAULT_HOST_TOML, "Listen address: an IP address or `localhost`. `0.0.0.0` accepts connections from other hosts.", Available),
    setting("port", Some("--port"), Some("PORT"), DEFAULT_PORT_TOML, "Listen port. `0` picks a free port; the ready line shows it.", Available),
    setting("log_format", Some("--log-format"), None, "\"text\"", "`text` for people, `json` for one JSON object per line. `RUST_LOG` sets the level (default `info`).", Available),
    setting("routes", None, None, "[\"/rooms/{room}\", \"/sync/{room}\", \"/workspaces/{room}/sync\"]", "WebSocket route templates; each holds `{room}` once as a whole segment (e.g. `/sync/v1/{room}`). `GET`/`POST /rooms/{room}` stay the document API either way.", Available),
    setting("data_dir", Some("--data-dir"), Some("YMESH_DATA_DIR"), DEFAULT_DATA_DIR_TOML, "Directory of the durable store (SQLite, `ymesh.sqlite3`). One node per directory: a second node on it refuses to start.", Available),
    setting("memory", Some("--memory"), None, DEFAULT_MEMORY_TOML, "Run without a store: nothing survives a restart. The node says so loudly at start.", Available),
    setting("peers", Some("--peer"), None, "[]", "Peer nodes to dial: `--peer URL` (repeatable) or `[[peers]]` tables with `url`, an optional expected `node_id`, an optional `share` list of room names or `*`/`?` patterns (every room when absent; with a `node_id` it also applies to links that peer dials), and for a peer that is not a ymesh node (a plain y-websocket server) the `rooms` to replicate with it, one y-websocket connection each, with an optional `token` sent as `?token=`. A URL may be a room template such as `ws://desktop:3913/rooms/{id}`; ymesh peers are reached at its origin's `/_mesh`. A libp2p multiaddr ending in `/p2p/<node id>` (through a relay `…/p2p/<relay id>/p2p-circuit/p2p/<node id>`) is dialed over libp2p (docs/p2p.md).", Available),
    setting("mesh_secret", Some("--mesh-secret"), Some("YMESH_MESH_SECRET"), "", "Shared secret that admits peers to the mesh. Proven inside the encrypted channel with a PAKE (SPAKE2), so it is never sent and cannot be tested offline; use `ymesh secret` for a strong one. A peer admitted by nothing else waits as `pending` for `ymesh peer approve`.", Available),
    setting("allow_peers", Some("--allow-peer"), None, "[]", "Node ids admitted to the mesh without the secret (`--allow-peer ID`, repeatable).", Available),
    setting("mesh_open", Some("--mesh-open"), None, DEFAULT_MESH_OPEN_TOML, "Admit every ymesh node that reaches this one, without a secret or a person's approval (the behaviour before device approval). An explicit choice: the node warns when it listens beyond loopback.", Available),
    setting("token", Some("--token"), Some("YMESH_TOKEN"), "", "Static token every client must present, as `?token=` on the WebSocket URL or `Authorization: Bearer <token>`. Setting it (or `shared_secret`) turns client authentication on: every route but `GET /healthz` and the static status page `GET /ui` then needs a credential (docs/security.md).", Available),
    setting("shared_secret", Some("--shared-secret"), Some("SYNC_SHARED_SECRET"), "", "Secret that signs user tokens `userId:signature` (lowercase hex HMAC-SHA256 of the user id; `ymesh token --user ID` prints one), presented like `token`.", Available),
    setting("allowed_origins", None, None, "[]", "Browser origins (`https://app.example.com`) allowed besides the node's own origin, loopback origins and `tauri://localhost`; a request or WebSocket with any other `Origin` gets 403 / close 4403.", Available),
    setting("allowed_hosts", None, None, "[]", "Host names a node bound to a loopback address answers besides loopback names and addresses (DNS rebinding protection); others get 403.", Available),
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
    setting("p2p_listen", Some("--p2p-listen"), None, "[]", "libp2p listen multiaddrs (`--p2p-listen /ip4/0.0.0.0/tcp/4001`, repeatable; docs/p2p.md): mesh links over libp2p (TCP, Noise, Yamux), stream protocol `/ymesh/mesh/1`. Each address is logged as `p2p listening on <multiaddr>/p2p/<node id>`. Needs the `p2p` cargo feature (in the default build).", Available),
    setting("p2p_relay_server", Some("--p2p-relay-server"), None, "false", "Be a libp2p circuit relay v2 server (for a reachable node, e.g. in the cloud): nodes behind NAT reserve a slot here and are dialed through it; it forwards only ciphertext. Its listen addresses are announced as its external ones. Only nodes this node admits may reserve: `allow_peers`, approved, configured peers, nodes linked to it now (e.g. by the mesh secret), or anyone with `mesh_open` (docs/p2p.md).", Available),
    setting("p2p_relay", Some("--p2p-relay"), None, "[]", "Relays to reserve a slot on (`/ip4/ADDR/tcp/PORT/p2p/<relay id>`, repeatable): the node becomes reachable at `…/p2p/<relay id>/p2p-circuit/p2p/<node id>`, and links through it try DCUtR hole punching to go direct.", Available),
    setting("p2p_relay_max_reservations", None, None, "128", "Relay server: reservations held at once.", Available),
    setting("p2p_relay_max_circuits", None, None, "64", "Relay server: relayed connections at once.", Available),
    setting("p2p_relay_circuit_bytes", None, None, "1073741824", "Relay server: bytes one relayed connection may carry per direction; past it the connection ends (the peers redial and resync).", Available),
    setting("p2p_relay_circuit_duration_s", None, None, "3600", "Relay server: seconds one relayed connection may last; then it ends (the peers redial and resync, or have gone direct).", Available),
    setting("tls_cert", Some("--tls-cert"), None, "", "TLS certificate chain (PEM, leaf first). With `tls_key` the node serves `https://` and `wss://` on its port (rustls; TLS 1.2 and 1.3), and no plain HTTP. Both files are re-read on reload (SIGHUP, `POST /reload`), so a renewed certificate takes effect without a restart.", Available),
    setting("tls_key", Some("--tls-key"), None, "", "TLS private key (PEM: PKCS#8, PKCS#1 or SEC1) of `tls_cert`.", Available),
    setting("tls_ca", Some("--tls-ca"), Some("YMESH_TLS_CA"), "", "CA certificate file (PEM) trusted besides the system's trust store when this node dials `wss://` peers (and when `ymesh status --node https://...` and the other client commands connect). For peers with certificates from a private CA.", Available),
    setting("trusted_proxies", None, None, "[]", "Reverse proxies (addresses or CIDR ranges, `[\"127.0.0.1\", \"10.0.0.0/8\"]`) whose `X-Forwarded-For` (else `Forwarded`) header names the client: per-address limits, the loopback rule of admin routes and the logs then use the client's address. From any other peer the headers are ignored (docs/security.md).", Available),
    setting("store.compact_log_count", None, None, DEFAULT_COMPACT_LOG_COUNT_TOML, "Fold a room's update log into a snapshot once it holds this many updates and is at least half the snapshot's size (also done when an idle room is evicted).", Available),
    setting("store.compact_log_bytes", None, None, DEFAULT_COMPACT_LOG_BYTES_TOML, "Fold a room's update log into a snapshot once it holds this many bytes.", Available),
    setting("store.room_quota_bytes", None, None, DEFAULT_ROOM_QUOTA_BYTES_TOML, "Most logical bytes (snapshot + log) one room may store; `0` = no limit. An update that would pass it is refused: AUTH permission-denied with the reason, then close 4403 (HTTP 403). Existing data is untouched.", Available),
    setting("store.node_quota_bytes", None, None, DEFAULT_NODE_QUOTA_BYTES_TOML, "Most logical bytes all rooms together may store; `0` = no limit. Refused like the room quota.", Available),
    setting("rooms.idle_timeout_s", None, None, DEFAULT_IDLE_TIMEOUT_S_TOML, "Seconds a room with no client stays in memory before it is evicted.", Available),
    setting("rooms.pinned", None, None, "[]", "Rooms kept in memory for the node's whole life.", Available),
    setting("rooms.tombstone_days", None, None, DEFAULT_TOMBSTONE_DAYS_TOML, "Days a deleted room's tombstone is kept and sent to peers, so that a node offline for less than that cannot bring the room back. Keep it longer than any node stays offline; after it, a stale copy would return the room (with its old content: nothing is lost).", Available),
    setting("limits.max_message_bytes", None, None, DEFAULT_MAX_MESSAGE_BYTES_TOML, "Largest WebSocket message (bytes); larger ones close the connection with 1009.", Available),
    setting("limits.max_rooms", None, None, DEFAULT_MAX_ROOMS_TOML, "Most rooms in memory; one more closes the connection with 1013.", Available),
    setting("limits.max_connections", None, None, DEFAULT_MAX_CONNECTIONS_TOML, "Most WebSocket connections; one more is closed with 1013.", Available),
    setting("limits.outbound_queue", None, None, DEFAULT_OUTBOUND_QUEUE_TOML, "Messages queued per connection; a client that falls this far behind is closed with 4429 (a client that reconnects resyncs; y-websocket 3.1 treats 44xx as final unless the app reconnects, see docs/protocol.md). Kept beside `outbound_queue_bytes`: whichever is reached first closes the client.", Available),
    setting("limits.outbound_queue_bytes", None, None, DEFAULT_OUTBOUND_QUEUE_BYTES_TOML, "Bytes queued per client connection (peer links have their own 64 MiB bound). A frame is queued while the queue holds less than this, so one frame of any size fits; a client whose queue reaches it is closed with 4429 and resyncs when it reconnects.", Available),
    setting("limits.write_timeout_s", None, None, DEFAULT_WRITE_TIMEOUT_S_TOML, "Seconds a write may stay blocked because the other side does not read: a client is closed with 4429; an HTTP connection (a response nobody reads) is dropped 5 s later; a peer link ends (the peer redials and resyncs).", Available),
    setting("limits.http_header_timeout_s", None, None, DEFAULT_HEADER_TIMEOUT_S_TOML, "Seconds a connection has to send a request's headers from the moment it opens (and an idle keep-alive connection its next ones); a slower or silent one is dropped.", Available),
    setting("limits.http_body_timeout_s", None, None, DEFAULT_BODY_TIMEOUT_S_TOML, "Seconds a request has to send its whole body; a slower one is answered 408.", Available),
    setting("limits.http_response_bytes", None, None, DEFAULT_RESPONSE_BYTES_TOML, "Bytes of `GET /rooms/{room}` document responses being sent at once, node-wide; past it (one response of any size always fits) the next is answered 503 with `Retry-After`.", Available),
    setting("limits.max_half_open_per_address", None, None, DEFAULT_HALF_OPEN_PER_ADDRESS_TOML, "Connections from one address (IPv6 by its /64) that have not sent their first request's headers yet; more are dropped as they are accepted.", Available),
    setting("limits.max_connections_per_address", None, None, DEFAULT_CONNECTIONS_PER_ADDRESS_TOML, "WebSocket connections from one address (IPv6 by its /64); one more is closed with 4429. `0` = no limit.", Available),
    setting("limits.per_address_loopback", None, None, DEFAULT_PER_ADDRESS_LOOPBACK_TOML, "Apply the per-address limits (`max_half_open_per_address`, `max_connections_per_address`) to loopback addresses too. Off: a reverse proxy on the same host is not one client.", Available),
    setting("limits.message_rate", None, None, DEFAULT_MESSAGE_RATE_TOML, "Messages per second one WebSocket connection may send on average, in bursts of up to one second's worth; a faster one is closed with 4429. `0` = no limit.", Available),
    setting("limits.ping_interval_s", None, None, DEFAULT_PING_INTERVAL_S_TOML, "Seconds between WebSocket pings; a client that sent nothing since the previous ping is closed with 4408.", Available),
    setting("limits.first_message_timeout_s", None, None, DEFAULT_FIRST_MESSAGE_TIMEOUT_S_TOML, "Seconds a new client connection has to send its first message; a silent one is closed with 4408.", Available),
    setting("limits.mesh_handshake_timeout_s", None, None, DEFAULT_MESH_HANDSHAKE_TIMEOUT_S_TOML, "Seconds a mesh link (inbound or dialed) has to finish its handshake; a slower one is closed with 4408. A handshake takes two round trips: milliseconds on a LAN, well under a second over a relayed tailnet path.", Available),
    setting("limits.mesh_preauth_total", None, None, DEFAULT_MESH_PREAUTH_TOTAL_TOML, "Most inbound `/_mesh` sockets still in their handshake at once, from all addresses (established links do not count; docs/security.md). A new one is always taken; past this, the one that waited longest gives way with 4408, sockets that sent nothing yet first.", Available),
    setting("limits.mesh_preauth_per_address", None, None, DEFAULT_MESH_PREAUTH_PER_ADDRESS_TOML, "Most inbound `/_mesh` sockets still in their handshake at once from one address (IPv6 by its /64); past this, that address's oldest gives way with 4408, so one address's flood churns only its own sockets.", Available),
];

/// The settings reference as Markdown (the generated part of docs/configuration.md).
pub fn reference_markdown() -> String {
    let mut out = String::from(
        "| key | flag | env | default | status | on reload | meaning |\n|---|---|---|---|---|---|---|\n",
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
        let reload = if super::reload::LIVE.contains(&s.key) {
            "applied"
        } else {
            "restart"
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} | {} |\n",
            s.key,
            code(s.flag),
            code(s.env),
            default,
            status,
            reload,
            s.description
        ));
    }
    out
}
