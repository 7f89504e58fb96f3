//! `ymesh status` and `ymesh rooms`: a running node's `GET /`, `GET /peers` and
//! `GET /rooms?all=true`, rendered as plain-text tables.

use super::table::{cell, table};
use super::{NodeClient, OpsError};

impl NodeClient {
    /// What `ymesh status` prints: the node, its peers and its rooms.
    pub async fn status_text(&self) -> Result<String, OpsError> {
        let node = self.get_json("/").await?;
        let peers = self.get_json("/peers").await?;
        let rooms = self.get_json("/rooms?all=true").await?;
        Ok(render_status(&node, &peers, &rooms))
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
            let synced = rooms.iter().filter(|r| r["synced"] == true).count();
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
                format!("{synced}/{}", rooms.len()),
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
    out.push_str(&render_rooms(rooms));
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
        let empty = render_status(&json!({}), &json!([]), &json!([]));
        assert!(empty.contains("none configured or connected") && empty.contains("rooms (0)"));
    }
}
