use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use yrs::sync::awareness::AwarenessUpdate;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, StateVector, Text, Transact, Update, WriteTxn};

use super::*;
use crate::protocol::{decode_frame, Message, SyncMessage};

pub(super) fn text_update(client: u64, s: &str) -> Vec<u8> {
    let doc = Doc::with_client_id(client);
    let text = doc.get_or_insert_text("t");
    let mut txn = doc.transact_mut();
    text.insert(&mut txn, 0, s);
    txn.encode_update_v1()
}

pub(super) fn drain(rx: &mut crate::queue::Receiver) -> Vec<Message> {
    let mut out = Vec::new();
    while let Ok(frame) = rx.try_recv() {
        out.extend(decode_frame(frame).unwrap());
    }
    out
}

fn awareness_update(client: u64, clock: u32, json: &str) -> Vec<u8> {
    let mut clients = std::collections::HashMap::new();
    clients.insert(
        yrs::ClientID::new(client),
        yrs::sync::awareness::AwarenessUpdateEntry {
            clock,
            json: json.into(),
        },
    );
    AwarenessUpdate { clients }.encode_v1()
}

#[test]
fn join_queues_step1_then_awareness() {
    let room = Room::new("r", false, 16);
    let mut a = room.join(1, SessionKind::Client).unwrap();
    let msgs = drain(&mut a.outbound);
    assert_eq!(msgs.len(), 1);
    assert!(matches!(msgs[0], Message::Sync(SyncMessage::Step1(_))));

    let aw = awareness_update(42, 1, r#"{"user":"a"}"#);
    room.apply_awareness(
        &Bytes::from(aw.clone()),
        &crate::protocol::encode_awareness(&aw),
        1,
    )
    .unwrap();
    let mut b = room.join(2, SessionKind::Client).unwrap();
    let msgs = drain(&mut b.outbound);
    assert_eq!(
        msgs.len(),
        2,
        "late joiner gets awareness at once: {msgs:?}"
    );
    assert!(matches!(msgs[1], Message::Awareness(_)));
}

#[test]
fn updates_fan_out_to_all_clients_including_sender_once_encoded() {
    let room = Room::new("r", false, 16);
    let mut a = room.join(1, SessionKind::Client).unwrap();
    let mut b = room.join(2, SessionKind::Client).unwrap();
    drain(&mut a.outbound);
    drain(&mut b.outbound);
    let upd = text_update(7, "hello");
    assert!(room.apply_update(&upd, Some(1)).unwrap().changed);
    let fa = a.outbound.try_recv().unwrap();
    let fb = b.outbound.try_recv().unwrap();
    assert_eq!(fa.as_ptr(), fb.as_ptr(), "one encoding shared by receivers");
    // Applying the same update again changes nothing and sends nothing.
    assert!(!room.apply_update(&upd, Some(1)).unwrap().changed);
    assert!(a.outbound.try_recv().is_err());
    room.with_doc(|doc| {
        let t = doc.get_or_insert_text("t");
        assert_eq!(t.get_string(&doc.transact()), "hello");
    });
}

#[test]
fn link_sessions_do_not_get_their_own_updates_back() {
    let room = Room::new("r", false, 16);
    let mut link = room.join(1, SessionKind::Link).unwrap();
    let mut client = room.join(2, SessionKind::Client).unwrap();
    drain(&mut link.outbound);
    drain(&mut client.outbound);
    room.apply_update(&text_update(7, "x"), Some(1)).unwrap();
    assert!(link.outbound.try_recv().is_err());
    assert!(client.outbound.try_recv().is_ok());
}

#[test]
fn step2_answers_with_missing_state_even_if_empty() {
    let room = Room::new("r", false, 16);
    let empty_sv = StateVector::default().encode_v1();
    let frame = room.sync_step2_for(&empty_sv).unwrap();
    match &decode_frame(frame).unwrap()[0] {
        Message::Sync(SyncMessage::Step2(u)) => assert!(Update::decode_v1(u).is_ok()),
        other => panic!("{other:?}"),
    }
    room.apply_update(&text_update(7, "abc"), None).unwrap();
    let frame = room.sync_step2_for(&empty_sv).unwrap();
    let Message::Sync(SyncMessage::Step2(u)) = &decode_frame(frame).unwrap()[0] else {
        panic!()
    };
    let doc = Doc::new();
    doc.transact_mut()
        .apply_update(Update::decode_v1(u).unwrap())
        .unwrap();
    let t = doc.get_or_insert_text("t");
    assert_eq!(t.get_string(&doc.transact()), "abc");
    assert!(room.sync_step2_for(&[0xff]).is_err());
}

#[test]
fn invalid_update_is_an_error_and_changes_nothing() {
    let room = Room::new("r", false, 16);
    assert!(matches!(
        room.apply_update(&[1, 2, 3, 4, 5], None),
        Err(RoomError::InvalidUpdate(_))
    ));
    assert_eq!(room.encode_state(), vec![0, 0]);
}

#[test]
fn leaving_removes_awareness_and_broadcasts_removal() {
    let room = Room::new("r", false, 16);
    let mut a = room.join(1, SessionKind::Client).unwrap();
    let mut b = room.join(2, SessionKind::Client).unwrap();
    let aw = awareness_update(42, 3, r#"{"name":"a"}"#);
    let change = room
        .apply_awareness(
            &Bytes::from(aw.clone()),
            &crate::protocol::encode_awareness(&aw),
            1,
        )
        .unwrap();
    assert_eq!(change.present, vec![yrs::ClientID::new(42)]);
    drain(&mut a.outbound);
    drain(&mut b.outbound);
    room.leave(1, &HashSet::from([yrs::ClientID::new(42)]));
    let msgs = drain(&mut b.outbound);
    let Message::Awareness(payload) = &msgs[0] else {
        panic!("{msgs:?}")
    };
    let upd = AwarenessUpdate::decode_v1(payload).unwrap();
    let entry = &upd.clients[&yrs::ClientID::new(42)];
    assert_eq!(&*entry.json, "null");
    assert_eq!(entry.clock, 4);
    // Nobody has state now: QueryAwareness gets an empty update.
    assert_eq!(&room.awareness_frame()[..], &[1, 1, 0]);
}

#[test]
fn stale_awareness_is_not_forwarded() {
    let room = Room::new("r", false, 16);
    let mut a = room.join(1, SessionKind::Client).unwrap();
    let aw = awareness_update(42, 3, r#"{}"#);
    let frame = crate::protocol::encode_awareness(&aw);
    room.apply_awareness(&Bytes::from(aw.clone()), &frame, 1)
        .unwrap();
    drain(&mut a.outbound);
    let change = room
        .apply_awareness(&Bytes::from(aw.clone()), &frame, 1)
        .unwrap();
    assert_eq!(change, AwarenessChange::default());
    assert!(a.outbound.try_recv().is_err());
    assert!(room
        .apply_awareness(&Bytes::from_static(&[0xff]), &frame, 1)
        .is_err());
}

#[test]
fn slow_session_is_kicked_with_4429() {
    let room = Room::new("r", false, 4);
    let slow = room.join(1, SessionKind::Client).unwrap();
    for i in 0..10u64 {
        room.apply_update(&text_update(100 + i, "x"), None).unwrap();
    }
    assert!(slow.kick.is_kicked());
    assert_eq!(slow.kick.reason().unwrap().code(), CLOSE_TOO_SLOW);
}

#[test]
fn registry_creates_once_and_evicts_idle_rooms() {
    let reg = RoomRegistry::new(RoomSettings {
        idle_timeout: Duration::from_secs(10),
        pinned: HashSet::from(["keep".to_string()]),
        max_rooms: 3,
        outbound_queue: 8,
        quotas: Quotas::default(),
        ..RoomSettings::default()
    });
    assert_eq!(reg.len(), 1, "pinned room exists from the start");
    let a1 = reg.get_or_create("a").unwrap();
    let a2 = reg.get_or_create("a").unwrap();
    assert!(Arc::ptr_eq(&a1, &a2));
    let b = reg.get_or_create("b").unwrap();
    assert!(matches!(
        reg.get_or_create("c"),
        Err(RegistryError::AtCapacity(3))
    ));
    let joined = b.join(1, SessionKind::Client).unwrap();
    let later = Instant::now() + Duration::from_secs(11);
    let evicted = reg.sweep(later);
    assert_eq!(evicted.len(), 1);
    assert_eq!(&*evicted[0], "a");
    assert!(matches!(
        a1.join(2, SessionKind::Client),
        Err(RoomError::Closed)
    ));
    // b has a session; after it leaves, b is idle from then on.
    b.leave(joined.id, &HashSet::new());
    assert!(reg.sweep(Instant::now()).is_empty());
    assert_eq!(reg.sweep(Instant::now() + Duration::from_secs(11)).len(), 1);
    let names: Vec<String> = reg.list().into_iter().map(|r| r.name).collect();
    assert_eq!(names, vec!["keep".to_string()]);
}

#[test]
fn doc_edits_through_with_doc_are_broadcast() {
    let room = Room::new("r", false, 8);
    let mut a = room.join(1, SessionKind::Client).unwrap();
    drain(&mut a.outbound);
    room.with_doc(|doc| {
        let t = doc.get_or_insert_text("t");
        let mut txn = doc.transact_mut();
        t.insert(&mut txn, 0, "z");
        let _ = txn.get_or_insert_map("m");
    });
    assert!(room.encode_state().len() > 2);
    let msgs = drain(&mut a.outbound);
    assert!(
        matches!(msgs[..], [Message::Sync(SyncMessage::Update(_))]),
        "{msgs:?}"
    );
}

/// Records what a replicator was told, in order, next to what the hooks saw.
#[derive(Default)]
struct Recorder {
    log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Replicator for Recorder {
    fn changed(&self, room: &str, update: &Bytes, origin: Option<SessionId>) {
        assert!(!update.is_empty());
        let line = format!("replicator changed {room} {origin:?}");
        self.log.lock().unwrap().push(line);
    }
    fn awareness(&self, room: &str, _update: &Bytes, origin: Option<SessionId>) {
        let line = format!("replicator awareness {room} {origin:?}");
        self.log.lock().unwrap().push(line);
    }
    fn deleted(&self, tombstone: &crate::store::Tombstone) {
        let line = format!("replicator deleted {}", tombstone.room);
        self.log.lock().unwrap().push(line);
    }
}

#[tokio::test]
async fn the_replicator_hears_changes_awareness_and_deletions_after_the_hooks() {
    let log: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let seen = log.clone();
    let hooks = Hooks::new().on_event(move |e| {
        let line = match e {
            RoomEvent::Changed { room, .. } => format!("hook changed {room}"),
            RoomEvent::Awareness { room, .. } => format!("hook awareness {room}"),
            RoomEvent::Deleted { room, .. } => format!("hook deleted {room}"),
            _ => return,
        };
        seen.lock().unwrap().push(line);
    });
    let reg = RoomRegistry::with_hooks(RoomSettings::default(), hooks);
    // A room made before the replicator is set reports to it too.
    let early = reg.get_or_create("early").unwrap();
    let recorder = Arc::new(Recorder { log: log.clone() });
    let weak: std::sync::Weak<dyn Replicator> = Arc::downgrade(&recorder) as _;
    assert!(reg.set_replicator(weak.clone()));
    assert!(!reg.set_replicator(weak), "set once");
    let update = text_update(7, "x");
    early.apply_update(&update, Some(3)).unwrap();
    let late = reg.get_or_create("late").unwrap();
    late.with_doc(|doc| {
        let t = doc.get_or_insert_text("t");
        t.insert(&mut doc.transact_mut(), 0, "y");
    });
    // No change, no call.
    early.apply_update(&update, Some(3)).unwrap();
    let aw = awareness_update(42, 1, "{}");
    early.join(9, SessionKind::Client).unwrap();
    early
        .apply_awareness(
            &Bytes::from(aw.clone()),
            &crate::protocol::encode_awareness(&aw),
            9,
        )
        .unwrap();
    early.leave(9, &HashSet::from([yrs::ClientID::new(42)]));
    reg.delete(
        crate::store::Tombstone {
            room: "late".into(),
            deleted_ms: 1,
            state_vector: vec![0],
            origin: "me".into(),
        },
        false,
    )
    .await
    .unwrap();
    let got = log.lock().unwrap().clone();
    assert_eq!(
        got,
        [
            "hook changed early",
            "replicator changed early Some(3)",
            "hook changed late",
            "replicator changed late None",
            "hook awareness early",
            "replicator awareness early Some(9)",
            "hook awareness early",
            "replicator awareness early None",
            "hook deleted late",
            "replicator deleted late",
        ]
    );
    // A replicator that is gone is skipped.
    drop(recorder);
    early.apply_update(&text_update(8, "z"), None).unwrap();
    assert_eq!(log.lock().unwrap().last().unwrap(), "hook changed early");
}

/// Keystrokes at the end of a long typed run (one squashed block in the room's document),
/// some deleted again inside their own transaction, are broadcast as updates that rebuild the
/// same text when a fresh document applies them in order. The room encodes each change before
/// yrs squashes and collects the transaction's blocks (docs/benchmarks.md, finding 5).
#[test]
fn typed_run_broadcasts_replay_to_the_same_text() {
    let room = Room::new("r", false, 64);
    let mut a = room.join(1, SessionKind::Client).unwrap();
    drain(&mut a.outbound);
    let writer = Doc::with_client_id(7);
    let text = writer.get_or_insert_text("t");
    let replica = Doc::new();
    for i in 0..2_000u32 {
        let update = {
            let mut txn = writer.transact_mut();
            let len = text.len(&txn);
            text.insert(&mut txn, len, "ab");
            if i % 10 == 0 {
                // Typed and taken back in one transaction: inserted and deleted at once.
                text.remove_range(&mut txn, len + 1, 1);
            }
            txn.encode_update_v1()
        };
        let applied = room.apply_update(&update, Some(1)).unwrap();
        assert!(applied.changed);
        let mut frames = 0;
        for m in drain(&mut a.outbound) {
            if let Message::Sync(SyncMessage::Update(u)) = m {
                frames += 1;
                replica
                    .transact_mut()
                    .apply_update(Update::decode_v1(&u).unwrap())
                    .unwrap();
            }
        }
        assert_eq!(frames, 1, "one broadcast per change");
    }
    let want = text.get_string(&writer.transact());
    let got = replica
        .get_or_insert_text("t")
        .get_string(&replica.transact());
    assert_eq!(got.len(), 2_000 * 2 - 200);
    assert_eq!(got, want);
}

#[test]
fn with_doc_broadcasts_all_its_transactions_as_one_change_and_observes_only_meanwhile() {
    let room = Room::new("r", false, 16);
    let mut a = room.join(1, SessionKind::Client).unwrap();
    drain(&mut a.outbound);
    room.with_doc(|doc| {
        let t = doc.get_or_insert_text("t");
        t.insert(&mut doc.transact_mut(), 0, "ab");
        t.insert(&mut doc.transact_mut(), 2, "cd");
    });
    let msgs = drain(&mut a.outbound);
    let [Message::Sync(SyncMessage::Update(u))] = &msgs[..] else {
        panic!("one update expected: {msgs:?}");
    };
    let copy = Doc::new();
    copy.transact_mut()
        .apply_update(Update::decode_v1(u).unwrap())
        .unwrap();
    let t = copy.get_or_insert_text("t");
    assert_eq!(t.get_string(&copy.transact()), "abcd");
    // A read-only call broadcasts nothing; later updates are captured from their own
    // transaction, once.
    room.with_doc(|doc| doc.get_or_insert_text("t").len(&doc.transact()));
    assert!(drain(&mut a.outbound).is_empty());
    room.apply_update(&text_update(7, "x"), None).unwrap();
    assert_eq!(drain(&mut a.outbound).len(), 1);
}
