//! A fleet of switchyards sharing limits, token budgets, key state and the cache through a real
//! `redis-server`: several processes configured alike, the way an edge runs behind DNS or an L4
//! balancer.

use crate::common::redis::Redis;
use crate::common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use switchyard::sim::KeyRule;

/// Start `n` switchyards on the same `body` (which should end with a `shared:` section).
async fn fleet(n: usize, body: &str) -> Vec<Balancer> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(Balancer::start(body).await);
    }
    out
}

/// `shared:` with a timeout generous enough for a loaded test machine.
fn shared(r: &Redis) -> String {
    format!(
        "shared: {{ redis: \"{}\", prefix: \"t:\", timeout: 1s }}\n",
        r.url()
    )
}

async fn post(
    c: &reqwest::Client,
    lb: &Balancer,
    body: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = c
        .post(lb.url("/v1/chat/completions"))
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("request")
}

fn sum_metric(texts: &[String], name: &str, labels: &[(&str, &str)]) -> f64 {
    texts.iter().map(|t| metric(t, name, labels)).sum()
}

async fn all_metrics(lbs: &[Balancer]) -> Vec<String> {
    let mut out = Vec::new();
    for lb in lbs {
        out.push(lb.metrics().await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_limit_is_held_across_instances() {
    let redis = Redis::start();
    let s = sim("m").await;
    let body = format!(
        "clusters:\n  c:\n    peers: [ {{ addr: \"{}\" }} ]\nroutes:\n  - name: r\n    split: [ {{ cluster: c }} ]\n    client_limit: {{ key: \"header:x-user\", requests_per_minute: 60, burst: 5 }}\n{}",
        s.addr(),
        shared(&redis)
    );
    let lbs = fleet(3, &body).await;
    let c = client();
    let started = Instant::now();
    let (mut ok, mut limited) = (0, 0);
    for i in 0..15 {
        let r = post(&c, &lbs[i % 3], &chat("hi", false), &[("x-user", "alice")]).await;
        match r.status().as_u16() {
            200 => ok += 1,
            429 => {
                assert!(r.headers().contains_key("retry-after"));
                let e: Value = r.json().await.unwrap();
                assert_eq!(e["error"]["code"], "rate_limited");
                limited += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    // One client, three instances: 5 at once and one a second, in all (each instance on its
    // own would have allowed 5, 15 together).
    let refill = started.elapsed().as_secs() as i32 + 1;
    assert!(
        ok >= 5 && ok <= 5 + refill,
        "{ok} allowed in {:?}",
        started.elapsed()
    );
    assert_eq!(ok + limited, 15);
    // Another client is not affected.
    let r = post(&c, &lbs[1], &chat("hi", false), &[("x-user", "bob")]).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_budget_is_held_across_instances() {
    let redis = Redis::start();
    let s = sim("provider").await;
    let body = format!(
        "clusters:\n  c:\n    peers: [ {{ addr: \"{}\" }} ]\n    rate_limit: {{ requests_per_minute: 60, burst: 6 }}\nroutes:\n  - name: r\n    split: [ {{ cluster: c }} ]\n{}",
        s.addr(),
        shared(&redis)
    );
    let lbs = fleet(3, &body).await;
    let c = client();
    let started = Instant::now();
    let mut statuses = Vec::new();
    for i in 0..30 {
        statuses.push(
            post(&c, &lbs[i % 3], &chat("hi", false), &[])
                .await
                .status()
                .as_u16(),
        );
    }
    let seen = s.stats().requests() as i32;
    let refill = started.elapsed().as_secs() as i32 + 1;
    assert!(
        seen >= 6 && seen <= 6 + refill,
        "the upstream saw {seen} requests in {:?}",
        started.elapsed()
    );
    let ok = statuses.iter().filter(|s| **s == 200).count() as i32;
    assert_eq!(ok, seen, "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_shared_budget_requests_spill_to_the_other_cluster() {
    let redis = Redis::start();
    let (p, q) = (sim("primary").await, sim("secondary").await);
    let body = format!(
        "clusters:\n  primary:\n    peers: [ {{ addr: \"{}\" }} ]\n    rate_limit: {{ requests_per_minute: 1, burst: 4 }}\n  secondary:\n    peers: [ {{ addr: \"{}\" }} ]\nroutes:\n  - name: r\n    split: [ {{ cluster: primary, weight: 1 }}, {{ cluster: secondary, weight: 0 }} ]\n{}",
        p.addr(),
        q.addr(),
        shared(&redis)
    );
    let lbs = fleet(3, &body).await;
    let c = client();
    let mut by = Vec::new();
    for i in 0..12 {
        let r = post(&c, &lbs[i % 3], &chat("hi", false), &[]).await;
        assert_eq!(r.status(), 200, "request {i}");
        by.push(r.headers()["x-sim-instance"].to_str().unwrap().to_string());
    }
    // The fleet's burst of 4 went to the primary, the rest spilled (each instance alone would
    // have sent 4 of its own 4 requests there).
    assert_eq!(by.iter().filter(|s| *s == "primary").count(), 4, "{by:?}");
    assert_eq!(p.stats().requests(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_shared_budget_requests_wait_for_it_in_turn() {
    let redis = Redis::start();
    let s = sim("provider").await;
    let body = format!(
        "clusters:\n  c:\n    peers: [ {{ addr: \"{}\" }} ]\n    rate_limit: {{ requests_per_minute: 60, burst: 1, queue_timeout: 10s }}\nroutes:\n  - name: r\n    split: [ {{ cluster: c }} ]\n{}",
        s.addr(),
        shared(&redis)
    );
    let lbs = fleet(3, &body).await;
    let c = client();
    let started = Instant::now();
    for (i, lb) in lbs.iter().enumerate() {
        let r = post(&c, lb, &chat("hi", false), &[]).await;
        assert_eq!(r.status(), 200, "request {i}");
    }
    // One a second for the fleet: the second and third waited for the budget (each instance
    // alone had a full bucket and would not have waited).
    assert!(
        started.elapsed() >= Duration::from_millis(1800),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(s.stats().requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_budgets_are_reserved_then_settled_from_usage() {
    let redis = Redis::start();
    let s = sim_with(SimConfig {
        name: "provider".into(),
        ttft: Duration::from_millis(5),
        token_delay: Duration::from_millis(1),
        tokens: 4,
        usage_when_asked: true,
        ..SimConfig::default()
    })
    .await;
    let body = format!(
        "clusters:\n  c:\n    peers: [ {{ addr: \"{}\" }} ]\n    rate_limit: {{ tokens_per_minute: 3000 }}\nroutes:\n  - name: r\n    split: [ {{ cluster: c }} ]\n{}",
        s.addr(),
        shared(&redis)
    );
    let lbs = fleet(2, &body).await;
    let c = client();
    let ask = |max_tokens: Option<u64>, stream: bool, include_usage: bool| {
        let mut b = json!({
            "model": "m", "stream": stream,
            "messages": [{"role": "user", "content": "hello there"}],
        });
        if let Some(m) = max_tokens {
            b["max_tokens"] = json!(m);
        }
        if include_usage {
            b["stream_options"] = json!({"include_usage": true});
        }
        b.to_string()
    };
    // Each reserves about 1,000 tokens (max_tokens), so three would fill the budget if nothing
    // were given back; each uses a few, and the rest is given back when it ends.
    let mut used = 0;
    let mut each = None;
    for i in 0..8 {
        let r = post(&c, &lbs[i % 2], &ask(Some(1000), false, false), &[]).await;
        assert_eq!(r.status(), 200, "request {i}");
        let v: Value = r.json().await.unwrap();
        let total = v["usage"]["total_tokens"].as_u64().unwrap();
        assert_eq!(
            *each.get_or_insert(total),
            total,
            "the same prompt, the same usage"
        );
        used += total;
    }
    // The same prompt streamed reports the same usage (the simulator counts alike).
    let each = each.unwrap();
    // A stream that did not ask for its usage: switchyard asks, settles from it, and the client
    // does not see the usage chunk.
    let r = post(&c, &lbs[0], &ask(Some(1000), true, false), &[]).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(
        !text.contains("prompt_tokens"),
        "the usage chunk was not asked for: {text}"
    );
    used += each;
    // A client that asked gets it.
    let r = post(&c, &lbs[1], &ask(Some(1000), true, true), &[]).await;
    let text = r.text().await.unwrap();
    assert!(text.contains("\"prompt_tokens\""), "{text}");
    assert!(text.contains(&format!("\"total_tokens\":{each}")), "{text}");
    used += each;
    let settled = |m: &[String]| {
        sum_metric(
            m,
            "switchyard_token_budget_tokens_total",
            &[("scope", "upstream"), ("name", "c"), ("kind", "settled")],
        )
    };
    wait_until(Duration::from_secs(5), "settlements counted", || async {
        settled(&all_metrics(&lbs).await) as u64 == used
    })
    .await;
    let m = all_metrics(&lbs).await;
    let reserved = sum_metric(
        &m,
        "switchyard_token_budget_tokens_total",
        &[("scope", "upstream"), ("name", "c"), ("kind", "reserved")],
    );
    assert!(reserved > 10_000.0, "reserved {reserved}");

    // Answers that use far more than their estimate (no max_tokens: 256 assumed, 700 generated)
    // are charged what they used: the budget runs out after a few, across both instances.
    let mut refused_at = None;
    for i in 0..10 {
        let r = post(
            &c,
            &lbs[i % 2],
            &ask(None, false, false),
            &[("x-sim-tokens", "700")],
        )
        .await;
        if r.status() == 429 {
            assert!(r.headers().contains_key("retry-after"));
            refused_at = Some(i);
            break;
        }
        assert_eq!(r.status(), 200);
        // Settlement runs beside the request path; give it its moment.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let at = refused_at.expect("the budget never ran out");
    assert!(
        (3..=6).contains(&at),
        "refused after {at} answers of 700 tokens"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_token_budget_is_held_across_instances() {
    let redis = Redis::start();
    let s = sim("m").await;
    let body = format!(
        "clusters:\n  c:\n    peers: [ {{ addr: \"{}\" }} ]\nroutes:\n  - name: r\n    split: [ {{ cluster: c }} ]\n    client_limit: {{ key: \"header:x-user\", tokens_per_minute: 2000 }}\n{}",
        s.addr(),
        shared(&redis)
    );
    let lbs = fleet(2, &body).await;
    let c = client();
    // No max_tokens: 256 completion tokens are reserved, 600 are used and charged.
    let ask = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let mut refused_at = None;
    for i in 0..8 {
        let h = [("x-user", "alice"), ("x-sim-tokens", "600")];
        let r = post(&c, &lbs[i % 2], &ask, &h).await;
        if r.status() == 429 {
            assert!(r.headers().contains_key("retry-after"));
            let e: Value = r.json().await.unwrap();
            assert_eq!(e["error"]["code"], "rate_limited");
            refused_at = Some(i);
            break;
        }
        assert_eq!(r.status(), 200, "request {i}");
        let _ = r.bytes().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // 2,000 a minute hold three answers of about 600 (each instance alone: three each).
    let at = refused_at.expect("the client's token budget never ran out");
    assert!((3..=4).contains(&at), "refused after {at} answers");
    let h = [("x-user", "bob"), ("x-sim-tokens", "600")];
    assert_eq!(post(&c, &lbs[0], &ask, &h).await.status(), 200);
}

fn reject(status: u16) -> Option<KeyRule> {
    Some(KeyRule {
        status,
        retry_after: None,
        code: Some("invalid_api_key".into()),
    })
}

async fn key_usable(lb: &Balancer, key_id: &str) -> bool {
    let st = lb.status().await;
    st["clusters"][0]["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_id"] == key_id)
        .map(|k| k["usable"] == true)
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rejected_via_one_instance_is_not_used_by_the_others() {
    let redis = Redis::start();
    let s = sim("provider").await;
    s.set_key_rule("sk-bad", reject(401));
    let body = format!(
        "clusters:\n  c:\n    peers: [ {{ addr: \"{}\" }} ]\n    api_keys:\n      keys: [sk-good, sk-bad]\n      failover: {{ failure_threshold: 3, default_cooldown: 60s }}\nroutes:\n  - name: r\n    split: [ {{ cluster: c }} ]\n{}",
        s.addr(),
        shared(&redis)
    );
    let lbs = fleet(3, &body).await;
    let c = client();
    let bad = switchyard::keys::fingerprint("sk-bad");
    for _ in 0..20 {
        assert_eq!(
            post(&c, &lbs[0], &chat("hi", false), &[]).await.status(),
            200
        );
        if !key_usable(&lbs[0], &bad).await {
            break;
        }
    }
    assert!(
        !key_usable(&lbs[0], &bad).await,
        "taken out on the first instance"
    );
    for lb in &lbs[1..] {
        wait_until(Duration::from_secs(5), "the others learn", || async {
            !key_usable(lb, &bad).await
        })
        .await;
    }
    let hits = s.key_hits("sk-bad");
    // Each of the others would have sent it three times before taking it out itself.
    for i in 0..20 {
        assert_eq!(
            post(&c, &lbs[1 + i % 2], &chat("hi", false), &[])
                .await
                .status(),
            200
        );
    }
    assert_eq!(
        s.key_hits("sk-bad"),
        hits,
        "the others used the rejected key"
    );
    let m = lbs[2].metrics().await;
    assert_eq!(
        metric(
            &m,
            "switchyard_api_key_usable",
            &[("cluster", "c"), ("key_id", &bad)]
        ),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_comes_back_on_every_instance_when_its_probe_passes_on_one() {
    let redis = Redis::start();
    let s = sim("provider").await;
    s.set_key_rule("sk-bad", reject(401));
    let probe = r#"health_check: { interval: 300ms, path: /v1/chat/completions, body: '{"model":"m","messages":[{"role":"user","content":"ping"}],"max_tokens":1}' }"#;
    let body = format!(
        "clusters:\n  c:\n    peers: [ {{ addr: \"{}\" }} ]\n    api_keys:\n      keys: [sk-good, sk-bad]\n      failover:\n        failure_threshold: 1\n        {probe}\nroutes:\n  - name: r\n    split: [ {{ cluster: c }} ]\n{}",
        s.addr(),
        shared(&redis)
    );
    let lbs = fleet(2, &body).await;
    let c = client();
    let bad = switchyard::keys::fingerprint("sk-bad");
    for _ in 0..4 {
        assert_eq!(
            post(&c, &lbs[0], &chat("hi", false), &[]).await.status(),
            200
        );
    }
    wait_until(Duration::from_secs(5), "out on both", || async {
        !key_usable(&lbs[0], &bad).await && !key_usable(&lbs[1], &bad).await
    })
    .await;
    s.set_key_rule("sk-bad", None);
    wait_until(Duration::from_secs(10), "back on both", || async {
        key_usable(&lbs[0], &bad).await && key_usable(&lbs[1], &bad).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_on_one_instance_is_a_hit_on_another() {
    let redis = Redis::start();
    let s = sim("m").await;
    let body = format!(
        "clusters:\n  c:\n    peers: [ {{ addr: \"{}\" }} ]\nroutes:\n  - name: r\n    split: [ {{ cluster: c }} ]\n    cache: {{ ttl: 1m, max_bytes: 1MiB }}\n{}",
        s.addr(),
        shared(&redis)
    );
    let lbs = fleet(3, &body).await;
    let c = client();
    for stream in [false, true] {
        let body = json!({
            "model": "m", "temperature": 0, "stream": stream,
            "messages": [{"role": "user", "content": format!("opening hours? {stream}")}],
        })
        .to_string();
        let before = s.stats().requests();
        let first = post(&c, &lbs[0], &body, &[]).await;
        assert_eq!(first.headers()["x-cache-status"], "MISS");
        let first_body = first.bytes().await.unwrap();
        for lb in &lbs[1..] {
            let r = post(&c, lb, &body, &[]).await;
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["x-cache-status"], "HIT", "stream: {stream}");
            if stream {
                assert_eq!(r.headers()["content-type"], "text/event-stream");
            }
            assert_eq!(r.bytes().await.unwrap(), first_body);
        }
        assert_eq!(
            s.stats().requests(),
            before + 1,
            "one upstream request in all"
        );
    }
    // Another tenant never gets them.
    let body = json!({"model": "m", "temperature": 0, "stream": false,
        "messages": [{"role": "user", "content": "opening hours? false"}]})
    .to_string();
    let r = post(
        &c,
        &lbs[1],
        &body,
        &[("authorization", "Bearer other-team")],
    )
    .await;
    assert_eq!(r.headers()["x-cache-status"], "MISS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_load_fails_no_request_and_sharing_resumes() {
    let mut redis = Redis::start();
    let s = sim("m").await;
    let body = format!(
        "clusters:\n  c:\n    peers: [ {{ addr: \"{}\" }} ]\n    rate_limit: {{ requests_per_minute: 100000, burst: 1000, tokens_per_minute: 10000000 }}\nroutes:\n  - name: r\n    split: [ {{ cluster: c }} ]\n    client_limit: {{ key: \"header:x-user\", requests_per_minute: 100000, burst: 1000 }}\n    cache: {{ ttl: 1m }}\nshared: {{ redis: \"{}\", timeout: 200ms, on_error: local }}\n",
        s.addr(),
        redis.url()
    );
    let lbs = std::sync::Arc::new(fleet(2, &body).await);
    let load = |worker: usize, secs: u64| {
        let lbs = lbs.clone();
        tokio::spawn(async move {
            let c = client();
            let until = Instant::now() + Duration::from_secs(secs);
            let mut failures = Vec::new();
            let mut n = 0usize;
            while Instant::now() < until && n < 5000 {
                let body = json!({"model": "m", "temperature": 0,
                    "messages": [{"role": "user", "content": format!("q{}", n % 7)}]})
                .to_string();
                let stream = n % 3 == 0;
                let body = if stream { chat("streamed", true) } else { body };
                let r = post(&c, &lbs[(worker + n) % 2], &body, &[("x-user", "u")]).await;
                if r.status() != 200 {
                    failures.push(r.status().as_u16());
                } else if stream {
                    let t = r.text().await.unwrap_or_default();
                    if !t.ends_with("data: [DONE]\n\n") {
                        failures.push(0);
                    }
                } else {
                    let _ = r.bytes().await;
                }
                n += 1;
            }
            (n, failures)
        })
    };
    let workers: Vec<_> = (0..3).map(|w| load(w, 5)).collect();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(1800)).await;
    redis.restart();
    let mut total = 0;
    for w in workers {
        let (n, failures) = w.await.unwrap();
        assert!(failures.is_empty(), "failed requests: {failures:?}");
        total += n;
    }
    assert!(total > 30, "only {total} requests were sent");
    let m = all_metrics(&lbs).await;
    let fallbacks = sum_metric(
        &m,
        "switchyard_shared_fallbacks_total",
        &[("op", "limit"), ("action", "local")],
    );
    assert!(fallbacks > 0.0, "no decision fell back to the local limits");
    assert!(
        sum_metric(
            &m,
            "switchyard_shared_errors_total",
            &[("op", "limit"), ("reason", "error")]
        ) + sum_metric(
            &m,
            "switchyard_shared_errors_total",
            &[("op", "limit"), ("reason", "timeout")]
        ) > 0.0
    );
    // Sharing resumes by itself: the tier is connected again, and an answer stored through one
    // instance is a HIT on the other.
    let c = client();
    let mut k = 0;
    wait_until(
        Duration::from_secs(15),
        "a shared HIT after the restart",
        || {
            k += 1;
            let body = json!({"model": "m", "temperature": 0,
            "messages": [{"role": "user", "content": format!("after the outage {k}")}]})
            .to_string();
            let (c, lbs) = (c.clone(), lbs.clone());
            async move {
                let first = post(&c, &lbs[0], &body, &[]).await;
                let _ = first.bytes().await;
                let second = post(&c, &lbs[1], &body, &[]).await;
                second.headers()["x-cache-status"] == "HIT"
            }
        },
    )
    .await;
    for lb in lbs.iter() {
        let st = lb.status().await;
        assert_eq!(st["shared"]["connected"], true, "{}", st["shared"]);
        assert!(st["shared"]["fallbacks"].as_u64().is_some());
        assert!(
            lb.log().matches("reachable again").count() >= 1,
            "{}",
            lb.log()
        );
        assert!(
            lb.log().matches("logged once per outage").count() <= 2,
            "{}",
            lb.log()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_on_error_deny_an_unreachable_tier_answers_503() {
    let s = sim("m").await;
    let port = free_port();
    let body = format!(
        "clusters:\n  c:\n    peers: [ {{ addr: \"{}\" }} ]\nroutes:\n  - name: local\n    match: {{ path_prefix: /v1/completions }}\n    split: [ {{ cluster: c }} ]\n    client_limit: {{ key: ip, requests_per_minute: 600, scope: local }}\n  - name: r\n    split: [ {{ cluster: c }} ]\n    client_limit: {{ key: \"header:x-user\", requests_per_minute: 600 }}\nshared: {{ redis: \"redis://127.0.0.1:{port}/0\", on_error: deny }}\n",
        s.addr()
    );
    let lb = Balancer::start(&body).await;
    let c = client();
    let r = post(&c, &lb, &chat("hi", false), &[("x-user", "u")]).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "shared_tier_unavailable");
    // A limit kept local does not depend on the tier.
    let r = c
        .post(lb.url("/v1/completions"))
        .body(r#"{"prompt":"hi"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let st = lb.status().await;
    assert_eq!(st["shared"]["connected"], false);
    assert!(st["shared"]["last_error"].is_string(), "{}", st["shared"]);
    let m = lb.metrics().await;
    assert!(
        metric(
            &m,
            "switchyard_shared_fallbacks_total",
            &[("op", "limit"), ("action", "deny")]
        ) >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_update_by_the_data_symlink_swap_reloads() {
    let (a, b) = (sim("a").await, sim("b").await);
    let config = |to: &SimHandle| {
        format!(
            "clusters:\n  c:\n    peers: [ {{ addr: \"{}\" }} ]\nroutes:\n  - name: r\n    split: [ {{ cluster: c }} ]\n",
            to.addr()
        )
    };
    let head = Head {
        configmap: true,
        ..Head::default()
    };
    let lb = Balancer::start_with(head, &config(&a)).await;
    let served_by = |lb: &Balancer| {
        let url = lb.url("/v1/chat/completions");
        async move {
            let r = client()
                .post(url)
                .body(chat("hi", false))
                .send()
                .await
                .unwrap();
            r.headers()["x-sim-instance"].to_str().unwrap().to_string()
        }
    };
    assert_eq!(served_by(&lb).await, "a");
    assert_eq!(lb.generation().await, 1);
    // kubelet's update: no event names switchyard.yaml, yet its content changed.
    lb.swap_configmap(&config(&b));
    wait_until(
        Duration::from_secs(10),
        "a reload after the swap",
        || async { lb.generation().await >= 2 },
    )
    .await;
    assert_eq!(served_by(&lb).await, "b");
    // A change in the directory that leaves the content alone reloads nothing.
    std::fs::write(lb.dir.path().join("unrelated.txt"), "x").unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(lb.generation().await, 2);
}
