//! The socket I/O of one client connection, in one task and one poll loop: reading frames
//! and handing them to the [`Session`], writing what the session's queue holds, pings and
//! liveness, the first-message deadline, token expiry and the write deadline, all in one
//! future with one timer. [`Conn::drive`] runs until the session is kicked; the caller
//! then drops the session (it leaves the room) and calls [`Conn::close`] for the close frame.
//!
//! Why one loop and not a reader and a writer task: an idle connection should hold almost
//! nothing. Two tasks meant two task allocations, a lock shared between the halves of the
//! socket and a future per half; tungstenite's socket kept a read buffer and a write buffer
//! for the connection's whole life. Here reads go through a buffer on the stack of the
//! poll (bytes are kept only while a frame is incomplete, [`super::frame::Decoder`]) and
//! the bytes of a write exist only until they are written: an idle connection holds its
//! socket, this future, its session and its queue's small record.
//!
//! Behaviour, as before: frames queued while a write is in flight are taken as one batch
//! (up to [`BATCH`] frames and [`BATCH_BYTES`]) and written before one flush; a write that
//! moves no byte for `limits.write_timeout_s` closes the client (4429); a ping goes out
//! every `limits.ping_interval_s` and a client that sent nothing since the previous ping is
//! closed (4408); a client that sends nothing within `limits.first_message_timeout_s` of
//! connecting is closed (4408); more than `limits.message_rate` messages a second close it
//! (4429); a text frame closes it (4400), a message over the size limit (1009); a ping is
//! answered with a pong and a close frame with its echo; frames of [`LARGE_FRAME`] bytes
//! or more are handled inside `block_in_place`.

use std::future::Future;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::frame::{self, Decoder, FrameError, Incoming, Outgoing};
use crate::metrics::Metrics;
use crate::queue;
use crate::room::{CloseReason, Kick, Session};
use crate::server::limits::RateLimit;
use crate::server::listen::WriteProgress;

/// Frames taken from the queue per flush.
pub(super) const BATCH: usize = 64;
/// Bytes taken from the queue per flush (the first frame always): what a connection holds
/// while its socket drains, on top of what its queue holds.
pub(super) const BATCH_BYTES: usize = 1024 * 1024;
/// Bytes read per read call, into a buffer on the stack of the poll (nothing is held
/// between reads but an incomplete frame). A frame whose rest is at least this large is
/// read straight into its own buffer.
const READ_CHUNK: usize = 8 * 1024;
/// Reads per poll before the task yields to the others on its worker.
const READS_PER_POLL: usize = 16;
/// Batches written per poll before the task yields.
const WRITES_PER_POLL: usize = 8;
/// Pongs are not queued behind more than this many unwritten bytes (a client flooding pings
/// without reading gets no more of them; it is closed by the write deadline).
const PONG_BACKLOG: usize = 16 * 1024;
/// How long a closing connection keeps writing what it owes before its close frame.
pub(super) const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Frames at least this large are handled inside `block_in_place`: a frame of millions of
/// small messages takes long enough to walk (O(size), but seconds for 64 MiB in a debug
/// build) that the worker's other tasks, other clients among them, must move to another
/// thread meanwhile.
pub(super) const LARGE_FRAME: usize = 256 * 1024;

/// The limits a connection lives under (those in force when it opened). One per config
/// snapshot, shared by every connection opened under it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(super) write_timeout: Duration,
    pub(super) ping_interval: Duration,
    pub(super) first_message: Duration,
    pub(super) message_rate: u64,
    pub(super) max_message_bytes: usize,
}

impl Limits {
    /// The connection limits of `limits`.
    pub(crate) fn of(limits: &crate::config::Limits) -> Limits {
        Limits {
            write_timeout: limits.write_timeout,
            ping_interval: limits.ping_interval,
            first_message: limits.first_message_timeout,
            message_rate: limits.message_rate,
            max_message_bytes: limits.max_message_bytes,
        }
    }
}

/// What the connection calls out to.
pub(super) struct Env<'a> {
    pub(super) metrics: &'a Metrics,
    pub(super) progress: Option<&'a WriteProgress>,
    /// Hands a maintenance-command result (type 103) to the node.
    pub(super) command_result: &'a (dyn Fn(&str) + Sync),
}

/// Whether `block_in_place` may be used here (not on a current-thread runtime, as in tests
/// that embed a node).
fn multi_threaded() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Conn<IO> {
    /// A connection on `io` writing what `outbound` holds, under `limits` (from now on),
    /// until `expires` (a room-scoped token's expiry) if given.
    pub(super) fn new(
        io: IO,
        outbound: queue::Receiver,
        limits: Arc<Limits>,
        expires: Option<Instant>,
    ) -> Self {
        let now = Instant::now();
        Conn {
            io,
            decoder: Decoder::new(limits.max_message_bytes, limits.max_message_bytes),
            out: Vec::new(),
            written: 0,
            write_started: None,
            write_check: now,
            outbound,
            rate: RateLimit::new(limits.message_rate),
            reading: true,
            unanswered_ping: false,
            first_deadline: Some(now + limits.first_message),
            next_ping: now + limits.ping_interval,
            expires,
            limits,
            reply_close: None,
        }
    }

    /// Runs the connection until its session's [`Kick`] is raised (by either side, a
    /// deadline, or shutdown, which kicks every session). Then the caller leaves the room
    /// and calls [`Conn::close`].
    ///
    /// Takes references only: the caller keeps the connection's state in one place, so the
    /// task's future holds it once (an `async fn` keeps its own copy of every argument).
    /// The kick is polled directly ([`Kick::poll_kicked`]), not through a future of its own.
    pub(super) async fn drive(&mut self, session: &mut Session, env: &Env<'_>) {
        let kick = session.kick().clone();
        let timer = tokio::time::sleep_until(self.next_deadline());
        tokio::pin!(timer);
        std::future::poll_fn(|cx| {
            if kick.poll_kicked(cx).is_ready() {
                return Poll::Ready(());
            }
            self.poll(cx, session, &kick, env, timer.as_mut())
        })
        .await;
    }
}

/// One connection's state between polls.
pub(super) struct Conn<IO> {
    io: IO,
    decoder: Decoder,
    /// Encoded frames being written; no storage while nothing is.
    out: Vec<u8>,
    /// Bytes of `out` written.
    written: usize,
    /// When the write in flight began.
    write_started: Option<Instant>,
    /// When the write in flight is checked for progress next.
    write_check: Instant,
    outbound: queue::Receiver,
    limits: Arc<Limits>,
    rate: RateLimit,
    /// The client may still send (no close frame, end of stream or read error yet).
    reading: bool,
    /// A ping went out and the client has sent nothing since.
    unanswered_ping: bool,
    /// The first message is due by then.
    first_deadline: Option<Instant>,
    next_ping: Instant,
    /// A room-scoped token's expiry: the session ends then (4401).
    expires: Option<Instant>,
    /// The client closed: the echo of its close frame is owed.
    reply_close: Option<Box<Option<(u16, String)>>>,
}

/// What the read side asks of the loop.
enum Read {
    /// Nothing more to read now.
    Pending,
    /// The session must end (its kick is raised).
    End,
    /// Yield to other tasks, then read on.
    Yield,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Conn<IO> {
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        session: &mut Session,
        kick: &Kick,
        env: &Env<'_>,
        mut timer: Pin<&mut Sleep>,
    ) -> Poll<()> {
        let mut yield_now = false;
        match self.poll_read(cx, session, kick, env) {
            Read::End => return Poll::Ready(()),
            Read::Yield => yield_now = true,
            Read::Pending => {}
        }
        match self.poll_write(cx, env, kick) {
            Poll::Ready(true) => return Poll::Ready(()),
            Poll::Ready(false) => yield_now = true,
            Poll::Pending => {}
        }
        // Deadlines: handled until the next one is in the future and the timer is armed.
        loop {
            let now = Instant::now();
            if self.deadlines(now, kick, env) {
                return Poll::Ready(());
            }
            let next = self.next_deadline();
            if timer.deadline() != next {
                timer.as_mut().reset(next);
            }
            if timer.as_mut().poll(cx).is_pending() {
                break;
            }
        }
        // A ping may have been queued by the deadlines.
        if self.pending_bytes() > 0 && self.written == 0 && !yield_now {
            match self.poll_write(cx, env, kick) {
                Poll::Ready(true) => return Poll::Ready(()),
                Poll::Ready(false) => yield_now = true,
                Poll::Pending => {}
            }
        }
        if yield_now {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }

    fn pending_bytes(&self) -> usize {
        self.out.len() - self.written
    }

    /// The first of the deadlines now running.
    fn next_deadline(&self) -> Instant {
        // The ping waits for a write in flight (see `deadlines`): its checks come instead.
        let mut next = match self.write_started {
            Some(_) => self.write_check,
            None => self.next_ping,
        };
        if let Some(d) = self.first_deadline {
            next = next.min(d);
        }
        if let Some(d) = self.expires {
            next = next.min(d);
        }
        next
    }

    /// A write begins at `now`: it runs under the write deadline.
    fn start_write(&mut self, now: Instant) {
        self.write_started = Some(now);
        self.write_check = now + self.check_every();
    }

    /// How often a write in flight is checked for progress: at a quarter of the deadline
    /// (at least 50 ms apart), so a slow reader of a large frame is measured by its
    /// progress, not by the time the whole write takes.
    fn check_every(&self) -> Duration {
        (self.limits.write_timeout / 4)
            .max(Duration::from_millis(50))
            .min(self.limits.write_timeout)
    }

    /// Acts on the deadlines that passed; true when the session must end.
    fn deadlines(&mut self, now: Instant, kick: &Kick, env: &Env<'_>) -> bool {
        if self.first_deadline.is_some_and(|d| now >= d) {
            kick.close(CloseReason::TimedOut(format!(
                "no message within {} s of connecting",
                self.limits.first_message.as_secs()
            )));
            return true;
        }
        if self.expires.is_some_and(|d| now >= d) {
            kick.close(CloseReason::Unauthorized(
                "token expired: reconnect with a new token".into(),
            ));
            return true;
        }
        if let Some(started) = self.write_started.filter(|_| now >= self.write_check) {
            let stalled = match env.progress {
                Some(p) => p.stalled(started.into_std()),
                None => now.saturating_duration_since(started),
            };
            if stalled >= self.limits.write_timeout {
                kick.close(stuck(self.limits.write_timeout));
                return true;
            }
            self.write_check = now + (self.limits.write_timeout - stalled).min(self.check_every());
        }
        // While a write is in flight the ping waits for it (the write deadline judges the
        // client meanwhile): a pong cannot come back for a ping stuck behind a large frame
        // that a slow client is still reading.
        if now >= self.next_ping && self.write_started.is_none() {
            if self.unanswered_ping {
                kick.close(CloseReason::TimedOut("no answer to ping".into()));
                return true;
            }
            self.unanswered_ping = true;
            self.next_ping = now + self.limits.ping_interval;
            self.queue_frame(Outgoing::Ping(&[]));
        }
        false
    }

    /// Appends a frame of the connection's own (ping, pong) to what is being written.
    fn queue_frame(&mut self, frame: Outgoing<'_>) {
        if self.out.is_empty() {
            self.start_write(Instant::now());
        }
        frame::encode(frame, &mut self.out);
    }

    /// Reads and handles what the client sent.
    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        session: &mut Session,
        kick: &Kick,
        env: &Env<'_>,
    ) -> Read {
        for _ in 0..READS_PER_POLL {
            if !self.reading {
                return Read::Pending;
            }
            let decoded = match self.decoder.direct(READ_CHUNK) {
                Some((buf, max)) => {
                    // Into the frame's own storage, at most the rest of the frame.
                    let mut limited = bytes::BufMut::limit(buf, max);
                    match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut limited) {
                        Poll::Pending => return Read::Pending,
                        Poll::Ready(Err(e)) => return self.read_failed(kick, &e),
                        Poll::Ready(Ok(0)) => {
                            return self.read_failed(kick, &"end of stream inside a frame");
                        }
                        Poll::Ready(Ok(_)) => {}
                    }
                    self.decode(&[], session, kick, env)
                }
                None => {
                    let mut stack = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
                    let mut rb = ReadBuf::uninit(&mut stack);
                    match Pin::new(&mut self.io).poll_read(cx, &mut rb) {
                        Poll::Pending => return Read::Pending,
                        Poll::Ready(Err(e)) => return self.read_failed(kick, &e),
                        Poll::Ready(Ok(())) => {}
                    }
                    if rb.filled().is_empty() {
                        // The end of the stream without a close frame.
                        kick.close(CloseReason::ConnectionLost("connection lost".into()));
                        return Read::End;
                    }
                    self.decode(rb.filled(), session, kick, env)
                }
            };
            if !decoded {
                return Read::End;
            }
        }
        Read::Yield
    }

    fn read_failed(&mut self, kick: &Kick, e: &dyn std::fmt::Display) -> Read {
        kick.close(CloseReason::ConnectionLost(format!("read failed: {e}")));
        Read::End
    }

    /// Decodes `input` (after what the decoder holds) and handles its messages; false when
    /// the session must end.
    fn decode(&mut self, input: &[u8], session: &mut Session, kick: &Kick, env: &Env<'_>) -> bool {
        let idle = self.out.is_empty();
        let Conn {
            decoder,
            out,
            written,
            limits,
            rate,
            reading,
            first_deadline,
            unanswered_ping,
            reply_close,
            ..
        } = self;
        let now = Instant::now();
        let result = decoder.decode(input, |msg| {
            *unanswered_ping = false;
            *first_deadline = None;
            match msg {
                Incoming::Binary(frame) => {
                    env.metrics.client_received(&frame);
                    if !rate.allow(now) {
                        kick.close(CloseReason::TooSlow(format!(
                            "too many messages: more than {} per second",
                            limits.message_rate
                        )));
                        return false;
                    }
                    let large = frame.len() >= LARGE_FRAME;
                    let handle = || session.handle_frame(frame, env.command_result);
                    let handled = if large && multi_threaded() {
                        tokio::task::block_in_place(handle)
                    } else {
                        handle()
                    };
                    if let Err(reason) = handled {
                        // The session raised its kick already.
                        if matches!(reason, CloseReason::QuotaExceeded(_)) {
                            env.metrics.quota_refused();
                        }
                        tracing::debug!(session = session.id(), reason = %reason, "closing session");
                        return false;
                    }
                    true
                }
                Incoming::Text => {
                    kick.close(CloseReason::Malformed(
                        "text frames are not part of the y-websocket protocol".into(),
                    ));
                    false
                }
                Incoming::Ping(payload) => {
                    if out.len() - *written < PONG_BACKLOG {
                        frame::encode(Outgoing::Pong(&payload), out);
                    }
                    true
                }
                Incoming::Pong => true,
                Incoming::Close(close) => {
                    let (code, reason) = close.clone().unwrap_or((1005, String::new()));
                    kick.close(CloseReason::PeerClosed { code, reason });
                    *reply_close = Some(Box::new(close));
                    *reading = false;
                    false
                }
            }
        });
        if idle && !self.out.is_empty() {
            // A pong is owed.
            self.start_write(now);
        }
        match result {
            Ok(go_on) => go_on && !kick.is_kicked(),
            Err(FrameError::TooBig { .. }) => {
                kick.close(CloseReason::TooBig {
                    limit: self.limits.max_message_bytes,
                });
                false
            }
            Err(e) => {
                kick.close(CloseReason::ConnectionLost(format!("read failed: {e}")));
                false
            }
        }
    }

    /// Writes what is owed and takes the next batch from the queue. `Ready(true)` when the
    /// session must end, `Ready(false)` to yield and go on, `Pending` once waiting for the
    /// socket or the queue.
    fn poll_write(&mut self, cx: &mut Context<'_>, env: &Env<'_>, kick: &Kick) -> Poll<bool> {
        for _ in 0..WRITES_PER_POLL {
            if self.out.is_empty() {
                let mut batch = Vec::new();
                match self
                    .outbound
                    .poll_recv_many(cx, &mut batch, BATCH, BATCH_BYTES)
                {
                    Poll::Pending => return Poll::Pending,
                    // Every sender is gone: the room let go of this session.
                    Poll::Ready(0) => {
                        kick.close(CloseReason::ConnectionLost("queue closed".into()));
                        return Poll::Ready(true);
                    }
                    Poll::Ready(_) => {}
                }
                env.metrics.client_sent_batch(&batch);
                let len = batch.iter().map(|f| frame::encoded_len(f.len())).sum();
                self.out = Vec::with_capacity(len);
                for f in &batch {
                    frame::encode(Outgoing::Binary(f), &mut self.out);
                }
                self.start_write(Instant::now());
            }
            match self.poll_flush_out(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => {
                    kick.close(CloseReason::ConnectionLost("write failed".into()));
                    return Poll::Ready(true);
                }
                Poll::Ready(Ok(())) => {}
            }
        }
        Poll::Ready(false)
    }

    /// Writes `out` to the socket and flushes it; frees it once written.
    fn poll_flush_out(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.written < self.out.len() {
            match Pin::new(&mut self.io).poll_write(cx, &self.out[self.written..]) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()))
                }
                Poll::Ready(Ok(n)) => self.written += n,
            }
        }
        std::task::ready!(Pin::new(&mut self.io).poll_flush(cx))?;
        // Nothing is kept between writes.
        self.out = Vec::new();
        self.written = 0;
        self.write_started = None;
        Poll::Ready(Ok(()))
    }

    /// After the kick: the rest of the write in flight, the queued frames when the close
    /// asks for them, and the close frame (ours, or the echo of the client's), all bounded
    /// by the write deadline (at most [`CLOSE_GRACE`]); then the socket is shut down.
    pub(super) async fn close(&mut self, kick: &Kick, env: &Env<'_>) {
        let Some(close) = kick.reason().cloned() else {
            return;
        };
        let limit = self.limits.write_timeout.min(CLOSE_GRACE);
        let _ = tokio::time::timeout(limit, async {
            if close.flush_first {
                // Bounded by the queue's capacity; the close follows right after.
                let mut batch: Vec<Bytes> = Vec::new();
                while let Ok(f) = self.outbound.try_recv() {
                    batch.push(f);
                }
                env.metrics.client_sent_batch(&batch);
                for f in &batch {
                    frame::encode(Outgoing::Binary(f), &mut self.out);
                }
            }
            match (&self.reply_close, close.by_peer()) {
                (Some(echo), _) => frame::encode(
                    Outgoing::Close(echo.as_ref().as_ref().map(|(c, r)| (*c, r.as_str()))),
                    &mut self.out,
                ),
                (None, true) => frame::encode(Outgoing::Close(None), &mut self.out),
                (None, false) => frame::encode(
                    Outgoing::Close(Some((close.code(), &close.reason))),
                    &mut self.out,
                ),
            }
            if std::future::poll_fn(|cx| self.poll_flush_out(cx))
                .await
                .is_ok()
            {
                let _ = std::future::poll_fn(|cx| Pin::new(&mut self.io).poll_shutdown(cx)).await;
            }
        })
        .await;
    }
}

/// A client that does not read blocks the write; past the deadline it is closed (4429).
fn stuck(write_timeout: Duration) -> CloseReason {
    CloseReason::TooSlow(format!(
        "too slow: did not read for {} s",
        write_timeout.as_secs_f64()
    ))
}
