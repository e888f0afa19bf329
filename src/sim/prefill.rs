//! Which tokens of its full answer a request gets.
//!
//! Like vLLM and SGLang, the simulator honours `max_tokens` (or `max_completion_tokens`) and
//! continues a partial answer: a chat request with `"continue_final_message": true` whose last
//! message is an `assistant` message holding the first k tokens of the answer
//! (`tok0 tok1 … tok(k-1) `) is answered from token k on, so the partial text and the answer
//! together are the full answer. A text completion whose `prompt` ends with the first k tokens of
//! the answer is continued alike. This is what lets a balancer's resumed stream be checked
//! against the full answer.

use serde_json::Value;

use super::answer::{token, Kind};

/// Which tokens of a full answer of `full` tokens a request gets: the index of its first token
/// (the tokens a continued `assistant` message already holds) and how many, within `max_tokens`.
pub(crate) fn extent(json: &Value, kind: Kind, full: usize) -> (usize, usize) {
    // Whole tokens `tok0 tok1 …` at the start of `text`, and whether they are all of it.
    let prefix = |text: &str| {
        let (mut k, mut rest) = (0, text);
        while let Some(r) = rest.strip_prefix(token(k).as_str()) {
            (k, rest) = (k + 1, r);
        }
        (k, rest.is_empty())
    };
    let first = match kind {
        Kind::Chat => (json["continue_final_message"] == true)
            .then(|| json["messages"].as_array()?.last())
            .flatten()
            .filter(|m| m["role"] == "assistant")
            .and_then(|m| m["content"].as_str())
            .map_or(0, |text| prefix(text).0),
        Kind::Text => json["prompt"].as_str().map_or(0, |p| {
            let start = p.rfind(token(0).as_str());
            match start.map(|i| prefix(&p[i..])) {
                Some((k, true)) => k,
                _ => 0,
            }
        }),
    };
    let max = (json.get("max_tokens"))
        .or_else(|| json.get("max_completion_tokens"))
        .and_then(Value::as_u64)
        .map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX));
    (first, full.saturating_sub(first).min(max))
}
