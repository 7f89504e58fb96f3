//! Peer URLs: the control-channel URL of a peer (`ws://host:port/_mesh`, or `wss://` for a
//! peer that serves TLS), the y-websocket URL of a room on a plain server, the `host:port`
//! that tells a discovered address from a configured one, and libp2p multiaddrs
//! (`/ip4/…/tcp/…/p2p/<node id>`, through a relay `…/p2p/<relay id>/p2p-circuit/p2p/<node id>`),
//! checked here without libp2p so that a build without the `p2p` feature can name them and
//! refuse them. Pure string work.

/// The y-websocket URL of `room` on a plain server: `{id}` in the peer URL is replaced by
/// the percent-encoded room name, or the name is appended as the last path segment.
pub fn room_url(peer_url: &str, room: &str, token: Option<&str>) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    let encoded = percent_encoding::utf8_percent_encode(room, SEGMENT).to_string();
    let base = peer_url
        .replacen("http://", "ws://", 1)
        .replacen("https://", "wss://", 1);
    let mut url = if base.contains("{id}") {
        base.replace("{id}", &encoded)
    } else {
        format!("{}/{encoded}", base.trim_end_matches('/'))
    };
    if let Some(t) = token {
        let t = percent_encoding::utf8_percent_encode(t, SEGMENT);
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("token={t}"));
    }
    url
}

/// Why a peer URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("peer URL {url:?}: {reason}")]
pub struct PeerUrlError {
    /// The URL.
    pub url: String,
    /// What is wrong.
    pub reason: String,
}

/// The control-channel URL (`ws://host:port/_mesh`) of a peer URL.
pub fn mesh_url(url: &str) -> Result<String, PeerUrlError> {
    let err = |reason: &str| PeerUrlError {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| err("needs a scheme, e.g. ws://host:3913"))?;
    let scheme = match scheme {
        "ws" | "http" => "ws",
        "wss" | "https" => "wss",
        _ => return Err(err("the scheme must be ws://, wss://, http:// or https://")),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err(err("has no host"));
    }
    Ok(format!("{scheme}://{authority}/_mesh"))
}

/// Whether a peer address is a libp2p multiaddr (it starts with `/`) rather than a URL.
pub fn is_multiaddr(address: &str) -> bool {
    address.starts_with('/')
}

/// A checked libp2p peer address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct P2pAddress {
    /// The multiaddr as written.
    pub text: String,
    /// The node id it ends in (its last `/p2p/` part).
    pub node_id: String,
    /// Whether it leads through a circuit relay (`/p2p-circuit`).
    pub relayed: bool,
}

/// Checks a multiaddr the way the p2p transport dials it: `/ip4`, `/ip6`, `/dns`, `/dns4`
/// or `/dns6`, then `/tcp/PORT`, then `/p2p/<node id>`; through a relay the relay's address
/// (ending in its own `/p2p/<relay id>`), `/p2p-circuit`, `/p2p/<node id>`. `need_peer`:
/// the address must end in the node id (a peer address; a listen address must not).
pub fn parse_multiaddr(text: &str, need_peer: bool) -> Result<P2pAddress, PeerUrlError> {
    let err = |reason: String| PeerUrlError {
        url: text.to_string(),
        reason,
    };
    let Some(rest) = text.strip_prefix('/') else {
        return Err(err("a multiaddr starts with /".into()));
    };
    let mut parts = rest.split('/');
    let mut node_id = None;
    let mut relayed = false;
    // What may come next: a host, a port, a peer id, or (after a peer id) a circuit.
    let mut expect_host = true;
    while let Some(proto) = parts.next() {
        let mut value = |what: &str| {
            parts
                .next()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| err(format!("/{proto} needs {what}")))
        };
        match proto {
            "ip4" | "ip6" | "dns" | "dns4" | "dns6" if expect_host && node_id.is_none() => {
                let host = value("an address")?;
                match proto {
                    "ip4" => {
                        host.parse::<std::net::Ipv4Addr>()
                            .map_err(|_| err(format!("{host:?} is not an IPv4 address")))?;
                    }
                    "ip6" => {
                        host.parse::<std::net::Ipv6Addr>()
                            .map_err(|_| err(format!("{host:?} is not an IPv6 address")))?;
                    }
                    _ => {}
                }
                if parts.next() != Some("tcp") {
                    return Err(err(format!(
                        "/{proto}/{host} must be followed by /tcp/PORT (the p2p transport speaks TCP)"
                    )));
                }
                let port = parts
                    .next()
                    .ok_or_else(|| err("/tcp needs a port".into()))?;
                port.parse::<u16>()
                    .map_err(|_| err(format!("{port:?} is not a TCP port")))?;
                expect_host = false;
            }
            "p2p" => {
                let id = value("a node id")?;
                crate::mesh::identity::parse_node_id(id).map_err(|e| err(e.to_string()))?;
                node_id = Some(id.to_string());
            }
            "p2p-circuit" if node_id.is_some() && !relayed => {
                relayed = true;
                node_id = None;
            }
            "" => return Err(err("an empty part (//)".into())),
            other => {
                return Err(err(format!(
                    "/{other} is not supported here (use /ip4, /ip6, /dns4, /dns6 with /tcp, \
                     /p2p and /p2p-circuit)"
                )))
            }
        }
    }
    if expect_host && !relayed {
        return Err(err("has no /ip4, /ip6 or /dns address".into()));
    }
    match node_id {
        Some(node_id) => Ok(P2pAddress {
            text: text.to_string(),
            node_id,
            relayed,
        }),
        None if !need_peer && !relayed => Ok(P2pAddress {
            text: text.to_string(),
            node_id: String::new(),
            relayed,
        }),
        None => Err(err(
            "must end in /p2p/<node id> (through a relay: /p2p/<relay id>/p2p-circuit/p2p/<node id>)"
                .into(),
        )),
    }
}

/// Checks a configured peer address: a `ws://` / `http://` URL ([`mesh_url`]) or a libp2p
/// multiaddr ([`parse_multiaddr`]), which a build without the `p2p` feature refuses.
pub fn check_peer_address(address: &str) -> Result<(), PeerUrlError> {
    if is_multiaddr(address) {
        if !cfg!(feature = "p2p") {
            return Err(PeerUrlError {
                url: address.to_string(),
                reason: P2P_MISSING.into(),
            });
        }
        parse_multiaddr(address, true).map(|_| ())
    } else {
        mesh_url(address).map(|_| ())
    }
}

/// Why a build without the `p2p` feature refuses libp2p settings.
pub const P2P_MISSING: &str = "libp2p (multiaddr peers, p2p_listen, p2p_relay, \
    p2p_relay_server) is not in this build of ymesh: it was built without the `p2p` cargo \
    feature; rebuild with default features or remove the setting";

/// `host:port` of a URL, lower-cased, to tell a discovered address from a configured one.
pub fn authority(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let host_port = rest.split(['/', '?']).next()?;
    (!host_port.is_empty()).then(|| host_port.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_discovered_address_matches_a_configured_one_by_host_and_port() {
        assert_eq!(
            authority("http://10.0.0.2:3913"),
            authority("ws://10.0.0.2:3913/rooms/{id}")
        );
        assert_eq!(
            authority("ws://Desk.LAN:3913?x"),
            Some("desk.lan:3913".into())
        );
        assert_ne!(
            authority("ws://10.0.0.2:3913"),
            authority("ws://10.0.0.2:3914")
        );
        assert_eq!(authority("not a url"), None);
    }

    #[test]
    fn room_urls_for_plain_servers() {
        assert_eq!(room_url("ws://h:1234", "notes", None), "ws://h:1234/notes");
        assert_eq!(
            room_url("ws://h:1234/", "a/b c", None),
            "ws://h:1234/a%2Fb%20c"
        );
        assert_eq!(
            room_url("ws://h/sync/{id}/ws", "x", Some("t&k")),
            "ws://h/sync/x/ws?token=t%26k"
        );
        assert_eq!(room_url("http://h:1/y", "r", None), "ws://h:1/y/r");
    }

    #[test]
    fn mesh_urls_come_from_origins() {
        assert_eq!(
            mesh_url("ws://desktop:3913").unwrap(),
            "ws://desktop:3913/_mesh"
        );
        assert_eq!(
            mesh_url("ws://desktop.tail.ts.net:3913/rooms/{id}").unwrap(),
            "ws://desktop.tail.ts.net:3913/_mesh"
        );
        assert_eq!(
            mesh_url("http://10.0.0.2:4000/").unwrap(),
            "ws://10.0.0.2:4000/_mesh"
        );
        assert_eq!(mesh_url("wss://x:1/rooms/{id}").unwrap(), "wss://x:1/_mesh");
        assert_eq!(
            mesh_url("https://x.example").unwrap(),
            "wss://x.example/_mesh"
        );
        assert!(mesh_url("ftp://x:1").unwrap_err().reason.contains("wss://"));
        assert!(mesh_url("desktop:3913").is_err());
        assert!(mesh_url("ftp://x").is_err());
        assert!(mesh_url("ws:///rooms").is_err());
    }

    fn ids() -> (String, String) {
        let id = |b| {
            crate::mesh::NodeIdentity::from_secret_bytes([b; 32])
                .node_id()
                .to_string()
        };
        (id(1), id(2))
    }

    #[test]
    #[allow(non_snake_case)]
    fn multiaddrs_end_in_a_node_id() {
        let (a, b) = ids();
        let (A, B) = (a.as_str(), b.as_str());
        let direct = format!("/ip4/127.0.0.1/tcp/4001/p2p/{A}");
        let d = parse_multiaddr(&direct, true).unwrap();
        assert_eq!((d.node_id.as_str(), d.relayed), (A, false));
        let relayed = format!("/dns4/relay.example/tcp/4001/p2p/{B}/p2p-circuit/p2p/{A}");
        let r = parse_multiaddr(&relayed, true).unwrap();
        assert_eq!((r.node_id.as_str(), r.relayed), (A, true));
        assert!(parse_multiaddr(&format!("/ip6/::1/tcp/1/p2p/{A}"), true).is_ok());
        // A listen address has no node id; a peer address needs one.
        assert!(parse_multiaddr("/ip4/0.0.0.0/tcp/0", false).is_ok());
        let e = parse_multiaddr("/ip4/10.0.0.1/tcp/4001", true).unwrap_err();
        assert!(e.reason.contains("must end in /p2p/"), "{e}");
        for bad in [
            "ip4/1.2.3.4/tcp/1".to_string(),
            format!("/ip4/1.2.3/tcp/1/p2p/{A}"),
            format!("/ip4/1.2.3.4/udp/1/quic-v1/p2p/{A}"),
            format!("/ip4/1.2.3.4/tcp/99999/p2p/{A}"),
            "/ip4/1.2.3.4/tcp/1/p2p/notanid".to_string(),
            format!("/p2p/{A}"),
            format!("/ip4/1.2.3.4/tcp/1/p2p/{B}/p2p-circuit"),
            format!("/ip4/1.2.3.4/tcp/1/p2p-circuit/p2p/{A}"),
        ] {
            assert!(parse_multiaddr(&bad, true).is_err(), "{bad}");
        }
    }

    #[test]
    fn peer_addresses_are_urls_or_multiaddrs() {
        assert!(check_peer_address("ws://h:1").is_ok());
        assert!(check_peer_address("ftp://h:1").is_err());
        let (a, _) = ids();
        let m = format!("/ip4/127.0.0.1/tcp/4001/p2p/{a}");
        let r = check_peer_address(&m);
        if cfg!(feature = "p2p") {
            assert!(r.is_ok(), "{r:?}");
        } else {
            let e = r.unwrap_err();
            assert!(e.reason.contains("built without the `p2p`"), "{e}");
        }
    }
}
