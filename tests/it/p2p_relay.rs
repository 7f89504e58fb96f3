//! A libp2p circuit relay between three hosts in network namespaces (tests/it/common/netns.rs):
//! A and C can reach only B (each has a blackhole route to the other; B forwards nothing).
//! B is a relay server, A reserves a slot on B, C dials A through B, and a room written on A
//! reaches C, whose `/peers` shows a p2p link to A with `relayed` set. Hole punching cannot
//! succeed here (A and C have no path to each other), so the link stays relayed.
//!
//! Each node runs on its own thread inside its namespace, with its own runtime; traffic stays
//! inside the namespaces. Needs root and `ip`; without them, or where namespaces cannot be
//! made, the test says so and passes without checking anything, except under `CI=true`.

#![cfg(feature = "p2p")]

use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::Duration;

use crate::common::netns::{lan_or_skip, Lan};
use crate::common::*;
use tokio_util::sync::CancellationToken;
use ymesh::mesh::PeerConfig;
use yrs::{Text, WriteTxn};

/// How long a step of the test may take.
const STEP: Duration = Duration::from_secs(30);

fn blackhole(lan: &Lan, from: usize, to: usize) {
    let target = format!("{}/32", lan.addr(to));
    let out = std::process::Command::new("ip")
        .args(["-n", &lan.hosts[from], "route", "add", "blackhole", &target])
        .output()
        .expect("ip");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits (on a std channel, from a runtime thread) without blocking the runtime.
async fn recv<T: Send + 'static>(rx: std_mpsc::Receiver<T>, what: &'static str) -> T {
    tokio::task::spawn_blocking(move || rx.recv_timeout(STEP))
        .await
        .expect("join")
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + STEP;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_reaches_c_from_a_through_the_relay_b() {
    let Some(lan) = lan_or_skip(3, 23, "the p2p relay test") else {
        return;
    };
    // A (0) and C (2) cannot reach each other; both reach B (1).
    blackhole(&lan, 0, 2);
    blackhole(&lan, 2, 0);
    let lan = Arc::new(lan);
    let relay_addr = format!("/ip4/{}/tcp/4001", lan.addr(1));
    let done = CancellationToken::new();

    // B: the relay.
    let (b_tx, b_rx) = std_mpsc::channel();
    let b = {
        let (lan, done, listen) = (lan.clone(), done.clone(), relay_addr.clone());
        std::thread::spawn(move || {
            lan.run_in(1, move || async move {
                let mut cfg = test_config();
                cfg.p2p.listen = vec![listen];
                cfg.p2p.relay_server = true;
                let node = start(cfg).await;
                let _ = b_tx.send(node.node_id().to_string());
                done.cancelled().await;
                node.shutdown().await;
            })
        })
    };
    let b_id = recv(b_rx, "B to start").await;
    let relay = format!("{relay_addr}/p2p/{b_id}");

    // A: reserves a slot on B and writes a room.
    let (a_tx, a_rx) = std_mpsc::channel();
    let a = {
        let (lan, done, relay) = (lan.clone(), done.clone(), relay.clone());
        std::thread::spawn(move || {
            lan.run_in(0, move || async move {
                let mut cfg = test_config();
                cfg.p2p.relays = vec![relay];
                let node = start(cfg).await;
                let mesh = node.mesh().clone();
                wait_for("A's reservation on B", || {
                    mesh.p2p_addresses()
                        .iter()
                        .any(|a| a.contains("/p2p-circuit"))
                })
                .await;
                let mut client = SyncClient::connect(node.local_addr(), "relayed").await;
                client
                    .edit(|t| t.get_or_insert_text("t").insert(t, 0, "from A"))
                    .await;
                let _ = a_tx.send((node.node_id().to_string(), mesh.p2p_addresses()));
                done.cancelled().await;
                node.shutdown().await;
            })
        })
    };
    let (a_id, a_addrs) = recv(a_rx, "A to reserve a slot").await;
    let circuit = format!("{relay}/p2p-circuit/p2p/{a_id}");
    assert!(a_addrs.contains(&circuit), "{a_addrs:?} lacks {circuit}");

    // C: dials A through B; the room arrives, and /peers says the link is relayed.
    let (c_tx, c_rx) = std_mpsc::channel();
    let c = {
        let (lan, a_id) = (lan.clone(), a_id.clone());
        std::thread::spawn(move || {
            lan.run_in(2, move || async move {
                let cfg = dialing(vec![PeerConfig {
                    url: circuit,
                    ..PeerConfig::default()
                }]);
                let node = start(cfg).await;
                let mut client = SyncClient::connect(node.local_addr(), "relayed").await;
                client
                    .pump_until("A's room on C", |d| text_of(d, "t") == "from A")
                    .await;
                let peers = poll_json(node.local_addr(), "/peers", "C's link to A", |v| {
                    v["data"].as_array().is_some_and(|rows| {
                        rows.iter()
                            .any(|p| p["node_id"] == a_id.as_str() && p["state"] == "connected")
                    })
                })
                .await;
                let _ = c_tx.send(peers);
                node.shutdown().await;
            })
        })
    };
    let peers = recv(c_rx, "the room to reach C").await;
    let row = peers["data"]
        .as_array()
        .and_then(|rows| rows.iter().find(|p| p["node_id"] == a_id.as_str()))
        .cloned()
        .unwrap_or_else(|| panic!("{peers}"));
    assert_eq!(row["transport"], "p2p", "{row}");
    assert_eq!(row["relayed"], true, "{row}");
    done.cancel();
    for (name, t) in [("C", c), ("A", a), ("B", b)] {
        t.join()
            .unwrap_or_else(|_| panic!("{name}'s thread panicked"));
    }
}
