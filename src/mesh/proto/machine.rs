//! [`MeshCore`]: one node's mesh decisions.
//!
//! It owns the peer table (configured, discovered and inbound rows with their link state,
//! backoff and per-room sync state), the live links (who dialed, what they share, their
//! manifests), the duplicate-link tie-break, the resync markers and the command flood. The
//! shell calls [`MeshCore::handle`] for each event and carries out the actions, and calls
//! [`MeshCore::fanout`] on the hot path for each room change.
//!
//! # Decisions
//!
//! - **Dial.** A configured peer is probed (`GET /`) then dialed at start; after a failed
//!   dial or a closed link it is dialed again after a jittered backoff. A discovered peer is
//!   dialed by the node with the lower id; the other waits [`CoreConfig::discovery_defer_ms`]
//!   for that link and dials only if it does not come. A peer reached through a link it
//!   dialed (`via_other`) is dialed again as soon as that link closes, not on a poll.
//! - **One link per pair.** When two links join the same two nodes, both nodes keep the
//!   same one: the link dialed by the lower node id; between two links dialed by the same
//!   node, the one with the smaller link tag (the same value at both ends of a connection).
//!   Each side decides from facts both sides know, so the order in which the links came up
//!   does not matter.
//! - **Resync.** At link-up each side announces its manifest and the rooms changed since the
//!   peer's change marker; rooms that differ get a SyncStep1 from each side. The marker moves
//!   to the store's position at link-up once the link lived [`CoreConfig::marker_settle_ms`].
//! - **Synced.** A room is synced with a peer once the initial exchange finished (digests
//!   agreed, or the peer's SyncStep2 arrived) and every change since was queued to it.
//! - **Split horizon.** A change goes to every link that shares its room except the one it
//!   came from ([`MeshCore::fanout`]); a change that changed nothing never reaches here.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::approval::{AdmissionPolicy, Approvals};
use super::backoff::{Backoff, BackoffConfig};
use super::flood::Flood;
use super::manifest::{PeerManifest, SharePolicy};
use super::peers::{LinkState, Origin, PeerSlot};
use super::pending::Gate;
use super::{Action, Event, LinkId, PeerConfig, PeerKey, Road};
use crate::mesh::wire::{Control, ManifestEntry};

/// Tuning of a [`MeshCore`]. `CoreConfig::new` gives the production values.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// This node's id.
    pub node_id: String,
    /// Peers to dial.
    pub peers: Vec<PeerConfig>,
    /// Redial backoff.
    pub backoff: BackoffConfig,
    /// How long the node with the higher id waits for a discovered peer to dial it first.
    pub discovery_defer_ms: u64,
    /// A link up this long has finished its initial exchange: the peer's change marker moves
    /// to where the store was when the link came up.
    pub marker_settle_ms: u64,
    /// Most peers taken from discovery at once (anything on the network can announce
    /// itself).
    pub max_discovered: usize,
    /// Seed of the generator that jitters backoff delays.
    pub seed: u64,
    /// Who is admitted without a person's approval (the secret itself stays in the shell).
    pub admission: AdmissionPolicy,
    /// Approvals and denials as persisted.
    pub approvals: Approvals,
    /// Most links held as pending at once; past it the oldest is refused.
    pub max_pending: usize,
}

impl CoreConfig {
    /// Production values for node `node_id` dialing `peers`.
    pub fn new(node_id: impl Into<String>, peers: Vec<PeerConfig>, seed: u64) -> Self {
        CoreConfig {
            node_id: node_id.into(),
            peers,
            backoff: BackoffConfig::default(),
            discovery_defer_ms: 3_000,
            marker_settle_ms: 10_000,
            max_discovered: 256,
            seed,
            admission: AdmissionPolicy::default(),
            approvals: Approvals::default(),
            max_pending: 64,
        }
    }
}

/// What a link is.
#[derive(Debug)]
pub(super) enum Kind {
    /// A ymesh link: rooms by manifest.
    Mesh {
        manifest: PeerManifest,
        /// Our digests when the link opened (what the peer's manifest is compared with).
        ours: BTreeMap<String, String>,
    },
    /// One room with a plain y-websocket server.
    Plain { room: String },
}

/// A live link.
#[derive(Debug)]
pub(super) struct Link<H> {
    pub(super) peer: PeerKey,
    pub(super) node: String,
    outbound: bool,
    tag: Vec<u8>,
    pub(super) policy: SharePolicy,
    pub(super) kind: Kind,
    pub(super) handle: H,
    /// Closed by the core (a duplicate); gone from fan-out, waiting for its close.
    pub(super) closing: bool,
    /// `LinkOpened` arrived: the manifest went out, the marker is in use.
    opened: bool,
    up_ms: u64,
    marker: Option<u64>,
    store_now: Option<u64>,
}

/// One node's mesh state machine; see the module docs.
#[derive(Debug)]
pub struct MeshCore<H> {
    pub(super) cfg: CoreConfig,
    rng: u64,
    pub(super) peers: BTreeMap<PeerKey, PeerSlot>,
    pub(super) links: BTreeMap<LinkId, Link<H>>,
    /// Per peer node id: where the store was when this peer last had everything from us.
    markers: HashMap<String, u64>,
    flood: Flood,
    pub(super) next_discovered: u64,
    pub(super) started: bool,
    /// Verdicts, pending links, approvals.
    pub(super) gate: Gate,
    /// The rooms this node holds, as far as the core heard of them (at start, at link-up,
    /// and every room that changed since): each peer's row lists them all.
    pub(super) local_rooms: std::collections::BTreeSet<String>,
}

impl<H: Clone> MeshCore<H> {
    /// The core of node `cfg.node_id`; feed [`Event::Start`] to dial the configured peers.
    pub fn new(mut cfg: CoreConfig, now_ms: u64) -> Self {
        // A multiaddr names its node: that is the node the peer must prove, and what tells
        // the same node found by discovery from a stranger.
        for p in &mut cfg.peers {
            if p.node_id.is_none() && super::url::is_multiaddr(&p.url) {
                p.node_id = super::url::parse_multiaddr(&p.url, true)
                    .ok()
                    .map(|a| a.node_id);
            }
        }
        let mut peers = BTreeMap::new();
        for (i, p) in cfg.peers.iter().enumerate() {
            let mut slot = PeerSlot::new(p.url.clone(), Origin::Config, p.node_id.clone(), now_ms);
            slot.backoff = Backoff::new(cfg.backoff);
            peers.insert(PeerKey::Configured(i), slot);
        }
        MeshCore {
            gate: Gate::new(cfg.approvals.clone()),
            local_rooms: std::collections::BTreeSet::new(),
            rng: cfg.seed | 1,
            cfg,
            peers,
            links: BTreeMap::new(),
            markers: HashMap::new(),
            flood: Flood::default(),
            next_discovered: 0,
            started: false,
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.cfg.node_id
    }

    /// The configured peers.
    pub fn configured(&self) -> &[PeerConfig] {
        &self.cfg.peers
    }

    /// A uniform value in [0, 1) (xorshift64*).
    pub(super) fn random(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let x = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Handles one event at `now_ms`; returns what the shell must do, in order.
    pub fn handle(&mut self, event: Event<H>, now_ms: u64) -> Vec<Action<H>> {
        let mut out = Vec::new();
        match event {
            Event::Start => {
                if std::mem::replace(&mut self.started, true) {
                    return out;
                }
                let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
                for key in keys {
                    self.dial(key, now_ms, &mut out);
                }
            }
            Event::Discovered {
                node_id,
                url,
                source,
            } => self.on_found(node_id, url, source, now_ms, &mut out),
            Event::Lost { node_id, source } => self.on_lost(&node_id, source),
            Event::Timer(t) => self.on_timer(t, now_ms, &mut out),
            Event::Probed {
                peer,
                attempt,
                answer,
            } => self.on_probed(peer, attempt, answer, now_ms, &mut out),
            Event::DialFailed {
                peer,
                attempt,
                error,
            } => {
                if self.current(peer, attempt) {
                    tracing::debug!(peer = ?peer, error, "dial failed");
                    self.back_off(peer, None, error, now_ms, &mut out);
                }
            }
            Event::InboundOpened { link, remote } => {
                let mut slot = PeerSlot::new(remote, Origin::Inbound, None, now_ms);
                slot.set_state(LinkState::Handshaking, None, now_ms);
                self.peers.insert(PeerKey::Inbound(link), slot);
            }
            Event::DialOpened { peer, attempt } => self.on_dial_opened(peer, attempt, now_ms),
            Event::Authenticated {
                link,
                peer,
                node_id,
                secret,
            } => self.on_authenticated(link, peer, node_id, secret, now_ms, &mut out),
            Event::PeerPending { peer, reason, .. } => self.on_peer_pending(peer, reason, now_ms),
            Event::Approve { node_id } => self.approve(&node_id, now_ms, &mut out),
            Event::Deny { node_id } => self.deny(&node_id, &mut out),
            Event::Reconfigure {
                peers,
                admission,
                secret_changed,
            } => self.reconfigure(peers, admission, secret_changed, now_ms, &mut out),
            Event::Handshaken {
                link,
                peer,
                node_id,
                tag,
                handle,
                road,
            } => {
                self.unpend(link);
                self.on_handshaken(link, peer, node_id, tag, handle, road, now_ms, &mut out)
            }
            Event::HandshakeFailed { link, peer, end } => {
                self.unpend(link);
                self.gate.secrets.remove(&link);
                self.on_handshake_failed(link, peer, end, now_ms, &mut out)
            }
            Event::LinkOpened {
                link,
                ours,
                changed,
                marker,
                store_now,
            } => self.on_opened(link, ours, changed, marker, store_now, now_ms, &mut out),
            Event::Control { link, control } => self.on_control(link, control, now_ms, &mut out),
            Event::RoomSync { link, room, step2 } => {
                if let Some(slot) = self.links.get(&link).map(|l| l.peer) {
                    if let Some(p) = self.peers.get_mut(&slot) {
                        p.exchanged(&room, step2, now_ms);
                    }
                }
            }
            Event::LinkClosed { link, reason } => self.on_closed(link, reason, now_ms, &mut out),
            Event::PlainUp {
                link,
                peer,
                room,
                handle,
            } => {
                let Some(slot) = self.peers.get_mut(&peer) else {
                    return out;
                };
                slot.set_state(LinkState::Connected, None, now_ms);
                slot.node_id = None;
                slot.mark(&room, false);
                self.links.insert(
                    link,
                    Link {
                        peer,
                        node: slot.address.clone(),
                        outbound: true,
                        tag: Vec::new(),
                        policy: SharePolicy::List(vec![room.clone()]),
                        kind: Kind::Plain { room },
                        handle,
                        closing: false,
                        opened: true,
                        up_ms: now_ms,
                        marker: None,
                        store_now: None,
                    },
                );
            }
            Event::PlainEnded {
                peer,
                attempt,
                reason,
            } => {
                if self.current(peer, attempt) {
                    if let Some(slot) = self.peers.get_mut(&peer) {
                        slot.link_lost();
                    }
                    tracing::info!(peer = ?peer, reason, "peer link closed");
                    let uptime = self.uptime(peer, now_ms);
                    self.back_off(peer, Some(uptime), reason, now_ms, &mut out);
                }
            }
            Event::LocalRooms { rooms } => self.local_rooms.extend(rooms),
            Event::IssueCommand { command } => {
                if self.flood.accept(&command, None, now_ms) && Flood::travels(&command, now_ms) {
                    let links = self.links_for(command.room.as_deref(), None);
                    if !links.is_empty() {
                        out.push(Action::ForwardCommand {
                            links: links.into_iter().map(|(l, _)| l).collect(),
                            command,
                        });
                    }
                }
            }
        }
        out
    }

    /// Whether `attempt` is the current attempt of row `peer`.
    pub(super) fn current(&self, peer: PeerKey, attempt: u64) -> bool {
        self.peers.get(&peer).is_some_and(|p| p.attempt == attempt)
    }

    pub(super) fn uptime(&self, peer: PeerKey, now_ms: u64) -> u64 {
        self.peers
            .get(&peer)
            .map_or(0, |p| now_ms.saturating_sub(p.started_ms))
    }

    /// Whether row `key` has a live link of its own.
    pub(super) fn has_link(&self, key: PeerKey) -> bool {
        self.links.values().any(|l| !l.closing && l.peer == key)
    }

    /// Whether an admitted link to `node` is up.
    pub fn linked(&self, node: &str) -> bool {
        self.links.values().any(|l| !l.closing && l.node == node)
    }

    #[allow(clippy::too_many_arguments)]
    fn on_handshaken(
        &mut self,
        link: LinkId,
        peer: PeerKey,
        node: String,
        tag: Vec<u8>,
        handle: H,
        road: Road,
        now_ms: u64,
        out: &mut Vec<Action<H>>,
    ) {
        // Welcomed under the rules of that moment; a reload since may have changed them.
        if self.gate.secrets.contains_key(&link)
            && !matches!(
                self.verdict_again(link, peer, &node),
                super::approval::Verdict::Welcome(_)
            )
        {
            out.push(Action::Reject {
                link,
                reason: "no longer admitted after a configuration change".into(),
            });
            return;
        }
        let Some(slot) = self.peers.get_mut(&peer) else {
            out.push(Action::Reject {
                link,
                reason: "the peer is no longer in the peer table".into(),
            });
            return;
        };
        slot.node_id = Some(node.clone());
        self.forget_offline(&node, peer);
        if matches!(peer, PeerKey::Configured(_)) {
            self.configured_reached(&node, now_ms, out);
        }
        let outbound = peer.dials();
        // If both nodes dialed each other, keep exactly one link: both sides apply the same
        // rule to the same facts.
        let me = self.cfg.node_id.as_str();
        let preferred = if me < node.as_str() { me } else { &node };
        let dialer = |outbound: bool| if outbound { me } else { node.as_str() };
        let rank = |outbound: bool, tag: &[u8]| (dialer(outbound) != preferred, tag.to_vec());
        let existing = self
            .links
            .iter()
            .find(|(_, l)| !l.closing && l.node == node && matches!(l.kind, Kind::Mesh { .. }))
            .map(|(id, l)| (*id, rank(l.outbound, &l.tag)));
        if let Some((other, other_rank)) = existing {
            if rank(outbound, &tag) >= other_rank {
                tracing::debug!(peer = node, "duplicate link closed; the other one is kept");
                out.push(Action::Reject {
                    link,
                    reason: "duplicate link: the other one is kept".into(),
                });
                match peer {
                    PeerKey::Inbound(_) => {
                        self.peers.remove(&peer);
                    }
                    // A row whose own link is up stays as it is (a late dial of it lost).
                    _ if self.has_link(peer) => {}
                    _ => {
                        if let Some(slot) = self.peers.get_mut(&peer) {
                            slot.via_other = true;
                            slot.rooms.clear();
                            slot.set_state(
                                LinkState::Connected,
                                Some("linked through the connection the peer dialed".into()),
                                now_ms,
                            );
                        }
                    }
                }
                return;
            }
            if let Some(l) = self.links.get_mut(&other) {
                l.closing = true;
                out.push(Action::Close {
                    handle: l.handle.clone(),
                    reason: "duplicate link: the other one is kept".into(),
                });
                if let Some(s) = self.peers.get_mut(&l.peer) {
                    if l.peer.dials() {
                        s.via_other = true;
                        s.rooms.clear();
                        s.set_state(
                            LinkState::Connected,
                            Some("linked through the connection the peer dialed".into()),
                            now_ms,
                        );
                    }
                }
            }
        }
        let policy = self.policy_for(peer, &node);
        if let Some(slot) = self.peers.get_mut(&peer) {
            slot.set_state(LinkState::Connected, None, now_ms);
            slot.link_up();
            slot.road = road;
        }
        // Discovered rows of this node now reach it through this link.
        let rows: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(k, p)| {
                **k != peer
                    && matches!(p.origin, Origin::Found(_))
                    && p.node_id.as_deref() == Some(node.as_str())
            })
            .map(|(k, _)| *k)
            .collect();
        for k in rows {
            if let Some(p) = self.peers.get_mut(&k) {
                p.attempt += 1; // its pending timers are stale now
            }
            self.reached_via_other(k, now_ms);
        }
        tracing::info!(
            peer = node,
            transport = road.transport.as_str(),
            relayed = road.relayed,
            "peer link up"
        );
        out.push(Action::Admit {
            link,
            node: node.clone(),
            marker: self.markers.get(&node).copied(),
            policy: policy.clone(),
        });
        self.links.insert(
            link,
            Link {
                peer,
                node,
                outbound,
                tag,
                policy: policy.clone(),
                kind: Kind::Mesh {
                    manifest: PeerManifest::new(policy),
                    ours: BTreeMap::new(),
                },
                handle,
                closing: false,
                opened: false,
                up_ms: now_ms,
                marker: None,
                store_now: None,
            },
        );
    }

    /// The share policy of a link: a configured peer's own, or for any other link the
    /// policy of the configured peer with that node id; every room otherwise.
    pub(super) fn policy_for(&self, key: PeerKey, node: &str) -> SharePolicy {
        let configured = match key {
            PeerKey::Configured(i) => self.cfg.peers.get(i),
            _ => self
                .cfg
                .peers
                .iter()
                .find(|p| p.node_id.as_deref() == Some(node)),
        };
        configured.map(|p| p.share.clone()).unwrap_or_default()
    }

    #[allow(clippy::too_many_arguments)]
    fn on_opened(
        &mut self,
        link: LinkId,
        ours_all: BTreeMap<String, String>,
        changed: Vec<String>,
        marker: Option<u64>,
        store_now: Option<u64>,
        now_ms: u64,
        out: &mut Vec<Action<H>>,
    ) {
        self.local_rooms.extend(ours_all.keys().cloned());
        let Some(l) = self.links.get_mut(&link) else {
            return;
        };
        l.opened = true;
        l.up_ms = now_ms;
        l.marker = marker;
        l.store_now = store_now;
        let Kind::Mesh { manifest, ours } = &mut l.kind else {
            return;
        };
        for control in manifest.outgoing_manifest(&ours_all) {
            out.push(Action::Send { link, control });
        }
        // Rooms that changed here since the last link to this peer: announce them so the
        // peer asks for them (its SyncStep1 brings back our whole delete set).
        if marker.is_some() && !changed.is_empty() {
            let entries: Vec<ManifestEntry> = changed
                .iter()
                .filter_map(|name| {
                    ours_all.get(name).map(|d| ManifestEntry {
                        name: name.clone(),
                        digest: d.clone(),
                    })
                })
                .collect();
            if let Some(control) = manifest.outgoing_delta(entries) {
                out.push(Action::Send { link, control });
            }
        }
        *ours = ours_all;
        let policy = l.policy.clone();
        let commands: Vec<_> = self
            .flood
            .replay_for(link, now_ms)
            .into_iter()
            .filter(|c| c.room.as_deref().is_none_or(|r| policy.allows(r)))
            .collect();
        for command in commands {
            out.push(Action::ForwardCommand {
                links: vec![link],
                command,
            });
        }
    }

    fn on_control(
        &mut self,
        link: LinkId,
        control: Control,
        now_ms: u64,
        out: &mut Vec<Action<H>>,
    ) {
        let Some(l) = self.links.get_mut(&link) else {
            return;
        };
        if l.closing {
            return;
        }
        let peer_key = l.peer;
        let Kind::Mesh { manifest, ours } = &mut l.kind else {
            return;
        };
        match control {
            Control::Manifest { rooms, complete } => {
                let forced = BTreeSet::new();
                let Some(todo) = manifest.on_manifest(rooms, complete, ours, &forced) else {
                    return;
                };
                tracing::debug!(peer = l.node, rooms = todo.len(), "syncing rooms with peer");
                let pending: BTreeSet<&str> = todo.iter().map(|r| r.room.as_str()).collect();
                if let Some(slot) = self.peers.get_mut(&peer_key) {
                    for name in ours.keys().filter(|n| manifest.policy().allows(n)) {
                        if !pending.contains(name.as_str()) {
                            slot.mark(name, true);
                        }
                    }
                    for r in &todo {
                        slot.mark(&r.room, false);
                    }
                }
                let rooms: Vec<String> = todo.into_iter().map(|r| r.room).collect();
                if !rooms.is_empty() {
                    out.push(Action::SendStep1 { link, rooms });
                }
            }
            Control::Ack { rooms } => {
                if let Some(slot) = self.peers.get_mut(&peer_key) {
                    for (room, n) in rooms {
                        slot.acked(&room, n);
                    }
                }
            }
            Control::ManifestDelta { changed } => {
                let rooms: Vec<String> = manifest
                    .on_delta(changed)
                    .into_iter()
                    .map(|r| r.room)
                    .collect();
                if !rooms.is_empty() {
                    out.push(Action::SendStep1 { link, rooms });
                }
            }
            Control::Command {
                command,
                state_vector,
            } => {
                let policy = l.policy.clone();
                let peer = l.node.clone();
                if command.room.as_deref().is_some_and(|r| !policy.allows(r))
                    || !self.flood.accept(&command, Some(link), now_ms)
                {
                    return;
                }
                if Flood::travels(&command, now_ms) {
                    let links: Vec<LinkId> = self
                        .links_for(command.room.as_deref(), Some(link))
                        .into_iter()
                        .map(|(l, _)| l)
                        .collect();
                    if !links.is_empty() {
                        out.push(Action::ForwardCommand {
                            links,
                            command: command.clone(),
                        });
                    }
                }
                out.push(Action::DeliverCommand {
                    link,
                    peer,
                    policy,
                    command,
                    state_vector,
                });
            }
            Control::CommandResult { result } => out.push(Action::DeliverResult { link, result }),
            _ => {}
        }
    }

    fn on_closed(&mut self, link: LinkId, reason: String, now_ms: u64, out: &mut Vec<Action<H>>) {
        let secret = self.gate.secrets.remove(&link);
        let Some(l) = self.links.remove(&link) else {
            return;
        };
        let plain = matches!(l.kind, Kind::Plain { .. });
        if let Some(slot) = self.peers.get_mut(&l.peer) {
            slot.link_lost();
        }
        if l.opened && !plain {
            // The next link re-syncs what changed since this one came up, if it lived long
            // enough to finish its initial exchange; otherwise from the old marker again.
            let settled = now_ms.saturating_sub(l.up_ms) >= self.cfg.marker_settle_ms;
            let next = if settled {
                l.store_now.or(l.marker)
            } else {
                l.marker.or(l.store_now)
            };
            if let Some(next) = next {
                self.markers.insert(l.node.clone(), next);
                if Some(next) != l.marker {
                    out.push(Action::PersistMarker {
                        node: l.node.clone(),
                        marker: next,
                    });
                }
            }
        }
        if plain {
            // The plain peer's row moves on when all its rooms ended (PlainEnded).
            return;
        }
        if !l.closing {
            tracing::info!(peer = l.node, reason, "peer link down");
        }
        match l.peer {
            PeerKey::Inbound(_) => {
                self.inbound_gone(l.peer, &l.node, l.opened, secret, &reason, now_ms)
            }
            key => {
                let via_other = self.peers.get(&key).is_some_and(|p| p.via_other);
                if !via_other {
                    let gone = self.peers.get(&key).is_some_and(|p| p.gone);
                    if gone {
                        self.peers.remove(&key);
                    } else {
                        let uptime = now_ms.saturating_sub(l.up_ms);
                        self.back_off(key, Some(uptime), reason, now_ms, out);
                    }
                }
            }
        }
        if self.linked(&l.node) {
            return;
        }
        // Rows that reached this node through the closed link dial again now.
        let waiting: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(_, p)| p.via_other && p.node_id.as_deref() == Some(l.node.as_str()))
            .map(|(k, _)| *k)
            .collect();
        for key in waiting {
            let Some(p) = self.peers.get_mut(&key) else {
                continue;
            };
            if p.gone {
                self.peers.remove(&key);
                continue;
            }
            p.via_other = false;
            p.backoff.reset();
            if p.defer {
                p.set_state(LinkState::Connecting, None, now_ms);
                self.wait_for_dial(key, out);
            } else {
                self.dial(key, now_ms, out);
            }
        }
    }
}

impl<H> Link<H> {
    /// A ymesh link (plain room connections take no control messages).
    pub(super) fn is_mesh(&self) -> bool {
        matches!(self.kind, Kind::Mesh { .. })
    }
}

#[cfg(test)]
mod tests;
