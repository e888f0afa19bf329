//! Failures on demand: statuses, resets, hangs, fail-every, streams cut short.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;

#[tokio::test]
async fn sim_status_failures_by_header() {
    let sim = start(fast()).await;
    let client = reqwest::Client::new();
    for (status, retry_after, kind) in [
        (503, true, "server_error"),
        (429, true, "rate_limit_error"),
        (500, false, "server_error"),
    ] {
        let resp = chat(&sim, &client, &hello(false))
            .header(header::STATUS, status.to_string())
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), status);
        assert_eq!(
            resp.headers().get("retry-after").is_some(),
            retry_after,
            "status {status}"
        );
        assert!(resp.headers().contains_key(header::INSTANCE));
        let v: Value = resp.json().await.expect("json error");
        assert_eq!(v["error"]["type"], kind);
    }
    assert_eq!(sim.stats().requests(), 3);
}

#[tokio::test]
async fn sim_reset_closes_without_response() {
    let sim = start(fast()).await;
    let client = reqwest::Client::new();
    sim.set_failure(Some(Failure::Reset));
    let err = chat(&sim, &client, &hello(false))
        .send()
        .await
        .expect_err("connection closed");
    assert!(!err.is_timeout() && err.status().is_none(), "{err:?}");
    sim.set_failure(None);
    let ok = chat(&sim, &client, &hello(false))
        .send()
        .await
        .expect("send");
    assert_eq!(ok.status(), 200);
    chat(&sim, &client, &hello(false))
        .header(header::FAIL, "reset")
        .send()
        .await
        .expect_err("closed");
    assert_eq!(
        sim.stats().requests(),
        3,
        "a reset must not be retried behind our back"
    );
}

#[tokio::test]
async fn sim_hang_holds_until_client_leaves() {
    let sim = start(fast()).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    let started = Instant::now();
    let err = chat(&sim, &client, &hello(false))
        .header(header::FAIL, "hang")
        .send()
        .await
        .expect_err("hangs");
    assert!(err.is_timeout(), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    // The client dropped its connection on timeout; the hung request must be released, not leaked.
    let deadline = Instant::now() + Duration::from_secs(1);
    while sim.stats().current() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(sim.stats().current(), 0);
}

#[tokio::test]
async fn sim_fail_every_third_request() {
    let sim = start(SimConfig {
        fail: Some(Failure::Status(500)),
        fail_every: 3,
        ..fast()
    })
    .await;
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(
            chat(&sim, &client, &hello(false))
                .send()
                .await
                .expect("send")
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 200, 500, 200, 200, 500]);
    let overridden = chat(&sim, &client, &hello(false)).header(header::FAIL, "none");
    assert_eq!(
        overridden.send().await.expect("send").status(),
        200,
        "request 9 would have failed"
    );
    let _eighth = chat(&sim, &client, &hello(false))
        .send()
        .await
        .expect("send");
    assert_eq!(
        chat(&sim, &client, &hello(false))
            .send()
            .await
            .expect("send")
            .status(),
        500
    );
}

#[tokio::test]
async fn sim_stream_aborts_or_stalls_after_tokens() {
    let sim = start(fast()).await;
    let client = reqwest::Client::new();
    let req = chat(&sim, &client, &hello(true)).header(header::FAIL_AFTER_TOKENS, "2");
    let (events, end) = read_sse(req.send().await.expect("send"), Duration::from_secs(2)).await;
    assert_eq!(end, End::Aborted);
    assert_eq!(tokens_of(&events), "tok0 tok1 ", "{events:?}");
    assert!(events.iter().all(|e| e.1 != "[DONE]"));

    let req = chat(&sim, &client, &hello(true)).header(header::HANG_AFTER_TOKENS, "1");
    let (events, end) = read_sse(req.send().await.expect("send"), Duration::from_millis(300)).await;
    assert_eq!(end, End::Stalled);
    assert_eq!(tokens_of(&events), "tok0 ");
}

#[tokio::test]
async fn sim_stream_error_event_after_tokens_then_done() {
    let sim = start(fast()).await;
    let client = reqwest::Client::new();
    for (after, text) in [("2", "tok0 tok1 "), ("0", "")] {
        let req = chat(&sim, &client, &hello(true)).header(header::ERROR_AFTER_TOKENS, after);
        let (events, end) = read_sse(req.send().await.expect("send"), Duration::from_secs(2)).await;
        assert_eq!(end, End::Finished);
        assert_eq!(tokens_of(&events), text, "{events:?}");
        let n = events.len();
        assert!(n >= 2, "{events:?}");
        let err: Value = serde_json::from_str(&events[n - 2].1).expect("json error event");
        assert_eq!(err["error"]["type"], "server_error", "{events:?}");
        assert_eq!(events[n - 1].1, "[DONE]");
    }
}
