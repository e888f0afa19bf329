//! What the request path needs from the client's request: its body (bounded, kept for replay on
//! every try), whether it asks for a stream, its sticky key, and the header sent upstream.

use crate::config::StickyKey;
use bytes::{Bytes, BytesMut};
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use std::hash::{Hash, Hasher};
use std::time::Duration;

/// Reading the body failed in a way the client must be told about.
pub enum BodyError {
    /// Over `max_request_body`.
    TooLarge,
    /// The client sent nothing for `limits.client_body_timeout`.
    Timeout,
    /// The client went away or sent a broken body.
    Downstream(Box<Error>),
}

/// Read the whole request body, up to `limit` bytes, waiting at most `idle` for each piece (as
/// nginx's `client_body_timeout`: the time between two reads, not the whole body).
pub async fn read_body(
    session: &mut Session,
    limit: usize,
    idle: Duration,
) -> std::result::Result<Bytes, BodyError> {
    // Pingora's own HTTP/1.1 read timeout (60s by default) agrees with ours; its HTTP/2 session
    // has none, so each read is also bounded here.
    session.set_read_timeout(Some(idle));
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0) as usize);
    loop {
        let Ok(read) = tokio::time::timeout(idle, session.read_request_body()).await else {
            return Err(BodyError::Timeout);
        };
        match read {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > limit {
                    return Err(BodyError::TooLarge);
                }
                if buf.is_empty() && declared.is_none() {
                    // One chunk is the common case: keep it without copying.
                    buf = BytesMut::from(&chunk[..]);
                } else {
                    buf.extend_from_slice(&chunk);
                }
            }
            Ok(None) => return Ok(buf.freeze()),
            Err(e) if e.etype() == &ErrorType::ReadTimedout => return Err(BodyError::Timeout),
            Err(e) => return Err(BodyError::Downstream(e)),
        }
    }
}

/// Does the JSON body ask for `"stream": true`?
pub fn wants_stream(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct StreamFlag {
        #[serde(default)]
        stream: bool,
    }
    // Cheap pre-check: only a `"stream"` followed by `: true` can ask for a stream (most bodies
    // say `"stream": false` or nothing); the parse then confirms it is the top-level key and not
    // text inside a string.
    let ws = |b: &[u8]| {
        b.iter()
            .position(|c| !c.is_ascii_whitespace())
            .unwrap_or(b.len())
    };
    let says_true = body.windows(8).enumerate().any(|(i, w)| {
        if w != b"\"stream\"" {
            return false;
        }
        let rest = &body[i + 8..];
        let rest = &rest[ws(rest)..];
        rest.first() == Some(&b':') && rest[1 + ws(&rest[1..])..].starts_with(b"true")
    });
    says_true && serde_json::from_slice::<StreamFlag>(body).is_ok_and(|f| f.stream)
}

/// Hash of the request's sticky key, if it has one.
pub fn sticky_hash(session: &Session, key: &StickyKey) -> Option<u64> {
    let mut h = std::hash::DefaultHasher::new();
    match key {
        StickyKey::Header(name) => session
            .req_header()
            .headers
            .get(name)?
            .as_bytes()
            .hash(&mut h),
        StickyKey::Cookie(name) => {
            let cookies = session.req_header().headers.get_all(http::header::COOKIE);
            let value = cookies
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(|line| {
                    line.split(';').find_map(|kv| {
                        let (k, v) = kv.trim().split_once('=')?;
                        (k == name).then_some(v)
                    })
                })?;
            value.hash(&mut h);
        }
        StickyKey::ClientIp => client_ip(session)?.hash(&mut h),
    }
    Some(h.finish())
}

pub fn client_ip(session: &Session) -> Option<std::net::IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// Headers that describe one connection, not the message: never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The request header sent to every try: the client's, minus hop-by-hop headers, with
/// `content-length` for the buffered body, `x-request-id` and `x-forwarded-*`.
pub fn upstream_request(
    session: &Session,
    body_len: usize,
    request_id: &str,
    tls: bool,
) -> Result<RequestHeader> {
    let req = session.req_header();
    let path = req
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    let mut up = RequestHeader::build(
        req.method.clone(),
        path.as_bytes(),
        Some(req.headers.len() + 4),
    )?;
    for (name, value) in req.headers.iter() {
        if HOP_BY_HOP.contains(&name.as_str()) || name == http::header::CONTENT_LENGTH {
            continue;
        }
        up.append_header(name.clone(), value.clone())?;
    }
    if up.headers.get(http::header::HOST).is_none() {
        if let Some(auth) = req.uri.authority() {
            up.insert_header(http::header::HOST, auth.as_str())?;
        }
    }
    if body_len > 0 || req.method == http::Method::POST || req.method == http::Method::PUT {
        up.insert_header(http::header::CONTENT_LENGTH, body_len.to_string())?;
    }
    up.insert_header("x-request-id", request_id)?;
    if let Some(ip) = client_ip(session) {
        let xff = match req
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(prev) => format!("{prev}, {ip}"),
            None => ip.to_string(),
        };
        up.insert_header("x-forwarded-for", xff)?;
    }
    up.insert_header("x-forwarded-proto", if tls { "https" } else { "http" })?;
    Ok(up)
}

/// The client's `x-request-id` when it is sane, else a new random one.
pub fn request_id(session: &Session) -> String {
    if let Some(v) = session.req_header().headers.get("x-request-id") {
        if let Ok(s) = v.to_str() {
            if !s.is_empty()
                && s.len() <= 128
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
            {
                return s.to_string();
            }
        }
    }
    format!("{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_flag_is_read_from_json() {
        assert!(wants_stream(br#"{"model":"m","stream":true}"#));
        assert!(wants_stream(br#"{ "stream" : true , "x": 1}"#));
        assert!(!wants_stream(br#"{"model":"m","stream":false}"#));
        assert!(!wants_stream(br#"{"model":"m"}"#));
        assert!(!wants_stream(br#"{"content":"\"stream\" is a word"}"#));
        assert!(!wants_stream(b"not json \"stream\""));
        assert!(!wants_stream(b""));
        assert!(wants_stream(b"{\"stream\"\n:\ttrue}"));
        assert!(!wants_stream(br#"{"stream":"true"}"#));
        assert!(!wants_stream(br#"{"stream""#));
        assert!(!wants_stream(br#"{"stream":"#));
    }
}
