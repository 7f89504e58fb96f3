//! `ymesh command`: issuing a maintenance command on a running node (admin routes
//! `POST /rooms/{room}/commands` and `POST /commands`) and following its results
//! (`GET /commands/{id}`) until every responder answered or the deadline passed.

use std::collections::HashSet;
use std::time::Duration;

use super::remote::segment;
use super::{check_room_name, NodeClient, OpsError};
use crate::net::Request;

/// How often `--wait` asks for the command's results.
const POLL_EVERY: Duration = Duration::from_millis(200);

impl NodeClient {
    /// Issues a maintenance command (`POST /rooms/{room}/commands`, or `POST /commands` for
    /// every room; admin). Returns its id.
    pub async fn issue_command(
        &self,
        kind: &str,
        room: Option<&str>,
        args: serde_json::Value,
        deadline_s: Option<u64>,
    ) -> Result<String, OpsError> {
        let path = match room {
            Some(r) => {
                check_room_name(r)?;
                format!("{}/commands", Self::room_path(r))
            }
            None => "/commands".to_string(),
        };
        let mut body = serde_json::json!({ "kind": kind, "args": args });
        if let Some(d) = deadline_s {
            body["deadline_s"] = d.into();
        }
        let v = self.data(Request::post(path.as_str()).json(&body)).await?;
        v["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| self.bad_answer("the answer to a command carries no id".into()))
    }

    /// `GET /commands/{id}` (admin): the aggregated results of a command issued there.
    pub async fn command_report(&self, id: &str) -> Result<serde_json::Value, OpsError> {
        self.get_json(&format!("/commands/{}", segment(id))).await
    }

    /// Writes each result of command `id` to `out` as it arrives (one line per responder
    /// and status), then the totals once the command is done.
    pub async fn follow_command(
        &self,
        id: &str,
        out: &mut impl std::io::Write,
    ) -> Result<(), OpsError> {
        let written = |e: std::io::Error| OpsError::Io {
            path: "standard output".into(),
            source: e,
        };
        let mut printed = HashSet::new();
        loop {
            let report = self.command_report(id).await?;
            for r in report["results"].as_array().into_iter().flatten() {
                let key = format!("{}/{}", r["responder"], r["status"]);
                if printed.insert(key) {
                    writeln!(out, "{}", result_line(r)).map_err(written)?;
                }
            }
            if report["done"] == true {
                writeln!(out, "{}", totals_line(&report["counts"])).map_err(written)?;
                return Ok(());
            }
            out.flush().map_err(written)?;
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
}

/// One result of `GET /commands/{id}` as a line of `ymesh command --wait`.
fn result_line(r: &serde_json::Value) -> String {
    let detail = match &r["detail"] {
        serde_json::Value::Null => String::new(),
        d => d.to_string(),
    };
    format!(
        "{:<6} {:<12} {:<54} {detail}",
        r["responder_kind"].as_str().unwrap_or("?"),
        r["status"].as_str().unwrap_or("?"),
        r["responder"].as_str().unwrap_or("?"),
    )
}

/// The closing line of `ymesh command --wait`.
fn totals_line(counts: &serde_json::Value) -> String {
    format!(
        "done: {} ok, {} error, {} refused, {} unsupported, {} timeout",
        counts["ok"], counts["error"], counts["refused"], counts["unsupported"], counts["timeout"]
    )
}

/// The line `ymesh command` prints once the command is issued.
pub fn issued(id: &str) -> String {
    format!("command {id}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn result_and_totals_lines() {
        let line = result_line(&json!({
            "responder_kind": "node", "status": "ok", "responder": "12D3KooWA", "detail": {"n": 1}
        }));
        assert_eq!(
            line,
            format!("node   ok           {:<54} {{\"n\":1}}", "12D3KooWA")
        );
        assert_eq!(
            result_line(&json!({})),
            format!("?      ?            {:<54} ", "?")
        );
        assert_eq!(
            totals_line(
                &json!({"ok": 2, "error": 0, "refused": 1, "unsupported": 0, "timeout": 0})
            ),
            "done: 2 ok, 0 error, 1 refused, 0 unsupported, 0 timeout"
        );
    }
}
