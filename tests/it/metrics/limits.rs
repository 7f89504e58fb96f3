//! Refusals and limit hits counted in `GET /metrics`: each test provokes one and sees its
//! counter move. HTTP: the header and body deadlines, half-open connections per address,
//! the response byte budget. Mesh: the pre-authentication budget (give-way), the handshake
//! deadline, a handshake refused (a denied node). Commands: a responder that misses the
//! deadline. (A full peer link queue and the cap of 1,024 inbound links are counted in unit
//! tests of the mesh runtime: the first needs a peer that stops reading while megabytes
//! queue up, the second 1,024 established links.)

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{scrape, scrape_until_within, value};
use crate::common::{
    dialing, http, http_body, peer, start, test_config, wait_linked, RawClient, SyncClient, WAIT,
};

fn limit(name: &str) -> String {
    format!(r#"ymesh_limit_hits_total{{limit="{name}"}}"#)
}

/// Reads until the server closes `s` (or `WAIT` passes): true when it did.
async fn closed_by_server(mut s: tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn the_header_and_body_deadlines_are_counted() {
    let mut cfg = test_config();
    cfg.limits.header_timeout = Duration::from_secs(1);
    cfg.limits.body_timeout = Duration::from_secs(1);
    let node = start(cfg).await;
    let addr = node.local_addr();
    let before = scrape(addr).await;
    assert_eq!(value(&before, &limit("http_header_timeout")), Some(0.0));
    assert_eq!(value(&before, &limit("http_body_timeout")), Some(0.0));

    // Half-sent headers: dropped at the header deadline.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    {
        use tokio::io::AsyncWriteExt;
        s.write_all(format!("GET / HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ").as_bytes())
            .await
            .unwrap();
    }
    assert!(closed_by_server(s).await, "dropped by the header deadline");
    scrape_until_within(addr, &limit("http_header_timeout"), |v| v == 1.0, WAIT).await;

    // A body that does not arrive: 408.
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /rooms/slow HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 1000\r\n\r\n0123456789"
    )
    .unwrap();
    let answer = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut b = [0u8; 64];
        let n = s.read(&mut b).unwrap();
        String::from_utf8_lossy(&b[..n]).to_string()
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let text = scrape_until_within(addr, &limit("http_body_timeout"), |v| v == 1.0, WAIT).await;
    assert_eq!(
        value(&text, r#"ymesh_refused_total{reason="limit"}"#),
        Some(0.0),
        "a deadline is a limit hit, not a refusal"
    );
    node.shutdown().await;
}

/// A TCP connection to `addr` from `from` (another loopback address than the scraper's).
async fn connect_from(from: &str, addr: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

#[tokio::test]
async fn a_connection_dropped_for_too_many_half_open_ones_is_counted() {
    let mut cfg = test_config();
    cfg.limits.max_half_open_per_address = 2;
    cfg.limits.per_address_loopback = true;
    cfg.limits.header_timeout = Duration::from_secs(60);
    let node = start(cfg).await;
    let addr = node.local_addr();
    // Two silent connections from 127.0.0.2 fill its places; the scrapes come from
    // 127.0.0.1, which has its own.
    let _held = [
        connect_from("127.0.0.2", addr).await,
        connect_from("127.0.0.2", addr).await,
    ];
    let deadline = Instant::now() + WAIT;
    loop {
        let s = connect_from("127.0.0.2", addr).await;
        let mut b = [0u8; 16];
        let dropped = {
            use tokio::io::AsyncReadExt;
            let mut s = s;
            tokio::time::timeout(Duration::from_millis(500), s.read(&mut b))
                .await
                .is_ok()
        };
        if dropped {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the third half-open connection is dropped"
        );
    }
    let text = scrape_until_within(
        addr,
        &limit("max_half_open_per_address"),
        |v| v >= 1.0,
        WAIT,
    )
    .await;
    assert!(
        value(&text, r#"ymesh_refused_total{reason="limit"}"#).is_some_and(|v| v >= 1.0),
        "{text}"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_refused_by_the_response_byte_budget_is_counted() {
    const MIB: usize = 1024 * 1024;
    let mut cfg = test_config();
    cfg.limits.response_bytes = MIB;
    cfg.limits.write_timeout = Duration::from_secs(60);
    let node = start(cfg).await;
    let addr = node.local_addr();
    let update = {
        use yrs::{Text, Transact, WriteTxn};
        let doc = yrs::Doc::new();
        let mut t = doc.transact_mut();
        t.get_or_insert_text("t")
            .insert(&mut t, 0, &"x".repeat(24 * MIB));
        t.encode_update_v1()
    };
    let (status, _) = http_body(addr, "POST", "/rooms/big", &update).await;
    assert_eq!(status, 200);
    drop(update);
    // One reader that does not read, with a small receive buffer: its 24 MiB answer cannot
    // leave the node, so it holds the budget (one response of any size fits).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stuck = socket.connect(addr).await.unwrap();
    {
        use tokio::io::AsyncWriteExt;
        stuck
            .write_all(format!("GET /rooms/big HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .unwrap();
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, _) = http(addr, "GET", "/rooms/big").await;
        if status == 503 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a second document refused while the first is held"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = scrape_until_within(addr, &limit("http_response_bytes"), |v| v >= 1.0, WAIT).await;
    assert!(
        value(&text, r#"ymesh_refused_total{reason="limit"}"#).is_some_and(|v| v >= 1.0),
        "{text}"
    );
    drop(stuck);
    node.shutdown().await;
}

async fn silent_mesh_socket(addr: SocketAddr) -> RawClient {
    let mut c = RawClient::connect(addr, "/_mesh").await;
    c.expect_silence(Duration::from_millis(50)).await;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_sockets_that_give_way_or_miss_the_handshake_deadline_are_counted() {
    let mut cfg = test_config();
    cfg.limits.mesh_preauth_total = 1;
    cfg.limits.mesh_preauth_per_address = 1;
    cfg.limits.mesh_handshake_timeout = Duration::from_secs(1);
    let node = start(cfg).await;
    let addr = node.local_addr();
    let mut first = silent_mesh_socket(addr).await;
    let mut second = RawClient::connect(addr, "/_mesh").await;
    let closed = first.expect_close().await;
    assert_eq!(closed.code, 4408);
    assert!(closed.reason.contains("gave way"), "{closed:?}");
    scrape_until_within(addr, &limit("mesh_preauth"), |v| v == 1.0, WAIT).await;
    // The second stays silent past the handshake deadline.
    let closed = second.expect_close().await;
    assert_eq!(closed.code, 4408);
    assert!(closed.reason.contains("within 1 s"), "{closed:?}");
    scrape_until_within(addr, &limit("mesh_handshake_timeout"), |v| v == 1.0, WAIT).await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_refused_to_a_denied_node_is_counted_by_reason() {
    let b = start(test_config()).await;
    let a = start(dialing(vec![peer(&b)])).await;
    wait_linked(&a, &b).await;
    let id_a = a.node_id().to_string();
    let series = r#"ymesh_mesh_handshakes_refused_total{reason="not_admitted"}"#;
    assert_eq!(value(&scrape(b.local_addr()).await, series), Some(0.0));
    // B's operator denies A: the link closes, and A's next dial is refused in the handshake.
    let (status, body) = http(b.local_addr(), "POST", &format!("/peers/{id_a}/deny")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    scrape_until_within(
        b.local_addr(),
        series,
        |v| v >= 1.0,
        Duration::from_secs(60),
    )
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_responder_that_misses_a_command_deadline_is_counted_as_a_timeout() {
    let node = start(test_config()).await;
    let addr = node.local_addr();
    // A client that opts in to commands and never answers them.
    let _c = SyncClient::connect_with(addr, "/rooms/late-room?commands=1", yrs::Doc::new()).await;
    let body = serde_json::json!({ "kind": "compact", "deadline_s": 1 });
    let (status, answer) = http_body(
        addr,
        "POST",
        "/rooms/late-room/commands",
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    // Counted when the deadline (and its 2 s grace) passes, with nobody reading the command.
    scrape_until_within(
        addr,
        r#"ymesh_command_results_total{status="timeout"}"#,
        |v| v == 1.0,
        WAIT,
    )
    .await;
    node.shutdown().await;
}
