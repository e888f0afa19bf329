//! The continuation request: the original body, conditioned on the text already sent.
//!
//! - chat completions: the text as a final `assistant` message (appended to it when the client
//!   already asked to continue one), with `"continue_final_message": true` and
//!   `"add_generation_prompt": false`, which vLLM and SGLang accept;
//! - completions: the text appended to `prompt`;
//! - `max_tokens` and `max_completion_tokens` reduced by the tokens already sent.
//!
//! Everything else (model, sampling parameters, tools, stream options) is sent as the client
//! wrote it.

use super::transcript::{Api, Transcript};
use bytes::Bytes;
use serde_json::{json, Value};

/// Can this request be continued, and through which API? Chat needs a `messages` array,
/// completions one `prompt` string; a request for several choices (`n`, `best_of`) or one that
/// echoes its prompt cannot be.
pub fn api_of(body: &Value) -> Option<Api> {
    let more_than_one = |k: &str| body.get(k).and_then(Value::as_u64).is_some_and(|n| n > 1);
    if more_than_one("n") || more_than_one("best_of") || body["echo"] == true {
        return None;
    }
    if body.get("messages").and_then(Value::as_array).is_some() {
        return Some(Api::Chat);
    }
    match &body["prompt"] {
        Value::String(_) => Some(Api::Completions),
        Value::Array(a) if a.len() == 1 && a[0].is_string() => Some(Api::Completions),
        _ => None,
    }
}

/// What to ask the next peer.
#[derive(Debug, PartialEq)]
pub enum Next {
    /// Send this body.
    Body(Bytes),
    /// The token limit is used up: the answer is whole as it is.
    Finished,
}

/// The continuation of `original` (whose JSON is `body`) after what `t` has sent.
pub fn continuation(original: &Bytes, body: &Value, t: &Transcript) -> Next {
    let sent = t.sent_tokens();
    let mut v = body.clone();
    for key in ["max_tokens", "max_completion_tokens"] {
        if let Some(max) = v.get(key).and_then(Value::as_u64) {
            match max.checked_sub(sent).filter(|left| *left > 0) {
                Some(left) => v[key] = left.into(),
                None => return Next::Finished,
            }
        }
    }
    if t.text().is_empty() {
        // Nothing but a role was sent: the request as it was is its own continuation.
        return Next::Body(original.clone());
    }
    match t.api() {
        Api::Chat => {
            let prefilled = v["continue_final_message"] == true;
            if let Some(messages) = v.get_mut("messages").and_then(Value::as_array_mut) {
                let last = messages
                    .last_mut()
                    .filter(|m| prefilled && m["role"] == "assistant");
                match last.and_then(|m| m.get_mut("content")) {
                    Some(Value::String(s)) => s.push_str(t.text()),
                    _ => messages.push(json!({"role": "assistant", "content": t.text()})),
                }
            }
            v["continue_final_message"] = true.into();
            v["add_generation_prompt"] = false.into();
        }
        Api::Completions => match &mut v["prompt"] {
            Value::String(p) => p.push_str(t.text()),
            Value::Array(a) => {
                if let Some(Value::String(p)) = a.first_mut() {
                    p.push_str(t.text());
                }
            }
            _ => {}
        },
    }
    Next::Body(Bytes::from(v.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::parse;

    fn sent(api: Api, texts: &[&str]) -> Transcript {
        let mut t = Transcript::new(api);
        for text in texts {
            let c = match api {
                Api::Chat => {
                    json!({"id": "x", "choices": [{"index": 0, "delta": {"content": text}}]})
                }
                Api::Completions => json!({"id": "x", "choices": [{"index": 0, "text": text}]}),
            };
            let raw = format!("data: {c}\n\n");
            t.observe(&parse(raw.as_bytes()).unwrap());
        }
        t
    }

    fn next(body: &Value, t: &Transcript) -> Value {
        let original = Bytes::from(body.to_string());
        match continuation(&original, body, t) {
            Next::Body(b) => serde_json::from_slice(&b).unwrap(),
            Next::Finished => panic!("finished"),
        }
    }

    #[test]
    fn chat_continues_a_final_assistant_message() {
        let body = json!({"model": "m", "stream": true, "max_tokens": 10, "temperature": 0.7,
                          "messages": [{"role": "user", "content": "hi"}]});
        let v = next(&body, &sent(Api::Chat, &["Hel", "lo"]));
        assert_eq!(
            v["messages"][1],
            json!({"role": "assistant", "content": "Hello"})
        );
        assert_eq!(v["continue_final_message"], true);
        assert_eq!(v["add_generation_prompt"], false);
        assert_eq!(
            (v["max_tokens"].as_u64(), v["temperature"].as_f64()),
            (Some(8), Some(0.7))
        );
        // A client that prefilled the answer itself: the text goes on after its prefill.
        let mut prefilled = body.clone();
        prefilled["messages"]
            .as_array_mut()
            .unwrap()
            .push(json!({"role": "assistant", "content": "Sure: "}));
        prefilled["continue_final_message"] = json!(true);
        let v = next(&prefilled, &sent(Api::Chat, &["yes"]));
        assert_eq!(v["messages"].as_array().unwrap().len(), 2);
        assert_eq!(v["messages"][1]["content"], "Sure: yes");
    }

    #[test]
    fn completions_append_to_the_prompt_and_limits_run_out() {
        let body = json!({"prompt": ["Once"], "max_completion_tokens": 3});
        let v = next(&body, &sent(Api::Completions, &[" upon", " a"]));
        assert_eq!(v["prompt"], json!(["Once upon a"]));
        assert_eq!(v["max_completion_tokens"], 1);
        let t = sent(Api::Completions, &[" upon", " a", " time"]);
        let original = Bytes::from(body.to_string());
        assert_eq!(continuation(&original, &body, &t), Next::Finished);
        // Nothing sent yet: the original bytes go as they were.
        let t = Transcript::new(Api::Completions);
        assert_eq!(
            continuation(&original, &body, &t),
            Next::Body(original.clone())
        );
    }

    #[test]
    fn which_requests_can_be_continued() {
        assert_eq!(api_of(&json!({"messages": []})), Some(Api::Chat));
        assert_eq!(api_of(&json!({"prompt": "x"})), Some(Api::Completions));
        assert_eq!(api_of(&json!({"messages": [], "n": 2})), None);
        assert_eq!(api_of(&json!({"prompt": "x", "echo": true})), None);
        assert_eq!(api_of(&json!({"prompt": [1, 2, 3]})), None);
        assert_eq!(api_of(&json!({"input": "x"})), None);
    }
}
