//! The typed config of a cluster: its peers and how one is picked, health checks, breakers,
//! and what governs how much reaches its upstream (API keys, request budget, admission queue).

use super::shared::Scope;
use super::upstream::{PeerAddr, Rewrite, UpstreamTls};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};
use regex::Regex;
use std::time::Duration;

/// How a cluster picks a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Weighted round robin (the default).
    RoundRobin,
    /// Power of two choices on in-flight requests per unit of weight.
    LeastInflight,
    /// Consistent hashing of the prompt prefix (or a header) under a load bound.
    PrefixAffinity,
}

/// What `prefix_affinity` hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AffinityKey {
    /// The first `prefix_bytes` of the prompt: the chat messages' roles and contents in order,
    /// or a completion's `prompt` (the default).
    Prompt,
    /// The value of this request header (`header:NAME`), for explicit session affinity.
    Header(HeaderName),
}

/// `clusters.NAME.affinity`: how `prefix_affinity` keys and bounds its picks.
#[derive(Debug, Clone, PartialEq)]
pub struct AffinityConfig {
    /// Default [`AffinityKey::Prompt`].
    pub key: AffinityKey,
    /// Bytes of the prompt that are hashed. Default 2048.
    pub prefix_bytes: usize,
    /// A peer is passed over while its load exceeds this many times the cluster's mean.
    /// Default 1.25; at least 1.
    pub load_factor: f64,
}

impl Default for AffinityConfig {
    /// The prompt's first 2048 bytes, load bound 1.25 × the mean.
    fn default() -> Self {
        AffinityConfig {
            key: AffinityKey::Prompt,
            prefix_bytes: 2048,
            load_factor: 1.25,
        }
    }
}

/// `clusters.NAME.load_report`: scrape each peer's Prometheus metrics for its own queue and
/// KV-cache use (vLLM and SGLang gauges).
#[derive(Debug, Clone, PartialEq)]
pub struct LoadReportConfig {
    /// Path of the metrics page on each peer. Default `/metrics`.
    pub path: String,
    /// Time between scrapes of a peer (and the longest a scrape may take). Default 1s. A report
    /// older than three intervals is stale and no longer used.
    pub interval: Duration,
    /// A peer reporting more requests waiting than this is skipped while another can serve.
    /// Default none (no limit).
    pub max_waiting: Option<u32>,
    /// A peer reporting at least this KV-cache use (0 to 1) is skipped while another can serve.
    /// Default 0.99.
    pub max_kv_usage: f64,
}

impl Default for LoadReportConfig {
    /// `/metrics` every second; no waiting limit; KV cache full at 0.99.
    fn default() -> Self {
        LoadReportConfig {
            path: "/metrics".into(),
            interval: Duration::from_secs(1),
            max_waiting: None,
            max_kv_usage: 0.99,
        }
    }
}

/// A named group of peers that serve the same models.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Its key under `clusters:`; routes and metrics name it by this.
    pub name: String,
    /// How a peer is picked. Default round robin.
    pub balance: Balance,
    /// The key and load bound of `prefix_affinity` (defaults otherwise; unused).
    pub affinity: AffinityConfig,
    /// Load reported by the peers themselves; `None` = only our own in-flight count.
    pub load_report: Option<LoadReportConfig>,
    /// One or more, in file order.
    pub peers: Vec<PeerConfig>,
    /// Active checks of every peer; `None` = every peer counts as healthy.
    pub health_check: Option<HealthCheckConfig>,
    /// The passive breaker each peer gets.
    pub breaker: BreakerConfig,
    /// A peer coming back ramps from a tenth of its weight to all of it over this time.
    pub slow_start: Option<Duration>,
    /// Upstream API keys sent with every try, with failover between them.
    pub api_keys: Option<ApiKeysConfig>,
    /// The most requests per minute this cluster's upstream may see.
    pub rate_limit: Option<RateLimitConfig>,
    /// Where requests wait when every peer is at `max_inflight`.
    pub queue: QueueConfig,
    /// How often the names of named peers are resolved again. Default 30s.
    pub dns_refresh: Duration,
    /// TLS to the peers; `None` = cleartext.
    pub tls: Option<UpstreamTls>,
    /// The upstream request's `Host` and path.
    pub rewrite: Rewrite,
}

/// One upstream server of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// Where it is reached: an address, or a name standing for every address it resolves to.
    pub addr: PeerAddr,
    /// Relative share within the cluster; default 1; 0 takes the peer out of rotation (drain).
    pub weight: u32,
    /// Most requests in flight to this peer; more wait in the cluster's queue. Default unlimited.
    pub max_inflight: Option<u32>,
}

/// What a health check probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthCheckKind {
    /// An HTTP request whose answer must match (the default).
    Http,
    /// A TCP connect, nothing more.
    Tcp,
}

/// Active health check of every peer of a cluster.
#[derive(Debug, Clone)]
pub struct HealthCheckConfig {
    /// Default HTTP.
    pub kind: HealthCheckKind,
    /// Default GET.
    pub method: Method,
    /// Default `/health`.
    pub path: String,
    /// Sent with every probe. Default none.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Request body of the probe. Default none.
    pub body: Option<Bytes>,
    /// Answers that pass. Default `[200]`.
    pub expect_status: Vec<u16>,
    /// Regex the answer's body must match too. Default none.
    pub expect_body: Option<Regex>,
    /// Time between probes of a peer. Default 5s.
    pub interval: Duration,
    /// Longest wait for a probe's answer. Default 2s.
    pub timeout: Duration,
    /// Consecutive passes to become healthy. Default 2.
    pub healthy_threshold: u32,
    /// Consecutive failures to become unhealthy. Default 3.
    pub unhealthy_threshold: u32,
}

impl Default for HealthCheckConfig {
    /// `GET /health` over HTTP expecting 200, every 5s with a 2s timeout; healthy after 2 passes,
    /// unhealthy after 3 failures.
    fn default() -> Self {
        HealthCheckConfig {
            kind: HealthCheckKind::Http,
            method: Method::GET,
            path: "/health".into(),
            headers: Vec::new(),
            body: None,
            expect_status: vec![200],
            expect_body: None,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }
}

/// Which outcomes count against a peer's breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureOn {
    /// The peer could not be connected to.
    pub connect: bool,
    /// The peer did not answer in time.
    pub timeout: bool,
    /// The peer closed or reset the connection mid-request.
    pub reset: bool,
    /// The peer answered with a 5xx status.
    pub status_5xx: bool,
}

impl FailureOn {
    /// Every outcome counts (the default).
    pub const ALL: FailureOn = FailureOn {
        connect: true,
        timeout: true,
        reset: true,
        status_5xx: true,
    };

    /// No outcome counts; where a `failure_on` list starts.
    pub const NONE: FailureOn = FailureOn {
        connect: false,
        timeout: false,
        reset: false,
        status_5xx: false,
    };
}

impl Default for FailureOn {
    /// [`FailureOn::ALL`].
    fn default() -> Self {
        FailureOn::ALL
    }
}

/// Passive per-peer circuit breaker settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Off: the peer is never ejected. Default true.
    pub enabled: bool,
    /// Trip after this many failures in a row. Default 5.
    pub consecutive_failures: u32,
    /// Or when this share of the requests in `window` failed. Default 0.5.
    pub failure_rate: f64,
    /// ...and at least this many were seen. Default 20.
    pub min_requests: u32,
    /// The span `failure_rate` is measured over. Default 60s.
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
    /// What counts as a failure. Default [`FailureOn::ALL`].
    pub failure_on: FailureOn,
}

impl Default for BreakerConfig {
    /// On; trips after 5 failures in a row, or when half of at least 20 requests in 60s failed;
    /// ejects for 10s, doubling up to 300s; 1 trial request at once, 3 successes to close; at
    /// most 50% of a cluster out at once; every failure counts.
    fn default() -> Self {
        BreakerConfig {
            enabled: true,
            consecutive_failures: 5,
            failure_rate: 0.5,
            min_requests: 20,
            window: Duration::from_secs(60),
            open_for: Duration::from_secs(10),
            max_open_for: Duration::from_secs(300),
            half_open_requests: 1,
            success_threshold: 3,
            max_ejected_percent: 50,
            failure_on: FailureOn::ALL,
        }
    }
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
    /// Client headers removed before the key is set, besides `authorization`, `x-api-key` and
    /// `api-key` (always removed). Default none.
    pub strip_headers: Vec<HeaderName>,
    /// Matching failures in a row before a key is taken out. Default 3.
    pub failure_threshold: u32,
    /// Which answers count against a key, first match wins. Default: 401/403, 402, and 400/429
    /// saying `insufficient_quota` count toward `failure_threshold`; 429 cools the key for
    /// `retry-after`.
    pub conditions: Vec<KeyCondition>,
    /// Cooldown when `retry-after` is absent, and how long a key without a health check stays out.
    /// Default 60s.
    pub default_cooldown: Duration,
    /// Longest cooldown an answer's `retry-after` can ask for (a larger value, in seconds or as
    /// a date, is cut to this). Default 1h.
    pub max_retry_after: Duration,
    /// Probe that brings a key that was taken out back; `None` = it returns after
    /// `default_cooldown`.
    pub health_check: Option<KeyHealthCheck>,
    /// Whether a key taken out here is out on every instance. Default shared with `shared`.
    pub scope: Scope,
}

/// When an answer counts against the key that was used.
#[derive(Debug, Clone)]
pub struct KeyCondition {
    /// Statuses that match.
    pub statuses: Vec<u16>,
    /// Regex the response body must match too.
    pub body: Option<Regex>,
    /// What happens to the key.
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
    /// Default GET, or POST when a body is given.
    pub method: Method,
    /// Default `/v1/chat/completions`.
    pub path: String,
    /// Request body of the probe. Default none.
    pub body: Option<Bytes>,
    /// Answers that pass. Default `[200]`.
    pub expect_status: Vec<u16>,
    /// Regex the answer's body must match too. Default none.
    pub expect_body: Option<Regex>,
    /// Time between probes of a key that is out. Default 10s.
    pub interval: Duration,
    /// Longest wait for a probe's answer. Default 5s.
    pub timeout: Duration,
    /// Passes in a row to bring the key back. Default 1.
    pub success_threshold: u32,
}

impl Default for KeyHealthCheck {
    /// `GET /v1/chat/completions` without a body, expecting 200, every 10s with a 5s timeout;
    /// back after 1 pass.
    fn default() -> Self {
        KeyHealthCheck {
            method: Method::GET,
            path: "/v1/chat/completions".into(),
            body: None,
            expect_status: vec![200],
            expect_body: None,
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            success_threshold: 1,
        }
    }
}

/// A request budget (GCRA: `requests_per_minute` steady, `burst` at once) and a token budget
/// (`tokens_per_minute`, up to a minute's worth at once); at least one of the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// The steady request rate; `None` = requests are not counted.
    pub requests_per_minute: Option<u32>,
    /// Requests that may pass at once on a full budget. Default 1.
    pub burst: u32,
    /// Tokens (prompt and completion) per minute; `None` = tokens are not counted.
    pub tokens_per_minute: Option<u32>,
    /// Kept by this instance, or shared by the fleet. Default shared with `shared`.
    pub scope: Scope,
    /// How long a request may wait for the budget before going elsewhere or getting 429.
    /// Default 0 (no wait).
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

impl Default for QueueConfig {
    /// 100 requests waiting at most 5s each.
    fn default() -> Self {
        QueueConfig {
            max_waiting: 100,
            timeout: Duration::from_secs(5),
        }
    }
}
