//! `ymesh command`: issuing a maintenance command on a running node (admin routes
//! `POST /rooms/{room}/commands` and `POST /commands`) and following its results
//! (`GET /commands/{id}`) until every responder answered or the deadline passed.
//!
//! When it is done, `--wait` also says who has not got the command: every peer the node
//! knows (`GET /peers`) that did not answer is listed as `offline` (it receives the command
//! if it links again before the deadline), `not shared` (its share policy leaves the room
//! out) or `no answer` (it linked after the command was issued). A responder that failed
//! (`error`, `refused`) or timed out makes the command end with
//! [`OpsError::CommandFailed`], so the CLI exits non-zero.

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
        let report = loop {
            let report = self.command_report(id).await?;
            for r in report["results"].as_array().into_iter().flatten() {
                let key = format!("{}/{}", r["responder"], r["status"]);
                if printed.insert(key) {
                    writeln!(out, "{}", result_line(r)).map_err(written)?;
                }
            }
            if report["done"] == true {
                break report;
            }
            out.flush().map_err(written)?;
            tokio::time::sleep(POLL_EVERY).await;
        };
        let peers = self.get_json("/peers").await?;
        let missing = missing_peers(&report, &peers, now_ms());
        for line in &missing.lines {
            writeln!(out, "{line}").map_err(written)?;
        }
        writeln!(out, "{}", summary_line(&report, &missing)).map_err(written)?;
        out.flush().map_err(written)?;
        match failures(&report) {
            None => Ok(()),
            Some(failed) => Err(OpsError::CommandFailed(format!(
                "command {id} did not succeed everywhere: {failed}"
            ))),
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The peers a finished command did not reach: a line for each, and how many of each kind.
#[derive(Debug, Default, PartialEq, Eq)]
struct Missing {
    lines: Vec<String>,
    offline: usize,
    not_shared: usize,
    no_answer: usize,
}

/// Every peer in `peers` (`GET /peers`) without a result in `report` (`GET /commands/{id}`),
/// with why it has no result; `now_ms` places the deadline.
fn missing_peers(report: &serde_json::Value, peers: &serde_json::Value, now_ms: u64) -> Missing {
    let answered: HashSet<&str> = report["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["responder"].as_str())
        .collect();
    let not_shared: HashSet<&str> = report["not_shared"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .collect();
    let deadline_ms = report["deadline_ms"].as_u64().unwrap_or(0);
    let mut missing = Missing::default();
    for p in peers.as_array().into_iter().flatten() {
        let state = p["state"].as_str().unwrap_or("?");
        if state == "is_self" {
            continue;
        }
        let node = p["node_id"].as_str();
        if node.is_some_and(|n| answered.contains(n)) {
            continue;
        }
        let who = node.or_else(|| p["address"].as_str()).unwrap_or("?");
        let (status, detail) = if node.is_some_and(|n| not_shared.contains(n)) {
            missing.not_shared += 1;
            (
                "not shared",
                "its share policy leaves this room out: the command does not go to it".to_string(),
            )
        } else if state != "connected" {
            missing.offline += 1;
            let why = p["reason"]
                .as_str()
                .or_else(|| p["last_error"].as_str())
                .map(|e| format!(" ({e})"))
                .unwrap_or_default();
            let when = if deadline_ms > now_ms {
                format!(
                    "will receive it when it reconnects, if that is before the deadline (in {} s)",
                    (deadline_ms - now_ms).div_ceil(1000)
                )
            } else {
                "the deadline has passed: it will not receive this command".to_string()
            };
            ("offline", format!("{state}{why}; {when}"))
        } else {
            missing.no_answer += 1;
            (
                "no answer",
                "linked after the command was issued; it gets the command now, its answer had \
                 not arrived"
                    .to_string(),
            )
        };
        missing
            .lines
            .push(format!("{:<6} {status:<12} {who:<54} {detail}", "peer"));
    }
    missing
}

/// The closing line of `ymesh command --wait`: the totals, then the peers it did not reach.
fn summary_line(report: &serde_json::Value, missing: &Missing) -> String {
    let mut line = totals_line(&report["counts"]);
    let mut add = |n: usize, what: &str| {
        if n > 0 {
            let s = if n == 1 { "" } else { "s" };
            line.push_str(&format!("; {n} peer{s} {what}"));
        }
    };
    add(
        missing.offline,
        "offline (will receive it when they reconnect before the deadline)",
    );
    add(missing.not_shared, "not sharing the room");
    add(missing.no_answer, "linked late without an answer yet");
    line
}

/// `None` when no responder failed or timed out; else what failed, e.g. `1 error, 2 timeout`.
fn failures(report: &serde_json::Value) -> Option<String> {
    use crate::command::ResultStatus;
    let parts: Vec<String> = ResultStatus::ALL
        .iter()
        .filter(|s| s.is_failure())
        .filter_map(|s| {
            let n = report["counts"][s.as_str()].as_u64().unwrap_or(0);
            (n > 0).then(|| format!("{n} {s}"))
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
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

    #[test]
    fn peers_without_an_answer_are_listed_with_why() {
        let report = json!({
            "deadline_ms": 31_000,
            "results": [{"responder": "A", "status": "ok"}],
            "not_shared": ["C"],
            "counts": {"ok": 1, "error": 0, "refused": 0, "unsupported": 0, "timeout": 0},
        });
        let peers = json!([
            {"node_id": "A", "address": "ws://a:1", "state": "connected"},
            {"node_id": null, "address": "ws://b:1", "state": "backing_off",
             "last_error": "cannot connect to ws://b:1/_mesh"},
            {"node_id": "C", "address": "ws://c:1", "state": "connected"},
            {"node_id": "D", "address": "10.0.0.4:5", "state": "connected"},
            {"node_id": null, "address": "ws://me:1", "state": "is_self"},
        ]);
        let m = missing_peers(&report, &peers, 1_000);
        assert_eq!((m.offline, m.not_shared, m.no_answer), (1, 1, 1));
        assert_eq!(m.lines.len(), 3, "{:#?}", m.lines);
        assert!(
            m.lines[0].starts_with("peer   offline      ws://b:1")
                && m.lines[0].contains("backing_off (cannot connect to ws://b:1/_mesh)")
                && m.lines[0].contains("will receive it when it reconnects")
                && m.lines[0].contains("(in 30 s)"),
            "{}",
            m.lines[0]
        );
        assert!(
            m.lines[1].starts_with("peer   not shared   C"),
            "{}",
            m.lines[1]
        );
        assert!(
            m.lines[2].starts_with("peer   no answer    D"),
            "{}",
            m.lines[2]
        );
        let late = missing_peers(&report, &peers, 40_000);
        assert!(
            late.lines[0].contains("the deadline has passed"),
            "{:?}",
            late.lines
        );
        assert_eq!(
            summary_line(&report, &m),
            "done: 1 ok, 0 error, 0 refused, 0 unsupported, 0 timeout; 1 peer offline (will \
             receive it when they reconnect before the deadline); 1 peer not sharing the room; \
             1 peer linked late without an answer yet"
        );
        assert_eq!(failures(&report), None);
        let failed =
            json!({"counts": {"ok": 1, "error": 1, "refused": 0, "unsupported": 3, "timeout": 2}});
        assert_eq!(failures(&failed).as_deref(), Some("1 error, 2 timeout"));
    }
}
