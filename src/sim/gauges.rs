//! `GET /metrics` of the simulated server: the gauges a vLLM server exports that a balancer
//! reads (`vllm:num_requests_running`, `vllm:num_requests_waiting`, `vllm:kv_cache_usage_perc`)
//! and the prefix cache's counters (`vllm:prefix_cache_queries_total`,
//! `vllm:prefix_cache_hits_total`, in blocks here). A test can make the server report a queue or
//! a KV-cache use it does not have ([`crate::sim::SimHandle::set_reported_load`]).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response};
use http_body_util::{BodyExt, Full};

use super::answer::SimBody;
use super::handler::Shared;

/// Values reported in place of the real ones; `u64::MAX` = not overridden.
#[derive(Debug)]
pub(crate) struct Overrides {
    waiting: AtomicU64,
    /// `f64` bits.
    kv: AtomicU64,
}

impl Default for Overrides {
    fn default() -> Self {
        Overrides {
            waiting: AtomicU64::new(u64::MAX),
            kv: AtomicU64::new(u64::MAX),
        }
    }
}

impl Overrides {
    pub(crate) fn set(&self, waiting: Option<u64>, kv: Option<f64>) {
        self.waiting
            .store(waiting.unwrap_or(u64::MAX), Ordering::Relaxed);
        self.kv
            .store(kv.map_or(u64::MAX, f64::to_bits), Ordering::Relaxed);
    }
}

/// The metrics page in the Prometheus text format.
pub(crate) fn page(shared: &Shared) -> Response<SimBody> {
    let o = &shared.reported;
    let waiting = match o.waiting.load(Ordering::Relaxed) {
        u64::MAX => 0,
        w => w,
    };
    let kv = match o.kv.load(Ordering::Relaxed) {
        u64::MAX => shared.prefix.usage(),
        bits => f64::from_bits(bits),
    };
    let (queries, hits) = shared.prefix.counts();
    let mut text = String::new();
    let label = "{model_name=\"sim\"}";
    let mut gauge = |name: &str, kind: &str, help: &str, value: String| {
        let _ = write!(
            text,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{label} {value}\n"
        );
    };
    gauge(
        "vllm:num_requests_running",
        "gauge",
        "Requests being generated.",
        shared.stats.current().to_string(),
    );
    gauge(
        "vllm:num_requests_waiting",
        "gauge",
        "Requests waiting to be scheduled.",
        waiting.to_string(),
    );
    gauge(
        "vllm:kv_cache_usage_perc",
        "gauge",
        "KV-cache usage, 1 means full.",
        format!("{kv}"),
    );
    gauge(
        "vllm:prefix_cache_queries_total",
        "counter",
        "Prompt blocks looked up in the prefix cache.",
        queries.to_string(),
    );
    gauge(
        "vllm:prefix_cache_hits_total",
        "counter",
        "Prompt blocks found in the prefix cache.",
        hits.to_string(),
    );
    let mut resp = Response::new(
        Full::new(Bytes::from(text))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}
