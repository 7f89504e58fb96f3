//! Tailnet discovery through the local tailscaled's LocalAPI.
//!
//! Nodes on one tailnet rarely share a multicast domain, but the local tailscaled knows
//! every peer. Every `interval` this source asks it for `GET /localapi/v0/status` over its
//! Unix socket, keeps the peers that are online and match the configured tags or host name
//! patterns, and probes each one with `GET http://IP:port/`: only a peer whose answer is
//! ymesh's root document (`{"data": {"name": "ymesh", "node_id": ...}}`) is reported. The
//! probe is what makes a tag optional: on a small tailnet, probing every online peer on the
//! ymesh port is cheap and finds exactly the ymesh nodes. A peer that answers the plain
//! probe as a TLS server does ([`worth_https`]: a node serving TLS answers plain HTTP with
//! 400) is probed again with `GET https://NAME:port/` at its MagicDNS name, the name its
//! certificate is issued for (`tailscale cert`), and is reported at that `https://` URL.
//!
//! The parts that need no sockets are pure and unit-tested: the status document
//! ([`parse_status`]), the peer filter ([`select_peers`]), the probe answer
//! ([`parse_root`]) and [`Tracker`], which turns one poll's results into found / lost
//! events. [`spawn_tailnet`] is the loop around them; its requests go through the crate's
//! HTTP client ([`crate::net::Client`]), over the Unix socket for the LocalAPI and over TCP
//! for the probes.
//!
//! It was tested against a stand-in LocalAPI serving the documented status shape, not
//! against a live tailnet.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use serde::{Deserialize, Deserializer};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{
    events_for, http_url, send_event, Dedup, Discovered, DiscoveryError, DiscoveryEvent,
    DiscoverySource,
};
use crate::mesh::proto::manifest::glob_match;
use crate::net::{Client, Request};

/// Default path of tailscaled's LocalAPI socket on Linux (`tailnet_socket`).
pub const DEFAULT_SOCKET: &str = "/var/run/tailscale/tailscaled.sock";

/// The `Host` header tailscaled's LocalAPI expects.
pub const LOCALAPI_HOST: &str = "local-tailscaled.sock";

/// The status endpoint.
pub const STATUS_PATH: &str = "/localapi/v0/status";

/// Largest status document read (a tailnet with thousands of peers stays far below).
pub const MAX_STATUS_BYTES: usize = 16 * 1024 * 1024;

/// Largest probe answer read; a ymesh root document is a few hundred bytes.
const MAX_PROBE_BYTES: usize = 64 * 1024;

/// Time allowed for the whole LocalAPI request.
#[cfg(unix)]
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);

/// Time allowed for one probe, connect included.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Probes in flight at once.
const PROBE_CONCURRENCY: usize = 8;

/// Consecutive failed probes of an online peer before it is reported lost; one slow answer
/// does not drop a peer. A peer that goes offline is lost at once.
pub const LOST_AFTER_MISSES: u32 = 2;

/// Settings of the tailnet source (the `tailnet_*` settings of `mesh.toml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailnetConfig {
    /// tailscaled's LocalAPI socket (`tailnet_socket`, default [`DEFAULT_SOCKET`]).
    pub socket: PathBuf,
    /// Keep peers carrying any of these ACL tags (`tailnet_tags`), e.g. `tag:ymesh`; a tag
    /// given without the `tag:` prefix gets it.
    pub tags: Vec<String>,
    /// Keep peers whose host name (or first MagicDNS label) matches any of these `*` / `?`
    /// globs, case-insensitively (`tailnet_hostnames`).
    pub hostnames: Vec<String>,
    /// Port probed and dialed on each peer (`tailnet_port`, default 3913).
    pub port: u16,
    /// Time between polls (`tailnet_interval_s`, default 30 s).
    pub interval: Duration,
}

impl Default for TailnetConfig {
    fn default() -> Self {
        TailnetConfig {
            socket: PathBuf::from(DEFAULT_SOCKET),
            tags: Vec::new(),
            hostnames: Vec::new(),
            port: 3913,
            interval: Duration::from_secs(30),
        }
    }
}

impl TailnetConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), DiscoveryError> {
        let bad = |m: &str| Err(DiscoveryError::Config(m.to_string()));
        if self.port == 0 {
            return bad("tailnet_port must not be 0");
        }
        if self.interval < Duration::from_millis(10) {
            return bad("tailnet_interval_s must be positive");
        }
        if self.socket.as_os_str().is_empty() {
            return bad("tailnet_socket must not be empty");
        }
        if self
            .tags
            .iter()
            .chain(&self.hostnames)
            .any(|p| p.is_empty())
        {
            return bad("tailnet_tags and tailnet_hostnames must not hold empty entries");
        }
        Ok(())
    }
}

/// Deserializes `null` as the type's default (tailscaled writes `null` for empty lists).
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The parts of tailscaled's status document (`ipnstate.Status`) this source reads;
/// every other field is ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Status {
    /// `BackendState`, e.g. `Running`, `NeedsLogin`, `Stopped`.
    #[serde(rename = "BackendState", default, deserialize_with = "null_default")]
    pub backend_state: String,
    /// `Self`: this machine.
    #[serde(rename = "Self", default)]
    pub self_status: Option<PeerStatus>,
    /// `Peer`: every other machine, by node public key.
    #[serde(rename = "Peer", default, deserialize_with = "null_default")]
    pub peer: BTreeMap<String, PeerStatus>,
}

/// One machine in the status document (`ipnstate.PeerStatus`), the fields this source
/// reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PeerStatus {
    /// `HostName`: the machine's host name, as the machine reports it.
    #[serde(rename = "HostName", default, deserialize_with = "null_default")]
    pub host_name: String,
    /// `DNSName`: its MagicDNS name, e.g. `laptop.tail1234.ts.net.`.
    #[serde(rename = "DNSName", default, deserialize_with = "null_default")]
    pub dns_name: String,
    /// `TailscaleIPs`: its tailnet addresses (IPv4 and IPv6).
    #[serde(rename = "TailscaleIPs", default, deserialize_with = "null_default")]
    pub tailscale_ips: Vec<String>,
    /// `Online`: whether the coordination server sees it connected.
    #[serde(rename = "Online", default, deserialize_with = "null_default")]
    pub online: bool,
    /// `Tags`: its ACL tags, e.g. `tag:ymesh`.
    #[serde(rename = "Tags", default, deserialize_with = "null_default")]
    pub tags: Vec<String>,
}

impl PeerStatus {
    /// The address to reach it at: its first tailnet IPv4 address, else its first IPv6 one.
    pub fn preferred_ip(&self) -> Option<IpAddr> {
        let ips: Vec<IpAddr> = self
            .tailscale_ips
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect();
        ips.iter()
            .find(|ip| ip.is_ipv4())
            .or_else(|| ips.first())
            .copied()
    }
}

/// Parses a status document.
pub fn parse_status(body: &[u8]) -> Result<Status, DiscoveryError> {
    serde_json::from_slice(body).map_err(|source| DiscoveryError::Json {
        what: "tailscaled status".into(),
        source,
    })
}

/// Whether `peer` passes the tag / host name filter (with neither configured, every peer
/// does). Online-ness is checked by [`select_peers`].
pub fn peer_matches(peer: &PeerStatus, tags: &[String], hostnames: &[String]) -> bool {
    if tags.is_empty() && hostnames.is_empty() {
        return true;
    }
    let tag_hit = tags.iter().any(|want| {
        let want = if want.starts_with("tag:") {
            want.clone()
        } else {
            format!("tag:{want}")
        };
        peer.tags.contains(&want)
    });
    if tag_hit {
        return true;
    }
    let host = peer.host_name.to_ascii_lowercase();
    let dns_first = peer
        .dns_name
        .split('.')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let dns_full = peer.dns_name.trim_end_matches('.').to_ascii_lowercase();
    hostnames.iter().any(|pattern| {
        let p = pattern.to_ascii_lowercase();
        [&host, &dns_first, &dns_full]
            .iter()
            .any(|name| !name.is_empty() && glob_match(&p, name))
    })
}

/// A tailnet peer worth probing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Its key in the status document (the node public key); stable across polls.
    pub key: String,
    /// Its host name, for logs.
    pub host_name: String,
    /// The address probed ([`PeerStatus::preferred_ip`]).
    pub ip: IpAddr,
    /// Its MagicDNS name without the final dot (`desktop.tail1234.ts.net`), if it has one:
    /// where a node serving TLS is probed and dialed.
    pub dns_name: Option<String>,
}

/// The peers of `status` to probe: online, passing [`peer_matches`], with a tailnet
/// address. Ordered by key.
pub fn select_peers(status: &Status, tags: &[String], hostnames: &[String]) -> Vec<Candidate> {
    status
        .peer
        .iter()
        .filter(|(_, p)| p.online && peer_matches(p, tags, hostnames))
        .filter_map(|(key, p)| {
            p.preferred_ip().map(|ip| Candidate {
                key: key.clone(),
                host_name: p.host_name.clone(),
                ip,
                dns_name: Some(p.dns_name.trim_end_matches('.'))
                    .filter(|n| !n.is_empty())
                    .map(str::to_string),
            })
        })
        .collect()
}

/// Reads a probe answer: `Ok(node_id)` (the node id when the node reports one) if it is
/// ymesh's root document, an error saying why not otherwise.
pub fn parse_root(body: &[u8]) -> Result<Option<String>, DiscoveryError> {
    #[derive(Deserialize)]
    struct Root {
        data: RootData,
    }
    #[derive(Deserialize)]
    struct RootData {
        name: String,
        #[serde(default)]
        node_id: Option<String>,
    }
    let root: Root = serde_json::from_slice(body).map_err(|source| DiscoveryError::Json {
        what: "GET / answer".into(),
        source,
    })?;
    if root.data.name != "ymesh" {
        return Err(DiscoveryError::Http(format!(
            "GET / names {:?}, not ymesh",
            root.data.name
        )));
    }
    Ok(root.data.node_id.filter(|id| !id.is_empty()))
}

/// Asks tailscaled for its status over the LocalAPI socket. tailscaled on Windows listens on
/// a named pipe, which this source does not speak: there it always fails.
#[cfg(not(unix))]
pub async fn fetch_status(socket: &Path) -> Result<Status, DiscoveryError> {
    Err(DiscoveryError::Config(format!(
        "tailscaled LocalAPI at {}: tailnet discovery needs tailscaled's Unix socket \
         (Linux, macOS)",
        socket.display()
    )))
}

/// Asks tailscaled for its status over the LocalAPI socket.
#[cfg(unix)]
pub async fn fetch_status(socket: &Path) -> Result<Status, DiscoveryError> {
    let what = format!("tailscaled LocalAPI at {}", socket.display());
    let net = |source| DiscoveryError::Net {
        what: what.clone(),
        source,
    };
    let client = Client::unix(socket, LOCALAPI_HOST)
        .map_err(net)?
        .with_connect_timeout(STATUS_TIMEOUT)
        .with_timeout(STATUS_TIMEOUT)
        .with_max_body(MAX_STATUS_BYTES);
    let resp = client.send(Request::get(STATUS_PATH)).await.map_err(net)?;
    if resp.status != 200 {
        return Err(DiscoveryError::HttpStatus {
            what,
            status: resp.status,
        });
    }
    parse_status(&resp.body)
}

/// Probes `addr` with `GET /`: `Ok(node_id)` when a ymesh node answers.
pub async fn probe(addr: SocketAddr) -> Result<Option<String>, DiscoveryError> {
    probe_url(&http_url(addr.ip(), addr.port())).await
}

/// Probes the node at base URL `url` (`http://` or `https://`, the latter verified like any
/// `https://` peer): `Ok(node_id)` when it answers as ymesh.
pub async fn probe_url(url: &str) -> Result<Option<String>, DiscoveryError> {
    let what = format!("GET {url}/");
    let net = |source| DiscoveryError::Net {
        what: what.clone(),
        source,
    };
    let client = Client::new(url, None)
        .map_err(net)?
        .with_connect_timeout(PROBE_TIMEOUT)
        .with_timeout(PROBE_TIMEOUT)
        .with_max_body(MAX_PROBE_BYTES);
    let resp = client.send(Request::get("/")).await.map_err(net)?;
    if resp.status != 200 {
        return Err(DiscoveryError::HttpStatus {
            what,
            status: resp.status,
        });
    }
    parse_root(&resp.body)
}

/// Whether a failed plain probe is worth asking again over TLS: the port answered as a TLS
/// server does to plain HTTP (a ymesh node serving TLS answers 400; another TLS server
/// breaks the exchange). Not silence, a refused connection, another status or an HTTP
/// server that is simply not ymesh: those are not probed again.
pub fn worth_https(e: &DiscoveryError) -> bool {
    match e {
        DiscoveryError::Net { source, .. } => {
            use crate::net::NetError;
            matches!(
                source,
                NetError::Exchange { .. } | NetError::Status { status: 400, .. }
            )
        }
        DiscoveryError::HttpStatus { status, .. } => *status == 400,
        _ => false,
    }
}

/// Probes `c` on `port`: over plain HTTP at its tailnet address, then, when something
/// answered there but not as ymesh ([`worth_https`]), over TLS at its MagicDNS name.
pub async fn probe_candidate(c: &Candidate, port: u16) -> ProbeResult {
    let addr = SocketAddr::new(c.ip, port);
    let plain = match probe(addr).await {
        Ok(node_id) => {
            return ProbeResult::Ymesh {
                node_id,
                url: http_url(c.ip, port),
            }
        }
        Err(e) => e,
    };
    let Some(name) = c.dns_name.as_deref().filter(|_| worth_https(&plain)) else {
        debug!(peer = %c.host_name, %addr, "not a ymesh node: {plain}");
        return ProbeResult::NotYmesh;
    };
    let url = format!("https://{name}:{port}");
    match probe_url(&url).await {
        Ok(node_id) => ProbeResult::Ymesh { node_id, url },
        Err(e) => {
            debug!(peer = %c.host_name, %addr, "not a ymesh node: {plain}; over TLS: {e}");
            ProbeResult::NotYmesh
        }
    }
}

/// One poll's verdict on a candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    /// It answered as a ymesh node.
    Ymesh {
        /// The node id it reported, if any.
        node_id: Option<String>,
        /// Its base URL.
        url: String,
    },
    /// It did not answer, or not as ymesh.
    NotYmesh,
}

/// The I/O-free core of the tailnet source: what each poll found in, events out.
#[derive(Debug, Default)]
pub struct Tracker {
    dedup: Dedup,
    misses: HashMap<String, u32>,
}

impl Tracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// The results of one poll, by candidate key. A reported peer missing from `results`
    /// (offline, filtered out, gone from the tailnet) is lost at once; one that stopped
    /// answering as ymesh is lost after [`LOST_AFTER_MISSES`] polls in a row.
    pub fn on_poll(&mut self, results: &BTreeMap<String, ProbeResult>) -> Vec<DiscoveryEvent> {
        let mut events = Vec::new();
        let mut gone: Vec<String> = self
            .dedup
            .keys()
            .filter(|k| !results.contains_key(*k))
            .map(str::to_string)
            .collect();
        gone.sort();
        for key in gone {
            self.misses.remove(&key);
            events.extend(self.lose(&key));
        }
        for (key, result) in results {
            match result {
                ProbeResult::Ymesh { node_id, url } => {
                    self.misses.remove(key);
                    let sighting = self.dedup.found(key, node_id.as_deref(), url);
                    if sighting.is_new() {
                        info!(node_id = ?node_id, %url, "found mesh peer on the tailnet");
                    }
                    events.extend(events_for(
                        sighting,
                        Discovered {
                            node_id: node_id.clone(),
                            url: url.clone(),
                            source: DiscoverySource::Tailnet,
                        },
                    ));
                }
                ProbeResult::NotYmesh => {
                    if self.dedup.get(key).is_none() {
                        continue;
                    }
                    let misses = self.misses.entry(key.clone()).or_insert(0);
                    *misses += 1;
                    if *misses >= LOST_AFTER_MISSES {
                        self.misses.remove(key);
                        events.extend(self.lose(key));
                    }
                }
            }
        }
        events
    }

    fn lose(&mut self, key: &str) -> Option<DiscoveryEvent> {
        self.dedup.lost(key).map(|seen| {
            info!(node_id = ?seen.node_id, url = %seen.url, "tailnet mesh peer went away");
            DiscoveryEvent::Lost {
                node_id: seen.node_id,
                url: seen.url,
                source: DiscoverySource::Tailnet,
            }
        })
    }
}

/// A running tailnet source. Cancel its token to stop it, then [`join`](Self::join).
#[derive(Debug)]
pub struct TailnetHandle {
    task: JoinHandle<()>,
}

impl TailnetHandle {
    /// Waits until the source has stopped (at most one request timeout after cancelling).
    pub async fn join(self) {
        if let Err(e) = self.task.await {
            warn!("tailnet discovery task ended abnormally: {e}");
        }
    }
}

/// Starts the tailnet source: polls tailscaled every `cfg.interval` and sends
/// [`DiscoveryEvent`]s to `tx` until `cancel` fires (or `tx`'s receiver is dropped).
///
/// Must be called inside a tokio runtime. An unreachable tailscaled is not an error here:
/// the source logs it once and keeps polling, keeping what it had found.
pub fn spawn_tailnet(
    cfg: TailnetConfig,
    tx: mpsc::Sender<DiscoveryEvent>,
    cancel: CancellationToken,
) -> Result<TailnetHandle, DiscoveryError> {
    cfg.validate()?;
    info!(
        socket = %cfg.socket.display(),
        tags = ?cfg.tags,
        hostnames = ?cfg.hostnames,
        port = cfg.port,
        interval_s = cfg.interval.as_secs_f64(),
        "tailnet discovery on"
    );
    let task = tokio::spawn(tailnet_worker(cfg, tx, cancel));
    Ok(TailnetHandle { task })
}

async fn tailnet_worker(
    cfg: TailnetConfig,
    tx: mpsc::Sender<DiscoveryEvent>,
    cancel: CancellationToken,
) {
    let mut tracker = Tracker::new();
    let mut failing = false;
    'run: loop {
        let polled = tokio::select! {
            biased;
            _ = cancel.cancelled() => break 'run,
            _ = tx.closed() => break 'run,
            polled = poll_once(&cfg) => polled,
        };
        match polled {
            Ok(results) => {
                if failing {
                    info!("tailscaled LocalAPI answers again");
                    failing = false;
                }
                for event in tracker.on_poll(&results) {
                    if !send_event(&tx, &cancel, event).await {
                        break 'run;
                    }
                }
            }
            Err(e) if !failing => {
                warn!("tailnet discovery: {e}; keeping known peers and retrying");
                failing = true;
            }
            Err(e) => debug!("tailnet discovery: {e}"),
        }
        tokio::select! {
            _ = cancel.cancelled() => break 'run,
            _ = tokio::time::sleep(cfg.interval) => {}
        }
    }
    debug!("tailnet discovery stopped");
}

/// One poll: status, filter, probes.
async fn poll_once(cfg: &TailnetConfig) -> Result<BTreeMap<String, ProbeResult>, DiscoveryError> {
    let status = fetch_status(&cfg.socket).await?;
    if !status.backend_state.is_empty() && status.backend_state != "Running" {
        debug!(state = %status.backend_state, "tailscaled is not running a tailnet");
    }
    let candidates = select_peers(&status, &cfg.tags, &cfg.hostnames);
    let port = cfg.port;
    let results = stream::iter(candidates)
        .map(|c| async move {
            let result = probe_candidate(&c, port).await;
            (c.key, result)
        })
        .buffer_unordered(PROBE_CONCURRENCY)
        .collect::<BTreeMap<_, _>>()
        .await;
    Ok(results)
}

#[cfg(test)]
mod tests;
