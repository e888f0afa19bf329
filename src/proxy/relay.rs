//! After the commit point: stream the committed try's response to the client, chunk by chunk,
//! with no buffering (each upstream chunk is written and flushed as it arrives). An SSE stream
//! goes through an [`sse::Framer`]: only whole events are forwarded, the start of an unfinished
//! one waits for its end.
//!
//! A failure past this point can no longer be hidden. For an SSE stream it ends the stream
//! cleanly with an `event: error` and a JSON `data:` line, which starts on an event boundary;
//! for any other body the downstream message is cut short (no final chunk), so the client can
//! tell it is incomplete.
//!
//! On a route with `resume`, the relay keeps a [`Transcript`] of the events it forwards, and a
//! break (a reset, a stall past `idle`, an error event, an end before the answer finished) is
//! returned as [`RelayEnd::Broken`] with nothing written, so the caller can continue the stream
//! elsewhere; [`continuation`] then relays the continuation into the same response.
//!
//! A [`Meter`] reads what the answer used as it passes (for token budgets), and may leave out a
//! stream's usage chunk that switchyard asked for; the cache tee records what the client gets.
//! An [`Llm`] meter measures it for the LLM metrics and the access log (`meter.rs`).

use super::meter::Meter as Llm;
use super::resume::Transcript;
use crate::cache::Pass;
use crate::downstream::Downstream;
use crate::respond::sse_error_event;
use crate::sse::{self, Disposition, Media};
use crate::tokens::Meter;
use crate::upstream::{timeout_at, Ready};
use bytes::{Bytes, BytesMut};
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
    /// A stream with a transcript broke on an event boundary; nothing was written about it, the
    /// response is still open.
    Broken(Break),
}

/// How a stream broke after its commit point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Break {
    /// The connection failed.
    Reset,
    /// No data for `idle`, or the request's deadline passed.
    Stalled,
    /// The upstream sent an error event.
    ErrorEvent,
    /// The body ended before the answer did (no `finish_reason`, no `[DONE]`).
    Truncated,
}

impl Break {
    /// What the client's error event says, when the break cannot be mended.
    pub fn message(self) -> &'static str {
        match self {
            Break::Reset => "upstream connection failed mid-response",
            Break::Stalled => "upstream stalled past the idle or total timeout",
            Break::ErrorEvent => "upstream reported an error mid-stream",
            Break::Truncated => "upstream ended the stream before the answer was complete",
        }
    }
}

/// End an SSE response that broke with the error event.
pub async fn end_with_error(client: &mut impl Downstream, b: Break, request_id: &str) {
    let ev = sse_error_event(b.message(), request_id);
    let _ = client.write_body(Some(ev), true).await;
}

/// End an SSE response whose answer is whole with `data: [DONE]`.
pub async fn end_with_done(client: &mut impl Downstream) -> RelayEnd {
    let done = Bytes::from_static(b"data: [DONE]\n\n");
    match client.write_body(Some(done), true).await {
        Ok(()) => RelayEnd::Complete,
        Err(_) => RelayEnd::ClientGone,
    }
}

/// How a stream's events are handled on their way to the client.
struct Events<'t, 'l> {
    framer: sse::Framer,
    transcript: Option<&'t mut Transcript>,
    /// A continuation: events are rewritten by the transcript instead of forwarded as they came.
    rewrite: bool,
    /// Reads the answer's usage; says which events to leave out.
    meter: &'t mut Meter,
    /// Measures the stream (not its continuations).
    llm: Option<&'t mut Llm<'l>>,
}

impl Events<'_, '_> {
    /// Frame `chunk`: the bytes to write now, and whether an error event stopped the stream
    /// (only with a transcript; otherwise error events pass like any other).
    fn push(&mut self, chunk: Bytes) -> (Option<Bytes>, bool) {
        let meter = &mut *self.meter;
        let mut llm = self.llm.as_deref_mut();
        let mut read = move |ev: &sse::Event<'_>| {
            if let Some(l) = llm.as_deref_mut() {
                l.event(ev);
            }
            meter.event(ev)
        };
        let Some(t) = self.transcript.as_deref_mut() else {
            return (self.framer.push_with(chunk, read), false);
        };
        if !self.rewrite {
            return self.framer.push_events(chunk, |ev| {
                if ev.is_error() {
                    return Disposition::Stop;
                }
                if !read(ev) {
                    return Disposition::Drop;
                }
                t.observe(ev);
                Disposition::Forward
            });
        }
        let mut out = BytesMut::new();
        let (raw, stop) = self.framer.push_until(chunk, |ev| {
            let go_on = !ev.is_error();
            let keep = go_on && read(ev);
            if let Some(b) = t.rewrite(ev).filter(|_| keep) {
                out.extend_from_slice(&b);
            }
            go_on
        });
        if !self.framer.at_boundary() {
            return (raw, stop);
        }
        ((!out.is_empty()).then(|| out.freeze()), stop)
    }

    /// The bytes to write for `chunk` (the last one when `end`), and the break the caller will
    /// mend, if the stream broke: what came before it goes out, the response stays open, and an
    /// unfinished last event is dropped.
    fn frame(&mut self, chunk: Option<Bytes>, end: bool) -> (Option<Bytes>, Option<Break>) {
        let (whole, stopped) = match chunk {
            Some(c) => self.push(c),
            None => (None, false),
        };
        let broken = if stopped {
            Some(Break::ErrorEvent)
        } else if end && self.resumable() && !self.finished() {
            Some(Break::Truncated)
        } else {
            None
        };
        // Only at the end: `finish` hands over (and forgets) what is held back.
        let rest = (end && broken.is_none())
            .then(|| self.framer.finish())
            .flatten();
        match rest {
            Some(rest) => (Some(join(whole, rest)), broken),
            None => (whole, broken),
        }
    }

    /// Is a break to be handed back to the caller (a transcript, and whole events so far)?
    fn resumable(&self) -> bool {
        self.transcript.is_some() && self.framer.at_boundary()
    }

    /// Did the stream end its answer (`[DONE]`, or a finish reason)?
    fn finished(&self) -> bool {
        self.framer.done() || self.transcript.as_ref().is_some_and(|t| t.finished())
    }
}

/// Relay `ready` to the client. `idle` bounds the gap between chunks, `deadline` the request.
/// On a cached route `tee` records the answer (and marks it with `x-cache-status`); while it is
/// recording, the upstream is read to its end even if the client leaves, so the answer can still
/// be stored and handed to coalesced requests. With a `transcript` (routes with `resume`), an
/// SSE stream's break is returned as [`RelayEnd::Broken`]. `meter` reads the tokens it used,
/// `llm` measures what goes to the client.
pub async fn relay(
    client: &mut impl Downstream,
    mut ready: Ready,
    timing: (Duration, Instant),
    request_id: &str,
    (mut tee, transcript): (Option<&mut Pass<'_>>, Option<&mut Transcript>),
    meter: &mut Meter,
    llm: &mut Llm<'_>,
) -> RelayEnd {
    // The placeholder left behind is never read: no case map and no room reserved, so it
    // allocates only its box (a default-sized one cost 2.4 KB for the whole of every stream).
    let mut header = std::mem::replace(
        &mut ready.header,
        Box::new(
            pingora::http::ResponseHeader::build_no_case(200, Some(0)).expect("static status"),
        ),
    );
    // The cache sees the answer as the upstream framed it, then it is framed for the client.
    if let Some(t) = tee.as_deref_mut() {
        t.head(&mut header);
    }
    for_client(&mut header, client.req_header().version);
    let _ = header.insert_header("x-request-id", request_id);
    let sse = ready.media == Media::EventStream;
    llm.head(&header, ready.media);
    let (events, body_meter, body_llm) = if sse {
        let events = Events {
            framer: sse::Framer::new(),
            transcript,
            rewrite: false,
            meter,
            llm: Some(llm),
        };
        (Some(events), None, None)
    } else {
        (None, Some(meter), Some(llm))
    };
    let header_only = ready.done && ready.first.is_none();
    if let (true, Some(t)) = (header_only, tee.as_deref_mut()) {
        t.end(true).await;
    }
    let client_gone = client.write_header(header, header_only).await.is_err();
    if header_only {
        ready.release().await;
        return if client_gone {
            RelayEnd::ClientGone
        } else {
            RelayEnd::Complete
        };
    }
    let out = Out {
        tee,
        events,
        body_meter,
        body_llm,
    };
    pump(client, ready, timing, request_id, out, client_gone).await
}

/// Relay a continuation of a broken stream into the response already started: its header is not
/// sent again, and each event is rewritten by `transcript`. A continuation that is not an event
/// stream cannot be spliced in: it is dropped as [`Break::Truncated`].
pub async fn continuation(
    client: &mut impl Downstream,
    ready: Ready,
    timing: (Duration, Instant),
    request_id: &str,
    transcript: &mut Transcript,
    meter: &mut Meter,
) -> RelayEnd {
    if ready.media != Media::EventStream {
        ready.abandon().await;
        return RelayEnd::Broken(Break::Truncated);
    }
    let events = Events {
        framer: sse::Framer::new(),
        transcript: Some(transcript),
        rewrite: true,
        meter,
        // Not measured: a continuation's usage counts the answer so far as prompt.
        llm: None,
    };
    let out = Out {
        tee: None,
        events: Some(events),
        body_meter: None,
        body_llm: None,
    };
    pump(client, ready, timing, request_id, out, false).await
}

/// Where the bytes of a body go on their way to the client.
struct Out<'p, 'c, 'e, 'm, 'l> {
    /// The cache's recording (it gets what the client gets).
    tee: Option<&'p mut Pass<'c>>,
    /// The framing of an SSE stream.
    events: Option<Events<'e, 'l>>,
    /// The meters of a body that is not a stream.
    body_meter: Option<&'m mut Meter>,
    body_llm: Option<&'m mut Llm<'l>>,
}

/// The body of `ready`, chunk by chunk, until it ends, breaks or the client leaves.
async fn pump(
    client: &mut impl Downstream,
    mut ready: Ready,
    (idle, deadline): (Duration, Instant),
    request_id: &str,
    out: Out<'_, '_, '_, '_, '_>,
    mut client_gone: bool,
) -> RelayEnd {
    let Out {
        mut tee,
        mut events,
        mut body_meter,
        mut body_llm,
    } = out;
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
                let by = crate::deadline::from_now(idle).min(deadline);
                let (failure, chunk) = match timeout_at(by, ready.session.read_body_bytes()).await {
                    Err(_) => (Some(Break::Stalled), None),
                    Ok(Err(_)) => (Some(Break::Reset), None),
                    Ok(Ok(chunk)) => (None, chunk),
                };
                if let Some(b) = failure {
                    ready.session.shutdown().await;
                    if let Some(t) = tee {
                        t.end(false).await;
                    }
                    if client_gone {
                        return RelayEnd::ClientGone;
                    }
                    return match &events {
                        Some(e) if e.resumable() => RelayEnd::Broken(b),
                        Some(_) => {
                            end_with_error(client, b, request_id).await;
                            RelayEnd::UpstreamFailedSse
                        }
                        None => RelayEnd::UpstreamFailed,
                    };
                }
                let end = chunk.is_none() || ready.session.is_body_done();
                (chunk, end)
            }
        };
        if let (Some(m), Some(c)) = (body_meter.as_deref_mut(), &chunk) {
            m.body(c);
        }
        if let (Some(m), Some(c)) = (body_llm.as_deref_mut(), &chunk) {
            m.body(c);
        }
        let (out, broken) = match events.as_mut() {
            None => (chunk, None),
            Some(e) => e.frame(chunk, end),
        };
        // What the client gets is what is stored and handed to coalesced requests (without a
        // usage chunk it did not ask for).
        if let (Some(t), Some(c)) = (tee.as_deref_mut(), &out) {
            t.chunk(c);
        }
        if let Some(t) = tee.as_deref_mut() {
            // Stored before the client gets the last bytes, so its next request finds it.
            if end || broken.is_some() {
                t.end(end && broken.is_none()).await;
            }
        }
        if !client_gone {
            let llm = match events.as_mut() {
                Some(e) => e.llm.as_deref_mut(),
                None => body_llm.as_deref_mut(),
            };
            if let Some(l) = llm {
                l.sent(out.as_ref());
            }
            client_gone = client
                .write_body(out, end && broken.is_none())
                .await
                .is_err();
        }
        if let Some(b) = broken {
            ready.session.shutdown().await;
            return if client_gone {
                RelayEnd::ClientGone
            } else {
                RelayEnd::Broken(b)
            };
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

/// Make an upstream answer's header fit the client's connection: hop-by-hop headers (the fixed
/// set and those its `Connection` names) are dropped, and a body without a length is framed
/// for the client: chunked on HTTP/1.1, delimited by the connection's close on HTTP/1.0 (which
/// has no chunked coding). Pingora's HTTP/2 writer frames by itself.
pub fn for_client(header: &mut pingora::http::ResponseHeader, client: http::Version) {
    for name in crate::hop::present(&header.headers) {
        header.remove_header(&name);
    }
    let no_length = header.headers.get(http::header::CONTENT_LENGTH).is_none();
    let bodiless = crate::upstream::bodiless_status(header.status.as_u16());
    if no_length && !bodiless && client == http::Version::HTTP_11 {
        let _ = header.insert_header(http::header::TRANSFER_ENCODING, "chunked");
    }
    // The downstream speaks its own protocol version (Pingora's h2 writer ignores this field).
    header.set_version(http::Version::HTTP_11);
}

/// `a` (if any) followed by `b`.
fn join(a: Option<Bytes>, b: Bytes) -> Bytes {
    match a {
        None => b,
        Some(a) => {
            let mut both = BytesMut::with_capacity(a.len() + b.len());
            both.extend_from_slice(&a);
            both.extend_from_slice(&b);
            both.freeze()
        }
    }
}

#[cfg(test)]
mod tests;
