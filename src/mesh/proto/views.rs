//! What the shells read from [`MeshCore`]: links by room and peer, fan-out targets (split
//! horizon), and the peer table as `GET /peers` shows it.

use std::collections::{BTreeSet, HashMap};

use super::machine::{Kind, MeshCore};
use super::peers::{Origin, PeerRow};
use super::{LinkId, PeerKey};

impl<H: Clone> MeshCore<H> {
    /// The ymesh links (id and peer node id) whose share policy allows `room` (`None`:
    /// every ymesh link), except `except`; sorted by link id.
    pub fn links_for(&self, room: Option<&str>, except: Option<LinkId>) -> Vec<(LinkId, String)> {
        self.links
            .iter()
            .filter(|(id, l)| {
                Some(**id) != except
                    && !l.closing
                    && l.is_mesh()
                    && room.is_none_or(|r| l.policy.allows(r))
            })
            .map(|(id, l)| (*id, l.node.clone()))
            .collect()
    }

    /// A ymesh link to node `node`, if one is up.
    pub fn link_to(&self, node: &str) -> Option<LinkId> {
        self.links
            .iter()
            .find(|(_, l)| !l.closing && l.is_mesh() && l.node == node)
            .map(|(id, _)| *id)
    }

    /// The handle of ymesh link `link` if it is up and shares `room` (`None`: any).
    pub fn mesh_link(&self, link: LinkId, room: Option<&str>) -> Option<&H> {
        self.links
            .get(&link)
            .filter(|l| !l.closing && l.is_mesh())
            .filter(|l| room.is_none_or(|r| l.policy.allows(r)))
            .map(|l| &l.handle)
    }

    /// Fan-out of one change of `room` that came from `origin` (split horizon): calls `send`
    /// with each link that shares the room, except `origin`, and whether the link is a plain
    /// room connection (which takes the bare message) or a ymesh link (which takes a ROOM
    /// frame). A document `change` (not presence) is counted in each peer's room status: as
    /// queued on a live link, as missed by a peer that is away.
    pub fn fanout(
        &mut self,
        room: &str,
        origin: Option<LinkId>,
        now_ms: u64,
        change: bool,
        mut send: impl FnMut(LinkId, &H, bool),
    ) {
        if !self.local_rooms.contains(room) {
            self.local_rooms.insert(room.to_string());
        }
        for (id, link) in self.links.iter() {
            if Some(*id) == origin || link.closing || !link.policy.allows(room) {
                continue;
            }
            let plain = match &link.kind {
                Kind::Plain { room: r } if r == room => true,
                Kind::Plain { .. } => continue,
                Kind::Mesh { .. } => false,
            };
            send(*id, &link.handle, plain);
            if !change {
                continue;
            }
            if let Some(p) = self.peers.get_mut(&link.peer) {
                p.queued(room, now_ms);
            }
        }
        if !change {
            return;
        }
        // Peers linked before and away now: they lack this change until they are back. (No
        // allocation unless one is away: this runs for every change.)
        let is_away = |k: &PeerKey, p: &super::peers::PeerSlot| {
            p.ever_linked && !p.via_other && !self.has_link(*k)
        };
        if !self.peers.iter().any(|(k, p)| is_away(k, p)) {
            return;
        }
        let away: Vec<(PeerKey, Option<String>)> = self
            .peers
            .iter()
            .filter(|(k, p)| is_away(k, p))
            .map(|(k, p)| (*k, p.node_id.clone()))
            .collect();
        for (key, node) in away {
            if self
                .policy_for(key, node.as_deref().unwrap_or_default())
                .allows(room)
            {
                if let Some(p) = self.peers.get_mut(&key) {
                    p.missed(room, now_ms);
                }
            }
        }
    }

    /// Room `room` was deleted here: it leaves the node's rooms and every peer's row (a
    /// deletion is not a change a peer lacks; the tombstone travels on its own).
    pub fn forget_room(&mut self, room: &str) {
        self.local_rooms.remove(room);
        for p in self.peers.values_mut() {
            p.rooms.remove(room);
        }
    }

    /// Whether any link could take a change (a cheap check before encoding one): false when
    /// no link is up, or the only one is `origin`.
    pub fn has_targets(&self, origin: Option<LinkId>) -> bool {
        self.links
            .iter()
            .any(|(id, l)| Some(*id) != origin && !l.closing)
    }

    /// Node ids of the peers with a live link, sorted, once each.
    pub fn connected_peers(&self) -> Vec<String> {
        let set: BTreeSet<String> = self
            .links
            .values()
            .filter(|l| !l.closing)
            .map(|l| l.node.clone())
            .collect();
        set.into_iter().collect()
    }

    /// Inbound links past their handshake (admitted, not yet closed). Inbound sockets in
    /// their handshake have rows too, but are counted by the shell's pre-authentication
    /// budget instead ([`crate::mesh::proto::preauth`]).
    pub fn inbound_links(&self) -> usize {
        self.links
            .iter()
            .filter(|(_, l)| matches!(l.peer, PeerKey::Inbound(_)))
            .count()
    }

    /// The peer table for `GET /peers`, with each row's key.
    pub fn rows(&self) -> Vec<(PeerKey, PeerRow)> {
        let found: HashMap<&str, &'static str> = self
            .peers
            .values()
            .filter_map(|p| match (p.origin, p.node_id.as_deref()) {
                (Origin::Found(s), Some(id)) => Some((id, s.as_str())),
                _ => None,
            })
            .collect();
        self.peers
            .iter()
            .map(|(k, p)| {
                let found_by = match p.origin {
                    Origin::Inbound => p
                        .node_id
                        .as_deref()
                        .and_then(|id| found.get(id).copied())
                        .unwrap_or("inbound"),
                    _ => p.source(),
                };
                let policy = self.policy_for(*k, p.node_id.as_deref().unwrap_or_default());
                // A plain y-websocket server takes only the rooms listed for it; a ymesh
                // peer is shown every room of this node, shared or not.
                let plain = match k {
                    PeerKey::Configured(i) => self
                        .cfg
                        .peers
                        .get(*i)
                        .filter(|c| !c.rooms.is_empty())
                        .map(|c| &c.rooms),
                    _ => None,
                };
                let mut names: std::collections::BTreeSet<&str> = match plain {
                    Some(rooms) => rooms.iter().map(String::as_str).collect(),
                    None => self.local_rooms.iter().map(String::as_str).collect(),
                };
                names.extend(p.rooms.keys().map(String::as_str));
                let rooms = names.into_iter().map(|r| (r, policy.allows(r)));
                (*k, p.row(found_by, rooms))
            })
            .collect()
    }

    /// The row key of each live link, for the simulator and tests: `(link, row, node)`.
    pub fn live_links(&self) -> Vec<(LinkId, PeerKey, String)> {
        self.links
            .iter()
            .filter(|(_, l)| !l.closing)
            .map(|(id, l)| (*id, l.peer, l.node.clone()))
            .collect()
    }

    /// Each room's sync flag on the row that carries the live link to `node` (for the
    /// simulator and tests).
    pub fn synced_rooms(&self, node: &str) -> Vec<(String, bool)> {
        let Some(link) = self.links.values().find(|l| !l.closing && l.node == node) else {
            return Vec::new();
        };
        self.peers
            .get(&link.peer)
            .map(|p| {
                p.rooms
                    .keys()
                    .map(|r| {
                        let (status, _) = p.status(r, link.policy.allows(r));
                        (r.clone(), status == super::RoomStatus::Synced)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}
