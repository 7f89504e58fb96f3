//! A room's side of durability: load before sync, store tickets, "is every change on disk",
//! and the repair that rewrites a room after a failed commit.
//!
//! A change is appended in `doc`, inside the critical section that applied it, so the log's
//! order is the room's apply order; this file holds loading, the raw append of an update yrs
//! holds as pending (called from that same section), tickets, the "durable now?" check and
//! repair. Nothing here holds the room lock across an `.await`: loading reads the store
//! first, then applies what it read in one critical section.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use yrs::updates::encoder::Encode;
use yrs::{ReadTxn, StateVector, Transact};

use super::doc::RoomState;
use super::{lock, Room, RoomError};
use crate::protocol::scan;
use crate::store::{CommitTicket, Store, StoreError};

impl Room {
    /// Loads the room's stored state into its document, once; later calls return at once.
    /// Without a store there is nothing to load. Sessions join only after this succeeded,
    /// so a client's first SyncStep1 already reflects what is on disk.
    pub async fn load(&self) -> Result<(), RoomError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        self.loaded
            .get_or_try_init(|| async {
                let stored = store
                    .load(&self.name)
                    .await
                    .map_err(|e| RoomError::Load(e.to_string()))?;
                let Some(stored) = stored else {
                    return Ok(());
                };
                let st = lock(&self.state);
                let doc = &st.doc;
                let mut txn = doc.transact_mut();
                for blob in stored.snapshot.iter().chain(stored.updates.iter()) {
                    // Stored updates may come from elsewhere (an import, another node's S3
                    // snapshot): scanned like any other input.
                    let update = scan::decode_update(blob).map_err(|e| {
                        RoomError::Load(format!("stored update does not decode: {e}"))
                    })?;
                    txn.apply_update(update)
                        .map_err(|e| RoomError::Load(format!("stored update: {e}")))?;
                }
                drop(txn);
                // Loading is not a change: nothing to broadcast or store again (no
                // observer captures it).
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// Whether the stored state was loaded (always true without a store).
    pub fn is_loaded(&self) -> bool {
        self.store.is_none() || self.loaded.initialized()
    }

    /// Resolves when every change of this room so far is committed to disk. Without a store
    /// it resolves at once.
    pub async fn wait_durable(&self) -> Result<(), StoreError> {
        let ticket = self.last_ticket.load(Ordering::Acquire);
        match &self.store {
            Some(store) if ticket > 0 => store.wait_durable(CommitTicket(ticket)).await,
            _ => Ok(()),
        }
    }

    /// Writes the room's full in-memory state to the store after a failed commit left a gap
    /// in its log (enqueued under the room lock, so it covers every earlier change). The
    /// store marks the room healthy once it commits.
    pub fn repair(&self) -> Result<Option<CommitTicket>, StoreError> {
        let Some(store) = &self.store else {
            return Ok(None);
        };
        let st = lock(&self.state);
        let txn = st.doc.transact();
        let full = txn.encode_state_as_update_v1(&StateVector::default());
        let sv = txn.state_vector().encode_v1();
        drop(txn);
        let ticket = store.repair(&self.name, Bytes::from(full), sv)?;
        self.last_ticket.fetch_max(ticket.0, Ordering::AcqRel);
        drop(st);
        Ok(Some(ticket))
    }

    /// Why the room's latest changes are not on disk, if they are not.
    pub fn store_failure(&self) -> Option<crate::store::RoomFailure> {
        self.store.as_ref()?.room_failure(&self.name)
    }

    /// Whether every change so far is durable, without waiting.
    pub(super) fn is_durable_now(&self) -> bool {
        if self.store_failure().is_some() {
            return false;
        }
        use futures_util::FutureExt;
        let ticket = self.last_ticket.load(Ordering::Acquire);
        match &self.store {
            Some(store) if ticket > 0 => matches!(
                store.wait_durable(CommitTicket(ticket)).now_or_never(),
                Some(Ok(()))
            ),
            _ => true,
        }
    }

    /// Appends `update` exactly as received (`st` is the caller's room lock).
    pub(super) fn store_raw(
        &self,
        st: &RoomState,
        update: &[u8],
    ) -> Option<Result<CommitTicket, StoreError>> {
        let store = self.store.as_ref()?;
        let sv = st.doc.transact().state_vector().encode_v1();
        let r = store.append_shared(&self.name, Bytes::copy_from_slice(update), sv);
        if let Ok(t) = &r {
            self.last_ticket.fetch_max(t.0, Ordering::AcqRel);
        }
        Some(r)
    }

    /// The newest store ticket of this room: once it is durable, every change the room has
    /// applied so far is on disk.
    pub fn last_ticket(&self) -> Option<CommitTicket> {
        match self.last_ticket.load(Ordering::Acquire) {
            0 => None,
            t => Some(CommitTicket(t)),
        }
    }

    /// The store the room appends to, if any.
    pub(crate) fn store(&self) -> Option<&Arc<dyn Store>> {
        self.store.as_ref()
    }
}
