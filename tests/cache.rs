//! The edge cache through real sockets: keys that ignore key order and whitespace but not the
//! tenant, model, system prompt or sampling parameters; SSE replay; coalescing of concurrent
//! misses (plain and streamed); the byte bound; stale-if-error; cache-control in both directions;
//! purge, status and reload; warm-up.

use crate::common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const PATH: &str = "/v1/chat/completions";

/// A config body: cluster `c` of `sims`, a cached route `chat` on `/v1/chat/` with `cache` (the
/// block under `cache:`), and an uncached route `plain` for everything else under `/v1/`.
fn config(sims: &[&SimHandle], cache: &str, route_extra: &str) -> String {
    let peers: Vec<String> = sims
        .iter()
        .map(|s| format!("{{ addr: \"{}\" }}", s.addr()))
        .collect();
    format!(
        "clusters:\n  c:\n    peers: [ {} ]\n    breaker: {{ enabled: false }}\nroutes:\n  - name: chat\n    match: {{ path_prefix: \"/v1/chat/\" }}\n    split: [ {{ cluster: c }} ]\n    retry: {{ attempts: 2, backoff: {{ base: 1ms, max: 2ms }} }}\n{route_extra}    cache:\n{cache}  - name: plain\n    match: {{ path_prefix: \"/v1/\" }}\n    split: [ {{ cluster: c }} ]\n",
        peers.join(", ")
    )
}

/// A deterministic chat request.
fn prompt(content: &str, stream: bool) -> Value {
    json!({
        "model": "m",
        "temperature": 0,
        "max_tokens": 16,
        "stream": stream,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": content},
        ],
    })
}

async fn send(
    c: &reqwest::Client,
    lb: &Balancer,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = c
        .post(lb.url(path))
        .header("content-type", "application/json")
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("response")
}

/// Status, `x-cache-status` and body of one request.
async fn ask(
    c: &reqwest::Client,
    lb: &Balancer,
    body: &Value,
    headers: &[(&str, &str)],
) -> (u16, String, bytes::Bytes) {
    let r = send(c, lb, PATH, &body.to_string(), headers).await;
    let status = r.status().as_u16();
    let cache = cache_status(&r);
    (status, cache, r.bytes().await.expect("body"))
}

fn cache_status(r: &reqwest::Response) -> String {
    r.headers()
        .get("x-cache-status")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

fn results(m: &str, result: &str) -> f64 {
    metric(
        m,
        "switchyard_cache_requests_total",
        &[("route", "chat"), ("result", result)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_prompt_reordered_and_respaced_is_a_byte_identical_hit() {
    let s = sim("s").await;
    let lb = Balancer::start(&config(&[&s], "      ttl: 10m\n", "")).await;
    let c = client();
    let first = send(&c, &lb, PATH, &prompt("hello", false).to_string(), &[]).await;
    assert_eq!(first.status(), 200);
    assert_eq!(cache_status(&first), "MISS");
    assert!(first.headers().get("age").is_none());
    let first = first.bytes().await.unwrap();

    let respaced = r#"
        { "messages": [ {"content": "be brief", "role": "system"},
                        {"content": "hello",    "role": "user"} ],
          "stream": false, "max_tokens": 16,
          "temperature": 0.0,   "model": "m" }
    "#;
    let second = send(&c, &lb, PATH, respaced, &[]).await;
    assert_eq!(second.status(), 200);
    assert_eq!(cache_status(&second), "HIT");
    assert_eq!(second.headers()["content-type"], "application/json");
    assert!(second.headers().get("age").is_some());
    assert_eq!(
        second.headers()["content-length"].to_str().unwrap(),
        first.len().to_string()
    );
    assert!(second.headers().get("x-request-id").is_some());
    assert_eq!(second.bytes().await.unwrap(), first, "byte-identical");
    assert_eq!(s.stats().requests(), 1, "the simulator saw one request");

    // A route without a cache is untouched.
    let plain = send(
        &c,
        &lb,
        "/v1/completions",
        r#"{"prompt":"x","temperature":0}"#,
        &[],
    )
    .await;
    assert_eq!(plain.status(), 200);
    assert!(plain.headers().get("x-cache-status").is_none());

    let m = lb.metrics().await;
    assert_eq!((results(&m, "miss"), results(&m, "hit")), (1.0, 1.0));
    assert_eq!(
        metric(&m, "switchyard_cache_entries", &[("route", "chat")]),
        1.0
    );
    assert!(metric(&m, "switchyard_cache_bytes", &[("route", "chat")]) > first.len() as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_model_system_prompt_and_max_tokens_split_entries_and_sampling_bypasses() {
    let s = sim("s").await;
    let lb = Balancer::start(&config(&[&s], "      ttl: 10m\n", "")).await;
    let c = client();
    let base = prompt("hi", false);
    let alice = [("authorization", "Bearer alice")];
    assert_eq!(ask(&c, &lb, &base, &alice).await.1, "MISS");
    assert_eq!(ask(&c, &lb, &base, &alice).await.1, "HIT");
    assert_eq!(s.stats().requests(), 1);

    let bob = [("authorization", "Bearer bob")];
    assert_eq!(ask(&c, &lb, &base, &bob).await.1, "MISS", "another tenant");
    assert_eq!(ask(&c, &lb, &base, &[]).await.1, "MISS", "no tenant");
    let mut upstream = 3;
    assert_eq!(s.stats().requests(), upstream);

    let variants = [
        ("model", json!("m2")),
        ("max_tokens", json!(17)),
        (
            "messages",
            json!([{"role": "system", "content": "be long"}, {"role": "user", "content": "hi"}]),
        ),
    ];
    for (field, value) in variants {
        let mut v = base.clone();
        v[field] = value;
        assert_eq!(ask(&c, &lb, &v, &alice).await.1, "MISS", "{field}");
        upstream += 1;
        assert_eq!(s.stats().requests(), upstream, "{field}");
        assert_eq!(ask(&c, &lb, &v, &alice).await.1, "HIT", "{field}");
    }

    let mut warm = base.clone();
    warm["temperature"] = json!(0.7);
    let mut absent = base.clone();
    absent.as_object_mut().unwrap().remove("temperature");
    for v in [&warm, &warm, &absent, &absent] {
        let (status, cache, _) = ask(&c, &lb, v, &alice).await;
        assert_eq!((status, cache.as_str()), (200, "BYPASS"));
        upstream += 1;
        assert_eq!(
            s.stats().requests(),
            upstream,
            "BYPASS goes upstream every time"
        );
    }
    let m = lb.metrics().await;
    assert_eq!(results(&m, "bypass"), 4.0);
    assert_eq!(results(&m, "hit"), 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_replayed_as_sse_and_cut_streams_are_not_stored() {
    let s = sim("s").await;
    let lb = Balancer::start(&config(&[&s], "      ttl: 10m\n", "")).await;
    let c = client();
    let body = prompt("stream me", true);
    let (status, cache, first) = ask(&c, &lb, &body, &[("x-sim-tokens", "6")]).await;
    assert_eq!((status, cache.as_str()), (200, "MISS"));
    let text = String::from_utf8(first.to_vec()).unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");

    let r = send(&c, &lb, PATH, &body.to_string(), &[]).await;
    assert_eq!(cache_status(&r), "HIT");
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    assert!(r.headers().get("content-length").is_none(), "streamed");
    assert_eq!(r.bytes().await.unwrap(), first);
    assert_eq!(s.stats().requests(), 1);

    // The same prompt without "stream" is another entry.
    let mut plain = body.clone();
    plain["stream"] = json!(false);
    assert_eq!(ask(&c, &lb, &plain, &[]).await.1, "MISS");

    // A stream cut after two tokens reaches the client with an error event, and is not stored.
    let cut = prompt("cut me", true);
    let (status, cache, text) = ask(&c, &lb, &cut, &[("x-sim-fail-after-tokens", "2")]).await;
    assert_eq!((status, cache.as_str()), (200, "MISS"));
    let text = String::from_utf8(text.to_vec()).unwrap();
    assert!(text.contains("event: error"), "{text}");
    let before = s.stats().requests();
    let (_, cache, text) = ask(&c, &lb, &cut, &[]).await;
    assert_eq!(cache, "MISS", "a cut stream must not be stored");
    assert_eq!(s.stats().requests(), before + 1);
    assert!(String::from_utf8(text.to_vec())
        .unwrap()
        .contains("data: [DONE]"));
    assert_eq!(ask(&c, &lb, &cut, &[]).await.1, "HIT");
}

/// 50 identical requests at once; returns their statuses, cache statuses and bodies.
async fn fifty_at_once(lb: &Balancer, body: &Value) -> Vec<(u16, String, bytes::Bytes)> {
    let c = client();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let (c, url, body) = (c.clone(), lb.url(PATH), body.to_string());
        set.spawn(async move {
            let r = c
                .post(url)
                .header("content-type", "application/json")
                .header("x-sim-ttft-ms", "400")
                .header("x-sim-token-delay-ms", "50")
                .body(body)
                .send()
                .await
                .expect("response");
            let status = r.status().as_u16();
            let cache = cache_status(&r);
            (status, cache, r.bytes().await.expect("body"))
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_identical_misses_make_one_upstream_request() {
    let s = sim("s").await;
    let lb = Balancer::start(&config(&[&s], "      lock_timeout: 20s\n", "")).await;
    for (i, stream) in [false, true].into_iter().enumerate() {
        let answers = fifty_at_once(&lb, &prompt("together", stream)).await;
        assert_eq!(s.stats().requests(), i as u64 + 1, "stream={stream}");
        let first = &answers[0].2;
        for (status, cache, body) in &answers {
            assert_eq!(*status, 200);
            assert!(cache == "MISS" || cache == "HIT", "{cache}");
            assert_eq!(body, first, "stream={stream}: every answer is the same");
        }
        if stream {
            let text = String::from_utf8(first.to_vec()).unwrap();
            assert!(text.contains("tok0") && text.trim_end().ends_with("data: [DONE]"));
        }
    }
    let m = lb.metrics().await;
    assert!(results(&m, "coalesced") > 0.0);
    assert_eq!(
        results(&m, "coalesced") + results(&m, "hit") + results(&m, "miss"),
        100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_answer_cannot_be_shared_releases_its_followers() {
    let s = sim("s").await;
    let lb = Balancer::start(&config(&[&s], "      lock_timeout: 20s\n", "")).await;
    let c = client();
    let body = prompt("private", false).to_string();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..5 {
        let (c, url, body) = (c.clone(), lb.url(PATH), body.clone());
        set.spawn(async move {
            let r = c
                .post(url)
                .header("x-sim-ttft-ms", "300")
                .header("x-sim-cache-control", "private")
                .body(body)
                .send()
                .await
                .expect("response");
            (r.status().as_u16(), cache_status(&r))
        });
    }
    while let Some(r) = set.join_next().await {
        assert_eq!(r.unwrap(), (200, "MISS".to_string()));
    }
    assert_eq!(s.stats().requests(), 5, "each request went upstream itself");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filling_past_max_bytes_evicts_and_stays_under_the_bound() {
    let s = sim("s").await;
    let cache = "      max_bytes: 16KiB\n      max_entry_bytes: 4KiB\n";
    let lb = Balancer::start(&config(&[&s], cache, "")).await;
    let c = client();
    // The simulator honours max_tokens, as a model server does: let the answers be long.
    let long = |content: &str| {
        let mut p = prompt(content, false);
        p["max_tokens"] = json!(1000);
        p
    };
    let mut sizes = 0;
    for i in 0..40 {
        let (status, cache, body) = ask(
            &c,
            &lb,
            &long(&format!("prompt {i}")),
            &[("x-sim-tokens", "200"), ("x-sim-token-delay-ms", "0")],
        )
        .await;
        assert_eq!((status, cache.as_str()), (200, "MISS"));
        sizes += body.len();
    }
    assert!(
        sizes > 3 * 16 * 1024,
        "the test must fill well past the bound"
    );
    // Too large for max_entry_bytes: answered, never stored.
    let big = long("big");
    assert_eq!(
        ask(&c, &lb, &big, &[("x-sim-tokens", "1000")]).await.1,
        "MISS"
    );
    assert_eq!(
        ask(&c, &lb, &big, &[("x-sim-tokens", "1000")]).await.1,
        "MISS"
    );

    let m = lb.metrics().await;
    let bytes = metric(&m, "switchyard_cache_bytes", &[("route", "chat")]);
    let entries = metric(&m, "switchyard_cache_entries", &[("route", "chat")]);
    let evictions = metric(&m, "switchyard_cache_evictions_total", &[("route", "chat")]);
    assert!(bytes > 0.0 && bytes <= 16384.0, "stored bytes {bytes}");
    assert!((2.0..40.0).contains(&entries), "entries {entries}");
    assert!(evictions > 0.0, "entries must have been evicted");
    let status = lb.status().await;
    assert!(
        status["cache"]["bytes"].as_u64().unwrap() <= 16384,
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_entries_refresh_and_serve_stale_when_upstream_is_down() {
    let s = sim("s").await;
    let fallback = "    fallback:\n      body: '{\"busy\":true}'\n";
    let cache = "      ttl: 1s\n      stale_if_error: 1h\n";
    let lb = Balancer::start(&config(&[&s], cache, fallback)).await;
    let c = client();
    let (one, two, three) = (
        prompt("one", false),
        prompt("two", false),
        prompt("three", false),
    );
    let (_, _, stored) = ask(&c, &lb, &one, &[]).await;
    ask(&c, &lb, &two, &[]).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;

    // Expired, upstream up: answered (and refreshed) from upstream.
    let (_, cache, refreshed) = ask(&c, &lb, &two, &[]).await;
    assert_eq!(cache, "EXPIRED");
    assert_eq!(s.stats().requests(), 3);
    assert_eq!(
        ask(&c, &lb, &two, &[]).await,
        (200, "HIT".into(), refreshed)
    );

    s.shutdown().await;
    // Expired, upstream down: the stale entry, not the fallback.
    let r = send(&c, &lb, PATH, &one.to_string(), &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(cache_status(&r), "STALE");
    assert!(r.headers().get("x-switchyard-fallback").is_none());
    assert!(r.headers()["age"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(r.bytes().await.unwrap(), stored);
    // Nothing stored: the fallback.
    let r = send(&c, &lb, PATH, &three.to_string(), &[]).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-switchyard-fallback").is_some());
    assert_eq!(cache_status(&r), "MISS");
    assert_eq!(r.text().await.unwrap(), r#"{"busy":true}"#);
    let m = lb.metrics().await;
    assert_eq!(results(&m, "stale"), 1.0);
    assert_eq!(results(&m, "expired"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_stale_if_error_an_expired_entry_is_not_served() {
    let s = sim("s").await;
    let fallback = "    fallback:\n      body: '{\"busy\":true}'\n";
    let lb = Balancer::start(&config(&[&s], "      ttl: 1s\n", fallback)).await;
    let c = client();
    let one = prompt("one", false);
    ask(&c, &lb, &one, &[]).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    s.shutdown().await;
    let r = send(&c, &lb, PATH, &one.to_string(), &[]).await;
    assert!(r.headers().get("x-switchyard-fallback").is_some());
    assert_eq!(cache_status(&r), "MISS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_control_no_cache_refreshes_no_store_bypasses_and_stored_answers_obey_upstream() {
    let s = sim("s").await;
    let lb = Balancer::start(&config(&[&s], "      ttl: 10m\n", "")).await;
    let c = client();
    let body = prompt("controls", false);

    // no-store request: upstream, nothing stored.
    let no_store = [("cache-control", "no-store")];
    assert_eq!(ask(&c, &lb, &body, &no_store).await.1, "BYPASS");
    let (_, cache, first) = ask(&c, &lb, &body, &[]).await;
    assert_eq!(cache, "MISS");
    assert_eq!(
        ask(&c, &lb, &body, &[]).await,
        (200, "HIT".into(), first.clone())
    );
    assert_eq!(s.stats().requests(), 2);

    // no-cache request: skips the stored entry, goes upstream, and refreshes the entry.
    let (_, cache, fresh) = ask(&c, &lb, &body, &[("cache-control", "no-cache")]).await;
    assert_eq!(cache, "MISS");
    assert_eq!(s.stats().requests(), 3);
    assert_ne!(fresh, first, "the simulator numbers its answers");
    assert_eq!(ask(&c, &lb, &body, &[]).await, (200, "HIT".into(), fresh));

    // Answers the upstream marks no-store or private are not stored.
    for (i, cc) in ["no-store", "private, max-age=60"].into_iter().enumerate() {
        let b = prompt(&format!("marked {i}"), false);
        let (status, cache, _) = ask(&c, &lb, &b, &[("x-sim-cache-control", cc)]).await;
        assert_eq!((status, cache.as_str()), (200, "MISS"));
        let before = s.stats().requests();
        assert_eq!(
            ask(&c, &lb, &b, &[]).await.1,
            "MISS",
            "{cc} must not be stored"
        );
        assert_eq!(s.stats().requests(), before + 1);
    }
    // Errors are not stored either.
    let e = prompt("error", false);
    let (status, cache, _) = ask(&c, &lb, &e, &[("x-sim-status", "400")]).await;
    assert_eq!((status, cache.as_str()), (400, "MISS"));
    assert_eq!(ask(&c, &lb, &e, &[]).await.1, "MISS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_status_and_reload_keep_or_replace_the_store() {
    let s = sim("s").await;
    let lb = Balancer::start(&config(&[&s], "      ttl: 10m\n", "")).await;
    let c = client();
    let body = prompt("keep me", false);
    ask(&c, &lb, &body, &[]).await;
    let status = lb.status().await;
    assert_eq!(status["cache"]["entries"], 1, "{status}");
    assert_eq!(status["cache"]["routes"][0]["route"], "chat");
    assert_eq!(status["cache"]["routes"][0]["max_bytes"], 256 * 1024 * 1024);

    let reload = |lb: &Balancer, cfg: String| {
        lb.write_config(&cfg);
        let c = client();
        let url = lb.admin_url("/reload");
        async move {
            let r = c.post(url).send().await.unwrap();
            assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        }
    };
    // Same settings, and a changed ttl (read per request): the entries survive.
    reload(&lb, config(&[&s], "      ttl: 10m\n", "")).await;
    assert_eq!(ask(&c, &lb, &body, &[]).await.1, "HIT");
    reload(&lb, config(&[&s], "      ttl: 20m\n", "")).await;
    assert_eq!(ask(&c, &lb, &body, &[]).await.1, "HIT");
    // A new max_bytes shapes a new store.
    reload(
        &lb,
        config(&[&s], "      ttl: 20m\n      max_bytes: 1MiB\n", ""),
    )
    .await;
    assert_eq!(ask(&c, &lb, &body, &[]).await.1, "MISS");
    assert_eq!(ask(&c, &lb, &body, &[]).await.1, "HIT");

    let purge = |q: &str| c.post(lb.admin_url(&format!("/cache/purge{q}"))).send();
    assert_eq!(purge("?route=nope").await.unwrap().status(), 404);
    let r: Value = purge("?route=chat").await.unwrap().json().await.unwrap();
    assert_eq!(r["purged"][0]["entries"], 1, "{r}");
    assert_eq!(lb.status().await["cache"]["entries"], 0);
    assert_eq!(ask(&c, &lb, &body, &[]).await.1, "MISS");
    let r: Value = purge("").await.unwrap().json().await.unwrap();
    assert_eq!(r["purged"][0]["route"], "chat", "{r}");
    assert_eq!(ask(&c, &lb, &body, &[]).await.1, "MISS");
    let m = lb.metrics().await;
    assert_eq!(
        metric(&m, "switchyard_cache_entries", &[("route", "chat")]),
        1.0
    );
}

/// Wait (up to 15 s) until the cache holds `n` entries.
async fn wait_entries(lb: &Balancer, n: u64) {
    let until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < until {
        if lb.status().await["cache"]["entries"].as_u64() == Some(n) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the cache never held {n} entries; log:\n{}", lb.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_file_fills_the_cache_at_start_and_after_reload() {
    let s = sim("s").await;
    let dir = tempfile::tempdir().unwrap();
    let warm = dir.path().join("warm.jsonl");
    // (The default path, the route's prefix + "chat/completions", suits a "/v1/" route.)
    let line = |content: &str| json!({"path": PATH, "body": prompt(content, false)}).to_string();
    let streamed = json!({
        "path": PATH,
        "headers": {"authorization": "Bearer team"},
        "body": prompt("streamed", true),
    });
    std::fs::write(
        &warm,
        format!(
            "# common prompts\n{}\nnot json\n{}\n\n{}\n",
            line("warm one"),
            streamed,
            line("warm two")
        ),
    )
    .unwrap();
    let cache = format!("      warm: {}\n", warm.display());
    let lb = Balancer::start(&config(&[&s], &cache, "")).await;
    wait_entries(&lb, 3).await;
    assert_eq!(s.stats().requests(), 3, "log:\n{}", lb.log());
    let c = client();
    assert_eq!(ask(&c, &lb, &prompt("warm one", false), &[]).await.1, "HIT");
    assert_eq!(ask(&c, &lb, &prompt("warm two", false), &[]).await.1, "HIT");
    let team = [("authorization", "Bearer team")];
    assert_eq!(
        ask(&c, &lb, &prompt("streamed", true), &team).await.1,
        "HIT"
    );
    assert_eq!(s.stats().requests(), 3);
    let log = lb.log();
    assert!(log.contains("warm.jsonl:3: skipped"), "{log}");

    // After a reload the file is sent again: known prompts hit, a new one fills.
    std::fs::write(
        &warm,
        format!("{}\n{}\n", line("warm one"), line("warm three")),
    )
    .unwrap();
    lb.write_config(&config(&[&s], &cache, ""));
    let r = c.post(lb.admin_url("/reload")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    wait_entries(&lb, 4).await;
    assert_eq!(s.stats().requests(), 4);
    assert_eq!(
        ask(&c, &lb, &prompt("warm three", false), &[]).await.1,
        "HIT"
    );
}
