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

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::answer::{token, Answer, Kind, SimBody};
use super::arrivals::Arrivals;
use super::chaos::Fate;
use super::config::{Failure, SimConfig};
use super::knobs::{header, Knobs};
use super::prefill;
use super::reply::{
    cut_json_response, error_response, failure_response, json_response, key_response, status_code,
    KeyRule,
};
use super::stats::{ActiveGuard, SimStats};
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
    /// Model requests seen per `x-chaos-id`, and the arrival log.
    pub arrivals: Arrivals,
    /// The simulated KV cache of prompt prefixes.
    pub prefix: super::prefix::PrefixCache,
    /// Gauges `/metrics` reports instead of the real ones, when set by a test.
    pub reported: super::gauges::Overrides,
}

impl Shared {
    /// `cfg.name` must already be resolved and `instance` must be its header form; `arrivals` is
    /// opened on `cfg.arrivals_log`.
    pub(crate) fn new(cfg: SimConfig, instance: HeaderValue, arrivals: Arrivals) -> Shared {
        Shared {
            arrivals,
            failure: AtomicU32::new(Failure::encode(cfg.fail)),
            health_status: AtomicU16::new(cfg.health_status),
            stats: Arc::new(SimStats::default()),
            key_rules: Default::default(),
            key_hits: Default::default(),
            prefix: super::prefix::PrefixCache::new(cfg.prefix_cache_blocks, cfg.block_bytes),
            reported: Default::default(),
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
        (&Method::GET, "/sim/arrivals") => json_response(StatusCode::OK, &shared.arrivals.json()),
        (&Method::GET, "/metrics") => super::gauges::page(&shared),
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
    let chaos_id = req
        .headers()
        .get(header::CHAOS_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let nth = match &chaos_id {
        Some(id) => shared.arrivals.arrive(id),
        None => None,
    };
    let arrived = |fate: &dyn std::fmt::Display| {
        shared
            .arrivals
            .log(seq, chaos_id.as_deref(), nth.unwrap_or(seq), fate)
    };
    let configured = Failure::decode(shared.failure.load(Ordering::Relaxed));
    let mut knobs = match Knobs::from_headers(req.headers(), &shared.cfg, configured) {
        Ok(k) => k,
        Err(e) => {
            guard.finish();
            arrived(&"invalid");
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

    if let Some(rule) = key_rule(shared, &parts_headers) {
        guard.finish();
        arrived(&"key-rule");
        return Ok(key_response(&rule));
    }

    let failure = match knobs.header_failure {
        Some(f) => f,
        None => configured.filter(|_| seq % shared.cfg.fail_every.max(1) == 0),
    };
    // `x-sim-fail-first: N`: only this server's first N model requests fail.
    let mut failure = failure.filter(|_| knobs.fail_first.is_none_or(|n| seq <= n));
    let fate = match scheduled_fate(shared, &knobs, failure, chaos_id.as_deref(), nth, seq) {
        Ok(fate) => {
            arrived(&fate);
            fate
        }
        Err(why) => {
            arrived(&why);
            Fate::Answer
        }
    };
    match fate {
        Fate::Reset => failure = Some(Failure::Reset),
        Fate::Status(s) => failure = Some(Failure::Status(s)),
        Fate::Slow => knobs.ttft = shared.cfg.chaos.as_ref().map_or(knobs.ttft, |c| c.slow),
        Fate::Answer | Fate::Hang | Fate::Cut { .. } => {}
    }
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

    let (answer, json) = match answer_of(shared, kind, seq, &body, &mut knobs) {
        Ok(a) => a,
        Err(message) => {
            guard.finish();
            return Ok(error_response(StatusCode::BAD_REQUEST, &message));
        }
    };
    let streamed = json.get("stream").and_then(Value::as_bool).unwrap_or(false);
    respond(answer, knobs, fate, streamed, guard).await
}

/// What the answer to the request `body` repeats in every chunk, and the body's JSON; the first
/// token's delay grows with the prompt blocks the prefix cache lacks. `Err`: why the body is not
/// a JSON object.
fn answer_of(
    shared: &Shared,
    kind: Kind,
    seq: u64,
    body: &[u8],
    knobs: &mut Knobs,
) -> Result<(Answer, Value), String> {
    let json: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return Err("request body must be a JSON object".to_string()),
        Err(e) => return Err(format!("invalid JSON body: {e}")),
    };
    let cached = shared.prefix.admit(&json);
    knobs.ttft = knobs
        .ttft
        .saturating_add(cached.delay(shared.cfg.prefill_per_block));
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
        request_sha256: hex(&Sha256::digest(body)),
        usage_chunk: shared.cfg.usage_when_asked.then(|| {
            json.get("stream_options")
                .and_then(|o| o.get("include_usage"))
                .and_then(Value::as_bool)
                .unwrap_or(false)
        }),
    };

    Ok((answer, json))
}

/// Count a request's API key, and the rule a test set for it, if any.
fn key_rule(shared: &Shared, headers: &http::HeaderMap) -> Option<KeyRule> {
    let key = api_key(headers)?;
    *shared
        .key_hits
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key.clone())
        .or_default() += 1;
    shared
        .key_rules
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        .cloned()
}

/// The answer itself, once the request's fate is known: a stream (SSE) or a JSON body after the
/// whole generation's time, cut or hung as `fate` and the knobs say.
async fn respond(
    answer: Answer,
    mut knobs: Knobs,
    fate: Fate,
    streamed: bool,
    mut guard: ActiveGuard,
) -> Result<Response<SimBody>, NoResponse> {
    match fate {
        // A stream gets its header at once, as from a real server, and then no token.
        Fate::Hang if streamed => knobs.hang_after_tokens = Some(0),
        Fate::Hang => {
            let never: Infallible = std::future::pending().await;
            match never {}
        }
        Fate::Cut { after } if streamed => knobs.fail_after_tokens = Some(after),
        _ => {}
    }
    if streamed {
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
    let body = complete_body(&answer, knobs.tokens);
    // A scheduled cut, or `x-sim-fail-after-tokens`: the body stops part-way.
    let cut = match fate {
        Fate::Cut { after } => Some(after),
        _ => knobs.fail_after_tokens,
    };
    if let Some(after) = cut.filter(|a| *a < knobs.tokens) {
        return Ok(cut_json_response(&body, after, knobs.tokens));
    }
    let mut resp = json_response(StatusCode::OK, &body);
    if let Some(cc) = knobs.cache_control {
        resp.headers_mut().insert(http::header::CACHE_CONTROL, cc);
    }
    Ok(resp)
}

/// The fate the `--chaos` schedule gives a request, or why it gives none: `"knob"` (its headers
/// decided), `"fail"` (the configured failure did) or `"ok"` (no schedule).
fn scheduled_fate(
    shared: &Shared,
    knobs: &Knobs,
    failure: Option<Failure>,
    id: Option<&str>,
    nth: Option<u64>,
    seq: u64,
) -> Result<Fate, &'static str> {
    if knobs.header_failure.is_some()
        || knobs.fail_after_tokens.is_some()
        || knobs.hang_after_tokens.is_some()
        || knobs.error_after_tokens.is_some()
        || knobs.fail_first.is_some()
    {
        return Err("knob");
    }
    if failure.is_some() {
        return Err("fail");
    }
    let chaos = shared.cfg.chaos.as_ref().ok_or("ok")?;
    // An id the simulator did not count (too many ids) draws by arrival number, as no id does.
    Ok(match (id, nth) {
        (Some(id), Some(nth)) => chaos.draw(&shared.cfg.name, id, nth, knobs.tokens),
        _ => chaos.draw(&shared.cfg.name, "-", seq, knobs.tokens),
    })
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
