//! The lean HTTP/1.1 front end: client connections served without Pingora's HTTP/1 server.
//!
//! Pingora's server spends, per request, more CPU than the rest of switchyard together: it
//! boxes and copies a large future for every request cycle, keeps a case-preserving copy of
//! every header name, and serialises heads through several layers. This front end reads a
//! connection into one reusable buffer, parses each head with httparse into the
//! `RequestHeader` the stages need, frames bodies itself ([`crate::wire`]), writes each answer
//! with one vectored write where it can, and hands every request to a [`Serve`] (the request
//! path) through the same [`crate::downstream::Downstream`] trait as Pingora's sessions. TLS,
//! HTTP/2 and graceful upgrades stay with Pingora (`listen::front` sends HTTP/2 there).
//!
//! What it does with a connection, by RFC 9112:
//! - keep-alive: HTTP/1.1 unless `Connection: close`, HTTP/1.0 only with `keep-alive`; at most
//!   `limits.keepalive_requests` requests; between requests the connection may stay idle
//!   `limits.keepalive_timeout` and is closed at once when the server starts shutting down;
//! - a head must arrive whole within `limits.client_header_timeout` of its first byte (of the
//!   connection, for the first request), or it gets 408; a head larger than
//!   `limits.max_header_bytes` (plus room for its line ends) gets 431 without being read
//!   further; the request path measures the header exactly and answers 431 itself below that;
//! - pipelined requests are answered in order: bytes past one request's body are the start of
//!   the next;
//! - refused before the request path (JSON answer, connection closed): a malformed head (400),
//!   an HTTP/1.1 request without `Host` or with two (400), an invalid `Content-Length` (400),
//!   `Transfer-Encoding` on HTTP/1.0 (400), a transfer coding other than chunked (501),
//!   `CONNECT` (405);
//! - `Content-Length` with `Transfer-Encoding`: the coding frames the body, the length is
//!   dropped and the connection closes after the answer (RFC 9112 §6.1, as Pingora and nginx);
//! - `Expect: 100-continue` is answered `100 Continue` when the body is first read, not when
//!   the request path answers without it;
//! - a connection whose request body was not read to its end, or whose response was cut
//!   short, is closed rather than reused.

pub(crate) mod conn;
pub mod request;
mod response;
mod session;

#[cfg(test)]
mod tests;

pub use conn::Conn;

use crate::downstream::Serve;
use crate::metrics::Metrics;
use crate::respond;
use crate::snapshot::Current;
use crate::wire;
use bytes::{Buf, Bytes, BytesMut};
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use request::Refusal;
use session::Session;
use std::io;
use std::time::Duration;
use tokio::time::Instant;

/// Room for the request line's and fields' separators and line ends, on top of
/// `limits.max_header_bytes`, before a head is refused unread.
const HEAD_SLACK: usize = 4096;

/// How long writing a refusal may take.
const REFUSAL_WRITE: Duration = Duration::from_secs(5);

/// What the connection loop reads from the config in force, once per request.
struct Limits {
    max_head: usize,
    header_timeout: Duration,
    keepalive_timeout: Duration,
    keepalive_requests: u32,
}

impl Limits {
    fn now(current: &Current) -> Self {
        let snap = current.load();
        let l = &snap.config.limits;
        Limits {
            max_head: l.max_header_bytes.saturating_add(HEAD_SLACK),
            header_timeout: l.client_header_timeout,
            keepalive_timeout: l.keepalive_timeout,
            keepalive_requests: l.keepalive_requests,
        }
    }
}

/// Serve HTTP/1.x on `stream` until the connection ends; `buf` holds what was read from it
/// already.
pub async fn serve_connection<S: Serve>(
    app: &S,
    stream: Stream,
    buf: BytesMut,
    current: &Current,
    metrics: &Metrics,
    shutdown: &ShutdownWatch,
) {
    let mut conn = Conn::new(stream, buf);
    let mut shutdown = shutdown.clone();
    let mut served: u32 = 0;
    // None for the first request: the connection's first bytes are the head's.
    let mut idle = None;
    loop {
        let limits = Limits::now(current);
        let end = match read_head(&mut conn, idle, &limits, &mut shutdown).await {
            Ok(Some(end)) => end,
            Ok(None) => break,
            Err(r) => return refuse(&mut conn, &r, metrics).await,
        };
        let head = conn.buf.split_to(end).freeze();
        let req = match request::parse(&head) {
            Ok(req) => req,
            Err(r) => return refuse(&mut conn, &r, metrics).await,
        };
        drop(head);
        served += 1;
        let last = served >= limits.keepalive_requests || *shutdown.borrow();
        let mut session = Session::new(&mut conn, req, last);
        // Boxed: the request path's future is large, and an idle connection should not carry
        // it (the box lives only while a request is in flight).
        Box::pin(app.serve_request(&mut session)).await;
        let keepalive = session.keepalive_secs();
        if !session.finish().await {
            break;
        }
        idle = Some(match keepalive {
            Some(s) if s > 0 => Duration::from_secs(s),
            _ => limits.keepalive_timeout,
        });
        conn.shrink();
    }
    conn.close().await;
}

/// Wait for the next request head: the index of its end in `conn.buf`; `None` when the
/// connection closed, stayed idle past `idle` (between requests) or the server is shutting
/// down while it was idle.
async fn read_head(
    conn: &mut Conn,
    idle: Option<Duration>,
    limits: &Limits,
    shutdown: &mut ShutdownWatch,
) -> Result<Option<usize>, Refusal> {
    let mut scanned = 0;
    let mut by: Option<Instant> = None;
    loop {
        let skip = wire::leading_empty_lines(&conn.buf);
        if skip > 0 {
            conn.buf.advance(skip);
            scanned = 0;
        }
        if !conn.buf.is_empty() {
            if let Some(end) = wire::head_end(&conn.buf, scanned) {
                return Ok(Some(end));
            }
            if conn.buf.len() > limits.max_head {
                return Err(Refusal::too_large());
            }
            scanned = conn.buf.len();
        }
        let now = Instant::now();
        let wait = match (by, idle) {
            (Some(by), _) => by.saturating_duration_since(now),
            (None, Some(idle)) if conn.buf.is_empty() => idle,
            (None, _) => {
                let d = limits.header_timeout;
                by = Some(now + d);
                d
            }
        };
        let read = if conn.buf.is_empty() && idle.is_some() {
            tokio::select! {
                biased;
                r = conn.read(Some(wait)) => r,
                _ = shutdown.changed() => return Ok(None),
            }
        } else {
            conn.read(Some(wait)).await
        };
        match read {
            Ok(0) => return Ok(None),
            Ok(_) if by.is_none() => by = Some(Instant::now() + limits.header_timeout),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::TimedOut && !conn.buf.is_empty() => {
                return Err(Refusal::timeout())
            }
            Err(_) => return Ok(None),
        }
    }
}

/// Answer a request refused before the request path, in JSON, and close the connection.
async fn refuse(conn: &mut Conn, r: &Refusal, metrics: &Metrics) {
    if r.status == 431 {
        metrics
            .limit_rejected
            .with_label_values(&["max_header_bytes"])
            .inc();
    }
    log::debug!("refused a request from {:?}: {}", conn.client, r.message);
    conn.write_and_close(refusal_bytes(r), REFUSAL_WRITE).await;
}

/// The whole answer to a refused request.
fn refusal_bytes(r: &Refusal) -> Bytes {
    let body = respond::error_body(r.code, r.message, "");
    let reason = http::StatusCode::from_u16(r.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let date = pingora::protocols::http::date::get_cached_date();
    let head = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: application/json\r\ncache-control: no-store\r\n\
         content-length: {}\r\ndate: {}\r\nconnection: close\r\n\r\n",
        r.status,
        body.len(),
        date.to_str().unwrap_or_default(),
    );
    let mut out = BytesMut::with_capacity(head.len() + body.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(&body);
    out.freeze()
}
