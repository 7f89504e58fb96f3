//! Status that tells the truth: a peer that goes down shows `backing_off` with the reason
//! (logged once), rooms made meanwhile are listed as pending, and all of it clears when the
//! peer is back.

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use yrs::{Text, WriteTxn};

use crate::common::*;

/// A node in its own process whose log lines are all kept.
struct Logged {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    addr: SocketAddr,
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Logged {
    fn spawn(mut cmd: Command) -> Logged {
        cmd.env("RUST_LOG", "info")
            .env_remove("PORT")
            .env_remove("HOST")
            .env_remove("YMESH_DATA_DIR")
            .stderr(Stdio::piped())
            .stdout(Stdio::null());
        let mut child = cmd.spawn().expect("spawn");
        let stderr = child.stderr.take().expect("stderr");
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let keep = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                eprintln!("node: {line}");
                keep.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = loop {
            let ready = lines
                .lock()
                .unwrap()
                .iter()
                .find_map(|l| l.split("listening on http://").nth(1).map(str::to_string));
            if let Some(rest) = ready {
                let addr: String = rest
                    .chars()
                    .take_while(|c| !c.is_whitespace() && *c != '"')
                    .collect();
                break addr.parse().expect("address in the ready line");
            }
            assert!(Instant::now() < deadline, "no ready line");
            std::thread::sleep(Duration::from_millis(20));
        };
        Logged { child, lines, addr }
    }

    fn logged(&self, what: &str) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(what))
            .cloned()
            .collect()
    }
}

/// The configured peer's row of `node`, once `ok` holds for it.
async fn config_row(
    node: SocketAddr,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let v = poll_json(node, "/peers", what, |v| {
        v["data"]
            .as_array()
            .is_some_and(|rows| rows.iter().any(|r| r["source"] == "config" && ok(r)))
    })
    .await;
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["source"] == "config" && ok(r))
        .cloned()
        .unwrap()
}

fn room<'a>(row: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    row["rooms"].as_array()?.iter().find(|r| r["name"] == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_is_down_backs_off_with_the_reason_and_catches_up_when_it_returns() {
    let b_cfg = test_config();
    let b_dir = b_cfg.data_dir.clone();
    let b = start(b_cfg).await;
    let b_addr = b.local_addr();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ymesh"));
    cmd.args(["serve", "--port", "0", "--no-mdns", "--peer"])
        .arg(format!("ws://{b_addr}"))
        .arg("--data-dir")
        .arg(fresh_dir("a"));
    let a = Logged::spawn(cmd);
    config_row(a.addr, "A linked to B", |r| r["state"] == "connected").await;

    let mut before = SyncClient::connect(a.addr, "before").await;
    before
        .edit(|t| t.get_or_insert_text("t").insert(t, 0, "made while linked"))
        .await;
    config_row(a.addr, "'before' synced with B", |r| {
        room(r, "before").is_some_and(|x| x["status"] == "synced")
    })
    .await;

    // B stops: A backs off with the reason, says so once in its log, and never calls B
    // "refused" or "not a ymesh node".
    b.shutdown().await;
    let down = config_row(a.addr, "A backing off", |r| {
        r["state"] == "backing_off"
            && r["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("cannot connect"))
    })
    .await;
    assert!(down["next_retry_ms"].is_u64(), "{down}");
    assert!(down["last_error_ms"].is_u64(), "{down}");
    let (_, peers) = get_json(a.addr, "/peers").await;
    assert!(!peers.to_string().contains("not a ymesh node"), "{peers}");
    wait_until("the reason in A's log", || {
        a.logged("cannot connect")
            .iter()
            .any(|l| l.contains("INFO") || l.contains("WARN"))
    })
    .await;

    // A room made while B is away is pending, counted; the room B had stays synced.
    let mut away = SyncClient::connect(a.addr, "while-away").await;
    away.edit(|t| {
        t.get_or_insert_text("t")
            .insert(t, 0, "made while B was down")
    })
    .await;
    let row = config_row(a.addr, "'while-away' pending for B", |r| {
        room(r, "while-away").is_some_and(|x| x["status"] == "pending")
    })
    .await;
    let w = room(&row, "while-away").unwrap();
    assert!(w["unacked"].as_u64().unwrap_or(0) >= 1, "{row}");
    assert!(w["pending_since_ms"].is_u64(), "{row}");
    assert_eq!(room(&row, "before").unwrap()["status"], "synced", "{row}");

    // B comes back on the same port: connected, the error cleared, everything synced.
    let listener = tokio::net::TcpListener::bind(b_addr)
        .await
        .expect("B's port again");
    let mut cfg = test_config();
    cfg.data_dir = b_dir;
    let b2 = ymesh::Node::start_on(cfg, ymesh::room::Hooks::new(), Some(listener))
        .await
        .unwrap();
    let up = config_row(a.addr, "A linked to B again, all synced", |r| {
        r["state"] == "connected"
            && room(r, "while-away").is_some_and(|x| x["status"] == "synced")
            && room(r, "before").is_some_and(|x| x["status"] == "synced")
    })
    .await;
    assert!(up["last_error"].is_null(), "the error is cleared: {up}");
    assert!(up["last_error_ms"].is_null(), "{up}");
    poll_get(
        b2.local_addr(),
        "/rooms/while-away?format=json",
        "the room on B",
        |s, v| s == 200 && v["data"]["t"] == "made while B was down",
    )
    .await;
    b2.shutdown().await;
}
