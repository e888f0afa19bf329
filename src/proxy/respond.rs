//! Answers switchyard writes itself: JSON errors in the OpenAI error shape, and route fallbacks.

use crate::config::Fallback;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

/// Write a complete response with a fixed body.
pub async fn write_full(
    session: &mut Session,
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
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
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

/// A JSON error answer; `retry_after` in seconds where the client should come back later;
/// `more` headers (such as `x-cache-status`).
pub async fn json_error(
    session: &mut Session,
    status: u16,
    code: &str,
    message: &str,
    request_id: &str,
    retry_after: Option<u32>,
    more: &[(&'static str, String)],
) -> Result<()> {
    let mut extra = vec![("x-request-id", request_id.to_string())];
    if let Some(s) = retry_after {
        extra.push(("retry-after", s.to_string()));
    }
    extra.extend_from_slice(more);
    let body = error_body(code, message, request_id);
    write_full(session, status, "application/json", body, &extra).await
}

/// The route's fallback, shaped for a stream or a plain request, with `more` headers.
pub async fn fallback(
    session: &mut Session,
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
    if stream {
        write_full(
            session,
            fb.status,
            "text/event-stream",
            fb.stream_body.clone(),
            &extra,
        )
        .await
    } else {
        write_full(
            session,
            fb.status,
            &fb.content_type,
            fb.body.clone(),
            &extra,
        )
        .await
    }
}

/// The SSE event that ends a stream whose upstream failed after the first token.
pub fn sse_error_event(message: &str, request_id: &str) -> Bytes {
    let data = serde_json::json!({
        "error": {"message": message, "type": "upstream_error", "code": "stream_interrupted"},
        "request_id": request_id,
    });
    Bytes::from(format!("event: error\ndata: {data}\n\n"))
}
