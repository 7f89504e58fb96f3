//! One link from handshake to close, on its own task: whole frames over a
//! [`LinkIo`], whatever transport carries them.
//!
//! The task waits for the transport's secure channel, then runs the in-channel handshake
//! ([`crate::mesh::proto::handshake`]) within
//! [`MeshSettings::handshake_timeout`](super::MeshSettings::handshake_timeout), and an
//! inbound one only while its place in the pre-authentication budget lasts (either end
//! closes the socket with 4408 and a reason). Once the peer is authenticated the core gives
//! its verdict; a link either side holds as pending stays open without a deadline (pings
//! keep it alive) until the verdict changes. Once both sides welcomed each other and the
//! core admits the link, the task: sends the peer the tombstones it lacks,
//! reports [`Event::LinkOpened`] (the core answers with the manifest to send), announces
//! the presence of clients here, then reads frames until the link ends. Control messages go
//! to the core, room messages to the bridge; pings (application-level,
//! every 15 s) notice a half-open link. The link's own sends go out with backpressure.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::bridge::{self, Received};
use super::traffic::kind_of;
use super::{now_ms, LinkHandle, Mesh, PreAuthTicket};
use super::{Ours, LINK_TIMEOUT, PING_EVERY};
use crate::mesh::proto::approval::Verdict;
use crate::mesh::proto::channel::ChannelError;
use crate::mesh::proto::handshake::{self, Binding, Handshake, Outcome};
use crate::mesh::proto::manifest::SharePolicy;
use crate::mesh::proto::{Action, Event, HandshakeEnd, LinkId, PeerKey, Road};
use crate::mesh::transport::{ChannelInfo, LinkIo, SecureError, Securing};
use crate::mesh::wire::{self, Control, Frame, MAX_FRAME_LEN};
use crate::metrics::LinkTraffic;
use crate::room::CloseReason;
use crate::room::Kick;

/// How long received updates wait before their `ack` goes out (coalescing them).
const ACK_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Tombstones per [`Control::Tombstones`] message at link-up.
const TOMBSTONES_PER_MESSAGE: usize = 500;

/// One link's task state.
struct Link<'a> {
    mesh: &'a Arc<Mesh>,
    io: &'a mut LinkIo,
    id: LinkId,
    counters: Arc<LinkTraffic>,
}

impl Link<'_> {
    /// Sends one of this link's own frames, waiting for room in the queue. False once the
    /// connection is gone.
    async fn send(&self, frame: Bytes) -> bool {
        self.counters.sent().add(kind_of(&frame), frame.len());
        self.io.tx.send(frame).await.is_ok()
    }

    /// Carries out the core's actions: this link's sends here, with backpressure; the rest
    /// through the mesh.
    async fn act(&self, actions: Vec<Action<LinkHandle>>, ours: &Ours) -> Result<(), String> {
        let mut others = Vec::new();
        for action in actions {
            match action {
                Action::Send { link, control } if link == self.id => {
                    if !self.send(wire::encode_control(&control)).await {
                        return Err("connection closed".into());
                    }
                }
                Action::SendStep1 { link, rooms } if link == self.id => {
                    for room in rooms {
                        let sv = bridge::announced_state_vector(self.mesh.registry(), &room, ours);
                        let msg = crate::protocol::encode_sync_step1(&sv);
                        if !self.send(wire::encode_room(&room, &msg)).await {
                            return Err("connection closed".into());
                        }
                    }
                }
                other => others.push(other),
            }
        }
        self.mesh.execute(others);
        Ok(())
    }
}

/// Runs link `id` of peer row `peer` from handshake to close, over `road` (its transport).
/// An inbound link holds its place in the pre-authentication budget (`ticket`) until the
/// peer is authenticated.
pub(crate) async fn run(
    mesh: Arc<Mesh>,
    mut io: LinkIo,
    peer: PeerKey,
    id: LinkId,
    mut ticket: Option<PreAuthTicket>,
    road: Road,
) {
    let counters = mesh.traffic_for(peer);
    let mut link = Link {
        mesh: &mesh,
        io: &mut io,
        id,
        counters,
    };
    let verdicts = mesh.wait_verdicts(id);
    let handshake = handshake_phase(&mut link, peer, &mut ticket, verdicts).await;
    mesh.forget_verdicts(id);
    // Authenticated or not, the socket is out of its handshake: it leaves the budget.
    drop(ticket);
    let end = match handshake {
        Err(end) => {
            mesh.run(Event::HandshakeFailed {
                link: id,
                peer,
                end,
            });
            None
        }
        Ok((node, tag)) => {
            link.counters.linked();
            Some(serve(&mut link, peer, node, tag, road).await)
        }
    };
    if let Some(reason) = end {
        mesh.run(Event::LinkClosed { link: id, reason });
    }
    if io.write_blocked() {
        mesh.limit_hit(crate::metrics::Limit::PeerWriteTimeout);
    }
    io.close.cancel();
}

/// The metrics' reason for a handshake this node refused.
fn denial(e: &handshake::HandshakeError) -> crate::metrics::Denial {
    use crate::metrics::Denial;
    use handshake::HandshakeError as E;
    match e {
        E::VersionMismatch { .. } => Denial::Version,
        E::NodeIdMismatch { .. } => Denial::NodeIdMismatch,
        E::InvalidHello(_) => Denial::InvalidHello,
        E::NotAdmitted(_) => Denial::NotAdmitted,
        E::Unexpected { .. } => Denial::Protocol,
    }
}

/// How a failed secure channel ends the handshake.
fn secure_end(e: SecureError) -> HandshakeEnd {
    match e {
        SecureError::Channel(ChannelError::SelfConnection { .. }) => HandshakeEnd::IsSelf,
        SecureError::Channel(e @ ChannelError::Version { .. }) => {
            HandshakeEnd::Incompatible(e.to_string())
        }
        SecureError::Channel(e @ ChannelError::UnexpectedPeer { .. }) => {
            HandshakeEnd::Refused(e.to_string())
        }
        SecureError::ClosedByPeer { code: 4400, reason }
            if reason.starts_with("mesh protocol version") =>
        {
            HandshakeEnd::Incompatible(format!("refused by the peer: {reason}"))
        }
        SecureError::ClosedByPeer { code, reason } if code == 4400 || code == 4403 => {
            HandshakeEnd::Refused(format!("refused by the peer: {reason}"))
        }
        other => HandshakeEnd::Closed(other.to_string()),
    }
}

/// Waits for the secure channel under the link. Past the deadline, or when an inbound
/// socket gives way to a newer one (`ticket`), it closes the socket with 4408 and a reason.
async fn channel_phase(
    link: &mut Link<'_>,
    ticket: Option<&PreAuthTicket>,
    deadline: tokio::time::Instant,
) -> Result<ChannelInfo, HandshakeEnd> {
    let mesh = link.mesh;
    let Some(Securing { heard, mut done }) = link.io.securing.take() else {
        return Err(HandshakeEnd::Closed(
            "the connection has no secure channel".into(),
        ));
    };
    let mut heard = Some(heard);
    let gave_way = async {
        match ticket {
            Some(t) => t.kick.kicked().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(gave_way);
    loop {
        let first = async {
            match heard.as_mut() {
                Some(h) => {
                    let _ = h.await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = mesh.shutdown_token().cancelled() => {
                return Err(HandshakeEnd::Closed("node shutting down".into()))
            }
            _ = tokio::time::sleep_until(deadline) => {
                return Err(close_in_handshake(link.io, timed_out(mesh)));
            }
            _ = &mut gave_way => return Err(close_in_handshake(link.io, gave_way_reason(ticket))),
            _ = first => {
                heard = None;
                if let Some(t) = ticket {
                    t.heard();
                }
            }
            r = &mut done => return match r {
                Ok(Ok(info)) => Ok(info),
                Ok(Err(e)) => Err(secure_end(e)),
                Err(_) => Err(HandshakeEnd::Closed(
                    "connection closed during the handshake".into(),
                )),
            },
        }
    }
}

/// The close of a handshake past its deadline (counted as a limit hit).
fn timed_out(mesh: &Mesh) -> CloseReason {
    mesh.limit_hit(crate::metrics::Limit::MeshHandshakeTimeout);
    CloseReason::TimedOut(format!(
        "mesh handshake not finished within {} s",
        mesh.settings().handshake_timeout.as_secs_f64()
    ))
}

fn gave_way_reason(ticket: Option<&PreAuthTicket>) -> CloseReason {
    ticket
        .and_then(|t| t.kick.reason())
        .map_or(CloseReason::TimedOut(super::GAVE_WAY.into()), |c| {
            c.cause.clone()
        })
}

/// The handshake: the secure channel, then hello, the secret, and both verdicts. Returns
/// the peer's node id and the link tag, or how it ended. Until the peer is authenticated an
/// inbound socket holds `ticket` (its place in the pre-authentication budget); the deadline
/// runs until the link is established or a side holds it as pending, and a pending link is
/// kept alive with pings meanwhile.
async fn handshake_phase(
    link: &mut Link<'_>,
    peer: PeerKey,
    ticket: &mut Option<PreAuthTicket>,
    mut verdicts: mpsc::Receiver<Verdict>,
) -> Result<(String, Vec<u8>), HandshakeEnd> {
    let mesh = link.mesh;
    let deadline = tokio::time::Instant::now() + mesh.settings().handshake_timeout;
    let channel = channel_phase(link, ticket.as_ref(), deadline).await?;
    let binding = Binding {
        remote: channel.remote,
        hash: channel.hash,
        role: channel.role,
    };
    let mut hs = Handshake::new(
        mesh.node_id(),
        mesh.boot_id(),
        mesh.settings().listen.clone(),
        binding,
        mesh.secret().as_deref(),
    );
    let mut actions = hs.start();
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    let mut last_seen = Instant::now();
    loop {
        let mut finished = None;
        let mut send_failed = false;
        for action in actions.drain(..) {
            match action {
                handshake::Action::Send(c) => {
                    if !send_failed && !link.send(wire::encode_control(&c)).await {
                        send_failed = true;
                    }
                }
                handshake::Action::Authenticated(auth) => {
                    // The peer proved who it is: it leaves the budget of strangers.
                    *ticket = None;
                    mesh.run(Event::Authenticated {
                        link: link.id,
                        peer,
                        node_id: auth.node_id,
                        secret: auth.secret,
                    });
                }
                handshake::Action::PeerPending(reason) => mesh.run(Event::PeerPending {
                    link: link.id,
                    peer,
                    reason,
                }),
                handshake::Action::Finish(outcome) => finished = Some(outcome),
            }
        }
        if send_failed && finished.is_none() {
            // The peer closed first; if it said why, report that, not a bare close.
            return Err(match refusal_in(&mut link.io.rx) {
                Some(reason) => HandshakeEnd::Refused(format!("refused by the peer: {reason}")),
                None => HandshakeEnd::Closed("connection closed during the handshake".into()),
            });
        }
        match finished {
            Some(Outcome::Established(info)) => {
                tracing::debug!(peer = info.node_id, boot = info.boot_id, "handshake done");
                return Ok((info.node_id, info.link_tag));
            }
            Some(Outcome::Refused(e)) => {
                mesh.handshake_refused(denial(&e));
                return Err(match e {
                    handshake::HandshakeError::VersionMismatch { .. } => {
                        HandshakeEnd::Incompatible(e.to_string())
                    }
                    _ => HandshakeEnd::Refused(e.to_string()),
                });
            }
            Some(Outcome::RefusedByPeer(reason)) => {
                return Err(HandshakeEnd::Refused(format!(
                    "refused by the peer: {reason}"
                )))
            }
            None => {}
        }
        let waiting = hs.is_waiting_for_approval();
        let frame = tokio::select! {
            _ = mesh.shutdown_token().cancelled() => {
                return Err(HandshakeEnd::Closed("node shutting down".into()))
            }
            _ = tokio::time::sleep_until(deadline), if !waiting => {
                return Err(close_in_handshake(link.io, timed_out(mesh)));
            }
            _ = async {
                match ticket.as_ref() {
                    Some(t) => t.kick.kicked().await,
                    None => std::future::pending().await,
                }
            } => {
                return Err(close_in_handshake(link.io, gave_way_reason(ticket.as_ref())));
            }
            v = verdicts.recv() => {
                if let Some(v) = v {
                    actions = hs.verdict(v);
                }
                continue;
            }
            _ = ping.tick(), if waiting => {
                if last_seen.elapsed() > LINK_TIMEOUT {
                    return Err(HandshakeEnd::Closed(format!(
                        "nothing received for {} s while waiting for approval",
                        LINK_TIMEOUT.as_secs()
                    )));
                }
                if !link.send(wire::encode_control(&Control::Ping { t: now_ms() })).await {
                    return Err(HandshakeEnd::Closed("connection closed".into()));
                }
                continue;
            }
            f = link.io.rx.recv() => f,
        };
        let Some(frame) = frame else {
            let why = link
                .io
                .end_reason()
                .unwrap_or_else(|| "connection closed during the handshake".into());
            return Err(HandshakeEnd::Closed(why));
        };
        last_seen = Instant::now();
        link.counters.received().add(kind_of(&frame), frame.len());
        match wire::decode_frame(frame, MAX_FRAME_LEN) {
            Ok(Frame::Control(Control::Ping { t })) => {
                if !link.send(wire::encode_control(&Control::Pong { t })).await {
                    return Err(HandshakeEnd::Closed("connection closed".into()));
                }
            }
            Ok(Frame::Control(c)) => actions = hs.on_message(c),
            Ok(_) => {
                return Err(HandshakeEnd::Closed(
                    "room data before the handshake finished".into(),
                ))
            }
            Err(e) => return Err(HandshakeEnd::Closed(format!("malformed frame: {e}"))),
        }
    }
}

/// Closes a socket whose handshake cannot go on (4408 and the reason) and says so.
fn close_in_handshake(io: &LinkIo, reason: CloseReason) -> HandshakeEnd {
    let text = reason.to_string();
    io.close_with(reason.code(), &text);
    HandshakeEnd::Closed(text)
}

/// A `refused` control message already received (queued) on a closing connection.
fn refusal_in(rx: &mut mpsc::Receiver<Bytes>) -> Option<String> {
    while let Ok(frame) = rx.try_recv() {
        if let Ok(Frame::Control(Control::Refused { reason })) =
            wire::decode_frame(frame, MAX_FRAME_LEN)
        {
            return Some(reason);
        }
    }
    None
}

/// An established link: admission by the core, link-up, then frames until it ends. Returns
/// why it ended (`None`: the core rejected it as a duplicate, before it was up).
async fn serve(
    link: &mut Link<'_>,
    peer: PeerKey,
    node: String,
    tag: Vec<u8>,
    road: Road,
) -> String {
    let mesh = link.mesh;
    let kick = Arc::new(Kick::default());
    let handle = LinkHandle {
        tx: link.io.tx.clone(),
        kick: kick.clone(),
        counters: link.counters.clone(),
        queue_full: mesh.queue_full_counter(),
    };
    let actions = mesh.decide(Event::Handshaken {
        link: link.id,
        peer,
        node_id: node.clone(),
        tag,
        handle,
        road,
    });
    let mut admitted = None;
    let mut rest = Vec::new();
    for action in actions {
        match action {
            Action::Admit {
                link: l,
                marker,
                policy,
                ..
            } if l == link.id => admitted = Some((marker, policy)),
            Action::Reject { link: l, reason } if l == link.id => {
                tracing::debug!(peer = node, reason, "link rejected");
            }
            other => rest.push(other),
        }
    }
    mesh.execute(rest);
    let Some((marker, policy)) = admitted else {
        return "duplicate link: the other one is kept".into();
    };
    let mut received = Received::default();
    let end = match open(link, &node, marker, &policy).await {
        Ok(ours) => frames(link, &node, &kick, &policy, &ours, &mut received).await,
        Err(reason) => reason,
    };
    // Presence this link relayed goes away with it.
    bridge::drop_relayed(mesh.registry(), received.relayed);
    end
}

/// Link-up: tombstones the peer lacks, then the core's manifest and delta, then the presence
/// of clients here. Returns our rooms as announced.
async fn open(
    link: &Link<'_>,
    node: &str,
    marker: Option<u64>,
    policy: &SharePolicy,
) -> Result<Ours, String> {
    let mesh = link.mesh;
    let registry = mesh.registry();
    let store = registry.store().cloned();
    // Where the store was when this peer last had everything from us: re-synced from there.
    // Kept on disk, so it survives a restart (or a crash: it only moves when a link ends).
    let mut marker = marker;
    if let (None, Some(store)) = (marker, &store) {
        marker = store.peer_marker(node).await.ok().flatten();
    }
    let store_now = match &store {
        Some(store) => store
            .changed_since(i64::MAX as u64)
            .await
            .ok()
            .map(|(_, m)| m),
        None => None,
    };
    // Deleted rooms first, so the peer drops stale copies before it syncs.
    for chunk in bridge::tombstones_for(registry, marker, policy)
        .await
        .chunks(TOMBSTONES_PER_MESSAGE)
    {
        let c = Control::Tombstones {
            rooms: chunk.to_vec(),
        };
        if !link.send(wire::encode_control(&c)).await {
            return Err("connection closed".into());
        }
    }
    let ours = bridge::our_digests(registry).await;
    let changed = match (marker, &store) {
        (Some(m), Some(store)) => match store.changed_since(m).await {
            Ok((changed, _)) => changed,
            Err(e) => {
                tracing::warn!(peer = node, error = %e, "cannot read changed rooms");
                Vec::new()
            }
        },
        _ => Vec::new(),
    };
    let actions = mesh.decide(Event::LinkOpened {
        link: link.id,
        ours: ours
            .iter()
            .map(|(k, (d, _))| (k.clone(), d.clone()))
            .collect(),
        changed,
        marker,
        store_now,
    });
    link.act(actions, &ours).await?;
    // Presence of clients already connected here.
    for room in registry.rooms() {
        if !policy.allows(room.name()) {
            continue;
        }
        let frame = room.awareness_frame();
        if frame[..] != [1, 1, 0] && !link.send(wire::encode_room(room.name(), &frame)).await {
            return Err("connection closed".into());
        }
    }
    Ok(ours)
}

/// Reads frames until the link ends; returns why.
async fn frames(
    link: &mut Link<'_>,
    node: &str,
    kick: &Kick,
    policy: &SharePolicy,
    ours: &Ours,
    received: &mut Received,
) -> String {
    let mesh = link.mesh;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    let mut last_seen = Instant::now();
    // When the `ack` of the updates received since the last one goes out.
    let mut ack_at: Option<tokio::time::Instant> = None;
    loop {
        let frame = tokio::select! {
            _ = mesh.shutdown_token().cancelled() => return "node shutting down".into(),
            _ = kick.kicked() => {
                return kick.reason().map_or("closed".into(), |r| r.reason.clone());
            }
            _ = async {
                match ack_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                ack_at = None;
                let c = Control::Ack { rooms: std::mem::take(&mut received.acks) };
                if !link.send(wire::encode_control(&c)).await {
                    return "connection closed".into();
                }
                continue;
            }
            _ = ping.tick() => {
                if last_seen.elapsed() > LINK_TIMEOUT {
                    return format!("nothing received for {} s", LINK_TIMEOUT.as_secs());
                }
                let c = Control::Ping { t: now_ms() };
                if !link.send(wire::encode_control(&c)).await {
                    return "connection closed".into();
                }
                continue;
            }
            f = link.io.rx.recv() => f,
        };
        let Some(frame) = frame else {
            return "connection closed".into();
        };
        last_seen = Instant::now();
        link.counters.received().add(kind_of(&frame), frame.len());
        let decoded = match wire::decode_frame(frame, MAX_FRAME_LEN) {
            Ok(f) => f,
            Err(e) => return format!("malformed frame: {e}"),
        };
        let result = match decoded {
            Frame::Control(Control::Ping { t }) => {
                if link.send(wire::encode_control(&Control::Pong { t })).await {
                    Ok(())
                } else {
                    Err("connection closed".to_string())
                }
            }
            Frame::Control(Control::Refused { reason }) => {
                return format!("refused by the peer: {reason}");
            }
            Frame::Control(Control::Tombstones { rooms }) => {
                match bridge::on_tombstones(mesh.registry(), node, policy, rooms).await {
                    Ok(Some(delta)) => {
                        if link.send(wire::encode_control(&delta)).await {
                            Ok(())
                        } else {
                            Err("connection closed".to_string())
                        }
                    }
                    Ok(None) => Ok(()),
                    Err(reason) => Err(reason),
                }
            }
            Frame::Control(
                control @ (Control::Manifest { .. }
                | Control::Ack { .. }
                | Control::ManifestDelta { .. }
                | Control::Command { .. }
                | Control::CommandResult { .. }),
            ) => {
                let actions = mesh.decide(Event::Control {
                    link: link.id,
                    control,
                });
                link.act(actions, ours).await
            }
            Frame::Control(_) | Frame::Unknown(_) => Ok(()),
            Frame::Room { room, .. } if !policy.allows(&room) => {
                tracing::debug!(
                    peer = node,
                    room,
                    "dropping a frame for a room not shared with this peer"
                );
                Ok(())
            }
            Frame::Room { room, message } => {
                bridge::on_room_frame(
                    link.mesh,
                    link.io,
                    link.id,
                    &link.counters,
                    &room,
                    message,
                    received,
                )
                .await
            }
        };
        if ack_at.is_none() && !received.acks.is_empty() {
            ack_at = Some(tokio::time::Instant::now() + ACK_EVERY);
        }
        if let Err(reason) = result {
            return reason;
        }
    }
}
