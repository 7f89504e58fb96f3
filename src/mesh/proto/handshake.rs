//! The mesh handshake as a pure state machine: control messages in, actions out.
//!
//! This module owns the hello / proof / welcome exchange that opens every mesh link, and
//! admission (who may link). It does no I/O and reads no clock: the shell that owns the
//! connection calls [`Handshake::start`], feeds each received [`Control`] to
//! [`Handshake::on_message`], sends every [`Action::Send`] in order, and stops at the
//! [`Action::Finish`]. The shell also enforces a deadline (`limits.mesh_handshake_timeout_s`,
//! closing with 4408).
//!
//! Both sides run the same machine; nothing depends on who dialed:
//!
//! ```text
//!   A                                   B
//!   Hello{A, nonce_a}   ───────────▶
//!                       ◀───────────   Hello{B, nonce_b}
//!   Proof{sig_A, mac_A} ───────────▶   (sent on receiving A's Hello)
//!                       ◀───────────   Proof{sig_B, mac_B}
//!   Welcome             ───────────▶   (sent once B's proof verifies and B is admitted)
//!                       ◀───────────   Welcome
//!   Established                        Established
//! ```
//!
//! A proof signs the transcript ([`transcript`]): a domain tag, the verifier's nonce, the
//! signer's nonce, the signer's node id and the verifier's node id. Fresh nonces on both
//! sides stop replay from another session; the fixed order (verifier's nonce first, signer's
//! id first) stops reflection of a peer's own proof back to it; the domain tag stops
//! signatures made for anything else from counting. With a mesh secret configured, the
//! proof also carries an HMAC-SHA256 of the same transcript under the secret.
//!
//! Not covered: the proofs are not bound to the underlying connection, so a machine in the
//! middle that relays the whole exchange between two honest nodes is not detected here.
//! Run the mesh over TLS (`wss://`) or a tailnet where that matters.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::mesh::hex;
use crate::mesh::identity::{self, NodeIdentity};
use crate::mesh::wire::{Control, MESH_PROTOCOL_VERSION};

/// Domain-separation tag at the start of every transcript.
pub const TRANSCRIPT_DOMAIN: &[u8] = b"ymesh-mesh-v1";

/// Length of a handshake nonce in bytes.
pub const NONCE_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// Who may link with this node.
///
/// Open when both `secret` and `allow` are empty (the default): any ymesh node is admitted.
/// With either set, a peer is admitted when it passes **either** check: it proves the mesh
/// secret, or its node id is in `allow`. Either rather than both, because the two serve
/// different peers: the secret admits a fleet of nodes without listing each one, and the
/// allow list admits a specific node that was never given the secret (a phone, a friend's
/// node). Requiring both would make the allow list a second lock on the same door instead
/// of a way in. Unknown peers (neither) are refused, as ARCHITECTURE.md requires.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Admission {
    /// The shared mesh secret (`--mesh-secret`), if any.
    pub secret: Option<String>,
    /// Node ids that are admitted without the secret (`--allow-peer`).
    pub allow: Vec<String>,
}

// By hand so that the secret never reaches a log line through `{:?}`.
impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("allow", &self.allow)
            .finish()
    }
}

impl Admission {
    /// An open mesh: every peer is admitted.
    pub fn open() -> Self {
        Self::default()
    }

    /// Whether every peer is admitted.
    pub fn is_open(&self) -> bool {
        self.secret.is_none() && self.allow.is_empty()
    }

    /// Decides whether `peer` is admitted. `mac` is the hex MAC from the peer's proof and
    /// `peer_transcript` the transcript the peer signed.
    fn admit(
        &self,
        peer: &str,
        mac: Option<&str>,
        peer_transcript: &[u8],
    ) -> Result<AdmittedBy, HandshakeError> {
        if self.is_open() {
            return Ok(AdmittedBy::Open);
        }
        // `None` without a secret; otherwise whether (and how) the peer's MAC failed.
        let secret_failure = match (&self.secret, mac) {
            (None, _) => None,
            (Some(_), None) => Some(SecretFailure::Missing),
            (Some(secret), Some(mac)) => match hex::decode(mac) {
                Some(mac) if verify_mac(secret, peer_transcript, &mac) => {
                    return Ok(AdmittedBy::Secret)
                }
                _ => Some(SecretFailure::Wrong),
            },
        };
        if self.allow.iter().any(|id| id == peer) {
            return Ok(AdmittedBy::AllowList);
        }
        let node_id = peer.to_string();
        Err(match (secret_failure, self.allow.is_empty()) {
            (Some(SecretFailure::Missing), true) => HandshakeError::MissingSecret { node_id },
            (Some(SecretFailure::Wrong), true) => HandshakeError::WrongSecret { node_id },
            (None, _) => HandshakeError::NotAllowed { node_id },
            (Some(_), false) => HandshakeError::NotAdmitted { node_id },
        })
    }
}

enum SecretFailure {
    Missing,
    Wrong,
}

/// Which admission rule let a peer in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdmittedBy {
    /// The mesh is open (no secret, no allow list).
    Open,
    /// The peer proved the mesh secret.
    Secret,
    /// The peer's node id is in the allow list.
    AllowList,
}

/// What the handshake learned about an admitted peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's node id, proven by its signature.
    pub node_id: String,
    /// The peer's boot id (changes every time it starts).
    pub boot_id: String,
    /// The HTTP URL the peer says it listens on, if it knows one.
    pub listen: Option<String>,
    /// The mesh protocol version the peer speaks (equal to ours today).
    pub version: u32,
    /// Which rule admitted the peer on this side.
    pub admitted_by: AdmittedBy,
    /// The same value on both ends of this connection and a fresh one on every other: both
    /// nonces, the smaller first. Two links between the same pair of nodes that were dialed
    /// by the same side are told apart by it (the one with the smaller tag is kept).
    pub link_tag: Vec<u8>,
}

/// How a handshake ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Both sides admitted each other; the link is up.
    Established(PeerInfo),
    /// The connection reached this node itself (e.g. NAT hairpinning, or an own address in
    /// the peer list). The dialer should stop dialing that address.
    SelfConnection,
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
    /// A hello field is malformed (hex, nonce length, public key).
    #[error("invalid hello: {0}")]
    InvalidHello(String),
    /// The hello's node id is not the id of its public key.
    #[error("hello claims node id {claimed} but its public key belongs to node {actual}")]
    NodeIdMismatch {
        /// The claimed node id.
        claimed: String,
        /// The node id of the public key sent.
        actual: String,
    },
    /// The peer's hello carried this node's own nonce (a reflected hello).
    #[error("hello repeats this node's own nonce")]
    ReflectedNonce,
    /// The peer is this node.
    #[error("connected to itself (node {node_id})")]
    SelfConnection {
        /// Our own node id.
        node_id: String,
    },
    /// The peer is not the node the configuration expects at this address.
    #[error("expected node {expected} at this address, but node {actual} answered")]
    UnexpectedPeer {
        /// The node id configured for the peer.
        expected: String,
        /// The node id that answered.
        actual: String,
    },
    /// The proof's signature does not verify.
    #[error("the identity proof of node {node_id} does not verify")]
    BadSignature {
        /// The peer's claimed node id.
        node_id: String,
    },
    /// A mesh secret is required and the peer sent no MAC.
    #[error(
        "this node requires the mesh secret (--mesh-secret) and node {node_id} did not \
         present one"
    )]
    MissingSecret {
        /// The peer's node id.
        node_id: String,
    },
    /// The peer's MAC does not verify under our mesh secret.
    #[error("node {node_id} does not hold this node's mesh secret (--mesh-secret differs)")]
    WrongSecret {
        /// The peer's node id.
        node_id: String,
    },
    /// An allow list is set (without a secret) and the peer is not in it.
    #[error("node {node_id} is not in this node's allow list (--allow-peer)")]
    NotAllowed {
        /// The peer's node id.
        node_id: String,
    },
    /// Both a secret and an allow list are set and the peer passed neither.
    #[error(
        "node {node_id} is not in this node's allow list (--allow-peer) and did not prove \
         its mesh secret (--mesh-secret)"
    )]
    NotAdmitted {
        /// The peer's node id.
        node_id: String,
    },
    /// A message arrived that the handshake does not allow at this point.
    #[error("protocol error: unexpected {got} message {during}")]
    Unexpected {
        /// The message's `type`.
        got: &'static str,
        /// Where the handshake was.
        during: &'static str,
    },
}

impl HandshakeError {
    /// Whether the refusal is about admission (secret or allow list), as opposed to a
    /// broken or hostile peer; status shows these as "refused".
    pub fn is_admission(&self) -> bool {
        matches!(
            self,
            HandshakeError::MissingSecret { .. }
                | HandshakeError::WrongSecret { .. }
                | HandshakeError::NotAllowed { .. }
                | HandshakeError::NotAdmitted { .. }
        )
    }
}

/// The bytes a proof signs (and MACs): `domain · verifier_nonce · signer_nonce ·
/// varString(signer_id) · varString(verifier_id)`. The lengths keep the two ids
/// unambiguous.
pub fn transcript(
    verifier_nonce: &[u8; NONCE_LEN],
    signer_nonce: &[u8; NONCE_LEN],
    signer_id: &str,
    verifier_id: &str,
) -> Vec<u8> {
    let mut out = bytes::BytesMut::with_capacity(
        TRANSCRIPT_DOMAIN.len() + 2 * NONCE_LEN + signer_id.len() + verifier_id.len() + 4,
    );
    out.extend_from_slice(TRANSCRIPT_DOMAIN);
    out.extend_from_slice(verifier_nonce);
    out.extend_from_slice(signer_nonce);
    crate::protocol::codec::write_var_bytes(&mut out, signer_id.as_bytes());
    crate::protocol::codec::write_var_bytes(&mut out, verifier_id.as_bytes());
    out.to_vec()
}

/// HMAC-SHA256 of `transcript` under the mesh secret.
pub fn mesh_mac(secret: &str, transcript: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(transcript);
    mac.finalize().into_bytes().into()
}

/// Constant-time check of a MAC.
fn verify_mac(secret: &str, transcript: &[u8], tag: &[u8]) -> bool {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(transcript);
    mac.verify_slice(tag).is_ok()
}

/// The peer's hello, checked.
#[derive(Debug, Clone)]
struct PeerHello {
    node_id: String,
    public_key: Vec<u8>,
    nonce: [u8; NONCE_LEN],
    boot_id: String,
    listen: Option<String>,
    version: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// `start` not called yet.
    New,
    /// Our hello is out; waiting for the peer's.
    AwaitHello,
    /// Our proof is out; waiting for the peer's.
    AwaitProof,
    /// The peer is admitted and our welcome is out; waiting for the peer's welcome.
    AwaitWelcome,
    /// Finished (any outcome).
    Done,
}

impl State {
    fn during(self) -> &'static str {
        match self {
            State::New => "before the handshake started",
            State::AwaitHello => "while waiting for hello",
            State::AwaitProof => "while waiting for proof",
            State::AwaitWelcome => "while waiting for welcome",
            State::Done => "after the handshake",
        }
    }
}

/// One side of one handshake. See the module docs for the sequence.
#[derive(Debug)]
pub struct Handshake {
    identity: Arc<NodeIdentity>,
    admission: Admission,
    boot_id: String,
    listen: Option<String>,
    expected_peer: Option<String>,
    nonce: [u8; NONCE_LEN],
    state: State,
    peer: Option<PeerHello>,
    admitted_by: Option<AdmittedBy>,
    outcome: Option<Outcome>,
}

impl Handshake {
    /// A handshake for this node (`identity`, this run's `boot_id`, its own HTTP URL if
    /// known) under `admission`, with a fresh random nonce.
    pub fn new(
        identity: Arc<NodeIdentity>,
        admission: Admission,
        boot_id: impl Into<String>,
        listen: Option<String>,
    ) -> Self {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        Self {
            identity,
            admission,
            boot_id: boot_id.into(),
            listen,
            expected_peer: None,
            nonce,
            state: State::New,
            peer: None,
            admitted_by: None,
            outcome: None,
        }
    }

    /// Refuses the peer unless its node id is `node_id` (a peer configured with an expected
    /// node id). Checked on the hello, before any proof is sent.
    pub fn expect_peer(mut self, node_id: impl Into<String>) -> Self {
        self.expected_peer = Some(node_id.into());
        self
    }

    /// Replaces the random nonce. For deterministic tests and documentation examples only:
    /// a reused nonce lets a recorded proof be replayed.
    pub fn with_nonce(mut self, nonce: [u8; NONCE_LEN]) -> Self {
        self.nonce = nonce;
        self
    }

    /// Begins the handshake: returns our hello to send. Calling it again returns nothing.
    pub fn start(&mut self) -> Vec<Action> {
        if self.state != State::New {
            return Vec::new();
        }
        self.state = State::AwaitHello;
        vec![Action::Send(Control::Hello {
            version: MESH_PROTOCOL_VERSION,
            node_id: self.identity.node_id().to_string(),
            public_key: hex::encode(&self.identity.public_key_bytes()),
            boot_id: self.boot_id.clone(),
            nonce: hex::encode(&self.nonce),
            listen: self.listen.clone(),
        })]
    }

    /// Feeds one control message received from the peer; returns what to do. After the
    /// handshake finished, further messages are ignored (the link owns them).
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
            (State::AwaitProof, Control::Proof { signature, mac }) => {
                actions.extend(self.on_proof(&signature, mac.as_deref()));
            }
            (State::AwaitWelcome, Control::Welcome {}) => {
                let peer = self.peer.clone().expect("peer hello is kept until welcome");
                let (lo, hi) = if self.nonce <= peer.nonce {
                    (self.nonce, peer.nonce)
                } else {
                    (peer.nonce, self.nonce)
                };
                let info = PeerInfo {
                    link_tag: [lo, hi].concat(),
                    node_id: peer.node_id,
                    boot_id: peer.boot_id,
                    listen: peer.listen,
                    version: peer.version,
                    admitted_by: self.admitted_by.expect("admitted before welcome"),
                };
                actions.push(self.finish(Outcome::Established(info)));
            }
            (state, other) => actions.extend(self.refuse(HandshakeError::Unexpected {
                got: other.kind(),
                during: state.during(),
            })),
        }
        actions
    }

    /// The outcome, once finished.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    /// Whether the handshake has finished.
    pub fn is_finished(&self) -> bool {
        self.state == State::Done
    }

    /// The node id the peer claimed in a well-formed hello (its key matches, but until the
    /// proof verifies it is only a claim). For status and logs about refused peers.
    pub fn peer_node_id(&self) -> Option<&str> {
        self.peer.as_ref().map(|p| p.node_id.as_str())
    }

    /// Our nonce (hex in our hello).
    pub fn nonce(&self) -> &[u8; NONCE_LEN] {
        &self.nonce
    }

    fn on_hello(&mut self, hello: Control) -> Vec<Action> {
        let Control::Hello {
            version,
            node_id,
            public_key,
            boot_id,
            nonce,
            listen,
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
        let Some(public_key) = hex::decode(&public_key) else {
            return self.refuse(HandshakeError::InvalidHello("public_key is not hex".into()));
        };
        let nonce: [u8; NONCE_LEN] = match hex::decode(&nonce).map(<[u8; NONCE_LEN]>::try_from) {
            Some(Ok(n)) => n,
            _ => {
                return self.refuse(HandshakeError::InvalidHello(format!(
                    "nonce is not {NONCE_LEN} bytes of hex"
                )))
            }
        };
        let actual = match identity::node_id_of(&public_key) {
            Ok(id) => id,
            Err(e) => return self.refuse(HandshakeError::InvalidHello(e.to_string())),
        };
        if actual != node_id {
            return self.refuse(HandshakeError::NodeIdMismatch {
                claimed: node_id,
                actual,
            });
        }
        if node_id == self.identity.node_id() {
            return self.refuse(HandshakeError::SelfConnection { node_id });
        }
        if nonce == self.nonce {
            return self.refuse(HandshakeError::ReflectedNonce);
        }
        if let Some(expected) = &self.expected_peer {
            if *expected != node_id {
                let expected = expected.clone();
                return self.refuse(HandshakeError::UnexpectedPeer {
                    expected,
                    actual: node_id,
                });
            }
        }

        // Our proof: we sign, the peer verifies.
        let our_transcript = transcript(&nonce, &self.nonce, self.identity.node_id(), &node_id);
        let signature = hex::encode(&self.identity.sign(&our_transcript));
        let mac = self
            .admission
            .secret
            .as_ref()
            .map(|secret| hex::encode(&mesh_mac(secret, &our_transcript)));
        self.peer = Some(PeerHello {
            node_id,
            public_key,
            nonce,
            boot_id,
            listen,
            version,
        });
        self.state = State::AwaitProof;
        vec![Action::Send(Control::Proof { signature, mac })]
    }

    fn on_proof(&mut self, signature: &str, mac: Option<&str>) -> Vec<Action> {
        let peer = self.peer.as_ref().expect("hello precedes proof");
        let peer_transcript = transcript(
            &self.nonce,
            &peer.nonce,
            &peer.node_id,
            self.identity.node_id(),
        );
        let verified = hex::decode(signature)
            .map(|sig| identity::verify(&peer.public_key, &peer_transcript, &sig));
        match verified {
            Some(Ok(id)) if id == peer.node_id => {}
            _ => {
                let node_id = peer.node_id.clone();
                return self.refuse(HandshakeError::BadSignature { node_id });
            }
        }
        match self.admission.admit(&peer.node_id, mac, &peer_transcript) {
            Ok(by) => {
                self.admitted_by = Some(by);
                self.state = State::AwaitWelcome;
                vec![Action::Send(Control::Welcome {})]
            }
            Err(e) => self.refuse(e),
        }
    }

    fn refuse(&mut self, error: HandshakeError) -> Vec<Action> {
        let send = Action::Send(Control::Refused {
            reason: error.to_string(),
        });
        let outcome = match error {
            HandshakeError::SelfConnection { .. } => Outcome::SelfConnection,
            other => Outcome::Refused(other),
        };
        vec![send, self.finish(outcome)]
    }

    fn finish(&mut self, outcome: Outcome) -> Action {
        self.state = State::Done;
        self.outcome = Some(outcome.clone());
        Action::Finish(outcome)
    }
}

#[cfg(test)]
mod tests;
