use super::*;
use std::time::Duration;

const GOOD: &str = r#"
server:
  threads: 2
listeners:
  - addr: "127.0.0.1:8080"
admin:
  addr: "127.0.0.1:9901"
clusters:
  primary:
    balance: least_inflight
    peers:
      - { addr: "10.0.0.11:8000", weight: 2 }
      - { addr: "10.0.0.12:8000" }
    health_check:
      path: /health
      expect_body: "ok"
  secondary:
    peers:
      - { addr: "10.0.1.11:8000" }
routes:
  - name: chat
    match: { path_prefix: "/v1/", methods: [post] }
    split:
      - { cluster: primary, weight: 90 }
      - { cluster: secondary, weight: 10 }
    sticky: "header:x-user-id"
    timeouts: { connect: 500ms, first_byte: 30s, idle: 60s, total: 5m }
    retry: { attempts: 2, retry_on: [connect_failure, 503, "429"] }
    max_request_body: 8MiB
    fallback:
      body: '{"busy":true}'
"#;

#[test]
fn good_config_builds_with_types_and_defaults() {
    let c = parse(GOOD, "good.yaml").unwrap();
    assert_eq!(c.server.threads, 2);
    assert_eq!(c.server.grace_period, Duration::from_secs(30));
    assert_eq!(c.listeners[0].addr, "127.0.0.1:8080".parse().unwrap());
    // Clusters are sorted by name; the split refers to them by index.
    assert_eq!(c.clusters[0].name, "primary");
    assert_eq!(c.clusters[0].balance, Balance::LeastInflight);
    assert_eq!(c.clusters[0].peers[0].weight, 2);
    assert_eq!(c.clusters[0].peers[1].weight, 1);
    assert_eq!(c.clusters[1].balance, Balance::RoundRobin);
    let hc = c.clusters[0].health_check.as_ref().unwrap();
    assert_eq!(hc.healthy_threshold, 2);
    assert_eq!(hc.unhealthy_threshold, 3);
    assert!(c.clusters[1].health_check.is_none());
    assert!(c.clusters[1].breaker.enabled);
    let r = &c.routes[0];
    assert_eq!(r.split.len(), 2);
    assert_eq!((r.split[0].cluster, r.split[0].weight), (0, 90));
    assert_eq!((r.split[1].cluster, r.split[1].weight), (1, 10));
    assert_eq!(
        r.matcher.methods.as_deref(),
        Some(&[http::Method::POST][..])
    );
    assert_eq!(
        r.sticky,
        Some(StickyKey::Header(http::HeaderName::from_static(
            "x-user-id"
        )))
    );
    assert_eq!(r.timeouts.connect, Duration::from_millis(500));
    assert_eq!(r.timeouts.total, Duration::from_secs(300));
    assert_eq!(r.retry.attempts, 2);
    assert!(r.retry.on.connect_failure && !r.retry.on.reset);
    assert_eq!(r.retry.on.statuses, vec![429, 503]);
    assert_eq!(r.max_request_body, 8 * 1024 * 1024);
    let fb = r.fallback.as_ref().unwrap();
    assert_eq!(fb.status, 200);
    assert_eq!(
        &fb.stream_body[..],
        b"data: {\"busy\":true}\n\ndata: [DONE]\n\n"
    );
}

/// Each bad config must fail with the given key path, and a line where the key is in the file.
#[test]
fn bad_configs_name_the_key_path_and_line() {
    let cases: &[(&str, &str, &str, Option<usize>)] = &[
        // (what to replace in GOOD, with what, expected path, expected line)
        (
            "cluster: secondary",
            "cluster: secndary",
            "routes[0].split[1].cluster",
            Some(25),
        ),
        (
            "10.0.0.12:8000",
            "10.0.0.12",
            "clusters.primary.peers[1].addr",
            Some(13),
        ),
        (
            "connect: 500ms",
            "connect: 5 parsecs",
            "routes[0].timeouts.connect",
            Some(27),
        ),
        (
            "connect: 500ms",
            "connect: 500",
            "routes[0].timeouts.connect",
            Some(27),
        ),
        ("threads: 2", "thraeds: 2", "server.thraeds", Some(3)),
        (
            "balance: least_inflight",
            "balance: fastest",
            "clusters.primary.balance",
            Some(10),
        ),
        (
            "attempts: 2",
            "attempts: 0",
            "routes[0].retry.attempts",
            Some(28),
        ),
        ("8MiB", "8 parsecs", "routes[0].max_request_body", Some(29)),
        (
            "expect_body: \"ok\"",
            "expect_body: \"(\"",
            "clusters.primary.health_check.expect_body",
            Some(16),
        ),
        (
            "\"header:x-user-id\"",
            "\"query:user\"",
            "routes[0].sticky",
            Some(26),
        ),
        (
            "10.0.0.12:8000",
            "10.0.0.11:8000",
            "clusters.primary.peers[1].addr",
            Some(13),
        ),
    ];
    for (from, to, path, line) in cases {
        assert!(GOOD.contains(from), "test case text {from:?} not in GOOD");
        let text = GOOD.replacen(from, to, 1);
        let e = parse(&text, "bad.yaml").expect_err(&format!("{to:?} must be rejected"));
        let ConfigError::Invalid(inv) = &e else {
            panic!("unexpected error {e}")
        };
        assert_eq!(inv.path, *path, "for {to:?}: {e}");
        assert_eq!(inv.line, *line, "for {to:?}: {e}");
        assert!(e.to_string().starts_with("bad.yaml:"), "{e}");
    }
}

#[test]
fn zero_total_weight_and_duplicates_are_errors() {
    let text = GOOD
        .replace("weight: 90 }", "weight: 0 }")
        .replace("weight: 10 }", "weight: 0 }");
    let e = parse(&text, "x").unwrap_err();
    assert_eq!(e.path(), Some("routes[0].split"));
    assert!(e.to_string().contains("total split weight is zero"), "{e}");

    let dup_route = format!("{GOOD}  - name: chat\n    split:\n      - {{ cluster: primary }}\n");
    let e = parse(&dup_route, "x").unwrap_err();
    assert_eq!(e.path(), Some("routes[1].name"));
    assert!(e.to_string().contains(":32:"), "{e}");
}

#[test]
fn syntax_errors_and_missing_files_are_reported() {
    let e = parse("listeners: [", "x.yaml").unwrap_err();
    assert!(e.to_string().starts_with("x.yaml:"), "{e}");
    let e = load(std::path::Path::new("/nonexistent/switchyard.yaml")).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }));
    assert!(parse("", "empty").is_err());
}

#[test]
fn cache_defaults_and_errors_name_the_key_path() {
    let with =
        |block: &str| GOOD.replacen("    fallback:\n", &format!("{block}    fallback:\n"), 1);
    let c = parse(&with("    cache: {}\n"), "x").unwrap();
    let cache = c.routes[0].cache.as_ref().unwrap();
    assert_eq!(cache.ttl, Duration::from_secs(600));
    assert_eq!(cache.max_bytes, 256 * 1024 * 1024);
    assert_eq!(cache.max_entry_bytes, 1024 * 1024);
    let vary: Vec<&str> = cache.vary_headers.iter().map(|h| h.as_str()).collect();
    assert_eq!(vary, ["authorization", "x-api-key", "api-key"]);
    assert!(cache.deterministic_only);
    assert_eq!(cache.stale_if_error, Duration::ZERO);
    assert_eq!(cache.lock_timeout, Duration::from_secs(30));
    assert_eq!(cache.warm, None);
    assert!(parse(GOOD, "x").unwrap().routes[0].cache.is_none());

    let full = "    cache:\n      ttl: 1m\n      max_bytes: 64KiB\n      max_entry_bytes: 8KiB\n      vary_headers: [Authorization, x-tenant]\n      deterministic_only: false\n      stale_if_error: 1h\n      lock_timeout: 5s\n      warm: conf/warm.jsonl\n";
    let c = parse(&with(full), "x").unwrap();
    let cache = c.routes[0].cache.as_ref().unwrap();
    assert_eq!(cache.ttl, Duration::from_secs(60));
    assert_eq!(
        (cache.max_bytes, cache.max_entry_bytes),
        (64 * 1024, 8 * 1024)
    );
    assert_eq!(cache.vary_headers[0], http::header::AUTHORIZATION);
    assert_eq!(cache.vary_headers[1].as_str(), "x-tenant");
    assert!(!cache.deterministic_only);
    assert_eq!(cache.stale_if_error, Duration::from_secs(3600));
    assert_eq!(
        cache.warm.as_deref(),
        Some(std::path::Path::new("conf/warm.jsonl"))
    );

    // (cache block, expected path, expected line): the block starts on line 30.
    let bad: &[(&str, &str, usize)] = &[
        ("    cache: { ttl: 0s }\n", "routes[0].cache.ttl", 30),
        (
            "    cache:\n      max_bytes: 1MiB\n      max_entry_bytes: 2MiB\n",
            "routes[0].cache.max_entry_bytes",
            32,
        ),
        (
            "    cache:\n      vary_headers: [authorization, \"bad header\"]\n",
            "routes[0].cache.vary_headers[1]",
            31,
        ),
        (
            "    cache: { max_bytes: 10 }\n",
            "routes[0].cache.max_bytes",
            30,
        ),
        (
            "    cache: { lock_timeout: 0s }\n",
            "routes[0].cache.lock_timeout",
            30,
        ),
        ("    cache: { tll: 1m }\n", "routes[0].cache.tll", 30),
    ];
    for (block, path, line) in bad {
        let e = parse(&with(block), "bad.yaml").expect_err(block);
        let ConfigError::Invalid(inv) = &e else {
            panic!("unexpected error {e}")
        };
        assert_eq!(inv.path, *path, "for {block:?}: {e}");
        assert_eq!(inv.line, Some(*line), "for {block:?}: {e}");
    }
}
/// `GOOD` with `extra` top-level YAML appended.
fn with(extra: &str) -> String {
    format!("{GOOD}{extra}")
}

fn bad(text: &str) -> Invalid {
    match parse(text, "edge.yaml") {
        Err(ConfigError::Invalid(inv)) => inv,
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn edge_keys_default_to_safe_values() {
    let c = parse(GOOD, "good.yaml").unwrap();
    assert_eq!(c.limits.max_header_bytes, 64 * 1024);
    assert_eq!(c.limits.client_body_timeout, Duration::from_secs(30));
    assert_eq!(c.limits.keepalive_timeout, Duration::from_secs(60));
    assert_eq!(c.limits.keepalive_requests, 1000);
    assert_eq!(c.limits.max_connections, 10_000);
    assert_eq!(c.limits.max_concurrent_requests, 4096);
    assert_eq!(c.access_log, None);
    assert_eq!(c.admin.token, None);
    assert_eq!(c.listeners[0].tls, None);
}

#[test]
fn limits_parse_and_reject_bad_values_by_key() {
    let c = parse(
        &with("limits:\n  max_header_bytes: 8KiB\n  client_body_timeout: 500ms\n  keepalive_timeout: 1500ms\n  keepalive_requests: 10\n  max_connections: 5\n  max_concurrent_requests: 2\n"),
        "x",
    )
    .unwrap();
    assert_eq!(c.limits.max_header_bytes, 8 * 1024);
    assert_eq!(c.limits.client_body_timeout, Duration::from_millis(500));
    // Pingora counts keep-alive in whole seconds: rounded up, never down to "forever".
    assert_eq!(c.limits.keepalive_timeout, Duration::from_secs(2));
    assert_eq!(
        (
            c.limits.keepalive_requests,
            c.limits.max_connections,
            c.limits.max_concurrent_requests
        ),
        (10, 5, 2)
    );
    for (yaml, path) in [
        ("max_header_bytes: 100", "limits.max_header_bytes"),
        ("max_header_bytes: 2MiB", "limits.max_header_bytes"),
        ("client_body_timeout: 0s", "limits.client_body_timeout"),
        ("keepalive_timeout: 500ms", "limits.keepalive_timeout"),
        ("max_connections: 0", "limits.max_connections"),
        (
            "max_concurrent_requests: 0",
            "limits.max_concurrent_requests",
        ),
        ("max_conections: 10", "limits.max_conections"),
    ] {
        let inv = bad(&with(&format!("limits:\n  {yaml}\n")));
        assert_eq!(inv.path, path, "{yaml}: {inv}");
        assert_eq!(inv.line, Some(33), "{yaml}: {inv}");
    }
}

#[test]
fn admin_token_rules() {
    let token = "0123456789abcdef0123";
    // A public admin address needs a token.
    let public = GOOD.replace("addr: \"127.0.0.1:9901\"", "addr: \"0.0.0.0:9901\"");
    let inv = bad(&public);
    assert_eq!(
        (inv.path.as_str(), inv.line),
        ("admin.addr", Some(7)),
        "{inv}"
    );
    assert!(inv.message.contains("admin.token"), "{inv}");
    let c = parse(
        &public.replace(
            "addr: \"0.0.0.0:9901\"",
            &format!("addr: \"0.0.0.0:9901\"\n  token: \"{token}\""),
        ),
        "x",
    )
    .unwrap();
    let t = c.admin.token.expect("token");
    assert!(t.matches(token.as_bytes()));
    assert!(!t.matches(b"0123456789abcdef0124"));
    assert!(!t.matches(b""));
    assert!(
        !format!("{t:?}").contains(token),
        "Debug must not print the token"
    );

    // token_file: trimmed; unreadable, too short, or given with token: errors by key.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("  {token}\n")).unwrap();
    let admin = |extra: &str| {
        GOOD.replace(
            "addr: \"127.0.0.1:9901\"",
            &format!("addr: \"127.0.0.1:9901\"\n  {extra}"),
        )
    };
    let c = parse(&admin(&format!("token_file: {}", file.display())), "x").unwrap();
    assert!(c.admin.token.unwrap().matches(token.as_bytes()));
    for (extra, path) in [
        (
            "token_file: /nonexistent/token".to_string(),
            "admin.token_file",
        ),
        ("token: short".to_string(), "admin.token"),
        (
            "token: \"has a space in it, sadly\"".to_string(),
            "admin.token",
        ),
        (
            format!("token: \"{token}\"\n  token_file: {}", file.display()),
            "admin.token_file",
        ),
    ] {
        let inv = bad(&admin(&extra));
        assert_eq!(inv.path, path, "{extra}: {inv}");
    }
    // The address alone may be left out.
    let c = parse(
        &GOOD.replace("addr: \"127.0.0.1:9901\"", &format!("token: \"{token}\"")),
        "x",
    )
    .unwrap();
    assert_eq!(c.admin.addr, "127.0.0.1:9901".parse().unwrap());
}

mod balance;
mod choices;
mod defaults;
mod failover;
mod process;
mod resume;
mod shared;
mod tracing;
mod upstream;
