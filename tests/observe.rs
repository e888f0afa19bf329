//! Observing switchyard through real sockets: the LLM metrics (time to first token, gaps between
//! stream chunks, tokens, stream length) and the access log fields they feed, W3C trace context
//! propagation, and the OTLP export of request and try spans to a receiver on loopback.

use crate::common::*;
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn route(cluster_yaml: &str, extra: &str) -> String {
    format!(
        "clusters:\n{cluster_yaml}routes:\n  - name: chat\n    match: {{ path_prefix: \"/v1/\" }}\n    split:\n      - {{ cluster: primary, weight: 1 }}\n{extra}"
    )
}

fn one_peer(addr: std::net::SocketAddr) -> String {
    format!("  primary:\n    peers:\n      - {{ addr: \"{addr}\" }}\n")
}

async fn wait_lines(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let mut lines = Vec::new();
    wait_until(Duration::from_secs(10), "access log lines", || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        lines = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let enough = lines.len() >= n;
        async move { enough }
    })
    .await;
    lines
}

/// The `usage` of a whole answer, or of the last SSE event that has one.
fn usage_of(body: &str) -> (u64, u64) {
    let json = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .rfind(|d| d.contains("\"usage\""))
        .unwrap_or(body);
    let v: serde_json::Value = serde_json::from_str(json).expect("usage JSON");
    let u = &v["usage"];
    (
        u["prompt_tokens"].as_u64().expect("prompt_tokens"),
        u["completion_tokens"].as_u64().expect("completion_tokens"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttft_inter_token_tokens_and_stream_duration_are_measured_and_logged() {
    let s = sim_with(SimConfig {
        name: "p".into(),
        ttft: Duration::from_millis(40),
        token_delay: Duration::from_millis(5),
        tokens: 6,
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let lb = Balancer::start(&route(
        &one_peer(s.addr()),
        &format!("access_log: {{ path: {} }}\n", log.display()),
    ))
    .await;
    let c = client();
    let mut want = (0, 0);
    let mut logged = Vec::new();
    for stream in [false, true] {
        let r = c
            .post(lb.url("/v1/chat/completions"))
            .body(chat("how many tokens is this prompt", stream))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let (p, k) = usage_of(&r.text().await.unwrap());
        assert!(p > 0 && k == 6, "usage {p} {k}");
        want = (want.0 + p, want.1 + k);
        logged.push((p, k));
    }
    let m = lb.metrics().await;
    let rc = [("route", "chat"), ("cluster", "primary")];
    assert_eq!(metric(&m, "switchyard_ttft_seconds_count", &rc), 2.0, "{m}");
    // Both answers waited for the simulated 40 ms to the first token.
    assert!(metric(&m, "switchyard_ttft_seconds_sum", &rc) >= 0.08);
    // The stream: its first chunk, then gaps before the other token chunks and the end.
    assert!(
        metric(&m, "switchyard_inter_token_seconds_count", &rc) >= 5.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "switchyard_stream_duration_seconds_count", &rc),
        1.0
    );
    let kind = |k| [("route", "chat"), ("cluster", "primary"), ("kind", k)];
    assert_eq!(
        metric(&m, "switchyard_tokens_total", &kind("prompt")),
        want.0 as f64
    );
    assert_eq!(
        metric(&m, "switchyard_tokens_total", &kind("completion")),
        want.1 as f64
    );

    let lines = wait_lines(&log, 2).await;
    for (line, (p, k)) in lines.iter().zip(logged) {
        assert!(line["ttft_ms"].as_f64().unwrap() >= 40.0, "{line}");
        assert_eq!(line["prompt_tokens"], p, "{line}");
        assert_eq!(line["completion_tokens"], k, "{line}");
    }
}

/// The `traceparent` the simulator received, as it echoes it, for a request sending `sent` (each
/// value its own header line).
async fn upstream_traceparent(c: &reqwest::Client, lb: &Balancer, sent: &[&str]) -> Option<String> {
    let mut req = c
        .post(lb.url("/v1/chat/completions"))
        .header("x-sim-echo-header", "traceparent")
        .body(chat("trace me", false));
    for t in sent {
        req = req.header("traceparent", *t);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.headers()
        .get("x-sim-echo")
        .map(|v| v.to_str().unwrap().to_string())
}

fn parts(tp: &str) -> (String, String, String) {
    let p: Vec<&str> = tp.split('-').collect();
    assert_eq!(p.len(), 4, "{tp}");
    assert_eq!(
        (p[0], p[1].len(), p[2].len(), p[3].len()),
        ("00", 32, 16, 2)
    );
    assert!(tp
        .bytes()
        .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    (p[1].to_string(), p[2].to_string(), p[3].to_string())
}

const CLIENT_TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceparent_is_continued_replaced_or_started_and_each_try_has_its_span() {
    let s = sim("p").await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let cluster = format!(
        "  primary:\n    breaker: {{ enabled: false }}\n    peers:\n      - {{ addr: \"{dead_addr}\" }}\n      - {{ addr: \"{}\" }}\n",
        s.addr()
    );
    let lb = Balancer::start(&route(&cluster, "")).await;
    let c = client();

    // A valid one: same trace and flags, a new parent (switchyard's try span).
    let mut spans = std::collections::HashSet::new();
    for _ in 0..4 {
        let up = upstream_traceparent(&c, &lb, &[CLIENT_TP]).await.unwrap();
        let (trace, parent, flags) = parts(&up);
        assert_eq!(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(parent, "00f067aa0ba902b7");
        assert_eq!(flags, "01");
        assert!(spans.insert(parent), "a span id used twice: {up}");
    }
    // Bad ones are replaced by a new trace, never forwarded.
    for bad in [
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "zz",
    ] {
        let up = upstream_traceparent(&c, &lb, &[bad]).await.unwrap();
        let (trace, _, flags) = parts(&up);
        assert_ne!(trace, "4bf92f3577b34da6a3ce929d0e0e4736", "{bad} kept");
        assert_ne!(trace, "0".repeat(32));
        // No exporter: switchyard records nothing, so it does not claim to sample.
        assert_eq!(flags, "00");
    }
    // Two of them are as good as none (W3C: ignore both), and only one goes upstream.
    let up = upstream_traceparent(&c, &lb, &[CLIENT_TP, CLIENT_TP])
        .await
        .unwrap();
    assert_ne!(parts(&up).0, "4bf92f3577b34da6a3ce929d0e0e4736", "{up}");
    // None: a new trace each time.
    let a = parts(&upstream_traceparent(&c, &lb, &[]).await.unwrap()).0;
    let b = parts(&upstream_traceparent(&c, &lb, &[]).await.unwrap()).0;
    assert_ne!(a, b);
    // Half of these went to the dead peer first and were retried: the retries carried their own
    // span ids too (checked above: four distinct ids, all in the client's trace).
    assert!(
        metric(
            &lb.metrics().await,
            "switchyard_upstream_retry_total",
            &[
                ("route", "chat"),
                ("cluster", "primary"),
                ("reason", "refused")
            ]
        ) >= 1.0
    );
}

/// An OTLP/HTTP receiver on loopback: every span posted to it, decoded.
struct Receiver {
    addr: std::net::SocketAddr,
    spans: Arc<Mutex<Vec<Span>>>,
}

async fn receiver() -> Receiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
    let kept = spans.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let kept = kept.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let kept = kept.clone();
                        async move {
                            let ok = req.uri().path() == "/v1/traces"
                                && req.headers()["content-type"] == "application/x-protobuf";
                            let body = req.into_body().collect().await.map(|b| b.to_bytes());
                            let status = match body
                                .ok()
                                .and_then(|b| ExportTraceServiceRequest::decode(b).ok())
                            {
                                Some(export) if ok => {
                                    let mut k = kept.lock().unwrap();
                                    for rs in export.resource_spans {
                                        for ss in rs.scope_spans {
                                            k.extend(ss.spans);
                                        }
                                    }
                                    200
                                }
                                _ => 400,
                            };
                            let resp = http::Response::builder()
                                .status(status)
                                .header("content-type", "application/x-protobuf")
                                .body(http_body_util::Full::new(bytes::Bytes::new()))
                                .unwrap();
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                let io = hyper_util::rt::TokioIo::new(tcp);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    });
    Receiver { addr, spans }
}

fn attr<'a>(
    s: &'a Span,
    key: &str,
) -> Option<&'a opentelemetry_proto::tonic::common::v1::any_value::Value> {
    s.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn text_attr(s: &Span, key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    match attr(s, key) {
        Some(Value::StringValue(v)) => Some(v.clone()),
        Some(Value::IntValue(v)) => Some(v.to_string()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_of_requests_and_their_tries_reach_an_otlp_receiver() {
    let rx = receiver().await;
    let s = sim("p").await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    // Round robin over [dead, live]: every other request fails over from the dead peer.
    let cluster = format!(
        "  primary:\n    breaker: {{ enabled: false }}\n    peers:\n      - {{ addr: \"{dead_addr}\" }}\n      - {{ addr: \"{}\" }}\n",
        s.addr()
    );
    let tracing = format!(
        "tracing: {{ otlp_endpoint: \"http://{}\", sample_ratio: 0.0 }}\n",
        rx.addr
    );
    let lb = Balancer::start(&route(&cluster, &tracing)).await;
    let c = client();
    // Not sampled: a ratio of 0 for new traces, and a client that says "not sampled".
    assert_eq!(
        parts(&upstream_traceparent(&c, &lb, &[]).await.unwrap()).2,
        "00"
    );
    let unsampled = "00-11111111111111111111111111111111-2222222222222222-00";
    upstream_traceparent(&c, &lb, &[unsampled]).await.unwrap();
    // Sampled by the client: exported whatever the ratio.
    // Four of them: over [dead, live] in turn, at least one starts on the dead peer.
    let mut echoed = Vec::new();
    for _ in 0..4 {
        echoed.push(upstream_traceparent(&c, &lb, &[CLIENT_TP]).await.unwrap());
    }
    let trace = hex("4bf92f3577b34da6a3ce929d0e0e4736");
    wait_until(
        Duration::from_secs(15),
        "4 request spans and their tries",
        || {
            let n = rx.spans.lock().unwrap().len();
            async move { n >= 9 }
        },
    )
    .await;
    // Give a late, wrong export the time to arrive before looking.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let spans = rx.spans.lock().unwrap().clone();
    assert!(
        spans.iter().all(|s| s.trace_id == trace),
        "only the sampled trace is exported: {spans:#?}"
    );
    let servers: Vec<&Span> = spans.iter().filter(|s| s.kind == 2).collect();
    let tries: Vec<&Span> = spans.iter().filter(|s| s.kind == 3).collect();
    assert_eq!(servers.len(), 4, "{spans:#?}");
    assert!((5..=8).contains(&tries.len()), "{spans:#?}");
    let mut retried = 0;
    for server in &servers {
        assert_eq!(server.parent_span_id, hex("00f067aa0ba902b7"));
        assert_eq!(
            text_attr(server, "switchyard.route").as_deref(),
            Some("chat")
        );
        assert_eq!(
            text_attr(server, "http.response.status_code").as_deref(),
            Some("200")
        );
        assert!(server.end_time_unix_nano >= server.start_time_unix_nano);
        let mine: Vec<&&Span> = tries
            .iter()
            .filter(|t| t.parent_span_id == server.span_id)
            .collect();
        let committed = mine
            .iter()
            .find(|t| text_attr(t, "switchyard.try.outcome").as_deref() == Some("committed"))
            .expect("a committed try");
        assert_eq!(
            text_attr(committed, "server.address"),
            Some(s.addr().to_string())
        );
        // The committed try's span is the parent the peer was given.
        let echoed_parent = echoed
            .iter()
            .map(|e| parts(e).1)
            .find(|p| hex(p) == committed.span_id);
        assert!(echoed_parent.is_some(), "{echoed:?} vs {committed:#?}");
        if mine.len() == 2 {
            retried += 1;
            let failed = mine
                .iter()
                .find(|t| t.span_id != committed.span_id)
                .unwrap();
            assert_eq!(
                text_attr(failed, "switchyard.try.outcome").as_deref(),
                Some("refused")
            );
            assert_eq!(
                text_attr(failed, "server.address"),
                Some(dead_addr.to_string())
            );
            assert_eq!(
                text_attr(committed, "switchyard.retry.reason").as_deref(),
                Some("refused")
            );
        }
    }
    assert!(retried >= 1, "{spans:#?}");
    let m = lb.metrics().await;
    assert!(m.contains("switchyard_trace_spans_dropped_total 0"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_that_cannot_be_exported_are_counted_and_requests_do_not_wait() {
    let s = sim("p").await;
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone_addr = gone.local_addr().unwrap();
    drop(gone);
    let tracing = format!("tracing: {{ otlp_endpoint: \"http://{gone_addr}/v1/traces\" }}\n");
    let lb = Balancer::start(&route(&one_peer(s.addr()), &tracing)).await;
    let c = client();
    for _ in 0..3 {
        let r = c
            .post(lb.url("/v1/chat/completions"))
            .body(chat("x", false))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    wait_until(
        Duration::from_secs(20),
        "6 spans counted as dropped",
        || {
            let lb = &lb;
            async move {
                metric(
                    &lb.metrics().await,
                    "switchyard_trace_spans_dropped_total",
                    &[],
                ) >= 6.0
            }
        },
    )
    .await;
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}
