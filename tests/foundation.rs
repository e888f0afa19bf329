//! Foundation behaviour through real sockets: weighted split, sticky keys, SSE streaming, large
//! bodies, timeouts, h2c, 404s, metrics, and `switchyard check`.

use crate::common::*;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn two_clusters(p1: &SimHandle, p2: &SimHandle, s1: &SimHandle, extra_route: &str) -> String {
    format!(
        r#"clusters:
  primary:
    peers:
      - {{ addr: "{}", weight: 2 }}
      - {{ addr: "{}" }}
  secondary:
    peers:
      - {{ addr: "{}" }}
routes:
  - name: chat
    match: {{ path_prefix: "/v1/" }}
    split:
      - {{ cluster: primary, weight: 90 }}
      - {{ cluster: secondary, weight: 10 }}
{extra_route}"#,
        p1.addr(),
        p2.addr(),
        s1.addr()
    )
}

async fn served_by(c: &reqwest::Client, url: &str, body: String, user: Option<&str>) -> String {
    let mut req = c
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(u) = user {
        req = req.header("x-user-id", u);
    }
    let r = req.send().await.expect("request");
    assert_eq!(r.status(), 200);
    r.headers()["x-sim-instance"].to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn split_90_10_and_peer_weights_hold_over_2000_requests() {
    let (p1, p2, s1) = (sim("p1").await, sim("p2").await, sim("s1").await);
    let lb = Balancer::start(&two_clusters(&p1, &p2, &s1, "")).await;
    let c = client();
    let url = lb.url("/v1/chat/completions");
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..16 {
        let (c, url) = (c.clone(), url.clone());
        tasks.spawn(async move {
            let mut mine = Vec::new();
            for i in 0..125 {
                mine.push(served_by(&c, &url, chat(&format!("q{w}-{i}"), false), None).await);
            }
            mine
        });
    }
    while let Some(r) = tasks.join_next().await {
        for name in r.unwrap() {
            *counts.entry(name).or_default() += 1;
        }
    }
    let total: usize = counts.values().sum();
    assert_eq!(total, 2000);
    let primary = counts["p1"] + counts["p2"];
    let share = primary as f64 / total as f64;
    assert!(
        (0.87..=0.93).contains(&share),
        "primary share {share}: {counts:?}"
    );
    let p1_share = counts["p1"] as f64 / primary as f64;
    assert!(
        (0.6367..=0.6967).contains(&p1_share),
        "p1 share of primary {p1_share} (weight 2:1): {counts:?}"
    );
    let m = lb.metrics().await;
    let counted = metric(
        &m,
        "switchyard_requests_total",
        &[("route", "chat"), ("cluster", "primary"), ("code", "200")],
    );
    assert_eq!(counted as usize, primary, "metrics count what was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_keys_keep_their_side_of_the_split() {
    let (p1, p2, s1) = (sim("p1").await, sim("p2").await, sim("s1").await);
    let lb = Balancer::start(&two_clusters(
        &p1,
        &p2,
        &s1,
        "    sticky: \"header:x-user-id\"\n",
    ))
    .await;
    let c = client();
    let url = lb.url("/v1/chat/completions");
    let mut secondary_users = 0;
    for u in 0..60 {
        let user = format!("user-{u}");
        let mut sides = std::collections::HashSet::new();
        for i in 0..8 {
            let who = served_by(&c, &url, chat(&format!("{i}"), false), Some(&user)).await;
            sides.insert(if who == "s1" { "secondary" } else { "primary" });
        }
        assert_eq!(sides.len(), 1, "{user} moved between sides: {sides:?}");
        if sides.contains("secondary") {
            secondary_users += 1;
        }
    }
    // 10% of 60 users, loosely: the hash must not send everyone to one side.
    assert!(
        (1..=20).contains(&secondary_users),
        "{secondary_users} users on secondary"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_chunks_arrive_spread_out_not_at_the_end() {
    let s = sim_with(SimConfig {
        name: "slow".into(),
        ttft: Duration::from_millis(50),
        token_delay: Duration::from_millis(150),
        tokens: 5,
        ..SimConfig::default()
    })
    .await;
    let lb = Balancer::start(&format!(
        "clusters:\n  c:\n    peers: [ {{ addr: \"{}\" }} ]\nroutes:\n  - name: r\n    split: [ {{ cluster: c }} ]\n",
        s.addr()
    ))
    .await;
    let start = Instant::now();
    let mut r = client()
        .post(lb.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(chat("hi", true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut arrivals = Vec::new();
    let mut text = String::new();
    while let Some(chunk) = r.chunk().await.unwrap() {
        arrivals.push(start.elapsed());
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(
        arrivals.len() >= 4,
        "only {} chunks: {text}",
        arrivals.len()
    );
    let spread = *arrivals.last().unwrap() - arrivals[0];
    // 5 tokens 150 ms apart: the first arrives ~600 ms before the end. Buffering would make it ~0.
    assert!(
        spread >= Duration::from_millis(400),
        "chunks arrived within {spread:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mib_request_body_arrives_intact() {
    let s = sim("big").await;
    let lb = Balancer::start(&format!(
        "clusters:\n  c:\n    peers: [ {{ addr: \"{}\" }} ]\nroutes:\n  - name: r\n    split: [ {{ cluster: c }} ]\n",
        s.addr()
    ))
    .await;
    let filler: String = (0..(1 << 20))
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let body = chat(&filler, false);
    assert!(body.len() > 1 << 20);
    let want = format!("{:x}", Sha256::digest(body.as_bytes()));
    let v: serde_json::Value = client()
        .post(lb.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["request_bytes"].as_u64(), Some(body.len() as u64));
    assert_eq!(v["request_sha256"].as_str(), Some(want.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_route_is_404_json_and_h2c_works() {
    let s = sim("s").await;
    let lb = Balancer::start(&format!(
        "clusters:\n  c:\n    peers: [ {{ addr: \"{}\" }} ]\nroutes:\n  - name: r\n    match: {{ path_prefix: \"/v1/\" }}\n    split: [ {{ cluster: c }} ]\n",
        s.addr()
    ))
    .await;
    let r = client().get(lb.url("/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/json");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "no_route");

    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2
        .post(lb.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(chat("over h2c", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_count_requests() {
    let s = sim("s").await;
    let lb = Balancer::start(&format!(
        "clusters:\n  c:\n    peers: [ {{ addr: \"{}\" }} ]\nroutes:\n  - name: r\n    match: {{ path_prefix: \"/v1/\" }}\n    split: [ {{ cluster: c }} ]\n",
        s.addr()
    ))
    .await;
    let c = client();
    for _ in 0..7 {
        let r = c
            .post(lb.url("/v1/completions"))
            .body(r#"{"prompt":"x"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    for _ in 0..3 {
        assert_eq!(c.get(lb.url("/other")).send().await.unwrap().status(), 404);
    }
    // A request is counted once its answer has gone out, so the last ones may still be on
    // their way into the counters when the client has its answers: wait for them.
    wait_until(
        Duration::from_secs(5),
        "all 10 requests counted",
        || async {
            let text = lb.metrics().await;
            let counted = |code: &str| {
                text.lines()
                    .filter(|l| l.starts_with("switchyard_requests_total{"))
                    .filter(|l| l.contains(&format!("code=\"{code}\"")))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum::<f64>()
            };
            counted("200") >= 7.0 && counted("404") >= 3.0
        },
    )
    .await;
    let text = lb.metrics().await;
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("prometheus text");
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    };
    assert_eq!(
        value(
            "switchyard_requests_total",
            &[("route", "r"), ("code", "200")]
        ),
        7.0
    );
    assert_eq!(
        value(
            "switchyard_requests_total",
            &[("route", "none"), ("code", "404")]
        ),
        3.0
    );
    assert!(scrape
        .samples
        .iter()
        .any(|s| s.metric == "switchyard_request_duration_seconds_count"));
    assert!(scrape
        .samples
        .iter()
        .any(|s| s.metric == "switchyard_upstream_latency_seconds_count"));
    assert!(scrape
        .samples
        .iter()
        .any(|s| s.metric == "switchyard_inflight_requests"));
    // No label carries a raw path.
    assert!(!text.contains("/other"));
}
