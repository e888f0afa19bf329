//! Upstream API-key failover and rate limits, against simulated providers that enforce keys.

use crate::common::*;
use std::time::{Duration, Instant};
use switchyard::sim::KeyRule;

fn rule(status: u16, retry_after: Option<u32>, code: Option<&str>) -> Option<KeyRule> {
    Some(KeyRule {
        status,
        retry_after,
        code: code.map(String::from),
    })
}

const PROBE: &str = r#"health_check: { interval: 200ms, path: /v1/chat/completions, body: '{"model":"m","messages":[{"role":"user","content":"who are you?"}],"max_tokens":1}', expect_status: [200], expect_body: "assistant" }"#;

async fn key_status(lb: &Balancer, cluster: usize, key_id: &str) -> serde_json::Value {
    let st = lb.status().await;
    st["clusters"][cluster]["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_id"] == key_id)
        .cloned()
        .unwrap_or_default()
}

async fn ok_post(c: &reqwest::Client, lb: &Balancer) -> reqwest::Response {
    let r = c
        .post(lb.url("/v1/chat/completions"))
        .body(chat("hi", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "request failed");
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_key_is_taken_out_and_probed_back() {
    let s = sim("provider").await;
    s.set_key_rule("sk-bad", rule(401, None, Some("invalid_api_key")));
    let body = format!(
        "clusters:\n  c:\n    peers: [ {{ addr: \"{}\" }} ]\n    api_keys:\n      keys: [sk-good, sk-bad]\n      failover:\n        failure_threshold: 2\n        {PROBE}\nroutes:\n  - name: r\n    split: [ {{ cluster: c }} ]\n",
        s.addr()
    );
    let lb = Balancer::start(&body).await;
    let c = client();
    for _ in 0..20 {
        ok_post(&c, &lb).await;
    }
    let bad = switchyard::keys::fingerprint("sk-bad");
    let k = key_status(&lb, 0, &bad).await;
    assert_eq!(k["disabled"], true, "{k}");
    let m = lb.metrics().await;
    assert_eq!(
        metric(
            &m,
            "switchyard_api_key_disabled_total",
            &[
                ("cluster", "c"),
                ("key_id", &bad),
                ("reason", "unauthorized")
            ]
        ),
        1.0
    );
    assert!(
        metric(
            &m,
            "switchyard_upstream_retry_total",
            &[("route", "r"), ("cluster", "c"), ("reason", "api_key")]
        ) >= 2.0
    );
    // The provider accepts the key again: the probe brings it back.
    s.set_key_rule("sk-bad", None);
    wait_until(
        Duration::from_secs(10),
        "probe re-enables the key",
        || async { key_status(&lb, 0, &bad).await["usable"] == true },
    )
    .await;
    let before = s.key_hits("sk-bad");
    for _ in 0..6 {
        ok_post(&c, &lb).await;
    }
    assert!(
        s.key_hits("sk-bad") >= before + 2,
        "the key takes traffic again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_cools_a_key_for_about_that_long() {
    let s = sim("provider").await;
    s.set_key_rule("sk-b", rule(429, Some(2), Some("rate_limit_exceeded")));
    let body = format!(
        "clusters:\n  c:\n    peers: [ {{ addr: \"{}\" }} ]\n    api_keys: {{ keys: [sk-a, sk-b] }}\nroutes:\n  - name: r\n    split: [ {{ cluster: c }} ]\n",
        s.addr()
    );
    let lb = Balancer::start(&body).await;
    let c = client();
    while s.key_hits("sk-b") == 0 {
        ok_post(&c, &lb).await;
    }
    let t0 = Instant::now();
    s.set_key_rule("sk-b", None);
    let id = switchyard::keys::fingerprint("sk-b");
    assert_eq!(key_status(&lb, 0, &id).await["usable"], false);
    wait_until(
        Duration::from_secs(6),
        "cooled key usable again",
        || async { key_status(&lb, 0, &id).await["usable"] == true },
    )
    .await;
    let cooled = t0.elapsed();
    assert!(
        cooled >= Duration::from_millis(1500) && cooled <= Duration::from_millis(3500),
        "{cooled:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_without_a_usable_key_leaves_the_split_until_one_recovers() {
    let p = sim("primary").await;
    let s = sim("provider").await;
    s.set_key_rule("sk-only", rule(402, None, Some("insufficient_quota")));
    let body = format!(
        "clusters:\n  primary:\n    peers: [ {{ addr: \"{}\" }} ]\n  secondary:\n    peers: [ {{ addr: \"{}\" }} ]\n    api_keys:\n      keys: [sk-only]\n      failover:\n        failure_threshold: 1\n        {PROBE}\nroutes:\n  - name: r\n    split: [ {{ cluster: primary, weight: 1 }}, {{ cluster: secondary, weight: 1 }} ]\n",
        p.addr(),
        s.addr()
    );
    let lb = Balancer::start(&body).await;
    let c = client();
    for _ in 0..4 {
        ok_post(&c, &lb).await;
    }
    let hits = s.stats().requests();
    for _ in 0..20 {
        let r = ok_post(&c, &lb).await;
        assert_eq!(r.headers()["x-sim-instance"], "primary");
    }
    // Only probes reach the provider while its one key is out.
    let probes = s.stats().requests() - hits;
    assert!(
        probes <= 12,
        "{probes} requests reached a cluster with no usable key"
    );
    s.set_key_rule("sk-only", None);
    wait_until(
        Duration::from_secs(10),
        "secondary takes traffic again",
        || async { ok_post(&c, &lb).await.headers()["x-sim-instance"] == "provider" },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_budget_is_never_exceeded() {
    let budgeted = sim("budgeted").await;
    let spare = sim("spare").await;
    // rpm 60 with a burst of 5: at most 5 at once, then one a second.
    let body = format!(
        "clusters:\n  limited:\n    peers: [ {{ addr: \"{}\" }} ]\n    rate_limit: {{ requests_per_minute: 60, burst: 5 }}\n  other:\n    peers: [ {{ addr: \"{}\" }} ]\nroutes:\n  - name: only\n    match: {{ path_prefix: \"/v1/completions\" }}\n    split: [ {{ cluster: limited }} ]\n  - name: both\n    split: [ {{ cluster: limited, weight: 100 }}, {{ cluster: other, weight: 1 }} ]\n",
        budgeted.addr(),
        spare.addr()
    );
    let lb = Balancer::start(&body).await;
    let c = client();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let (c, url) = (
            c.clone(),
            lb.url(if i % 2 == 0 {
                "/v1/completions"
            } else {
                "/v1/chat/completions"
            }),
        );
        tasks.spawn(async move {
            let r = c.post(url).body(chat("x", false)).send().await.unwrap();
            (
                i % 2 == 0,
                r.status().as_u16(),
                r.headers().get("retry-after").is_some(),
            )
        });
    }
    let mut only_429 = 0;
    while let Some(r) = tasks.join_next().await {
        let (only, status, retry_after) = r.unwrap();
        if only {
            assert!(
                status == 200 || (status == 429 && retry_after),
                "status {status}"
            );
            only_429 += usize::from(status == 429);
        } else {
            assert_eq!(
                status, 200,
                "the other cluster takes what is over the budget"
            );
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let allowed = 5.0 + elapsed + 1.0;
    let seen = budgeted.stats().requests() as f64;
    assert!(
        seen <= allowed,
        "upstream saw {seen} requests, budget allows {allowed:.1}"
    );
    assert!(
        only_429 >= 10,
        "requests over the budget must be refused: {only_429}"
    );
    assert!(spare.stats().requests() >= 10);
    let m = lb.metrics().await;
    assert!(
        metric(
            &m,
            "switchyard_rate_limited_total",
            &[("scope", "upstream"), ("name", "limited")]
        ) >= 10.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_limits_answer_429_and_spare_other_clients() {
    let s = sim("s").await;
    let body = format!(
        "clusters:\n  c:\n    peers: [ {{ addr: \"{}\" }} ]\nroutes:\n  - name: r\n    split: [ {{ cluster: c }} ]\n    client_limit: {{ key: \"header:authorization\", requests_per_minute: 60, burst: 3 }}\n",
        s.addr()
    );
    let lb = Balancer::start(&body).await;
    let c = client();
    let send = |who: &'static str| {
        let c = c.clone();
        let url = lb.url("/v1/chat/completions");
        async move {
            c.post(url)
                .header("authorization", who)
                .body(chat("x", false))
                .send()
                .await
                .unwrap()
        }
    };
    let mut codes = Vec::new();
    for _ in 0..6 {
        codes.push(send("Bearer client-a").await.status().as_u16());
    }
    assert_eq!(&codes[..3], &[200, 200, 200]);
    assert!(codes[3..].iter().all(|c| *c == 429), "{codes:?}");
    let r = send("Bearer client-a").await;
    assert_eq!(r.status(), 429);
    assert!(
        r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u32>()
            .unwrap()
            >= 1
    );
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limited");
    for _ in 0..3 {
        assert_eq!(
            send("Bearer client-b").await.status(),
            200,
            "another client is unaffected"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bounded_queue_serves_or_refuses_within_its_timeout() {
    let s = sim_with(SimConfig {
        name: "slow".into(),
        ttft: std::time::Duration::from_millis(300),
        tokens: 1,
        ..SimConfig::default()
    })
    .await;
    let body = format!(
        "clusters:\n  c:\n    peers: [ {{ addr: \"{}\", max_inflight: 2 }} ]\n    queue: {{ max_waiting: 4, timeout: 1s }}\nroutes:\n  - name: r\n    split: [ {{ cluster: c }} ]\n",
        s.addr()
    );
    let lb = Balancer::start(&body).await;
    let c = client();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..12 {
        let (c, url) = (c.clone(), lb.url("/v1/chat/completions"));
        tasks.spawn(async move {
            let start = Instant::now();
            let r = c
                .post(url)
                .body(chat(&format!("{i}"), false))
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.headers().contains_key("retry-after"),
                start.elapsed(),
            )
        });
    }
    let (mut ok, mut refused) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        let (status, retry_after, took) = r.unwrap();
        match status {
            200 => ok += 1,
            503 => {
                refused += 1;
                assert!(retry_after);
                assert!(
                    took < Duration::from_millis(2500),
                    "a refusal took {took:?}"
                );
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(
        s.stats().max_concurrent() <= 2,
        "max_inflight exceeded: {}",
        s.stats().max_concurrent()
    );
    assert!(
        ok >= 4,
        "queued requests must be served: {ok} ok, {refused} refused"
    );
    assert!(
        refused >= 4,
        "a full queue must refuse at once: {ok} ok, {refused} refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_text_in_logs_metrics_or_admin() {
    let secret_bad = "sk-SECRET-bad-0123456789";
    let secret_good = "sk-SECRET-good-9876543210";
    let s = sim("provider").await;
    s.set_key_rule(secret_bad, rule(401, None, None));
    let dir = tempfile::tempdir().unwrap();
    let keys_file = dir.path().join("keys");
    std::fs::write(
        &keys_file,
        format!("# pool\n{secret_bad}\n\n{secret_good}\n"),
    )
    .unwrap();
    let body = format!(
        "clusters:\n  c:\n    peers: [ {{ addr: \"{}\" }} ]\n    api_keys:\n      keys_file: {}\n      failover: {{ failure_threshold: 1 }}\nroutes:\n  - name: r\n    split: [ {{ cluster: c }} ]\n",
        s.addr(),
        keys_file.display()
    );
    let lb = Balancer::start(&body).await;
    let c = client();
    for _ in 0..10 {
        ok_post(&c, &lb).await;
    }
    assert!(
        s.key_hits(secret_bad) >= 1,
        "the bad key was used and rejected"
    );
    let status = lb.status().await.to_string();
    let metrics = lb.metrics().await;
    let cb = c
        .get(lb.admin_url("/health/circuit-breaker/c"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let log = lb.log();
    for (what, text) in [
        ("status", &status),
        ("metrics", &metrics),
        ("breaker", &cb),
        ("log", &log),
    ] {
        assert!(!text.contains("SECRET"), "a key leaked into {what}");
    }
    assert!(
        log.contains(&switchyard::keys::fingerprint(secret_bad)),
        "the log names the key by fingerprint"
    );
}
