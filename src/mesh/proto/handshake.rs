//! The mesh handshake inside the secure channel, as a pure state machine: hello, the mesh
//! secret proven without exposing it, then the admission verdicts of both sides.
//!
//! This module owns what two nodes say to each other between the secure channel coming up
//! ([`super::channel`], which already proved both node ids) and the link carrying rooms. It
//! does no I/O and reads no clock: the shell feeds each received [`Control`] to
//! [`Handshake::on_message`] and each verdict of its core to [`Handshake::verdict`], and
//! carries out the [`Action`]s. The shell also enforces the deadline
//! (`limits.mesh_handshake_timeout_s`, 4408) until a side holds the link as pending.
//!
//! ```text
//!   A                                          B
//!   Hello{A, boot, listen, pake_A?} ─────▶
//!                            ◀───── Hello{B, boot, listen, pake_B?}
//!   (both sent a pake: key K = SPAKE2(secret, channel hash))
//!   Proof{HMAC(K, "i"|hash)}        ─────▶   (only when both sent a pake)
//!                            ◀───── Proof{HMAC(K, "r"|hash)}
//!   (each side: Authenticated → its core decides)
//!   Welcome | Pending{reason} | Refused{reason} ─────▶ (and the same back)
//!   Established once both sent Welcome   (a Pending side sends Welcome on approval)
//! ```
//!
//! # The mesh secret
//!
//! A side with a mesh secret sends a SPAKE2 message (symmetric mode, Ed25519 group, the
//! channel's handshake hash as identity). Each SPAKE2 message on its own reveals nothing
//! that can be checked against a guessed secret, and the confirmation MAC is keyed by the
//! SPAKE2 result: a stranger who ran the exchange with a guess learns only whether that one
//! guess was right (an online guess, limited by the pre-authentication budget). Binding to
//! the handshake hash ties the proof to this connection; the role byte makes the two
//! confirmations differ, so one cannot be reflected as the other.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use spake2::{Ed25519Group, Identity, Password, Spake2};

use super::approval::{SecretCheck, Verdict};
use super::channel::Role;
use crate::mesh::hex;
use crate::mesh::wire::{Control, MESH_PROTOCOL_VERSION};

/// Domain tag of the secret confirmation MAC.
pub const CONFIRM_DOMAIN: &[u8] = b"ymesh-mesh-secret-confirm";

type HmacSha256 = Hmac<Sha256>;

/// The secure channel's facts the handshake builds on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The peer's node id, proven by the channel.
    pub remote: String,
    /// The channel's handshake hash (the same at both ends of this connection only).
    pub hash: [u8; 32],
    /// This side's role in the channel.
    pub role: Role,
}

/// What this side learned once the peer is authenticated, for its core to decide on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// The peer's node id.
    pub node_id: String,
    /// Whether the peer proved this node's mesh secret.
    pub secret: SecretCheck,
}

/// What the handshake learned about an admitted peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's node id, proven by the channel.
    pub node_id: String,
    /// The peer's boot id (changes every time it starts).
    pub boot_id: String,
    /// The HTTP URL the peer says it listens on, if it knows one.
    pub listen: Option<String>,
    /// The mesh protocol version the peer speaks.
    pub version: u32,
    /// The channel's handshake hash: the same at both ends of this connection and fresh on
    /// every other. Two links between the same pair dialed by the same side are told apart
    /// by it (the smaller is kept).
    pub link_tag: Vec<u8>,
}

/// How a handshake ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Both sides admitted each other; the link is up.
    Established(PeerInfo),
    /// This node refused the peer; the reason was sent to it in a `Refused` message.
    Refused(HandshakeError),
    /// The peer refused this node, with its reason.
    RefusedByPeer(String),
}

/// What the shell must do next, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send this control message to the peer.
    Send(Control),
    /// The peer is authenticated: ask the core for a verdict and feed it to
    /// [`Handshake::verdict`].
    Authenticated(Authenticated),
    /// The peer holds this node until its operator approves; the link stays open.
    PeerPending(String),
    /// The handshake is over. Close the connection unless the outcome is
    /// [`Outcome::Established`] (after sending any preceding `Send`).
    Finish(Outcome),
}

/// Why this node refused a peer. The `Display` text is the reason sent in `Refused`, so it
/// is written for the operator of the other node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The peer speaks another mesh protocol version.
    #[error("mesh protocol version {theirs} is not supported by this node (speaks {ours})")]
    VersionMismatch {
        /// The peer's version.
        theirs: u32,
        /// Ours ([`MESH_PROTOCOL_VERSION`]).
        ours: u32,
    },
    /// The hello's node id is not the one the channel proved.
    #[error("hello claims node id {claimed} but the secure channel proved node {actual}")]
    NodeIdMismatch {
        /// The claimed node id.
        claimed: String,
        /// The node id the channel proved.
        actual: String,
    },
    /// A hello field is malformed.
    #[error("invalid hello: {0}")]
    InvalidHello(String),
    /// This node's core refused the peer (a denied node, or too many waiting).
    #[error("{0}")]
    NotAdmitted(String),
    /// A message arrived that the handshake does not allow at this point.
    #[error("protocol error: unexpected {got} message {during}")]
    Unexpected {
        /// The message's `type`.
        got: &'static str,
        /// Where the handshake was.
        during: &'static str,
    },
}

/// The confirmation MAC of the side with `role`: HMAC-SHA256 under the SPAKE2 key of
/// `CONFIRM_DOMAIN · role byte · channel hash`.
pub fn confirmation(key: &[u8], role: Role, hash: &[u8; 32]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(CONFIRM_DOMAIN);
    mac.update(&[role.byte()]);
    mac.update(hash);
    mac.finalize().into_bytes().into()
}

fn confirmation_ok(key: &[u8], role: Role, hash: &[u8; 32], tag: &[u8]) -> bool {
    let mut mac = HmacSha256::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(CONFIRM_DOMAIN);
    mac.update(&[role.byte()]);
    mac.update(hash);
    mac.verify_slice(tag).is_ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    New,
    AwaitHello,
    AwaitProof,
    /// Authenticated; verdicts travel.
    Verdicts,
    Done,
}

impl State {
    fn during(self) -> &'static str {
        match self {
            State::New => "before the handshake started",
            State::AwaitHello => "while waiting for hello",
            State::AwaitProof => "while waiting for proof",
            State::Verdicts => "while waiting for admission",
            State::Done => "after the handshake",
        }
    }
}

/// The peer's hello, checked.
#[derive(Debug, Clone)]
struct PeerHello {
    boot_id: String,
    listen: Option<String>,
    version: u32,
}

/// One side of one in-channel handshake. See the module docs for the sequence.
pub struct Handshake {
    node_id: String,
    boot_id: String,
    listen: Option<String>,
    binding: Binding,
    spake: Option<Spake2<Ed25519Group>>,
    pake_msg: Option<Vec<u8>>,
    key: Option<Vec<u8>>,
    state: State,
    peer: Option<PeerHello>,
    secret: Option<SecretCheck>,
    sent_welcome: bool,
    got_welcome: bool,
    /// This side holds the peer as pending.
    holding: bool,
    /// The peer holds this side as pending.
    held: bool,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("node_id", &self.node_id)
            .field("binding", &self.binding)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Handshake {
    /// A handshake for node `node_id` (this run's `boot_id`, its own HTTP URL if known) over
    /// the channel `binding`, proving `secret` if it has one.
    pub fn new(
        node_id: impl Into<String>,
        boot_id: impl Into<String>,
        listen: Option<String>,
        binding: Binding,
        secret: Option<&str>,
    ) -> Self {
        let (spake, pake_msg) = match secret {
            Some(secret) => {
                let (s, m) = Spake2::<Ed25519Group>::start_symmetric(
                    &Password::new(secret.as_bytes()),
                    &Identity::new(&binding.hash),
                );
                (Some(s), Some(m))
            }
            None => (None, None),
        };
        Self {
            node_id: node_id.into(),
            boot_id: boot_id.into(),
            listen,
            binding,
            spake,
            pake_msg,
            key: None,
            state: State::New,
            peer: None,
            secret: None,
            sent_welcome: false,
            got_welcome: false,
            holding: false,
            held: false,
        }
    }

    /// Begins the handshake: returns our hello to send. Calling it again returns nothing.
    pub fn start(&mut self) -> Vec<Action> {
        if self.state != State::New {
            return Vec::new();
        }
        self.state = State::AwaitHello;
        vec![Action::Send(Control::Hello {
            version: MESH_PROTOCOL_VERSION,
            node_id: self.node_id.clone(),
            boot_id: self.boot_id.clone(),
            listen: self.listen.clone(),
            pake: self.pake_msg.as_deref().map(hex::encode),
        })]
    }

    /// Whether either side holds the link as pending (the shell lifts the deadline then).
    pub fn is_waiting_for_approval(&self) -> bool {
        self.holding || self.held
    }

    /// Whether the handshake has finished.
    pub fn is_finished(&self) -> bool {
        self.state == State::Done
    }

    /// Feeds one control message received from the peer; returns what to do.
    pub fn on_message(&mut self, msg: Control) -> Vec<Action> {
        let mut actions = self.start();
        if self.state == State::Done {
            return actions;
        }
        match (self.state, msg) {
            (_, Control::Refused { reason }) => {
                actions.push(self.finish(Outcome::RefusedByPeer(reason)));
            }
            // Newer peers' messages, and liveness probes, are not the handshake's business.
            (_, Control::Unknown | Control::Ping { .. } | Control::Pong { .. }) => {}
            (State::AwaitHello, hello @ Control::Hello { .. }) => {
                actions.extend(self.on_hello(hello));
            }
            (State::AwaitProof, Control::Proof { mac }) => {
                let ok = match (hex::decode(&mac), &self.key) {
                    (Some(tag), Some(key)) => {
                        confirmation_ok(key, self.binding.role.other(), &self.binding.hash, &tag)
                    }
                    _ => false,
                };
                let check = if ok {
                    SecretCheck::Proven
                } else {
                    SecretCheck::Wrong
                };
                actions.push(self.authenticated(check));
            }
            (State::Verdicts, Control::Welcome {}) => {
                self.got_welcome = true;
                self.held = false;
                actions.extend(self.established());
            }
            (State::Verdicts, Control::Pending { reason }) => {
                self.held = true;
                actions.push(Action::PeerPending(reason));
            }
            (state, other) => actions.extend(self.refuse(HandshakeError::Unexpected {
                got: other.kind(),
                during: state.during(),
            })),
        }
        actions
    }

    /// Feeds this node's verdict on the peer (after [`Action::Authenticated`], and again when
    /// a pending peer is approved or denied).
    pub fn verdict(&mut self, verdict: Verdict) -> Vec<Action> {
        if self.state != State::Verdicts {
            return Vec::new();
        }
        match verdict {
            Verdict::Welcome(_) => {
                if self.sent_welcome {
                    return Vec::new();
                }
                self.sent_welcome = true;
                self.holding = false;
                let mut out = vec![Action::Send(Control::Welcome {})];
                out.extend(self.established());
                out
            }
            Verdict::Pending(reason) => {
                if self.sent_welcome {
                    return Vec::new();
                }
                self.holding = true;
                vec![Action::Send(Control::Pending { reason })]
            }
            Verdict::Refuse(reason) => self.refuse(HandshakeError::NotAdmitted(reason)),
        }
    }

    fn on_hello(&mut self, hello: Control) -> Vec<Action> {
        let Control::Hello {
            version,
            node_id,
            boot_id,
            listen,
            pake,
        } = hello
        else {
            unreachable!("on_hello takes a hello")
        };
        if version != MESH_PROTOCOL_VERSION {
            return self.refuse(HandshakeError::VersionMismatch {
                theirs: version,
                ours: MESH_PROTOCOL_VERSION,
            });
        }
        if node_id != self.binding.remote {
            let actual = self.binding.remote.clone();
            return self.refuse(HandshakeError::NodeIdMismatch {
                claimed: node_id,
                actual,
            });
        }
        let pake = match pake.as_deref().map(hex::decode) {
            None => None,
            Some(Some(bytes)) => Some(bytes),
            Some(None) => {
                return self.refuse(HandshakeError::InvalidHello("pake is not hex".into()))
            }
        };
        self.peer = Some(PeerHello {
            boot_id,
            listen,
            version,
        });
        match (self.spake.take(), pake) {
            (None, _) => vec![self.authenticated(SecretCheck::NotConfigured)],
            (Some(_), None) => vec![self.authenticated(SecretCheck::Missing)],
            (Some(spake), Some(theirs)) => {
                // A malformed SPAKE2 message gives a key that cannot match: the proof fails.
                let key = spake.finish(&theirs).unwrap_or_default();
                let mac = confirmation(&key, self.binding.role, &self.binding.hash);
                self.key = Some(key);
                self.state = State::AwaitProof;
                vec![Action::Send(Control::Proof {
                    mac: hex::encode(&mac),
                })]
            }
        }
    }

    fn authenticated(&mut self, secret: SecretCheck) -> Action {
        self.state = State::Verdicts;
        self.secret = Some(secret);
        Action::Authenticated(Authenticated {
            node_id: self.binding.remote.clone(),
            secret,
        })
    }

    fn established(&mut self) -> Vec<Action> {
        if !(self.sent_welcome && self.got_welcome) {
            return Vec::new();
        }
        let Some(peer) = self.peer.clone() else {
            return Vec::new();
        };
        let info = PeerInfo {
            node_id: self.binding.remote.clone(),
            boot_id: peer.boot_id,
            listen: peer.listen,
            version: peer.version,
            link_tag: self.binding.hash.to_vec(),
        };
        vec![self.finish(Outcome::Established(info))]
    }

    fn refuse(&mut self, error: HandshakeError) -> Vec<Action> {
        let send = Action::Send(Control::Refused {
            reason: error.to_string(),
        });
        vec![send, self.finish(Outcome::Refused(error))]
    }

    fn finish(&mut self, outcome: Outcome) -> Action {
        self.state = State::Done;
        Action::Finish(outcome)
    }
}

#[cfg(test)]
mod tests;
