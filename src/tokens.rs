//! Token accounting of one request for the token budgets (`tokens_per_minute`): the estimate
//! reserved before it goes out, the request body that asks a stream for its usage, and the
//! [`Meter`] that reads what the answer used while it is relayed.
//!
//! - **Estimate**: the prompt's text (every string of `messages`, `prompt` and `input`) at four
//!   bytes a token, four tokens per message, plus `max_completion_tokens` or `max_tokens`, else
//!   [`DEFAULT_COMPLETION`].
//! - **Streams**: a stream reports its usage only when asked (`stream_options.include_usage`),
//!   in a last chunk whose `choices` is empty. When the client did not ask, the body sent
//!   upstream asks ([`ask_usage`]) and the relay drops that chunk, so the client gets the stream
//!   it asked for.
//! - **Used**: the answer's `usage` (prompt plus completion tokens); without one, the estimate
//!   of the prompt plus one token per content event of a stream, or four bytes a token of a
//!   JSON answer's text.

use crate::body::RequestBody;
use crate::sse::Event;
use crate::usage::{self, Usage};
use bytes::Bytes;
use serde_json::Value;

/// Completion tokens assumed when a request sets no `max_tokens` (or `max_completion_tokens`).
pub const DEFAULT_COMPLETION: u64 = 256;

/// A JSON answer larger than this is not searched for its `usage`; it is counted by its size.
const MAX_READ: usize = 4 * 1024 * 1024;

/// The tokens of the prompt of a JSON request body (0 when it is not JSON).
pub fn prompt_estimate(body: &RequestBody) -> u64 {
    let Some(v) = body.json() else {
        return (body.len() as u64).div_ceil(4);
    };
    let mut bytes = 0u64;
    let mut messages = 0u64;
    for key in ["messages", "prompt", "input"] {
        if let Some(part) = v.get(key) {
            if let Value::Array(list) = part {
                messages += list.len() as u64;
            }
            bytes += text_bytes(part);
        }
    }
    bytes.div_ceil(4).saturating_add(messages.saturating_mul(4))
}

/// Bytes of every string inside `v`.
fn text_bytes(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.len() as u64,
        Value::Array(a) => a.iter().map(text_bytes).sum(),
        Value::Object(o) => o.values().map(text_bytes).sum(),
        _ => 0,
    }
}

/// The tokens a request is expected to use: its prompt and the completion it allows.
pub fn estimate(body: &RequestBody) -> u64 {
    let completion = body
        .json()
        .and_then(|v| {
            v.get("max_completion_tokens")
                .or_else(|| v.get("max_tokens"))
                .and_then(Value::as_u64)
        })
        .unwrap_or(DEFAULT_COMPLETION);
    prompt_estimate(body).saturating_add(completion)
}

/// The body to send upstream so that a stream reports its usage: `None` when the request is not
/// a JSON object or already asks (`stream_options.include_usage: true`).
pub fn ask_usage(body: &RequestBody) -> Option<Bytes> {
    let Value::Object(map) = body.json()? else {
        return None;
    };
    let asked = map
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if asked {
        return None;
    }
    let mut map = map.clone();
    let options = map
        .entry("stream_options")
        .or_insert_with(|| Value::Object(Default::default()));
    if !options.is_object() {
        *options = Value::Object(Default::default());
    }
    if let Value::Object(o) = options {
        o.insert("include_usage".into(), Value::Bool(true));
    }
    serde_json::to_vec(&Value::Object(map))
        .ok()
        .map(Bytes::from)
}

/// What an answer used, read as it is relayed.
#[derive(Debug, Default)]
pub struct Meter {
    on: bool,
    /// Switchyard asked for the stream's usage: its usage-only chunk is not forwarded.
    drop_usage_chunk: bool,
    prompt: u64,
    usage: Option<Usage>,
    /// Events of a stream that were neither `[DONE]` nor the usage chunk.
    content_events: u64,
    body: Vec<Bytes>,
    body_len: usize,
}

impl Meter {
    /// A meter that reads nothing (no token budget applies).
    pub fn off() -> Meter {
        Meter::default()
    }

    /// A meter for a request whose prompt is estimated at `prompt` tokens; `drop_usage_chunk`
    /// when switchyard asked the stream for its usage.
    pub fn new(prompt: u64, drop_usage_chunk: bool) -> Meter {
        Meter {
            on: true,
            drop_usage_chunk,
            prompt,
            ..Meter::default()
        }
    }

    /// One completed event of a stream; returns whether to forward it.
    pub fn event(&mut self, ev: &Event<'_>) -> bool {
        if !self.on || ev.is_done() {
            return true;
        }
        let Some(u) = usage::find_in_event(&ev.data) else {
            self.content_events += 1;
            return true;
        };
        self.usage = Some(u);
        // Only a chunk that carries nothing but the usage is dropped.
        !(self.drop_usage_chunk && no_choices(&ev.data))
    }

    /// A body chunk of an answer that is not a stream.
    pub fn body(&mut self, chunk: &Bytes) {
        if self.on && self.body_len <= MAX_READ {
            self.body_len += chunk.len();
            self.body.push(chunk.clone());
        } else if self.on {
            self.body_len += chunk.len();
        }
    }

    /// Tokens the answer used.
    pub fn used(&mut self) -> u64 {
        if self.usage.is_none() && !self.body.is_empty() && self.body_len <= MAX_READ {
            let whole = concat(&self.body, self.body_len);
            self.usage = usage::find(&whole);
            if self.usage.is_none() {
                let text = serde_json::from_slice::<Value>(&whole)
                    .ok()
                    .and_then(|v| v.get("choices").map(text_bytes));
                self.content_events = text.unwrap_or(whole.len() as u64).div_ceil(4);
            }
        } else if self.usage.is_none() && self.body_len > MAX_READ {
            self.content_events = (self.body_len as u64).div_ceil(4);
        }
        match self.usage {
            Some(u) => u.total(),
            None => self.prompt.saturating_add(self.content_events),
        }
    }

    /// Did the answer report its usage?
    pub fn reported(&self) -> bool {
        self.usage.is_some()
    }
}

fn concat(chunks: &[Bytes], len: usize) -> Bytes {
    if let [one] = chunks {
        return one.clone();
    }
    let mut buf = bytes::BytesMut::with_capacity(len);
    for c in chunks {
        buf.extend_from_slice(c);
    }
    buf.freeze()
}

/// Is `data` a JSON object whose `choices` is empty or absent?
fn no_choices(data: &[u8]) -> bool {
    serde_json::from_slice::<Value>(data).is_ok_and(|v| {
        v.get("choices")
            .is_none_or(|c| c.as_array().is_some_and(|a| a.is_empty()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::Framer;

    fn body(v: serde_json::Value) -> RequestBody {
        RequestBody::new(Bytes::from(v.to_string()))
    }

    #[test]
    fn estimates_the_prompt_and_the_completion() {
        let b = body(serde_json::json!({
            "model": "m",
            "max_tokens": 100,
            "messages": [{"role": "user", "content": "x".repeat(400)}],
        }));
        // 404 bytes of text ("user" too) and one message: 101 + 4, plus 100.
        assert_eq!(estimate(&b), 205);
        let b = body(serde_json::json!({"prompt": "abcd"}));
        assert_eq!(estimate(&b), 1 + DEFAULT_COMPLETION);
        let b =
            body(serde_json::json!({"messages": [], "max_completion_tokens": 7, "max_tokens": 9}));
        assert_eq!(estimate(&b), 7);
    }

    #[test]
    fn asks_for_usage_only_when_the_client_did_not() {
        let b = body(serde_json::json!({"stream": true, "messages": []}));
        let sent: Value = serde_json::from_slice(&ask_usage(&b).unwrap()).unwrap();
        assert_eq!(sent["stream_options"]["include_usage"], true);
        assert_eq!(sent["stream"], true);
        let asked =
            body(serde_json::json!({"stream": true, "stream_options": {"include_usage": true}}));
        assert!(ask_usage(&asked).is_none());
        assert!(ask_usage(&RequestBody::new(Bytes::from_static(b"not json"))).is_none());
    }

    #[test]
    fn a_stream_is_settled_from_its_usage_chunk_which_is_dropped_when_asked_for() {
        let stream = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n\
                      data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3}}\n\n\
                      data: [DONE]\n\n";
        let mut m = Meter::new(50, true);
        let mut f = Framer::new();
        let out = f.push_with(Bytes::from(stream), |ev| m.event(ev)).unwrap();
        assert!(!String::from_utf8_lossy(&out).contains("prompt_tokens"));
        assert!(String::from_utf8_lossy(&out).ends_with("data: [DONE]\n\n"));
        assert_eq!(m.used(), 12);
        // The client asked: the chunk stays.
        let mut m = Meter::new(50, false);
        let out = Framer::new()
            .push_with(Bytes::from(stream), |ev| m.event(ev))
            .unwrap();
        assert!(String::from_utf8_lossy(&out).contains("prompt_tokens"));
    }

    #[test]
    fn without_usage_the_chunks_are_counted() {
        let mut m = Meter::new(50, true);
        let mut f = Framer::new();
        f.push_with(
            Bytes::from_static(
                b"data: {\"choices\":[1]}\n\ndata: {\"choices\":[2]}\n\ndata: [DONE]\n\n",
            ),
            |ev| m.event(ev),
        );
        assert!(!m.reported());
        assert_eq!(m.used(), 52);
        let mut m = Meter::new(10, false);
        m.body(&Bytes::from_static(
            br#"{"choices":[{"message":{"role":"assistant","content":"12345678"}}]}"#,
        ));
        assert_eq!(m.used(), 10 + 5);
        let mut m = Meter::new(10, false);
        m.body(&Bytes::from_static(
            br#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#,
        ));
        assert_eq!(m.used(), 3);
    }
}
