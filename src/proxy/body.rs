//! Reading the request body: whole and bounded, so every try can replay it. Bounded three ways:
//! in size (`max_request_body`, checked against a declared `Content-Length` before any byte is
//! read), in the gap between two reads (`limits.client_body_timeout`) and in total
//! (`limits.client_body_total_timeout`), so that a client trickling a byte at a time cannot hold
//! a request slot for long. The buffer grows as data arrives: a declared length reserves at most
//! [`MAX_RESERVE`], whatever the client claims.

use crate::body::RequestBody;
use crate::downstream::Downstream;
use bytes::BytesMut;
use pingora::{Error, ErrorType};
use std::time::Duration;
use tokio::time::Instant;

/// The most a declared `Content-Length` reserves before the bytes arrive.
pub const MAX_RESERVE: usize = 64 * 1024;

/// Reading the body failed in a way the client must be told about.
pub enum BodyError {
    /// Over `max_request_body`.
    TooLarge,
    /// The client sent nothing for `limits.client_body_timeout`.
    Timeout,
    /// The whole body did not arrive within `limits.client_body_total_timeout`.
    TotalTimeout,
    /// The client went away or sent a broken body.
    Downstream(Box<Error>),
}

/// How long reading a body may take.
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeouts {
    /// Between two reads (nginx's `client_body_timeout`).
    pub idle: Duration,
    /// The whole body, from the end of the request header.
    pub total: Duration,
}

/// Does the request ask for `100 Continue` before it sends its body? (HTTP/1.0 clients cannot:
/// RFC 9110 §10.1.1 says to ignore it from them.)
pub fn expects_continue(client: &impl Downstream) -> bool {
    let req = client.req_header();
    req.version != http::Version::HTTP_10
        && req
            .headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// Read the whole request body, up to `limit` bytes, within `t`. A request that expects
/// `100 Continue` gets it once its declared size is known to fit (so a refusal is final and
/// immediate, and an accepted client does not wait for its own timeout).
pub async fn read(
    client: &mut impl Downstream,
    limit: usize,
    t: BodyTimeouts,
) -> Result<RequestBody, BodyError> {
    let all_by = crate::deadline::from_now(t.total);
    // Pingora's own HTTP/1.1 read timeout (60s by default) agrees with ours; its HTTP/2 session
    // has none, so each read is also bounded here.
    client.set_read_timeout(Some(t.idle));
    let declared = client
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    if expects_continue(client) && declared != Some(0) {
        client
            .write_continue()
            .await
            .map_err(BodyError::Downstream)?;
    }
    let reserve = declared.map_or(0, |n| (n as usize).min(MAX_RESERVE));
    let mut buf = BytesMut::with_capacity(reserve);
    loop {
        let by = crate::deadline::from_now(t.idle).min(all_by);
        let Ok(read) = tokio::time::timeout_at(by, client.read_body()).await else {
            return Err(if Instant::now() >= all_by {
                BodyError::TotalTimeout
            } else {
                BodyError::Timeout
            });
        };
        match read {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > limit {
                    return Err(BodyError::TooLarge);
                }
                if buf.is_empty() && declared.is_none() {
                    buf = BytesMut::from(&chunk[..]);
                } else {
                    buf.extend_from_slice(&chunk);
                }
            }
            Ok(None) => return Ok(RequestBody::new(buf.freeze())),
            Err(e) if e.etype() == &ErrorType::ReadTimedout => return Err(BodyError::Timeout),
            Err(e) => return Err(BodyError::Downstream(e)),
        }
    }
}
