//! The mesh's side of the room layer's [`Replicator`] interface: room changes, awareness and
//! deletions go to the peer links through [`Mesh`]'s public forwarding methods.
//!
//! The room layer owns the interface and the mesh implements it, so the dependency points
//! one way (mesh -> room). The node registers the mesh once, with
//! [`RoomRegistry::set_replicator`](crate::room::RoomRegistry::set_replicator).

use bytes::Bytes;

use super::Mesh;
use crate::room::{Replicator, SessionId};
use crate::store::Tombstone;

impl Replicator for Mesh {
    fn changed(&self, room: &str, update: &Bytes, origin: Option<SessionId>) {
        self.forward_update(room, update, origin);
    }

    fn awareness(&self, room: &str, update: &Bytes, origin: Option<SessionId>) {
        self.forward_awareness(room, update, origin);
    }

    fn deleted(&self, tombstone: &Tombstone) {
        // A deletion made here goes to every link (no link to spare).
        self.forward_tombstone(tombstone, None);
    }
}
