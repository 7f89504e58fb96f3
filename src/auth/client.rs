//! Client credentials.
//!
//! Two modes, either or both on, each turned on by setting its secret:
//!
//! - **Static token** (`--token`, `YMESH_TOKEN`, `token`): one shared password every client
//!   presents.
//! - **Signed user tokens** (`--shared-secret`, `SYNC_SHARED_SECRET`, `shared_secret`):
//!   `userId:signature`, the signature being the lowercase hex HMAC-SHA256 of the user id
//!   under the secret ([`sign_user`]; `ymesh token --user ID` prints one). The user id is
//!   then known: it reaches logs and the embedding API's hooks.
//!
//! A credential travels as `?token=` on the WebSocket URL (what y-websocket clients send
//! through `params`) or as `Authorization: Bearer <credential>`. The node's admin token is
//! accepted as a client credential too (an operator's tools need no second secret). Every
//! comparison is constant-time; no credential or secret is ever part of an error message.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::admin::constant_time_eq;

type HmacSha256 = Hmac<Sha256>;

/// Longest user id in a signed token (bytes).
pub const MAX_USER_ID: usize = 256;

/// Who a request is, once its credential was checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The user id of a signed user token or a scoped token's `sub`; `None` for the static
    /// token, the admin token or an open node.
    pub user: Option<String>,
    /// For a room-scoped token: its claims (which rooms, read or write). `None`: every
    /// room, read and write.
    pub scoped: Option<super::scoped::Claims>,
}

/// Why a credential was refused. The text is what the client is told (4401 or HTTP 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credential was presented.
    #[error(
        "this node needs a token: add ?token=... to the URL or send Authorization: Bearer <token>"
    )]
    Missing,
    /// A credential was presented and is not valid.
    #[error("invalid token")]
    Invalid,
    /// A room-scoped token past its expiry.
    #[error("token expired")]
    Expired,
}

/// The node's client authentication settings.
#[derive(Clone, Default)]
pub struct ClientAuth {
    token: Option<String>,
    shared_secret: Option<String>,
    admin_token: Option<String>,
}

// By hand: secrets never reach a log line.
impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuth")
            .field("token", &self.token.is_some())
            .field("shared_secret", &self.shared_secret.is_some())
            .finish()
    }
}

impl ClientAuth {
    /// Client authentication with the given secrets (`None`: that mode is off). The admin
    /// token, when set, is accepted as a client credential.
    pub fn new(
        token: Option<String>,
        shared_secret: Option<String>,
        admin_token: Option<String>,
    ) -> Self {
        ClientAuth {
            token,
            shared_secret,
            admin_token,
        }
    }

    /// Whether any client mode is on (otherwise the node is open to every client).
    pub fn is_on(&self) -> bool {
        self.token.is_some() || self.shared_secret.is_some()
    }

    /// The modes that are on, for logs and `GET /`: `token`, `signed`.
    pub fn modes(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.token.is_some() {
            out.push("token");
        }
        if self.shared_secret.is_some() {
            out.push("signed");
        }
        out
    }

    /// Checks a presented credential. With no mode on, everyone is let in.
    pub fn check(&self, credential: Option<&str>) -> Result<Identity, AuthError> {
        if !self.is_on() {
            return Ok(Identity::default());
        }
        let Some(given) = credential.filter(|c| !c.is_empty()) else {
            return Err(AuthError::Missing);
        };
        // Every configured secret is compared, whichever matches, so the time taken does
        // not tell which mode a guess was close to.
        let mut ok = false;
        for secret in [&self.token, &self.admin_token].into_iter().flatten() {
            ok |= constant_time_eq(given.as_bytes(), secret.as_bytes());
        }
        if ok {
            return Ok(Identity::default());
        }
        if let Some(secret) = &self.shared_secret {
            if super::scoped::looks_like_jwt(given) {
                return match super::scoped::verify(secret, given, super::scoped::now_s()) {
                    Ok(claims) => Ok(Identity {
                        user: claims.sub.clone(),
                        scoped: Some(claims),
                    }),
                    Err(super::scoped::ScopedError::Expired) => Err(AuthError::Expired),
                    Err(super::scoped::ScopedError::Invalid) => Err(AuthError::Invalid),
                };
            }
            if let Some(user) = verify_user(secret, given) {
                return Ok(Identity {
                    user: Some(user.to_string()),
                    scoped: None,
                });
            }
        }
        Err(AuthError::Invalid)
    }
}

/// A signed user token: `user_id:` followed by the lowercase hex HMAC-SHA256 of the user id
/// under `secret`.
pub fn sign_user(secret: &str, user_id: &str) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(user_id.as_bytes());
    let sig = mac.finalize().into_bytes();
    let mut out = String::with_capacity(user_id.len() + 1 + 64);
    out.push_str(user_id);
    out.push(':');
    for b in sig {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The user id of `token` if its signature is right (checked in constant time).
fn verify_user<'a>(secret: &str, token: &'a str) -> Option<&'a str> {
    // The signature is after the last ':', so user ids may contain ':'.
    let (user, sig) = token.rsplit_once(':')?;
    if user.is_empty() || user.len() > MAX_USER_ID || sig.len() != 64 {
        return None;
    }
    let sig = decode_hex(sig)?;
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(user.as_bytes());
    mac.verify_slice(&sig).ok().map(|()| user)
}

/// Lowercase hex only (what [`sign_user`] writes).
fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(*p.get(1)?)?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_when_no_mode_is_on() {
        let auth = ClientAuth::default();
        assert!(!auth.is_on());
        assert_eq!(auth.check(None), Ok(Identity::default()));
        assert_eq!(auth.check(Some("anything")), Ok(Identity::default()));
    }

    #[test]
    fn the_static_token() {
        let auth = ClientAuth::new(Some("s3cret".into()), None, None);
        assert_eq!(auth.check(Some("s3cret")), Ok(Identity::default()));
        assert_eq!(auth.check(Some("s3cret2")), Err(AuthError::Invalid));
        assert_eq!(auth.check(Some("")), Err(AuthError::Missing));
        assert_eq!(auth.check(None), Err(AuthError::Missing));
        assert_eq!(auth.modes(), vec!["token"]);
    }

    #[test]
    fn signed_user_tokens() {
        let auth = ClientAuth::new(None, Some("shh".into()), None);
        let alice = sign_user("shh", "alice");
        // Lowercase hex HMAC-SHA256 of the user id (Python: hmac.new(b"shh", b"alice",
        // hashlib.sha256).hexdigest()).
        assert_eq!(
            alice,
            "alice:2ad7878de6a367e683ea30f6ef9dd2fa63ad4ece6ae1985f9e4120ec2c3be2b7"
        );
        assert_eq!(
            auth.check(Some(&alice)),
            Ok(Identity {
                user: Some("alice".into()),
                scoped: None,
            })
        );
        // Another user's signature, a forged one, one under another secret, upper case.
        let bob = sign_user("shh", "bob");
        let swapped = format!("alice:{}", bob.split_once(':').unwrap().1);
        for bad in [
            swapped,
            "alice:00".to_string(),
            sign_user("other", "alice"),
            alice.to_uppercase(),
            "alice".to_string(),
            format!(":{}", &alice[6..]),
        ] {
            assert_eq!(auth.check(Some(&bad)), Err(AuthError::Invalid), "{bad}");
        }
        // User ids may hold ':'.
        let odd = sign_user("shh", "team:a");
        assert_eq!(
            auth.check(Some(&odd)).unwrap().user.as_deref(),
            Some("team:a")
        );
    }

    #[test]
    fn both_modes_and_the_admin_token() {
        let auth = ClientAuth::new(Some("tok".into()), Some("shh".into()), Some("adm".into()));
        assert!(auth.check(Some("tok")).is_ok());
        assert!(auth.check(Some("adm")).is_ok());
        assert_eq!(
            auth.check(Some(&sign_user("shh", "u")))
                .unwrap()
                .user
                .as_deref(),
            Some("u")
        );
        assert_eq!(auth.check(Some("nope")), Err(AuthError::Invalid));
        // The admin token alone turns no mode on.
        assert!(!ClientAuth::new(None, None, Some("adm".into())).is_on());
    }

    #[test]
    fn errors_hold_no_secret() {
        let auth = ClientAuth::new(Some("tok-secret".into()), None, None);
        let e = auth.check(Some("guess")).unwrap_err().to_string();
        assert!(!e.contains("tok-secret") && !e.contains("guess"), "{e}");
        assert!(!format!("{auth:?}").contains("tok-secret"));
    }
}
