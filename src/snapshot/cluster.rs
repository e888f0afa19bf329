//! A cluster and its peers as one snapshot sees them.

use super::Registries;
use crate::balance::Balancer;
use crate::config::ClusterConfig;
use crate::keys::KeyPool;
use crate::limits::{AdmissionQueue, RequestBudget};
use crate::metrics::Metrics;
use crate::peer::{Health, PeerState};
use crate::upstream::Target;
use prometheus::{Histogram, IntGauge};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::time::Instant;

/// A cluster of one snapshot.
pub struct Cluster {
    pub cfg: ClusterConfig,
    /// In config order; the balancer picks by index.
    pub peers: Vec<Peer>,
    pub balancer: Balancer,
    /// `switchyard_upstream_latency_seconds{cluster}`.
    pub latency: Histogram,
    /// API keys sent upstream, if the cluster has a pool.
    pub keys: Option<KeyPool>,
    /// The upstream's request budget, if it has one.
    pub budget: Option<Arc<dyn RequestBudget>>,
    /// Where requests wait when every peer is at `max_inflight` (only if some peer has one).
    pub queue: Option<Arc<AdmissionQueue>>,
}

/// A peer of one snapshot: its settings, and its state shared with every snapshot.
pub struct Peer {
    pub weight: u32,
    pub max_inflight: Option<u32>,
    pub state: Arc<PeerState>,
    /// `addr` as text: the label in metrics and the admin API.
    pub name: String,
    /// `switchyard_peer_inflight_requests{cluster,peer}`.
    pub inflight_gauge: IntGauge,
    /// Where every try to this peer connects.
    pub target: Arc<Target>,
}

/// Identities a snapshot keeps in the registries (everything else is dropped from them).
#[derive(Default)]
pub(super) struct Kept {
    pub peers: HashSet<(String, SocketAddr)>,
    pub keys: HashSet<(String, String)>,
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
    /// Build `c` from its config, taking peer, key and limiter state from `state`.
    pub(super) fn build(
        c: &ClusterConfig,
        state: &Registries,
        metrics: &Metrics,
        kept: &mut Kept,
    ) -> Cluster {
        let checked = c.health_check.is_some();
        let peers = c
            .peers
            .iter()
            .map(|p| {
                kept.peers.insert((c.name.clone(), p.addr));
                let peer_state = state
                    .peers
                    .get_or_insert(&c.name, p.addr, checked, &c.breaker);
                let name = p.addr.to_string();
                Peer {
                    weight: p.weight,
                    max_inflight: p.max_inflight,
                    inflight_gauge: metrics
                        .peer_inflight
                        .with_label_values(&[c.name.as_str(), name.as_str()]),
                    target: Arc::new(Target::new(p.addr, peer_state.idle.clone())),
                    name,
                    state: peer_state,
                }
            })
            .collect();
        let weights: Vec<_> = c.peers.iter().map(|p| (p.addr, p.weight)).collect();
        let queue = c.peers.iter().any(|p| p.max_inflight.is_some()).then(|| {
            state
                .limiters
                .queue(&c.name, &c.queue, state.peers.cluster_notify(&c.name))
        });
        Cluster {
            keys: c
                .api_keys
                .as_ref()
                .map(|k| state.keys.pool(&c.name, k, &mut kept.keys)),
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
    }

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
