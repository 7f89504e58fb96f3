//! The command and result documents, their JSON, and their type-103 frames.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::protocol::{self, COMMAND_SUBTYPE_COMMAND, COMMAND_SUBTYPE_RESULT};

/// Longest command id accepted, in bytes. Ids appear in URLs (`GET /commands/{id}`) and fill
/// seen-sets, so they are kept short; the ids [`command_id`] makes are about 30 bytes.
pub const MAX_ID_LEN: usize = 200;

/// The most nodes a command may cross. Dedup by id is what stops a command in a cyclic mesh;
/// the hop count is a backstop against a node that forgot it (restart, evicted seen-set entry).
pub const MAX_HOPS: u8 = 16;

/// What a command asks for. Serialized as a lowercase string.
///
/// A kind this build does not know deserializes into [`CommandKind::Other`], so that a node or
/// client can answer [`ResultStatus::Unsupported`] instead of rejecting the frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CommandKind {
    /// `migrate`: bring the local data up to a schema version (`args.version`).
    Migrate,
    /// `reindex`: rebuild indexes derived from the document.
    Reindex,
    /// `compact`: rewrite local storage of the document compactly.
    Compact,
    /// `invalidate`: drop local caches of the document and resync from the node.
    Invalidate,
    /// Any other kind, carried through unchanged.
    Other(String),
}

impl CommandKind {
    /// The wire name (`"migrate"`, ..., or the unknown name itself).
    pub fn as_str(&self) -> &str {
        match self {
            CommandKind::Migrate => "migrate",
            CommandKind::Reindex => "reindex",
            CommandKind::Compact => "compact",
            CommandKind::Invalidate => "invalidate",
            CommandKind::Other(name) => name,
        }
    }

    /// Parses a wire name. Never fails: unknown names become [`CommandKind::Other`].
    pub fn parse(name: &str) -> Self {
        match name {
            "migrate" => CommandKind::Migrate,
            "reindex" => CommandKind::Reindex,
            "compact" => CommandKind::Compact,
            "invalidate" => CommandKind::Invalidate,
            other => CommandKind::Other(other.to_string()),
        }
    }

    /// Whether this is one of the four kinds ymesh defines.
    pub fn is_known(&self) -> bool {
        !matches!(self, CommandKind::Other(_))
    }
}

impl fmt::Display for CommandKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for CommandKind {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(CommandKind::parse(s))
    }
}

impl Serialize for CommandKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CommandKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Ok(CommandKind::parse(&name))
    }
}

/// A maintenance command, as it travels between nodes and to clients (subtype 0).
///
/// JSON (field order as serialized):
///
/// ```json
/// {"id":"n1-b1-1","kind":"compact","room":"notes","args":{},"origin":"n1","boot":"b1",
///  "seq":1,"issued_ms":1000,"deadline_ms":31000,"hops":0}
/// ```
///
/// `room` is `null` for a command that applies to every room; `args` defaults to `{}` and
/// `hops` to 0 when missing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// Unique id, the dedup key everywhere; see [`command_id`] for how nodes make them.
    pub id: String,
    /// What to do.
    pub kind: CommandKind,
    /// The room it applies to, or `None` for every room.
    #[serde(default)]
    pub room: Option<String>,
    /// Kind-specific arguments, e.g. `{"version": 3}` for `migrate`.
    #[serde(default = "empty_object")]
    pub args: Value,
    /// Node id of the issuing node (where results are aggregated).
    pub origin: String,
    /// Boot id of the issuing node's run that issued the command.
    pub boot: String,
    /// Sequence number within that run (starts at 1).
    pub seq: u64,
    /// Issue time, milliseconds since the Unix epoch, on the issuing node's clock.
    pub issued_ms: u64,
    /// Deadline, same clock: responders that have not answered by then count as `timeout`, and
    /// nodes stop forwarding the command.
    pub deadline_ms: u64,
    /// Number of node-to-node hops taken so far (0 on the issuing node).
    #[serde(default)]
    pub hops: u8,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// Makes a command id from the issuing node's id, its boot id and a sequence number:
/// `"{last 8 chars of node id}-{first 12 chars of boot id}-{seq}"`, e.g.
/// `"Xq3ZfT9a-4f1c2b7d9e0a-17"`.
///
/// The boot id is random per run of a node, so ids never repeat across restarts even though
/// `seq` starts over; the node-id part makes ids readable in logs. Receivers treat ids as
/// opaque strings.
pub fn command_id(origin: &str, boot: &str, seq: u64) -> String {
    let tail_start = origin
        .char_indices()
        .rev()
        .nth(7)
        .map_or(0, |(index, _)| index);
    let boot_prefix: String = boot.chars().take(12).collect();
    format!("{}-{}-{}", &origin[tail_start..], boot_prefix, seq)
}

/// Default time a command stays answerable: 30 seconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;

/// Makes this node's commands: ids from [`command_id`], sequence numbers from 1 within this
/// run (`boot`).
#[derive(Debug, Clone)]
pub struct CommandIssuer {
    origin: String,
    boot: String,
    next_seq: u64,
}

impl CommandIssuer {
    /// An issuer for node `origin` in its run `boot`.
    pub fn new(origin: impl Into<String>, boot: impl Into<String>) -> Self {
        CommandIssuer {
            origin: origin.into(),
            boot: boot.into(),
            next_seq: 1,
        }
    }

    /// A new command issued at `now_ms`, answerable until `now_ms + timeout_ms`, with the next
    /// sequence number and `hops` 0.
    pub fn issue(
        &mut self,
        kind: CommandKind,
        room: Option<String>,
        args: Value,
        now_ms: u64,
        timeout_ms: u64,
    ) -> Command {
        let seq = self.next_seq;
        self.next_seq += 1;
        Command {
            id: command_id(&self.origin, &self.boot, seq),
            kind,
            room,
            args,
            origin: self.origin.clone(),
            boot: self.boot.clone(),
            seq,
            issued_ms: now_ms,
            deadline_ms: now_ms.saturating_add(timeout_ms),
            hops: 0,
        }
    }
}

impl Command {
    /// The copy to send to the next node: `hops` plus one.
    pub fn next_hop(&self) -> Command {
        Command {
            hops: self.hops.saturating_add(1),
            ..self.clone()
        }
    }

    /// The JSON text carried in the frame.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| unreachable_json())
    }
}

/// Whether `command` may still be passed on at `now_ms`: its deadline has not passed and it
/// has taken fewer than [`MAX_HOPS`] hops. A node forwards [`Command::next_hop`] of it.
pub fn forwardable(command: &Command, now_ms: u64) -> bool {
    now_ms < command.deadline_ms && command.hops < MAX_HOPS
}

/// The outcome a responder reports. Serialized lowercase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultStatus {
    /// Done.
    Ok,
    /// Tried and failed; `detail` says why.
    Error,
    /// Declined on purpose (policy, read-only client, ...).
    Refused,
    /// The responder does not handle this kind.
    Unsupported,
    /// No answer by the deadline. Recorded by the issuing node, never sent by a responder.
    Timeout,
}

impl ResultStatus {
    /// Every status, in the order `counts` lists them.
    pub const ALL: [ResultStatus; 5] = [
        ResultStatus::Ok,
        ResultStatus::Error,
        ResultStatus::Refused,
        ResultStatus::Unsupported,
        ResultStatus::Timeout,
    ];

    /// Whether the command did not take effect at this responder: `error`, `refused` or
    /// `timeout` (`ymesh command --wait` then exits non-zero). `unsupported` is a
    /// responder's deliberate answer that the kind is not its business, not a failure.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            ResultStatus::Error | ResultStatus::Refused | ResultStatus::Timeout
        )
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ResultStatus::Ok => "ok",
            ResultStatus::Error => "error",
            ResultStatus::Refused => "refused",
            ResultStatus::Unsupported => "unsupported",
            ResultStatus::Timeout => "timeout",
        }
    }
}

impl fmt::Display for ResultStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who answered: a client (responder = its Yjs client id, in decimal) or a node (responder =
/// its node id). Serialized lowercase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponderKind {
    /// A connected client.
    Client,
    /// A ymesh node.
    Node,
}

/// One responder's answer to a command (subtype 1).
///
/// JSON (field order as serialized):
///
/// ```json
/// {"id":"n1-b1-1","responder":"42","responder_kind":"client","room":"notes",
///  "status":"ok","detail":null,"at_ms":1500}
/// ```
///
/// `room` and `detail` may be missing (they default to `null`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    /// The command's id.
    pub id: String,
    /// The Yjs client id (decimal string) of a client, or the node id of a node.
    pub responder: String,
    /// Whether `responder` is a client or a node.
    pub responder_kind: ResponderKind,
    /// The room the responder acted on (a client's room; `None` for a node result covering
    /// several rooms).
    #[serde(default)]
    pub room: Option<String>,
    /// The outcome.
    pub status: ResultStatus,
    /// Free-form detail: a message, counts, an error text.
    #[serde(default)]
    pub detail: Value,
    /// When the responder answered, milliseconds since the Unix epoch, on its own clock.
    pub at_ms: u64,
}

impl CommandResult {
    /// A result for `command` from `responder`, with `room` taken from the command.
    pub fn for_command(
        command: &Command,
        responder: impl Into<String>,
        responder_kind: ResponderKind,
        status: ResultStatus,
        detail: Value,
        at_ms: u64,
    ) -> Self {
        CommandResult {
            id: command.id.clone(),
            responder: responder.into(),
            responder_kind,
            room: command.room.clone(),
            status,
            detail,
            at_ms,
        }
    }

    /// The `unsupported` answer to a command whose kind the responder does not handle.
    pub fn unsupported(
        command: &Command,
        responder: impl Into<String>,
        responder_kind: ResponderKind,
        at_ms: u64,
    ) -> Self {
        let detail = Value::String(format!(
            "command kind {:?} is not supported",
            command.kind.as_str()
        ));
        CommandResult::for_command(
            command,
            responder,
            responder_kind,
            ResultStatus::Unsupported,
            detail,
            at_ms,
        )
    }

    /// The JSON text carried in the frame.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| unreachable_json())
    }
}

/// Serializing these types cannot fail (string keys, no custom serializers that error); this
/// fallback keeps the encoders total without a panic path.
fn unreachable_json() -> String {
    tracing::error!("serializing a command document failed");
    "{}".to_string()
}

/// A decoded type-103 message.
#[derive(Debug, Clone, PartialEq)]
pub enum CommandMessage {
    /// Subtype 0.
    Command(Command),
    /// Subtype 1.
    Result(CommandResult),
}

impl CommandMessage {
    /// The full frame: `varUint(103) · varUint(subtype) · varString(json)`.
    pub fn encode(&self) -> Bytes {
        match self {
            CommandMessage::Command(c) => encode_command(c),
            CommandMessage::Result(r) => encode_result(r),
        }
    }

    /// The command id it carries or answers.
    pub fn id(&self) -> &str {
        match self {
            CommandMessage::Command(c) => &c.id,
            CommandMessage::Result(r) => &r.id,
        }
    }

    /// Decodes a [`protocol::Message::Command`]; `None` for any other message.
    pub fn from_message(message: &protocol::Message) -> Option<Result<Self, CommandError>> {
        match message {
            protocol::Message::Command { subtype, json } => Some(decode(*subtype, json)),
            _ => None,
        }
    }
}

/// Why a type-103 payload could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// A subtype other than 0 (command) or 1 (result).
    #[error("unknown command message subtype {0} (0 = command, 1 = result)")]
    UnknownSubtype(u64),
    /// The text is not JSON at all.
    #[error("{what} is not valid JSON: {source}")]
    NotJson {
        /// `"command"` or `"result"`.
        what: &'static str,
        /// The parser's error (with line and column).
        source: serde_json::Error,
    },
    /// Valid JSON of the wrong shape: a missing field, a wrong type, an unknown status.
    #[error("invalid {what}: {source}")]
    Invalid {
        /// `"command"` or `"result"`.
        what: &'static str,
        /// The parser's error, e.g. "missing field `deadline_ms` at line 1 column 40".
        source: serde_json::Error,
    },
    /// The id is empty or longer than [`MAX_ID_LEN`] bytes.
    #[error("command id must be 1 to {max} bytes, got {len}", max = MAX_ID_LEN)]
    BadId {
        /// The id's length in bytes.
        len: usize,
    },
}

/// Encodes a command as a full type-103 frame (subtype 0).
pub fn encode_command(command: &Command) -> Bytes {
    protocol::encode_command(COMMAND_SUBTYPE_COMMAND, &command.to_json())
}

/// Encodes a result as a full type-103 frame (subtype 1).
pub fn encode_result(result: &CommandResult) -> Bytes {
    protocol::encode_command(COMMAND_SUBTYPE_RESULT, &result.to_json())
}

/// Parses the JSON of a type-103 message with the given subtype.
pub fn decode(subtype: u64, json: &str) -> Result<CommandMessage, CommandError> {
    let message = match subtype {
        COMMAND_SUBTYPE_COMMAND => CommandMessage::Command(parse(json, "command")?),
        COMMAND_SUBTYPE_RESULT => CommandMessage::Result(parse(json, "result")?),
        other => return Err(CommandError::UnknownSubtype(other)),
    };
    let len = message.id().len();
    if len == 0 || len > MAX_ID_LEN {
        return Err(CommandError::BadId { len });
    }
    Ok(message)
}

fn parse<T: serde::de::DeserializeOwned>(
    json: &str,
    what: &'static str,
) -> Result<T, CommandError> {
    serde_json::from_str(json).map_err(|source| match source.classify() {
        serde_json::error::Category::Data => CommandError::Invalid { what, source },
        _ => CommandError::NotJson { what, source },
    })
}
