//! Reading the request body: whole and bounded, so every try can replay it.

use crate::body::RequestBody;
use crate::downstream::Downstream;
use bytes::BytesMut;
use pingora::{Error, ErrorType};
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
pub async fn read(
    client: &mut impl Downstream,
    limit: usize,
    idle: Duration,
) -> Result<RequestBody, BodyError> {
    // Pingora's own HTTP/1.1 read timeout (60s by default) agrees with ours; its HTTP/2 session
    // has none, so each read is also bounded here.
    client.set_read_timeout(Some(idle));
    let declared = client
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
        let Ok(read) = tokio::time::timeout(idle, client.read_body()).await else {
            return Err(BodyError::Timeout);
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
