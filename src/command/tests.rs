use serde_json::{json, Value};

use super::*;
use crate::protocol::{decode_frame, Message};

/// The command example of docs/protocol.md section 5.2, written out by hand.
const COMMAND_FRAME_HEX: &str = "
67 00 8a 01 7b 22 69 64 22 3a 22 6e 31 2d 62 31
2d 31 22 2c 22 6b 69 6e 64 22 3a 22 63 6f 6d 70
61 63 74 22 2c 22 72 6f 6f 6d 22 3a 22 6e 6f 74
65 73 22 2c 22 61 72 67 73 22 3a 7b 7d 2c 22 6f
72 69 67 69 6e 22 3a 22 6e 31 22 2c 22 62 6f 6f
74 22 3a 22 62 31 22 2c 22 73 65 71 22 3a 31 2c
22 69 73 73 75 65 64 5f 6d 73 22 3a 31 30 30 30
2c 22 64 65 61 64 6c 69 6e 65 5f 6d 73 22 3a 33
31 30 30 30 2c 22 68 6f 70 73 22 3a 30 7d";

/// The result example of docs/protocol.md section 5.2, written out by hand.
const RESULT_FRAME_HEX: &str = "
67 01 73 7b 22 69 64 22 3a 22 6e 31 2d 62 31 2d
31 22 2c 22 72 65 73 70 6f 6e 64 65 72 22 3a 22
34 32 22 2c 22 72 65 73 70 6f 6e 64 65 72 5f 6b
69 6e 64 22 3a 22 63 6c 69 65 6e 74 22 2c 22 72
6f 6f 6d 22 3a 22 6e 6f 74 65 73 22 2c 22 73 74
61 74 75 73 22 3a 22 6f 6b 22 2c 22 64 65 74 61
69 6c 22 3a 6e 75 6c 6c 2c 22 61 74 5f 6d 73 22
3a 31 35 30 30 7d";

const PROTOCOL_DOC: &str = include_str!("../../docs/protocol.md");

fn hex(text: &str) -> Vec<u8> {
    text.split_whitespace()
        .map(|pair| u8::from_str_radix(pair, 16).expect("hex pair"))
        .collect()
}

/// The hex block that follows `<!-- frame: NAME -->` in docs/protocol.md.
fn doc_frame(name: &str) -> Vec<u8> {
    let marker = format!("<!-- frame: {name} -->");
    let start = PROTOCOL_DOC
        .find(&marker)
        .unwrap_or_else(|| panic!("docs/protocol.md has no {marker}"));
    let rest = &PROTOCOL_DOC[start + marker.len()..];
    let open = rest.find("```").expect("code block after marker");
    let body = &rest[open + 3..];
    let body = &body[body.find('\n').expect("fence line") + 1..];
    let close = body.find("```").expect("closing fence");
    hex(&body[..close])
}

fn example_command() -> Command {
    CommandIssuer::new("n1", "b1").issue(
        CommandKind::Compact,
        Some("notes".into()),
        json!({}),
        1000,
        DEFAULT_TIMEOUT_MS,
    )
}

fn example_result() -> CommandResult {
    CommandResult::for_command(
        &example_command(),
        "42",
        ResponderKind::Client,
        ResultStatus::Ok,
        Value::Null,
        1500,
    )
}

#[test]
fn command_frame_matches_the_hand_written_example() {
    let frame = encode_command(&example_command());
    assert_eq!(&frame[..], &hex(COMMAND_FRAME_HEX)[..]);
    assert_eq!(
        frame[2..4],
        [0x8a, 0x01],
        "138 bytes of JSON: two-byte length"
    );
    let decoded = match decode_frame(frame.clone()).unwrap().as_slice() {
        [Message::Command { subtype, json }] => decode(*subtype, json).unwrap(),
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(decoded, CommandMessage::Command(example_command()));
    assert_eq!(decoded.encode(), frame);
}

#[test]
fn result_frame_matches_the_hand_written_example() {
    let frame = encode_result(&example_result());
    assert_eq!(&frame[..], &hex(RESULT_FRAME_HEX)[..]);
    let messages = decode_frame(frame.clone()).unwrap();
    let decoded = CommandMessage::from_message(&messages[0]).unwrap().unwrap();
    assert_eq!(decoded, CommandMessage::Result(example_result()));
    assert_eq!(decoded.id(), "n1-b1-1");
    assert_eq!(decoded.encode(), frame);
}

#[test]
fn docs_show_the_same_example_frames() {
    assert_eq!(doc_frame("command_example"), hex(COMMAND_FRAME_HEX));
    assert_eq!(doc_frame("result_example"), hex(RESULT_FRAME_HEX));
}

/// The command and result frames that the JavaScript reference produced
/// (`tests/fixtures/y-protocols-frames.json`, made by
/// `tests/interop/scripts/make-fixtures.mjs`) hold valid documents that re-encode to the same
/// bytes. The codec side of these fixtures is checked in `crate::protocol`'s tests.
#[test]
fn js_command_fixtures_are_valid_documents() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/y-protocols-frames.json"
    );
    let text = std::fs::read_to_string(path).expect("fixture file");
    let fixtures: Vec<Value> = serde_json::from_str(&text).expect("fixture JSON");
    let unhex = |s: &str| -> Vec<u8> {
        assert!(s.len().is_multiple_of(2), "odd hex length");
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
            .collect()
    };
    let mut checked = 0;
    for f in fixtures.iter().filter(|f| f["type"] == "command") {
        let name = f["name"].as_str().unwrap();
        let frame = unhex(f["frame"].as_str().unwrap());
        let mut msgs = decode_frame(bytes::Bytes::copy_from_slice(&frame)).expect("decodes");
        assert_eq!(msgs.len(), 1, "one message per frame");
        let Message::Command { subtype, json } = msgs.remove(0) else {
            panic!("{name}: not a command frame");
        };
        // The JS-made documents are valid commands and results, and re-encode to the same
        // bytes.
        let decoded = decode(subtype, &json)
            .unwrap_or_else(|e| panic!("{name}: not a valid command document: {e}"));
        assert_eq!(
            &decoded.encode()[..],
            &frame[..],
            "{name}: document re-encoding"
        );
        checked += 1;
    }
    assert!(checked > 0, "no fixture of type command");
}

#[test]
fn example_json_is_exact() {
    assert_eq!(
        example_command().to_json(),
        r#"{"id":"n1-b1-1","kind":"compact","room":"notes","args":{},"origin":"n1","boot":"b1","seq":1,"issued_ms":1000,"deadline_ms":31000,"hops":0}"#
    );
    assert_eq!(
        example_result().to_json(),
        r#"{"id":"n1-b1-1","responder":"42","responder_kind":"client","room":"notes","status":"ok","detail":null,"at_ms":1500}"#
    );
}

#[test]
fn kinds_round_trip_and_unknown_kinds_are_kept() {
    for (kind, name) in [
        (CommandKind::Migrate, "migrate"),
        (CommandKind::Reindex, "reindex"),
        (CommandKind::Compact, "compact"),
        (CommandKind::Invalidate, "invalidate"),
    ] {
        assert_eq!(serde_json::to_value(&kind).unwrap(), json!(name));
        assert_eq!(
            serde_json::from_value::<CommandKind>(json!(name)).unwrap(),
            kind
        );
        assert!(kind.is_known());
    }
    let json = r#"{"id":"x","kind":"defragment","origin":"n","boot":"b","seq":1,"issued_ms":0,"deadline_ms":10}"#;
    let CommandMessage::Command(cmd) = decode(0, json).unwrap() else {
        panic!("not a command")
    };
    assert_eq!(cmd.kind, CommandKind::Other("defragment".into()));
    assert!(!cmd.kind.is_known());
    assert_eq!(cmd.room, None, "missing room = all rooms");
    assert_eq!(cmd.args, json!({}), "missing args = {{}}");
    assert_eq!(cmd.hops, 0);
    // The unknown name survives re-encoding for nodes that forward it.
    assert!(cmd.to_json().contains(r#""kind":"defragment""#));
    assert_eq!(cmd.kind.to_string(), "defragment");
    assert_eq!(
        "migrate".parse::<CommandKind>().unwrap(),
        CommandKind::Migrate
    );
}

#[test]
fn unknown_kind_is_answered_unsupported() {
    let json = r#"{"id":"x1","kind":"defragment","room":"r","origin":"n","boot":"b","seq":1,"issued_ms":0,"deadline_ms":10}"#;
    let CommandMessage::Command(cmd) = decode(0, json).unwrap() else {
        panic!("not a command")
    };
    let result = CommandResult::unsupported(&cmd, "node-x", ResponderKind::Node, 5);
    assert_eq!(result.status, ResultStatus::Unsupported);
    assert_eq!(result.id, "x1");
    assert_eq!(result.room.as_deref(), Some("r"));
    assert_eq!(
        result.detail,
        json!("command kind \"defragment\" is not supported")
    );
    let frame = encode_result(&result);
    assert_eq!(frame[..2], [103, 1]);
    let back = decode_frame(frame).unwrap();
    let CommandMessage::Result(back) = CommandMessage::from_message(&back[0]).unwrap().unwrap()
    else {
        panic!("not a result")
    };
    assert_eq!(back, result);
    assert!(back.to_json().contains(r#""status":"unsupported""#));
}

#[test]
fn decode_errors_are_clear() {
    let err = decode(0, "{not json").unwrap_err();
    assert!(
        matches!(
            err,
            CommandError::NotJson {
                what: "command",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().starts_with("command is not valid JSON"),
        "{err}"
    );

    let err = decode(
        0,
        r#"{"id":"a","kind":"compact","origin":"n","boot":"b","seq":1,"issued_ms":0}"#,
    )
    .unwrap_err();
    assert!(matches!(err, CommandError::Invalid { .. }), "{err}");
    assert!(
        err.to_string().contains("missing field `deadline_ms`"),
        "{err}"
    );

    let err = decode(
        1,
        r#"{"id":"a","responder":"1","responder_kind":"client","status":"great","at_ms":1}"#,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("invalid result: unknown variant `great`"),
        "{err}"
    );

    let err = decode(
        1,
        r#"{"id":"a","responder":"1","responder_kind":"robot","status":"ok","at_ms":1}"#,
    )
    .unwrap_err();
    assert!(
        matches!(err, CommandError::Invalid { what: "result", .. }),
        "{err}"
    );

    let err = decode(1, r#"{"id":"a","responder":"1","status":"ok","at_ms":1}"#).unwrap_err();
    assert!(
        err.to_string().contains("missing field `responder_kind`"),
        "{err}"
    );

    let err = decode(7, "{}").unwrap_err();
    assert!(matches!(err, CommandError::UnknownSubtype(7)), "{err}");

    let err = decode(0, r#"{"id":"","kind":"compact","origin":"n","boot":"b","seq":1,"issued_ms":0,"deadline_ms":1}"#)
        .unwrap_err();
    assert!(matches!(err, CommandError::BadId { len: 0 }), "{err}");
    let long = "x".repeat(MAX_ID_LEN + 1);
    let json = format!(
        r#"{{"id":"{long}","responder":"1","responder_kind":"node","status":"ok","at_ms":1}}"#
    );
    assert!(matches!(
        decode(1, &json).unwrap_err(),
        CommandError::BadId { .. }
    ));

    // A result without room and detail gets nulls.
    let CommandMessage::Result(r) = decode(
        1,
        r#"{"id":"a","responder":"1","responder_kind":"client","status":"refused","at_ms":1}"#,
    )
    .unwrap() else {
        panic!("not a result")
    };
    assert_eq!(
        (r.room, r.detail, r.status),
        (None, Value::Null, ResultStatus::Refused)
    );
}

#[test]
fn command_ids_combine_node_boot_and_sequence() {
    let node = "12D3KooWGzXq3ZfT9aLrBnE7ocvVwF5u1pQk2sR8mYtH6jD4cXq3ZfT9a";
    let boot = "4f1c2b7d9e0a11223344556677889900";
    assert_eq!(command_id(node, boot, 17), "Xq3ZfT9a-4f1c2b7d9e0a-17");
    assert_eq!(command_id("n1", "b1", 1), "n1-b1-1");
    // Multi-byte characters are cut on character boundaries.
    assert_eq!(
        command_id("ノードノードノードノード", "é", 2),
        "ードノードノード-é-2"
    );
    let mut issuer = CommandIssuer::new(node, boot);
    let first = issuer.issue(CommandKind::Reindex, None, json!({}), 100, 50);
    assert_eq!(
        (first.id.as_str(), first.seq),
        ("Xq3ZfT9a-4f1c2b7d9e0a-1", 1)
    );
    let cmd = issuer.issue(CommandKind::Reindex, None, json!({}), 100, 50);
    assert_eq!(cmd.id, "Xq3ZfT9a-4f1c2b7d9e0a-2");
    assert_eq!(
        (cmd.origin.as_str(), cmd.boot.as_str(), cmd.seq),
        (node, boot, 2)
    );
    assert_eq!((cmd.issued_ms, cmd.deadline_ms, cmd.hops), (100, 150, 0));
}

#[test]
fn forwarding_stops_at_the_deadline_and_hop_limit() {
    let cmd = example_command(); // deadline 31000
    assert!(forwardable(&cmd, 1000));
    assert!(forwardable(&cmd, 30_999));
    assert!(!forwardable(&cmd, 31_000));
    let mut hop = cmd.clone();
    for _ in 0..MAX_HOPS - 1 {
        hop = hop.next_hop();
    }
    assert_eq!(hop.hops, MAX_HOPS - 1);
    assert!(forwardable(&hop, 1000));
    let last = hop.next_hop();
    assert_eq!(last.hops, MAX_HOPS);
    assert!(!forwardable(&last, 1000));
    assert_eq!(last.id, cmd.id, "the id never changes on the way");
    let saturated = Command {
        hops: u8::MAX,
        ..cmd
    };
    assert_eq!(saturated.next_hop().hops, u8::MAX);
}

#[test]
fn seen_set_dedups() {
    let mut seen = SeenSet::new(10);
    assert!(seen.insert("a", 100, 0));
    assert!(!seen.insert("a", 100, 1));
    assert!(!seen.insert("a", 500, 2), "a duplicate stays a duplicate");
    assert!(seen.insert("b", 100, 3));
    assert_eq!(seen.len(), 2);
    assert!(seen.contains("a", 50));
    assert!(!seen.contains("c", 50));
}

#[test]
fn seen_set_expires_at_the_deadline() {
    let mut seen = SeenSet::new(10);
    assert!(seen.insert("early", 100, 0));
    assert!(seen.insert("late", 200, 0));
    assert!(seen.contains("early", 99));
    assert!(!seen.contains("early", 100), "expired at its deadline");
    assert!(seen.contains("late", 100));
    assert_eq!(seen.len(), 1);
    // After expiry the same id is new again (a node would not act: its deadline passed).
    assert!(seen.insert("early", 300, 150));
    assert!(!seen.contains("late", 200));
    assert!(seen.contains("early", 200));
    // An already-expired id is reported new, then forgotten.
    assert!(seen.insert("stale", 10, 250));
    seen.expire(250);
    assert!(!seen.contains("stale", 250));
    assert!(seen.contains("early", 250));
}

#[test]
fn seen_set_evicts_oldest_first_at_the_cap() {
    let mut seen = SeenSet::new(3);
    // Expiry order differs from insertion order: eviction follows insertion.
    assert!(seen.insert("first", 1_000, 0));
    assert!(seen.insert("second", 10, 0));
    assert!(seen.insert("third", 500, 0));
    assert!(seen.insert("fourth", 20, 0));
    assert_eq!(seen.len(), 3);
    assert!(!seen.contains("first", 0), "oldest evicted");
    assert!(seen.contains("second", 0));
    assert!(seen.insert("fifth", 900, 0));
    assert!(!seen.contains("second", 0));
    assert!(seen.contains("third", 0) && seen.contains("fourth", 0) && seen.contains("fifth", 0));
    // Expiry and eviction stay consistent after mixing both.
    assert!(!seen.contains("fourth", 20));
    assert_eq!(seen.len(), 2);
    assert!(seen.insert("sixth", 2_000, 30));
    assert!(seen.insert("seventh", 2_000, 30));
    assert_eq!(seen.len(), 3);
    assert!(!seen.contains("third", 30), "third was the oldest left");
    seen.expire(5_000);
    assert!(seen.is_empty());
    assert_eq!(SeenSet::default().capacity(), DEFAULT_SEEN_CAPACITY);
    assert_eq!(SeenSet::new(0).capacity(), 1);
}

#[test]
fn seen_set_holds_the_default_cap() {
    let mut seen = SeenSet::default();
    for i in 0..DEFAULT_SEEN_CAPACITY + 10 {
        assert!(seen.insert(&format!("id-{i}"), u64::MAX, 0));
    }
    assert_eq!(seen.len(), DEFAULT_SEEN_CAPACITY);
    assert!(!seen.contains("id-9", 0));
    assert!(seen.contains("id-10", 0));
    assert!(!seen.insert(&format!("id-{}", DEFAULT_SEEN_CAPACITY + 9), u64::MAX, 0));
}

fn result(
    cmd: &Command,
    responder: &str,
    kind: ResponderKind,
    status: ResultStatus,
    at: u64,
) -> CommandResult {
    CommandResult::for_command(cmd, responder, kind, status, json!("detail"), at)
}

#[test]
fn record_aggregates_and_finishes_when_all_answered() {
    let cmd = example_command();
    let mut record = CommandRecord::new(cmd.clone());
    record.expect("1", ResponderKind::Client);
    record.expect("2", ResponderKind::Client);
    record.expect("peer", ResponderKind::Node);
    record.expect("1", ResponderKind::Client);
    assert!(!record.is_done());
    assert_eq!(
        record.record(result(
            &cmd,
            "1",
            ResponderKind::Client,
            ResultStatus::Ok,
            1100
        )),
        RecordOutcome::Recorded
    );
    assert_eq!(
        record.record(result(
            &cmd,
            "1",
            ResponderKind::Client,
            ResultStatus::Error,
            1200
        )),
        RecordOutcome::Duplicate
    );
    record.record(result(
        &cmd,
        "2",
        ResponderKind::Client,
        ResultStatus::Unsupported,
        1300,
    ));
    // A client of the peer, relayed back: not expected, still recorded.
    record.record(result(
        &cmd,
        "99",
        ResponderKind::Client,
        ResultStatus::Refused,
        1400,
    ));
    assert_eq!(record.pending().collect::<Vec<_>>(), ["peer"]);
    record.record(result(
        &cmd,
        "peer",
        ResponderKind::Node,
        ResultStatus::Ok,
        1500,
    ));
    assert!(
        !record.is_done(),
        "not sealed: the fan-out may still add responders"
    );
    record.seal();
    assert!(record.is_done());
    let other = Command {
        id: "other".into(),
        ..cmd.clone()
    };
    assert_eq!(
        record.record(result(
            &other,
            "3",
            ResponderKind::Client,
            ResultStatus::Ok,
            1
        )),
        RecordOutcome::UnknownCommand
    );
    assert!(!record.tick(30_999));
    let counts = record.counts();
    assert_eq!(counts[&ResultStatus::Ok], 2);
    assert_eq!(counts[&ResultStatus::Error], 0);
    assert_eq!(counts[&ResultStatus::Unsupported], 1);
    assert_eq!(counts[&ResultStatus::Refused], 1);
    let body = record.to_json();
    assert_eq!(body["done"], json!(true));
    assert_eq!(body["results"].as_array().unwrap().len(), 4);
    assert_eq!(body["results"][0]["responder"], json!("1"));
    assert_eq!(body["results"][0]["status"], json!("ok"));
}

#[test]
fn record_marks_missing_responders_timeout_at_the_deadline() {
    let cmd = example_command();
    let mut record = CommandRecord::new(cmd.clone());
    record.expect("1", ResponderKind::Client);
    record.expect("peer", ResponderKind::Node);
    record.seal();
    record.record(result(
        &cmd,
        "1",
        ResponderKind::Client,
        ResultStatus::Ok,
        2000,
    ));
    assert!(!record.tick(30_999), "before the deadline nothing changes");
    assert!(!record.is_done());
    assert!(record.tick(31_000));
    assert!(!record.tick(40_000), "only once");
    assert!(record.is_done());
    let timeout = record.results().find(|r| r.responder == "peer").unwrap();
    assert_eq!(timeout.status, ResultStatus::Timeout);
    assert_eq!(timeout.responder_kind, ResponderKind::Node);
    assert_eq!(timeout.at_ms, 31_000);
    assert_eq!(record.counts()[&ResultStatus::Timeout], 1);
    // Late answers replace the timeout; responders added after the deadline are ignored.
    record.expect("late-joiner", ResponderKind::Client);
    assert_eq!(record.pending().count(), 0);
    assert_eq!(
        record.record(result(
            &cmd,
            "peer",
            ResponderKind::Node,
            ResultStatus::Ok,
            32_000
        )),
        RecordOutcome::ReplacedTimeout
    );
    assert_eq!(record.counts()[&ResultStatus::Timeout], 0);
    assert_eq!(record.counts()[&ResultStatus::Ok], 2);

    // The exact JSON of GET /commands/{id}.
    let body = record.to_json();
    assert_eq!(
        body,
        json!({
            "id": "n1-b1-1", "kind": "compact", "room": "notes", "args": {}, "origin": "n1",
            "issued_ms": 1000, "deadline_ms": 31000, "done": true,
            "results": [
                {"id": "n1-b1-1", "responder": "1", "responder_kind": "client", "room": "notes",
                 "status": "ok", "detail": "detail", "at_ms": 2000},
                {"id": "n1-b1-1", "responder": "peer", "responder_kind": "node", "room": "notes",
                 "status": "ok", "detail": "detail", "at_ms": 32000},
            ],
            "pending": [],
            "counts": {"ok": 2, "error": 0, "refused": 0, "unsupported": 0, "timeout": 0},
        })
    );
}

#[test]
fn sealed_record_without_responders_is_done_at_once() {
    let mut record = CommandRecord::new(example_command());
    assert!(!record.is_done());
    record.seal();
    assert!(record.is_done());
    assert_eq!(record.to_json()["results"], json!([]));
}

#[test]
fn log_keeps_the_last_records_and_routes_results() {
    let mut log = CommandLog::new(3);
    let mut issuer = CommandIssuer::new("n1", "b1");
    let commands: Vec<Command> = (1..=4)
        .map(|seq| issuer.issue(CommandKind::Compact, None, json!({}), 0, 100 * seq))
        .collect();
    for cmd in &commands[..3] {
        let mut record = CommandRecord::new(cmd.clone());
        record.expect("c", ResponderKind::Client);
        assert_eq!(log.insert(record), None);
    }
    assert_eq!(log.next_deadline(), Some(100));
    assert_eq!(
        log.insert(CommandRecord::new(commands[3].clone())),
        Some("n1-b1-1".into())
    );
    assert_eq!(log.len(), 3);
    assert!(log.get("n1-b1-1").is_none());
    // Replacing a record with the same id does not evict.
    assert_eq!(log.insert(CommandRecord::new(commands[3].clone())), None);
    assert_eq!(log.len(), 3);

    assert_eq!(
        log.record(result(
            &commands[1],
            "c",
            ResponderKind::Client,
            ResultStatus::Ok,
            10
        )),
        RecordOutcome::Recorded
    );
    assert_eq!(
        log.record(result(
            &commands[0],
            "c",
            ResponderKind::Client,
            ResultStatus::Ok,
            10
        )),
        RecordOutcome::UnknownCommand
    );
    assert_eq!(log.next_deadline(), Some(200));
    assert_eq!(log.tick(250), vec!["n1-b1-2".to_string()]);
    assert_eq!(log.tick(250), Vec::<String>::new());
    assert_eq!(log.next_deadline(), Some(300));
    let ids: Vec<&str> = log.iter().map(CommandRecord::id).collect();
    assert_eq!(ids, ["n1-b1-2", "n1-b1-3", "n1-b1-4"]);
    let second = log.get("n1-b1-2").unwrap();
    assert!(second.is_done());
    assert_eq!(second.counts()[&ResultStatus::Ok], 1);
    assert_eq!(
        log.tick(400),
        vec!["n1-b1-3".to_string(), "n1-b1-4".to_string()]
    );
    let third = log.get_mut("n1-b1-3").unwrap();
    assert_eq!(third.counts()[&ResultStatus::Timeout], 1);
    assert_eq!(log.next_deadline(), None);
    assert!(!log.is_empty());
    assert_eq!(CommandLog::default().len(), 0);
}

/// The result statuses docs/protocol.md names (the `status` row of the result table, the
/// `counts` of `GET /commands/{id}`) are exactly the code's, and the statuses that make
/// `ymesh command --wait` fail are the ones the docs say.
#[test]
fn documented_result_statuses_are_the_codes() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/protocol.md");
    let text = std::fs::read_to_string(path).expect("docs/protocol.md");
    let ticked = |line: &str| -> Vec<String> {
        line.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    };
    let code: Vec<String> = ResultStatus::ALL
        .iter()
        .map(|s| s.as_str().to_string())
        .collect();
    let row = text
        .lines()
        .find(|l| l.starts_with("| `status` | string |"))
        .expect("the status row of the result table");
    let mut documented = ticked(row);
    documented.retain(|w| code.contains(w));
    let mut sorted = code.clone();
    sorted.sort();
    documented.sort();
    documented.dedup();
    assert_eq!(documented, sorted, "{row}");
    let counts = text
        .lines()
        .find(|l| l.contains("\"counts\": {"))
        .expect("the counts of GET /commands/{id}");
    let listed: Vec<&str> = counts
        .split("\"counts\": {")
        .nth(1)
        .unwrap()
        .split('}')
        .next()
        .unwrap()
        .split(", ")
        .map(|s| s.trim_matches('"'))
        .collect();
    assert_eq!(listed, code, "{counts}");
    let failing: Vec<&str> = ResultStatus::ALL
        .iter()
        .filter(|s| s.is_failure())
        .map(|s| s.as_str())
        .collect();
    assert_eq!(failing, ["error", "refused", "timeout"]);
    assert!(
        text.contains("non-zero when any responder answered `error` or `refused`, or timed out"),
        "docs/protocol.md says which statuses fail `ymesh command --wait`"
    );
}
