use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::*;

/// A status document in the documented shape, trimmed from what `tailscale status --json`
/// prints, with the fields this source ignores left in.
const SAMPLE: &str = r#"{
  "Version": "1.76.1-t1234abcd",
  "TUN": true,
  "BackendState": "Running",
  "HaveNodeKey": true,
  "AuthURL": "",
  "TailscaleIPs": ["100.101.102.103", "fd7a:115c:a1e0::1"],
  "Self": {
    "ID": "nSelf11CNTRL",
    "PublicKey": "nodekey:0000000000000000000000000000000000000000000000000000000000000001",
    "HostName": "desk",
    "DNSName": "desk.tail1234.ts.net.",
    "OS": "linux",
    "UserID": 1234,
    "TailscaleIPs": ["100.101.102.103", "fd7a:115c:a1e0::1"],
    "Tags": ["tag:ymesh"],
    "Online": true,
    "ExitNode": false
  },
  "Health": null,
  "MagicDNSSuffix": "tail1234.ts.net",
  "CurrentTailnet": {"Name": "example.com", "MagicDNSSuffix": "tail1234.ts.net", "MagicDNSEnabled": true},
  "CertDomains": null,
  "Peer": {
    "nodekey:aa01": {
      "ID": "nLaptop1CNTRL",
      "PublicKey": "nodekey:aa01",
      "HostName": "Laptop",
      "DNSName": "laptop.tail1234.ts.net.",
      "OS": "macOS",
      "UserID": 1234,
      "TailscaleIPs": ["fd7a:115c:a1e0::2", "100.64.0.2"],
      "AllowedIPs": ["100.64.0.2/32", "fd7a:115c:a1e0::2/128"],
      "Tags": ["tag:ymesh", "tag:dev"],
      "Addrs": ["192.0.2.10:41641"],
      "CurAddr": "192.0.2.10:41641",
      "Relay": "fra",
      "RxBytes": 1024, "TxBytes": 2048,
      "Created": "2024-01-01T00:00:00Z",
      "LastSeen": "0001-01-01T00:00:00Z",
      "LastHandshake": "2024-05-01T12:00:00Z",
      "Online": true,
      "ExitNode": false, "ExitNodeOption": false, "Active": true,
      "PeerAPIURL": ["http://100.64.0.2:33441"],
      "InNetworkMap": true, "InMagicSock": true, "InEngine": true
    },
    "nodekey:bb02": {
      "ID": "nCloud1CNTRL",
      "PublicKey": "nodekey:bb02",
      "HostName": "ymesh-cloud-1",
      "DNSName": "ymesh-cloud-1.tail1234.ts.net.",
      "OS": "linux",
      "TailscaleIPs": ["100.64.0.3", "fd7a:115c:a1e0::3"],
      "Tags": null,
      "Online": true
    },
    "nodekey:cc03": {
      "ID": "nPhone1CNTRL",
      "PublicKey": "nodekey:cc03",
      "HostName": "phone",
      "DNSName": "phone.tail1234.ts.net.",
      "OS": "iOS",
      "TailscaleIPs": ["100.64.0.4"],
      "Online": true
    },
    "nodekey:dd04": {
      "ID": "nOld1CNTRL",
      "PublicKey": "nodekey:dd04",
      "HostName": "old-server",
      "DNSName": "old-server.tail1234.ts.net.",
      "OS": "linux",
      "TailscaleIPs": ["100.64.0.5"],
      "Tags": ["tag:ymesh"],
      "Online": false
    },
    "nodekey:ee05": {
      "HostName": "v6only",
      "DNSName": "v6only.tail1234.ts.net.",
      "TailscaleIPs": ["fd7a:115c:a1e0::6"],
      "Online": true
    },
    "nodekey:ff06": {
      "HostName": "noaddr",
      "DNSName": "",
      "TailscaleIPs": null,
      "Online": true
    }
  },
  "User": {"1234": {"ID": 1234, "LoginName": "me@example.com", "DisplayName": "Me"}}
}"#;

fn s(list: &[&str]) -> Vec<String> {
    list.iter().map(|x| x.to_string()).collect()
}

fn keys(c: &[Candidate]) -> Vec<&str> {
    c.iter().map(|c| c.key.as_str()).collect()
}

#[test]
fn parses_the_documented_status_shape() {
    let st = parse_status(SAMPLE.as_bytes()).unwrap();
    assert_eq!(st.backend_state, "Running");
    assert_eq!(st.self_status.as_ref().unwrap().host_name, "desk");
    assert_eq!(st.peer.len(), 6);
    let laptop = &st.peer["nodekey:aa01"];
    assert_eq!(laptop.host_name, "Laptop");
    assert_eq!(laptop.dns_name, "laptop.tail1234.ts.net.");
    assert!(laptop.online);
    assert_eq!(laptop.tags, s(&["tag:ymesh", "tag:dev"]));
    // IPv4 is preferred even when listed second.
    assert_eq!(laptop.preferred_ip(), Some("100.64.0.2".parse().unwrap()));
    assert!(st.peer["nodekey:bb02"].tags.is_empty(), "null tags");
    assert!(st.peer["nodekey:ff06"].tailscale_ips.is_empty(), "null IPs");
    assert_eq!(
        st.peer["nodekey:ee05"].preferred_ip(),
        Some("fd7a:115c:a1e0::6".parse().unwrap())
    );
    assert_eq!(st.peer["nodekey:ff06"].preferred_ip(), None);

    // A logged-out tailscaled has no peers at all.
    let empty = parse_status(br#"{"BackendState":"NeedsLogin","Self":null,"Peer":null}"#).unwrap();
    assert!(empty.peer.is_empty() && empty.self_status.is_none());
    // Not JSON: a clear error.
    let err = parse_status(b"<html>").unwrap_err().to_string();
    assert!(err.contains("tailscaled status"), "{err}");
}

#[test]
fn filters_by_online_tag_and_hostname() {
    let st = parse_status(SAMPLE.as_bytes()).unwrap();
    // No filter: every online peer with an address.
    assert_eq!(
        keys(&select_peers(&st, &[], &[])),
        vec![
            "nodekey:aa01",
            "nodekey:bb02",
            "nodekey:cc03",
            "nodekey:ee05"
        ]
    );
    // By tag, with or without the `tag:` prefix; the offline tagged peer is left out.
    assert_eq!(
        keys(&select_peers(&st, &s(&["tag:ymesh"]), &[])),
        vec!["nodekey:aa01"]
    );
    assert_eq!(
        keys(&select_peers(&st, &s(&["dev"]), &[])),
        vec!["nodekey:aa01"]
    );
    // By host name glob, case-insensitively, on HostName or the MagicDNS name.
    assert_eq!(
        keys(&select_peers(&st, &[], &s(&["ymesh-*"]))),
        vec!["nodekey:bb02"]
    );
    assert_eq!(
        keys(&select_peers(&st, &[], &s(&["LAPTOP"]))),
        vec!["nodekey:aa01"]
    );
    assert_eq!(
        keys(&select_peers(&st, &[], &s(&["phone.tail1234.ts.net"]))),
        vec!["nodekey:cc03"]
    );
    // Tags and host names add up.
    assert_eq!(
        keys(&select_peers(
            &st,
            &s(&["tag:ymesh"]),
            &s(&["ymesh-*", "old-*"])
        )),
        vec!["nodekey:aa01", "nodekey:bb02"]
    );
    assert!(select_peers(&st, &s(&["tag:nothing"]), &[]).is_empty());
    let c = &select_peers(&st, &s(&["tag:ymesh"]), &[])[0];
    assert_eq!(
        (c.host_name.as_str(), c.ip),
        ("Laptop", "100.64.0.2".parse().unwrap())
    );
    // Where a node serving TLS is probed: its MagicDNS name, without the final dot.
    assert_eq!(c.dns_name.as_deref(), Some("laptop.tail1234.ts.net"));
}

#[test]
fn only_an_answer_like_a_tls_servers_is_probed_again_over_tls() {
    use crate::net::NetError;
    let net = |source| DiscoveryError::Net {
        what: "GET http://100.64.0.2:3913/".into(),
        source,
    };
    let url = || "http://100.64.0.2:3913/".to_string();
    // A ymesh node serving TLS answers plain HTTP with 400; another TLS server breaks it.
    assert!(worth_https(&DiscoveryError::HttpStatus {
        what: url(),
        status: 400
    }));
    assert!(worth_https(&net(NetError::Status {
        url: url(),
        status: 400,
        message: "this node speaks TLS: use https:// or wss://".into()
    })));
    assert!(worth_https(&net(NetError::Exchange {
        url: url(),
        message: "the answer is not HTTP/1".into()
    })));
    // Silence, a refused connection, other statuses and HTTP servers that are not ymesh
    // are not asked again.
    assert!(!worth_https(&net(NetError::Connect {
        url: url(),
        source: std::io::ErrorKind::ConnectionRefused.into()
    })));
    assert!(!worth_https(&net(NetError::Timeout {
        url: url(),
        waiting: "connecting",
        after: Duration::from_secs(3)
    })));
    assert!(!worth_https(&DiscoveryError::HttpStatus {
        what: url(),
        status: 404
    }));
    assert!(!worth_https(
        &parse_root(br#"{"data":{"name":"something-else"}}"#).unwrap_err()
    ));
}

#[test]
fn config_defaults_and_validation() {
    let cfg = TailnetConfig::default();
    assert_eq!(
        cfg.socket,
        PathBuf::from("/var/run/tailscale/tailscaled.sock")
    );
    assert_eq!((cfg.port, cfg.interval), (3913, Duration::from_secs(30)));
    assert!(cfg.tags.is_empty() && cfg.hostnames.is_empty());
    cfg.validate().unwrap();
    assert!(TailnetConfig {
        port: 0,
        ..cfg.clone()
    }
    .validate()
    .is_err());
    assert!(TailnetConfig {
        interval: Duration::ZERO,
        ..cfg.clone()
    }
    .validate()
    .is_err());
    assert!(TailnetConfig {
        tags: s(&[""]),
        ..cfg
    }
    .validate()
    .is_err());
}

#[test]
fn recognizes_ymesh_root_documents() {
    assert_eq!(
        parse_root(
            br#"{"data":{"name":"ymesh","version":"0.1.0","node_id":"12D3KooWabc","rooms":0}}"#
        )
        .unwrap(),
        Some("12D3KooWabc".into())
    );
    assert_eq!(parse_root(br#"{"data":{"name":"ymesh"}}"#).unwrap(), None);
    assert!(parse_root(br#"{"data":{"name":"grafana"}}"#).is_err());
    assert!(parse_root(br#"{"name":"ymesh"}"#).is_err());
    assert!(parse_root(b"<!doctype html>").is_err());
}

fn ymesh(node: &str, url: &str) -> ProbeResult {
    ProbeResult::Ymesh {
        node_id: Some(node.into()),
        url: url.into(),
    }
}

fn poll(pairs: &[(&str, ProbeResult)]) -> BTreeMap<String, ProbeResult> {
    pairs
        .iter()
        .map(|(k, r)| (k.to_string(), r.clone()))
        .collect()
}

#[test]
fn tracker_reports_found_once_and_lost_on_offline_or_misses() {
    let mut t = Tracker::new();
    let a = ymesh("A", "http://100.64.0.2:3913");
    let b = ymesh("B", "http://100.64.0.3:3913");
    let first = t.on_poll(&poll(&[
        ("ka", a.clone()),
        ("kb", b.clone()),
        ("kc", ProbeResult::NotYmesh),
    ]));
    assert_eq!(first.len(), 2);
    assert!(first
        .iter()
        .all(|e| matches!(e, DiscoveryEvent::Found(d) if d.source == DiscoverySource::Tailnet)));
    // Same again: nothing.
    assert!(t
        .on_poll(&poll(&[("ka", a.clone()), ("kb", b.clone())]))
        .is_empty());
    // B stops answering once: kept; twice in a row: lost.
    assert!(t
        .on_poll(&poll(&[("ka", a.clone()), ("kb", ProbeResult::NotYmesh)]))
        .is_empty());
    assert!(
        t.on_poll(&poll(&[("ka", a.clone()), ("kb", b.clone())]))
            .is_empty(),
        "a miss is forgiven by an answer"
    );
    assert!(t
        .on_poll(&poll(&[("ka", a.clone()), ("kb", ProbeResult::NotYmesh)]))
        .is_empty());
    assert_eq!(
        t.on_poll(&poll(&[("ka", a.clone()), ("kb", ProbeResult::NotYmesh)])),
        vec![DiscoveryEvent::Lost {
            node_id: Some("B".into()),
            url: "http://100.64.0.3:3913".into(),
            source: DiscoverySource::Tailnet
        }]
    );
    // A goes offline (absent from the poll): lost at once.
    assert_eq!(
        t.on_poll(&poll(&[])),
        vec![DiscoveryEvent::Lost {
            node_id: Some("A".into()),
            url: "http://100.64.0.2:3913".into(),
            source: DiscoverySource::Tailnet
        }]
    );
    // Back online: found again.
    assert_eq!(t.on_poll(&poll(&[("ka", a)])).len(), 1);
}

/// A fresh path under the system temp dir for a socket, removed on drop.
struct TempSocket(PathBuf);

impl TempSocket {
    fn new() -> Self {
        TempSocket(std::env::temp_dir().join(format!(
            "ymesh-tailnet-{}-{:016x}.sock",
            std::process::id(),
            rand::random::<u64>()
        )))
    }
}

impl Drop for TempSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Reads one request head from `stream`.
async fn read_head<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> String {
    let mut req = Vec::new();
    let mut b = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut b).await.unwrap();
        if n == 0 {
            break;
        }
        req.extend_from_slice(&b[..n]);
    }
    String::from_utf8_lossy(&req).into_owned()
}

/// A stand-in tailscaled: answers `GET /localapi/v0/status` with the current document,
/// chunked like Go's net/http does for large bodies. Requests without the LocalAPI `Host`
/// get 403, like the real one gives to browsers.
fn serve_localapi(listener: UnixListener, doc: Arc<Mutex<String>>) {
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let doc = doc.clone();
            tokio::spawn(async move {
                let head = read_head(&mut conn).await;
                let ok = head.starts_with("GET /localapi/v0/status HTTP/1.1\r\n")
                    && head.contains("\r\nHost: local-tailscaled.sock\r\n");
                let resp = if ok {
                    let body = doc.lock().unwrap().clone();
                    let (a, b) = body.split_at(body.len() / 2);
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                         Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
                        a.len(),
                        b.len()
                    )
                } else {
                    "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n".to_string()
                };
                let _ = conn.write_all(resp.as_bytes()).await;
            });
        }
    });
}

/// A stand-in HTTP server answering every request with `body` (Content-Length framing).
fn serve_root(listener: TcpListener, body: String) {
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let _ = read_head(&mut conn).await;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(resp.as_bytes()).await;
            });
        }
    });
}

fn status_doc(peers: &[(&str, &str, &str, bool)]) -> String {
    let peers: serde_json::Map<String, serde_json::Value> = peers
        .iter()
        .map(|(key, host, ip, online)| {
            (
                key.to_string(),
                serde_json::json!({
                    "HostName": host,
                    "DNSName": format!("{host}.tail1234.ts.net."),
                    "TailscaleIPs": [ip],
                    "Tags": ["tag:ymesh"],
                    "Online": online,
                    "OS": "linux"
                }),
            )
        })
        .collect();
    serde_json::json!({"BackendState": "Running", "Self": {"HostName": "me"}, "Peer": peers})
        .to_string()
}

async fn next_event(rx: &mut mpsc::Receiver<DiscoveryEvent>) -> DiscoveryEvent {
    tokio::time::timeout(Duration::from_secs(15), rx.recv())
        .await
        .expect("no discovery event within 15 s")
        .expect("the source stopped")
}

#[tokio::test]
async fn finds_ymesh_peers_through_a_stand_in_localapi() {
    // The ymesh stand-in on 127.0.0.1, a non-ymesh HTTP server on 127.0.0.3 at the same
    // port, and nothing at all on 127.0.0.2.
    let node = crate::mesh::identity::NodeIdentity::ephemeral()
        .node_id()
        .to_string();
    let ymesh_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = ymesh_listener.local_addr().unwrap().port();
    serve_root(
        ymesh_listener,
        serde_json::json!({"data": {"name": "ymesh", "version": "0.1.0", "node_id": node, "rooms": 0}})
            .to_string(),
    );
    let other = TcpListener::bind(("127.0.0.3", port)).await.unwrap();
    serve_root(other, r#"{"data":{"name":"something-else"}}"#.to_string());

    let socket = TempSocket::new();
    let doc = Arc::new(Mutex::new(status_doc(&[
        ("nodekey:01", "ymesh-a", "127.0.0.1", true),
        ("nodekey:02", "silent", "127.0.0.2", true),
        ("nodekey:03", "web", "127.0.0.3", true),
    ])));
    serve_localapi(UnixListener::bind(&socket.0).unwrap(), doc.clone());

    // The raw LocalAPI fetch first.
    let st = fetch_status(&socket.0).await.unwrap();
    assert_eq!(st.peer.len(), 3);

    let (tx, mut rx) = mpsc::channel(8);
    let cancel = CancellationToken::new();
    let cfg = TailnetConfig {
        socket: socket.0.clone(),
        tags: s(&["tag:ymesh"]),
        hostnames: Vec::new(),
        port,
        interval: Duration::from_millis(100),
    };
    let handle = spawn_tailnet(cfg, tx, cancel.clone()).unwrap();

    let url = format!("http://127.0.0.1:{port}");
    assert_eq!(
        next_event(&mut rx).await,
        DiscoveryEvent::Found(Discovered {
            node_id: Some(node.clone()),
            url: url.clone(),
            source: DiscoverySource::Tailnet,
        })
    );

    // The peer goes offline: lost, and nothing else was ever reported (the silent and the
    // non-ymesh peers never show up).
    *doc.lock().unwrap() = status_doc(&[
        ("nodekey:01", "ymesh-a", "127.0.0.1", false),
        ("nodekey:02", "silent", "127.0.0.2", true),
        ("nodekey:03", "web", "127.0.0.3", true),
    ]);
    assert_eq!(
        next_event(&mut rx).await,
        DiscoveryEvent::Lost {
            node_id: Some(node),
            url,
            source: DiscoverySource::Tailnet,
        }
    );

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(15), handle.join())
        .await
        .expect("the source stops when cancelled");
    assert!(rx.recv().await.is_none(), "no events after the Lost");
}

#[tokio::test]
async fn an_absent_localapi_is_an_error_not_a_hang() {
    let socket = TempSocket::new();
    let err = fetch_status(&socket.0).await.unwrap_err();
    assert!(
        matches!(&err, DiscoveryError::Net { source, .. } if source.is_unreachable()),
        "{err}"
    );
    assert!(err.to_string().contains("LocalAPI"), "{err}");
}
