//! Why a connection closes: [`CloseReason`], one variant per close or refusal the node makes,
//! each with its WebSocket close code and reason text, and [`Kick`], the one-shot "close
//! this session" signal a client session or peer link carries.
//!
//! The codes are part of the product's interface (docs/protocol.md lists them); every place
//! that closes a connection names a variant here instead of a number and a free text, so a
//! code means one thing wherever it is sent. Where the text varies (which limit, which
//! error), the variant carries it as its detail.

use std::sync::{Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use tokio::sync::Notify;

/// WebSocket close code: normal closure (e.g. a duplicate peer link; the other is kept).
pub const CLOSE_NORMAL: u16 = 1000;
/// WebSocket close code: the node is shutting down.
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// WebSocket close code recorded (never sent) when the connection ended without a close
/// frame.
pub const CLOSE_CONNECTION_LOST: u16 = 1006;
/// WebSocket close code: a message exceeded the size limit.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// WebSocket close code: the room could not be opened.
pub const CLOSE_ROOM_UNAVAILABLE: u16 = 1011;
/// WebSocket close code: the room was reset to be synced again (reconnect).
pub const CLOSE_ROOM_RESET: u16 = 1012;
/// WebSocket close code: the node is at capacity (connections or rooms).
pub const CLOSE_AT_CAPACITY: u16 = 1013;
/// WebSocket close code: malformed message.
pub const CLOSE_MALFORMED: u16 = 4400;
/// WebSocket close code: unauthorized (no or bad credentials).
pub const CLOSE_UNAUTHORIZED: u16 = 4401;
/// WebSocket close code: forbidden (room not allowed, read-only, quota exceeded).
pub const CLOSE_FORBIDDEN: u16 = 4403;
/// WebSocket close code: timed out (pre-auth, liveness).
pub const CLOSE_TIMEOUT: u16 = 4408;
/// WebSocket close code: the room was deleted while the client was connected.
pub const CLOSE_ROOM_DELETED: u16 = 4410;
/// WebSocket close code: too slow (the outbound queue overflowed) or too fast.
pub const CLOSE_TOO_SLOW: u16 = 4429;

/// Why a connection is closed or refused. [`CloseReason::code`] gives the WebSocket close
/// code, the `Display` text the close frame's reason (truncated to 123 bytes when sent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloseReason {
    /// 1000: a normal close, e.g. a duplicate peer link (the other one is kept).
    #[error("{0}")]
    Normal(String),
    /// 1001: the node is shutting down.
    #[error("node shutting down")]
    ShuttingDown,
    /// 1009: a message was larger than the limit.
    #[error("message larger than the {limit} byte limit")]
    TooBig {
        /// The limit in bytes.
        limit: usize,
    },
    /// 1011: the room could not be opened (its stored state did not load).
    #[error("{0}")]
    RoomUnavailable(String),
    /// 1012: the room was dropped here to be synced again from a peer (`invalidate`); the
    /// client reconnects.
    #[error("room reset: syncing it again")]
    RoomReset,
    /// 1013: the node is at capacity (connections, rooms).
    #[error("{0}")]
    AtCapacity(String),
    /// 4400: a malformed message (or a text frame).
    #[error("{0}")]
    Malformed(String),
    /// 4401: missing or invalid credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// 4403: not allowed (the grant does not cover the room, a refused origin).
    #[error("{0}")]
    Forbidden(String),
    /// 4403: storing the update would pass a storage quota; nothing was applied.
    #[error("{0}")]
    QuotaExceeded(String),
    /// A read-only session sent an edit; nothing was applied. Its text is the reason of the
    /// AUTH permission-denied answer (the session stays open); as a close it would be 4403.
    #[error("read-only: this connection may not edit the room")]
    ReadOnly,
    /// 4408: timed out (no answer to ping, no credentials in time).
    #[error("{0}")]
    TimedOut(String),
    /// 4410: the room was deleted.
    #[error("room deleted")]
    RoomDeleted,
    /// 4429: too slow (the outbound queue is full) or too fast.
    #[error("{0}")]
    TooSlow(String),
    /// The connection ended without a close frame (recorded as 1006; nothing is sent).
    #[error("{0}")]
    ConnectionLost(String),
    /// The other side closed with `code` (1005 when its close frame had none); nothing more
    /// is sent.
    #[error("{reason}")]
    PeerClosed {
        /// Its close code.
        code: u16,
        /// Its reason text.
        reason: String,
    },
    /// Any other code (see [`Kick::kick`]).
    #[error("{reason}")]
    Other {
        /// The close code.
        code: u16,
        /// The reason text.
        reason: String,
    },
}

impl CloseReason {
    /// The WebSocket close code.
    pub fn code(&self) -> u16 {
        match self {
            CloseReason::Normal(_) => CLOSE_NORMAL,
            CloseReason::ShuttingDown => CLOSE_GOING_AWAY,
            CloseReason::TooBig { .. } => CLOSE_TOO_BIG,
            CloseReason::RoomUnavailable(_) => CLOSE_ROOM_UNAVAILABLE,
            CloseReason::RoomReset => CLOSE_ROOM_RESET,
            CloseReason::AtCapacity(_) => CLOSE_AT_CAPACITY,
            CloseReason::Malformed(_) => CLOSE_MALFORMED,
            CloseReason::Unauthorized(_) => CLOSE_UNAUTHORIZED,
            CloseReason::Forbidden(_) | CloseReason::QuotaExceeded(_) | CloseReason::ReadOnly => {
                CLOSE_FORBIDDEN
            }
            CloseReason::TimedOut(_) => CLOSE_TIMEOUT,
            CloseReason::RoomDeleted => CLOSE_ROOM_DELETED,
            CloseReason::TooSlow(_) => CLOSE_TOO_SLOW,
            CloseReason::ConnectionLost(_) => CLOSE_CONNECTION_LOST,
            CloseReason::PeerClosed { code, .. } | CloseReason::Other { code, .. } => *code,
        }
    }

    /// Whether the other side ended the connection: there is no close frame of ours to send.
    pub fn by_peer(&self) -> bool {
        matches!(
            self,
            CloseReason::PeerClosed { .. } | CloseReason::ConnectionLost(_)
        )
    }

    /// A malformed message: `malformed message: {error}`.
    pub fn malformed(error: impl std::fmt::Display) -> Self {
        CloseReason::Malformed(format!("malformed message: {error}"))
    }

    /// The reason for a close given as a code and a text: the variant with that code when
    /// it carries the text as its detail, or whose fixed text is `reason`; otherwise
    /// [`CloseReason::Other`]. The code and text come out as they went in.
    pub fn from_code(code: u16, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        let fixed = |variant: CloseReason, reason: String| {
            if variant.to_string() == reason {
                variant
            } else {
                CloseReason::Other { code, reason }
            }
        };
        match code {
            CLOSE_NORMAL => CloseReason::Normal(reason),
            CLOSE_GOING_AWAY => fixed(CloseReason::ShuttingDown, reason),
            CLOSE_ROOM_UNAVAILABLE => CloseReason::RoomUnavailable(reason),
            CLOSE_ROOM_RESET => fixed(CloseReason::RoomReset, reason),
            CLOSE_AT_CAPACITY => CloseReason::AtCapacity(reason),
            CLOSE_MALFORMED => CloseReason::Malformed(reason),
            CLOSE_UNAUTHORIZED => CloseReason::Unauthorized(reason),
            CLOSE_FORBIDDEN => CloseReason::Forbidden(reason),
            CLOSE_TIMEOUT => CloseReason::TimedOut(reason),
            CLOSE_ROOM_DELETED => fixed(CloseReason::RoomDeleted, reason),
            CLOSE_TOO_SLOW => CloseReason::TooSlow(reason),
            _ => CloseReason::Other { code, reason },
        }
    }
}

/// A raised [`Kick`]: why the connection closes, and how its close frame reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// Why.
    pub cause: CloseReason,
    /// The close frame's reason text (`cause`'s text; the sender truncates it to fit).
    pub reason: String,
    /// Write what is already queued (e.g. an AUTH denial explaining the close) first.
    pub flush_first: bool,
}

impl Close {
    /// The WebSocket close code.
    pub fn code(&self) -> u16 {
        self.cause.code()
    }

    /// Whether the other side ended the connection (no close frame of ours to send).
    pub fn by_peer(&self) -> bool {
        self.cause.by_peer()
    }
}

/// A one-shot "close this connection" signal that any task may raise; the first reason wins.
///
/// One per connection, so it is kept small: the reason (boxed, allocated only once raised),
/// a [`Notify`] for the tasks waiting on it (a `CancellationToken` would add a separately
/// allocated tree node), and the waker of the one task that drives the connection
/// ([`Kick::poll_kicked`]), which so needs no future of its own to wait on it.
#[derive(Debug, Default)]
pub struct Kick {
    close: OnceLock<Box<Close>>,
    raised: Notify,
    driver: Mutex<Option<Waker>>,
}

impl Kick {
    /// Asks the connection to close for `cause`. Later calls are ignored.
    pub fn close(&self, cause: CloseReason) {
        self.set(cause, false)
    }

    /// Like [`Kick::close`], but the frames already queued are written before the close.
    pub fn close_after_flush(&self, cause: CloseReason) {
        self.set(cause, true)
    }

    /// Asks the connection to close with `code` and `reason` (see
    /// [`CloseReason::from_code`]). Later calls are ignored.
    pub fn kick(&self, code: u16, reason: impl Into<String>) {
        self.close(CloseReason::from_code(code, reason))
    }

    fn set(&self, cause: CloseReason, flush_first: bool) {
        let close = Close {
            reason: cause.to_string(),
            cause,
            flush_first,
        };
        if self.close.set(Box::new(close)).is_ok() {
            self.raised.notify_waiters();
            let driver = self.driver.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(waker) = driver {
                waker.wake();
            }
        }
    }

    /// Whether a close was requested.
    pub fn is_kicked(&self) -> bool {
        self.close.get().is_some()
    }

    /// The close, once kicked.
    pub fn reason(&self) -> Option<&Close> {
        self.close.get().map(|c| &**c)
    }

    /// Ready once a close was requested; otherwise the task of `cx` is woken when one is.
    /// For the one task that drives the connection (a second caller takes the first's
    /// place); other tasks await [`Kick::kicked`].
    pub fn poll_kicked(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_kicked() {
            return Poll::Ready(());
        }
        {
            let mut driver = self.driver.lock().unwrap_or_else(|p| p.into_inner());
            match &*driver {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *driver = Some(cx.waker().clone()),
            }
        }
        // Looked at again after registering: a raise in between took the old waker or none.
        if self.is_kicked() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Resolves once a close was requested.
    pub async fn kicked(&self) {
        loop {
            // Registered before looking, so a raise in between is not missed.
            let raised = self.raised.notified();
            tokio::pin!(raised);
            raised.as_mut().enable();
            if self.is_kicked() {
                return;
            }
            raised.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_pinned_code_and_text() {
        let cases = [
            (CloseReason::Normal("duplicate link".into()), 1000),
            (CloseReason::ShuttingDown, 1001),
            (CloseReason::TooBig { limit: 10 }, 1009),
            (CloseReason::RoomUnavailable("x".into()), 1011),
            (CloseReason::RoomReset, 1012),
            (CloseReason::AtCapacity("x".into()), 1013),
            (CloseReason::malformed("bad"), 4400),
            (CloseReason::Unauthorized("x".into()), 4401),
            (CloseReason::Forbidden("x".into()), 4403),
            (CloseReason::QuotaExceeded("x".into()), 4403),
            (CloseReason::ReadOnly, 4403),
            (CloseReason::TimedOut("x".into()), 4408),
            (CloseReason::RoomDeleted, 4410),
            (CloseReason::TooSlow("x".into()), 4429),
        ];
        for (reason, code) in cases {
            assert_eq!(reason.code(), code, "{reason:?}");
            assert!(!reason.by_peer());
        }
        assert_eq!(
            CloseReason::TooBig { limit: 10 }.to_string(),
            "message larger than the 10 byte limit"
        );
        assert_eq!(
            CloseReason::malformed("bad").to_string(),
            "malformed message: bad"
        );
        assert!(CloseReason::ConnectionLost("write failed".into()).by_peer());
        assert_eq!(
            CloseReason::PeerClosed {
                code: 1005,
                reason: String::new()
            }
            .code(),
            1005
        );
    }

    #[test]
    fn from_code_keeps_code_and_text() {
        for (code, text) in [
            (1000, "duplicate link: the other one is kept"),
            (1001, "node shutting down"),
            (1001, "going away for another reason"),
            (4410, "room deleted"),
            (4429, "link queue full"),
            (1012, "room reset: syncing it again"),
            (3000, "application code"),
        ] {
            let reason = CloseReason::from_code(code, text);
            assert_eq!((reason.code(), reason.to_string().as_str()), (code, text));
        }
        assert_eq!(
            CloseReason::from_code(1001, "node shutting down"),
            CloseReason::ShuttingDown
        );
        assert_eq!(
            CloseReason::from_code(4429, "link queue full"),
            CloseReason::TooSlow("link queue full".into())
        );
    }

    #[test]
    fn first_kick_wins() {
        let kick = Kick::default();
        assert!(!kick.is_kicked() && kick.reason().is_none());
        kick.kick(4429, "link queue full");
        kick.close(CloseReason::ShuttingDown);
        let close = kick.reason().unwrap();
        assert_eq!(close.code(), 4429);
        assert_eq!(close.reason, "link queue full");
        assert!(!close.flush_first && !close.by_peer());
        assert!(kick.is_kicked());
        let flushed = Kick::default();
        flushed.close_after_flush(CloseReason::ReadOnly);
        assert!(flushed.reason().unwrap().flush_first);
    }

    #[tokio::test]
    async fn every_waiter_wakes_when_kicked_and_later_waiters_return_at_once() {
        let kick = std::sync::Arc::new(Kick::default());
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let kick = kick.clone();
                tokio::spawn(async move { kick.kicked().await })
            })
            .collect();
        tokio::task::yield_now().await;
        assert!(waiters.iter().all(|w| !w.is_finished()));
        kick.close(CloseReason::ShuttingDown);
        for w in waiters {
            tokio::time::timeout(std::time::Duration::from_secs(5), w)
                .await
                .expect("a waiter was not woken")
                .unwrap();
        }
        tokio::time::timeout(std::time::Duration::from_secs(5), kick.kicked())
            .await
            .expect("kicked() waits after the kick");
    }

    #[test]
    fn the_driver_is_woken_by_a_kick_and_then_ready() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        struct Count(AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let kick = Kick::default();
        assert!(kick.poll_kicked(&mut cx).is_pending());
        assert!(kick.poll_kicked(&mut cx).is_pending(), "registered once");
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        kick.close(CloseReason::ShuttingDown);
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "the driver was woken");
        assert!(kick.poll_kicked(&mut cx).is_ready());
        // A second close neither wins nor wakes again.
        kick.close(CloseReason::Normal(String::new()));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }
}
