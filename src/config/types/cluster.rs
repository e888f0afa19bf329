//! The typed config of a cluster: its peers and how one is picked, health checks, breakers,
//! and what governs how much reaches its upstream (API keys, request budget, admission queue).

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};
use regex::Regex;
use std::net::SocketAddr;
use std::time::Duration;

/// How a cluster picks a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Weighted round robin (the default).
    RoundRobin,
    /// Power of two choices on in-flight requests per unit of weight.
    LeastInflight,
}

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub name: String,
    pub balance: Balance,
    pub peers: Vec<PeerConfig>,
    pub health_check: Option<HealthCheckConfig>,
    pub breaker: BreakerConfig,
    /// A peer coming back ramps from a tenth of its weight to all of it over this time.
    pub slow_start: Option<Duration>,
    /// Upstream API keys sent with every try, with failover between them.
    pub api_keys: Option<ApiKeysConfig>,
    /// The most requests per minute this cluster's upstream may see.
    pub rate_limit: Option<RateLimitConfig>,
    /// Where requests wait when every peer is at `max_inflight`.
    pub queue: QueueConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub addr: SocketAddr,
    /// Relative share within the cluster; default 1; 0 takes the peer out of rotation (drain).
    pub weight: u32,
    /// Most requests in flight to this peer; more wait in the cluster's queue. Default unlimited.
    pub max_inflight: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthCheckKind {
    Http,
    Tcp,
}

/// Active health check of every peer of a cluster.
#[derive(Debug, Clone)]
pub struct HealthCheckConfig {
    pub kind: HealthCheckKind,
    /// Default GET.
    pub method: Method,
    /// Default `/health`.
    pub path: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Option<Bytes>,
    /// Default `[200]`.
    pub expect_status: Vec<u16>,
    pub expect_body: Option<Regex>,
    /// Default 5s.
    pub interval: Duration,
    /// Default 2s.
    pub timeout: Duration,
    /// Consecutive passes to become healthy. Default 2.
    pub healthy_threshold: u32,
    /// Consecutive failures to become unhealthy. Default 3.
    pub unhealthy_threshold: u32,
}

/// Which outcomes count against a peer's breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureOn {
    pub connect: bool,
    pub timeout: bool,
    pub reset: bool,
    pub status_5xx: bool,
}

/// Passive per-peer circuit breaker settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Default true.
    pub enabled: bool,
    /// Trip after this many failures in a row. Default 5.
    pub consecutive_failures: u32,
    /// Or when this share of the requests in `window` failed. Default 0.5.
    pub failure_rate: f64,
    /// ...and at least this many were seen. Default 20.
    pub min_requests: u32,
    /// Default 60s.
    pub window: Duration,
    /// First ejection. Default 10s; each further trip doubles it.
    pub open_for: Duration,
    /// Cap on the ejection time. Default 300s.
    pub max_open_for: Duration,
    /// Trial requests at once when half-open. Default 1.
    pub half_open_requests: u32,
    /// Trial successes in a row to close. Default 3.
    pub success_threshold: u32,
    /// Never eject more than this share of a cluster at once (at least one). Default 50.
    pub max_ejected_percent: u32,
    /// Default: connect, timeout, reset, 5xx.
    pub failure_on: FailureOn,
}

/// A pool of API keys for a cluster.
#[derive(Debug, Clone)]
pub struct ApiKeysConfig {
    /// Header the key is sent in. Default `authorization`.
    pub header: HeaderName,
    /// Send as `Bearer <key>` (true for `authorization`) or the bare key.
    pub bearer: bool,
    /// The keys, in file order (secrets: never logged).
    pub keys: Vec<String>,
    /// Matching failures in a row before a key is taken out. Default 3.
    pub failure_threshold: u32,
    pub conditions: Vec<KeyCondition>,
    /// Cooldown when `retry-after` is absent, and how long a key without a health check stays out.
    /// Default 60s.
    pub default_cooldown: Duration,
    pub health_check: Option<KeyHealthCheck>,
}

/// When an answer counts against the key that was used.
#[derive(Debug, Clone)]
pub struct KeyCondition {
    pub statuses: Vec<u16>,
    /// Regex the response body must match too.
    pub body: Option<Regex>,
    pub cooldown: KeyCooldown,
}

/// What happens to a key when a condition matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCooldown {
    /// Counts toward `failure_threshold`; then the key is out until its health check passes.
    Disable,
    /// Out at once, for the answer's `retry-after` (else `default_cooldown`).
    RetryAfter,
    /// Out at once, for this long.
    For(Duration),
}

/// Probe for a key that was taken out.
#[derive(Debug, Clone)]
pub struct KeyHealthCheck {
    pub method: Method,
    pub path: String,
    pub body: Option<Bytes>,
    pub expect_status: Vec<u16>,
    pub expect_body: Option<Regex>,
    pub interval: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
}

/// A request budget (GCRA: `requests_per_minute` steady, `burst` at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    pub requests_per_minute: u32,
    pub burst: u32,
    /// How long a request may wait for the budget before going elsewhere or getting 429.
    pub queue_timeout: Duration,
}

/// The admission queue of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    /// Requests that may wait at once; more get 503 at once. Default 100.
    pub max_waiting: u32,
    /// Longest wait for a free peer. Default 5s.
    pub timeout: Duration,
}
