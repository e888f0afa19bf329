//! What one simulated answer is, shared by the plain JSON body ([`super::handler`]) and the SSE
//! body ([`super::stream`]).
//!
//! It sits below both so that the arrows point one way: the handler builds an [`Answer`] and hands
//! it to the stream, and neither reaches into the other.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use serde_json::{json, Value};

/// Body of every simulator response; an error aborts the connection mid-body.
pub(crate) type SimBody = UnsyncBoxBody<Bytes, BodyAbort>;

/// The error a body yields to make hyper abort the connection (`x-sim-fail-after-tokens`).
#[derive(Debug, thiserror::Error)]
#[error("simulated mid-body abort")]
pub(crate) struct BodyAbort;

/// Which completion API a request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Chat,
    Text,
}

/// What every chunk or body of one answer repeats.
#[derive(Debug)]
pub(crate) struct Answer {
    pub kind: Kind,
    /// Index in the full answer of this answer's first token (above 0 when continuing one).
    pub first_token: usize,
    pub id: String,
    pub model: String,
    pub created: u64,
    pub served_by: String,
    pub prompt_tokens: usize,
    pub request_bytes: usize,
    pub request_sha256: String,
    /// A stream sends its usage in a chunk of its own (`usage_when_asked` and the request asked);
    /// `false` with `usage_when_asked` and no ask: no usage at all.
    pub usage_chunk: Option<bool>,
}

impl Answer {
    pub(crate) fn usage(&self, completion_tokens: usize) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": self.prompt_tokens + completion_tokens,
        })
    }
}

/// The text of token `k`; an answer is the concatenation of its tokens.
pub(crate) fn token(k: usize) -> String {
    format!("tok{k} ")
}

/// The whole text of an answer of `tokens` tokens, as a client that got all of it sees it
/// (`tok0 tok1 … tokN-1 `): what a load generator compares an answer against.
pub fn answer_text(tokens: usize) -> String {
    (0..tokens).map(token).collect()
}
