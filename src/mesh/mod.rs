//! Server-to-server replication.
//!
//! Every ymesh node can link with other ymesh nodes so that the rooms they share converge,
//! including rooms a node has never seen. Every decision (when to dial, which of two links
//! wins, which rooms to resync, when a room counts as synced, where a command goes next)
//! lives in [`proto`], a pure state machine driven by events; the async shells in
//! [`runtime`] own connections, timers and the room bridge, and carry out its actions.
//! Dependencies run one way: `runtime` -> `proto` -> `wire`; the mesh reaches rooms and the
//! store only through the room registry, in `runtime::bridge`, and commands through the
//! port the command layer owns ([`crate::command::MeshLinks`]).
//!
//! | module | owns |
//! |---|---|
//! | [`proto`] | every decision, free of I/O: peer table, link states, tie-break, handshake and admission, manifests and share policy, sync state, backoff, resync markers, command dedup |
//! | [`identity`] | the node's ed25519 key (`node.key`), node id (libp2p `PeerId`), signing |
//! | [`wire`] | the node-to-node frame format and the JSON control messages |
//! | [`transport`] | a connection as whole frames ([`transport::LinkIo`]): WebSocket today |
//! | [`runtime`] | thin I/O shells that carry out the core's actions: supervisor (dials), link tasks, the room bridge, `GET /peers` |
//! | [`discovery`] | finding peers: mDNS on the LAN, the tailnet via tailscaled; reports peers, decides nothing |
//!
//! # How a link works
//!
//! - **One link per peer, every room on it.** A node dials a peer's control channel, a
//!   WebSocket at `/_mesh`. All rooms shared with that peer are multiplexed on the one link
//!   as room-tagged frames ([`wire`]); the framing carries its own lengths, so a libp2p
//!   stream can carry the same bytes later. docs/mesh-protocol.md is the byte-level spec.
//! - **Handshake.** Both sides send a hello (node id, public key, boot id, protocol
//!   version, nonce), prove their identity by signing a transcript that binds both nonces
//!   and both node ids, and are admitted by an open mesh, the mesh secret or the allow list
//!   ([`proto::handshake`]). A peer speaking another protocol version is refused with a message
//!   naming both versions; a node that reached itself notices and stops dialing the address.
//! - **Manifest, then pipelined SyncStep1s.** Once established, each side sends the manifest
//!   of the rooms it shares with the peer (name + state-vector digest, read from the store
//!   without loading rooms), then deltas as rooms change. Every room the peer lacks, that
//!   we lack, or whose digest differs gets a SyncStep1 in each direction, all sent at once
//!   rather than one round trip after another ([`proto::manifest`]). Each SyncStep1 is answered
//!   with a SyncStep2 like a client's; after that, updates and awareness flow as they
//!   happen. Room messages are exactly the y-protocols messages a client sends.
//! - **Only real changes travel (split horizon).** An update that arrived over a link is
//!   applied with that link as its origin and is never sent back to that link; an update
//!   that changes nothing is not forwarded at all. That is what ends loops in a cyclic mesh
//!   (a triangle of nodes, or a client connected to two linked nodes).
//! - **Supervision.** One supervisor per peer owns every reconnect decision, with one dial
//!   in flight, exponential backoff with jitter ([`proto::backoff`]) and application-level
//!   liveness (`ping` / `pong` control messages), so a half-open TCP link is noticed.
//!
//! Links do not pin rooms: a room with no clients is evicted as usual and loaded again when
//! a peer sends data for it.

pub mod discovery;
mod hex;
pub mod identity;
pub mod proto;
pub mod runtime;
pub mod transport;
pub mod wire;

pub use identity::{new_boot_id, IdentityError, NodeIdentity, VerifyError};
pub use proto::approval::{Admission, AdmittedBy, Approvals, SecretCheck, Verdict};
pub use proto::backoff::{Backoff, BackoffConfig};
pub use proto::handshake::{Action, Handshake, HandshakeError, Outcome, PeerInfo};
pub use proto::manifest::{PeerManifest, RoomToSync, SharePolicy, SyncReason};
pub use proto::url::{mesh_url, room_url, PeerUrlError};
pub use proto::{LinkState, PeerConfig};
pub use runtime::{Mesh, MeshSettings};
pub use wire::{
    Control, Frame, FrameDecoder, ManifestEntry, TombstoneEntry, WireError, MAX_FRAME_LEN,
    MESH_PROTOCOL_VERSION,
};

#[cfg(test)]
pub(crate) mod tests {
    /// docs/mesh-protocol.md, whose examples the unit tests check.
    pub(crate) fn protocol_doc() -> String {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/mesh-protocol.md");
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
    }
}
