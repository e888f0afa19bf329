//! The typed config of a route: which requests it takes, where it splits them, and how it
//! times out, retries, falls back, limits clients and caches answers.

use bytes::Bytes;
use http::{HeaderName, Method};
use std::time::Duration;

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

/// Where a route sends its traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitTarget {
    /// Index into [`Config::clusters`].
    pub cluster: usize,
    pub weight: u32,
}

/// Which part of a request keeps it on one side of the split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StickyKey {
    Header(HeaderName),
    Cookie(String),
    ClientIp,
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

/// What a route answers when nothing upstream can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
    /// Sent (as `text/event-stream`) to requests with `"stream": true`.
    pub stream_body: Bytes,
}

/// A per-client request limit on a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientLimitConfig {
    pub key: StickyKey,
    pub requests_per_minute: u32,
    pub burst: u32,
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
