//! The seeded fault schedule through real sockets: each fate as a client sees it, arrivals counted
//! by id, the arrival log, and the same fates for the same requests on a fresh server.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;

/// A fast simulator named `name` whose every request meets the faults of `schedule`.
fn chaotic(name: &str, schedule: &str) -> SimConfig {
    SimConfig {
        name: name.into(),
        chaos: Some(Chaos {
            seed: 1,
            shares: schedule.parse().expect("valid schedule"),
            slow: Duration::from_millis(300),
        }),
        ..fast()
    }
}

#[tokio::test]
async fn sim_chaos_cut_stops_streams_and_plain_answers_part_way() {
    let sim = start(chaotic("p1", "cut=1")).await;
    let client = reqwest::Client::new();
    let req = chat(&sim, &client, &hello(true)).header(header::CHAOS_ID, "1");
    let (events, end) = read_sse(req.send().await.expect("send"), Duration::from_secs(2)).await;
    assert_eq!(end, End::Aborted);
    let text = tokens_of(&events);
    assert!(
        !text.is_empty() && text.len() < answer_text(4).len(),
        "cut stream carried {text:?}"
    );
    assert!(events.iter().all(|e| e.1 != "[DONE]"));

    let resp = chat(&sim, &client, &hello(false))
        .header(header::CHAOS_ID, "2")
        .send()
        .await
        .expect("the header arrives");
    assert_eq!(resp.status(), 200);
    let announced = resp.content_length().expect("content-length");
    let body = resp.bytes().await;
    assert!(body.is_err(), "a cut body must end in an error: {body:?}");
    assert!(announced > 0);
}

#[tokio::test]
async fn sim_chaos_hang_sends_a_stream_header_and_no_token() {
    let sim = start(chaotic("p1", "hang=1")).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(400))
        .build()
        .expect("client");
    let resp = chat(&sim, &client, &hello(true))
        .header(header::CHAOS_ID, "1")
        .send()
        .await
        .expect("a stream's header comes at once");
    assert_eq!(resp.status(), 200);
    let (events, end) = read_sse(resp, Duration::from_millis(300)).await;
    assert_eq!((events.len(), end), (0, End::Stalled));

    let err = chat(&sim, &client, &hello(false))
        .header(header::CHAOS_ID, "2")
        .send()
        .await
        .expect_err("a plain request gets nothing");
    assert!(err.is_timeout(), "{err:?}");
}

#[tokio::test]
async fn sim_chaos_slow_first_token_then_the_whole_answer() {
    let sim = start(chaotic("p1", "slow=1")).await;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let req = chat(&sim, &client, &hello(true)).header(header::CHAOS_ID, "1");
    let (events, end) = read_sse(req.send().await.expect("send"), Duration::from_secs(2)).await;
    assert_eq!(end, End::Finished);
    let first = events.first().expect("events").0 - started;
    assert!(
        first >= Duration::from_millis(300),
        "first token after {first:?}"
    );
    assert_eq!(tokens_of(&events), answer_text(4));
    assert_eq!(events.last().map(|e| e.1.as_str()), Some("[DONE]"));
}

#[tokio::test]
async fn sim_chaos_reset_and_status() {
    let sim = start(chaotic("p1", "reset=1")).await;
    let client = reqwest::Client::new();
    let err = chat(&sim, &client, &hello(false))
        .header(header::CHAOS_ID, "1")
        .send()
        .await
        .expect_err("closed without a response");
    assert!(!err.is_timeout() && err.status().is_none(), "{err:?}");

    let sim = start(chaotic("p2", "status503=1")).await;
    let resp = chat(&sim, &client, &hello(true))
        .header(header::CHAOS_ID, "1")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
}

#[tokio::test]
async fn sim_chaos_headers_win_and_arrivals_are_counted_and_logged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("arrivals.log");
    let sim = start(SimConfig {
        arrivals_log: Some(log.clone()),
        ..chaotic("p1", "status503=1")
    })
    .await;
    let client = reqwest::Client::new();
    for _ in 0..2 {
        let resp = chat(&sim, &client, &hello(false))
            .header(header::CHAOS_ID, "a")
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 503);
    }
    let resp = chat(&sim, &client, &hello(false))
        .header(header::CHAOS_ID, "b")
        .header(header::FAIL, "none")
        .send()
        .await
        .expect("send");
    assert_eq!(
        resp.status(),
        200,
        "a failure header decides, not the schedule"
    );
    let resp = chat(&sim, &client, &hello(false))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 503, "no id: drawn by arrival number");
    assert_eq!((sim.arrivals("a"), sim.arrivals("b")), (2, 1));

    let v: Value = client
        .get(url(&sim, "/sim/arrivals"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (v["ids"].as_u64(), v["repeated"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(
        sim.stats().requests(),
        4,
        "GET /sim/arrivals is no model request"
    );

    let text = std::fs::read_to_string(&log).expect("log");
    let fields: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split('\t').skip(1).collect())
        .collect();
    assert_eq!(
        fields,
        [
            ["1", "a", "1", "status503"],
            ["2", "a", "2", "status503"],
            ["3", "b", "1", "knob"],
            ["4", "-", "4", "status503"],
        ]
    );
}

#[tokio::test]
async fn sim_chaos_same_requests_meet_the_same_fates_on_a_fresh_server() {
    let schedule = "reset=0.2,status503=0.2,cut=0.2";
    let outcomes = |sim: SimHandle| async move {
        let client = reqwest::Client::new();
        let mut seen = Vec::new();
        for i in 0..40 {
            let resp = chat(&sim, &client, &hello(false))
                .header(header::CHAOS_ID, i.to_string())
                .send()
                .await;
            seen.push(match resp {
                Err(_) => "reset".to_string(),
                Ok(r) if r.status() != 200 => r.status().as_u16().to_string(),
                Ok(r) => match r.bytes().await {
                    Ok(_) => "ok".to_string(),
                    Err(_) => "cut".to_string(),
                },
            });
        }
        seen
    };
    let first = outcomes(start(chaotic("p1", schedule)).await).await;
    let again = outcomes(start(chaotic("p1", schedule)).await).await;
    assert_eq!(first, again);
    for fate in ["reset", "503", "cut", "ok"] {
        assert!(first.iter().any(|o| o == fate), "no {fate} in {first:?}");
    }
    let elsewhere = outcomes(start(chaotic("p2", schedule)).await).await;
    assert_ne!(first, elsewhere, "another server draws its own fates");
}
