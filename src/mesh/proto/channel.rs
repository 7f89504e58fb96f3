//! The secure channel under every WebSocket mesh link: a Noise XX handshake bound to both
//! node identities, then authenticated encryption of every frame. Pure: bytes in, bytes out.
//!
//! This module owns the cryptographic layer, nothing above it. The transport
//! ([`crate::mesh::transport::ws`]) drives a [`ChannelHandshake`] over the first three
//! WebSocket messages of a `/_mesh` connection, then seals each outgoing frame with a
//! [`Sealer`] and opens each incoming one with an [`Opener`]. Admission (mesh secret, allow
//! list, approval) runs *inside* the channel, in [`super::handshake`], once both identities
//! are proven here.
//!
//! # Protocol
//!
//! `Noise_XX_25519_ChaChaPoly_SHA256` (the pattern and suite libp2p uses), prologue
//! [`PROLOGUE`]. Each side uses a fresh X25519 static key per connection and proves it
//! belongs to its node by signing it with the node's ed25519 key, as libp2p-noise does:
//!
//! ```text
//!   initiator (dialer)                              responder
//!   -> e                 payload: varUint(mesh protocol version), clear text
//!   <- e, ee, s, es      payload: identity(responder), encrypted
//!   -> s, se             payload: identity(initiator), encrypted
//!   identity = varBytes(ed25519 public key, libp2p protobuf) ·
//!              varBytes(sig over "ymesh-mesh-static-key:" · X25519 static public key)
//! ```
//!
//! What this gives: the keys come from fresh ephemeral keys of both sides (no replay of a
//! recorded session); each side's static key is authenticated by its node key, so a relay
//! or a man in the middle cannot complete the handshake as either node (it holds neither
//! node's key) and a reflection fails because the two roles send different patterns; the
//! handshake hash ([`Channel::hash`]) is the same at both ends of this one connection and
//! nowhere else, which later steps use as a channel binding. After the handshake, each
//! direction has its own key and a message counter as nonce, so an altered, dropped,
//! reordered or replayed record fails to decrypt and the link closes.
//!
//! # Records
//!
//! A Noise message holds at most 65,535 bytes, a mesh frame up to 64 MiB. A sealed frame is
//! a sequence of records, `u16 big-endian length · Noise ciphertext`, each carrying up to
//! [`RECORD_PLAINTEXT`] bytes of the frame; on the WebSocket road one sealed frame is one
//! binary message.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use snow::{HandshakeState, StatelessTransportState};

use crate::mesh::identity::{self, NodeIdentity};
use crate::protocol::codec::{write_var_bytes, write_var_uint, Reader};

/// The Noise protocol name.
pub const NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_SHA256";

/// Mixed into the handshake hash by both sides: a handshake made for anything else fails.
pub const PROLOGUE: &[u8] = b"ymesh-mesh-channel";

/// What each side signs with its node key: this prefix, then its X25519 static public key.
pub const STATIC_KEY_DOMAIN: &[u8] = b"ymesh-mesh-static-key:";

/// Largest Noise message.
const NOISE_MAX: usize = 65_535;
/// The AEAD tag each record carries.
const TAG_LEN: usize = 16;
/// Most frame bytes in one record.
pub const RECORD_PLAINTEXT: usize = NOISE_MAX - TAG_LEN;

/// Which side of the connection this is. The dialer is the initiator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Dialed the connection; sends the first message.
    Initiator,
    /// Accepted the connection.
    Responder,
}

impl Role {
    /// One byte naming the role, for values that must differ by direction.
    pub fn byte(self) -> u8 {
        match self {
            Role::Initiator => b'i',
            Role::Responder => b'r',
        }
    }

    /// The other side's role.
    pub fn other(self) -> Role {
        match self {
            Role::Initiator => Role::Responder,
            Role::Responder => Role::Initiator,
        }
    }
}

/// Why a channel could not be set up, or a record could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// The peer speaks another mesh protocol version.
    #[error("mesh protocol version {theirs} is not supported by this node (speaks {ours})")]
    Version {
        /// The peer's version.
        theirs: u32,
        /// Ours.
        ours: u32,
    },
    /// The connection reached this node itself.
    #[error("connected to itself (node {node_id})")]
    SelfConnection {
        /// Our node id.
        node_id: String,
    },
    /// The peer is not the node the configuration expects at this address.
    #[error("expected node {expected} at this address, but node {actual} answered")]
    UnexpectedPeer {
        /// The configured node id.
        expected: String,
        /// The node that answered.
        actual: String,
    },
    /// The peer's identity payload is malformed or its signature does not verify.
    #[error("the peer's identity does not verify: {0}")]
    Identity(String),
    /// A handshake message or record failed (malformed, altered, replayed, out of order).
    #[error("secure channel failure: {0}")]
    Crypto(String),
    /// A message arrived after the handshake finished or before it started.
    #[error("unexpected message during the secure channel handshake")]
    Unexpected,
}

impl From<snow::Error> for ChannelError {
    fn from(e: snow::Error) -> Self {
        ChannelError::Crypto(e.to_string())
    }
}

/// What the handshake produces.
pub struct Channel {
    /// The peer's node id, proven by its signature over its static key.
    pub remote: String,
    /// The Noise handshake hash: equal at both ends of this connection, different on every
    /// other. Used to bind the mesh secret proof and as the link tag.
    pub hash: [u8; 32],
    /// This side's role.
    pub role: Role,
    /// Seals frames towards the peer.
    pub sealer: Sealer,
    /// Opens frames from the peer.
    pub opener: Opener,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("remote", &self.remote)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// What to do after feeding a handshake message.
#[derive(Debug)]
pub enum Step {
    /// Send this message and wait for the next.
    Send(Vec<u8>),
    /// The channel is up; send `send` first if there is one.
    Done {
        /// The last handshake message, for the initiator.
        send: Option<Vec<u8>>,
        /// The channel.
        channel: Box<Channel>,
    },
}

/// One side of the Noise handshake of one connection.
pub struct ChannelHandshake {
    identity: Arc<NodeIdentity>,
    role: Role,
    /// Taken when the channel is made.
    noise: Option<HandshakeState>,
    static_public: Vec<u8>,
    expect: Option<String>,
    version: u32,
    /// Messages read so far.
    read: u8,
}

impl std::fmt::Debug for ChannelHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelHandshake")
            .field("role", &self.role)
            .field("read", &self.read)
            .finish_non_exhaustive()
    }
}

fn builder() -> snow::Builder<'static> {
    let params = NOISE_PARAMS
        .parse()
        .unwrap_or_else(|_| unreachable!("the Noise parameters are a valid constant"));
    snow::Builder::new(params)
}

impl ChannelHandshake {
    /// The dialer's side, speaking mesh protocol `version`: returns it and the first message
    /// to send. With `expect`, the handshake fails unless the responder is that node.
    pub fn initiator(
        identity: Arc<NodeIdentity>,
        version: u32,
        expect: Option<String>,
    ) -> Result<(Self, Vec<u8>), ChannelError> {
        let mut hs = Self::new(identity, Role::Initiator, version)?;
        hs.expect = expect;
        let mut payload = BytesMut::new();
        write_var_uint(&mut payload, u64::from(version));
        let first = hs.write(&payload)?;
        Ok((hs, first))
    }

    /// The accepting side, speaking mesh protocol `version`.
    pub fn responder(identity: Arc<NodeIdentity>, version: u32) -> Result<Self, ChannelError> {
        Self::new(identity, Role::Responder, version)
    }

    fn new(identity: Arc<NodeIdentity>, role: Role, version: u32) -> Result<Self, ChannelError> {
        let keys = builder().generate_keypair()?;
        let b = builder()
            .local_private_key(&keys.private)?
            .prologue(PROLOGUE)?;
        let noise = match role {
            Role::Initiator => b.build_initiator()?,
            Role::Responder => b.build_responder()?,
        };
        Ok(Self {
            identity,
            role,
            noise: Some(noise),
            static_public: keys.public,
            expect: None,
            version,
            read: 0,
        })
    }

    /// This side's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Feeds the peer's next handshake message.
    pub fn on_message(&mut self, msg: &[u8]) -> Result<Step, ChannelError> {
        let payload = self.read(msg)?;
        self.read += 1;
        match (self.role, self.read) {
            // Responder, message 1: the version, then our identity.
            (Role::Responder, 1) => {
                let mut r = Reader::new(Bytes::from(payload));
                let theirs = r
                    .read_var_uint()
                    .ok()
                    .and_then(|v| u32::try_from(v).ok())
                    .ok_or_else(|| ChannelError::Crypto("malformed first message".into()))?;
                if theirs != self.version {
                    return Err(ChannelError::Version {
                        theirs,
                        ours: self.version,
                    });
                }
                let payload = self.identity_payload();
                Ok(Step::Send(self.write(&payload)?))
            }
            // Initiator, message 2: the responder's identity; then ours, and done.
            (Role::Initiator, 1) => {
                let remote = self.check_identity(&payload)?;
                if let Some(expected) = &self.expect {
                    if *expected != remote {
                        return Err(ChannelError::UnexpectedPeer {
                            expected: expected.clone(),
                            actual: remote,
                        });
                    }
                }
                let payload = self.identity_payload();
                let last = self.write(&payload)?;
                Ok(Step::Done {
                    send: Some(last),
                    channel: Box::new(self.finish(remote)?),
                })
            }
            // Responder, message 3: the initiator's identity; done.
            (Role::Responder, 2) => {
                let remote = self.check_identity(&payload)?;
                Ok(Step::Done {
                    send: None,
                    channel: Box::new(self.finish(remote)?),
                })
            }
            _ => Err(ChannelError::Unexpected),
        }
    }

    fn write(&mut self, payload: &[u8]) -> Result<Vec<u8>, ChannelError> {
        let noise = self.noise.as_mut().ok_or(ChannelError::Unexpected)?;
        let mut out = vec![0u8; NOISE_MAX];
        let n = noise.write_message(payload, &mut out)?;
        out.truncate(n);
        Ok(out)
    }

    fn read(&mut self, msg: &[u8]) -> Result<Vec<u8>, ChannelError> {
        if msg.len() > NOISE_MAX {
            return Err(ChannelError::Crypto("handshake message too long".into()));
        }
        let noise = self.noise.as_mut().ok_or(ChannelError::Unexpected)?;
        let mut out = vec![0u8; msg.len()];
        let n = noise.read_message(msg, &mut out)?;
        out.truncate(n);
        Ok(out)
    }

    fn identity_payload(&self) -> Vec<u8> {
        let mut signed = STATIC_KEY_DOMAIN.to_vec();
        signed.extend_from_slice(&self.static_public);
        let mut out = BytesMut::new();
        write_var_bytes(&mut out, &self.identity.public_key_bytes());
        write_var_bytes(&mut out, &self.identity.sign(&signed));
        out.to_vec()
    }

    /// Checks the peer's identity payload against the static key Noise authenticated;
    /// returns the peer's node id.
    fn check_identity(&self, payload: &[u8]) -> Result<String, ChannelError> {
        let mut r = Reader::new(Bytes::copy_from_slice(payload));
        let (public_key, signature) = match (r.read_var_bytes(), r.read_var_bytes()) {
            (Ok(k), Ok(s)) => (k, s),
            _ => return Err(ChannelError::Identity("malformed identity payload".into())),
        };
        let remote_static = self
            .noise
            .as_ref()
            .and_then(|n| n.get_remote_static())
            .ok_or_else(|| ChannelError::Identity("no static key".into()))?;
        let mut signed = STATIC_KEY_DOMAIN.to_vec();
        signed.extend_from_slice(remote_static);
        let node_id = identity::verify(&public_key, &signed, &signature)
            .map_err(|e| ChannelError::Identity(e.to_string()))?;
        if node_id == self.identity.node_id() {
            return Err(ChannelError::SelfConnection { node_id });
        }
        Ok(node_id)
    }

    fn finish(&mut self, remote: String) -> Result<Channel, ChannelError> {
        let noise = self.noise.take().ok_or(ChannelError::Unexpected)?;
        let hash: [u8; 32] = noise
            .get_handshake_hash()
            .try_into()
            .map_err(|_| ChannelError::Crypto("unexpected handshake hash length".into()))?;
        let role = self.role;
        let transport = Arc::new(noise.into_stateless_transport_mode()?);
        Ok(Channel {
            remote,
            hash,
            role,
            sealer: Sealer {
                transport: transport.clone(),
                nonce: 0,
            },
            opener: Opener {
                transport,
                nonce: 0,
            },
        })
    }
}

/// Seals frames in order (one side's sending half).
pub struct Sealer {
    transport: Arc<StatelessTransportState>,
    nonce: u64,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("nonce", &self.nonce)
            .finish()
    }
}

impl Sealer {
    /// Seals one frame into records.
    pub fn seal(&mut self, frame: &[u8]) -> Result<Bytes, ChannelError> {
        let records = frame.len().div_ceil(RECORD_PLAINTEXT).max(1);
        let mut out = BytesMut::with_capacity(frame.len() + records * (2 + TAG_LEN));
        let mut chunks = frame.chunks(RECORD_PLAINTEXT);
        let first: &[u8] = &[];
        let mut next = chunks.next().or(Some(first));
        while let Some(chunk) = next {
            let start = out.len();
            let len = chunk.len() + TAG_LEN;
            out.put_u16(len as u16);
            out.resize(start + 2 + len, 0);
            let n = self
                .transport
                .write_message(self.nonce, chunk, &mut out[start + 2..])?;
            debug_assert_eq!(n, len);
            self.nonce += 1;
            next = chunks.next();
        }
        Ok(out.freeze())
    }
}

/// Opens frames in order (one side's receiving half).
pub struct Opener {
    transport: Arc<StatelessTransportState>,
    nonce: u64,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("nonce", &self.nonce)
            .finish()
    }
}

impl Opener {
    /// Opens one sealed frame (all its records). Any record that was altered, replayed,
    /// dropped or reordered fails, and so does a truncated one; after a failure the link must
    /// close. The frame cannot be larger than `sealed`.
    pub fn open(&mut self, sealed: &[u8]) -> Result<Bytes, ChannelError> {
        let mut out = BytesMut::with_capacity(sealed.len());
        let mut rest = sealed;
        loop {
            let [hi, lo, tail @ ..] = rest else {
                return Err(ChannelError::Crypto("truncated record".into()));
            };
            let len = usize::from(u16::from_be_bytes([*hi, *lo]));
            if len < TAG_LEN || tail.len() < len {
                return Err(ChannelError::Crypto("truncated record".into()));
            }
            let start = out.len();
            out.resize(start + len - TAG_LEN, 0);
            let n = self
                .transport
                .read_message(self.nonce, &tail[..len], &mut out[start..])?;
            out.truncate(start + n);
            self.nonce += 1;
            rest = &tail[len..];
            if rest.is_empty() {
                return Ok(out.freeze());
            }
        }
    }
}

#[cfg(test)]
mod tests;
