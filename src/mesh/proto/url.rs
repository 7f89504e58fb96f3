//! Peer URLs: the control-channel URL of a peer (`ws://host:port/_mesh`, or `wss://` for a
//! peer that serves TLS), the y-websocket
//! URL of a room on a plain server, and the `host:port` that tells a discovered address from a
//! configured one. Pure string work.

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
}
