//! The node's limits and deadlines, each reached by a test with the close code or status it
//! answers with, and the attacks they stop: a client that never reads in a room receiving
//! large updates, requests for a large document that are never read, half-sent headers and
//! silent sockets. The attacks run against a `ymesh serve` child process so its peak memory
//! (VmHWM in /proc/PID/status) is the node's alone.

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use ymesh::protocol::{Message, SyncMessage};
use yrs::{Map, Text, WriteTxn};

const MIB: usize = 1024 * 1024;

/// A `ymesh serve --memory` child with `limits` as its mesh.toml `[limits]` table, and the
/// log lines it printed up to its ready line.
struct Child {
    child: std::process::Child,
    addr: SocketAddr,
    log: Vec<String>,
}

impl Child {
    fn spawn(tag: &str, limits: &str) -> Child {
        let dir = fresh_dir(tag);
        let config = dir.join("mesh.toml");
        std::fs::write(&config, format!("[limits]\n{limits}\n")).unwrap();
        // YMESH_TEST_BIN runs the attacks against another build (e.g. an older one).
        let bin = std::env::var_os("YMESH_TEST_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_ymesh").into());
        let mut child = std::process::Command::new(bin)
            .args(["serve", "--memory", "--no-mdns", "--port", "0", "--config"])
            .arg(&config)
            .env_remove("HOST")
            .env_remove("PORT")
            .env_remove("YMESH_DATA_DIR")
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn ymesh serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                eprintln!("node: {line}");
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut log = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                let status = child.wait();
                panic!("no ready line in time; the node exited with {status:?}");
            };
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let addr: String = rest
                    .chars()
                    .take_while(|c| !c.is_whitespace() && *c != '"')
                    .collect();
                std::thread::spawn(move || while rx.recv().is_ok() {});
                return Child {
                    child,
                    addr: addr.parse().expect("address in the ready line"),
                    log,
                };
            }
            log.push(line);
        }
    }

    /// A `kB` field of /proc/PID/status, in bytes.
    fn status_bytes(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with(field))
            .unwrap_or_else(|| panic!("{field} in /proc/PID/status"));
        let kb: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .expect("a number of kB");
        kb * 1024
    }

    /// Peak resident memory so far.
    fn peak(&self) -> u64 {
        self.status_bytes("VmHWM:")
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connections of room `room` as `GET /rooms` reports them.
async fn room_connections(addr: SocketAddr, room: &str) -> u64 {
    let (_, v) = get_json(addr, "/rooms").await;
    v["data"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["name"] == room))
        .and_then(|r| r["connections"].as_u64())
        .unwrap_or(0)
}

/// One edit of `size` bytes (a map entry overwritten, so the document itself stays small),
/// then the echo of it.
async fn big_edit(writer: &mut SyncClient, i: usize, size: usize) {
    let value = char::from(b'a' + (i % 26) as u8).to_string().repeat(size);
    writer
        .edit(|t| {
            t.get_or_insert_map("m").insert(t, "k", value);
        })
        .await;
    writer
        .raw
        .recv_until(|m| matches!(m, Message::Sync(SyncMessage::Update(_))))
        .await;
}

/// The attack: one client that never reads, in a room that receives 900 updates of 1 MiB.
/// Its queue is bounded in bytes (`limits.outbound_queue_bytes`, 32 MiB by default), so it is
/// closed with 4429 and the node's peak memory stays within a bound instead of growing by
/// the 900 MiB it used to queue. The node also says what open-file limit it got at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_costs_a_bounded_amount_and_is_closed_with_4429() {
    let node = Child::spawn("stuck-reader", "");
    assert!(
        node.log.iter().any(|l| l.contains("open-file limit")),
        "the node says what open-file limit it got: {:?}",
        node.log
    );
    let addr = node.addr;
    let mut writer = SyncClient::connect(addr, "burst").await;
    // Connected, then never reads: its socket buffers fill, then its queue.
    let mut stuck = RawClient::connect(addr, "/rooms/burst").await;
    let before = node.peak();
    let mut closed = None;
    for i in 0..900 {
        big_edit(&mut writer, i, MIB).await;
        if closed.is_none() && i % 8 == 0 && room_connections(addr, "burst").await == 1 {
            // The node dropped it: what it reads now ends with the close frame.
            closed = Some(stuck.expect_close().await);
        }
    }
    let peak = node.peak();
    eprintln!(
        "peak RSS {} MiB (before the burst {} MiB)",
        peak / MIB as u64,
        before / MIB as u64
    );
    let closed = closed.expect("the client that never reads was closed");
    assert_eq!(closed.code, 4429, "{closed:?}");
    // Bound: the node before the burst, plus one full queue (32 MiB and one frame), one write
    // batch, the socket buffers and the update being applied, with room for the allocator.
    // The old frame-bounded queue held all 900 MiB.
    assert!(
        peak < before + 160 * MIB as u64,
        "peak RSS {peak} bytes, {before} before the burst"
    );
    // The room still works.
    writer
        .edit(|t| {
            t.get_or_insert_text("t").insert(t, 0, "after");
        })
        .await;
    let mut late = SyncClient::connect(addr, "burst").await;
    late.pump_until("content", |d| text_of(d, "t") == "after")
        .await;
}

/// Sends `GET path` on a fresh socket and never reads the answer.
fn unread_get(addr: SocketAddr, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    s
}

/// Whether the server closed `s`: reads (draining whatever was sent) until end of stream or
/// an error, within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

/// The attack: 20 requests for a 50 MiB document that never read their answers. Document
/// bytes in flight are bounded (`limits.http_response_bytes`; past it, 503), and a response
/// nobody reads is dropped by the write deadline, which gives its bytes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_large_documents_are_bounded_and_dropped_by_the_write_deadline() {
    let node = Child::spawn(
        "unread-docs",
        "write_timeout_s = 1\nhttp_header_timeout_s = 2\nhttp_response_bytes = 134217728",
    );
    let addr = node.addr;
    let doc = yrs::Doc::new();
    let update = {
        use yrs::Transact;
        let mut t = doc.transact_mut();
        t.get_or_insert_text("t")
            .insert(&mut t, 0, &"x".repeat(50 * MIB));
        t.encode_update_v1()
    };
    let (status, _) =
        http_body_within(addr, "POST", "/rooms/big", &update, Duration::from_secs(90)).await;
    assert_eq!(status, 200);
    drop(update);
    let before = node.peak();
    let mut stuck: Vec<TcpStream> = (0..20).map(|_| unread_get(addr, "/rooms/big")).collect();
    // Each is answered (200 with the document, or 503): its status line arrives. Peeked,
    // so nothing is read off the socket.
    let mut statuses = Vec::new();
    for s in &stuck {
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut line = [0u8; 12];
        let deadline = Instant::now() + WAIT;
        while s.peek(&mut line).unwrap() < 12 {
            assert!(Instant::now() < deadline, "an answer in time");
            std::thread::sleep(Duration::from_millis(10));
        }
        statuses.push(String::from_utf8_lossy(&line[9..12]).to_string());
    }
    eprintln!("statuses: {statuses:?}");
    assert!(
        statuses.iter().any(|s| s == "503"),
        "some refused: {statuses:?}"
    );
    // Wait for every request to be answered or refused, and the stuck ones to be dropped:
    // a reader then gets the document again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = http(addr, "GET", "/rooms/big").await;
        if status == 200 {
            assert!(body.len() > 50 * MIB);
            break;
        }
        assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
        assert!(
            tokio::time::Instant::now() < deadline,
            "document budget given back in time"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let peak = node.peak();
    eprintln!(
        "peak RSS {} MiB (before the requests {} MiB)",
        peak / MIB as u64,
        before / MIB as u64
    );
    // Bound: 128 MiB of responses plus one, and the encodes in progress. Unbounded, the 20
    // responses held 1 GB.
    assert!(
        peak < before + 256 * MIB as u64,
        "peak RSS {peak} bytes, {before} before the requests"
    );
    // Every unread connection is closed: by the write deadline (answered) or the header
    // deadline after its 503.
    let checks: Vec<_> = stuck
        .drain(..)
        .map(|mut s| std::thread::spawn(move || closed_within(&mut s, Duration::from_secs(20))))
        .collect();
    for c in checks {
        assert!(
            c.join().unwrap(),
            "an unread document connection was closed"
        );
    }
}

/// The attack: connections with half-sent headers and silent sockets. They are dropped by
/// the header deadline (`limits.http_header_timeout_s`), counted from the moment a connection
/// opens; the node answers others throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_headers_and_silent_sockets_are_dropped_by_the_header_deadline() {
    ymesh::server::raise_fd_limit();
    let mut cfg = test_config();
    cfg.limits.header_timeout = Duration::from_secs(2);
    let node = start(cfg).await;
    let addr = node.local_addr();
    let opened = Instant::now();
    let mut sockets = Vec::new();
    for i in 0..2000 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        if i < 1500 {
            use tokio::io::AsyncWriteExt;
            s.write_all(format!("GET / HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ").as_bytes())
                .await
                .unwrap();
        }
        sockets.push(s);
    }
    // Others are served meanwhile.
    let (status, _) = get_json(addr, "/healthz").await;
    assert_eq!(status, 200);
    let mut closed = 0;
    let mut first_closed = None;
    for mut s in sockets {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 1024];
        let left = (opened + Duration::from_secs(20)).saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            // Closed (hyper may answer 408 first, then closes).
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            Ok(Ok(_)) => {
                let rest = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
                if matches!(rest, Ok(Ok(0)) | Ok(Err(_))) {
                    closed += 1;
                }
            }
            Err(_) => {}
        }
        first_closed.get_or_insert_with(|| opened.elapsed());
    }
    assert_eq!(closed, 2000, "every stalled connection closed");
    let first = first_closed.unwrap();
    assert!(
        first >= Duration::from_millis(1900),
        "the first closed after {first:?}, not before the deadline"
    );
    node.shutdown().await;
}

/// `limits.max_half_open_per_address`: past it, an address's new connections are dropped at
/// accept until its half-open ones send their headers or time out.
#[tokio::test]
async fn an_address_with_its_fill_of_half_open_connections_gets_new_ones_dropped() {
    let mut cfg = test_config();
    cfg.limits.max_half_open_per_address = 8;
    cfg.limits.per_address_loopback = true;
    cfg.limits.header_timeout = Duration::from_secs(60);
    let node = start(cfg).await;
    let addr = node.local_addr();
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    // Accepted in order: wait until the node has counted all eight (the ninth is dropped).
    let deadline = Instant::now() + WAIT;
    loop {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        use tokio::io::AsyncReadExt;
        let mut b = [0u8; 16];
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(500), s.read(&mut b)).await {
            assert!(matches!(r, Ok(0) | Err(_)), "dropped without an answer");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the ninth half-open connection is dropped"
        );
    }
    // A connection that sends its headers gives its place back.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = held.pop().unwrap();
        s.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut b = [0u8; 64];
        let n = tokio::time::timeout(WAIT, s.read(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert!(b[..n].starts_with(b"HTTP/1.1 200"));
    }
    let (status, _) = get_json(addr, "/healthz").await;
    assert_eq!(status, 200);
    node.shutdown().await;
}

/// `limits.http_body_timeout_s`: a body not received in time is answered 408.
#[tokio::test]
async fn a_request_body_that_does_not_arrive_in_time_gets_408() {
    let mut cfg = test_config();
    cfg.limits.body_timeout = Duration::from_secs(1);
    let node = start(cfg).await;
    let addr = node.local_addr();
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /rooms/slow HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 1000\r\n\r\n0123456789"
    )
    .unwrap();
    let started = Instant::now();
    let answer = tokio::task::spawn_blocking(move || {
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut b = [0u8; 64];
        let n = s.read(&mut b).unwrap();
        String::from_utf8_lossy(&b[..n]).to_string()
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    node.shutdown().await;
}

/// `limits.max_message_bytes` on HTTP: a larger body is answered 413.
#[tokio::test]
async fn a_body_over_the_message_limit_gets_413() {
    let mut cfg = test_config();
    cfg.limits.max_message_bytes = 64 * 1024;
    let node = start(cfg).await;
    let (status, _) = http_body(
        node.local_addr(),
        "POST",
        "/rooms/big",
        &vec![0u8; 100 * 1024],
    )
    .await;
    assert_eq!(status, 413);
    node.shutdown().await;
}

/// Room names are at most 512 bytes: a longer one is refused with 400, on the document API
/// and on a WebSocket route alike.
#[tokio::test]
async fn a_room_name_over_512_bytes_is_refused_with_400() {
    let node = start(test_config()).await;
    let addr = node.local_addr();
    let long = "n".repeat(513);
    let (status, _) = http_body(addr, "POST", &format!("/rooms/{long}"), &[0, 0]).await;
    assert_eq!(status, 400);
    let refused = tokio_tungstenite::connect_async(format!("ws://{addr}/sync/{long}")).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 400)
        }
        other => panic!("expected 400, got {other:?}"),
    }
    let ok = "n".repeat(512);
    let _c = SyncClient::connect(addr, &ok).await;
    node.shutdown().await;
}

/// `limits.outbound_queue_bytes`: a client whose queue holds that many bytes is closed with
/// 4429, however few frames they are.
#[tokio::test]
async fn a_queue_over_its_byte_bound_closes_the_client_with_4429() {
    let mut cfg = test_config();
    cfg.limits.outbound_queue = 100_000;
    cfg.limits.outbound_queue_bytes = 2 * MIB;
    let node = start(cfg).await;
    let addr = node.local_addr();
    let mut writer = SyncClient::connect(addr, "bytes").await;
    let mut slow = RawClient::connect(addr, "/rooms/bytes").await;
    let rooms = node.rooms().clone();
    for i in 0..200 {
        big_edit(&mut writer, i, 512 * 1024).await;
        if rooms.get("bytes").map(|r| r.session_count()) == Some(1) {
            break;
        }
        assert!(i < 199, "slow client was never closed");
    }
    let closed = slow.expect_close().await;
    assert_eq!(closed.code, 4429, "{closed:?}");
    // Reconnecting, it resyncs: the room's whole state arrives.
    let want = {
        use yrs::{ReadTxn, Transact};
        let txn = writer.doc.transact();
        txn.get_map("m")
            .map(|m| m.get(&txn, "k").map(|v| v.to_string(&txn)))
    };
    assert!(matches!(want, Some(Some(_))), "the writer has the entry");
    let mut back = SyncClient::connect(addr, "bytes").await;
    back.pump_until("the room's state", |d| {
        use yrs::{ReadTxn, Transact};
        let txn = d.transact();
        txn.get_map("m")
            .map(|m| m.get(&txn, "k").map(|v| v.to_string(&txn)))
            == want
    })
    .await;
    node.shutdown().await;
}

/// `limits.write_timeout_s`: a client that does not read for that long is closed with 4429
/// even when its queue has room (and no ping is due).
#[tokio::test]
async fn a_client_that_does_not_read_within_the_write_deadline_is_closed_with_4429() {
    let mut cfg = test_config();
    cfg.limits.outbound_queue = 100_000;
    cfg.limits.outbound_queue_bytes = 1024 * MIB;
    cfg.limits.write_timeout = Duration::from_secs(1);
    let node = start(cfg).await;
    let addr = node.local_addr();
    let mut writer = SyncClient::connect(addr, "deadline").await;
    let mut slow = RawClient::connect(addr, "/rooms/deadline").await;
    let rooms = node.rooms().clone();
    // Enough to fill the socket buffers on both ends.
    for i in 0..48 {
        big_edit(&mut writer, i, MIB).await;
        if rooms.get("deadline").map(|r| r.session_count()) == Some(1) {
            break;
        }
    }
    wait_until("the stuck client is dropped", || {
        rooms.get("deadline").map(|r| r.session_count()) == Some(1)
    })
    .await;
    let closed = slow.expect_close().await;
    assert_eq!(closed.code, 4429, "{closed:?}");
    node.shutdown().await;
}

/// `limits.max_connections_per_address`: one more WebSocket from the address is closed with
/// 4429; loopback counts only with `limits.per_address_loopback`.
#[tokio::test]
async fn connections_past_the_per_address_cap_are_closed_with_4429() {
    let mut cfg = test_config();
    cfg.limits.max_connections_per_address = 2;
    cfg.limits.per_address_loopback = true;
    let node = start(cfg).await;
    let addr = node.local_addr();
    let _a = SyncClient::connect(addr, "pa").await;
    let b = SyncClient::connect(addr, "pa").await;
    let mut third = RawClient::connect(addr, "/rooms/pa").await;
    let closed = third.expect_close().await;
    assert_eq!(closed.code, 4429, "{closed:?}");
    // A place comes back when a connection ends.
    drop(b);
    let rooms = node.rooms().clone();
    wait_until("the second client left", || {
        rooms.get("pa").map(|r| r.session_count()) == Some(1)
    })
    .await;
    let deadline = Instant::now() + WAIT;
    loop {
        let mut c = RawClient::connect(addr, "/rooms/pa").await;
        let first = tokio::time::timeout(WAIT, c.ws.next())
            .await
            .expect("an answer");
        if matches!(first, Some(Ok(WsMessage::Binary(_)))) {
            break;
        }
        assert!(Instant::now() < deadline, "a place came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.shutdown().await;
}

/// `limits.message_rate`: a client sending faster is closed with 4429; off by default.
#[tokio::test]
async fn a_client_over_the_message_rate_is_closed_with_4429() {
    let mut cfg = test_config();
    cfg.limits.message_rate = 20;
    let node = start(cfg).await;
    let addr = node.local_addr();
    let mut fast = RawClient::connect(addr, "/rooms/rate").await;
    for _ in 0..200 {
        if fast
            .ws
            .send(WsMessage::Binary(ymesh::protocol::encode_query_awareness()))
            .await
            .is_err()
        {
            break;
        }
    }
    let closed = fast.expect_close().await;
    assert_eq!(closed.code, 4429, "{closed:?}");
    node.shutdown().await;

    // Off by default: the same burst passes.
    let node = start(test_config()).await;
    let mut fast = RawClient::connect(node.local_addr(), "/rooms/rate").await;
    for _ in 0..200 {
        fast.send(ymesh::protocol::encode_query_awareness()).await;
    }
    fast.send(ymesh::protocol::encode_sync_step1(&[0])).await;
    fast.recv_until(|m| matches!(m, Message::Sync(SyncMessage::Step2(_))))
        .await;
    node.shutdown().await;
}

/// The write deadline counts time without progress, not the time a frame takes: a client
/// that reads a large frame slowly but steadily is not cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_of_a_large_frame_is_not_cut_off_by_the_write_deadline() {
    let mut cfg = test_config();
    // 8 s, well above any scheduling stall of a loaded 2-core machine (the deadline is wall
    // clock: a starved runtime records no progress); the reader below takes ~14 s.
    cfg.limits.write_timeout = Duration::from_secs(8);
    // The hand-made client below never speaks.
    cfg.limits.first_message_timeout = Duration::from_secs(120);
    let node = start(cfg).await;
    let addr = node.local_addr();
    // A WebSocket opened by hand with a small receive buffer, so it reads at its own pace.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    let mut s = socket.connect(addr).await.unwrap().into_std().unwrap();
    s.set_nonblocking(false).unwrap();
    write!(
        s,
        "GET /rooms/slowread HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    let rooms = node.rooms().clone();
    wait_until("joined", || {
        rooms.get("slowread").map(|r| r.session_count()) == Some(1)
    })
    .await;
    let size = 56 * MIB;
    let update = {
        use yrs::Transact;
        let doc = yrs::Doc::new();
        let mut t = doc.transact_mut();
        t.get_or_insert_text("t")
            .insert(&mut t, 0, &"s".repeat(size));
        t.encode_update_v1()
    };
    let (status, _) = http_body_within(
        addr,
        "POST",
        "/rooms/slowread",
        &update,
        Duration::from_secs(90),
    )
    .await;
    assert_eq!(status, 200);
    // About 4 MB/s: the frame takes longer than the deadline to go out, with progress throughout.
    let started = Instant::now();
    // The socket comes back out of the reader, so it stays open until the session is
    // checked (dropped inside, the node could see the close before the check).
    let (total, s) = tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; 128 * 1024];
        let mut total = 0;
        while total < size {
            std::thread::sleep(Duration::from_millis(30));
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
            if started.elapsed() > Duration::from_secs(60) {
                break;
            }
        }
        (total, s)
    })
    .await
    .unwrap();
    assert!(
        total >= size,
        "read {total} of {size} bytes before the node closed"
    );
    assert!(
        started.elapsed() > Duration::from_secs(8),
        "slower than the deadline: {:?}",
        started.elapsed()
    );
    assert_eq!(rooms.get("slowread").map(|r| r.session_count()), Some(1));
    drop(s);
    node.shutdown().await;
}
