//! The writer's requests ([`Request`], [`Append`]), how the writer gathers one
//! transaction's worth of them ([`Batch`]) and how long it may hold a small batch open for
//! more ([`hold_until`]): the group-commit policy, apart from SQLite so that it is tested on
//! its own.

use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::store::{StoreError, StoreOptions, Tombstone};

/// Where the writer answers a compaction request.
pub(crate) type CompactReply = oneshot::Sender<Result<(u64, u64), StoreError>>;

/// One request to the writer.
pub(crate) enum Request {
    /// Append an update (see [`crate::store::Store::append`]).
    Append(Append),
    /// Compact a room and report `(bytes_before, bytes_after)`.
    Compact { room: String, reply: CompactReply },
    /// Delete a room and record its tombstone (see [`crate::store::Store::delete_room`]).
    Delete {
        tombstone: Tombstone,
        reply: oneshot::Sender<Result<(Tombstone, bool), StoreError>>,
    },
    /// Drop a room's data without a tombstone.
    Discard {
        room: String,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    /// Record an applied command id.
    MarkApplied {
        id: String,
        expires_ms: u64,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    /// Set a `meta` row other than `change_seq`.
    SetMeta {
        key: String,
        value: u64,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Record a room's schema version.
    SetSchema {
        room: String,
        version: u64,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Forget tombstones of deletions before `before_ms`.
    PurgeTombstones {
        before_ms: u64,
        reply: oneshot::Sender<Result<usize, StoreError>>,
    },
}

/// A queued append.
pub(crate) struct Append {
    pub(crate) ticket: u64,
    /// The room's name, shared with the room (no copy per append).
    pub(crate) room: Arc<str>,
    pub(crate) update: Bytes,
    pub(crate) state_vector: Vec<u8>,
    /// The room's full state after a failed commit; committing it heals the room.
    pub(crate) repair: bool,
}

/// The requests the writer gathers for one transaction.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) appends: Vec<Append>,
    pub(super) others: Vec<Request>,
    pub(super) items: usize,
    bytes: usize,
    /// A deletion ends the batch: appends queued after it must commit after it.
    ordered: bool,
}

impl Batch {
    pub(super) fn push(&mut self, req: Request) {
        self.items += 1;
        match req {
            Request::Append(a) => {
                self.bytes += a.update.len();
                self.appends.push(a);
            }
            other => {
                self.ordered |= matches!(other, Request::Delete { .. } | Request::Discard { .. });
                self.others.push(other);
            }
        }
    }

    /// No more requests fit (or may follow) in this transaction.
    pub(super) fn closed(&self, opts: &StoreOptions) -> bool {
        self.ordered || self.items >= opts.max_batch_items || self.bytes >= opts.max_batch_bytes
    }

    /// Takes whatever is queued, without blocking, until the batch is closed. Returns
    /// whether every sender is gone.
    pub(super) fn drain(&mut self, rx: &Receiver<Request>, opts: &StoreOptions) -> bool {
        while !self.closed(opts) {
            match rx.try_recv() {
                Ok(req) => self.push(req),
                Err(TryRecvError::Empty) => return false,
                Err(TryRecvError::Disconnected) => return true,
            }
        }
        false
    }
}

/// Until when the writer may hold a batch of `items` requests, whose first request arrived
/// at `started`, open for more; `None`: commit now.
///
/// Only a small batch (under a quarter of `max_batch_items`) is held. While someone waits
/// for the commit (`awaited`: a 102 echo, an HTTP write, a reply) it is held for
/// `batch_window` (default 0: not at all); while nobody does, for up to `commit_delay`, so
/// that a trickle of updates from many rooms (each its own commit and fsync before) shares
/// one commit. Holding a batch never delays an acknowledgement: a waiter arriving meanwhile
/// ends the hold.
pub(super) fn hold_until(
    started: Instant,
    opts: &StoreOptions,
    awaited: bool,
    items: usize,
) -> Option<Instant> {
    if items.saturating_mul(4) >= opts.max_batch_items {
        return None;
    }
    let hold: Duration = if awaited {
        opts.batch_window
    } else {
        opts.batch_window.max(opts.commit_delay)
    };
    (!hold.is_zero()).then(|| started + hold)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(window_ms: u64, delay_ms: u64) -> StoreOptions {
        StoreOptions {
            batch_window: Duration::from_millis(window_ms),
            commit_delay: Duration::from_millis(delay_ms),
            max_batch_items: 1024,
            ..StoreOptions::default()
        }
    }

    #[test]
    fn a_batch_nobody_waits_for_is_held_for_the_commit_delay() {
        let t = Instant::now();
        assert_eq!(
            hold_until(t, &opts(0, 20), false, 1),
            Some(t + Duration::from_millis(20))
        );
        // The longer of the two when both are set.
        assert_eq!(
            hold_until(t, &opts(30, 20), false, 1),
            Some(t + Duration::from_millis(30))
        );
    }

    #[test]
    fn an_awaited_batch_is_held_only_for_the_batch_window() {
        let t = Instant::now();
        assert_eq!(hold_until(t, &opts(0, 20), true, 1), None);
        assert_eq!(
            hold_until(t, &opts(2, 20), true, 1),
            Some(t + Duration::from_millis(2))
        );
    }

    #[test]
    fn a_batch_that_is_no_longer_small_is_committed_at_once() {
        let t = Instant::now();
        assert!(hold_until(t, &opts(0, 20), false, 255).is_some());
        assert_eq!(hold_until(t, &opts(0, 20), false, 256), None);
        assert_eq!(hold_until(t, &opts(5, 20), true, 256), None);
    }

    #[test]
    fn no_delay_configured_means_no_hold() {
        assert_eq!(hold_until(Instant::now(), &opts(0, 0), false, 1), None);
    }
}
