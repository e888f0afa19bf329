//! Active health checks: a background service that probes every peer of every cluster that has
//! a `health_check`, each on its own interval with jitter, in parallel, never on the request
//! path. A peer becomes unhealthy after `unhealthy_threshold` failed probes in a row and healthy
//! again after `healthy_threshold` passes. A peer never probed yet (new at start or added by a
//! reload) takes no traffic until its first probe passes.
//!
//! Pingora's `HealthCheck` services key health by address *and weight* and cannot check a
//! response body, so this service writes into switchyard's own [`PeerState`] instead.

use super::probe::{probe, ProbeTarget};
use crate::config::HealthCheckConfig;
use crate::metrics::Metrics;
use crate::peer::{Health, PeerId, PeerState};
use crate::snapshot::Current;
use async_trait::async_trait;
use pingora::connectors::TransportConnector;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Whether the first round of active health checks has finished: until then `/readyz` says not
/// ready, and cache warm-up waits.
#[derive(Debug)]
pub struct ProbeRound(AtomicBool);

impl ProbeRound {
    /// Done already when `any_checks` is false (nothing to probe).
    pub fn new(any_checks: bool) -> Self {
        ProbeRound(AtomicBool::new(!any_checks))
    }

    pub fn done(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set_done(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// The health-check service.
pub struct HealthChecker {
    pub current: Arc<Current>,
    pub metrics: Arc<Metrics>,
    pub probe_round: Arc<ProbeRound>,
}

type Key = PeerId;

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let connector = Arc::new(TransportConnector::new(None));
        let mut due: HashMap<Key, Instant> = HashMap::new();
        let mut probes: JoinSet<()> = JoinSet::new();
        loop {
            let snap = self.current.load();
            let now = Instant::now();
            let mut next_wake = now + Duration::from_secs(1);
            let mut configured = HashSet::new();
            let mut all_probed = true;
            for cluster in &snap.clusters {
                let Some(hc) = cluster.cfg.health_check.as_ref() else {
                    continue;
                };
                for peer in &cluster.peers {
                    let key = peer.state.id.clone();
                    configured.insert(key.clone());
                    all_probed &= peer.state.health() != Health::Unknown;
                    let at = *due.entry(key.clone()).or_insert(now);
                    if at <= now {
                        due.insert(key, now + jittered(hc.interval));
                        let (hc, state, conn) = (hc.clone(), peer.state.clone(), connector.clone());
                        let metrics = self.metrics.clone();
                        let to = ProbeTarget::of(peer);
                        probes.spawn(async move {
                            let pass = probe(&conn, &hc, &to).await;
                            record(&metrics, &hc, &state, pass);
                        });
                    } else {
                        next_wake = next_wake.min(at);
                    }
                }
            }
            due.retain(|k, _| configured.contains(k));
            if all_probed {
                self.probe_round.set_done();
            }
            drop(snap);
            tokio::select! {
                _ = shutdown.changed() => {
                    probes.abort_all();
                    return;
                }
                _ = tokio::time::sleep_until(next_wake.max(now + Duration::from_millis(20))) => {}
                Some(_) = probes.join_next(), if !probes.is_empty() => {}
            }
        }
    }
}

/// The interval, moved by up to ±10% so that probes of many peers do not move in lockstep.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(0.9 + 0.2 * rand::random::<f64>())
}

/// Apply one probe result to the peer's streak and health.
fn record(metrics: &Metrics, hc: &HealthCheckConfig, state: &PeerState, pass: Result<(), String>) {
    let mut streak = state.probe_streak.lock().unwrap_or_else(|e| e.into_inner());
    let prev = state.health();
    let next = match &pass {
        Ok(()) => {
            streak.passes += 1;
            streak.failures = 0;
            match prev {
                Health::Unknown => Health::Healthy,
                Health::Unhealthy if streak.passes >= hc.healthy_threshold => Health::Healthy,
                h => h,
            }
        }
        Err(_) => {
            streak.failures += 1;
            streak.passes = 0;
            match prev {
                Health::Unknown => Health::Unhealthy,
                Health::Healthy if streak.failures >= hc.unhealthy_threshold => Health::Unhealthy,
                h => h,
            }
        }
    };
    drop(streak);
    if pass.is_ok() {
        // A passing probe lets an ejected peer try trial requests early; only live traffic
        // closes its breaker.
        state.breaker.on_health_pass(Instant::now());
    }
    if next != prev {
        state.set_health(next);
        match &pass {
            Ok(()) => log::info!("peer {} is healthy", state.label),
            Err(why) => log::warn!("peer {} is unhealthy: {why}", state.label),
        }
    }
    metrics
        .peer_healthy
        .with_label_values(&[state.cluster.as_str(), state.name.as_str()])
        .set(i64::from(next == Health::Healthy));
}
