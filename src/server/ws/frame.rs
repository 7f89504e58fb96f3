//! WebSocket framing (RFC 6455) for the server side of a client connection: [`Decoder`]
//! turns the bytes a client sends into [`Incoming`] messages, [`encode`] writes the
//! server's frames.
//!
//! Why not tungstenite's socket: it keeps a read buffer (and a write buffer the size of the
//! largest flush) for the whole life of a connection, about 2-3 kB per idle client. The
//! decoder here holds bytes only while a frame is incomplete (a frame split across reads,
//! or the fragments of a message) and gives the storage back as soon as the frame is whole,
//! so an idle connection holds none. What it checks is what tungstenite checked for a
//! server: client frames are masked, reserved bits are 0, control frames are final and at
//! most 125 bytes, no unknown opcodes, continuation frames only inside a fragmented
//! message, a close payload is empty or a code and UTF-8, and frame and message sizes stay
//! within their limits (a frame's size is checked from its header, before its payload is
//! read).

use bytes::Bytes;

/// A message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Incoming {
    /// A binary message (whole, fragments joined).
    Binary(Bytes),
    /// A text message (not part of the y-websocket protocol; its content is not kept).
    Text,
    /// A ping with its payload (answered with a pong carrying it).
    Ping(Bytes),
    /// A pong.
    Pong,
    /// A close frame: its code and reason, `None` when it had none (1005).
    Close(Option<(u16, String)>),
}

/// Why the client's bytes are not a WebSocket stream this server accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum FrameError {
    /// A protocol violation (the connection is failed).
    #[error("WebSocket protocol error: {0}")]
    Protocol(&'static str),
    /// A frame or message larger than the limit.
    #[error("message too big: {size} bytes, limit {limit}")]
    TooBig {
        /// Its size (a frame's, or a fragmented message's so far).
        size: u64,
        /// The limit.
        limit: usize,
    },
}

/// Opcodes.
const CONTINUATION: u8 = 0;
const TEXT: u8 = 1;
const BINARY: u8 = 2;
const CLOSE: u8 = 8;
const PING: u8 = 9;
const PONG: u8 = 10;

/// A frame header of at most 14 bytes: 2, a 64-bit length, a mask.
const MAX_HEADER: usize = 14;

/// A parsed frame header.
#[derive(Debug, Clone, Copy)]
struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    /// Header bytes.
    len: usize,
    /// Payload bytes.
    payload: usize,
}

/// Reads one frame header from the start of `buf`: `None` while incomplete.
fn parse_header(buf: &[u8], max_frame: usize) -> Result<Option<Header>, FrameError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(FrameError::Protocol("reserved bits set"));
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0f;
    if b1 & 0x80 == 0 {
        return Err(FrameError::Protocol("unmasked frame from a client"));
    }
    let (payload, at) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(l) => (u64::from(u16::from_be_bytes([l[0], l[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(l) => {
                let mut b = [0u8; 8];
                b.copy_from_slice(l);
                (u64::from_be_bytes(b), 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if opcode >= CLOSE {
        if !matches!(opcode, CLOSE | PING | PONG) {
            return Err(FrameError::Protocol("unknown control opcode"));
        }
        if !fin {
            return Err(FrameError::Protocol("fragmented control frame"));
        }
        if payload > 125 {
            return Err(FrameError::Protocol("control frame longer than 125 bytes"));
        }
    } else if !matches!(opcode, CONTINUATION | TEXT | BINARY) {
        return Err(FrameError::Protocol("unknown data opcode"));
    }
    if payload > max_frame as u64 {
        return Err(FrameError::TooBig {
            size: payload,
            limit: max_frame,
        });
    }
    let Some(m) = buf.get(at..at + 4) else {
        return Ok(None);
    };
    Ok(Some(Header {
        fin,
        opcode,
        mask: [m[0], m[1], m[2], m[3]],
        len: at + 4,
        // At most `max_frame`, a usize.
        payload: payload as usize,
    }))
}

/// Unmasks `data`, whose first byte is at `offset` within its frame's payload.
fn unmask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[(offset + i) % 4];
    }
}

/// Whether a peer may send this close code (tungstenite's rule: 1000-1003, 1007-1013,
/// 3000-4999).
fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1013 | 3000..=4999)
}

/// A data message arriving in fragments.
#[derive(Debug)]
struct Fragmented {
    text: bool,
    data: Vec<u8>,
}

/// Turns a client's bytes into messages, holding bytes only while a frame (or a fragmented
/// message) is incomplete.
#[derive(Debug)]
pub(super) struct Decoder {
    /// Limits as `u32` (one decoder per connection, so kept small): a limit past 4 GiB is
    /// taken as 4 GiB.
    max_frame: u32,
    max_message: u32,
    /// The start of an incomplete frame; no storage between frames.
    partial: Vec<u8>,
    /// A fragmented message so far.
    message: Option<Box<Fragmented>>,
}

impl Decoder {
    /// A decoder refusing frames over `max_frame` and messages over `max_message` bytes.
    pub(super) fn new(max_frame: usize, max_message: usize) -> Self {
        let small = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Decoder {
            max_frame: small(max_frame),
            max_message: small(max_message),
            partial: Vec::new(),
            message: None,
        }
    }

    /// Bytes held now (an incomplete frame, a fragmented message).
    #[cfg(test)]
    pub(super) fn held(&self) -> usize {
        self.partial.capacity() + self.message.as_ref().map_or(0, |m| m.data.capacity())
    }

    /// When the incomplete frame held has a complete header and at least `min` bytes still
    /// to come: the buffer to read them into directly, and how many to read at most (a large
    /// frame is read into place rather than copied from a smaller read buffer). Bytes
    /// appended to it are decoded by the next [`Decoder::decode`].
    pub(super) fn direct(&mut self, min: usize) -> Option<(&mut Vec<u8>, usize)> {
        let header = parse_header(&self.partial, self.max_frame as usize).ok()??;
        let missing = (header.len + header.payload).checked_sub(self.partial.len())?;
        if missing < min {
            return None;
        }
        self.partial.reserve_exact(missing);
        Some((&mut self.partial, missing))
    }

    /// Decodes the frames in the held bytes followed by `input`, handing each message to
    /// `on`; stops early (returning `Ok(false)`) when `on` returns false. What remains of an
    /// incomplete frame is kept for the next call.
    pub(super) fn decode(
        &mut self,
        input: &[u8],
        mut on: impl FnMut(Incoming) -> bool,
    ) -> Result<bool, FrameError> {
        if self.partial.is_empty() {
            let used = self.frames(input, &mut on)?;
            let Some(used) = used else {
                return Ok(false);
            };
            if used < input.len() {
                self.keep(&input[used..])?;
            }
            return Ok(true);
        }
        self.partial.extend_from_slice(input);
        let mut partial = std::mem::take(&mut self.partial);
        // A single frame filling the whole buffer becomes its message without a copy.
        if let Some(h) = parse_header(&partial, self.max_frame as usize)? {
            if h.len + h.payload == partial.len() && h.opcode == BINARY && h.fin {
                if self.message.is_some() {
                    return Err(FrameError::Protocol(
                        "a new message inside a fragmented one",
                    ));
                }
                unmask(&mut partial[h.len..], h.mask, 0);
                let message = Bytes::from(partial).slice(h.len..);
                return Ok(on(Incoming::Binary(message)));
            }
        }
        let used = self.frames(&partial, &mut on)?;
        let Some(used) = used else {
            return Ok(false);
        };
        if used < partial.len() {
            partial.drain(..used);
            self.partial = partial;
        }
        Ok(true)
    }

    /// Keeps the start of an incomplete frame, with room for the whole frame once its
    /// header is known.
    fn keep(&mut self, rest: &[u8]) -> Result<(), FrameError> {
        let whole = match parse_header(rest, self.max_frame as usize)? {
            Some(h) => h.len + h.payload,
            None => MAX_HEADER,
        };
        let mut partial = Vec::with_capacity(whole.max(rest.len()));
        partial.extend_from_slice(rest);
        self.partial = partial;
        Ok(())
    }

    /// Decodes the complete frames at the start of `buf`: how many bytes they took (`None`
    /// when `on` asked to stop).
    fn frames(
        &mut self,
        buf: &[u8],
        on: &mut impl FnMut(Incoming) -> bool,
    ) -> Result<Option<usize>, FrameError> {
        let mut at = 0;
        while let Some(h) = parse_header(&buf[at..], self.max_frame as usize)? {
            let start = at + h.len;
            let Some(payload) = buf.get(start..start + h.payload) else {
                break;
            };
            at = start + h.payload;
            if let Some(message) = self.frame(h, payload)? {
                if !on(message) {
                    return Ok(None);
                }
            }
        }
        Ok(Some(at))
    }

    /// One complete frame: the message it completes, if any.
    fn frame(&mut self, h: Header, payload: &[u8]) -> Result<Option<Incoming>, FrameError> {
        let unmasked = || {
            let mut p = payload.to_vec();
            unmask(&mut p, h.mask, 0);
            p
        };
        Ok(Some(match h.opcode {
            CLOSE => Incoming::Close(close_payload(&unmasked())?),
            PING => Incoming::Ping(Bytes::from(unmasked())),
            PONG => Incoming::Pong,
            CONTINUATION => {
                let Some(message) = self.message.as_mut() else {
                    return Err(FrameError::Protocol("continuation without a message"));
                };
                let size = message.data.len() + payload.len();
                if size > self.max_message as usize {
                    return Err(FrameError::TooBig {
                        size: size as u64,
                        limit: self.max_message as usize,
                    });
                }
                let at = message.data.len();
                message.data.extend_from_slice(payload);
                unmask(&mut message.data[at..], h.mask, 0);
                if !h.fin {
                    return Ok(None);
                }
                let Some(message) = self.message.take() else {
                    return Ok(None);
                };
                if message.text {
                    Incoming::Text
                } else {
                    Incoming::Binary(Bytes::from(message.data))
                }
            }
            _ => {
                if self.message.is_some() {
                    return Err(FrameError::Protocol(
                        "a new message inside a fragmented one",
                    ));
                }
                let text = h.opcode == TEXT;
                if !h.fin {
                    if payload.len() > self.max_message as usize {
                        return Err(FrameError::TooBig {
                            size: payload.len() as u64,
                            limit: self.max_message as usize,
                        });
                    }
                    self.message = Some(Box::new(Fragmented {
                        text,
                        data: unmasked(),
                    }));
                    return Ok(None);
                }
                if payload.len() > self.max_message as usize {
                    return Err(FrameError::TooBig {
                        size: payload.len() as u64,
                        limit: self.max_message as usize,
                    });
                }
                if text {
                    Incoming::Text
                } else {
                    Incoming::Binary(Bytes::from(unmasked()))
                }
            }
        }))
    }
}

/// A close frame's payload: empty, or a code and a UTF-8 reason. A code a peer may not send
/// reads as 1002 "Protocol violation" (what is echoed back).
fn close_payload(p: &[u8]) -> Result<Option<(u16, String)>, FrameError> {
    match p {
        [] => Ok(None),
        [_] => Err(FrameError::Protocol("close payload of one byte")),
        [a, b, reason @ ..] => {
            let reason = std::str::from_utf8(reason)
                .map_err(|_| FrameError::Protocol("close reason is not UTF-8"))?;
            let code = u16::from_be_bytes([*a, *b]);
            if close_code_allowed(code) {
                Ok(Some((code, reason.to_string())))
            } else {
                Ok(Some((1002, "Protocol violation".to_string())))
            }
        }
    }
}

/// A server frame's header (final, unmasked) for `opcode` and `len` payload bytes.
fn header(opcode: u8, len: usize, out: &mut Vec<u8>) {
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(len as u8);
    } else if let Ok(l) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&l.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// Bytes [`encode`] writes for a payload of `len`.
pub(super) fn encoded_len(len: usize) -> usize {
    len + match len {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    }
}

/// A server frame to write.
#[derive(Debug, Clone, Copy)]
pub(super) enum Outgoing<'a> {
    /// A binary message.
    Binary(&'a [u8]),
    /// A ping.
    Ping(&'a [u8]),
    /// A pong answering a ping.
    Pong(&'a [u8]),
    /// A close frame: a code and reason (truncated to fit 123 bytes), or none.
    Close(Option<(u16, &'a str)>),
}

/// Appends `frame` to `out`.
pub(super) fn encode(frame: Outgoing<'_>, out: &mut Vec<u8>) {
    let (opcode, payload) = match frame {
        Outgoing::Binary(p) => (BINARY, p),
        Outgoing::Ping(p) => (PING, p),
        Outgoing::Pong(p) => (PONG, p),
        Outgoing::Close(None) => (CLOSE, &[][..]),
        Outgoing::Close(Some((code, reason))) => {
            let reason = truncate(reason, 123);
            header(CLOSE, 2 + reason.len(), out);
            out.extend_from_slice(&code.to_be_bytes());
            out.extend_from_slice(reason.as_bytes());
            return;
        }
    };
    out.reserve(encoded_len(payload.len()));
    header(opcode, payload.len(), out);
    out.extend_from_slice(payload);
}

/// `s` cut to at most `max` bytes on a character boundary.
pub(super) fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A client frame (masked).
    fn client(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        header(opcode, payload.len(), &mut out);
        if !fin {
            out[0] &= 0x7f;
        }
        out[1] |= 0x80;
        out.extend_from_slice(&MASK);
        let at = out.len();
        out.extend_from_slice(payload);
        unmask(&mut out[at..], MASK, 0);
        out
    }

    fn decode_all(d: &mut Decoder, input: &[u8]) -> Result<Vec<Incoming>, FrameError> {
        let mut got = Vec::new();
        d.decode(input, |m| {
            got.push(m);
            true
        })?;
        Ok(got)
    }

    #[test]
    fn whole_frames_in_one_read_hold_nothing_afterwards() {
        let mut d = Decoder::new(1 << 20, 1 << 20);
        let mut input = client(true, BINARY, b"hello");
        input.extend(client(true, PING, b"p"));
        input.extend(client(true, BINARY, &[7u8; 300]));
        input.extend(client(true, PONG, b""));
        let got = decode_all(&mut d, &input).unwrap();
        assert_eq!(
            got,
            vec![
                Incoming::Binary(Bytes::from_static(b"hello")),
                Incoming::Ping(Bytes::from_static(b"p")),
                Incoming::Binary(Bytes::from(vec![7u8; 300])),
                Incoming::Pong,
            ]
        );
        assert_eq!(d.held(), 0);
    }

    #[test]
    fn a_frame_split_at_every_byte_decodes_and_then_frees_its_bytes() {
        let payload: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();
        let input = client(true, BINARY, &payload);
        for cut in [1, 2, 3, 5, 9, 14, 100, 65_000, input.len() - 1] {
            let mut d = Decoder::new(1 << 20, 1 << 20);
            assert!(decode_all(&mut d, &input[..cut]).unwrap().is_empty());
            assert!(d.held() > 0);
            let got = decode_all(&mut d, &input[cut..]).unwrap();
            assert_eq!(got, vec![Incoming::Binary(Bytes::from(payload.clone()))]);
            assert_eq!(d.held(), 0, "cut at {cut}");
        }
        // One byte at a time, with a second frame behind.
        let mut d = Decoder::new(1 << 20, 1 << 20);
        let mut input = client(true, BINARY, b"abc");
        input.extend(client(true, BINARY, b"de"));
        let mut got = Vec::new();
        for b in &input {
            got.extend(decode_all(&mut d, &[*b]).unwrap());
        }
        assert_eq!(
            got,
            vec![
                Incoming::Binary(Bytes::from_static(b"abc")),
                Incoming::Binary(Bytes::from_static(b"de"))
            ]
        );
        assert_eq!(d.held(), 0);
    }

    #[test]
    fn a_large_frame_is_read_in_place() {
        let payload = vec![9u8; 100_000];
        let input = client(true, BINARY, &payload);
        let mut d = Decoder::new(1 << 20, 1 << 20);
        // The header (14 bytes) is not complete yet.
        assert!(decode_all(&mut d, &input[..10]).unwrap().is_empty());
        assert!(d.direct(1).is_none());
        assert!(decode_all(&mut d, &input[10..20]).unwrap().is_empty());
        assert!(d.direct(200_000).is_none());
        let (buf, max) = d.direct(8192).unwrap();
        assert_eq!(max, input.len() - 20);
        assert!(buf.capacity() - buf.len() >= max);
        buf.extend_from_slice(&input[20..]);
        let got = decode_all(&mut d, &[]).unwrap();
        assert_eq!(got, vec![Incoming::Binary(Bytes::from(payload))]);
        assert_eq!(d.held(), 0);
    }

    #[test]
    fn fragments_join_and_control_frames_may_come_between() {
        let mut d = Decoder::new(1 << 20, 1 << 20);
        let mut input = client(false, BINARY, b"ab");
        input.extend(client(true, PING, b"x"));
        input.extend(client(false, CONTINUATION, b"cd"));
        input.extend(client(true, CONTINUATION, b"e"));
        let got = decode_all(&mut d, &input).unwrap();
        assert_eq!(
            got,
            vec![
                Incoming::Ping(Bytes::from_static(b"x")),
                Incoming::Binary(Bytes::from_static(b"abcde"))
            ]
        );
        assert_eq!(d.held(), 0);
        let mut input = client(false, TEXT, b"ab");
        input.extend(client(true, CONTINUATION, b"c"));
        assert_eq!(decode_all(&mut d, &input).unwrap(), vec![Incoming::Text]);
    }

    #[test]
    fn sizes_are_checked_from_the_header_and_across_fragments() {
        let mut d = Decoder::new(100, 150);
        let input = client(true, BINARY, &[0u8; 101]);
        // Refused from the header alone.
        assert_eq!(
            decode_all(&mut d, &input[..4]),
            Err(FrameError::TooBig {
                size: 101,
                limit: 100
            })
        );
        let mut d = Decoder::new(100, 150);
        let mut input = client(false, BINARY, &[0u8; 100]);
        input.extend(client(true, CONTINUATION, &[0u8; 51]));
        assert_eq!(
            decode_all(&mut d, &input),
            Err(FrameError::TooBig {
                size: 151,
                limit: 150
            })
        );
    }

    #[test]
    fn protocol_violations_are_refused() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                {
                    let mut f = client(true, BINARY, b"a");
                    f[1] &= 0x7f;
                    f.drain(2..6);
                    f
                },
                "unmasked",
            ),
            (
                {
                    let mut f = client(true, BINARY, b"a");
                    f[0] |= 0x40;
                    f
                },
                "reserved",
            ),
            (client(false, PING, b"a"), "fragmented control"),
            (client(true, PING, &[0u8; 126]), "control frame longer"),
            (client(true, 3, b"a"), "unknown data"),
            (client(true, 11, b"a"), "unknown control"),
            (client(true, CONTINUATION, b"a"), "continuation without"),
            (
                {
                    let mut f = client(false, BINARY, b"a");
                    f.extend(client(true, BINARY, b"b"));
                    f
                },
                "inside a fragmented",
            ),
            (client(true, CLOSE, &[3]), "one byte"),
            (client(true, CLOSE, &[3, 232, 0xff]), "UTF-8"),
        ];
        for (input, what) in cases {
            let mut d = Decoder::new(1000, 1000);
            match decode_all(&mut d, &input) {
                Err(FrameError::Protocol(m)) => assert!(m.contains(what), "{m} vs {what}"),
                other => panic!("{what}: {other:?}"),
            }
        }
    }

    #[test]
    fn close_frames_carry_their_code_and_reason_or_read_as_a_protocol_violation() {
        let mut d = Decoder::new(1000, 1000);
        let mut input = client(true, CLOSE, &[0x0f, 0xa0, b'b', b'y', b'e']);
        input.extend(client(true, CLOSE, &[]));
        input.extend(client(true, CLOSE, &1005u16.to_be_bytes()));
        assert_eq!(
            decode_all(&mut d, &input).unwrap(),
            vec![
                Incoming::Close(Some((4000, "bye".into()))),
                Incoming::Close(None),
                Incoming::Close(Some((1002, "Protocol violation".into()))),
            ]
        );
    }

    #[test]
    fn decoding_stops_when_asked() {
        let mut d = Decoder::new(1000, 1000);
        let mut input = client(true, BINARY, b"a");
        input.extend(client(true, BINARY, b"b"));
        let mut n = 0;
        assert_eq!(
            d.decode(&input, |_| {
                n += 1;
                false
            }),
            Ok(false)
        );
        assert_eq!(n, 1);
    }

    #[test]
    fn server_frames_have_the_shortest_length_encoding() {
        for len in [0, 125, 126, 65_535, 65_536] {
            let payload = vec![1u8; len];
            let mut out = Vec::new();
            encode(Outgoing::Binary(&payload), &mut out);
            assert_eq!(out.len(), encoded_len(len));
            assert_eq!(out[0], 0x82);
            assert_eq!(&out[out.len() - len..], &payload[..]);
        }
        let mut out = Vec::new();
        encode(Outgoing::Close(Some((4429, &"é".repeat(100)))), &mut out);
        // 2 header bytes, the code, and the reason cut to 123 bytes on a character boundary.
        assert_eq!(out.len(), 2 + 2 + 122);
        assert_eq!(&out[..4], &[0x88, 124, 0x11, 0x4d]);
        let mut out = Vec::new();
        encode(Outgoing::Close(None), &mut out);
        assert_eq!(out, vec![0x88, 0]);
    }

    /// Property tests: whatever bytes a client sends, split however the reads fall, the
    /// decoder never panics and decodes the same messages (or the same error) as from one
    /// read, and holds nothing once every frame it was given is whole.
    mod props {
        use super::*;
        use proptest::prelude::*;

        /// Messages (and the error, if any) from `chunks` fed one after another.
        fn run(d: &mut Decoder, chunks: &[&[u8]]) -> (Vec<Incoming>, Option<FrameError>) {
            let mut got = Vec::new();
            for c in chunks {
                if let Err(e) = d.decode(c, |m| {
                    got.push(m);
                    true
                }) {
                    return (got, Some(e));
                }
            }
            (got, None)
        }

        /// Client frames of every opcode (valid or not), fragments and control frames.
        fn frame() -> impl Strategy<Value = Vec<u8>> {
            (
                any::<bool>(),
                prop_oneof![
                    Just(CONTINUATION),
                    Just(TEXT),
                    Just(BINARY),
                    Just(CLOSE),
                    Just(PING),
                    Just(PONG),
                    0u8..16
                ],
                prop::collection::vec(any::<u8>(), 0..400),
            )
                .prop_map(|(fin, op, payload)| client(fin, op, &payload))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(400))]

            #[test]
            fn any_split_decodes_as_one_read(
                frames in prop::collection::vec(frame(), 0..8),
                flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
                cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
            ) {
                let mut bytes: Vec<u8> = frames.concat();
                if !bytes.is_empty() {
                    for (i, x) in &flips {
                        let at = i.index(bytes.len());
                        bytes[at] ^= x;
                    }
                }
                let whole = run(&mut Decoder::new(1024, 2048), &[&bytes]);
                let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
                points.sort_unstable();
                points.dedup();
                let mut chunks: Vec<&[u8]> = Vec::new();
                let mut prev = 0;
                for p in points {
                    chunks.push(&bytes[prev..p]);
                    prev = p;
                }
                chunks.push(&bytes[prev..]);
                let mut d = Decoder::new(1024, 2048);
                let split = run(&mut d, &chunks);
                prop_assert_eq!(&whole, &split);
                // Unmutated frames: everything given was whole, so nothing is held but a
                // fragmented message still open.
                if flips.is_empty() && split.1.is_none() && d.message.is_none() {
                    prop_assert_eq!(d.held(), 0);
                }
            }

            #[test]
            fn random_bytes_never_panic_and_never_hold_more_than_a_frame(
                bytes in prop::collection::vec(any::<u8>(), 0..2048),
                cut in any::<prop::sample::Index>(),
            ) {
                let mut d = Decoder::new(1024, 2048);
                let at = cut.index(bytes.len() + 1);
                let _ = run(&mut d, &[&bytes[..at], &bytes[at..]]);
                prop_assert!(d.held() <= 14 + 1024 + 2048 + bytes.len());
            }
        }
    }
}
