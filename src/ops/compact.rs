//! `ymesh compact`: folding rooms' update logs into snapshots, in a stopped node's store or
//! on a running node (the admin route `POST /rooms/{room}/compact`, room by room).

use std::path::Path;

use super::dir::{existing_db, not_stored, with_store};
use super::{check_room_name, NodeClient, OpsError};
use crate::net::Request;
use crate::store::Store;

/// What compacting one room did (logical bytes: snapshot plus log).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Compacted {
    /// The room.
    pub room: String,
    /// Stored bytes before.
    pub bytes_before: u64,
    /// Stored bytes after.
    pub bytes_after: u64,
}

/// Compacts `room` (or, with `None`, every stored room) in the store of a stopped node.
pub async fn compact_dir(dir: &Path, room: Option<&str>) -> Result<Vec<Compacted>, OpsError> {
    if let Some(room) = room {
        check_room_name(room)?;
    }
    existing_db(dir)?;
    with_store(dir, async |store| {
        let rooms = match room {
            Some(room) => match store.meta(room).await? {
                Some(_) => vec![room.to_owned()],
                None => return Err(not_stored(room, dir)),
            },
            None => store.list().await?.into_iter().map(|m| m.name).collect(),
        };
        let mut out = Vec::with_capacity(rooms.len());
        for room in rooms {
            let (bytes_before, bytes_after) = store.compact(&room).await?;
            out.push(Compacted {
                room,
                bytes_before,
                bytes_after,
            });
        }
        Ok(out)
    })
    .await
}

impl NodeClient {
    /// `POST /rooms/{room}/compact` (admin).
    pub async fn compact(&self, room: &str) -> Result<Compacted, OpsError> {
        check_room_name(room)?;
        let path = format!("{}/compact", Self::room_path(room));
        let v = self.data(Request::post(path.as_str())).await?;
        serde_json::from_value(v)
            .map_err(|e| self.bad_answer(format!("unexpected answer to compact: {e}")))
    }

    /// Compacts `room`, or every stored room with `None`.
    pub async fn compact_all(&self, room: Option<&str>) -> Result<Vec<Compacted>, OpsError> {
        let rooms = match room {
            Some(r) => vec![r.to_owned()],
            None => self.stored_rooms().await?,
        };
        let mut out = Vec::with_capacity(rooms.len());
        for room in rooms {
            out.push(self.compact(&room).await?);
        }
        Ok(out)
    }
}

/// What `ymesh compact` prints: one line per room, or that there was none.
pub fn report(done: &[Compacted]) -> String {
    if done.is_empty() {
        return "no stored rooms\n".to_string();
    }
    done.iter()
        .map(|c| {
            format!(
                "{:?}: {} -> {} bytes\n",
                c.room, c.bytes_before, c.bytes_after
            )
        })
        .collect()
}
