//! The peer table's rows: what each known peer is doing and how far each shared room is
//! synced with it. Pure data, owned by [`super::MeshCore`]; `GET /peers` shows it through
//! [`PeerRow`].

use std::collections::BTreeMap;

use serde::Serialize;

use super::approval::SecretCheck;
use super::backoff::Backoff;
use super::{DiscoverySource, Road, Transport};

/// What a peer link is doing, as `GET /peers` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum LinkState {
    /// Dialing (or about to).
    Connecting,
    /// The connection is open and the handshake is under way.
    Handshaking,
    /// The link is up and rooms flow.
    Connected,
    /// Waiting before the next dial.
    BackingOff {
        /// When the next dial happens (unix ms).
        next_retry_ms: u64,
    },
    /// The peer answered and one side refused the link (a denial, a node other than the one
    /// expected); the peer is still retried slowly.
    Refused {
        /// Why.
        reason: String,
        /// When the next dial happens (unix ms).
        next_retry_ms: u64,
    },
    /// The peer speaks another mesh protocol version; retried with backoff (one side must
    /// be upgraded).
    Incompatible {
        /// Both versions, as the refusal said.
        reason: String,
        /// When the next dial happens (unix ms).
        next_retry_ms: u64,
    },
    /// The address leads back to this node; it is not dialed again.
    IsSelf,
    /// The peer dialed this node and its link closed. This node has no address to dial it
    /// back, so the row waits for the peer to dial again; what changed meanwhile counts as
    /// missed by it.
    Offline,
    /// The secure channel is up and the peer proved its node id, but one side holds the
    /// link until a person approves the other (`ymesh peer approve`); it carries no room.
    Pending {
        /// Whose approval the link waits for.
        waiting_for: WaitingFor,
    },
}

impl LinkState {
    /// The `state` value `GET /peers` shows.
    pub fn name(&self) -> &'static str {
        match self {
            LinkState::Connecting => "connecting",
            LinkState::Handshaking => "handshaking",
            LinkState::Connected => "connected",
            LinkState::BackingOff { .. } => "backing_off",
            LinkState::Refused { .. } => "refused",
            LinkState::Incompatible { .. } => "incompatible",
            LinkState::IsSelf => "is_self",
            LinkState::Offline => "offline",
            LinkState::Pending { .. } => "pending",
        }
    }

    /// Every `state` value, for the documentation check.
    pub const NAMES: &'static [&'static str] = &[
        "connecting",
        "handshaking",
        "connected",
        "backing_off",
        "refused",
        "incompatible",
        "is_self",
        "pending",
        "offline",
    ];
}

/// Whose approval a pending link waits for.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WaitingFor {
    /// This node's operator: run `ymesh peer approve NODE_ID` here.
    ThisNode,
    /// The peer's operator, who must approve this node there.
    Peer,
}

/// One room with one peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RoomSync {
    /// The peer confirmed having everything of this room: the initial exchange on a link
    /// finished (digests agreed, or the peer's SyncStep2 arrived), or the room was new on a
    /// live link (the first change carried all of it).
    pub confirmed: bool,
    /// Changes queued to the live link since the confirmation: delivered in order while the
    /// link lives, unacknowledged if it drops.
    pub queued: u64,
    /// Changes the peer has not acknowledged: made while no link was up, or queued on a link
    /// that dropped.
    pub unacked: u64,
    /// When the oldest change counted in `queued` or `unacked` was made (unix ms).
    pub since_ms: Option<u64>,
    /// When a sync message for this room last crossed the link (unix ms; 0 = not yet).
    pub last_exchange_ms: u64,
}

impl RoomSync {
    /// The peer has everything of the room: confirmed, nothing outstanding.
    fn confirm(&mut self) {
        self.confirmed = true;
        self.queued = 0;
        self.unacked = 0;
        self.since_ms = None;
    }
}

/// Where one room stands with one peer, as `GET /peers` and `ymesh status` show it.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RoomStatus {
    /// The peer has every change of the room made here: it confirmed the room (the initial
    /// exchange of a link finished, or the room was new on a live link) and acknowledged
    /// every change since (`ack`); with no link up, nothing changed here since.
    Synced,
    /// The peer lacks changes made here (`unacked` counts them, `pending_since_ms` says
    /// since when), or the initial exchange on the live link has not finished.
    Pending,
    /// The share policy keeps this room from the peer; not counted.
    NotShared,
    /// No link to the peer yet in this run: nothing is known.
    Unknown,
}

impl RoomStatus {
    /// Every status value, for the documentation check.
    pub const NAMES: &'static [&'static str] = &["synced", "pending", "not_shared", "unknown"];
}

/// How a row came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Configured (`--peer`, `[[peers]]`).
    Config,
    /// The peer dialed this node.
    Inbound,
    /// Found by discovery.
    Found(DiscoverySource),
}

/// One row of the peer table.
#[derive(Debug)]
pub(crate) struct PeerSlot {
    /// Configured URL, discovered URL, or the remote address of an inbound link.
    pub address: String,
    pub origin: Origin,
    pub node_id: Option<String>,
    pub state: LinkState,
    pub since_ms: u64,
    pub last_error: Option<String>,
    pub last_error_ms: Option<u64>,
    pub rooms: BTreeMap<String, RoomSync>,
    /// A link of this row came up at least once in this run.
    pub ever_linked: bool,
    /// Dials so far; results and timers of older attempts are ignored.
    pub attempt: u64,
    pub backoff: Backoff,
    /// When the current attempt started.
    pub started_ms: u64,
    /// The peer is reached through a link it dialed (a duplicate of ours was closed, or a
    /// discovered peer dialed first): dial again once that link is gone.
    pub via_other: bool,
    /// A discovered peer with the lower node id: it dials; this node waits before dialing.
    pub defer: bool,
    /// Discovery lost it: drop the row once no link to it remains.
    pub gone: bool,
    /// The road of the row's latest link (before any: the one its address names).
    pub road: Road,
    /// What the mesh-secret check found on the link the peer last dialed in on (`None`:
    /// that link was never judged): what an offline row is judged by again when the rules
    /// change, as it has no link to judge.
    pub last_secret: Option<SecretCheck>,
}

impl PeerSlot {
    pub fn new(address: String, origin: Origin, node_id: Option<String>, now_ms: u64) -> Self {
        PeerSlot {
            origin,
            node_id,
            state: LinkState::Connecting,
            since_ms: now_ms,
            last_error: None,
            last_error_ms: None,
            rooms: BTreeMap::new(),
            ever_linked: false,
            attempt: 0,
            backoff: Backoff::default(),
            started_ms: now_ms,
            via_other: false,
            defer: false,
            gone: false,
            road: Road {
                transport: Transport::of_address(&address),
                relayed: super::url::is_multiaddr(&address) && address.contains("/p2p-circuit"),
            },
            address,
            last_secret: None,
        }
    }

    /// Moves to `state`; `error`, when given, becomes the last error (with its time). A
    /// link that comes up clears the last error. Returns whether the state's kind changed
    /// (the caller logs only then).
    pub fn set_state(&mut self, state: LinkState, error: Option<String>, now_ms: u64) -> bool {
        let changed = self.state.name() != state.name();
        if changed {
            self.since_ms = now_ms;
        }
        if state == LinkState::Connected {
            self.last_error = None;
            self.last_error_ms = None;
        }
        self.state = state;
        if error.is_some() {
            self.last_error = error;
            self.last_error_ms = Some(now_ms);
        }
        changed
    }

    /// Notes a sync message for `room` from the peer; `step2` confirms the room.
    pub fn exchanged(&mut self, room: &str, step2: bool, now_ms: u64) {
        let st = match self.rooms.get_mut(room) {
            Some(st) => st,
            // A room first seen through a live change from the peer is new on the link:
            // this node had nothing of it, so the peer lacks nothing of it.
            None => {
                let st = self.rooms.entry(room.to_string()).or_default();
                st.confirmed = true;
                st
            }
        };
        if step2 {
            st.confirm();
        }
        st.last_exchange_ms = now_ms;
    }

    /// A change of `room` was queued to this row's live link. A room the link has not
    /// exchanged before is new to it: the change carries all of it.
    pub fn queued(&mut self, room: &str, now_ms: u64) {
        let st = match self.rooms.get_mut(room) {
            Some(st) => st,
            None => {
                let st = self.rooms.entry(room.to_string()).or_default();
                st.confirmed = true;
                st
            }
        };
        st.queued += 1;
        st.since_ms.get_or_insert(now_ms);
        st.last_exchange_ms = now_ms;
    }

    /// A change of `room` was made while this row has no link: the peer lacks it.
    pub fn missed(&mut self, room: &str, now_ms: u64) {
        let st = self.rooms.entry(room.to_string()).or_default();
        st.unacked += 1;
        st.since_ms.get_or_insert(now_ms);
    }

    /// The peer acknowledged `n` changes of `room` received on the live link.
    pub fn acked(&mut self, room: &str, n: u64) {
        if let Some(st) = self.rooms.get_mut(room) {
            st.queued = st.queued.saturating_sub(n);
            if st.queued == 0 && st.unacked == 0 {
                st.since_ms = None;
            }
        }
    }

    /// The link dropped: what was queued on it is unacknowledged now.
    pub fn link_lost(&mut self) {
        for st in self.rooms.values_mut() {
            st.unacked += std::mem::take(&mut st.queued);
        }
    }

    /// A new link came up: every room is pending until its initial exchange confirms it.
    pub fn link_up(&mut self) {
        self.ever_linked = true;
        for st in self.rooms.values_mut() {
            st.confirmed = false;
        }
    }

    /// The initial exchange on the live link decided `room`: `synced` confirms it, else the
    /// room is being synced.
    pub fn mark(&mut self, room: &str, synced: bool) {
        let st = self.rooms.entry(room.to_string()).or_default();
        if synced {
            st.confirm();
        } else {
            st.confirmed = false;
        }
    }

    /// Where `room` stands with this peer; `shared` when its share policy allows the room.
    pub fn status(&self, room: &str, shared: bool) -> (RoomStatus, Option<&RoomSync>) {
        let st = self.rooms.get(room);
        if !shared {
            return (RoomStatus::NotShared, st);
        }
        let status = match st {
            None if !self.ever_linked => RoomStatus::Unknown,
            None => RoomStatus::Pending,
            Some(st) if st.confirmed && st.unacked == 0 && st.queued == 0 => RoomStatus::Synced,
            Some(_) => RoomStatus::Pending,
        };
        (status, st)
    }

    /// The row as `GET /peers` shows it, with every room in `rooms` (the node's rooms and
    /// the ones this row knows) and whether each is shared with the peer.
    pub fn row<'a>(
        &self,
        found_by: &'static str,
        rooms: impl Iterator<Item = (&'a str, bool)>,
    ) -> PeerRow {
        PeerRow {
            address: self.address.clone(),
            source: self.source(),
            found_by,
            node_id: self.node_id.clone(),
            transport: self.road.transport.as_str(),
            relayed: self.road.relayed,
            state: self.state.clone(),
            since_ms: self.since_ms,
            last_error: self.last_error.clone(),
            last_error_ms: self.last_error_ms,
            rooms: rooms
                .map(|(name, shared)| {
                    let (status, st) = self.status(name, shared);
                    let outstanding = st.map_or(0, |st| st.unacked + st.queued);
                    let pending = status == RoomStatus::Pending;
                    RoomRow {
                        name: name.to_string(),
                        synced: status == RoomStatus::Synced,
                        status,
                        unacked: pending.then_some(outstanding),
                        pending_since_ms: st.and_then(|s| s.since_ms).filter(|_| pending),
                        last_exchange_ms: st.map(|s| s.last_exchange_ms).filter(|ms| *ms > 0),
                    }
                })
                .collect(),
        }
    }

    /// `config`, `inbound`, `mdns` or `tailnet`.
    pub fn source(&self) -> &'static str {
        match self.origin {
            Origin::Config => "config",
            Origin::Inbound => "inbound",
            Origin::Found(s) => s.as_str(),
        }
    }
}

/// One row of `GET /peers`, without traffic counters (the shell adds those).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PeerRow {
    /// Configured or discovered URL, or the remote address of an inbound link.
    pub address: String,
    /// `config`, `inbound`, `mdns` or `tailnet`.
    pub source: &'static str,
    /// How the peer was found: an inbound link from a peer discovery also found says how.
    pub found_by: &'static str,
    /// The peer's node id, once known.
    pub node_id: Option<String>,
    /// `ws` or `p2p`: the transport of the latest link (before any, the one the address
    /// names).
    pub transport: &'static str,
    /// Whether that link runs through a circuit relay.
    pub relayed: bool,
    /// What its link is doing.
    #[serde(flatten)]
    pub state: LinkState,
    /// Since when (unix ms).
    pub since_ms: u64,
    /// The last error, if any; cleared when the link comes up.
    pub last_error: Option<String>,
    /// When the last error happened (unix ms).
    pub last_error_ms: Option<u64>,
    /// Every room of this node, with where it stands with the peer.
    pub rooms: Vec<RoomRow>,
}

/// One room with one peer in `GET /peers`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RoomRow {
    /// The room.
    pub name: String,
    /// Where the room stands with the peer.
    pub status: RoomStatus,
    /// `status == synced` (kept for scripts written against earlier versions).
    pub synced: bool,
    /// For `pending`: changes made here the peer has not acknowledged (0 while the initial
    /// exchange of a live link runs).
    pub unacked: Option<u64>,
    /// For `pending`: when the oldest of those changes was made (unix ms).
    pub pending_since_ms: Option<u64>,
    /// When a sync message last crossed (unix ms).
    pub last_exchange_ms: Option<u64>,
}
