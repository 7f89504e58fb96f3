//! The admin rule.
//!
//! **Admin routes** (compaction today; commands, token minting and room deletion later) take
//! `Authorization: Bearer <admin token>` when an admin token is configured (`--admin-token`,
//! `YMESH_ADMIN_TOKEN` or `admin_token` in mesh.toml). With none configured they are accepted
//! only from loopback connections, so a node that listens on `0.0.0.0` without a token does
//! not hand its admin API to the network. [`admin_decision`] is the whole rule; the axum
//! middleware in `server` only gathers its inputs and turns the answer into a response.
//!
//! Behind a reverse proxy on the same host every request comes from loopback: configure an
//! admin token there.

use std::net::{IpAddr, SocketAddr};

use sha2::{Digest, Sha256};

/// What the admin rule says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminDecision {
    /// Let it through.
    Allow,
    /// 401: an admin token is configured and the request did not carry it.
    Unauthorized(&'static str),
    /// 403: no admin token is configured and the request is not from loopback.
    Forbidden(&'static str),
}

/// Message of a 403 for a non-loopback request to a node without an admin token.
pub const CONFIGURE_ADMIN_TOKEN: &str = "admin routes are accepted only from loopback \
     connections while no admin token is configured; start the node with --admin-token \
     (or YMESH_ADMIN_TOKEN, or admin_token in mesh.toml) and send Authorization: Bearer <token>";

/// The admin rule. `configured` is the node's admin token, `authorization` the request's
/// `Authorization` header (if any, as text), `peer` the remote address of the connection.
pub fn admin_decision(
    configured: Option<&str>,
    authorization: Option<&str>,
    peer: SocketAddr,
) -> AdminDecision {
    match configured {
        Some(token) => match authorization.and_then(bearer) {
            None => AdminDecision::Unauthorized(
                "this admin route needs Authorization: Bearer <admin token>",
            ),
            Some(given) if constant_time_eq(given.as_bytes(), token.as_bytes()) => {
                AdminDecision::Allow
            }
            Some(_) => AdminDecision::Unauthorized("wrong admin token"),
        },
        None if is_loopback(peer.ip()) => AdminDecision::Allow,
        None => AdminDecision::Forbidden(CONFIGURE_ADMIN_TOKEN),
    }
}

/// The token of an `Authorization: Bearer <token>` header value (scheme case-insensitive).
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim();
    (!token.is_empty()).then_some(token)
}

/// Loopback, including IPv4-mapped IPv6 loopback (`::ffff:127.0.0.1`) from dual-stack
/// listeners.
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// Compares two secrets in time independent of where they differ and of their lengths:
/// both are hashed first (SHA-256), and the digests compared without an early exit.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let (ha, hb) = (Sha256::digest(a), Sha256::digest(b));
    let diff = ha
        .iter()
        .zip(hb.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // `black_box` keeps the optimiser from turning the fold into an early-exit compare.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn without_a_token_only_loopback_is_admitted() {
        for ok in [
            "127.0.0.1:5000",
            "127.1.2.3:1",
            "[::1]:80",
            "[::ffff:127.0.0.1]:9",
        ] {
            assert_eq!(
                admin_decision(None, None, addr(ok)),
                AdminDecision::Allow,
                "{ok}"
            );
        }
        for far in [
            "192.168.1.4:5000",
            "10.0.0.1:1",
            "[2001:db8::1]:80",
            "[::ffff:10.0.0.1]:9",
        ] {
            let d = admin_decision(None, Some("Bearer anything"), addr(far));
            assert!(
                matches!(d, AdminDecision::Forbidden(m) if m.contains("--admin-token")),
                "{far}: {d:?}"
            );
        }
    }

    #[test]
    fn with_a_token_everyone_needs_it_loopback_too() {
        let token = Some("s3cret");
        for peer in ["127.0.0.1:1", "192.168.1.4:2"] {
            let peer = addr(peer);
            assert!(matches!(
                admin_decision(token, None, peer),
                AdminDecision::Unauthorized(_)
            ));
            assert_eq!(
                admin_decision(token, Some("Bearer wrong"), peer),
                AdminDecision::Unauthorized("wrong admin token")
            );
            assert!(matches!(
                admin_decision(token, Some("Basic s3cret"), peer),
                AdminDecision::Unauthorized(_)
            ));
            assert!(matches!(
                admin_decision(token, Some("Bearer s3cret2"), peer),
                AdminDecision::Unauthorized(_)
            ));
            assert_eq!(
                admin_decision(token, Some("Bearer s3cret"), peer),
                AdminDecision::Allow
            );
            assert_eq!(
                admin_decision(token, Some("bearer   s3cret "), peer),
                AdminDecision::Allow
            );
        }
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("BEARER abc"), Some("abc"));
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer("Token abc"), None);
    }

    #[test]
    fn constant_time_eq_is_eq() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
