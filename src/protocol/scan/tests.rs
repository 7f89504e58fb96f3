//! Scan tests: everything yrs encodes passes and decodes; every count that claims more than
//! the bytes left, every over-deep nesting and every clock overflow is refused before yrs.

use super::*;
use std::sync::Arc;
use yrs::types::xml::{Xml, XmlElementPrelim, XmlFragment, XmlTextPrelim};
use yrs::updates::encoder::Encode;
use yrs::{Any, Array, ArrayPrelim, Doc, GetString, Map, MapPrelim, ReadTxn, Text, Transact};

fn var(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out
}

/// Updates of every content kind yrs writes: strings (with non-BMP characters), formatting,
/// embeds, nested maps and arrays of values, buffers, XML elements and text, subdocuments,
/// deletions (a delete set and deleted content) and merged updates from several clients.
fn sample_updates() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let doc = Doc::with_client_id(1);
    let text = doc.get_or_insert_text("text");
    let map = doc.get_or_insert_map("map");
    let array = doc.get_or_insert_array("array");
    let xml = doc.get_or_insert_xml_fragment("xml");
    let mut txn = doc.transact_mut();
    text.insert(&mut txn, 0, "hello 🌍 world");
    out.push(txn.encode_update_v1());
    drop(txn);
    let mut txn = doc.transact_mut();
    let mut attrs = std::collections::HashMap::new();
    attrs.insert(Arc::from("bold"), Any::Bool(true));
    text.format(&mut txn, 0, 5, attrs);
    text.insert_embed(
        &mut txn,
        3,
        Any::from(std::collections::HashMap::from([(
            "image".to_string(),
            Any::from("x.png"),
        )])),
    );
    text.remove_range(&mut txn, 0, 2);
    out.push(txn.encode_update_v1());
    drop(txn);
    let mut txn = doc.transact_mut();
    let nested = Any::from(std::collections::HashMap::from([
        ("n".to_string(), Any::from(1.5)),
        ("i".to_string(), Any::from(-7i64)),
        ("big".to_string(), Any::from(1i64 << 60)),
        ("s".to_string(), Any::from("é")),
        ("null".to_string(), Any::Null),
        ("u".to_string(), Any::Undefined),
        ("b".to_string(), Any::Buffer(Arc::from(vec![1u8, 2, 3]))),
        (
            "list".to_string(),
            Any::from(vec![Any::from(true), Any::from(vec![Any::from(1i64)])]),
        ),
    ]));
    map.insert(&mut txn, "nested", nested);
    map.insert(&mut txn, "inner", MapPrelim::from([("k", Any::from("v"))]));
    array.insert_range(&mut txn, 0, [Any::from(1i64), Any::from("two"), Any::Null]);
    array.insert(&mut txn, 1, ArrayPrelim::from([Any::from(3i64)]));
    let el = xml.insert(&mut txn, 0, XmlElementPrelim::empty("p"));
    el.insert_attribute(&mut txn, "class", "c");
    el.insert(&mut txn, 0, XmlTextPrelim::new("in xml"));
    map.insert(&mut txn, "sub", Doc::new());
    out.push(txn.encode_update_v1());
    drop(txn);
    let mut txn = doc.transact_mut();
    array.remove_range(&mut txn, 0, 2);
    map.remove(&mut txn, "inner");
    out.push(txn.encode_update_v1());
    drop(txn);
    out.push(
        doc.transact()
            .encode_state_as_update_v1(&StateVector::default()),
    );
    // A second client, and the merge of both (which holds skips when there are gaps).
    let other = Doc::with_client_id(u64::from(u32::MAX) + 5);
    other
        .transact_mut()
        .apply_update(Update::decode_v1(&out[4]).unwrap())
        .unwrap();
    let t2 = other.get_or_insert_text("text");
    let mut txn = other.transact_mut();
    t2.insert(&mut txn, 2, "xyz");
    let late = txn.encode_update_v1();
    drop(txn);
    out.push(late.clone());
    out.push(yrs::merge_updates_v1([out[0].as_slice(), late.as_slice()]).unwrap());
    out.push(
        other
            .transact()
            .encode_state_as_update_v1(&StateVector::default()),
    );
    // The empty update.
    out.push(
        Doc::new()
            .transact()
            .encode_state_as_update_v1(&StateVector::default()),
    );
    out
}

#[test]
fn everything_yrs_encodes_passes_the_scan_and_decodes() {
    for (i, u) in sample_updates().iter().enumerate() {
        decode_update(u).unwrap_or_else(|e| panic!("update {i}: {e}"));
    }
    let doc = Doc::new();
    for u in sample_updates() {
        doc.transact_mut()
            .apply_update(decode_update(&u).unwrap())
            .unwrap();
    }
    let sv = doc.transact().state_vector().encode_v1();
    assert!(decode_state_vector(&sv).unwrap().len() >= 2);
    let text = doc.get_or_insert_text("text").get_string(&doc.transact());
    assert!(text.contains("xyz"), "{text}");
}

#[test]
fn state_vector_counts_are_bounded_by_the_bytes_left() {
    // 2^29 entries claimed, none present: refused before yrs reserves a table for them.
    let mut sv = var(1 << 29);
    sv.extend_from_slice(&[0, 0]);
    assert!(matches!(
        state_vector(&sv),
        Err(ScanError::CountOutOfRange {
            declared: 536_870_912,
            ..
        })
    ));
    // Two entries need four bytes at least.
    assert!(matches!(
        state_vector(&[2, 1, 1, 1]),
        Err(ScanError::CountOutOfRange { .. })
    ));
    assert!(matches!(
        state_vector(&[]),
        Err(ScanError::UnexpectedEnd { offset: 0 })
    ));
    assert!(state_vector(&[0]).is_ok());
    assert!(state_vector(&[2, 1, 1, 2, 1]).is_ok());
    // A varint of 11 bytes is refused; 10 bytes carry any u64.
    let mut long = vec![1];
    long.extend([0x80; 10]);
    long.extend([0, 0]);
    assert!(matches!(
        state_vector(&long),
        Err(ScanError::VarIntTooLong { offset: 1 })
    ));
    // Client ids are 53-bit.
    let mut max = vec![1];
    max.extend(var(MAX_CLIENT_ID));
    max.push(0);
    assert!(decode_state_vector(&max).is_ok());
    let mut over = vec![1];
    over.extend(var(MAX_CLIENT_ID + 1));
    over.push(0);
    assert!(matches!(
        state_vector(&over),
        Err(ScanError::ClientIdTooLarge { offset: 1, .. })
    ));
}

#[test]
fn update_counts_are_bounded_by_the_bytes_left() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("clients", [var(1 << 27), vec![0; 5]].concat()),
        (
            "blocks",
            [vec![1], var(u32::MAX as u64), vec![1, 0]].concat(),
        ),
        // One client, one item in a root "a" holding Any content that claims 2^30 values.
        (
            "any values",
            [vec![1, 1, 1, 0, 8, 1, 1, b'a'], var(1 << 30), vec![126]].concat(),
        ),
        // ... an array value claiming 2^40 elements.
        (
            "array elements",
            [vec![1, 1, 1, 0, 8, 1, 1, b'a', 1, 117], var(1 << 40)].concat(),
        ),
        // ... a map value claiming 2^40 entries.
        (
            "map entries",
            [vec![1, 1, 1, 0, 8, 1, 1, b'a', 1, 118], var(1 << 40)].concat(),
        ),
        // ... JSON content claiming 2^30 strings.
        (
            "json strings",
            [vec![1, 1, 1, 0, 2, 1, 1, b'a'], var(1 << 30)].concat(),
        ),
        // An empty block list, then a delete set claiming 2^30 clients.
        ("delete set clients", [vec![0], var(1 << 30)].concat()),
        ("delete set ranges", [vec![0, 1, 5], var(1 << 30)].concat()),
    ];
    for (what, bytes) in cases {
        match update_v1(&bytes) {
            Err(ScanError::CountOutOfRange { .. }) => {}
            other => panic!("{what}: {other:?}"),
        }
    }
    // A JSON length past i32::MAX (yrs would turn it into a negative count).
    let json = [vec![1, 1, 1, 0, 2, 1, 1, b'a'], var(u32::MAX as u64)].concat();
    assert!(update_v1(&json).is_err());
}

#[test]
fn nesting_is_bounded() {
    // One Any item whose value is `depth` nested one-element arrays around a null.
    let nested = |depth: usize| {
        let mut u = vec![1, 1, 1, 0, 8, 1, 1, b'a', 1];
        for _ in 0..depth {
            u.extend([117, 1]);
        }
        u.push(126);
        u.push(0);
        u
    };
    decode_update(&nested(MAX_ANY_DEPTH)).expect("the deepest nesting allowed decodes");
    assert!(matches!(
        update_v1(&nested(MAX_ANY_DEPTH + 1)),
        Err(ScanError::TooDeep { .. })
    ));
    // A million levels (which would overflow yrs's recursive decoder's stack) cost nothing.
    assert!(matches!(
        update_v1(&nested(1_000_000)),
        Err(ScanError::TooDeep { .. })
    ));
}

#[test]
fn clock_ranges_past_u32_are_refused() {
    // Client 1 starting at clock 2^32 - 2 with a deleted-content item of length 5.
    let block = [
        vec![1, 1, 1],
        var(u32::MAX as u64 - 1),
        vec![1, 1, 1, b'a', 5, 0],
    ]
    .concat();
    assert!(matches!(
        update_v1(&block),
        Err(ScanError::ClockOverflow { .. })
    ));
    // A delete-set range from 2^32 - 2 of length 5.
    let ds = [vec![0, 1, 1, 1], var(u32::MAX as u64 - 1), vec![5]].concat();
    assert!(matches!(
        update_v1(&ds),
        Err(ScanError::ClockOverflow { .. })
    ));
}

#[test]
fn unknown_tags_are_refused() {
    // Content kind 11 and a type ref of 8.
    assert!(matches!(
        update_v1(&[1, 1, 1, 0, 11, 1, 1, b'a']),
        Err(ScanError::UnknownTag {
            what: "content kind",
            ..
        })
    ));
    assert!(matches!(
        update_v1(&[1, 1, 1, 0, 7, 1, 1, b'a', 8, 0]),
        Err(ScanError::UnknownTag {
            what: "type ref",
            ..
        })
    ));
    assert!(matches!(
        update_v1(&[1, 1, 1, 0, 8, 1, 1, b'a', 1, 99, 0]),
        Err(ScanError::UnknownTag {
            what: "value tag",
            ..
        })
    ));
}

fn awareness(entries: &[(u64, u32, &str)]) -> Vec<u8> {
    let mut out = var(entries.len() as u64);
    for (client, clock, json) in entries {
        out.extend(var(*client));
        out.extend(var(u64::from(*clock)));
        out.extend(var(json.len() as u64));
        out.extend(json.as_bytes());
    }
    out
}

#[test]
fn awareness_states_must_be_json() {
    let ok = awareness(&[
        (10, 0, "{}"),
        (11, 3, "null"),
        (12, 1, r#"{"user":{"name":"é \ud83c"},"cursor":null}"#),
        (13, 1, " [1, 2.5e3, true] "),
    ]);
    let entries = decode_awareness(&ok).unwrap();
    assert_eq!(entries.len(), 4);
    assert_eq!(
        entries[2],
        AwarenessEntry {
            client: 12,
            clock: 1,
            state: r#"{"user":{"name":"é \ud83c"},"cursor":null}"#
        }
    );
    assert!(entries[1].is_removal() && !entries[0].is_removal());
    for bad in ["{not json", "", "{}x", "undefined", "{'a':1}"] {
        match awareness_update(&awareness(&[(10, 0, "{}"), (7, 1, bad)])) {
            Err(ScanError::NotJson { client: 7, .. }) => {}
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    // Not UTF-8.
    let mut bad = awareness(&[(7, 1, "\"ab\"")]);
    let last = bad.len() - 2;
    bad[last] = 0xff;
    assert!(matches!(
        awareness_update(&bad),
        Err(ScanError::InvalidUtf8 { .. })
    ));
    // 2^40 entries claimed.
    let bomb = [var(1 << 40), vec![1, 1, 1]].concat();
    assert!(matches!(
        awareness_update(&bomb),
        Err(ScanError::CountOutOfRange { .. })
    ));
}

#[test]
fn client_ids_past_53_bits_are_refused_everywhere() {
    let big = var(MAX_CLIENT_ID + 1);
    // The client of a block list, an origin, a delete set, an awareness entry.
    type Scan = fn(&[u8]) -> Result<()>;
    let cases: Vec<(&str, Vec<u8>, Scan)> = vec![
        (
            "blocks",
            [vec![1, 1], big.clone(), vec![0, 4, 1, 1, b'a', 1, b'x', 0]].concat(),
            update_v1,
        ),
        (
            "origin",
            [vec![1, 1, 1, 0, 0x84], big.clone(), vec![0, 1, b'x', 0]].concat(),
            update_v1,
        ),
        (
            "delete set",
            [vec![0, 1], big.clone(), vec![1, 0, 1]].concat(),
            update_v1,
        ),
        (
            "awareness",
            [vec![1], big.clone(), vec![0, 2, b'{', b'}']].concat(),
            awareness_update,
        ),
    ];
    for (what, bytes, scan) in cases {
        match scan(&bytes) {
            Err(ScanError::ClientIdTooLarge { client, .. }) => {
                assert_eq!(client, 1 << 53, "{what}")
            }
            other => panic!("{what}: {other:?}"),
        }
    }
}
