//! `ymesh export`: a room's whole document as one Yjs v1 update, from a stopped node's
//! store or from a running node (`GET /rooms/{room}`), checked before it is handed out.

use std::path::Path;

use yrs::{ReadTxn, StateVector, Transact};

use super::dir::{doc_from, existing_db, not_stored, with_store};
use super::{check_room_name, validate_update, NodeClient, OpsError};
use crate::net::Request;
use crate::store::Store;

/// The whole document of `room` in the store of a stopped node, as one Yjs v1 update.
pub async fn export_dir(dir: &Path, room: &str) -> Result<Vec<u8>, OpsError> {
    check_room_name(room)?;
    existing_db(dir)?;
    let loaded = with_store(dir, async |store| Ok(store.load(room).await?)).await?;
    let Some(loaded) = loaded else {
        return Err(not_stored(room, dir));
    };
    let doc = doc_from(room, &loaded)?;
    let update = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    Ok(update)
}

impl NodeClient {
    /// `GET /rooms/{room}`: the room's whole document as one Yjs v1 update.
    pub async fn export(&self, room: &str) -> Result<Vec<u8>, OpsError> {
        check_room_name(room)?;
        let path = Self::room_path(room);
        let body = self.send(Request::get(path)).await?.body;
        validate_update(&body)
            .map_err(|e| self.bad_answer(format!("the export of room {room:?} is {e}")))?;
        Ok(body.to_vec())
    }
}

/// The line `ymesh export -o FILE` prints (on standard error) once the file is written.
pub fn report(room: &str, file: &Path, bytes: usize) -> String {
    format!(
        "exported room {room:?} to {} ({bytes} bytes)\n",
        file.display()
    )
}
