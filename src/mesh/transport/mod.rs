//! How link frames travel: a transport turns a connection into [`LinkIo`], whole frames in
//! and out over bounded channels, so a link's logic is the same whatever carries the frames.
//! Today the one transport is a WebSocket ([`ws`]: dialing a peer's `/_mesh`, or an inbound
//! upgrade); a libp2p stream plugs in beside it and hands the mesh the same [`LinkIo`].

pub mod ws;

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

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
}

impl LinkIo {
    /// Closes the connection with `code` and `reason` (a WebSocket close frame; the reason
    /// is cut to the 123 bytes a close frame holds). Frames already queued go out first; the
    /// first code set wins.
    pub fn close_with(&self, code: u16, reason: &str) {
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let _ = self.close_frame.set((code, reason[..end].to_string()));
        self.close.cancel();
    }
}

/// Frames queued towards one link before it counts as too slow and is closed (it resyncs
/// through the manifest when it comes back).
pub const LINK_QUEUE: usize = 4096;

/// The same bound in bytes (a frame is queued while less is queued, so one frame of any
/// size fits).
pub const LINK_QUEUE_BYTES: usize = 64 * 1024 * 1024;

/// How long one write to a link may stay blocked (the peer does not read) before the link
/// ends; the peer redials and resyncs.
pub const LINK_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
