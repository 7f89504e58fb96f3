//! Mesh links over libp2p (`/ymesh/mesh/1`) between nodes on loopback: a multiaddr peer,
//! edits both ways, `GET /peers` saying `transport: p2p`; admission by the mesh secret over
//! the p2p binding; a build without the `p2p` feature refusing the settings. The relay test
//! with network namespaces is `tests/it/p2p_relay.rs`.

use std::path::Path;

#[cfg(feature = "p2p")]
use crate::common::*;
use ymesh::config::{FileConfig, Overrides};
#[cfg(feature = "p2p")]
use ymesh::mesh::PeerConfig;
#[cfg(feature = "p2p")]
use yrs::{Text, WriteTxn};

/// A test config listening for libp2p on a free loopback port.
#[cfg(feature = "p2p")]
fn p2p_listening() -> ymesh::config::Config {
    let mut cfg = test_config();
    cfg.p2p.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    cfg
}

/// The node's first libp2p address (ending in `/p2p/<node id>`), once it listens.
#[cfg(feature = "p2p")]
async fn p2p_address(node: &ymesh::Node) -> String {
    let mesh = node.mesh().clone();
    wait_until("p2p listening", || !mesh.p2p_addresses().is_empty()).await;
    let addr = mesh.p2p_addresses()[0].clone();
    assert!(
        addr.starts_with("/ip4/127.0.0.1/tcp/")
            && addr.ends_with(&format!("/p2p/{}", node.node_id())),
        "{addr}"
    );
    addr
}

#[cfg(feature = "p2p")]
fn row_of<'a>(peers: &'a serde_json::Value, node: &str) -> Option<&'a serde_json::Value> {
    peers["data"]
        .as_array()?
        .iter()
        .find(|p| p["node_id"] == node && p["state"] == "connected")
}

#[cfg(feature = "p2p")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_replicate_over_libp2p_with_a_multiaddr_peer() {
    let b = start(p2p_listening()).await;
    let addr = p2p_address(&b).await;
    let a = start(dialing(vec![PeerConfig {
        url: addr.clone(),
        ..PeerConfig::default()
    }]))
    .await;
    wait_linked(&a, &b).await;
    wait_linked(&b, &a).await;
    let mut on_a = SyncClient::connect(a.local_addr(), "notes").await;
    let mut on_b = SyncClient::connect(b.local_addr(), "notes").await;
    on_a.edit(|t| t.get_or_insert_text("t").insert(t, 0, "from A"))
        .await;
    on_b.pump_until("A's edit on B", |d| text_of(d, "t") == "from A")
        .await;
    on_b.edit(|t| t.get_or_insert_text("t").insert(t, 0, "B+"))
        .await;
    on_a.pump_until("B's edit on A", |d| text_of(d, "t") == "B+from A")
        .await;
    // Both rows say which road the link travels.
    let (_, peers) = get_json(a.local_addr(), "/peers").await;
    let row = row_of(&peers, b.node_id()).unwrap_or_else(|| panic!("{peers}"));
    assert_eq!(row["transport"], "p2p", "{row}");
    assert_eq!(row["relayed"], false, "{row}");
    assert_eq!(row["source"], "config", "{row}");
    assert_eq!(row["address"], addr.as_str(), "{row}");
    let (_, peers) = get_json(b.local_addr(), "/peers").await;
    let row = row_of(&peers, a.node_id()).unwrap_or_else(|| panic!("{peers}"));
    assert_eq!(row["transport"], "p2p", "{row}");
    assert_eq!(row["relayed"], false, "{row}");
    assert_eq!(row["source"], "inbound", "{row}");
    assert!(
        row["address"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/p2p/{}", a.node_id())),
        "{row}"
    );
    // A WebSocket link says so too.
    let c = start(dialing(vec![peer(&b)])).await;
    wait_linked(&c, &b).await;
    let (_, peers) = get_json(c.local_addr(), "/peers").await;
    let row = row_of(&peers, b.node_id()).unwrap_or_else(|| panic!("{peers}"));
    assert_eq!(
        (&row["transport"], &row["relayed"]),
        (&"ws".into(), &false.into())
    );
    for n in [c, a, b] {
        n.shutdown().await;
    }
}

/// `ymesh_mesh_handshakes_refused_total{reason="relay_reservation"}` on `node`.
#[cfg(feature = "p2p")]
async fn relay_refusals(node: &ymesh::Node) -> f64 {
    let resp = client(node.local_addr())
        .send(ymesh::net::Request::get("/metrics"))
        .await
        .expect("an answer");
    let series = "ymesh_mesh_handshakes_refused_total{reason=\"relay_reservation\"} ";
    String::from_utf8_lossy(&resp.body)
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A relay server takes reservations only from nodes it admits. The attack: a node this
/// one does not admit reserves a slot on it, to be reached through it and make it carry its
/// traffic. It is refused, and counted; once approved, its next attempt is accepted and it
/// is reachable at a circuit address through the relay.
#[cfg(feature = "p2p")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_takes_reservations_only_from_nodes_it_admits() {
    let mut cfg = closed_mesh(p2p_listening());
    cfg.p2p.relay_server = true;
    let b = start(cfg).await;
    let relay = p2p_address(&b).await;
    let mut cfg = closed_mesh(p2p_listening());
    cfg.p2p.relays = vec![relay.clone()];
    let a = start(cfg).await;
    let a_id = a.node_id().to_string();
    let circuit = format!("{relay}/p2p-circuit/p2p/{a_id}");
    let reachable = |n: &ymesh::Node| n.mesh().p2p_addresses().contains(&circuit);
    let deadline = tokio::time::Instant::now() + WAIT;
    while relay_refusals(&b).await < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "B refused A's reservation"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(!reachable(&a), "{:?}", a.mesh().p2p_addresses());
    // A person approves A on B: A's next attempt (it retries every few seconds) is taken.
    b.mesh().approve(&a_id).expect("approve");
    wait_until("A reachable through B", || reachable(&a)).await;
    for n in [a, b] {
        n.shutdown().await;
    }
}

#[cfg(feature = "p2p")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_runs_over_libp2p_the_same_secret_links_another_is_refused() {
    let secret = |s: &str| {
        let mut cfg = closed_mesh(p2p_listening());
        cfg.mesh_secret = Some(s.into());
        cfg
    };
    let b = start(secret("correct horse battery staple")).await;
    let addr = p2p_address(&b).await;
    let dial = |s: &str| {
        let mut cfg = secret(s);
        cfg.p2p.listen.clear();
        cfg.peers = vec![PeerConfig {
            url: addr.clone(),
            ..PeerConfig::default()
        }];
        cfg
    };
    // The same secret, proven over the stream's binding: linked.
    let a = start(dial("correct horse battery staple")).await;
    wait_linked(&a, &b).await;
    // Another secret: libp2p's Noise lets the node in, the mesh admission does not (it
    // waits for approval, and no room crosses).
    let c = start(dial("another secret entirely, not B's")).await;
    let c_id = c.node_id().to_string();
    poll_json(b.local_addr(), "/peers", "C held as pending on B", |v| {
        v["data"].as_array().is_some_and(|rows| {
            rows.iter()
                .any(|p| p["node_id"] == c_id.as_str() && p["state"] == "pending")
        })
    })
    .await;
    assert!(!b.mesh().connected_peers().contains(&c_id));
    for n in [c, a, b] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn p2p_settings_are_checked_and_refused_without_the_feature() {
    let parse = |text: &str, over: &Overrides| {
        let file = FileConfig::parse(Path::new("mesh.toml"), text).expect("parses");
        ymesh::config::Config::resolve(&file, over)
    };
    let none = Overrides::default();
    let flag = Overrides {
        p2p_relay_server: true,
        ..Overrides::default()
    };
    let listen = parse("p2p_listen = [\"/ip4/0.0.0.0/tcp/4001\"]\n", &none);
    let relay_server = parse("", &flag);
    let peer_id = ymesh::mesh::NodeIdentity::ephemeral().node_id().to_string();
    let multiaddr_peer = parse(
        &format!("[[peers]]\nurl = \"/ip4/10.0.0.1/tcp/4001/p2p/{peer_id}\"\n"),
        &none,
    );
    if cfg!(feature = "p2p") {
        assert_eq!(listen.unwrap().p2p.listen, vec!["/ip4/0.0.0.0/tcp/4001"]);
        assert!(relay_server.unwrap().p2p.relay_server);
        assert!(multiaddr_peer.is_ok());
        // A peer multiaddr without its node id is refused with the form it needs.
        let e = parse("[[peers]]\nurl = \"/ip4/10.0.0.1/tcp/4001\"\n", &none)
            .unwrap_err()
            .to_string();
        assert!(e.contains("must end in /p2p/<node id>"), "{e}");
    } else {
        for (what, r) in [
            ("p2p_listen", listen),
            ("--p2p-relay-server", relay_server),
            ("a multiaddr peer", multiaddr_peer),
        ] {
            let e = r.expect_err(what).to_string();
            assert!(
                e.contains("built without the `p2p` cargo feature"),
                "{what}: {e}"
            );
        }
    }
}

/// Replication latency, libp2p vs WebSocket, on loopback (docs/benchmarks.md): an edit made
/// by a client of A, until a client of B has it, `YMESH_LATENCY_ROUNDS` times (300) per road.
/// Run: `cargo nextest run --release --locked -E 'test(latency_over_p2p_and_ws)'
/// --run-ignored only --no-capture`.
#[cfg(feature = "p2p")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run it by name"]
async fn latency_over_p2p_and_ws() {
    let rounds: usize = std::env::var("YMESH_LATENCY_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let b = start(p2p_listening()).await;
    let addr = p2p_address(&b).await;
    for (road, url) in [
        ("ws", format!("ws://{}", b.local_addr())),
        ("p2p", addr.clone()),
    ] {
        let a = start(dialing(vec![PeerConfig {
            url,
            ..PeerConfig::default()
        }]))
        .await;
        wait_linked(&a, &b).await;
        let room = format!("latency-{road}");
        let mut on_a = SyncClient::connect(a.local_addr(), &room).await;
        let mut on_b = SyncClient::connect(b.local_addr(), &room).await;
        let mut took = Vec::with_capacity(rounds);
        for i in 0..rounds {
            let t0 = std::time::Instant::now();
            on_a.edit(|t| t.get_or_insert_text("t").insert(t, 0, "x"))
                .await;
            on_b.pump_until("the edit on B", |d| text_of(d, "t").len() == i + 1)
                .await;
            took.push(t0.elapsed());
        }
        took.sort();
        let at = |q: f64| took[((took.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
        println!(
            "replication latency over {road}: p50 {:.0} µs, p90 {:.0} µs, p99 {:.0} µs ({rounds} edits)",
            at(0.5),
            at(0.9),
            at(0.99)
        );
        a.shutdown().await;
    }
    b.shutdown().await;
}
