//! Codec tests: hand-written edge cases plus byte-for-byte checks against frames that the
//! JavaScript y-protocols library produced (`tests/fixtures/y-protocols-frames.json`, made by
//! `tests/interop/scripts/make-fixtures.mjs`).

use super::*;
use serde_json::Value;
use yrs::updates::decoder::Decode;
use yrs::{GetString, ReadTxn, Transact};

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn fixtures() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/y-protocols-frames.json"
    );
    let text = std::fs::read_to_string(path).expect("fixture file");
    serde_json::from_str(&text).expect("fixture JSON")
}

fn decode_one(frame: &[u8]) -> Message {
    let mut msgs = decode_frame(Bytes::copy_from_slice(frame)).expect("decodes");
    assert_eq!(msgs.len(), 1, "one message per frame");
    msgs.remove(0)
}

#[test]
fn fixtures_decode_and_reencode_byte_for_byte() {
    let fixtures = fixtures();
    assert!(fixtures.len() >= 10, "fixture set looks incomplete");
    let mut seen = std::collections::BTreeSet::new();
    for f in &fixtures {
        let name = f["name"].as_str().unwrap();
        let ty = f["type"].as_str().unwrap();
        seen.insert(ty.to_string());
        let frame = hex(f["frame"].as_str().unwrap());
        let msg = decode_one(&frame);
        let payload = f.get("payload").and_then(Value::as_str).map(hex);
        match (ty, &msg) {
            ("sync_step1", Message::Sync(SyncMessage::Step1(p)))
            | ("sync_step2", Message::Sync(SyncMessage::Step2(p)))
            | ("sync_update", Message::Sync(SyncMessage::Update(p)))
            | ("awareness", Message::Awareness(p))
            | ("sync_status", Message::SyncStatus(p)) => {
                assert_eq!(&p[..], &payload.clone().unwrap()[..], "{name}: payload");
            }
            ("auth_denied", Message::AuthDenied(reason)) => {
                assert_eq!(reason, f["reason"].as_str().unwrap(), "{name}");
            }
            ("query_awareness", Message::QueryAwareness) => {}
            ("command", Message::Command { subtype, json }) => {
                assert_eq!(*subtype, f["subtype"].as_u64().unwrap(), "{name}");
                assert_eq!(json, f["json"].as_str().unwrap(), "{name}");
                // That the documents are valid commands and results is checked in
                // `crate::command`'s tests (`js_command_fixtures_are_valid_documents`).
            }
            _ => panic!("{name}: fixture type {ty} decoded as {msg:?}"),
        }
        assert_eq!(&msg.encode()[..], &frame[..], "{name}: re-encoding differs");
    }
    for ty in [
        "sync_step1",
        "sync_step2",
        "sync_update",
        "awareness",
        "auth_denied",
        "query_awareness",
        "sync_status",
        "command",
    ] {
        assert!(seen.contains(ty), "no fixture of type {ty}");
    }
}

#[test]
fn fixture_payloads_agree_with_yrs() {
    let all = fixtures();
    let by_name = |n: &str| {
        all.iter()
            .find(|f| f["name"] == n)
            .unwrap_or_else(|| panic!("no fixture {n}"))
            .clone()
    };
    for f in all.iter().cloned() {
        let name = f["name"].as_str().unwrap();
        let payload = f.get("payload").and_then(Value::as_str).map(hex);
        match f["type"].as_str().unwrap() {
            "sync_step1" => {
                let sv = yrs::StateVector::decode_v1(&payload.unwrap()).expect(name);
                for id in f
                    .get("client_ids")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let id = yrs::ClientID::new(id.as_u64().unwrap());
                    assert!(sv.get(&id) > 0, "{name}: client {id} in state vector");
                }
                // Re-encoding a decoded state vector must give the JS bytes back.
                use yrs::updates::encoder::Encode;
                let again = sv.encode_v1();
                let reparsed = yrs::StateVector::decode_v1(&again).unwrap();
                assert_eq!(sv, reparsed, "{name}");
            }
            "sync_step2" | "sync_update" => {
                let update = yrs::Update::decode_v1(&payload.unwrap()).expect(name);
                let doc = yrs::Doc::new();
                let mut txn = doc.transact_mut();
                if let Some(base) = f.get("base").and_then(Value::as_str) {
                    let base = hex(by_name(base)["payload"].as_str().unwrap());
                    txn.apply_update(yrs::Update::decode_v1(&base).unwrap())
                        .expect(name);
                }
                txn.apply_update(update).expect(name);
                drop(txn);
                for id in f
                    .get("client_ids")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let id = yrs::ClientID::new(id.as_u64().unwrap());
                    assert!(doc.transact().state_vector().get(&id) > 0, "{name}");
                }
                if let Some(texts) = f.get("text").and_then(Value::as_object) {
                    for (root, want) in texts {
                        let text = doc.get_or_insert_text(root.as_str());
                        let txn = doc.transact();
                        assert_eq!(text.get_string(&txn), want.as_str().unwrap(), "{name}");
                    }
                }
                // The yrs state vector of the result is what a JS doc would announce.
                let _ = doc.transact().state_vector();
            }
            "awareness" => {
                let update = yrs::sync::awareness::AwarenessUpdate::decode_v1(&payload.unwrap())
                    .expect(name);
                let entries = f["entries"].as_array().unwrap();
                assert_eq!(update.clients.len(), entries.len(), "{name}");
                for e in entries {
                    let client = e["client"].as_u64().unwrap();
                    let entry = &update.clients[&yrs::ClientID::new(client)];
                    assert_eq!(
                        u64::from(entry.clock),
                        e["clock"].as_u64().unwrap(),
                        "{name}"
                    );
                    let want = match &e["state"] {
                        Value::Null => "null".to_string(),
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    assert_eq!(&*entry.json, want.as_str(), "{name}");
                }
            }
            _ => {}
        }
    }
}

#[test]
fn encodes_known_frames() {
    assert_eq!(&encode_sync_step1(&[0])[..], &[0, 0, 1, 0]);
    assert_eq!(&encode_sync_step2(&[0, 0])[..], &[0, 1, 2, 0, 0]);
    assert_eq!(&encode_sync_update(&[7])[..], &[0, 2, 1, 7]);
    assert_eq!(&encode_awareness(&[0])[..], &[1, 1, 0]);
    assert_eq!(&encode_query_awareness()[..], &[3]);
    assert_eq!(&encode_auth_denied("no")[..], &[2, 0, 2, b'n', b'o']);
    assert_eq!(&encode_sync_status(&[5])[..], &[102, 1, 5]);
    assert_eq!(&encode_command(1, "{}")[..], &[103, 1, 2, b'{', b'}']);
    let big = vec![9u8; 300];
    let frame = encode_sync_update(&big);
    assert_eq!(&frame[..5], &[0, 2, 0xac, 0x02, 9]);
    assert_eq!(frame.len(), 4 + 300);
}

#[test]
fn decodes_concatenated_messages() {
    let mut frame = encode_sync_step1(&[0]).to_vec();
    frame.extend_from_slice(&encode_query_awareness());
    frame.extend_from_slice(&encode_awareness(&[0]));
    let msgs = decode_frame(Bytes::from(frame)).unwrap();
    assert_eq!(
        msgs,
        vec![
            Message::Sync(SyncMessage::Step1(Bytes::from_static(&[0]))),
            Message::QueryAwareness,
            Message::Awareness(Bytes::from_static(&[0])),
        ]
    );
}

#[test]
fn unknown_types_are_reported_and_skip_the_rest() {
    let msgs = decode_frame(Bytes::from_static(&[77, 0, 2, 0xff, 0xff])).unwrap();
    assert_eq!(msgs, vec![Message::Unknown(77)]);
    // Multi-byte type numbers are read as one varUint.
    let msgs = decode_frame(Bytes::from_static(&[0xc8, 0x01, 1])).unwrap();
    assert_eq!(msgs, vec![Message::Unknown(200)]);
    // Auth sub-types other than "denied" are skipped like unknown types.
    let msgs = decode_frame(Bytes::from_static(&[2, 1])).unwrap();
    assert_eq!(msgs, vec![Message::AuthOther(1)]);
}

#[test]
fn malformed_frames_are_errors() {
    let cases: &[(&[u8], &str)] = &[
        (&[], "empty"),
        (&[0x80], "truncated type"),
        (&[0], "missing sync sub-type"),
        (&[0, 0], "missing state vector"),
        (&[0, 2, 0xff, 0xff, 0xff, 0xff, 0x0f], "huge length"),
        (&[0, 2, 5, 1, 2], "short payload"),
        (&[0, 9, 0], "unknown sync sub-type"),
        (&[1], "missing awareness"),
        (&[2, 0, 3, 0xff, 0xfe, 0xfd], "reason not UTF-8"),
        (&[102], "missing status payload"),
        (&[103, 0, 4, b'{'], "truncated command"),
    ];
    for (frame, what) in cases {
        assert!(
            decode_frame(Bytes::copy_from_slice(frame)).is_err(),
            "{what}: {frame:?} decoded"
        );
    }
}

#[test]
fn payloads_are_zero_copy_slices() {
    let frame = encode_sync_update(&[1, 2, 3]);
    let msgs = decode_frame(frame.clone()).unwrap();
    match &msgs[0] {
        Message::Sync(SyncMessage::Update(p)) => {
            assert_eq!(p.as_ptr(), frame[3..].as_ptr());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn js_and_yrs_produce_identical_sync_messages_for_a_text_doc() {
    // Build the same document with yrs that the fixture built with Yjs, when present.
    for f in fixtures() {
        if f["type"] != "sync_step2" {
            continue;
        }
        let payload = hex(f["payload"].as_str().unwrap());
        let doc = yrs::Doc::new();
        doc.transact_mut()
            .apply_update(yrs::Update::decode_v1(&payload).unwrap())
            .unwrap();
        // Re-encoding the whole state must be accepted by a second doc with the same result.
        let full = doc
            .transact()
            .encode_state_as_update_v1(&yrs::StateVector::default());
        let doc2 = yrs::Doc::new();
        doc2.transact_mut()
            .apply_update(yrs::Update::decode_v1(&full).unwrap())
            .unwrap();
        assert_eq!(
            doc.transact().state_vector(),
            doc2.transact().state_vector()
        );
    }
}
