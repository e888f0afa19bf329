//! Runtime state of each peer that must outlive a config snapshot: in-flight requests, active
//! health, its circuit breaker, and the time it last became usable (for slow start).
//!
//! State is keyed by [`PeerId`]: (cluster name, configured name, address), not by weight, so a
//! reload that changes a peer's weight keeps everything the balancer has learned about it, and an
//! address behind a DNS name keeps its state across re-resolutions for as long as the name still
//! resolves to it. (Pingora's own `HealthRegistry` keys by address *and* weight, which is why we
//! keep our own.)

use crate::breaker::Breaker;
use crate::config::BreakerConfig;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

/// Active health of a peer, as last decided by its health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not probed yet: no traffic until the first probe passes (only when a check is configured).
    Unknown,
    Healthy,
    Unhealthy,
}

impl Health {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Health::Healthy,
            2 => Health::Unhealthy,
            _ => Health::Unknown,
        }
    }
    fn as_u8(self) -> u8 {
        match self {
            Health::Unknown => 0,
            Health::Healthy => 1,
            Health::Unhealthy => 2,
        }
    }
    /// Name used in the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }
}

/// The identity of a peer's state: its cluster, the name it was configured by (`host:port`, for
/// a peer given by DNS name) and its address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerId {
    pub cluster: String,
    /// `host:port` of a named peer; `None` for a peer configured by IP.
    pub name: Option<String>,
    pub addr: SocketAddr,
}

impl PeerId {
    /// A peer configured by IP.
    pub fn ip(cluster: &str, addr: SocketAddr) -> Self {
        PeerId {
            cluster: cluster.to_string(),
            name: None,
            addr,
        }
    }

    /// How metrics and the admin API name the peer: its address, after `host:port@` for a
    /// named peer.
    pub fn display(&self) -> String {
        match &self.name {
            Some(n) => format!("{n}@{}", self.addr),
            None => self.addr.to_string(),
        }
    }
}

/// What switchyard knows about one peer of one cluster.
#[derive(Debug)]
pub struct PeerState {
    /// Cluster name.
    pub cluster: String,
    pub addr: SocketAddr,
    /// Its identity in the registry.
    pub id: PeerId,
    /// [`PeerId::display`]: the `peer` label of its metrics.
    pub name: String,
    /// `cluster/name`, for logs.
    pub label: String,
    inflight: AtomicU64,
    health: AtomicU8,
    /// When the peer last became usable, in ms since `epoch` (slow start); 0 = from the start.
    usable_since_ms: AtomicU64,
    epoch: Instant,
    /// Consecutive probe results, written only by the peer's health-check task.
    pub(crate) probe_streak: Mutex<ProbeStreak>,
    /// Passive circuit breaker fed by live traffic.
    pub breaker: Breaker,
    /// Shared by the cluster's peers: wakes a request waiting in the admission queue when a try
    /// to the cluster ends.
    pub freed: Arc<tokio::sync::Notify>,
    /// Idle keep-alive connections to the peer.
    pub idle: Arc<crate::upstream::IdlePool>,
    /// The load the peer last reported itself (`load_report`), written by its scraper.
    pub load: crate::peer_load::LoadCell,
}

/// Consecutive passes and failures of active probes.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProbeStreak {
    pub passes: u32,
    pub failures: u32,
}

impl PeerState {
    fn new(
        id: &PeerId,
        checked: bool,
        breaker: &BreakerConfig,
        freed: Arc<tokio::sync::Notify>,
    ) -> Self {
        let health = if checked {
            Health::Unknown
        } else {
            Health::Healthy
        };
        let name = id.display();
        let label = format!("{}/{name}", id.cluster);
        PeerState {
            cluster: id.cluster.clone(),
            addr: id.addr,
            id: id.clone(),
            name,
            breaker: Breaker::new(label.clone(), breaker),
            freed,
            label,
            inflight: AtomicU64::new(0),
            health: AtomicU8::new(health.as_u8()),
            usable_since_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            probe_streak: Mutex::new(ProbeStreak::default()),
            idle: Arc::default(),
            load: Default::default(),
        }
    }

    /// Requests to this peer now in flight.
    pub fn inflight(&self) -> u64 {
        self.inflight.load(Ordering::Relaxed)
    }

    /// Count a request in flight until the guard drops.
    pub fn start_request(self: &Arc<Self>) -> InflightGuard {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        InflightGuard(self.clone())
    }

    /// Reserve a place among the requests in flight, if fewer than `max` are (any number when
    /// `None`): one compare-and-swap, so concurrent picks never take more than `max` places.
    pub fn reserve(self: &Arc<Self>, max: Option<u32>) -> Option<InflightGuard> {
        let Some(max) = max else {
            return Some(self.start_request());
        };
        self.inflight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < u64::from(max)).then_some(n + 1)
            })
            .ok()?;
        Some(InflightGuard(self.clone()))
    }

    pub fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Relaxed))
    }

    /// Set the active health; returns the previous value.
    pub fn set_health(&self, h: Health) -> Health {
        let prev = Health::from_u8(self.health.swap(h.as_u8(), Ordering::Relaxed));
        if prev != Health::Healthy && h == Health::Healthy {
            self.mark_usable_now();
        }
        prev
    }

    /// Called when the peer comes back (health or breaker): slow start counts from now.
    pub fn mark_usable_now(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.usable_since_ms.store(ms.max(1), Ordering::Relaxed);
    }

    /// Share of its weight the peer should get under slow start, in (0, 1].
    pub fn slow_start_factor(&self, slow_start: Option<std::time::Duration>, now: Instant) -> f64 {
        let Some(ramp) = slow_start else { return 1.0 };
        let since = self.usable_since_ms.load(Ordering::Relaxed);
        if since == 0 {
            return 1.0;
        }
        let up_ms = now
            .saturating_duration_since(self.epoch)
            .as_millis()
            .saturating_sub(since as u128) as f64;
        let frac = up_ms / ramp.as_millis().max(1) as f64;
        if frac >= 1.0 {
            1.0
        } else {
            0.1 + 0.9 * frac
        }
    }
}

/// Decrements the peer's in-flight count when dropped.
#[derive(Debug)]
pub struct InflightGuard(Arc<PeerState>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
        self.0.freed.notify_one();
    }
}

/// All peer states, by [`PeerId`]. Consulted only when a snapshot is built.
#[derive(Debug, Default)]
pub struct PeerRegistry {
    peers: Mutex<HashMap<PeerId, Arc<PeerState>>>,
    freed: Mutex<HashMap<String, Arc<tokio::sync::Notify>>>,
    ejections: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl PeerRegistry {
    /// The state of peer `id`, created on first sight. `checked` says whether the cluster has
    /// an active health check (then a new peer waits for its first probe). An existing peer keeps
    /// its state and takes the (possibly reloaded) breaker settings; if its cluster no longer has
    /// a check, it is healthy (no probe would ever bring it back).
    pub fn get_or_insert(
        &self,
        id: &PeerId,
        checked: bool,
        breaker: &BreakerConfig,
    ) -> Arc<PeerState> {
        self.entry(id, checked, breaker).0
    }

    /// [`PeerRegistry::get_or_insert`] for a peer that joins a running cluster (a new address
    /// behind a name): a new one ramps up under slow start, like a peer coming back.
    pub fn get_or_join(
        &self,
        id: &PeerId,
        checked: bool,
        breaker: &BreakerConfig,
    ) -> Arc<PeerState> {
        let (state, new) = self.entry(id, checked, breaker);
        if new && state.health() == Health::Healthy {
            state.mark_usable_now();
        }
        state
    }

    fn entry(&self, id: &PeerId, checked: bool, breaker: &BreakerConfig) -> (Arc<PeerState>, bool) {
        let mut map = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(id) {
            Some(state) => {
                state.breaker.update_config(breaker);
                // Nothing will probe it any more: without a check a peer counts as healthy.
                if !checked && state.health() != Health::Healthy {
                    state.set_health(Health::Healthy);
                }
                (state.clone(), false)
            }
            None => {
                let freed = self.cluster_notify(&id.cluster);
                let state = Arc::new(PeerState::new(id, checked, breaker, freed));
                map.insert(id.clone(), state.clone());
                (state, true)
            }
        }
    }

    /// The wake-up shared by the peers of `cluster` (see [`PeerState::freed`]).
    pub fn cluster_notify(&self, cluster: &str) -> Arc<tokio::sync::Notify> {
        self.freed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(cluster.to_string())
            .or_default()
            .clone()
    }

    /// The lock under which a breaker of `cluster` decides to trip, so that peers tripping at
    /// once see each other's ejection (`max_ejected_percent`). Shared by every snapshot.
    pub fn cluster_ejection(&self, cluster: &str) -> Arc<Mutex<()>> {
        self.ejections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(cluster.to_string())
            .or_default()
            .clone()
    }

    /// Forget peers that are no longer configured (or no longer resolved to). Requests still in
    /// flight to them keep their own `Arc` and drain normally.
    /// Returns the states forgotten.
    pub fn retain(&self, keep: &HashSet<PeerId>) -> Vec<Arc<PeerState>> {
        let mut map = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let mut gone = Vec::new();
        map.retain(|k, v| {
            let kept = keep.contains(k);
            if !kept {
                gone.push(v.clone());
            }
            kept
        });
        gone
    }

    pub fn len(&self) -> usize {
        self.peers.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests;
