//! The Prometheus side of the metrics home: the handles that hot paths bump, and the text
//! exposition of `GET /metrics`.
//!
//! Two kinds of metric end up in one scrape:
//!
//! - **handles** ([`Handles`]): `prometheus-client` counters, gauges and histograms kept in
//!   one [`Registry`] for the node's life. Every handle a hot path uses is resolved once,
//!   when the registry is built (client traffic per message type and direction, refusals
//!   and limit hits per kind, mesh handshake refusals per reason, command results per
//!   status) or when a connection opens (its route's gauge): bumping one is
//!   an atomic add (a histogram takes a short uncontended lock), never a label lookup;
//! - **views** ([`Scrape`]): values another layer already keeps (rooms in memory, each
//!   peer's link state and sync status, per-peer traffic, the store writer's counters), read
//!   once per scrape through [`super::StatusSource`] and encoded as constant metrics. Nothing
//!   is recomputed here: the peer table's own `state` and per-room `status` are what count.
//!
//! The exposition is OpenMetrics text (what `prometheus-client` writes), which Prometheus
//! scrapes as is; docs/operations.md lists every metric.

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::kinds::{Denial, Limit, MessageType, Refusal, ResultStatus};
use super::{LinkTrafficSnapshot, NodeCounters, NodeView, StoreCounts, TrafficCount};

/// Labels of one client traffic series.
type TrafficLabels = [(&'static str, &'static str); 2];
/// Labels of a series keyed by one name.
type OneLabel = [(&'static str, String); 1];

/// Messages and bytes of one type one way.
#[derive(Debug, Clone, Default)]
pub(crate) struct Pair {
    pub(crate) messages: Counter,
    pub(crate) bytes: Counter,
}

/// Every handle the hot paths bump, and the registry that holds them.
#[derive(Debug)]
pub(crate) struct Handles {
    pub(crate) registry: Registry,
    /// `[received, sent]`, each per [`MessageType`] slot.
    pub(crate) client: [Vec<Pair>; 2],
    pub(crate) updates_applied: Counter,
    pub(crate) awareness_updates: Counter,
    pub(crate) refused: Vec<Counter>,
    pub(crate) limits: Vec<Counter>,
    pub(crate) ack_seconds: Histogram,
    pub(crate) commands_issued: Counter,
    pub(crate) commands_delivered: Counter,
    /// Per [`ResultStatus`] slot.
    pub(crate) command_results: Vec<Counter>,
    /// Per [`Denial`] slot.
    pub(crate) denials: Vec<Counter>,
    pub(crate) client_open: Family<OneLabel, Gauge>,
    pub(crate) client_opened: Family<OneLabel, Counter>,
}

/// Buckets of latencies in seconds: 0.5 ms to about 16 s, doubling.
pub(crate) fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 16)
}

/// Buckets of batch sizes: 1 to 4096 appends, doubling.
pub(crate) fn batch_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(1.0, 2.0, 13)
}

impl Handles {
    pub(crate) fn new() -> Handles {
        let mut registry = Registry::default();
        let messages: Family<TrafficLabels, Counter> = Family::default();
        let bytes: Family<TrafficLabels, Counter> = Family::default();
        let client = ["in", "out"].map(|direction| {
            MessageType::ALL
                .iter()
                .map(|t| {
                    let labels = [("direction", direction), ("type", t.name())];
                    Pair {
                        messages: messages.get_or_create(&labels).clone(),
                        bytes: bytes.get_or_create(&labels).clone(),
                    }
                })
                .collect()
        });
        registry.register(
            "ymesh_client_messages",
            "Client WebSocket frames by direction (in, out) and y-websocket message type",
            messages,
        );
        registry.register(
            "ymesh_client_bytes",
            "Bytes of client WebSocket frames by direction and message type",
            bytes,
        );
        let updates_applied = Counter::default();
        registry.register(
            "ymesh_updates_applied",
            "Document changes applied (updates that changed a room, from clients, peers or the HTTP API)",
            updates_applied.clone(),
        );
        let awareness_updates = Counter::default();
        registry.register(
            "ymesh_awareness_updates",
            "Awareness updates that changed a room's presence",
            awareness_updates.clone(),
        );
        let refused_family: Family<[(&'static str, &'static str); 1], Counter> = Family::default();
        let refused = Refusal::ALL
            .iter()
            .map(|r| {
                refused_family
                    .get_or_create(&[("reason", r.name())])
                    .clone()
            })
            .collect();
        registry.register(
            "ymesh_refused",
            "Requests and connections refused before being served, by reason (auth, origin, host, limit)",
            refused_family,
        );
        let limit_family: Family<[(&'static str, &'static str); 1], Counter> = Family::default();
        let limits = Limit::ALL
            .iter()
            .map(|l| limit_family.get_or_create(&[("limit", l.name())]).clone())
            .collect();
        registry.register(
            "ymesh_limit_hits",
            "Connections and requests refused or closed by a limit (client, HTTP, peer links), by limit",
            limit_family,
        );
        let ack_seconds = Histogram::new(latency_buckets());
        registry.register(
            "ymesh_sync_status_ack_seconds",
            "Time from a client's SYNC_STATUS (102) to its echo, which waits until everything the client sent before it is on disk",
            ack_seconds.clone(),
        );
        let commands_issued = Counter::default();
        registry.register(
            "ymesh_commands_issued",
            "Maintenance commands issued on this node",
            commands_issued.clone(),
        );
        let commands_delivered = Counter::default();
        registry.register(
            "ymesh_commands_delivered",
            "Maintenance commands delivered to client sessions of this node (one per session)",
            commands_delivered.clone(),
        );
        let results_family: Family<[(&'static str, &'static str); 1], Counter> = Family::default();
        let command_results = ResultStatus::ALL
            .iter()
            .map(|r| {
                results_family
                    .get_or_create(&[("status", r.name())])
                    .clone()
            })
            .collect();
        registry.register(
            "ymesh_command_results",
            "Results of commands issued on this node, by status (ok, error, refused, unsupported as they arrive; timeout for each responder that did not answer by the deadline)",
            results_family,
        );
        let denial_family: Family<[(&'static str, &'static str); 1], Counter> = Family::default();
        let denials = Denial::ALL
            .iter()
            .map(|d| denial_family.get_or_create(&[("reason", d.name())]).clone())
            .collect();
        registry.register(
            "ymesh_mesh_handshakes_refused",
            "Mesh handshakes this node refused, by reason (version, node_id_mismatch, invalid_hello, not_admitted, protocol)",
            denial_family,
        );
        let client_open: Family<OneLabel, Gauge> = Family::default();
        registry.register(
            "ymesh_client_connections",
            "Client WebSocket connections open now, by route template",
            client_open.clone(),
        );
        let client_opened: Family<OneLabel, Counter> = Family::default();
        registry.register(
            "ymesh_client_connections_opened",
            "Client WebSocket connections accepted, by route template",
            client_opened.clone(),
        );
        Handles {
            registry,
            client,
            updates_applied,
            awareness_updates,
            refused,
            limits,
            ack_seconds,
            commands_issued,
            commands_delivered,
            command_results,
            denials,
            client_open,
            client_opened,
        }
    }
}

/// What one scrape reads from the other layers, encoded as constant metrics.
#[derive(Debug)]
pub(crate) struct Scrape {
    pub(crate) node: NodeCounters,
    pub(crate) store: Option<(StoreCounts, Histogram, Histogram)>,
    pub(crate) view: Option<NodeView>,
}

fn gauge<L: prometheus_client::encoding::EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(L, i64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, &format!("{help}."), None, MetricType::Gauge)?;
    for (labels, v) in series {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn counter<L: prometheus_client::encoding::EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(L, u64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, &format!("{help}."), None, MetricType::Counter)?;
    for (labels, v) in series {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

/// One unlabelled gauge.
fn gauge1(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: i64,
) -> Result<(), std::fmt::Error> {
    let m = enc.encode_descriptor(name, &format!("{help}."), None, MetricType::Gauge)?;
    ConstGauge::new(v).encode(m)
}

/// One unlabelled counter.
fn counter1(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let m = enc.encode_descriptor(name, &format!("{help}."), None, MetricType::Counter)?;
    ConstCounter::new(v).encode(m)
}

fn traffic_series(
    peer: &[(&'static str, String); 2],
    t: &LinkTrafficSnapshot,
    pick: fn(&TrafficCount) -> u64,
) -> Vec<([(&'static str, String); 4], u64)> {
    let mut out = Vec::with_capacity(8);
    for (direction, d) in [("out", &t.sent), ("in", &t.received)] {
        for (kind, c) in [
            ("control", &d.control),
            ("sync", &d.sync),
            ("awareness", &d.awareness),
            ("other", &d.other),
        ] {
            out.push((
                [
                    peer[0].clone(),
                    peer[1].clone(),
                    ("direction", direction.to_string()),
                    ("type", kind.to_string()),
                ],
                pick(c),
            ));
        }
    }
    out
}

impl prometheus_client::collector::Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        gauge(
            &mut enc,
            "ymesh_connections",
            "Connections open now by kind: client (WebSocket sessions) and peer (mesh links that are up)",
            &[
                ([("kind", "client")], self.node.connections as i64),
                (
                    [("kind", "peer")],
                    self.view.as_ref().map_or(0, |v| {
                        v.peers.iter().filter(|p| p.state == "connected").count() as i64
                    }),
                ),
            ],
        )?;
        counter1(
            &mut enc,
            "ymesh_quota_refusals",
            "Updates refused because they would pass a storage quota",
            self.node.quota_refusals,
        )?;
        if let Some(view) = &self.view {
            gauge1(
                &mut enc,
                "ymesh_uptime_seconds",
                "Seconds since the node started",
                view.uptime_s as i64,
            )?;
            gauge1(
                &mut enc,
                "ymesh_rooms_loaded",
                "Rooms in memory",
                view.rooms_loaded as i64,
            )?;
            if let Some(stored) = view.rooms_stored {
                gauge1(
                    &mut enc,
                    "ymesh_rooms_stored",
                    "Rooms in the store (counted every 30 s)",
                    stored as i64,
                )?;
            }
            if let Some(bytes) = view.store_bytes {
                gauge1(
                    &mut enc,
                    "ymesh_store_bytes",
                    "Logical bytes in the store (snapshots and update logs)",
                    bytes as i64,
                )?;
            }
            let mut up = Vec::new();
            let mut state = Vec::new();
            let mut rooms = Vec::new();
            let mut oldest = Vec::new();
            let mut links = Vec::new();
            let mut messages = Vec::new();
            let mut bytes = Vec::new();
            for p in &view.peers {
                // Every per-peer series carries the peer and its link's transport.
                let peer = [("peer", p.label()), ("transport", p.transport.to_string())];
                let with = |name: &'static str, value: &str| {
                    [peer[0].clone(), peer[1].clone(), (name, value.to_string())]
                };
                up.push((peer.clone(), i64::from(p.state == "connected")));
                for s in super::LINK_STATES {
                    state.push((with("state", s), i64::from(p.state == *s)));
                }
                for (status, n) in [
                    ("synced", p.rooms_synced),
                    ("pending", p.rooms_pending),
                    ("unknown", p.rooms_unknown),
                    ("not_shared", p.rooms_not_shared),
                ] {
                    rooms.push((with("status", status), n as i64));
                }
                if let Some(s) = p.oldest_pending_s {
                    oldest.push((peer.clone(), s as i64));
                }
                links.push((peer.clone(), p.links_established));
                messages.extend(traffic_series(&peer, &p.traffic, |c| c.messages));
                bytes.extend(traffic_series(&peer, &p.traffic, |c| c.bytes));
            }
            gauge(
                &mut enc,
                "ymesh_peer_up",
                "1 when the link to the peer is up (state connected), else 0",
                &up,
            )?;
            gauge(
                &mut enc,
                "ymesh_peer_state",
                "The peer link's state as GET /peers shows it: 1 for the current state, 0 for the others",
                &state,
            )?;
            gauge(
                &mut enc,
                "ymesh_peer_rooms",
                "Rooms of this node by where each stands with the peer (synced, pending, unknown, not_shared), as GET /peers counts them",
                &rooms,
            )?;
            gauge(
                &mut enc,
                "ymesh_peer_oldest_pending_seconds",
                "Age of the oldest change the peer has not acknowledged (only for peers with pending rooms)",
                &oldest,
            )?;
            counter(
                &mut enc,
                "ymesh_peer_links_established",
                "Links to the peer whose handshake finished in this run (reconnects are this minus one)",
                &links,
            )?;
            counter(
                &mut enc,
                "ymesh_peer_messages",
                "Mesh frames with the peer by direction and kind (control, sync, awareness, other)",
                &messages,
            )?;
            counter(
                &mut enc,
                "ymesh_peer_bytes",
                "Bytes of mesh frames with the peer by direction and kind",
                &bytes,
            )?;
        }
        if let Some((counts, latency, batch)) = &self.store {
            counter1(
                &mut enc,
                "ymesh_store_appends",
                "Appends committed to the store",
                counts.appends,
            )?;
            counter1(
                &mut enc,
                "ymesh_store_commits",
                "Store transactions committed (one per batch)",
                counts.commits,
            )?;
            counter1(
                &mut enc,
                "ymesh_store_failed_commits",
                "Store batches whose commit failed",
                counts.failed_commits,
            )?;
            counter1(
                &mut enc,
                "ymesh_store_compactions",
                "Room compactions (automatic and requested)",
                counts.compactions,
            )?;
            let m = enc.encode_descriptor(
                "ymesh_store_commit_seconds",
                "Time to commit one batch to disk (write and fsync), failed commits included.",
                None,
                latency.metric_type(),
            )?;
            latency.encode(m)?;
            let m = enc.encode_descriptor(
                "ymesh_store_commit_batch_size",
                "Appends per committed batch (group commit).",
                None,
                batch.metric_type(),
            )?;
            batch.encode(m)?;
        }
        Ok(())
    }
}

impl Scrape {
    /// The whole exposition: the handles, this scrape's views, and the end marker.
    pub(crate) fn encode_with(self, handles: &Handles) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let mut views = Registry::default();
        views.register_collector(Box::new(self));
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &handles.registry);
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &views);
        let _ = prometheus_client::encoding::text::encode_eof(&mut out);
        out
    }
}
