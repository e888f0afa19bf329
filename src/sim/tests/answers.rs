//! Answers of a healthy simulator: JSON shape, routes, streaming timing, h2c.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::*;

#[tokio::test]
async fn sim_non_stream_chat_shape_and_body_digest() {
    let sim = start(SimConfig {
        name: "alpha".into(),
        ..fast()
    })
    .await;
    let body = hello(false);
    let resp = chat(&sim, &reqwest::Client::new(), &body)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()[header::INSTANCE], "alpha");
    let v: Value = resp.json().await.expect("json body");
    let sent = body.to_string();
    let digest: String = Sha256::digest(sent.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(v["id"], "chatcmpl-alpha-1");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "m1");
    assert!(v["created"].as_u64().expect("created") > 1_600_000_000);
    assert_eq!(
        v["choices"][0]["message"],
        json!({"role": "assistant", "content": "tok0 tok1 tok2 tok3 "})
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})
    );
    assert_eq!(v["served_by"], "alpha");
    assert_eq!(v["request_bytes"], sent.len());
    assert_eq!(v["request_sha256"], digest);
}

#[tokio::test]
async fn sim_text_completion_with_header_knobs_waits_full_answer() {
    let sim = start(fast()).await;
    let started = Instant::now();
    let resp = reqwest::Client::new()
        .post(url(&sim, "/v1/completions"))
        .header(header::TTFT_MS, "100")
        .header(header::TOKEN_DELAY_MS, "50")
        .header(header::TOKENS, "2")
        .body(r#"{"prompt": "a b"}"#)
        .send()
        .await
        .expect("send");
    let v: Value = resp.json().await.expect("json body");
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "answered after {:?}",
        started.elapsed()
    );
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["model"], "sim");
    assert_eq!(v["choices"][0]["text"], "tok0 tok1 ");
    assert_eq!(v["id"], format!("cmpl-{}-1", sim.name()));
    assert_eq!(sim.name(), format!("sim-{}", sim.addr().port()));
}

#[tokio::test]
async fn sim_errors_routes_and_models() {
    let sim = start(fast()).await;
    let client = reqwest::Client::new();
    let bad = client
        .post(url(&sim, "/v1/chat/completions"))
        .body("{not json")
        .send()
        .await
        .expect("send");
    assert_eq!(bad.status(), 400);
    assert!(bad.headers().contains_key(header::INSTANCE));
    let v: Value = bad.json().await.expect("json error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["code"], Value::Null);
    assert!(v["error"]["message"]
        .as_str()
        .expect("message")
        .contains("invalid JSON"));

    let knob = chat(&sim, &client, &hello(false))
        .header(header::TOKENS, "many")
        .send()
        .await
        .expect("send");
    assert_eq!(knob.status(), 400);
    assert!(knob.text().await.expect("body").contains(header::TOKENS));

    let missing = client
        .get(url(&sim, "/v2/nothing"))
        .send()
        .await
        .expect("send");
    assert_eq!(missing.status(), 404);
    assert!(missing.headers().contains_key(header::INSTANCE));
    let models: Value = client
        .get(url(&sim, "/v1/models"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(models["data"][0]["id"], "sim");
    assert_eq!(sim.stats().requests(), 2, "only completion POSTs count");
}

#[tokio::test]
async fn sim_stream_headers_first_then_tokens_spread_in_time() {
    let sim = start(SimConfig {
        name: "beta".into(),
        ..fast()
    })
    .await;
    let started = Instant::now();
    let resp = chat(&sim, &reqwest::Client::new(), &hello(true))
        .header(header::TTFT_MS, "400")
        .header(header::TOKEN_DELAY_MS, "100")
        .header(header::TOKENS, "5")
        .send()
        .await
        .expect("send");
    let headers_after = started.elapsed();
    assert!(
        headers_after < Duration::from_millis(300),
        "headers took {headers_after:?}"
    );
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()[header::INSTANCE], "beta");

    let (events, end) = read_sse(resp, Duration::from_secs(2)).await;
    assert_eq!(end, End::Finished);
    assert_eq!(events.len(), 7, "5 tokens, final chunk, [DONE]: {events:?}");
    assert!(
        events[0].0 - started >= Duration::from_millis(350),
        "first token before ttft"
    );
    assert!(
        events[4].0 - events[0].0 >= Duration::from_millis(300),
        "tokens were not spread out"
    );
    assert_eq!(tokens_of(&events), "tok0 tok1 tok2 tok3 tok4 ");
    let first: Value = serde_json::from_str(&events[0].1).expect("json chunk");
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["served_by"], "beta");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    let last: Value = serde_json::from_str(&events[5].1).expect("json chunk");
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(events[6].1, "[DONE]");
}

#[tokio::test]
async fn sim_serves_h2c_streams() {
    let sim = start(fast()).await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let resp = client
        .post(url(&sim, "/v1/completions"))
        .body(r#"{"prompt": "x", "stream": true}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let (events, end) = read_sse(resp, Duration::from_secs(2)).await;
    assert_eq!(end, End::Finished);
    assert_eq!(tokens_of(&events), "tok0 tok1 tok2 tok3 ");
    assert_eq!(events.last().map(|e| e.1.as_str()), Some("[DONE]"));

    let req = chat(&sim, &client, &hello(true)).header(header::FAIL_AFTER_TOKENS, "2");
    let (events, end) = read_sse(req.send().await.expect("send"), Duration::from_secs(2)).await;
    assert_eq!(
        (tokens_of(&events).as_str(), end),
        ("tok0 tok1 ", End::Aborted)
    );
}

#[tokio::test]
async fn sim_cache_control_knob_sets_the_answer_header() {
    let sim = start(fast()).await;
    let client = reqwest::Client::new();
    let plain = chat(&sim, &client, &hello(false))
        .send()
        .await
        .expect("send");
    assert!(!plain.headers().contains_key("cache-control"));
    let stream = chat(&sim, &client, &hello(true))
        .send()
        .await
        .expect("send");
    assert_eq!(stream.headers()["cache-control"], "no-cache");
    for body in [hello(false), hello(true)] {
        let resp = chat(&sim, &client, &body)
            .header(header::CACHE_CONTROL, "private, no-store")
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["cache-control"], "private, no-store");
        resp.bytes().await.expect("body");
    }
}

#[tokio::test]
async fn sim_echoes_the_request_header_named_by_the_echo_knob() {
    let sim = start(fast()).await;
    let client = reqwest::Client::new();
    let resp = chat(&sim, &client, &hello(false))
        .header(header::ECHO_HEADER, "x-forwarded-proto")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()[header::ECHO], "https");
    // Without the named header (or without the knob) there is nothing to echo.
    let resp = chat(&sim, &client, &hello(false))
        .header(header::ECHO_HEADER, "x-forwarded-proto")
        .send()
        .await
        .expect("send");
    assert!(resp.headers().get(header::ECHO).is_none());
}

#[tokio::test]
async fn sim_continues_a_final_assistant_message_within_max_tokens() {
    let sim = start(fast()).await;
    let client = reqwest::Client::new();
    let partial = |k: usize| -> String { (0..k).map(|i| format!("tok{i} ")).collect() };
    let body = |k: usize, max: Option<u64>| {
        let mut v = json!({"model": "m1", "stream": true, "messages": [
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": partial(k)},
        ], "continue_final_message": true, "add_generation_prompt": false});
        if let Some(m) = max {
            v["max_tokens"] = json!(m);
        }
        v
    };
    for (k, max, want) in [
        (2, None, "tok2 tok3 "),
        (1, Some(2), "tok1 tok2 "),
        (4, None, ""),
        (0, Some(3), "tok0 tok1 tok2 "),
    ] {
        let resp = chat(&sim, &client, &body(k, max))
            .send()
            .await
            .expect("send");
        let (events, end) = read_sse(resp, Duration::from_secs(2)).await;
        assert_eq!(end, End::Finished);
        assert_eq!(tokens_of(&events), want, "k={k} max={max:?}");
    }
    // Without the flag the assistant message is history: a fresh answer, capped by max_tokens.
    let mut plain = body(2, Some(3));
    plain["continue_final_message"] = json!(false);
    plain["stream"] = json!(false);
    let v: Value = chat(&sim, &client, &plain)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(v["choices"][0]["message"]["content"], "tok0 tok1 tok2 ");
    assert_eq!(v["usage"]["completion_tokens"], 3);
}

#[tokio::test]
async fn sim_continues_a_prompt_ending_with_the_answer_so_far() {
    let sim = start(fast()).await;
    let client = reqwest::Client::new();
    for (prompt, want) in [
        ("say it: tok0 tok1 ", "tok2 tok3 "),
        ("say it", "tok0 tok1 tok2 tok3 "),
        ("tok0 tok1 and more", "tok0 tok1 tok2 tok3 "),
    ] {
        let v: Value = client
            .post(url(&sim, "/v1/completions"))
            .body(json!({ "prompt": prompt }).to_string())
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        assert_eq!(v["choices"][0]["text"], want, "{prompt:?}");
    }
}
