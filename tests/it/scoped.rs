//! Room-scoped tokens (HS256 JWTs under the shared secret): a token opens its rooms only
//! (4403 elsewhere, with the reason), an expired or forged one is refused (4401) and a
//! connected client is closed when its token expires, a
//! read-only one may read the HTTP document API and not write it, and `POST /tokens` and
//! `ymesh token --room` mint them.

use ymesh::auth::scoped::{self, Scope};
use ymesh::config::Config;
use ymesh::net::Request;
use yrs::{Text, WriteTxn};

use crate::common::*;

const SECRET: &str = "team-shared-secret-for-tests";

fn node_config() -> Config {
    Config {
        shared_secret: Some(SECRET.into()),
        ..test_config()
    }
}

fn token(room: &str, scope: Scope, ttl: u64) -> String {
    scoped::mint(SECRET, room, scope, ttl, Some("ada"), scoped::now_s()).unwrap()
}

async fn send(addr: std::net::SocketAddr, req: Request) -> (u16, String) {
    let resp = client(addr).send(req).await.expect("an answer");
    (
        resp.status,
        String::from_utf8_lossy(&resp.body).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_token_opens_its_room_and_no_other() {
    let node = start(node_config()).await;
    let addr = node.local_addr();
    let t = token("notes", Scope::Write, 3600);
    let mut ok = SyncClient::connect(addr, &format!("notes?token={t}")).await;
    ok.edit(|t| t.get_or_insert_text("t").insert(t, 0, "with a room token"))
        .await;
    let mut other = RawClient::connect(addr, &format!("/rooms/secrets?token={t}")).await;
    let closed = other.expect_close().await;
    assert_eq!(closed.code, 4403, "{closed:?}");
    assert!(closed.reason.contains("secrets"), "{closed:?}");
    // A prefix token covers the rooms under it.
    let team = token("team/*", Scope::Write, 3600);
    let _ = SyncClient::connect(addr, &format!("team%2Fa?token={team}")).await;
    let mut outside = RawClient::connect(addr, &format!("/rooms/teamx?token={team}")).await;
    assert_eq!(outside.expect_close().await.code, 4403);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_forged_tokens_are_refused_with_4401() {
    let node = start(node_config()).await;
    let addr = node.local_addr();
    let expired = scoped::mint(
        SECRET,
        "notes",
        Scope::Write,
        60,
        None,
        scoped::now_s() - 3600,
    )
    .unwrap();
    let mut c = RawClient::connect(addr, &format!("/rooms/notes?token={expired}")).await;
    let closed = c.expect_close().await;
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (4401, "token expired")
    );
    let forged = scoped::mint("guessed", "notes", Scope::Write, 60, None, scoped::now_s()).unwrap();
    let mut c = RawClient::connect(addr, &format!("/rooms/notes?token={forged}")).await;
    let closed = c.expect_close().await;
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (4401, "invalid token")
    );
    let (status, body) = send(
        addr,
        Request::get("/rooms/notes").header("authorization", &format!("Bearer {expired}")),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("token expired"), "{body}");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_token_reads_the_document_api_and_cannot_write_it() {
    let node = start(node_config()).await;
    let addr = node.local_addr();
    let writer = token("notes", Scope::Write, 3600);
    let mut w = SyncClient::connect(addr, &format!("notes?token={writer}")).await;
    w.edit_acked(|t| t.get_or_insert_text("t").insert(t, 0, "hello"))
        .await;
    let reader = token("notes", Scope::Read, 3600);
    let bearer = format!("Bearer {reader}");
    let get = |path: &str| Request::get(path).header("authorization", &bearer);
    let (status, body) = send(addr, get("/rooms/notes?format=json")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("hello"), "{body}");
    let update = {
        use yrs::Transact;
        let doc = yrs::Doc::new();
        let mut t = doc.transact_mut();
        t.get_or_insert_text("t").insert(&mut t, 0, "not allowed");
        t.encode_update_v1()
    };
    let post = Request::post("/rooms/notes")
        .header("authorization", &bearer)
        .body("application/octet-stream", update);
    let (status, body) = send(addr, post).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("read-only"), "{body}");
    let (status, body) = send(addr, get("/rooms/other?format=json")).await;
    assert_eq!(status, 403, "{body}");
    for path in ["/rooms", "/peers"] {
        let (status, body) = send(addr, get(path)).await;
        assert_eq!(status, 403, "{path}: {body}");
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_tokens_and_the_cli_mint_room_tokens() {
    let node = start(Config {
        admin_token: Some("admin-token-for-tests".into()),
        ..node_config()
    })
    .await;
    let addr = node.local_addr();
    // An application server mints tokens with the admin token.
    let admin = "Bearer admin-token-for-tests";
    let req = Request::post("/tokens")
        .header("authorization", admin)
        .json(&serde_json::json!({
            "room": "team/*", "scope": "read", "ttl_s": 120, "user": "app"
        }));
    let (status, body) = send(addr, req).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let minted = v["data"]["token"].as_str().unwrap();
    let claims = scoped::verify(SECRET, minted, scoped::now_s()).unwrap();
    assert_eq!(
        (claims.room.as_str(), claims.scope),
        ("team/*", Scope::Read)
    );
    assert_eq!(claims.sub.as_deref(), Some("app"));
    let bad = Request::post("/tokens")
        .header("authorization", admin)
        .json(&serde_json::json!({"room": "r", "ttl_s": 0}));
    assert_eq!(send(addr, bad).await.0, 400);
    // A room token is not an admin credential.
    let t = token("team/a", Scope::Write, 60);
    let req = Request::post("/tokens")
        .header("authorization", &format!("Bearer {t}"))
        .json(&serde_json::json!({"room": "*"}));
    assert_eq!(send(addr, req).await.0, 401);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ymesh"))
        .args(["token", "--room", "notes", "--read-only", "--ttl", "2h"])
        .env("SYNC_SHARED_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap();
    let claims = scoped::verify(SECRET, last, scoped::now_s()).unwrap();
    assert_eq!((claims.room.as_str(), claims.scope), ("notes", Scope::Read));
    assert!(claims.exp >= scoped::now_s() + 7100, "{claims:?}");
    node.shutdown().await;
}

/// A read-only client gets the document and live updates; its edit is not applied, it is
/// told once (AUTH permission denied) and stays connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_client_is_denied_its_edits_and_stays_connected() {
    let node = start(node_config()).await;
    let addr = node.local_addr();
    let writer = token("notes", Scope::Write, 3600);
    let mut w = SyncClient::connect(addr, &format!("notes?token={writer}")).await;
    w.edit_acked(|t| t.get_or_insert_text("t").insert(t, 0, "A"))
        .await;
    let reader = token("notes", Scope::Read, 3600);
    let mut r = SyncClient::connect(addr, &format!("notes?token={reader}")).await;
    r.pump_until("the document", |d| text_of(d, "t") == "A")
        .await;
    r.edit(|t| t.get_or_insert_text("t").insert(t, 0, "not allowed"))
        .await;
    let denied = r
        .raw
        .recv_until(|m| matches!(m, ymesh::protocol::Message::AuthDenied(_)))
        .await;
    assert!(format!("{denied:?}").contains("read-only"), "{denied:?}");
    // Still connected: the writer's next edit arrives, the refused one never applied.
    w.edit_acked(|t| t.get_or_insert_text("t").insert(t, 1, "B"))
        .await;
    r.pump_until("the writer's edit", |d| text_of(d, "t").contains('B'))
        .await;
    let (_, doc) = get_json(addr, &format!("/rooms/notes?format=json&token={writer}")).await;
    assert_eq!(doc["data"]["t"], "AB", "{doc}");
    node.shutdown().await;
}

/// A scoped token holds until its `exp` for a connected client too: then the session ends
/// with 4401 (before, a client connected in time kept the room for as long as it stayed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_client_is_closed_when_its_token_expires() {
    let node = start(node_config()).await;
    let addr = node.local_addr();
    let short = token("notes", Scope::Write, 2);
    let mut c = SyncClient::connect(addr, &format!("notes?token={short}")).await;
    c.edit_acked(|t| t.get_or_insert_text("t").insert(t, 0, "in time"))
        .await;
    let closed = c.raw.expect_close().await;
    assert_eq!(closed.code, 4401, "{closed:?}");
    assert!(closed.reason.contains("expired"), "{closed:?}");
    // A long-lived one on the same node stays.
    let long = token("notes", Scope::Write, 3600);
    let mut d = SyncClient::connect(addr, &format!("notes?token={long}")).await;
    d.raw
        .expect_silence(std::time::Duration::from_secs(3))
        .await;
    node.shutdown().await;
}
