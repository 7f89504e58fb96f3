//! Maintenance commands (MIGRATE, REINDEX, COMPACT, INVALIDATE).
//!
//! A command is issued on one node (`POST /rooms/{room}/commands` or `POST /commands`), sent to
//! that node's clients that opted in with `commands=1`, and forwarded across the mesh, reaching
//! each node and each client once. Responders answer with a result that flows back to the
//! issuing node, which aggregates the answers and reports them at `GET /commands/{id}`.
//!
//! On the wire both travel as message type 103 (docs/protocol.md, section 5.2):
//! `varUint(103) · varUint(subtype) · varString(JSON)`, subtype 0 = [`Command`], 1 =
//! [`CommandResult`].
//!
//! All but [`node`] need no sockets or timers, each taking the time as an argument:
//!
//! - [`envelope`]: the [`Command`] and [`CommandResult`] documents and their JSON,
//!   [`encode_command`] / [`encode_result`] / [`decode`] for whole frames, [`CommandIssuer`]
//!   and [`command_id`], and [`forwardable`] with its [`MAX_HOPS`] backstop.
//! - [`seen`]: [`SeenSet`], the bounded expiring set of ids that makes a command cross a
//!   cyclic mesh once per node (the mesh core's flood uses it), and makes a client connected
//!   to two nodes act once.
//! - [`port`]: where commands meet the mesh: [`MeshLinks`] (what the command center asks of
//!   the links; the mesh implements it) and the [`Inbox`] the mesh fills with commands and
//!   results that arrive over links. The command layer owns both, so it never names the
//!   mesh.
//! - [`record`]: [`CommandRecord`] (expected responders, results, timeouts, the JSON of
//!   `GET /commands/{id}`) and [`CommandLog`], the last 1,000 of them.
//!
//! [`node`] is the node side around these (fan-out to opted-in sessions, the node's own
//! handlers, results back towards the issuing node, aggregation); the HTTP routes are in
//! `server`, the client side is [`crate::client`] (Rust) and `clients/js` (JavaScript).
//!
//! A command arriving over a link goes: [`decode`] (in the mesh's frame decoder); the mesh
//! core's flood ([`SeenSet::insert`] with the command's deadline: a duplicate stops here; if
//! [`forwardable`], [`Command::next_hop`] goes to the links other than the one it came from
//! that share its room); the [`Inbox`]; the command center, which delivers it to opted-in
//! clients, acts on it and answers.

pub mod envelope;
pub mod node;
pub mod port;
pub mod record;
pub mod seen;

pub use envelope::{
    command_id, decode, encode_command, encode_result, forwardable, Command, CommandError,
    CommandIssuer, CommandKind, CommandMessage, CommandResult, ResponderKind, ResultStatus,
    DEFAULT_TIMEOUT_MS, MAX_HOPS, MAX_ID_LEN,
};
pub use node::{CommandCenter, IssueError};
pub use port::{inbox, Inbound, Inbox, InboxReceiver, MeshLinks, RoomScope};
pub use record::{CommandLog, CommandRecord, RecordOutcome, DEFAULT_LOG_CAPACITY};
pub use seen::{SeenSet, DEFAULT_SEEN_CAPACITY};

#[cfg(test)]
mod tests;
