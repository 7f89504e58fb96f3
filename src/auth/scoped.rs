//! Room-scoped client tokens: HS256 JWTs under the shared secret (crate `jsonwebtoken`).
//!
//! Claims, as ARCHITECTURE.md pins them: `room` (an exact room name, or a prefix ending in
//! `*`), `exp` (unix seconds), `scope` (`read` or `write`), and optionally `sub` (the user
//! id, for logs and hooks like a signed user token's). A valid token becomes an
//! [`Identity`](super::Identity) limited to those rooms, read-only for `scope: read`; the
//! server turns it into the session's grant, and the room check happens when the client
//! joins (4403 for a room outside the token's).
//!
//! Only HS256 is accepted (the algorithm is fixed, never read from the token's header), and
//! a token without `exp`, or past it, is refused: there is no revocation list, so every
//! scoped token expires. `ymesh token --room R` and `POST /tokens` mint them.

use serde::{Deserialize, Serialize};

/// Longest lifetime a minted token may have (30 days): tokens cannot be revoked one by one,
/// only all at once by changing the shared secret.
pub const MAX_TTL_S: u64 = 30 * 24 * 3600;

/// What a scoped token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Receive the document and live updates; edits are refused.
    Read,
    /// Read and edit.
    Write,
}

/// The claims of a scoped token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The room, or a prefix ending in `*`.
    pub room: String,
    /// Expiry, unix seconds.
    pub exp: u64,
    /// `read` or `write`.
    pub scope: Scope,
    /// The user id, if the token names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
}

impl Claims {
    /// Whether these claims cover `room`: the exact name, or a name starting with the
    /// prefix before a final `*`.
    pub fn covers(&self, room: &str) -> bool {
        match self.room.strip_suffix('*') {
            Some(prefix) => room.starts_with(prefix),
            None => self.room == room,
        }
    }
}

/// Why a scoped token was refused (each is a 4401 / HTTP 401 with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopedError {
    /// Past its `exp`.
    #[error("token expired")]
    Expired,
    /// Not a token this node issued (signature, algorithm, claims).
    #[error("invalid token")]
    Invalid,
}

/// Whether `credential` looks like a JWT (three base64url parts), as opposed to a static or
/// signed user token.
pub fn looks_like_jwt(credential: &str) -> bool {
    credential.split('.').count() == 3 && !credential.contains(':')
}

/// Mints a token for `room` with `scope`, valid for `ttl_s` seconds from `now_s`.
pub fn mint(
    secret: &str,
    room: &str,
    scope: Scope,
    ttl_s: u64,
    user: Option<&str>,
    now_s: u64,
) -> Result<String, MintError> {
    if room.is_empty() {
        return Err(MintError::Room);
    }
    if ttl_s == 0 || ttl_s > MAX_TTL_S {
        return Err(MintError::Ttl);
    }
    let claims = Claims {
        room: room.to_string(),
        exp: now_s + ttl_s,
        scope,
        sub: user.map(str::to_string),
    };
    let key =
        jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).map_err(|_| MintError::Encode)?;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &key,
    )
    .map_err(|_| MintError::Encode)
}

/// Why a token could not be minted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    /// No room given.
    #[error("a token needs a room (a name, or a prefix ending in *)")]
    Room,
    /// The lifetime is zero or over [`MAX_TTL_S`].
    #[error("the lifetime must be between 1 s and 30 days")]
    Ttl,
    /// The encoder failed.
    #[error("the token could not be encoded")]
    Encode,
}

/// Checks `token` under `secret` at `now_s`: the claims, or why not.
pub fn verify(secret: &str, token: &str, now_s: u64) -> Result<Claims, ScopedError> {
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_required_spec_claims(&["exp"]);
    // Checked here against the caller's clock, without leeway.
    validation.validate_exp = false;
    let key = jsonwebtoken::DecodingKey::from_secret(secret.as_bytes())
        .map_err(|_| ScopedError::Invalid)?;
    let data = jsonwebtoken::decode::<Claims>(token, &key, &validation)
        .map_err(|_| ScopedError::Invalid)?;
    if data.claims.exp <= now_s {
        return Err(ScopedError::Expired);
    }
    if data.claims.room.is_empty() {
        return Err(ScopedError::Invalid);
    }
    Ok(data.claims)
}

/// Unix seconds now.
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn a_minted_token_verifies_and_grants_its_room() {
        let t = mint("s3cret", "notes", Scope::Write, 3600, Some("ada"), NOW).unwrap();
        assert!(looks_like_jwt(&t));
        let c = verify("s3cret", &t, NOW + 10).unwrap();
        assert_eq!(c.room, "notes");
        assert!(c.covers("notes") && !c.covers("notes2"));
        assert_eq!(c.scope, Scope::Write);
        assert_eq!(c.sub.as_deref(), Some("ada"));
    }

    #[test]
    fn a_prefix_token_covers_its_rooms_read_only() {
        let t = mint("s", "team/*", Scope::Read, 60, None, NOW).unwrap();
        let c = verify("s", &t, NOW).unwrap();
        assert!(c.covers("team/a") && c.covers("team/") && !c.covers("other"));
        assert_eq!(c.scope, Scope::Read);
    }

    #[test]
    fn expired_forged_and_foreign_tokens_are_refused() {
        let t = mint("s", "notes", Scope::Write, 60, None, NOW).unwrap();
        assert_eq!(verify("s", &t, NOW + 60), Err(ScopedError::Expired));
        assert_eq!(verify("other", &t, NOW), Err(ScopedError::Invalid));
        // A changed claim breaks the signature.
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged_claims = base64url(br#"{"room":"*","exp":9999999999,"scope":"write"}"#);
        parts[1] = &forged_claims;
        assert_eq!(
            verify("s", &parts.join("."), NOW),
            Err(ScopedError::Invalid)
        );
        // "alg": "none" is not accepted.
        let none = format!(
            "{}.{}.",
            base64url(br#"{"alg":"none","typ":"JWT"}"#),
            base64url(br#"{"room":"notes","exp":9999999999,"scope":"write"}"#)
        );
        assert_eq!(verify("s", &none, NOW), Err(ScopedError::Invalid));
        assert_eq!(verify("s", "not.a.token", NOW), Err(ScopedError::Invalid));
    }

    #[test]
    fn lifetimes_and_rooms_are_checked_when_minting() {
        assert_eq!(
            mint("s", "", Scope::Read, 60, None, NOW),
            Err(MintError::Room)
        );
        assert_eq!(
            mint("s", "r", Scope::Read, 0, None, NOW),
            Err(MintError::Ttl)
        );
        assert_eq!(
            mint("s", "r", Scope::Read, MAX_TTL_S + 1, None, NOW),
            Err(MintError::Ttl)
        );
    }

    fn base64url(bytes: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..=chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
}
