//! Nodes that find each other by mDNS with no peers configured, on hosts made of network
//! namespaces joined by a bridge (tests/it/common/netns.rs). Multicast stays on that bridge.
//!
//! Needs root (CI has it). Elsewhere it says why and skips; with `CI=true` it must run.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::common::netns::{lan_or_skip, Lan};
use crate::common::*;
use yrs::{ReadTxn, Text, Transact};

/// Node processes, SIGKILLed on drop (a failing test still cleans up; declared after the
/// `Lan` so they go first).
#[derive(Default)]
struct Nodes(Vec<Option<Child>>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in self.0.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `ymesh serve --host 0.0.0.0` (so mDNS is on by its default) in host `i`, with the
/// LAN's shared mesh secret (the documented laptop/desktop set-up: nodes that find each
/// other by mDNS link because they prove the same secret).
fn start_in(lan: &Lan, i: usize, dir: &Path) -> Child {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lan.hosts[i], env!("CARGO_BIN_EXE_ymesh")])
        .args(["serve", "--host", "0.0.0.0", "--port", "3913"])
        .args(["--mesh-secret", "lan-test-mesh-secret", "--data-dir"])
        .arg(dir);
    let (child, _, port) = spawn_until_ready(cmd);
    assert_eq!(port, 3913);
    child
}

/// `GET http://HOST_i:3913{path}` from inside host `j`'s namespace.
fn get(lan: &Lan, from: usize, to: usize, path: &str) -> (u16, serde_json::Value) {
    let addr: std::net::SocketAddr = format!("{}:3913", lan.addr(to)).parse().unwrap();
    let path = path.to_string();
    lan.run_in(from, move || async move { get_json(addr, &path).await })
}

fn post(lan: &Lan, from: usize, to: usize, path: &str, body: Vec<u8>) -> u16 {
    let addr: std::net::SocketAddr = format!("{}:3913", lan.addr(to)).parse().unwrap();
    let path = path.to_string();
    lan.run_in(from, move || async move {
        http_body(addr, "POST", &path, &body).await.0
    })
}

fn poll(what: &str, wait: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + wait;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn node_id(lan: &Lan, i: usize) -> String {
    let (_, v) = get(lan, i, i, "/");
    // --host 0.0.0.0 turned mDNS on by default.
    assert_eq!(v["data"]["discovery"], serde_json::json!(["mdns"]), "{v}");
    v["data"]["node_id"].as_str().unwrap().to_string()
}

/// Node ids node `i` has a connected link with, and how each was found.
fn connected(lan: &Lan, i: usize) -> Vec<(String, String)> {
    let (_, v) = get(lan, i, i, "/peers");
    let mut out: Vec<(String, String)> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["state"] == "connected")
        .filter_map(|p| {
            Some((
                p["node_id"].as_str()?.to_string(),
                p["found_by"].as_str().unwrap_or_default().to_string(),
            ))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn listed_peer(lan: &Lan, i: usize, id: &str) -> bool {
    let (_, v) = get(lan, i, i, "/peers");
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["node_id"] == id)
}

fn update(text: &str, client: u64) -> Vec<u8> {
    let doc = yrs::Doc::with_client_id(client);
    doc.get_or_insert_text("t")
        .insert(&mut doc.transact_mut(), 0, text);
    let u = doc
        .transact()
        .encode_state_as_update_v1(&yrs::StateVector::default());
    u
}

fn text_on(lan: &Lan, i: usize, room: &str) -> Option<String> {
    let (status, v) = get(lan, i, i, &format!("/rooms/{room}?format=json"));
    (status == 200).then(|| v["data"]["t"].as_str().unwrap_or_default().to_string())
}

#[test]
fn nodes_on_a_lan_find_each_other_replicate_and_notice_a_node_leave_and_return() {
    let Some(lan) = lan_or_skip(3, 1, "the mDNS discovery test") else {
        return;
    };
    let dirs: Vec<_> = (0..3).map(|_| fresh_dir("lan")).collect();
    let mut nodes = Nodes::default();
    let wait = Duration::from_secs(30);

    // A starts alone and gets a room.
    nodes.0.push(Some(start_in(&lan, 0, &dirs[0])));
    assert_eq!(
        post(&lan, 0, 0, "/rooms/lan-notes", update("hello LAN", 1)),
        200
    );

    // B starts fresh with no peer configured: measure until it holds A's room.
    let t0 = Instant::now();
    nodes.0.push(Some(start_in(&lan, 1, &dirs[1])));
    let ready = t0.elapsed();
    poll("B pulls A's room after discovering A", wait, || {
        text_on(&lan, 1, "lan-notes").as_deref() == Some("hello LAN")
    });
    eprintln!(
        "discovery-to-first-sync: {} ms after B's start ({} ms of it until B was listening)",
        t0.elapsed().as_millis(),
        ready.as_millis()
    );

    nodes.0.push(Some(start_in(&lan, 2, &dirs[2])));
    let ids: Vec<String> = (0..3).map(|i| node_id(&lan, i)).collect();
    for i in 0..3 {
        let want: Vec<String> = (0..3).filter(|&j| j != i).map(|j| ids[j].clone()).collect();
        // Linked with both, each found by mDNS (an inbound link shows "inbound" until this
        // node has discovered its dialer too).
        poll(
            &format!("node {i} linked with both others, found by mDNS"),
            wait,
            || {
                let got = connected(&lan, i);
                want.iter()
                    .all(|w| got.iter().any(|(id, by)| id == w && by == "mdns"))
            },
        );
    }

    // An edit on C reaches A and B.
    assert_eq!(
        post(&lan, 2, 2, "/rooms/from-c", update("typed on C", 3)),
        200
    );
    for i in [0, 1] {
        poll(&format!("C's room on node {i}"), wait, || {
            text_on(&lan, i, "from-c").as_deref() == Some("typed on C")
        });
    }

    // C stops with SIGTERM: its goodbye drops it from A's and B's status.
    let mut c = nodes.0[2].take().unwrap();
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    let status = c.wait().unwrap();
    assert!(status.success(), "C stopped cleanly: {status:?}");
    for i in [0, 1] {
        poll(&format!("node {i} dropped C"), wait, || {
            !listed_peer(&lan, i, &ids[2])
        });
    }

    // C returns on its data directory and is noticed again.
    nodes.0[2] = Some(start_in(&lan, 2, &dirs[2]));
    for i in [0, 1] {
        poll(&format!("node {i} linked with C again"), wait, || {
            connected(&lan, i).iter().any(|(id, _)| id == &ids[2])
        });
    }
    drop(nodes);
    drop(lan);
}

/// A stand-in for tailscaled's LocalAPI on a Unix socket: answers every request with the
/// status document `status()` returns at that moment.
async fn serve_local_api(
    path: std::path::PathBuf,
    status: std::sync::Arc<std::sync::Mutex<String>>,
) -> tokio::task::JoinHandle<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let body = status.lock().unwrap().clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf);
                assert!(head.starts_with("GET /localapi/v0/status "), "{head}");
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    })
}

/// Polls `node`'s `GET /peers` until the row of `peer` is connected, and returns that row;
/// fails with `what` and the last answer after `WAIT`.
async fn connected_row(node: std::net::SocketAddr, peer: &str, what: &str) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, v) = get_json(node, "/peers").await;
        let row = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["node_id"] == peer)
            .cloned();
        if let Some(row) = row.filter(|r| r["state"] == "connected") {
            return row;
        }
        assert!(Instant::now() < deadline, "{what}: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn tailnet_status(peer_online: bool) -> String {
    serde_json::json!({
        "Version": "1.76.1",
        "BackendState": "Running",
        "TailscaleIPs": ["100.101.102.103"],
        "Self": {
            "HostName": "laptop", "DNSName": "laptop.tail1234.ts.net.",
            "TailscaleIPs": ["100.101.102.103"], "Online": true
        },
        "Peer": {
            "nodekey:01": {
                "HostName": "desktop", "DNSName": "desktop.tail1234.ts.net.",
                "TailscaleIPs": ["127.0.0.1"], "Online": peer_online, "Tags": ["tag:ymesh"]
            },
            "nodekey:02": {
                "HostName": "phone", "DNSName": "phone.tail1234.ts.net.",
                "TailscaleIPs": ["127.0.0.2"], "Online": true
            }
        }
    })
    .to_string()
}

/// Tailnet discovery against a LocalAPI stand-in (no live tailnet here): the peer tagged
/// `tag:ymesh` is probed, found to be a ymesh node and linked; it is dropped once the
/// tailnet reports it offline and its link ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tailnet_peer_is_found_through_the_local_api() {
    let b = start(test_config()).await;
    let dir = fresh_dir("tailnet");
    let socket = dir.join("tailscaled.sock");
    let status = std::sync::Arc::new(std::sync::Mutex::new(tailnet_status(true)));
    let api = serve_local_api(socket.clone(), status.clone()).await;
    let mut cfg = test_config();
    cfg.discovery.tailnet = Some(ymesh::mesh::discovery::TailnetConfig {
        socket,
        tags: vec!["tag:ymesh".into()],
        hostnames: Vec::new(),
        port: b.local_addr().port(),
        interval: Duration::from_millis(200),
    });
    let a = start(cfg).await;
    let b_id = b.node_id().to_string();
    let addr = a.local_addr();
    // GET / says which discovery sources run: tailnet here, none on B (loopback, mDNS off).
    let (_, v) = get_json(addr, "/").await;
    assert_eq!(
        v["data"]["discovery"],
        serde_json::json!(["tailnet"]),
        "{v}"
    );
    let (_, v) = get_json(b.local_addr(), "/").await;
    assert_eq!(v["data"]["discovery"], serde_json::json!([]), "{v}");
    let row = connected_row(addr, &b_id, "A links with B found on the tailnet").await;
    assert_eq!(row["found_by"], "tailnet", "{row}");
    assert_eq!(
        row["address"],
        format!("http://127.0.0.1:{}", b.local_addr().port())
    );
    // Only the tagged peer was taken: the untagged one (127.0.0.2) is not in the book.
    let (_, v) = get_json(addr, "/peers").await;
    assert_eq!(v["data"].as_array().unwrap().len(), 1, "{v}");

    // The tailnet says B went offline, and B stops: A drops it.
    *status.lock().unwrap() = tailnet_status(false);
    b.shutdown().await;
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, v) = get_json(addr, "/peers").await;
        if v["data"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "A dropped B: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.shutdown().await;
    api.abort();
}

/// A node serving TLS answers the plain probe with 400: it is probed again over TLS at its
/// MagicDNS name (here `localhost`, which the test certificate names), found at that
/// `https://` URL, and linked over `wss://`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tailnet_peer_serving_tls_is_found_at_its_name() {
    let certs = certificates("tailnet-tls");
    let b = start(ymesh::config::Config {
        tls: Some(ymesh::config::TlsFiles {
            cert: certs.join("cert.pem"),
            key: certs.join("key.pem"),
        }),
        ..test_config()
    })
    .await;
    let port = b.local_addr().port();
    let dir = fresh_dir("tailnet-tls");
    let socket = dir.join("tailscaled.sock");
    let status = serde_json::json!({
        "BackendState": "Running",
        "Self": {"HostName": "laptop", "TailscaleIPs": ["100.101.102.103"], "Online": true},
        "Peer": {
            "nodekey:01": {
                "HostName": "desktop", "DNSName": "localhost.",
                "TailscaleIPs": ["127.0.0.1"], "Online": true, "Tags": ["tag:ymesh"]
            }
        }
    })
    .to_string();
    let api = serve_local_api(
        socket.clone(),
        std::sync::Arc::new(std::sync::Mutex::new(status)),
    )
    .await;
    let mut cfg = test_config();
    cfg.discovery.tailnet = Some(ymesh::mesh::discovery::TailnetConfig {
        socket,
        tags: vec!["tag:ymesh".into()],
        hostnames: Vec::new(),
        port,
        interval: Duration::from_millis(200),
    });
    let a = start(cfg).await;
    let b_id = b.node_id().to_string();
    let row = connected_row(
        a.local_addr(),
        &b_id,
        "A links with B found on the tailnet over TLS",
    )
    .await;
    assert_eq!(row["found_by"], "tailnet", "{row}");
    assert_eq!(row["address"], format!("https://localhost:{port}"), "{row}");
    a.shutdown().await;
    b.shutdown().await;
    api.abort();
}
