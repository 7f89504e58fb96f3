//! The merge: defaults, then the file, then the command line and the environment
//! ([`Overrides`]), into one [`Config`] ([`Config::resolve`]). Precedence, highest first:
//! flag > environment variable > file > built-in default. Flags and environment variables
//! reach this module already merged by the command line parser (clap's `env = ...`), as one
//! [`Overrides`] value.
//!
//! Every value taken from the file is checked on the way (with the checks of
//! [`super::load`]) and reported at its `file:line:column`; a value given by flag or
//! environment is reported under its flag and variable names, read from the settings table.
//! Lists (`--peer`, `--allow-peer`) add to the file's instead of replacing it.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use super::load::{positive, validate_route, ConfigError, FileConfig};
use super::schema::{quota, tombstone_retention, Config, Discovery, LogFormat, TlsFiles};
use super::settings::given_by;
use crate::room::validate_room_name;

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
    /// `--mesh-open` (only `true` overrides).
    pub mesh_open: bool,
    /// `--admin-token` / `YMESH_ADMIN_TOKEN`.
    pub admin_token: Option<String>,
    /// `--token` / `YMESH_TOKEN`.
    pub token: Option<String>,
    /// `--shared-secret` / `SYNC_SHARED_SECRET`.
    pub shared_secret: Option<String>,
    /// `--mdns` (`Some(true)`) / `--no-mdns` (`Some(false)`).
    pub mdns: Option<bool>,
    /// `--p2p-listen` (added to the file's list).
    pub p2p_listen: Vec<String>,
    /// `--p2p-relay` (added to the file's list).
    pub p2p_relay: Vec<String>,
    /// `--p2p-relay-server` (only `true` overrides).
    pub p2p_relay_server: bool,
    /// `--tls-cert`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key`.
    pub tls_key: Option<PathBuf>,
    /// `--tls-ca` / `YMESH_TLS_CA`.
    pub tls_ca: Option<PathBuf>,
}

/// The libp2p keys (docs/p2p.md): each address checked; in a build without the `p2p`
/// feature any of them is refused, naming the feature.
fn resolve_p2p(
    file: &FileConfig,
    over: &Overrides,
    p: &mut crate::mesh::transport::P2pSettings,
) -> Result<(), ConfigError> {
    use crate::mesh::transport::P2pSettings;
    let missing = crate::mesh::proto::url::P2P_MISSING;
    let flag_err = |key: &str, message: String| ConfigError::Invalid {
        location: given_by(key),
        key: key.into(),
        message,
    };
    p.listen = p2p_list(
        file,
        "p2p_listen",
        &file.p2p_listen,
        &over.p2p_listen,
        P2pSettings::check_listen,
    )?;
    p.relays = p2p_list(
        file,
        "p2p_relay",
        &file.p2p_relay,
        &over.p2p_relay,
        P2pSettings::check_relay,
    )?;
    if let Some(v) = &file.p2p_relay_server {
        if *v.get_ref() && !cfg!(feature = "p2p") {
            return Err(file.invalid(v.span(), "p2p_relay_server", missing));
        }
        p.relay_server = *v.get_ref();
    }
    if over.p2p_relay_server {
        if !cfg!(feature = "p2p") {
            return Err(flag_err("p2p_relay_server", missing.into()));
        }
        p.relay_server = true;
    }
    let l = &mut p.relay_limits;
    l.max_reservations = file
        .p2p_relay_max_reservations
        .unwrap_or(l.max_reservations);
    l.max_circuits = file.p2p_relay_max_circuits.unwrap_or(l.max_circuits);
    l.circuit_bytes = file.p2p_relay_circuit_bytes.unwrap_or(l.circuit_bytes);
    l.circuit_duration_s = file
        .p2p_relay_circuit_duration_s
        .unwrap_or(l.circuit_duration_s);
    Ok(())
}

/// One list of libp2p addresses: the file's, then the flags', each checked by `check`.
fn p2p_list(
    file: &FileConfig,
    key: &str,
    from_file: &Option<Vec<toml::Spanned<String>>>,
    from_flags: &[String],
    check: fn(&str) -> Result<(), crate::mesh::PeerUrlError>,
) -> Result<Vec<String>, ConfigError> {
    let missing = crate::mesh::proto::url::P2P_MISSING;
    let flag_err = |message: String| ConfigError::Invalid {
        location: given_by(key),
        key: key.into(),
        message,
    };
    let mut out = Vec::new();
    for (i, v) in from_file.iter().flatten().enumerate() {
        let at = format!("{key}[{i}]");
        if !cfg!(feature = "p2p") {
            return Err(file.invalid(v.span(), &at, missing));
        }
        check(v.get_ref()).map_err(|e| file.invalid(v.span(), &at, e.reason))?;
        out.push(v.get_ref().clone());
    }
    for v in from_flags {
        if !cfg!(feature = "p2p") {
            return Err(flag_err(missing.into()));
        }
        check(v).map_err(|e| flag_err(e.to_string()))?;
        out.push(v.clone());
    }
    Ok(out)
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
        resolve_tls(file, over, &mut cfg)?;
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
        if let Some(m) = file.mesh_open {
            cfg.mesh_open = m;
        }
        if let Some(v) = &file.store.compact_log_count {
            cfg.store.compact_log_count = positive(file, v, "store.compact_log_count", 1)?;
        }
        if let Some(v) = &file.store.compact_log_bytes {
            cfg.store.compact_log_bytes = positive(file, v, "store.compact_log_bytes", 1)?;
        }
        if let Some(v) = &file.store.room_quota_bytes {
            cfg.store.room_quota_bytes = quota(*v.get_ref());
        }
        if let Some(v) = &file.store.node_quota_bytes {
            cfg.store.node_quota_bytes = quota(*v.get_ref());
        }
        if let Some(v) = &file.rooms.idle_timeout_s {
            cfg.idle_timeout = Duration::from_secs(*v.get_ref());
        }
        if let Some(v) = &file.rooms.tombstone_days {
            let days = positive(file, v, "rooms.tombstone_days", 1)?;
            cfg.tombstone_retention = tombstone_retention(days);
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
        if let Some(v) = &l.outbound_queue_bytes {
            cfg.limits.outbound_queue_bytes =
                positive(file, v, "limits.outbound_queue_bytes", 1024)? as usize;
        }
        if let Some(v) = &l.write_timeout_s {
            cfg.limits.write_timeout =
                Duration::from_secs(positive(file, v, "limits.write_timeout_s", 1)?);
        }
        if let Some(v) = &l.http_header_timeout_s {
            cfg.limits.header_timeout =
                Duration::from_secs(positive(file, v, "limits.http_header_timeout_s", 1)?);
        }
        if let Some(v) = &l.http_body_timeout_s {
            cfg.limits.body_timeout =
                Duration::from_secs(positive(file, v, "limits.http_body_timeout_s", 1)?);
        }
        if let Some(v) = &l.http_response_bytes {
            cfg.limits.response_bytes =
                positive(file, v, "limits.http_response_bytes", 1024)? as usize;
        }
        if let Some(v) = &l.max_half_open_per_address {
            cfg.limits.max_half_open_per_address =
                positive(file, v, "limits.max_half_open_per_address", 1)? as usize;
        }
        if let Some(v) = &l.max_connections_per_address {
            cfg.limits.max_connections_per_address = *v.get_ref() as usize;
        }
        if let Some(v) = l.per_address_loopback {
            cfg.limits.per_address_loopback = v;
        }
        if let Some(v) = &l.message_rate {
            cfg.limits.message_rate = *v.get_ref();
        }
        if let Some(v) = &l.ping_interval_s {
            cfg.limits.ping_interval =
                Duration::from_secs(positive(file, v, "limits.ping_interval_s", 1)?);
        }
        if let Some(v) = &l.first_message_timeout_s {
            cfg.limits.first_message_timeout =
                Duration::from_secs(positive(file, v, "limits.first_message_timeout_s", 1)?);
        }
        if let Some(v) = &l.mesh_handshake_timeout_s {
            cfg.limits.mesh_handshake_timeout =
                Duration::from_secs(positive(file, v, "limits.mesh_handshake_timeout_s", 1)?);
        }
        if let Some(v) = &l.mesh_preauth_total {
            cfg.limits.mesh_preauth_total =
                positive(file, v, "limits.mesh_preauth_total", 1)? as usize;
        }
        if let Some(v) = &l.mesh_preauth_per_address {
            cfg.limits.mesh_preauth_per_address =
                positive(file, v, "limits.mesh_preauth_per_address", 1)? as usize;
        }
        resolve_discovery(file, &mut cfg.discovery)?;
        resolve_p2p(file, over, &mut cfg.p2p)?;
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
        if over.mesh_open {
            cfg.mesh_open = true;
        }
        for (i, p) in file.peers.iter().flatten().enumerate() {
            let key = format!("peers[{i}]");
            crate::mesh::proto::url::check_peer_address(&p.get_ref().url)
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
            crate::mesh::proto::url::check_peer_address(url).map_err(|e| ConfigError::Invalid {
                location: given_by("peers"),
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
                    location: given_by("mesh_secret"),
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
                location: given_by("allow_peers"),
                key: "allow_peers".into(),
                message: e.to_string(),
            })?;
            cfg.allow_peers.push(id.clone());
        }
        cfg.admin_token = secret(file, &file.admin_token, &over.admin_token, "admin_token")?;
        cfg.token = secret(file, &file.token, &over.token, "token")?;
        cfg.shared_secret = secret(
            file,
            &file.shared_secret,
            &over.shared_secret,
            "shared_secret",
        )?;
        for (key, list, out) in [
            (
                "allowed_origins",
                &file.allowed_origins,
                &mut cfg.allowed_origins,
            ),
            ("allowed_hosts", &file.allowed_hosts, &mut cfg.allowed_hosts),
        ] {
            for (i, v) in list.iter().flatten().enumerate() {
                let checked = if key == "allowed_origins" {
                    crate::auth::origin::normalize_origin(v.get_ref())
                } else {
                    crate::auth::origin::normalize_host(v.get_ref())
                };
                let value =
                    checked.map_err(|e| file.invalid(v.span(), &format!("{key}[{i}]"), e))?;
                out.push(value);
            }
        }
        if cfg.host != "localhost" && cfg.host.parse::<std::net::IpAddr>().is_err() {
            let location = match (&over.host, &file.host) {
                (Some(_), _) => given_by("host"),
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

/// `tls_cert`, `tls_key` (both or neither), `tls_ca` and `trusted_proxies`. The files are
/// read when the node starts (and on reload), not here.
fn resolve_tls(file: &FileConfig, over: &Overrides, cfg: &mut Config) -> Result<(), ConfigError> {
    let path = |given: &Option<PathBuf>, in_file: &Option<toml::Spanned<String>>, key: &str| {
        if let Some(p) = given {
            if p.as_os_str().is_empty() {
                return Err(ConfigError::Invalid {
                    location: given_by(key),
                    key: key.into(),
                    message: "must not be empty".into(),
                });
            }
            return Ok(Some((p.clone(), None)));
        }
        match in_file {
            Some(v) if v.get_ref().is_empty() => {
                Err(file.invalid(v.span(), key, "must not be empty"))
            }
            Some(v) => Ok(Some((PathBuf::from(v.get_ref()), Some(v.span())))),
            None => Ok(None),
        }
    };
    let cert = path(&over.tls_cert, &file.tls_cert, "tls_cert")?;
    let key = path(&over.tls_key, &file.tls_key, "tls_key")?;
    cfg.tls = match (cert, key) {
        (Some((cert, _)), Some((key, _))) => Some(TlsFiles { cert, key }),
        (None, None) => None,
        (Some((_, span)), None) | (None, Some((_, span))) => {
            let (set, missing) = if file.tls_cert.is_some() || over.tls_cert.is_some() {
                ("tls_cert", "tls_key")
            } else {
                ("tls_key", "tls_cert")
            };
            let location = match span {
                Some(span) => file.location(span),
                None => given_by(set),
            };
            return Err(ConfigError::Invalid {
                location,
                key: set.into(),
                message: format!("needs {missing} too (TLS takes a certificate and its key)"),
            });
        }
    };
    cfg.tls_ca = path(&over.tls_ca, &file.tls_ca, "tls_ca")?.map(|(p, _)| p);
    for (i, v) in file.trusted_proxies.iter().flatten().enumerate() {
        let net = v
            .get_ref()
            .parse()
            .map_err(|e: String| file.invalid(v.span(), &format!("trusted_proxies[{i}]"), e))?;
        cfg.trusted_proxies.push(net);
    }
    Ok(())
}

/// A secret setting (token, secret): the flag or environment value over the file's, neither
/// may be empty.
fn secret(
    file: &FileConfig,
    from_file: &Option<toml::Spanned<String>>,
    given: &Option<String>,
    key: &str,
) -> Result<Option<String>, ConfigError> {
    if let Some(t) = given {
        if t.is_empty() {
            return Err(ConfigError::Invalid {
                location: given_by(key),
                key: key.into(),
                message: "must not be empty".into(),
            });
        }
        return Ok(Some(t.clone()));
    }
    match from_file {
        Some(t) if t.get_ref().is_empty() => Err(file.invalid(t.span(), key, "must not be empty")),
        Some(t) => Ok(Some(t.get_ref().clone())),
        None => Ok(None),
    }
}
