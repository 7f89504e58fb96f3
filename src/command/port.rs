//! Where commands meet the mesh: a port the command layer owns and the mesh plugs into.
//!
//! The command center sits below the mesh: it never names the mesh. It talks to links
//! through [`MeshLinks`], which the mesh implements, and it hears about commands and results
//! that arrive over links through an [`Inbox`], a bounded channel the mesh fills. The mesh
//! decides which links a command travels on (once per node, across a cyclic mesh: its
//! `proto::flood`); the command center decides what the node does with it.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::{Command, CommandResult};

/// Link ids as the mesh numbers them (the same space as client session ids).
pub type LinkId = u64;

/// Which rooms a command that came over a link may touch here: those this node shares with
/// the peer it came from.
pub trait RoomScope: Send + Sync + std::fmt::Debug {
    /// Whether `room` is in scope.
    fn allows(&self, room: &str) -> bool;
}

/// What the command center asks of the mesh.
pub trait MeshLinks: Send + Sync {
    /// Node ids of the peers linked now whose share policy allows `room` (`None`: all).
    fn peers_for(&self, room: Option<&str>) -> Vec<String>;
    /// Sends a command issued here on every link that shares its room (once per node
    /// from there on).
    fn flood(&self, command: &Command);
    /// Sends a result on `link`; false when the link is gone or full.
    fn send_result(&self, link: LinkId, result: CommandResult) -> bool;
    /// A link to node `node`, if one is up.
    fn link_to(&self, node: &str) -> Option<LinkId>;
    /// Asks `link` for its whole copy of `room` (after this node dropped its own).
    fn resync_from(&self, link: LinkId, room: &str) -> bool;
}

/// What arrives from the mesh.
#[derive(Debug)]
pub enum Inbound {
    /// A command seen here for the first time.
    Command {
        /// The link it came by.
        link: LinkId,
        /// The peer's node id.
        peer: String,
        /// Rooms it may touch here.
        scope: Arc<dyn RoomScope>,
        /// The command.
        command: Command,
        /// The sender's state vector of the room, for `invalidate`.
        state_vector: Option<Vec<u8>>,
    },
    /// A result on its way to the issuing node.
    Result {
        /// The link it came by.
        link: LinkId,
        /// The result.
        result: CommandResult,
    },
}

/// The mesh's end of the inbox.
pub type Inbox = mpsc::Sender<Inbound>;

/// The command center's end of the inbox.
pub type InboxReceiver = mpsc::Receiver<Inbound>;

/// Commands and results waiting for the command center at once; more are dropped with a
/// warning (commands are rare; a flood of them is not worth memory).
pub const INBOX_CAPACITY: usize = 1024;

/// A new inbox.
pub fn inbox() -> (Inbox, InboxReceiver) {
    mpsc::channel(INBOX_CAPACITY)
}
