//! Rows of the `updates` log: one row holds every update one commit appended to one room.
//!
//! Why one row per room per commit and not one per update: every row is an entry in the
//! log table and one in its `(room_id, seq)` index, and with many busy rooms each commit
//! touches a different index page per room. Under load a commit carries dozens of updates
//! per room (the writer batches whatever queued while the previous commit was on disk), so
//! one row for them cuts the rows SQLite inserts, and the index pages it rewrites and
//! fsyncs, by that factor (docs/benchmarks.md, "Durable throughput").
//!
//! The format: a row whose `count` is 1 holds the update itself (every row written before
//! schema version 6 is such a row); a row whose `count` is n > 1 holds the n updates in
//! order, each as a lib0 `varUint8Array` (its length as a `varUint`, then its bytes). The
//! updates are kept as the room applied them, not merged: loading applies them in order,
//! exactly as before, and nothing is decoded or re-encoded on the writer thread.

use bytes::{Bytes, BytesMut};

use crate::protocol::codec::{var_uint_len, write_var_bytes, Reader};

/// The blob and `count` of the row that holds `updates` (at least one), in order.
pub(super) fn pack<'a>(updates: &[&'a [u8]]) -> (std::borrow::Cow<'a, [u8]>, usize) {
    match updates {
        [one] => (std::borrow::Cow::Borrowed(*one), 1),
        many => {
            let len = many
                .iter()
                .map(|u| var_uint_len(u.len() as u64) + u.len())
                .sum();
            let mut out = BytesMut::with_capacity(len);
            for u in many {
                write_var_bytes(&mut out, u);
            }
            (std::borrow::Cow::Owned(out.to_vec()), many.len())
        }
    }
}

/// Appends the updates of one row (`data`, holding `count` updates) to `out`. An error says
/// what is wrong with the row; the caller names the room and the update.
pub(super) fn unpack(data: Vec<u8>, count: i64, out: &mut Vec<Vec<u8>>) -> Result<(), String> {
    if count == 1 {
        out.push(data);
        return Ok(());
    }
    let Ok(n) = usize::try_from(count) else {
        return Err(format!("a row claims {count} updates"));
    };
    if n == 0 {
        return Err("a row claims 0 updates".to_owned());
    }
    let len = data.len();
    let mut reader = Reader::new(Bytes::from(data));
    for i in 0..n {
        match reader.skip_var_bytes() {
            Ok(u) => out.push(u.to_vec()),
            Err(e) => return Err(format!("update {} of a row of {n}: {e}", i + 1)),
        }
    }
    if reader.has_remaining() {
        return Err(format!(
            "a row of {n} updates has {} bytes after its last update",
            len - reader.position()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_update_is_stored_as_itself() {
        let (blob, count) = pack(&[b"abc".as_slice()]);
        assert!(matches!(blob, std::borrow::Cow::Borrowed(_)));
        assert_eq!((&*blob, count), (b"abc".as_slice(), 1));
        let mut out = Vec::new();
        unpack(blob.into_owned(), 1, &mut out).unwrap();
        assert_eq!(out, vec![b"abc".to_vec()]);
    }

    #[test]
    fn many_updates_round_trip_in_order() {
        let big = vec![7u8; 300];
        let updates: Vec<&[u8]> = vec![b"a", b"", &big, b"xyz"];
        let (blob, count) = pack(&updates);
        assert_eq!(count, 4);
        // Lengths 1, 0, 300 (two bytes) and 3, then the bytes.
        assert_eq!(blob.len(), (1 + 1) + 1 + (2 + 300) + (1 + 3));
        let mut out = vec![b"earlier".to_vec()];
        unpack(blob.into_owned(), 4, &mut out).unwrap();
        assert_eq!(out.len(), 5);
        assert_eq!(out[0], b"earlier");
        for (got, want) in out[1..].iter().zip(&updates) {
            assert_eq!(got.as_slice(), *want);
        }
    }

    #[test]
    fn a_malformed_row_is_an_error_not_a_panic() {
        let (blob, _) = pack(&[b"ab".as_slice(), b"cd".as_slice()]);
        let mut out = Vec::new();
        // Claims more updates than it holds.
        let err = unpack(blob.to_vec(), 3, &mut out).unwrap_err();
        assert!(err.contains("update 3 of a row of 3"), "{err}");
        let mut shorter = blob.to_vec();
        shorter.pop();
        assert!(unpack(shorter, 2, &mut Vec::new()).is_err(), "truncated");
        let err = unpack(blob.to_vec(), 0, &mut Vec::new()).unwrap_err();
        assert!(err.contains("0 updates"), "{err}");
        let err = unpack(blob.to_vec(), -4, &mut Vec::new()).unwrap_err();
        assert!(err.contains("-4"), "{err}");
        let mut longer = blob.to_vec();
        longer.push(0);
        let err = unpack(longer, 2, &mut Vec::new()).unwrap_err();
        assert!(err.contains("after its last update"), "{err}");
        // An overlong length prefix.
        let err = unpack(vec![0xff; 12], 2, &mut Vec::new()).unwrap_err();
        assert!(err.contains("update 1 of a row of 2"), "{err}");
    }
}
