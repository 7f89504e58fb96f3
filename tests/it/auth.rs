//! Who may connect: client credentials (static token, signed user tokens), browser origins,
//! `Host` names (DNS rebinding), CORS, the admin rule on top, `/_mesh` under client auth,
//! and the first-message deadline. Each attack the issue names is a test here that fails on
//! a node without these checks.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use ymesh::config::Config;
use ymesh::net::{Method, Request};
use ymesh::protocol::{Message, SyncMessage};

use crate::common::{
    client, dialing, peer, start, test_config, wait_until, ws_with, Closed, RawClient, SyncClient,
    WAIT,
};

/// The first thing the server sends must be a close with `code`: no sync message before.
async fn refused_before_sync(raw: &mut RawClient, code: u16) -> Closed {
    let first = tokio::time::timeout(WAIT, raw.ws.next())
        .await
        .expect("an answer in time");
    match first {
        Some(Ok(WsMessage::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), code, "reason: {}", frame.reason);
            Closed {
                code,
                reason: frame.reason.to_string(),
            }
        }
        other => panic!("expected a {code} close before any message, got {other:?}"),
    }
}

/// The first message of an admitted client is the node's SyncStep1.
async fn admitted(raw: &mut RawClient) {
    let msg = raw.recv().await;
    assert!(
        matches!(msg, Message::Sync(SyncMessage::Step1(_))),
        "expected SyncStep1, got {msg:?}"
    );
}

async fn send(addr: SocketAddr, req: Request) -> (u16, String) {
    let resp = client(addr).send(req).await.expect("an answer");
    (
        resp.status,
        String::from_utf8_lossy(&resp.body).into_owned(),
    )
}

fn with_token(token: &str) -> Config {
    Config {
        token: Some(token.into()),
        ..test_config()
    }
}

#[tokio::test]
async fn a_page_from_a_foreign_origin_neither_syncs_nor_writes() {
    let node = start(test_config()).await;
    let addr = node.local_addr();
    let mut evil = ws_with(addr, "/rooms/notes", &[("origin", "http://evil.test")]).await;
    let closed = refused_before_sync(&mut evil, 4403).await;
    assert!(closed.reason.contains("evil.test"), "{}", closed.reason);
    for origin in [
        "http://localhost:5173",
        "http://127.0.0.1:8080",
        "tauri://localhost",
        &format!("http://{addr}"),
    ] {
        let mut ok = ws_with(addr, "/rooms/notes", &[("origin", origin)]).await;
        admitted(&mut ok).await;
    }
    // A cross-site "simple" POST (text/plain, no preflight) to a state-changing route.
    for path in ["/commands", "/rooms/victim", "/rooms/victim/commands"] {
        let req = Request::post(path)
            .body("text/plain", r#"{"kind":"compact"}"#.as_bytes().to_vec())
            .header("origin", "http://evil.test");
        let (status, body) = send(addr, req).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body.contains(r#""error""#), "{body}");
    }
    let (status, _) = send(addr, Request::get("/rooms/victim")).await;
    assert_eq!(status, 404, "nothing was written");
    node.shutdown().await;
}

#[tokio::test]
async fn a_loopback_node_answers_only_loopback_host_names() {
    let mut config = test_config();
    config.allowed_hosts = vec!["laptop.local".into()];
    let node = start(config).await;
    let addr = node.local_addr();
    let port = addr.port();
    for (host, want) in [
        ("attacker.example".to_string(), 403),
        (format!("attacker.example:{port}"), 403),
        (format!("localhost:{port}"), 200),
        (format!("127.0.0.1:{port}"), 200),
        (format!("laptop.local:{port}"), 200),
    ] {
        let (status, body) = send(addr, Request::get("/rooms").header("host", &host)).await;
        assert_eq!(status, want, "Host {host}: {body}");
    }
    node.shutdown().await;
}

#[tokio::test]
async fn the_static_token_in_the_url_or_the_header() {
    let node = start(with_token("tok-123")).await;
    let addr = node.local_addr();
    // WebSockets: missing and wrong are closed with 4401 before any sync message.
    let mut none = RawClient::connect(addr, "/rooms/r").await;
    let closed = refused_before_sync(&mut none, 4401).await;
    assert!(closed.reason.contains("token"), "{}", closed.reason);
    let mut wrong = RawClient::connect(addr, "/rooms/r?token=tok-124").await;
    refused_before_sync(&mut wrong, 4401).await;
    let mut bad_header = ws_with(addr, "/sync/r", &[("authorization", "Bearer nope")]).await;
    refused_before_sync(&mut bad_header, 4401).await;
    // Right, both ways and on all three route templates.
    let mut query = RawClient::connect(addr, "/rooms/r?token=tok-123").await;
    admitted(&mut query).await;
    let mut header = ws_with(addr, "/sync/r", &[("authorization", "Bearer tok-123")]).await;
    admitted(&mut header).await;
    let mut ws3 = RawClient::connect(addr, "/workspaces/r/sync?token=tok-123").await;
    admitted(&mut ws3).await;
    // HTTP: every route but GET /healthz.
    for path in ["/", "/rooms", "/peers", "/rooms/r"] {
        let (status, body) = send(addr, Request::get(path)).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert!(!body.contains("tok-123"), "{body}");
        let (status, _) = send(
            addr,
            Request::get(path).header("authorization", "Bearer tok-123"),
        )
        .await;
        assert_ne!(status, 401, "{path}");
    }
    let (status, _) = send(addr, Request::get("/rooms?token=tok-123")).await;
    assert_eq!(status, 200);
    let (status, _) = send(addr, Request::get("/healthz")).await;
    assert_eq!(status, 200);
    // POST /rooms/{room} (the document API) needs it too.
    let (status, _) = send(addr, Request::post("/rooms/r").bytes(vec![0, 0])).await;
    assert_eq!(status, 401);
    // The token never shows in what the node tells.
    let authed = |p: &str| Request::get(p).header("authorization", "Bearer tok-123");
    for path in ["/", "/peers"] {
        let (_, body) = send(addr, authed(path)).await;
        assert!(!body.contains("tok-123"), "{path}: {body}");
    }
    node.shutdown().await;
}

#[tokio::test]
async fn signed_user_tokens_name_the_user() {
    let joined: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let seen = joined.clone();
    let hooks = ymesh::room::Hooks::new().on_event(move |e| {
        if let ymesh::room::RoomEvent::Joined { user, .. } = e {
            seen.lock().unwrap().push(user.map(str::to_string));
        }
    });
    let config = Config {
        shared_secret: Some("team-secret".into()),
        ..test_config()
    };
    let node = ymesh::Node::start_with_hooks(config, hooks).await.unwrap();
    let addr = node.local_addr();
    let alice = ymesh::auth::sign_user("team-secret", "alice");
    let bob = ymesh::auth::sign_user("team-secret", "bob");
    let forged = ymesh::auth::sign_user("guessed-secret", "alice");
    let stolen = format!("alice:{}", bob.split_once(':').unwrap().1);
    for bad in [forged, stolen, "alice".to_string()] {
        let mut raw = RawClient::connect(addr, &format!("/rooms/r?token={bad}")).await;
        refused_before_sync(&mut raw, 4401).await;
    }
    let mut ok = RawClient::connect(addr, &format!("/rooms/r?token={alice}")).await;
    admitted(&mut ok).await;
    wait_until("alice joined", || {
        joined.lock().unwrap().contains(&Some("alice".to_string()))
    })
    .await;
    let (status, _) = send(
        addr,
        Request::get("/rooms").header("authorization", &format!("Bearer {bob}")),
    )
    .await;
    assert_eq!(status, 200);
    node.shutdown().await;
}

#[tokio::test]
async fn admin_routes_keep_the_admin_rule_on_top() {
    let config = Config {
        token: Some("client-tok".into()),
        admin_token: Some("admin-tok".into()),
        ..test_config()
    };
    let node = start(config).await;
    let addr = node.local_addr();
    let issue = |bearer: Option<&str>| {
        let mut req = Request::post("/commands").json(&serde_json::json!({"kind": "compact"}));
        if let Some(b) = bearer {
            req = req.header("authorization", &format!("Bearer {b}"));
        }
        req
    };
    let (status, _) = send(addr, issue(None)).await;
    assert_eq!(status, 401, "no credential at all");
    let (status, body) = send(addr, issue(Some("client-tok"))).await;
    assert_eq!(status, 401, "a client token is not an admin token: {body}");
    let (status, body) = send(addr, issue(Some("admin-tok"))).await;
    assert_eq!(status, 200, "{body}");
    // The admin token also serves as a client credential.
    let (status, _) = send(
        addr,
        Request::get("/rooms").header("authorization", "Bearer admin-tok"),
    )
    .await;
    assert_eq!(status, 200);
    node.shutdown().await;
}

#[tokio::test]
async fn cors_follows_the_origin_rule() {
    let node = start(with_token("t")).await;
    let addr = node.local_addr();
    let preflight = |origin: &str| {
        Request::new(Method::OPTIONS, "/rooms/r")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization")
    };
    let resp = client(addr)
        .send(preflight("http://localhost:5173"))
        .await
        .unwrap();
    assert!(resp.status < 300, "{}", resp.status);
    let resp = client(addr)
        .send(preflight("http://evil.test"))
        .await
        .unwrap();
    assert_eq!(
        resp.status, 403,
        "a foreign origin gets no preflight approval"
    );
    // An allowed origin with the token gets the CORS header on the answer.
    let raw = reqwest_free_get(addr, "/rooms", "http://localhost:5173", "t").await;
    assert!(
        raw.to_ascii_lowercase()
            .contains("access-control-allow-origin: http://localhost:5173"),
        "{raw}"
    );
    node.shutdown().await;
}

/// A GET whose response headers the test reads (the crate client returns status and body).
async fn reqwest_free_get(addr: SocketAddr, path: &str, origin: &str, token: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nOrigin: {origin}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut out))
        .await
        .expect("answer in time")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn an_open_mesh_needs_the_client_token_too() {
    // B has client auth on and no mesh secret: a node that dials without B's token gets
    // no room.
    let b = start(Config {
        token: Some("b-token".into()),
        ..test_config()
    })
    .await;
    let stranger = start(dialing(vec![peer(&b)])).await;
    let mut with_token = peer(&b);
    with_token.token = Some("b-token".into());
    let friend = start(dialing(vec![with_token])).await;
    crate::common::wait_linked(&friend, &b).await;
    crate::common::poll_get(
        stranger.local_addr(),
        "/peers",
        "the stranger's dial refused for want of a token",
        |_, v| {
            v["data"][0]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("token"))
        },
    )
    .await;
    assert!(!stranger
        .mesh()
        .connected_peers()
        .contains(&b.node_id().to_string()));
    // A web page cannot reach /_mesh at all.
    let req = format!("ws://{}/_mesh", b.local_addr())
        .into_client_request()
        .map(|mut r| {
            r.headers_mut()
                .insert("origin", "http://localhost:1".parse().unwrap());
            r
        })
        .unwrap();
    let err = tokio_tungstenite::connect_async(req).await.unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
    for n in [b, stranger, friend] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn with_a_mesh_secret_peers_need_no_client_token() {
    let secret = |c: Config| {
        let mut c = crate::common::closed_mesh(c);
        c.mesh_secret = Some("mesh-secret-value".into());
        c
    };
    let b = start(secret(Config {
        token: Some("b-token".into()),
        ..test_config()
    }))
    .await;
    let a = start(secret(dialing(vec![peer(&b)]))).await;
    crate::common::wait_linked(&a, &b).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_silent_socket_is_closed() {
    let mut config = with_token("t");
    config.limits.first_message_timeout = Duration::from_millis(300);
    let node = start(config).await;
    let addr = node.local_addr();
    let mut silent = RawClient::connect(addr, "/rooms/quiet?token=t").await;
    let closed = silent.expect_close().await;
    assert_eq!(closed.code, 4408, "{}", closed.reason);
    // A client that speaks is not affected.
    let mut speaking =
        SyncClient::connect_with(addr, "/rooms/quiet?token=t", yrs::Doc::new()).await;
    speaking
        .raw
        .expect_silence(Duration::from_millis(600))
        .await;
    node.shutdown().await;
}

#[test]
fn ymesh_token_prints_a_signed_user_token() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ymesh"))
        .args(["token", "--user", "alice", "--shared-secret", "shh"])
        .env_remove("SYNC_SHARED_SECRET")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.lines().last(),
        Some(ymesh::auth::sign_user("shh", "alice").as_str())
    );
    let missing = std::process::Command::new(env!("CARGO_BIN_EXE_ymesh"))
        .args([
            "token",
            "--user",
            "alice",
            "--config",
            "/nonexistent/mesh.toml",
        ])
        .env_remove("SYNC_SHARED_SECRET")
        .output()
        .unwrap();
    assert!(!missing.status.success());
}

#[test]
fn ymesh_secret_prints_a_new_strong_secret() {
    let run = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ymesh"))
            .arg("secret")
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (a, b) = (run(), run());
    assert_eq!(a.len(), 64, "{a}");
    assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(a, b);
    assert!(ymesh::auth::weak_secret_warning("x", &a).is_none());
}
