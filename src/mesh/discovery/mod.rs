//! Peer discovery: where the addresses of other ymesh nodes come from.
//!
//! This module owns finding peers, and nothing after that: it turns "something on the
//! network says a ymesh node is at this address" into [`DiscoveryEvent`]s. Dialing,
//! authenticating and supervising the peer stay with [`super::runtime`], which treats a
//! discovered address exactly like a `--peer URL` from the config. Keeping discovery a
//! separate producer of events means each source is tested on its own (no mesh, no rooms),
//! the runtime has one seam for every source, and a source that misbehaves can only
//! produce wrong addresses, which the handshake then refuses.
//!
//! | source | module | finds |
//! |---|---|---|
//! | [`DiscoverySource::Config`] | (the runtime) | peers named in `mesh.toml` / `--peer` |
//! | [`DiscoverySource::Mdns`] | [`mdns`] | nodes on the same LAN, by mDNS / DNS-SD |
//! | [`DiscoverySource::Tailnet`] | [`tailnet`] | nodes on the same tailnet, via the local tailscaled |
//!
//! # Contract of a source
//!
//! - It runs as one tokio task, started by its `spawn_*` function, and sends events into a
//!   bounded [`mpsc::Sender`](tokio::sync::mpsc::Sender): a slow consumer slows discovery
//!   down, it never makes it buffer without bound.
//! - It stops when its [`CancellationToken`](tokio_util::sync::CancellationToken) is
//!   cancelled, or when the receiver is dropped, and cleans up in bounded time (mDNS sends
//!   its goodbye).
//! - It reports each peer once: a repeated sighting of the same node at the same URL is not
//!   a new event ([`Dedup`]). A node seen at a new URL under the same key is reported as
//!   [`DiscoveryEvent::Lost`] for the old URL, then [`DiscoveryEvent::Found`] for the new
//!   one, so every `Found` is eventually matched by a `Lost` with the same URL (unless the
//!   source stops first: a stopping source does not send `Lost` for what it knew).
//! - It never announces or carries secrets: discovery is unauthenticated by nature, and
//!   admission is decided by the handshake.

pub mod mdns;
pub mod tailnet;

use std::collections::HashMap;
use std::net::IpAddr;

pub use mdns::{
    spawn_mdns, MdnsConfig, MdnsHandle, DEFAULT_EXCLUDE_INTERFACES, DEFAULT_SERVICE_TYPE,
};
pub use tailnet::{spawn_tailnet, TailnetConfig, TailnetHandle};

pub use crate::mesh::proto::DiscoverySource;

/// A peer some source found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    /// The peer's node id, when the source learned it (mDNS always does; the tailnet source
    /// does when the peer's `GET /` reports it). The handshake verifies it; until then it is
    /// only a claim.
    pub node_id: Option<String>,
    /// Base URL of the peer, `http://host:port` (IPv6 hosts in brackets), without a path.
    pub url: String,
    /// Which source found it.
    pub source: DiscoverySource,
}

/// What a discovery source reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryEvent {
    /// A peer appeared, or appeared at a new URL.
    Found(Discovered),
    /// A peer previously reported as found at `url` went away (mDNS goodbye or expiry,
    /// tailnet peer offline or no longer answering as ymesh).
    Lost {
        /// The node id it was found with, if any.
        node_id: Option<String>,
        /// The URL it was found at.
        url: String,
        /// Which source lost it.
        source: DiscoverySource,
    },
}

/// Why a discovery source could not start, or why one lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The configuration of a source is unusable.
    #[error("invalid discovery configuration: {0}")]
    Config(String),
    /// The mDNS daemon refused a request.
    #[error("mDNS: {0}")]
    Mdns(#[from] ::mdns_sd::Error),
    /// A required TXT key is missing from an mDNS announcement.
    #[error("mDNS announcement has no TXT key {key:?}")]
    MissingTxt {
        /// The key.
        key: &'static str,
    },
    /// A TXT value in an mDNS announcement does not parse.
    #[error("mDNS announcement has an invalid TXT value {key}={value:?}: {reason}")]
    InvalidTxt {
        /// The key.
        key: &'static str,
        /// The value as received (lossily decoded as UTF-8).
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// An HTTP request failed: not reached, timed out, or answered badly.
    #[error("{what}: {source}")]
    Net {
        /// What was asked, e.g. `tailscaled LocalAPI at /var/run/tailscale/tailscaled.sock`.
        what: String,
        /// The client's error.
        source: crate::net::NetError,
    },
    /// An answer is not what a ymesh node gives.
    #[error("bad HTTP response: {0}")]
    Http(String),
    /// An HTTP response has a status other than 200.
    #[error("HTTP status {status} from {what}")]
    HttpStatus {
        /// What was asked.
        what: String,
        /// The status code.
        status: u16,
    },
    /// A JSON document does not have the expected shape.
    #[error("{what}: invalid JSON: {source}")]
    Json {
        /// What was parsed.
        what: String,
        /// The underlying error.
        source: serde_json::Error,
    },
}

/// The base URL `http://host:port` of an address; IPv6 hosts are bracketed.
pub fn http_url(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("http://{v4}:{port}"),
        IpAddr::V6(v6) => format!("http://[{v6}]:{port}"),
    }
}

/// What [`Dedup`] last reported under a key: node id and URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The node id it was reported with.
    pub node_id: Option<String>,
    /// The URL it was reported with.
    pub url: String,
}

/// What [`Dedup::found`] decided about a sighting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sighting {
    /// Nothing was known under the key: report `Found`.
    New,
    /// The same node id and URL were already reported under the key: report nothing.
    Duplicate,
    /// Something else was reported under the key: report `Lost` for it, then `Found`.
    Replaced(Seen),
}

impl Sighting {
    /// Whether the sighting needs a `Found` event (it is new or replaces an older one).
    pub fn is_new(&self) -> bool {
        !matches!(self, Sighting::Duplicate)
    }
}

/// The de-duplication table of one source: what it has reported, by a source-specific key
/// (the mDNS instance full name, the tailnet node key).
///
/// mDNS resolves the same instance again and again (on every interface, on every TTL
/// refresh), and the tailnet source sees every peer on every poll; this table is what keeps
/// that to one `Found` per peer. It is plain data, free of I/O.
#[derive(Debug, Default, Clone)]
pub struct Dedup {
    by_key: HashMap<String, Seen>,
}

impl Dedup {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `key` was seen as `node_id` at `url`, and says whether that is news.
    pub fn found(&mut self, key: &str, node_id: Option<&str>, url: &str) -> Sighting {
        let seen = Seen {
            node_id: node_id.map(str::to_string),
            url: url.to_string(),
        };
        match self.by_key.insert(key.to_string(), seen.clone()) {
            None => Sighting::New,
            Some(old) if old == seen => Sighting::Duplicate,
            Some(old) => Sighting::Replaced(old),
        }
    }

    /// Forgets `key`, returning what had been reported under it (`None`: nothing was, so no
    /// `Lost` is due).
    pub fn lost(&mut self, key: &str) -> Option<Seen> {
        self.by_key.remove(key)
    }

    /// What is currently reported under `key`.
    pub fn get(&self, key: &str) -> Option<&Seen> {
        self.by_key.get(key)
    }

    /// Every key currently reported.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.by_key.keys().map(String::as_str)
    }

    /// How many keys are currently reported.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether nothing is currently reported.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// The events that report a sighting, per [`Dedup::found`]'s verdict: nothing for a
/// duplicate, `Found` for a new one, `Lost` (old) then `Found` (new) for a replacement.
pub(crate) fn events_for(sighting: Sighting, found: Discovered) -> Vec<DiscoveryEvent> {
    match sighting {
        Sighting::Duplicate => Vec::new(),
        Sighting::New => vec![DiscoveryEvent::Found(found)],
        Sighting::Replaced(old) => vec![
            DiscoveryEvent::Lost {
                node_id: old.node_id,
                url: old.url,
                source: found.source,
            },
            DiscoveryEvent::Found(found),
        ],
    }
}

/// Sends `event`, giving up when `cancel` fires first. Returns false when the source should
/// stop (cancelled, or the receiver is gone).
pub(crate) async fn send_event(
    tx: &tokio::sync::mpsc::Sender<DiscoveryEvent>,
    cancel: &tokio_util::sync::CancellationToken,
    event: DiscoveryEvent,
) -> bool {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => false,
        sent = tx.send(event) => sent.is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_names() {
        assert_eq!(DiscoverySource::Config.to_string(), "config");
        assert_eq!(DiscoverySource::Mdns.as_str(), "mdns");
        assert_eq!(DiscoverySource::Tailnet.to_string(), "tailnet");
    }

    #[test]
    fn urls_bracket_ipv6() {
        assert_eq!(
            http_url("192.168.1.5".parse().unwrap(), 3913),
            "http://192.168.1.5:3913"
        );
        assert_eq!(
            http_url("fd7a:115c:a1e0::1".parse().unwrap(), 80),
            "http://[fd7a:115c:a1e0::1]:80"
        );
    }

    #[test]
    fn dedup_reports_each_sighting_once() {
        let mut d = Dedup::new();
        assert_eq!(d.found("a", Some("n1"), "http://1.2.3.4:1"), Sighting::New);
        assert_eq!(
            d.found("a", Some("n1"), "http://1.2.3.4:1"),
            Sighting::Duplicate
        );
        assert!(!Sighting::Duplicate.is_new());
        // Same key, new URL: the old one is handed back so it can be reported lost.
        assert_eq!(
            d.found("a", Some("n1"), "http://1.2.3.5:1"),
            Sighting::Replaced(Seen {
                node_id: Some("n1".into()),
                url: "http://1.2.3.4:1".into()
            })
        );
        // A different key is independent, even with the same URL.
        assert!(d.found("b", None, "http://1.2.3.5:1").is_new());
        assert_eq!(d.len(), 2);
        assert_eq!(d.lost("a").map(|s| s.url), Some("http://1.2.3.5:1".into()));
        assert_eq!(d.lost("a"), None, "a second removal reports nothing");
        // After a loss the same sighting is new again.
        assert!(d.found("a", Some("n1"), "http://1.2.3.5:1").is_new());
    }

    #[test]
    fn a_replacement_is_lost_then_found() {
        let found = Discovered {
            node_id: Some("n".into()),
            url: "http://b:1".into(),
            source: DiscoverySource::Mdns,
        };
        assert!(events_for(Sighting::Duplicate, found.clone()).is_empty());
        assert_eq!(
            events_for(Sighting::New, found.clone()),
            vec![DiscoveryEvent::Found(found.clone())]
        );
        let old = Seen {
            node_id: Some("n".into()),
            url: "http://a:1".into(),
        };
        assert_eq!(
            events_for(Sighting::Replaced(old), found.clone()),
            vec![
                DiscoveryEvent::Lost {
                    node_id: Some("n".into()),
                    url: "http://a:1".into(),
                    source: DiscoverySource::Mdns
                },
                DiscoveryEvent::Found(found)
            ]
        );
    }
}
