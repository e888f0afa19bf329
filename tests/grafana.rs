//! The Grafana dashboard shipped in `conf/grafana-dashboard.json` is importable as it is (the
//! Prometheus data source is a template variable, panel ids are unique) and uses only metrics a
//! running switchyard exports: every `switchyard_*` name in its expressions must be a series of
//! `/metrics` once some traffic (streams, a retry, a cache hit, a reload) has created the label
//! sets.

use crate::common::*;
use serde_json::Value;
use std::collections::BTreeSet;

const BOARD: &str = include_str!("../conf/grafana-dashboard.json");

/// Every string under an `expr` key, anywhere in `v`.
fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", Value::String(e)) => out.push(e.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

/// The `switchyard_*` metric names in a PromQL expression.
fn names(expr: &str) -> Vec<String> {
    let re = regex::Regex::new(r"\bswitchyard_[a-z0-9_]+").unwrap();
    re.find_iter(expr).map(|m| m.as_str().to_string()).collect()
}

fn panels(board: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for p in board["panels"].as_array().expect("panels") {
        all.push(p);
        if let Some(inner) = p["panels"].as_array() {
            all.extend(inner);
        }
    }
    all
}

#[test]
fn the_board_is_importable_with_the_data_source_as_a_variable() {
    let board: Value = serde_json::from_str(BOARD).expect("the board is JSON");
    assert!(board["title"].is_string() && board["uid"].is_string());
    assert!(board["schemaVersion"].as_u64().unwrap() >= 30);
    let vars = board["templating"]["list"].as_array().expect("templating");
    assert!(
        vars.iter().any(|v| v["type"] == "datasource"
            && v["query"] == "prometheus"
            && v["name"] == "datasource"),
        "a Prometheus data source variable"
    );
    let mut ids = BTreeSet::new();
    for p in panels(&board) {
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "duplicate id {p}"
        );
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        let g = &p["gridPos"];
        assert!(
            g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24,
            "{}",
            p["title"]
        );
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{}", p["title"]);
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}");
            assert!(t["expr"].as_str().is_some_and(|e| e.contains("$instance")));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_board_uses_is_exported() {
    let board: Value = serde_json::from_str(BOARD).expect("the board is JSON");
    let mut all = Vec::new();
    exprs(&board, &mut all);
    let used: BTreeSet<String> = all.iter().flat_map(|e| names(e)).collect();
    assert!(used.len() >= 15, "the board uses {used:?}");

    let s = sim("p").await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let body = format!(
        r#"clusters:
  primary:
    health_check: {{ interval: 1s }}
    peers:
      - {{ addr: "{}" }}
  flaky:
    breaker: {{ enabled: false }}
    peers:
      - {{ addr: "{dead_addr}" }}
      - {{ addr: "{}" }}
routes:
  - name: chat
    match: {{ path_prefix: "/v1/chat/" }}
    split:
      - {{ cluster: primary, weight: 1 }}
    cache: {{}}
  - name: flaky
    match: {{ path_prefix: "/v1/" }}
    split:
      - {{ cluster: flaky, weight: 1 }}
"#,
        s.addr(),
        s.addr()
    );
    let lb = Balancer::start(&body).await;
    lb.wait_ready().await;
    let c = client();
    let cacheable = r#"{"model":"m","temperature":0,"messages":[{"role":"user","content":"hi"}]}"#;
    for body in [
        chat("a", false),
        chat("b", true),
        cacheable.into(),
        cacheable.into(),
    ] {
        let r = c
            .post(lb.url("/v1/chat/completions"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    // Round robin over [dead, live]: one of two requests is retried.
    for _ in 0..2 {
        let r = c
            .post(lb.url("/v1/completions"))
            .body(r#"{"prompt":"x"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(lb.reload().await.0, 200);

    let text = lb.metrics().await;
    let exported: BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let missing: Vec<&String> = used
        .iter()
        .filter(|n| !exported.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the board uses metrics switchyard does not export: {missing:?}\n{text}"
    );
}
