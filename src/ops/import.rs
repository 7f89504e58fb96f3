//! `ymesh import`: merging a Yjs v1 update into a room, in a stopped node's store (stored
//! like the room layer stores a change) or on a running node (`POST /rooms/{room}`, answered
//! once the change is on disk).
//!
//! A room that was deleted keeps a tombstone, and an update holding only content older than
//! the deletion (an export taken before it) is dropped by it. Importing one is refused with
//! an error that says the room was deleted and how to restore it: `--undelete` merges the
//! update with an undelete marker ([`crate::room::with_undelete_marker`]), which clears the
//! tombstone here and, as the change travels, on every peer.

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
    /// Whether the room had been deleted and this import brought it back.
    pub undeleted: bool,
}

impl Imported {
    /// The line `ymesh import` prints: `bytes` from `file` went into `room`.
    pub fn report(&self, room: &str, bytes: usize, file: &Path) -> String {
        if self.undeleted {
            format!(
                "restored deleted room {room:?} from {} ({bytes} bytes); saved; its tombstone \
                 is cleared here and on each peer as the room reaches it\n",
                file.display()
            )
        } else if self.changed {
            format!("imported {bytes} bytes into room {room:?}; saved\n")
        } else {
            format!(
                "room {room:?} already contained everything in {}; nothing changed\n",
                file.display()
            )
        }
    }
}

/// The refusal for an import whose content the deletion of `room` covers.
fn deleted_room(room: &str, deleted_ms: u64, origin: &str) -> OpsError {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let ago = now.saturating_sub(deleted_ms) / 1000;
    let ago = match ago {
        0..120 => format!("{ago} s ago"),
        120..7200 => format!("{} min ago", ago / 60),
        7200..172_800 => format!("{} h ago", ago / 3600),
        _ => format!("{} days ago", ago / 86_400),
    };
    OpsError::Refused(format!(
        "room {room:?} was deleted ({ago}, on node {origin}), and everything in this file is \
         older than the deletion, so nothing was imported; to restore the room from it, run \
         the same command with --undelete"
    ))
}

/// Merges `update` (a Yjs v1 update) into `room` in the store of a stopped node, creating
/// the room (and the store) if needed; returns once it is committed to disk. A room that was
/// deleted is refused when the deletion covers `update`, unless `undelete`.
pub async fn import_dir(
    dir: &Path,
    room: &str,
    update: &[u8],
    undelete: bool,
) -> Result<Imported, OpsError> {
    check_room_name(room)?;
    validate_update(update)?;
    with_store(dir, async |store| {
        let tombstone = store
            .tombstones()
            .await?
            .into_iter()
            .find(|t| t.room == room);
        let marked;
        let update = match &tombstone {
            Some(t) if undelete => {
                marked = crate::room::with_undelete_marker(update, t)
                    .map_err(|e| OpsError::Refused(format!("not a valid Yjs v1 update: {e}")))?;
                marked.as_slice()
            }
            Some(t) => {
                let decoded = crate::protocol::scan::decode_update(update)
                    .map_err(|e| OpsError::Refused(format!("not a valid Yjs v1 update: {e}")))?;
                if crate::room::update_covered(&t.state_vector, &decoded) {
                    return Err(deleted_room(room, t.deleted_ms, &t.origin));
                }
                update
            }
            None => update,
        };
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
            return Ok(Imported {
                changed: false,
                undeleted: false,
            });
        };
        let sv = doc.transact().state_vector().encode_v1();
        // On a room with a tombstone the store clears it with this append (a new edit).
        let ticket = store.append(room, bytes::Bytes::from(to_store), sv)?;
        store.wait_durable(ticket).await?;
        Ok(Imported {
            changed: true,
            undeleted: tombstone.is_some(),
        })
    })
    .await
}

impl NodeClient {
    /// `POST /rooms/{room}` (`?undelete=true` with `undelete`): merges `update` into the
    /// room; answered once it is on disk. Refused when the room was deleted and the deletion
    /// covers `update`, unless `undelete`.
    pub async fn import(
        &self,
        room: &str,
        update: &[u8],
        undelete: bool,
    ) -> Result<Imported, OpsError> {
        check_room_name(room)?;
        validate_update(update)?;
        let mut path = Self::room_path(room);
        if undelete {
            path.push_str("?undelete=true");
        }
        let req = Request::post(path).bytes(update.to_vec());
        let v = self.data(req).await?;
        if let Some(deleted) = v.get("deleted") {
            return Err(deleted_room(
                room,
                deleted["deleted_ms"].as_u64().unwrap_or(0),
                deleted["origin"].as_str().unwrap_or("?"),
            ));
        }
        Ok(Imported {
            changed: v["changed"].as_bool().unwrap_or(true),
            undeleted: v["undeleted"].as_bool().unwrap_or(false),
        })
    }
}
