//! One try against one peer, up to the commit point.
//!
//! A try takes a pooled connection or connects (under `connect`), sends the request and the whole
//! buffered body, and waits for the response header: under `first_byte` when the route sets it,
//! else only under the request's deadline, since a non-streaming answer's header comes when the
//! generation ends. For a streaming request that answered 2xx it also waits for the first
//! complete SSE event (the first token; the first body chunk when the body is not an event
//! stream), header included, under `first_token`, so a model that accepts and then stalls before
//! its first token is failed over, and so is one whose first event is an error (some servers
//! answer 200 and then `data: {"error": …}` when the engine fails): [`TryError::ErrorEvent`].
//! Both count from the start of the send. Only then is the try [`Ready`] to commit; everything
//! before is invisible to the client, and the bytes read on the way reach it unchanged.
//!
//! A retried status is read no further than its header, except for what the caller decides by:
//! a 429 or 503 carries its `Retry-After` back ([`TryError::RetryAfter`]), and the (small) body
//! of a status in `capture_statuses` is read whole into [`Ready::first`] so the caller can judge
//! an API key or a `retry_on` answer condition by it.

use super::framing::{free_retry, is_head, no_body};
use super::{Response, Target, TryError};
use crate::config::Timeouts;
use crate::sse;
use bytes::{Buf, Bytes, BytesMut};
use pingora::connectors::TransportConnector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::v1::client::http_req_header_to_wire;
use pingora::{ErrorType, RetryType};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

/// The request header as HTTP/1.1 bytes, ready to be followed by the body.
pub fn wire(req: &RequestHeader) -> pingora::Result<Bytes> {
    match http_req_header_to_wire(req) {
        Some(b) => Ok(b.freeze()),
        None => pingora::Error::e_explain(
            ErrorType::InvalidHTTPHeader,
            "the request line has a byte HTTP/1.1 forbids",
        ),
    }
}

/// `fut`, unless `deadline` passes first. Pingora's coarse (10 ms) timer wheel, not tokio's: a
/// tokio timer that fires earlier than the driver's next wake costs a wake-up syscall, and a try
/// sets several of them.
pub async fn timeout_at<F: Future>(deadline: Instant, fut: F) -> Result<F::Output, ()> {
    let left = deadline.saturating_duration_since(Instant::now());
    pingora::time::fast_timeout::fast_timeout(left, fut)
        .await
        .map_err(|_| ())
}

/// A try that reached its commit point.
pub struct Ready {
    pub session: Response,
    pub header: Box<ResponseHeader>,
    /// For streams: the body read up to the commit point (the first event, or the first chunk
    /// of a body that is not an event stream), unchanged.
    pub first: Option<Bytes>,
    /// The body is complete (nothing more to read).
    pub done: bool,
    /// What the header's `content-type` says the body is.
    pub media: sse::Media,
    /// Time from request sent to response header.
    pub ttfb: Duration,
    /// The peer, for returning the connection to the pool.
    pub target: Arc<Target>,
    /// The connection may go back to the pool once the answer is read (not after an early
    /// answer: the peer did not take the whole request).
    pub reusable: bool,
}

/// How long a try whose send failed waits for an answer the peer may have sent early.
const EARLY_ANSWER_WAIT: Duration = Duration::from_secs(1);

/// Largest error body read to judge an API key or an answer condition by.
const MAX_CAPTURE: usize = 64 * 1024;

/// Most bytes of a stream read while waiting for its first event (comments only, or one huge
/// event): the try commits with what it read. The framer holds at most as much.
const MAX_BEFORE_FIRST_EVENT: usize = sse::MAX_PENDING;

/// Largest non-streaming answer read whole before it commits (an LLM answer is a few KiB; an
/// embeddings batch can be a few hundred).
const MAX_BUFFERED: usize = 1024 * 1024;

/// Longest `Retry-After` read from an answer (a year is not a sane wait).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

impl Ready {
    /// Drop the response without using the connection again.
    pub async fn abandon(mut self) {
        self.session.shutdown().await;
    }

    /// Put the connection back in the pool if the response was read to its end (and neither
    /// side asked to close it).
    pub async fn release(mut self) {
        if self.reusable && self.session.reusable() {
            if let Some(stream) = self.session.reuse() {
                self.target.idle.put(stream, self.target.transport());
            }
        } else {
            self.session.shutdown().await;
        }
    }
}

fn classify(e: &pingora::Error) -> TryError {
    match e.etype() {
        ErrorType::ConnectRefused => TryError::Refused,
        ErrorType::ConnectTimedout => TryError::ConnectTimeout,
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => TryError::FirstByteTimeout,
        ErrorType::InvalidHTTPHeader | ErrorType::H2Error | ErrorType::InvalidH2 => {
            TryError::Protocol
        }
        ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError => {
            TryError::Reset
        }
        _ if e.etype().as_str().starts_with("Connect") => TryError::ConnectFailure,
        _ => TryError::Reset,
    }
}

/// Would this error have been avoided on a fresh connection? (A pooled connection the peer had
/// already closed.) Pingora marks such errors `ReusedOnly`.
fn stale_pooled(e: &pingora::Error, reused: bool) -> bool {
    reused && matches!(e.retry, RetryType::ReusedOnly | RetryType::Decided(true))
}

/// What one try sends and how long it may take.
pub struct TryRequest<'a> {
    /// The request header on the wire (see [`wire`]).
    pub head: &'a [u8],
    /// The whole request body.
    pub body: &'a Bytes,
    /// The request asks for a stream: the commit point is the first body chunk.
    pub stream: bool,
    /// The route's timeouts (`connect`, `first_byte`, `first_token`).
    pub timeouts: &'a Timeouts,
    /// The request's overall deadline.
    pub deadline: Instant,
    /// Statuses that count as failures to retry.
    pub retry_statuses: &'a [u16],
    /// Statuses whose (small) body is read before the commit point, to judge an API key or an
    /// answer condition by.
    pub capture_statuses: &'a [u16],
}

/// When a try's waits end, counted from the start of its send.
#[derive(Clone, Copy)]
struct Waits {
    /// The response header (for streams: within the first token's wait too).
    header_by: Instant,
    /// A stream's first body chunk.
    first_token_by: Instant,
    deadline: Instant,
}

impl Waits {
    fn new(t: &Timeouts, stream: bool, start: Instant, deadline: Instant) -> Self {
        let by = |d: Option<Duration>| d.map_or(deadline, |d| (start + d).min(deadline));
        let first_token_by = by(Some(t.first_token));
        let header_by = match stream {
            true => by(t.first_byte).min(first_token_by),
            false => by(t.first_byte),
        };
        Waits {
            header_by,
            first_token_by,
            deadline,
        }
    }

    /// The error of a wait that ended at `by`: one that ends at the request's deadline says
    /// nothing about the peer.
    fn cut(&self, by: Instant) -> TryError {
        if by >= self.deadline {
            TryError::Deadline
        } else {
            TryError::FirstByteTimeout
        }
    }
}

/// Run one try of `req` against `target`.
pub async fn try_once(
    connector: &TransportConnector,
    target: &Arc<Target>,
    req: &TryRequest<'_>,
) -> Result<Ready, TryError> {
    let TryRequest {
        head,
        body,
        stream,
        timeouts: t,
        deadline,
        ..
    } = *req;
    // A stale pooled connection is retried once on a fresh one, at no cost to the try.
    for fresh_only in [false, true] {
        let now = Instant::now();
        if now >= deadline {
            return Err(TryError::Deadline);
        }
        // A pooled connection is at hand at once; only a new one needs the connect timer.
        let pooled = match fresh_only {
            false => target.idle.take(),
            true => None,
        };
        let reused = pooled.is_some();
        let mut conn = match pooled {
            Some(c) => c,
            None => {
                let by = (now + t.connect).min(deadline);
                match target.connect(connector, by).await {
                    Err(TryError::ConnectTimeout) if by >= deadline => {
                        return Err(TryError::Deadline)
                    }
                    r => r?,
                }
            }
        };
        // Header and body leave in one vectored write (Pingora's own client writes the header
        // alone first: one more syscall, and one more wake-up of the peer, per request).
        let waits = Waits::new(t, stream, Instant::now(), deadline);
        let send = async {
            conn.write_all_buf(&mut head.chain(&body[..])).await?;
            conn.flush().await
        };
        let send_started = Instant::now();
        let write_failed = match timeout_at(waits.header_by, send).await {
            Err(_) => return Err(waits.cut(waits.header_by)),
            Ok(Err(_)) => true,
            Ok(Ok(())) => false,
        };
        let sent = Instant::now();
        let mut s = Response::new(conn, is_head(head));
        // A peer that stopped taking the body may have answered already (413 to a prompt it
        // finds too large): read that answer, briefly, rather than call it a reset.
        let read_by = match write_failed {
            true => crate::deadline::from_now(EARLY_ANSWER_WAIT).min(waits.header_by),
            false => waits.header_by,
        };
        // Informational (1xx) headers are skipped.
        let mut header = None;
        for _ in 0..8 {
            match timeout_at(read_by, s.read_response()).await {
                Err(_) if write_failed => break,
                Err(_) => return Err(waits.cut(waits.header_by)),
                Ok(Err(e)) if stale_pooled(&e, reused) && !write_failed => {
                    if free_retry(reused, s.received(), sent.elapsed()) {
                        break;
                    }
                    return Err(classify(&e));
                }
                Ok(Err(_)) if write_failed => break,
                Ok(Err(e)) => return Err(classify(&e)),
                Ok(Ok(_)) => {}
            }
            match s.resp_header() {
                Some(h) if h.status.is_informational() => continue,
                Some(_) => {
                    header = s.take_header();
                    break;
                }
                None => return Err(TryError::Protocol),
            }
        }
        let Some(header) = header else {
            // No answer: a stale pooled connection is retried once on a fresh one for free,
            // anything else is a failed try.
            let since = if write_failed { send_started } else { sent };
            if free_retry(reused, false, since.elapsed()) {
                continue;
            }
            return Err(TryError::Reset);
        };
        let ttfb = sent.elapsed();
        let media = sse::Media::of(&header.headers);
        let (first, done) = past_header(&mut s, &header, media, req, waits).await?;
        return Ok(Ready {
            session: s,
            header,
            first,
            done,
            media,
            ttfb,
            target: target.clone(),
            reusable: !write_failed,
        });
    }
    Err(TryError::Reset)
}

/// After the header: a retried status fails the try (a 429 or 503 with the `Retry-After` it
/// carries); HEAD, 1xx, 204 and 304 answers have no body, whatever the header says (the
/// reader knows about HEAD too); a captured status has its
/// (small) body read; a 2xx stream is read to its first event. Returns what was read and whether
/// the body is done.
async fn past_header(
    s: &mut Response,
    header: &ResponseHeader,
    media: sse::Media,
    req: &TryRequest<'_>,
    waits: Waits,
) -> Result<(Option<Bytes>, bool), TryError> {
    let status = header.status.as_u16();
    if req.retry_statuses.contains(&status) {
        s.shutdown().await;
        let after = matches!(status, 429 | 503)
            .then(|| crate::retry_after::of(&header.headers, MAX_RETRY_AFTER))
            .flatten();
        return Err(match after {
            Some(after) => TryError::RetryAfter { status, after },
            None => TryError::Status(status),
        });
    }
    if no_body(req.head, status) {
        return Ok((None, true));
    }
    let mut first = None;
    if req.capture_statuses.contains(&status) {
        first = Some(read_body_up_to(s, MAX_CAPTURE, waits, || waits.header_by).await?);
    } else if !req.stream && !s.is_body_done() && media != sse::Media::EventStream {
        // An event stream the request did not ask for (a GET of server-sent events) is relayed
        // as it comes: it may never end.
        // Gaps between reads are bounded by the route's `idle`.
        let idle = req.timeouts.idle;
        let next_by = || crate::deadline::from_now(idle).min(waits.deadline);
        first = Some(read_body_up_to(s, MAX_BUFFERED, waits, next_by).await?);
    } else if req.stream && header.status.is_success() && !s.is_body_done() {
        match first_event(s, media == sse::Media::EventStream, waits).await {
            Ok(read) => first = read,
            Err(e) => {
                s.shutdown().await;
                return Err(e);
            }
        }
    }
    Ok((first, s.is_body_done()))
}

/// Read the body to its end, or to `max` bytes, each read by `next_by()`: the (small) body of
/// a captured status, so the caller can judge the API key or the answer by it; or a
/// non-streaming answer before it commits, so a peer that dies part-way through the body fails
/// the try (retried) instead of handing the client half a JSON document. A larger answer commits
/// with what was read and is relayed from there.
async fn read_body_up_to(
    s: &mut Response,
    max: usize,
    waits: Waits,
    next_by: impl Fn() -> Instant,
) -> Result<Bytes, TryError> {
    let mut buf = BytesMut::new();
    while !s.is_body_done() && buf.len() < max {
        let by = next_by();
        match timeout_at(by, s.read_body_bytes()).await {
            Err(_) => return Err(waits.cut(by)),
            Ok(Err(e)) => return Err(classify(&e)),
            // The whole body in one piece (the usual case): no copy.
            Ok(Ok(Some(chunk))) if buf.is_empty() && s.is_body_done() => return Ok(chunk),
            Ok(Ok(Some(chunk))) => buf.extend_from_slice(&chunk),
            Ok(Ok(None)) => break,
        }
    }
    Ok(buf.freeze())
}

/// Read a 2xx stream up to its commit point under `first_token`: the first complete event of an
/// event stream (`sse`), else the first chunk. Returns the bytes read, unchanged; an error as the
/// first event fails the try.
async fn first_event(s: &mut Response, sse: bool, waits: Waits) -> Result<Option<Bytes>, TryError> {
    let by = waits.first_token_by;
    let mut framer = sse::Framer::new();
    let mut read: Option<Bytes> = None;
    loop {
        let chunk = match timeout_at(by, s.read_body_bytes()).await {
            Err(_) => return Err(waits.cut(by)),
            Ok(Err(e)) => return Err(classify(&e)),
            Ok(Ok(None)) => return Ok(read),
            Ok(Ok(Some(c))) => c,
        };
        let mut first_is_error = None;
        if sse {
            framer.push(chunk.clone(), |ev| {
                first_is_error.get_or_insert_with(|| ev.is_error());
            });
        }
        read = Some(match read {
            None => chunk,
            Some(before) => {
                let mut both = BytesMut::with_capacity(before.len() + chunk.len());
                both.extend_from_slice(&before);
                both.extend_from_slice(&chunk);
                both.freeze()
            }
        });
        match first_is_error {
            Some(true) => return Err(TryError::ErrorEvent),
            Some(false) => return Ok(read),
            None if !sse || s.is_body_done() => return Ok(read),
            None if read
                .as_ref()
                .is_some_and(|r| r.len() > MAX_BEFORE_FIRST_EVENT) =>
            {
                return Ok(read)
            }
            None => {}
        }
    }
}
