//! What a committed stream has told the client, read from its events as the relay forwards them:
//! the text sent (chat: `choices[0].delta.content`; completions: `choices[0].text`), the first
//! stream's `id`, `created` and `model`, the tokens sent, `usage` when a chunk carries it, and
//! whether the answer already finished. From it the continuation request is built, and each
//! chunk of the continuation is rewritten so the client reads one stream: the first stream's
//! identity, no second role delta, `usage` summed over the streams.
//!
//! Only routes with `resume` pay for this (each event's JSON is parsed once); elsewhere the relay
//! parses nothing.

use crate::sse::Event;
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::Value;

/// The completion API of a request, by the shape of its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `messages`: chat completions.
    Chat,
    /// `prompt`: text completions.
    Completions,
}

/// Token counts of `usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Usage {
    prompt: u64,
    completion: u64,
}

/// The stream the client has read so far, across the first stream and its continuations.
#[derive(Debug)]
pub struct Transcript {
    api: Api,
    /// The text sent so far.
    text: String,
    id: Option<Value>,
    created: Option<Value>,
    model: Option<Value>,
    /// Usage of the streams before the current one, summed.
    base: Usage,
    /// Chunks with text in the current stream.
    chunks: u64,
    /// The last `usage` the current stream reported (its own numbers).
    usage: Option<Usage>,
    /// A chunk with a `finish_reason` was sent: the answer is whole.
    finished: bool,
    /// Nothing seen so far rules a continuation out (a second choice, a tool call, reasoning).
    resumable: bool,
    /// The current stream is a continuation: its chunks are rewritten.
    continuing: bool,
}

impl Transcript {
    /// An empty transcript of a request to `api`.
    pub fn new(api: Api) -> Transcript {
        Transcript {
            api,
            text: String::new(),
            id: None,
            created: None,
            model: None,
            base: Usage::default(),
            chunks: 0,
            usage: None,
            finished: false,
            resumable: true,
            continuing: false,
        }
    }

    pub fn api(&self) -> Api {
        self.api
    }

    /// The text sent so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Can the stream still be continued?
    pub fn resumable(&self) -> bool {
        self.resumable
    }

    /// Did the answer finish (a `finish_reason` was sent)? Then nothing is left to continue.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Completion tokens sent so far: from `usage` where a stream reported it, else one per chunk
    /// with text (vLLM and SGLang send a chunk per decoding step).
    pub fn sent_tokens(&self) -> u64 {
        self.base.completion + self.current_completion()
    }

    fn current_completion(&self) -> u64 {
        self.usage.map_or(0, |u| u.completion).max(self.chunks)
    }

    /// An event of the first stream, as it goes to the client.
    pub fn observe(&mut self, ev: &Event<'_>) {
        if !self.resumable || ev.is_done() {
            return;
        }
        let Ok(v) = serde_json::from_slice::<Value>(&ev.data) else {
            return;
        };
        if self.id.is_none() && v.get("id").is_some() {
            self.id = v.get("id").cloned();
            self.created = v.get("created").cloned();
            self.model = v.get("model").cloned();
        }
        if let Some(u) = usage_of(&v) {
            self.usage = Some(u);
        }
        self.note(&v);
    }

    /// A continuation starts: what the current stream sent joins the base.
    pub fn start_continuation(&mut self) {
        self.base.prompt += self.usage.map_or(0, |u| u.prompt);
        self.base.completion += self.current_completion();
        self.chunks = 0;
        self.usage = None;
        self.continuing = true;
    }

    /// An event of a continuation, rewritten as the client must see it (`None`: dropped).
    pub fn rewrite(&mut self, ev: &Event<'_>) -> Option<Bytes> {
        debug_assert!(self.continuing);
        if ev.is_done() {
            return Some(Bytes::from_static(b"data: [DONE]\n\n"));
        }
        let mut v = match serde_json::from_slice::<Value>(&ev.data) {
            Ok(v @ Value::Object(_)) => v,
            _ => return Some(frame(ev.kind, &ev.data)),
        };
        let own = usage_of(&v);
        if let Value::Object(chunk) = &mut v {
            for (key, first) in [
                ("id", &self.id),
                ("created", &self.created),
                ("model", &self.model),
            ] {
                if let Some(first) = first {
                    chunk.insert(key.into(), first.clone());
                }
            }
        }
        if self.api == Api::Chat && drop_role(&mut v) {
            return None;
        }
        self.note(&v);
        if let Some(own) = own {
            self.usage = Some(own);
            let (p, c) = (
                own.prompt + self.base.prompt,
                own.completion + self.base.completion,
            );
            if let Some(u) = v.get_mut("usage").and_then(Value::as_object_mut) {
                u.insert("prompt_tokens".into(), p.into());
                u.insert("completion_tokens".into(), c.into());
                u.insert("total_tokens".into(), (p + c).into());
            }
        }
        Some(frame(ev.kind, v.to_string().as_bytes()))
    }

    /// Text, end and resumability from one chunk (`usage` is the caller's).
    fn note(&mut self, v: &Value) {
        let Some(choices) = v.get("choices").and_then(Value::as_array) else {
            return;
        };
        let Some(c) = choices.first() else { return };
        if choices.len() > 1
            || c.get("index")
                .and_then(Value::as_u64)
                .is_some_and(|i| i != 0)
        {
            self.resumable = false;
            return;
        }
        let piece = match self.api {
            Api::Chat => {
                let d = &c["delta"];
                let set = |k: &str| !d[k].is_null() && d[k] != "";
                // A tool call or a reasoning trace cannot be carried by a final assistant text.
                if [
                    "tool_calls",
                    "function_call",
                    "reasoning_content",
                    "reasoning",
                ]
                .into_iter()
                .any(set)
                {
                    self.resumable = false;
                }
                d["content"].as_str()
            }
            Api::Completions => c["text"].as_str(),
        };
        if let Some(p) = piece.filter(|p| !p.is_empty()) {
            self.text.push_str(p);
            self.chunks += 1;
        }
        if !c["finish_reason"].is_null() {
            self.finished = true;
        }
    }
}

/// The `usage` object of a chunk, if it has one.
fn usage_of(v: &Value) -> Option<Usage> {
    let u = v.get("usage")?.as_object()?;
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    Some(Usage {
        prompt: n("prompt_tokens"),
        completion: n("completion_tokens"),
    })
}

/// Remove the role from a continuation's delta; `true` when nothing else was in that chunk (the
/// role-only first delta, which the client already had from the first stream).
fn drop_role(v: &mut Value) -> bool {
    let Some(c) = v.pointer_mut("/choices/0") else {
        return false;
    };
    let finishing = !c["finish_reason"].is_null();
    let Some(delta) = c.get_mut("delta").and_then(Value::as_object_mut) else {
        return false;
    };
    if delta.remove("role").is_none() {
        return false;
    }
    let empty = delta.values().all(|x| x.is_null() || x == "");
    let usage = v.get("usage").is_some_and(|u| !u.is_null());
    empty && !finishing && !usage
}

/// One SSE event of `kind` carrying `data` (one `data:` line per line of it).
fn frame(kind: &[u8], data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(data.len() + 16);
    if kind != b"message" {
        b.put_slice(b"event: ");
        b.put_slice(kind);
        b.put_u8(b'\n');
    }
    for line in data.split(|c| *c == b'\n') {
        b.put_slice(b"data: ");
        b.put_slice(line);
        b.put_u8(b'\n');
    }
    b.put_u8(b'\n');
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::parse;
    use serde_json::json;

    fn ev(v: &Value) -> String {
        format!("data: {v}\n\n")
    }

    fn feed(t: &mut Transcript, chunks: &[Value]) {
        for c in chunks {
            let raw = ev(c);
            t.observe(&parse(raw.as_bytes()).unwrap());
        }
    }

    fn rewrite(t: &mut Transcript, c: &Value) -> Option<Value> {
        let raw = ev(c);
        let out = t.rewrite(&parse(raw.as_bytes()).unwrap())?;
        let text = std::str::from_utf8(&out).unwrap();
        Some(serde_json::from_str(text.strip_prefix("data: ").unwrap().trim()).unwrap())
    }

    fn chat(id: &str, delta: Value, finish: Value) -> Value {
        json!({"id": id, "created": 7, "model": "m", "object": "chat.completion.chunk",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    }

    #[test]
    fn the_text_sent_and_the_first_identity_are_kept() {
        let mut t = Transcript::new(Api::Chat);
        feed(
            &mut t,
            &[
                chat(
                    "a",
                    json!({"role": "assistant", "content": ""}),
                    Value::Null,
                ),
                chat("a", json!({"content": "Hel"}), Value::Null),
                chat("a", json!({"content": "lo"}), Value::Null),
            ],
        );
        assert_eq!(
            (t.text(), t.sent_tokens(), t.finished()),
            ("Hello", 2, false)
        );
        t.start_continuation();
        // The role-only first delta is dropped; a role with text loses the role only.
        let role = chat(
            "b",
            json!({"role": "assistant", "content": ""}),
            Value::Null,
        );
        assert_eq!(rewrite(&mut t, &role), None);
        let mixed = chat(
            "b",
            json!({"role": "assistant", "content": " wor"}),
            Value::Null,
        );
        let out = rewrite(&mut t, &mixed).unwrap();
        assert_eq!(out["id"], "a");
        assert_eq!(out["choices"][0]["delta"], json!({"content": " wor"}));
        let mut last = chat("b", json!({}), json!("stop"));
        last["usage"] = json!({"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15});
        let out = rewrite(&mut t, &last).unwrap();
        assert_eq!(
            out["usage"],
            json!({"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17})
        );
        assert!(t.finished());
        assert_eq!(t.text(), "Hello wor");
    }

    #[test]
    fn what_cannot_be_continued_is_noticed() {
        let mut t = Transcript::new(Api::Chat);
        let call = json!({"tool_calls": [{"index": 0, "function": {"name": "f"}}]});
        feed(&mut t, &[chat("a", call, Value::Null)]);
        assert!(!t.resumable());
        let mut t = Transcript::new(Api::Chat);
        let two =
            json!({"id": "a", "choices": [{"index": 0, "delta": {}}, {"index": 1, "delta": {}}]});
        feed(&mut t, &[two]);
        assert!(!t.resumable());
        let mut t = Transcript::new(Api::Completions);
        feed(
            &mut t,
            &[
                json!({"id": "c", "choices": [{"index": 0, "text": "x", "finish_reason": null}],
                     "usage": {"prompt_tokens": 4, "completion_tokens": 3}}),
            ],
        );
        assert!(t.resumable());
        assert_eq!(
            (t.text(), t.sent_tokens()),
            ("x", 3),
            "usage counts when reported"
        );
    }
}
