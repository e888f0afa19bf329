//! Resilience through real sockets: failover on dead, hung and 5xx peers with zero client-visible
//! failures, body replay on retry, pass-through of 400/429, breakers that eject and readmit,
//! health-check thresholds, `max_ejected_percent`, the retry budget, and fallbacks.

use crate::common::*;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    req.send().await.expect("response")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_peer_under_load_loses_no_request_and_returns_via_half_open() {
    let a = sim("a").await;
    let b = sim("b").await;
    let b_addr = b.addr();
    let body = format!(
        "clusters:\n{}{}",
        cluster_yaml(
            "c",
            &[&a, &b],
            "    breaker: { consecutive_failures: 3, open_for: 1s, max_open_for: 2s, success_threshold: 2, max_ejected_percent: 50 }\n"
        ),
        route_yaml(&[("c", 1)], "    timeouts: { connect: 300ms, first_byte: 5s }\n")
    );
    let lb = Balancer::start(&body).await;
    let c = client();
    let failures = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop_at = Instant::now() + Duration::from_secs(3);
    let mut load = tokio::task::JoinSet::new();
    for w in 0..64 {
        let (c, url, failures, sent) = (
            c.clone(),
            lb.url("/v1/chat/completions"),
            failures.clone(),
            sent.clone(),
        );
        load.spawn(async move {
            let mut i = 0;
            while Instant::now() < stop_at && i < 400 {
                i += 1;
                sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let r = c
                    .post(&url)
                    .header("x-sim-ttft-ms", "20")
                    .body(chat(&format!("{w}-{i}"), false))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {}
                    Ok(r) => {
                        let status = r.status();
                        eprintln!(
                            "failed request: {status} {}",
                            r.text().await.unwrap_or_default()
                        );
                        failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("failed request: {e:?}");
                        failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    b.shutdown().await; // killed mid-load: in-flight requests to it are cut
    while load.join_next().await.is_some() {}
    let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(sent > 500, "load too light: {sent}");
    assert_eq!(
        failures.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "client-visible failures out of {sent}"
    );

    let cb: serde_json::Value = c
        .get(lb.admin_url(&format!("/health/circuit-breaker/c/{b_addr}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        cb["trips"].as_u64().unwrap() >= 1,
        "breaker never opened: {cb}"
    );
    let m = lb.metrics().await;
    assert!(
        metric(
            &m,
            "switchyard_circuit_breaker_open_total",
            &[("cluster", "c"), ("peer", &b_addr.to_string())]
        ) >= 1.0
    );

    // Restart the peer on the same port: it comes back through HALF_OPEN trials and takes traffic.
    let b = SimHandle::start(
        b_addr,
        SimConfig {
            name: "b".into(),
            ttft: Duration::from_millis(2),
            ..SimConfig::default()
        },
    )
    .await
    .expect("restart on the same port");
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut served_by_b = 0;
    while Instant::now() < deadline && served_by_b < 5 {
        let r = post(&c, &lb, chat("back?", false), &[]).await;
        assert_eq!(r.status(), 200);
        if r.headers()["x-sim-instance"] == "b" {
            served_by_b += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        served_by_b >= 5,
        "restarted peer did not take traffic again"
    );
    let cb: serde_json::Value = c
        .get(lb.admin_url(&format!("/health/circuit-breaker/c/{b_addr}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cb["state"], "CLOSED", "{cb}");
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_hanging_before_first_token_fails_over_within_first_byte() {
    let hang = sim("hang").await;
    hang.set_failure(Some(Failure::Hang));
    let ok = sim("ok").await;
    let body = format!(
        "clusters:\n{}{}{}",
        cluster_yaml("primary", &[&hang], ""),
        cluster_yaml("secondary", &[&ok], ""),
        route_yaml(
            &[("primary", 100), ("secondary", 1)],
            "    timeouts: { first_byte: 500ms }\n"
        )
    );
    let lb = Balancer::start(&body).await;
    let c = client();
    for stream in [false, true] {
        let start = Instant::now();
        let r = post(&c, &lb, chat("x", stream), &[]).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-sim-instance"], "ok");
        let text = r.text().await.unwrap();
        let took = start.elapsed();
        assert!(
            took < Duration::from_millis(2500),
            "stream={stream}: {took:?}"
        );
        if stream {
            assert!(text.contains("[DONE]"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_answering_503_is_invisible_and_counted_as_retries() {
    let bad = sim("bad").await;
    bad.set_failure(Some(Failure::Status(503)));
    let good = sim("good").await;
    let body = format!(
        "clusters:\n{}{}",
        cluster_yaml("c", &[&bad, &good], "    breaker: { enabled: false }\n"),
        route_yaml(&[("c", 1)], "")
    );
    let lb = Balancer::start(&body).await;
    let c = client();
    for i in 0..40 {
        let r = post(&c, &lb, chat(&format!("{i}"), false), &[]).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-sim-instance"], "good");
    }
    let m = lb.metrics().await;
    let retries = metric(
        &m,
        "switchyard_upstream_retry_total",
        &[("route", "chat"), ("cluster", "c"), ("reason", "503")],
    );
    assert!(
        retries >= 10.0,
        "round robin sends about half the first tries to the 503 peer: {retries}"
    );
    assert_eq!(retries as u64, bad.stats().requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mib_prompt_fails_over_intact() {
    let bad = sim("bad").await;
    bad.set_failure(Some(Failure::Reset));
    let good = sim("good").await;
    let body = format!(
        "clusters:\n{}{}{}",
        cluster_yaml("primary", &[&bad], ""),
        cluster_yaml("secondary", &[&good], ""),
        route_yaml(&[("primary", 100), ("secondary", 1)], "")
    );
    let lb = Balancer::start(&body).await;
    let filler: String = (0..(1 << 20))
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let prompt = chat(&filler, false);
    let want = format!("{:x}", Sha256::digest(prompt.as_bytes()));
    let r = post(&client(), &lb, prompt.clone(), &[]).await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["served_by"], "good");
    assert_eq!(v["request_bytes"].as_u64(), Some(prompt.len() as u64));
    assert_eq!(v["request_sha256"].as_str(), Some(want.as_str()));
    assert!(
        bad.stats().requests() >= 1,
        "the first try must have hit the failing peer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_400_and_429_pass_through_without_retry() {
    let a = sim("a").await;
    let b = sim("b").await;
    let body = format!(
        "clusters:\n{}{}",
        cluster_yaml("c", &[&a, &b], ""),
        route_yaml(&[("c", 1)], "")
    );
    let lb = Balancer::start(&body).await;
    let c = client();
    for code in ["400", "429"] {
        let before = a.stats().requests() + b.stats().requests();
        let r = post(&c, &lb, chat("x", false), &[("x-sim-status", code)]).await;
        assert_eq!(r.status().as_str(), code);
        let after = a.stats().requests() + b.stats().requests();
        assert_eq!(after - before, 1, "{code} must not be retried");
    }
    let m = lb.metrics().await;
    assert_eq!(
        metric(
            &m,
            "switchyard_upstream_retry_total",
            &[("route", "chat"), ("cluster", "c"), ("reason", "429")]
        ),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_failing_after_first_token_ends_with_sse_error_event() {
    let s = sim("s").await;
    let body = format!(
        "clusters:\n{}{}",
        cluster_yaml("c", &[&s], ""),
        route_yaml(&[("c", 1)], "")
    );
    let lb = Balancer::start(&body).await;
    let r = post(
        &client(),
        &lb,
        chat("x", true),
        &[("x-sim-fail-after-tokens", "2")],
    )
    .await;
    assert_eq!(r.status(), 200);
    let text = tokio::time::timeout(Duration::from_secs(10), r.text())
        .await
        .expect("no hang")
        .expect("clean end, not a reset");
    assert!(text.contains("tok"), "{text}");
    assert!(text.contains("event: error\ndata: {"), "{text}");
    let data = text
        .split("event: error\ndata: ")
        .nth(1)
        .unwrap()
        .lines()
        .next()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(data).expect("error data is JSON");
    assert_eq!(v["error"]["code"], "stream_interrupted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_peer_down_answers_fallback_or_json_error() {
    let s = sim("s").await;
    let dead = s.addr();
    s.shutdown().await;
    for with_fallback in [true, false] {
        let fb = if with_fallback {
            "    fallback:\n      body: '{\"message\":\"busy\",\"is_fallback\":true}'\n"
        } else {
            ""
        };
        let body = format!(
            "clusters:\n  c:\n    peers: [ {{ addr: \"{dead}\" }} ]\n{}",
            route_yaml(&[("c", 1)], fb)
        );
        let lb = Balancer::start(&body).await;
        let c = client();
        for stream in [false, true] {
            let r = post(&c, &lb, chat("x", stream), &[]).await;
            if with_fallback {
                assert_eq!(r.status(), 200);
                assert!(r.headers().contains_key("x-switchyard-fallback"));
                let text = r.text().await.unwrap();
                assert!(text.contains("is_fallback"), "{text}");
                if stream {
                    assert!(
                        text.starts_with("data: ") && text.contains("data: [DONE]"),
                        "{text}"
                    );
                }
            } else {
                assert_eq!(r.status(), 502);
                let v: serde_json::Value = r.json().await.unwrap();
                assert_eq!(v["error"]["code"], "upstream_unavailable");
            }
        }
        if with_fallback {
            let m = lb.metrics().await;
            assert_eq!(
                metric(
                    &m,
                    "switchyard_fallback_response_total",
                    &[("route", "chat"), ("reason", "all_tries_failed")]
                ),
                2.0
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_thresholds_are_honoured() {
    let a = sim("a").await;
    let b = sim("b").await;
    let body = format!(
        "clusters:\n{}{}",
        cluster_yaml(
            "c",
            &[&a, &b],
            "    breaker: { enabled: false }\n    health_check: { path: /health, interval: 100ms, timeout: 500ms, healthy_threshold: 3, unhealthy_threshold: 4 }\n"
        ),
        route_yaml(&[("c", 1)], "")
    );
    let lb = Balancer::start(&body).await;
    lb.wait_ready().await;
    assert_eq!(peer0_health(&lb).await, "healthy");
    let before = a.stats().health_hits();
    a.set_health_status(503);
    // Wait until it is marked unhealthy, then check it took at least 4 failed probes.
    wait_until(Duration::from_secs(10), "peer marked unhealthy", || async {
        peer0_health(&lb).await == "unhealthy"
    })
    .await;
    let probes = a.stats().health_hits() - before;
    assert!(
        probes >= 4,
        "unhealthy after {probes} failed probes, threshold is 4"
    );
    // Unhealthy peers get no traffic.
    let c = client();
    let hits = a.stats().requests();
    for _ in 0..20 {
        assert_eq!(
            post(&c, &lb, chat("x", false), &[]).await.headers()["x-sim-instance"],
            "b"
        );
    }
    assert_eq!(a.stats().requests(), hits);
    let before = a.stats().health_hits();
    a.set_health_status(200);
    wait_until(Duration::from_secs(10), "peer healthy again", || async {
        peer0_health(&lb).await == "healthy"
    })
    .await;
    let probes = a.stats().health_hits() - before;
    assert!(
        probes >= 3,
        "healthy after {probes} passing probes, threshold is 3"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_ejected_percent_keeps_part_of_the_cluster_in() {
    let peers: Vec<SimHandle> = futures_util::future::join_all((0..4).map(sim_owned)).await;
    for p in &peers {
        p.set_failure(Some(Failure::Status(500)));
    }
    let refs: Vec<&SimHandle> = peers.iter().collect();
    let body = format!(
        "clusters:\n{}{}",
        cluster_yaml("c", &refs, "    breaker: { consecutive_failures: 2, open_for: 30s, max_open_for: 60s, max_ejected_percent: 50 }\n"),
        route_yaml(&[("c", 1)], "    retry: { attempts: 1 }\n")
    );
    let lb = Balancer::start(&body).await;
    let c = client();
    for i in 0..60 {
        let r = post(&c, &lb, chat(&format!("{i}"), false), &[]).await;
        assert_eq!(r.status(), 500);
    }
    let cb: serde_json::Value = c
        .get(lb.admin_url("/health/circuit-breaker/c"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let open = cb["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["state"] != "CLOSED")
        .count();
    assert_eq!(open, 2, "50% of 4 peers may be ejected, no more: {cb}");
}

/// A burst of failures on a cluster's only peer does not refuse the requests after it: with
/// nowhere else to send them, the breaker leaves the peer in (as nginx ignores `max_fails` for a
/// single server). Before, the peer was ejected for `open_for` and every request got a 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_failures_on_the_only_peer_does_not_refuse_what_follows() {
    let peer = sim_owned(0).await;
    peer.set_failure(Some(Failure::Status(500)));
    let body = format!(
        "clusters:\n{}{}",
        cluster_yaml(
            "c",
            &[&peer],
            "    breaker: { consecutive_failures: 2, open_for: 60s }\n"
        ),
        route_yaml(&[("c", 1)], "    retry: { attempts: 1 }\n")
    );
    let lb = Balancer::start(&body).await;
    let c = client();
    for i in 0..10 {
        let r = post(&c, &lb, chat(&format!("{i}"), false), &[]).await;
        assert_eq!(r.status(), 500, "the burst passes through");
    }
    peer.set_failure(None);
    let r = post(&c, &lb, chat("after", false), &[]).await;
    assert_eq!(
        r.status(),
        200,
        "served at once after the burst, not refused for 60 s"
    );
}

async fn peer0_health(lb: &Balancer) -> String {
    let s = lb.status().await;
    s["clusters"][0]["peers"][0]["health"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn sim_owned(i: usize) -> SimHandle {
    sim(&format!("p{i}")).await
}

/// 40 concurrent requests whose first tries all time out together; how many retries start under
/// `retry.budget: <budget>`.
async fn retries_with_budget(budget: &str) -> f64 {
    let a = sim("a").await;
    let b = sim("b").await;
    a.set_failure(Some(Failure::Hang));
    b.set_failure(Some(Failure::Hang));
    let body = format!(
        "clusters:\n{}{}",
        cluster_yaml("c", &[&a, &b], "    breaker: { enabled: false }\n"),
        route_yaml(
            &[("c", 1)],
            &format!("    timeouts: {{ first_byte: 400ms }}\n    retry: {{ attempts: 2, budget: {budget}, backoff: {{ base: 1ms, max: 1ms }} }}\n")
        )
    );
    let lb = Balancer::start(&body).await;
    let c = client();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let (c, url) = (c.clone(), lb.url("/v1/chat/completions"));
        tasks.spawn(async move {
            c.post(url)
                .body(chat(&format!("{i}"), false))
                .send()
                .await
                .map(|r| r.status().as_u16())
        });
    }
    while let Some(r) = tasks.join_next().await {
        assert_eq!(r.unwrap().unwrap(), 504);
    }
    let m = lb.metrics().await;
    metric(
        &m,
        "switchyard_upstream_retry_total",
        &[("route", "chat"), ("cluster", "c"), ("reason", "timeout")],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retry_budget_limits_retries_to_a_share_of_the_window() {
    // Without the per-second reserve, retries may add 20% of the 40 requests of the window.
    let limited = retries_with_budget("{ ratio: 0.2, min_per_second: 0 }").await;
    assert_eq!(limited, 8.0, "budget 0.2 let {limited} retries run");
    // Without a meaningful budget every request retries once: the limit above is the budget's doing.
    let unlimited = retries_with_budget("{ ratio: 1.0, min_per_second: 0 }").await;
    assert_eq!(unlimited, 40.0);
    // The default reserve (10 per second over a 10 s window) covers a burst of 40 at once.
    let burst = retries_with_budget("0.2").await;
    assert_eq!(burst, 40.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_zero_cluster_is_a_backup_used_only_when_the_others_are_out() {
    let main = sim("main").await;
    let backup = sim("backup").await;
    let body = format!(
        "clusters:\n{}{}{}",
        cluster_yaml(
            "primary",
            &[&main],
            "    breaker: { consecutive_failures: 1, open_for: 30s, max_open_for: 60s }\n"
        ),
        cluster_yaml("standby", &[&backup], ""),
        route_yaml(&[("primary", 1), ("standby", 0)], "")
    );
    let lb = Balancer::start(&body).await;
    let c = client();
    for _ in 0..20 {
        assert_eq!(
            post(&c, &lb, chat("x", false), &[]).await.headers()["x-sim-instance"],
            "main"
        );
    }
    assert_eq!(backup.stats().requests(), 0);
    main.shutdown().await;
    for _ in 0..10 {
        let r = post(&c, &lb, chat("x", false), &[]).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-sim-instance"], "backup");
    }
}

/// A bare HTTP/1.1 peer that answers every request with a small JSON 200. With `close_after_one`
/// it closes each connection after its first answer without saying so (no `connection: close`),
/// as a peer whose keep-alive timeout is shorter than ours does. Returns its address and the
/// number of connections it accepted.
async fn bare_peer(close_after_one: bool) -> (String, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // One request: the header, then `content-length` bytes of body.
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        let mut chunk = [0u8; 4096];
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..head_end + len);
                    let body = r#"{"object":"chat.completion","choices":[]}"#;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if conn.write_all(answer.as_bytes()).await.is_err() || close_after_one {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upstream_connections_are_reused_and_ones_the_peer_closed_are_skipped() {
    for close_after_one in [false, true] {
        let (addr, accepted) = bare_peer(close_after_one).await;
        let body = format!(
            "clusters:\n  c:\n    peers: [ {{ addr: \"{addr}\" }} ]\n{}",
            route_yaml(&[("c", 1)], "")
        );
        let lb = Balancer::start(&body).await;
        let c = client();
        for i in 0..5 {
            let r = post(&c, &lb, chat(&format!("{i}"), false), &[]).await;
            assert_eq!(
                r.status(),
                200,
                "request {i}, close_after_one={close_after_one}"
            );
            // Time for the peer's close to reach switchyard's idle connection.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let m = lb.metrics().await;
        let retries = metric(&m, "switchyard_upstream_retry_total", &[("cluster", "c")]);
        assert_eq!(retries, 0.0, "a closed idle connection is no failed try");
        let opened = accepted.load(Ordering::SeqCst);
        if close_after_one {
            assert_eq!(opened, 5, "each request needed a new connection");
        } else {
            assert_eq!(
                opened, 1,
                "one kept-alive connection served all five requests"
            );
        }
    }
}
