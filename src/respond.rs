//! Answers switchyard writes itself: JSON errors in the OpenAI error shape, route fallbacks, and
//! the SSE event that ends a stream cut after its commit point. Used by the request path and the
//! cache, below both.

use crate::config::Fallback;
use crate::downstream::Downstream;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::Result;
use std::borrow::Cow;

/// A JSON error answer: `{"error":{"message":..,"type":"switchyard_error","code":..},
/// "request_id":..}` with `status`, and `retry-after` when the client should come back later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    pub status: u16,
    /// Machine-readable code, e.g. `no_route`, `upstream_timeout`.
    pub code: &'static str,
    /// What a person reads.
    pub message: Cow<'static, str>,
    /// Seconds for `retry-after`, if any.
    pub retry_after: Option<u32>,
}

impl JsonError {
    /// An error answer without `retry-after`.
    pub fn new(status: u16, code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        JsonError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The same answer with `retry-after: secs`.
    pub fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// Write it, with `x-request-id` and the `more` headers (such as `x-cache-status`).
    pub async fn write(
        &self,
        client: &mut impl Downstream,
        request_id: &str,
        more: &[(&'static str, String)],
    ) -> Result<()> {
        let mut extra = Vec::with_capacity(2 + more.len());
        extra.push(("x-request-id", request_id.to_string()));
        if let Some(s) = self.retry_after {
            extra.push(("retry-after", s.to_string()));
        }
        extra.extend_from_slice(more);
        let body = error_body(self.code, &self.message, request_id);
        write_full(client, self.status, "application/json", body, &extra).await
    }
}

/// Write a complete response with a fixed body.
pub async fn write_full(
    client: &mut impl Downstream,
    status: u16,
    content_type: &str,
    body: Bytes,
    extra: &[(&'static str, String)],
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(4 + extra.len()))?;
    resp.insert_header("content-type", content_type)?;
    resp.insert_header("cache-control", "no-store")?;
    for (k, v) in extra {
        resp.insert_header(*k, v.as_str())?;
    }
    resp.set_content_length(body.len())?;
    client.write_header(Box::new(resp), false).await?;
    client.write_body(Some(body), true).await
}

/// Whole seconds for `retry-after`: rounded up, at least 1.
pub fn retry_after_secs(wait: std::time::Duration) -> u32 {
    wait.as_secs_f64().ceil().max(1.0) as u32
}

/// `{"error":{"message":..,"type":"switchyard_error","code":..},"request_id":..}`
pub fn error_body(code: &str, message: &str, request_id: &str) -> Bytes {
    let v = serde_json::json!({
        "error": {"message": message, "type": "switchyard_error", "code": code},
        "request_id": request_id,
    });
    Bytes::from(v.to_string())
}

/// The route's fallback, shaped for a stream or a plain request, with `more` headers.
pub async fn fallback(
    client: &mut impl Downstream,
    fb: &Fallback,
    stream: bool,
    reason: &str,
    request_id: &str,
    more: &[(&'static str, String)],
) -> Result<()> {
    let mut extra = vec![
        ("x-switchyard-fallback", reason.to_string()),
        ("x-request-id", request_id.to_string()),
    ];
    extra.extend_from_slice(more);
    let (content_type, body) = if stream {
        ("text/event-stream", fb.stream_body.clone())
    } else {
        (fb.content_type.as_str(), fb.body.clone())
    };
    write_full(client, fb.status, content_type, body, &extra).await
}

/// The SSE event that ends a stream whose upstream failed after the first token.
pub fn sse_error_event(message: &str, request_id: &str) -> Bytes {
    let data = serde_json::json!({
        "error": {"message": message, "type": "upstream_error", "code": "stream_interrupted"},
        "request_id": request_id,
    });
    Bytes::from(format!("event: error\ndata: {data}\n\n"))
}

/// Does `content-type` say the body is an SSE stream?
pub fn is_sse(headers: &http::HeaderMap) -> bool {
    crate::sse::is_event_stream(headers)
}
