//! The prefix cache: a prompt whose prefix is cached gets its first token sooner, and `/metrics`
//! shows the vLLM gauges and the cache's counters.

use super::*;

#[tokio::test]
async fn sim_cached_prefix_answers_sooner_and_metrics_show_it() {
    let sim = start(SimConfig {
        prefix_cache_blocks: 64,
        block_bytes: 256,
        prefill_per_block: Duration::from_millis(20),
        ..fast()
    })
    .await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let system = "the tenant's long system prompt ".repeat(64);
    let body = |q: &str| {
        json!({"model": "m", "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": q},
        ]})
    };
    let timed = |b: Value| {
        let req = chat(&sim, &client, &b);
        async move {
            let t = Instant::now();
            assert_eq!(req.send().await.expect("send").status(), 200);
            t.elapsed()
        }
    };
    // Eight blocks of system prompt: at least 160 ms cold, about 10 ms warm.
    let cold = timed(body("first question")).await;
    let warm = timed(body("second question")).await;
    assert!(cold >= Duration::from_millis(160), "{cold:?}");
    assert!(
        warm + Duration::from_millis(100) < cold,
        "{warm:?} vs {cold:?}"
    );
    let (queries, hits) = sim.prefix_cache_counts();
    assert!(hits >= 8 && queries > hits, "{queries} {hits}");

    let page = client
        .get(url(&sim, "/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        page.contains("vllm:num_requests_running{model_name=\"sim\"} 0"),
        "{page}"
    );
    assert!(
        page.contains("vllm:num_requests_waiting{model_name=\"sim\"} 0"),
        "{page}"
    );
    assert!(page.contains(&format!(
        "vllm:prefix_cache_hits_total{{model_name=\"sim\"}} {hits}"
    )));
    assert!(
        page.contains("vllm:kv_cache_usage_perc{model_name=\"sim\"} 0."),
        "{page}"
    );
    sim.set_reported_load(Some(12), Some(1.0));
    let page = client
        .get(url(&sim, "/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        page.contains("vllm:num_requests_waiting{model_name=\"sim\"} 12"),
        "{page}"
    );
    assert!(
        page.contains("vllm:kv_cache_usage_perc{model_name=\"sim\"} 1\n"),
        "{page}"
    );
}
