use std::sync::Arc;

use bytes::Bytes;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact};

use super::*;
use crate::protocol::{Message, SyncMessage};
use crate::room::tests::{drain, text_update};
use crate::room::{RoomScope, RoomSettings, CLOSE_FORBIDDEN};

fn text_of(room: &Room) -> String {
    room.with_doc(|doc| {
        let t = doc.get_or_insert_text("t");
        let txn = doc.transact();
        t.get_string(&txn)
    })
}

fn no_results(_: &str) {}

fn read_only() -> Grant {
    Grant::all_write().read_only()
}

#[tokio::test]
async fn a_room_scoped_grant_refuses_another_room_before_creating_it() {
    let reg = RoomRegistry::new(RoomSettings::default());
    let grant = Grant::new(RoomScope::Exact("mine".into()), true);
    let refused = Session::open(&reg, "other", 1, grant.clone(), SessionOptions::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), CLOSE_FORBIDDEN);
    assert!(matches!(refused, CloseReason::Forbidden(_)), "{refused:?}");
    assert!(reg.get("other").is_none(), "a refused join creates no room");
    let (session, _out) = Session::open(&reg, "mine", 2, grant, SessionOptions::default())
        .await
        .unwrap();
    assert_eq!(session.room().name(), "mine");
    // The room checks the grant too, for callers that join it directly.
    let room = reg.get_or_create("other").unwrap();
    let grant = Grant::new(RoomScope::Prefix("team/".into()), true);
    assert!(matches!(
        Session::join(room.clone(), 3, grant.clone(), SessionOptions::default()),
        Err(RoomError::NotAllowed(_))
    ));
    assert!(matches!(
        room.join_as(4, SessionKind::Client, &grant, false),
        Err(RoomError::NotAllowed(_))
    ));
    assert_eq!(room.session_count(), 0);
}

#[test]
fn a_read_only_update_is_not_applied_and_is_denied_once_while_the_session_stays() {
    let room = Arc::new(Room::new("r", false, 16));
    let (mut watcher, mut watched) = Session::join(
        room.clone(),
        1,
        Grant::all_write(),
        SessionOptions::default(),
    )
    .unwrap();
    let (mut reader, mut out) =
        Session::join(room.clone(), 2, read_only(), SessionOptions::default()).unwrap();
    drain(&mut watched);
    drain(&mut out);
    for frame in [
        protocol::encode_sync_update(&text_update(7, "edit")),
        protocol::encode_sync_step2(&text_update(8, "edit")),
    ] {
        reader
            .handle_frame(frame, no_results)
            .expect("the session stays open");
    }
    assert_eq!(text_of(&room), "", "nothing was applied");
    assert_eq!(room.encode_state(), vec![0, 0]);
    assert!(drain(&mut watched).is_empty(), "nothing was broadcast");
    assert!(reader.kick().reason().is_none(), "not closed");
    // Told why, once for the connection.
    let msgs = drain(&mut out);
    let denials = msgs
        .iter()
        .filter(|m| matches!(m, Message::AuthDenied(_)))
        .count();
    assert_eq!(denials, 1, "{msgs:?}");
    // A session that may write is not affected.
    watcher
        .handle_frame(
            protocol::encode_sync_update(&text_update(9, "ok")),
            no_results,
        )
        .unwrap();
    assert_eq!(text_of(&room), "ok");
}

#[test]
fn a_read_only_session_syncs_reads_and_announces_itself() {
    let room = Arc::new(Room::new("r", false, 16));
    let content = text_update(7, "hello");
    room.apply_update(&content, None).unwrap();
    let (mut reader, mut out) =
        Session::join(room.clone(), 1, read_only(), SessionOptions::default()).unwrap();
    drain(&mut out);
    // SyncStep1 is answered.
    let empty = StateVector::default().encode_v1();
    reader
        .handle_frame(protocol::encode_sync_step1(&empty), no_results)
        .unwrap();
    assert!(matches!(
        drain(&mut out).as_slice(),
        [Message::Sync(SyncMessage::Step2(_))]
    ));
    // Its SyncStep2 holding only what the room has (after it synced) passes, unapplied.
    reader
        .handle_frame(protocol::encode_sync_step2(&content), no_results)
        .unwrap();
    reader
        .handle_frame(protocol::encode_sync_step2(&[0, 0]), no_results)
        .unwrap();
    assert!(!reader.kick().is_kicked());
    // A deletion the room already has passes too; a new one is an edit.
    let doc = Doc::with_client_id(70);
    let text = doc.get_or_insert_text("t");
    doc.transact_mut()
        .apply_update(yrs::Update::decode_v1(&content).unwrap())
        .unwrap();
    let before = doc.transact().state_vector();
    text.remove_range(&mut doc.transact_mut(), 0, 1);
    let deletion = doc.transact().encode_state_as_update_v1(&before);
    assert!(!room.covers_update(&deletion).unwrap());
    room.apply_update(&deletion, None).unwrap();
    assert!(room.covers_update(&deletion).unwrap());
    reader
        .handle_frame(protocol::encode_sync_update(&deletion), no_results)
        .unwrap();
    assert!(!reader.kick().is_kicked());
    text.remove_range(&mut doc.transact_mut(), 0, 1);
    let later = doc.transact().encode_state_as_update_v1(&before);
    // A new edit is refused, not applied, and the session stays open.
    reader
        .handle_frame(protocol::encode_sync_update(&later), no_results)
        .expect("the session stays open");
    assert!(!reader.kick().is_kicked());
    let msgs = drain(&mut out);
    let denials = msgs
        .iter()
        .filter(|m| matches!(m, Message::AuthDenied(_)))
        .count();
    assert_eq!(denials, 1, "{msgs:?}");
    assert_eq!(text_of(&room), "ello");
}

#[test]
fn awareness_ids_are_tracked_and_removed_when_the_session_is_dropped() {
    let room = Arc::new(Room::new("r", false, 16));
    let (mut a, mut a_out) =
        Session::join(room.clone(), 1, read_only(), SessionOptions::default()).unwrap();
    let (_b, mut b_out) = Session::join(
        room.clone(),
        2,
        Grant::all_write(),
        SessionOptions::default(),
    )
    .unwrap();
    let mut clients = std::collections::HashMap::new();
    clients.insert(
        yrs::ClientID::new(42),
        yrs::sync::awareness::AwarenessUpdateEntry {
            clock: 1,
            json: r#"{"user":"a"}"#.into(),
        },
    );
    let aw = yrs::sync::awareness::AwarenessUpdate { clients }.encode_v1();
    a.handle_frame(protocol::encode_awareness(&aw), no_results)
        .unwrap();
    assert!(a.awareness_clients().any(|c| c == yrs::ClientID::new(42)));
    drain(&mut a_out);
    drain(&mut b_out);
    assert_eq!(room.session_count(), 2);
    drop(a);
    assert_eq!(room.session_count(), 1);
    let msgs = drain(&mut b_out);
    assert!(
        matches!(msgs.as_slice(), [Message::Awareness(_)]),
        "{msgs:?}"
    );
    assert_eq!(&room.awareness_frame()[..], &[1, 1, 0]);
}

#[test]
fn command_results_are_handed_on_and_102_is_echoed_without_a_store() {
    let room = Arc::new(Room::new("r", false, 16));
    let (mut s, mut out) = Session::join(
        room.clone(),
        5,
        Grant::all_write(),
        SessionOptions { commands: true },
    )
    .unwrap();
    assert!(s.options().commands);
    drain(&mut out);
    let mut results = Vec::new();
    let frame = protocol::encode_command(protocol::COMMAND_SUBTYPE_RESULT, r#"{"id":"x"}"#);
    s.handle_frame(frame, |json| results.push(json.to_string()))
        .unwrap();
    let frame = protocol::encode_command(protocol::COMMAND_SUBTYPE_COMMAND, r#"{"id":"y"}"#);
    s.handle_frame(frame, |json| results.push(json.to_string()))
        .unwrap();
    assert_eq!(results, vec![r#"{"id":"x"}"#.to_string()]);
    let status = protocol::encode_sync_status(b"saved?");
    s.handle_frame(status.clone(), no_results).unwrap();
    assert_eq!(out.try_recv().unwrap(), status);
    // The session opted in: commands reach it.
    let delivered = room.deliver_command(&Bytes::from_static(b"\x67\x00\x00"));
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].session, 5);
}

#[test]
fn a_malformed_frame_closes_with_4400() {
    let room = Arc::new(Room::new("r", false, 16));
    let (mut s, _out) =
        Session::join(room, 1, Grant::all_write(), SessionOptions::default()).unwrap();
    let reason = s
        .handle_frame(Bytes::from_static(&[0, 2, 5, 1]), no_results)
        .unwrap_err();
    assert_eq!(reason.code(), crate::room::CLOSE_MALFORMED);
    assert_eq!(s.kick().reason().unwrap().cause, reason);
    assert!(!s.kick().reason().unwrap().flush_first);
}

#[test]
fn repeated_questions_in_one_frame_are_answered_once() {
    let room = Arc::new(Room::new("r", false, 16));
    room.apply_update(&text_update(7, "hi"), None).unwrap();
    let full_sv = room.state_vector();
    let (mut s, mut out) = Session::join(
        room.clone(),
        1,
        Grant::all_write(),
        SessionOptions::default(),
    )
    .unwrap();
    drain(&mut out);
    let frame = |parts: &[Bytes]| Bytes::from(parts.concat());
    let empty_step1 = protocol::encode_sync_step1(&[0]);
    let query = protocol::encode_query_awareness();
    let status = protocol::encode_sync_status(b"end");
    // Three SyncStep1s, a run of QueryAwareness and one more after a SyncStep1: one answer
    // to each question.
    s.handle_frame(
        frame(&[
            empty_step1.clone(),
            query.clone(),
            query.clone(),
            empty_step1.clone(),
            protocol::encode_sync_step1(&full_sv),
            query.clone(),
            status.clone(),
        ]),
        no_results,
    )
    .unwrap();
    let msgs = drain(&mut out);
    let step2s: Vec<_> = msgs
        .iter()
        .filter_map(|m| match m {
            Message::Sync(SyncMessage::Step2(u)) => Some(u.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(step2s.len(), 1, "{msgs:?}");
    assert!(yrs::Update::decode_v1(&step2s[0]).is_ok());
    let queries = msgs
        .iter()
        .filter(|m| matches!(m, Message::Awareness(_)))
        .count();
    assert_eq!(queries, 1, "{msgs:?}");
    assert!(
        matches!(msgs.last(), Some(Message::SyncStatus(_))),
        "{msgs:?}"
    );
    // A later SyncStep1 that lacks what the first had gets one more answer, at the end of
    // the frame, holding what it lacks.
    s.handle_frame(
        frame(&[
            protocol::encode_sync_step1(&full_sv),
            empty_step1.clone(),
            empty_step1,
        ]),
        no_results,
    )
    .unwrap();
    let msgs = drain(&mut out);
    let doc = Doc::new();
    let mut answers = 0;
    for m in &msgs {
        if let Message::Sync(SyncMessage::Step2(u)) = m {
            answers += 1;
            doc.transact_mut()
                .apply_update(yrs::Update::decode_v1(u).unwrap())
                .unwrap();
        }
    }
    assert_eq!(answers, 2, "{msgs:?}");
    assert_eq!(
        doc.get_or_insert_text("t").get_string(&doc.transact()),
        "hi"
    );
}

#[test]
fn an_awareness_state_that_is_not_json_closes_with_4400_and_goes_nowhere() {
    let room = Arc::new(Room::new("r", false, 16));
    let (mut a, mut a_out) = Session::join(
        room.clone(),
        1,
        Grant::all_write(),
        SessionOptions::default(),
    )
    .unwrap();
    let (_b, mut b_out) = Session::join(
        room.clone(),
        2,
        Grant::all_write(),
        SessionOptions::default(),
    )
    .unwrap();
    drain(&mut a_out);
    drain(&mut b_out);
    // One valid entry and one that is not JSON: the whole update is refused.
    let mut clients = std::collections::HashMap::new();
    for (id, json) in [(42, r#"{"user":"a"}"#), (43, "{not json")] {
        clients.insert(
            yrs::ClientID::new(id),
            yrs::sync::awareness::AwarenessUpdateEntry {
                clock: 1,
                json: json.into(),
            },
        );
    }
    let aw = yrs::sync::awareness::AwarenessUpdate { clients }.encode_v1();
    let reason = a
        .handle_frame(protocol::encode_awareness(&aw), no_results)
        .unwrap_err();
    assert_eq!(reason.code(), crate::room::CLOSE_MALFORMED);
    assert!(reason.to_string().contains("not valid JSON"), "{reason}");
    assert!(a.awareness_clients().next().is_none());
    assert!(drain(&mut b_out).is_empty(), "nothing was relayed");
    assert!(drain(&mut a_out).is_empty(), "nothing was echoed");
    assert_eq!(
        &room.awareness_frame()[..],
        &[1, 1, 0],
        "nothing was stored"
    );
}
