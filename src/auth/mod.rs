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
//! | [`admin`] | the admin rule on top: bearer admin token, or loopback only when none is configured |
//!
//! The order is fixed: host, then origin (in every mode, open mode included), then the
//! client credential (when a mode is on), then, for admin routes, the admin rule.

pub mod admin;
pub mod client;
pub mod origin;

pub use admin::{
    admin_decision, bearer, constant_time_eq, is_loopback, AdminDecision, CONFIGURE_ADMIN_TOKEN,
};
pub use client::{sign_user, AuthError, ClientAuth, Identity};
