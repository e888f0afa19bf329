//! What the relay measures of a committed answer, for the LLM metrics and the access log: the
//! time to its first body byte (a stream's first token), the gaps between a stream's chunks, a
//! stream's length, and the token usage the answer reports.
//!
//! The relay is the hot path, so the meter reads the clock once per chunk written and parses
//! nothing it can skip: a stream's events are parsed for `usage` only when their data mentions
//! it (`sse::Framer` hands over each completed event anyway), and a JSON answer is searched once,
//! at its end, in its last chunks (held by reference, not copied), where OpenAI-compatible
//! servers put `usage`.
//!
//! A resumed stream (`routes[].resume`) is measured up to its break; the continuations are not
//! (their `usage` counts the answer so far as prompt), but its duration runs to its very end.

use crate::metrics::LlmHandles;
use crate::sse::Event;
use crate::usage::{self, Usage};
use bytes::{Bytes, BytesMut};
use pingora::http::ResponseHeader;
use std::time::Duration;
use tokio::time::Instant;

/// How much of the end of a JSON answer is searched for its `usage`.
const TAIL: usize = 4 * 1024;

/// The measures of one relayed answer.
pub struct Meter<'a> {
    /// When the request arrived.
    start: Instant,
    /// The (route, cluster) handles; `None` observes nothing but still measures.
    handles: Option<&'a LlmHandles>,
    sse: bool,
    /// A successful JSON answer: its usage is looked for at the end.
    json: bool,
    first: Option<Instant>,
    last: Option<Instant>,
    usage: Option<Usage>,
    /// The last two body chunks of a JSON answer.
    tail: [Option<Bytes>; 2],
}

/// What the access log keeps of a relayed answer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Measured {
    /// Arrival to the first body byte relayed.
    pub ttft: Option<Duration>,
    pub usage: Option<Usage>,
}

impl<'a> Meter<'a> {
    /// A meter for a request that arrived at `start`, observing into `handles`.
    pub fn new(start: Instant, handles: Option<&'a LlmHandles>) -> Meter<'a> {
        Meter {
            start,
            handles,
            sse: false,
            json: false,
            first: None,
            last: None,
            usage: None,
            tail: [None, None],
        }
    }

    /// The response header that goes to the client; `sse` when its body is an event stream.
    pub fn head(&mut self, header: &ResponseHeader, sse: bool) {
        self.sse = sse;
        self.json = !sse
            && header.status.is_success()
            && header
                .headers
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|v| memchr::memmem::find(v.as_bytes(), b"json").is_some());
    }

    /// A completed event of a stream: its `usage`, when it carries one (the last wins: servers
    /// that report usage on every chunk report running totals).
    pub fn event(&mut self, ev: &Event<'_>) {
        if let Some(u) = usage::find_in_event(&ev.data) {
            self.usage = Some(u);
        }
    }

    /// A body chunk of an answer that is not a stream, as it came from the peer.
    pub fn body(&mut self, chunk: &Bytes) {
        if self.json && !chunk.is_empty() {
            let [older, newer] = &mut self.tail;
            *older = newer.replace(chunk.clone());
        }
    }

    /// Bytes about to be written to the client.
    pub fn sent(&mut self, out: Option<&Bytes>) {
        if out.is_none_or(|b| b.is_empty()) {
            return;
        }
        let now = Instant::now();
        match self.last {
            None => {
                self.first = Some(now);
                if let Some(h) = self.handles {
                    h.ttft.observe(since(self.start, now));
                }
            }
            Some(prev) if self.sse => {
                if let Some(h) = self.handles {
                    h.inter_token.observe(since(prev, now));
                }
            }
            Some(_) => {}
        }
        self.last = Some(now);
    }

    /// The answer ended (whole or not, a resumed stream after its last continuation): count its
    /// tokens and a stream's length.
    pub fn finish(mut self) -> Measured {
        if self.json {
            self.usage = self.tail_usage();
        }
        if let Some(h) = self.handles {
            if let Some(u) = self.usage {
                h.prompt_tokens.inc_by(u.prompt_tokens);
                h.completion_tokens.inc_by(u.completion_tokens);
            }
            if self.sse {
                // Now, not the last chunk: a resumed stream ends with its last continuation.
                h.stream_duration.observe(since(self.start, Instant::now()));
            }
        }
        Measured {
            ttft: self.first.map(|f| f.saturating_duration_since(self.start)),
            usage: self.usage,
        }
    }

    /// The `usage` in the last [`TAIL`] bytes of a JSON answer.
    fn tail_usage(&self) -> Option<Usage> {
        let [older, newer] = &self.tail;
        let newer = newer.as_ref()?;
        if let Some(u) = usage::find(newer) {
            return Some(u);
        }
        let older = older.as_ref().filter(|_| newer.len() < TAIL)?;
        // The member may straddle the last two chunks: join the end of the one before.
        let keep = (TAIL - newer.len()).min(older.len());
        let mut both = BytesMut::with_capacity(keep + newer.len());
        both.extend_from_slice(&older[older.len() - keep..]);
        both.extend_from_slice(newer);
        usage::find(&both)
    }
}

fn since(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_head() -> ResponseHeader {
        let mut h = ResponseHeader::build(200, None).unwrap();
        h.insert_header("content-type", "application/json").unwrap();
        h
    }

    #[test]
    fn usage_of_a_json_answer_split_across_chunks() {
        let body = br#"{"choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":31,"completion_tokens":21}}"#;
        for cut in 1..body.len() {
            let mut m = Meter::new(Instant::now(), None);
            m.head(&json_head(), false);
            for part in [&body[..cut], &body[cut..]] {
                let b = Bytes::copy_from_slice(part);
                m.body(&b);
                m.sent(Some(&b));
            }
            let got = m.finish();
            assert_eq!(
                got.usage.map(|u| (u.prompt_tokens, u.completion_tokens)),
                Some((31, 21)),
                "cut at {cut}"
            );
            assert!(got.ttft.is_some());
        }
    }

    #[test]
    fn no_usage_from_errors_or_other_types() {
        let body = Bytes::from_static(br#"{"usage":{"prompt_tokens":1,"completion_tokens":2}}"#);
        let mut h = ResponseHeader::build(500, None).unwrap();
        h.insert_header("content-type", "application/json").unwrap();
        let mut m = Meter::new(Instant::now(), None);
        m.head(&h, false);
        m.body(&body);
        assert_eq!(m.finish().usage, None);
        let mut m = Meter::new(Instant::now(), None);
        m.head(&ResponseHeader::build(200, None).unwrap(), false);
        m.body(&body);
        assert_eq!(m.finish().usage, None, "no content-type");
    }

    #[test]
    fn stream_usage_from_its_last_usage_event() {
        let mut m = Meter::new(Instant::now(), None);
        m.head(&ResponseHeader::build(200, None).unwrap(), true);
        let mut f = crate::sse::Framer::new();
        let stream = "data: {\"choices\":[{\"delta\":{\"content\":\"usage\"}}],\"usage\":null}\n\n\
                      data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7}}\n\n\
                      data: [DONE]\n\n";
        let out = f.push(Bytes::from(stream), |ev| m.event(ev));
        m.sent(out.as_ref());
        m.sent(None);
        let got = m.finish();
        assert_eq!(got.usage.map(|u| u.total()), Some(12));
        assert!(got.ttft.is_some());
    }
}
