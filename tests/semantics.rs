//! HTTP semantics at the edge, through real sockets: what the upstream is told (hop-by-hop
//! headers, client identity), early answers, hosts, what the cache may store and share, the
//! admin listener's protections, and metrics of removed peers.

use crate::common::raw::{self, Step};
use crate::common::*;
use std::net::SocketAddr;
use std::time::Duration;

const TOKEN: &str = "test-token-0123456789abcdef";

fn config(peer: SocketAddr, route: &str, top: &str) -> String {
    format!(
        "clusters:\n  c:\n    peers: [ {{ addr: \"{peer}\" }} ]\nroutes:\n  - name: r\n    match: {{ path_prefix: \"/v1/\" }}\n    split: [ {{ cluster: c }} ]\n{route}{top}"
    )
}

/// POST a chat request with `headers`; the answer's status and the header `want` of it.
async fn post(
    lb: &Balancer,
    body: &str,
    headers: &[(&str, &str)],
    want: &str,
) -> (u16, Option<String>) {
    let mut r = client()
        .post(lb.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .timeout(Duration::from_secs(20))
        .body(body.to_string());
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = r.send().await.expect("answer");
    let v = r
        .headers()
        .get(want)
        .map(|v| v.to_str().unwrap_or("").to_string());
    (r.status().as_u16(), v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_follow_trusted_proxies() {
    let s = sim("s").await;
    let echo = |lb: &Balancer, xff: &'static str, name: &'static str| {
        let url = lb.url("/v1/chat/completions");
        async move {
            let r = client()
                .post(url)
                .header("x-forwarded-for", xff)
                .header("forwarded", "for=6.6.6.6")
                .header("x-sim-echo-header", name)
                .body(chat("hi", false))
                .send()
                .await
                .unwrap();
            r.headers()
                .get("x-sim-echo")
                .map(|v| v.to_str().unwrap().to_string())
        }
    };
    // Untrusted (the default): the client's own values are replaced.
    let lb = Balancer::start(&config(s.addr(), "", "")).await;
    assert_eq!(
        echo(&lb, "1.2.3.4", "x-forwarded-for").await.as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        echo(&lb, "1.2.3.4", "forwarded").await.as_deref(),
        Some("for=127.0.0.1;proto=http")
    );
    drop(lb);
    // Trusted: appended; and the resolved client keys the client limit.
    let lb = Balancer::start(&config(
        s.addr(),
        "    client_limit: { key: ip, requests_per_minute: 1, burst: 1 }\n",
        "trusted_proxies: [ \"127.0.0.0/8\" ]\n",
    ))
    .await;
    assert_eq!(
        echo(&lb, "1.2.3.4", "x-forwarded-for").await.as_deref(),
        Some("1.2.3.4, 127.0.0.1")
    );
    let (status, _) = post(
        &lb,
        &chat("a", false),
        &[("x-forwarded-for", "5.5.5.5")],
        "x",
    )
    .await;
    assert_eq!(
        status, 200,
        "another client behind the same proxy has its own limit"
    );
    let (status, _) = post(
        &lb,
        &chat("a", false),
        &[("x-forwarded-for", "5.5.5.5")],
        "x",
    )
    .await;
    assert_eq!(status, 429, "the same client is limited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_named_in_connection_are_not_forwarded() {
    let s = sim("s").await;
    let lb = Balancer::start(&config(s.addr(), "", "")).await;
    let (status, echoed) = post(
        &lb,
        &chat("hi", false),
        &[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("x-sim-echo-header", "x-secret"),
        ],
        "x-sim-echo",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        echoed, None,
        "a Connection-named header reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_response_headers_do_not_reach_the_client() {
    let up = raw::Upstream::start(|_| {
        vec![
            Step::ReadBody,
            Step::Write(raw::response(
                "200 OK",
                &[
                    "connection: close, x-hop",
                    "x-hop: 1",
                    "upgrade: h2c",
                    "content-type: text/plain",
                ],
                "ok",
            )),
        ]
    })
    .await;
    let lb = Balancer::start(&config(up.addr, "", "")).await;
    let mut c = raw::send(
        lb.addr,
        b"POST /v1/x HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}",
    )
    .await;
    let (head, _) = raw::read_head(&mut c, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(raw::header(&head, "x-hop"), None, "{head}");
    assert_eq!(raw::header(&head, "upgrade"), None, "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_413_is_relayed_not_retried_nor_charged() {
    // Answers at once and closes without reading the body: the rest of the send fails.
    let up = raw::Upstream::start(|_| {
        vec![
            Step::Write(raw::response(
                "413 Payload Too Large",
                &["content-type: application/json", "connection: close"],
                r#"{"error":{"message":"prompt too large"}}"#,
            )),
            Step::Close,
        ]
    })
    .await;
    let lb = Balancer::start(&config(up.addr, "    max_request_body: 8MiB\n", "")).await;
    let big = chat(&"x".repeat(6 << 20), false);
    let (status, _) = post(&lb, &big, &[], "x").await;
    assert_eq!(status, 413, "the peer's own answer");
    assert_eq!(up.count(), 1, "not retried");
    let b = &lb.status().await["clusters"][0]["peers"][0]["breaker"];
    assert_eq!(b["failure_count"], 0, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_literal_hosts_and_http2_authority_route() {
    let s = sim("s").await;
    let body = format!(
        "clusters:\n  c:\n    peers: [ {{ addr: \"{}\" }} ]\nroutes:\n  - name: v6\n    match: {{ host: \"[::1]\", path_prefix: \"/v1/\" }}\n    split: [ {{ cluster: c }} ]\n  - name: a\n    match: {{ host: a.test, path_prefix: \"/v1/\" }}\n    split: [ {{ cluster: c }} ]\n",
        s.addr()
    );
    let lb = Balancer::start(&body).await;
    for host in ["[::1]", "[::1]:8080"] {
        let (status, _) = post(&lb, &chat("hi", false), &[("host", host)], "x").await;
        assert_eq!(status, 200, "Host: {host}");
    }
    // HTTP/2 with only :authority (a Host that disagrees with it is refused by Pingora).
    let tcp = tokio::net::TcpStream::connect(lb.addr).await.unwrap();
    let (h2, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut h2 = h2.ready().await.unwrap();
    let req = http::Request::builder()
        .method("POST")
        .uri("http://a.test/v1/chat/completions")
        .body(())
        .unwrap();
    let (resp, mut send) = h2.send_request(req, false).unwrap();
    send.send_data(chat("hi", false).into(), true).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), resp)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
}

fn det(content: &str) -> String {
    serde_json::json!({"model": "m", "temperature": 0,
        "messages": [{"role": "user", "content": content}]})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_key_holds_encoding_host_and_api_keys() {
    let s = sim("s").await;
    let lb = Balancer::start(&config(s.addr(), "    cache: { ttl: 1m }\n", "")).await;
    async fn cache_of(lb: &Balancer, h: &[(&str, &str)], content: &str) -> String {
        post(lb, &det(content), h, "x-cache-status")
            .await
            .1
            .unwrap_or_default()
    }
    let cache = |h: &'static [(&'static str, &'static str)], content: &'static str| {
        cache_of(&lb, h, content)
    };
    assert_eq!(cache(&[("accept-encoding", "gzip")], "e").await, "MISS");
    assert_eq!(cache(&[("accept-encoding", "gzip")], "e").await, "HIT");
    assert_eq!(
        cache(&[("accept-encoding", "identity")], "e").await,
        "MISS",
        "encodings split"
    );
    assert_eq!(cache(&[("host", "a.test")], "h").await, "MISS");
    assert_eq!(
        cache(&[("host", "b.test")], "h").await,
        "MISS",
        "hosts split"
    );
    assert_eq!(cache(&[("x-api-key", "tenant-1")], "k").await, "MISS");
    assert_eq!(
        cache(&[("x-api-key", "tenant-2")], "k").await,
        "MISS",
        "tenants split"
    );
    assert_eq!(cache(&[("api-key", "tenant-1")], "k").await, "MISS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_star_and_close_delimited_answers_are_not_stored() {
    let up = raw::Upstream::start(|head| {
        let body = r#"{"choices":[{"message":{"content":"hi"}}]}"#;
        if head.contains("vary-me") {
            vec![
                Step::ReadBody,
                Step::Write(raw::response(
                    "200 OK",
                    &["vary: *", "content-type: application/json", "connection: close"],
                    body,
                )),
                Step::Close,
            ]
        } else {
            // No length, no chunks: the body ends when the connection does, which a crash
            // would look like too.
            vec![
                Step::ReadBody,
                Step::Write(
                    format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{body}")
                        .into_bytes(),
                ),
                Step::Close,
            ]
        }
    })
    .await;
    let lb = Balancer::start(&config(up.addr, "    cache: { ttl: 1m }\n", "")).await;
    for (tag, what) in [("vary-me", "Vary: *"), ("close", "close-delimited")] {
        for _ in 0..2 {
            let (status, cache) = post(&lb, &det(tag), &[("x-tag", tag)], "x-cache-status").await;
            assert_eq!(status, 200);
            assert_eq!(cache.as_deref(), Some("MISS"), "{what} answer was stored");
        }
    }
    assert_eq!(up.count(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_reads_can_be_protected_and_cross_site_posts_are_refused() {
    let s = sim("s").await;
    let head = Head {
        admin: format!("  token: \"{TOKEN}\"\n  protect_reads: true\n"),
        ..Head::default()
    };
    let lb = Balancer::start_with(head, &config(s.addr(), "", "")).await;
    let c = client();
    for path in ["/status", "/metrics", "/health/circuit-breaker/c"] {
        let r = c.get(lb.admin_url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path} without the token");
        let r = c
            .get(lb.admin_url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path} with the token");
    }
    // Probes stay open.
    assert_eq!(
        c.get(lb.admin_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let st: serde_json::Value = c
        .get(lb.admin_url("/status"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // The digest leaves the token out: the same config with another token digests alike.
    let text = std::fs::read_to_string(&lb.config_path).unwrap();
    let other = text.replace(TOKEN, "another-token-0123456789");
    assert_eq!(st["config_sha256"], switchyard::app::digest(&other));
    drop(lb);

    let lb = Balancer::start(&config(s.addr(), "", "")).await;
    let admin_host = lb.admin.to_string();
    for (k, v) in [
        ("origin", "http://evil.test"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let r = c
            .post(lb.admin_url("/cache/purge"))
            .header(k, v)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{k}: {v}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "cross_site");
    }
    let r = c
        .post(lb.admin_url("/cache/purge"))
        .header("origin", format!("http://{admin_host}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "same origin");
    assert_eq!(
        c.post(lb.admin_url("/cache/purge"))
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "a client that is not a browser"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_that_fails_to_reload_fails_post_reload() {
    let s = sim("s").await;
    let dir = tempfile::tempdir().unwrap();
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("e.crt"), dir.path().join("e.key"));
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, c.key_pair.serialize_pem()).unwrap();
    let tls_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let head = Head {
        listeners: format!(
            "  - addr: \"{tls_addr}\"\n    tls: {{ cert: {}, key: {} }}\n",
            cert.display(),
            key.display()
        ),
        dir: Some(dir),
        ..Head::default()
    };
    let lb = Balancer::start_with(head, &config(s.addr(), "", "")).await;
    assert_eq!(lb.reload().await.0, 200);
    // A renewal that wrote a key of another certificate.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(&key, other.key_pair.serialize_pem()).unwrap();
    // The config check of the reload reads the same files: make it pass by pointing the
    // config at a matching pair, so that only the in-place certificate reload fails.
    let (good_cert, good_key) = (lb.dir.path().join("g.crt"), lb.dir.path().join("g.key"));
    std::fs::write(&good_cert, other.cert.pem()).unwrap();
    std::fs::write(&good_key, other.key_pair.serialize_pem()).unwrap();
    let text = std::fs::read_to_string(&lb.config_path).unwrap();
    let text = text
        .replace(
            &cert.display().to_string(),
            &good_cert.display().to_string(),
        )
        .replace(&key.display().to_string(), &good_key.display().to_string());
    std::fs::write(&lb.config_path, text).unwrap();
    let (status, body) = lb.reload().await;
    assert_eq!(status, 500, "{body}");
    let err = lb.status().await["last_reload_error"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(err.contains("TLS certificates were not reloaded"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_of_removed_peers_are_removed_on_reload() {
    let a = sim("a").await;
    let b = sim("b").await;
    let two = format!(
        "clusters:\n  c:\n    peers: [ {{ addr: \"{}\" }}, {{ addr: \"{}\" }} ]\nroutes:\n  - name: r\n    split: [ {{ cluster: c }} ]\n",
        a.addr(),
        b.addr()
    );
    let lb = Balancer::start(&two).await;
    for _ in 0..4 {
        post(&lb, &chat("hi", false), &[], "x").await;
    }
    let gone = b.addr().to_string();
    let has = |m: &str| m.contains(&format!("peer=\"{gone}\""));
    assert!(has(&lb.metrics().await));
    lb.write_config(&two.replace(&format!(", {{ addr: \"{gone}\" }}"), ""));
    assert_eq!(lb.reload().await.0, 200);
    assert!(
        !has(&lb.metrics().await),
        "the removed peer is still in /metrics"
    );
}
