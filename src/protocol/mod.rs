//! The y-websocket wire format, free of I/O.
//!
//! This module owns every byte ymesh puts on or takes off a client WebSocket: the y-protocols
//! message types (SYNC 0, AWARENESS 1, AUTH 2, QUERY_AWARENESS 3) and ymesh's additions
//! (SYNC_STATUS 102, COMMAND 103). It decodes frames into [`Message`]s whose payloads are
//! zero-copy [`Bytes`] slices of the frame, and encodes outbound messages into one `Bytes`
//! buffer that the room shares between all receivers. docs/protocol.md describes the same
//! format with examples; the unit tests check it byte for byte against frames produced by the
//! JavaScript y-protocols library (`tests/fixtures/y-protocols-frames.json`).
//!
//! Decoding is bounded by the input: no count or length read from a frame allocates more
//! than the frame holds. [`messages`] walks a frame one message at a time, so a frame of a
//! million one-byte messages costs no more memory than one; [`check_frame`] validates a
//! whole frame's framing without keeping anything. The payloads a frame carries (state
//! vectors, updates, awareness updates) pass [`scan`] before yrs decodes them.

pub mod codec;
pub mod scan;

use bytes::{Bytes, BytesMut};

pub use codec::Reader;
use codec::{var_uint_len, write_var_bytes, write_var_uint};

/// Top-level type: y-sync (state vector exchange and updates).
pub const MSG_SYNC: u64 = 0;
/// Top-level type: awareness update.
pub const MSG_AWARENESS: u64 = 1;
/// Top-level type: auth (sub-type 0 = permission denied + reason).
pub const MSG_AUTH: u64 = 2;
/// Top-level type: ask the other side for all its awareness states (no body).
pub const MSG_QUERY_AWARENESS: u64 = 3;
/// Top-level type: sync status heartbeat; the server echoes it unchanged once durable.
pub const MSG_SYNC_STATUS: u64 = 102;
/// Top-level type: maintenance commands and their results.
pub const MSG_COMMAND: u64 = 103;

/// Sync sub-type: state vector, asks for the missing updates.
pub const SYNC_STEP1: u64 = 0;
/// Sync sub-type: the missing updates (answer to step 1).
pub const SYNC_STEP2: u64 = 1;
/// Sync sub-type: an incremental update.
pub const SYNC_UPDATE: u64 = 2;

/// Auth sub-type: permission denied, followed by a reason string.
pub const AUTH_PERMISSION_DENIED: u64 = 0;

/// Command sub-type: a command from a node.
pub const COMMAND_SUBTYPE_COMMAND: u64 = 0;
/// Command sub-type: a result for a command.
pub const COMMAND_SUBTYPE_RESULT: u64 = 1;

/// Why a frame could not be decoded. Each variant names the byte offset in the frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The frame ended in the middle of a value.
    #[error("frame ends inside the value at byte {offset}")]
    UnexpectedEnd {
        /// Offset where the value started.
        offset: usize,
    },
    /// A `varUint` is longer than 53 bits.
    #[error("varUint at byte {offset} does not fit in 53 bits")]
    VarUintOverflow {
        /// Offset where the value started.
        offset: usize,
    },
    /// A length prefix claims more bytes than the frame holds.
    #[error("length {declared} at byte {offset} exceeds the {remaining} bytes left in the frame")]
    LengthOutOfRange {
        /// Offset of the length prefix.
        offset: usize,
        /// Declared length.
        declared: u64,
        /// Bytes actually left.
        remaining: u64,
    },
    /// A string is not UTF-8.
    #[error("string at byte {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// Offset of the string's length prefix.
        offset: usize,
    },
    /// A sync message with a sub-type other than 0, 1 or 2.
    #[error("unknown sync message sub-type {0}")]
    UnknownSyncType(u64),
    /// The frame had no bytes at all.
    #[error("empty frame")]
    Empty,
}

/// One message of the sync sub-protocol (type 0). Payloads are raw lib0 v1 encodings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncMessage {
    /// Sub-type 0: the sender's encoded state vector.
    Step1(Bytes),
    /// Sub-type 1: an update holding what the receiver's state vector lacked.
    Step2(Bytes),
    /// Sub-type 2: an incremental update.
    Update(Bytes),
}

/// One decoded y-protocols (or ymesh) message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Type 0.
    Sync(SyncMessage),
    /// Type 1: an encoded awareness update (`varUint n · n × (client, clock, json)`).
    Awareness(Bytes),
    /// Type 2, sub-type 0: permission denied with a reason.
    AuthDenied(String),
    /// Type 2 with a sub-type other than 0 (not used by y-websocket clients; ignored).
    AuthOther(u64),
    /// Type 3 (no body).
    QueryAwareness,
    /// Type 102: the opaque payload of a sync-status heartbeat.
    SyncStatus(Bytes),
    /// Type 103: a command (sub-type 0) or result (sub-type 1) as JSON text.
    Command {
        /// 0 = command, 1 = result; other values are carried through for forward compatibility.
        subtype: u64,
        /// The JSON document.
        json: String,
    },
    /// A type this node does not know. Its body cannot be delimited, so the rest of the frame
    /// is skipped.
    Unknown(u64),
}

impl Message {
    /// Encodes this message as one frame.
    pub fn encode(&self) -> Bytes {
        match self {
            Message::Sync(SyncMessage::Step1(sv)) => encode_sync(SYNC_STEP1, sv),
            Message::Sync(SyncMessage::Step2(u)) => encode_sync(SYNC_STEP2, u),
            Message::Sync(SyncMessage::Update(u)) => encode_sync(SYNC_UPDATE, u),
            Message::Awareness(u) => encode_awareness(u),
            Message::AuthDenied(reason) => encode_auth_denied(reason),
            Message::AuthOther(sub) => {
                let mut b = BytesMut::with_capacity(1 + var_uint_len(*sub));
                write_var_uint(&mut b, MSG_AUTH);
                write_var_uint(&mut b, *sub);
                b.freeze()
            }
            Message::QueryAwareness => encode_query_awareness(),
            Message::SyncStatus(payload) => encode_sync_status(payload),
            Message::Command { subtype, json } => encode_command(*subtype, json),
            Message::Unknown(t) => {
                let mut b = BytesMut::with_capacity(var_uint_len(*t));
                write_var_uint(&mut b, *t);
                b.freeze()
            }
        }
    }

    /// Short name for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Sync(SyncMessage::Step1(_)) => "sync_step1",
            Message::Sync(SyncMessage::Step2(_)) => "sync_step2",
            Message::Sync(SyncMessage::Update(_)) => "sync_update",
            Message::Awareness(_) => "awareness",
            Message::AuthDenied(_) | Message::AuthOther(_) => "auth",
            Message::QueryAwareness => "query_awareness",
            Message::SyncStatus(_) => "sync_status",
            Message::Command { .. } => "command",
            Message::Unknown(_) => "unknown",
        }
    }
}

fn with_header(msg_type: u64, sub: Option<u64>, payload_len: usize) -> BytesMut {
    let cap = var_uint_len(msg_type)
        + sub.map_or(0, var_uint_len)
        + var_uint_len(payload_len as u64)
        + payload_len;
    let mut b = BytesMut::with_capacity(cap);
    write_var_uint(&mut b, msg_type);
    if let Some(sub) = sub {
        write_var_uint(&mut b, sub);
    }
    b
}

/// `[0, sub, varUint8Array(payload)]`.
pub fn encode_sync(sub: u64, payload: &[u8]) -> Bytes {
    let mut b = with_header(MSG_SYNC, Some(sub), payload.len());
    write_var_bytes(&mut b, payload);
    b.freeze()
}

/// SyncStep1 carrying an encoded state vector.
pub fn encode_sync_step1(state_vector: &[u8]) -> Bytes {
    encode_sync(SYNC_STEP1, state_vector)
}

/// SyncStep2 carrying an update.
pub fn encode_sync_step2(update: &[u8]) -> Bytes {
    encode_sync(SYNC_STEP2, update)
}

/// Sync Update carrying an update.
pub fn encode_sync_update(update: &[u8]) -> Bytes {
    encode_sync(SYNC_UPDATE, update)
}

/// `[1, varUint8Array(awareness update)]`.
pub fn encode_awareness(update: &[u8]) -> Bytes {
    let mut b = with_header(MSG_AWARENESS, None, update.len());
    write_var_bytes(&mut b, update);
    b.freeze()
}

/// `[2, 0, varString(reason)]`.
pub fn encode_auth_denied(reason: &str) -> Bytes {
    let mut b = with_header(MSG_AUTH, Some(AUTH_PERMISSION_DENIED), reason.len());
    write_var_bytes(&mut b, reason.as_bytes());
    b.freeze()
}

/// `[3]`.
pub fn encode_query_awareness() -> Bytes {
    Bytes::from_static(&[MSG_QUERY_AWARENESS as u8])
}

/// `[102, varUint8Array(payload)]`.
pub fn encode_sync_status(payload: &[u8]) -> Bytes {
    let mut b = with_header(MSG_SYNC_STATUS, None, payload.len());
    write_var_bytes(&mut b, payload);
    b.freeze()
}

/// `[103, subtype, varString(json)]`.
pub fn encode_command(subtype: u64, json: &str) -> Bytes {
    let mut b = with_header(MSG_COMMAND, Some(subtype), json.len());
    write_var_bytes(&mut b, json.as_bytes());
    b.freeze()
}

/// Decodes the next message from `reader`.
///
/// An unknown top-level type yields [`Message::Unknown`] and consumes the rest of the frame,
/// because its body cannot be delimited.
pub fn decode_message(reader: &mut Reader) -> Result<Message, DecodeError> {
    let msg_type = reader.read_var_uint()?;
    let msg = match msg_type {
        MSG_SYNC => {
            let sub = reader.read_var_uint()?;
            let payload = reader.read_var_bytes()?;
            match sub {
                SYNC_STEP1 => Message::Sync(SyncMessage::Step1(payload)),
                SYNC_STEP2 => Message::Sync(SyncMessage::Step2(payload)),
                SYNC_UPDATE => Message::Sync(SyncMessage::Update(payload)),
                other => return Err(DecodeError::UnknownSyncType(other)),
            }
        }
        MSG_AWARENESS => Message::Awareness(reader.read_var_bytes()?),
        MSG_AUTH => {
            let sub = reader.read_var_uint()?;
            if sub == AUTH_PERMISSION_DENIED {
                Message::AuthDenied(reader.read_var_string()?)
            } else {
                skip_rest(reader);
                Message::AuthOther(sub)
            }
        }
        MSG_QUERY_AWARENESS => Message::QueryAwareness,
        MSG_SYNC_STATUS => Message::SyncStatus(reader.read_var_bytes()?),
        MSG_COMMAND => {
            let subtype = reader.read_var_uint()?;
            let json = reader.read_var_string()?;
            Message::Command { subtype, json }
        }
        other => {
            skip_rest(reader);
            Message::Unknown(other)
        }
    };
    Ok(msg)
}

fn skip_rest(reader: &mut Reader) {
    reader.skip_to_end();
}

/// Decodes every message in one frame into a `Vec`.
///
/// y-websocket v3 clients send one message per frame; newer clients and yrs may concatenate
/// several, so all are read. The first error aborts the frame. The `Vec` grows with the
/// messages the frame really holds (at least one byte each), so it is bounded by the frame,
/// but at some 50 bytes per message: code that handles untrusted frames uses
/// [`check_frame`] and [`messages`] instead, which keep one message at a time.
pub fn decode_frame(frame: Bytes) -> Result<Vec<Message>, DecodeError> {
    messages(frame).collect()
}

/// The messages of one frame, decoded one at a time as the iterator advances. It yields an
/// error for an empty frame or a malformed message, and ends after the first error. A run of
/// consecutive QueryAwareness messages (type 3, no body) yields one: they ask one question.
pub fn messages(frame: Bytes) -> Messages {
    Messages {
        empty: frame.is_empty(),
        reader: Reader::new(frame),
        done: false,
    }
}

/// Checks the framing of a whole frame (every type, sub-type, length and string) without
/// building any message; returns the number of messages [`messages`] will yield, or the
/// error it will end with. O(frame) time, O(1) memory.
pub fn check_frame(frame: &Bytes) -> Result<usize, DecodeError> {
    if frame.is_empty() {
        return Err(DecodeError::Empty);
    }
    let mut reader = Reader::new(frame.clone());
    let mut n = 0;
    while reader.has_remaining() {
        check_message(&mut reader)?;
        n += 1;
    }
    Ok(n)
}

/// [`decode_message`] without building the message: the same reads, in the same order.
fn check_message(reader: &mut Reader) -> Result<(), DecodeError> {
    match reader.read_var_uint()? {
        MSG_SYNC => {
            let sub = reader.read_var_uint()?;
            reader.skip_var_bytes()?;
            if !matches!(sub, SYNC_STEP1 | SYNC_STEP2 | SYNC_UPDATE) {
                return Err(DecodeError::UnknownSyncType(sub));
            }
        }
        MSG_AWARENESS | MSG_SYNC_STATUS => {
            reader.skip_var_bytes()?;
        }
        MSG_AUTH => {
            if reader.read_var_uint()? == AUTH_PERMISSION_DENIED {
                reader.skip_var_string()?;
            } else {
                skip_rest(reader);
            }
        }
        MSG_QUERY_AWARENESS => reader.skip_run(MSG_QUERY_AWARENESS as u8),
        MSG_COMMAND => {
            reader.read_var_uint()?;
            reader.skip_var_string()?;
        }
        _ => skip_rest(reader),
    }
    Ok(())
}

/// Iterator over the messages of one frame; see [`messages`].
#[derive(Debug, Clone)]
pub struct Messages {
    reader: Reader,
    empty: bool,
    done: bool,
}

impl Iterator for Messages {
    type Item = Result<Message, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.empty {
            self.done = true;
            return Some(Err(DecodeError::Empty));
        }
        if !self.reader.has_remaining() {
            self.done = true;
            return None;
        }
        let msg = decode_message(&mut self.reader);
        if let Ok(Message::QueryAwareness) = msg {
            // A run of QueryAwareness messages asks one question: it decodes as one message.
            self.reader.skip_run(MSG_QUERY_AWARENESS as u8);
        }
        self.done = msg.is_err();
        Some(msg)
    }
}

#[cfg(test)]
mod tests;
