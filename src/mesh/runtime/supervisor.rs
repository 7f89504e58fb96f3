//! Dialing peers when the core says so: the probe (`GET /`: is it a ymesh node?) and the
//! dial of its control channel. Each reports its outcome to the core as an event; whether
//! and when to try again is the core's decision ([`crate::mesh::proto`]), not this module's.

use std::sync::Arc;
use std::time::Duration;

use super::Mesh;
use crate::mesh::proto::{Event, PeerKey, Probe, Road, Transport};
use crate::mesh::transport;

/// Probes the peer at `url` and reports [`Event::Probed`].
pub(crate) async fn probe(mesh: Arc<Mesh>, peer: PeerKey, attempt: u64, url: String) {
    let answer = match is_ymesh_node(&url, mesh.token_for(peer).as_deref()).await {
        Ok(true) => Probe::Ymesh,
        Ok(false) => Probe::Other,
        Err(e) => Probe::Unreachable(e),
    };
    mesh.run(Event::Probed {
        peer,
        attempt,
        answer,
    });
}

/// Dials the peer's control channel and runs the link, or reports [`Event::DialFailed`].
pub(crate) async fn dial(
    mesh: Arc<Mesh>,
    peer: PeerKey,
    attempt: u64,
    url: String,
    transport: Transport,
    expect: Option<String>,
) {
    if transport == Transport::P2p {
        return dial_p2p(mesh, peer, attempt, url).await;
    }
    let security = transport::ws::Security::Dial {
        identity: mesh.identity().clone(),
        expect,
    };
    let write_timeout = mesh.settings().write_timeout;
    match transport::ws::dial(
        &url,
        mesh.token_for(peer).as_deref(),
        security,
        write_timeout,
    )
    .await
    {
        Ok(io) => {
            mesh.run(Event::DialOpened { peer, attempt });
            let link = mesh.next_id();
            super::link::run(mesh, io, peer, link, None, Road::default()).await;
        }
        Err(error) => mesh.run(Event::DialFailed {
            peer,
            attempt,
            error,
        }),
    }
}

/// Dials a multiaddr peer over libp2p (the multiaddr names the node, and libp2p's Noise
/// proves it) and runs the link, or reports [`Event::DialFailed`].
#[cfg(feature = "p2p")]
async fn dial_p2p(mesh: Arc<Mesh>, peer: PeerKey, attempt: u64, addr: String) {
    let own = format!("/p2p/{}", mesh.node_id());
    if addr.ends_with(&own) {
        // The address leads back to this node: never dialed again.
        let link = mesh.next_id();
        mesh.run(Event::DialOpened { peer, attempt });
        mesh.run(Event::HandshakeFailed {
            link,
            peer,
            end: crate::mesh::proto::HandshakeEnd::IsSelf,
        });
        return;
    }
    let Some(p2p) = mesh.p2p().cloned() else {
        mesh.run(Event::DialFailed {
            peer,
            attempt,
            error: "the p2p transport is not running".into(),
        });
        return;
    };
    match p2p.dial(&addr).await {
        Ok((io, relayed)) => {
            mesh.run(Event::DialOpened { peer, attempt });
            let link = mesh.next_id();
            let road = Road {
                transport: Transport::P2p,
                relayed,
            };
            super::link::run(mesh, io, peer, link, None, road).await;
        }
        Err(error) => mesh.run(Event::DialFailed {
            peer,
            attempt,
            error,
        }),
    }
}

/// Without the `p2p` feature a multiaddr peer is refused at start; should one reach here,
/// its row says why.
#[cfg(not(feature = "p2p"))]
async fn dial_p2p(mesh: Arc<Mesh>, peer: PeerKey, attempt: u64, _addr: String) {
    mesh.run(Event::DialFailed {
        peer,
        attempt,
        error: crate::mesh::proto::url::P2P_MISSING.into(),
    });
}

/// Whether the peer at `url` is a ymesh node (`GET /` answers `{"data":{"name":"ymesh"}}`).
/// `Ok(false)` only when the peer answered otherwise (an error status, or a body that is not
/// ymesh's root document); `Err` when it cannot be asked (down, refusing connections, timed
/// out, not speaking HTTP).
pub(crate) async fn is_ymesh_node(url: &str, token: Option<&str>) -> Result<bool, String> {
    let http = url
        .replacen("ws://", "http://", 1)
        .replacen("wss://", "https://", 1);
    let origin = match http.split_once("://") {
        Some((scheme, rest)) => {
            format!(
                "{scheme}://{}",
                rest.split(['/', '?', '#']).next().unwrap_or_default()
            )
        }
        None => return Err(format!("bad URL {url}")),
    };
    let client = crate::net::Client::new(&origin, token.map(str::to_string))
        .map_err(|e| e.to_string())?
        .with_timeout(Duration::from_secs(5))
        .with_max_body(1 << 20);
    match client
        .get_json::<crate::net::Envelope<serde_json::Value>>("/")
        .await
    {
        Ok(root) => Ok(root.data["name"] == "ymesh"),
        // A node with client authentication on answers 401 to a stranger; its /_mesh may
        // still take us (mesh secret), and the dial says why if not.
        Err(e) if e.status() == Some(401) => Ok(true),
        Err(e) if e.answered() => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}
