//! The dashboard's recent history: once a second, the [`Sampler`] reads the Prometheus counters
//! and each peer's breaker counters and keeps what changed since the previous second as one
//! [`Sample`] (request rate, error rate, latency quantiles, time to first token, tokens per
//! second, cache hit ratio, each cluster's share of the traffic, each peer's tries and error
//! rate). The last [`KEEP`] samples are kept in a ring that `GET /dashboard.json` serves.
//!
//! Nothing here touches the request path: the counters are the ones the request path updates
//! anyway, read once per second. Labels come from the config (cluster and peer names), so a
//! sample's size is bounded by the config's.

use crate::metrics::Metrics;
use crate::snapshot::Current;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// Samples kept: five minutes at one a second.
pub const KEEP: usize = 300;

/// Time between samples.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// What changed in one interval.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Sample {
    /// End of the interval, milliseconds since the Unix epoch.
    pub t: u64,
    /// Requests answered per second.
    pub rps: f64,
    /// Share of them answered 5xx; `null` with no request.
    pub error_rate: Option<f64>,
    /// Request duration quantiles (from the histogram's buckets), milliseconds.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Median time to first token, milliseconds.
    pub ttft_p50_ms: Option<f64>,
    /// Completion tokens per second.
    pub tokens_per_s: f64,
    /// Hits among the lookups of cached routes (bypasses not counted); `null` with none.
    pub cache_hit_ratio: Option<f64>,
    /// Requests per second answered by each cluster.
    pub clusters: BTreeMap<String, f64>,
    /// Each peer (`cluster/addr`): tries per second and their failure rate.
    pub peers: BTreeMap<String, PeerSample>,
}

/// One peer in one interval.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PeerSample {
    pub tries_per_s: f64,
    /// Share of tries the breaker counted as failures; `null` with no try.
    pub error_rate: Option<f64>,
}

/// The ring of recent samples.
#[derive(Default)]
pub struct Samples {
    ring: Mutex<VecDeque<Sample>>,
}

impl Samples {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Sample>> {
        // A panic while holding the lock leaves whole samples behind: keep using them.
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Add a sample, dropping the oldest beyond [`KEEP`].
    pub fn push(&self, s: Sample) {
        let mut ring = self.lock();
        if ring.len() >= KEEP {
            ring.pop_front();
        }
        ring.push_back(s);
    }

    /// The `GET /dashboard.json` document: the samples, oldest first.
    pub fn json(&self) -> serde_json::Value {
        let ring = self.lock();
        serde_json::json!({
            "interval_ms": INTERVAL.as_millis() as u64,
            "samples": &*ring,
        })
    }
}

/// The sampling service.
pub struct Sampler {
    pub current: Arc<Current>,
    pub metrics: Arc<Metrics>,
    pub samples: Arc<Samples>,
}

#[async_trait]
impl BackgroundService for Sampler {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut prev = self.totals();
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {}
            }
            let now = self.totals();
            self.samples.push(now.since(&prev));
            prev = now;
        }
    }
}

/// Cumulative counts at one moment.
struct Totals {
    at: Instant,
    requests: u64,
    errors: u64,
    by_cluster: BTreeMap<String, u64>,
    duration: Buckets,
    ttft: Buckets,
    completion_tokens: u64,
    cache_hits: u64,
    cache_lookups: u64,
    /// By `cluster/addr`: (tries, failures).
    peers: BTreeMap<String, (u64, u64)>,
}

impl Sampler {
    fn totals(&self) -> Totals {
        let m = &self.metrics;
        let mut t = Totals {
            at: Instant::now(),
            requests: 0,
            errors: 0,
            by_cluster: BTreeMap::new(),
            duration: Buckets::of(&m.request_duration.collect()),
            ttft: Buckets::of(&m.llm.ttft.collect()),
            completion_tokens: 0,
            cache_hits: 0,
            cache_lookups: 0,
            peers: BTreeMap::new(),
        };
        for_each_counter(&m.requests.collect(), |labels, n| {
            t.requests += n;
            if label(labels, "code").is_some_and(|c| c.starts_with('5')) {
                t.errors += n;
            }
            if let Some(c) = label(labels, "cluster").filter(|c| *c != "none") {
                *t.by_cluster.entry(c.to_string()).or_default() += n;
            }
        });
        for_each_counter(&m.llm.tokens.collect(), |labels, n| {
            if label(labels, "kind") == Some("completion") {
                t.completion_tokens += n;
            }
        });
        for_each_counter(&m.cache_requests.collect(), |labels, n| {
            match label(labels, "result") {
                Some("bypass") | None => {}
                Some(r) => {
                    t.cache_lookups += n;
                    if r == "hit" {
                        t.cache_hits += n;
                    }
                }
            }
        });
        let snap = self.current.load();
        for c in &snap.clusters {
            for p in &c.peers {
                let b = p.state.breaker.snapshot(t.at);
                let tries = b.failure_count.saturating_add(b.success_count);
                let key = format!("{}/{}", c.cfg.name, p.name);
                t.peers.insert(key, (tries, b.failure_count));
            }
        }
        t
    }
}

impl Totals {
    /// The sample of the interval from `prev` to `self`.
    fn since(&self, prev: &Totals) -> Sample {
        let secs = self
            .at
            .saturating_duration_since(prev.at)
            .as_secs_f64()
            .max(1e-3);
        let rate = |now: u64, then: u64| now.saturating_sub(then) as f64 / secs;
        let share = |part: u64, whole: u64| (whole > 0).then(|| part as f64 / whole as f64);
        let requests = self.requests.saturating_sub(prev.requests);
        let duration = self.duration.minus(&prev.duration);
        let ttft = self.ttft.minus(&prev.ttft);
        let lookups = self.cache_lookups.saturating_sub(prev.cache_lookups);
        Sample {
            t: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            rps: rate(self.requests, prev.requests),
            error_rate: share(self.errors.saturating_sub(prev.errors), requests),
            p50_ms: duration.quantile(0.5).map(|s| s * 1e3),
            p99_ms: duration.quantile(0.99).map(|s| s * 1e3),
            ttft_p50_ms: ttft.quantile(0.5).map(|s| s * 1e3),
            tokens_per_s: rate(self.completion_tokens, prev.completion_tokens),
            cache_hit_ratio: share(self.cache_hits.saturating_sub(prev.cache_hits), lookups),
            clusters: self
                .by_cluster
                .iter()
                .map(|(c, &n)| {
                    (
                        c.clone(),
                        rate(n, prev.by_cluster.get(c).copied().unwrap_or(0)),
                    )
                })
                .collect(),
            peers: self
                .peers
                .iter()
                .map(|(p, &(tries, failed))| {
                    let (t0, f0) = prev.peers.get(p).copied().unwrap_or((tries, failed));
                    let sample = PeerSample {
                        tries_per_s: rate(tries, t0),
                        error_rate: share(failed.saturating_sub(f0), tries.saturating_sub(t0)),
                    };
                    (p.clone(), sample)
                })
                .collect(),
        }
    }
}

fn label<'a>(labels: &'a [prometheus::proto::LabelPair], name: &str) -> Option<&'a str> {
    labels.iter().find(|l| l.name() == name).map(|l| l.value())
}

/// Call `f` with the labels and value of every series of the counter families.
fn for_each_counter(
    families: &[MetricFamily],
    mut f: impl FnMut(&[prometheus::proto::LabelPair], u64),
) {
    for fam in families {
        for m in fam.get_metric() {
            let v = m.get_counter().value();
            f(
                m.get_label(),
                if v.is_finite() && v > 0.0 {
                    v as u64
                } else {
                    0
                },
            );
        }
    }
}

/// A histogram's cumulative bucket counts, all series added (they share their bounds).
#[derive(Debug, Default, Clone, PartialEq)]
struct Buckets {
    /// (upper bound, cumulative count), bounds ascending; the last is the total count (+Inf).
    counts: Vec<(f64, u64)>,
}

impl Buckets {
    fn of(families: &[MetricFamily]) -> Buckets {
        let mut b = Buckets::default();
        for fam in families {
            for m in fam.get_metric() {
                let h = m.get_histogram();
                let series = h.get_bucket();
                if b.counts.is_empty() {
                    b.counts = series.iter().map(|x| (x.upper_bound(), 0)).collect();
                    b.counts.push((f64::INFINITY, 0));
                }
                if b.counts.len() != series.len() + 1 {
                    continue;
                }
                for (acc, x) in b.counts.iter_mut().zip(series) {
                    acc.1 += x.cumulative_count();
                }
                if let Some(total) = b.counts.last_mut() {
                    total.1 += h.get_sample_count();
                }
            }
        }
        b
    }

    /// The counts of `self` less those of `earlier` (a series created since counts whole).
    fn minus(&self, earlier: &Buckets) -> Buckets {
        if earlier.counts.len() != self.counts.len() {
            return self.clone();
        }
        Buckets {
            counts: self
                .counts
                .iter()
                .zip(&earlier.counts)
                .map(|(a, b)| (a.0, a.1.saturating_sub(b.1)))
                .collect(),
        }
    }

    /// The `q` quantile, interpolated inside its bucket as Prometheus' `histogram_quantile`
    /// does (the top bucket answers its lower bound); `None` without observations.
    fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.counts.last()?.1;
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut lower = (0.0, 0u64);
        for &(bound, count) in &self.counts {
            if count as f64 >= rank {
                if bound.is_infinite() {
                    return Some(lower.0);
                }
                let inside = (count - lower.1) as f64;
                let frac = if inside > 0.0 {
                    (rank - lower.1 as f64) / inside
                } else {
                    1.0
                };
                return Some(lower.0 + (bound - lower.0) * frac);
            }
            lower = (bound, count);
        }
        Some(lower.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_buckets() {
        let b = Buckets {
            counts: vec![(0.1, 50), (1.0, 100), (f64::INFINITY, 100)],
        };
        assert_eq!(b.quantile(0.5), Some(0.1));
        let p75 = b.quantile(0.75).unwrap();
        assert!((p75 - 0.55).abs() < 1e-9, "{p75}");
        assert_eq!(Buckets::default().quantile(0.5), None);
        let top = Buckets {
            counts: vec![(0.1, 0), (f64::INFINITY, 4)],
        };
        assert_eq!(top.quantile(0.99), Some(0.1));
    }

    #[test]
    fn the_ring_keeps_the_last_samples() {
        let s = Samples::default();
        for t in 0..(KEEP as u64 + 5) {
            s.push(Sample {
                t,
                rps: 0.0,
                error_rate: None,
                p50_ms: None,
                p99_ms: None,
                ttft_p50_ms: None,
                tokens_per_s: 0.0,
                cache_hit_ratio: None,
                clusters: BTreeMap::new(),
                peers: BTreeMap::new(),
            });
        }
        let v = s.json();
        let samples = v["samples"].as_array().unwrap();
        assert_eq!(samples.len(), KEEP);
        assert_eq!(samples[0]["t"], 5);
    }
}
