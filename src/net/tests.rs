use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use super::url::BaseUrl;
use super::*;

#[test]
fn base_urls() {
    let b = BaseUrl::parse("http://127.0.0.1:3913").unwrap();
    assert_eq!((b.host.as_str(), b.port), ("127.0.0.1", 3913));
    assert_eq!(b.base_path, "");
    let b = BaseUrl::parse("http://[::1]:4000/ymesh/").unwrap();
    assert_eq!((b.host.as_str(), b.port), ("::1", 4000));
    assert_eq!(
        (b.authority.as_str(), b.base_path.as_str(), b.url.as_str()),
        ("[::1]:4000", "/ymesh", "http://[::1]:4000/ymesh")
    );
    let b = BaseUrl::parse("http://example.com").unwrap();
    assert_eq!(b.port, 80);
    let b = BaseUrl::parse("https://node.example").unwrap();
    assert_eq!((b.port, b.tls), (443, true));
    assert!(!BaseUrl::parse("http://x:1").unwrap().tls);
    for bad in [
        "ws://x:1",
        "127.0.0.1:3913",
        "http://:1",
        "http://x:port",
        "http://x:1/?a",
        "http://u@x:1",
        "http://[::1",
        "http://[::1]x",
    ] {
        assert!(BaseUrl::parse(bad).is_err(), "{bad}");
        let err = Client::new(bad, None).unwrap_err();
        assert!(
            matches!(err, NetError::InvalidRequest { .. }),
            "{bad}: {err}"
        );
    }
    assert!(BaseUrl::parse("ws://x:1")
        .unwrap_err()
        .contains("http[s]://"));
}

/// What a canned server saw of one request.
#[derive(Debug, Clone, Default)]
struct Seen {
    head: String,
    body: Vec<u8>,
}

/// Reads one request (head, then a `Content-Length` body) from `conn`.
async fn read_request<S: AsyncRead + Unpin>(conn: &mut S) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut b = [0u8; 4096];
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let n = conn.read(&mut b).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&b[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let len = head
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = buf[end + 4..].to_vec();
    while body.len() < len {
        let n = conn.read(&mut b).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&b[..n]);
    }
    Some(Seen { head, body })
}

/// Answers every request on `conn` with `answer`, then closes (or, with `hold`, keeps the
/// connection open without a word).
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    mut conn: S,
    answer: &[u8],
    hold: bool,
    seen: &Mutex<Vec<Seen>>,
) {
    let Some(req) = read_request(&mut conn).await else {
        return;
    };
    seen.lock().unwrap().push(req);
    let _ = conn.write_all(answer).await;
    let _ = conn.flush().await;
    if hold {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
}

/// A TCP server answering every request with `raw`, closing after each. Returns its
/// address and the requests it saw.
async fn canned(raw: impl AsRef<[u8]>) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    canned_with(raw, false).await
}

async fn canned_with(raw: impl AsRef<[u8]>, hold: bool) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let raw: Arc<[u8]> = Arc::from(raw.as_ref());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let (log, raw) = (log.clone(), raw.clone());
            tokio::spawn(async move { answer(conn, &raw, hold, &log).await });
        }
    });
    (addr, seen)
}

fn client(addr: SocketAddr) -> Client {
    Client::new(&format!("http://{addr}"), None).unwrap()
}

#[tokio::test]
async fn content_length_chunked_and_close_delimited_bodies() {
    let (addr, _) =
        canned(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"a\": true}")
            .await;
    let r = client(addr).send(Request::get("/")).await.unwrap();
    assert_eq!((r.status, &r.body[..]), (200, &b"{\"a\": true}"[..]));
    assert_eq!(r.content_type(), Some("application/json"));

    let (addr, _) = canned(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
          4\r\nWiki\r\n6;ext=1\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\nX-Trailer: y\r\n\r\n",
    )
    .await;
    let body = client(addr).get_bytes("/").await.unwrap();
    assert_eq!(&body[..], b"Wikipedia in \r\n\r\nchunks.");

    let (addr, _) = canned(b"HTTP/1.0 200 OK\r\n\r\nhello").await;
    assert_eq!(&client(addr).get_bytes("/").await.unwrap()[..], b"hello");

    let (addr, _) = canned(b"HTTP/1.1 204 No Content\r\n\r\n").await;
    let r = client(addr).delete("/x").await.unwrap();
    assert_eq!((r.status, r.body.len()), (204, 0));
}

#[tokio::test]
async fn answers_cut_short_are_exchange_errors() {
    let (addr, _) = canned(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc").await;
    let err = client(addr).get_bytes("/").await.unwrap_err();
    assert!(matches!(err, NetError::Exchange { .. }), "{err}");
    let (addr, _) = canned(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab").await;
    let err = client(addr).get_bytes("/").await.unwrap_err();
    assert!(matches!(err, NetError::Exchange { .. }), "{err}");
    for junk in [
        &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"",
    ] {
        let (addr, _) = canned(junk).await;
        let err = client(addr).get_bytes("/").await.unwrap_err();
        assert!(
            matches!(err, NetError::Exchange { .. }),
            "{:?}: {err}",
            String::from_utf8_lossy(junk)
        );
        assert!(!err.is_unreachable() && !err.answered(), "{err}");
    }
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused() {
    let (addr, _) = canned(b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n").await;
    let err = client(addr)
        .with_max_body(1024)
        .get_bytes("/")
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::Body { .. }), "{err}");
    assert!(err.to_string().contains("limit of 1024 bytes"), "{err}");

    let mut raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n".to_vec();
    raw.extend(vec![b'x'; 0x800]);
    raw.extend_from_slice(b"\r\n0\r\n\r\n");
    let (addr, _) = canned(raw).await;
    let err = client(addr)
        .with_max_body(1024)
        .get_bytes("/")
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::Body { .. }), "{err}");
    assert!(err.answered() && !err.is_unreachable());
}

#[tokio::test]
async fn error_statuses_carry_the_envelope_message() {
    let body = serde_json::json!({"error": {"message": "room \"x\" does not exist"}}).to_string();
    let (addr, _) = canned(format!(
        "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ))
    .await;
    let c = client(addr);
    let err = c
        .get_json::<serde_json::Value>("/rooms/x")
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404));
    assert!(err.answered() && !err.is_unreachable());
    assert_eq!(
        err.to_string(),
        format!("http://{addr}/rooms/x answered 404: room \"x\" does not exist")
    );
    // `send` hands over any status.
    let r = c.send(Request::get("/rooms/x")).await.unwrap();
    assert_eq!(r.status, 404);
    assert!(!r.is_success());

    let (addr, _) = canned(b"HTTP/1.1 500 Oops\r\nContent-Length: 12\r\n\r\n  it broke  ").await;
    let err = client(addr).get_bytes("/").await.unwrap_err();
    assert!(err.to_string().ends_with("answered 500: it broke"), "{err}");
}

#[tokio::test]
async fn bodies_that_are_not_the_expected_json_are_body_errors() {
    let (addr, _) = canned(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nokay!").await;
    let err = client(addr)
        .get_json::<serde_json::Value>("/")
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::Body { .. }), "{err}");
    assert!(err.to_string().contains("not JSON"), "{err}");
    let (addr, _) = canned(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{\"a\": 1}\n").await;
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Want {
        b: String,
    }
    let err = client(addr).get_json::<Want>("/").await.unwrap_err();
    assert!(
        err.to_string().contains("not the expected document"),
        "{err}"
    );
    // A missing `data` reads as the default.
    let v: Envelope<serde_json::Value> = client(addr).get_json("/").await.unwrap();
    assert!(v.data.is_null());
}

#[tokio::test]
async fn requests_carry_host_agent_bearer_body_and_base_path() {
    let (addr, seen) =
        canned(b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n{\"data\": 7}\r\n").await;
    let c = Client::new(&format!("http://{addr}/prefix/"), Some("s3cret".into())).unwrap();
    assert_eq!(c.base_url(), format!("http://{addr}/prefix"));
    let v: Envelope<u32> = c
        .post_json(
            "/rooms/a%2Fb/commands?x=1",
            &serde_json::json!({"kind": "compact"}),
        )
        .await
        .unwrap();
    assert_eq!(v.data, 7);
    c.send(Request::get("/plain").header("X-Extra", "yes"))
        .await
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    let head = seen[0].head.to_ascii_lowercase();
    assert!(
        seen[0]
            .head
            .starts_with("POST /prefix/rooms/a%2Fb/commands?x=1 HTTP/1.1\r\n"),
        "{}",
        seen[0].head
    );
    assert!(head.contains(&format!("\r\nhost: {addr}")), "{head}");
    assert!(head.contains("\r\nuser-agent: ymesh/"), "{head}");
    assert!(head.contains("\r\nauthorization: bearer s3cret"), "{head}");
    assert!(
        head.contains("\r\ncontent-type: application/json"),
        "{head}"
    );
    assert_eq!(seen[0].body, br#"{"kind":"compact"}"#);
    assert!(seen[1].head.starts_with("GET /prefix/plain HTTP/1.1\r\n"));
    assert!(seen[1]
        .head
        .to_ascii_lowercase()
        .contains("\r\nx-extra: yes"));

    let err = c.send(Request::get("no-slash")).await.unwrap_err();
    assert!(matches!(err, NetError::InvalidRequest { .. }), "{err}");
    let err = c
        .send(Request::get("/").header("bad name", "v"))
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::InvalidRequest { .. }), "{err}");
}

#[tokio::test]
async fn a_closed_port_is_unreachable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = client(addr).get_bytes("/").await.unwrap_err();
    assert!(matches!(err, NetError::Connect { .. }), "{err}");
    assert!(err.is_unreachable() && !err.answered());
    assert!(err.to_string().contains("cannot connect"), "{err}");
}

#[tokio::test]
async fn a_silent_server_times_out() {
    // Accepts, reads the request, never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut conn, _)) = listener.accept().await {
            let _ = read_request(&mut conn).await;
            held.push(conn);
        }
    });
    let err = client(addr)
        .with_idle_timeout(Duration::from_millis(100))
        .get_bytes("/")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            NetError::Timeout {
                waiting: "waiting for the answer",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_unreachable());
    let err = client(addr)
        .send(Request::get("/").timeout(Duration::from_millis(100)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            NetError::Timeout {
                waiting: "completing the request",
                ..
            }
        ),
        "{err}"
    );

    // A head, then silence in the middle of the body.
    let (addr, _) = canned_with(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", true).await;
    let err = client(addr)
        .with_idle_timeout(Duration::from_millis(100))
        .get_bytes("/")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            NetError::Timeout {
                waiting: "reading the answer",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn connections_are_reused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                while read_request(&mut conn).await.is_some() {
                    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                    if conn.write_all(ok).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let c = client(addr);
    for _ in 0..3 {
        assert_eq!(&c.get_bytes("/").await.unwrap()[..], b"ok");
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[cfg(unix)]
#[tokio::test]
async fn unix_socket_requests_send_the_given_host() {
    let dir = std::env::temp_dir().join(format!("ymesh-net-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("api.sock");
    let _ = std::fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let raw =
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
                answer(conn, raw, false, &log).await
            });
        }
    });
    let c = Client::unix(&socket, "local-tailscaled.sock").unwrap();
    assert_eq!(
        &c.get_bytes("/localapi/v0/status").await.unwrap()[..],
        b"ok"
    );
    let head = seen.lock().unwrap()[0].head.clone();
    assert!(
        head.starts_with("GET /localapi/v0/status HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(
        format!("{head}\r\n").contains("\r\nHost: local-tailscaled.sock\r\n"),
        "{head}"
    );

    // No socket file: cannot connect, and the error names the socket.
    let missing = Client::unix(dir.join("absent.sock"), "local-tailscaled.sock").unwrap();
    let err = missing.get_bytes("/").await.unwrap_err();
    assert!(matches!(err, NetError::Connect { .. }), "{err}");
    assert!(err.to_string().contains("absent.sock"), "{err}");
    assert!(Client::unix(&socket, "not a host").is_err());
    let _ = std::fs::remove_dir_all(&dir);
}
