//! Who may connect: every access decision, free of I/O.
//!
//! The router-wide layer in `server/access.rs` gathers a request's facts (its `Host` and
//! `Origin` headers, its credential, the route, the remote address) and asks this module;
//! handlers never decide access themselves.
//!
//! | module | decides |
//! |---|---|
//! | [`origin`] | which browser origins may talk to the node (its own origin, loopback origins, `tauri://localhost`, `allowed_origins`), and which `Host` names a loopback-bound node answers (DNS rebinding) |
//! | [`client`] | client credentials: the static token and signed user tokens, compared in constant time; the authenticated identity |
//! | [`scoped`] | room-scoped tokens: HS256 JWTs under the shared secret (`room`, `exp`, `scope`), minted and verified |
//! | [`admin`] | the admin rule on top: bearer admin token, or loopback only when none is configured |
//!
//! The order is fixed: host, then origin (in every mode, open mode included), then the
//! client credential (when a mode is on), then, for admin routes, the admin rule.

pub mod admin;
pub mod client;
pub mod origin;
pub mod proxy;
pub mod scoped;

pub use admin::{
    admin_decision, bearer, constant_time_eq, is_loopback, AdminDecision, CONFIGURE_ADMIN_TOKEN,
};
pub use client::{sign_user, AuthError, ClientAuth, Identity};

/// A conservative estimate of the entropy of a secret a person chose, in bits: its length
/// times the bits per character of the smallest alphabet that holds it (hex, lower-case,
/// letters and digits, printable). A random 32-byte hex string (`ymesh secret`) has 256; a
/// passphrase of dictionary words scores higher than it deserves, so this only ever finds
/// secrets too weak, never proves one strong.
pub fn secret_bits(secret: &str) -> u32 {
    let hex = secret.chars().all(|c| c.is_ascii_hexdigit());
    let lower = secret
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let alnum = secret.chars().all(|c| c.is_ascii_alphanumeric());
    let per_char = if hex {
        4.0
    } else if lower {
        5.17 // log2(36)
    } else if alnum {
        5.95 // log2(62)
    } else {
        6.55 // log2(94)
    };
    (secret.chars().count() as f64 * per_char) as u32
}

/// Below this many estimated bits a secret can be guessed by trying (a warning at start).
pub const STRONG_SECRET_BITS: u32 = 128;

/// The warning for a weak secret named `what` (`--mesh-secret`), if it is weak.
pub fn weak_secret_warning(what: &str, secret: &str) -> Option<String> {
    let bits = secret_bits(secret);
    (bits < STRONG_SECRET_BITS).then(|| {
        format!(
            "{what} is weak (about {bits} bits; {STRONG_SECRET_BITS} or more are needed to \
             resist guessing): generate one with `ymesh secret`"
        )
    })
}

/// A new random secret: 32 bytes from the operating system's generator, as 64 hex digits
/// (256 bits).
pub fn new_secret() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_and_strong_secrets() {
        for weak in [
            "correct horse",
            "secret",
            "0123456789abcdef",
            "Passw0rd!Passw0rd!",
        ] {
            assert!(weak_secret_warning("x", weak).is_some(), "{weak}");
        }
        let fresh = new_secret();
        assert_eq!(fresh.len(), 64);
        assert!(fresh.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(fresh, new_secret());
        assert_eq!(secret_bits(&fresh), 256);
        assert!(weak_secret_warning("x", &fresh).is_none());
        // 32 random printable characters, as a password manager makes them.
        assert!(weak_secret_warning("x", "Xk8#pQ2!vL9@mN4$rT7&wZ1*yB5^hJ3%").is_none());
        let msg = weak_secret_warning("--mesh-secret", "correct horse").unwrap();
        assert!(
            msg.contains("--mesh-secret") && msg.contains("ymesh secret"),
            "{msg}"
        );
        assert!(
            !msg.contains("correct horse"),
            "the secret never reaches a message"
        );
    }
}
