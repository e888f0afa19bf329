//! What the relay measures of a committed answer, for the LLM metrics and the access log: the
//! time to its first body byte (a stream's first token), the gaps between a stream's chunks, a
//! stream's length, and the token usage the answer reports.
//!
//! The relay is the hot path, so the meter reads the clock once per chunk written, keeps a
//! stream's gaps in a histogram of its own (added to the shared one at most once a second and at
//! the end, instead of four atomic operations per chunk), and parses nothing it can skip: a
//! stream's `usage` is read once, at its end, from its final data event (the usage chunk, which
//! servers send last; those that report usage on every chunk report running totals, so the
//! last is the total), kept as a copy of that event alone; a JSON answer is searched once, at its
//! end, in its last chunks (held by reference, not copied), where OpenAI-compatible servers put
//! `usage`.
//!
//! A resumed stream (`routes[].resume`) is measured up to its break; the continuations are not
//! (their `usage` counts the answer so far as prompt), but its duration runs to its very end.

use crate::metrics::LlmHandles;
use crate::sse::{Event, Media};
use crate::usage::{self, Usage};
use bytes::{Bytes, BytesMut};
use pingora::http::ResponseHeader;
use prometheus::local::LocalHistogram;
use std::time::Duration;
use tokio::time::Instant;

/// How much of the end of a JSON answer is searched for its `usage`.
const TAIL: usize = 4 * 1024;

/// A stream's last event is kept (copied) up to this size for its `usage`; a larger one is
/// searched as it passes.
const KEEP_EVENT: usize = 4 * 1024;

/// How long a stream's gaps may wait before they are added to the shared histogram.
const FLUSH_GAPS: Duration = Duration::from_secs(1);

/// The measures of one relayed answer.
pub struct Meter<'a> {
    /// When the request arrived.
    start: Instant,
    /// The (route, cluster) handles; `None` observes nothing but still measures.
    handles: Option<&'a LlmHandles>,
    sse: bool,
    /// A successful JSON answer: its usage is looked for at the end.
    json: bool,
    /// Arrival to the first body byte relayed.
    ttft: Option<Duration>,
    last: Option<Instant>,
    usage: Option<Usage>,
    /// The last two body chunks of a JSON answer.
    tail: [Option<Bytes>; 2],
    /// A stream's last data event (unless it was larger than [`KEEP_EVENT`]: then its usage is
    /// in `usage`).
    last_event: Vec<u8>,
    /// This stream's gaps not yet added to the shared histogram, and when they will be.
    gaps: Option<(LocalHistogram, Instant)>,
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
            ttft: None,
            last: None,
            usage: None,
            tail: [None, None],
            last_event: Vec::new(),
            gaps: None,
        }
    }

    /// The response header that goes to the client, whose body is `media`.
    pub fn head(&mut self, header: &ResponseHeader, media: Media) {
        self.sse = media == Media::EventStream;
        self.json = media == Media::Json && header.status.is_success();
    }

    /// A completed event of a stream: kept when it is the last data event (`[DONE]` and named
    /// events such as a `ping` are not chunks of the answer), for its `usage` at the end.
    pub fn event(&mut self, ev: &Event<'_>) {
        if ev.kind != b"message" || ev.is_done() {
            return;
        }
        self.last_event.clear();
        if ev.data.len() <= KEEP_EVENT {
            self.last_event.extend_from_slice(&ev.data);
            self.usage = None;
        } else {
            self.usage = usage::find_in_event(&ev.data);
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
                let ttft = now.saturating_duration_since(self.start);
                self.ttft = Some(ttft);
                if let Some(h) = self.handles {
                    h.ttft.observe(ttft.as_secs_f64());
                }
            }
            Some(prev) if self.sse => {
                if let Some(h) = self.handles {
                    let (gaps, flush_at) = self
                        .gaps
                        .get_or_insert_with(|| (h.inter_token.local(), now + FLUSH_GAPS));
                    gaps.observe(since(prev, now));
                    if now >= *flush_at {
                        gaps.flush();
                        *flush_at = now + FLUSH_GAPS;
                    }
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
        } else if !self.last_event.is_empty() {
            self.usage = usage::find_in_event(&self.last_event);
        }
        if let Some((gaps, _)) = &self.gaps {
            gaps.flush();
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
            ttft: self.ttft,
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
            let h = json_head();
            m.head(&h, Media::of(&h.headers));
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
        m.head(&h, Media::of(&h.headers));
        m.body(&body);
        assert_eq!(m.finish().usage, None);
        let mut m = Meter::new(Instant::now(), None);
        let plain = ResponseHeader::build(200, None).unwrap();
        m.head(&plain, Media::of(&plain.headers));
        m.body(&body);
        assert_eq!(m.finish().usage, None, "no content-type");
    }

    #[test]
    fn stream_usage_from_its_last_usage_event() {
        let mut m = Meter::new(Instant::now(), None);
        m.head(
            &ResponseHeader::build(200, None).unwrap(),
            Media::EventStream,
        );
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

    /// Feed `events` (data only) through a stream meter; its usage.
    fn stream_usage(events: &[String]) -> Option<Usage> {
        let mut m = Meter::new(Instant::now(), None);
        m.head(
            &ResponseHeader::build(200, None).unwrap(),
            Media::EventStream,
        );
        let mut f = crate::sse::Framer::new();
        for e in events {
            let out = f.push(Bytes::from(format!("data: {e}\n\n")), |ev| m.event(ev));
            m.sent(out.as_ref());
        }
        m.finish().usage
    }

    #[test]
    fn a_stream_counts_its_final_usage() {
        let chunk =
            |u: &str| format!(r#"{{"choices":[{{"delta":{{"content":"x"}}}}],"usage":{u}}}"#);
        let totals = |p: u64, c: u64| format!(r#"{{"prompt_tokens":{p},"completion_tokens":{c}}}"#);
        // Running totals on every chunk (vLLM's continuous usage stats): the last is the total.
        let running: Vec<String> = (1..=5)
            .map(|c| chunk(&totals(9, c)))
            .chain(["[DONE]".into()])
            .collect();
        assert_eq!(stream_usage(&running).map(|u| u.completion_tokens), Some(5));
        // OpenAI's: `null` until the usage chunk, with no choices.
        let openai = vec![
            chunk("null"),
            chunk("null"),
            format!(r#"{{"choices":[],"usage":{}}}"#, totals(3, 2)),
            "[DONE]".into(),
        ];
        assert_eq!(stream_usage(&openai).map(|u| u.total()), Some(5));
        // None at all, or a stream cut before its usage chunk.
        assert_eq!(stream_usage(&[chunk("null"), chunk("null")]), None);
        // A final event larger than what is kept is read as it passes.
        let big = format!(
            r#"{{"choices":[{{"delta":{{"content":"{}"}}}}],"usage":{}}}"#,
            "y".repeat(KEEP_EVENT),
            totals(4, 4)
        );
        assert_eq!(
            stream_usage(&[chunk("null"), big, "[DONE]".into()]).map(|u| u.total()),
            Some(8)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_stream_shows_its_gaps_before_it_ends() {
        let metrics = crate::metrics::Metrics::new();
        let h = metrics.llm.handles("r", "c");
        let mut m = Meter::new(Instant::now(), Some(&h));
        m.head(
            &ResponseHeader::build(200, None).unwrap(),
            Media::EventStream,
        );
        let chunk = Bytes::from_static(b"data: {}\n\n");
        for _ in 0..30 {
            m.sent(Some(&chunk));
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        // 29 gaps of 100 ms so far: those of the first second or more are in the shared one.
        let seen = h.inter_token.get_sample_count();
        assert!((10..29).contains(&seen), "{seen} gaps shown mid-stream");
        m.finish();
        assert_eq!(h.inter_token.get_sample_count(), 29);
        assert!((h.inter_token.get_sample_sum() - 2.9).abs() < 1e-6);
        assert_eq!(h.ttft.get_sample_count(), 1);
        assert_eq!(h.stream_duration.get_sample_count(), 1);
    }
}
