//! lib0 primitives used by the y-protocols wire format: `varUint`, `varUint8Array` and
//! `varString`. Decoding works on a borrowed [`Bytes`] so payloads are zero-copy slices of the
//! received frame.

use bytes::{BufMut, Bytes, BytesMut};

use super::DecodeError;

/// Largest value a lib0 `varUint` may carry: JavaScript numbers are exact up to 2^53 - 1.
pub const MAX_VAR_UINT: u64 = (1 << 53) - 1;

/// Appends `value` as a lib0 `varUint` (7 bits per byte, least significant group first).
pub fn write_var_uint(buf: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        buf.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

/// Number of bytes `value` takes as a `varUint`.
pub fn var_uint_len(mut value: u64) -> usize {
    let mut n = 1;
    while value >= 0x80 {
        value >>= 7;
        n += 1;
    }
    n
}

/// Appends `bytes` as a lib0 `varUint8Array` (length prefix, then the bytes).
pub fn write_var_bytes(buf: &mut BytesMut, bytes: &[u8]) {
    write_var_uint(buf, bytes.len() as u64);
    buf.put_slice(bytes);
}

/// A cursor over one received frame.
#[derive(Debug, Clone)]
pub struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    /// Starts reading at the beginning of `buf`.
    pub fn new(buf: Bytes) -> Self {
        Self { buf, pos: 0 }
    }

    /// Whether unread bytes remain.
    pub fn has_remaining(&self) -> bool {
        self.pos < self.buf.len()
    }

    /// Current offset into the frame (for error messages).
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Reads one lib0 `varUint`; rejects truncated values and values above 2^53 - 1.
    pub fn read_var_uint(&mut self) -> Result<u64, DecodeError> {
        let start = self.pos;
        let mut value: u64 = 0;
        let mut shift = 0u32;
        loop {
            let Some(&byte) = self.buf.get(self.pos) else {
                return Err(DecodeError::UnexpectedEnd { offset: start });
            };
            self.pos += 1;
            if shift >= 56 {
                return Err(DecodeError::VarUintOverflow { offset: start });
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        if value > MAX_VAR_UINT {
            return Err(DecodeError::VarUintOverflow { offset: start });
        }
        Ok(value)
    }

    /// Reads a lib0 `varUint8Array` as a zero-copy slice of the frame.
    pub fn read_var_bytes(&mut self) -> Result<Bytes, DecodeError> {
        let range = self.var_bytes_range()?;
        Ok(self.buf.slice(range))
    }

    /// Skips a lib0 `varUint8Array`, checking its length; returns its bytes.
    pub fn skip_var_bytes(&mut self) -> Result<&[u8], DecodeError> {
        let range = self.var_bytes_range()?;
        Ok(&self.buf[range])
    }

    /// Skips a lib0 `varString`, checking its length and that it is UTF-8.
    pub fn skip_var_string(&mut self) -> Result<(), DecodeError> {
        let offset = self.pos;
        std::str::from_utf8(self.skip_var_bytes()?)
            .map(|_| ())
            .map_err(|_| DecodeError::InvalidUtf8 { offset })
    }

    fn var_bytes_range(&mut self) -> Result<std::ops::Range<usize>, DecodeError> {
        let offset = self.pos;
        let len = self.read_var_uint()?;
        let remaining = (self.buf.len() - self.pos) as u64;
        if len > remaining {
            return Err(DecodeError::LengthOutOfRange {
                offset,
                declared: len,
                remaining,
            });
        }
        let start = self.pos;
        self.pos += len as usize;
        Ok(start..self.pos)
    }

    /// Reads a lib0 `varString` (a `varUint8Array` holding UTF-8).
    pub fn read_var_string(&mut self) -> Result<String, DecodeError> {
        let offset = self.pos;
        let bytes = self.read_var_bytes()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::InvalidUtf8 { offset })
    }

    /// Skips every byte equal to `byte` from here on (a run of one-byte messages).
    pub fn skip_run(&mut self, byte: u8) {
        while self.buf.get(self.pos) == Some(&byte) {
            self.pos += 1;
        }
    }

    /// Skips everything that is left.
    pub fn skip_to_end(&mut self) {
        self.pos = self.buf.len();
    }

    /// The unread rest of the frame.
    pub fn rest(&self) -> Bytes {
        self.buf.slice(self.pos..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: u64) -> Vec<u8> {
        let mut b = BytesMut::new();
        write_var_uint(&mut b, v);
        b.to_vec()
    }

    #[test]
    fn var_uint_round_trips_at_boundaries() {
        for v in [
            0,
            1,
            127,
            128,
            255,
            300,
            16_383,
            16_384,
            u32::MAX as u64,
            1 << 35,
            MAX_VAR_UINT,
        ] {
            let bytes = enc(v);
            assert_eq!(bytes.len(), var_uint_len(v), "len of {v}");
            let mut r = Reader::new(Bytes::from(bytes));
            assert_eq!(r.read_var_uint().unwrap(), v);
            assert!(!r.has_remaining());
        }
        assert_eq!(enc(300), vec![0xac, 0x02]);
        assert_eq!(enc(127), vec![0x7f]);
        assert_eq!(enc(128), vec![0x80, 0x01]);
    }

    #[test]
    fn truncated_and_oversized_var_uints_are_errors() {
        let mut r = Reader::new(Bytes::from_static(&[0x80]));
        assert!(matches!(
            r.read_var_uint(),
            Err(DecodeError::UnexpectedEnd { offset: 0 })
        ));
        let mut r = Reader::new(Bytes::from_static(&[0xff; 12]));
        assert!(matches!(
            r.read_var_uint(),
            Err(DecodeError::VarUintOverflow { .. })
        ));
        // 2^53 is one past the largest JavaScript-safe integer.
        let mut r = Reader::new(Bytes::from(enc(1 << 53)));
        assert!(matches!(
            r.read_var_uint(),
            Err(DecodeError::VarUintOverflow { .. })
        ));
    }

    #[test]
    fn var_bytes_checks_declared_length() {
        let mut r = Reader::new(Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2]));
        match r.read_var_bytes() {
            Err(DecodeError::LengthOutOfRange {
                declared,
                remaining,
                ..
            }) => {
                assert_eq!(declared, 0xffff_ffff);
                assert_eq!(remaining, 2);
            }
            other => panic!("unexpected {other:?}"),
        }
        let mut r = Reader::new(Bytes::from_static(&[2, 9, 8, 7]));
        assert_eq!(&r.read_var_bytes().unwrap()[..], &[9, 8]);
        assert_eq!(&r.rest()[..], &[7]);
    }

    #[test]
    fn var_string_rejects_invalid_utf8() {
        let mut r = Reader::new(Bytes::from_static(&[2, 0xc3, 0x28]));
        assert!(matches!(
            r.read_var_string(),
            Err(DecodeError::InvalidUtf8 { .. })
        ));
        let mut r = Reader::new(Bytes::from_static(&[2, 0xc3, 0xa9]));
        assert_eq!(r.read_var_string().unwrap(), "é");
    }
}
