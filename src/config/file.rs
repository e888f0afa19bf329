//! The file layer: the YAML document exactly as written, deserialised with serde.
//!
//! Every struct denies unknown keys so that a typo is an error, not a silently ignored setting.
//! Values stay close to the text (strings for addresses, [`Dur`] and [`Size`] for units, the
//! enums of `choices` for keys with a fixed set of values); the checks that need more than the
//! text of one value (names, weights, addresses) happen in `build`.

pub use super::choices::*;
use super::units::{Dur, Size};
use serde::Deserialize;
use std::collections::BTreeMap;

/// The whole document.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerFile,
    #[serde(default)]
    pub listeners: Vec<ListenerFile>,
    #[serde(default)]
    pub admin: Option<AdminFile>,
    #[serde(default)]
    pub clusters: BTreeMap<String, ClusterFile>,
    #[serde(default)]
    pub routes: Vec<RouteFile>,
    #[serde(default)]
    pub limits: LimitsFile,
    #[serde(default)]
    pub access_log: Option<AccessLogFile>,
    #[serde(default)]
    pub resolver: Option<ResolverFile>,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    #[serde(default)]
    pub tracing: Option<TracingFile>,
    #[serde(default)]
    pub shared: Option<SharedFile>,
}

/// `shared:`: the Redis (or Valkey) that several instances share limits, key state and the
/// cache through.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedFile {
    pub redis: String,
    pub prefix: Option<String>,
    pub timeout: Option<Dur>,
    pub on_error: Option<OnErrorFile>,
}

/// `resolver:`: the DNS servers that peers given by name are resolved with.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolverFile {
    pub servers: Option<Vec<String>>,
    pub timeout: Option<Dur>,
}

/// `server:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    pub threads: Option<usize>,
    pub grace_period: Option<Dur>,
    pub graceful_shutdown_timeout: Option<Dur>,
    pub pid_file: Option<String>,
    pub upgrade_sock: Option<String>,
    pub http1: Option<Http1File>,
}

/// One entry of `listeners:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerFile {
    pub addr: String,
    #[serde(default)]
    pub tls: Option<TlsFile>,
}

/// `listeners[N].tls`: PEM files.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub cert: String,
    pub key: String,
}

/// `admin:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    pub addr: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<String>,
    pub protect_reads: Option<bool>,
}

/// Protections of the client-facing side (`limits:`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    pub max_header_bytes: Option<Size>,
    pub client_header_timeout: Option<Dur>,
    pub client_body_timeout: Option<Dur>,
    pub client_body_total_timeout: Option<Dur>,
    pub keepalive_timeout: Option<Dur>,
    pub keepalive_requests: Option<u32>,
    pub max_connections: Option<u32>,
    pub max_concurrent_requests: Option<u32>,
}

/// `access_log:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogFile {
    pub path: String,
}

/// `tracing:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingFile {
    pub otlp_endpoint: Option<String>,
    pub sample_ratio: Option<f64>,
}

mod cluster;
pub use cluster::*;

/// One entry of `routes:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub name: String,
    #[serde(rename = "match", default)]
    pub matcher: MatchFile,
    pub split: Vec<SplitFile>,
    pub sticky: Option<String>,
    #[serde(default)]
    pub timeouts: TimeoutsFile,
    #[serde(default)]
    pub retry: Option<RetryFile>,
    #[serde(default)]
    pub hedge: Option<HedgeFile>,
    pub max_request_body: Option<Size>,
    #[serde(default)]
    pub fallback: Option<FallbackFile>,
    #[serde(default)]
    pub client_limit: Option<ClientLimitFile>,
    pub cache: Option<CacheFile>,
    #[serde(default)]
    pub resume: Option<ResumeFile>,
}

/// `routes[N].match`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchFile {
    pub path_prefix: Option<String>,
    pub host: Option<String>,
    pub methods: Option<Vec<String>>,
}

/// One entry of `routes[N].split`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitFile {
    pub cluster: String,
    pub weight: Option<u32>,
}

/// `routes[N].timeouts`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsFile {
    pub connect: Option<Dur>,
    pub first_byte: Option<Dur>,
    pub first_token: Option<Dur>,
    pub idle: Option<Dur>,
    pub total: Option<Dur>,
}

/// `routes[N].retry`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryFile {
    pub attempts: Option<u32>,
    pub retry_on: Option<Vec<RetryOnFile>>,
    pub backoff: Option<BackoffFile>,
    pub budget: Option<BudgetFile>,
    pub other_cluster: Option<OtherClusterFile>,
    pub max_retry_after: Option<Dur>,
}

/// The map form of `routes[N].retry.budget` (a bare number is the `ratio`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetMapFile {
    pub ratio: Option<f64>,
    pub window: Option<Dur>,
    pub min_per_second: Option<u32>,
}

/// The map form of a `retry_on` entry: `{ status: 400, body: "context_length_exceeded" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerConditionFile {
    pub status: OneOrMany,
    pub body: Option<String>,
}

/// A status, or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(u16),
    Many(Vec<u16>),
}

impl OneOrMany {
    /// The statuses, as a list.
    pub fn to_vec(&self) -> Vec<u16> {
        match self {
            OneOrMany::One(s) => vec![*s],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// `routes[N].hedge`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HedgeFile {
    pub after: Option<Dur>,
    pub max: Option<u32>,
}

/// `routes[N].retry.backoff`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffFile {
    pub base: Option<Dur>,
    pub max: Option<Dur>,
}

/// `routes[N].fallback`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackFile {
    pub status: Option<u16>,
    pub content_type: Option<String>,
    pub body: String,
    pub stream_body: Option<String>,
}

/// `clusters.NAME.api_keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeysFile {
    pub header: Option<String>,
    pub keys_file: Option<String>,
    pub keys: Option<Vec<String>>,
    pub strip_headers: Option<Vec<String>>,
    #[serde(default)]
    pub failover: Option<KeyFailoverFile>,
    pub scope: Option<ScopeFile>,
}

/// `clusters.NAME.api_keys.failover`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFailoverFile {
    pub failure_threshold: Option<u32>,
    pub conditions: Option<Vec<KeyConditionFile>>,
    pub default_cooldown: Option<Dur>,
    pub max_retry_after: Option<Dur>,
    #[serde(default)]
    pub health_check: Option<KeyHealthFile>,
}

/// One entry of `api_keys.failover.conditions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConditionFile {
    pub status: Vec<u16>,
    pub body: Option<String>,
    #[serde(default)]
    pub cooldown: Option<CooldownFile>,
}

/// `api_keys.failover.health_check`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyHealthFile {
    pub method: Option<String>,
    pub path: Option<String>,
    pub body: Option<String>,
    pub expect_status: Option<Vec<u16>>,
    pub expect_body: Option<String>,
    pub interval: Option<Dur>,
    pub timeout: Option<Dur>,
    pub success_threshold: Option<u32>,
}

/// `clusters.NAME.rate_limit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitFile {
    pub requests_per_minute: Option<u32>,
    pub burst: Option<u32>,
    pub tokens_per_minute: Option<u32>,
    pub queue_timeout: Option<Dur>,
    pub scope: Option<ScopeFile>,
}

/// `clusters.NAME.queue`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueFile {
    pub max_waiting: Option<u32>,
    pub timeout: Option<Dur>,
}

/// `routes[N].client_limit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientLimitFile {
    pub key: String,
    pub requests_per_minute: Option<u32>,
    pub burst: Option<u32>,
    pub tokens_per_minute: Option<u32>,
    pub scope: Option<ScopeFile>,
}

/// `routes[N].resume`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeFile {
    pub mode: Option<ResumeModeFile>,
    pub max: Option<u32>,
}

/// `routes[N].cache`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheFile {
    pub ttl: Option<Dur>,
    pub max_bytes: Option<Size>,
    pub max_entry_bytes: Option<Size>,
    pub vary_headers: Option<Vec<String>>,
    pub deterministic_only: Option<bool>,
    pub stale_if_error: Option<Dur>,
    pub lock_timeout: Option<Dur>,
    pub warm: Option<String>,
    pub shared: Option<bool>,
}
