//! The bridge between rooms and links: the only part of the mesh that touches rooms and the
//! store (through the [`RoomRegistry`]).
//!
//! - **Into rooms.** A room message from a peer opens the room (loaded, or created) like a
//!   client would, and is applied with the link as its origin; a SyncStep1 is answered with
//!   a SyncStep2; presence is relayed and removed when the link ends. Links never pin rooms.
//! - **Out of rooms.** A room change reaches `forward` through the room layer's hook, is
//!   encoded once and queued to every link the core names ([`MeshCore::fanout`]: those that
//!   share the room, except the one it came from).
//! - **Deletions.** Tombstones a peer sends delete the rooms they cover; a room that holds
//!   newer edits is kept and announced back.
//! - **Plain servers.** A configured peer that is not a ymesh node is replicated room by
//!   room over stock y-websocket connections (`run_plain`).
//!
//! [`MeshCore::fanout`]: crate::mesh::proto::MeshCore::fanout

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::{lock, now_ms, LinkHandle, Mesh, Ours, LINK_TIMEOUT, PING_EVERY};
use crate::mesh::proto::manifest::SharePolicy;
use crate::mesh::proto::url::room_url;
use crate::mesh::proto::{Event, LinkId, PeerConfig, PeerKey};
use crate::mesh::transport::{self, LinkIo};
use crate::mesh::wire::{self, Control};
use crate::metrics::{LinkTraffic, TrafficKind};
use crate::protocol::{self, Message, SyncMessage};
use crate::room::{validate_room_name, ClientId, DeleteError, Kick, RoomError, RoomRegistry};
use crate::store::Tombstone;

/// Presence relayed over one link, per room: removed when the link ends.
pub(crate) type Relayed = HashMap<String, HashSet<ClientId>>;

/// What one link keeps about the room messages it received.
#[derive(Debug, Default)]
pub(crate) struct Received {
    /// Presence relayed, per room: removed when the link ends.
    pub(crate) relayed: Relayed,
    /// Updates received since the last `ack`, per room.
    pub(crate) acks: std::collections::BTreeMap<String, u64>,
}

/// Removes the presence a link relayed.
pub(crate) fn drop_relayed(registry: &RoomRegistry, relayed: Relayed) {
    for (room, clients) in relayed {
        if let Some(r) = registry.get(&room) {
            r.remove_awareness(&clients);
        }
    }
}

/// Fan-out of one room change from `origin`: encoded once as a room message, framed once
/// for ymesh links, queued to every link the core names.
pub(crate) fn forward(
    mesh: &Mesh,
    room: &str,
    origin: Option<LinkId>,
    kind: TrafficKind,
    message: impl FnOnce() -> Bytes,
) {
    let mut core = lock(&mesh.core);
    // Encoded once, and only when a link takes it; the core also counts a document change
    // for peers that are away.
    let mut make = Some(message);
    let mut message: Option<Bytes> = None;
    let mut framed: Option<Bytes> = None;
    let change = kind == TrafficKind::Sync;
    core.fanout(room, origin, now_ms(), change, |_, handle, plain| {
        let m = message
            .get_or_insert_with(|| make.take().map_or_else(Bytes::new, |f| f()))
            .clone();
        let frame = if plain {
            m
        } else {
            framed
                .get_or_insert_with(|| wire::encode_room(room, &m))
                .clone()
        };
        handle.offer(frame, kind);
    });
}

pub(crate) fn tombstone_entry(t: &Tombstone) -> wire::TombstoneEntry {
    wire::TombstoneEntry {
        name: t.room.clone(),
        deleted_ms: t.deleted_ms,
        state_vector: crate::mesh::hex::encode(&t.state_vector),
        origin: t.origin.clone(),
    }
}

/// The tombstones a peer should get at link-up: those recorded since its change marker
/// (every one when there is none, or no store), filtered by what is shared with it.
pub(crate) async fn tombstones_for(
    registry: &RoomRegistry,
    marker: Option<u64>,
    policy: &SharePolicy,
) -> Vec<wire::TombstoneEntry> {
    let recorded = match (marker, registry.store()) {
        (Some(m), Some(store)) => match store.tombstones_since(m).await {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read tombstones; sending all");
                registry.tombstones().all()
            }
        },
        _ => registry.tombstones().all(),
    };
    recorded
        .iter()
        .filter(|t| policy.allows(&t.room))
        .map(tombstone_entry)
        .collect()
}

/// Applies tombstones a peer sent: deletes each room whose content they cover. Returns a
/// manifest delta announcing back each room that holds edits they do not cover, so the peer
/// fetches those edits and the room lives again there.
pub(crate) async fn on_tombstones(
    registry: &RoomRegistry,
    peer: &str,
    policy: &SharePolicy,
    rooms: Vec<wire::TombstoneEntry>,
) -> Result<Option<Control>, String> {
    let mut keep = Vec::new();
    for entry in rooms {
        if validate_room_name(&entry.name).is_err() || !policy.allows(&entry.name) {
            continue;
        }
        let Some(sv) = crate::mesh::hex::decode(&entry.state_vector) else {
            return Err(format!("bad tombstone state vector for {:?}", entry.name));
        };
        let tombstone = Tombstone {
            room: entry.name,
            deleted_ms: entry.deleted_ms,
            state_vector: sv,
            origin: entry.origin,
        };
        if registry
            .tombstones()
            .get(&tombstone.room)
            .is_some_and(|t| t.covers(&tombstone) && t.deleted_ms >= tombstone.deleted_ms)
        {
            continue;
        }
        match registry.delete(tombstone, true).await {
            Ok(d) => tracing::info!(
                peer,
                room = d.tombstone.room,
                existed = d.existed,
                "room deleted by a peer's tombstone"
            ),
            Err(DeleteError::NotCovered { room }) => {
                tracing::info!(
                    peer,
                    room,
                    "peer deleted a room that has newer edits here; keeping it"
                );
                if let Some(entry) = manifest_entry(registry, &room).await {
                    keep.push(entry);
                }
            }
            Err(e) => tracing::warn!(peer, error = %e, "cannot apply a peer's tombstone"),
        }
    }
    Ok((!keep.is_empty()).then_some(Control::ManifestDelta { changed: keep }))
}

/// The manifest entry (name and digest) of one room, live or stored.
async fn manifest_entry(registry: &RoomRegistry, room: &str) -> Option<wire::ManifestEntry> {
    let canonical = match registry.get(room).filter(|r| r.is_loaded()) {
        Some(r) => crate::store::canonical_state_vector(room, &r.state_vector()),
        None => registry.store()?.meta(room).await.ok()??.state_vector,
    };
    Some(wire::ManifestEntry {
        name: room.to_string(),
        digest: crate::store::digest_hex(&canonical),
    })
}

/// Our rooms for a manifest: stored rooms' digests, overridden by the live digest of rooms
/// in memory.
pub(crate) async fn our_digests(registry: &RoomRegistry) -> Ours {
    let mut out = BTreeMap::new();
    if let Some(store) = registry.store() {
        match store.list().await {
            Ok(list) => {
                for m in list {
                    out.insert(m.name.clone(), (m.digest.clone(), m.state_vector.clone()));
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list stored rooms for a manifest"),
        }
    }
    for room in registry.rooms() {
        if !room.has_content() {
            continue;
        }
        let sv = room.state_vector();
        let canonical = crate::store::canonical_state_vector(room.name(), &sv);
        let digest = crate::store::digest_hex(&canonical);
        out.insert(room.name().to_string(), (digest, canonical));
    }
    out
}

/// The state vector to announce for `room`: live if in memory, else as announced at link-up.
pub(crate) fn announced_state_vector(registry: &RoomRegistry, room: &str, ours: &Ours) -> Vec<u8> {
    if let Some(r) = registry.get(room) {
        if r.is_loaded() {
            return r.state_vector();
        }
    }
    ours.get(room)
        .map(|(_, sv)| sv.clone())
        .unwrap_or_else(|| vec![0])
}

/// This node's state vector of `room`: live when in memory, else as stored.
pub(crate) async fn current_state_vector(registry: &RoomRegistry, room: &str) -> Vec<u8> {
    if let Some(r) = registry.get(room).filter(|r| r.is_loaded()) {
        return r.state_vector();
    }
    if let Some(store) = registry.store() {
        if let Ok(Some(meta)) = store.meta(room).await {
            return meta.state_vector;
        }
    }
    vec![0]
}

/// Applies one room message from a peer over `link`.
pub(crate) async fn on_room_frame(
    mesh: &Arc<Mesh>,
    io: &LinkIo,
    link: LinkId,
    counters: &LinkTraffic,
    room_name: &str,
    message: Bytes,
    received: &mut Received,
) -> Result<(), String> {
    if let Err(e) = validate_room_name(room_name) {
        return Err(format!("peer sent a bad room name: {e}"));
    }
    // Framing checked whole first, then one message at a time: memory does not grow with
    // the number of messages in the frame.
    protocol::check_frame(&message)
        .map_err(|e| format!("malformed message for room {room_name:?}: {e}"))?;
    let registry = mesh.registry();
    // One SyncStep1 answered per frame: each answer may be the whole room, so a frame of
    // many SyncStep1s must not cost one answer each (ymesh sends one per frame).
    let mut answered_step1 = false;
    for msg in protocol::messages(message) {
        let msg = msg.map_err(|e| format!("malformed message for room {room_name:?}: {e}"))?;
        if !matches!(msg, Message::Sync(_) | Message::Awareness(_)) {
            continue;
        }
        let is_step2 = matches!(msg, Message::Sync(SyncMessage::Step2(_)));
        let room = match registry.open(room_name).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(room = room_name, error = %e, "cannot open room for a peer");
                continue;
            }
        };
        match msg {
            Message::Sync(SyncMessage::Step1(_)) if answered_step1 => {}
            Message::Sync(SyncMessage::Step1(sv)) => {
                answered_step1 = true;
                let reply = room
                    .sync_step2_for(&sv)
                    .map_err(|e| format!("bad state vector for {room_name:?}: {e}"))?;
                let frame = wire::encode_room(room_name, &reply);
                counters.sent().add(TrafficKind::Sync, frame.len());
                mesh.run(Event::RoomSync {
                    link,
                    room: room_name.to_string(),
                    step2: false,
                });
                if io.tx.send(frame).await.is_err() {
                    return Err("connection closed".into());
                }
            }
            Message::Sync(SyncMessage::Step2(u)) | Message::Sync(SyncMessage::Update(u)) => {
                let step2 = is_step2;
                if !step2 {
                    // Acknowledged in the next `ack` (the peer counts what it queued).
                    match received.acks.get_mut(room_name) {
                        Some(n) => *n += 1,
                        None => {
                            received.acks.insert(room_name.to_string(), 1);
                        }
                    }
                }
                // The peer's SyncStep2 (its answer to ours) completes the initial exchange
                // for this room on this link.
                mesh.run(Event::RoomSync {
                    link,
                    room: room_name.to_string(),
                    step2,
                });
                match room.apply_update(&u, Some(link)) {
                    Ok(applied) if applied.resurrected => {
                        // The room was deleted here and this edit is newer: fetch the rest
                        // of the document it belongs to.
                        let step1 = protocol::encode_sync_step1(&room.state_vector());
                        let frame = wire::encode_room(room_name, &step1);
                        counters.sent().add(TrafficKind::Sync, frame.len());
                        if io.tx.send(frame).await.is_err() {
                            return Err("connection closed".into());
                        }
                    }
                    Ok(_) => {}
                    Err(RoomError::QuotaExceeded(reason)) => {
                        tracing::warn!(room = room_name, reason, "update from peer refused");
                    }
                    Err(e) => return Err(format!("bad update for {room_name:?}: {e}")),
                }
            }
            Message::Awareness(payload) => {
                let frame = protocol::encode_awareness(&payload);
                let change = room
                    .apply_awareness(&payload, &frame, link)
                    .map_err(|e| format!("bad awareness for {room_name:?}: {e}"))?;
                let set = received.relayed.entry(room_name.to_string()).or_default();
                set.extend(change.present);
                for c in change.removed {
                    set.remove(&c);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Replicates the configured rooms with a plain y-websocket server: one client connection
/// per room, all up until one ends; then reports [`Event::PlainEnded`].
pub(crate) async fn run_plain(mesh: Arc<Mesh>, peer: PeerKey, attempt: u64, config: PeerConfig) {
    let counters = mesh.traffic_for(peer);
    let mut tasks = tokio::task::JoinSet::new();
    for room in &config.rooms {
        let url = room_url(&config.url, room, config.token.as_deref());
        let mesh = mesh.clone();
        let room = room.clone();
        let counters = counters.clone();
        tasks.spawn(async move { plain_room_link(mesh, peer, url, room, counters).await });
    }
    let reason = match tasks.join_next().await {
        Some(Ok(reason)) => reason,
        Some(Err(e)) => format!("room connection task failed: {e}"),
        None => "no rooms configured".into(),
    };
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    mesh.run(Event::PlainEnded {
        peer,
        attempt,
        reason,
    });
}

/// One room with a plain y-websocket server, as a stock client would do it.
async fn plain_room_link(
    mesh: Arc<Mesh>,
    peer: PeerKey,
    url: String,
    room_name: String,
    counters: Arc<LinkTraffic>,
) -> String {
    let room = match mesh.registry().open(&room_name).await {
        Ok(r) => r,
        Err(e) => return format!("cannot open room {room_name:?}: {e}"),
    };
    // The token travels in the URL (`room_url`), as stock y-websocket clients send it.
    let mut io = match transport::ws::dial(
        &url,
        None,
        transport::ws::Security::Plain,
        mesh.settings().write_timeout,
    )
    .await
    {
        Ok(io) => io,
        Err(e) => return e,
    };
    let link = mesh.next_id();
    let kick = Arc::new(Kick::default());
    mesh.run(Event::PlainUp {
        link,
        peer,
        room: room_name.clone(),
        handle: LinkHandle {
            tx: io.tx.clone(),
            kick: kick.clone(),
            counters: counters.clone(),
            queue_full: mesh.queue_full_counter(),
        },
    });
    // Ends the link in the core however this function returns.
    struct Closed<'a>(&'a Arc<Mesh>, LinkId, Option<String>);
    impl Drop for Closed<'_> {
        fn drop(&mut self) {
            let reason = self.2.take().unwrap_or_else(|| "closed".into());
            self.0.run(Event::LinkClosed {
                link: self.1,
                reason,
            });
        }
    }
    let mut closed = Closed(&mesh, link, None);
    let step1 = protocol::encode_sync_step1(&room.state_vector());
    counters.sent().add(TrafficKind::Sync, step1.len());
    let mut relayed = HashSet::new();
    // A plain server answers every SyncStep1 with a SyncStep2: sending one every PING_EVERY
    // is this link's liveness probe (and a catch-up, should anything have been missed). A
    // link that hears nothing for LINK_TIMEOUT is closed and redialed.
    let mut probe = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    let mut last_seen = Instant::now();
    let end = if io.tx.send(step1).await.is_err() {
        "connection closed".to_string()
    } else {
        loop {
            let frame = tokio::select! {
                _ = mesh.shutdown_token().cancelled() => break "node shutting down".to_string(),
                _ = kick.kicked() => break kick.reason().map_or("closed".into(), |r| r.reason.clone()),
                _ = probe.tick() => {
                    if last_seen.elapsed() > LINK_TIMEOUT {
                        break format!("nothing received for {} s", LINK_TIMEOUT.as_secs());
                    }
                    let step1 = protocol::encode_sync_step1(&room.state_vector());
                    counters.sent().add(TrafficKind::Sync, step1.len());
                    if io.tx.send(step1).await.is_err() {
                        break "connection closed".to_string();
                    }
                    continue;
                }
                f = io.rx.recv() => f,
            };
            let Some(frame) = frame else {
                break "connection closed".to_string();
            };
            last_seen = Instant::now();
            if let Err(e) = protocol::check_frame(&frame) {
                break format!("malformed message from {url}: {e}");
            }
            counters.received().add(
                match protocol::messages(frame.clone()).next() {
                    Some(Ok(Message::Awareness(_))) => TrafficKind::Awareness,
                    Some(Ok(Message::Sync(_))) => TrafficKind::Sync,
                    _ => TrafficKind::Other,
                },
                frame.len(),
            );
            let msgs = protocol::messages(frame.clone()).flatten();
            let mut failed = None;
            for msg in msgs {
                match msg {
                    Message::Sync(SyncMessage::Step1(sv)) => match room.sync_step2_for(&sv) {
                        Ok(reply) => {
                            counters.sent().add(TrafficKind::Sync, reply.len());
                            mesh.run(Event::RoomSync {
                                link,
                                room: room_name.clone(),
                                step2: false,
                            });
                            if io.tx.send(reply).await.is_err() {
                                failed = Some("connection closed".to_string());
                            }
                        }
                        Err(e) => failed = Some(format!("bad state vector: {e}")),
                    },
                    Message::Sync(SyncMessage::Step2(u))
                    | Message::Sync(SyncMessage::Update(u)) => {
                        mesh.run(Event::RoomSync {
                            link,
                            room: room_name.clone(),
                            step2: true,
                        });
                        if let Err(e) = room.apply_update(&u, Some(link)) {
                            failed = Some(format!("bad update from {url}: {e}"));
                        }
                    }
                    Message::Awareness(payload) => {
                        let frame = protocol::encode_awareness(&payload);
                        if let Ok(change) = room.apply_awareness(&payload, &frame, link) {
                            relayed.extend(change.present);
                            for c in change.removed {
                                relayed.remove(&c);
                            }
                        }
                    }
                    _ => {}
                }
            }
            if let Some(reason) = failed {
                break reason;
            }
        }
    };
    room.remove_awareness(&relayed);
    io.close.cancel();
    closed.2 = Some(end.clone());
    drop(closed);
    end
}
