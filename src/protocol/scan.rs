//! Pre-checks of the lib0 v1 payloads the node hands to yrs: state vectors, updates and
//! awareness updates.
//!
//! yrs reserves memory for the counts it reads before it reads the elements (a state vector
//! or update "with 2^29 clients" reserves a hash table for 2^29 entries, about 1 GB, from
//! five bytes), and it decodes nested values recursively. So no byte from the network
//! reaches a yrs decoder before it passes a scan here. A scan walks the payload exactly as
//! yrs's v1 decoder will, without allocating, and refuses it when:
//!
//! - a count claims more elements than the bytes that remain could hold (every element takes
//!   at least one byte), so what yrs reserves afterwards is bounded by the payload's size;
//! - a value ends early, or a varint is longer than 10 bytes (no encoder writes one);
//! - values (`Any` arrays and maps) nest deeper than [`MAX_ANY_DEPTH`], which would take
//!   yrs's recursive decoder that many stack frames;
//! - a clock range passes 2^32 - 1 (yrs adds clocks without checking and would panic or wrap),
//!   or a client id passes 2^53 - 1 (see [`MAX_CLIENT_ID`]);
//! - a content or type tag is one yrs does not decode;
//! - for awareness, a client's state is not valid JSON (y-protocols sends
//!   `JSON.stringify(state)` and every receiver parses it: one bad state would break every
//!   client in the room).
//!
//! Varints are read with yrs's own arithmetic (wrapping shifts, `u32` fields wrapping at 32
//! bits) so the scan and yrs always agree on where each value ends and on every count.
//! A scan is O(n) in time and O(1) in memory (the nesting stack is bounded by
//! [`MAX_ANY_DEPTH`]). The `decode_*` functions scan, then let yrs decode (awareness updates,
//! which the node keeps itself, are decoded here).

use yrs::updates::decoder::Decode;
use yrs::{StateVector, Update};

/// Deepest nesting of `Any` values (arrays and maps inside arrays and maps) an update may
/// carry. Documents made from JSON rarely nest beyond a dozen levels; serde_json, which
/// parses the node's JSON, stops at 128 as well.
pub const MAX_ANY_DEPTH: usize = 128;

/// The longest varint accepted: 10 bytes carry 70 bits, enough for any `u64`.
const MAX_VARINT_BYTES: usize = 10;

/// The largest client id: y-protocols client ids are JavaScript integers (53 bits), and yrs
/// keeps ids in 53 bits (a larger one trips a debug assertion, and loses its high bits in a
/// release build, so two clients could share an id).
pub const MAX_CLIENT_ID: u64 = (1 << 53) - 1;

/// Why a payload was refused before (or by) yrs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    /// The payload ended inside a value.
    #[error("payload ends inside the value at byte {offset}")]
    UnexpectedEnd {
        /// Offset where the value started.
        offset: usize,
    },
    /// A varint longer than 10 bytes.
    #[error("varint at byte {offset} is longer than 10 bytes")]
    VarIntTooLong {
        /// Offset where the varint started.
        offset: usize,
    },
    /// A count claims more elements than the bytes left could hold.
    #[error("count {declared} at byte {offset} exceeds what the {remaining} bytes left can hold")]
    CountOutOfRange {
        /// Offset of the count.
        offset: usize,
        /// The claimed count.
        declared: u64,
        /// Bytes left after the count.
        remaining: u64,
    },
    /// A tag yrs does not decode (content kind, type, `Any` tag).
    #[error("unknown {what} {value} at byte {offset}")]
    UnknownTag {
        /// Offset of the tag.
        offset: usize,
        /// What kind of tag.
        what: &'static str,
        /// Its value.
        value: u64,
    },
    /// `Any` values nested deeper than [`MAX_ANY_DEPTH`].
    #[error("values nested deeper than {MAX_ANY_DEPTH} levels at byte {offset}")]
    TooDeep {
        /// Offset of the value that went one level too deep.
        offset: usize,
    },
    /// A client id above [`MAX_CLIENT_ID`].
    #[error("client id {client} at byte {offset} is above 2^53 - 1")]
    ClientIdTooLarge {
        /// Offset of the id.
        offset: usize,
        /// The id.
        client: u64,
    },
    /// A clock range of one client passes 2^32 - 1.
    #[error("clock range at byte {offset} passes 2^32 - 1")]
    ClockOverflow {
        /// Offset of the block or range.
        offset: usize,
    },
    /// A string that must be text is not UTF-8.
    #[error("string at byte {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// Offset of the string's length.
        offset: usize,
    },
    /// An awareness state that is not valid JSON.
    #[error("awareness state of client {client} is not valid JSON: {reason}")]
    NotJson {
        /// The awareness client id.
        client: u64,
        /// The JSON parser's message.
        reason: String,
    },
    /// The scan passed and yrs refused the payload.
    #[error("{0}")]
    Yrs(String),
}

type Result<T> = std::result::Result<T, ScanError>;

/// A cursor that reads lib0 v1 values the way yrs's `DecoderV1` does.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn u8(&mut self) -> Result<u8> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or(ScanError::UnexpectedEnd { offset: self.pos })?;
        self.pos += 1;
        Ok(b)
    }

    fn skip(&mut self, n: usize) -> Result<&'a [u8]> {
        let start = self.pos;
        if n > self.remaining() {
            return Err(ScanError::UnexpectedEnd { offset: start });
        }
        self.pos += n;
        Ok(&self.buf[start..self.pos])
    }

    /// yrs `read_var::<u64>` (also `usize`): wrapping shifts.
    fn var_u64(&mut self) -> Result<u64> {
        let start = self.pos;
        let mut num: u64 = 0;
        for i in 0..MAX_VARINT_BYTES {
            let b = self
                .u8()
                .map_err(|_| ScanError::UnexpectedEnd { offset: start })?;
            num |= u64::wrapping_shl(u64::from(b & 0x7f), 7 * i as u32);
            if b < 0x80 {
                return Ok(num);
            }
        }
        Err(ScanError::VarIntTooLong { offset: start })
    }

    /// yrs `read_var::<u32>`: wrapping shifts in 32 bits.
    fn var_u32(&mut self) -> Result<u32> {
        let start = self.pos;
        let mut num: u32 = 0;
        for i in 0..MAX_VARINT_BYTES {
            let b = self
                .u8()
                .map_err(|_| ScanError::UnexpectedEnd { offset: start })?;
            num |= u32::wrapping_shl(u32::from(b & 0x7f), 7 * i as u32);
            if b < 0x80 {
                return Ok(num);
            }
        }
        Err(ScanError::VarIntTooLong { offset: start })
    }

    /// yrs `read_var::<i64>`: a sign byte with 6 bits, then up to 9 bytes of 7 (more would
    /// shift past 64 bits, which yrs does without checking).
    fn skip_var_i64(&mut self) -> Result<()> {
        let start = self.pos;
        let mut b = self.u8()?;
        for _ in 0..MAX_VARINT_BYTES {
            if b < 0x80 {
                return Ok(());
            }
            b = self
                .u8()
                .map_err(|_| ScanError::UnexpectedEnd { offset: start })?;
        }
        Err(ScanError::VarIntTooLong { offset: start })
    }

    /// A count of elements that each take at least `min_each` bytes.
    fn check_count(&self, offset: usize, declared: u64, min_each: u64) -> Result<()> {
        let remaining = self.remaining() as u64;
        if declared.saturating_mul(min_each) > remaining {
            return Err(ScanError::CountOutOfRange {
                offset,
                declared,
                remaining,
            });
        }
        Ok(())
    }

    /// A `u32` count (yrs `read_var::<u32>` / `read_len`).
    fn count_u32(&mut self, min_each: u64) -> Result<u32> {
        let offset = self.pos;
        let n = self.var_u32()?;
        self.check_count(offset, u64::from(n), min_each)?;
        Ok(n)
    }

    /// A `u64` / `usize` count (yrs `read_var::<usize>`).
    fn count_u64(&mut self, min_each: u64) -> Result<u64> {
        let offset = self.pos;
        let n = self.var_u64()?;
        self.check_count(offset, n, min_each)?;
        Ok(n)
    }

    /// yrs `read_buf` (and `read_string` without its UTF-8 check): a `u32` length, then bytes.
    fn buf(&mut self) -> Result<&'a [u8]> {
        let len = self.var_u32()?;
        self.skip(len as usize)
    }

    /// yrs `read_string`: [`Cursor::buf`] holding UTF-8.
    fn string(&mut self) -> Result<&'a str> {
        let offset = self.pos;
        std::str::from_utf8(self.buf()?).map_err(|_| ScanError::InvalidUtf8 { offset })
    }

    /// A client id (yrs `read_client`, `read_var::<u64>`), at most [`MAX_CLIENT_ID`].
    fn client(&mut self) -> Result<u64> {
        let offset = self.pos;
        let client = self.var_u64()?;
        if client > MAX_CLIENT_ID {
            return Err(ScanError::ClientIdTooLarge { offset, client });
        }
        Ok(client)
    }

    /// yrs `read_id`: client, clock.
    fn id(&mut self) -> Result<()> {
        self.client()?;
        self.var_u32()?;
        Ok(())
    }
}

/// Scans an encoded v1 state vector: `varUint(n) · n × (varUint client · varUint clock)`.
/// Like yrs, it ignores bytes after the last entry.
pub fn state_vector(bytes: &[u8]) -> Result<()> {
    let mut c = Cursor::new(bytes);
    let n = c.count_u32(2)?;
    for _ in 0..n {
        c.client()?;
        c.var_u32()?;
    }
    Ok(())
}

/// Scans an encoded v1 update: the blocks of each client, then the delete set.
pub fn update_v1(bytes: &[u8]) -> Result<()> {
    let mut c = Cursor::new(bytes);
    let clients = c.count_u32(3)?;
    for _ in 0..clients {
        // yrs reads the number of blocks, then the client and its first clock.
        let blocks = c.count_u32(1)?;
        c.client()?;
        let mut clock = c.var_u32()?;
        for _ in 0..blocks {
            let offset = c.pos;
            let len = block(&mut c)?;
            clock = clock
                .checked_add(len)
                .ok_or(ScanError::ClockOverflow { offset })?;
        }
    }
    // yrs ignores what follows the delete set; so does the scan.
    delete_set(&mut c)
}

/// One block; returns the length yrs gives it (what it adds to the client's clock).
fn block(c: &mut Cursor<'_>) -> Result<u32> {
    const SKIP: u8 = 10;
    const GC: u8 = 0;
    const HAS_ORIGIN: u8 = 0b1000_0000;
    const HAS_RIGHT_ORIGIN: u8 = 0b0100_0000;
    const HAS_PARENT_SUB: u8 = 0b0010_0000;
    let info = c.u8()?;
    match info {
        SKIP | GC => c.var_u32(),
        info => {
            if info & HAS_ORIGIN != 0 {
                c.id()?;
            }
            if info & HAS_RIGHT_ORIGIN != 0 {
                c.id()?;
            }
            if info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN) == 0 {
                // The parent: a root type's name, or the id of the item holding it.
                if c.var_u32()? == 1 {
                    c.string()?;
                } else {
                    c.id()?;
                }
                if info & HAS_PARENT_SUB != 0 {
                    c.string()?;
                }
            }
            content(c, info & 0b1111)
        }
    }
}

/// Item content by its reference number; returns its length in yrs's terms (UTF-16 units
/// for strings, elements for lists, 1 otherwise).
fn content(c: &mut Cursor<'_>, kind: u8) -> Result<u32> {
    let offset = c.pos;
    match kind {
        // Deleted: a length.
        1 => c.var_u32(),
        // JSON: yrs reads `len + 1` strings (and refuses a length past i32::MAX).
        2 => {
            let len = c.var_u32()?;
            let Ok(len) = i32::try_from(len) else {
                return Err(ScanError::CountOutOfRange {
                    offset,
                    declared: u64::from(len),
                    remaining: c.remaining() as u64,
                });
            };
            let strings = len as u64 + 1;
            c.check_count(offset, strings, 1)?;
            for _ in 0..strings {
                c.buf()?;
            }
            Ok(strings as u32)
        }
        // Binary, embed (JSON text).
        3 | 5 => c.buf().map(|_| 1),
        // String.
        4 => {
            let s = c.string()?;
            u32::try_from(s.encode_utf16().count()).map_err(|_| ScanError::ClockOverflow { offset })
        }
        // Format: key, JSON value.
        6 => {
            c.buf()?;
            c.buf()?;
            Ok(1)
        }
        // A nested shared type.
        7 => {
            let type_ref = c.u8()?;
            match type_ref {
                // XmlElement carries its tag name.
                3 => {
                    c.buf()?;
                }
                // Array, map, text, fragment, hook, XmlText, subdocument, undefined.
                0 | 1 | 2 | 4 | 5 | 6 | 9 | 15 => {}
                other => {
                    return Err(ScanError::UnknownTag {
                        offset,
                        what: "type ref",
                        value: u64::from(other),
                    })
                }
            }
            Ok(1)
        }
        // Any values.
        8 => {
            let n = c.count_u32(1)?;
            for _ in 0..n {
                any(c)?;
            }
            Ok(n)
        }
        // Subdocument: guid, options.
        9 => {
            c.buf()?;
            any(c)?;
            Ok(1)
        }
        other => Err(ScanError::UnknownTag {
            offset,
            what: "content kind",
            value: u64::from(other),
        }),
    }
}

/// One `Any` value, nested ones included, without recursion.
fn any(c: &mut Cursor<'_>) -> Result<()> {
    // Open arrays and maps: (values still to read, is a map).
    let mut open: Vec<(u64, bool)> = Vec::new();
    loop {
        let offset = c.pos;
        match c.u8()? {
            // undefined, null, false, true
            127 | 126 | 121 | 120 => {}
            // integer
            125 => c.skip_var_i64()?,
            // float32
            124 => {
                c.skip(4)?;
            }
            // float64, bigint
            123 | 122 => {
                c.skip(8)?;
            }
            // string, buffer
            119 | 116 => {
                c.buf()?;
            }
            // map: n × (key, value); array: n × value
            tag @ (118 | 117) => {
                let is_map = tag == 118;
                let n = c.count_u64(if is_map { 2 } else { 1 })?;
                if n > 0 {
                    if open.len() >= MAX_ANY_DEPTH {
                        return Err(ScanError::TooDeep { offset });
                    }
                    if open.capacity() == 0 {
                        open.reserve_exact(8);
                    }
                    open.push((n, is_map));
                    if is_map {
                        c.buf()?;
                    }
                    continue;
                }
            }
            other => {
                return Err(ScanError::UnknownTag {
                    offset,
                    what: "value tag",
                    value: u64::from(other),
                })
            }
        }
        // A value is complete: count it against the innermost open array or map.
        loop {
            let Some((left, is_map)) = open.last_mut() else {
                return Ok(());
            };
            *left -= 1;
            if *left == 0 {
                open.pop();
                continue;
            }
            if *is_map {
                c.buf()?;
            }
            break;
        }
    }
}

/// A delete set: `n × (client, m × (clock, len))`.
fn delete_set(c: &mut Cursor<'_>) -> Result<()> {
    let clients = c.count_u32(2)?;
    for _ in 0..clients {
        c.client()?;
        let ranges = c.count_u32(2)?;
        for _ in 0..ranges {
            let offset = c.pos;
            let clock = c.var_u32()?;
            let len = c.var_u32()?;
            clock
                .checked_add(len)
                .ok_or(ScanError::ClockOverflow { offset })?;
        }
    }
    Ok(())
}

/// One entry of an awareness update, borrowed from the payload it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AwarenessEntry<'a> {
    /// The Yjs client id.
    pub client: u64,
    /// The client's awareness clock: a state replaces another only with a higher clock.
    pub clock: u32,
    /// The state as JSON text; `null` means the client is gone.
    pub state: &'a str,
}

impl AwarenessEntry<'_> {
    /// Whether the entry says the client is gone (its state is the JSON `null`).
    pub fn is_removal(&self) -> bool {
        self.state == "null"
    }
}

/// Scans an awareness update: `varUint(n) · n × (varUint client · varUint clock ·
/// varString(JSON state))`, each state valid JSON (`null` means "gone").
pub fn awareness_update(bytes: &[u8]) -> Result<()> {
    awareness_entries(bytes, |_| ())
}

/// Walks an awareness update's entries in wire order, checking each as
/// [`awareness_update`] does, and hands each to `f`.
fn awareness_entries<'a>(bytes: &'a [u8], mut f: impl FnMut(AwarenessEntry<'a>)) -> Result<()> {
    let mut c = Cursor::new(bytes);
    let n = c.count_u64(3)?;
    for _ in 0..n {
        let client = c.client()?;
        let clock = c.var_u32()?;
        let state = c.string()?;
        // IgnoredAny checks the syntax without building the value.
        serde_json::from_str::<serde::de::IgnoredAny>(state).map_err(|e| ScanError::NotJson {
            client,
            reason: e.to_string(),
        })?;
        f(AwarenessEntry {
            client,
            clock,
            state,
        });
    }
    // Like yrs, the scan ignores bytes after the last entry.
    Ok(())
}

/// Scans, then decodes a v1 state vector.
pub fn decode_state_vector(bytes: &[u8]) -> Result<StateVector> {
    state_vector(bytes)?;
    StateVector::decode_v1(bytes).map_err(|e| ScanError::Yrs(e.to_string()))
}

/// Scans, then decodes a v1 update.
pub fn decode_update(bytes: &[u8]) -> Result<Update> {
    update_v1(bytes)?;
    Update::decode_v1(bytes).map_err(|e| ScanError::Yrs(e.to_string()))
}

/// Scans and decodes an awareness update into its entries, in wire order, borrowed from
/// `bytes` (nothing of yrs is involved: the node keeps awareness itself, see
/// `room::awareness`). Nothing is returned unless every entry passes.
pub fn decode_awareness(bytes: &[u8]) -> Result<Vec<AwarenessEntry<'_>>> {
    let mut entries = Vec::new();
    awareness_entries(bytes, |e| entries.push(e))?;
    Ok(entries)
}

#[cfg(test)]
mod tests;
