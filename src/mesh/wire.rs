//! Node-to-node framing, free of I/O.
//!
//! This module owns every byte two ymesh nodes exchange on a mesh link: the frame envelope,
//! the frame kinds, and the JSON control messages. The framing does not depend on
//! WebSocket: a frame carries its own length, so the same bytes travel as one WebSocket
//! binary message per frame on `/_mesh` today, and back to back on a byte stream (a libp2p
//! stream) later. docs/mesh-protocol.md specifies it byte by byte; its hex examples are
//! checked by the tests at the bottom of this file.
//!
//! ```text
//! frame   = varUint(len) · payload          len = byte length of payload
//! payload = varUint(kind) · body
//! kind 0  CONTROL  body = varString(JSON of a Control message)
//! kind 1  ROOM     body = varString(room name) · one y-protocols message (rest of payload)
//! ```
//!
//! A kind this node does not know decodes as [`Frame::Unknown`] and is skipped whole (the
//! length delimits it), so later versions can add kinds without breaking older nodes.
//! Likewise a control message with an unknown `type` decodes as [`Control::Unknown`], and
//! unknown JSON fields are ignored.

use bytes::{Buf, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::protocol::codec::{var_uint_len, write_var_bytes, write_var_uint, Reader};
use crate::protocol::DecodeError;

/// The mesh protocol version this node speaks (`Hello.version`).
pub const MESH_PROTOCOL_VERSION: u32 = 2;

/// Frame kind 0: a JSON control message.
pub const KIND_CONTROL: u64 = 0;
/// Frame kind 1: a room-tagged y-protocols message.
pub const KIND_ROOM: u64 = 1;

/// Largest payload a frame may declare: the 64 MiB message limit plus 1 KiB for the kind
/// and the room name.
pub const MAX_FRAME_LEN: u64 = 64 * 1024 * 1024 + 1024;

/// One room in a manifest: its name and the digest of its state vector (lower-case hex
/// SHA-256, as [`crate::store::RoomMeta::digest`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Room name.
    pub name: String,
    /// Hex SHA-256 of the room's canonical encoded state vector.
    pub digest: String,
}

/// A deleted room in a [`Control::Tombstones`] message (see
/// [`crate::store::Tombstone`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TombstoneEntry {
    /// Room name.
    pub name: String,
    /// Unix ms of the deletion.
    pub deleted_ms: u64,
    /// Encoded (v1) state vector of the deleted document, hex.
    pub state_vector: String,
    /// Node id of the node where the room was deleted.
    pub origin: String,
}

/// A control message (frame kind 0), serialized as a JSON object whose `type` names the
/// variant in snake_case, e.g. `{"type":"ping","t":1}`.
///
/// Binary fields (keys, nonces, signatures, MACs) are lower-case hex strings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    /// First message each side sends inside the secure channel.
    Hello {
        /// Mesh protocol version the sender speaks ([`MESH_PROTOCOL_VERSION`]).
        version: u32,
        /// The sender's node id (libp2p `PeerId` text); must be the id the channel proved.
        node_id: String,
        /// Changes every time the sender starts.
        boot_id: String,
        /// The sender's own HTTP URL, if it knows one peers can reach.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        listen: Option<String>,
        /// With a mesh secret: the sender's SPAKE2 message (symmetric, Ed25519 group, bound
        /// to the channel's handshake hash), hex. Reveals nothing that lets the secret be
        /// tested offline.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pake: Option<String>,
    },
    /// Key confirmation of the mesh secret, sent by each side once both sent a `pake`:
    /// HMAC-SHA256 under the SPAKE2 key of the sender's role and the channel's handshake
    /// hash ([`crate::mesh::proto::handshake::confirmation`]), hex.
    Proof {
        /// The confirmation MAC, hex (32 bytes).
        mac: String,
    },
    /// The sender admitted the receiver. The link is up once both sides have sent one.
    Welcome {},
    /// The sender holds the receiver until a person approves it (`ymesh peer approve`); the
    /// link stays open and carries no room meanwhile. A `welcome` follows on approval, a
    /// `refused` on denial.
    Pending {
        /// Why, and how to approve, for the receiver's status and logs.
        reason: String,
    },
    /// The sender refuses the link; it closes after sending this.
    Refused {
        /// Human-readable reason, shown in status and logs.
        reason: String,
    },
    /// The sender's rooms (those its share policy allows for the receiver). May be split
    /// into several messages; `complete` is true on the last.
    Manifest {
        /// One entry per room.
        rooms: Vec<ManifestEntry>,
        /// True on the last chunk of a manifest.
        complete: bool,
    },
    /// Rooms that changed at the sender since its manifest (or its last delta).
    ManifestDelta {
        /// The changed rooms with their new digests.
        changed: Vec<ManifestEntry>,
    },
    /// Rooms deleted at the sender (or at a node it heard from), sent when a link comes up
    /// (before the manifest) and whenever a room is deleted. The receiver deletes its copy
    /// if it holds nothing the tombstone does not cover, and otherwise keeps the room and
    /// announces it back in a [`Control::ManifestDelta`].
    Tombstones {
        /// One entry per deleted room.
        rooms: Vec<TombstoneEntry>,
    },
    /// A maintenance command travelling the mesh (docs/protocol.md, "Maintenance
    /// commands"); each node acts on it once and passes it on.
    Command {
        /// The command, as clients receive it.
        command: crate::command::Command,
        /// For `invalidate`: the sender's state vector of the room (encoded v1, hex), so the
        /// receiver can tell whether dropping its copy would lose anything.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        state_vector: Option<String>,
    },
    /// A result on its way back to the node that issued the command.
    CommandResult {
        /// The result.
        result: crate::command::CommandResult,
    },
    /// Liveness probe; the receiver answers with a [`Control::Pong`] carrying the same `t`.
    Ping {
        /// Opaque to the receiver (the sender's clock in milliseconds, typically).
        t: u64,
    },
    /// Answer to a ping.
    Pong {
        /// The `t` of the ping.
        t: u64,
    },
    /// How many room updates (SyncUpdate messages in ROOM frames) the sender received on
    /// this link since its previous `ack`, per room; sent at most about twice a second while
    /// updates arrive. The receiver of the ack knows those changes reached the peer, so a
    /// link that drops leaves only the rest counted as unacknowledged.
    Ack {
        /// Room name → number of updates.
        rooms: std::collections::BTreeMap<String, u64>,
    },
    /// A message type this node does not know (sent by a newer peer). Ignored.
    #[serde(other)]
    Unknown,
}

impl Control {
    /// The `type` tag, for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Control::Hello { .. } => "hello",
            Control::Proof { .. } => "proof",
            Control::Welcome {} => "welcome",
            Control::Pending { .. } => "pending",
            Control::Refused { .. } => "refused",
            Control::Manifest { .. } => "manifest",
            Control::ManifestDelta { .. } => "manifest_delta",
            Control::Tombstones { .. } => "tombstones",
            Control::Command { .. } => "command",
            Control::CommandResult { .. } => "command_result",
            Control::Ping { .. } => "ping",
            Control::Pong { .. } => "pong",
            Control::Ack { .. } => "ack",
            Control::Unknown => "unknown",
        }
    }

    /// The JSON text of this message.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|e| unreachable!("control messages always serialize: {e}"))
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// Kind 0.
    Control(Control),
    /// Kind 1: a y-protocols message for one room.
    Room {
        /// The room name. Not validated here: the room layer checks it like a client's.
        room: String,
        /// One y-protocols message exactly as a client would send it (decode it with
        /// [`crate::protocol::decode_frame`]); a zero-copy slice of the received bytes.
        message: Bytes,
    },
    /// A kind this node does not know; callers ignore it.
    Unknown(u64),
}

impl Frame {
    /// Encodes this frame, length prefix included.
    pub fn encode(&self) -> Bytes {
        match self {
            Frame::Control(c) => encode_control(c),
            Frame::Room { room, message } => encode_room(room, message),
            Frame::Unknown(kind) => {
                let mut b = BytesMut::with_capacity(1 + var_uint_len(*kind));
                write_var_uint(&mut b, var_uint_len(*kind) as u64);
                write_var_uint(&mut b, *kind);
                b.freeze()
            }
        }
    }
}

/// Why bytes could not be decoded as a frame.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// A varUint, string or length was malformed or cut off.
    #[error("malformed mesh frame: {0}")]
    Decode(#[from] DecodeError),
    /// A frame declared a payload longer than the limit.
    #[error("mesh frame declares {declared} bytes; the limit is {max}")]
    FrameTooLarge {
        /// The declared payload length.
        declared: u64,
        /// The limit in force.
        max: u64,
    },
    /// A complete message (e.g. one WebSocket message) was not exactly one frame.
    #[error("mesh frame declares {declared} payload bytes but {actual} follow the length")]
    LengthMismatch {
        /// The declared payload length.
        declared: u64,
        /// The bytes actually present after the length prefix.
        actual: u64,
    },
    /// A payload of zero bytes (it has no kind).
    #[error("empty mesh frame (no kind)")]
    EmptyPayload,
    /// A room frame without a y-protocols message after the room name.
    #[error("room frame for {room:?} carries no message")]
    EmptyRoomMessage {
        /// The room named in the frame.
        room: String,
    },
    /// A control frame whose JSON does not parse as a control message.
    #[error("bad control message: {0}")]
    BadControl(#[source] serde_json::Error),
}

/// Encodes a control message as one frame.
pub fn encode_control(control: &Control) -> Bytes {
    let json = control.to_json();
    let payload_len = var_uint_len(KIND_CONTROL) + var_uint_len(json.len() as u64) + json.len();
    let mut b = BytesMut::with_capacity(var_uint_len(payload_len as u64) + payload_len);
    write_var_uint(&mut b, payload_len as u64);
    write_var_uint(&mut b, KIND_CONTROL);
    write_var_bytes(&mut b, json.as_bytes());
    b.freeze()
}

/// Encodes a room frame around one y-protocols message (e.g. the output of
/// [`crate::protocol::encode_sync_update`]). Encode once and share the `Bytes` between links.
pub fn encode_room(room: &str, message: &[u8]) -> Bytes {
    let payload_len =
        var_uint_len(KIND_ROOM) + var_uint_len(room.len() as u64) + room.len() + message.len();
    let mut b = BytesMut::with_capacity(var_uint_len(payload_len as u64) + payload_len);
    write_var_uint(&mut b, payload_len as u64);
    write_var_uint(&mut b, KIND_ROOM);
    write_var_bytes(&mut b, room.as_bytes());
    b.extend_from_slice(message);
    b.freeze()
}

/// The version of a clear-text `hello` frame, as nodes of mesh protocol version 1 open a
/// link with (before the secure channel existed). Lets this node answer such a peer with a
/// message it can read instead of failing its Noise handshake with noise.
pub fn plaintext_hello_version(bytes: &[u8]) -> Option<u32> {
    match decode_frame(Bytes::copy_from_slice(bytes), MAX_FRAME_LEN) {
        Ok(Frame::Control(Control::Hello { version, .. })) => Some(version),
        _ => None,
    }
}

/// Decodes one complete frame, e.g. one WebSocket message: the length prefix must match
/// the bytes that follow exactly.
pub fn decode_frame(bytes: Bytes, max_len: u64) -> Result<Frame, WireError> {
    let mut reader = Reader::new(bytes);
    let declared = reader.read_var_uint()?;
    if declared > max_len {
        return Err(WireError::FrameTooLarge {
            declared,
            max: max_len,
        });
    }
    let payload = reader.rest();
    if payload.len() as u64 != declared {
        return Err(WireError::LengthMismatch {
            declared,
            actual: payload.len() as u64,
        });
    }
    decode_payload(payload)
}

/// Decodes a frame's payload (`varUint(kind) · body`, the length prefix already removed).
pub fn decode_payload(payload: Bytes) -> Result<Frame, WireError> {
    if payload.is_empty() {
        return Err(WireError::EmptyPayload);
    }
    let mut reader = Reader::new(payload);
    match reader.read_var_uint()? {
        KIND_CONTROL => {
            let json = reader.read_var_bytes()?;
            let control = serde_json::from_slice(&json).map_err(WireError::BadControl)?;
            Ok(Frame::Control(control))
        }
        KIND_ROOM => {
            let room = reader.read_var_string()?;
            let message = reader.rest();
            if message.is_empty() {
                return Err(WireError::EmptyRoomMessage { room });
            }
            Ok(Frame::Room { room, message })
        }
        other => Ok(Frame::Unknown(other)),
    }
}

/// Splits a byte stream into frames: feed it chunks of any size with
/// [`extend`](Self::extend), then take frames with [`next_frame`](Self::next_frame) until it
/// returns `Ok(None)`.
///
/// A declared length above the limit is rejected as soon as the length prefix is complete,
/// before any of the payload is buffered; a declared length within it reserves nothing (the
/// buffer holds what arrived, so memory follows the bytes received, not the claim). Framing errors (an oversize or malformed length)
/// leave the stream without frame boundaries, so the decoder keeps returning the error and
/// the link must be closed. An error inside one frame's payload (bad JSON, say) consumes
/// that frame only.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_len: u64,
    failed: Option<FramingFailure>,
}

#[derive(Debug, Clone, Copy)]
enum FramingFailure {
    TooLarge(u64),
    Overflow,
}

/// What the front of the buffer holds.
enum Header {
    /// Not enough bytes for the length prefix yet.
    Incomplete,
    /// `(prefix length, declared payload length)`.
    Complete(usize, u64),
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(MAX_FRAME_LEN)
    }
}

impl FrameDecoder {
    /// A decoder that rejects frames declaring more than `max_len` payload bytes.
    pub fn new(max_len: u64) -> Self {
        Self {
            buf: BytesMut::new(),
            max_len,
            failed: None,
        }
    }

    /// Appends received bytes.
    pub fn extend(&mut self, chunk: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(chunk);
        }
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, WireError> {
        if let Some(failure) = self.failed {
            return Err(self.failure_error(failure));
        }
        let (prefix, declared) = match self.header() {
            Ok(Header::Incomplete) => return Ok(None),
            Ok(Header::Complete(prefix, declared)) => (prefix, declared),
            Err(failure) => {
                self.failed = Some(failure);
                self.buf = BytesMut::new();
                return Err(self.failure_error(failure));
            }
        };
        // `declared <= max_len`, which fits in usize on every supported platform. Nothing is
        // reserved for the declared length: the buffer grows with the bytes that arrive, not
        // with what a length prefix claims.
        let total = prefix + declared as usize;
        if self.buf.len() < total {
            return Ok(None);
        }
        self.buf.advance(prefix);
        let payload = self.buf.split_to(declared as usize).freeze();
        decode_payload(payload).map(Some)
    }

    fn failure_error(&self, failure: FramingFailure) -> WireError {
        match failure {
            FramingFailure::TooLarge(declared) => WireError::FrameTooLarge {
                declared,
                max: self.max_len,
            },
            FramingFailure::Overflow => {
                WireError::Decode(DecodeError::VarUintOverflow { offset: 0 })
            }
        }
    }

    /// Parses the length prefix at the front of the buffer without consuming it.
    fn header(&self) -> Result<Header, FramingFailure> {
        let mut value: u64 = 0;
        for (i, &byte) in self.buf.iter().enumerate() {
            if i >= 8 {
                return Err(FramingFailure::Overflow);
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                if value > self.max_len {
                    return Err(FramingFailure::TooLarge(value));
                }
                return Ok(Header::Complete(i + 1, value));
            }
            // Reject as early as possible: the bits seen so far already exceed the limit.
            if value > self.max_len {
                return Err(FramingFailure::TooLarge(value));
            }
        }
        if self.buf.len() >= 8 {
            return Err(FramingFailure::Overflow);
        }
        Ok(Header::Incomplete)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::mesh::hex;

    fn hello() -> Control {
        Control::Hello {
            version: 2,
            node_id: "12D3KooWExample".into(),
            boot_id: "b007".into(),
            listen: Some("http://127.0.0.1:3913".into()),
            pake: Some("58".repeat(33)),
        }
    }

    fn all_frames() -> Vec<Frame> {
        let controls = vec![
            hello(),
            Control::Proof {
                mac: "cd".repeat(32),
            },
            Control::Welcome {},
            Control::Pending {
                reason: "new device".into(),
            },
            Control::Refused {
                reason: "no".into(),
            },
            Control::Manifest {
                rooms: vec![ManifestEntry {
                    name: "notes".into(),
                    digest: "ff".repeat(32),
                }],
                complete: true,
            },
            Control::ManifestDelta { changed: vec![] },
            Control::Ping { t: 1 << 40 },
            Control::Pong { t: 0 },
        ];
        let mut frames: Vec<Frame> = controls.into_iter().map(Frame::Control).collect();
        frames.push(Frame::Room {
            room: "notes/é".into(),
            message: crate::protocol::encode_sync_update(&[1, 2, 3]),
        });
        frames.push(Frame::Room {
            room: String::new(),
            message: Bytes::from(vec![7u8; 300]),
        });
        frames.push(Frame::Unknown(42));
        frames
    }

    #[test]
    fn every_frame_round_trips() {
        for frame in all_frames() {
            let bytes = frame.encode();
            assert_eq!(decode_frame(bytes.clone(), MAX_FRAME_LEN).unwrap(), frame);
            let mut d = FrameDecoder::default();
            d.extend(&bytes);
            assert_eq!(d.next_frame().unwrap(), Some(frame));
            assert_eq!(d.next_frame().unwrap(), None);
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn stream_split_at_every_byte() {
        let stream: Vec<u8> = all_frames().iter().flat_map(|f| f.encode()).collect();
        let expected = all_frames();
        // One byte at a time.
        let mut d = FrameDecoder::default();
        let mut got = Vec::new();
        for b in &stream {
            d.extend(std::slice::from_ref(b));
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, expected);
        // Two chunks, split at every position.
        for split in 0..=stream.len() {
            let mut d = FrameDecoder::default();
            let mut got = Vec::new();
            for chunk in [&stream[..split], &stream[split..]] {
                d.extend(chunk);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, expected, "split at {split}");
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn oversize_length_is_rejected_before_the_payload_arrives() {
        // 64 MiB + 1 KiB is allowed, one more byte is not.
        let mut b = BytesMut::new();
        write_var_uint(&mut b, MAX_FRAME_LEN + 1);
        let mut d = FrameDecoder::default();
        d.extend(&b);
        match d.next_frame() {
            Err(WireError::FrameTooLarge { declared, max }) => {
                assert_eq!(declared, MAX_FRAME_LEN + 1);
                assert_eq!(max, MAX_FRAME_LEN);
            }
            other => panic!("unexpected {other:?}"),
        }
        // The stream is dead: the same error again, and nothing more is buffered.
        d.extend(&[0; 100]);
        assert!(matches!(
            d.next_frame(),
            Err(WireError::FrameTooLarge { .. })
        ));
        assert_eq!(d.buffered(), 0);

        let mut b = BytesMut::new();
        write_var_uint(&mut b, MAX_FRAME_LEN);
        let mut d = FrameDecoder::default();
        d.extend(&b);
        assert!(
            d.next_frame().unwrap().is_none(),
            "the limit itself is fine"
        );
        // ... and reserves nothing for the 64 MiB it claims.
        assert!(d.buf.capacity() < 64 * 1024, "{}", d.buf.capacity());

        // A huge length is rejected from its first bytes, without waiting for the rest.
        let mut d = FrameDecoder::new(100);
        d.extend(&[0xff, 0xff]);
        assert!(matches!(
            d.next_frame(),
            Err(WireError::FrameTooLarge { .. })
        ));

        let mut b = BytesMut::new();
        write_var_uint(&mut b, 101);
        b.extend_from_slice(&[0; 101]);
        assert!(matches!(
            decode_frame(b.freeze(), 100),
            Err(WireError::FrameTooLarge {
                declared: 101,
                max: 100
            })
        ));
    }

    #[test]
    fn truncated_and_overlong_varints() {
        // A length prefix cut off: the stream waits, a whole message is an error.
        let mut d = FrameDecoder::default();
        d.extend(&[0x80]);
        assert!(d.next_frame().unwrap().is_none());
        assert!(matches!(
            decode_frame(Bytes::from_static(&[0x80]), MAX_FRAME_LEN),
            Err(WireError::Decode(DecodeError::UnexpectedEnd { offset: 0 }))
        ));
        // A length prefix that never ends (with a limit so high it is not hit first).
        let mut d = FrameDecoder::new(u64::MAX);
        d.extend(&[0x80; 9]);
        assert!(matches!(
            d.next_frame(),
            Err(WireError::Decode(DecodeError::VarUintOverflow { .. }))
        ));
        // A kind cut off inside the payload.
        assert!(matches!(
            decode_frame(Bytes::from_static(&[0x01, 0x80]), MAX_FRAME_LEN),
            Err(WireError::Decode(DecodeError::UnexpectedEnd { offset: 0 }))
        ));
        // A room name whose length exceeds the payload.
        assert!(matches!(
            decode_frame(Bytes::from_static(&[0x03, 0x01, 0x05, b'a']), MAX_FRAME_LEN),
            Err(WireError::Decode(DecodeError::LengthOutOfRange { .. }))
        ));
        // A control frame whose JSON string is cut off.
        assert!(matches!(
            decode_frame(Bytes::from_static(&[0x02, 0x00, 0x05]), MAX_FRAME_LEN),
            Err(WireError::Decode(DecodeError::LengthOutOfRange { .. }))
        ));
    }

    #[test]
    fn whole_message_length_must_match() {
        let mut bytes = encode_control(&Control::Ping { t: 1 }).to_vec();
        bytes.push(0);
        assert!(matches!(
            decode_frame(Bytes::from(bytes.clone()), MAX_FRAME_LEN),
            Err(WireError::LengthMismatch { .. })
        ));
        bytes.truncate(bytes.len() - 2);
        assert!(matches!(
            decode_frame(Bytes::from(bytes), MAX_FRAME_LEN),
            Err(WireError::LengthMismatch { .. })
        ));
        assert!(matches!(
            decode_frame(Bytes::from_static(&[0x00]), MAX_FRAME_LEN),
            Err(WireError::EmptyPayload)
        ));
    }

    #[test]
    fn unknown_kinds_are_skipped_whole() {
        // Kind 9 with a 3-byte body, then a ping: the ping still decodes.
        let mut stream = vec![0x04, 0x09, 0xaa, 0xbb, 0xcc];
        stream.extend_from_slice(&encode_control(&Control::Ping { t: 5 }));
        let mut d = FrameDecoder::default();
        d.extend(&stream);
        assert_eq!(d.next_frame().unwrap(), Some(Frame::Unknown(9)));
        assert_eq!(
            d.next_frame().unwrap(),
            Some(Frame::Control(Control::Ping { t: 5 }))
        );
    }

    #[test]
    fn bad_json_fails_one_frame_only() {
        let json = b"{\"type\":\"ping\"";
        let mut b = BytesMut::new();
        write_var_uint(&mut b, (2 + json.len()) as u64);
        write_var_uint(&mut b, KIND_CONTROL);
        write_var_bytes(&mut b, json);
        b.extend_from_slice(&encode_control(&Control::Pong { t: 2 }));
        let mut d = FrameDecoder::default();
        d.extend(&b);
        let err = d.next_frame().unwrap_err();
        assert!(matches!(err, WireError::BadControl(_)), "{err:?}");
        assert!(err.to_string().starts_with("bad control message"), "{err}");
        assert_eq!(
            d.next_frame().unwrap(),
            Some(Frame::Control(Control::Pong { t: 2 }))
        );

        for bad in [
            r#"{"t":1}"#,                 // no type
            r#"{"type":"ping"}"#,         // missing field
            r#"{"type":"ping","t":"x"}"#, // wrong field type
            r#"["ping"]"#,                // not an object
            "\u{0}",                      // not JSON
        ] {
            let mut b = BytesMut::new();
            write_var_uint(
                &mut b,
                (1 + var_uint_len(bad.len() as u64) + bad.len()) as u64,
            );
            write_var_uint(&mut b, KIND_CONTROL);
            write_var_bytes(&mut b, bad.as_bytes());
            assert!(
                matches!(
                    decode_frame(b.freeze(), MAX_FRAME_LEN),
                    Err(WireError::BadControl(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn newer_peers_messages_and_fields_are_tolerated() {
        let parse = |json: &str| serde_json::from_str::<Control>(json).unwrap();
        assert_eq!(parse(r#"{"type":"gossip","x":[1,2]}"#), Control::Unknown);
        assert_eq!(
            parse(r#"{"type":"ping","t":3,"extra":true}"#),
            Control::Ping { t: 3 }
        );
        assert_eq!(
            parse(r#"{"type":"welcome","since":1}"#),
            Control::Welcome {}
        );
        assert_eq!(
            parse(r#"{"type":"proof","mac":"00","signature":"11"}"#),
            Control::Proof { mac: "00".into() }
        );
    }

    #[test]
    fn room_frames_keep_the_message_bytes_exactly() {
        let msg = crate::protocol::encode_sync_step1(&[0]);
        let bytes = encode_room("a b+c", &msg);
        match decode_frame(bytes, MAX_FRAME_LEN).unwrap() {
            Frame::Room { room, message } => {
                assert_eq!(room, "a b+c");
                assert_eq!(message, msg);
            }
            other => panic!("unexpected {other:?}"),
        }
        let empty = Bytes::from_static(&[0x03, 0x01, 0x01, b'r']);
        assert!(matches!(
            decode_frame(empty, MAX_FRAME_LEN),
            Err(WireError::EmptyRoomMessage { room }) if room == "r"
        ));
        let bad_utf8 = Bytes::from_static(&[0x04, 0x01, 0x01, 0xff, 0x00]);
        assert!(matches!(
            decode_frame(bad_utf8, MAX_FRAME_LEN),
            Err(WireError::Decode(DecodeError::InvalidUtf8 { .. }))
        ));
    }

    // ---- Examples quoted in docs/mesh-protocol.md. Change both together. ----

    /// Hex with a space between bytes, as the docs write it.
    pub(crate) fn spaced(bytes: &[u8]) -> String {
        hex::encode(bytes)
            .as_bytes()
            .chunks(2)
            .map(|p| std::str::from_utf8(p).unwrap())
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub(crate) const EXAMPLE_PING: &str =
        "18 00 16 7b 22 74 79 70 65 22 3a 22 70 69 6e 67 22 2c 22 74 22 3a 34 32 7d";
    pub(crate) const EXAMPLE_WELCOME: &str =
        "14 00 12 7b 22 74 79 70 65 22 3a 22 77 65 6c 63 6f 6d 65 22 7d";
    pub(crate) const EXAMPLE_ROOM_STEP1: &str = "0b 01 05 6e 6f 74 65 73 00 00 01 00";
    pub(crate) const EXAMPLE_UNKNOWN_KIND: &str = "04 09 aa bb cc";

    #[test]
    fn doc_examples_are_exact() {
        assert_eq!(
            spaced(&encode_control(&Control::Ping { t: 42 })),
            EXAMPLE_PING
        );
        assert_eq!(
            spaced(&encode_control(&Control::Welcome {})),
            EXAMPLE_WELCOME
        );
        let step1 = crate::protocol::encode_sync_step1(&[0x00]);
        assert_eq!(spaced(&encode_room("notes", &step1)), EXAMPLE_ROOM_STEP1);
        assert_eq!(
            decode_frame(
                Bytes::from(hex::decode(&EXAMPLE_UNKNOWN_KIND.replace(' ', "")).unwrap()),
                MAX_FRAME_LEN
            )
            .unwrap(),
            Frame::Unknown(9)
        );
        let doc = crate::mesh::tests::protocol_doc();
        for example in [
            EXAMPLE_PING,
            EXAMPLE_WELCOME,
            EXAMPLE_ROOM_STEP1,
            EXAMPLE_UNKNOWN_KIND,
        ] {
            assert!(
                doc.contains(example),
                "docs/mesh-protocol.md lacks the example {example}"
            );
        }
    }
}
