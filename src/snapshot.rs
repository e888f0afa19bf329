//! One immutable snapshot of everything a request reads that config can change.
//!
//! The app keeps the current snapshot behind one `ArcSwap`; a request loads it once and uses it
//! to its end, so a reload is a single store and no request ever sees a mix of two configs. Peer
//! state is not copied in: each peer holds the `Arc<PeerState>` from the [`PeerRegistry`], shared
//! with every snapshot that names the same (cluster, address).

use crate::balance::Balancer;
use crate::config::{ClusterConfig, Config, RouteConfig};
use crate::keys::{KeyPool, KeyRegistry};
use crate::limits::{AdmissionQueue, Budget, ClientLimiter, LimiterRegistry};
use crate::metrics::Metrics;
use crate::peer::{Health, PeerRegistry, PeerState};
use crate::proxy::upstream::Target;
use crate::split::Split;
use http::Method;
use prometheus::{Histogram, IntGauge};
use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::time::Instant;

/// State that outlives snapshots: peers, API keys, limiters. A snapshot takes what it needs from
/// here when it is built, so a reload keeps what was learned.
#[derive(Default)]
pub struct Registries {
    pub peers: PeerRegistry,
    pub keys: KeyRegistry,
    pub limiters: LimiterRegistry,
}

/// A config turned into what the request path needs, with metric handles resolved.
pub struct Snapshot {
    /// 1 for the config loaded at start, +1 per successful reload.
    pub generation: u64,
    pub loaded_at: SystemTime,
    /// SHA-256 of the config text, hex.
    pub digest: String,
    pub config: Config,
    pub routes: Vec<Route>,
    pub clusters: Vec<Cluster>,
}

pub struct Route {
    pub cfg: RouteConfig,
    pub split: Split,
    /// Split targets (cluster indices) for failover, by weight, heaviest first.
    pub by_weight: Vec<usize>,
    pub inflight: IntGauge,
    pub duration: prometheus::Histogram,
    pub attempts: Histogram,
    pub client_limit: Option<Arc<ClientLimiter>>,
    /// Requests of this route in the upstream stage, and retries among them (retry budget).
    pub active: AtomicU64,
    pub active_retries: AtomicU64,
    /// The route's edge cache, when it has one (attached by `cache::Caches`; outlives reloads).
    pub cache: Option<Arc<crate::cache::RouteCache>>,
}

pub struct Cluster {
    pub cfg: ClusterConfig,
    pub peers: Vec<Peer>,
    pub balancer: Balancer,
    pub latency: Histogram,
    /// API keys sent upstream, if the cluster has a pool.
    pub keys: Option<KeyPool>,
    /// The upstream's request budget, if it has one.
    pub budget: Option<Arc<Budget>>,
    /// Where requests wait when every peer is at `max_inflight` (only if some peer has one).
    pub queue: Option<Arc<AdmissionQueue>>,
}

pub struct Peer {
    pub weight: u32,
    pub max_inflight: Option<u32>,
    pub state: Arc<PeerState>,
    /// `addr` as text: the label in metrics and the admin API.
    pub name: String,
    pub inflight_gauge: IntGauge,
    /// The Pingora peer every try connects to (its per-try timeouts are the request path's own
    /// timers, so one shared value serves all tries).
    pub target: Arc<Target>,
}

impl Peer {
    /// Below its `max_inflight`?
    pub fn has_capacity(&self) -> bool {
        self.max_inflight
            .is_none_or(|m| self.state.inflight() < u64::from(m))
    }

    /// Can this peer take a request now (ignoring which peers the request already tried)?
    pub fn usable(&self, checked: bool, now: Instant) -> bool {
        self.weight > 0
            && self.state.breaker.is_available(now)
            && match self.state.health() {
                Health::Healthy => true,
                Health::Unknown => !checked,
                Health::Unhealthy => false,
            }
    }
}

impl Cluster {
    /// Whether the cluster has an active health check.
    pub fn checked(&self) -> bool {
        self.cfg.health_check.is_some()
    }

    /// May one more peer of this cluster be ejected now (`max_ejected_percent`, at least one)?
    pub fn may_eject(&self, now: Instant) -> bool {
        let n = self.peers.len();
        let allowed = (n * self.cfg.breaker.max_ejected_percent as usize / 100).max(1);
        let ejected = self
            .peers
            .iter()
            .filter(|p| p.state.breaker.is_ejected(now))
            .count();
        ejected < allowed
    }

    /// Any peer that can take traffic now (and, with an API-key pool, a usable key)?
    pub fn has_usable_peer(&self, now: Instant) -> bool {
        let checked = self.checked();
        self.keys.as_ref().is_none_or(|k| k.any_usable(now))
            && self.peers.iter().any(|p| p.usable(checked, now))
    }
}

impl Snapshot {
    /// Build a snapshot; peers found in `registry` keep their state, new ones are added, and
    /// peers no longer configured are dropped from it.
    pub fn build(
        config: Config,
        generation: u64,
        digest: String,
        state: &Registries,
        metrics: &Metrics,
    ) -> Snapshot {
        let registry = &state.peers;
        let mut keep = HashSet::new();
        let mut keep_keys = HashSet::new();
        let clusters: Vec<Cluster> = config
            .clusters
            .iter()
            .map(|c| {
                let checked = c.health_check.is_some();
                let peers = c
                    .peers
                    .iter()
                    .map(|p| {
                        keep.insert((c.name.clone(), p.addr));
                        let state = registry.get_or_insert(&c.name, p.addr, checked, &c.breaker);
                        let name = p.addr.to_string();
                        Peer {
                            weight: p.weight,
                            max_inflight: p.max_inflight,
                            inflight_gauge: metrics
                                .peer_inflight
                                .with_label_values(&[c.name.as_str(), name.as_str()]),
                            target: Arc::new(Target::new(p.addr, state.idle.clone())),
                            name,
                            state,
                        }
                    })
                    .collect();
                let weights: Vec<_> = c.peers.iter().map(|p| (p.addr, p.weight)).collect();
                let queue = c.peers.iter().any(|p| p.max_inflight.is_some()).then(|| {
                    state
                        .limiters
                        .queue(&c.name, &c.queue, registry.cluster_notify(&c.name))
                });
                Cluster {
                    keys: c
                        .api_keys
                        .as_ref()
                        .map(|k| state.keys.pool(&c.name, k, &mut keep_keys)),
                    budget: c
                        .rate_limit
                        .as_ref()
                        .map(|r| state.limiters.budget(&c.name, r)),
                    queue,
                    balancer: Balancer::new(c.balance, &weights),
                    latency: metrics
                        .upstream_latency
                        .with_label_values(&[c.name.as_str()]),
                    peers,
                    cfg: c.clone(),
                }
            })
            .collect();
        registry.retain(&keep);
        state.keys.retain(&keep_keys);
        let routes = config
            .routes
            .iter()
            .map(|r| {
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
                    client_limit: r
                        .client_limit
                        .as_ref()
                        .map(|l| state.limiters.client(name, l)),
                    active: AtomicU64::new(0),
                    active_retries: AtomicU64::new(0),
                    cache: None,
                    cfg: r.clone(),
                }
            })
            .collect();
        Snapshot {
            generation,
            loaded_at: SystemTime::now(),
            digest,
            config,
            routes,
            clusters,
        }
    }

    /// The first route that takes this request.
    pub fn match_route(&self, host: Option<&str>, path: &str, method: &Method) -> Option<usize> {
        self.routes.iter().position(|r| {
            let m = &r.cfg.matcher;
            path.starts_with(m.path_prefix.as_str())
                && m.host
                    .as_deref()
                    .is_none_or(|h| host.is_some_and(|x| x.eq_ignore_ascii_case(h)))
                && m.methods.as_ref().is_none_or(|ms| ms.contains(method))
        })
    }

    /// Ready to serve: some route has a cluster with a usable peer.
    pub fn has_usable_route(&self, now: Instant) -> bool {
        self.routes.iter().any(|r| {
            r.cfg
                .split
                .iter()
                .any(|t| t.weight > 0 && self.clusters[t.cluster].has_usable_peer(now))
        })
    }
}
