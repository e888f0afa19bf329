//! Writing answers that come from the cache: a stored entry (HIT, STALE) or a flight another
//! request leads (a coalesced follower).

use super::coalesce::{FlightEnd, Follower, Next};
use super::store::Entry;
use super::Status;
use crate::downstream::Downstream;
use crate::respond::sse_error_event;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::Result;
use std::time::Duration;
use tokio::time::Instant;

/// Response headers that describe one exchange, not the answer: never stored (nor the
/// hop-by-hop ones, `crate::hop`).
const NOT_KEPT: &[&str] = &[
    "content-length",
    "set-cookie",
    "age",
    "x-request-id",
    "x-cache-status",
];

/// Is a response header worth keeping in an entry?
pub fn keep_header(name: &HeaderName) -> bool {
    !NOT_KEPT.contains(&name.as_str()) && !crate::hop::is_hop_by_hop(name)
}

/// The headers of `h` that an entry keeps.
pub fn kept_headers(h: &ResponseHeader) -> Vec<(HeaderName, HeaderValue)> {
    let hop = crate::hop::present(&h.headers);
    h.headers
        .iter()
        .filter(|(k, _)| keep_header(k) && !hop.contains(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn header(
    headers: &[(HeaderName, HeaderValue)],
    status: Status,
    request_id: &str,
    length: Option<u64>,
    client: http::Version,
) -> Result<Box<ResponseHeader>> {
    let mut resp = ResponseHeader::build(200, Some(headers.len() + 4))?;
    for (k, v) in headers {
        resp.append_header(k.clone(), v.clone())?;
    }
    resp.insert_header("x-cache-status", status.header())?;
    resp.insert_header("x-request-id", request_id)?;
    match length {
        Some(n) => resp.insert_header(http::header::CONTENT_LENGTH, n.to_string())?,
        // Chunked on HTTP/1.1 (Pingora's h2 writer drops the header); HTTP/1.0 has no chunked
        // coding: the body ends with the connection.
        None if client == http::Version::HTTP_11 => {
            resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")?
        }
        None => {}
    }
    Ok(Box::new(resp))
}

/// Answer with a stored entry, `age` old, marked `status` (HIT or STALE).
pub async fn entry(
    client: &mut impl Downstream,
    e: &Entry,
    age: Duration,
    status: Status,
    request_id: &str,
) -> Result<()> {
    let length = (!e.sse).then_some(e.body.len() as u64);
    let v = client.req_header().version;
    let mut resp = header(&e.headers, status, request_id, length, v)?;
    resp.insert_header(http::header::AGE, age.as_secs().to_string())?;
    client.write_header(resp, false).await?;
    client.write_body(Some(e.body.clone()), true).await
}

/// How following a flight ended.
pub enum Followed {
    /// The follower's client got the leader's answer (or as much of it as the leader got).
    Served,
    /// The leader released its followers or took longer than `lock_timeout`: go upstream.
    OnOwn,
    /// The answer was cut short (or the client left) after its head; the request is over.
    Cut,
}

/// Relay the flight `f` to this follower's client. `lock_timeout` bounds the wait for the
/// leader's head; afterwards each chunk must come within `idle` (the leader's own relay gives up
/// after that long too) and everything before `deadline`.
pub async fn follow(
    client: &mut impl Downstream,
    mut f: Follower,
    status: Status,
    request_id: &str,
    lock_timeout: Duration,
    idle: Duration,
    deadline: Instant,
) -> Result<Followed> {
    let Some(head) = f
        .head(crate::deadline::from_now(lock_timeout).min(deadline))
        .await
    else {
        return Ok(Followed::OnOwn);
    };
    let v = client.req_header().version;
    let resp = header(&head.headers, status, request_id, head.content_length, v)?;
    if client.write_header(resp, false).await.is_err() {
        return Ok(Followed::Cut);
    }
    // Like the leader's relay, a follower forwards whole events only, so the error event that
    // ends a cut stream starts on a boundary.
    let mut framer = head.sse.then(crate::sse::Framer::new);
    // Between two chunks the leader may wait `idle` for its upstream and `idle` for its own
    // client (a stalled one is then cut off, and the leader reads on for its followers); a
    // little more, so that the leader's verdict arrives first.
    let gap = idle
        .saturating_mul(2)
        .saturating_add(Duration::from_secs(1));
    loop {
        let until = crate::deadline::from_now(gap).min(deadline);
        match f.next(until).await {
            Next::Chunks(chunks) => {
                for c in chunks {
                    let out = match framer.as_mut() {
                        Some(fr) => fr.push(c, |_| {}),
                        None => Some(c),
                    };
                    let Some(out) = out else { continue };
                    if client.write_body(Some(out), false).await.is_err() {
                        return Ok(Followed::Cut);
                    }
                }
            }
            Next::End(FlightEnd::Complete) => {
                let rest = framer.as_mut().and_then(|fr| fr.finish());
                return Ok(match client.write_body(rest, true).await {
                    Ok(()) => Followed::Served,
                    Err(_) => Followed::Cut,
                });
            }
            Next::End(_) | Next::TimedOut => {
                if head.sse {
                    let msg = "the shared upstream answer was cut short";
                    let ev = sse_error_event(msg, request_id);
                    let _ = client.write_body(Some(ev), true).await;
                }
                return Ok(Followed::Cut);
            }
        }
    }
}

/// Concatenate recorded chunks into one buffer.
pub fn concat(chunks: &[Bytes], len: usize) -> Bytes {
    if let [one] = chunks {
        return one.clone();
    }
    let mut buf = bytes::BytesMut::with_capacity(len);
    for c in chunks {
        buf.extend_from_slice(c);
    }
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_exchange_headers_are_not_kept() {
        let mut h = ResponseHeader::build(200, None).unwrap();
        h.insert_header("content-type", "application/json").unwrap();
        h.insert_header("x-sim-instance", "a").unwrap();
        h.insert_header("content-length", "10").unwrap();
        h.insert_header("transfer-encoding", "chunked").unwrap();
        h.insert_header("set-cookie", "s=1").unwrap();
        h.insert_header("x-request-id", "r").unwrap();
        let kept: Vec<String> = kept_headers(&h)
            .iter()
            .map(|(k, _)| k.to_string())
            .collect();
        assert_eq!(kept, vec!["content-type", "x-sim-instance"]);
    }
}
