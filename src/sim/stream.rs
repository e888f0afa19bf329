//! The server-sent-events body of a streaming answer.
//!
//! Each event is its own body frame, released on a fixed schedule (`ttft`, then one token per `token_delay`),
//! so a client or proxy sees tokens spread in time exactly as from a real model. The schedule is computed from
//! the start instant rather than from the previous frame, so slow polling does not stretch the stream.
//! The body can also stop early: abort the connection (an `Err` frame), stall forever, or send an
//! error event (and `[DONE]`, as vLLM does when its engine fails mid-generation).

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::answer::{token, Answer, BodyAbort, Kind, SimBody};
use super::knobs::Knobs;
use super::stats::ActiveGuard;

/// Cap for a schedule that would overflow an `Instant`: a year is "never" for a simulator.
const FAR_FUTURE: Duration = Duration::from_secs(365 * 24 * 3600);

/// Where a stream stops early.
#[derive(Debug, Clone, Copy)]
enum Cut {
    Abort(usize),
    Hang(usize),
    Error(usize),
}

/// The next thing the stream emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Token(usize),
    Usage,
    Done,
    End,
}

struct SseState {
    answer: Answer,
    start: Instant,
    ttft: Duration,
    token_delay: Duration,
    tokens: usize,
    cut: Option<Cut>,
    next: Next,
    /// Keeps the request counted as in progress until the body ends or is dropped.
    guard: ActiveGuard,
}

/// Builds the streaming body of `answer`; headers can be sent before the first frame is due.
pub(crate) fn sse_body(answer: Answer, knobs: &Knobs, guard: ActiveGuard) -> SimBody {
    // Of several cuts, the earliest wins; on a tie aborting is the most useful behaviour to
    // observe, then the error event.
    let cut = [
        knobs.fail_after_tokens.map(Cut::Abort),
        knobs.error_after_tokens.map(Cut::Error),
        knobs.hang_after_tokens.map(Cut::Hang),
    ]
    .into_iter()
    .flatten()
    .min_by_key(|c| match *c {
        Cut::Abort(n) => (n, 0),
        Cut::Error(n) => (n, 1),
        Cut::Hang(n) => (n, 2),
    });
    let state = SseState {
        answer,
        start: Instant::now(),
        ttft: knobs.ttft,
        token_delay: knobs.token_delay,
        tokens: knobs.tokens,
        cut,
        next: Next::Token(0),
        guard,
    };
    let frames = futures_util::stream::unfold(state, |mut st| async move {
        let item = st.step().await?;
        Some((item.map(Frame::data), st))
    });
    StreamBody::new(frames).boxed_unsync()
}

impl SseState {
    /// When token `k` is due (the final chunk shares the last token's time).
    fn due(&self, k: usize) -> Instant {
        let steps = u32::try_from(k.min(self.tokens.saturating_sub(1))).unwrap_or(u32::MAX);
        let offset = self
            .ttft
            .saturating_add(self.token_delay.saturating_mul(steps));
        self.start
            .checked_add(offset)
            .unwrap_or_else(|| Instant::now() + FAR_FUTURE)
    }

    async fn step(&mut self) -> Option<Result<Bytes, BodyAbort>> {
        match self.next {
            Next::End => None,
            Next::Usage => {
                self.next = Next::Done;
                let mut chunk = self.chunk(Value::Null);
                if let Value::Object(map) = &mut chunk {
                    map.insert("choices".into(), json!([]));
                    map.insert("usage".into(), self.answer.usage(self.tokens));
                }
                Some(Ok(event(&chunk)))
            }
            Next::Done => {
                self.next = Next::End;
                self.guard.finish();
                Some(Ok(Bytes::from_static(b"data: [DONE]\n\n")))
            }
            Next::Token(k) => {
                tokio::time::sleep_until(self.due(k)).await;
                match self.cut {
                    Some(Cut::Abort(n)) if k >= n.min(self.tokens) => {
                        // hyper buffers frames that are ready back to back and drops that buffer when the body
                        // fails; returning `Pending` once makes it flush the tokens already produced first.
                        tokio::task::yield_now().await;
                        self.next = Next::End;
                        self.guard.finish();
                        return Some(Err(BodyAbort));
                    }
                    Some(Cut::Hang(n)) if k >= n.min(self.tokens) => {
                        let never: Infallible = std::future::pending().await;
                        match never {}
                    }
                    Some(Cut::Error(n)) if k >= n.min(self.tokens) => {
                        self.next = Next::Done;
                        let e = json!({"error": {"message": "simulated engine failure", "type": "server_error", "code": null}});
                        return Some(Ok(event(&e)));
                    }
                    _ => {}
                }
                if k < self.tokens {
                    self.next = Next::Token(k + 1);
                    Some(Ok(event(&self.token_chunk(k))))
                } else {
                    self.next = match self.answer.usage_chunk {
                        Some(true) => Next::Usage,
                        _ => Next::Done,
                    };
                    Some(Ok(event(&self.final_chunk())))
                }
            }
        }
    }

    /// The chunk of this answer's `k`-th token (token `first_token + k` of the full answer).
    fn token_chunk(&self, k: usize) -> Value {
        let text = token(self.answer.first_token + k);
        let choice = match self.answer.kind {
            Kind::Chat if k == 0 => {
                json!({"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": null})
            }
            Kind::Chat => {
                json!({"index": 0, "delta": {"content": text}, "finish_reason": null})
            }
            Kind::Text => json!({"index": 0, "text": text, "finish_reason": null}),
        };
        self.chunk(choice)
    }

    fn final_chunk(&self) -> Value {
        let choice = match self.answer.kind {
            Kind::Chat => json!({"index": 0, "delta": {}, "finish_reason": "stop"}),
            Kind::Text => json!({"index": 0, "text": "", "finish_reason": "stop"}),
        };
        let mut chunk = self.chunk(choice);
        if let Value::Object(map) = &mut chunk {
            let usage = match self.answer.usage_chunk {
                None => self.answer.usage(self.tokens),
                Some(_) => Value::Null,
            };
            map.insert("usage".into(), usage);
            map.insert("request_bytes".into(), self.answer.request_bytes.into());
            map.insert(
                "request_sha256".into(),
                self.answer.request_sha256.clone().into(),
            );
        }
        chunk
    }

    fn chunk(&self, choice: Value) -> Value {
        let a = &self.answer;
        let object = match a.kind {
            Kind::Chat => "chat.completion.chunk",
            Kind::Text => "text_completion",
        };
        json!({
            "id": a.id,
            "object": object,
            "created": a.created,
            "model": a.model,
            "served_by": a.served_by,
            "choices": [choice],
        })
    }
}

fn event(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}
