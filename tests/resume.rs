//! Streams that break after their commit point, through real sockets: with `resume` on, a stream
//! cut, stalled past `idle`, or ended by an error event after some tokens is continued by another
//! peer, and the client reads one stream, equal to the simulator's full answer, ending in
//! `[DONE]`. Without it (the default), it ends with an SSE error event. And a 200 stream whose
//! first event is an error is a failed try: retried before anything reaches the client.
//!
//! The peer that breaks is `a`, the only peer of the split's cluster; `b` is a weight-0 backup
//! cluster, so every first try goes to `a` and every continuation to `b`. The failure knobs carry
//! `x-sim-fail-instance: a`: every try sends the same headers, and only `a` must fail.

use crate::common::*;
use serde_json::{json, Value};
use std::time::Duration;

/// The simulator's answer of `n` tokens.
fn full_answer(n: usize) -> String {
    (0..n).map(|k| format!("tok{k} ")).collect()
}

/// `a` alone in cluster `primary`, `b` in the weight-0 `backup`; route `chat` with `extra`.
fn config(a: &SimHandle, b: &SimHandle, extra: &str) -> String {
    format!(
        "clusters:\n  primary:\n    breaker: {{ enabled: false }}\n    peers: [ {{ addr: \"{}\" }} ]\n  backup:\n    breaker: {{ enabled: false }}\n    peers: [ {{ addr: \"{}\" }} ]\nroutes:\n  - name: chat\n    match: {{ path_prefix: \"/v1/\" }}\n    split: [ {{ cluster: primary, weight: 1 }}, {{ cluster: backup, weight: 0 }} ]\n    retry: {{ backoff: {{ base: 1ms, max: 2ms }} }}\n{extra}",
        a.addr(),
        b.addr()
    )
}

const RESUME: &str = "    resume: { mode: continue, max: 1 }\n";

/// POST `body` to `path` with `headers`; the status and the whole body (bounded in time).
async fn stream(
    lb: &Balancer,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut req = client()
        .post(lb.url(path))
        .header("content-type", "application/json")
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("response");
    let status = r.status().as_u16();
    let text = tokio::time::timeout(Duration::from_secs(20), r.text())
        .await
        .expect("the stream ends")
        .expect("a clean end, not a cut connection");
    (status, text)
}

/// The `data:` payloads of an SSE body, and whether any event was an error event.
fn events(text: &str) -> (Vec<String>, bool) {
    let mut data = Vec::new();
    let mut error = false;
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        for line in block.lines() {
            if line == "event: error" {
                error = true;
            }
            if let Some(d) = line.strip_prefix("data: ") {
                error |= serde_json::from_str::<Value>(d).is_ok_and(|v| !v["error"].is_null());
                data.push(d.to_string());
            }
        }
    }
    (data, error)
}

/// The JSON chunks of a stream (everything but `[DONE]`).
fn chunks(data: &[String]) -> Vec<Value> {
    data.iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("chunk {d}: {e}")))
        .collect()
}

/// The text the chunks carry, chat or completions.
fn text_of(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| {
            let choice = &c["choices"][0];
            choice["delta"]["content"]
                .as_str()
                .or(choice["text"].as_str())
        })
        .collect()
}

/// A resumed stream as the client must see it: no error, the full answer, `[DONE]` last, one
/// `id`/`created`/`model` throughout, one role delta, served by `a` and then `b`, and `usage`
/// counting every token. Returns the chunks.
fn assert_seamless(text: &str, want: &str, tokens: u64) -> Vec<Value> {
    let (data, error) = events(text);
    assert!(!error, "no error event reaches the client: {text}");
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{text}");
    let cs = chunks(&data);
    assert_eq!(text_of(&cs), want, "{text}");
    for key in ["id", "created", "model"] {
        assert!(
            cs.iter().all(|c| c[key] == cs[0][key]),
            "every chunk keeps the first stream's {key}: {text}"
        );
    }
    let roles = cs
        .iter()
        .filter(|c| !c["choices"][0]["delta"]["role"].is_null())
        .count();
    let chat = cs[0]["object"] == "chat.completion.chunk";
    assert_eq!(roles, usize::from(chat), "one role delta: {text}");
    let served: Vec<&str> = cs.iter().filter_map(|c| c["served_by"].as_str()).collect();
    assert_eq!(served.first(), Some(&"a"), "{text}");
    assert_eq!(
        served.last(),
        Some(&"b"),
        "the continuation came from b: {text}"
    );
    let usage = cs.iter().rev().find(|c| c["usage"].is_object());
    let usage = usage.unwrap_or_else(|| panic!("usage: {text}"));
    assert_eq!(usage["usage"]["completion_tokens"], tokens, "{text}");
    cs
}

async fn resumes(lb: &Balancer, result: &str) -> f64 {
    let m = lb.metrics().await;
    let labels = [("route", "chat"), ("result", result)];
    metric(&m, "switchyard_stream_resumes_total", &labels)
}

fn chat_body(extra: Value) -> Value {
    let mut v = json!({
        "model": "m",
        "stream": true,
        "messages": [{"role": "user", "content": "tell me everything"}],
    });
    if let (Value::Object(v), Value::Object(x)) = (&mut v, extra) {
        v.extend(x);
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_after_40_of_60_tokens_is_resumed_on_another_peer() {
    let (a, b) = (sim("a").await, sim("b").await);
    let lb = Balancer::start(&config(&a, &b, RESUME)).await;
    let knobs = [
        ("x-sim-tokens", "60"),
        ("x-sim-fail-after-tokens", "40"),
        ("x-sim-fail-instance", "a"),
    ];
    let path = "/v1/chat/completions";
    let (status, text) = stream(&lb, path, &chat_body(json!({})), &knobs).await;
    assert_eq!(status, 200);
    assert_seamless(&text, &full_answer(60), 60);
    assert_eq!((a.stats().requests(), b.stats().requests()), (1, 1));
    assert_eq!(resumes(&lb, "resumed").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_stalled_past_idle_is_resumed() {
    let (a, b) = (sim("a").await, sim("b").await);
    let extra = format!("{RESUME}    timeouts: {{ idle: 500ms }}\n");
    let lb = Balancer::start(&config(&a, &b, &extra)).await;
    let knobs = [
        ("x-sim-tokens", "60"),
        ("x-sim-hang-after-tokens", "40"),
        ("x-sim-fail-instance", "a"),
    ];
    let path = "/v1/chat/completions";
    let (status, text) = stream(&lb, path, &chat_body(json!({})), &knobs).await;
    assert_eq!(status, 200);
    assert_seamless(&text, &full_answer(60), 60);
    assert_eq!(resumes(&lb, "resumed").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_event_mid_stream_is_resumed_within_max_tokens() {
    let (a, b) = (sim("a").await, sim("b").await);
    let lb = Balancer::start(&config(&a, &b, RESUME)).await;
    let knobs = [
        ("x-sim-tokens", "60"),
        ("x-sim-error-after-tokens", "40"),
        ("x-sim-fail-instance", "a"),
    ];
    // The continuation asks for the 15 tokens left of 55, so the whole answer is 55 tokens.
    let body = chat_body(json!({"max_tokens": 55}));
    let (status, text) = stream(&lb, "/v1/chat/completions", &body, &knobs).await;
    assert_eq!(status, 200);
    assert_seamless(&text, &full_answer(55), 55);
    assert_eq!(resumes(&lb, "resumed").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_completion_is_continued_from_the_partial_answer() {
    let (a, b) = (sim("a").await, sim("b").await);
    let lb = Balancer::start(&config(&a, &b, RESUME)).await;
    let knobs = [
        ("x-sim-tokens", "60"),
        ("x-sim-fail-after-tokens", "40"),
        ("x-sim-fail-instance", "a"),
    ];
    // The fallback peer can only go on from token 40 if it is given the 40 tokens sent.
    let body = json!({"model": "m", "stream": true, "prompt": "count: ", "max_tokens": 50});
    let (status, text) = stream(&lb, "/v1/completions", &body, &knobs).await;
    assert_eq!(status, 200);
    assert_seamless(&text, &full_answer(50), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_resume_a_cut_stream_ends_with_an_error_event() {
    let (a, b) = (sim("a").await, sim("b").await);
    let lb = Balancer::start(&config(&a, &b, "")).await;
    let knobs = [
        ("x-sim-tokens", "60"),
        ("x-sim-fail-after-tokens", "40"),
        ("x-sim-fail-instance", "a"),
    ];
    let path = "/v1/chat/completions";
    let (status, text) = stream(&lb, path, &chat_body(json!({})), &knobs).await;
    assert_eq!(status, 200);
    let (data, error) = events(&text);
    assert!(error, "{text}");
    assert!(text.contains("\"stream_interrupted\""), "{text}");
    assert_eq!(text_of(&chunks(&data[..data.len() - 1])), full_answer(40));
    assert_eq!(b.stats().requests(), 0, "nothing asked b to continue");
    assert_eq!(resumes(&lb, "resumed").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_stream_whose_first_event_is_an_error_fails_over_invisibly() {
    let (a, b) = (sim("a").await, sim("b").await);
    // Resume off: this is a failure before the commit point, retried like a 5xx.
    let lb = Balancer::start(&config(&a, &b, "")).await;
    let knobs = [
        ("x-sim-tokens", "8"),
        ("x-sim-error-after-tokens", "0"),
        ("x-sim-fail-instance", "a"),
    ];
    let path = "/v1/chat/completions";
    let (status, text) = stream(&lb, path, &chat_body(json!({})), &knobs).await;
    assert_eq!(status, 200);
    let (data, error) = events(&text);
    assert!(!error, "{text}");
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let cs = chunks(&data);
    assert_eq!(text_of(&cs), full_answer(8));
    assert!(cs.iter().all(|c| c["served_by"] == "b"), "{text}");
    assert_eq!((a.stats().requests(), b.stats().requests()), (1, 1));
    let m = lb.metrics().await;
    let labels = [
        ("route", "chat"),
        ("cluster", "primary"),
        ("reason", "error_event"),
    ];
    assert_eq!(metric(&m, "switchyard_upstream_retry_total", &labels), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_that_breaks_too_ends_with_an_error_event_after_max() {
    let (a, b) = (sim("a").await, sim("b").await);
    let lb = Balancer::start(&config(&a, &b, RESUME)).await;
    // No instance named: both peers cut their answer after 10 tokens of it.
    let knobs = [("x-sim-tokens", "60"), ("x-sim-fail-after-tokens", "10")];
    let path = "/v1/chat/completions";
    let (status, text) = stream(&lb, path, &chat_body(json!({})), &knobs).await;
    assert_eq!(status, 200);
    let (data, error) = events(&text);
    assert!(error && text.contains("\"stream_interrupted\""), "{text}");
    assert_eq!(text_of(&chunks(&data[..data.len() - 1])), full_answer(20));
    assert_eq!(resumes(&lb, "resumed").await, 1.0);
    assert_eq!(resumes(&lb, "exhausted").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_that_cannot_be_continued_end_with_an_error_event() {
    let (a, b) = (sim("a").await, sim("b").await);
    let lb = Balancer::start(&config(&a, &b, RESUME)).await;
    let knobs = [
        ("x-sim-tokens", "20"),
        ("x-sim-fail-after-tokens", "5"),
        ("x-sim-fail-instance", "a"),
    ];
    // Two choices per request: which one would the continuation continue?
    let body = chat_body(json!({"n": 2}));
    let (status, text) = stream(&lb, "/v1/chat/completions", &body, &knobs).await;
    assert_eq!(status, 200);
    assert!(events(&text).1, "{text}");
    assert_eq!(resumes(&lb, "not_resumable").await, 1.0);
    assert_eq!(b.stats().requests(), 0);

    // With no other peer to take it, the resume fails and the stream ends as without resume.
    b.shutdown().await;
    let body = chat_body(json!({}));
    let (status, text) = stream(&lb, "/v1/chat/completions", &body, &knobs).await;
    assert_eq!(status, 200);
    assert!(events(&text).1, "{text}");
    assert_eq!(resumes(&lb, "failed").await, 1.0);
}
