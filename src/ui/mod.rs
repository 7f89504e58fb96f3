//! The live status page at `GET /ui`, and what feeds it and the metrics: the page's assets
//! (embedded in the binary with `include_str!`, no build step, nothing from a CDN), the
//! node's [`NodeSource`] (the [`StatusSource`] that `GET /metrics` and the samples read),
//! the [`sampler_worker`] that fills the metrics' ring buffer for the page's charts and
//! counts the stored rooms, the feed's bounded room list (`rooms.rs`: totals and at most
//! [`ROOMS_SHOWN`] rows) and the node's addresses (`addresses.rs`: a wildcard listen
//! address expanded to the machine's interface addresses).
//!
//! The page is static: it holds no data and no secret, so it is served without a credential
//! (`crate::server`'s access layer still checks `Host` and `Origin`). Everything it shows
//! comes from the JSON feed `GET /ui/state`, which needs a client credential like every other
//! route when a client mode is on; the page asks for the token once and keeps it in
//! `sessionStorage` (gone when the tab closes), sending it as `Authorization: Bearer`. The
//! feed is polled every two seconds (an `EventSource` cannot send that header).
//!
//! Nothing here decides a state: peers' link states and per-room sync status come from the
//! mesh's own peer table (`Mesh::peer_rows`, the rows `GET /peers` and `ymesh status` show),
//! rooms from the registry and the store, counters from [`crate::metrics`].

mod addresses;
mod rooms;

use std::sync::{Arc, Weak};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::mesh::proto::RoomStatus;
use crate::mesh::Mesh;
use crate::metrics::{Metrics, NodeView, PeerView, StatusSource, SAMPLE_EVERY};
use crate::room::RoomRegistry;
use crate::store::Store;

pub use addresses::node_addresses;
pub use rooms::{summarize, RoomRow, RoomTotals, StoredRooms, ROOMS_SHOWN};

/// The page (`GET /ui`).
pub const INDEX_HTML: &str = include_str!("index.html");
/// Its script (`GET /ui/assets/app.js`).
pub const APP_JS: &str = include_str!("app.js");
/// Its style sheet (`GET /ui/assets/app.css`).
pub const APP_CSS: &str = include_str!("app.css");

/// The content security policy the page is served with: its own script, style and feed
/// only.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// An embedded asset by its path under `/ui/assets/`: content type and body.
pub fn asset(name: &str) -> Option<(&'static str, &'static str)> {
    match name {
        "app.js" => Some(("text/javascript; charset=utf-8", APP_JS)),
        "app.css" => Some(("text/css; charset=utf-8", APP_CSS)),
        _ => None,
    }
}

/// Paths served without a credential: the static page and its assets (no data in them).
pub fn is_public(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/assets/")
}

/// The node's state as the metrics read it: the mesh's peer table, the registry, the store.
#[derive(Debug)]
pub struct NodeSource {
    mesh: Weak<Mesh>,
    registry: Arc<RoomRegistry>,
    started: Instant,
}

impl NodeSource {
    /// A source over `mesh` (held weakly) and `registry`, for a node started at `started`.
    pub fn new(mesh: &Arc<Mesh>, registry: Arc<RoomRegistry>, started: Instant) -> Self {
        NodeSource {
            mesh: Arc::downgrade(mesh),
            registry,
            started,
        }
    }
}

impl StatusSource for NodeSource {
    fn view(&self) -> NodeView {
        let now = crate::mesh::runtime::now_ms();
        let peers = self
            .mesh
            .upgrade()
            .map(|m| m.peer_rows())
            .unwrap_or_default()
            .into_iter()
            .map(|(row, traffic)| {
                let mut v = PeerView {
                    node_id: row.node_id.clone(),
                    address: row.address.clone(),
                    state: row.state.name(),
                    transport: row.transport,
                    links_established: traffic.links_established(),
                    traffic: traffic.snapshot(),
                    ..PeerView::default()
                };
                let mut oldest: Option<u64> = None;
                for r in &row.rooms {
                    match r.status {
                        RoomStatus::Synced => v.rooms_synced += 1,
                        RoomStatus::Pending => {
                            v.rooms_pending += 1;
                            if let Some(since) = r.pending_since_ms {
                                oldest = Some(oldest.map_or(since, |o| o.min(since)));
                            }
                        }
                        RoomStatus::Unknown => v.rooms_unknown += 1,
                        RoomStatus::NotShared => v.rooms_not_shared += 1,
                    }
                }
                v.oldest_pending_s = oldest.map(|o| now.saturating_sub(o) / 1000);
                v
            })
            .collect();
        NodeView {
            uptime_s: self.started.elapsed().as_secs(),
            rooms_loaded: self.registry.len(),
            rooms_stored: None,
            store_bytes: self.registry.store().map(|s| s.total_bytes()),
            peers,
        }
    }
}

/// Stored rooms are counted once in this many samples (a store listing is not free).
const COUNT_STORED_EVERY: u64 = 15;

/// Takes a sample of the node every [`SAMPLE_EVERY`] into `metrics`' history, and counts the
/// stored rooms now and then (into `metrics` and `stored`, which the status feed reads),
/// until `shutdown`. Holds `source`, which `metrics` reaches only weakly, for as long as it
/// runs (the node's life).
pub async fn sampler_worker(
    metrics: Arc<Metrics>,
    store: Option<Arc<dyn Store>>,
    stored: Arc<StoredRooms>,
    source: Arc<dyn StatusSource>,
    shutdown: CancellationToken,
) {
    let _source = source;
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if n.is_multiple_of(COUNT_STORED_EVERY) {
            if let Some(store) = &store {
                match store.list().await {
                    Ok(rooms) => {
                        metrics.set_rooms_stored(rooms.len() as u64);
                        stored.refresh(rooms);
                    }
                    Err(e) => tracing::debug!(error = %e, "cannot count stored rooms"),
                }
            }
        }
        n += 1;
        metrics.sample(crate::mesh::runtime::now_ms());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metrics_know_every_link_state_of_the_mesh() {
        assert_eq!(
            crate::metrics::LINK_STATES,
            crate::mesh::proto::LinkState::NAMES
        );
    }

    #[test]
    fn only_the_static_page_is_public() {
        assert!(is_public("/ui"));
        assert!(is_public("/ui/assets/app.js"));
        assert!(!is_public("/ui/state"));
        assert!(!is_public("/uix"));
        assert!(!is_public("/metrics"));
        assert!(asset("app.js").is_some());
        assert!(asset("../mod.rs").is_none());
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for text in [INDEX_HTML, APP_JS, APP_CSS] {
            // The SVG namespace is a name, not a fetch.
            let text = text.replace("http://www.w3.org/2000/svg", "");
            assert!(!text.contains("http://"), "an absolute URL in an asset");
            assert!(!text.contains("https://"), "an absolute URL in an asset");
        }
        assert!(INDEX_HTML.contains("assets/app.js"));
    }
}
