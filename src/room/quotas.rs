//! Storage quotas: [`Quotas`] and the check an update passes before a room applies it.
//!
//! The check runs under the room lock (it reads the document's state vector) and asks the
//! store for the bytes already stored; it never waits.

use yrs::{Doc, ReadTxn, Transact, Update};

use crate::store::Store;

/// Storage quotas in logical bytes (snapshot + log), checked before an update that adds
/// content is applied. `None` = no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quotas {
    /// Per room.
    pub room_bytes: Option<u64>,
    /// All rooms together.
    pub node_bytes: Option<u64>,
}

impl Quotas {
    /// Refuses (with the reason) an update of `len` bytes that adds content to `room`
    /// (whose document is `doc`) when storing it would pass a quota. Updates that add no
    /// insertion (duplicates, a reconnecting client's full state the room already has, pure
    /// deletions) always pass, so a room at its quota still syncs. Without a store nothing
    /// is stored, so nothing is refused.
    pub(crate) fn check(
        &self,
        store: Option<&dyn Store>,
        room: &str,
        doc: &Doc,
        update: &Update,
        len: usize,
    ) -> Result<(), String> {
        let Some(store) = store else {
            return Ok(());
        };
        if self.room_bytes.is_none() && self.node_bytes.is_none() {
            return Ok(());
        }
        let have = doc.transact().state_vector();
        if !update.extends(&have) {
            return Ok(());
        }
        let len = len as u64;
        if let Some(max) = self.room_bytes {
            let now = store.stored_bytes(room).unwrap_or(0);
            if now + len > max {
                return Err(format!(
                    "room quota exceeded: room {room:?} stores {now} bytes; {len} more would pass its quota of {max}"
                ));
            }
        }
        if let Some(max) = self.node_bytes {
            let now = store.total_bytes();
            if now + len > max {
                return Err(format!(
                    "node quota exceeded: the node stores {now} bytes; {len} more would pass its quota of {max}"
                ));
            }
        }
        Ok(())
    }
}
