//! Hostile and careless clients, through real sockets: nothing a client sends can pin a slot,
//! eject a healthy peer or crash switchyard. Each case ends by checking, through `/status`, that
//! no request or peer slot is left held and that a normal request is still answered.

use crate::common::raw::{self, Step};
use crate::common::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// One cluster of `peer` behind a `/v1/` route with `extra` route keys (each line indented by
/// four spaces) and `top` top-level keys.
fn config(peer: SocketAddr, route: &str, top: &str) -> String {
    format!(
        "clusters:\n  c:\n    peers: [ {{ addr: \"{peer}\" }} ]\nroutes:\n  - name: r\n    match: {{ path_prefix: \"/v1/\" }}\n    split: [ {{ cluster: c }} ]\n{route}{top}"
    )
}

const SETTLE: Duration = Duration::from_secs(20);

fn chat_url(lb: &Balancer) -> String {
    lb.url("/v1/chat/completions")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_requests_never_wait_for_a_body_nor_eject_the_peer() {
    let s = sim("s").await;
    // idle 30s, as the demo: a HEAD that waited for a body would hang far past the client's 5s.
    let lb = Balancer::start(&config(s.addr(), "    timeouts: { idle: 30s }\n", "")).await;
    let c = client();
    for i in 0..6 {
        let started = Instant::now();
        let r = c
            .head(lb.url("/v1/models"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .unwrap_or_else(|e| panic!("HEAD #{i} got no answer: {e}"));
        assert!(r.status().as_u16() < 500, "HEAD #{i}: {}", r.status());
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    let b = &lb.status().await["clusters"][0]["peers"][0]["breaker"];
    assert_eq!(b["state"], "CLOSED", "{b}");
    assert_eq!(b["failure_count"], 0, "HEADs counted against the peer: {b}");
    still_serves(&lb, &chat_url(&lb), SETTLE).await;
}

/// A socket whose receive buffer is small, so that a client that never reads stalls the sender
/// quickly.
async fn small_window(addr: SocketAddr) -> tokio::net::TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&addr.into()).unwrap();
    sock.set_nonblocking(true).unwrap();
    tokio::net::TcpStream::from_std(sock.into()).unwrap()
}

fn long_stream_request(tokens: usize) -> Vec<u8> {
    let body = chat("a long answer", true);
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-sim-tokens: {tokens}\r\nx-sim-token-delay-ms: 0\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_cut_after_idle_and_releases_everything() {
    let s = sim("s").await;
    let lb = Balancer::start(&config(s.addr(), "    timeouts: { idle: 2s }\n", "")).await;
    let mut stalled = small_window(lb.addr).await;
    stalled
        .write_all(&long_stream_request(300_000))
        .await
        .unwrap();
    // Held while the stream flows...
    wait_until(SETTLE, "the stream starts", || async {
        held(&lb).await.1 == 1
    })
    .await;
    // ...and released about `idle` after the client stopped reading, though it never closes.
    still_serves(&lb, &chat_url(&lb), SETTLE).await;
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_that_grants_no_window_is_cut_after_idle() {
    let s = sim("s").await;
    let lb = Balancer::start(&config(s.addr(), "    timeouts: { idle: 2s }\n", "")).await;
    let tcp = tokio::net::TcpStream::connect(lb.addr).await.unwrap();
    let (h2, conn) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut h2 = h2.ready().await.unwrap();
    let body = chat("a long answer", true);
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{}/v1/chat/completions", lb.addr))
        .header("content-type", "application/json")
        .header("x-sim-tokens", "300000")
        .header("x-sim-token-delay-ms", "0")
        .body(())
        .unwrap();
    let (resp, mut send) = h2.send_request(req, false).unwrap();
    send.send_data(body.into(), true).unwrap();
    let resp = tokio::time::timeout(SETTLE, resp).await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    // The body is never read and no capacity is released: the window stays shut.
    let _body = resp.into_body();
    wait_until(SETTLE, "the stream starts", || async {
        held(&lb).await.1 == 1
    })
    .await;
    still_serves(&lb, &chat_url(&lb), SETTLE).await;
    driver.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_headers_hold_no_request_slot() {
    let s = sim("s").await;
    let lb = Balancer::start(&config(s.addr(), "", "")).await;
    let mut slow = Vec::new();
    for _ in 0..20 {
        slow.push(
            raw::send(
                lb.addr,
                b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n",
            )
            .await,
        );
    }
    for i in 0..4 {
        for c in &mut slow {
            let _ = c.write_all(format!("x-slow-{i}: 1\r\n").as_bytes()).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Twenty half-sent headers take connections, not request slots.
    assert_eq!(held(&lb).await, (0, 0));
    still_serves(&lb, &chat_url(&lb), SETTLE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_gets_408_at_the_total_body_deadline() {
    let s = sim("s").await;
    let lb = Balancer::start(&config(
        s.addr(),
        "",
        "limits: { client_body_timeout: 2s, client_body_total_timeout: 3s }\n",
    ))
    .await;
    let mut c = raw::send(
        lb.addr,
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n",
    )
    .await;
    let started = Instant::now();
    // A byte every 500 ms: each read comes well within client_body_timeout.
    let mut answer = None;
    for _ in 0..40 {
        if c.write_all(b"x").await.is_err() {
            break;
        }
        if let Ok(Some(head)) =
            tokio::time::timeout(Duration::from_millis(500), raw::read_head(&mut c, SETTLE)).await
        {
            answer = Some(head.0);
            break;
        }
    }
    let head = answer.expect("an answer to the slow upload");
    assert!(head.starts_with("http/1.1 408"), "{head}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(15),
        "{took:?}"
    );
    still_serves(&lb, &chat_url(&lb), SETTLE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_is_answered_and_not_forwarded() {
    let s = sim("s").await;
    let lb = Balancer::start(&config(s.addr(), "    max_request_body: 1KiB\n", "")).await;
    let body = chat("hi", false);
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nexpect: 100-continue\r\nx-sim-echo-header: expect\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let mut c = raw::send(lb.addr, head.as_bytes()).await;
    // curl waits 1 s before sending anyway; the 100 must come before that.
    let (interim, _) = raw::read_head(&mut c, Duration::from_secs(1))
        .await
        .expect("100 Continue before the body is sent");
    assert!(interim.starts_with("http/1.1 100"), "{interim}");
    c.write_all(body.as_bytes()).await.unwrap();
    let (fin, _) = raw::read_head(&mut c, SETTLE).await.expect("final answer");
    assert!(fin.starts_with("http/1.1 200"), "{fin}");
    assert_eq!(
        raw::header(&fin, "x-sim-echo"),
        None,
        "expect was forwarded"
    );

    // Too large a declared body: the final 413 at once, no 100.
    let big = "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 5000\r\n\r\n";
    let mut c = raw::send(lb.addr, big.as_bytes()).await;
    let (fin, _) = raw::read_head(&mut c, Duration::from_secs(5))
        .await
        .expect("413");
    assert!(fin.starts_with("http/1.1 413"), "{fin}");
    still_serves(&lb, &chat_url(&lb), SETTLE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_closes_the_connection() {
    let s = sim("s").await;
    let lb = Balancer::start(&config(s.addr(), "", "")).await;
    let body = chat("hi", false);
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let mut c = raw::send(lb.addr, req.as_bytes()).await;
    let (head, _) = raw::read_head(&mut c, SETTLE).await.expect("an answer");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(raw::header(&head, "connection"), Some("close"), "{head}");
    let (_, closed) = raw::read_to_close(&mut c, Duration::from_secs(10)).await;
    assert!(closed, "the connection stays open after an ambiguous body");
    still_serves(&lb, &chat_url(&lb), SETTLE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_1_0_clients_get_no_chunked_body_and_no_keep_alive() {
    let s = sim("s").await;
    let lb = Balancer::start(&config(s.addr(), "", "")).await;
    let body = chat("hi", true);
    let req = format!(
        "POST /v1/chat/completions HTTP/1.0\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut c = raw::send(lb.addr, req.as_bytes()).await;
    let (head, first) = raw::read_head(&mut c, SETTLE).await.expect("an answer");
    assert!(head.contains(" 200 "), "{head}");
    assert_eq!(raw::header(&head, "transfer-encoding"), None, "{head}");
    let (rest, closed) = raw::read_to_close(&mut c, SETTLE).await;
    assert!(closed, "a close-delimited body ends with the connection");
    let text = String::from_utf8_lossy(&[first, rest].concat()).to_string();
    let events = raw::sse_events(&text);
    assert_eq!(
        events.last().map(|e| e.1.as_str()),
        Some("[DONE]"),
        "{text}"
    );
    still_serves(&lb, &chat_url(&lb), SETTLE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431_and_change_nothing() {
    let s = sim("s").await;
    let lb = Balancer::start(&config(s.addr(), "", "")).await;
    let big = "a".repeat(70 * 1024);
    let req = format!("GET /v1/models HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\n\r\n");
    let mut c = raw::send(lb.addr, req.as_bytes()).await;
    let (head, _) = raw::read_head(&mut c, SETTLE).await.expect("an answer");
    assert!(head.starts_with("http/1.1 431"), "{head}");
    // Far over what Pingora reads at all: the connection is refused, the process unharmed.
    let huge = format!("GET / HTTP/1.1\r\nx-huge: {}\r\n\r\n", "b".repeat(2 << 20));
    let mut c = tokio::net::TcpStream::connect(lb.addr).await.unwrap();
    let _ = c.write_all(huge.as_bytes()).await;
    let _ = raw::read_to_close(&mut c, Duration::from_secs(10)).await;
    still_serves(&lb, &chat_url(&lb), SETTLE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_rapid_reset_leaves_nothing_held() {
    let s = sim("s").await;
    let lb = Balancer::start(&config(s.addr(), "", "")).await;
    let tcp = tokio::net::TcpStream::connect(lb.addr).await.unwrap();
    let (h2, conn) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut h2 = h2;
    let mut sent = 0;
    for _ in 0..500 {
        let Ok(ready) = h2.clone().ready().await else {
            break; // the server sent GOAWAY: what it should do to a rapid-reset client
        };
        h2 = ready;
        let req = http::Request::builder()
            .method("POST")
            .uri(format!("http://{}/v1/chat/completions", lb.addr))
            .header("x-sim-ttft-ms", "200")
            .body(())
            .unwrap();
        let Ok((_resp, mut stream)) = h2.send_request(req, false) else {
            break;
        };
        stream.send_reset(h2::Reason::CANCEL);
        sent += 1;
    }
    assert!(sent > 0);
    driver.abort();
    still_serves(&lb, &chat_url(&lb), SETTLE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_traversal_is_normalised_before_routing() {
    let s = sim("s").await;
    let lb = Balancer::start(&config(s.addr(), "", "")).await;
    let get = |path: &'static str| {
        let addr = lb.addr;
        async move {
            let body = chat("hi", false);
            let req = format!(
                "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            let mut c = raw::send(addr, req.as_bytes()).await;
            let (head, _) = raw::read_head(&mut c, SETTLE).await.expect("an answer");
            head[9..12].parse::<u16>().unwrap()
        }
    };
    // Out of the /v1/ route once normalised: no route.
    assert_eq!(get("/v1/../admin").await, 404);
    assert_eq!(get("/v1/%2e%2E/admin").await, 404);
    assert_eq!(get("/v1/chat/../../admin").await, 404);
    // Above the root, or an encoded slash: ambiguous, refused.
    assert_eq!(get("/../v1/chat/completions").await, 400);
    assert_eq!(get("/v1/chat%2fcompletions").await, 400);
    // Normalised and forwarded normalised: the simulator answers only the exact path.
    assert_eq!(get("/v1/./chat//completions").await, 200);
    assert_eq!(get("/v1/x/../chat/completions").await, 200);
    still_serves(&lb, &chat_url(&lb), SETTLE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_retry_after_from_a_keyed_upstream_panics_nothing() {
    let s = sim("s").await;
    let limited = raw::Upstream::start(|_| {
        vec![
            Step::ReadBody,
            Step::Write(raw::response(
                "429 Too Many Requests",
                &[
                    "retry-after: 18446744073709551615",
                    "content-type: application/json",
                ],
                r#"{"error":{"message":"slow down","type":"rate_limit"}}"#,
            )),
        ]
    })
    .await;
    let body = format!(
        "clusters:\n  c:\n    peers: [ {{ addr: \"{}\" }} ]\n  keyed:\n    peers: [ {{ addr: \"{}\" }} ]\n    api_keys: {{ keys: [ sk-one-0000000000, sk-two-0000000000 ] }}\nroutes:\n  - name: keyed\n    match: {{ path_prefix: \"/keyed/\" }}\n    split: [ {{ cluster: keyed }} ]\n  - name: r\n    match: {{ path_prefix: \"/v1/\" }}\n    split: [ {{ cluster: c }} ]\n",
        s.addr(),
        limited.addr
    );
    let lb = Balancer::start(&body).await;
    let r = client()
        .post(lb.url("/keyed/chat/completions"))
        .header("content-type", "application/json")
        .body(chat("hi", false))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("an answer, not a dropped connection");
    assert!(r.status().is_client_error() || r.status().is_server_error());
    assert!(limited.count() >= 1);
    // Both keys are cooling (for at most the 1h cap), none is panicking the process.
    let st = lb.status().await;
    let keyed = st["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "keyed")
        .unwrap()
        .clone();
    assert!(
        keyed["api_keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["usable"] == false),
        "{keyed}"
    );
    still_serves(&lb, &chat_url(&lb), SETTLE).await;
}

/// An SSE upstream that sends one whole event, then half of the next one, then cuts the
/// connection: after `delay`, so that identical requests can join the first as followers.
async fn cut_mid_event_upstream(delay: Duration) -> raw::Upstream {
    raw::Upstream::start(move |_| {
        vec![
            Step::ReadBody,
            Step::Sleep(delay),
            Step::Write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                    .to_vec(),
            ),
            Step::Write(raw::chunk(
                "data: {\"choices\":[{\"delta\":{\"content\":\"hello\"}}]}\n\n",
            )),
            Step::Sleep(Duration::from_millis(300)),
            Step::Write(raw::chunk("data: {\"choices\":[{\"delta\":{\"content\":\"hel")),
            Step::Sleep(Duration::from_millis(300)),
            Step::Close,
        ]
    })
    .await
}

/// The last event of a stream cut mid-event must be an error event of its own.
fn assert_ends_with_error_event(text: &str) {
    let events = raw::sse_events(text);
    let (kind, data) = events.last().expect("events").clone();
    assert_eq!(kind, "error", "{text:?}");
    let v: serde_json::Value = serde_json::from_str(&data).expect("error data is JSON");
    assert_eq!(v["error"]["code"], "stream_interrupted", "{text:?}");
    assert_eq!(events.len(), 2, "one whole event, then the error: {text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_mid_event_ends_with_a_whole_error_event_for_leader_and_followers() {
    let s = sim("s").await;
    let up = cut_mid_event_upstream(Duration::from_millis(700)).await;
    let body = format!(
        "clusters:\n  c:\n    peers: [ {{ addr: \"{}\" }} ]\n  cut:\n    peers: [ {{ addr: \"{}\" }} ]\n    breaker: {{ enabled: false }}\nroutes:\n  - name: cut\n    match: {{ path_prefix: \"/cut/\" }}\n    split: [ {{ cluster: cut }} ]\n    retry: {{ attempts: 1 }}\n    cache: {{ ttl: 1m }}\n  - name: r\n    match: {{ path_prefix: \"/v1/\" }}\n    split: [ {{ cluster: c }} ]\n",
        s.addr(),
        up.addr
    );
    let lb = Balancer::start(&body).await;
    let req = serde_json::json!({"model": "m", "stream": true, "temperature": 0,
        "messages": [{"role": "user", "content": "cut me"}]})
    .to_string();
    let send = |delay: u64| {
        let (url, req) = (lb.url("/cut/chat/completions"), req.clone());
        async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            let r = client()
                .post(url)
                .header("content-type", "application/json")
                .body(req)
                .timeout(SETTLE)
                .send()
                .await
                .unwrap();
            let cache = r.headers().get("x-cache-status").cloned();
            let text = r.text().await.unwrap_or_default();
            (cache, text)
        }
    };
    let (leader, follower) = tokio::join!(send(0), send(300));
    assert_eq!(up.count(), 1, "the second request followed the first");
    assert_ends_with_error_event(&leader.1);
    assert_ends_with_error_event(&follower.1);
    still_serves(&lb, &chat_url(&lb), SETTLE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_leader_client_does_not_cut_off_its_followers() {
    let s = sim("s").await;
    let body = config(
        s.addr(),
        "    timeouts: { idle: 2s }\n    cache: { ttl: 1m, max_entry_bytes: 60MiB }\n",
        "",
    );
    let lb = Balancer::start(&body).await;
    let req = serde_json::json!({"model": "m", "temperature": 0,
        "messages": [{"role": "user", "content": "a long one"}]})
    .to_string();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-sim-tokens: 300000\r\nx-sim-token-delay-ms: 0\r\nx-sim-ttft-ms: 300\r\ncontent-length: {}\r\n\r\n{req}",
        req.len()
    );
    // The leader's client never reads.
    let mut leader = small_window(lb.addr).await;
    leader.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = client()
        .post(chat_url(&lb))
        .header("host", "x")
        .header("content-type", "application/json")
        .header("x-sim-tokens", "300000")
        .header("x-sim-token-delay-ms", "0")
        .body(req.clone())
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cache = r.headers().get("x-cache-status").cloned();
    let text = r.text().await.expect("the follower's whole answer");
    let v: serde_json::Value = serde_json::from_str(&text).expect("a whole JSON answer");
    assert!(v["choices"].is_array());
    assert_eq!(cache.as_ref().map(|v| v.to_str().unwrap()), Some("MISS"));
    assert_eq!(
        s.stats().requests(),
        1,
        "the follower shared the leader's answer"
    );
    drop(leader);
    still_serves(&lb, &chat_url(&lb), SETTLE).await;
}
