//! Encoded Yjs state vectors as the store keeps them: canonical bytes (entries in client-id
//! order, so equal state vectors have equal bytes and equal digests), merging, coverage, and
//! the hex SHA-256 digest stored with every room.
//!
//! State vectors reach these functions from peers (tombstones, commands) as well as from the
//! store, so they are decoded through [`crate::protocol::scan`], which bounds every count by
//! the bytes present.
//!
//! Pure functions with no store state: the writer, tombstones ([`super::Tombstone`]), the room
//! layer, the command center and the mesh all use them, so they live apart from any backend.

use sha2::{Digest, Sha256};
use yrs::updates::encoder::Encode;

use crate::protocol::scan::decode_state_vector;

/// The per-client maximum of two encoded state vectors, encoded canonically (sorted by
/// client). Bytes that do not decode count as empty.
pub fn merge_state_vectors(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut sv = decode_state_vector(a).unwrap_or_default();
    sv.merge(decode_state_vector(b).unwrap_or_default());
    canonical_state_vector("", &sv.encode_v1())
}

/// Whether state vector `outer` includes every clock of `inner` (both encoded v1). `inner`
/// bytes that do not decode are not covered.
pub fn state_vector_covers(outer: &[u8], inner: &[u8]) -> bool {
    let outer = decode_state_vector(outer).unwrap_or_default();
    match decode_state_vector(inner) {
        Ok(inner) => inner.iter().all(|(c, clock)| outer.get(c) >= *clock),
        Err(_) => false,
    }
}

/// Re-encodes a v1 state vector with its entries in client-id order, so equal state vectors
/// give equal bytes (yrs encodes them in hash-map order). Bytes that do not decode are kept
/// as they are (and logged): the digest then still changes with them.
pub(crate) fn canonical_state_vector(room: &str, raw: &[u8]) -> Vec<u8> {
    let sv = match decode_state_vector(raw) {
        Ok(sv) => sv,
        Err(e) => {
            tracing::warn!(room, error = %e, "append carried an undecodable state vector");
            return raw.to_vec();
        }
    };
    let mut entries: Vec<(u64, u32)> = sv.iter().map(|(c, &k)| (c.get(), k)).collect();
    entries.sort_unstable();
    let mut out = Vec::with_capacity(1 + entries.len() * 12);
    write_var(&mut out, entries.len() as u64);
    for (client, clock) in entries {
        write_var(&mut out, client);
        write_var(&mut out, u64::from(clock));
    }
    out
}

/// lib0 unsigned varint.
fn write_var(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Lower-case hex SHA-256.
pub(crate) fn digest_hex(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in hash {
        s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        s.push(char::from(b"0123456789abcdef"[usize::from(b & 0xf)]));
    }
    s
}
