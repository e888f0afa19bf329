//! One try against one peer, up to the commit point.
//!
//! A try takes a pooled connection or connects (under `connect`), sends the request and the whole
//! buffered body, and waits for the response header (under `first_byte`, counted from the start
//! of the send). For a streaming request that answered 2xx it also waits, under the same
//! `first_byte` budget, for the first complete SSE event (the first body chunk when the body is
//! not an event stream), so a model that accepts and then stalls before its first token is failed
//! over too, and so is one whose first event is an error (some servers answer 200 and then
//! `data: {"error": …}` when the engine fails): [`TryError::ErrorEvent`]. Only then is the try
//! [`Ready`] to commit; everything before is invisible to the client, and the bytes read on the
//! way reach it unchanged.

use super::framing::{before_any_byte, free_retry, no_body};
use super::{Target, TryError};
use crate::config::Timeouts;
use crate::sse;
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
    /// For streams: the body read up to the commit point (the first event, or the first chunk
    /// of a body that is not an event stream), unchanged.
    pub first: Option<Bytes>,
    /// The body is complete (nothing more to read).
    pub done: bool,
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

/// Largest error body read to judge an API key by.
const MAX_CAPTURE: usize = 64 * 1024;

/// Most bytes of a stream read while waiting for its first event (comments only, or one huge
/// event): the try commits with what it read. The framer holds at most as much.
const MAX_BEFORE_FIRST_EVENT: usize = sse::MAX_PENDING;

impl Ready {
    /// Drop the response without using the connection again.
    pub async fn abandon(mut self) {
        self.session.shutdown().await;
    }

    /// Put the connection back in the pool if the response was read to its end (and neither
    /// side asked to close it).
    pub async fn release(mut self) {
        if self.reusable && self.session.is_body_done() {
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
    /// The route's timeouts (`connect`, `first_byte`).
    pub timeouts: &'a Timeouts,
    /// The request's overall deadline.
    pub deadline: Instant,
    /// Statuses that count as failures to retry.
    pub retry_statuses: &'a [u16],
    /// Statuses whose (small) body is read before the commit point, to judge an API key by.
    pub capture_statuses: &'a [u16],
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
        retry_statuses,
        capture_statuses,
    } = *req;
    let peer = &target.peer;
    // A stale pooled connection is retried once on a fresh one, at no cost to the try.
    for fresh_only in [false, true] {
        let now = Instant::now();
        if now >= deadline {
            return Err(TryError::FirstByteTimeout);
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
                target
                    .connect(connector, (now + t.connect).min(deadline))
                    .await?
            }
        };
        // Header and body leave in one vectored write (Pingora's own client writes the header
        // alone first: one more syscall, and one more wake-up of the peer, per request).
        let first_byte_by = (Instant::now() + t.first_byte).min(deadline);
        let send = async {
            conn.write_all_buf(&mut head.chain(&body[..])).await?;
            conn.flush().await
        };
        let send_started = Instant::now();
        let write_failed = match timeout_at(first_byte_by, send).await {
            Err(_) => return Err(TryError::FirstByteTimeout),
            Ok(Err(_)) => true,
            Ok(Ok(())) => false,
        };
        let sent = Instant::now();
        let mut s = HttpSession::new_with_options(conn, peer);
        // A peer that stopped taking the body may have answered already (413 to a prompt it
        // finds too large): read that answer, briefly, rather than call it a reset.
        let read_by = match write_failed {
            true => crate::deadline::from_now(EARLY_ANSWER_WAIT).min(first_byte_by),
            false => first_byte_by,
        };
        // Informational (1xx) headers are skipped.
        let mut header = None;
        for _ in 0..8 {
            match timeout_at(read_by, s.read_response()).await {
                Err(_) if write_failed => break,
                Err(_) => return Err(TryError::FirstByteTimeout),
                Ok(Err(e)) if stale_pooled(&e, reused) && !write_failed => {
                    if free_retry(reused, !before_any_byte(&e), sent.elapsed()) {
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
                Some(h) => {
                    header = Some(Box::new(h.clone()));
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
        let status = header.status.as_u16();
        // HEAD, 1xx, 204, 304: no body, whatever the header says (Pingora's session never saw
        // the request, so it cannot know about HEAD).
        let bodiless = no_body(head, status);
        if retry_statuses.contains(&status) {
            s.shutdown().await;
            return Err(TryError::Status(status));
        }
        let mut first = None;
        if !bodiless && capture_statuses.contains(&status) {
            first = Some(capture(&mut s, first_byte_by).await?);
        } else if !bodiless && stream && header.status.is_success() && !s.is_body_done() {
            let sse = sse::is_event_stream(&header.headers);
            match first_event(&mut s, sse, first_byte_by).await {
                Ok(read) => first = read,
                Err(e) => {
                    s.shutdown().await;
                    return Err(e);
                }
            }
        }
        let done = bodiless || s.is_body_done();
        return Ok(Ready {
            session: s,
            header,
            first,
            done,
            ttfb,
            target: target.clone(),
            reusable: !write_failed,
        });
    }
    Err(TryError::Reset)
}

/// Read the (small) error body, so the caller can judge the API key by it.
async fn capture(s: &mut HttpSession, by: Instant) -> Result<Bytes, TryError> {
    let mut buf = BytesMut::new();
    while !s.is_body_done() && buf.len() < MAX_CAPTURE {
        match timeout_at(by, s.read_body_ref()).await {
            Err(_) => return Err(TryError::FirstByteTimeout),
            Ok(Err(e)) => return Err(classify(&e)),
            Ok(Ok(Some(chunk))) => buf.extend_from_slice(chunk),
            Ok(Ok(None)) => break,
        }
    }
    Ok(buf.freeze())
}

/// Read a 2xx stream up to its commit point: the first complete event of an event stream (`sse`),
/// else the first chunk. Returns the bytes read, unchanged; an error as the first event fails
/// the try.
async fn first_event(
    s: &mut HttpSession,
    sse: bool,
    by: Instant,
) -> Result<Option<Bytes>, TryError> {
    let mut framer = sse::Framer::new();
    let mut read: Option<Bytes> = None;
    loop {
        let chunk = match timeout_at(by, s.read_body_bytes()).await {
            Err(_) => return Err(TryError::FirstByteTimeout),
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
