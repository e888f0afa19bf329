//! The file layer of `clusters:`: one cluster, its peers, health check, breaker, TLS, affinity
//! and load reports, as written.

use super::*;

/// One entry of `clusters:`, under its name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    #[serde(default)]
    pub balance: Option<BalanceFile>,
    #[serde(default)]
    pub affinity: Option<AffinityFile>,
    #[serde(default)]
    pub load_report: Option<LoadReportFile>,
    pub peers: Vec<PeerFile>,
    #[serde(default)]
    pub health_check: Option<HealthCheckFile>,
    #[serde(default)]
    pub breaker: Option<BreakerFile>,
    #[serde(default)]
    pub slow_start: Option<Dur>,
    #[serde(default)]
    pub api_keys: Option<ApiKeysFile>,
    #[serde(default)]
    pub rate_limit: Option<RateLimitFile>,
    #[serde(default)]
    pub queue: Option<QueueFile>,
    pub dns_refresh: Option<Dur>,
    #[serde(default)]
    pub tls: Option<UpstreamTlsFile>,
    pub host: Option<String>,
    pub strip_prefix: Option<String>,
    pub add_prefix: Option<String>,
}

/// `clusters.NAME.affinity`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AffinityFile {
    /// `prompt` or `header:NAME`.
    pub key: Option<String>,
    pub prefix_bytes: Option<Size>,
    pub load_factor: Option<f64>,
}

/// `clusters.NAME.load_report`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadReportFile {
    pub path: Option<String>,
    pub interval: Option<Dur>,
    pub max_waiting: Option<u32>,
    pub max_kv_usage: Option<f64>,
}

/// `clusters.NAME.tls`: TLS to the cluster's peers.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsFile {
    pub sni: Option<String>,
    pub ca_file: Option<String>,
    pub verify: Option<bool>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

/// One entry of `clusters.NAME.peers`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerFile {
    pub addr: String,
    pub weight: Option<u32>,
    pub max_inflight: Option<u32>,
}

/// `clusters.NAME.health_check`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckFile {
    pub kind: Option<CheckKindFile>,
    pub method: Option<String>,
    pub path: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
    pub expect_status: Option<Vec<u16>>,
    pub expect_body: Option<String>,
    pub interval: Option<Dur>,
    pub timeout: Option<Dur>,
    pub healthy_threshold: Option<u32>,
    pub unhealthy_threshold: Option<u32>,
}

/// `clusters.NAME.breaker`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerFile {
    pub enabled: Option<bool>,
    pub consecutive_failures: Option<u32>,
    pub failure_rate: Option<f64>,
    pub min_requests: Option<u32>,
    pub window: Option<Dur>,
    pub open_for: Option<Dur>,
    pub max_open_for: Option<Dur>,
    pub half_open_requests: Option<u32>,
    pub success_threshold: Option<u32>,
    pub max_ejected_percent: Option<u32>,
    pub failure_on: Option<Vec<FailureFile>>,
}
