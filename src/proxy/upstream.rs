//! One try against one peer, up to the commit point.
//!
//! A try connects (under `connect`), sends the request and the whole buffered body, and waits
//! for the response header (under `first_byte`). For a streaming request that answered 2xx it
//! also waits for the first body chunk under the same `first_byte` budget, so a model that
//! accepts and then stalls before its first token is failed over too. Only then is the try
//! [`Ready`] to commit; everything before is invisible to the client.

use crate::config::Timeouts;
use bytes::Bytes;
use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::client::HttpSession;
use pingora::upstreams::peer::HttpPeer;
use pingora::{ErrorType, RetryType};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The Pingora peer for `addr`, as every try uses it.
pub fn http_peer(addr: SocketAddr) -> HttpPeer {
    let mut p = HttpPeer::new(addr, false, String::new());
    p.options.idle_timeout = Some(POOL_IDLE);
    p
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

/// How long an idle pooled connection to a peer is kept.
const POOL_IDLE: Duration = Duration::from_secs(60);

/// Why a try failed before it could commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryError {
    /// The peer refused the connection.
    Refused,
    /// Any other failure to connect (no route, handshake...).
    ConnectFailure,
    /// `connect` passed.
    ConnectTimeout,
    /// `first_byte` (or the overall deadline) passed before the commit point.
    FirstByteTimeout,
    /// The connection was reset or closed before a full response header.
    Reset,
    /// The response was malformed.
    Protocol,
    /// The peer answered a status the route retries.
    Status(u16),
    /// The answer says the API key used is rejected, out of quota or rate-limited.
    KeyRejected(u16),
}

impl TryError {
    /// Label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            TryError::Refused => "refused",
            TryError::ConnectFailure => "connect_failure",
            TryError::ConnectTimeout => "connect_timeout",
            TryError::FirstByteTimeout => "timeout",
            TryError::Reset => "reset",
            TryError::Protocol => "protocol_error",
            TryError::Status(502) => "502",
            TryError::Status(503) => "503",
            TryError::Status(504) => "504",
            TryError::Status(429) => "429",
            TryError::Status(s) if *s >= 500 => "5xx",
            TryError::Status(_) => "4xx",
            TryError::KeyRejected(_) => "api_key",
        }
    }
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
    pub peer: Arc<HttpPeer>,
}

/// Largest error body read to judge an API key by.
const MAX_CAPTURE: usize = 64 * 1024;

impl Ready {
    /// Drop the response without using the connection again.
    pub async fn abandon(mut self) {
        self.session.shutdown().await;
    }

    /// Put the connection back in the pool if the response was read to its end.
    pub async fn release(mut self, connector: &Connector) {
        if self.session.response_done() {
            connector
                .release_http_session(self.session, &*self.peer, Some(POOL_IDLE))
                .await;
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

/// Run one try. `retry_statuses` are the statuses that count as failures to retry.
#[allow(clippy::too_many_arguments)]
pub async fn try_once(
    connector: &Connector,
    peer: &Arc<HttpPeer>,
    req: &RequestHeader,
    body: &Bytes,
    stream: bool,
    t: &Timeouts,
    deadline: Instant,
    retry_statuses: &[u16],
    capture_statuses: &[u16],
) -> Result<Ready, TryError> {
    // A stale pooled connection is retried once on a fresh one, at no cost to the try.
    for fresh_only in [false, true] {
        let now = Instant::now();
        if now >= deadline {
            return Err(TryError::FirstByteTimeout);
        }
        let connect_by = (now + t.connect).min(deadline);
        let (mut s, reused) =
            match timeout_at(connect_by, connector.get_http_session(&**peer)).await {
                Err(_) => return Err(TryError::ConnectTimeout),
                Ok(Err(e)) => return Err(classify(&e)),
                Ok(Ok(pair)) => pair,
            };
        let reused = reused && !fresh_only;
        let sent_by = (Instant::now() + t.first_byte).min(deadline);
        let send = async {
            s.write_request_header(Box::new(req.clone())).await?;
            if !body.is_empty() {
                s.write_request_body(body.clone(), true).await?;
            }
            s.finish_request_body().await
        };
        match timeout_at(sent_by, send).await {
            Err(_) => return Err(TryError::FirstByteTimeout),
            Ok(Err(e)) if stale_pooled(&e, reused) => continue,
            Ok(Err(e)) => return Err(classify(&e)),
            Ok(Ok(())) => {}
        }
        let sent = Instant::now();
        let first_byte_by = (sent + t.first_byte).min(deadline);
        // Informational (1xx) headers are skipped.
        let mut header = None;
        for _ in 0..8 {
            match timeout_at(first_byte_by, s.read_response_header()).await {
                Err(_) => return Err(TryError::FirstByteTimeout),
                Ok(Err(e)) if stale_pooled(&e, reused) => break,
                Ok(Err(e)) => return Err(classify(&e)),
                Ok(Ok(())) => {}
            }
            match s.response_header() {
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
        let status = header.status.as_u16();
        if retry_statuses.contains(&status) {
            s.shutdown().await;
            return Err(TryError::Status(status));
        }
        let mut first = None;
        if capture_statuses.contains(&status) {
            // Read the (small) error body, so the caller can judge the API key by it.
            let mut buf = bytes::BytesMut::new();
            while !s.response_done() && buf.len() < MAX_CAPTURE {
                match timeout_at(first_byte_by, s.read_response_body()).await {
                    Err(_) => return Err(TryError::FirstByteTimeout),
                    Ok(Err(e)) => return Err(classify(&e)),
                    Ok(Ok(Some(chunk))) => buf.extend_from_slice(&chunk),
                    Ok(Ok(None)) => break,
                }
            }
            first = Some(buf.freeze());
        } else if stream && header.status.is_success() && !s.response_done() {
            match timeout_at(first_byte_by, s.read_response_body()).await {
                Err(_) => return Err(TryError::FirstByteTimeout),
                Ok(Err(e)) => return Err(classify(&e)),
                Ok(Ok(chunk)) => first = chunk,
            }
        }
        let done = s.response_done();
        return Ok(Ready {
            session: s,
            header,
            first,
            done,
            ttfb,
            peer: peer.clone(),
        });
    }
    Err(TryError::Reset)
}
