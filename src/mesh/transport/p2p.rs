//! The libp2p transport (cargo feature `p2p`): mesh links as libp2p streams of protocol
//! [`MESH_PROTOCOL`] (`/ymesh/mesh/1`), over TCP, Noise and Yamux, directly or through a
//! circuit relay v2, with DCUtR hole punching to go direct.
//!
//! # One owner
//!
//! One task (the swarm task, [`P2p::start`]) owns the libp2p `Swarm`: it listens, dials,
//! reserves slots on relays, serves as a relay when asked, and keeps the table of live
//! connections per peer (direct or relayed). Everything else talks to it through a bounded
//! command channel ([`P2p::dial`]) and a `libp2p-stream` control (opening a stream on a
//! connected peer). Inbound mesh streams are taken in the swarm task too, so the table it
//! reads to say whether a stream is relayed is the one of that moment; they go to the mesh
//! over a bounded channel (a full one drops the stream; the peer redials).
//!
//! # A stream becomes a [`LinkIo`]
//!
//! [`super::p2p_stream`] runs each mesh stream: the binding exchange, then frames back to
//! back (each carries its length), and a close record with the code and reason when the link
//! ends with one.
//!
//! # What proves what
//!
//! libp2p's Noise handshake authenticates both ends' `PeerId`s (the node ids: the node's
//! ed25519 key is its libp2p identity) and encrypts the connection, relayed or not (a relay
//! forwards ciphertext). There is no handshake hash to bind the mesh handshake to, so each
//! stream opens with a binding exchange: both ends send 32 fresh random bytes, and the
//! stream's binding is `SHA-256(BINDING_DOMAIN · protocol · len · dialer PeerId · len ·
//! listener PeerId · dialer nonce · listener nonce)`. The mesh handshake above the seam
//! ([`crate::mesh::proto::handshake`]) uses it exactly as it uses the WebSocket channel's
//! handshake hash: as the SPAKE2 identity and MAC input of the mesh-secret proof, and as the
//! link tag of the duplicate-link tie-break. It names both proven node ids, so a secret proof
//! made on one connection cannot be relayed onto another (a node in the middle has a
//! different pair of ids on each side), and it is fresh from both sides, so two streams
//! between the same two nodes never share a tag. It adds no secrecy: the nonces travel
//! inside libp2p's encryption.
//!
//! # Direct beats relayed
//!
//! When a direct connection to a peer comes up (DCUtR succeeded, or the peer dialed
//! directly) while relayed ones exist, the relayed ones are closed: a link riding on one ends
//! and is dialed again over the direct connection (a resync by manifest). So a peer's
//! streams all run on one kind of connection, and `relayed` in `GET /peers` is exact.

use std::collections::HashMap;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{dcutr, identify, noise, ping, relay, tcp, yamux, Multiaddr, PeerId, StreamProtocol};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::p2p_settings::P2pSettings;
use super::p2p_stream::link_io;
use super::LinkIo;
use crate::mesh::identity::NodeIdentity;
use crate::mesh::proto::channel::Role;

/// The libp2p protocol id of a mesh stream.
pub const MESH_PROTOCOL: &str = "/ymesh/mesh/1";

/// Domain tag of a stream's binding.
pub const BINDING_DOMAIN: &[u8] = b"ymesh-p2p-binding-v1";

/// How long a dial (connection and stream) may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(15);

/// Inbound mesh streams waiting for the mesh to take them.
const INBOUND_QUEUE: usize = 64;

/// Why the p2p transport could not start or dial.
#[derive(Debug, thiserror::Error)]
pub enum P2pError {
    /// A multiaddr did not parse.
    #[error("bad multiaddr {addr:?}: {reason}")]
    BadAddress {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The swarm could not be built.
    #[error("cannot start libp2p: {0}")]
    Start(String),
}

/// The behaviours of the swarm.
#[derive(NetworkBehaviour)]
struct Behaviour {
    relay_client: relay::client::Behaviour,
    relay: Toggle<relay::Behaviour>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    dcutr: dcutr::Behaviour,
    stream: libp2p_stream::Behaviour,
}

/// One live libp2p connection.
#[derive(Debug, Clone)]
struct Conn {
    id: ConnectionId,
    relayed: bool,
    remote: Multiaddr,
}

/// Live connections per peer, kept by the swarm task.
type Table = Arc<Mutex<HashMap<PeerId, Vec<Conn>>>>;

/// The live links per peer: whether each rides a relayed connection, and its close switch.
/// A stream does not notice that its connection closed (a read waits for ever), so when a
/// peer's last connection of a kind closes, the swarm task closes the links of that kind.
type Links = Arc<Mutex<HashMap<PeerId, Vec<(bool, CancellationToken)>>>>;

/// Registers a link to `peer` so that the end of its connection ends it.
fn register(links: &Links, peer: PeerId, relayed: bool, io: &LinkIo) {
    let mut links = lock(links);
    let list = links.entry(peer).or_default();
    list.retain(|(_, c)| !c.is_cancelled());
    list.push((relayed, io.close.clone()));
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A request to the swarm task.
enum Command {
    /// Be connected to `peer` (dial `addr` unless a connection exists).
    Connect {
        peer: PeerId,
        addr: Multiaddr,
        done: oneshot::Sender<Result<(), String>>,
    },
}

/// A mesh stream a peer opened to this node.
pub struct InboundStream {
    /// The link's frames.
    pub io: LinkIo,
    /// Whether it runs through a relay.
    pub relayed: bool,
    /// The connection's remote address with the peer id, for display.
    pub remote: String,
    /// The remote IP address (of the relay, for a relayed stream), for the budget of
    /// sockets in their handshake.
    pub ip: IpAddr,
}

/// The running libp2p transport: a handle to the swarm task.
#[derive(Clone)]
pub struct P2p {
    local: PeerId,
    commands: mpsc::Sender<Command>,
    control: libp2p_stream::Control,
    table: Table,
    links: Links,
    /// Where the node listens, with `/p2p/<node id>` (circuit addresses included).
    listening: Arc<Mutex<Vec<Multiaddr>>>,
    write_timeout: Duration,
}

impl std::fmt::Debug for P2p {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("P2p")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

/// Who may hold a reservation on this node's circuit relay (when it is a relay server): the
/// mesh's admission decides ([`MeshCore::admits_relay_reservation`]), the transport asks.
///
/// [`MeshCore::admits_relay_reservation`]: crate::mesh::proto::MeshCore::admits_relay_reservation
pub trait RelayGate: Send + Sync {
    /// Whether the node with libp2p peer id (= node id) `node` may reserve a slot now.
    fn admits(&self, node: &str) -> bool;
    /// A reservation by `node` was refused.
    fn refused(&self, node: &str);
}

impl P2p {
    /// Builds the swarm for `identity`, listens and reserves as `settings` say, and spawns
    /// the swarm task (it stops with `shutdown`). Inbound mesh streams come out of the
    /// returned receiver. As a relay server it takes reservations only from nodes `gate`
    /// admits.
    pub fn start(
        identity: &NodeIdentity,
        settings: &P2pSettings,
        write_timeout: Duration,
        gate: Arc<dyn RelayGate>,
        shutdown: CancellationToken,
    ) -> Result<(P2p, mpsc::Receiver<InboundStream>), P2pError> {
        let keypair = identity.keypair().clone();
        let local = keypair.public().to_peer_id();
        let limits = settings.relay_limits;
        let relay_server = settings.relay_server;
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| P2pError::Start(e.to_string()))?
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .map_err(|e| P2pError::Start(e.to_string()))?
            .with_behaviour(|key, relay_client| {
                let relay = relay_server.then(|| {
                    let mut config = relay::Config {
                        max_reservations: limits.max_reservations,
                        max_circuits: limits.max_circuits,
                        max_circuit_duration: Duration::from_secs(limits.circuit_duration_s),
                        max_circuit_bytes: limits.circuit_bytes,
                        ..relay::Config::default()
                    };
                    // Only the mesh's own nodes reserve here; a stranger is refused before
                    // the rate limits are asked (they do not count its attempts).
                    let gate = gate.clone();
                    config.reservation_rate_limiters.insert(
                        0,
                        Box::new(move |peer: PeerId, _: &Multiaddr, _: std::time::Instant| {
                            gate.admits(&peer.to_string())
                        }),
                    );
                    relay::Behaviour::new(key.public().to_peer_id(), config)
                });
                Behaviour {
                    relay_client,
                    relay: relay.into(),
                    identify: identify::Behaviour::new(identify::Config::new(
                        "/ymesh/1".into(),
                        key.public(),
                    )),
                    ping: ping::Behaviour::default(),
                    dcutr: dcutr::Behaviour::new(key.public().to_peer_id()),
                    stream: libp2p_stream::Behaviour::new(),
                }
            })
            .map_err(|e| P2pError::Start(e.to_string()))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        for addr in &settings.listen {
            let ma = parse(addr)?;
            swarm.listen_on(ma).map_err(|e| P2pError::BadAddress {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
        }
        let mut relays = HashMap::new();
        for addr in &settings.relays {
            let ma = parse(addr)?.with(Protocol::P2pCircuit);
            relays.insert(addr.clone(), ma);
        }
        let mut control = swarm.behaviour().stream.new_control();
        let incoming = control
            .accept(StreamProtocol::new(MESH_PROTOCOL))
            .map_err(|e| P2pError::Start(e.to_string()))?;
        let (commands, commands_rx) = mpsc::channel(64);
        let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
        let p2p = P2p {
            local,
            commands,
            control,
            table: Table::default(),
            links: Links::default(),
            listening: Arc::default(),
            write_timeout,
        };
        let task = SwarmTask {
            swarm,
            local,
            relay_server,
            relays,
            relay_listeners: HashMap::new(),
            relay_retry: Vec::new(),
            pending: HashMap::new(),
            table: p2p.table.clone(),
            links: p2p.links.clone(),
            listening: p2p.listening.clone(),
            inbound: inbound_tx,
            write_timeout,
            gate,
        };
        tokio::spawn(task.run(commands_rx, incoming, shutdown));
        Ok((p2p, inbound_rx))
    }

    /// This node's libp2p peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    /// The addresses peers reach this node at, each ending in `/p2p/<node id>`: its listen
    /// addresses and, once a relay accepted a reservation, its circuit addresses.
    pub fn addresses(&self) -> Vec<String> {
        lock(&self.listening)
            .iter()
            .map(|a| a.to_string())
            .collect()
    }

    /// Dials the peer at multiaddr `addr` (ending in its `/p2p/<node id>`; `/dns*` names
    /// are resolved here) and opens a mesh stream. Returns the link and whether it runs
    /// through a relay.
    pub async fn dial(&self, addr: &str) -> Result<(LinkIo, bool), String> {
        let target =
            crate::mesh::proto::url::parse_multiaddr(addr, true).map_err(|e| e.to_string())?;
        let peer = PeerId::from_str(&target.node_id).map_err(|e| e.to_string())?;
        if peer == self.local {
            return Err(format!("{addr} is this node"));
        }
        let ma = resolve(parse(addr).map_err(|e| e.to_string())?).await?;
        let (done, answer) = oneshot::channel();
        self.commands
            .send(Command::Connect {
                peer,
                addr: ma,
                done,
            })
            .await
            .map_err(|_| "the p2p transport has stopped".to_string())?;
        let stream = tokio::time::timeout(DIAL_TIMEOUT, async {
            answer
                .await
                .map_err(|_| "the p2p transport has stopped".to_string())??;
            let mut control = self.control.clone();
            control
                .open_stream(peer, StreamProtocol::new(MESH_PROTOCOL))
                .await
                .map_err(|e| format!("cannot open a mesh stream to {addr}: {e}"))
        })
        .await
        .map_err(|_| format!("cannot reach {addr}: timed out"))??;
        let relayed = relayed(&self.table, &peer);
        let io = link_io(
            stream,
            self.local,
            peer,
            Role::Initiator,
            self.write_timeout,
        );
        register(&self.links, peer, relayed, &io);
        Ok((io, relayed))
    }
}

/// Whether `peer`'s streams run through a relay: it has connections and none is direct.
fn relayed(table: &Table, peer: &PeerId) -> bool {
    lock(table)
        .get(peer)
        .is_some_and(|c| !c.is_empty() && c.iter().all(|c| c.relayed))
}

fn parse(addr: &str) -> Result<Multiaddr, P2pError> {
    Multiaddr::from_str(addr).map_err(|e| P2pError::BadAddress {
        addr: addr.to_string(),
        reason: e.to_string(),
    })
}

/// Replaces a `/dns`, `/dns4` or `/dns6` name by an address it resolves to (of the family
/// asked for), so the transport needs no resolver of its own.
async fn resolve(addr: Multiaddr) -> Result<Multiaddr, String> {
    let mut out = Multiaddr::empty();
    let mut parts = addr.iter().peekable();
    while let Some(p) = parts.next() {
        let (name, want) = match &p {
            Protocol::Dns(n) => (n.to_string(), None),
            Protocol::Dns4(n) => (n.to_string(), Some(true)),
            Protocol::Dns6(n) => (n.to_string(), Some(false)),
            _ => {
                out.push(p);
                continue;
            }
        };
        let port = match parts.peek() {
            Some(Protocol::Tcp(port)) => *port,
            _ => 0,
        };
        let found = tokio::net::lookup_host((name.as_str(), port))
            .await
            .map_err(|e| format!("cannot resolve {name}: {e}"))?
            .map(|s| s.ip())
            .find(|ip| want.is_none_or(|v4| ip.is_ipv4() == v4))
            .ok_or_else(|| format!("{name} has no address of the kind asked for"))?;
        out.push(match found {
            IpAddr::V4(ip) => Protocol::Ip4(ip),
            IpAddr::V6(ip) => Protocol::Ip6(ip),
        });
    }
    Ok(out)
}

/// The swarm task's state.
struct SwarmTask {
    swarm: libp2p::Swarm<Behaviour>,
    local: PeerId,
    relay_server: bool,
    /// Relays to hold a reservation on: configured address -> its circuit listen address.
    relays: HashMap<String, Multiaddr>,
    relay_listeners: HashMap<libp2p::core::transport::ListenerId, String>,
    /// Reservations to try again (after a relay refused or went away).
    relay_retry: Vec<(tokio::time::Instant, String)>,
    /// Connects waiting for a connection to a peer.
    pending: HashMap<PeerId, Vec<Waiting>>,
    table: Table,
    links: Links,
    listening: Arc<Mutex<Vec<Multiaddr>>>,
    inbound: mpsc::Sender<InboundStream>,
    write_timeout: Duration,
    /// Who may reserve on this node's relay.
    gate: Arc<dyn RelayGate>,
}

/// A connect waiting for a connection: the dial it started (if any) and its answer.
type Waiting = (Option<ConnectionId>, oneshot::Sender<Result<(), String>>);

/// How long a lost relay reservation waits before it is asked for again.
const RELAY_RETRY: Duration = Duration::from_secs(5);

impl SwarmTask {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut incoming: libp2p_stream::IncomingStreams,
        shutdown: CancellationToken,
    ) {
        let relays: Vec<String> = self.relays.keys().cloned().collect();
        for relay in relays {
            self.reserve(relay);
        }
        loop {
            let next_retry = self.relay_retry.iter().map(|(at, _)| *at).min();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = async {
                    match next_retry {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {
                    let now = tokio::time::Instant::now();
                    let (due, later): (Vec<_>, Vec<_>) =
                        self.relay_retry.drain(..).partition(|(at, _)| *at <= now);
                    self.relay_retry = later;
                    for (_, relay) in due {
                        self.reserve(relay);
                    }
                }
                command = commands.recv() => match command {
                    Some(Command::Connect { peer, addr, done }) => self.connect(peer, addr, done),
                    None => break,
                },
                stream = incoming.next() => match stream {
                    Some((peer, stream)) => self.accept(peer, stream),
                    None => break,
                },
                event = self.swarm.select_next_some() => self.on_event(event),
            }
        }
    }

    fn reserve(&mut self, relay: String) {
        let Some(addr) = self.relays.get(&relay).cloned() else {
            return;
        };
        match self.swarm.listen_on(addr) {
            Ok(id) => {
                self.relay_listeners.insert(id, relay);
            }
            Err(e) => {
                tracing::warn!(relay, error = %e, "cannot reserve a slot on the p2p relay");
                self.relay_retry
                    .push((tokio::time::Instant::now() + RELAY_RETRY, relay));
            }
        }
    }

    fn connect(
        &mut self,
        peer: PeerId,
        addr: Multiaddr,
        done: oneshot::Sender<Result<(), String>>,
    ) {
        if self.swarm.is_connected(&peer) {
            let _ = done.send(Ok(()));
            return;
        }
        let opts = DialOpts::peer_id(peer)
            .addresses(vec![addr.clone()])
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => self.pending.entry(peer).or_default().push((Some(id), done)),
            // Already dialing: wait for that dial.
            Err(libp2p::swarm::DialError::DialPeerConditionFalse(_)) => {
                self.pending.entry(peer).or_default().push((None, done))
            }
            Err(e) => {
                let _ = done.send(Err(format!("cannot dial {addr}: {e}")));
            }
        }
    }

    fn accept(&mut self, peer: PeerId, stream: libp2p::Stream) {
        let conns = lock(&self.table).get(&peer).cloned().unwrap_or_default();
        let relayed = !conns.is_empty() && conns.iter().all(|c| c.relayed);
        let remote_addr = conns
            .iter()
            .find(|c| c.relayed == relayed)
            .map(|c| c.remote.clone())
            .unwrap_or_else(Multiaddr::empty);
        let ip = remote_addr
            .iter()
            .find_map(|p| match p {
                Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
                Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
                _ => None,
            })
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let remote = with_peer(&remote_addr, peer).to_string();
        let io = link_io(
            stream,
            self.local,
            peer,
            Role::Responder,
            self.write_timeout,
        );
        register(&self.links, peer, relayed, &io);
        let inbound = InboundStream {
            io,
            relayed,
            remote,
            ip,
        };
        if self.inbound.try_send(inbound).is_err() {
            tracing::warn!(%peer, "too many inbound p2p mesh streams waiting; one dropped");
        }
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                let full = with_peer(&address, self.local);
                tracing::info!("p2p listening on {full}");
                lock(&self.listening).push(full);
                // A relay tells reserving peers its addresses: a relay server's listen
                // addresses are its external ones (it is the node others reach).
                if self.relay_server && !is_circuit(&address) {
                    self.swarm.add_external_address(address);
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                tracing::info!("p2p no longer listening on {address}");
                let full = with_peer(&address, self.local);
                lock(&self.listening).retain(|a| *a != full);
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                if let Some(relay) = self.relay_listeners.remove(&listener_id) {
                    let error = reason.err().map(|e| e.to_string());
                    tracing::warn!(
                        relay,
                        error,
                        "p2p relay reservation lost; asking again in {} s",
                        RELAY_RETRY.as_secs()
                    );
                    self.relay_retry
                        .push((tokio::time::Instant::now() + RELAY_RETRY, relay));
                }
            }
            SwarmEvent::ListenerError { error, .. } => {
                tracing::warn!(error = %error, "p2p listener error");
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let relayed = endpoint.is_relayed();
                let remote = endpoint.get_remote_address().clone();
                tracing::debug!(peer = %peer_id, %remote, relayed, "p2p connection up");
                let stale: Vec<ConnectionId> = {
                    let mut table = lock(&self.table);
                    let conns = table.entry(peer_id).or_default();
                    conns.push(Conn {
                        id: connection_id,
                        relayed,
                        remote,
                    });
                    if relayed {
                        Vec::new()
                    } else {
                        conns.iter().filter(|c| c.relayed).map(|c| c.id).collect()
                    }
                };
                if !stale.is_empty() {
                    tracing::info!(
                        peer = %peer_id,
                        "p2p direct connection up; closing the relayed one (its link moves over)"
                    );
                    for id in stale {
                        self.swarm.close_connection(id);
                    }
                }
                for (_, done) in self.pending.remove(&peer_id).unwrap_or_default() {
                    let _ = done.send(Ok(()));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let kind = endpoint.is_relayed();
                let kind_left = {
                    let mut table = lock(&self.table);
                    let left = match table.get_mut(&peer_id) {
                        Some(conns) => {
                            conns.retain(|c| c.id != connection_id);
                            conns.iter().any(|c| c.relayed == kind)
                        }
                        None => false,
                    };
                    if table.get(&peer_id).is_some_and(|c| c.is_empty()) {
                        table.remove(&peer_id);
                    }
                    left
                };
                // The links that rode this kind of connection to the peer end now (the peer
                // redials over what is left, e.g. the direct connection hole punching made).
                if !kind_left {
                    let mut links = lock(&self.links);
                    if let Some(list) = links.get_mut(&peer_id) {
                        list.retain(|(relayed, close)| {
                            if *relayed == kind {
                                close.cancel();
                            }
                            *relayed != kind && !close.is_cancelled()
                        });
                        if list.is_empty() {
                            links.remove(&peer_id);
                        }
                    }
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id: Some(peer),
                error,
            } => {
                if self.swarm.is_connected(&peer) {
                    return;
                }
                let reason = error.to_string();
                if let Some(waiting) = self.pending.get_mut(&peer) {
                    let (failed, rest): (Vec<_>, Vec<_>) = waiting
                        .drain(..)
                        .partition(|(id, _)| id.is_none() || *id == Some(connection_id));
                    *waiting = rest;
                    for (_, done) in failed {
                        let _ = done.send(Err(format!("cannot connect: {reason}")));
                    }
                    if waiting.is_empty() {
                        self.pending.remove(&peer);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::RelayClient(e)) => match e {
                relay::client::Event::ReservationReqAccepted {
                    relay_peer_id,
                    renewal,
                    ..
                } => {
                    if !renewal {
                        tracing::info!(relay = %relay_peer_id, "p2p relay reservation accepted");
                    }
                }
                other => tracing::debug!(event = ?other, "p2p relay client"),
            },
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(dcutr::Event {
                remote_peer_id,
                result,
            })) => match result {
                Ok(_) => tracing::info!(
                    peer = %remote_peer_id,
                    "p2p hole punch succeeded: direct connection"
                ),
                Err(e) => tracing::info!(
                    peer = %remote_peer_id,
                    error = %e,
                    "p2p hole punch failed; the link stays relayed"
                ),
            },
            SwarmEvent::Behaviour(BehaviourEvent::Relay(relay::Event::ReservationReqDenied {
                src_peer_id,
                status,
            })) => {
                let node = src_peer_id.to_string();
                if self.gate.admits(&node) {
                    tracing::debug!(peer = %node, ?status, "p2p relay reservation refused (limits)");
                } else {
                    tracing::info!(
                        peer = %node,
                        "p2p relay reservation refused: not a node this node admits"
                    );
                    self.gate.refused(&node);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Relay(e)) => {
                tracing::debug!(event = ?e, "p2p relay server");
            }
            _ => {}
        }
    }
}

/// `addr` ending in `/p2p/<peer>` (added unless it already ends so).
fn with_peer(addr: &Multiaddr, peer: PeerId) -> Multiaddr {
    match addr.iter().last() {
        Some(Protocol::P2p(p)) if p == peer => addr.clone(),
        _ => addr.clone().with(Protocol::P2p(peer)),
    }
}

fn is_circuit(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}
