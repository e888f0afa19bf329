//! Token usage as OpenAI-compatible servers report it: the `usage` object of a non-streaming
//! answer, or of the final chunk of a stream (sent when the request asked for
//! `stream_options.include_usage`, and by some servers always). Read by the token metrics and
//! token budgets.
//!
//! Only the `usage` member is parsed: a scan finds `"usage"` and the object after it is read with
//! serde, so an answer's content is never parsed twice.

use serde::Deserialize;

/// Tokens one answer used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
}

impl Usage {
    /// Both counts added.
    pub fn total(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

/// Two answers' usage added (a resumed stream's two parts), saturating.
impl std::ops::Add for Usage {
    type Output = Usage;

    fn add(self, other: Usage) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens.saturating_add(other.prompt_tokens),
            completion_tokens: self
                .completion_tokens
                .saturating_add(other.completion_tokens),
        }
    }
}

/// The `usage` of a JSON answer body or of one SSE event's data; `None` when it has none (or it
/// is `null`, as in the chunks of a stream before its last).
pub fn find(json: &[u8]) -> Option<Usage> {
    // Built once: making a finder costs more than searching a short answer with it.
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"usage\""));
    for at in FINDER.find_iter(json) {
        let rest = json[at + 7..].trim_ascii_start();
        let Some(value) = rest.strip_prefix(b":") else {
            continue;
        };
        let value = value.trim_ascii_start();
        if value.first() != Some(&b'{') {
            // `null`, or the word inside a string: look further.
            continue;
        }
        let mut de = serde_json::Deserializer::from_slice(value).into_iter::<Usage>();
        if let Some(Ok(u)) = de.next() {
            return Some(u);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_usage_in_answers_and_chunks() {
        let body = br#"{"id":"x","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":31,"completion_tokens":21,"total_tokens":52}}"#;
        assert_eq!(
            find(body),
            Some(Usage {
                prompt_tokens: 31,
                completion_tokens: 21
            })
        );
        assert_eq!(find(br#"{"choices":[],"usage":null}"#), None);
        assert_eq!(
            find(br#"{"choices":[{"delta":{"content":"\"usage\": {"}}]}"#),
            None
        );
        let last = br#"{"choices":[],"usage": {"prompt_tokens": 5, "completion_tokens": 7}}"#;
        assert_eq!(find(last).map(|u| u.total()), Some(12));
        assert_eq!(find(b"not json"), None);
        assert_eq!(find(br#"{"usage":{"prompt_tokens":"many"}}"#), None);
    }
}
