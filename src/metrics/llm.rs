//! The metrics LLM operators watch: time to first token, the gaps between a stream's chunks, a
//! stream's length, and the tokens answers report in their `usage`. Labelled by route and cluster
//! (config names only); the request path uses [`LlmHandles`] resolved once per snapshot.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};

/// Time to first token: a cache hit takes a millisecond, a loaded model tens of seconds.
const TTFT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Gaps between stream chunks: a token every few milliseconds to a stall of seconds.
const GAP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Whole streams: a short answer to a long generation.
const STREAM_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// The LLM metric families.
pub struct LlmMetrics {
    /// `switchyard_ttft_seconds{route,cluster}`: arrival to the first body byte relayed (for a
    /// stream, its first token).
    pub ttft: HistogramVec,
    /// `switchyard_inter_token_seconds{route,cluster}`: gaps between relayed stream chunks.
    pub inter_token: HistogramVec,
    /// `switchyard_tokens_total{route,cluster,kind}`: `prompt` and `completion` tokens, from the
    /// answers' `usage`.
    pub tokens: IntCounterVec,
    /// `switchyard_stream_duration_seconds{route,cluster}`: arrival to the end of a relayed
    /// stream.
    pub stream_duration: HistogramVec,
}

/// One (route, cluster)'s handles, resolved when a snapshot is built.
pub struct LlmHandles {
    pub ttft: Histogram,
    pub inter_token: Histogram,
    pub prompt_tokens: IntCounter,
    pub completion_tokens: IntCounter,
    pub stream_duration: Histogram,
}

impl LlmMetrics {
    /// The families, registered in `registry`.
    pub(super) fn register(registry: &Registry) -> prometheus::Result<LlmMetrics> {
        let labels = &["route", "cluster"];
        let hist = |name: &str, help: &str, buckets: &[f64]| {
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                labels,
            )
        };
        let m = LlmMetrics {
            ttft: hist(
                "switchyard_ttft_seconds",
                "Arrival to the first body byte relayed (streams: the first token), by route and cluster.",
                TTFT_BUCKETS,
            )?,
            inter_token: hist(
                "switchyard_inter_token_seconds",
                "Gaps between relayed stream chunks, by route and cluster.",
                GAP_BUCKETS,
            )?,
            tokens: IntCounterVec::new(
                Opts::new(
                    "switchyard_tokens_total",
                    "Tokens reported by answers' usage, by route, cluster and kind (prompt, completion).",
                ),
                &["route", "cluster", "kind"],
            )?,
            stream_duration: hist(
                "switchyard_stream_duration_seconds",
                "Arrival to the end of a relayed stream (SSE), by route and cluster.",
                STREAM_BUCKETS,
            )?,
        };
        registry.register(Box::new(m.ttft.clone()))?;
        registry.register(Box::new(m.inter_token.clone()))?;
        registry.register(Box::new(m.tokens.clone()))?;
        registry.register(Box::new(m.stream_duration.clone()))?;
        Ok(m)
    }

    /// The handles of `route` answered by `cluster` (creating the label sets).
    pub fn handles(&self, route: &str, cluster: &str) -> LlmHandles {
        let rc = [route, cluster];
        LlmHandles {
            ttft: self.ttft.with_label_values(&rc),
            inter_token: self.inter_token.with_label_values(&rc),
            prompt_tokens: self.tokens.with_label_values(&[route, cluster, "prompt"]),
            completion_tokens: self
                .tokens
                .with_label_values(&[route, cluster, "completion"]),
            stream_duration: self.stream_duration.with_label_values(&rc),
        }
    }
}
