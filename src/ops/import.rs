//! `ymesh import`: merging a Yjs v1 update into a room, in a stopped node's store (stored
//! like the room layer stores a change) or on a running node (`POST /rooms/{room}`, answered
//! once the change is on disk).

use std::path::Path;

use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, Transact};

use super::dir::{doc_from, with_store};
use super::{check_room_name, validate_update, NodeClient, OpsError};
use crate::net::Request;
use crate::store::Store;

/// What importing an update did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Imported {
    /// Whether the room changed (an update it already contained changes nothing).
    pub changed: bool,
}

impl Imported {
    /// The line `ymesh import` prints: `bytes` from `file` went into `room`.
    pub fn report(&self, room: &str, bytes: usize, file: &Path) -> String {
        if self.changed {
            format!("imported {bytes} bytes into room {room:?}; saved\n")
        } else {
            format!(
                "room {room:?} already contained everything in {}; nothing changed\n",
                file.display()
            )
        }
    }
}

/// Merges `update` (a Yjs v1 update) into `room` in the store of a stopped node, creating
/// the room (and the store) if needed; returns once it is committed to disk.
pub async fn import_dir(dir: &Path, room: &str, update: &[u8]) -> Result<Imported, OpsError> {
    check_room_name(room)?;
    validate_update(update)?;
    with_store(dir, async |store| {
        let doc = match store.load(room).await? {
            Some(loaded) => doc_from(room, &loaded)?,
            None => Doc::new(),
        };
        let (diff, waiting) = {
            let mut txn = doc.transact_mut();
            let decoded = crate::protocol::scan::decode_update(update)
                .map_err(|e| OpsError::Refused(format!("not a valid Yjs v1 update: {e}")))?;
            txn.apply_update(decoded)
                .map_err(|e| OpsError::Refused(format!("the update does not apply: {e}")))?;
            (txn.encode_update_v1(), txn.has_missing_updates())
        };
        // Like the room layer: store what changed; an update still waiting for what it
        // depends on is stored as received, so it is there when the rest arrives.
        let to_store = if waiting {
            update.to_vec()
        } else if diff != [0, 0] {
            diff
        } else {
            return Ok(Imported { changed: false });
        };
        let sv = doc.transact().state_vector().encode_v1();
        let ticket = store.append(room, bytes::Bytes::from(to_store), sv)?;
        store.wait_durable(ticket).await?;
        Ok(Imported { changed: true })
    })
    .await
}

impl NodeClient {
    /// `POST /rooms/{room}`: merges `update` into the room; answered once it is on disk.
    pub async fn import(&self, room: &str, update: &[u8]) -> Result<Imported, OpsError> {
        check_room_name(room)?;
        validate_update(update)?;
        let req = Request::post(Self::room_path(room)).bytes(update.to_vec());
        let v = self.data(req).await?;
        Ok(Imported {
            changed: v["changed"].as_bool().unwrap_or(true),
        })
    }
}
