//! Shutdown, restart and the counters tests rely on.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;

#[tokio::test]
async fn sim_shutdown_drops_connections_and_port_can_be_reused() {
    let sim = start(SimConfig {
        token_delay: Duration::from_millis(50),
        tokens: 100,
        ..fast()
    })
    .await;
    let addr = sim.addr();
    let client = reqwest::Client::new();
    let stream = chat(&sim, &client, &hello(true))
        .send()
        .await
        .expect("send");
    let hung = tokio::spawn(
        chat(&sim, &client, &hello(false))
            .header(header::FAIL, "hang")
            .send(),
    );
    while sim.stats().requests() < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::timeout(Duration::from_secs(1), sim.shutdown())
        .await
        .expect("shutdown finishes");

    let (_, end) = read_sse(stream, Duration::from_secs(1)).await;
    assert_eq!(end, End::Aborted, "open stream must be cut, not finished");
    let hung = tokio::time::timeout(Duration::from_secs(1), hung)
        .await
        .expect("hung request released");
    assert!(hung.expect("task").is_err());
    let fresh = reqwest::Client::new();
    let refused = fresh.get(format!("http://{addr}/health")).send().await;
    assert!(refused.is_err(), "still listening after shutdown");

    let again = SimHandle::start(addr, fast())
        .await
        .expect("rebind same port");
    let ok = chat(&again, &fresh, &hello(false))
        .send()
        .await
        .expect("send");
    assert_eq!(ok.status(), 200);
    assert_eq!(again.stats().requests(), 1);
}

#[tokio::test]
async fn sim_stats_count_requests_concurrency_and_health() {
    let sim = start(SimConfig {
        ttft: Duration::from_millis(200),
        ..fast()
    })
    .await;
    let client = reqwest::Client::new();
    let before = Instant::now();
    let (a, b, c) = tokio::join!(
        chat(&sim, &client, &hello(false)).send(),
        chat(&sim, &client, &hello(false)).send(),
        chat(&sim, &client, &hello(false)).send(),
    );
    for r in [a, b, c] {
        assert_eq!(r.expect("send").status(), 200);
    }
    let stats = sim.stats();
    assert_eq!(
        (stats.requests(), stats.max_concurrent(), stats.current()),
        (3, 3, 0)
    );
    let arrivals = stats.arrivals();
    assert_eq!(arrivals.len(), 3);
    assert!(arrivals
        .iter()
        .all(|t| *t >= before && *t <= Instant::now()));

    let health = client.get(url(&sim, "/health")).send().await.expect("send");
    assert_eq!(health.status(), 200);
    let v: Value = health.json().await.expect("json");
    assert_eq!(v, json!({"status": "ok", "instance": sim.name()}));
    sim.set_health_status(503);
    let health = client.get(url(&sim, "/health")).send().await.expect("send");
    assert_eq!(health.status(), 503);
    assert_eq!((stats.health_hits(), stats.requests()), (2, 3));
}
