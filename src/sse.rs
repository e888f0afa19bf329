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
            && memchr::memmem::find(d, b"\"error\"").is_some()
            && serde_json::from_slice::<serde_json::Value>(d)
                .is_ok_and(|v| v.get("error").is_some_and(|e| !e.is_null()))
    }
}

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
        if self.lost {
            return ((!chunk.is_empty()).then_some(chunk), false);
        }
        let mut stopped = false;
        // Where the last event completed by this chunk ends, as an offset into `chunk`.
        let mut last_end = None;
        let mut event_start = 0usize;
        let held = self.pending.len();
        for (i, &b) in chunk.iter().enumerate() {
            let terminator = match b {
                b'\n' if self.after_cr => {
                    // The LF of a CRLF: the line already ended at the CR.
                    self.after_cr = false;
                    continue;
                }
                b'\n' => true,
                b'\r' => {
                    self.after_cr = true;
                    true
                }
                _ => {
                    self.after_cr = false;
                    false
                }
            };
            if !terminator {
                self.at_line_start = false;
                continue;
            }
            if self.at_line_start {
                // An empty line: the event that started at `event_start` (or in `pending`) ends.
                let end = i + 1 + usize::from(b == b'\r' && chunk.get(i + 1) == Some(&b'\n'));
                if !self.complete(&chunk, held, event_start, end, &mut on_event) {
                    stopped = true;
                    break;
                }
                event_start = end;
                last_end = Some(end);
            }
            self.at_line_start = true;
        }
        let forward = match last_end {
            None => None,
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

    /// The event in `pending` (its first `held` bytes) plus `chunk[start..end]` is complete;
    /// `false` when `on_event` stops the stream at it.
    fn complete(
        &mut self,
        chunk: &Bytes,
        held: usize,
        start: usize,
        end: usize,
        on_event: &mut impl FnMut(&Event<'_>) -> bool,
    ) -> bool {
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
        let Some(ev) = parse(raw) else { return true };
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

/// Does `content-type` say the body is an event stream (`text/event-stream`, any case)?
pub fn is_event_stream(headers: &http::HeaderMap) -> bool {
    const TYPE: &[u8] = b"text/event-stream";
    headers.get(http::header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes()
            .get(..TYPE.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(TYPE))
    })
}

/// Does a whole SSE body end with the `data: [DONE]` event and carry no error event?
pub fn completed_cleanly(body: &[u8]) -> bool {
    let mut f = Framer::new();
    f.push(Bytes::copy_from_slice(body), |_| {});
    f.done() && f.errors() == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `parts` one by one; returns what was forwarded, the event data seen, and the framer.
    fn run(parts: &[&str]) -> (String, Vec<String>, Framer) {
        let mut f = Framer::new();
        let mut out = String::new();
        let mut seen = Vec::new();
        for p in parts {
            let fwd = f.push(Bytes::copy_from_slice(p.as_bytes()), |ev| {
                seen.push(String::from_utf8_lossy(&ev.data).into_owned())
            });
            if let Some(b) = fwd {
                out.push_str(std::str::from_utf8(&b).unwrap());
            }
        }
        (out, seen, f)
    }

    #[test]
    fn whole_events_pass_unchanged() {
        let (out, seen, f) = run(&["data: {\"a\":1}\n\n", "data: [DONE]\n\n"]);
        assert_eq!(out, "data: {\"a\":1}\n\ndata: [DONE]\n\n");
        assert_eq!(seen, ["{\"a\":1}", "[DONE]"]);
        assert!(f.done() && f.events() == 2 && f.errors() == 0);
    }

    #[test]
    fn a_split_event_is_held_until_it_ends() {
        let (out, seen, mut f) = run(&["data: {\"choices\":[{\"de", "lta\":1}]}\n", "\ndata: x"]);
        assert_eq!(out, "data: {\"choices\":[{\"delta\":1}]}\n\n");
        assert_eq!(seen, ["{\"choices\":[{\"delta\":1}]}"]);
        assert!(!f.done());
        // A cut now drops the unfinished "data: x"; a normal end hands it over.
        assert_eq!(f.finish().as_deref(), Some(&b"data: x"[..]));
    }

    #[test]
    fn every_line_ending_and_split_points() {
        let text = "event: a\r\ndata: 1\r\ndata: 2\r\n\r\ndata: 3\r\rdata: [DONE]\n\n";
        // Split at every byte position: the result must not depend on chunking.
        for cut in 0..text.len() {
            let (out, seen, f) = run(&[&text[..cut], &text[cut..]]);
            assert_eq!(out, text, "cut at {cut}");
            assert_eq!(seen, ["1\n2", "3", "[DONE]"], "cut at {cut}");
            assert!(f.done());
        }
    }

    #[test]
    fn comments_and_error_events() {
        let (_, seen, f) = run(&[": keep-alive\n\n", "event: error\ndata: {}\n\n"]);
        assert_eq!(seen, ["{}"]);
        assert_eq!((f.events(), f.errors()), (1, 1));
        let (_, _, f) = run(&["data: {\"error\": {\"message\": \"engine died\"}}\n\n"]);
        assert_eq!(f.errors(), 1);
        let (_, _, f) =
            run(&["data: {\"choices\": [{\"delta\": {\"content\": \"\\\"error\\\"\"}}]}\n\n"]);
        assert_eq!(f.errors(), 0, "the word inside content is not an error");
    }

    #[test]
    fn done_is_an_event_not_a_tail() {
        assert!(completed_cleanly(b"data: {}\n\ndata: [DONE]\n\n"));
        assert!(
            !completed_cleanly(b"data: {}\n\ndata: [DONE]"),
            "unterminated"
        );
        assert!(!completed_cleanly(b"data: x [DONE]\n\n"));
        assert!(!completed_cleanly(
            b"data: {\"error\":{}}\n\ndata: [DONE]\n\n"
        ));
        assert!(!completed_cleanly(b""));
    }

    #[test]
    fn a_stop_forwards_only_the_events_before_it() {
        let text = "data: 1\n\ndata: {\"error\":{}}\n\ndata: [DONE]\n\n";
        for cut in 0..text.len() {
            let mut f = Framer::new();
            let (mut out, mut stops) = (String::new(), 0);
            for part in [&text[..cut], &text[cut..]] {
                if stops > 0 {
                    break;
                }
                let (fwd, stop) =
                    f.push_until(Bytes::copy_from_slice(part.as_bytes()), |e| !e.is_error());
                out.push_str(std::str::from_utf8(fwd.as_deref().unwrap_or_default()).unwrap());
                stops += usize::from(stop);
            }
            assert_eq!((out.as_str(), stops), ("data: 1\n\n", 1), "cut at {cut}");
        }
    }

    #[test]
    fn a_huge_event_gives_up_framing_and_loses_nothing() {
        let big = "x".repeat(MAX_PENDING + 10);
        let first = format!("data: {big}");
        let (out, _, f) = run(&["data: 1\n\n", &first, "\n\ndata: 2\n\n"]);
        assert_eq!(out, format!("data: 1\n\n{first}\n\ndata: 2\n\n"));
        assert!(!f.at_boundary());
    }
}
