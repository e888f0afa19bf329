//! After the commit point: stream the committed try's response to the client, chunk by chunk,
//! with no buffering (each upstream chunk is written and flushed as it arrives). An SSE stream
//! goes through an [`sse::Framer`]: only whole events are forwarded, the start of an unfinished
//! one waits for its end.
//!
//! A failure past this point can no longer be hidden. For an SSE stream it ends the stream
//! cleanly with an `event: error` and a JSON `data:` line, which starts on an event boundary;
//! for any other body the downstream message is cut short (no final chunk), so the client can
//! tell it is incomplete.

use crate::cache::Pass;
use crate::downstream::Downstream;
use crate::respond::{is_sse, sse_error_event};
use crate::sse;
use crate::upstream::{timeout_at, Ready};
use std::time::Duration;
use tokio::time::Instant;

/// How a committed response ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEnd {
    /// The whole body reached the client.
    Complete,
    /// The upstream failed mid-body; an SSE error event closed the stream.
    UpstreamFailedSse,
    /// The upstream failed mid-body on a non-SSE response; the downstream must be aborted.
    UpstreamFailed,
    /// The client went away.
    ClientGone,
}

/// Relay `ready` to the client. `idle` bounds the gap between chunks, `deadline` the request.
/// On a cached route `tee` records the answer (and marks it with `x-cache-status`); while it is
/// recording, the upstream is read to its end even if the client leaves, so the answer can still
/// be stored and handed to coalesced requests.
pub async fn relay(
    client: &mut impl Downstream,
    mut ready: Ready,
    idle: Duration,
    deadline: Instant,
    request_id: &str,
    mut tee: Option<&mut Pass<'_>>,
) -> RelayEnd {
    let mut header = std::mem::replace(
        &mut ready.header,
        Box::new(pingora::http::ResponseHeader::build(200, None).expect("static status")),
    );
    for h in ["connection", "keep-alive", "proxy-connection"] {
        header.remove_header(h);
    }
    // The downstream speaks its own protocol version (Pingora's h2 writer ignores this field).
    header.set_version(http::Version::HTTP_11);
    if let Some(t) = tee.as_deref_mut() {
        t.head(&mut header);
    }
    let _ = header.insert_header("x-request-id", request_id);
    let is_sse = is_sse(&header.headers);
    let mut framer = is_sse.then(sse::Framer::new);
    let header_only = ready.done && ready.first.is_none();
    if let (true, Some(t)) = (header_only, tee.as_deref_mut()) {
        t.end(true).await;
    }
    let mut client_gone = client.write_header(header, header_only).await.is_err();
    if header_only {
        ready.release().await;
        return if client_gone {
            RelayEnd::ClientGone
        } else {
            RelayEnd::Complete
        };
    }
    let mut next = ready.first.take().map(|first| (Some(first), ready.done));
    loop {
        if client_gone && !tee.as_deref().is_some_and(|t| t.recording()) {
            ready.session.shutdown().await;
            if let Some(t) = tee {
                t.end(false).await;
            }
            return RelayEnd::ClientGone;
        }
        let (chunk, end) = match next.take() {
            Some(c) => c,
            None => {
                let by = (Instant::now() + idle).min(deadline);
                let (failure, chunk) = match timeout_at(by, ready.session.read_body_bytes()).await {
                    Err(_) => (
                        Some("upstream stalled past the idle or total timeout"),
                        None,
                    ),
                    Ok(Err(_)) => (Some("upstream connection failed mid-response"), None),
                    Ok(Ok(chunk)) => (None, chunk),
                };
                if let Some(msg) = failure {
                    ready.session.shutdown().await;
                    if let Some(t) = tee {
                        t.end(false).await;
                    }
                    if client_gone {
                        return RelayEnd::ClientGone;
                    }
                    if is_sse {
                        let ev = sse_error_event(msg, request_id);
                        let _ = client.write_body(Some(ev), true).await;
                        return RelayEnd::UpstreamFailedSse;
                    }
                    return RelayEnd::UpstreamFailed;
                }
                let end = chunk.is_none() || ready.session.is_body_done();
                (chunk, end)
            }
        };
        if let Some(t) = tee.as_deref_mut() {
            if let Some(c) = &chunk {
                t.chunk(c);
            }
            // Stored before the client gets the last bytes, so its next request finds it.
            if end {
                t.end(true).await;
            }
        }
        let out = match framer.as_mut() {
            None => chunk,
            Some(f) => {
                let whole = chunk.and_then(|c| f.push(c, |_| {}));
                // Only at the end: `finish` hands over (and forgets) what is held back.
                match end.then(|| f.finish()).flatten() {
                    Some(rest) => Some(join(whole, rest)),
                    None => whole,
                }
            }
        };
        if !client_gone {
            client_gone = client.write_body(out, end).await.is_err();
        }
        if end {
            ready.release().await;
            return if client_gone {
                RelayEnd::ClientGone
            } else {
                RelayEnd::Complete
            };
        }
    }
}

/// `a` (if any) followed by `b`.
fn join(a: Option<bytes::Bytes>, b: bytes::Bytes) -> bytes::Bytes {
    match a {
        None => b,
        Some(a) => {
            let mut both = bytes::BytesMut::with_capacity(a.len() + b.len());
            both.extend_from_slice(&a);
            both.extend_from_slice(&b);
            both.freeze()
        }
    }
}
