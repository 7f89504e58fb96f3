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
//! Memory: a queue holds no storage for frames until one is queued, and gives it back each
//! time its receiver empties it, so an idle connection's queue is one small shared record
//! (a tokio `mpsc` channel allocates a block of 32 slots, about 1.1 kB, when it is created).
//! The frames sit in a `VecDeque` under a mutex held only to push or pop (never across an
//! `.await`); the byte budget is one atomic counter and a [`Notify`] for waiting senders.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use tokio::sync::Notify;

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
        Arc::new(Self::unshared(limit))
    }

    /// A budget kept inside its owner (a queue's).
    fn unshared(limit: usize) -> Self {
        ByteBudget {
            used: AtomicUsize::new(0),
            limit: limit.max(1),
            freed: Notify::new(),
        }
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

/// A queue of at most `frames` frames and (the last frame aside) `bytes` bytes. It holds no
/// storage for frames until one is queued, and gives it back whenever the receiver empties
/// it: an idle connection's queue is one small shared record.
pub fn channel(frames: usize, bytes: usize) -> (Sender, Receiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            frames: VecDeque::new(),
            waker: None,
            senders: 1,
        }),
        closed: AtomicBool::new(false),
        budget: ByteBudget::unshared(bytes),
        capacity: frames.max(1),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

/// What both ends of a [`channel`] share.
#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// The receiver is gone (also set under `state`; read without the lock).
    closed: AtomicBool,
    /// Bytes queued, against the byte limit; its `freed` wakes senders waiting for room
    /// and for the receiver to go.
    budget: ByteBudget,
    /// Most frames queued at once.
    capacity: usize,
}

#[derive(Debug)]
struct State {
    /// Queued frames; no storage while empty (see [`Receiver::take`]).
    frames: VecDeque<Bytes>,
    /// The receiver waiting for a frame.
    waker: Option<Waker>,
    /// Live [`Sender`]s: at 0 the receiver sees the end once the queue is empty.
    senders: usize,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned lock still holds a valid queue.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sending side of a [`channel`]; cloned freely.
#[derive(Debug)]
pub struct Sender {
    shared: Arc<Shared>,
}

impl Clone for Sender {
    fn clone(&self) -> Self {
        self.shared.state().senders += 1;
        Sender {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let waker = {
            let mut st = self.shared.state();
            st.senders -= 1;
            if st.senders == 0 {
                st.waker.take()
            } else {
                None
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl Sender {
    /// Queues `frame` now, or says why not: [`TrySendError::Full`] when the queue holds its
    /// limit of frames or bytes, [`TrySendError::Closed`] when the receiver is gone.
    pub fn try_send(&self, frame: Bytes) -> Result<(), TrySendError<Bytes>> {
        let shared = &*self.shared;
        if shared.closed.load(Ordering::Acquire) {
            return Err(TrySendError::Closed(frame));
        }
        let n = frame.len();
        if !shared.budget.reserve(n) {
            return Err(TrySendError::Full(frame));
        }
        let waker = {
            let mut st = shared.state();
            if shared.closed.load(Ordering::Acquire) {
                drop(st);
                shared.budget.release(n);
                return Err(TrySendError::Closed(frame));
            }
            if st.frames.len() >= shared.capacity {
                drop(st);
                shared.budget.release(n);
                return Err(TrySendError::Full(frame));
            }
            st.frames.push_back(frame);
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Queues `frame`, waiting while the queue is full (in frames or bytes). Fails only when
    /// the receiver is gone.
    pub async fn send(&self, mut frame: Bytes) -> Result<(), SendError<Bytes>> {
        loop {
            // Registered before trying, so a frame taken out in between is not missed.
            let freed = self.shared.budget.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.try_send(frame) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Closed(f)) => return Err(SendError(f)),
                Err(TrySendError::Full(f)) => frame = f,
            }
            freed.await;
        }
    }

    /// Bytes queued now.
    pub fn queued_bytes(&self) -> usize {
        self.shared.budget.used()
    }

    /// Whether the receiver is gone.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }
}

/// The receiving side of a [`channel`]. Taking a frame out gives its bytes back to the
/// budget: what a writer holds while writing is its own (bounded) batch.
#[derive(Debug)]
pub struct Receiver {
    shared: Arc<Shared>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let frames = {
            let mut st = self.shared.state();
            self.shared.closed.store(true, Ordering::Release);
            std::mem::take(&mut st.frames)
        };
        let n = frames.iter().map(Bytes::len).sum();
        drop(frames);
        // Wakes senders waiting for room: they see the queue closed.
        self.shared.budget.release(n);
    }
}

impl Receiver {
    /// Takes up to `frames` frames and `bytes` bytes (the first frame always) into `buf`,
    /// or registers `cx` to be woken by the next frame. `Ready(0)` once every sender is gone
    /// and the queue is empty.
    pub fn poll_recv_many(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut Vec<Bytes>,
        frames: usize,
        bytes: usize,
    ) -> Poll<usize> {
        let mut st = self.shared.state();
        if st.frames.is_empty() {
            if st.senders == 0 {
                return Poll::Ready(0);
            }
            match &st.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => st.waker = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        let n = self.take(&mut st, buf, frames.max(1), bytes);
        Poll::Ready(n)
    }

    /// Moves frames from the queue into `buf` (at least one when there is one), gives their
    /// bytes back, and frees the queue's storage once it is empty.
    fn take(&self, st: &mut State, buf: &mut Vec<Bytes>, frames: usize, bytes: usize) -> usize {
        let mut taken = 0;
        let mut total = 0usize;
        while taken < frames && (taken == 0 || total < bytes) {
            let Some(f) = st.frames.pop_front() else {
                break;
            };
            total += f.len();
            buf.push(f);
            taken += 1;
        }
        if st.frames.is_empty() {
            // An idle connection holds no room for frames it is not waiting to write.
            st.frames = VecDeque::new();
        }
        if taken > 0 {
            self.shared.budget.release(total);
        }
        taken
    }

    /// The next frame, or registers `cx` to be woken by one; `Ready(None)` once every sender
    /// is gone and the queue is empty.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let mut st = self.shared.state();
        if let Some(f) = self.pop(&mut st) {
            return Poll::Ready(Some(f));
        }
        if st.senders == 0 {
            return Poll::Ready(None);
        }
        match &st.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => st.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    fn pop(&self, st: &mut State) -> Option<Bytes> {
        let f = st.frames.pop_front()?;
        if st.frames.is_empty() {
            st.frames = VecDeque::new();
        }
        self.shared.budget.release(f.len());
        Some(f)
    }

    /// The next frame; `None` once every sender is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<Bytes> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next frame if one is queued.
    pub fn try_recv(&mut self) -> Result<Bytes, TryRecvError> {
        let mut st = self.shared.state();
        match self.pop(&mut st) {
            Some(f) => Ok(f),
            None if st.senders == 0 => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }

    /// Waits for a frame, then takes what else is queued into `buf` up to `frames` frames and
    /// `bytes` bytes (the first frame always). Returns how many were taken; 0 once the queue
    /// is closed and empty.
    pub async fn recv_many(&mut self, buf: &mut Vec<Bytes>, frames: usize, bytes: usize) -> usize {
        std::future::poll_fn(|cx| self.poll_recv_many(cx, buf, frames, bytes)).await
    }

    /// Frames queued now.
    pub fn len(&self) -> usize {
        self.shared.state().frames.len()
    }

    /// Whether no frame is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes queued now.
    pub fn queued_bytes(&self) -> usize {
        self.shared.budget.used()
    }

    /// Frame slots allocated now (0 while the queue is empty).
    #[cfg(test)]
    fn storage(&self) -> usize {
        self.shared.state().frames.capacity()
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

    #[test]
    fn a_queue_holds_storage_only_while_frames_wait() {
        let (tx, mut rx) = channel(64, 1000);
        assert_eq!(rx.storage(), 0, "a new queue allocates nothing for frames");
        tx.try_send(frame(1)).unwrap();
        tx.try_send(frame(1)).unwrap();
        assert!(rx.storage() >= 2);
        rx.try_recv().unwrap();
        assert!(rx.storage() >= 1, "kept while a frame still waits");
        rx.try_recv().unwrap();
        assert_eq!(rx.storage(), 0, "given back once empty");
        for _ in 0..3 {
            tx.try_send(frame(1)).unwrap();
        }
        let mut buf = Vec::new();
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(rx.poll_recv_many(&mut cx, &mut buf, 2, 100), Poll::Ready(2));
        assert!(rx.storage() >= 1);
        assert_eq!(rx.poll_recv_many(&mut cx, &mut buf, 2, 100), Poll::Ready(1));
        assert_eq!(rx.storage(), 0);
        assert!(rx.poll_recv_many(&mut cx, &mut buf, 2, 100).is_pending());
        assert_eq!(rx.len(), 0);
        assert_eq!(rx.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_a_frame_and_by_the_last_sender_leaving() {
        let (tx, mut rx) = channel(4, 100);
        let tx2 = tx.clone();
        let got = tokio::spawn(async move {
            let first = rx.recv().await.map(|f| f.len());
            let end = rx.recv().await;
            (first, end.is_none())
        });
        tokio::task::yield_now().await;
        tx.try_send(frame(7)).unwrap();
        drop(tx);
        tokio::task::yield_now().await;
        // One sender is left: the receiver still waits.
        assert!(!got.is_finished());
        drop(tx2);
        assert_eq!(got.await.unwrap(), (Some(7), true));
    }

    #[test]
    fn try_recv_tells_empty_from_disconnected_and_a_dropped_receiver_frees_its_frames() {
        let (tx, mut rx) = channel(4, 100);
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
        tx.try_send(frame(3)).unwrap();
        drop(tx);
        assert_eq!(rx.try_recv().unwrap().len(), 3);
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Disconnected)));

        let (tx, rx) = channel(4, 100);
        tx.try_send(frame(30)).unwrap();
        drop(rx);
        assert_eq!(tx.queued_bytes(), 0);
        assert!(tx.is_closed());
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
