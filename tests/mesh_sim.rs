//! Deterministic simulator of the mesh core (`ymesh::mesh::proto`).
//!
//! Several `MeshCore`s run against a simulated network driven by a seeded scheduler: message
//! delays, order kept within a connection and not across connections, dropped links,
//! partitions, restarts, and peers found by configuration and by discovery at the same time
//! (one side configured, the other discovering: the duplicate-link tie-break's hard case).
//! Each node's rooms are modelled as grow-only sets of edits, which is what a Yjs document
//! looks like to the mesh (state vectors in, missing updates out).
//!
//! After the chaos phase the network heals and the run goes on until nothing moves. Then it
//! checks: every room converged; no update circulated forever (the queue drained, and
//! updates crossed links a bounded number of times); each command reached each node once
//! (per run of a node); every room a live link marks synced is equal on both ends, and every
//! shared room is marked synced; the two ends of each pair keep the same single link.
//!
//! Admission is modelled too: nodes are open (`mesh_open`) or not; a node that is not open
//! admits a peer it was configured to dial, a peer it approved (at start, or by a person at
//! a random time), and holds any other as `pending`. The run checks that no link came up
//! at a node that had not admitted its peer, and that a pending link carried nothing.
//!
//! Reloads are modelled as well (the `Reload` scenario): instead of a person's approval, a
//! node's allow list grows and shrinks by configuration reloads (`Event::Reconfigure`) at
//! random times, a peer losing its place and getting it back during the chaos. The run also
//! checks that no link stays up at a node once a reload stopped admitting its peer, and that
//! the node neither lists that peer as an offline one of its own nor lets it reserve on its
//! relay.
//!
//! `MESH_SIM_SEEDS=N` sets how many seeds run (default 3000); `MESH_SIM_SEED=S` replays one
//! seed (a failure prints the command).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

use ymesh::command::{Command, CommandIssuer, CommandKind};
use ymesh::mesh::proto::approval::{AdmissionPolicy, Approvals, SecretCheck, Verdict};
use ymesh::mesh::proto::{
    Action, CoreConfig, DiscoverySource, Event, HandshakeEnd, LinkId, MeshCore, PeerConfig,
    PeerKey, Probe, Road, Timer,
};
use ymesh::mesh::wire::Control;

/// A connection id: the handle the core keeps for a link.
type Conn = u64;
/// One edit: (node index, its counter).
type Op = (usize, u64);
type Doc = BTreeSet<Op>;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// What travels on a connection, one way.
#[derive(Debug, Clone)]
enum Msg {
    Hello {
        node: String,
        nonce: u64,
    },
    Control(Control),
    /// The sender's verdict on the receiver.
    Verdict(Verdict),
    Step1 {
        room: String,
        have: Doc,
    },
    Step2 {
        room: String,
        ops: Doc,
    },
    Update {
        room: String,
        ops: Doc,
    },
    /// The other end closed (after everything it sent before).
    Close,
}

/// What the scheduler delivers.
#[derive(Debug, Clone)]
enum Ev {
    /// A message on `conn` towards `side` (0 = dialer, 1 = acceptor).
    Deliver {
        conn: Conn,
        side: usize,
        msg: Msg,
    },
    /// A dial reaches its target: the connection opens at both ends.
    Open {
        conn: Conn,
    },
    /// A core event for `node` in run `boot`.
    Core {
        node: usize,
        boot: u64,
        event: CoreEvent,
    },
    /// Chaos and workload.
    Edit {
        node: usize,
        room: usize,
    },
    /// A random open connection fails.
    DropSome,
    Restart {
        node: usize,
    },
    /// A restarted node is back.
    Boot {
        node: usize,
    },
    /// Partitions end.
    Heal,
    Issue {
        node: usize,
        room: Option<usize>,
        late: bool,
    },
    /// A person at `node` approves `other`.
    Approve {
        node: usize,
        other: usize,
    },
    /// A reload puts `other` on `node`'s allow list (`true`) or takes it off.
    Allow {
        node: usize,
        other: usize,
        allowed: bool,
    },
}

#[derive(Debug, Clone)]
enum CoreEvent {
    Timer(Timer),
    Probed {
        peer: PeerKey,
        attempt: u64,
        answer: Probe,
    },
    DialFailed {
        peer: PeerKey,
        attempt: u64,
    },
    Discovered {
        other: usize,
    },
}

/// One end of a connection.
#[derive(Debug, Clone)]
struct End {
    node: usize,
    boot: u64,
    link: LinkId,
    peer: PeerKey,
    /// Handshaken and admitted here.
    up: bool,
    /// Reported to this end's core as closed or failed.
    done: bool,
    /// The dialer expects this node.
    expect: Option<String>,
    /// This end sent its welcome.
    welcomed: bool,
    /// The other end's welcome arrived.
    welcomed_by_peer: bool,
    /// The link tag, once the hellos crossed.
    tag: Vec<u8>,
}

#[derive(Debug, Clone)]
struct ConnState {
    ends: [End; 2],
    nonce: [u64; 2],
    /// Open for traffic (false after a drop or a close).
    open: bool,
    /// Time before which nothing more can arrive per direction (keeps each direction FIFO).
    last: [u64; 2],
}

struct Node {
    id: String,
    url: String,
    core: MeshCore<Conn>,
    boot: u64,
    alive: bool,
    rooms: BTreeMap<String, Doc>,
    edits: u64,
    next_link: LinkId,
    issuer: CommandIssuer,
    /// Deliveries of each command id in each run.
    delivered: HashMap<(String, u64), u32>,
    /// `mesh_open`.
    open: bool,
    /// Nodes this one admits without being open: those it was configured to dial, and those
    /// a person approved so far (the simulator's own record, independent of the core's).
    trusts: BTreeSet<usize>,
    /// The allow list of its configuration (node ids).
    allow: BTreeSet<String>,
}

struct Sim {
    seed: u64,
    rng: Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    events: Vec<Option<Ev>>,
    nodes: Vec<Node>,
    conns: HashMap<Conn, ConnState>,
    next_conn: Conn,
    blocked: BTreeSet<(usize, usize)>,
    chaos: bool,
    updates_sent: u64,
    late_commands: Vec<(String, usize)>,
    /// Pairs that should end up linked.
    pairs: BTreeSet<(usize, usize)>,
    /// (finder, found) pairs of discovery.
    discovered: Vec<(usize, usize)>,
    /// Print every core event and action (`MESH_SIM_TRACE`).
    trace: bool,
    /// Duplicate-link decisions: (two connections) -> (the one kept, by which node).
    dup_decisions: HashMap<(Conn, Conn), (Conn, usize)>,
    /// Nodes that decided differently about the same pair of links.
    disagreements: Vec<String>,
    /// Links that came up at a node that had not admitted the peer, or carried data while
    /// pending.
    admission_violations: Vec<String>,
}

/// A core config for node `id` with `peers`, open or not, with `approvals`.
fn core_config(
    id: &str,
    peers: Vec<PeerConfig>,
    seed: u64,
    open: bool,
    approvals: Approvals,
    allow: &BTreeSet<String>,
) -> CoreConfig {
    let mut cfg = CoreConfig::new(id, peers, seed);
    cfg.admission = policy(open, allow);
    cfg.approvals = approvals;
    cfg
}

/// The admission policy of an open or closed node with `allow`.
fn policy(open: bool, allow: &BTreeSet<String>) -> AdmissionPolicy {
    AdmissionPolicy {
        open,
        allow: allow.clone(),
        has_secret: false,
    }
}

const ROOMS: usize = 3;
const CHAOS_MS: u64 = 30_000;
const END_MS: u64 = 400_000;

fn room_name(r: usize) -> String {
    format!("room-{r}")
}

impl Sim {
    fn new(seed: u64, scenario: Scenario) -> Sim {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let n = match scenario {
            Scenario::Random | Scenario::Approval | Scenario::Reload => 2 + rng.below(3) as usize,
            Scenario::ConfiguredMeetsDiscovered => 2,
        };
        let open: Vec<bool> = (0..n)
            .map(|_| match scenario {
                Scenario::Approval | Scenario::Reload => false,
                _ => rng.chance(50),
            })
            .collect();
        // Node ids are real ones (libp2p peer ids of seeded keys): a multiaddr names its node.
        let ids: Vec<String> = (0..n)
            .map(|_| {
                let mut key = [0u8; 32];
                for chunk in key.chunks_mut(8) {
                    chunk.copy_from_slice(&rng.next().to_le_bytes());
                }
                ymesh::mesh::NodeIdentity::from_secret_bytes(key)
                    .node_id()
                    .to_string()
            })
            .collect();
        let urls: Vec<String> = (0..n).map(|i| format!("ws://node{i}:3913")).collect();
        // The same nodes over libp2p: a configured peer is sometimes a multiaddr (dialed
        // without a probe, its node id taken from the address), beside WebSocket peers and
        // discovery (the same node reachable by both roads: still one link per pair).
        let p2p_urls: Vec<String> = (0..n)
            .map(|i| format!("/ip4/10.0.0.{}/tcp/4001/p2p/{}", i + 1, ids[i]))
            .collect();
        // Topology: a chain keeps the graph connected; other pairs are linked at random.
        let mut configured: Vec<Vec<PeerConfig>> = vec![Vec::new(); n];
        let mut discovered: Vec<(usize, usize)> = Vec::new();
        let mut pairs = BTreeSet::new();
        for i in 0..n {
            for j in i + 1..n {
                if j != i + 1 && !rng.chance(50) {
                    continue;
                }
                pairs.insert((i, j));
                // A build without the `p2p` feature refuses multiaddr peers: WebSocket only
                // (the draw still happens, so a seed means the same mesh in both builds).
                let p2p = rng.chance(30) && cfg!(feature = "p2p");
                let cfg = |k: usize, named: bool| PeerConfig {
                    url: if p2p {
                        p2p_urls[k].clone()
                    } else {
                        urls[k].clone()
                    },
                    node_id: named.then(|| ids[k].clone()),
                    ..PeerConfig::default()
                };
                let shape = match scenario {
                    Scenario::Random | Scenario::Approval | Scenario::Reload => rng.below(5),
                    Scenario::ConfiguredMeetsDiscovered => 4,
                };
                match shape {
                    0 => configured[i].push(cfg(j, rng.chance(50))),
                    1 => configured[j].push(cfg(i, rng.chance(50))),
                    2 => {
                        configured[i].push(cfg(j, rng.chance(50)));
                        configured[j].push(cfg(i, rng.chance(50)));
                    }
                    3 => discovered.push((i, j)),
                    // Configured on one side, discovered on the other.
                    _ => {
                        if rng.chance(50) {
                            configured[i].push(cfg(j, false));
                            discovered.push((j, i));
                        } else {
                            configured[j].push(cfg(i, false));
                            discovered.push((i, j));
                        }
                    }
                }
            }
        }
        // Who trusts whom from the start: configured peers, and some approved beforehand.
        let mut trusts: Vec<BTreeSet<usize>> = (0..n)
            .map(|i| {
                (0..n)
                    .filter(|&k| {
                        configured[i]
                            .iter()
                            .any(|p| p.url == urls[k] || p.url == p2p_urls[k])
                    })
                    .collect()
            })
            .collect();
        let mut approvals: Vec<Approvals> = vec![Approvals::default(); n];
        let mut later: Vec<(usize, usize)> = Vec::new();
        for &(i, j) in &pairs {
            for (x, y) in [(i, j), (j, i)] {
                if open[x] || trusts[x].contains(&y) {
                    continue;
                }
                if !matches!(scenario, Scenario::Reload) && rng.chance(30) {
                    approvals[x].approve(&ids[y]);
                    trusts[x].insert(y);
                } else {
                    later.push((x, y));
                }
            }
        }
        let nodes = (0..n)
            .map(|i| Node {
                id: ids[i].clone(),
                url: urls[i].clone(),
                core: MeshCore::new(
                    core_config(
                        &ids[i],
                        configured[i].clone(),
                        rng.next(),
                        open[i],
                        approvals[i].clone(),
                        &BTreeSet::new(),
                    ),
                    0,
                ),
                open: open[i],
                trusts: trusts[i].clone(),
                allow: BTreeSet::new(),
                boot: 0,
                alive: true,
                rooms: BTreeMap::new(),
                edits: 0,
                next_link: 1,
                issuer: CommandIssuer::new(ids[i].clone(), "0"),
                delivered: HashMap::new(),
            })
            .collect();
        let mut sim = Sim {
            seed,
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: Vec::new(),
            nodes,
            conns: HashMap::new(),
            next_conn: 1,
            blocked: BTreeSet::new(),
            chaos: true,
            updates_sent: 0,
            late_commands: Vec::new(),
            pairs,
            discovered: Vec::new(),
            trace: std::env::var("MESH_SIM_TRACE").is_ok(),
            dup_decisions: HashMap::new(),
            disagreements: Vec::new(),
            admission_violations: Vec::new(),
        };
        // A person approves the rest at random times, some only after the network healed; or
        // reloads put them on the allow list, and some are taken off and put back meanwhile.
        for (node, other) in later {
            let at = sim.rng.below(CHAOS_MS + 20_000);
            if !matches!(scenario, Scenario::Reload) {
                sim.at(at, Ev::Approve { node, other });
                continue;
            }
            if sim.rng.chance(50) {
                let first = sim.rng.below(CHAOS_MS / 2);
                let off = first + 1 + sim.rng.below(CHAOS_MS / 2);
                for (t, allowed) in [(first, true), (off, false)] {
                    sim.at(
                        t,
                        Ev::Allow {
                            node,
                            other,
                            allowed,
                        },
                    );
                }
                let back = off + 1 + sim.rng.below(20_000);
                sim.at(
                    back,
                    Ev::Allow {
                        node,
                        other,
                        allowed: true,
                    },
                );
            } else {
                sim.at(
                    at,
                    Ev::Allow {
                        node,
                        other,
                        allowed: true,
                    },
                );
            }
        }
        for i in 0..n {
            sim.core(i, Event::Start);
        }
        for (a, b) in discovered {
            // mDNS is symmetric: both find each other, at different times.
            for (x, y) in [(a, b), (b, a)] {
                sim.discovered.push((x, y));
                let at = sim.rng.below(5_000);
                let boot = sim.nodes[x].boot;
                sim.at(
                    at,
                    Ev::Core {
                        node: x,
                        boot,
                        event: CoreEvent::Discovered { other: y },
                    },
                );
            }
        }
        // Workload and chaos.
        for _ in 0..(10 + sim.rng.below(30)) {
            let at = sim.rng.below(CHAOS_MS);
            let node = sim.rng.below(n as u64) as usize;
            let room = sim.rng.below(ROOMS as u64) as usize;
            sim.at(at, Ev::Edit { node, room });
        }
        for _ in 0..sim.rng.below(4) {
            let at = sim.rng.below(CHAOS_MS);
            let node = sim.rng.below(n as u64) as usize;
            let room = sim
                .rng
                .chance(50)
                .then(|| sim.rng.below(ROOMS as u64) as usize);
            sim.at(
                at,
                Ev::Issue {
                    node,
                    room,
                    late: false,
                },
            );
        }
        for _ in 0..sim.rng.below(3) {
            let at = sim.rng.below(CHAOS_MS);
            let node = sim.rng.below(n as u64) as usize;
            sim.at(at, Ev::Restart { node });
        }
        for _ in 0..sim.rng.below(4) {
            let at = sim.rng.below(CHAOS_MS);
            sim.at(at, Ev::DropSome);
        }
        sim.at(CHAOS_MS, Ev::Heal);
        for _ in 0..sim.rng.below(3) {
            let a = sim.rng.below(n as u64) as usize;
            let b = sim.rng.below(n as u64) as usize;
            if a != b {
                sim.blocked.insert((a.min(b), a.max(b)));
            }
        }
        // After the network heals: edits and commands that must reach everyone.
        for _ in 0..3 {
            let at = CHAOS_MS + 100_000 + sim.rng.below(10_000);
            let node = sim.rng.below(n as u64) as usize;
            let room = sim.rng.below(ROOMS as u64) as usize;
            sim.at(at, Ev::Edit { node, room });
        }
        let at = CHAOS_MS + 120_000;
        let node = sim.rng.below(n as u64) as usize;
        sim.at(
            at,
            Ev::Issue {
                node,
                room: None,
                late: true,
            },
        );
        sim
    }

    fn at(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.events.push(Some(ev));
        self.queue
            .push(Reverse((at.max(self.now), self.seq, self.events.len() - 1)));
    }

    fn after(&mut self, delay: u64, ev: Ev) {
        let at = self.now + delay;
        self.at(at, ev);
    }

    fn delay(&mut self) -> u64 {
        1 + self.rng.below(40)
    }

    fn reachable(&self, a: usize, b: usize) -> bool {
        self.nodes[b].alive && !(self.chaos && self.blocked.contains(&(a.min(b), a.max(b))))
    }

    fn send(&mut self, conn: Conn, from_side: usize, msg: Msg) {
        let delay = self.delay();
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !c.open {
            return;
        }
        let data = matches!(
            msg,
            Msg::Step1 { .. } | Msg::Step2 { .. } | Msg::Update { .. } | Msg::Control(_)
        );
        if data && !c.ends[from_side].up {
            let node = c.ends[from_side].node;
            self.admission_violations.push(format!(
                "node {node} sent {msg:?} on conn {conn} before the link was up"
            ));
            return;
        }
        let to = 1 - from_side;
        let at = (self.now + delay).max(c.last[to]);
        c.last[to] = at;
        self.at(
            at,
            Ev::Deliver {
                conn,
                side: to,
                msg,
            },
        );
    }

    /// Feeds `event` to node `i`'s core and carries out the actions.
    fn core(&mut self, i: usize, event: Event<Conn>) {
        let trace = self.trace;
        if trace {
            println!("{:>7} n{i} <- {event:?}", self.now);
        }
        let handshaken = match &event {
            Event::Handshaken {
                handle, node_id, ..
            } => Some((*handle, node_id.clone())),
            _ => None,
        };
        let actions = self.nodes[i].core.handle(event, self.now);
        if let Some((conn, node)) = handshaken {
            self.record_tie_break(i, conn, &node, &actions);
        }
        if trace {
            for a in &actions {
                println!("{:>7} n{i} -> {a:?}", self.now);
            }
        }
        for a in actions {
            self.act(i, a);
        }
    }

    /// Notes which link node `i` kept and which it dropped when link `conn` to `node`
    /// finished its handshake beside another; two nodes must never disagree.
    fn record_tie_break(&mut self, i: usize, conn: Conn, node: &str, actions: &[Action<Conn>]) {
        let mut decision = None;
        for a in actions {
            match a {
                Action::Reject { .. } => {
                    let kept = self.nodes[i]
                        .core
                        .live_links()
                        .into_iter()
                        .find(|(_, _, n)| n == node)
                        .and_then(|(l, _, _)| self.conn_of(i, l).map(|(c, _)| c));
                    if let Some(kept) = kept {
                        decision = Some((kept, conn));
                    }
                }
                Action::Close { handle, .. } => decision = Some((conn, *handle)),
                _ => {}
            }
        }
        let Some((kept, dropped)) = decision else {
            return;
        };
        // Both nodes decide about the same two links the same way, whichever saw them first.
        let pair = (kept.min(dropped), kept.max(dropped));
        match self.dup_decisions.get(&pair) {
            Some(&(k, j)) if j != i && k != kept => self.disagreements.push(format!(
                "at {} ms node {i} kept conn {kept} over {dropped}; node {j} kept conn {k}",
                self.now
            )),
            _ => {
                self.dup_decisions.insert(pair, (kept, i));
            }
        }
    }

    fn end_of(&self, conn: Conn, node: usize) -> Option<usize> {
        let c = self.conns.get(&conn)?;
        (0..2).find(|&s| c.ends[s].node == node && c.ends[s].boot == self.nodes[node].boot)
    }

    fn conn_of(&self, node: usize, link: LinkId) -> Option<(Conn, usize)> {
        self.conns.iter().find_map(|(id, c)| {
            (0..2)
                .find(|&s| {
                    c.ends[s].node == node
                        && c.ends[s].link == link
                        && c.ends[s].boot == self.nodes[node].boot
                })
                .map(|s| (*id, s))
        })
    }

    fn node_by_url(&self, url: &str) -> Option<usize> {
        if url.starts_with('/') {
            let id = url.rsplit("/p2p/").next()?;
            return self.nodes.iter().position(|n| n.id == id);
        }
        let host = url.split("://").nth(1)?.split('/').next()?;
        self.nodes
            .iter()
            .position(|n| n.url.split("://").nth(1) == Some(host))
    }

    fn act(&mut self, i: usize, action: Action<Conn>) {
        let boot = self.nodes[i].boot;
        match action {
            Action::Probe { peer, attempt, url } => {
                let answer = match self.node_by_url(&url) {
                    Some(t) if self.reachable(i, t) => Probe::Ymesh,
                    _ => Probe::Unreachable("cannot connect".into()),
                };
                let d = self.delay();
                self.after(
                    d,
                    Ev::Core {
                        node: i,
                        boot,
                        event: CoreEvent::Probed {
                            peer,
                            attempt,
                            answer,
                        },
                    },
                );
            }
            Action::DialMesh {
                peer,
                attempt,
                url,
                expect,
                ..
            } => match self.node_by_url(&url) {
                Some(t) if self.reachable(i, t) => {
                    let conn = self.next_conn;
                    self.next_conn += 1;
                    let link = self.nodes[i].next_link;
                    self.nodes[i].next_link += 1;
                    let end = |node, boot, link, peer, expect| End {
                        node,
                        boot,
                        link,
                        peer,
                        up: false,
                        done: false,
                        expect,
                        welcomed: false,
                        welcomed_by_peer: false,
                        tag: Vec::new(),
                    };
                    let nonce = [self.rng.next(), self.rng.next()];
                    self.conns.insert(
                        conn,
                        ConnState {
                            ends: [
                                end(i, boot, link, peer, expect),
                                // Filled in when the connection opens at the target.
                                end(t, u64::MAX, 0, PeerKey::Inbound(0), None),
                            ],
                            nonce,
                            open: true,
                            last: [0, 0],
                        },
                    );
                    let d = self.delay();
                    self.after(d, Ev::Open { conn });
                }
                _ => {
                    let d = self.delay();
                    self.after(
                        d,
                        Ev::Core {
                            node: i,
                            boot,
                            event: CoreEvent::DialFailed { peer, attempt },
                        },
                    );
                }
            },
            Action::DialPlain { .. } => panic!("no plain servers in the simulation"),
            Action::Admit { link, .. } => {
                let ours: BTreeMap<String, String> = self.nodes[i]
                    .rooms
                    .iter()
                    .map(|(r, d)| (r.clone(), digest(d)))
                    .collect();
                self.core(
                    i,
                    Event::LinkOpened {
                        link,
                        ours,
                        changed: Vec::new(),
                        marker: None,
                        store_now: None,
                    },
                );
            }
            Action::Reject { link, .. } => {
                if let Some((conn, _)) = self.conn_of(i, link) {
                    self.close(conn, i);
                }
            }
            Action::Close { handle, .. } => self.close(handle, i),
            Action::Verdict { link, verdict } => {
                let Some((conn, side)) = self.conn_of(i, link) else {
                    return;
                };
                // Verdicts are handshake messages: they travel before the link is up.
                self.send(conn, side, Msg::Verdict(verdict.clone()));
                match verdict {
                    Verdict::Welcome(_) => {
                        let c = self.conns.get_mut(&conn).expect("conn");
                        c.ends[side].welcomed = true;
                        if c.ends[side].welcomed_by_peer {
                            self.handshaken(conn, side);
                        }
                    }
                    Verdict::Pending(_) => {}
                    Verdict::Refuse(reason) => {
                        let c = self.conns.get_mut(&conn).expect("conn");
                        c.ends[side].done = true;
                        let peer = c.ends[side].peer;
                        self.core(
                            i,
                            Event::HandshakeFailed {
                                link,
                                peer,
                                end: HandshakeEnd::Refused(reason),
                            },
                        );
                        self.close_quietly(conn, side);
                    }
                }
            }
            Action::Send { link, control } => {
                if let Some((conn, side)) = self.conn_of(i, link) {
                    self.send(conn, side, Msg::Control(control));
                }
            }
            Action::SendStep1 { link, rooms } => {
                if let Some((conn, side)) = self.conn_of(i, link) {
                    for room in rooms {
                        let have = self.nodes[i].rooms.get(&room).cloned().unwrap_or_default();
                        self.send(conn, side, Msg::Step1 { room, have });
                    }
                }
            }
            Action::ForwardCommand { links, command } => {
                for link in links {
                    if let Some((conn, side)) = self.conn_of(i, link) {
                        let control = Control::Command {
                            command: command.next_hop(),
                            state_vector: None,
                        };
                        self.send(conn, side, Msg::Control(control));
                    }
                }
            }
            Action::DeliverCommand { command, .. } => {
                *self.nodes[i]
                    .delivered
                    .entry((command.id, boot))
                    .or_default() += 1;
            }
            Action::DeliverResult { .. } | Action::PersistMarker { .. } => {}
            Action::SetTimer { after_ms, timer } => {
                self.after(
                    after_ms,
                    Ev::Core {
                        node: i,
                        boot,
                        event: CoreEvent::Timer(timer),
                    },
                );
            }
        }
    }

    /// Node `by` closes `conn`: the other end hears it after what was already sent.
    fn close(&mut self, conn: Conn, by: usize) {
        let Some(side) = self.end_of(conn, by) else {
            return;
        };
        self.send(conn, side, Msg::Close);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.open = false;
        }
        self.end_closed(conn, side, "closed here");
    }

    /// Reports the end of `conn` at `side` to its core, once.
    fn end_closed(&mut self, conn: Conn, side: usize, reason: &str) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let end = c.ends[side].clone();
        if end.done || end.boot != self.nodes[end.node].boot || !self.nodes[end.node].alive {
            return;
        }
        c.ends[side].done = true;
        let event = if end.up {
            Event::LinkClosed {
                link: end.link,
                reason: reason.into(),
            }
        } else {
            Event::HandshakeFailed {
                link: end.link,
                peer: end.peer,
                end: HandshakeEnd::Closed(reason.into()),
            }
        };
        self.core(end.node, event);
    }

    /// A network failure: both ends hear of it, in-flight messages are lost.
    fn drop_conn(&mut self, conn: Conn) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.open = false;
        }
        self.end_closed(conn, 0, "connection lost");
        self.end_closed(conn, 1, "connection lost");
    }

    fn apply(&mut self, i: usize, room: &str, ops: &Doc, origin: Option<LinkId>) {
        let doc = self.nodes[i].rooms.entry(room.to_string()).or_default();
        let new: Doc = ops.difference(doc).copied().collect();
        if new.is_empty() {
            return; // only real changes travel
        }
        doc.extend(new.iter().copied());
        let mut targets = Vec::new();
        self.nodes[i]
            .core
            .fanout(room, origin, self.now, true, |link, _, _| {
                targets.push(link)
            });
        for link in targets {
            if let Some((conn, side)) = self.conn_of(i, link) {
                self.updates_sent += 1;
                self.send(
                    conn,
                    side,
                    Msg::Update {
                        room: room.to_string(),
                        ops: new.clone(),
                    },
                );
            }
        }
    }

    fn deliver(&mut self, conn: Conn, side: usize, msg: Msg) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let end = c.ends[side].clone();
        if end.done || end.boot != self.nodes[end.node].boot || !self.nodes[end.node].alive {
            return;
        }
        let i = end.node;
        match msg {
            Msg::Close => self.end_closed(conn, side, "closed by the peer"),
            Msg::Hello { node, nonce } => {
                if end.expect.as_deref().is_some_and(|e| e != node) {
                    let c = self.conns.get_mut(&conn).expect("conn");
                    c.ends[side].done = true;
                    self.core(
                        i,
                        Event::HandshakeFailed {
                            link: end.link,
                            peer: end.peer,
                            end: HandshakeEnd::Refused("not the expected node".into()),
                        },
                    );
                    self.close_quietly(conn, side);
                    return;
                }
                let mine = self.conns[&conn].nonce[side];
                let tag = if mine <= nonce {
                    [mine.to_be_bytes(), nonce.to_be_bytes()].concat()
                } else {
                    [nonce.to_be_bytes(), mine.to_be_bytes()].concat()
                };
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.ends[side].tag = tag;
                }
                // The channel proved the node id: the core gives its verdict (Action::Verdict).
                self.core(
                    i,
                    Event::Authenticated {
                        link: end.link,
                        peer: end.peer,
                        node_id: node,
                        secret: SecretCheck::NotConfigured,
                    },
                );
            }
            Msg::Verdict(verdict) => match verdict {
                Verdict::Welcome(_) => {
                    let c = self.conns.get_mut(&conn).expect("conn");
                    c.ends[side].welcomed_by_peer = true;
                    if c.ends[side].welcomed {
                        self.handshaken(conn, side);
                    }
                }
                Verdict::Pending(reason) => self.core(
                    i,
                    Event::PeerPending {
                        link: end.link,
                        peer: end.peer,
                        reason,
                    },
                ),
                Verdict::Refuse(reason) => {
                    let c = self.conns.get_mut(&conn).expect("conn");
                    c.ends[side].done = true;
                    self.core(
                        i,
                        Event::HandshakeFailed {
                            link: end.link,
                            peer: end.peer,
                            end: HandshakeEnd::Refused(reason),
                        },
                    );
                }
            },
            Msg::Control(control) => {
                if end.up {
                    self.core(
                        i,
                        Event::Control {
                            link: end.link,
                            control,
                        },
                    );
                }
            }
            Msg::Step1 { room, have } => {
                let ours = self.nodes[i].rooms.entry(room.clone()).or_default().clone();
                let ops: Doc = ours.difference(&have).copied().collect();
                self.core(
                    i,
                    Event::RoomSync {
                        link: end.link,
                        room: room.clone(),
                        step2: false,
                    },
                );
                self.send(conn, side, Msg::Step2 { room, ops });
            }
            Msg::Step2 { room, ops } => self.take_ops(i, end.link, room, ops, true),
            Msg::Update { room, ops } => {
                self.take_ops(i, end.link, room.clone(), ops, false);
                // The receiver acknowledges what it received (coalesced in the real link).
                let rooms = [(room, 1)].into_iter().collect();
                self.send(conn, side, Msg::Control(Control::Ack { rooms }));
            }
        }
    }

    /// A reload of `node`'s configuration with `other` on its allow list or off it.
    fn reload_allow(&mut self, node: usize, other: usize, allowed: bool) {
        let id = self.nodes[other].id.clone();
        let n = &mut self.nodes[node];
        if allowed {
            n.allow.insert(id);
            n.trusts.insert(other);
        } else {
            n.allow.remove(&id);
            n.trusts.remove(&other);
        }
        let peers = n.core.configured().to_vec();
        let admission = policy(n.open, &n.allow);
        if !n.alive {
            // Down: the file changed meanwhile; the node starts with it.
            let approvals = n.core.approvals().clone();
            let seed = self.rng.next();
            let n = &mut self.nodes[node];
            n.core = MeshCore::new(
                core_config(&n.id, peers, seed, n.open, approvals, &n.allow),
                self.now,
            );
            return;
        }
        self.core(
            node,
            Event::Reconfigure {
                peers,
                admission,
                secret_changed: false,
            },
        );
        // A peer no longer admitted has no link up here any more.
        if !self.nodes[node].trusts.contains(&other) {
            let boot = self.nodes[node].boot;
            for (conn, c) in &self.conns {
                for side in 0..2 {
                    let (end, far) = (&c.ends[side], &c.ends[1 - side]);
                    if end.node == node
                        && end.boot == boot
                        && far.node == other
                        && end.up
                        && !end.done
                    {
                        self.admission_violations.push(format!(
                            "node {node} kept link {conn} to node {other} up after a reload \
                             took it off the allow list"
                        ));
                    }
                }
            }
            // Nor does it list the peer as an offline one of its own, or let it reserve on
            // its relay.
            let other_id = self.nodes[other].id.clone();
            if self.nodes[node].core.admits_relay_reservation(&other_id) {
                self.admission_violations.push(format!(
                    "node {node} would let node {other} reserve on its relay after a reload \
                     took it off the allow list"
                ));
            }
            for (_, row) in self.nodes[node].core.rows() {
                if row.state.name() == "offline" && row.node_id.as_deref() == Some(&*other_id) {
                    self.admission_violations.push(format!(
                        "node {node} still lists node {other} as an offline peer after a \
                         reload took it off the allow list"
                    ));
                }
            }
        }
    }

    /// Both ends welcomed each other: this end's link is up, if its node admitted the peer.
    fn handshaken(&mut self, conn: Conn, side: usize) {
        let end = self.conns[&conn].ends[side].clone();
        if end.done || end.up || end.boot != self.nodes[end.node].boot {
            return;
        }
        let other = self.conns[&conn].ends[1 - side].node;
        let i = end.node;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.ends[side].up = true;
        }
        let node_id = self.nodes[other].id.clone();
        self.core(
            i,
            Event::Handshaken {
                link: end.link,
                peer: end.peer,
                node_id,
                tag: end.tag,
                handle: conn,
                road: Road::default(),
            },
        );
        // A rejected link was closed by `act`; an admitted one stays up, and must be one
        // this node admits now (a reload may have changed that since its verdict).
        let stayed_up = self
            .conns
            .get(&conn)
            .is_some_and(|c| c.open && !c.ends[side].done);
        if stayed_up && !self.nodes[i].open && !self.nodes[i].trusts.contains(&other) {
            self.admission_violations.push(format!(
                "node {i} brought up a link to node {other}, which it does not admit"
            ));
        }
    }

    fn take_ops(&mut self, i: usize, link: LinkId, room: String, ops: Doc, step2: bool) {
        self.core(
            i,
            Event::RoomSync {
                link,
                room: room.clone(),
                step2,
            },
        );
        self.apply(i, &room, &ops, Some(link));
    }

    fn close_quietly(&mut self, conn: Conn, side: usize) {
        self.send(conn, side, Msg::Close);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.open = false;
        }
    }
}

fn digest(doc: &Doc) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    doc.hash(&mut h);
    format!("{:016x}", h.finish())
}

impl Sim {
    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver { conn, side, msg } => self.deliver(conn, side, msg),
            Ev::Open { conn } => {
                let Some(c) = self.conns.get(&conn) else {
                    return;
                };
                let (dialer, target) = (c.ends[0].node, c.ends[1].node);
                let dialer_ok =
                    c.ends[0].boot == self.nodes[dialer].boot && self.nodes[dialer].alive;
                if !dialer_ok || !self.reachable(dialer, target) || !c.open {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.open = false;
                    }
                    self.end_closed(conn, 0, "cannot connect");
                    return;
                }
                let link = self.nodes[target].next_link;
                self.nodes[target].next_link += 1;
                let boot = self.nodes[target].boot;
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.ends[1].boot = boot;
                    c.ends[1].link = link;
                    c.ends[1].peer = PeerKey::Inbound(link);
                }
                self.core(
                    target,
                    Event::InboundOpened {
                        link,
                        remote: format!("conn-{conn}"),
                    },
                );
                for side in 0..2 {
                    let node = self.nodes[self.conns[&conn].ends[side].node].id.clone();
                    let nonce = self.conns[&conn].nonce[side];
                    self.send(conn, side, Msg::Hello { node, nonce });
                }
            }
            Ev::Core { node, boot, event } => {
                if boot != self.nodes[node].boot || !self.nodes[node].alive {
                    return;
                }
                let event = match event {
                    CoreEvent::Timer(t) => Event::Timer(t),
                    CoreEvent::Probed {
                        peer,
                        attempt,
                        answer,
                    } => Event::Probed {
                        peer,
                        attempt,
                        answer,
                    },
                    CoreEvent::DialFailed { peer, attempt } => Event::DialFailed {
                        peer,
                        attempt,
                        error: "cannot connect".into(),
                    },
                    CoreEvent::Discovered { other } => Event::Discovered {
                        node_id: self.nodes[other].id.clone(),
                        url: self.nodes[other].url.replace("ws://", "http://"),
                        source: DiscoverySource::Mdns,
                    },
                };
                self.core(node, event);
            }
            Ev::Edit { node, room } => {
                if !self.nodes[node].alive {
                    return;
                }
                self.nodes[node].edits += 1;
                let op = (node, self.nodes[node].edits);
                let ops: Doc = [op].into_iter().collect();
                self.apply(node, &room_name(room), &ops, None);
            }
            Ev::Restart { node } => {
                if !self.nodes[node].alive {
                    return;
                }
                // Every connection of the node is lost; its rooms are on disk.
                let conns: Vec<Conn> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| c.open && c.ends.iter().any(|e| e.node == node))
                    .map(|(id, _)| *id)
                    .collect();
                self.nodes[node].alive = false;
                for conn in conns {
                    self.drop_conn(conn);
                }
                let down = 1 + self.rng.below(20_000);
                let peers = self.nodes[node].core.configured().to_vec();
                let seed = self.rng.next();
                let n = &mut self.nodes[node];
                n.boot += 1;
                // Approvals persist across a restart.
                let approvals = n.core.approvals().clone();
                n.core = MeshCore::new(
                    core_config(&n.id, peers, seed, n.open, approvals, &n.allow),
                    self.now,
                );
                n.issuer = CommandIssuer::new(n.id.clone(), n.boot.to_string());
                self.after(down, Ev::Boot { node });
            }
            Ev::Boot { node } => {
                if self.nodes[node].alive {
                    return;
                }
                self.nodes[node].alive = true;
                self.core(node, Event::Start);
                let found: Vec<usize> = self
                    .discovered
                    .iter()
                    .filter(|(a, _)| *a == node)
                    .map(|(_, b)| *b)
                    .collect();
                for other in found {
                    let at = self.rng.below(3_000);
                    let boot = self.nodes[node].boot;
                    self.after(
                        at,
                        Ev::Core {
                            node,
                            boot,
                            event: CoreEvent::Discovered { other },
                        },
                    );
                }
            }
            Ev::Heal => self.chaos = false,
            Ev::Approve { node, other } => {
                self.nodes[node].trusts.insert(other);
                if self.nodes[node].alive {
                    let node_id = self.nodes[other].id.clone();
                    self.core(node, Event::Approve { node_id });
                } else {
                    // The person approves while the node is down: it takes effect at boot,
                    // as an approval written to the data directory would.
                    let id = self.nodes[other].id.clone();
                    let n = &mut self.nodes[node];
                    let mut approvals = n.core.approvals().clone();
                    approvals.approve(&id);
                    let peers = n.core.configured().to_vec();
                    n.core = MeshCore::new(
                        core_config(&n.id, peers, self.rng.next(), n.open, approvals, &n.allow),
                        self.now,
                    );
                }
            }
            Ev::Allow {
                node,
                other,
                allowed,
            } => self.reload_allow(node, other, allowed),
            Ev::DropSome => {
                let open: Vec<Conn> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| c.open)
                    .map(|(id, _)| *id)
                    .collect();
                if !open.is_empty() {
                    let conn = open[self.rng.below(open.len() as u64) as usize];
                    self.drop_conn(conn);
                }
            }
            Ev::Issue { node, room, late } => {
                if !self.nodes[node].alive {
                    return;
                }
                let now = self.now;
                let command: Command = self.nodes[node].issuer.issue(
                    CommandKind::Compact,
                    room.map(room_name),
                    serde_json::json!({}),
                    now,
                    if late { 200_000 } else { 20_000 },
                );
                if late {
                    self.late_commands.push((command.id.clone(), node));
                }
                self.core(node, Event::IssueCommand { command });
            }
        }
    }
}

impl Sim {
    /// Runs until nothing is left to do (or the time limit: a failure).
    fn run(&mut self) -> Result<(), String> {
        while let Some(Reverse((at, _, idx))) = self.queue.pop() {
            if at > END_MS {
                return Err(format!(
                    "still busy at {END_MS} ms: something circulates ({} updates sent)",
                    self.updates_sent
                ));
            }
            self.now = at;
            if let Some(ev) = self.events[idx].take() {
                if self.trace && !matches!(ev, Ev::Core { .. }) {
                    println!("{:>7} ev {ev:?}", self.now);
                }
                self.step(ev);
            }
        }
        Ok(())
    }

    /// The checks after the network healed and went quiet.
    fn check(&self) -> Result<(), String> {
        let n = self.nodes.len();
        if let Some(d) = self.disagreements.first() {
            return Err(format!("duplicate-link tie-break: {d}"));
        }
        if let Some(v) = self.admission_violations.first() {
            return Err(format!("admission: {v}"));
        }
        // One link per pair, the same connection at both ends.
        for i in 0..n {
            let links = self.nodes[i].core.live_links();
            for j in 0..n {
                if i == j {
                    continue;
                }
                let to_j: Vec<_> = links
                    .iter()
                    .filter(|(_, _, node)| *node == self.nodes[j].id)
                    .collect();
                let want = self.pairs.contains(&(i.min(j), i.max(j)));
                if to_j.len() > 1 {
                    return Err(format!("node {i} keeps {} links to node {j}", to_j.len()));
                }
                if want && to_j.is_empty() {
                    return Err(format!("node {i} has no link to node {j}"));
                }
                if let Some((link, _, _)) = to_j.first() {
                    let (conn, side) = self
                        .conn_of(i, *link)
                        .ok_or_else(|| format!("node {i}'s link {link} has no connection"))?;
                    let other = &self.conns[&conn].ends[1 - side];
                    let kept = self.nodes[j].core.live_links();
                    if other.node != j || !kept.iter().any(|(l, _, _)| *l == other.link) {
                        return Err(format!(
                            "nodes {i} and {j} keep different links (conn {conn})"
                        ));
                    }
                }
            }
        }
        // A node that is linked is never also listed as offline (an inbound-only peer whose
        // earlier link closed gives way to its new link).
        for (i, nd) in self.nodes.iter().enumerate() {
            let linked: Vec<String> = nd
                .core
                .live_links()
                .into_iter()
                .map(|(_, _, n)| n)
                .collect();
            for (_, row) in nd.core.rows() {
                if row.state.name() == "offline"
                    && row.node_id.as_ref().is_some_and(|id| linked.contains(id))
                {
                    return Err(format!(
                        "node {i} lists {:?} as offline while linked to it",
                        row.node_id
                    ));
                }
            }
        }
        // Every room converged.
        for r in 0..ROOMS {
            let name = room_name(r);
            let docs: Vec<Doc> = self
                .nodes
                .iter()
                .map(|nd| nd.rooms.get(&name).cloned().unwrap_or_default())
                .collect();
            if docs.iter().any(|d| *d != docs[0]) {
                return Err(format!("{name} did not converge: {docs:?}"));
            }
        }
        // Synced is true exactly for rooms equal on both ends.
        for i in 0..n {
            for j in 0..n {
                if i == j || !self.pairs.contains(&(i.min(j), i.max(j))) {
                    continue;
                }
                let marks = self.nodes[i].core.synced_rooms(&self.nodes[j].id);
                for (room, synced) in &marks {
                    let equal = self.nodes[i].rooms.get(room) == self.nodes[j].rooms.get(room);
                    if *synced && !equal {
                        return Err(format!(
                            "node {i} says {room} is synced with {j}, it is not"
                        ));
                    }
                    if !synced {
                        return Err(format!(
                            "node {i} says {room} is not synced with {j} after the network healed"
                        ));
                    }
                }
                for room in self.nodes[i].rooms.keys() {
                    if !marks.iter().any(|(r, _)| r == room) {
                        return Err(format!("node {i} has no sync state of {room} with {j}"));
                    }
                }
            }
        }
        // Each command once per node run; commands issued after healing reach every node.
        for (i, nd) in self.nodes.iter().enumerate() {
            if let Some(((id, boot), count)) = nd.delivered.iter().find(|(_, c)| **c > 1) {
                return Err(format!(
                    "node {i} (run {boot}) got command {id} {count} times"
                ));
            }
            for (id, issuer) in &self.late_commands {
                if *issuer != i && !nd.delivered.keys().any(|(c, _)| c == id) {
                    return Err(format!("node {i} never got command {id}"));
                }
            }
        }
        // Updates crossed links a bounded number of times.
        let edits: u64 = self.nodes.iter().map(|nd| nd.edits).sum();
        let bound = (edits + 1) * (n * n) as u64 * 4;
        if self.updates_sent > bound {
            return Err(format!(
                "{} updates sent for {edits} edits (bound {bound})",
                self.updates_sent
            ));
        }
        Ok(())
    }
}

/// What a seed's mesh looks like.
#[derive(Debug, Clone, Copy)]
enum Scenario {
    /// 2 to 4 nodes, each pair configured on one side, both, by discovery, or configured on
    /// one side and discovered on the other; drops, partitions, restarts, commands.
    Random,
    /// Two nodes: one has the other configured, the other finds it by mDNS, so both may
    /// dial at once (the duplicate-link tie-break's hard case), with chaos as above.
    ConfiguredMeetsDiscovered,
    /// As `Random`, but no node is open: every pair links only once both sides admitted the
    /// other (configured, approved at start, or approved by a person during the run).
    Approval,
    /// As `Approval`, with reloads of the allow list in place of approvals, some of which
    /// take a peer off again for a while.
    Reload,
}

fn run_seed(seed: u64) -> Result<(), String> {
    run_scenario(seed, Scenario::Random)
}

fn run_scenario(seed: u64, scenario: Scenario) -> Result<(), String> {
    let mut sim = Sim::new(seed, scenario);
    sim.run()?;
    sim.check()?;
    let _ = sim.seed;
    Ok(())
}

#[test]
fn mesh_sim() {
    if let Ok(seed) = std::env::var("MESH_SIM_SEED") {
        let seed: u64 = seed.parse().expect("MESH_SIM_SEED is a number");
        if let Err(e) = run_seed(seed) {
            panic!("mesh_sim seed {seed}: {e}");
        }
        println!("mesh_sim: seed {seed} passed");
        return;
    }
    let seeds: u64 = std::env::var("MESH_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    let started = std::time::Instant::now();
    let mut failed = Vec::new();
    for seed in 0..seeds {
        if let Err(e) = run_seed(seed) {
            failed.push((seed, e));
        }
    }
    println!(
        "mesh_sim: {seeds} seeds in {:.1} s, {} failed",
        started.elapsed().as_secs_f64(),
        failed.len()
    );
    if std::env::var("MESH_SIM_VERBOSE").is_ok() {
        for (seed, e) in &failed {
            println!("seed {seed}: {e}");
        }
    }
    if let Some((seed, e)) = failed.first() {
        panic!(
            "mesh_sim: {} of {seeds} seeds failed; first: seed {seed}: {e}\n\
             replay with: MESH_SIM_SEED={seed} cargo test --test mesh_sim -- --nocapture",
            failed.len()
        );
    }
}

/// Runs seeds 0..1000 of `scenario`; the first failure names the test and the seed.
fn run_seeds(test: &str, scenario: Scenario) {
    let seeds = 1000;
    for seed in 0..seeds {
        if let Err(e) = run_scenario(seed, scenario) {
            panic!(
                "{test} seed {seed}: {e}\n\
                 (the scenario is {scenario:?}; replay by running it alone with MESH_SIM_TRACE=1)"
            );
        }
    }
    println!("mesh_sim: {test}: {seeds} seeds");
}

/// The case that motivated the simulator: a configured peer on one side, mDNS on the other.
/// Before the fix, a link dialed to a discovered peer counted as inbound in the tie-break,
/// so the two nodes could each keep a different link.
#[test]
fn configured_meets_discovered() {
    run_seeds(
        "configured_meets_discovered",
        Scenario::ConfiguredMeetsDiscovered,
    );
}

/// Device approval: no open node; pending links wait for a person and carry nothing; once
/// every pair is approved the mesh converges as before.
#[test]
fn pending_until_approved() {
    run_seeds("pending_until_approved", Scenario::Approval);
}

/// Reloads: allow lists change while the mesh runs; a peer taken off loses its link at once,
/// waits as pending, and links again when it is put back; the mesh converges as before.
#[test]
fn allow_list_reloads() {
    run_seeds("allow_list_reloads", Scenario::Reload);
}
