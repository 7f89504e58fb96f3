//! One libp2p mesh stream turned into a [`LinkIo`]: the binding exchange that opens it,
//! then its writer and reader tasks (see [`super::p2p`] for the whole transport).
//!
//! Frames travel back to back, each carrying its length (`varUint(len) · payload`); the reader
//! refuses a declared length over [`MAX_FRAME_LEN`] before reading it. The writer writes
//! every queued frame, flushes once the queue is empty, and ends the link when the peer takes
//! nothing for the write timeout (4429). A link closed with a code and reason
//! ([`LinkIo::close_with`]) ends its stream with a **close record**, a frame of declared length
//! 0 followed by `varUint(len) · code · reason`, so the peer learns why (4408, 4429, a refusal
//! after a reload, ...) as it would from a WebSocket close frame.

use std::io;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use libp2p::PeerId;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::p2p::{BINDING_DOMAIN, MESH_PROTOCOL};
use super::{ChannelInfo, LinkIo, SecureError, Securing, LINK_QUEUE, LINK_QUEUE_BYTES};
use crate::mesh::proto::channel::Role;
use crate::mesh::wire::MAX_FRAME_LEN;

/// The binding of a stream between `dialer` and `listener` (see the module docs).
pub(super) fn binding(
    dialer: &PeerId,
    listener: &PeerId,
    dialer_nonce: &[u8; 32],
    listener_nonce: &[u8; 32],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(BINDING_DOMAIN);
    h.update(MESH_PROTOCOL.as_bytes());
    for id in [dialer, listener] {
        let bytes = id.to_bytes();
        h.update([bytes.len() as u8]);
        h.update(&bytes);
    }
    h.update(dialer_nonce);
    h.update(listener_nonce);
    h.finalize().into()
}

/// Turns a mesh stream into a [`LinkIo`]: the binding exchange (its `securing`), then one
/// writer and one reader task.
pub(super) fn link_io<S: Stream>(
    stream: S,
    local: PeerId,
    remote: PeerId,
    role: Role,
    write_timeout: Duration,
) -> LinkIo {
    let (out_tx, out_rx) = crate::queue::channel(LINK_QUEUE, LINK_QUEUE_BYTES);
    let (in_tx, in_rx) = mpsc::channel::<Bytes>(256);
    let close = CancellationToken::new();
    let close_frame: Arc<OnceLock<(u16, String)>> = Arc::default();
    let peer_close: Arc<OnceLock<(u16, String)>> = Arc::default();
    let (heard_tx, heard) = oneshot::channel();
    let (done_tx, done) = oneshot::channel();
    let ends = Ends {
        out_rx,
        in_tx,
        close: close.clone(),
        close_frame: close_frame.clone(),
        peer_close: peer_close.clone(),
        write_timeout,
    };
    tokio::spawn(run_stream(
        stream, ends, local, remote, role, heard_tx, done_tx,
    ));
    LinkIo {
        tx: out_tx,
        rx: in_rx,
        close,
        close_frame,
        peer_close,
        securing: Some(Securing { heard, done }),
    }
}

/// What a mesh stream is to this module: a libp2p stream, or a pipe in the tests.
pub(super) trait Stream:
    futures_util::io::AsyncRead + futures_util::io::AsyncWrite + Send + Unpin + 'static
{
}

impl<S> Stream for S where
    S: futures_util::io::AsyncRead + futures_util::io::AsyncWrite + Send + Unpin + 'static
{
}

/// The stream's ends towards the link.
struct Ends {
    out_rx: crate::queue::Receiver,
    in_tx: mpsc::Sender<Bytes>,
    close: CancellationToken,
    close_frame: Arc<OnceLock<(u16, String)>>,
    peer_close: Arc<OnceLock<(u16, String)>>,
    write_timeout: Duration,
}

async fn run_stream<S: Stream>(
    stream: S,
    ends: Ends,
    local: PeerId,
    remote: PeerId,
    role: Role,
    heard: oneshot::Sender<()>,
    done: oneshot::Sender<Result<ChannelInfo, SecureError>>,
) {
    let (reader, mut writer) = stream.split();
    let mut reader = BufReader::with_capacity(16 * 1024, reader);
    let ours: [u8; 32] = rand::random();
    let exchange = async {
        writer.write_all(&ours).await?;
        writer.flush().await?;
        let mut theirs = [0u8; 32];
        reader.read_exact(&mut theirs[..1]).await?;
        let _ = heard.send(());
        reader.read_exact(&mut theirs[1..]).await?;
        Ok::<_, io::Error>(theirs)
    };
    let theirs = tokio::select! {
        _ = ends.close.cancelled() => {
            let _ = done.send(Err(SecureError::Closed));
            return;
        }
        r = exchange => match r {
            Ok(t) => t,
            Err(_) => {
                let _ = done.send(Err(SecureError::Closed));
                return;
            }
        },
    };
    let hash = match role {
        Role::Initiator => binding(&local, &remote, &ours, &theirs),
        Role::Responder => binding(&remote, &local, &theirs, &ours),
    };
    let info = ChannelInfo {
        remote: remote.to_string(),
        hash,
        role,
    };
    if done.send(Ok(info)).is_err() {
        return;
    }
    let Ends {
        mut out_rx,
        in_tx,
        close,
        close_frame,
        peer_close,
        write_timeout,
    } = ends;
    let c1 = close.clone();
    let frame = close_frame.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                f = out_rx.recv() => match f {
                    Some(f) => {
                        let write = async {
                            writer.write_all(&f).await?;
                            while let Ok(more) = out_rx.try_recv() {
                                writer.write_all(&more).await?;
                            }
                            writer.flush().await
                        };
                        match tokio::time::timeout(write_timeout, write).await {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) => break,
                            Err(_) => {
                                super::write_blocked(write_timeout, &frame, &c1);
                                return;
                            }
                        }
                    }
                    None => break,
                },
                _ = c1.cancelled() => break,
            }
        }
        // `close_with` sets the reason before cancelling `close`: it is seen whichever way
        // the loop ended. A write that timed out returned above (nothing gets through).
        if let Some((code, reason)) = frame.get() {
            let record = close_record(*code, reason);
            let _ = tokio::time::timeout(write_timeout, async {
                writer.write_all(&record).await?;
                writer.flush().await
            })
            .await;
        }
        let _ = writer.close().await;
    });
    loop {
        let next = tokio::select! {
            _ = close.cancelled() => break,
            f = read(&mut reader) => f,
        };
        match next {
            Ok(Read::Frame(f)) => {
                if in_tx.send(f).await.is_err() {
                    break;
                }
            }
            Ok(Read::Closed(code, reason)) => {
                let _ = peer_close.set((code, reason));
                break;
            }
            Ok(Read::End) => break,
            Err(e) => {
                tracing::debug!(error = %e, "p2p mesh stream: bad frame");
                let _ = close_frame.set((4400, e));
                break;
            }
        }
    }
    close.cancel();
}

/// What the reader took from the stream.
#[derive(Debug, PartialEq, Eq)]
enum Read {
    /// One whole frame, with its length.
    Frame(Bytes),
    /// The peer's close record: it ends the link with this code and reason.
    Closed(u16, String),
    /// The stream ended cleanly between frames (no close record).
    End,
}

/// Longest close record payload: the code and a reason of at most 123 bytes, as a
/// WebSocket close frame holds.
const MAX_CLOSE_LEN: u64 = 2 + 123;

/// The close record for `code` and `reason`: a frame of declared length 0 (no mesh frame is
/// empty) and then `varUint(len) · code (u16, big endian) · reason (UTF-8, at most 123
/// bytes)`. It is the last thing a writer sends, as a WebSocket close frame is.
fn close_record(code: u16, reason: &str) -> Vec<u8> {
    let reason = super::cut_reason(reason);
    let len = 2 + reason.len();
    let mut out = Vec::with_capacity(3 + len);
    out.push(0);
    out.push(len as u8); // at most 125: one varUint byte
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(reason.as_bytes());
    out
}

/// Reads one whole frame or the peer's close record.
async fn read<R: futures_util::io::AsyncRead + Unpin>(r: &mut R) -> Result<Read, String> {
    match read_frame(r, MAX_FRAME_LEN).await? {
        None => Ok(Read::End),
        Some(f) if f.as_ref() != [0] => Ok(Read::Frame(f)),
        Some(_) => {
            let record = read_frame(r, MAX_CLOSE_LEN)
                .await?
                .ok_or("the stream ended inside a close record")?;
            // The record's own length byte comes first (one byte: at most 125).
            let body = &record[1..];
            if body.len() < 2 {
                return Err("a close record without a code".into());
            }
            let code = u16::from_be_bytes([body[0], body[1]]);
            let reason = String::from_utf8_lossy(&body[2..]).into_owned();
            Ok(Read::Closed(code, reason))
        }
    }
}

/// Reads one whole frame (`varUint(len) · payload`, returned with its length). `Ok(None)`
/// at a clean end of the stream between frames.
async fn read_frame<R: futures_util::io::AsyncRead + Unpin>(
    r: &mut R,
    max: u64,
) -> Result<Option<Bytes>, String> {
    let mut header = [0u8; 10];
    let mut len: u64 = 0;
    let mut n = 0;
    loop {
        let mut b = [0u8; 1];
        match r.read_exact(&mut b).await {
            Ok(()) => {}
            Err(e) if n == 0 && e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.to_string()),
        }
        header[n] = b[0];
        len |= u64::from(b[0] & 0x7f) << (7 * n);
        n += 1;
        if b[0] & 0x80 == 0 {
            break;
        }
        if n == header.len() {
            return Err("frame length does not end".into());
        }
    }
    if len > max {
        return Err(format!("frame of {len} bytes is over the limit of {max}"));
    }
    let mut buf = BytesMut::with_capacity(n + len as usize);
    buf.put_slice(&header[..n]);
    buf.resize(n + len as usize, 0);
    r.read_exact(&mut buf[n..])
        .await
        .map_err(|e| e.to_string())?;
    Ok(Some(buf.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binding_names_both_nodes_in_their_roles_and_both_nonces() {
        let a = PeerId::random();
        let b = PeerId::random();
        let (x, y) = ([1u8; 32], [2u8; 32]);
        let base = binding(&a, &b, &x, &y);
        assert_ne!(base, binding(&b, &a, &x, &y), "roles swapped");
        assert_ne!(base, binding(&a, &PeerId::random(), &x, &y), "another peer");
        assert_ne!(base, binding(&a, &b, &y, &x), "nonces swapped");
        assert_ne!(base, binding(&a, &b, &x, &[3u8; 32]), "another nonce");
        assert_eq!(base, binding(&a, &b, &x, &y));
    }

    #[tokio::test]
    async fn frames_are_read_whole_and_oversized_ones_refused() {
        let f1 = crate::mesh::wire::encode_control(&crate::mesh::wire::Control::Ping { t: 5 });
        let f2 = crate::mesh::wire::encode_room("r", &[0, 0, 1, 0]);
        let mut bytes = f1.to_vec();
        bytes.extend_from_slice(&f2);
        let mut r = futures_util::io::Cursor::new(bytes);
        assert_eq!(read(&mut r).await.unwrap(), Read::Frame(f1));
        assert_eq!(read(&mut r).await.unwrap(), Read::Frame(f2));
        assert_eq!(read(&mut r).await.unwrap(), Read::End);
        // A declared length over the limit is refused before anything is read or allocated.
        let mut big = Vec::new();
        let mut v = MAX_FRAME_LEN + 1;
        while v >= 0x80 {
            big.push((v as u8) | 0x80);
            v >>= 7;
        }
        big.push(v as u8);
        let mut r = futures_util::io::Cursor::new(big);
        assert!(read(&mut r).await.unwrap_err().contains("over the limit"));
        // A stream that ends inside a frame is an error, not a clean end.
        let mut r = futures_util::io::Cursor::new(vec![5u8, 1, 2]);
        assert!(read(&mut r).await.is_err());
    }

    #[tokio::test]
    async fn a_link_closed_with_a_code_tells_the_peer_why() {
        use tokio_util::compat::TokioAsyncReadCompatExt;
        let (x, y) = tokio::io::duplex(64 * 1024);
        let (a, b) = (PeerId::random(), PeerId::random());
        let limit = Duration::from_secs(10);
        let mut io_a = link_io(x.compat(), a, b, Role::Initiator, limit);
        let mut io_b = link_io(y.compat(), b, a, Role::Responder, limit);
        let done_a = io_a.securing.take().unwrap().done;
        let done_b = io_b.securing.take().unwrap().done;
        let (ca, cb) = (
            done_a.await.unwrap().unwrap(),
            done_b.await.unwrap().unwrap(),
        );
        assert_eq!(ca.hash, cb.hash, "both ends compute one binding");
        let f = crate::mesh::wire::encode_control(&crate::mesh::wire::Control::Ping { t: 9 });
        io_a.tx.send(f.clone()).await.unwrap();
        let got = tokio::time::timeout(limit, io_b.rx.recv()).await.unwrap();
        assert_eq!(got, Some(f));
        io_a.close_with(4429, "the peer did not read for 30 s");
        let end = tokio::time::timeout(limit, io_b.rx.recv()).await.unwrap();
        assert_eq!(end, None, "the link ends at the peer");
        assert_eq!(
            io_b.end_reason().as_deref(),
            Some("closed by the peer (4429): the peer did not read for 30 s")
        );
    }

    #[tokio::test]
    async fn a_peer_that_does_not_read_ends_the_link_as_write_blocked() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        use tokio_util::compat::TokioAsyncReadCompatExt;
        let (x, mut y) = tokio::io::duplex(1024);
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut io = link_io(
            x.compat(),
            a,
            b,
            Role::Initiator,
            Duration::from_millis(100),
        );
        // The other end answers the binding exchange, then reads nothing more.
        let mut nonce = [0u8; 32];
        y.read_exact(&mut nonce).await.unwrap();
        y.write_all(&[7u8; 32]).await.unwrap();
        let done = io.securing.take().unwrap().done;
        done.await.unwrap().unwrap();
        assert!(!io.write_blocked());
        let big = crate::mesh::wire::encode_room("r", &vec![1u8; 64 * 1024]);
        io.tx.send(big).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), io.close.cancelled())
            .await
            .expect("the blocked write ends the link");
        assert!(io.write_blocked(), "{:?}", io.end_reason());
        assert!(io
            .end_reason()
            .is_some_and(|r| r.contains("(4429): the peer did not read for 0.1 s")));
    }

    #[tokio::test]
    async fn a_close_record_after_the_frames_carries_the_code_and_reason() {
        let f1 = crate::mesh::wire::encode_control(&crate::mesh::wire::Control::Ping { t: 5 });
        let mut bytes = f1.to_vec();
        bytes.extend_from_slice(&close_record(4429, "the peer did not read for 30 s"));
        let mut r = futures_util::io::Cursor::new(bytes);
        assert_eq!(read(&mut r).await.unwrap(), Read::Frame(f1));
        assert_eq!(
            read(&mut r).await.unwrap(),
            Read::Closed(4429, "the peer did not read for 30 s".into())
        );
        // A long reason is cut to what a close frame holds, on a character boundary.
        let long = "é".repeat(100);
        let mut r = futures_util::io::Cursor::new(close_record(4408, &long));
        match read(&mut r).await.unwrap() {
            Read::Closed(4408, reason) => assert_eq!(reason.len(), 122),
            other => panic!("{other:?}"),
        }
        // A record that claims more than a close frame holds, or has no code, is refused.
        let mut r = futures_util::io::Cursor::new(vec![0u8, 126]);
        assert!(read(&mut r).await.unwrap_err().contains("over the limit"));
        let mut r = futures_util::io::Cursor::new(vec![0u8, 1, 7]);
        assert!(read(&mut r).await.unwrap_err().contains("without a code"));
        let mut r = futures_util::io::Cursor::new(vec![0u8]);
        assert!(read(&mut r).await.unwrap_err().contains("ended inside"));
    }
}
