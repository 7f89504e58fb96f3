//! Maintenance commands (type 103) on real nodes: issuing, opt-in delivery, the node's own
//! handlers, aggregation, the mesh (once per node and client), invalidate's refusal, offline
//! nodes, restarts and the admin rule.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{json, Value};
use ymesh::client::{CommandDedup, Outcome, RoomClient};
use ymesh::command::CommandKind;
use yrs::{Text, Transact, WriteTxn};

async fn post_json(addr: SocketAddr, path: &str, body: Value) -> (u16, Value) {
    let (status, bytes) = http_body(addr, "POST", path, body.to_string().as_bytes()).await;
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, v)
}

async fn issue(addr: SocketAddr, room: Option<&str>, body: Value) -> String {
    let path = match room {
        Some(r) => format!("/rooms/{r}/commands"),
        None => "/commands".into(),
    };
    let (status, v) = post_json(addr, &path, body).await;
    assert_eq!(status, 200, "{v}");
    v["data"]["id"].as_str().unwrap().to_string()
}

/// Polls `GET /commands/{id}` until `ok` holds.
async fn report_until(
    addr: SocketAddr,
    id: &str,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let v = poll_json(addr, &format!("/commands/{id}"), what, |v| ok(&v["data"])).await;
    v["data"].clone()
}

fn result_of<'a>(report: &'a Value, responder: &str) -> Option<&'a Value> {
    report["results"]
        .as_array()?
        .iter()
        .find(|r| r["responder"] == responder)
}

/// An opted-in Rust client counting the commands it handles.
struct Counting {
    client: RoomClient,
    calls: Arc<AtomicUsize>,
    kinds: Arc<Mutex<Vec<String>>>,
}

async fn counting_client(addr: SocketAddr, room: &str, dedup: Option<CommandDedup>) -> Counting {
    counting_on(addr, room, dedup, yrs::Doc::new()).await
}

async fn counting_on(
    addr: SocketAddr,
    room: &str,
    dedup: Option<CommandDedup>,
    doc: yrs::Doc,
) -> Counting {
    let calls = Arc::new(AtomicUsize::new(0));
    let kinds = Arc::new(Mutex::new(Vec::new()));
    let mut b = RoomClient::builder(format!("ws://{addr}"), room).commands(true);
    if let Some(d) = dedup {
        b = b.dedup(d);
    }
    for kind in [
        CommandKind::Migrate,
        CommandKind::Reindex,
        CommandKind::Compact,
        CommandKind::Invalidate,
    ] {
        let (calls, kinds) = (calls.clone(), kinds.clone());
        b = b.on_command(kind, move |_doc, cmd| {
            calls.fetch_add(1, Ordering::SeqCst);
            kinds.lock().unwrap().push(cmd.kind.as_str().to_string());
            Outcome::ok(json!({ "handled": cmd.kind.as_str() }))
        });
    }
    let client = b.connect(doc).await.expect("client connects");
    client.wait_synced(WAIT).await.expect("client syncs");
    Counting {
        client,
        calls,
        kinds,
    }
}

/// Waits until the node knows at least `n` awareness clients in `room` (clients announce
/// themselves, so commands are answered under their client ids; presence also crosses the
/// mesh).
async fn wait_announced(node: &ymesh::Node, room: &str, n: usize) {
    let room = node.room(room).await.unwrap();
    wait_until("clients announced", || {
        let frame = room.awareness_frame();
        ymesh::protocol::decode_frame(frame).is_ok_and(|m| match &m[..] {
            [ymesh::protocol::Message::Awareness(p)] => {
                p.first().is_some_and(|c| usize::from(*c) >= n)
            }
            _ => false,
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_reaches_an_opted_in_client_and_is_aggregated() {
    let node = start(test_config()).await;
    let addr = node.local_addr();
    let c = counting_client(addr, "notes", None).await;
    let client_id = c.client.doc().client_id().get().to_string();
    c.client.doc().get_or_insert_text("t").insert(
        &mut c.client.doc().transact_mut(),
        0,
        "some text",
    );
    wait_announced(&node, "notes", 1).await;
    // Content reaches the store before compacting.
    let room = node.room("notes").await.unwrap();
    wait_until("content", || room.has_content()).await;
    room.wait_durable().await.unwrap();

    for (kind, args) in [
        ("compact", json!({})),
        ("reindex", json!({})),
        ("migrate", json!({ "version": 3 })),
        ("invalidate", json!({})),
    ] {
        let id = issue(addr, Some("notes"), json!({ "kind": kind, "args": args })).await;
        let report = report_until(addr, &id, kind, |r| r["done"] == true).await;
        assert_eq!(report["kind"], kind);
        let client = result_of(&report, &client_id).unwrap_or_else(|| panic!("{report}"));
        assert_eq!(client["status"], "ok", "{report}");
        assert_eq!(client["responder_kind"], "client");
        assert_eq!(client["detail"]["handled"], kind);
        let own = result_of(&report, node.node_id()).unwrap();
        assert_eq!(own["status"], "ok", "{report}");
        assert_eq!(own["detail"]["delivered_to"], json!([client_id]));
        match kind {
            "compact" => {
                let before = own["detail"]["bytes_before"].as_u64().unwrap();
                let after = own["detail"]["bytes_after"].as_u64().unwrap();
                assert!(before > 0 && after > 0 && after <= before, "{own}");
            }
            "reindex" => {
                assert_eq!(own["detail"]["rooms"], 1, "{own}");
                assert_eq!(own["detail"]["damaged"], json!([]));
            }
            "migrate" => {
                let (_, v) = get_json(addr, "/rooms?all=true").await;
                let row = v["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|r| r["name"] == "notes")
                    .cloned()
                    .unwrap();
                assert_eq!(row["schema_version"], 3, "{row}");
            }
            _ => {}
        }
        assert_eq!(report["counts"]["ok"], 2, "{report}");
        assert_eq!(report["pending"], json!([]));
    }
    // Compacting kept the content.
    let (_, v) = get_json(addr, "/rooms/notes?format=json").await;
    assert_eq!(v["data"]["t"], "some text");
    assert_eq!(c.calls.load(Ordering::SeqCst), 4);
    assert_eq!(
        *c.kinds.lock().unwrap(),
        vec!["compact", "reindex", "migrate", "invalidate"]
    );
    c.client.close().await.unwrap();
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_client_gets_no_command_and_keeps_syncing() {
    let node = start(test_config()).await;
    let addr = node.local_addr();
    let mut stock = SyncClient::connect(addr, "plain").await;
    let opted = counting_client(addr, "plain", None).await;
    let id = issue(addr, Some("plain"), json!({ "kind": "compact" })).await;
    report_until(addr, &id, "done", |r| r["done"] == true).await;
    assert_eq!(opted.calls.load(Ordering::SeqCst), 1);
    // The stock client saw no 103 frame, and still syncs.
    opted.client.doc().get_or_insert_text("t").insert(
        &mut opted.client.doc().transact_mut(),
        0,
        "after",
    );
    let deadline = Instant::now() + WAIT;
    while text_of(&stock.doc, "t") != "after" {
        assert!(Instant::now() < deadline, "stock client syncs");
        let msg = tokio::time::timeout(WAIT, stock.pump_one()).await.unwrap();
        assert!(
            !matches!(msg, ymesh::protocol::Message::Command { .. }),
            "a stock client got a command frame"
        );
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_and_missing_admin_credentials_are_refused() {
    let node = start(test_config()).await;
    let addr = node.local_addr();
    for (path, body, want) in [
        (
            "/rooms/r/commands",
            json!({ "kind": "explode" }),
            "unknown command kind",
        ),
        (
            "/rooms/r/commands",
            json!({ "kind": "migrate" }),
            "args.version",
        ),
        ("/commands", json!({ "kind": "invalidate" }), "one room"),
        (
            "/rooms/r/commands",
            json!({ "kind": "compact", "deadline_s": 0 }),
            "deadline_s",
        ),
        ("/rooms/r/commands", json!({ "nope": 1 }), "expected"),
    ] {
        let (status, v) = post_json(addr, path, body).await;
        assert_eq!(status, 400, "{v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(want), "{msg}");
    }
    let (status, _) = get_json(addr, "/commands/nope").await;
    assert_eq!(status, 404);
    node.shutdown().await;

    let mut cfg = test_config();
    cfg.admin_token = Some("sesame".into());
    let node = start(cfg).await;
    let addr = node.local_addr();
    let (status, _) = post_json(addr, "/commands", json!({ "kind": "compact" })).await;
    assert_eq!(status, 401);
    let client =
        ymesh::ops::NodeClient::new(&format!("http://{addr}"), Some("sesame".into())).unwrap();
    let id = client
        .issue_command("compact", None, json!({}), None)
        .await
        .unwrap();
    let report = client.command_report(&id).await.unwrap();
    assert_eq!(report["kind"], "compact");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_triangle_delivers_one_command_to_every_node_and_client_once() {
    let a = start(test_config()).await;
    let b = start(dialing(vec![peer(&a)])).await;
    let c = start(dialing(vec![peer(&a), peer(&b)])).await;
    for (x, y) in [(&b, &a), (&c, &a), (&c, &b)] {
        wait_linked(x, y).await;
        wait_linked(y, x).await;
    }
    let on_a = counting_client(a.local_addr(), "tri", None).await;
    let on_b = counting_client(b.local_addr(), "tri", None).await;
    let on_c = counting_client(c.local_addr(), "tri", None).await;
    // A phone with one document connected to two nodes (one dedup for both connections).
    let dedup = CommandDedup::new(1024);
    let phone_doc = yrs::Doc::new();
    let phone_b = counting_on(
        b.local_addr(),
        "tri",
        Some(dedup.clone()),
        phone_doc.clone(),
    )
    .await;
    let phone_c = counting_on(c.local_addr(), "tri", Some(dedup), phone_doc).await;
    for n in [&a, &b, &c] {
        wait_announced(n, "tri", 4).await;
    }
    // Give the room content, so it exists (is listed) on every node.
    on_a.client
        .doc()
        .get_or_insert_text("t")
        .insert(&mut on_a.client.doc().transact_mut(), 0, "x");
    for n in [&a, &b, &c] {
        let room = n.room("tri").await.unwrap();
        wait_until("content everywhere", || room.has_content()).await;
    }

    let id = issue(
        a.local_addr(),
        Some("tri"),
        json!({ "kind": "migrate", "args": { "version": 7 } }),
    )
    .await;
    let report = report_until(a.local_addr(), &id, "every answer", |r| r["done"] == true).await;
    // Every node answered once.
    for n in [&a, &b, &c] {
        let r = result_of(&report, n.node_id()).unwrap_or_else(|| panic!("{report}"));
        assert_eq!(r["status"], "ok", "{report}");
    }
    // Every client acted once; the phone once for both of its connections.
    for x in [&on_a, &on_b, &on_c] {
        assert_eq!(x.calls.load(Ordering::SeqCst), 1);
        let id = x.client.doc().client_id().get().to_string();
        assert_eq!(result_of(&report, &id).unwrap()["status"], "ok");
    }
    assert_eq!(
        phone_b.calls.load(Ordering::SeqCst) + phone_c.calls.load(Ordering::SeqCst),
        1,
        "the phone acts once"
    );
    let phone_id = phone_b.client.doc().client_id().get().to_string();
    assert_eq!(result_of(&report, &phone_id).unwrap()["status"], "ok");
    // Both of the phone's connections were expected under its client id: one answer.
    assert_eq!(report["counts"]["ok"], 3 + 4, "{report}");
    assert_eq!(report["pending"], json!([]));
    // Each node recorded the version.
    for n in [&a, &b, &c] {
        let (_, v) = get_json(n.local_addr(), "/rooms").await;
        let row = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "tri")
            .cloned()
            .unwrap();
        assert_eq!(row["schema_version"], 7, "{row}");
    }
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_refuses_with_local_only_edits_and_resyncs_without() {
    // A's room quota keeps B's big edit from reaching A: B then holds an edit A lacks.
    let mut a_cfg = test_config();
    a_cfg.store.room_quota_bytes = Some(4096);
    let a = start(a_cfg).await;
    let b = start(dialing(vec![peer(&a)])).await;
    wait_linked(&b, &a).await;
    wait_linked(&a, &b).await;
    for room in ["kept", "clean"] {
        let mut on_a = SyncClient::connect(a.local_addr(), room).await;
        on_a.edit_acked(|t| t.get_or_insert_text("t").insert(t, 0, "shared"))
            .await;
        let mut on_b = SyncClient::connect(b.local_addr(), room).await;
        on_b.pump_until("shared on B", |d| text_of(d, "t") == "shared")
            .await;
        if room == "kept" {
            let big = "b".repeat(8192);
            on_b.edit_acked(move |t| t.get_or_insert_text("t").insert(t, 0, &big))
                .await;
        }
    }
    // B has local-only edits in "kept": it refuses to drop its copy.
    let id = issue(
        a.local_addr(),
        Some("kept"),
        json!({ "kind": "invalidate" }),
    )
    .await;
    let report = report_until(a.local_addr(), &id, "B answers", |r| {
        result_of(r, b.node_id()).is_some()
    })
    .await;
    let from_b = result_of(&report, b.node_id()).unwrap();
    assert_eq!(from_b["status"], "refused", "{report}");
    assert!(from_b["detail"]["message"]
        .as_str()
        .unwrap()
        .contains("would lose"));
    let (_, v) = get_json(b.local_addr(), "/rooms/kept?format=json").await;
    assert_eq!(
        v["data"]["t"].as_str().unwrap().len(),
        8192 + 6,
        "B kept its edit"
    );

    // "clean" holds nothing beyond A's copy: B drops it and syncs it again from A.
    let id = issue(
        a.local_addr(),
        Some("clean"),
        json!({ "kind": "invalidate" }),
    )
    .await;
    let report = report_until(a.local_addr(), &id, "B answers", |r| {
        result_of(r, b.node_id()).is_some()
    })
    .await;
    let from_b = result_of(&report, b.node_id()).unwrap();
    assert_eq!(from_b["status"], "ok", "{report}");
    assert_eq!(from_b["detail"]["discarded"], true, "{report}");
    poll_get(
        b.local_addr(),
        "/rooms/clean?format=json",
        "B resynced from A",
        |status, v| status == 200 && v["data"]["t"] == "shared",
    )
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_offline_at_issue_time_gets_the_command_on_return_but_not_twice() {
    let a = start(test_config()).await;
    let mut b_cfg = dialing(vec![peer(&a)]);
    let b_dir = b_cfg.data_dir.clone();
    let b = start(b_cfg).await;
    wait_linked(&b, &a).await;
    let b_id = b.node_id().to_string();
    b.shutdown().await;

    let id = issue(
        a.local_addr(),
        None,
        json!({ "kind": "migrate", "args": { "version": 2 }, "deadline_s": 60 }),
    )
    .await;
    // B returns within the deadline and answers.
    b_cfg = dialing(vec![peer(&a)]);
    b_cfg.data_dir = b_dir.clone();
    let b = start(b_cfg).await;
    let report = report_until(a.local_addr(), &id, "B answers on return", |r| {
        result_of(r, &b_id).is_some()
    })
    .await;
    assert_eq!(result_of(&report, &b_id).unwrap()["status"], "ok");
    b.shutdown().await;

    // Restarted again while the command still runs: B does not apply it again, so a client
    // that opted in on the restarted B is not sent it.
    b_cfg = dialing(vec![peer(&a)]);
    b_cfg.data_dir = b_dir;
    let b = start(b_cfg).await;
    let mut raw = RawClient::connect(b.local_addr(), "/rooms/late?commands=1").await;
    raw.recv_until(|m| {
        matches!(
            m,
            ymesh::protocol::Message::Sync(ymesh::protocol::SyncMessage::Step1(_))
        )
    })
    .await;
    // A replays the running command when the link comes up; B skips it.
    wait_linked(&b, &a).await;
    raw.expect_silence(Duration::from_millis(1500)).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[test]
fn ymesh_command_prints_results_as_they_arrive() {
    let dir = fresh_dir("cli-command");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ymesh"));
    cmd.args(["serve", "--port", "0", "--data-dir"]).arg(&dir);
    let (mut child, _, port) = spawn_until_ready(cmd);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ymesh"))
        .args([
            "command",
            "reindex",
            "--wait",
            "--node",
            &format!("http://127.0.0.1:{port}"),
        ])
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("command "), "{text}");
    assert!(text.contains("node   ok"), "{text}");
    assert!(text.contains("done: 1 ok, 0 error"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_for_every_room_touches_only_rooms_shared_with_its_sender() {
    let a = start(test_config()).await;
    let mut to_a = peer(&a);
    to_a.share = ymesh::mesh::SharePolicy::Globs(vec!["shared*".into()]);
    let b = start(dialing(vec![to_a])).await;
    wait_linked(&b, &a).await;
    wait_linked(&a, &b).await;
    for room in ["shared-1", "private"] {
        let mut c = SyncClient::connect(b.local_addr(), room).await;
        c.edit_acked(|t| t.get_or_insert_text("t").insert(t, 0, "x"))
            .await;
    }
    let id = issue(
        a.local_addr(),
        None,
        json!({ "kind": "migrate", "args": { "version": 9 } }),
    )
    .await;
    let report = report_until(a.local_addr(), &id, "B answers", |r| {
        result_of(r, b.node_id()).is_some()
    })
    .await;
    assert_eq!(
        result_of(&report, b.node_id()).unwrap()["detail"]["rooms"],
        1
    );
    let (_, v) = get_json(b.local_addr(), "/rooms?all=true").await;
    let version = |name: &str| {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .map(|r| r["schema_version"].clone())
    };
    assert_eq!(version("shared-1"), Some(json!(9)), "{v}");
    assert_eq!(version("private"), Some(Value::Null), "{v}");
    a.shutdown().await;
    b.shutdown().await;
}

/// Runs the `ymesh` binary with `args` off the runtime's workers (the nodes are in-process).
async fn ymesh_cli(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_ymesh"))
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ymesh_command_wait_names_offline_peers_and_fails_on_a_timeout() {
    let b = start(test_config()).await;
    let c = start(test_config()).await;
    let a = start(dialing(vec![peer(&b), peer(&c)])).await;
    wait_linked(&a, &b).await;
    wait_linked(&a, &c).await;
    let b_addr = format!("ws://{}", b.local_addr());
    let b_id = b.node_id().to_string();
    b.shutdown().await;
    let mesh = a.mesh().clone();
    wait_until("B down on A", || !mesh.connected_peers().contains(&b_id)).await;
    let node = format!("http://{}", a.local_addr());

    // B is down: the command succeeds on A and C, and B is listed as offline.
    let out = ymesh_cli(
        [
            "command",
            "reindex",
            "--wait",
            "--deadline",
            "60",
            "--node",
            &node,
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line_of = |who: &str| {
        text.lines()
            .find(|l| l.contains(who))
            .unwrap_or_else(|| panic!("no line for {who}: {text}"))
            .to_string()
    };
    assert!(line_of(a.node_id()).starts_with("node   ok"), "{text}");
    assert!(line_of(c.node_id()).starts_with("node   ok"), "{text}");
    let offline = text
        .lines()
        .find(|l| l.starts_with("peer   offline"))
        .unwrap_or_else(|| panic!("B not listed: {text}"));
    assert!(
        offline.contains(&b_id) || offline.contains(&b_addr),
        "{text}"
    );
    assert!(
        offline.contains("will receive it when it reconnects"),
        "{text}"
    );
    let summary = text.lines().last().unwrap();
    assert!(
        summary.starts_with("done: 2 ok, 0 error") && summary.contains("1 peer offline"),
        "{text}"
    );

    // A client that opted in and never answers times out: the command fails, and says so.
    let mut silent = RawClient::connect(a.local_addr(), "/rooms/quiet?commands=1").await;
    // Joined once the node's SyncStep1 arrives: the command is then delivered to it.
    silent
        .recv_until(|m| {
            matches!(
                m,
                ymesh::protocol::Message::Sync(ymesh::protocol::SyncMessage::Step1(_))
            )
        })
        .await;
    let out = ymesh_cli(
        [
            "command",
            "compact",
            "--room",
            "quiet",
            "--wait",
            "--deadline",
            "1",
            "--node",
            &node,
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a timeout must fail: {text}{err}");
    assert!(text.contains("timeout"), "{text}");
    assert!(
        err.contains("did not succeed everywhere") && err.contains("1 timeout"),
        "{err}"
    );
    a.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_for_a_room_a_peer_does_not_share_lists_that_peer_as_not_shared() {
    let b = start(test_config()).await;
    let mut to_b = peer(&b);
    to_b.share = ymesh::mesh::SharePolicy::Globs(vec!["shared*".into()]);
    let a = start(dialing(vec![to_b])).await;
    wait_linked(&a, &b).await;
    let id = issue(
        a.local_addr(),
        Some("private"),
        json!({ "kind": "compact" }),
    )
    .await;
    let report = report_until(a.local_addr(), &id, "done", |r| r["done"] == true).await;
    assert_eq!(report["not_shared"], json!([b.node_id()]), "{report}");
    assert!(result_of(&report, b.node_id()).is_none(), "{report}");
    // A room B shares: B is expected and answers; nobody is listed as not shared.
    let id = issue(
        a.local_addr(),
        Some("shared-1"),
        json!({ "kind": "compact" }),
    )
    .await;
    let report = report_until(a.local_addr(), &id, "B answers", |r| {
        result_of(r, b.node_id()).is_some()
    })
    .await;
    assert!(report.get("not_shared").is_none(), "{report}");
    a.shutdown().await;
    b.shutdown().await;
}
