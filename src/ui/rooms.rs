//! The rooms of the status feed, bounded: totals (rooms loaded, rooms stored, clients) and
//! at most [`ROOMS_SHOWN`] rows, however many rooms the node holds.
//!
//! A page polls the feed every two seconds, so the feed must not list the store: the stored
//! rooms are counted by the node's sampler now and then ([`StoredRooms::refresh`], every
//! 30 s, the same count `ymesh_rooms_stored` shows), which keeps the count and the most
//! recently updated rooms. A poll reads the rooms in memory from the registry and that
//! cache: its cost grows with the rooms in memory, never with the rooms on disk.
//!
//! Which rows are shown, in order: rooms in memory with clients (most clients first), the
//! other rooms in memory (most recently updated first), then stored rooms that are not in
//! memory (most recently updated first).

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;

use crate::room::RoomInfo;
use crate::store::{RoomFailure, RoomMeta};

/// Most room rows the feed carries.
pub const ROOMS_SHOWN: usize = 100;

/// Stored rooms kept from the last count: enough to fill the rows when every room in
/// memory is among them.
const RECENT_KEPT: usize = 2 * ROOMS_SHOWN;

/// One stored room as the last count saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StoredRoom {
    name: String,
    bytes: u64,
    updated_at_ms: u64,
}

/// The store's rooms as the sampler last counted them: how many, and the most recently
/// updated ones (at most [`RECENT_KEPT`]).
#[derive(Debug, Default)]
pub struct StoredRooms {
    last: Mutex<Option<(u64, Vec<StoredRoom>)>>,
}

impl StoredRooms {
    /// Keeps the count of `rooms` (every stored room) and the most recently updated of them.
    pub fn refresh(&self, mut rooms: Vec<RoomMeta>) {
        let count = rooms.len() as u64;
        let newest_first = |a: &RoomMeta, b: &RoomMeta| {
            b.updated_at_ms
                .cmp(&a.updated_at_ms)
                .then(a.name.cmp(&b.name))
        };
        if rooms.len() > RECENT_KEPT {
            rooms.select_nth_unstable_by(RECENT_KEPT, newest_first);
            rooms.truncate(RECENT_KEPT);
        }
        rooms.sort_by(newest_first);
        let recent = rooms
            .into_iter()
            .map(|m| StoredRoom {
                name: m.name,
                bytes: m.bytes,
                updated_at_ms: m.updated_at_ms,
            })
            .collect();
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some((count, recent));
    }

    /// Rooms in the store as of the last count (`None` before the first).
    pub fn count(&self) -> Option<u64> {
        self.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(n, _)| *n)
    }

    fn snapshot(&self) -> Option<(u64, Vec<StoredRoom>)> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The feed's `totals`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoomTotals {
    /// Rooms in memory (with content, or pinned).
    pub rooms_loaded: u64,
    /// Rooms in the store as of the last count; `None` without a store or before the first
    /// count.
    pub rooms_stored: Option<u64>,
    /// Rooms of the node: in memory or stored (as of the last count of the store).
    pub rooms: u64,
    /// Client connections.
    pub clients: u64,
    /// Rows in `rooms`.
    pub rooms_shown: u64,
    /// Rooms left out of `rooms`.
    pub rooms_omitted: u64,
}

/// One row of the feed's `rooms`, as `GET /rooms?all=true` shows a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoomRow {
    /// The room's name.
    pub name: String,
    /// Client connections to it.
    pub connections: u64,
    /// Exempt from idle eviction.
    pub pinned: bool,
    /// In memory.
    pub loaded: bool,
    /// In the store (a room in memory on a node with a store is written through).
    pub stored: bool,
    /// Stored size as of the last count, when known.
    pub bytes: Option<u64>,
    /// Last committed change as of the last count, when known (unix ms).
    pub updated_at_ms: Option<u64>,
    /// Why its last write failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_error: Option<RoomFailure>,
    /// The schema version `migrate` recorded, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<u64>,
}

/// Totals and at most `cap` rows: `loaded` are the rooms in memory (the registry's list),
/// `stored` the last count of the store (`None` without a store).
pub fn summarize(
    loaded: Vec<RoomInfo>,
    stored: Option<&StoredRooms>,
    clients: u64,
    cap: usize,
) -> (RoomTotals, Vec<RoomRow>) {
    let snapshot = stored.and_then(StoredRooms::snapshot);
    let known: HashMap<&str, &StoredRoom> = snapshot
        .iter()
        .flat_map(|(_, recent)| recent.iter().map(|r| (r.name.as_str(), r)))
        .collect();
    let has_store = stored.is_some();
    let mut in_memory: Vec<RoomRow> = loaded
        .into_iter()
        .map(|r| {
            let seen = known.get(r.name.as_str());
            RoomRow {
                connections: r.connections as u64,
                pinned: r.pinned,
                loaded: true,
                stored: has_store,
                bytes: seen.map(|s| s.bytes),
                updated_at_ms: seen.map(|s| s.updated_at_ms),
                store_error: r.store_error,
                schema_version: None,
                name: r.name,
            }
        })
        .collect();
    let rooms_loaded = in_memory.len() as u64;
    in_memory.sort_by(|a, b| {
        (b.connections > 0)
            .cmp(&(a.connections > 0))
            .then(b.connections.cmp(&a.connections))
            .then(b.updated_at_ms.cmp(&a.updated_at_ms))
            .then(a.name.cmp(&b.name))
    });
    let rooms_stored = snapshot.as_ref().map(|(n, _)| *n);
    let mut rows: Vec<RoomRow> = in_memory.into_iter().take(cap).collect();
    if rows.len() < cap {
        let shown: std::collections::HashSet<String> =
            rows.iter().map(|r| r.name.clone()).collect();
        let loaded_names = rows.len();
        let extra = snapshot
            .iter()
            .flat_map(|(_, recent)| recent.iter())
            .filter(|s| !shown.contains(&s.name))
            .take(cap - loaded_names)
            .map(|s| RoomRow {
                name: s.name.clone(),
                connections: 0,
                pinned: false,
                loaded: false,
                stored: true,
                bytes: Some(s.bytes),
                updated_at_ms: Some(s.updated_at_ms),
                store_error: None,
                schema_version: None,
            })
            .collect::<Vec<_>>();
        rows.extend(extra);
    }
    // Rooms in memory are stored too once they have content: the store's count covers them
    // unless they are newer than the count.
    let rooms = rooms_stored.map_or(rooms_loaded, |s| s.max(rooms_loaded));
    let shown = rows.len() as u64;
    (
        RoomTotals {
            rooms_loaded,
            rooms_stored,
            rooms,
            clients,
            rooms_shown: shown,
            rooms_omitted: rooms.saturating_sub(shown),
        },
        rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str, updated_at_ms: u64) -> RoomMeta {
        RoomMeta {
            name: name.into(),
            bytes: 10,
            log_count: 1,
            updated_at_ms,
            state_vector: Vec::new(),
            digest: String::new(),
        }
    }

    fn info(name: &str, connections: usize) -> RoomInfo {
        RoomInfo {
            name: name.into(),
            connections,
            pinned: false,
            store_error: None,
        }
    }

    #[test]
    fn rooms_with_clients_come_first_then_the_most_recent_and_the_rest_are_counted() {
        let stored = StoredRooms::default();
        stored.refresh((0..500).map(|i| meta(&format!("s{i:03}"), i)).collect());
        assert_eq!(stored.count(), Some(500));
        let loaded = vec![info("s450", 0), info("busy", 3), info("quiet", 1)];
        let (totals, rows) = summarize(loaded, Some(&stored), 4, 10);
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            ["busy", "quiet", "s450", "s499", "s498", "s497", "s496", "s495", "s494", "s493"]
        );
        assert_eq!(rows[2].bytes, Some(10), "a loaded room known to the count");
        assert!(rows[0].loaded && rows[0].stored && rows[0].bytes.is_none());
        assert!(!rows[3].loaded && rows[3].stored);
        assert_eq!(
            totals,
            RoomTotals {
                rooms_loaded: 3,
                rooms_stored: Some(500),
                rooms: 500,
                clients: 4,
                rooms_shown: 10,
                rooms_omitted: 490,
            }
        );
    }

    #[test]
    fn without_a_store_the_rooms_in_memory_are_capped() {
        let loaded = (0..150).map(|i| info(&format!("m{i}"), i % 2)).collect();
        let (totals, rows) = summarize(loaded, None, 75, ROOMS_SHOWN);
        assert_eq!(rows.len(), ROOMS_SHOWN);
        assert!(rows[..75].iter().all(|r| r.connections == 1));
        assert!(rows.iter().all(|r| r.loaded && !r.stored));
        assert_eq!(totals.rooms_loaded, 150);
        assert_eq!(totals.rooms_stored, None);
        assert_eq!(totals.rooms_omitted, 50);
    }

    #[test]
    fn the_count_keeps_only_the_most_recent_rooms() {
        let stored = StoredRooms::default();
        stored.refresh((0..5000).map(|i| meta(&format!("r{i}"), i)).collect());
        let snapshot = stored.snapshot().expect("counted");
        assert_eq!(snapshot.0, 5000);
        assert_eq!(snapshot.1.len(), RECENT_KEPT);
        assert_eq!(snapshot.1[0].name, "r4999");
    }
}
