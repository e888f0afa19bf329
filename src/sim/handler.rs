//! Request routing and the non-streaming answers of the simulated model server.
//!
//! The answers mimic the OpenAI wire format closely enough for a load balancer to treat them as real, and add
//! what a test needs to check the balancer's work: which instance answered (`served_by`, `x-sim-instance`) and
//! exactly which request bytes arrived (`request_bytes`, `request_sha256`). Which tokens of the
//! full answer a request gets (`max_tokens`, a continued answer) is `prefill`'s business.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::answer::{token, Answer, Kind, SimBody};
use super::config::{Failure, SimConfig};
use super::knobs::{header, Knobs};
use super::prefill;
use super::stats::SimStats;
use super::stream;

/// Why a request gets no response at all; hyper closes (HTTP/1.1) or resets (HTTP/2) the connection or stream.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NoResponse {
    /// The configured or requested `reset` failure.
    #[error("simulated connection reset")]
    SimulatedReset,
    /// The request body could not be read; the client is gone or broke the protocol.
    #[error("reading request body")]
    ReadBody(#[source] hyper::Error),
}

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

/// State shared by every connection of one simulated server.
#[derive(Debug)]
pub(crate) struct Shared {
    pub cfg: SimConfig,
    pub instance: HeaderValue,
    pub failure: AtomicU32,
    pub health_status: AtomicU16,
    pub stats: Arc<SimStats>,
    /// Rules by API key (the bearer token of `authorization`); keys without a rule are accepted.
    pub key_rules: std::sync::Mutex<std::collections::HashMap<String, KeyRule>>,
    /// Model requests seen per API key.
    pub key_hits: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

impl Shared {
    /// `cfg.name` must already be resolved and `instance` must be its header form.
    pub(crate) fn new(cfg: SimConfig, instance: HeaderValue) -> Shared {
        Shared {
            failure: AtomicU32::new(Failure::encode(cfg.fail)),
            health_status: AtomicU16::new(cfg.health_status),
            stats: Arc::new(SimStats::default()),
            key_rules: Default::default(),
            key_hits: Default::default(),
            instance,
            cfg,
        }
    }
}

/// Entry point of the hyper service.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<SimBody>, NoResponse> {
    let echo = req
        .headers()
        .get(header::ECHO_HEADER)
        .and_then(|name| req.headers().get(name.to_str().ok()?))
        .cloned();
    let mut resp = match (req.method(), req.uri().path()) {
        (&Method::POST, "/v1/chat/completions") => model_request(&shared, req, Kind::Chat).await?,
        (&Method::POST, "/v1/completions") => model_request(&shared, req, Kind::Text).await?,
        (&Method::GET, "/health") => health(&shared),
        (&Method::GET, "/v1/models") => json_response(StatusCode::OK, &models()),
        (method, path) => error_response(
            StatusCode::NOT_FOUND,
            &format!("no route for {method} {path}"),
        ),
    };
    resp.headers_mut()
        .insert(header::INSTANCE, shared.instance.clone());
    if let Some(v) = echo {
        resp.headers_mut().insert(header::ECHO, v);
    }
    Ok(resp)
}

async fn model_request(
    shared: &Shared,
    req: Request<hyper::body::Incoming>,
    kind: Kind,
) -> Result<Response<SimBody>, NoResponse> {
    let (seq, mut guard) = shared.stats.model_request();
    let configured = Failure::decode(shared.failure.load(Ordering::Relaxed));
    let mut knobs = match Knobs::from_headers(req.headers(), &shared.cfg, configured) {
        Ok(k) => k,
        Err(e) => {
            guard.finish();
            return Ok(error_response(StatusCode::BAD_REQUEST, &e.to_string()));
        }
    };
    let parts_headers = req.headers().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(NoResponse::ReadBody)?
        .to_bytes();

    if let Some(key) = api_key(&parts_headers) {
        *shared
            .key_hits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default() += 1;
        let rule = shared
            .key_rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        if let Some(rule) = rule {
            guard.finish();
            return Ok(key_response(&rule));
        }
    }

    let failure = match knobs.header_failure {
        Some(f) => f,
        None => configured.filter(|_| seq % shared.cfg.fail_every.max(1) == 0),
    };
    // `x-sim-fail-first: N`: only this server's first N model requests fail.
    let failure = failure.filter(|_| knobs.fail_first.is_none_or(|n| seq <= n));
    match failure {
        None => {}
        Some(Failure::Reset) => {
            guard.finish();
            return Err(NoResponse::SimulatedReset);
        }
        Some(Failure::Status(s)) => {
            guard.finish();
            return Ok(failure_response(s, knobs.retry_after.as_deref()));
        }
        Some(Failure::Hang) => {
            // The future is dropped when the client goes away (hyper notices EOF) or the server shuts down.
            let never: Infallible = std::future::pending().await;
            match never {}
        }
    }

    let json: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            guard.finish();
            return Ok(error_response(
                StatusCode::BAD_REQUEST,
                "request body must be a JSON object",
            ));
        }
        Err(e) => {
            guard.finish();
            return Ok(error_response(
                StatusCode::BAD_REQUEST,
                &format!("invalid JSON body: {e}"),
            ));
        }
    };
    let prefix = match kind {
        Kind::Chat => "chatcmpl",
        Kind::Text => "cmpl",
    };
    let (first_token, tokens) = prefill::extent(&json, kind, knobs.tokens);
    knobs.tokens = tokens;
    let answer = Answer {
        kind,
        first_token,
        id: format!("{prefix}-{}-{seq}", shared.cfg.name),
        model: json
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("sim")
            .to_owned(),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        served_by: shared.cfg.name.clone(),
        prompt_tokens: prompt_tokens(&json),
        request_bytes: body.len(),
        request_sha256: hex(&Sha256::digest(&body)),
    };

    if json.get("stream").and_then(Value::as_bool).unwrap_or(false) {
        let mut resp = Response::new(stream::sse_body(answer, &knobs, guard));
        let headers = resp.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert(
            http::header::CACHE_CONTROL,
            knobs
                .cache_control
                .unwrap_or(HeaderValue::from_static("no-cache")),
        );
        return Ok(resp);
    }

    let steps = u32::try_from(knobs.tokens).unwrap_or(u32::MAX);
    tokio::time::sleep(
        knobs
            .ttft
            .saturating_add(knobs.token_delay.saturating_mul(steps)),
    )
    .await;
    guard.finish();
    drop(guard);
    let mut resp = json_response(StatusCode::OK, &complete_body(&answer, knobs.tokens));
    if let Some(cc) = knobs.cache_control {
        resp.headers_mut().insert(http::header::CACHE_CONTROL, cc);
    }
    Ok(resp)
}

fn complete_body(a: &Answer, tokens: usize) -> Value {
    let text: String = (a.first_token..a.first_token + tokens).map(token).collect();
    let (object, choice) = match a.kind {
        Kind::Chat => (
            "chat.completion",
            json!({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}),
        ),
        Kind::Text => (
            "text_completion",
            json!({"index": 0, "text": text, "finish_reason": "stop"}),
        ),
    };
    json!({
        "id": a.id,
        "object": object,
        "created": a.created,
        "model": a.model,
        "choices": [choice],
        "usage": a.usage(tokens),
        "served_by": a.served_by,
        "request_bytes": a.request_bytes,
        "request_sha256": a.request_sha256,
    })
}

/// A rough prompt size: whitespace-separated words of every message and prompt string.
fn prompt_tokens(json: &Value) -> usize {
    fn words(v: &Value) -> usize {
        match v {
            Value::String(s) => s.split_whitespace().count(),
            Value::Array(parts) => parts
                .iter()
                .map(|p| words(p.get("text").unwrap_or(p)))
                .sum(),
            _ => 0,
        }
    }
    let messages = json
        .get("messages")
        .and_then(Value::as_array)
        .map_or(0, |ms| {
            ms.iter().map(|m| m.get("content").map_or(0, words)).sum()
        });
    messages + json.get("prompt").map_or(0, words)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn health(shared: &Shared) -> Response<SimBody> {
    shared.stats.health_hit();
    let status = status_code(shared.health_status.load(Ordering::Relaxed));
    let word = if status.is_success() {
        "ok"
    } else {
        "unhealthy"
    };
    json_response(
        status,
        &json!({"status": word, "instance": shared.cfg.name}),
    )
}

fn models() -> Value {
    let model =
        |id: &str| json!({"id": id, "object": "model", "created": 0, "owned_by": "switchyard-sim"});
    json!({"object": "list", "data": [model("sim"), model("sim-large")]})
}

/// The API key of a request: the bearer token of `authorization`, else `x-api-key`.
fn api_key(headers: &http::HeaderMap) -> Option<String> {
    if let Some(v) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return Some(v.strip_prefix("Bearer ").unwrap_or(v).trim().to_string());
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
}

fn key_response(rule: &KeyRule) -> Response<SimBody> {
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

fn status_code(s: u16) -> StatusCode {
    StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// A status failure; 429 and 503 carry `retry-after` (`retry_after`, else `1`).
fn failure_response(s: u16, retry_after: Option<&str>) -> Response<SimBody> {
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

fn json_response(status: StatusCode, value: &Value) -> Response<SimBody> {
    let body = Full::new(Bytes::from(value.to_string()))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
