//! The typed runtime config: what the rest of switchyard reads. Built only by `config::build`,
//! so every value here has been validated.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};
use regex::Regex;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerSettings,
    pub listeners: Vec<Listener>,
    pub admin: AdminSettings,
    /// Clusters sorted by name; routes refer to them by index.
    pub clusters: Vec<ClusterConfig>,
    /// Routes in file order: the first match wins.
    pub routes: Vec<RouteConfig>,
    /// Protections of the client-facing side.
    pub limits: Limits,
    /// One JSON line per request; `None` when off (the default).
    pub access_log: Option<AccessLogConfig>,
}

impl Config {
    /// The cluster called `name`.
    pub fn cluster(&self, name: &str) -> Option<&ClusterConfig> {
        self.clusters.iter().find(|c| c.name == name)
    }
}

/// Process settings, passed to Pingora's `ServerConf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// Worker threads of the proxy service. Default: one per core.
    pub threads: usize,
    /// How long a terminating or upgrading process keeps serving in-flight requests. Default 30s
    /// (Pingora's own default of 300s is too long for most edges).
    pub grace_period: Duration,
    /// After the grace period, how long to wait for tasks to end. Default 5s.
    pub graceful_shutdown_timeout: Duration,
    /// Default `/tmp/switchyard.pid`.
    pub pid_file: String,
    /// Socket the old and new process use to hand over listeners. Default `/tmp/switchyard_upgrade.sock`.
    pub upgrade_sock: String,
}

/// A client-facing listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub addr: SocketAddr,
    /// Terminate TLS here (HTTP/2 and HTTP/1.1 by ALPN); `None` for cleartext (HTTP/1.1, h2c).
    pub tls: Option<TlsFiles>,
}

/// PEM files of a TLS listener, checked to load and match when the config is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The admin listener. Default `127.0.0.1:9901`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    pub addr: SocketAddr,
    /// Bearer token required on mutating endpoints; required when `addr` is not loopback.
    pub token: Option<AdminToken>,
}

/// The admin bearer token. Never printed: `Debug` shows a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    pub(crate) fn new(token: String) -> Self {
        AdminToken(token)
    }

    /// Does `presented` equal the token? Takes the same time wherever the two differ: both are
    /// hashed to fixed-length digests first, so neither the length nor a common prefix leaks.
    pub fn matches(&self, presented: &[u8]) -> bool {
        use sha2::{Digest, Sha256};
        let a = Sha256::digest(self.0.as_bytes());
        let b = Sha256::digest(presented);
        let diff = a
            .iter()
            .zip(b.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y));
        std::hint::black_box(diff) == 0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Protections of the client-facing side. Every value has a default; see the README, "Edge
/// limits".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Request target plus header names and values, in bytes, above which a request gets 431.
    /// Default 64KiB.
    pub max_header_bytes: usize,
    /// Longest wait for the next piece of a request body. Default 30s.
    pub client_body_timeout: Duration,
    /// How long an idle client connection is kept open between requests (HTTP/1.1: also each
    /// read of a later request's header; HTTP/2: idle connection). Whole seconds. Default 60s.
    pub keepalive_timeout: Duration,
    /// Requests served on one HTTP/1.1 connection before it is closed. Default 1000.
    pub keepalive_requests: u32,
    /// Client connections open at once, all listeners together; above it new connections are
    /// closed at once. Default 10000.
    pub max_connections: usize,
    /// Requests in flight at once, all listeners together; above it requests get 503. Default
    /// 4096.
    pub max_concurrent_requests: usize,
}

/// Where the access log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogConfig {
    Stderr,
    /// Appended to; reopened when `AccessLog::reopen` is called.
    File(PathBuf),
}

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

/// A per-client request limit on a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientLimitConfig {
    pub key: StickyKey,
    pub requests_per_minute: u32,
    pub burst: u32,
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

/// Which part of a request keeps it on one side of the split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StickyKey {
    Header(HeaderName),
    Cookie(String),
    ClientIp,
}

/// Where a route sends its traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitTarget {
    /// Index into [`Config::clusters`].
    pub cluster: usize,
    pub weight: u32,
}

/// Which requests a route takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    /// Default `/`.
    pub path_prefix: String,
    /// Lower-case host without port; `None` matches any.
    pub host: Option<String>,
    /// `None` matches any method.
    pub methods: Option<Vec<Method>>,
}

/// The four timeouts of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Per attempt, TCP connect. Default 1s.
    pub connect: Duration,
    /// Per attempt, from request sent to response header (for streams: to the first body chunk).
    /// Default 30s.
    pub first_byte: Duration,
    /// Longest gap between body chunks. Default 60s.
    pub idle: Duration,
    /// The whole request, all attempts included. Default 300s.
    pub total: Duration,
}

/// The failures a route retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryOn {
    pub connect_failure: bool,
    pub refused: bool,
    pub reset: bool,
    pub timeout: bool,
    /// Response statuses that are retried (before anything reached the client).
    pub statuses: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Total tries, the first included. Default 3.
    pub attempts: u32,
    pub on: RetryOn,
    /// Default 25ms.
    pub backoff_base: Duration,
    /// Default 250ms.
    pub backoff_max: Duration,
    /// Retries may add at most this share of the route's in-flight requests. Default 0.2.
    pub budget: f64,
}

/// What a route answers when nothing upstream can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
    /// Sent (as `text/event-stream`) to requests with `"stream": true`.
    pub stream_body: Bytes,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    pub matcher: RouteMatch,
    pub split: Vec<SplitTarget>,
    pub sticky: Option<StickyKey>,
    pub timeouts: Timeouts,
    pub retry: RetryPolicy,
    /// Largest request body accepted (and replayed on retries). Default 4MiB.
    pub max_request_body: usize,
    pub fallback: Option<Fallback>,
    pub client_limit: Option<ClientLimitConfig>,
    /// Edge cache of answers; `None` = off (the default).
    pub cache: Option<CacheConfig>,
}

/// A route's edge cache (see `cache`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// How long an entry is fresh. Default 10m.
    pub ttl: Duration,
    /// Bound on the bytes the route's store holds (each route with a cache has its own store).
    /// Default 256MiB.
    pub max_bytes: u64,
    /// Larger answers are not stored. Default 1MiB.
    pub max_entry_bytes: u64,
    /// Request headers whose values (digested) take part in the key. Default `[authorization]`.
    pub vary_headers: Vec<HeaderName>,
    /// Cache only requests with `"temperature": 0` (absent counts as 1). Default true.
    pub deterministic_only: bool,
    /// How long past `ttl` an entry may still answer when no upstream can. Default 0 (off).
    pub stale_if_error: Duration,
    /// How long identical requests wait for the one in flight. Default 30s.
    pub lock_timeout: Duration,
    /// JSON-lines file of requests sent at start and after each reload to fill the cache.
    pub warm: Option<std::path::PathBuf>,
}
