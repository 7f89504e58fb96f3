//! The peer table's rows: what each known peer is doing and how far each shared room is
//! synced with it. Pure data, owned by [`super::MeshCore`]; `GET /peers` shows it through
//! [`PeerRow`].

use std::collections::BTreeMap;

use serde::Serialize;

use super::backoff::Backoff;
use super::DiscoverySource;

/// What a peer link is doing, as `GET /peers` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum LinkState {
    /// Dialing or in the handshake.
    Connecting,
    /// The link is up.
    Connected,
    /// Waiting before the next dial.
    BackingOff {
        /// When the next dial happens (unix ms).
        next_retry_ms: u64,
    },
    /// One side refused the link (admission, version); the peer is still retried slowly.
    Refused {
        /// Why.
        reason: String,
        /// When the next dial happens (unix ms).
        next_retry_ms: u64,
    },
    /// The address leads back to this node; it is not dialed again.
    IsSelf,
    /// The secure channel is up and the peer proved its node id, but one side holds the
    /// link until a person approves the other (`ymesh peer approve`); it carries no room.
    Pending {
        /// Whose approval the link waits for.
        waiting_for: WaitingFor,
    },
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
    /// The initial exchange on the current link finished (digests agreed, or the peer's
    /// SyncStep2 arrived), and every change since was queued to the peer.
    pub synced: bool,
    /// When a sync message for this room last crossed the link (unix ms; 0 = not yet).
    pub last_exchange_ms: u64,
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
    pub rooms: BTreeMap<String, RoomSync>,
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
}

impl PeerSlot {
    pub fn new(address: String, origin: Origin, node_id: Option<String>, now_ms: u64) -> Self {
        PeerSlot {
            address,
            origin,
            node_id,
            state: LinkState::Connecting,
            since_ms: now_ms,
            last_error: None,
            rooms: BTreeMap::new(),
            attempt: 0,
            backoff: Backoff::default(),
            started_ms: now_ms,
            via_other: false,
            defer: false,
            gone: false,
        }
    }

    /// Moves to `state`; `error`, when given, becomes the last error.
    pub fn set_state(&mut self, state: LinkState, error: Option<String>, now_ms: u64) {
        if self.state != state {
            self.since_ms = now_ms;
        }
        self.state = state;
        if error.is_some() {
            self.last_error = error;
        }
    }

    /// Notes a sync message for `room` (a room first seen through a live change is new on
    /// the link: the change carries all of it, so it counts as synced).
    pub fn exchanged(&mut self, room: &str, synced: Option<bool>, now_ms: u64) {
        let st = match self.rooms.get_mut(room) {
            Some(st) => st,
            None => self.rooms.entry(room.to_string()).or_insert(RoomSync {
                synced: true,
                last_exchange_ms: 0,
            }),
        };
        if let Some(s) = synced {
            st.synced = s;
        }
        st.last_exchange_ms = now_ms;
    }

    /// Sets the sync flag of `room` without counting an exchange.
    pub fn mark(&mut self, room: &str, synced: bool) {
        self.rooms
            .entry(room.to_string())
            .or_insert(RoomSync {
                synced,
                last_exchange_ms: 0,
            })
            .synced = synced;
    }

    pub fn row(&self, found_by: &'static str) -> PeerRow {
        PeerRow {
            address: self.address.clone(),
            source: self.source(),
            found_by,
            node_id: self.node_id.clone(),
            state: self.state.clone(),
            since_ms: self.since_ms,
            last_error: self.last_error.clone(),
            rooms: self
                .rooms
                .iter()
                .map(|(name, st)| RoomRow {
                    name: name.clone(),
                    synced: st.synced,
                    last_exchange_ms: (st.last_exchange_ms > 0).then_some(st.last_exchange_ms),
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
    /// What its link is doing.
    #[serde(flatten)]
    pub state: LinkState,
    /// Since when (unix ms).
    pub since_ms: u64,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// Each room shared with it.
    pub rooms: Vec<RoomRow>,
}

/// One room with one peer in `GET /peers`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RoomRow {
    /// The room.
    pub name: String,
    /// Whether the initial exchange finished and every change since was queued.
    pub synced: bool,
    /// When a sync message last crossed (unix ms).
    pub last_exchange_ms: Option<u64>,
}
