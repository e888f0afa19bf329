//! A cluster and its peers as one snapshot sees them. A peer given by DNS name is one peer per
//! address the name resolved to when the snapshot was built (see `crate::dns`).

use super::Registries;
use crate::balance::Balancer;
use crate::breaker::{Admission, Outcome, Transition};
use crate::config::{ClusterConfig, PeerAddr, PeerConfig};
use crate::dns::NameState;
use crate::keys::{KeyId, KeyPool};
use crate::limits::{AdmissionQueue, RequestBudget};
use crate::metrics::Metrics;
use crate::peer::{Health, InflightGuard, PeerId, PeerState};
use crate::peer_load::{Report, STALE_AFTER};
use crate::shared::Tier;
use crate::upstream::{Target, TlsClient};
use http::HeaderValue;
use prometheus::{Histogram, IntGauge};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
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
    /// The names of its named peers, with the generation of the resolution this snapshot used.
    pub dns: Vec<(Arc<NameState>, u64)>,
    /// Held while a breaker of this cluster records a failure (shared by every snapshot).
    ejection: Arc<Mutex<()>>,
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
    /// The upstream `Host` of this peer, when it is not the client's: the cluster's `host`, else
    /// a named peer's name (with its port unless it is the scheme's default).
    pub host: Option<HeaderValue>,
}

/// Identities a snapshot keeps in the registries (everything else is dropped from them).
#[derive(Default)]
pub(super) struct Kept {
    pub peers: HashSet<PeerId>,
    pub keys: HashSet<KeyId>,
    /// Named peers, by (cluster, `host:port`).
    pub names: HashSet<(String, String)>,
}

impl Peer {
    /// Below its `max_inflight`?
    pub fn has_capacity(&self) -> bool {
        self.max_inflight
            .is_none_or(|m| self.state.inflight() < u64::from(m))
    }

    /// A place among its requests in flight, if it is below its `max_inflight` (taken
    /// atomically: concurrent picks never overfill it).
    pub fn reserve(&self) -> Option<InflightGuard> {
        self.state.reserve(self.max_inflight)
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
    /// Build `c` from its config, taking peer, key, limiter and TLS state from `state`, and the
    /// addresses of its named peers from their latest resolution.
    pub(super) fn build(
        c: &ClusterConfig,
        state: &Registries,
        metrics: &Metrics,
        shared: Option<&Arc<Tier>>,
        kept: &mut Kept,
    ) -> Cluster {
        let tls = match &c.tls {
            Some(t) => match state.tls.get(&c.name, t) {
                Ok(client) => Some(client),
                Err(e) => {
                    // Never a downgrade to cleartext: the cluster has no peer instead.
                    log::error!(
                        "cluster {}: TLS client not built, no peer is used: {e}",
                        c.name
                    );
                    None
                }
            },
            None => None,
        };
        let mut b = PeerBuilder {
            c,
            state,
            metrics,
            tls,
            peers: Vec::new(),
            addrs: HashSet::new(),
        };
        let mut dns = Vec::new();
        for p in &c.peers {
            match &p.addr {
                PeerAddr::Ip(addr) => b.add(p, PeerId::ip(&c.name, *addr), None, None),
                PeerAddr::Name { host, port } => {
                    let name = state
                        .names
                        .get_or_insert(&c.name, host, *port, c.dns_refresh);
                    kept.names.insert((c.name.clone(), name.name()));
                    let r = name.resolution();
                    dns.push((name.clone(), r.generation));
                    for addr in &r.addrs {
                        let id = PeerId {
                            name: Some(name.name()),
                            ..PeerId::ip(&c.name, *addr)
                        };
                        b.add(p, id, Some(host), Some(&name));
                    }
                }
            }
        }
        let peers = b.peers;
        kept.peers.extend(peers.iter().map(|p| p.state.id.clone()));
        let weights: Vec<_> = peers.iter().map(|p| (p.state.addr, p.weight)).collect();
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
                .map(|r| state.limiters.budget(&c.name, r, shared)),
            queue,
            ejection: state.peers.cluster_ejection(&c.name),
            balancer: Balancer::for_cluster(c, &weights),
            latency: metrics
                .upstream_latency
                .with_label_values(&[c.name.as_str()]),
            peers,
            dns,
            cfg: c.clone(),
        }
    }

    /// Is a named peer's latest resolution not the one this snapshot was built from?
    pub fn dns_stale(&self) -> bool {
        self.dns
            .iter()
            .any(|(name, generation)| name.resolution().generation != *generation)
    }

    /// The load of peer `pi` per unit of effective weight (slow start included), counting one
    /// more request: the requests the peer reports queued and running when its report is fresh
    /// and says more than our own in-flight count (which is always counted: a report lags).
    pub fn load(&self, pi: usize, now: Instant) -> f64 {
        let p = &self.peers[pi];
        let w = f64::from(p.weight) * p.state.slow_start_factor(self.cfg.slow_start, now);
        let ours = p.state.inflight();
        let q = self
            .report(pi, now)
            .map_or(ours, |r| ours.max(r.waiting.saturating_add(r.running)));
        (q as f64 + 1.0) / w.max(0.001)
    }

    /// Peer `pi`'s own report of its load, when the cluster has `load_report` and it is fresh.
    pub fn report(&self, pi: usize, now: Instant) -> Option<Report> {
        let lr = self.cfg.load_report.as_ref()?;
        let max_age = lr.interval.saturating_mul(STALE_AFTER);
        self.peers[pi].state.load.fresh(now, max_age)
    }

    /// Does peer `pi` report itself full: its KV cache at `max_kv_usage`, or more than
    /// `max_waiting` queued? Such a peer is skipped while another can serve.
    pub fn reports_full(&self, pi: usize, now: Instant) -> bool {
        let (Some(lr), Some(r)) = (self.cfg.load_report.as_ref(), self.report(pi, now)) else {
            return false;
        };
        r.kv_usage.is_some_and(|kv| kv >= lr.max_kv_usage)
            || lr.max_waiting.is_some_and(|m| r.waiting > u64::from(m))
    }

    /// Whether the cluster has an active health check.
    pub fn checked(&self) -> bool {
        self.cfg.health_check.is_some()
    }

    /// May one more peer of this cluster be ejected now (`max_ejected_percent` of the peers that
    /// take traffic, at least one when there are several)? Drained peers (weight 0) count
    /// neither way. A cluster's only peer is ejected only under `max_ejected_percent: 100`: a
    /// burst of failures on it would otherwise refuse every request for the whole ejection, and
    /// refusing cannot serve anyone that trying might (nginx ignores `max_fails` for a single
    /// server; Envoy's panic threshold sends to ejected hosts when too few are left).
    fn may_eject(&self, now: Instant) -> bool {
        let live = self.peers.iter().filter(|p| p.weight > 0);
        let n = live.clone().count();
        let at_least = usize::from(n > 1);
        let allowed = (n * self.cfg.breaker.max_ejected_percent as usize / 100).max(at_least);
        let ejected = live.filter(|p| p.state.breaker.is_ejected(now)).count();
        ejected < allowed
    }

    /// Record `outcome` for `adm`, a try of `peer` (one of this cluster's). A failure is
    /// recorded under the cluster's ejection lock, so that peers tripping at the same moment
    /// never eject more than `max_ejected_percent` between them. A breaker that closes again
    /// starts the peer's slow start.
    pub fn record(
        &self,
        peer: &Peer,
        adm: Admission,
        outcome: Outcome,
        now: Instant,
    ) -> Transition {
        let breaker = &peer.state.breaker;
        let t = match outcome {
            Outcome::Success => breaker.record(adm, outcome, now, || true),
            Outcome::Failure => {
                let _one_at_a_time = self.ejection.lock().unwrap_or_else(|e| e.into_inner());
                breaker.record(adm, outcome, now, || self.may_eject(now))
            }
        };
        if t == Transition::Closed {
            peer.state.mark_usable_now();
        }
        t
    }

    /// Any peer that can take traffic now (and, with an API-key pool, a usable key)?
    pub fn has_usable_peer(&self, now: Instant) -> bool {
        let checked = self.checked();
        self.keys.as_ref().is_none_or(|k| k.any_usable(now))
            && self.peers.iter().any(|p| p.usable(checked, now))
    }
}

/// Builds a cluster's peers, one address at a time.
struct PeerBuilder<'a> {
    c: &'a ClusterConfig,
    state: &'a Registries,
    metrics: &'a Metrics,
    /// The cluster's TLS client; `None` with `tls` configured when it could not be built.
    tls: Option<Arc<TlsClient>>,
    peers: Vec<Peer>,
    /// Addresses already in the cluster: an address reached twice (two names, or a name and an
    /// IP peer) is one peer, the first.
    addrs: HashSet<SocketAddr>,
}

impl PeerBuilder<'_> {
    /// Add the peer `id`, configured as `p` (by the name `host`, whose state is `name`).
    fn add(
        &mut self,
        p: &PeerConfig,
        id: PeerId,
        host: Option<&str>,
        name: Option<&Arc<NameState>>,
    ) {
        let c = self.c;
        if self.c.tls.is_some() && self.tls.is_none() {
            return;
        }
        if !self.addrs.insert(id.addr) {
            log::debug!("cluster {}: {} is already a peer", c.name, id.display());
            return;
        }
        let checked = c.health_check.is_some();
        let state = match name {
            // An address a name newly resolved to joins like a peer coming back (slow start).
            Some(_) => self.state.peers.get_or_join(&id, checked, &c.breaker),
            None => self.state.peers.get_or_insert(&id, checked, &c.breaker),
        };
        let tls = self.tls.as_ref().map(|client| {
            let server_name = client.server_name(host, id.addr.ip());
            (client.clone(), server_name)
        });
        let mut target = Target::new(id.addr, tls, state.idle.clone(), &state.label);
        if let Some(name) = name {
            let name = name.clone();
            target = target.on_connect_failure(Box::new(move || name.connect_failed()));
        }
        let host = match (&c.rewrite.host, host) {
            (Some(h), _) => Some(h.clone()),
            (None, Some(h)) => {
                let default_port = if c.tls.is_some() { 443 } else { 80 };
                let text = match id.addr.port() {
                    port if port == default_port => h.to_string(),
                    port => format!("{h}:{port}"),
                };
                HeaderValue::from_str(&text).ok()
            }
            (None, None) => None,
        };
        self.peers.push(Peer {
            weight: p.weight,
            max_inflight: p.max_inflight,
            inflight_gauge: self
                .metrics
                .peer_inflight
                .with_label_values(&[c.name.as_str(), state.name.as_str()]),
            target: Arc::new(target),
            name: state.name.clone(),
            host,
            state,
        });
    }
}

#[cfg(test)]
#[path = "cluster_tests.rs"]
mod tests;
