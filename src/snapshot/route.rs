//! A route as one snapshot sees it.

use super::Registries;
use crate::cache::RouteCache;
use crate::config::{ClusterConfig, RouteConfig};
use crate::limits::{ClientLimit, RetryBudget};
use crate::metrics::{LlmHandles, Metrics, RequestCounts};
use crate::shared::Tier;
use crate::split::Split;
use http::Method;
use prometheus::{Histogram, IntGauge};
use std::sync::Arc;

/// A route of one snapshot.
pub struct Route {
    pub cfg: RouteConfig,
    pub split: Split,
    /// Split targets (cluster indices) for failover, by weight, heaviest first.
    pub by_weight: Vec<usize>,
    /// `switchyard_inflight_requests{route}`.
    pub inflight: IntGauge,
    /// `switchyard_request_duration_seconds{route}`.
    pub duration: Histogram,
    /// `switchyard_upstream_attempts{route}`.
    pub attempts: Histogram,
    /// The LLM metrics of this route, by cluster index: `Some` for the clusters of its split
    /// (the only ones its tries go to).
    pub llm: Vec<Option<LlmHandles>>,
    /// `switchyard_requests_total{route,cluster,code}`, by cluster index, and last for requests
    /// that reached no cluster (`cluster="none"`).
    pub requests: Vec<RequestCounts>,
    /// The per-client limit, when the route has one (its key is `cfg.client_limit.key`).
    pub client_limit: Option<Arc<dyn ClientLimit>>,
    /// Requests of this route and retries among them, over the budget's window; one per route
    /// name, for as long as the route exists (a reload does not reset it).
    pub retry_budget: Arc<RetryBudget>,
    /// The route's edge cache, when it has one (outlives reloads).
    pub cache: Option<Arc<RouteCache>>,
    /// Statuses a `retry_on` answer condition names: their bodies are read before the commit
    /// point.
    pub answer_statuses: Vec<u16>,
}

impl Route {
    /// Build `r` from its config, taking its limiter, retry budget and cache from `state`.
    pub(super) fn build(
        r: &RouteConfig,
        clusters: &[ClusterConfig],
        state: &Registries,
        metrics: &Metrics,
        shared: Option<&Arc<Tier>>,
    ) -> Route {
        let weights: Vec<u32> = r.split.iter().map(|t| t.weight).collect();
        let mut by_weight: Vec<(u32, usize)> =
            r.split.iter().map(|t| (t.weight, t.cluster)).collect();
        by_weight.sort_by_key(|t| std::cmp::Reverse(t.0));
        let name = r.name.as_str();
        Route {
            split: Split::new(&weights),
            by_weight: by_weight.into_iter().map(|(_, c)| c).collect(),
            inflight: metrics.inflight.with_label_values(&[name]),
            duration: metrics.request_duration.with_label_values(&[name]),
            attempts: metrics.attempts.with_label_values(&[name]),
            llm: (0..clusters.len())
                .map(|ci| {
                    (r.split.iter().any(|t| t.cluster == ci))
                        .then(|| metrics.llm.handles(name, &clusters[ci].name))
                })
                .collect(),
            requests: (clusters.iter().map(|c| c.name.as_str()))
                .chain(["none"])
                .map(|c| RequestCounts::new(&metrics.requests, name, c))
                .collect(),
            client_limit: r
                .client_limit
                .as_ref()
                .map(|l| state.limiters.client(name, l, shared)),
            retry_budget: state.limiters.retry_budget(name, r.retry.budget.window),
            cache: r
                .cache
                .as_ref()
                .map(|c| state.caches.route(name, c, metrics, shared)),
            answer_statuses: r.retry.on.answer_statuses(),
            cfg: r.clone(),
        }
    }

    /// Does this route take a request for `host` (lower-case, no port), `path` and `method`?
    pub fn matches(&self, host: Option<&str>, path: &str, method: &Method) -> bool {
        let m = &self.cfg.matcher;
        path.starts_with(m.path_prefix.as_str())
            && m.host
                .as_deref()
                .is_none_or(|h| host.is_some_and(|x| x.eq_ignore_ascii_case(h)))
            && m.methods.as_ref().is_none_or(|ms| ms.contains(method))
    }
}
