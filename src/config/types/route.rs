//! The typed config of a route: which requests it takes, where it splits them, and how it
//! times out, retries, falls back, limits clients, caches answers and resumes broken streams.

use bytes::Bytes;
use http::{HeaderName, Method};
use regex::Regex;
use std::time::Duration;

/// Where a class of requests goes, and how it is treated on the way.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Unique among routes; metrics name the route by this.
    pub name: String,
    /// Which requests it takes.
    pub matcher: RouteMatch,
    /// The clusters it sends to, by weight.
    pub split: Vec<SplitTarget>,
    /// Keeps a client on one side of the split; `None` = every request is split anew.
    pub sticky: Option<StickyKey>,
    /// Default [`Timeouts::default`].
    pub timeouts: Timeouts,
    /// Default [`RetryPolicy::default`].
    pub retry: RetryPolicy,
    /// Hedged first tokens; `None` = off (the default).
    pub hedge: Option<HedgeConfig>,
    /// Largest request body accepted (and replayed on retries). Default 4MiB.
    pub max_request_body: usize,
    /// The answer when no upstream can give one; `None` = an error status.
    pub fallback: Option<Fallback>,
    /// Requests per client; `None` = no limit.
    pub client_limit: Option<ClientLimitConfig>,
    /// Edge cache of answers; `None` = off (the default).
    pub cache: Option<CacheConfig>,
    /// Continuing a committed stream that broke on another peer; `None` = off (the default).
    pub resume: Option<ResumeConfig>,
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
    /// Index into [`Config::clusters`](super::Config::clusters).
    pub cluster: usize,
    /// Relative share of the route's traffic; 0 sends none.
    pub weight: u32,
}

/// Which part of a request keeps it on one side of the split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StickyKey {
    /// The value of this request header (`header:NAME`).
    Header(HeaderName),
    /// The value of this cookie (`cookie:NAME`).
    Cookie(String),
    /// The client's IP address (`ip`).
    ClientIp,
}

/// The timeouts of a route.
///
/// A non-streaming answer's header comes only when the model has finished generating, so by
/// default nothing but `total` bounds the wait for it: a slow generation on a healthy peer is not
/// cut and re-run. A stream's header comes at once and its first token soon after, so the wait
/// for the first token has its own, shorter bound: a peer that accepts and then stalls is failed
/// over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Per attempt, TCP connect. Default 1s.
    pub connect: Duration,
    /// Per attempt, from the start of the send to the response header, for every request.
    /// Default `None`: bounded only by `total`.
    pub first_byte: Option<Duration>,
    /// Per attempt, for streams: from the start of the send to the first complete SSE event (the
    /// first token; the first body chunk of a body that is not an event stream). Default 15s, or
    /// `first_byte` when only that is given.
    pub first_token: Duration,
    /// Longest gap between body chunks. Default 60s.
    pub idle: Duration,
    /// The whole request, all attempts included. Default 300s.
    pub total: Duration,
}

/// `first_token` when neither it nor `first_byte` is given.
pub const DEFAULT_FIRST_TOKEN: Duration = Duration::from_secs(15);

impl Default for Timeouts {
    /// Connect 1s, no per-try header bound, first token 15s, idle 60s, total 300s.
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(1),
            first_byte: None,
            first_token: DEFAULT_FIRST_TOKEN,
            idle: Duration::from_secs(60),
            total: Duration::from_secs(300),
        }
    }
}

/// Hedged first tokens: when a try has no first token (streams) or no header (other requests)
/// after `after`, one more try starts on another peer; the first to reach its commit point wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HedgeConfig {
    /// How long a try may go without a first token before a hedge starts. Default 2s.
    pub after: Duration,
    /// Hedges per request at most (each is a try, within `retry.attempts`). Default 1.
    pub max: u32,
}

impl Default for HedgeConfig {
    /// One hedge after 2s.
    fn default() -> Self {
        HedgeConfig {
            after: Duration::from_secs(2),
            max: 1,
        }
    }
}

/// Where a retry goes when the tries so far were all in one cluster of the split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtherCluster {
    /// The last try goes to another usable cluster (the default).
    Last,
    /// Every retry goes to a cluster not tried yet, while there is one.
    Next,
    /// Other clusters only when the tried one has no usable peer left.
    Never,
}

/// The retry budget of a route (Finagle's and linkerd's): over any `window`, retries may add
/// `ratio` of the requests seen, plus `min_per_second` always.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetConfig {
    /// Share of the requests seen in `window` that may be retried. Default 0.2.
    pub ratio: f64,
    /// The span requests and retries are counted over. Default 10s.
    pub window: Duration,
    /// Retries per second allowed whatever the traffic (a reserve of `min_per_second × window`).
    /// Default 10.
    pub min_per_second: u32,
}

impl Default for BudgetConfig {
    /// 20% of the requests of the last 10s, plus 10 per second.
    fn default() -> Self {
        BudgetConfig {
            ratio: 0.2,
            window: Duration::from_secs(10),
            min_per_second: 10,
        }
    }
}

/// How a route tries again.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Total tries, the first included. Default 3.
    pub attempts: u32,
    /// What is retried. Default [`RetryOn::default`].
    pub on: RetryOn,
    /// Bound of the jittered wait before the first retry; it doubles with each further one.
    /// Default 25ms.
    pub backoff_base: Duration,
    /// Cap on that bound. Default 250ms.
    pub backoff_max: Duration,
    /// How many retries the route may add. Default [`BudgetConfig::default`].
    pub budget: BudgetConfig,
    /// Where retries go across the split. Default [`OtherCluster::Last`].
    pub other_cluster: OtherCluster,
    /// A 429 or 503 asking to come back within this long is retried on the same peer after that
    /// wait; a longer one is not retried there. Default 2s.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    /// Three tries on failures that show the request was not served, backing off from 25ms up
    /// to 250ms, adding at most 20% of the route's requests plus 10 per second, the last one in
    /// another cluster, waiting out a `Retry-After` of up to 2s.
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            on: RetryOn::default(),
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
            budget: BudgetConfig::default(),
            other_cluster: OtherCluster::Last,
            max_retry_after: Duration::from_secs(2),
        }
    }
}

/// The failures a route retries.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryOn {
    /// The connection could not be made.
    pub connect_failure: bool,
    /// The peer refused the connection.
    pub refused: bool,
    /// The connection was reset before an answer.
    pub reset: bool,
    /// A per-attempt timeout fired.
    pub timeout: bool,
    /// Response statuses that are retried (before anything reached the client), sorted.
    pub statuses: Vec<u16>,
    /// Answers retried in another cluster when their (small) body matches too.
    pub answers: Vec<AnswerCondition>,
}

/// A `retry_on` entry `{ status, body }`: an answer with one of these statuses whose body
/// matches the regex (a 400 saying `context_length_exceeded`) is about the request on this
/// cluster's model: it is retried in another cluster; other answers with the status pass.
#[derive(Debug, Clone)]
pub struct AnswerCondition {
    /// Statuses that match.
    pub statuses: Vec<u16>,
    /// Regex the start of the body (64 KiB) must match.
    pub body: Regex,
}

impl PartialEq for AnswerCondition {
    fn eq(&self, other: &Self) -> bool {
        self.statuses == other.statuses && self.body.as_str() == other.body.as_str()
    }
}

impl RetryOn {
    /// Nothing is retried; where a `retry_on` list starts.
    pub const NONE: RetryOn = RetryOn {
        connect_failure: false,
        refused: false,
        reset: false,
        timeout: false,
        statuses: Vec::new(),
        answers: Vec::new(),
    };

    /// Statuses some answer condition names (their bodies are read before the commit point).
    pub fn answer_statuses(&self) -> Vec<u16> {
        let mut s: Vec<u16> = self
            .answers
            .iter()
            .flat_map(|a| a.statuses.iter().copied())
            .collect();
        s.sort_unstable();
        s.dedup();
        s
    }

    /// Does an answer with `status` and `body` match an answer condition?
    pub fn answer_matches(&self, status: u16, body: &[u8]) -> bool {
        let mut matching = self.answers.iter().filter(|a| a.statuses.contains(&status));
        let Some(first) = matching.next() else {
            return false;
        };
        let text = String::from_utf8_lossy(body);
        first.body.is_match(&text) || matching.any(|a| a.body.is_match(&text))
    }
}

impl Default for RetryOn {
    /// Connect failures, refusals, resets, timeouts, and 502, 503 and 504.
    fn default() -> Self {
        RetryOn {
            connect_failure: true,
            refused: true,
            reset: true,
            timeout: true,
            statuses: vec![502, 503, 504],
            answers: Vec::new(),
        }
    }
}

/// How a route resumes a committed SSE stream that broke (`routes[].resume`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumeConfig {
    /// How the continuation is asked for. Default [`ResumeMode::Continue`].
    pub mode: ResumeMode,
    /// Continuations one request may start. Default 1.
    pub max: u32,
}

/// How a broken stream is continued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeMode {
    /// The request again, with the text already sent as a final `assistant` message and
    /// `continue_final_message` (chat), or appended to `prompt` (completions).
    Continue,
}

impl Default for ResumeConfig {
    /// Continue, at most once per request.
    fn default() -> Self {
        ResumeConfig {
            mode: ResumeMode::Continue,
            max: 1,
        }
    }
}

/// What a route answers when nothing upstream can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    /// Default 200.
    pub status: u16,
    /// Default `application/json`.
    pub content_type: String,
    /// Sent to requests that do not stream.
    pub body: Bytes,
    /// Sent (as `text/event-stream`) to requests with `"stream": true`.
    pub stream_body: Bytes,
}

/// A per-client request limit on a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientLimitConfig {
    /// What tells clients apart.
    pub key: StickyKey,
    /// The steady request rate per client; `None` = requests are not counted.
    pub requests_per_minute: Option<u32>,
    /// Requests a client may send at once on a full budget. Default 1.
    pub burst: u32,
    /// Tokens per minute per client; `None` = tokens are not counted.
    pub tokens_per_minute: Option<u32>,
    /// Kept by this instance, or shared by the fleet. Default shared with `shared`.
    pub scope: super::shared::Scope,
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
    /// Request headers whose values (digested) take part in the key. Default
    /// `[authorization, x-api-key, api-key]` (the ways OpenAI, Anthropic and Azure clients send
    /// their key: tenants never share an entry).
    pub vary_headers: Vec<HeaderName>,
    /// Cache only requests with `"temperature": 0` (absent counts as 1). Default true.
    pub deterministic_only: bool,
    /// How long past `ttl` an entry may still answer when no upstream can. Default 0 (off).
    pub stale_if_error: Duration,
    /// How long identical requests wait for the one in flight. Default 30s.
    pub lock_timeout: Duration,
    /// JSON-lines file of requests sent at start and after each reload to fill the cache.
    /// Default none.
    pub warm: Option<std::path::PathBuf>,
    /// Entries also go to the shared tier, behind the in-memory store. Default true with
    /// `shared`.
    pub shared: bool,
}

impl Default for CacheConfig {
    /// Fresh for 10m, 256MiB per route, entries up to 1MiB, keyed by `authorization`,
    /// deterministic requests only, no stale answers, 30s wait for an identical request, no
    /// warming, shared when the config has `shared`.
    fn default() -> Self {
        CacheConfig {
            ttl: Duration::from_secs(600),
            max_bytes: 256 * 1024 * 1024,
            max_entry_bytes: 1024 * 1024,
            vary_headers: vec![
                http::header::AUTHORIZATION,
                HeaderName::from_static("x-api-key"),
                HeaderName::from_static("api-key"),
            ],
            deterministic_only: true,
            stale_if_error: Duration::ZERO,
            lock_timeout: Duration::from_secs(30),
            warm: None,
            shared: true,
        }
    }
}
