//! LAN discovery by mDNS / DNS-SD (crate `mdns-sd`).
//!
//! Every node with mDNS on announces one service instance of type `_ymesh._tcp.local.`
//! (configurable) and browses for the same type. The announcement carries no secrets:
//!
//! | record | value |
//! |---|---|
//! | instance name | the node id ([`instance_name`]; shortened with a hash if longer than a DNS label) |
//! | host name | `ymesh-<16 hex of SHA-256(node id)>.local.` ([`host_name`]) |
//! | SRV port | the node's HTTP/WebSocket port |
//! | A / AAAA | `announce_addr` if set, else the addresses of the selected interfaces |
//! | TXT `node_id` | the node id |
//! | TXT `path` | the control channel path, `/_mesh` |
//! | TXT `version` | the mesh protocol version ([`crate::mesh::MESH_PROTOCOL_VERSION`]) |
//! | TXT `tls` | `1` when the node serves TLS only (peers dial it at `https://` / `wss://`); absent otherwise |
//!
//! Everything that can be decided without the network lives in pure parts that the unit
//! tests drive directly: TXT parsing ([`parse_txt`]), interface selection
//! ([`interface_selected`]), the choice of one URL among a peer's addresses ([`pick_url`]),
//! and [`Browser`], which turns resolved / removed instances into [`DiscoveryEvent`]s
//! (ignoring our own announcement and other protocol versions, de-duplicating repeated
//! resolutions). [`spawn_mdns`] is the thin shell around the `mdns-sd` daemon thread. Unit
//! tests never start the daemon: multicast must not leave a network namespace a test made.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use mdns_sd::{
    DaemonEvent, IfKind, IfPredicate, ServiceDaemon, ServiceEvent, ServiceInfo, TxtProperties,
};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, trace, warn};

use super::{events_for, http_url, send_event, Dedup, DiscoveryError, DiscoveryEvent};
use super::{Discovered, DiscoverySource};
use crate::mesh::proto::manifest::glob_match;

/// The default service type (`mdns_service`).
pub const DEFAULT_SERVICE_TYPE: &str = "_ymesh._tcp.local.";

/// Interfaces left out by default (`mdns_exclude_interfaces`): container bridges and the
/// tailnet interface, where the tailnet source is the better way to find peers.
pub const DEFAULT_EXCLUDE_INTERFACES: &[&str] = &["docker*", "tailscale*"];

/// TXT key holding the node id.
pub const TXT_NODE_ID: &str = "node_id";
/// TXT key holding the control channel path.
pub const TXT_PATH: &str = "path";
/// TXT key holding the mesh protocol version.
pub const TXT_VERSION: &str = "version";
/// TXT key present (`1`) when the node serves TLS only.
pub const TXT_TLS: &str = "tls";

/// Longest DNS label, in bytes (RFC 1035).
const MAX_LABEL: usize = 63;

/// How long each cleanup step (unregister, daemon shutdown) may take on stop.
const STOP_STEP: Duration = Duration::from_secs(1);

/// Pause before browsing again when the daemon dropped our browse channel.
const REBROWSE_PAUSE: Duration = Duration::from_secs(1);

/// Settings of the mDNS source (the `mdns_*` settings of `mesh.toml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdnsConfig {
    /// Service type announced and browsed (`mdns_service`, default
    /// [`DEFAULT_SERVICE_TYPE`]). Must end in `._tcp.local.`.
    pub service_type: String,
    /// Interfaces to use, as names or `*` / `?` globs (`mdns_interfaces`); empty means all.
    pub interfaces: Vec<String>,
    /// Interfaces never to use, as names or globs (`mdns_exclude_interfaces`, default
    /// [`DEFAULT_EXCLUDE_INTERFACES`]); wins over `interfaces`.
    pub exclude_interfaces: Vec<String>,
    /// The one address to announce (`mdns_announce_addr`); `None` announces the addresses
    /// of the selected interfaces and follows them as they change.
    pub announce_addr: Option<IpAddr>,
    /// The node's HTTP/WebSocket port, announced in the SRV record.
    pub port: u16,
    /// Our node id: announced, and used to ignore our own announcement.
    pub node_id: String,
    /// Path of the control channel, announced as TXT `path` (`/_mesh`).
    pub mesh_path: String,
    /// Mesh protocol version, announced as TXT `version`; peers announcing another one are
    /// ignored.
    pub protocol_version: u32,
    /// The node serves TLS only (`tls_cert`): announced as TXT `tls=1`.
    pub tls: bool,
}

impl MdnsConfig {
    /// The defaults for a node with id `node_id` listening on `port`.
    pub fn new(node_id: impl Into<String>, port: u16) -> Self {
        MdnsConfig {
            service_type: DEFAULT_SERVICE_TYPE.to_string(),
            interfaces: Vec::new(),
            exclude_interfaces: DEFAULT_EXCLUDE_INTERFACES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            announce_addr: None,
            port,
            node_id: node_id.into(),
            mesh_path: "/_mesh".to_string(),
            protocol_version: crate::mesh::MESH_PROTOCOL_VERSION,
            tls: false,
        }
    }

    /// Checks what the daemon would otherwise refuse later, or silently get wrong.
    pub fn validate(&self) -> Result<(), DiscoveryError> {
        let bad = |m: String| Err(DiscoveryError::Config(m));
        let ty = &self.service_type;
        let Some(name) = ty.strip_suffix("._tcp.local.") else {
            return bad(format!("mdns_service {ty:?} must end in \"._tcp.local.\""));
        };
        let Some(bare) = name.strip_prefix('_') else {
            return bad(format!("mdns_service {ty:?} must start with '_'"));
        };
        if bare.is_empty()
            || bare.len() > 15
            || bare.contains('.')
            || !bare.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            || !bare.chars().any(|c| c.is_ascii_alphabetic())
            || bare.starts_with('-')
            || bare.ends_with('-')
            || bare.contains("--")
        {
            return bad(format!(
                "mdns_service {ty:?}: the service name must be 1-15 letters, digits and \
                 single inner hyphens, with at least one letter (RFC 6335)"
            ));
        }
        if self.port == 0 {
            return bad("mDNS needs the real listening port, not 0".into());
        }
        if self.node_id.is_empty() || self.node_id.len() > 200 {
            return bad(format!("node id {:?} has a bad length", self.node_id));
        }
        if !self.mesh_path.starts_with('/') || self.mesh_path.len() > 200 {
            return bad(format!(
                "mesh path {:?} must start with '/' and be short",
                self.mesh_path
            ));
        }
        if let Some(addr) = self.announce_addr {
            if addr.is_unspecified() || addr.is_multicast() {
                return bad(format!(
                    "mdns_announce_addr {addr} is not a unicast address"
                ));
            }
        }
        Ok(())
    }
}

/// The instance name announced for `node_id`: the node id itself when it fits in one DNS
/// label (63 bytes; a libp2p peer id is 52), else its first 46 bytes, `-` and 16 hex digits
/// of its SHA-256, so distinct long ids stay distinct. The TXT record always carries the
/// full id.
pub fn instance_name(node_id: &str) -> String {
    if node_id.len() <= MAX_LABEL && !node_id.contains('.') {
        return node_id.to_string();
    }
    let mut cut = 46.min(node_id.len());
    while !node_id.is_char_boundary(cut) {
        cut -= 1;
    }
    let prefix = node_id[..cut].replace('.', "-");
    format!("{prefix}-{}", short_hash(node_id))
}

/// The host name of our address records: `ymesh-<16 hex of SHA-256(node id)>.local.`.
/// Derived from the node id so that two nodes never merge their address records, and
/// lower-case hex so it is a valid, case-insensitive DNS label whatever the id.
pub fn host_name(node_id: &str) -> String {
    format!("ymesh-{}.local.", short_hash(node_id))
}

fn short_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The TXT records we announce: node id, control channel path, protocol version, and
/// `tls=1` for a node that serves TLS only.
pub fn txt_records(cfg: &MdnsConfig) -> Vec<(&'static str, String)> {
    let mut records = vec![
        (TXT_NODE_ID, cfg.node_id.clone()),
        (TXT_PATH, cfg.mesh_path.clone()),
        (TXT_VERSION, cfg.protocol_version.to_string()),
    ];
    if cfg.tls {
        records.push((TXT_TLS, "1".to_string()));
    }
    records
}

/// What a peer's TXT records say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTxt {
    /// TXT `node_id`, checked to be a node id.
    pub node_id: String,
    /// TXT `path`; `/_mesh` when absent.
    pub path: String,
    /// TXT `version`.
    pub version: u32,
    /// TXT `tls` is `1`: dial it over TLS.
    pub tls: bool,
}

/// Parses a peer's TXT records. `node_id` and `version` are required; `path` defaults to
/// `/_mesh`. Keys are case-insensitive, as DNS-SD says.
pub fn parse_txt(txt: &TxtProperties) -> Result<PeerTxt, DiscoveryError> {
    fn value<'a>(
        txt: &'a TxtProperties,
        key: &'static str,
    ) -> Result<Option<&'a str>, DiscoveryError> {
        match txt.get_property_val(key) {
            None => Ok(None),
            Some(None) => Err(DiscoveryError::InvalidTxt {
                key,
                value: String::new(),
                reason: "the key has no value".into(),
            }),
            Some(Some(bytes)) => {
                std::str::from_utf8(bytes)
                    .map(Some)
                    .map_err(|_| DiscoveryError::InvalidTxt {
                        key,
                        value: String::from_utf8_lossy(bytes).into_owned(),
                        reason: "not UTF-8".into(),
                    })
            }
        }
    }
    let node_id =
        value(txt, TXT_NODE_ID)?.ok_or(DiscoveryError::MissingTxt { key: TXT_NODE_ID })?;
    crate::mesh::identity::parse_node_id(node_id).map_err(|e| DiscoveryError::InvalidTxt {
        key: TXT_NODE_ID,
        value: node_id.to_string(),
        reason: e.to_string(),
    })?;
    let version_text =
        value(txt, TXT_VERSION)?.ok_or(DiscoveryError::MissingTxt { key: TXT_VERSION })?;
    let version = version_text
        .trim()
        .parse::<u32>()
        .map_err(|e| DiscoveryError::InvalidTxt {
            key: TXT_VERSION,
            value: version_text.to_string(),
            reason: e.to_string(),
        })?;
    let path = match value(txt, TXT_PATH)? {
        None => "/_mesh".to_string(),
        Some(p) if p.starts_with('/') => p.to_string(),
        Some(p) => {
            return Err(DiscoveryError::InvalidTxt {
                key: TXT_PATH,
                value: p.to_string(),
                reason: "must start with '/'".into(),
            })
        }
    };
    let tls = value(txt, TXT_TLS)?.is_some_and(|v| v.trim() == "1");
    Ok(PeerTxt {
        node_id: node_id.to_string(),
        path,
        version,
        tls,
    })
}

/// Whether the interface named `name` is used: it matches `include` (or `include` is
/// empty) and matches nothing in `exclude`. Patterns are names or `*` / `?` globs
/// ([`glob_match`]), so `docker*` covers `docker0` and `dockerd-br`.
pub fn interface_selected(name: &str, include: &[String], exclude: &[String]) -> bool {
    let included = include.is_empty() || include.iter().any(|p| glob_match(p, name));
    included && !exclude.iter().any(|p| glob_match(p, name))
}

/// Preference of an address as a peer's URL; `None` for addresses never used.
fn address_rank(ip: IpAddr) -> Option<u8> {
    if ip.is_unspecified() || ip.is_multicast() {
        return None;
    }
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => Some(3),
        IpAddr::V4(v4) if v4.is_link_local() => Some(1),
        IpAddr::V4(_) => Some(0),
        IpAddr::V6(v6) if v6.is_loopback() => Some(4),
        // fe80::/10 needs a zone (`%eth0`) that a URL cannot carry portably.
        IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => None,
        IpAddr::V6(_) => Some(2),
    }
}

/// Chooses the URL of a peer announcing `addrs` on `port`: IPv4 before IPv6, routable
/// before link-local before loopback (IPv6 link-local is never used), lowest address on a
/// tie. A `previous` URL that is still one of the candidates is kept, so a peer whose
/// address set grows does not move. `https://` for a peer that serves TLS (`tls`). `None`
/// when no address is usable.
pub fn pick_url(
    addrs: impl IntoIterator<Item = IpAddr>,
    port: u16,
    previous: Option<&str>,
    tls: bool,
) -> Option<String> {
    let url_of = |ip: IpAddr| {
        let url = http_url(ip, port);
        if tls {
            url.replacen("http://", "https://", 1)
        } else {
            url
        }
    };
    let mut candidates: Vec<(u8, IpAddr)> = addrs
        .into_iter()
        .filter_map(|ip| address_rank(ip).map(|r| (r, ip)))
        .collect();
    candidates.sort();
    if let Some(prev) = previous {
        if candidates.iter().any(|&(_, ip)| url_of(ip) == prev) {
            return Some(prev.to_string());
        }
    }
    candidates.first().map(|&(_, ip)| url_of(ip))
}

/// The I/O-free core of the mDNS source: resolved and removed instances in, events out.
#[derive(Debug)]
pub struct Browser {
    own_node_id: String,
    own_fullname: String,
    version: u32,
    dedup: Dedup,
    /// Instances already warned about (bad TXT, other version), so a peer re-resolved every
    /// few seconds does not flood the log.
    warned: HashSet<String>,
}

impl Browser {
    /// A browser that ignores `own_fullname` / `own_node_id` and instances speaking another
    /// protocol `version` than ours.
    pub fn new(own_node_id: &str, own_fullname: &str, version: u32) -> Self {
        Browser {
            own_node_id: own_node_id.to_string(),
            own_fullname: own_fullname.to_ascii_lowercase(),
            version,
            dedup: Dedup::new(),
            warned: HashSet::new(),
        }
    }

    /// An instance `fullname` resolved with these TXT records, addresses and port.
    pub fn on_resolved(
        &mut self,
        fullname: &str,
        txt: &TxtProperties,
        addrs: impl IntoIterator<Item = IpAddr>,
        port: u16,
    ) -> Vec<DiscoveryEvent> {
        let key = fullname.to_ascii_lowercase();
        if key == self.own_fullname {
            return Vec::new();
        }
        let peer = match parse_txt(txt) {
            Ok(peer) => peer,
            Err(e) => {
                if self.warned.insert(key.clone()) {
                    warn!(instance = fullname, "ignoring mDNS announcement: {e}");
                }
                return self.on_removed(&key);
            }
        };
        if peer.node_id == self.own_node_id {
            trace!(instance = fullname, "ignoring our own mDNS announcement");
            return Vec::new();
        }
        if peer.version != self.version {
            if self.warned.insert(key.clone()) {
                warn!(
                    instance = fullname,
                    node_id = %peer.node_id,
                    "ignoring mDNS peer speaking mesh protocol version {} (ours is {})",
                    peer.version,
                    self.version
                );
            }
            return self.on_removed(&key);
        }
        let previous = self.dedup.get(&key).map(|s| s.url.clone());
        let Some(url) = pick_url(addrs, port, previous.as_deref(), peer.tls).filter(|_| port != 0)
        else {
            debug!(instance = fullname, "mDNS peer has no usable address yet");
            return Vec::new();
        };
        self.warned.remove(&key);
        let sighting = self.dedup.found(&key, Some(&peer.node_id), &url);
        if sighting.is_new() {
            info!(node_id = %peer.node_id, %url, "found mesh peer by mDNS");
        }
        events_for(
            sighting,
            Discovered {
                node_id: Some(peer.node_id),
                url,
                source: DiscoverySource::Mdns,
            },
        )
    }

    /// An instance `fullname` said goodbye or expired.
    pub fn on_removed(&mut self, fullname: &str) -> Vec<DiscoveryEvent> {
        let key = fullname.to_ascii_lowercase();
        match self.dedup.lost(&key) {
            None => Vec::new(),
            Some(seen) => {
                info!(node_id = ?seen.node_id, url = %seen.url, "mDNS peer went away");
                vec![DiscoveryEvent::Lost {
                    node_id: seen.node_id,
                    url: seen.url,
                    source: DiscoverySource::Mdns,
                }]
            }
        }
    }
}

/// A running mDNS source. Cancel its token to stop it, then [`join`](Self::join).
#[derive(Debug)]
pub struct MdnsHandle {
    fullname: String,
    task: JoinHandle<()>,
}

impl MdnsHandle {
    /// The full name of our announced instance, e.g. `12D3KooW…._ymesh._tcp.local.`.
    pub fn fullname(&self) -> &str {
        &self.fullname
    }

    /// Waits until the source has stopped: the goodbye is sent and the daemon is shut down
    /// (each step bounded to about a second).
    pub async fn join(self) {
        if let Err(e) = self.task.await {
            warn!("mDNS task ended abnormally: {e}");
        }
    }
}

/// Starts the mDNS source: announces this node and browses for other nodes, sending
/// [`DiscoveryEvent`]s to `tx` until `cancel` fires (or `tx`'s receiver is dropped).
///
/// Must be called inside a tokio runtime. Fails when the configuration is invalid or the
/// `mdns-sd` daemon cannot be started; failures to open multicast sockets happen later in
/// the daemon thread and are logged.
pub fn spawn_mdns(
    cfg: MdnsConfig,
    tx: mpsc::Sender<DiscoveryEvent>,
    cancel: CancellationToken,
) -> Result<MdnsHandle, DiscoveryError> {
    cfg.validate()?;
    let daemon = ServiceDaemon::new()?;
    let started = start(&daemon, &cfg);
    let (fullname, events, monitor) = match started {
        Ok(ok) => ok,
        Err(e) => {
            let _ = daemon.shutdown();
            return Err(e);
        }
    };
    info!(
        service = %cfg.service_type,
        instance = %fullname,
        "mDNS discovery on (announcing and browsing)"
    );
    let browser = Browser::new(&cfg.node_id, &fullname, cfg.protocol_version);
    let task = tokio::spawn(mdns_worker(
        daemon,
        cfg.service_type,
        fullname.clone(),
        events,
        monitor,
        browser,
        tx,
        cancel,
    ));
    Ok(MdnsHandle { fullname, task })
}

type Started = (
    String,
    mdns_sd::Receiver<ServiceEvent>,
    mdns_sd::Receiver<DaemonEvent>,
);

/// Interface selection, registration and browsing on a fresh daemon.
fn start(daemon: &ServiceDaemon, cfg: &MdnsConfig) -> Result<Started, DiscoveryError> {
    let monitor = daemon.monitor()?;
    if !cfg.interfaces.is_empty() || !cfg.exclude_interfaces.is_empty() {
        let include = cfg.interfaces.clone();
        let exclude = cfg.exclude_interfaces.clone();
        daemon.disable_interface(IfKind::Predicate(IfPredicate::new(move |intf| {
            !interface_selected(&intf.name, &include, &exclude)
        })))?;
    }
    let txt = txt_records(cfg);
    let instance = instance_name(&cfg.node_id);
    let host = host_name(&cfg.node_id);
    let info = match cfg.announce_addr {
        Some(addr) => ServiceInfo::new(
            &cfg.service_type,
            &instance,
            &host,
            addr,
            cfg.port,
            &txt[..],
        )?,
        None => ServiceInfo::new(&cfg.service_type, &instance, &host, (), cfg.port, &txt[..])?
            .enable_addr_auto(),
    };
    let fullname = info.get_fullname().to_string();
    daemon.register(info)?;
    let events = daemon.browse(&cfg.service_type)?;
    Ok((fullname, events, monitor))
}

#[allow(clippy::too_many_arguments)]
async fn mdns_worker(
    daemon: ServiceDaemon,
    service_type: String,
    fullname: String,
    mut events: mdns_sd::Receiver<ServiceEvent>,
    monitor: mdns_sd::Receiver<DaemonEvent>,
    mut browser: Browser,
    tx: mpsc::Sender<DiscoveryEvent>,
    cancel: CancellationToken,
) {
    let mut monitor_open = true;
    'run: loop {
        let out = tokio::select! {
            biased;
            _ = cancel.cancelled() => break 'run,
            _ = tx.closed() => break 'run,
            ev = monitor.recv_async(), if monitor_open => {
                match ev {
                    Ok(DaemonEvent::Error(e)) => warn!("mDNS daemon: {e}"),
                    Ok(DaemonEvent::NameChange(c)) => {
                        info!("mDNS name conflict resolved: {c:?}")
                    }
                    Ok(other) => trace!("mDNS daemon event: {other:?}"),
                    Err(_) => monitor_open = false,
                }
                continue 'run;
            }
            ev = events.recv_async() => ev,
        };
        let out = match out {
            Ok(ServiceEvent::ServiceResolved(r)) => browser.on_resolved(
                &r.fullname,
                &r.txt_properties,
                r.addresses.iter().map(|a| a.to_ip_addr()),
                r.port,
            ),
            Ok(ServiceEvent::ServiceRemoved(_, name)) => browser.on_removed(&name),
            Ok(other) => {
                trace!("mDNS browse event: {other:?}");
                Vec::new()
            }
            Err(_) => {
                // The daemon drops a browse channel that fell too far behind.
                warn!("mDNS browse channel closed; browsing again");
                tokio::select! {
                    _ = cancel.cancelled() => break 'run,
                    _ = tokio::time::sleep(REBROWSE_PAUSE) => {}
                }
                match daemon.browse(&service_type) {
                    Ok(rx) => events = rx,
                    Err(e) => {
                        warn!("mDNS browsing stopped: {e}");
                        break 'run;
                    }
                }
                Vec::new()
            }
        };
        for event in out {
            if !send_event(&tx, &cancel, event).await {
                break 'run;
            }
        }
    }
    stop_daemon(&daemon, &fullname).await;
}

/// Unregisters our instance (the daemon sends the goodbye) and shuts the daemon down, each
/// step bounded by [`STOP_STEP`].
async fn stop_daemon(daemon: &ServiceDaemon, fullname: &str) {
    match daemon.unregister(fullname) {
        Ok(rx) => match tokio::time::timeout(STOP_STEP, rx.recv_async()).await {
            Ok(Ok(status)) => debug!("mDNS unregister: {status:?}"),
            Ok(Err(_)) => debug!("mDNS unregister: no answer"),
            Err(_) => warn!("mDNS unregister timed out"),
        },
        Err(e) => debug!("mDNS unregister: {e}"),
    }
    match daemon.shutdown() {
        Ok(rx) => match tokio::time::timeout(STOP_STEP, rx.recv_async()).await {
            Ok(_) => debug!("mDNS daemon stopped"),
            Err(_) => warn!("mDNS daemon shutdown timed out"),
        },
        Err(mdns_sd::Error::DaemonShutdown) => {}
        Err(e) => debug!("mDNS shutdown: {e}"),
    }
}

#[cfg(test)]
mod tests;
