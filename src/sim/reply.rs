//! The fixed replies of the simulated model server: errors, failures, API-key rejections, and an
//! answer cut part-way through its body.
//!
//! They are the same whatever the request asked for, so they live apart from the request
//! handling in [`super::handler`], which picks one.

use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

use super::answer::{BodyAbort, SimBody};

/// How the simulator answers requests made with one API key (an upstream provider's view of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRule {
    /// Status to answer, e.g. 401, 402, 429, or 400 with `code: "insufficient_quota"`.
    pub status: u16,
    /// `retry-after` seconds to send along (for 429).
    pub retry_after: Option<u32>,
    /// The OpenAI error `code` in the body, e.g. `"insufficient_quota"`.
    pub code: Option<String>,
}

/// The answer to a request made with an API key that has a rule.
pub(crate) fn key_response(rule: &KeyRule) -> Response<SimBody> {
    let status = status_code(rule.status);
    let kind = match status {
        StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "authentication_error",
        _ => "invalid_request_error",
    };
    let mut resp = json_response(
        status,
        &json!({"error": {"message": "simulated API key rejection", "type": kind, "code": rule.code}}),
    );
    if let Some(s) = rule.retry_after {
        if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
            resp.headers_mut().insert(RETRY_AFTER, v);
        }
    }
    resp
}

/// The status numbered `s` (500 for a number that is none).
pub(crate) fn status_code(s: u16) -> StatusCode {
    StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// A status failure (configured, by header or scheduled); 429 and 503 carry `retry-after`
/// (`retry_after`, else `1`).
pub(crate) fn failure_response(s: u16, retry_after: Option<&str>) -> Response<SimBody> {
    let status = status_code(s);
    let mut resp = error_response(
        status,
        &format!("simulated failure: status {}", status.as_u16()),
    );
    if matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) {
        let v = retry_after
            .and_then(|v| HeaderValue::from_str(v).ok())
            .unwrap_or(HeaderValue::from_static("1"));
        resp.headers_mut().insert(RETRY_AFTER, v);
    }
    resp
}

/// An OpenAI-style error: `{"error":{"message":..,"type":..,"code":null}}`.
pub(crate) fn error_response(status: StatusCode, message: &str) -> Response<SimBody> {
    let kind = match status {
        StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
        s if s.is_server_error() => "server_error",
        _ => "invalid_request_error",
    };
    json_response(
        status,
        &json!({"error": {"message": message, "type": kind, "code": null}}),
    )
}

/// A 200 JSON answer whose body stops after the share `after / tokens` of its bytes (at least one
/// byte, never all of them), then aborts the connection: a server that died while sending. The
/// `content-length` announces the whole body, so a client can tell it was cut.
pub(crate) fn cut_json_response(value: &Value, after: usize, tokens: usize) -> Response<SimBody> {
    let full = Bytes::from(value.to_string());
    let len = full.len();
    let at = (len * after / tokens.max(1)).clamp(1, len.saturating_sub(1).max(1));
    let head = Ok(hyper::body::Frame::data(full.slice(..at)));
    let abort = async {
        // Let hyper write the part already produced before the abort (see `stream.rs`).
        tokio::task::yield_now().await;
        Err(BodyAbort)
    };
    let frames = futures_util::stream::once(std::future::ready(head))
        .chain(futures_util::stream::once(abort));
    let mut resp = Response::new(http_body_util::StreamBody::new(frames).boxed_unsync());
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

/// A JSON body with `status`.
pub(crate) fn json_response(status: StatusCode, value: &Value) -> Response<SimBody> {
    let body = Full::new(Bytes::from(value.to_string()))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
