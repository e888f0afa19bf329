//! Failover that fits LLM traffic (issue 13), through real sockets: each measurement of the issue
//! as a test (a hanging peer in a burst, cross-cluster failover of a large prompt, a long
//! non-streaming generation, `Retry-After` and one-off failures on a single-endpoint provider, a
//! slow first token, a 400 that only another cluster can answer), and hedged first tokens.
//! Bounds are generous: the machines are small and shared.

use crate::common::*;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};
use switchyard::sim::KeyRule;

const FALLBACK: &str = "    fallback: { body: '{\"is_fallback\":true}' }\n";

async fn post(
    c: &reqwest::Client,
    lb: &Balancer,
    body: String,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = c
        .post(lb.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    tokio::time::timeout(Duration::from_secs(120), req.send())
        .await
        .expect("an answer within 120 s")
        .expect("response")
}

async fn sim_slow(name: &str, ttft: Duration) -> SimHandle {
    sim_with(SimConfig {
        name: name.to_string(),
        ttft,
        token_delay: Duration::from_millis(1),
        tokens: 4,
        ..SimConfig::default()
    })
    .await
}

/// The setup: three primary peers (the first hanging) and one secondary, `attempts: 3`,
/// `first_byte: 1s`; `clients` clients each send `each` requests one after another. Returns
/// (requests answered by the fallback or with an error, requests sent).
async fn burst_with_a_hanging_peer(clients: usize, each: usize) -> (usize, usize) {
    let hang = sim("hang").await;
    hang.set_failure(Some(Failure::Hang));
    // Answers at the simulator's default pace (50 ms to the first token, 16 tokens 20 ms apart).
    let paced = |name: &str| {
        sim_with(SimConfig {
            name: name.to_string(),
            ..SimConfig::default()
        })
    };
    let (a, b, s) = (paced("a").await, paced("b").await, paced("s").await);
    let body = format!(
        "clusters:\n{}{}{}",
        cluster_yaml("primary", &[&hang, &a, &b], ""),
        cluster_yaml("secondary", &[&s], ""),
        route_yaml(
            &[("primary", 100), ("secondary", 1)],
            &format!(
                "    timeouts: {{ first_byte: 1s }}\n    retry: {{ attempts: 3 }}\n{FALLBACK}"
            )
        )
    );
    let lb = Balancer::start(&body).await;
    let c = client();
    let url = lb.url("/v1/chat/completions");
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..clients {
        let (c, url) = (c.clone(), url.clone());
        tasks.spawn(async move {
            let mut bad = 0;
            for i in 0..each {
                let r = c.post(&url).body(chat(&format!("{w}-{i}"), false)).send();
                match tokio::time::timeout(Duration::from_secs(60), r).await {
                    Ok(Ok(r))
                        if r.status() == 200
                            && !r.headers().contains_key("x-switchyard-fallback") =>
                    {
                        let _ = r.bytes().await;
                    }
                    _ => bad += 1,
                }
            }
            bad
        });
    }
    let mut bad = 0;
    while let Some(r) = tasks.join_next().await {
        bad += r.expect("client task");
    }
    let m = lb.metrics().await;
    let fallbacks: f64 = ["all_tries_failed", "timeout", "no_peer", "upstream_status"]
        .iter()
        .map(|r| {
            metric(
                &m,
                "switchyard_fallback_response_total",
                &[("route", "chat"), ("reason", r)],
            )
        })
        .sum();
    assert_eq!(fallbacks as usize, bad, "every bad answer was a fallback");
    assert!(hang.stats().requests() >= 1, "the hanging peer took tries");
    (bad, clients * each)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hanging_peer_drops_no_request_at_6_way() {
    let (bad, sent) = burst_with_a_hanging_peer(6, 10).await;
    assert_eq!(bad, 0, "{bad} of {sent} requests got the fallback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hanging_peer_drops_no_request_at_64_way() {
    let (bad, sent) = burst_with_a_hanging_peer(64, 5).await;
    assert_eq!(bad, 0, "{bad} of {sent} requests got the fallback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_mib_prompt_fails_over_to_the_other_cluster_when_every_primary_peer_fails() {
    let p: Vec<SimHandle> =
        futures_util::future::join_all(["p0", "p1", "p2"].into_iter().map(sim)).await;
    for s in &p {
        s.set_failure(Some(Failure::Status(502)));
    }
    let secondary = sim("secondary").await;
    let body = format!(
        "clusters:\n{}{}{}",
        cluster_yaml("primary", &[&p[0], &p[1], &p[2]], ""),
        cluster_yaml("secondary", &[&secondary], ""),
        route_yaml(
            &[("primary", 100), ("secondary", 1)],
            &format!("    retry: {{ attempts: 3 }}\n{FALLBACK}")
        )
    );
    let lb = Balancer::start(&body).await;
    let filler: String = (0..(1 << 20))
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let prompt = chat(&filler, false);
    let want = format!("{:x}", Sha256::digest(prompt.as_bytes()));
    let r = post(&client(), &lb, prompt.clone(), &[]).await;
    assert_eq!(r.status(), 200);
    assert!(!r.headers().contains_key("x-switchyard-fallback"));
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["served_by"], "secondary", "{v}");
    assert_eq!(v["request_bytes"].as_u64(), Some(prompt.len() as u64));
    assert_eq!(v["request_sha256"].as_str(), Some(want.as_str()));
    let primary_tries: u64 = p.iter().map(|s| s.stats().requests()).sum();
    assert_eq!(
        primary_tries, 2,
        "two tries in primary, the last one in secondary"
    );
    let m = lb.metrics().await;
    assert_eq!(
        metric(
            &m,
            "switchyard_upstream_retry_total",
            &[("route", "chat"), ("cluster", "primary"), ("reason", "502")]
        ),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_40_s_generation_answers_200_with_one_execution_under_default_timeouts() {
    let p: Vec<SimHandle> =
        futures_util::future::join_all(["p0", "p1", "p2"].into_iter().map(sim)).await;
    let secondary = sim("secondary").await;
    let body = format!(
        "clusters:\n{}{}{}",
        cluster_yaml("primary", &[&p[0], &p[1], &p[2]], ""),
        cluster_yaml("secondary", &[&secondary], ""),
        route_yaml(&[("primary", 100), ("secondary", 1)], "")
    );
    let lb = Balancer::start(&body).await;
    let c = client();
    let start = Instant::now();
    let r = post(
        &c,
        &lb,
        chat("write a long essay", false),
        &[("x-sim-ttft-ms", "40000")],
    )
    .await;
    assert_eq!(r.status(), 200, "after {:?}", start.elapsed());
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(
        v["choices"][0]["message"]["content"].as_str().is_some(),
        "{v}"
    );
    let executions: u64 =
        p.iter().map(|s| s.stats().requests()).sum::<u64>() + secondary.stats().requests();
    assert_eq!(
        executions, 1,
        "one upstream execution, not a re-run per timeout"
    );
    let cb: serde_json::Value = c
        .get(lb.admin_url("/health/circuit-breaker/primary"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for peer in cb["peers"].as_array().unwrap() {
        assert_eq!(peer["failure_count"], 0, "no breaker failure: {cb}");
    }
}

/// One cluster with one peer (a single-endpoint provider) that retries 429 and 5xx.
async fn single_endpoint(extra_retry: &str) -> (SimHandle, Balancer) {
    let s = sim("only").await;
    let body = format!(
        "clusters:\n{}{}",
        cluster_yaml("provider", &[&s], "    breaker: { enabled: false }\n"),
        route_yaml(
            &[("provider", 1)],
            &format!("    retry: {{ attempts: 3, retry_on: [connect_failure, refused, reset, timeout, 429, 5xx]{extra_retry} }}\n")
        )
    );
    let lb = Balancer::start(&body).await;
    (s, lb)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_2_is_retried_on_the_same_endpoint_after_2_s() {
    let (s, lb) = single_endpoint("").await;
    let c = client();
    let r = post(
        &c,
        &lb,
        chat("x", false),
        &[
            ("x-sim-status", "429"),
            ("x-sim-retry-after", "2"),
            ("x-sim-fail-first", "1"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(s.stats().requests(), 2, "the same endpoint, tried again");
    let at = s.stats().arrivals();
    let waited = at[1] - at[0];
    assert!(
        waited >= Duration::from_millis(1900),
        "the retry came after {waited:?}, not after Retry-After"
    );
    let m = lb.metrics().await;
    assert_eq!(
        metric(
            &m,
            "switchyard_upstream_retry_total",
            &[
                ("route", "chat"),
                ("cluster", "provider"),
                ("reason", "429")
            ]
        ),
        1.0
    );

    // A Retry-After beyond `retry.max_retry_after` (2 s): answered at once, passed on.
    let start = Instant::now();
    let r = post(
        &c,
        &lb,
        chat("y", false),
        &[
            ("x-sim-status", "429"),
            ("x-sim-retry-after", "30"),
            ("x-sim-fail-first", "3"),
        ],
    )
    .await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "30");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        s.stats().requests(),
        3,
        "no retry of an endpoint that asked for 30 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_off_500_on_a_single_endpoint_is_retried_on_it() {
    let (s, lb) = single_endpoint("").await;
    let r = post(
        &client(),
        &lb,
        chat("x", false),
        &[("x-sim-status", "500"), ("x-sim-fail-first", "1")],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(s.stats().requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_token_after_20_s_fails_over_under_default_timeouts() {
    let slow = sim_slow("slow", Duration::from_secs(20)).await;
    let fast = sim("fast").await;
    let body = format!(
        "clusters:\n{}{}{}",
        cluster_yaml("primary", &[&slow], ""),
        cluster_yaml("secondary", &[&fast], ""),
        route_yaml(&[("primary", 100), ("secondary", 1)], "")
    );
    let lb = Balancer::start(&body).await;
    let r = post(&client(), &lb, chat("x", true), &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["x-sim-instance"],
        "fast",
        "the stream default first_token is 15 s"
    );
    let text = r.text().await.unwrap();
    assert!(text.contains("data: [DONE]"), "{text}");
    assert_eq!(slow.stats().requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_context_length_400_fails_over_to_another_cluster_while_other_400s_pass_through() {
    let p0 = sim("p0").await;
    let p1 = sim("p1").await;
    let large = sim("large").await;
    for p in [&p0, &p1] {
        for (key, code) in [
            ("ctx", "context_length_exceeded"),
            ("policy", "content_policy_violation"),
        ] {
            p.set_key_rule(
                key,
                Some(KeyRule {
                    status: 400,
                    retry_after: None,
                    code: Some(code.into()),
                }),
            );
        }
    }
    let body = format!(
        "clusters:\n{}{}{}",
        cluster_yaml("primary", &[&p0, &p1], ""),
        cluster_yaml("large", &[&large], ""),
        route_yaml(
            &[("primary", 100), ("large", 1)],
            "    retry:\n      retry_on: [connect_failure, refused, reset, timeout, 502, 503, 504, { status: 400, body: \"context_length_exceeded\" }]\n"
        )
    );
    let lb = Balancer::start(&body).await;
    let c = client();
    let r = post(
        &c,
        &lb,
        chat("a very long prompt", false),
        &[("authorization", "Bearer ctx")],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-sim-instance"], "large");
    assert_eq!(
        p0.stats().requests() + p1.stats().requests(),
        1,
        "the other primary peer has the same context window: not tried"
    );

    let r = post(
        &c,
        &lb,
        chat("something else", false),
        &[("authorization", "Bearer policy")],
    )
    .await;
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        v["error"]["code"], "content_policy_violation",
        "passed through untouched: {v}"
    );
    assert_eq!(
        large.stats().requests(),
        1,
        "only the context-length request went to large"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hedge_wins_over_a_slow_first_token_and_the_losing_connection_is_closed() {
    // `slow` takes 3 s to its first token (and, without streaming, to its header); `fast` answers
    // at once. The split sends every first try to `slow`; the hedge goes to `fast`.
    let slow = sim_slow("slow", Duration::from_secs(3)).await;
    let fast = sim("fast").await;
    let body = format!(
        "clusters:\n{}{}{}",
        cluster_yaml("primary", &[&slow], ""),
        cluster_yaml("secondary", &[&fast], ""),
        route_yaml(
            &[("primary", 1), ("secondary", 0)],
            "    hedge: { after: 200ms, max: 1 }\n"
        )
    );
    let lb = Balancer::start(&body).await;
    let c = client();
    for (i, stream) in [false, true].into_iter().enumerate() {
        let start = Instant::now();
        let r = post(&c, &lb, chat("x", stream), &[]).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-sim-instance"], "fast", "stream={stream}");
        let text = r.text().await.unwrap();
        if stream {
            assert!(text.contains("data: [DONE]"), "{text}");
        }
        assert!(
            start.elapsed() < Duration::from_millis(2500),
            "stream={stream}: {:?}",
            start.elapsed()
        );
        // The losing try's connection was closed: the slow server saw its client go away long
        // before it would have answered.
        wait_until(
            Duration::from_millis(2500),
            "the losing try to be abandoned",
            || async { slow.stats().abandoned() == i as u64 + 1 && slow.stats().current() == 0 },
        )
        .await;
    }
    assert_eq!(slow.stats().requests(), 2);
    let m = lb.metrics().await;
    assert_eq!(
        metric(
            &m,
            "switchyard_hedges_total",
            &[("route", "chat"), ("outcome", "won")]
        ),
        2.0
    );
    // The loser's breaker admission was given back without a verdict.
    let cb: serde_json::Value = c
        .get(lb.admin_url("/health/circuit-breaker/primary"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cb["peers"][0]["failure_count"], 0, "{cb}");
    assert_eq!(cb["peers"][0]["success_count"], 0, "{cb}");
    assert_eq!(cb["peers"][0]["state"], "CLOSED", "{cb}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hedge_that_loses_is_closed_and_counted() {
    // The first try answers after 600 ms; the hedge (after 100 ms) would take 5 s.
    let first = sim_slow("first", Duration::from_millis(600)).await;
    let slower = sim_slow("slower", Duration::from_secs(5)).await;
    let body = format!(
        "clusters:\n{}{}{}",
        cluster_yaml("primary", &[&first], ""),
        cluster_yaml("secondary", &[&slower], ""),
        route_yaml(
            &[("primary", 1), ("secondary", 0)],
            "    hedge: { after: 100ms }\n"
        )
    );
    let lb = Balancer::start(&body).await;
    let r = post(&client(), &lb, chat("x", false), &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-sim-instance"], "first");
    wait_until(
        Duration::from_secs(3),
        "the hedge to be abandoned",
        || async { slower.stats().requests() == 1 && slower.stats().abandoned() == 1 },
    )
    .await;
    let m = lb.metrics().await;
    assert_eq!(
        metric(
            &m,
            "switchyard_hedges_total",
            &[("route", "chat"), ("outcome", "lost")]
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_removes_the_health_check_brings_its_unhealthy_peers_back() {
    let a = sim("a").await;
    a.set_health_status(503);
    let checked = format!(
        "clusters:\n{}{}",
        cluster_yaml(
            "c",
            &[&a],
            "    health_check: { interval: 100ms, timeout: 500ms, unhealthy_threshold: 1 }\n"
        ),
        route_yaml(&[("c", 1)], "")
    );
    let lb = Balancer::start(&checked).await;
    let c = client();
    wait_until(
        Duration::from_secs(10),
        "the peer to be unhealthy",
        || async { lb.status().await["clusters"][0]["peers"][0]["health"] == "unhealthy" },
    )
    .await;
    assert_eq!(post(&c, &lb, chat("x", false), &[]).await.status(), 503);
    // Without a health check nothing would ever probe it again: it must count as healthy.
    lb.write_config(&format!(
        "clusters:\n{}{}",
        cluster_yaml("c", &[&a], ""),
        route_yaml(&[("c", 1)], "")
    ));
    let (status, v) = lb.reload().await;
    assert_eq!(status, 200, "{v}");
    let r = post(&c, &lb, chat("x", false), &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-sim-instance"], "a");
}

/// The chaos benchmark's `cut` on a plain answer: the peer dies part-way through a JSON body
/// whose `content-length` announced more. The answer is read whole before it commits, so the cut
/// is a failed try, retried on the other peer; the client never sees half a document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_answer_cut_part_way_is_retried_and_the_client_gets_it_whole() {
    let (a, b) = (sim("a").await, sim("b").await);
    let body = format!(
        "clusters:\n{}{}",
        cluster_yaml("primary", &[&a, &b], "    balance: round_robin\n"),
        route_yaml(&[("primary", 1)], "")
    );
    let lb = Balancer::start(&body).await;
    let knobs = [
        ("x-sim-tokens", "8"),
        ("x-sim-fail-after-tokens", "3"),
        ("x-sim-fail-instance", "a"),
    ];
    let c = client();
    for _ in 0..2 {
        let r = post(&c, &lb, chat("x", false), &knobs).await;
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().await.expect("a whole JSON answer");
        assert_eq!(v["served_by"], "b", "{v}");
        let text = v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default();
        assert_eq!(text, (0..8).map(|k| format!("tok{k} ")).collect::<String>());
    }
    // Round robin sent at least one of them to `a` first, which cut it; `b` answered both.
    assert!(a.stats().requests() >= 1);
    assert_eq!(b.stats().requests(), 2);
}

/// A non-streaming request whose upstream answers with an event stream anyway (server-sent
/// events that may never end): it is relayed as it comes, not held for a whole answer that the
/// whole-answer commit point would wait for until `idle`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_to_a_plain_request_is_relayed_as_it_comes() {
    use crate::common::raw::{self, Step};
    let up = raw::Upstream::start(|_| {
        vec![
            Step::ReadBody,
            Step::Write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                    .to_vec(),
            ),
            Step::Write(raw::chunk("data: {\"n\":1}\n\n")),
            Step::Sleep(Duration::from_secs(20)),
            Step::Close,
        ]
    })
    .await;
    let body = format!(
        "clusters:\n  events:\n    peers: [ {{ addr: \"{}\" }} ]\n{}",
        up.addr,
        route_yaml(&[("events", 1)], "")
    );
    let lb = Balancer::start(&body).await;
    let mut r = post(&client(), &lb, chat("x", false), &[]).await;
    assert_eq!(r.status(), 200);
    // The first event arrives long before the route's 60 s idle.
    let first = tokio::time::timeout(Duration::from_secs(10), r.chunk())
        .await
        .expect("the first event within 10 s")
        .expect("a body chunk")
        .expect("not the end of the body");
    assert!(String::from_utf8_lossy(&first).contains("data: {\"n\":1}"));
}
