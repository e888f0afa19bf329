//! Edge deployment through real sockets: TLS listeners (HTTP/1.1 and HTTP/2 by ALPN, certificate
//! reload in place), the admin token, the edge limits (header size, body timeout, keep-alive,
//! connections, requests in flight) and the JSON access log.

use crate::common::*;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard::config::TlsFiles;
use switchyard::listen::TlsCerts;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "test-token-0123456789abcdef";

fn one_cluster(peer: SocketAddr, extra: &str) -> String {
    format!(
        "clusters:\n  c:\n    peers: [ {{ addr: \"{peer}\" }} ]\nroutes:\n  - name: r\n    match: {{ path_prefix: \"/v1/\" }}\n    split: [ {{ cluster: c }} ]\n{extra}"
    )
}

/// A self-signed certificate for `localhost`, written as PEM; returns its files and the PEM of
/// the certificate (for a client to trust).
fn self_signed(dir: &Path, stem: &str) -> (TlsFiles, Vec<u8>) {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let files = TlsFiles {
        cert: dir.join(format!("{stem}.crt")),
        key: dir.join(format!("{stem}.key")),
    };
    std::fs::write(&files.cert, c.cert.pem()).unwrap();
    std::fs::write(&files.key, c.key_pair.serialize_pem()).unwrap();
    (files, c.cert.pem().into_bytes())
}

/// A client that trusts only `ca_pem` and sends `localhost` to `addr`.
fn tls_client(ca_pem: &[u8], addr: SocketAddr, h1_only: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem).unwrap())
        .resolve("localhost", addr)
        .timeout(Duration::from_secs(10));
    if h1_only {
        b = b.http1_only();
    }
    b.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_speaks_http1_and_http2_and_forwards_proto_https() {
    let s = sim("s").await;
    let dir = tempfile::tempdir().unwrap();
    let (files, ca) = self_signed(dir.path(), "edge");
    let tls_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let log = dir.path().join("access.log");
    let head = Head {
        listeners: format!(
            "  - addr: \"{tls_addr}\"\n    tls: {{ cert: {}, key: {} }}\n",
            files.cert.display(),
            files.key.display()
        ),
        dir: Some(dir),
        ..Head::default()
    };
    let lb = Balancer::start_with(
        head,
        &one_cluster(
            s.addr(),
            &format!("access_log: {{ path: {} }}\n", log.display()),
        ),
    )
    .await;
    let url = format!("https://localhost:{}/v1/chat/completions", tls_addr.port());
    for (h1_only, version) in [
        (true, reqwest::Version::HTTP_11),
        (false, reqwest::Version::HTTP_2),
    ] {
        let r = tls_client(&ca, tls_addr, h1_only)
            .post(&url)
            .header("x-sim-echo-header", "x-forwarded-proto")
            // A client cannot pass itself off as having come over TLS, nor the other way round.
            .header("x-forwarded-proto", "http")
            .body(chat("hi", false))
            .send()
            .await
            .expect("TLS request");
        assert_eq!(r.status(), 200);
        assert_eq!(r.version(), version);
        assert_eq!(r.headers()["x-sim-echo"], "https", "{version:?}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["served_by"], "s");
    }
    // The cleartext listener still says http, whatever the client claims.
    let r = client()
        .post(lb.url("/v1/chat/completions"))
        .header("x-sim-echo-header", "x-forwarded-proto")
        .header("x-forwarded-proto", "https")
        .body(chat("hi", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-sim-echo"], "http");

    let lines = wait_lines(&log, 3).await;
    let tls: Vec<(bool, String)> = lines
        .iter()
        .map(|l| (l["tls"].as_bool().unwrap(), l["http"].to_string()))
        .collect();
    assert_eq!(
        tls,
        [
            (true, "\"1.1\"".to_string()),
            (true, "\"2\"".to_string()),
            (false, "\"1.1\"".to_string())
        ]
    );
}

/// Certificates swap in place: the resolver Pingora is given serves new handshakes from the new
/// files after `TlsCerts::reload`, through Pingora's own TLS settings and a real socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_reload_serves_the_new_certificate_to_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (files, old_ca) = self_signed(dir.path(), "live");
    let certs = TlsCerts::default();
    let resolver = certs.add(&files.cert, &files.key).unwrap();
    let mut settings = pingora::listeners::tls::TlsSettings::intermediate("", "").unwrap();
    settings.set_cert_resolver(resolver);
    settings.enable_h2();
    let acceptor = Arc::new(settings.build());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                let _ = tls.read(&mut buf).await;
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    let url = format!("https://localhost:{}/", addr.port());
    let get = |ca: Vec<u8>| {
        let url = url.clone();
        async move {
            tls_client(&ca, addr, true)
                .get(&url)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    };
    assert_eq!(get(old_ca.clone()).await.unwrap(), 200);

    // Replace the files (as certbot or a secret mount would), then reload.
    let (next, new_ca) = self_signed(dir.path(), "next");
    std::fs::rename(&next.cert, &files.cert).unwrap();
    std::fs::rename(&next.key, &files.key).unwrap();
    assert!(
        get(new_ca.clone()).await.is_err(),
        "new files must not be served before reload"
    );
    assert_eq!(certs.reload().unwrap(), 1);
    assert_eq!(get(new_ca.clone()).await.unwrap(), 200);
    assert!(
        get(old_ca).await.is_err(),
        "the old certificate is still served"
    );

    // A broken replacement is refused and the certificate in force stays.
    std::fs::write(&files.key, "garbage").unwrap();
    assert!(certs.reload().is_err());
    assert_eq!(get(new_ca).await.unwrap(), 200);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_guards_every_mutating_endpoint() {
    let s = sim("s").await;
    let head = Head {
        admin: format!("  token: \"{TOKEN}\"\n"),
        ..Head::default()
    };
    let lb = Balancer::start_with(head, &one_cluster(s.addr(), "")).await;
    let c = client();
    for auth in [None, Some("Bearer wrong-token-0123456789"), Some(TOKEN)] {
        let mut req = c.post(lb.admin_url("/reload"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{auth:?}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "unauthorized");
    }
    // Any method that is not GET or HEAD needs it, on any path.
    let r = c.delete(lb.admin_url("/cache/purge")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // With the token, reload works; reads need none.
    let r = c
        .post(lb.admin_url("/reload"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["generation"], 2);
    let r = c
        .post(lb.admin_url("/reload"))
        .header("authorization", format!("bearer  {TOKEN} "))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "scheme is case-insensitive");
    assert_eq!(
        c.get(lb.admin_url("/status"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

fn check(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn check_refuses_a_public_admin_without_token_and_bad_certificates() {
    let base = format!(
        "listeners:\n  - addr: \"127.0.0.1:8080\"\nadmin:\n  addr: \"0.0.0.0:9901\"\n{}",
        one_cluster("127.0.0.1:8001".parse().unwrap(), "")
    );
    let (ok, msg) = check(&base);
    assert!(
        !ok && msg.contains(":4: admin.addr: 0.0.0.0:9901 is not a loopback"),
        "{msg}"
    );
    let (ok, msg) = check(&base.replace(
        "addr: \"0.0.0.0:9901\"",
        &format!("addr: \"0.0.0.0:9901\"\n  token: \"{TOKEN}\""),
    ));
    assert!(ok, "{msg}");

    let dir = tempfile::tempdir().unwrap();
    let (files, _) = self_signed(dir.path(), "c");
    let tls = |cert: &Path, key: &Path| {
        base.replace("0.0.0.0:9901", "127.0.0.1:9901").replace(
            "  - addr: \"127.0.0.1:8080\"\n",
            &format!(
                "  - addr: \"127.0.0.1:8080\"\n  - addr: \"127.0.0.1:8443\"\n    tls:\n      cert: {}\n      key: {}\n",
                cert.display(),
                key.display()
            ),
        )
    };
    let (ok, msg) = check(&tls(&files.cert, &files.key));
    assert!(ok, "{msg}");
    let missing = PathBuf::from("/nonexistent/edge.crt");
    let (ok, msg) = check(&tls(&missing, &files.key));
    assert!(
        !ok && msg
            .contains(":5: listeners[1].tls.cert: cannot load certificate /nonexistent/edge.crt"),
        "{msg}"
    );
    let (ok, msg) = check(&tls(&files.cert, &files.cert));
    assert!(!ok && msg.contains(":6: listeners[1].tls.key:"), "{msg}");
}

/// Send raw bytes on a fresh connection to `addr`.
async fn raw(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    s
}

/// Read one HTTP/1.1 response (content-length or chunked body); `None` if the connection closed
/// or nothing came within `limit`.
async fn read_response(s: &mut TcpStream, limit: Duration) -> Option<(u16, String)> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status = head.get(9..12)?.parse().ok()?;
            let body = &buf[end + 4..];
            let complete = match head.lines().find_map(|l| l.strip_prefix("content-length:")) {
                Some(n) => body.len() >= n.trim().parse::<usize>().ok()?,
                None => !head.contains("chunked") || body.ends_with(b"0\r\n\r\n"),
            };
            if complete {
                return Some((status, head));
            }
        }
        let n = tokio::time::timeout_at(deadline, s.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Wait until the peer closes `s` (read returns 0 or an error); how long that took.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut chunk = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit.saturating_sub(start.elapsed()), s.read(&mut chunk)).await
        {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

const GET_MODELS: &[u8] = b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431_json() {
    let s = sim("s").await;
    let lb = Balancer::start(&one_cluster(
        s.addr(),
        "limits: { max_header_bytes: 4KiB }\n",
    ))
    .await;
    let c = client();
    let send = |size: usize| {
        c.post(lb.url("/v1/chat/completions"))
            .header("x-big", "a".repeat(size))
            .body(chat("hi", false))
            .send()
    };
    assert_eq!(send(2000).await.unwrap().status(), 200);
    let r = send(5000).await.unwrap();
    assert_eq!(r.status(), 431);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "header_too_large");
    // Many small headers count too.
    let mut req = c
        .post(lb.url("/v1/chat/completions"))
        .body(chat("hi", false));
    for i in 0..100 {
        req = req.header(
            format!("x-h{i}"),
            "0123456789012345678901234567890123456789",
        );
    }
    assert_eq!(req.send().await.unwrap().status(), 431);
    let m = lb.metrics().await;
    assert_eq!(
        metric(
            &m,
            "switchyard_limit_rejected_total",
            &[("limit", "max_header_bytes")]
        ),
        2.0
    );
    assert_eq!(
        s.stats().requests(),
        1,
        "refused requests never reach a peer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stalls_mid_body_gets_408_and_is_cut_off() {
    let s = sim("s").await;
    let lb = Balancer::start(&one_cluster(
        s.addr(),
        "limits: { client_body_timeout: 500ms }\n",
    ))
    .await;
    // HTTP/1.1: 10 of 100 announced bytes, then silence.
    let start = Instant::now();
    let mut conn = raw(
        lb.addr,
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"model\":",
    )
    .await;
    let (status, head) = read_response(&mut conn, Duration::from_secs(10))
        .await
        .expect("a response");
    let took = start.elapsed();
    assert_eq!(status, 408, "{head}");
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(closed_within(&mut conn, Duration::from_secs(5))
        .await
        .is_some());

    // HTTP/2 (h2c): one DATA frame, then the stream stalls.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    tx.send(Ok(b"{\"model\":".to_vec())).await.unwrap();
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let start = Instant::now();
    let r = h2
        .post(lb.url("/v1/chat/completions"))
        .body(body)
        .send()
        .await
        .expect("an h2 response");
    assert_eq!(r.status(), 408);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert!(start.elapsed() < Duration::from_secs(5));
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "client_body_timeout");
    drop(tx);
    assert_eq!(s.stats().requests(), 0);
}

/// A `Stream` over an mpsc receiver (reqwest wants a stream for a body that can stall).
fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keepalive_connections_are_closed_and_reuse_is_bounded() {
    let s = sim("s").await;
    let lb = Balancer::start(&one_cluster(
        s.addr(),
        "limits: { keepalive_timeout: 1s, keepalive_requests: 3 }\n",
    ))
    .await;
    // Reused while busy, then closed after about a second of idleness.
    let mut conn = raw(lb.addr, GET_MODELS).await;
    let first = read_response(&mut conn, Duration::from_secs(5)).await;
    assert_eq!(first.map(|r| r.0), Some(200));
    tokio::time::sleep(Duration::from_millis(300)).await;
    conn.write_all(GET_MODELS).await.unwrap();
    let second = read_response(&mut conn, Duration::from_secs(5)).await;
    assert_eq!(second.map(|r| r.0), Some(200), "still open after 300ms");
    let idle = closed_within(&mut conn, Duration::from_secs(10))
        .await
        .expect("idle connection closed");
    assert!(
        idle >= Duration::from_millis(700) && idle < Duration::from_secs(4),
        "{idle:?}"
    );

    // keepalive_requests: the third request on a connection is its last.
    let mut conn = raw(lb.addr, GET_MODELS).await;
    for i in 0..3 {
        let r = read_response(&mut conn, Duration::from_secs(5)).await;
        assert_eq!(r.map(|r| r.0), Some(200), "request {i}");
        if i < 2 {
            conn.write_all(GET_MODELS).await.unwrap();
        }
    }
    let closed = closed_within(&mut conn, Duration::from_secs(5)).await;
    assert!(
        closed.is_some_and(|d| d < Duration::from_millis(900)),
        "closed after the last allowed request, not by the idle timeout: {closed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_max_connections_are_closed_at_once() {
    let s = sim("s").await;
    let lb = Balancer::start(&one_cluster(s.addr(), "limits: { max_connections: 2 }\n")).await;
    // Two open connections, served.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = raw(lb.addr, GET_MODELS).await;
        let r = read_response(&mut c, Duration::from_secs(5)).await;
        assert_eq!(r.map(|r| r.0), Some(200));
        held.push(c);
    }
    // A third is accepted by the kernel and closed by switchyard without an answer.
    let mut third = raw(lb.addr, GET_MODELS).await;
    let closed = closed_within(&mut third, Duration::from_secs(5)).await;
    assert!(
        closed.is_some_and(|d| d < Duration::from_secs(2)),
        "{closed:?}"
    );
    let m = lb.metrics().await;
    assert!(
        metric(
            &m,
            "switchyard_limit_rejected_total",
            &[("limit", "max_connections")]
        ) >= 1.0
    );
    // Close one: there is room again (the count drops when the server sees the close).
    drop(held.pop());
    let start = Instant::now();
    loop {
        let mut c = raw(lb.addr, GET_MODELS).await;
        if let Some((200, _)) = read_response(&mut c, Duration::from_secs(2)).await {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no room after a close"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_over_max_concurrent_requests_get_503_with_retry_after() {
    let s = sim("s").await;
    let lb = Balancer::start(&one_cluster(
        s.addr(),
        "limits: { max_concurrent_requests: 2 }\n",
    ))
    .await;
    let c = client();
    let slow = |c: reqwest::Client, url: String| async move {
        c.post(url)
            .header("x-sim-ttft-ms", "1500")
            .body(chat("slow", false))
            .send()
            .await
            .map(|r| r.status().as_u16())
    };
    let url = lb.url("/v1/chat/completions");
    let a = tokio::spawn(slow(c.clone(), url.clone()));
    let b = tokio::spawn(slow(c.clone(), url.clone()));
    // Wait until both are in flight at the peer.
    let start = Instant::now();
    while s.stats().requests() < 2 {
        assert!(start.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = c
        .post(&url)
        .body(chat("third", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "overloaded");
    assert_eq!(
        (a.await.unwrap().unwrap(), b.await.unwrap().unwrap()),
        (200, 200)
    );
    // Slots come back when requests end.
    let r = c
        .post(&url)
        .body(chat("after", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let m = lb.metrics().await;
    assert_eq!(
        metric(
            &m,
            "switchyard_limit_rejected_total",
            &[("limit", "max_concurrent_requests")]
        ),
        1.0
    );
}

/// Poll the access log until it has `n` lines; each must be a JSON object.
async fn wait_lines(path: &Path, n: usize) -> Vec<serde_json::Value> {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        if lines.len() >= n {
            return lines
                .iter()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                .collect();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{} of {n} access log lines:\n{text}",
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_has_one_json_line_per_request_and_no_secrets() {
    let s = sim("s").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let lb = Balancer::start(&one_cluster(
        s.addr(),
        &format!("access_log: {{ path: {} }}\n", log.display()),
    ))
    .await;
    let c = client();
    let body = chat("PROMPT-SECRET-3", false);
    let r = c
        .post(lb.url("/v1/chat/completions?api_key=QUERY-SECRET-2"))
        .header("authorization", "Bearer sk-AUTH-SECRET-1")
        .header("x-api-key", "HEADER-SECRET-4")
        .header("x-request-id", "req-edge-1")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let sent = r.bytes().await.unwrap().len();
    let r = c.get(lb.url("/nowhere")).send().await.unwrap();
    assert_eq!(r.status(), 404);

    let lines = wait_lines(&log, 2).await;
    let text = std::fs::read_to_string(&log).unwrap();
    for secret in [
        "AUTH-SECRET",
        "QUERY-SECRET",
        "PROMPT-SECRET",
        "HEADER-SECRET",
    ] {
        assert!(
            !text.contains(secret),
            "{secret} leaked into the log:\n{text}"
        );
    }
    let ok = &lines[0];
    for key in [
        "time",
        "request_id",
        "client",
        "method",
        "path",
        "route",
        "cluster",
        "peer",
        "status",
        "tries",
        "cache",
        "ttfb_ms",
        "duration_ms",
        "bytes_sent",
        "bytes_received",
        "tls",
        "http",
    ] {
        assert!(ok.get(key).is_some(), "no {key} in {ok}");
    }
    let time = ok["time"].as_str().unwrap();
    assert!(
        humantime::parse_rfc3339(time).is_ok(),
        "time is not RFC 3339: {time}"
    );
    assert_eq!(ok["request_id"], "req-edge-1");
    assert_eq!(ok["method"], "POST");
    assert_eq!(ok["path"], "/v1/chat/completions");
    assert_eq!(ok["route"], "r");
    assert_eq!(ok["cluster"], "c");
    assert_eq!(ok["peer"], s.addr().to_string());
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["tries"], 1);
    assert!(ok["cache"].is_null());
    assert!(ok["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(ok["bytes_received"], body.len());
    assert_eq!(ok["bytes_sent"], sent);
    let (ttfb, total) = (
        ok["ttfb_ms"].as_f64().unwrap(),
        ok["duration_ms"].as_f64().unwrap(),
    );
    assert!(ttfb > 0.0 && ttfb <= total, "{ttfb} {total}");
    assert_eq!(ok["tls"], false);

    let nf = &lines[1];
    assert_eq!(nf["status"], 404);
    assert!(nf["route"].is_null() && nf["cluster"].is_null() && nf["peer"].is_null());
    assert_eq!(nf["tries"], 0);
    let m = lb.metrics().await;
    assert_eq!(metric(&m, "switchyard_access_log_dropped_total", &[]), 0.0);
    assert!(m.contains("switchyard_access_log_dropped_total"));
}

/// The one call the config reload makes for the edge: certificates re-read, access log
/// retargeted and reopened.
#[tokio::test]
async fn reload_edge_rereads_certificates_and_retargets_the_access_log() {
    let dir = tempfile::tempdir().unwrap();
    let (files, _) = self_signed(dir.path(), "r");
    let config = |log: &Path| {
        let text = format!(
            "listeners:\n  - addr: \"127.0.0.1:1\"\n{}access_log: {{ path: {} }}\n",
            one_cluster("127.0.0.1:2".parse().unwrap(), ""),
            log.display()
        );
        switchyard::config::parse(&text, "r.yaml").unwrap()
    };
    let (log_a, log_b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let app = switchyard::app::App::new(config(&log_a), Default::default(), None);
    let resolver = app.tls.add(&files.cert, &files.key).unwrap();
    app.reload_edge().unwrap();
    assert!(
        log_a.exists(),
        "the access log is opened by the first reload_edge"
    );

    let before = resolver.current().cert[0].clone();
    let (next, _) = self_signed(dir.path(), "r2");
    std::fs::rename(&next.cert, &files.cert).unwrap();
    std::fs::rename(&next.key, &files.key).unwrap();
    app.install(config(&log_b), String::new());
    assert_eq!(app.reload_edge().unwrap(), 1);
    assert_ne!(resolver.current().cert[0], before);
    assert!(log_b.exists(), "the access log follows the new config");
}
