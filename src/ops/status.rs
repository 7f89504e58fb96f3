//! `ymesh status` and `ymesh rooms`: a running node's `GET /`, `GET /peers` and
//! `GET /rooms?all=true`, rendered as plain-text tables (or, `--json`, as one document),
//! with where every room stands with every peer and, for each peer that is not synced,
//! why not.

use super::table::{cell, table};
use super::{NodeClient, OpsError};

impl NodeClient {
    /// What `ymesh status` prints: the node, its peers, where each room stands with each
    /// peer (only `room` when given), why a peer is not synced, and its rooms.
    pub async fn status_text(&self, room: Option<&str>) -> Result<String, OpsError> {
        let (node, peers, rooms) = self.status_parts(room).await?;
        Ok(render_status(&node, &peers, &rooms))
    }

    /// `ymesh status --json`: `{"node": ..., "peers": [...], "rooms": [...]}`, the peers'
    /// and the node's rooms narrowed to `room` when given.
    pub async fn status_json(&self, room: Option<&str>) -> Result<serde_json::Value, OpsError> {
        let (node, peers, rooms) = self.status_parts(room).await?;
        Ok(serde_json::json!({ "node": node, "peers": peers, "rooms": rooms }))
    }

    async fn status_parts(
        &self,
        room: Option<&str>,
    ) -> Result<(serde_json::Value, serde_json::Value, serde_json::Value), OpsError> {
        let node = self.get_json("/").await?;
        let mut peers = self.get_json("/peers").await?;
        let mut rooms = self.get_json("/rooms?all=true").await?;
        if let Some(room) = room {
            for p in peers.as_array_mut().into_iter().flatten() {
                if let Some(list) = p["rooms"].as_array_mut() {
                    list.retain(|r| r["name"] == room);
                }
            }
            if let Some(list) = rooms.as_array_mut() {
                list.retain(|r| r["name"] == room);
            }
        }
        Ok((node, peers, rooms))
    }

    /// What `ymesh rooms` prints: the rooms table.
    pub async fn rooms_text(&self) -> Result<String, OpsError> {
        let rooms = self.get_json("/rooms?all=true").await?;
        Ok(render_rooms(&rooms))
    }
}

/// Renders `ymesh status` from a node's `GET /`, `GET /peers` and `GET /rooms?all=true`
/// answers (their `data`), as plain-text tables.
pub fn render_status(
    node: &serde_json::Value,
    peers: &serde_json::Value,
    rooms: &serde_json::Value,
) -> String {
    let s = cell;
    let mut out = format!(
        "node {}  version {}  up {} s  rooms in memory {}  connections {}\n\n",
        s(&node["node_id"]),
        s(&node["version"]),
        s(&node["uptime_s"]),
        s(&node["rooms"]),
        s(&node["connections"]),
    );
    let peer_rows: Vec<Vec<String>> = peers
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|p| {
            // Messages of every kind one way (missing or unreadable counts as 0).
            let total = |dir: &str| {
                <crate::metrics::DirTrafficSnapshot as serde::Deserialize>::deserialize(&p[dir])
                    .unwrap_or_default()
                    .messages()
                    .to_string()
            };
            let detail = p["reason"]
                .as_str()
                .or_else(|| p["last_error"].as_str())
                .unwrap_or("")
                .to_string();
            let rooms = p["rooms"]
                .as_array()
                .map(|a| a.as_slice())
                .unwrap_or_default();
            // Rooms the share policy keeps from the peer are listed, not counted.
            let synced = rooms.iter().filter(|r| r["status"] == "synced").count();
            let shared = rooms.iter().filter(|r| r["status"] != "not_shared").count();
            let found_by = match &p["found_by"] {
                serde_json::Value::Null => s(&p["source"]),
                v => s(v),
            };
            // A pending link says on which side a person must approve.
            let state = match (p["state"].as_str(), p["waiting_for"].as_str()) {
                (Some("pending"), Some("this_node")) => "pending (approve here)".to_string(),
                (Some("pending"), Some("peer")) => "pending (approve there)".to_string(),
                _ => s(&p["state"]),
            };
            vec![
                state,
                found_by,
                s(&p["address"]),
                s(&p["node_id"]),
                format!("{synced}/{shared}"),
                total("sent"),
                total("received"),
                detail,
            ]
        })
        .collect();
    out.push_str(&format!("peers ({})\n", peer_rows.len()));
    if peer_rows.is_empty() {
        out.push_str("  none configured or connected\n");
    } else {
        out.push_str(&table(
            &[
                "STATE", "FOUND BY", "ADDRESS", "NODE ID", "SYNCED", "SENT", "RECEIVED", "DETAIL",
            ],
            peer_rows,
        ));
    }
    out.push('\n');
    let peer_list = peers.as_array().map(|a| a.as_slice()).unwrap_or_default();
    out.push_str(&render_sync(peer_list));
    out.push_str(&render_rooms(rooms));
    out
}

/// A peer as a person recognizes it: its node id, else its address.
fn peer_name(p: &serde_json::Value) -> String {
    p["node_id"]
        .as_str()
        .or_else(|| p["address"].as_str())
        .unwrap_or("?")
        .to_string()
}

/// Seconds from `ms` (unix ms) to now, for "since" columns.
fn age(ms: &serde_json::Value) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    match ms.as_u64() {
        Some(ms) => format!("{} s ago", now.saturating_sub(ms) / 1000),
        None => "-".into(),
    }
}

/// When a peer that backs off is dialed next.
fn next_attempt(p: &serde_json::Value) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    match p["next_retry_ms"].as_u64() {
        Some(at) if at > now => format!("next attempt in {} s", (at - now).div_ceil(1000)),
        _ => "next attempt now".to_string(),
    }
}

/// The per-room, per-peer table, then one line per peer that is not synced saying why.
fn render_sync(peers: &[serde_json::Value]) -> String {
    let mut rows = Vec::new();
    let mut why = Vec::new();
    for p in peers {
        let name = peer_name(p);
        let rooms = p["rooms"]
            .as_array()
            .map(|a| a.as_slice())
            .unwrap_or_default();
        let (mut pending, mut unknown) = (0, 0);
        for r in rooms {
            let status = cell(&r["status"]);
            let detail = match status.as_str() {
                "pending" => {
                    pending += 1;
                    match r["unacked"].as_u64() {
                        Some(0) | None => "initial exchange under way".to_string(),
                        Some(n) => format!(
                            "{n} update(s) not acknowledged, oldest {}",
                            age(&r["pending_since_ms"])
                        ),
                    }
                }
                "not_shared" => "kept from this peer by its share policy".to_string(),
                "unknown" => {
                    unknown += 1;
                    "no link to this peer yet".to_string()
                }
                _ => String::new(),
            };
            rows.push(vec![name.clone(), cell(&r["name"]), status, detail]);
        }
        let state = cell(&p["state"]);
        let error = p["reason"]
            .as_str()
            .or_else(|| p["last_error"].as_str())
            .unwrap_or("");
        let reason = match state.as_str() {
            "connected" if pending == 0 && unknown == 0 => None,
            "connected" => Some(format!("{pending} room(s) still exchanging")),
            "backing_off" => Some(format!("link down ({error}); {}", next_attempt(p))),
            "pending" => Some(format!("waiting for approval: {error}")),
            "offline" => Some(format!(
                "offline ({error}); it dialed this node, which waits for it to dial again"
            )),
            "connecting" | "handshaking" => Some("linking".to_string()),
            other => Some(format!("{other}: {error}")),
        };
        if let Some(reason) = reason {
            why.push(format!("  {name}: not synced: {reason}\n"));
        }
    }
    let mut out = String::from("sync\n");
    if rows.is_empty() {
        out.push_str("  no rooms shared with a peer\n");
    } else {
        out.push_str(&table(&["PEER", "ROOM", "STATUS", "DETAIL"], rows));
    }
    for line in why {
        out.push_str(&line);
    }
    out.push('\n');
    out
}

/// The rooms table of `ymesh status` and `ymesh rooms`, from `GET /rooms?all=true`.
pub fn render_rooms(rooms: &serde_json::Value) -> String {
    let s = cell;
    let room_rows: Vec<Vec<String>> = rooms
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|r| {
            vec![
                s(&r["name"]),
                s(&r["connections"]),
                if r["loaded"] == true { "yes" } else { "no" }.to_string(),
                s(&r["bytes"]),
                s(&r["schema_version"]),
                r["store_error"]["error"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect();
    let mut out = format!("rooms ({})\n", room_rows.len());
    if room_rows.is_empty() {
        out.push_str("  none\n");
    } else {
        out.push_str(&table(
            &[
                "ROOM",
                "CONNECTIONS",
                "IN MEMORY",
                "STORED BYTES",
                "SCHEMA",
                "STORE ERROR",
            ],
            room_rows,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::render_status;
    use serde_json::json;

    #[test]
    fn status_renders_aligned_tables() {
        let out = render_status(
            &json!({"node_id": "12D3KooWX", "version": "0.1.0", "uptime_s": 5, "rooms": 1, "connections": 2}),
            &json!([{"state": "connected", "source": "config", "found_by": "mdns", "address": "ws://b:3913",
                     "node_id": "12D3KooWB", "sent": {"sync": {"messages": 3}}, "received": {"control": {"messages": 2}},
                     "last_error": null}]),
            &json!([{"name": "notes", "connections": 2, "loaded": true, "bytes": 120}]),
        );
        assert!(out.starts_with("node 12D3KooWX  version 0.1.0"), "{out}");
        assert!(out.contains("STATE      FOUND BY  ADDRESS"), "{out}");
        assert!(
            out.contains("connected  mdns      ws://b:3913  12D3KooWB  0/0     3     2"),
            "{out}"
        );
        assert!(
            out.contains("notes  2            yes        120           -"),
            "{out}"
        );
        let down = render_status(
            &json!({}),
            &json!([{"state": "backing_off", "source": "config", "address": "ws://b:3913",
                     "node_id": "12D3KooWB", "last_error": "cannot connect to ws://b:3913/_mesh",
                     "next_retry_ms": 1,
                     "rooms": [
                        {"name": "a", "status": "synced", "synced": true},
                        {"name": "b", "status": "pending", "unacked": 2, "pending_since_ms": 1},
                        {"name": "c", "status": "not_shared"}]}]),
            &json!([]),
        );
        assert!(
            down.contains("1/2"),
            "not-shared rooms are not counted: {down}"
        );
        assert!(down.contains("2 update(s) not acknowledged"), "{down}");
        assert!(
            down.contains("kept from this peer by its share policy"),
            "{down}"
        );
        assert!(
            down.contains("12D3KooWB: not synced: link down (cannot connect to ws://b:3913/_mesh)"),
            "{down}"
        );
        let pending = render_status(
            &json!({}),
            &json!([{"state": "pending", "waiting_for": "this_node", "source": "inbound",
                     "address": "127.0.0.1:5000", "node_id": "12D3KooWC",
                     "last_error": "approve it with `ymesh peer approve 12D3KooWC` on this node"}]),
            &json!([]),
        );
        assert!(pending.contains("pending (approve here)"), "{pending}");
        assert!(
            pending.contains("ymesh peer approve 12D3KooWC"),
            "{pending}"
        );
        let offline = render_status(
            &json!({}),
            &json!([{"state": "offline", "source": "inbound", "address": "10.0.0.7:5000",
                     "node_id": "12D3KooWL", "last_error": "connection reset",
                     "rooms": [{"name": "a", "status": "pending", "synced": false, "unacked": 1}]}]),
            &json!([]),
        );
        assert!(
            offline.contains("12D3KooWL: not synced: offline (connection reset)"),
            "{offline}"
        );
        let empty = render_status(&json!({}), &json!([]), &json!([]));
        assert!(empty.contains("none configured or connected") && empty.contains("rooms (0)"));
    }
}
