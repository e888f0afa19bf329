//! One try against one peer, up to the commit point.
//!
//! A try takes a pooled connection or connects (under `connect`), sends the request and the whole
//! buffered body, and waits for the response header: under `first_byte` when the route sets it,
//! else only under the request's deadline, since a non-streaming answer's header comes when the
//! generation ends. For a streaming request it also waits for the first body chunk (the first
//! token), header included, under `first_token`, so a model that accepts and then stalls before
//! its first token is failed over. Both count from the start of the send. Only then is the try
//! [`Ready`] to commit; everything before is invisible to the client.
//!
//! A retried status is read no further than its header, except for what the caller decides by:
//! a 429 or 503 carries its `Retry-After` back ([`TryError::RetryAfter`]), and the (small) body
//! of a status in `capture_statuses` is read whole into [`Ready::first`] so the caller can judge
//! an API key or a `retry_on` answer condition by it.

use super::{Target, TryError};
use crate::config::Timeouts;
use bytes::{Buf, Bytes, BytesMut};
use pingora::connectors::TransportConnector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::v1::client::{http_req_header_to_wire, HttpSession};
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
    pub session: HttpSession,
    pub header: Box<ResponseHeader>,
    /// For streams: the first body chunk (already read).
    pub first: Option<Bytes>,
    /// The body is complete (nothing more to read).
    pub done: bool,
    /// Time from request sent to response header.
    pub ttfb: Duration,
    /// The peer, for returning the connection to the pool.
    pub target: Arc<Target>,
}

/// Largest error body read to judge an API key or an answer condition by.
const MAX_CAPTURE: usize = 64 * 1024;

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
        if self.session.is_body_done() {
            self.session.respect_keepalive();
            if let Some(stream) = self.session.reuse().await {
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
    let peer = &target.peer;
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
        match timeout_at(waits.header_by, send).await {
            Err(_) => return Err(waits.cut(waits.header_by)),
            Ok(Err(_)) if reused => continue,
            Ok(Err(_)) => return Err(TryError::Reset),
            Ok(Ok(())) => {}
        }
        let sent = Instant::now();
        let mut s = HttpSession::new_with_options(conn, peer);
        // Informational (1xx) headers are skipped.
        let mut header = None;
        for _ in 0..8 {
            match timeout_at(waits.header_by, s.read_response()).await {
                Err(_) => return Err(waits.cut(waits.header_by)),
                Ok(Err(e)) if stale_pooled(&e, reused) => break,
                Ok(Err(e)) => return Err(classify(&e)),
                Ok(Ok(_)) => {}
            }
            match s.resp_header() {
                Some(h) if h.status.is_informational() => continue,
                Some(h) => {
                    header = Some(Box::new(h.clone()));
                    break;
                }
                None => return Err(TryError::Protocol),
            }
        }
        let Some(header) = header else { continue };
        let ttfb = sent.elapsed();
        let (first, done) = past_header(&mut s, &header, req, waits).await?;
        return Ok(Ready {
            session: s,
            header,
            first,
            done,
            ttfb,
            target: target.clone(),
        });
    }
    Err(TryError::Reset)
}

/// After the header: a retried status fails the try; a captured one has its (small) body read;
/// a stream's first body chunk is waited for. Returns what was read and whether the body is done.
async fn past_header(
    s: &mut HttpSession,
    header: &ResponseHeader,
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
    let mut first = None;
    if req.capture_statuses.contains(&status) {
        // Read the (small) error body, so the caller can judge the API key or the answer by it.
        let mut buf = BytesMut::new();
        while !s.is_body_done() && buf.len() < MAX_CAPTURE {
            match timeout_at(waits.header_by, s.read_body_ref()).await {
                Err(_) => return Err(waits.cut(waits.header_by)),
                Ok(Err(e)) => return Err(classify(&e)),
                Ok(Ok(Some(chunk))) => buf.extend_from_slice(chunk),
                Ok(Ok(None)) => break,
            }
        }
        first = Some(buf.freeze());
    } else if req.stream && header.status.is_success() && !s.is_body_done() {
        match timeout_at(waits.first_token_by, s.read_body_bytes()).await {
            Err(_) => return Err(waits.cut(waits.first_token_by)),
            Ok(Err(e)) => return Err(classify(&e)),
            Ok(Ok(chunk)) => first = chunk,
        }
    }
    Ok((first, s.is_body_done()))
}
