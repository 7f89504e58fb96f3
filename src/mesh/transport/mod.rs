//! How link frames travel: a transport turns a connection into [`LinkIo`], whole frames in
//! and out over bounded channels, so a link's logic is the same whatever carries the frames.
//! Two transports: a WebSocket ([`ws`]: dialing a peer's `/_mesh`, or an inbound upgrade),
//! secured by the mesh's own Noise channel ([`crate::mesh::proto::channel`]); and with the
//! `p2p` cargo feature a libp2p stream (`p2p`: `/ymesh/mesh/1` over TCP, Noise and Yamux,
//! direct or through a circuit relay), secured by libp2p's Noise, which hands the mesh the
//! same [`LinkIo`] and a [`ChannelInfo`] whose binding comes from both node ids and fresh
//! values of both ends. [`p2p_settings`] holds the libp2p settings in every build, so a build
//! without the feature can refuse them by name.

#[cfg(feature = "p2p")]
pub mod p2p;
pub mod p2p_settings;
#[cfg(feature = "p2p")]
mod p2p_stream;
pub mod ws;

pub use p2p_settings::{P2pSettings, RelayLimits};

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::mesh::proto::channel::{ChannelError, Role, RECORD_PLAINTEXT};
use crate::mesh::wire::MAX_FRAME_LEN;

/// What the secure channel under a link proved: who is at the other end, and the value
/// both ends share for this connection only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    /// The peer's node id, proven by its node key.
    pub remote: String,
    /// The channel's handshake hash (a channel binding).
    pub hash: [u8; 32],
    /// This side's role (the dialer is the initiator).
    pub role: Role,
}

/// Why a link's secure channel did not come up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecureError {
    /// The channel handshake failed (identity, crypto, version, itself, unexpected node).
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// The peer closed the connection, with this code and reason.
    #[error("closed by the peer ({code}): {reason}")]
    ClosedByPeer {
        /// The WebSocket close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// The connection ended without a word.
    #[error("connection closed during the secure channel handshake")]
    Closed,
}

/// The secure channel of a connection, while it is being set up.
pub struct Securing {
    /// Fires when the peer's first handshake message arrived (a socket that sent
    /// something is not an idle one).
    pub heard: oneshot::Receiver<()>,
    /// The channel, once both identities are proven; frames flow after this.
    pub done: oneshot::Receiver<Result<ChannelInfo, SecureError>>,
}

/// A connection turned into frame channels by its transport's reader and writer tasks.
pub struct LinkIo {
    /// Frames to send, bounded in frames and bytes ([`LINK_QUEUE`], [`LINK_QUEUE_BYTES`]).
    pub tx: crate::queue::Sender,
    /// Frames received; ends when the connection closes.
    pub rx: mpsc::Receiver<Bytes>,
    /// Cancelled to close the connection (frames already queued still go out first).
    pub close: CancellationToken,
    /// The close code and reason the transport sends when `close` is cancelled, if one was
    /// set ([`LinkIo::close_with`]); without one it closes plainly.
    pub close_frame: Arc<OnceLock<(u16, String)>>,
    /// The close code and reason the peer sent, if it closed with one.
    pub peer_close: Arc<OnceLock<(u16, String)>>,
    /// The secure channel being set up, for a mesh link; `None` on a plain connection (a
    /// room on a plain y-websocket server).
    pub securing: Option<Securing>,
}

impl LinkIo {
    /// Closes the connection with `code` and `reason` (a WebSocket close frame; the reason
    /// is cut to the 123 bytes a close frame holds). Frames already queued go out first; the
    /// first code set wins.
    pub fn close_with(&self, code: u16, reason: &str) {
        let _ = self.close_frame.set((code, cut_reason(reason)));
        self.close.cancel();
    }

    /// Whether the transport ended the link because a write stayed blocked past the write
    /// deadline (the peer did not read; 4429).
    pub fn write_blocked(&self) -> bool {
        self.close_frame
            .get()
            .is_some_and(|(code, reason)| *code == 4429 && reason.starts_with(WRITE_BLOCKED))
    }

    /// Why the connection ended, as far as the transport knows: the peer's close reason, or
    /// the reason this side closed with (a record that failed to open, say).
    pub fn end_reason(&self) -> Option<String> {
        if let Some((code, reason)) = self.peer_close.get() {
            return Some(format!("closed by the peer ({code}): {reason}"));
        }
        self.close_frame
            .get()
            .map(|(code, reason)| format!("closed ({code}): {reason}"))
    }
}

/// How the close reason of a link whose peer did not read begins ([`LinkIo::write_blocked`]).
const WRITE_BLOCKED: &str = "the peer did not read for";

/// A write to a link stayed blocked for `limit`: the peer does not read. Ends the link with
/// 4429 (only named locally: nothing more gets through to the peer); it redials and resyncs.
/// Both roads' writers call it.
fn write_blocked(
    limit: std::time::Duration,
    close_frame: &OnceLock<(u16, String)>,
    close: &CancellationToken,
) {
    let reason = format!("{WRITE_BLOCKED} {} s", limit.as_secs_f64());
    tracing::warn!(reason, "link write blocked too long; closing the link");
    let _ = close_frame.set((4429, reason));
    close.cancel();
}

/// `reason` cut to the 123 bytes a close frame holds, on a character boundary.
pub fn cut_reason(reason: &str) -> String {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}

/// Frames queued towards one link before it counts as too slow and is closed (it resyncs
/// through the manifest when it comes back).
pub const LINK_QUEUE: usize = 4096;

/// The same bound in bytes (a frame is queued while less is queued, so one frame of any
/// size fits).
pub const LINK_QUEUE_BYTES: usize = 64 * 1024 * 1024;

/// How long one write to a link may stay blocked (the peer does not read) before the link
/// ends, unless the node sets `limits.write_timeout_s`; the peer redials and resyncs.
pub const LINK_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Largest sealed message: a frame of [`MAX_FRAME_LEN`] plus each record's length and tag.
pub const MAX_SEALED_LEN: usize =
    MAX_FRAME_LEN as usize + (MAX_FRAME_LEN as usize).div_ceil(RECORD_PLAINTEXT) * 18;
