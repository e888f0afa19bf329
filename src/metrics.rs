//! Prometheus metrics, in a registry of switchyard's own (served by the admin listener).
//!
//! Label values come only from the config (route, cluster and peer names) and from small fixed
//! sets (status codes, reasons), never from request data, so cardinality stays bounded. Hot-path
//! handles are resolved once per config snapshot (see `snapshot`), not per request.

mod codes;
mod llm;

pub use codes::{code_str, RequestCounts};
pub use llm::{LlmHandles, LlmMetrics};

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Buckets for request and upstream latency: LLM requests take from milliseconds (cache hits)
/// to minutes (long generations).
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

pub struct Metrics {
    pub registry: Registry,
    /// `switchyard_requests_total{route,cluster,code}`
    pub requests: IntCounterVec,
    /// `switchyard_request_duration_seconds{route}`
    pub request_duration: HistogramVec,
    /// `switchyard_upstream_latency_seconds{cluster}`: time to first byte of each try.
    pub upstream_latency: HistogramVec,
    /// `switchyard_inflight_requests{route}`
    pub inflight: IntGaugeVec,
    /// `switchyard_peer_inflight_requests{cluster,peer}`
    pub peer_inflight: IntGaugeVec,
    /// `switchyard_upstream_retry_total{route,cluster,reason}`
    pub retries: IntCounterVec,
    /// `switchyard_hedges_total{route,outcome}`: hedged tries, by how they ended: `won`, `lost`,
    /// `failed`, or `skipped` (due, but no other peer or no retry budget).
    pub hedges: IntCounterVec,
    /// `switchyard_upstream_attempts{route}`: tries per request.
    pub attempts: HistogramVec,
    /// `switchyard_fallback_response_total{route,reason}`
    pub fallbacks: IntCounterVec,
    /// `switchyard_stream_resumes_total{route,result}`: breaks of committed streams on routes
    /// with `resume`, by what became of them.
    pub stream_resumes: IntCounterVec,
    /// `switchyard_circuit_breaker_open_total{cluster,peer}`
    pub breaker_opens: IntCounterVec,
    /// `switchyard_circuit_breaker_state{cluster,peer}`: 0 closed, 1 half-open, 2 open.
    pub breaker_state: IntGaugeVec,
    /// `switchyard_peer_healthy{cluster,peer}`: 1 healthy, 0 not (or not yet probed).
    pub peer_healthy: IntGaugeVec,
    /// `switchyard_peer_queue_waiting{cluster,peer}`: requests the peer last reported queued.
    pub peer_waiting: IntGaugeVec,
    /// `switchyard_peer_running_requests{cluster,peer}`: requests it last reported running.
    pub peer_running: IntGaugeVec,
    /// `switchyard_peer_kv_cache_usage{cluster,peer}`: KV-cache use it last reported, 0 to 1.
    pub peer_kv_usage: GaugeVec,
    /// `switchyard_load_report_failures_total{cluster,peer}`: scrapes that got no report.
    pub load_report_failures: IntCounterVec,
    /// `switchyard_api_key_usable{cluster,key_id}`: 1 usable, 0 out.
    pub api_key_usable: IntGaugeVec,
    /// `switchyard_api_key_disabled_total{cluster,key_id,reason}`
    pub api_key_disabled: IntCounterVec,
    /// `switchyard_rate_limited_total{scope,name}`: scope `client` (route), `upstream` (cluster)
    /// or `queue` (cluster).
    pub rate_limited: IntCounterVec,
    /// `switchyard_queue_depth{cluster}`
    pub queue_depth: IntGaugeVec,
    /// `switchyard_queue_wait_seconds{cluster}`
    pub queue_wait: HistogramVec,
    /// `switchyard_config_generation`
    pub config_generation: IntGauge,
    /// `switchyard_config_reloads_total{result}`
    pub config_reloads: IntCounterVec,
    /// `switchyard_cache_requests_total{route,result}`: hit, miss, expired, stale, bypass, coalesced.
    pub cache_requests: IntCounterVec,
    /// `switchyard_cache_bytes{route}`: bytes held by the route's store.
    pub cache_bytes: IntGaugeVec,
    /// `switchyard_cache_entries{route}`
    pub cache_entries: IntGaugeVec,
    /// `switchyard_cache_evictions_total{route}`: entries pushed out to stay under `max_bytes`.
    pub cache_evictions: IntCounterVec,
    /// `switchyard_downstream_connections`: client connections being served.
    pub downstream_connections: IntGauge,
    /// `switchyard_limit_rejected_total{limit}`: connections and requests refused by a limit.
    pub limit_rejected: IntCounterVec,
    /// `switchyard_access_log_dropped_total`
    pub access_log_dropped: IntCounter,
    /// `switchyard_shared_calls_total{op}`: calls to the shared tier (Redis).
    pub shared_calls: IntCounterVec,
    /// `switchyard_shared_errors_total{op,reason}`: calls that failed (`error`) or took longer
    /// than `shared.timeout` (`timeout`).
    pub shared_errors: IntCounterVec,
    /// `switchyard_shared_latency_seconds{op}`: time of each call, failed ones included.
    pub shared_latency: HistogramVec,
    /// `switchyard_shared_fallbacks_total{op,action}`: decisions made without the tier, by this
    /// instance's own limit (`local`) or refused (`deny`).
    pub shared_fallbacks: IntCounterVec,
    /// `switchyard_shared_connected`: 1 while the last call to the tier succeeded.
    pub shared_connected: IntGauge,
    /// `switchyard_token_budget_tokens_total{scope,name,kind}`: tokens reserved before requests
    /// went out (`reserved`) and charged once their answers ended (`settled`).
    pub token_budget: IntCounterVec,
    /// Time to first token, inter-token gaps, stream length, tokens.
    pub llm: LlmMetrics,
    /// `switchyard_trace_spans_dropped_total`: spans not exported because the queue was full.
    pub spans_dropped: IntCounter,
}

/// Buckets for calls to the shared tier: well under a millisecond on a LAN, bounded by
/// `shared.timeout`.
const SHARED_BUCKETS: &[f64] = &[
    0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        macro_rules! reg {
            ($m:expr) => {{
                let m = $m.expect("metric definitions are static and valid");
                registry
                    .register(Box::new(m.clone()))
                    .expect("metric names are unique");
                m
            }};
        }
        let hist = |name: &str, help: &str| {
            HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec())
        };
        Metrics {
            requests: reg!(IntCounterVec::new(
                Opts::new(
                    "switchyard_requests_total",
                    "Requests answered, by route, cluster and status code."
                ),
                &["route", "cluster", "code"]
            )),
            request_duration: reg!(HistogramVec::new(
                hist(
                    "switchyard_request_duration_seconds",
                    "Whole request duration, by route."
                ),
                &["route"]
            )),
            upstream_latency: reg!(HistogramVec::new(
                hist(
                    "switchyard_upstream_latency_seconds",
                    "Time from sending a try to its first response byte, by cluster."
                ),
                &["cluster"]
            )),
            inflight: reg!(IntGaugeVec::new(
                Opts::new(
                    "switchyard_inflight_requests",
                    "Requests in flight, by route."
                ),
                &["route"]
            )),
            peer_inflight: reg!(IntGaugeVec::new(
                Opts::new(
                    "switchyard_peer_inflight_requests",
                    "Tries in flight to each peer."
                ),
                &["cluster", "peer"]
            )),
            retries: reg!(IntCounterVec::new(
                Opts::new(
                    "switchyard_upstream_retry_total",
                    "Retries, by route, cluster of the failed try and reason."
                ),
                &["route", "cluster", "reason"]
            )),
            hedges: reg!(IntCounterVec::new(
                Opts::new(
                    "switchyard_hedges_total",
                    "Hedged tries, by route and outcome (won, lost, failed, skipped)."
                ),
                &["route", "outcome"]
            )),
            attempts: reg!(HistogramVec::new(
                HistogramOpts::new(
                    "switchyard_upstream_attempts",
                    "Tries per request that reached the upstream stage."
                )
                .buckets(vec![1.0, 2.0, 3.0, 4.0, 5.0, 10.0]),
                &["route"]
            )),
            fallbacks: reg!(IntCounterVec::new(
                Opts::new(
                    "switchyard_fallback_response_total",
                    "Fallback answers, by route and reason."
                ),
                &["route", "reason"]
            )),
            stream_resumes: reg!(IntCounterVec::new(
                Opts::new(
                    "switchyard_stream_resumes_total",
                    "Committed streams that broke on routes with resume, by route and result: resumed, failed, not_resumable, exhausted, completed."
                ),
                &["route", "result"]
            )),
            breaker_opens: reg!(IntCounterVec::new(
                Opts::new(
                    "switchyard_circuit_breaker_open_total",
                    "Times a peer's breaker opened."
                ),
                &["cluster", "peer"]
            )),
            breaker_state: reg!(IntGaugeVec::new(
                Opts::new(
                    "switchyard_circuit_breaker_state",
                    "Breaker state: 0 closed, 1 half-open, 2 open."
                ),
                &["cluster", "peer"]
            )),
            peer_healthy: reg!(IntGaugeVec::new(
                Opts::new(
                    "switchyard_peer_healthy",
                    "Active health: 1 healthy, 0 unhealthy or not yet probed."
                ),
                &["cluster", "peer"]
            )),
            peer_waiting: reg!(IntGaugeVec::new(
                Opts::new(
                    "switchyard_peer_queue_waiting",
                    "Requests waiting in the peer's own queue, as it last reported (load_report)."
                ),
                &["cluster", "peer"]
            )),
            peer_running: reg!(IntGaugeVec::new(
                Opts::new(
                    "switchyard_peer_running_requests",
                    "Requests the peer reported running (load_report)."
                ),
                &["cluster", "peer"]
            )),
            peer_kv_usage: reg!(GaugeVec::new(
                Opts::new(
                    "switchyard_peer_kv_cache_usage",
                    "KV-cache use the peer reported, 0 to 1 (load_report)."
                ),
                &["cluster", "peer"]
            )),
            load_report_failures: reg!(IntCounterVec::new(
                Opts::new(
                    "switchyard_load_report_failures_total",
                    "Scrapes of a peer's metrics that got no load report."
                ),
                &["cluster", "peer"]
            )),
            api_key_usable: reg!(IntGaugeVec::new(
                Opts::new("switchyard_api_key_usable", "API key usable (1) or taken out (0), by key fingerprint."),
                &["cluster", "key_id"]
            )),
            api_key_disabled: reg!(IntCounterVec::new(
                Opts::new("switchyard_api_key_disabled_total", "Times an API key was taken out, by reason."),
                &["cluster", "key_id", "reason"]
            )),
            rate_limited: reg!(IntCounterVec::new(
                Opts::new("switchyard_rate_limited_total", "Requests refused or diverted by a limit: scope client (route), upstream or queue (cluster)."),
                &["scope", "name"]
            )),
            queue_depth: reg!(IntGaugeVec::new(
                Opts::new("switchyard_queue_depth", "Requests waiting for a free peer."),
                &["cluster"]
            )),
            queue_wait: reg!(HistogramVec::new(
                hist("switchyard_queue_wait_seconds", "Time requests waited in the admission queue or for the upstream budget."),
                &["cluster"]
            )),
            config_generation: reg!(IntGauge::new(
                "switchyard_config_generation",
                "Generation of the config in force (1 at start, +1 per successful reload)."
            )),
            config_reloads: reg!(IntCounterVec::new(
                Opts::new(
                    "switchyard_config_reloads_total",
                    "Config reloads, by result."
                ),
                &["result"]
            )),
            cache_requests: reg!(IntCounterVec::new(
                Opts::new(
                    "switchyard_cache_requests_total",
                    "Requests on cached routes, by route and cache result."
                ),
                &["route", "result"]
            )),
            cache_bytes: reg!(IntGaugeVec::new(
                Opts::new(
                    "switchyard_cache_bytes",
                    "Bytes stored in each route's cache (bounded by its max_bytes)."
                ),
                &["route"]
            )),
            cache_entries: reg!(IntGaugeVec::new(
                Opts::new(
                    "switchyard_cache_entries",
                    "Entries stored in each route's cache."
                ),
                &["route"]
            )),
            cache_evictions: reg!(IntCounterVec::new(
                Opts::new(
                    "switchyard_cache_evictions_total",
                    "Cache entries evicted to stay under max_bytes, by route."
                ),
                &["route"]
            )),
            downstream_connections: reg!(IntGauge::new(
                "switchyard_downstream_connections",
                "Client connections being served (after the TLS handshake)."
            )),
            limit_rejected: reg!(IntCounterVec::new(
                Opts::new(
                    "switchyard_limit_rejected_total",
                    "Client connections and requests refused by an edge limit, by limit."
                ),
                &["limit"]
            )),
            access_log_dropped: reg!(IntCounter::new(
                "switchyard_access_log_dropped_total",
                "Access log lines dropped because the writer was behind or a write failed."
            )),
            shared_calls: reg!(IntCounterVec::new(
                Opts::new(
                    "switchyard_shared_calls_total",
                    "Calls to the shared tier (Redis), by what they were for."
                ),
                &["op"]
            )),
            shared_errors: reg!(IntCounterVec::new(
                Opts::new(
                    "switchyard_shared_errors_total",
                    "Calls to the shared tier that failed or timed out, by op and reason."
                ),
                &["op", "reason"]
            )),
            shared_latency: reg!(HistogramVec::new(
                HistogramOpts::new(
                    "switchyard_shared_latency_seconds",
                    "Time of each call to the shared tier, by op."
                )
                .buckets(SHARED_BUCKETS.to_vec()),
                &["op"]
            )),
            shared_fallbacks: reg!(IntCounterVec::new(
                Opts::new(
                    "switchyard_shared_fallbacks_total",
                    "Decisions made without the shared tier: by the local limit (local) or refused (deny)."
                ),
                &["op", "action"]
            )),
            shared_connected: reg!(IntGauge::new(
                "switchyard_shared_connected",
                "1 while the last call to the shared tier succeeded, else 0."
            )),
            token_budget: reg!(IntCounterVec::new(
                Opts::new(
                    "switchyard_token_budget_tokens_total",
                    "Tokens reserved before requests went out and settled when they ended, by limit."
                ),
                &["scope", "name", "kind"]
            )),
            llm: LlmMetrics::register(&registry).expect("metric definitions are static and unique"),
            spans_dropped: reg!(IntCounter::new(
                "switchyard_trace_spans_dropped_total",
                "Trace spans dropped because the export queue was full."
            )),
            registry,
        }
    }

    /// Drop the series of a peer that is gone (no longer configured, or no longer an address
    /// of its name), so churn behind a DNS name does not leave dead series behind.
    pub fn forget_peer(&self, cluster: &str, peer: &str) {
        let labels = [cluster, peer];
        let _ = self.peer_inflight.remove_label_values(&labels);
        let _ = self.peer_healthy.remove_label_values(&labels);
        let _ = self.peer_waiting.remove_label_values(&labels);
        let _ = self.peer_running.remove_label_values(&labels);
        let _ = self.peer_kv_usage.remove_label_values(&labels);
        let _ = self.load_report_failures.remove_label_values(&labels);
        let _ = self.breaker_state.remove_label_values(&labels);
        let _ = self.breaker_opens.remove_label_values(&labels);
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(16 * 1024);
        let families = self.registry.gather();
        // Encoding into a Vec cannot fail on I/O; a malformed family would be a bug in this file.
        let _ = TextEncoder::new().encode(&families, &mut buf);
        buf
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Remove the label sets of API keys a reload dropped (by fingerprint).
    pub fn forget_keys(&self, gone: &[(String, String)]) {
        for (cluster, id) in gone {
            let labels = [cluster.as_str(), id.as_str()];
            let _ = self.api_key_usable.remove_label_values(&labels);
            for reason in ["unauthorized", "quota", "rate_limited", "other"] {
                let _ = self.api_key_disabled.remove_label_values(&[
                    cluster.as_str(),
                    id.as_str(),
                    reason,
                ]);
            }
        }
    }
}
