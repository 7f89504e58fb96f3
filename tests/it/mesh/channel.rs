//! Attacks on mesh links, each against real nodes on loopback: a relay that records and
//! splices, a replayed handshake, a reflected handshake message, a frame altered in flight,
//! a stranger trying to learn something that tests the mesh secret offline, and a peer that
//! breaks the handshake after the channel (each refusal counted by its reason). Before the
//! secure channel, the splice was admitted at both nodes, the relay read every room in
//! clear text, and the stranger received HMAC(secret, transcript).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use ymesh::mesh::proto::channel::{ChannelHandshake, Role};
use ymesh::mesh::proto::handshake::{self, Handshake};
use ymesh::mesh::wire::{self, Control, Frame, MAX_FRAME_LEN, MESH_PROTOCOL_VERSION};
use ymesh::mesh::NodeIdentity;
use yrs::{Text, WriteTxn};

use crate::common::*;

const SECRET: &str = "correct horse";

fn secured(cfg: ymesh::config::Config) -> ymesh::config::Config {
    let mut cfg = closed_mesh(cfg);
    cfg.mesh_secret = Some(SECRET.into());
    cfg
}

/// Which way a relayed message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// From the dialing node to the upstream node.
    Up,
    /// Back.
    Down,
}

/// One relayed message: (connection number, direction, bytes, whether it was a close; a
/// close is recorded as its code, 2 bytes).
type Relayed = (usize, Dir, Bytes, bool);

/// A WebSocket relay in front of `upstream`'s `/_mesh`: whoever dials it is connected to
/// the upstream node, every message is recorded, and one message towards upstream after
/// the handshake can be altered.
struct Relay {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Relayed>>>,
    /// Flip a byte in the next frame towards upstream (past the Noise handshake).
    tamper: Arc<AtomicBool>,
}

impl Relay {
    async fn start(upstream: SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log: Arc<Mutex<Vec<Relayed>>> = Arc::default();
        let tamper = Arc::new(AtomicBool::new(false));
        let (l, t) = (log.clone(), tamper.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok((tcp, _)) = listener.accept().await {
                let (l, t) = (l.clone(), t.clone());
                let conn = n;
                n += 1;
                tokio::spawn(async move {
                    let Ok(mut down) = tokio_tungstenite::accept_async(tcp).await else {
                        return;
                    };
                    let url = format!("ws://{upstream}/_mesh");
                    let Ok((mut up, _)) = tokio_tungstenite::connect_async(url).await else {
                        return;
                    };
                    let mut sent_up = 0;
                    loop {
                        tokio::select! {
                            m = down.next() => {
                                let Some(Ok(m)) = m else { break };
                                let m = match m {
                                    WsMessage::Binary(b) => {
                                        sent_up += 1;
                                        let mut b = b.to_vec();
                                        // Messages 1 and 2 up are the Noise handshake.
                                        if sent_up > 2 && t.swap(false, Ordering::SeqCst) {
                                            let i = b.len() / 2;
                                            b[i] ^= 0x01;
                                        }
                                        let b = Bytes::from(b);
                                        l.lock().unwrap().push((conn, Dir::Up, b.clone(), false));
                                        WsMessage::Binary(b)
                                    }
                                    other => other,
                                };
                                if up.send(m).await.is_err() { break }
                            }
                            m = up.next() => {
                                let Some(Ok(m)) = m else { break };
                                match &m {
                                    WsMessage::Binary(b) => {
                                        l.lock().unwrap().push((conn, Dir::Down, b.clone(), false))
                                    }
                                    WsMessage::Close(Some(f)) => {
                                        let code = u16::from(f.code).to_be_bytes();
                                        let b = Bytes::copy_from_slice(&code);
                                        l.lock().unwrap().push((conn, Dir::Down, b, true));
                                    }
                                    _ => {}
                                }
                                if down.send(m).await.is_err() { break }
                            }
                        }
                    }
                });
            }
        });
        Relay { addr, log, tamper }
    }

    fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    fn messages(&self) -> Vec<Relayed> {
        self.log.lock().unwrap().clone()
    }
}

/// Starts C with the secret and A (same secret) dialing C through a relay; returns them
/// linked.
async fn linked_through_relay() -> (ymesh::Node, ymesh::Node, Relay) {
    let c = start(secured(test_config())).await;
    let relay = Relay::start(c.local_addr()).await;
    let a = start(secured(dialing(vec![ymesh::mesh::PeerConfig {
        url: relay.url(),
        ..Default::default()
    }])))
    .await;
    wait_linked(&a, &c).await;
    wait_linked(&c, &a).await;
    (a, c, relay)
}

/// The next binary message, or the close code.
async fn next(ws: &mut Ws) -> Result<Bytes, u16> {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("an answer in time");
        match m {
            Some(Ok(WsMessage::Binary(b))) => return Ok(b),
            Some(Ok(WsMessage::Close(Some(f)))) => return Err(u16::from(f.code)),
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A relay on the path sees only ciphertext: neither the room's name, nor its content, nor
/// anything of the secret crosses in the clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_on_the_path_reads_nothing() {
    let (a, c, relay) = linked_through_relay().await;
    let mut on_a = SyncClient::connect(a.local_addr(), "secret-room").await;
    on_a.edit(|t| {
        t.get_or_insert_text("t")
            .insert(t, 0, "TOP-SECRET-CONTENT-4711")
    })
    .await;
    poll_get(
        c.local_addr(),
        "/rooms/secret-room?format=json",
        "the room on C",
        |s, v| s == 200 && v["data"]["t"] == "TOP-SECRET-CONTENT-4711",
    )
    .await;
    let log = relay.messages();
    assert!(
        log.len() > 4,
        "the link's traffic went through the relay: {}",
        log.len()
    );
    for (_, dir, bytes, _) in &log {
        for needle in [
            &b"TOP-SECRET-CONTENT-4711"[..],
            b"secret-room",
            SECRET.as_bytes(),
            b"\"type\"",
            a.node_id().as_bytes(),
        ] {
            assert!(
                !contains(bytes, needle),
                "{dir:?} message carries {:?} in the clear",
                String::from_utf8_lossy(needle)
            );
        }
    }
    a.shutdown().await;
    c.shutdown().await;
}

/// A stranger dials two nodes that share the secret and passes each one's handshake
/// message to the other (both are responders): neither completes, both close with 4400, and
/// neither links with anyone new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_splicing_two_nodes_is_admitted_by_neither() {
    let a = start(secured(test_config())).await;
    let c = start(secured(test_config())).await;
    let x = Arc::new(NodeIdentity::ephemeral());
    let mut to_a = RawClient::connect(a.local_addr(), "/_mesh").await.ws;
    let mut to_c = RawClient::connect(c.local_addr(), "/_mesh").await.ws;
    let (_hs_a, m1_a) =
        ChannelHandshake::initiator(x.clone(), MESH_PROTOCOL_VERSION, None).unwrap();
    let (_hs_c, m1_c) = ChannelHandshake::initiator(x, MESH_PROTOCOL_VERSION, None).unwrap();
    to_a.send(WsMessage::Binary(m1_a.into())).await.unwrap();
    to_c.send(WsMessage::Binary(m1_c.into())).await.unwrap();
    let from_a = next(&mut to_a).await.expect("A answers");
    let from_c = next(&mut to_c).await.expect("C answers");
    // Each node's answer to the other, as the third message.
    to_a.send(WsMessage::Binary(from_c)).await.unwrap();
    to_c.send(WsMessage::Binary(from_a)).await.unwrap();
    assert_eq!(next(&mut to_a).await, Err(4400));
    assert_eq!(next(&mut to_c).await, Err(4400));
    assert!(a.mesh().connected_peers().is_empty());
    assert!(c.mesh().connected_peers().is_empty());
    for node in [&a, &c] {
        let (_, peers) = get_json(node.local_addr(), "/peers").await;
        assert_eq!(peers["data"], serde_json::json!([]), "{peers}");
    }
    a.shutdown().await;
    c.shutdown().await;
}

/// A node's own answer sent back to it as the dialer's last message fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reflected_handshake_message_is_refused() {
    let a = start(secured(test_config())).await;
    let x = Arc::new(NodeIdentity::ephemeral());
    let mut ws = RawClient::connect(a.local_addr(), "/_mesh").await.ws;
    let (_hs, m1) = ChannelHandshake::initiator(x, MESH_PROTOCOL_VERSION, None).unwrap();
    ws.send(WsMessage::Binary(m1.into())).await.unwrap();
    let m2 = next(&mut ws).await.expect("A answers");
    ws.send(WsMessage::Binary(m2)).await.unwrap();
    assert_eq!(next(&mut ws).await, Err(4400));
    assert!(a.mesh().connected_peers().is_empty());
    a.shutdown().await;
}

/// The dialer's half of a real, recorded link replayed to the node it reached: the node's
/// fresh ephemeral key makes the recorded last message fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_handshake_replayed_is_refused() {
    let (a, c, relay) = linked_through_relay().await;
    // The first connection through the relay that carried a mesh link (the dialer probes
    // the address over plain HTTP first, which the relay does not carry).
    let log = relay.messages();
    let first = log.iter().map(|(conn, ..)| *conn).min().expect("traffic");
    let recorded: Vec<Bytes> = log
        .into_iter()
        .filter(|(conn, dir, _, _)| *conn == first && *dir == Dir::Up)
        .map(|(_, _, b, _)| b)
        .collect();
    assert!(recorded.len() >= 3, "a whole handshake was recorded");
    let mut ws = RawClient::connect(c.local_addr(), "/_mesh").await.ws;
    ws.send(WsMessage::Binary(recorded[0].clone()))
        .await
        .unwrap();
    let _fresh = next(&mut ws)
        .await
        .expect("C answers the replayed first message");
    ws.send(WsMessage::Binary(recorded[1].clone()))
        .await
        .unwrap();
    assert_eq!(next(&mut ws).await, Err(4400));
    assert_eq!(c.mesh().connected_peers(), vec![a.node_id().to_string()]);
    a.shutdown().await;
    c.shutdown().await;
}

/// One bit flipped in a frame in flight: the receiving node closes the link (4400) instead
/// of applying it; the link comes back and the edit arrives intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_altered_in_flight_closes_the_link_and_is_not_applied() {
    let (a, c, relay) = linked_through_relay().await;
    relay.tamper.store(true, Ordering::SeqCst);
    let mut on_a = SyncClient::connect(a.local_addr(), "tampered").await;
    on_a.edit(|t| t.get_or_insert_text("t").insert(t, 0, "exactly this"))
        .await;
    wait_until("the altered frame was sent", || {
        !relay.tamper.load(Ordering::SeqCst)
    })
    .await;
    wait_until("C closed the link with 4400", || {
        relay
            .messages()
            .iter()
            .any(|(_, dir, b, close)| *dir == Dir::Down && *close && b[..] == 4400u16.to_be_bytes())
    })
    .await;
    // The dialer comes back (through the relay, now honest) and the room converges intact.
    poll_get(
        c.local_addr(),
        "/rooms/tampered?format=json",
        "the room on C, intact",
        |s, v| s == 200 && v["data"]["t"] == "exactly this",
    )
    .await;
    a.shutdown().await;
    c.shutdown().await;
}

/// A stranger with its own node key completes the secure channel with a node that has a
/// mesh secret, guesses the secret, and keeps everything the node sends it. Nothing of it
/// lets a dictionary that contains the real secret find it offline; the node holds the
/// stranger as pending and sends it no room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_cannot_test_the_secret_offline_and_gets_no_room() {
    let a = start(secured(test_config())).await;
    let (mut io, x, binding) = secure_dial(a.local_addr()).await;
    assert_eq!(binding.remote, a.node_id());
    assert_eq!(binding.role, Role::Initiator);
    let hash = binding.hash;
    let mut hs = Handshake::new(x.node_id(), "boot", None, binding, Some("a guess"));
    let mut received = Vec::new();
    let mut outgoing = hs.start();
    let pending = loop {
        for act in outgoing.drain(..) {
            if let handshake::Action::Send(c) = act {
                io.tx.send(wire::encode_control(&c)).await.unwrap();
            }
        }
        let frame = tokio::time::timeout(WAIT, io.rx.recv())
            .await
            .expect("the node answers in time")
            .expect("link open");
        match wire::decode_frame(frame, MAX_FRAME_LEN).unwrap() {
            Frame::Control(Control::Pending { reason }) => break reason,
            Frame::Control(c) => {
                received.push(c.clone());
                outgoing = hs.on_message(c);
            }
            other => panic!("the node sent {other:?} to a stranger"),
        }
    };
    assert!(pending.contains("mesh secret"), "{pending}");
    let pake = received.iter().find_map(|c| match c {
        Control::Hello { pake, .. } => pake.clone(),
        _ => None,
    });
    let mac = received.iter().find_map(|c| match c {
        Control::Proof { mac } => Some(mac.clone()),
        _ => None,
    });
    let (pake, mac) = (
        hex(&pake.expect("a SPAKE2 message")),
        hex(&mac.expect("a proof")),
    );
    for guess in [
        "a guess",
        "password",
        SECRET,
        "correct horse ",
        "Correct horse",
    ] {
        let (s, _) = spake2::Spake2::<spake2::Ed25519Group>::start_symmetric(
            &spake2::Password::new(guess.as_bytes()),
            &spake2::Identity::new(&hash),
        );
        let key = s.finish(&pake).unwrap_or_default();
        assert_ne!(
            handshake::confirmation(&key, Role::Responder, &hash).to_vec(),
            mac,
            "guess {guess:?} verified offline"
        );
    }
    // Held as pending, and nothing else arrives.
    let (_, peers) = get_json(a.local_addr(), "/peers").await;
    let row = peers["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["node_id"] == x.node_id())
        .cloned()
        .expect("the stranger's row");
    assert_eq!(row["state"], "pending", "{row}");
    let mut on_a = SyncClient::connect(a.local_addr(), "private").await;
    on_a.edit(|t| t.get_or_insert_text("t").insert(t, 0, "not for strangers"))
        .await;
    let quiet = tokio::time::timeout(Duration::from_millis(800), io.rx.recv()).await;
    assert!(quiet.is_err(), "the node sent a pending stranger {quiet:?}");
    a.shutdown().await;
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A node of mesh protocol 1 opens with a clear-text hello and gets a
/// refusal it can read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_the_previous_protocol_is_told_why() {
    let a = start(secured(test_config())).await;
    let mut ws = RawClient::connect(a.local_addr(), "/_mesh").await.ws;
    let hello = serde_json::json!({
        "type": "hello", "version": 1, "node_id": "12D3KooWOld", "public_key": "00",
        "boot_id": "b", "nonce": "00",
    });
    let mut frame = bytes::BytesMut::new();
    let json = hello.to_string();
    let mut payload = bytes::BytesMut::new();
    ymesh::protocol::codec::write_var_uint(&mut payload, wire::KIND_CONTROL);
    ymesh::protocol::codec::write_var_bytes(&mut payload, json.as_bytes());
    ymesh::protocol::codec::write_var_uint(&mut frame, payload.len() as u64);
    frame.extend_from_slice(&payload);
    ws.send(WsMessage::Binary(frame.freeze())).await.unwrap();
    let answer = next(&mut ws).await.expect("a clear-text refusal");
    match wire::decode_frame(answer, MAX_FRAME_LEN).unwrap() {
        Frame::Control(Control::Refused { reason }) => {
            assert!(reason.contains("version 1"), "{reason}");
            assert!(
                reason.contains(&format!("speaks {MESH_PROTOCOL_VERSION}")),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(next(&mut ws).await, Err(4400));
    a.shutdown().await;
}

/// The value of `ymesh_mesh_handshakes_refused_total{reason="..."}` on `node`.
async fn refusals(node: SocketAddr, reason: &str) -> f64 {
    let resp = client(node)
        .send(ymesh::net::Request::get("/metrics"))
        .await
        .expect("an answer");
    let series = format!("ymesh_mesh_handshakes_refused_total{{reason=\"{reason}\"}} ");
    String::from_utf8_lossy(&resp.body)
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str())?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A peer that completes the secure channel, then sends `messages` (built from the hello a
/// real handshake would send) instead of following the handshake. Returns the reason of
/// the `refused` message the node answers with.
async fn crafted_peer(node: SocketAddr, messages: impl FnOnce(Control) -> Vec<Control>) -> String {
    let (mut io, x, binding) = secure_dial(node).await;
    let mut hs = Handshake::new(x.node_id(), "boot", None, binding, None);
    let hello = hs
        .start()
        .into_iter()
        .find_map(|a| match a {
            handshake::Action::Send(c @ Control::Hello { .. }) => Some(c),
            _ => None,
        })
        .expect("a hello");
    for c in messages(hello) {
        io.tx.send(wire::encode_control(&c)).await.unwrap();
    }
    loop {
        let frame = tokio::time::timeout(WAIT, io.rx.recv())
            .await
            .expect("the node answers in time")
            .expect("the node says why before it closes");
        if let Frame::Control(Control::Refused { reason }) =
            wire::decode_frame(frame, MAX_FRAME_LEN).unwrap()
        {
            return reason;
        }
    }
}

/// What a crafted peer sends instead of its hello, made from it.
type Crafted = Box<dyn FnOnce(Control) -> Vec<Control>>;

/// Each way a peer can break the handshake after the secure channel is refused with a
/// reason and counted under it: another protocol version, a hello naming another node than
/// the channel proved, a malformed hello, and a message out of order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_breaking_the_handshake_is_refused_and_counted_by_reason() {
    let a = start(secured(test_config())).await;
    let addr = a.local_addr();
    let with = |hello: Control, edit: &dyn Fn(&mut u32, &mut String, &mut Option<String>)| {
        let Control::Hello {
            mut version,
            mut node_id,
            boot_id,
            listen,
            mut pake,
        } = hello
        else {
            panic!("the handshake starts with a hello")
        };
        edit(&mut version, &mut node_id, &mut pake);
        Control::Hello {
            version,
            node_id,
            boot_id,
            listen,
            pake,
        }
    };
    let cases: Vec<(&str, Crafted)> = vec![
        (
            "version",
            Box::new(move |h| vec![with(h, &|v, _, _| *v = MESH_PROTOCOL_VERSION + 1)]),
        ),
        (
            "node_id_mismatch",
            Box::new(move |h| {
                let other = NodeIdentity::ephemeral().node_id().to_string();
                vec![with(h, &|_, n, _| *n = other.clone())]
            }),
        ),
        (
            "invalid_hello",
            Box::new(move |h| vec![with(h, &|_, _, p| *p = Some("not hex".into()))]),
        ),
        (
            "protocol",
            Box::new(|_| {
                vec![Control::Proof {
                    mac: "00".repeat(32),
                }]
            }),
        ),
    ];
    for (reason, messages) in cases {
        let before = refusals(addr, reason).await;
        let said = crafted_peer(addr, messages).await;
        assert!(!said.is_empty(), "{reason}: a reason is given");
        let deadline = tokio::time::Instant::now() + WAIT;
        while refusals(addr, reason).await < before + 1.0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{reason} counted (the node said {said:?})"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    a.shutdown().await;
}
