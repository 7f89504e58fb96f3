//! The mesh protocol as a pure state machine: every decision the mesh makes, and nothing
//! else.
//!
//! No tokio, no `async`, no sockets and no clock reads live here: time is an input (every
//! [`Event`] is handled at a `now_ms` the caller gives), randomness comes from a seeded
//! generator, and the result of an event is a list of [`Action`]s for a shell to carry out.
//! That is what lets `tests/mesh_sim.rs` drive several nodes through thousands of seeded
//! schedules (delays, drops, partitions, restarts, discovery) in seconds, and what keeps the
//! I/O shells in [`crate::mesh::runtime`] thin.
//!
//! | module | owns |
//! |---|---|
//! | [`machine`] | [`MeshCore`]: the peer table, link states, the duplicate-link tie-break, dial and redial decisions, resync markers, per-room per-peer sync state, fan-out targets (split horizon) |
//! | [`flood`] | command dedup across links: each command is accepted once per node and passed on to every other link that shares its room |
//! | [`handshake`] | hello / proof / welcome as a state machine; admission |
//! | [`preauth`] | the budget of sockets still in their handshake (per address, in total), and which one gives way to a new one |
//! | [`manifest`] | room manifests, which rooms a link must sync, per-peer share policy |
//! | [`backoff`] | how long a peer waits before it is dialed again |
//! | [`url`] | peer URLs: control channel, plain-server room URLs, `host:port` |
//!
//! # Events in, actions out
//!
//! A shell feeds what happened ([`Event`]: a peer was configured or discovered, a probe
//! answered, a link finished its handshake, a control message arrived, a link closed, a
//! timer fired) and carries out what the core asks ([`Action`]: probe or dial a peer, admit
//! or reject a link, send a control message, ask for rooms, deliver a command, persist a
//! marker, set a timer). The core never waits: a dial is an action, its outcome a later
//! event. Each link carries a handle of the shell's choosing (`H`: channels and a close
//! switch in the runtime, a connection number in the simulator), which the core hands back
//! in [`MeshCore::fanout`] and [`Action::Close`].

pub mod approval;
pub mod backoff;
pub mod channel;
mod dialing;
pub mod flood;
pub mod handshake;
pub mod machine;
pub mod manifest;
mod offline;
mod peers;
mod pending;
pub mod preauth;
mod reconfig;
pub mod url;
mod views;

pub use self::peers::{LinkState, PeerRow, RoomRow, RoomStatus, WaitingFor};
pub use machine::{CoreConfig, MeshCore};

use std::collections::BTreeMap;

use crate::command::{Command, CommandResult};
use crate::mesh::wire::Control;
use manifest::SharePolicy;

/// A link's id, chosen by the shell (unique among links and client sessions of one node:
/// updates a link applies carry it as their origin).
pub type LinkId = u64;

/// A row of the peer table. The order is the order `GET /peers` lists them in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PeerKey {
    /// The n-th peer of the configuration (`--peer`, `[[peers]]`).
    Configured(usize),
    /// A link a peer dialed to this node (its link id).
    Inbound(LinkId),
    /// A peer found by discovery (n-th found).
    Discovered(u64),
}

impl PeerKey {
    /// Whether this node dials the links of this row.
    pub fn dials(self) -> bool {
        !matches!(self, PeerKey::Inbound(_))
    }
}

/// Which transport carries a link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Transport {
    /// A WebSocket to the peer's `/_mesh`, secured by the mesh's own Noise channel.
    #[default]
    Ws,
    /// A libp2p stream (`/ymesh/mesh/1`), secured by libp2p's Noise.
    P2p,
}

impl Transport {
    /// The `transport` value of `GET /peers`: `ws` or `p2p`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::P2p => "p2p",
        }
    }

    /// The transport that reaches a peer address: `p2p` for a multiaddr, `ws` for a URL.
    pub fn of_address(address: &str) -> Transport {
        if url::is_multiaddr(address) {
            Transport::P2p
        } else {
            Transport::Ws
        }
    }
}

/// The road of one link: its transport, and whether it runs through a circuit relay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Road {
    /// The transport.
    pub transport: Transport,
    /// Through a relay (a libp2p circuit); always false on a WebSocket.
    pub relayed: bool,
}

/// Where a peer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiscoverySource {
    /// Named in the configuration (`mesh.toml` `peers`, `--peer`).
    Config,
    /// Announced on the local network by mDNS / DNS-SD.
    Mdns,
    /// A tailnet peer found through the local tailscaled and probed as a ymesh node.
    Tailnet,
}

impl DiscoverySource {
    /// The lower-case name used in logs and in `GET /peers`: `config`, `mdns`, `tailnet`.
    pub fn as_str(self) -> &'static str {
        match self {
            DiscoverySource::Config => "config",
            DiscoverySource::Mdns => "mdns",
            DiscoverySource::Tailnet => "tailnet",
        }
    }
}

impl std::fmt::Display for DiscoverySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A peer to dial, from `--peer` or `[[peers]]`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PeerConfig {
    /// As the user wrote it: `ws://host:3913`, `http://host:3913`, or a room URL template
    /// such as `ws://host:3913/rooms/{id}`; ymesh peers are reached at the origin's `/_mesh`.
    pub url: String,
    /// The node id the peer must prove, if known.
    pub node_id: Option<String>,
    /// Which rooms are shared with this peer (every room by default). Applies to links in
    /// both directions: with a configured `node_id`, also to links that peer dials.
    pub share: SharePolicy,
    /// For a peer that is not a ymesh node (a plain y-websocket server, which cannot list
    /// its rooms): the rooms to replicate with it, one y-websocket connection each.
    pub rooms: Vec<String>,
    /// Sent as `?token=` on those connections.
    pub token: Option<String>,
}

// By hand so that the token never reaches a log line through `{:?}`.
impl std::fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConfig")
            .field("url", &self.url)
            .field("node_id", &self.node_id)
            .field("share", &self.share)
            .field("rooms", &self.rooms)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// What a probe of a peer's `GET /` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// It is a ymesh node: dial its `/_mesh`.
    Ymesh,
    /// It answered, but it is not a ymesh node (a plain y-websocket server, say).
    Other,
    /// It could not be asked (down, refusing connections, timed out).
    Unreachable(String),
}

/// How a link's handshake ended when it did not bring the link up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeEnd {
    /// The connection reached this node itself.
    IsSelf,
    /// One side refused the other (a denial, an unexpected node, a protocol error).
    Refused(String),
    /// The two nodes speak different mesh protocol versions.
    Incompatible(String),
    /// The connection closed or timed out.
    Closed(String),
}

/// A timer the core asked for; the shell hands it back as [`Event::Timer`] when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// Dial a peer again after its backoff (`attempt` is the dial it belongs to).
    Redial {
        /// The peer's row.
        peer: PeerKey,
        /// The dial attempt this timer belongs to; a newer attempt makes it stale.
        attempt: u64,
    },
    /// A discovered peer with the lower node id had its time to dial this node first.
    DeferOver {
        /// The peer's row.
        peer: PeerKey,
        /// As for [`Timer::Redial`].
        attempt: u64,
    },
}

/// Something that happened, fed to [`MeshCore::handle`].
#[derive(Debug)]
pub enum Event<H> {
    /// The node started: dial the configured peers.
    Start,
    /// Discovery found a node at `url`.
    Discovered {
        /// Its node id (a claim until its handshake proves it).
        node_id: String,
        /// Its base URL.
        url: String,
        /// Which source found it.
        source: DiscoverySource,
    },
    /// Discovery no longer sees a node.
    Lost {
        /// Its node id.
        node_id: String,
        /// The source that lost it.
        source: DiscoverySource,
    },
    /// A timer the core set fired.
    Timer(Timer),
    /// The answer to [`Action::Probe`].
    Probed {
        /// The peer's row.
        peer: PeerKey,
        /// The attempt of the probe.
        attempt: u64,
        /// What the probe found.
        answer: Probe,
    },
    /// [`Action::DialMesh`] could not connect.
    DialFailed {
        /// The peer's row.
        peer: PeerKey,
        /// The attempt of the dial.
        attempt: u64,
        /// Why.
        error: String,
    },
    /// A peer connected to this node's `/_mesh`; its handshake starts.
    InboundOpened {
        /// The new link's id.
        link: LinkId,
        /// The remote address, for display.
        remote: String,
    },
    /// A link's handshake established the peer's identity: the core admits it
    /// ([`Action::Admit`]) or rejects it as a duplicate ([`Action::Reject`]).
    Handshaken {
        /// The link.
        link: LinkId,
        /// The row it belongs to ([`PeerKey::Inbound`] for a link the peer dialed).
        peer: PeerKey,
        /// The peer's proven node id.
        node_id: String,
        /// The same value at both ends of this connection ([`handshake::PeerInfo::link_tag`]).
        tag: Vec<u8>,
        /// The shell's handle for sending on and closing the link.
        handle: H,
        /// The link's transport and whether it is relayed (shown in `GET /peers`).
        road: Road,
    },
    /// The secure channel proved the peer's node id and the in-channel handshake checked
    /// the mesh secret: the core answers with an [`Action::Verdict`] for the link.
    Authenticated {
        /// The link.
        link: LinkId,
        /// Its row.
        peer: PeerKey,
        /// The peer's proven node id.
        node_id: String,
        /// What the handshake found about the mesh secret.
        secret: approval::SecretCheck,
    },
    /// The peer holds link `link` until its operator approves this node.
    PeerPending {
        /// The link.
        link: LinkId,
        /// Its row.
        peer: PeerKey,
        /// The peer's reason.
        reason: String,
    },
    /// The rooms this node holds (read from the store at start), so peers' rows list rooms
    /// that no link has carried yet.
    LocalRooms {
        /// Room names.
        rooms: Vec<String>,
    },
    /// A person approved a node (`ymesh peer approve`): its pending links are welcomed.
    Approve {
        /// The node.
        node_id: String,
    },
    /// The configuration was reloaded: new configured peers and admission rules
    /// (see `reconfig.rs`).
    Reconfigure {
        /// The configured peers, in order.
        peers: Vec<PeerConfig>,
        /// Who is admitted without approval.
        admission: approval::AdmissionPolicy,
        /// The mesh secret changed: links admitted by the old one must prove the new one.
        secret_changed: bool,
    },
    /// A person denied a node (`ymesh peer deny`): its links are refused or closed.
    Deny {
        /// The node.
        node_id: String,
    },
    /// A dialed connection opened; its handshake starts (the row is `handshaking`).
    DialOpened {
        /// The row.
        peer: PeerKey,
        /// The dial it belongs to.
        attempt: u64,
    },
    /// A link's handshake ended without bringing it up.
    HandshakeFailed {
        /// The link.
        link: LinkId,
        /// Its row.
        peer: PeerKey,
        /// How it ended.
        end: HandshakeEnd,
    },
    /// An admitted link gathered what it announces (after sending the peer the tombstones it
    /// lacks): the core sends the manifest, the delta of rooms changed since the marker, and
    /// the commands still running.
    LinkOpened {
        /// The link.
        link: LinkId,
        /// Our rooms shared with anyone: name and state-vector digest.
        ours: BTreeMap<String, String>,
        /// Rooms changed here since `marker`.
        changed: Vec<String>,
        /// The change marker the link resyncs from (`None`: everything).
        marker: Option<u64>,
        /// The store's change counter when the link came up.
        store_now: Option<u64>,
    },
    /// A control message arrived on an admitted link (the core acts on manifests, deltas,
    /// commands and results; the link shell handles the rest itself).
    Control {
        /// The link.
        link: LinkId,
        /// The message.
        control: Control,
    },
    /// A sync message for `room` arrived on a link; `step2` when it is the peer's answer to
    /// our SyncStep1, which completes the room's initial exchange.
    RoomSync {
        /// The link.
        link: LinkId,
        /// The room.
        room: String,
        /// Whether it was a SyncStep2.
        step2: bool,
    },
    /// A link closed (admitted or closing).
    LinkClosed {
        /// The link.
        link: LinkId,
        /// Why, for the peer's `last_error`.
        reason: String,
    },
    /// One room connection to a plain y-websocket server is up.
    PlainUp {
        /// Its link id.
        link: LinkId,
        /// The configured peer.
        peer: PeerKey,
        /// The room.
        room: String,
        /// The shell's handle.
        handle: H,
    },
    /// The room connections to a plain server ended (all of them: the first to end ends the
    /// others).
    PlainEnded {
        /// The configured peer.
        peer: PeerKey,
        /// The attempt of its dial.
        attempt: u64,
        /// Why.
        reason: String,
    },
    /// This node issued a command: send it to every link that shares its room.
    IssueCommand {
        /// The command.
        command: Command,
    },
}

/// What the shell must do, in order.
#[derive(Debug, Clone)]
pub enum Action<H> {
    /// Ask the peer's `GET /` whether it is a ymesh node; answer with [`Event::Probed`].
    Probe {
        /// The peer's row.
        peer: PeerKey,
        /// Echoed in the answer.
        attempt: u64,
        /// The peer's URL.
        url: String,
    },
    /// Dial the peer's control channel and run the handshake (expecting `expect` when set);
    /// report [`Event::Handshaken`], [`Event::HandshakeFailed`] or [`Event::DialFailed`].
    DialMesh {
        /// The peer's row.
        peer: PeerKey,
        /// Echoed in the answer.
        attempt: u64,
        /// The `ws://host:port/_mesh` URL, or for [`Transport::P2p`] the peer's multiaddr.
        url: String,
        /// Which transport dials it (a multiaddr peer is dialed over libp2p, unprobed).
        transport: Transport,
        /// The node id the peer must prove.
        expect: Option<String>,
    },
    /// Replicate the configured rooms with a plain y-websocket server (configured peer
    /// `index`); report [`Event::PlainUp`] per room and [`Event::PlainEnded`] at the end.
    DialPlain {
        /// The peer's row.
        peer: PeerKey,
        /// Echoed in [`Event::PlainEnded`].
        attempt: u64,
        /// Index into the configured peers.
        index: usize,
    },
    /// The link is admitted: send the peer the tombstones it lacks (since `marker`), then
    /// report [`Event::LinkOpened`]. When `marker` is `None` the shell may read the marker it
    /// keeps on disk for `node`.
    Admit {
        /// The link.
        link: LinkId,
        /// The peer's node id.
        node: String,
        /// The peer's change marker, as this run remembers it.
        marker: Option<u64>,
        /// What this node shares with the peer.
        policy: SharePolicy,
    },
    /// This node's verdict on an authenticated link: send it to the peer (a welcome, a
    /// pending notice, or a refusal that ends the link).
    Verdict {
        /// The link.
        link: LinkId,
        /// The verdict.
        verdict: approval::Verdict,
    },
    /// The link is a duplicate of a kept one: close it.
    Reject {
        /// The link.
        link: LinkId,
        /// Why.
        reason: String,
    },
    /// Close another link (the duplicate the new one replaces).
    Close {
        /// Its handle.
        handle: H,
        /// Why.
        reason: String,
    },
    /// Send a control message on a link.
    Send {
        /// The link.
        link: LinkId,
        /// The message.
        control: Control,
    },
    /// Send a SyncStep1 for each room (with our state vector), pipelined.
    SendStep1 {
        /// The link.
        link: LinkId,
        /// The rooms.
        rooms: Vec<String>,
    },
    /// Send `command` (one hop further, with our state vector of its room for
    /// `invalidate`) on each link.
    ForwardCommand {
        /// The links.
        links: Vec<LinkId>,
        /// The command as accepted here.
        command: Command,
    },
    /// Hand a command that arrived over `link` to the node's command center (once per node).
    DeliverCommand {
        /// The link it came by.
        link: LinkId,
        /// The peer's node id.
        peer: String,
        /// What this node shares with that peer (a command for every room acts only on
        /// these).
        policy: SharePolicy,
        /// The command.
        command: Command,
        /// The sender's state vector of the room (hex), for `invalidate`.
        state_vector: Option<String>,
    },
    /// Hand a result that arrived over `link` to the command center.
    DeliverResult {
        /// The link.
        link: LinkId,
        /// The result.
        result: CommandResult,
    },
    /// Keep the peer's change marker on disk.
    PersistMarker {
        /// The peer's node id.
        node: String,
        /// The marker.
        marker: u64,
    },
    /// Fire `timer` after `after_ms`.
    SetTimer {
        /// Delay in milliseconds.
        after_ms: u64,
        /// The timer.
        timer: Timer,
    },
}
