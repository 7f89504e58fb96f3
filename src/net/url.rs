//! Base URLs of the client: `http[s]://HOST[:PORT][/PREFIX]`, parsed once, without I/O.

/// Where a [`super::Client`] sends its requests: one HTTP origin and an optional path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BaseUrl {
    /// The URL as given, without a trailing `/` (used in error messages).
    pub url: String,
    /// The host to connect to, IPv6 addresses without brackets.
    pub host: String,
    /// The port to connect to (80, or 443 for `https`, when the URL names none).
    pub port: u16,
    /// `https`: the connection runs TLS, verified for `host`.
    pub tls: bool,
    /// `host[:port]` as written in the URL (the `Host` header).
    pub authority: String,
    /// The path prefix put before every request path, without a trailing `/` (often empty).
    pub base_path: String,
}

impl BaseUrl {
    /// Parses `url`; the error says what is wrong with it.
    pub fn parse(url: &str) -> Result<BaseUrl, &'static str> {
        let (rest, tls) = if let Some(rest) = url.strip_prefix("http://") {
            (rest, false)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (rest, true)
        } else {
            return Err("expected http[s]://HOST:PORT, e.g. http://127.0.0.1:3913");
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if path.contains(['?', '#']) || authority.contains('@') {
            return Err("expected http://HOST:PORT[/PATH] without query or user");
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or("unclosed [ in the address")?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err("junk after the IPv6 address"),
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err("no host");
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| "the port is not a number")?,
            None if tls => 443,
            None => 80,
        };
        Ok(BaseUrl {
            url: url.trim_end_matches('/').to_string(),
            host,
            port,
            tls,
            authority: authority.to_string(),
            base_path: path.trim_end_matches('/').to_string(),
        })
    }
}
