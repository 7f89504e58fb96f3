//! [`NodeClient`]: a running node's HTTP API (`--node URL`), on the crate's one HTTP client.
//!
//! This module owns the client's set-up for operator use (long idle limit and large body
//! limit: a room export can be big and slow to encode), the encoding of a room name as one
//! path segment, and reading the `data` of ymesh's `{"data": ...}` success envelope. The
//! calls themselves live with their operation ([`super::export`], [`super::import`],
//! [`super::compact`], [`super::delete`], [`super::command`]).

use std::time::Duration;

use super::OpsError;
use crate::net::{Client, Envelope, NetError, Request, Response};

/// How long connecting to a node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the node may stay silent mid-request (large rooms take a while to encode).
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest response accepted (a room export can be large).
const MAX_RESPONSE: usize = 1 << 31;

/// Characters kept as they are in a room's path segment; everything else is
/// percent-encoded (the node decodes the segment once; `+` stays a plus).
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'~');

/// A client of a running node's HTTP API (`--node URL`).
#[derive(Debug, Clone)]
pub struct NodeClient {
    pub(crate) http: Client,
}

impl NodeClient {
    /// A client of the node at `url` (`http[s]://HOST[:PORT][/prefix]`); `admin_token` is sent
    /// as `Authorization: Bearer` (admin routes need it when the node has one).
    pub fn new(url: &str, admin_token: Option<String>) -> Result<NodeClient, OpsError> {
        let http = Client::new(url, admin_token).map_err(|e| match e {
            NetError::InvalidRequest { reason, .. } => {
                OpsError::Refused(format!("--node {url:?}: {reason}"))
            }
            other => OpsError::Net(other),
        })?;
        Ok(NodeClient {
            http: http
                .with_connect_timeout(CONNECT_TIMEOUT)
                .with_idle_timeout(IDLE_TIMEOUT)
                .with_max_body(MAX_RESPONSE),
        })
    }

    /// The node's URL, as given.
    pub fn url(&self) -> &str {
        self.http.base_url()
    }

    /// `/rooms/{room}` with the name as one percent-encoded segment.
    pub(crate) fn room_path(room: &str) -> String {
        format!("/rooms/{}", segment(room))
    }

    /// The `data` of a JSON `GET` (e.g. `/peers`, `/rooms?all=true`, `/`).
    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value, OpsError> {
        self.data(Request::get(path)).await
    }

    /// Sends `req`; the whole success answer.
    pub(crate) async fn send(&self, req: Request) -> Result<Response, OpsError> {
        self.http
            .send(req)
            .await
            .and_then(Response::error_for_status)
            .map_err(|e| self.at_node(e))
    }

    /// Sends `req`; the `data` of its success envelope (`null` when it has none).
    pub(crate) async fn data(&self, req: Request) -> Result<serde_json::Value, OpsError> {
        let answer: Envelope<serde_json::Value> =
            self.send(req).await?.json().map_err(|e| self.at_node(e))?;
        Ok(answer.data)
    }

    /// `e` as an [`OpsError`] naming the node by the URL it was given as (`--node URL`),
    /// not by the request's URL.
    fn at_node(&self, e: NetError) -> OpsError {
        OpsError::Net(e.with_url(self.url()))
    }

    /// [`NetError::Body`] for an answer that is not what the API promises.
    pub(crate) fn bad_answer(&self, message: String) -> OpsError {
        OpsError::Net(NetError::Body {
            url: self.url().to_string(),
            message,
        })
    }

    /// Approves (`approve`) or denies a peer node by id (`POST /peers/{id}/approve` or
    /// `/deny`, admin); persisted by the node.
    pub async fn decide_peer(&self, node_id: &str, approve: bool) -> Result<(), OpsError> {
        let verb = if approve { "approve" } else { "deny" };
        let path = format!("/peers/{}/{verb}", segment(node_id));
        self.data(Request::post(path.as_str())).await.map(|_| ())
    }

    /// Names of every stored room (`GET /rooms?all=true`).
    pub async fn stored_rooms(&self) -> Result<Vec<String>, OpsError> {
        let v = self.get_json("/rooms?all=true").await?;
        let rows = v
            .as_array()
            .ok_or_else(|| self.bad_answer("GET /rooms did not answer a list".into()))?;
        Ok(rows
            .iter()
            .filter(|r| r["stored"].as_bool() == Some(true))
            .filter_map(|r| r["name"].as_str().map(str::to_owned))
            .collect())
    }
}

/// `text` as one percent-encoded path segment.
pub(crate) fn segment(text: &str) -> percent_encoding::PercentEncode<'_> {
    percent_encoding::utf8_percent_encode(text, SEGMENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_urls() {
        let c = NodeClient::new("http://[::1]:4000/ymesh/", None).unwrap();
        assert_eq!(c.url(), "http://[::1]:4000/ymesh");
        assert_eq!(c.http.url("/rooms/a"), "http://[::1]:4000/ymesh/rooms/a");
        assert!(NodeClient::new("https://node.example", None).is_ok());
        for bad in [
            "ws://x:1",
            "127.0.0.1:3913",
            "http://:1",
            "http://x:port",
            "http://x:1/?a",
            "http://u@x:1",
        ] {
            let err = NodeClient::new(bad, None).unwrap_err();
            assert!(err.to_string().starts_with("--node "), "{bad}: {err}");
        }
    }

    #[test]
    fn room_paths_are_one_encoded_segment() {
        assert_eq!(NodeClient::room_path("a-b_c~d"), "/rooms/a-b_c~d");
        assert_eq!(
            NodeClient::room_path("a/b c+d.é"),
            "/rooms/a%2Fb%20c%2Bd%2E%C3%A9"
        );
    }
}
