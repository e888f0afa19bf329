//! Keys left out take the defaults of their types, so the defaults are written in one place.

use super::*;

/// Every key that has a default left out.
const MINIMAL: &str = r#"
listeners:
  - addr: "127.0.0.1:8080"
clusters:
  primary:
    peers:
      - { addr: "10.0.0.11:8000" }
    health_check: {}
    api_keys:
      keys: [k1]
      failover:
        health_check: {}
routes:
  - name: chat
    split:
      - { cluster: primary }
    cache: {}
"#;

#[test]
fn left_out_keys_take_the_defaults_of_their_types() {
    let c = parse(MINIMAL, "minimal.yaml").unwrap();
    assert_eq!(c.server, ServerSettings::default());
    assert_eq!(c.limits, Limits::default());
    assert_eq!(c.admin.addr, "127.0.0.1:9901".parse().unwrap());
    let cluster = &c.clusters[0];
    assert_eq!(cluster.balance, Balance::RoundRobin);
    assert_eq!(cluster.breaker, BreakerConfig::default());
    assert_eq!(cluster.breaker.failure_on, FailureOn::ALL);
    assert_eq!(cluster.queue, QueueConfig::default());
    assert_eq!(cluster.dns_refresh, DNS_REFRESH);
    assert!(cluster.tls.is_none());
    assert_eq!(cluster.rewrite, Rewrite::default());
    assert!(cluster.api_keys.as_ref().unwrap().strip_headers.is_empty());
    assert_eq!(c.resolver, ResolverSettings::default());

    let (hc, d) = (
        cluster.health_check.as_ref().unwrap(),
        HealthCheckConfig::default(),
    );
    assert_eq!(
        (hc.kind, &hc.method, &hc.path, &hc.expect_status),
        (d.kind, &d.method, &d.path, &d.expect_status)
    );
    assert_eq!(
        (
            hc.interval,
            hc.timeout,
            hc.healthy_threshold,
            hc.unhealthy_threshold
        ),
        (
            d.interval,
            d.timeout,
            d.healthy_threshold,
            d.unhealthy_threshold
        )
    );
    assert!(hc.headers.is_empty() && hc.body.is_none() && hc.expect_body.is_none());

    let keys = cluster.api_keys.as_ref().unwrap();
    let (kh, d) = (
        keys.health_check.as_ref().unwrap(),
        KeyHealthCheck::default(),
    );
    assert_eq!(
        (
            &kh.method,
            &kh.path,
            &kh.expect_status,
            kh.interval,
            kh.timeout
        ),
        (&d.method, &d.path, &d.expect_status, d.interval, d.timeout)
    );
    assert_eq!(kh.success_threshold, d.success_threshold);

    let route = &c.routes[0];
    assert_eq!(route.timeouts, Timeouts::default());
    assert_eq!(route.hedge, None);
    assert_eq!(route.retry, RetryPolicy::default());
    assert_eq!(route.retry.on, RetryOn::default());
    // Without `shared`, a cache is this instance's own.
    let local = CacheConfig {
        shared: false,
        ..CacheConfig::default()
    };
    assert_eq!(route.cache.as_ref(), Some(&local));
}

#[test]
fn the_defaults_are_the_documented_values() {
    let b = BreakerConfig::default();
    assert!(b.enabled);
    assert_eq!(
        (b.consecutive_failures, b.failure_rate, b.min_requests),
        (5, 0.5, 20)
    );
    assert_eq!(
        (b.window, b.open_for, b.max_open_for),
        (
            Duration::from_secs(60),
            Duration::from_secs(10),
            Duration::from_secs(300)
        )
    );
    assert_eq!(
        (
            b.half_open_requests,
            b.success_threshold,
            b.max_ejected_percent
        ),
        (1, 3, 50)
    );
    let on = RetryOn::default();
    assert!(on.connect_failure && on.refused && on.reset && on.timeout);
    assert_eq!(on.statuses, vec![502, 503, 504]);
    let r = RetryPolicy::default();
    assert_eq!(
        (r.attempts, r.backoff_base, r.backoff_max),
        (3, Duration::from_millis(25), Duration::from_millis(250))
    );
    assert_eq!(
        (r.budget.ratio, r.budget.window, r.budget.min_per_second),
        (0.2, Duration::from_secs(10), 10)
    );
    assert_eq!(r.other_cluster, OtherCluster::Last);
    assert_eq!(r.max_retry_after, Duration::from_secs(2));
    let t = Timeouts::default();
    assert_eq!(
        (t.connect, t.first_byte, t.first_token, t.idle, t.total),
        (
            Duration::from_secs(1),
            None,
            Duration::from_secs(15),
            Duration::from_secs(60),
            Duration::from_secs(300)
        )
    );
    let h = HedgeConfig::default();
    assert_eq!((h.after, h.max), (Duration::from_secs(2), 1));
    let q = QueueConfig::default();
    assert_eq!((q.max_waiting, q.timeout), (100, Duration::from_secs(5)));
    assert_eq!(
        FailureOn::default(),
        FailureOn {
            connect: true,
            timeout: true,
            reset: true,
            status_5xx: true
        }
    );
}
