//! Server-sent events, framed incrementally as a stream is relayed.
//!
//! Upstream chunks end wherever the socket read ended, mid-line included. The relay passes each
//! chunk through a [`Framer`], which hands back only the bytes that complete whole events and
//! keeps the start of an unfinished one until its end arrives. So the client never holds half an
//! event: when the upstream is cut, the held-back part is dropped and the error event that ends
//! the stream starts on a boundary, where every SSE parser reads it as an event of its own. Each
//! completed event is also handed to the caller as an [`Event`] (its type and data, borrowed from
//! the bytes), so the stages that read a stream (the cache, which stores only streams that ended
//! with `data: [DONE]` and carried no error; metrics; resumption) parse nothing twice.
//!
//! The framing follows the WHATWG rules for `text/event-stream`: a line ends with CRLF, LF or CR;
//! an empty line ends an event; `field: value` with one optional space after the colon; `data`
//! lines of one event are joined with LF; lines starting with `:` are comments. Events are
//! usually one chunk each (model servers write an event at a time), so the common case moves no
//! byte: the chunk goes out as it came.
//!
//! Why not an SSE crate: the ones on crates.io adapt a `Stream` and allocate a `String` per field
//! per event; on a path that relays thousands of streams the relay wants slices of the chunk it
//! already holds, and the bytes it may forward.

use bytes::{Bytes, BytesMut};

/// An unfinished event larger than this is not held back: framing gives up for the rest of the
/// stream and bytes are forwarded as they come (a sane model server never sends such an event).
pub const MAX_PENDING: usize = 1 << 20;

/// One complete event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<'a> {
    /// The `event` field; `message` when absent.
    pub kind: &'a [u8],
    /// The `data` lines, joined with LF. Borrowed when the event has one data line.
    pub data: std::borrow::Cow<'a, [u8]>,
}

impl Event<'_> {
    /// Is this the `data: [DONE]` event that ends an OpenAI-style stream?
    pub fn is_done(&self) -> bool {
        self.kind == b"message" && &self.data[..] == b"[DONE]"
    }

    /// Is this an error: an `event: error`, or a data object with an `error` member (as vLLM and
    /// other OpenAI-compatible servers send when generation fails mid-stream)?
    pub fn is_error(&self) -> bool {
        if self.kind == b"error" {
            return true;
        }
        let d = self.data.trim_ascii_start();
        // Cheap pre-check before parsing: only an object mentioning "error" can be one.
        d.first() == Some(&b'{')
            && ERROR_MEMBER.find(d).is_some()
            && serde_json::from_slice::<serde_json::Value>(d)
                .is_ok_and(|v| v.get("error").is_some_and(|e| !e.is_null()))
    }
}

/// The searcher for `"error"`, built once: building one per event cost more than the search.
static ERROR_MEMBER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"error\""));

/// Incremental framing of one event stream.
#[derive(Debug, Default)]
pub struct Framer {
    /// Bytes of an unfinished event, held back.
    pending: BytesMut,
    /// The last byte seen was a CR (a LF right after it ends the same line).
    after_cr: bool,
    /// The bytes seen so far end with a line terminator (or nothing was seen yet).
    at_line_start: bool,
    /// Too large an event was seen: bytes pass through unframed.
    lost: bool,
    events: u64,
    done: bool,
    errors: u64,
}

impl Framer {
    pub fn new() -> Framer {
        Framer {
            at_line_start: true,
            ..Framer::default()
        }
    }

    /// Take an upstream chunk. Returns the bytes to forward now (whole events, or everything once
    /// framing is lost) and calls `on_event` for each event completed by this chunk.
    pub fn push(&mut self, chunk: Bytes, mut on_event: impl FnMut(&Event<'_>)) -> Option<Bytes> {
        self.push_until(chunk, |ev| {
            on_event(ev);
            true
        })
        .0
    }

    /// [`push`](Self::push), where `on_event` may stop the stream at an event by returning
    /// `false` (an error event the caller will not forward): the bytes returned are those of the
    /// events before it, that event and the rest of the chunk are dropped, and `true` says so.
    /// Nothing more should be pushed after a stop.
    pub fn push_until(
        &mut self,
        chunk: Bytes,
        mut on_event: impl FnMut(&Event<'_>) -> bool,
    ) -> (Option<Bytes>, bool) {
        self.push_events(chunk, |ev| match on_event(ev) {
            true => Disposition::Forward,
            false => Disposition::Stop,
        })
    }

    /// [`push`](Self::push), where `on_event` also says whether to forward the event: an event it
    /// returns `false` for is left out of the bytes returned, and the stream goes on (the relay
    /// drops the usage chunk of a stream whose usage switchyard asked for itself).
    pub fn push_with(
        &mut self,
        chunk: Bytes,
        mut on_event: impl FnMut(&Event<'_>) -> bool,
    ) -> Option<Bytes> {
        self.push_events(chunk, |ev| match on_event(ev) {
            true => Disposition::Forward,
            false => Disposition::Drop,
        })
        .0
    }

    /// The framing behind every `push`: `on_event` disposes of each completed event.
    pub fn push_events(
        &mut self,
        chunk: Bytes,
        mut on_event: impl FnMut(&Event<'_>) -> Disposition,
    ) -> (Option<Bytes>, bool) {
        if self.lost {
            return ((!chunk.is_empty()).then_some(chunk), false);
        }
        let mut stopped = false;
        // Spans of dropped events in `pending[..held] ++ chunk`.
        let mut dropped: Vec<(usize, usize)> = Vec::new();
        // Where the last event completed by this chunk ends, as an offset into `chunk`.
        let mut last_end = None;
        let mut event_start = 0usize;
        let held = self.pending.len();
        let mut i = 0;
        while i < chunk.len() {
            let b = chunk[i];
            match b {
                b'\n' if self.after_cr => {
                    // The LF of a CRLF: the line already ended at the CR.
                    self.after_cr = false;
                    i += 1;
                    continue;
                }
                b'\n' => {}
                b'\r' => self.after_cr = true,
                _ => {
                    // Line content: skip to the next terminator in one search, not byte by byte.
                    self.after_cr = false;
                    self.at_line_start = false;
                    i = memchr::memchr2(b'\n', b'\r', &chunk[i..]).map_or(chunk.len(), |k| i + k);
                    continue;
                }
            }
            if self.at_line_start {
                // An empty line: the event that started at `event_start` (or in `pending`) ends.
                let end = i + 1 + usize::from(b == b'\r' && chunk.get(i + 1) == Some(&b'\n'));
                match self.complete(&chunk, held, event_start, end, &mut on_event) {
                    Disposition::Forward => {}
                    Disposition::Drop => {
                        // An event that started in `pending` starts at its beginning.
                        let from = if event_start == 0 {
                            0
                        } else {
                            held + event_start
                        };
                        dropped.push((from, held + end));
                    }
                    Disposition::Stop => {
                        stopped = true;
                        break;
                    }
                }
                event_start = end;
                last_end = Some(end);
            }
            self.at_line_start = true;
            i += 1;
        }
        let forward = match last_end {
            None => None,
            Some(end) if !dropped.is_empty() => {
                let out = self.without(&chunk, held, held + end, &dropped);
                self.pending.clear();
                (!out.is_empty()).then_some(out)
            }
            Some(end) if held == 0 => Some(chunk.slice(..end)),
            Some(end) => {
                let mut out = std::mem::take(&mut self.pending);
                out.extend_from_slice(&chunk[..end]);
                Some(out.freeze())
            }
        };
        if stopped {
            self.pending.clear();
            return (forward, true);
        }
        let rest = &chunk[last_end.unwrap_or(0)..];
        if last_end.is_some() {
            self.pending.clear();
        }
        self.pending.extend_from_slice(rest);
        if self.pending.len() > MAX_PENDING {
            // Give up framing: send what is held and everything after it as it comes.
            self.lost = true;
            let held = std::mem::take(&mut self.pending).freeze();
            let all = match forward {
                None => held,
                Some(f) => {
                    let mut both = BytesMut::from(&f[..]);
                    both.extend_from_slice(&held);
                    both.freeze()
                }
            };
            return (Some(all), false);
        }
        (forward, false)
    }

    /// `pending[..held] ++ chunk`, up to `upto`, without the `dropped` spans (in order).
    fn without(
        &self,
        chunk: &Bytes,
        held: usize,
        upto: usize,
        dropped: &[(usize, usize)],
    ) -> Bytes {
        let mut out = BytesMut::with_capacity(upto);
        let mut copy = |from: usize, to: usize| {
            if from < held {
                out.extend_from_slice(&self.pending[from..to.min(held)]);
            }
            if to > held {
                out.extend_from_slice(&chunk[from.max(held) - held..to - held]);
            }
        };
        let mut at = 0;
        for &(from, to) in dropped {
            if from > at {
                copy(at, from);
            }
            at = to;
        }
        if upto > at {
            copy(at, upto);
        }
        out.freeze()
    }

    /// The event in `pending` (its first `held` bytes) plus `chunk[start..end]` is complete;
    /// returns what `on_event` made of it (a block with no field is forwarded, unseen).
    fn complete(
        &mut self,
        chunk: &Bytes,
        held: usize,
        start: usize,
        end: usize,
        on_event: &mut impl FnMut(&Event<'_>) -> Disposition,
    ) -> Disposition {
        let joined;
        let raw: &[u8] = if start == 0 && held > 0 {
            let mut b = Vec::with_capacity(held + end);
            b.extend_from_slice(&self.pending[..held]);
            b.extend_from_slice(&chunk[..end]);
            joined = b;
            &joined
        } else {
            &chunk[start..end]
        };
        let Some(ev) = parse(raw) else {
            return Disposition::Forward;
        };
        self.events += 1;
        self.done = ev.is_done();
        if ev.is_error() {
            self.errors += 1;
        }
        on_event(&ev)
    }

    /// The bytes held back at the end of a stream that ended normally (an unterminated last
    /// event, which the client's parser will discard or keep as it sees fit).
    pub fn finish(&mut self) -> Option<Bytes> {
        let rest = std::mem::take(&mut self.pending);
        (!rest.is_empty()).then(|| rest.freeze())
    }

    /// Do the bytes forwarded so far end on an event boundary? (Always, unless framing was lost.)
    pub fn at_boundary(&self) -> bool {
        !self.lost
    }

    /// Events completed so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Was the last event `data: [DONE]`?
    pub fn done(&self) -> bool {
        self.done
    }

    /// Events that were errors (see [`Event::is_error`]).
    pub fn errors(&self) -> u64 {
        self.errors
    }
}

/// What a `push` does with one completed event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Forward it.
    Forward,
    /// Leave it out; the stream goes on.
    Drop,
    /// Leave it and the rest of the chunk out: the stream stops there.
    Stop,
}

/// Parse the lines of one event (its terminating empty line included). `None` when it has no
/// field at all (comments only): such a block dispatches nothing.
pub fn parse(raw: &[u8]) -> Option<Event<'_>> {
    let mut kind: &[u8] = b"message";
    let mut data: Option<std::borrow::Cow<'_, [u8]>> = None;
    let mut any = false;
    for line in lines(raw) {
        if line.is_empty() || line[0] == b':' {
            continue;
        }
        let (name, value) = match memchr::memchr(b':', line) {
            Some(c) => {
                let v = &line[c + 1..];
                (&line[..c], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"event" => {
                any = true;
                kind = value;
            }
            b"data" => {
                any = true;
                data = Some(match data {
                    None => std::borrow::Cow::Borrowed(value),
                    Some(prev) => {
                        let mut v = prev.into_owned();
                        v.push(b'\n');
                        v.extend_from_slice(value);
                        std::borrow::Cow::Owned(v)
                    }
                });
            }
            b"id" | b"retry" => any = true,
            _ => {}
        }
    }
    any.then(|| Event {
        kind: if kind.is_empty() { b"message" } else { kind },
        data: data.unwrap_or(std::borrow::Cow::Borrowed(b"")),
    })
}

/// The lines of `raw`, split at CRLF, LF or CR.
fn lines(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = raw;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let Some(i) = memchr::memchr2(b'\n', b'\r', rest) else {
            let line = rest;
            rest = &[];
            return Some(line);
        };
        let line = &rest[..i];
        let skip = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') {
            2
        } else {
            1
        };
        rest = &rest[i + skip..];
        Some(line)
    })
}

/// What an answer's `content-type` says its body is. Read once per answer (a header lookup is
/// not free on the hot path) and carried with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    /// `text/event-stream` (any case).
    EventStream,
    /// A JSON type (`application/json`, `application/problem+json`, ...).
    Json,
    Other,
}

impl Media {
    /// The media type `headers` give the body.
    pub fn of(headers: &http::HeaderMap) -> Media {
        const TYPE: &[u8] = b"text/event-stream";
        let Some(v) = headers.get(http::header::CONTENT_TYPE) else {
            return Media::Other;
        };
        let v = v.as_bytes();
        if v.get(..TYPE.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(TYPE))
        {
            Media::EventStream
        } else if memchr::memmem::find(v, b"json").is_some() {
            Media::Json
        } else {
            Media::Other
        }
    }
}

/// Does `content-type` say the body is an event stream (`text/event-stream`, any case)?
pub fn is_event_stream(headers: &http::HeaderMap) -> bool {
    Media::of(headers) == Media::EventStream
}

/// Does a whole SSE body end with the `data: [DONE]` event and carry no error event?
pub fn completed_cleanly(body: &[u8]) -> bool {
    let mut f = Framer::new();
    f.push(Bytes::copy_from_slice(body), |_| {});
    f.done() && f.errors() == 0
}

#[cfg(test)]
mod tests;
