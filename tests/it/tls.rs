//! TLS: `https://` and `wss://` on the node's one port, peers dialed over `wss://`,
//! certificates re-read on reload, and bad files refused with their name. Certificates come
//! from a throwaway CA made by `tests/fixtures/gen-cert.sh` (openssl) for each test.

use std::net::SocketAddr;
use std::path::Path;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use ymesh::config::{Config, TlsFiles};
use ymesh::net::tls::ClientStream;
use ymesh::protocol::{self, Message, SyncMessage};

use crate::common::*;

fn tls_config(dir: &Path) -> Config {
    Config {
        tls: Some(TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }),
        ..test_config()
    }
}

fn https(addr: SocketAddr) -> ymesh::net::Client {
    ymesh::net::Client::new(&format!("https://localhost:{}", addr.port()), None)
        .expect("a valid base URL")
        .with_timeout(WAIT)
}

/// A TLS connection to the node, verified like any client would.
async fn tls_connect(addr: SocketAddr) -> ClientStream {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tokio::time::timeout(WAIT, ymesh::net::tls::connect(tcp, "localhost"))
        .await
        .expect("handshake in time")
        .expect("handshake")
}

type Wss = tokio_tungstenite::WebSocketStream<ClientStream>;

async fn wss(addr: SocketAddr, path: &str) -> Wss {
    let stream = tls_connect(addr).await;
    let url = format!("wss://localhost:{}{path}", addr.port());
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(url, stream))
        .await
        .expect("upgrade in time")
        .expect("upgrade");
    ws
}

/// Next y-protocols message on `ws` (pings skipped).
async fn next_message(ws: &mut Wss) -> Message {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("message in time")
            .expect("open")
            .expect("no error");
        if let WsMessage::Binary(b) = m {
            return protocol::decode_frame(b).expect("decodes").remove(0);
        }
    }
}

#[tokio::test]
async fn https_and_wss_are_served_on_the_one_port_and_plain_http_is_told_why_not() {
    let dir = certificates("tls-serve");
    let node = start(tls_config(&dir)).await;
    let addr = node.local_addr();

    let root: ymesh::net::Envelope<serde_json::Value> =
        https(addr).get_json("/").await.expect("https request");
    assert_eq!(root.data["name"], "ymesh");

    // A y-websocket client over wss:// syncs a room and its edit is stored.
    let mut ws = wss(addr, "/rooms/secure").await;
    ws.send(WsMessage::Binary(protocol::encode_sync_step1(&[0])))
        .await
        .unwrap();
    let mut got_step2 = false;
    while !got_step2 {
        got_step2 = matches!(
            next_message(&mut ws).await,
            Message::Sync(SyncMessage::Step2(_))
        );
    }
    let doc = yrs::Doc::with_client_id(7);
    let update = {
        use yrs::{Text, Transact};
        let text = doc.get_or_insert_text("t");
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, 0, "over tls");
        txn.encode_update_v1()
    };
    ws.send(WsMessage::Binary(protocol::encode_sync_update(&update)))
        .await
        .unwrap();
    let room = node.room("secure").await.unwrap();
    wait_until("the edit reached the room", || {
        room.with_doc(|d| text_of(d, "t")) == "over tls"
    })
    .await;

    // Plain HTTP on the TLS port: a readable 400, not a broken handshake.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut answer))
        .await
        .expect("answer in time")
        .ok();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("use https://"), "{answer}");

    node.shutdown().await;
}

#[tokio::test]
async fn peers_replicate_over_wss() {
    let dir = certificates("tls-mesh");
    let secure = start(tls_config(&dir)).await;
    let port = secure.local_addr().port();
    let dialer = start(dialing(vec![ymesh::mesh::PeerConfig {
        url: format!("wss://localhost:{port}"),
        ..Default::default()
    }]))
    .await;
    wait_linked(&dialer, &secure).await;
    let mut client = SyncClient::connect(dialer.local_addr(), "shared").await;
    client
        .edit_acked(|t| {
            use yrs::{Text, WriteTxn};
            t.get_or_insert_text("t").insert(t, 0, "crossed wss")
        })
        .await;
    let room = secure.room("shared").await.unwrap();
    wait_until("the edit crossed the wss link", || {
        room.with_doc(|d| text_of(d, "t")) == "crossed wss"
    })
    .await;
    let (_, peers) = get_json(dialer.local_addr(), "/peers").await;
    let url = peers["data"][0]["address"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(url.starts_with("wss://"), "{peers}");
    dialer.shutdown().await;
    secure.shutdown().await;
}

#[tokio::test]
async fn a_renewed_certificate_is_served_after_reload_and_a_bad_one_is_refused() {
    let dir = certificates("tls-reload");
    let config = tls_config(&dir);
    let node = start(config.clone()).await;
    let addr = node.local_addr();
    let first = ymesh::net::tls::read_certificates(&dir.join("cert.pem")).unwrap();
    let served = |s: &ClientStream| s.get_ref().1.peer_certificates().unwrap()[0].clone();
    let before = tls_connect(addr).await;
    assert_eq!(served(&before), first[0]);

    // Renewed in place, as certbot or Caddy would: same paths, new certificate and key.
    issue(&dir, Some("renewed"));
    std::fs::rename(dir.join("renewed.pem"), dir.join("cert.pem")).unwrap();
    std::fs::rename(dir.join("renewed.key"), dir.join("key.pem")).unwrap();
    let renewed = ymesh::net::tls::read_certificates(&dir.join("cert.pem")).unwrap();
    assert_ne!(renewed[0], first[0]);
    let report = node.reload_with(config.clone()).expect("reload");
    assert!(report.applied.contains(&"tls_cert"), "{report:?}");
    let after = tls_connect(addr).await;
    assert_eq!(served(&after), renewed[0]);
    // The connection made before keeps working.
    let mut ws = wss(addr, "/rooms/r").await;
    ws.send(WsMessage::Binary(protocol::encode_sync_step1(&[0])))
        .await
        .unwrap();
    next_message(&mut ws).await;

    // A broken key file refuses the reload, naming the file; the certificate in use stays.
    std::fs::write(dir.join("key.pem"), "not a key\n").unwrap();
    let err = node.reload_with(config).unwrap_err().to_string();
    assert!(err.contains("key.pem"), "{err}");
    assert_eq!(served(&tls_connect(addr).await), renewed[0]);
    node.shutdown().await;
}

#[tokio::test]
async fn a_node_with_an_unreadable_certificate_does_not_start_and_names_the_file() {
    let dir = fresh_dir("tls-missing");
    let config = Config {
        tls: Some(TlsFiles {
            cert: dir.join("nope.pem"),
            key: dir.join("nope.key"),
        }),
        ..test_config()
    };
    let data_dir = config.data_dir.clone();
    let err = ymesh::Node::start(config).await.unwrap_err().to_string();
    assert!(err.contains("nope.pem"), "{err}");
    // Refused before the store was made.
    assert!(!data_dir.join("ymesh.sqlite3").exists());
}
