//! Behind a reverse proxy: `X-Forwarded-For` / `Forwarded` name the client only when the
//! TCP peer is a configured trusted proxy; then per-address limits and the loopback rule of
//! admin routes judge the client's address, not the proxy's. From anyone else the headers
//! are ignored, so a client cannot choose its own address.

use ymesh::config::Config;

use crate::common::*;

fn behind_proxy(trusted: &[&str]) -> Config {
    let mut cfg = test_config();
    cfg.trusted_proxies = trusted.iter().map(|t| t.parse().unwrap()).collect();
    cfg.limits.max_connections_per_address = 1;
    cfg
}

#[tokio::test]
async fn per_address_limits_count_the_forwarded_client() {
    let node = start(behind_proxy(&["127.0.0.1"])).await;
    let addr = node.local_addr();
    let path = "/rooms/limits";
    // Two clients behind the proxy: one connection each is theirs.
    let _first = ws_with(addr, path, &[("x-forwarded-for", "198.51.100.7")]).await;
    let mut second = ws_with(addr, path, &[("x-forwarded-for", "198.51.100.7")]).await;
    let closed = second.expect_close().await;
    assert_eq!(closed.code, 4429, "{closed:?}");
    let mut other = ws_with(addr, path, &[("forwarded", "for=198.51.100.8")]).await;
    other.send(ymesh::protocol::encode_sync_step1(&[0])).await;
    other
        .recv_until(|m| {
            matches!(
                m,
                ymesh::protocol::Message::Sync(ymesh::protocol::SyncMessage::Step2(_))
            )
        })
        .await;
    node.shutdown().await;
}

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
    // The proxy is elsewhere: this loopback client's header is its own claim.
    let node = start(behind_proxy(&["10.0.0.1"])).await;
    let addr = node.local_addr();
    // Loopback is exempt from per-address limits: both connections stand.
    let mut a = ws_with(addr, "/rooms/x", &[("x-forwarded-for", "198.51.100.7")]).await;
    let mut b = ws_with(addr, "/rooms/x", &[("x-forwarded-for", "198.51.100.7")]).await;
    for c in [&mut a, &mut b] {
        c.send(ymesh::protocol::encode_sync_step1(&[0])).await;
        c.recv_until(|m| {
            matches!(
                m,
                ymesh::protocol::Message::Sync(ymesh::protocol::SyncMessage::Step2(_))
            )
        })
        .await;
    }
    // Nor does the header change who the admin rule sees: still this loopback client.
    let req = ymesh::net::Request::new(ymesh::net::Method::DELETE, "/rooms/gone")
        .header("X-Forwarded-For", "203.0.113.9");
    let resp = client(addr).send(req).await.unwrap();
    assert_ne!(resp.status, 403);
    node.shutdown().await;
}

#[tokio::test]
async fn a_remote_client_behind_a_local_proxy_is_not_loopback_for_admin_routes() {
    // No admin token: admin routes are for loopback clients only.
    let node = start(behind_proxy(&["127.0.0.1"])).await;
    let c = client(node.local_addr());
    let delete = |xff: Option<&'static str>| {
        let mut req = ymesh::net::Request::new(ymesh::net::Method::DELETE, "/rooms/gone");
        if let Some(v) = xff {
            req = req.header("X-Forwarded-For", v);
        }
        c.send(req)
    };
    let forwarded = delete(Some("203.0.113.9")).await.unwrap();
    assert_eq!(
        forwarded.status,
        403,
        "{}",
        String::from_utf8_lossy(&forwarded.body)
    );
    // The same request from the node's own host (the proxy forwarding a local client, or no
    // proxy at all) is still an admin's.
    let local = delete(Some("127.0.0.1")).await.unwrap();
    assert_ne!(local.status, 403);
    let direct = delete(None).await.unwrap();
    assert_ne!(direct.status, 403);
    node.shutdown().await;
}
