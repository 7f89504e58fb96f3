//! Strangers on `/_mesh`: the pre-authentication budget and the handshake deadline
//! (docs/security.md, "Mesh pre-authentication limits").

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

use crate::common::*;

/// Idle sockets the flood keeps open: more than the old fixed cap of 1,024 inbound links
/// (which refused everything past it with 503), and far more than the pre-authentication
/// budget (64 in total, 16 per address by default).
const FLOOD: usize = 1_100;

/// After the first wave, how many sockets per second the flood opens again (each as soon
/// as one of its sockets is closed or refused, in turn): many times the per-address budget
/// every second, while leaving the node the CPU to read a first frame, which is all the
/// budget needs from it (docs/security.md says what a faster flood does).
const REOPEN_PER_S: u32 = 250;

/// How soon the peer must be linked while the flood runs. The old handshake deadline was
/// 10 s: a flood that holds its sockets that long kept the peer out for all of it.
const LINK_WITHIN: Duration = Duration::from_secs(6);

/// What the flood saw.
#[derive(Default)]
struct Seen {
    /// Sockets opened (the upgrade succeeded).
    opened: AtomicUsize,
    /// Tasks that made their first attempt.
    started: AtomicUsize,
    /// Upgrades refused with 503.
    refused: AtomicUsize,
    /// Sockets the node closed with 4408.
    timed_out: AtomicUsize,
}

/// `FLOOD` tasks, each holding one idle socket on `addr`'s `/_mesh` (it never sends a byte),
/// and opening a new one as soon as the node closes it or refuses it, until `stop`. They run
/// on a thread and runtime of their own, as an attacker on another machine would.
fn flood(
    addr: SocketAddr,
    stop: watch::Receiver<bool>,
) -> (Arc<Seen>, std::thread::JoinHandle<()>) {
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the flood");
        rt.block_on(flood_tasks(addr, stop, s));
    });
    (seen, thread)
}

/// Reopenings, one every `1 / REOPEN_PER_S`, in the order they are asked for.
struct Pace {
    next: std::sync::Mutex<tokio::time::Instant>,
}

impl Pace {
    async fn wait(&self) {
        let slot = {
            let mut next = self.next.lock().unwrap();
            let slot = (*next).max(tokio::time::Instant::now());
            *next = slot + Duration::from_secs(1) / REOPEN_PER_S;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

async fn flood_tasks(addr: SocketAddr, stop: watch::Receiver<bool>, seen: Arc<Seen>) {
    let pace = Arc::new(Pace {
        next: std::sync::Mutex::new(tokio::time::Instant::now()),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..FLOOD {
        let seen = seen.clone();
        let pace = pace.clone();
        let mut stop = stop.clone();
        tasks.spawn(async move {
            let url = format!("ws://{addr}/_mesh");
            let mut first = true;
            while !*stop.borrow() {
                if !first {
                    tokio::select! {
                        _ = stop.changed() => return,
                        _ = pace.wait() => {}
                    }
                }
                let attempt = tokio::select! {
                    _ = stop.changed() => return,
                    r = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(&url)) => r,
                };
                if std::mem::take(&mut first) {
                    seen.started.fetch_add(1, Ordering::Relaxed);
                }
                let mut ws = match attempt {
                    Ok(Ok((ws, _))) => ws,
                    Ok(Err(WsError::Http(resp))) if resp.status() == 503 => {
                        seen.refused.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    _ => continue,
                };
                seen.opened.fetch_add(1, Ordering::Relaxed);
                // Idle: never speak (the node, as responder, says nothing first) until its close.
                loop {
                    let msg = tokio::select! {
                        _ = stop.changed() => return,
                        m = ws.next() => m,
                    };
                    match msg {
                        Some(Ok(WsMessage::Close(Some(frame)))) => {
                            if u16::from(frame.code) == 4408 {
                                seen.timed_out.fetch_add(1, Ordering::Relaxed);
                            }
                            break;
                        }
                        Some(Ok(_)) => continue,
                        _ => break,
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_mesh_sockets_from_the_peers_address_does_not_keep_it_out() {
    // Two sockets per flood connection (both ends live in this process).
    ymesh::server::raise_fd_limit();
    let mut b_cfg = test_config();
    b_cfg.mesh_secret = Some("flood-test-secret".into());
    let b = start(b_cfg).await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (seen, flood_thread) = flood(b.local_addr(), stop_rx);
    // Every flood task has opened (or been refused) once: the flood is in place.
    let s = seen.clone();
    wait_until("the flood in place", || {
        s.started.load(Ordering::Relaxed) == FLOOD
    })
    .await;
    let budget = {
        let limits = ymesh::config::Config::default().limits;
        limits.mesh_preauth_total
    };
    // The real peer, from the same address (127.0.0.1) as every stranger.
    let mut a_cfg = dialing(vec![peer(&b)]);
    a_cfg.mesh_secret = Some("flood-test-secret".into());
    let started = Instant::now();
    let a = start(a_cfg).await;
    let (b_mesh, b_id) = (b.mesh().clone(), b.node_id().to_string());
    let a_mesh = a.mesh().clone();
    let mut most_pending = 0;
    loop {
        most_pending = most_pending.max(b_mesh.pending_inbound());
        if a_mesh.connected_peers().contains(&b_id) {
            break;
        }
        if started.elapsed() > LINK_WITHIN {
            let (_, peers) = get_json(a.local_addr(), "/peers").await;
            panic!(
                "the peer did not link within {LINK_WITHIN:?} under the flood \
                 (opened {}, refused {}, closed with 4408 {}): {peers}",
                seen.opened.load(Ordering::Relaxed),
                seen.refused.load(Ordering::Relaxed),
                seen.timed_out.load(Ordering::Relaxed),
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    wait_linked(&b, &a).await;
    // The strangers were there all along: they were taken in and pushed out again.
    let opened = seen.opened.load(Ordering::Relaxed);
    assert!(opened >= FLOOD, "opened {opened}");
    assert!(seen.timed_out.load(Ordering::Relaxed) > 0);
    assert_eq!(
        seen.refused.load(Ordering::Relaxed),
        0,
        "no 503 for strangers"
    );
    assert!(most_pending <= budget, "{most_pending} pending > {budget}");
    stop_tx.send(true).unwrap();
    let joined = tokio::task::spawn_blocking(move || flood_thread.join());
    tokio::time::timeout(WAIT, joined)
        .await
        .expect("the flood stops in time")
        .unwrap()
        .expect("the flood ran without panicking");
    // Admitted links are out of the budget.
    assert_eq!(b_mesh.inbound_links(), 1);
    let m = b_mesh.clone();
    wait_until("the strangers' sockets gone", || m.pending_inbound() == 0).await;
    eprintln!("linked in {took:?} under a flood of {FLOOD} idle sockets ({opened} opened)");
    a.shutdown().await;
    b.shutdown().await;
}

/// A client of `/_mesh` that never speaks: connected, and silent (the node, as the
/// responder of the secure channel, waits for the dialer's first message and says nothing
/// before it).
async fn silent_mesh_socket(addr: SocketAddr) -> RawClient {
    let mut c = RawClient::connect(addr, "/_mesh").await;
    c.expect_silence(Duration::from_millis(50)).await;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_mesh_handshake_is_closed_with_4408_at_the_deadline() {
    let mut cfg = test_config();
    cfg.limits.mesh_handshake_timeout = Duration::from_secs(1);
    let node = start(cfg).await;
    let opened = Instant::now();
    let mut c = silent_mesh_socket(node.local_addr()).await;
    let closed = c.expect_close().await;
    let after = opened.elapsed();
    assert_eq!(closed.code, 4408, "{closed:?}");
    assert_eq!(closed.reason, "mesh handshake not finished within 1 s");
    assert!(
        after >= Duration::from_millis(900),
        "closed after {after:?}"
    );
    let m = node.mesh().clone();
    wait_until("the socket out of the budget", || m.pending_inbound() == 0).await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oldest_silent_socket_gives_way_with_4408_and_established_links_do_not_count() {
    let mut b_cfg = test_config();
    b_cfg.mesh_secret = Some("s".into());
    b_cfg.limits.mesh_preauth_total = 2;
    b_cfg.limits.mesh_preauth_per_address = 2;
    let b = start(b_cfg).await;
    let m = b.mesh().clone();
    let mut first = silent_mesh_socket(b.local_addr()).await;
    let mut second = silent_mesh_socket(b.local_addr()).await;
    wait_until("two sockets pending", || m.pending_inbound() == 2).await;
    // A third arrives: the oldest gives way, with the code and a reason.
    let mut third = silent_mesh_socket(b.local_addr()).await;
    let closed = first.expect_close().await;
    assert_eq!(closed.code, 4408, "{closed:?}");
    assert!(closed.reason.contains("gave way"), "{closed:?}");
    assert_eq!(m.pending_inbound(), 2);
    // A peer still gets in (pushing out the second), and once linked it is out of the
    // budget: the two pending places stay for strangers, the link is counted apart.
    let mut a_cfg = dialing(vec![peer(&b)]);
    a_cfg.mesh_secret = Some("s".into());
    let a = start(a_cfg).await;
    wait_linked(&a, &b).await;
    wait_linked(&b, &a).await;
    assert_eq!(second.expect_close().await.code, 4408);
    assert_eq!(m.inbound_links(), 1);
    assert!(m.pending_inbound() <= 1, "only the third is left");
    let _fourth = silent_mesh_socket(b.local_addr()).await;
    wait_until("third and fourth pending", || m.pending_inbound() == 2).await;
    assert_eq!(m.inbound_links(), 1, "the link was not pushed out");
    assert!(a
        .mesh()
        .connected_peers()
        .contains(&b.node_id().to_string()));
    third.ws.close(None).await.ok();
    a.shutdown().await;
    b.shutdown().await;
}
