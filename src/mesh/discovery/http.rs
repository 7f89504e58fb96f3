//! A minimal HTTP/1.1 GET client for the two requests discovery makes: the tailscaled
//! LocalAPI over its Unix socket, and a peer's `GET /` over TCP.
//!
//! Both are one request per connection (`Connection: close`) with a small, bounded answer,
//! so a full HTTP client crate would add far more than it gives. The parser
//! ([`parse_response`]) is pure and incremental: it is fed the bytes read so far and says
//! whether the response is complete, which is what the unit tests drive directly. It
//! understands `Content-Length`, `Transfer-Encoding: chunked`, and a body delimited by the
//! end of the connection.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::DiscoveryError;

/// Largest response head (status line and headers) accepted.
const MAX_HEAD: usize = 64 * 1024;

/// A complete HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    /// Status code, e.g. 200.
    pub status: u16,
    /// Headers in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (lower-case).
    #[cfg(test)]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn bad(msg: impl Into<String>) -> DiscoveryError {
    DiscoveryError::Http(msg.into())
}

/// Parses the response in `buf`. `eof` says the peer closed the connection after these
/// bytes. Returns `Ok(None)` when more bytes are needed, and an error when the response is
/// malformed, its body exceeds `max_body`, or the connection ended too early.
pub(crate) fn parse_response(
    buf: &[u8],
    eof: bool,
    max_body: usize,
) -> Result<Option<Response>, DiscoveryError> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            return Err(bad(format!("response head exceeds {MAX_HEAD} bytes")));
        }
        if eof {
            return Err(bad("connection closed before the end of the response head"));
        }
        return Ok(None);
    };
    if head_end > MAX_HEAD {
        return Err(bad(format!("response head exceeds {MAX_HEAD} bytes")));
    }
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| bad("head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(bad(format!("not an HTTP/1.x status line: {status_line:?}")));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|s| (100..1000).contains(s))
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("bad header line {line:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let header = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    let rest = &buf[head_end + 4..];

    let chunked = header("transfer-encoding")
        .map(|te| {
            te.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("chunked"))
        })
        .unwrap_or(false);
    let body = if chunked {
        match parse_chunked(rest, max_body)? {
            Some(body) => body,
            None if eof => return Err(bad("connection closed inside a chunked body")),
            None => return Ok(None),
        }
    } else if let Some(len) = header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| bad(format!("bad Content-Length {len:?}")))?;
        if len > max_body {
            return Err(bad(format!("body of {len} bytes exceeds {max_body}")));
        }
        if rest.len() < len {
            if eof {
                return Err(bad(format!(
                    "connection closed after {} of {len} body bytes",
                    rest.len()
                )));
            }
            return Ok(None);
        }
        rest[..len].to_vec()
    } else if status == 204 || status == 304 || (100..200).contains(&status) {
        Vec::new()
    } else {
        // Delimited by the end of the connection.
        if rest.len() > max_body {
            return Err(bad(format!("body exceeds {max_body} bytes")));
        }
        if !eof {
            return Ok(None);
        }
        rest.to_vec()
    };
    Ok(Some(Response {
        status,
        headers,
        body,
    }))
}

/// Decodes a chunked body; `Ok(None)` when it is not complete yet.
fn parse_chunked(mut buf: &[u8], max_body: usize) -> Result<Option<Vec<u8>>, DiscoveryError> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find(buf, b"\r\n") else {
            if buf.len() > 1024 {
                return Err(bad("chunk size line too long"));
            }
            return Ok(None);
        };
        let line = std::str::from_utf8(&buf[..line_end]).map_err(|_| bad("bad chunk size"))?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| bad(format!("bad chunk size {line:?}")))?;
        buf = &buf[line_end + 2..];
        if size == 0 {
            // Trailers, if any, then an empty line.
            loop {
                let Some(end) = find(buf, b"\r\n") else {
                    return Ok(None);
                };
                if end == 0 {
                    return Ok(Some(body));
                }
                buf = &buf[end + 2..];
            }
        }
        if body.len().saturating_add(size) > max_body {
            return Err(bad(format!("chunked body exceeds {max_body} bytes")));
        }
        if buf.len() < size + 2 {
            return Ok(None);
        }
        if &buf[size..size + 2] != b"\r\n" {
            return Err(bad("chunk not followed by CRLF"));
        }
        body.extend_from_slice(&buf[..size]);
        buf = &buf[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Sends `GET path` with the given `Host` on `stream` and reads the response, all within
/// `timeout`. `what` names the request in errors.
pub(crate) async fn get<S>(
    mut stream: S,
    host: &str,
    path: &str,
    max_body: usize,
    timeout: Duration,
    what: &str,
) -> Result<Response, DiscoveryError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let exchange = async {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\n\
             User-Agent: ymesh/{}\r\nConnection: close\r\n\r\n",
            env!("CARGO_PKG_VERSION")
        );
        let io_err = |source| DiscoveryError::Io {
            what: what.to_string(),
            source,
        };
        stream.write_all(request.as_bytes()).await.map_err(io_err)?;
        stream.flush().await.map_err(io_err)?;
        let mut buf = Vec::with_capacity(8 * 1024);
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            let n = stream.read(&mut chunk).await.map_err(io_err)?;
            buf.extend_from_slice(&chunk[..n]);
            if let Some(resp) = parse_response(&buf, n == 0, max_body)? {
                return Ok(resp);
            }
            // parse_response errors at EOF when incomplete, so n == 0 never loops.
            if buf.len() > max_body.saturating_add(MAX_HEAD).saturating_add(64 * 1024) {
                return Err(bad(format!("response exceeds {max_body} bytes")));
            }
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| DiscoveryError::Timeout {
            what: what.to_string(),
            ms: timeout.as_millis() as u64,
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(raw: &[u8]) -> Response {
        parse_response(raw, false, 1024)
            .unwrap()
            .expect("response should be complete")
    }

    #[test]
    fn content_length_body() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"a\": true}";
        let r = complete(raw);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.body, b"{\"a\": true}");
        // Every strict prefix needs more bytes.
        for cut in 0..raw.len() {
            assert_eq!(parse_response(&raw[..cut], false, 1024).unwrap(), None);
        }
        // ...and is an error if the connection closed there.
        assert!(parse_response(&raw[..raw.len() - 1], true, 1024).is_err());
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                    4\r\nWiki\r\n6;ext=1\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\nX-Trailer: y\r\n\r\n";
        let r = complete(raw);
        assert_eq!(r.body, b"Wikipedia in \r\n\r\nchunks.");
        for cut in 0..raw.len() {
            assert_eq!(
                parse_response(&raw[..cut], false, 1024).unwrap(),
                None,
                "cut at {cut}"
            );
        }
        assert!(parse_response(&raw[..raw.len() - 2], true, 1024).is_err());
    }

    #[test]
    fn body_until_close() {
        let raw = b"HTTP/1.0 200 OK\r\n\r\nhello";
        assert_eq!(parse_response(raw, false, 1024).unwrap(), None);
        let r = parse_response(raw, true, 1024).unwrap().unwrap();
        assert_eq!(r.body, b"hello");
        let r = complete(b"HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!((r.status, r.body.len()), (204, 0));
    }

    #[test]
    fn limits_and_malformed_responses() {
        let too_long = b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n";
        assert!(parse_response(too_long, false, 1024).is_err());
        let mut big_chunk =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n".to_vec();
        big_chunk.extend(vec![b'x'; 0x800]);
        assert!(parse_response(&big_chunk, false, 1024).is_err());
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n", false, 1024).is_err());
        assert!(parse_response(b"HTTP/1.1 abc OK\r\n\r\n", false, 1024).is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", false, 1024).is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false, 1024).is_err()
        );
        assert!(parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            false,
            1024
        )
        .is_err());
        assert!(parse_response(b"HTTP/1.1 200", true, 1024).is_err());
        let endless_head = vec![b'a'; MAX_HEAD + 1];
        assert!(parse_response(&endless_head, false, 1024).is_err());
    }

    #[tokio::test]
    async fn get_over_a_duplex_stream() {
        let (client, mut server) = tokio::io::duplex(64);
        let serve = tokio::spawn(async move {
            let mut req = Vec::new();
            let mut b = [0u8; 256];
            while find(&req, b"\r\n\r\n").is_none() {
                let n = server.read(&mut b).await.unwrap();
                assert!(n > 0);
                req.extend_from_slice(&b[..n]);
            }
            server
                .write_all(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
                )
                .await
                .unwrap();
            String::from_utf8(req).unwrap()
        });
        let resp = get(
            client,
            "local-tailscaled.sock",
            "/localapi/v0/status",
            1024,
            Duration::from_secs(5),
            "test",
        )
        .await
        .unwrap();
        assert_eq!((resp.status, resp.body.as_slice()), (200, &b"ok"[..]));
        let req = serve.await.unwrap();
        assert!(req.starts_with("GET /localapi/v0/status HTTP/1.1\r\n"));
        assert!(req.contains("\r\nHost: local-tailscaled.sock\r\n"));
        assert!(req.contains("\r\nConnection: close\r\n"));
    }

    #[tokio::test]
    async fn get_times_out_on_a_silent_peer() {
        let (client, _server) = tokio::io::duplex(1024);
        let err = get(client, "h", "/", 1024, Duration::from_millis(50), "silent")
            .await
            .unwrap_err();
        assert!(matches!(err, DiscoveryError::Timeout { .. }), "{err}");
    }
}
