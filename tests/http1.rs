//! The HTTP/1 server at the edge through real sockets: keep-alive, pipelined requests, chunked
//! request bodies, HTTP/1.0, and the whole-head deadline. Written against RFC 9112 rather than
//! one implementation: the suite runs against the lean front end (the default) and, with
//! `SWITCHYARD_TEST_HTTP1=pingora`, against Pingora's HTTP/1 server, where the three tests of
//! what it gets wrong (pipelined requests, a broken chunked body, the whole-head deadline)
//! are skipped unless `SWITCHYARD_TEST_STRICT=1`: with it they fail, as they did on `main`.

use crate::common::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(peer: SocketAddr, top: &str) -> String {
    format!(
        "clusters:\n  c:\n    peers: [ {{ addr: \"{peer}\" }} ]\nroutes:\n  - name: r\n    match: {{ path_prefix: \"/v1/\" }}\n    split: [ {{ cluster: c }} ]\n{top}"
    )
}

const SETTLE: Duration = Duration::from_secs(20);

/// Skip a test of what only the lean server gets right when the run is against Pingora's
/// (`SWITCHYARD_TEST_STRICT=1` runs it anyway, to see the gap).
fn lean_only(gap: &str) -> bool {
    let pingora = std::env::var("SWITCHYARD_TEST_HTTP1").is_ok_and(|v| v == "pingora");
    if pingora && std::env::var("SWITCHYARD_TEST_STRICT").is_err() {
        eprintln!("skipped against Pingora's HTTP/1 server: {gap}");
        return true;
    }
    false
}

/// One response read off `s` (the head lower-cased, the body by its `content-length` or chunks),
/// with what was read past it kept in `rest` for the next one.
async fn response(s: &mut TcpStream, rest: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    let until = tokio::time::Instant::now() + SETTLE;
    let mut buf = std::mem::take(rest);
    let end = loop {
        if let Some(i) = raw::find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if !fill(&mut buf, s, until).await {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
    let mut body = buf.split_off(end);
    if let Some(n) = raw::header(&head, "content-length").and_then(|v| v.parse::<usize>().ok()) {
        while body.len() < n {
            if !fill(&mut body, s, until).await {
                return None;
            }
        }
        *rest = body.split_off(n);
        return Some((head, body));
    }
    if raw::header(&head, "transfer-encoding") == Some("chunked") {
        while raw::find(&body, b"0\r\n\r\n").is_none() {
            if !fill(&mut body, s, until).await {
                return None;
            }
        }
        return Some((head, raw::dechunk(&body)));
    }
    Some((head, body))
}

/// Read more of `s` into `buf` before `until`; false when it closed or nothing came.
async fn fill(buf: &mut Vec<u8>, s: &mut TcpStream, until: tokio::time::Instant) -> bool {
    let mut chunk = [0u8; 8192];
    match tokio::time::timeout_at(until, s.read(&mut chunk)).await {
        Ok(Ok(n)) if n > 0 => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
        _ => false,
    }
}

fn models(version: &str, extra: &str) -> String {
    format!("GET /v1/models {version}\r\nhost: x\r\n{extra}\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    if lean_only("it answers the first of pipelined requests, not the next") {
        return;
    }
    let s = sim("s").await;
    let lb = Balancer::start(&config(s.addr(), "")).await;
    let body = chat("one", false);
    // Three requests in one write: a GET, a POST with a body, a GET; each answered in turn.
    let all = format!(
        "{}POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}{}",
        models("HTTP/1.1", "x-request-id: first\r\n"),
        body.len(),
        models("HTTP/1.1", "x-request-id: third\r\n"),
    );
    let mut c = raw::send(lb.addr, all.as_bytes()).await;
    let mut rest = Vec::new();
    let (h1, b1) = response(&mut c, &mut rest).await.expect("first answer");
    assert!(h1.starts_with("http/1.1 200"), "{h1}");
    assert_eq!(raw::header(&h1, "x-request-id"), Some("first"), "{h1}");
    assert!(
        String::from_utf8_lossy(&b1).contains("\"data\""),
        "models list"
    );
    let (h2, b2) = response(&mut c, &mut rest).await.expect("second answer");
    assert!(h2.starts_with("http/1.1 200"), "{h2}");
    assert!(
        String::from_utf8_lossy(&b2).contains("chat.completion"),
        "{}",
        String::from_utf8_lossy(&b2)
    );
    let (h3, _) = response(&mut c, &mut rest).await.expect("third answer");
    assert!(h3.starts_with("http/1.1 200"), "{h3}");
    assert_eq!(raw::header(&h3, "x-request-id"), Some("third"), "{h3}");
    assert!(rest.is_empty(), "nothing past the third answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_request_body_in_pieces_is_read_whole_and_the_connection_kept() {
    let s = sim("s").await;
    let lb = Balancer::start(&config(s.addr(), "")).await;
    let body = chat("pieces", false);
    let (a, b) = body.split_at(body.len() / 2);
    let head = "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
    let mut c = raw::send(lb.addr, head.as_bytes()).await;
    for piece in [a, b] {
        c.write_all(format!("{:x};ext=1\r\n{piece}\r\n", piece.len()).as_bytes())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.write_all(b"0\r\ntrailer-field: x\r\n\r\n").await.unwrap();
    let mut rest = Vec::new();
    let (h, b) = response(&mut c, &mut rest).await.expect("an answer");
    assert!(h.starts_with("http/1.1 200"), "{h}");
    assert!(
        String::from_utf8_lossy(&b).contains("chat.completion"),
        "{}",
        String::from_utf8_lossy(&b)
    );
    assert_ne!(raw::header(&h, "connection"), Some("close"), "{h}");
    // The same connection carries the next request.
    c.write_all(models("HTTP/1.1", "").as_bytes())
        .await
        .unwrap();
    let (h, _) = response(&mut c, &mut rest).await.expect("the next answer");
    assert!(h.starts_with("http/1.1 200"), "{h}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_chunked_body_is_refused_and_the_connection_closed() {
    if lean_only("it answers a broken chunked body with 502, as if the upstream failed") {
        return;
    }
    let s = sim("s").await;
    let lb = Balancer::start(&config(s.addr(), "")).await;
    // A chunk whose data is not followed by CRLF: no way to tell where the next request starts.
    let req = "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}XX\r\n0\r\n\r\n";
    let mut c = raw::send(lb.addr, req.as_bytes()).await;
    let (got, closed) = raw::read_to_close(&mut c, SETTLE).await;
    let text = String::from_utf8_lossy(&got).to_lowercase();
    assert!(closed, "the connection is closed: {text}");
    assert!(
        text.is_empty() || text.starts_with("http/1.1 4"),
        "a 4xx or nothing: {text}"
    );
    still_serves(&lb, &lb.url("/v1/chat/completions"), SETTLE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_1_0_keep_alive_only_when_asked() {
    let s = sim("s").await;
    let lb = Balancer::start(&config(s.addr(), "")).await;
    // Asked for: the answer is length-delimited and the connection carries another request.
    let mut c = raw::send(
        lb.addr,
        models("HTTP/1.0", "connection: keep-alive\r\n").as_bytes(),
    )
    .await;
    let mut rest = Vec::new();
    let (h, _) = response(&mut c, &mut rest).await.expect("an answer");
    assert!(h.contains(" 200 "), "{h}");
    assert!(raw::header(&h, "content-length").is_some(), "{h}");
    c.write_all(models("HTTP/1.0", "connection: keep-alive\r\n").as_bytes())
        .await
        .unwrap();
    let (h, _) = response(&mut c, &mut rest)
        .await
        .expect("the second answer");
    assert!(h.contains(" 200 "), "{h}");
    // Not asked for: the connection ends after the answer.
    let mut c = raw::send(lb.addr, models("HTTP/1.0", "").as_bytes()).await;
    let (got, closed) = raw::read_to_close(&mut c, SETTLE).await;
    assert!(
        closed,
        "an HTTP/1.0 connection without keep-alive is closed"
    );
    assert!(String::from_utf8_lossy(&got).contains(" 200 "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_requests_and_connection_close_end_the_connection() {
    let s = sim("s").await;
    let lb = Balancer::start(&config(s.addr(), "limits: { keepalive_requests: 2 }\n")).await;
    let mut c = raw::send(lb.addr, models("HTTP/1.1", "").as_bytes()).await;
    let mut rest = Vec::new();
    let (h, _) = response(&mut c, &mut rest).await.expect("first");
    assert!(h.starts_with("http/1.1 200"), "{h}");
    c.write_all(models("HTTP/1.1", "").as_bytes())
        .await
        .unwrap();
    let (h, _) = response(&mut c, &mut rest).await.expect("second");
    assert!(h.starts_with("http/1.1 200"), "{h}");
    let (_, closed) = raw::read_to_close(&mut c, SETTLE).await;
    assert!(closed, "the second request of two was the last");
    // `Connection: close` from the client: answered, then closed, whatever the count.
    let mut c = raw::send(
        lb.addr,
        models("HTTP/1.1", "connection: close\r\n").as_bytes(),
    )
    .await;
    let (got, closed) = raw::read_to_close(&mut c, SETTLE).await;
    let text = String::from_utf8_lossy(&got).to_lowercase();
    assert!(closed && text.starts_with("http/1.1 200"), "{text}");
    assert_eq!(raw::header(&text, "connection"), Some("close"), "{text}");
}

/// A head that trickles in never completes: 408 once `limits.client_header_timeout` has passed
/// since its first byte, however steadily bytes come (nginx's `client_header_timeout`). Pingora's
/// HTTP/1 server has no such deadline (it bounds each read only): this fails against it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_head_gets_408_at_the_header_deadline() {
    if lean_only("it has no whole-head deadline") {
        return;
    }
    let s = sim("s").await;
    let lb = Balancer::start(&config(s.addr(), "limits: { client_header_timeout: 1s }\n")).await;
    let started = Instant::now();
    let mut c = raw::send(lb.addr, b"GET /v1/models HTTP/1.1\r\nhost: x\r\n").await;
    let mut answer = Vec::new();
    // One header field every 200 ms, for at most 8 s.
    for i in 0..40 {
        if c.write_all(format!("x-{i}: y\r\n").as_bytes())
            .await
            .is_err()
        {
            break;
        }
        let mut buf = [0u8; 4096];
        match tokio::time::timeout(Duration::from_millis(200), c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if !answer.is_empty() {
            break;
        }
    }
    let text = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(text.starts_with("http/1.1 408"), "got {text:?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the head was never cut off"
    );
    still_serves(&lb, &lb.url("/v1/chat/completions"), SETTLE).await;
}
