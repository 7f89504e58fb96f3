//! Browser origins and `Host` names.
//!
//! **Origins.** A request or WebSocket upgrade that carries an `Origin` header comes from a
//! web page. It is allowed when the origin is the node's own (same scheme, host and port as
//! the request's `Host`, so `/ui` works from any address the node is reached at), a loopback
//! origin (`http(s)://localhost`, `*.localhost`, `127.0.0.0/8`, `[::1]`, any port),
//! `tauri://localhost`, or listed in `allowed_origins`. Any other page gets 403 (close 4403),
//! in every mode: otherwise any site the user visits could open a socket to a node on their
//! laptop. Requests without an `Origin` (non-browser clients) are governed by the
//! credential rules alone.
//!
//! **Hosts.** A node bound to a loopback address answers only requests whose `Host` is a
//! loopback name or address or listed in `allowed_hosts`: a DNS-rebinding page (a name of
//! the attacker's that resolves to 127.0.0.1) is then refused even though its requests look
//! same-origin to the browser. A node bound to another address answers every `Host`.

use std::net::IpAddr;

/// The origin rule of one node.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    /// Extra allowed origins, normalized ([`normalize_origin`]).
    allowed: Vec<String>,
}

impl OriginPolicy {
    /// The rule with `allowed` (already normalized) besides the built-in origins.
    pub fn new(allowed: Vec<String>) -> Self {
        OriginPolicy { allowed }
    }

    /// Whether a request with `Origin: origin` and `Host: host`, received over `scheme`
    /// (`http` or `https`), may proceed.
    pub fn allows(&self, origin: &str, host: Option<&str>, scheme: &str) -> bool {
        let origin = origin.trim().to_ascii_lowercase();
        if origin == "tauri://localhost" || self.allowed.contains(&origin) {
            return true;
        }
        let Some((o_scheme, o_host, o_port)) = split_origin(&origin) else {
            return false;
        };
        if !matches!(o_scheme, "http" | "https") {
            return false;
        }
        if is_loopback_host(o_host) {
            return true;
        }
        // The node's own origin: what the page was loaded from is where it talks to.
        let Some(host) = host else {
            return false;
        };
        let host = host.trim().to_ascii_lowercase();
        let (h_host, h_port) = split_host_port(&host);
        let default = if scheme == "https" { 443 } else { 80 };
        o_scheme == scheme
            && o_host == h_host
            && o_port.unwrap_or(default) == h_port.unwrap_or(default)
    }
}

/// The host rule of one node.
#[derive(Debug, Clone, Default)]
pub struct HostPolicy {
    /// Whether the node listens on a loopback address only.
    loopback_only: bool,
    /// Extra allowed names, normalized ([`normalize_host`]).
    allowed: Vec<String>,
}

impl HostPolicy {
    /// The rule of a node listening on `listen_host` (an IP address or `localhost`).
    pub fn new(listen_host: &str, allowed: Vec<String>) -> Self {
        HostPolicy {
            loopback_only: is_loopback_host(&listen_host.to_ascii_lowercase()),
            allowed,
        }
    }

    /// Whether a request with this `Host` header (if any) may proceed. A request without
    /// one (HTTP/1.0 tools) is not from a browser and is let through.
    pub fn allows(&self, host: Option<&str>) -> bool {
        if !self.loopback_only {
            return true;
        }
        let Some(host) = host else {
            return true;
        };
        let lower = host.trim().to_ascii_lowercase();
        let (name, _) = split_host_port(&lower);
        is_loopback_host(name) || self.allowed.iter().any(|a| a == name)
    }
}

/// `localhost`, a `*.localhost` name, or a loopback IP address (IPv6 in brackets or not).
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_end_matches('.');
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>()
        .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// `scheme://host[:port]` (lower-case, no path) into its parts.
fn split_origin(origin: &str) -> Option<(&str, &str, Option<u16>)> {
    let (scheme, rest) = origin.split_once("://")?;
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return None;
    }
    let (host, port) = split_host_port(rest);
    if host.is_empty() {
        return None;
    }
    Some((scheme, host, port))
}

/// `host[:port]`, with IPv6 hosts in brackets; a port that does not parse counts as none.
fn split_host_port(s: &str) -> (&str, Option<u16>) {
    if let Some(rest) = s.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            let host = &s[..end + 2];
            let port = rest[end + 1..]
                .strip_prefix(':')
                .and_then(|p| p.parse().ok());
            return (host, port);
        }
        return (s, None);
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().ok()),
        _ => (s, None),
    }
}

/// Checks and normalizes an `allowed_origins` entry: `scheme://host[:port]`, lower-case,
/// without a trailing slash or path.
pub fn normalize_origin(value: &str) -> Result<String, String> {
    let v = value.trim().trim_end_matches('/').to_ascii_lowercase();
    match split_origin(&v) {
        Some(_) => Ok(v),
        None => Err(format!(
            "{value:?} is not an origin: write scheme://host[:port], e.g. https://app.example.com"
        )),
    }
}

/// Checks and normalizes an `allowed_hosts` entry: a host name or address, lower-case, any
/// port removed.
pub fn normalize_host(value: &str) -> Result<String, String> {
    let v = value.trim().trim_end_matches('.').to_ascii_lowercase();
    let (name, _) = split_host_port(&v);
    if name.is_empty() || v.contains(['/', '?', '#', '@', ' ']) {
        return Err(format!(
            "{value:?} is not a host name: write a name or address such as desktop.tail1234.ts.net"
        ));
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let p = OriginPolicy::new(vec![normalize_origin("https://App.Example.com/").unwrap()]);
        let host = Some("127.0.0.1:3913");
        for ok in [
            "http://localhost:5173",
            "http://127.0.0.1:8080",
            "https://127.9.9.9",
            "http://[::1]:3000",
            "http://app.localhost:1",
            "tauri://localhost",
            "https://app.example.com",
            "http://127.0.0.1:3913",
        ] {
            assert!(p.allows(ok, host, "http"), "{ok}");
        }
        for bad in [
            "http://evil.test",
            "http://evil.test:3913",
            "https://app.example.com:8443",
            "null",
            "file://",
            "http://localhost.evil.test",
            "ftp://localhost",
            "http://127.0.0.1.evil.test",
        ] {
            assert!(!p.allows(bad, host, "http"), "{bad}");
        }
    }

    #[test]
    fn the_nodes_own_origin_from_any_address() {
        let p = OriginPolicy::default();
        assert!(p.allows("http://desktop.lan:3913", Some("desktop.lan:3913"), "http"));
        assert!(p.allows("http://10.0.0.2", Some("10.0.0.2:80"), "http"));
        assert!(!p.allows("http://desktop.lan:3913", Some("desktop.lan:3914"), "http"));
        assert!(!p.allows("https://desktop.lan:3913", Some("desktop.lan:3913"), "http"));
        assert!(!p.allows("http://desktop.lan:3913", None, "http"));
    }

    #[test]
    fn hosts_of_a_loopback_node() {
        let p = HostPolicy::new(
            "127.0.0.1",
            vec![normalize_host("Laptop.Local:3913").unwrap()],
        );
        for ok in [
            None,
            Some("127.0.0.1:3913"),
            Some("localhost:3913"),
            Some("LOCALHOST"),
            Some("[::1]:3913"),
            Some("laptop.local:3913"),
        ] {
            assert!(p.allows(ok), "{ok:?}");
        }
        for bad in [
            Some("attacker.example"),
            Some("evil.test:3913"),
            Some("10.0.0.1:3913"),
        ] {
            assert!(!p.allows(bad), "{bad:?}");
        }
        // A node on another address answers every name.
        assert!(HostPolicy::new("0.0.0.0", vec![]).allows(Some("attacker.example")));
        assert!(HostPolicy::new("localhost", vec![]).loopback_only);
    }

    #[test]
    fn normalizing_settings() {
        assert_eq!(
            normalize_origin("HTTPS://A.example/").unwrap(),
            "https://a.example"
        );
        assert!(normalize_origin("a.example").is_err());
        assert!(normalize_origin("https://a.example/path").is_err());
        assert_eq!(normalize_host("Desk.Lan:3913").unwrap(), "desk.lan");
        assert!(normalize_host("http://x").is_err());
    }
}
