//! The request body, read whole before any try (so that every try can replay it), and what the
//! request path learns from it, each parsed at most once: whether it asks for a stream, and its
//! JSON (for the cache key, and for balancers that look at the prompt).

use bytes::Bytes;
use serde_json::Value;
use std::sync::OnceLock;

/// A request's whole body.
#[derive(Debug, Default)]
pub struct RequestBody {
    bytes: Bytes,
    json: OnceLock<Option<Value>>,
}

impl RequestBody {
    /// The body `bytes`, nothing parsed yet.
    pub fn new(bytes: Bytes) -> Self {
        RequestBody {
            bytes,
            json: OnceLock::new(),
        }
    }

    /// The raw body, as sent upstream.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The body as JSON, if it is JSON (parsed on first use).
    pub fn json(&self) -> Option<&Value> {
        self.json
            .get_or_init(|| {
                if self.bytes.is_empty() {
                    return None;
                }
                serde_json::from_slice(&self.bytes).ok()
            })
            .as_ref()
    }

    /// Does the JSON body ask for `"stream": true`? Uses the JSON when it was parsed already;
    /// otherwise a byte scan decides, and only a body that says `"stream": true` is parsed (with
    /// a parse that reads nothing else).
    pub fn stream(&self) -> bool {
        if let Some(parsed) = self.json.get() {
            return parsed
                .as_ref()
                .and_then(|v| v.get("stream"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
        }
        wants_stream(&self.bytes)
    }
}

/// Does the JSON body ask for `"stream": true`?
pub fn wants_stream(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct StreamFlag {
        #[serde(default)]
        stream: bool,
    }
    // Cheap pre-check: only a `"stream"` followed by `: true` can ask for a stream (most bodies
    // say `"stream": false` or nothing); the parse then confirms it is the top-level key and not
    // text inside a string.
    let ws = |b: &[u8]| {
        b.iter()
            .position(|c| !c.is_ascii_whitespace())
            .unwrap_or(b.len())
    };
    // The finder is built once (making one costs more than searching a body with it); it skips
    // through the body a vector at a time, where comparing every 8-byte window cost thousands of
    // instructions per request.
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"stream\""));
    let says_true = FINDER.find_iter(body).any(|i| {
        let rest = &body[i + 8..];
        let rest = &rest[ws(rest)..];
        rest.first() == Some(&b':') && rest[1 + ws(&rest[1..])..].starts_with(b"true")
    });
    says_true && serde_json::from_slice::<StreamFlag>(body).is_ok_and(|f| f.stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_flag_is_read_from_json() {
        assert!(wants_stream(br#"{"model":"m","stream":true}"#));
        assert!(wants_stream(br#"{ "stream" : true , "x": 1}"#));
        assert!(!wants_stream(br#"{"model":"m","stream":false}"#));
        assert!(!wants_stream(br#"{"model":"m"}"#));
        assert!(!wants_stream(br#"{"content":"\"stream\" is a word"}"#));
        assert!(!wants_stream(b"not json \"stream\""));
        assert!(!wants_stream(b""));
        assert!(wants_stream(b"{\"stream\"\n:\ttrue}"));
        assert!(!wants_stream(br#"{"stream":"true"}"#));
        assert!(!wants_stream(br#"{"stream""#));
        assert!(!wants_stream(br#"{"stream":"#));
    }

    #[test]
    fn parsed_once_and_agrees_with_the_scan() {
        for text in [
            &br#"{"model":"m","stream":true}"#[..],
            br#"{"model":"m","stream":false}"#,
            br#"{"content":"\"stream\": true"}"#,
            b"",
        ] {
            let b = RequestBody::new(Bytes::from_static(text));
            let scanned = b.stream();
            let _ = b.json();
            assert_eq!(b.stream(), scanned, "{:?}", std::str::from_utf8(text));
        }
    }
}
