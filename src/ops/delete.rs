//! `ymesh delete`: deleting a room and recording its tombstone, in a stopped node's store
//! (the node sends the tombstone to its peers when it next links with them) or on a running
//! node (the admin route `DELETE /rooms/{room}`, which sends it at once).

use std::path::Path;

use super::dir::{existing_db, not_stored, with_store};
use super::{check_room_name, NodeClient, OpsError};
use crate::net::Request;
use crate::store::Store;

/// A deleted room, as `DELETE /rooms/{room}` and `ymesh delete` report it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct DeletedRoom {
    /// The room.
    pub room: String,
    /// Unix ms of the deletion.
    pub deleted_ms: u64,
    /// Node id of the node that deleted it.
    pub origin: String,
}

/// Deletes `room` from the store of a stopped node and records its tombstone (with this
/// node's id as the origin), which the node sends to its peers when it next links with
/// them, so they delete their copies too.
pub async fn delete_dir(dir: &Path, room: &str) -> Result<DeletedRoom, OpsError> {
    check_room_name(room)?;
    existing_db(dir)?;
    let identity = crate::mesh::identity::NodeIdentity::load_or_create(dir)
        .map_err(|e| OpsError::Refused(format!("{}: node key: {e}", dir.display())))?;
    with_store(dir, async |store| {
        if store.meta(room).await?.is_none() {
            return Err(not_stored(room, dir));
        }
        let tombstone = crate::store::Tombstone {
            room: room.to_owned(),
            deleted_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            state_vector: vec![0],
            origin: identity.node_id().to_owned(),
        };
        let (t, _) = store.delete_room(tombstone).await?;
        Ok(DeletedRoom {
            room: t.room,
            deleted_ms: t.deleted_ms,
            origin: t.origin,
        })
    })
    .await
}

impl NodeClient {
    /// `DELETE /rooms/{room}` (admin): deletes the room on the node and across the mesh.
    pub async fn delete(&self, room: &str) -> Result<DeletedRoom, OpsError> {
        check_room_name(room)?;
        let path = Self::room_path(room);
        let v = self.data(Request::delete(path.as_str())).await?;
        serde_json::from_value(v)
            .map_err(|e| self.bad_answer(format!("unexpected answer to delete: {e}")))
    }
}

/// The line `ymesh delete` prints; `on_node` says whether a running node deleted it.
pub fn report(deleted: &DeletedRoom, on_node: bool) -> String {
    let where_ = if on_node {
        "the tombstone is on its way to the node's peers"
    } else {
        "peers get the tombstone when the node next links with them"
    };
    format!(
        "deleted room {:?} (tombstone at unix ms {}, origin {}); {where_}\n",
        deleted.room, deleted.deleted_ms, deleted.origin
    )
}
