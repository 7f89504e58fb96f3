//! Outbound frame queues bounded in bytes as well as in frames: [`channel`], [`Sender`],
//! [`Receiver`], and [`ByteBudget`], the shared byte count behind them that other holders of
//! large buffers (HTTP document responses) draw on too.
//!
//! Why bytes: a queue bounded only in frames holds anything from a few bytes to
//! `frames × largest message` (1,024 frames of 1 MiB updates is a gigabyte for one client that
//! stopped reading). Every frame handed to a queue reserves its length from the queue's
//! budget; taking it out of the queue gives the length back. A frame is accepted while the
//! queued bytes are below the limit, so any single frame fits (a 50 MiB SyncStep2 to a client
//! joining a large room) and a queue never holds more than its limit plus one frame.
//!
//! Two ways to send, for two kinds of producers: [`Sender::try_send`] never waits (the room
//! fans out under its lock; a full queue means the receiver is too slow and is closed, 4429),
//! [`Sender::send`] waits for room (a link's own frames, with backpressure). Frames shared by
//! many queues are one `Bytes` each, counted once per queue: the budget is what one queue
//! keeps alive that the others may not.
//!
//! No lock is held anywhere here; the budget is one atomic counter and a [`Notify`] for
//! waiting senders.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};

pub use tokio::sync::mpsc::error::{SendError, TryRecvError, TrySendError};

/// A byte count shared by the holders of large buffers, with a limit. [`ByteBudget::try_take`]
/// succeeds while the count is below the limit (so one oversized holder always fits), and the
/// bytes go back when its [`BudgetGuard`] drops.
#[derive(Debug)]
pub struct ByteBudget {
    used: AtomicUsize,
    limit: usize,
    freed: Notify,
}

impl ByteBudget {
    /// A budget of `limit` bytes (at least 1).
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(ByteBudget {
            used: AtomicUsize::new(0),
            limit: limit.max(1),
            freed: Notify::new(),
        })
    }

    /// The limit in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes `n` bytes when fewer than the limit are held now.
    fn reserve(&self, n: usize) -> bool {
        let mut cur = self.used.load(Ordering::Relaxed);
        loop {
            if cur >= self.limit {
                return false;
            }
            match self.used.compare_exchange_weak(
                cur,
                cur.saturating_add(n),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }

    fn release(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
        self.freed.notify_waiters();
    }

    /// Takes `n` bytes, held until the guard drops; `None` when the budget is spent.
    pub fn try_take(self: &Arc<Self>, n: usize) -> Option<BudgetGuard> {
        self.reserve(n).then(|| BudgetGuard {
            budget: self.clone(),
            n,
        })
    }

    /// Waits until `n` bytes can be taken. Cancel-safe: nothing is taken unless it returns.
    pub async fn take(self: &Arc<Self>, n: usize) -> BudgetGuard {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(g) = self.try_take(n) {
                return g;
            }
            freed.await;
        }
    }
}

/// Bytes held from a [`ByteBudget`]; given back on drop.
#[derive(Debug)]
pub struct BudgetGuard {
    budget: Arc<ByteBudget>,
    n: usize,
}

impl BudgetGuard {
    /// The bytes held.
    pub fn bytes(&self) -> usize {
        self.n
    }
}

impl Drop for BudgetGuard {
    fn drop(&mut self) {
        self.budget.release(self.n);
    }
}

/// A queue of at most `frames` frames and (the last frame aside) `bytes` bytes.
pub fn channel(frames: usize, bytes: usize) -> (Sender, Receiver) {
    let (tx, rx) = mpsc::channel(frames.max(1));
    let budget = ByteBudget::new(bytes);
    (
        Sender {
            tx,
            budget: budget.clone(),
        },
        Receiver { rx, budget },
    )
}

/// The sending side of a [`channel`]; cloned freely.
#[derive(Debug, Clone)]
pub struct Sender {
    tx: mpsc::Sender<Bytes>,
    budget: Arc<ByteBudget>,
}

impl Sender {
    /// Queues `frame` now, or says why not: [`TrySendError::Full`] when the queue holds its
    /// limit of frames or bytes, [`TrySendError::Closed`] when the receiver is gone.
    pub fn try_send(&self, frame: Bytes) -> Result<(), TrySendError<Bytes>> {
        if self.tx.is_closed() {
            return Err(TrySendError::Closed(frame));
        }
        let n = frame.len();
        if !self.budget.reserve(n) {
            return Err(TrySendError::Full(frame));
        }
        self.tx
            .try_send(frame)
            .inspect_err(|_| self.budget.release(n))
    }

    /// Queues `frame`, waiting while the queue is full (in frames or bytes). Fails only when
    /// the receiver is gone.
    pub async fn send(&self, frame: Bytes) -> Result<(), SendError<Bytes>> {
        let n = frame.len();
        loop {
            if self.tx.is_closed() {
                return Err(SendError(frame));
            }
            let freed = self.budget.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.budget.reserve(n) {
                break;
            }
            tokio::select! {
                _ = freed => {}
                _ = self.tx.closed() => {}
            }
        }
        self.tx
            .send(frame)
            .await
            .inspect_err(|_| self.budget.release(n))
    }

    /// Bytes queued now.
    pub fn queued_bytes(&self) -> usize {
        self.budget.used()
    }

    /// Whether the receiver is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// The receiving side of a [`channel`]. Taking a frame out gives its bytes back to the
/// budget: what a writer holds while writing is its own (bounded) batch.
#[derive(Debug)]
pub struct Receiver {
    rx: mpsc::Receiver<Bytes>,
    budget: Arc<ByteBudget>,
}

impl Receiver {
    /// The next frame; `None` once every sender is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<Bytes> {
        let frame = self.rx.recv().await?;
        self.budget.release(frame.len());
        Some(frame)
    }

    /// The next frame if one is queued.
    pub fn try_recv(&mut self) -> Result<Bytes, TryRecvError> {
        let frame = self.rx.try_recv()?;
        self.budget.release(frame.len());
        Ok(frame)
    }

    /// Waits for a frame, then takes what else is queued into `buf` up to `frames` frames and
    /// `bytes` bytes (the first frame always). Returns how many were taken; 0 once the queue
    /// is closed and empty.
    pub async fn recv_many(&mut self, buf: &mut Vec<Bytes>, frames: usize, bytes: usize) -> usize {
        let Some(first) = self.recv().await else {
            return 0;
        };
        let mut total = first.len();
        buf.push(first);
        let mut taken = 1;
        while taken < frames && total < bytes {
            match self.try_recv() {
                Ok(f) => {
                    total += f.len();
                    buf.push(f);
                    taken += 1;
                }
                Err(_) => break,
            }
        }
        taken
    }

    /// Bytes queued now.
    pub fn queued_bytes(&self) -> usize {
        self.budget.used()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: usize) -> Bytes {
        Bytes::from(vec![0u8; n])
    }

    #[test]
    fn a_queue_takes_frames_while_below_its_byte_limit() {
        let (tx, mut rx) = channel(100, 10);
        tx.try_send(frame(6)).unwrap();
        // Still below the limit: the frame that crosses it is taken.
        tx.try_send(frame(6)).unwrap();
        assert!(matches!(tx.try_send(frame(1)), Err(TrySendError::Full(_))));
        assert_eq!(tx.queued_bytes(), 12);
        rx.try_recv().unwrap();
        assert_eq!(rx.queued_bytes(), 6);
        tx.try_send(frame(1)).unwrap();
    }

    #[test]
    fn one_frame_larger_than_the_limit_fits_an_empty_queue() {
        let (tx, mut rx) = channel(4, 10);
        tx.try_send(frame(1000)).unwrap();
        assert!(tx.try_send(frame(1)).is_err());
        assert_eq!(rx.try_recv().unwrap().len(), 1000);
        assert_eq!(tx.queued_bytes(), 0);
    }

    #[test]
    fn the_frame_limit_still_holds_and_gives_its_bytes_back() {
        let (tx, _rx) = channel(2, 1000);
        tx.try_send(frame(1)).unwrap();
        tx.try_send(frame(1)).unwrap();
        assert!(matches!(tx.try_send(frame(1)), Err(TrySendError::Full(_))));
        assert_eq!(tx.queued_bytes(), 2);
    }

    #[test]
    fn sending_to_a_dropped_receiver_fails_as_closed() {
        let (tx, rx) = channel(2, 10);
        drop(rx);
        assert!(matches!(
            tx.try_send(frame(1)),
            Err(TrySendError::Closed(_))
        ));
        assert_eq!(tx.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn send_waits_for_bytes_to_be_taken_out() {
        let (tx, mut rx) = channel(100, 10);
        tx.send(frame(10)).await.unwrap();
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send(frame(5)).await.is_ok() }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        assert_eq!(rx.recv().await.unwrap().len(), 10);
        assert!(waiting.await.unwrap());
        assert_eq!(rx.recv().await.unwrap().len(), 5);
    }

    #[tokio::test]
    async fn a_waiting_send_fails_when_the_receiver_goes() {
        let (tx, rx) = channel(100, 10);
        tx.send(frame(10)).await.unwrap();
        let waiting = tokio::spawn(async move { tx.send(frame(5)).await.is_err() });
        tokio::task::yield_now().await;
        drop(rx);
        assert!(waiting.await.unwrap());
    }

    #[tokio::test]
    async fn recv_many_stops_at_the_byte_cap() {
        let (tx, mut rx) = channel(100, 1000);
        for _ in 0..10 {
            tx.try_send(frame(10)).unwrap();
        }
        let mut buf = Vec::new();
        assert_eq!(rx.recv_many(&mut buf, 64, 25).await, 3);
        assert_eq!(rx.queued_bytes(), 70);
        drop(tx);
        buf.clear();
        assert_eq!(rx.recv_many(&mut buf, 64, 1000).await, 7);
        assert_eq!(rx.recv_many(&mut buf, 64, 1000).await, 0);
    }

    #[tokio::test]
    async fn a_budget_guard_gives_its_bytes_back_on_drop() {
        let budget = ByteBudget::new(100);
        let a = budget.try_take(150).unwrap();
        assert!(budget.try_take(1).is_none());
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.take(10).await.bytes() }
        });
        tokio::task::yield_now().await;
        drop(a);
        assert_eq!(waiting.await.unwrap(), 10);
        assert_eq!(budget.used(), 0);
    }
}
