//! Each of the four route timeouts fires as documented, answering 504 JSON when nothing was sent
//! yet, or ending an SSE stream with an error event once it had started. Bounds are generous:
//! the machines are small and shared.

use crate::common::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn one_cluster(peer: SocketAddr, timeouts: &str) -> String {
    format!(
        "clusters:\n  c:\n    breaker: {{ enabled: false }}\n    peers: [ {{ addr: \"{peer}\" }} ]\nroutes:\n  - name: r\n    split: [ {{ cluster: c }} ]\n    retry: {{ attempts: 1 }}\n    timeouts: {timeouts}\n"
    )
}

async fn post(
    lb: &Balancer,
    body: String,
    headers: &[(&str, &str)],
) -> (reqwest::Response, Duration) {
    let start = Instant::now();
    let mut req = client()
        .post(lb.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("response");
    (r, start.elapsed())
}

async fn assert_504_json(r: reqwest::Response) {
    assert_eq!(r.status(), 504);
    let v: serde_json::Value = r.json().await.expect("json error body");
    assert_eq!(v["error"]["code"], "upstream_timeout", "{v}");
}

/// A listener whose accept queue is full: further SYNs are dropped, so connects hang.
fn blackhole() -> (socket2::Socket, Vec<std::net::TcpStream>, SocketAddr) {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    s.listen(0).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    let fillers = (0..4)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
        })
        .collect();
    (s, fillers, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_answers_504() {
    let (_listener, _fillers, addr) = blackhole();
    let lb = Balancer::start(&one_cluster(
        addr,
        "{ connect: 300ms, first_byte: 10s, total: 20s }",
    ))
    .await;
    let (r, took) = post(&lb, chat("x", false), &[]).await;
    assert_504_json(r).await;
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_byte_timeout_answers_504() {
    let s = sim("hang").await;
    let lb = Balancer::start(&one_cluster(s.addr(), "{ first_byte: 400ms, total: 20s }")).await;
    let (r, took) = post(&lb, chat("x", false), &[("x-sim-fail", "hang")]).await;
    assert_504_json(r).await;
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_byte_covers_the_first_token_of_a_stream() {
    let s = sim("slow-first-token").await;
    let lb = Balancer::start(&one_cluster(s.addr(), "{ first_byte: 400ms, total: 20s }")).await;
    // Headers come at once, the first token only after 3 s: the try must not commit.
    let (r, took) = post(&lb, chat("x", true), &[("x-sim-ttft-ms", "3000")]).await;
    assert_504_json(r).await;
    assert!(took < Duration::from_millis(2500), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_ends_a_stalled_stream_with_an_sse_error_event() {
    let s = sim("stall").await;
    let lb = Balancer::start(&one_cluster(
        s.addr(),
        "{ first_byte: 5s, idle: 400ms, total: 20s }",
    ))
    .await;
    let (r, _) = post(&lb, chat("x", true), &[("x-sim-hang-after-tokens", "2")]).await;
    assert_eq!(r.status(), 200);
    let start = Instant::now();
    let text = tokio::time::timeout(Duration::from_secs(10), r.text())
        .await
        .expect("stream must end, not hang")
        .expect("stream must end cleanly, not reset");
    assert!(text.contains("tok"), "{text}");
    assert!(text.contains("event: error\ndata: {"), "{text}");
    assert!(!text.contains("[DONE]"));
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_deadline_answers_504() {
    let s = sim("slow").await;
    let lb = Balancer::start(&one_cluster(s.addr(), "{ first_byte: 10s, total: 500ms }")).await;
    let (r, took) = post(&lb, chat("x", false), &[("x-sim-ttft-ms", "3000")]).await;
    assert_504_json(r).await;
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(2500),
        "{took:?}"
    );
}
