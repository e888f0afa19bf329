//! Probing API keys that were taken out: every `health_check.interval`, each disabled key of a
//! cluster is tried with the configured request against one of the cluster's peers (over its
//! TLS, with its `Host`, like a try); after
//! `success_threshold` passes in a row it is back in the pool. Keys that are only cooling (a 429
//! with `retry-after`) come back by themselves when the time is up. While no key is disabled the
//! prober sleeps until one is.

use super::probe::{probe, ProbeTarget};
use crate::config::{HealthCheckConfig, HealthCheckKind};
use crate::metrics::Metrics;
use crate::snapshot::{Current, Registries};
use async_trait::async_trait;
use pingora::connectors::TransportConnector;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Shortest pause between two passes, so a flapping key cannot make the prober spin.
const MIN_NAP: Duration = Duration::from_millis(50);

/// Pause while no key is disabled: a safety net only, since disabling a key wakes the prober.
const IDLE_NAP: Duration = Duration::from_secs(3600);

/// The API-key probe service.
pub struct KeyProber {
    pub current: Arc<Current>,
    pub metrics: Arc<Metrics>,
    /// Key state (its registry wakes the prober when a key is disabled).
    pub state: Arc<Registries>,
}

#[async_trait]
impl BackgroundService for KeyProber {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let connector = TransportConnector::new(None);
        let mut due: HashMap<(String, String), Instant> = HashMap::new();
        loop {
            let snap = self.current.load();
            let now = Instant::now();
            for cluster in &snap.clusters {
                let Some(pool) = &cluster.keys else { continue };
                let Some(hc) = &pool.cfg.health_check else {
                    continue;
                };
                // Any peer that is up will do; the key is what is being tested.
                let checked = cluster.checked();
                let Some(peer) = cluster
                    .peers
                    .iter()
                    .find(|p| p.usable(checked, now))
                    .or(cluster.peers.first())
                else {
                    continue;
                };
                for key in pool.keys.iter().filter(|k| k.is_disabled()) {
                    let slot = due
                        .entry((cluster.cfg.name.clone(), key.id.clone()))
                        .or_insert(now);
                    if *slot > now {
                        continue;
                    }
                    *slot = now + hc.interval;
                    let probe_cfg = HealthCheckConfig {
                        kind: HealthCheckKind::Http,
                        method: hc.method.clone(),
                        path: hc.path.clone(),
                        headers: vec![(pool.cfg.header.clone(), key.header_value().clone())],
                        body: hc.body.clone(),
                        expect_status: hc.expect_status.clone(),
                        expect_body: hc.expect_body.clone(),
                        interval: hc.interval,
                        timeout: hc.timeout,
                        healthy_threshold: hc.success_threshold,
                        unhealthy_threshold: 1,
                    };
                    match probe(&connector, &probe_cfg, &ProbeTarget::of(peer)).await {
                        Ok(()) => {
                            let passes = key.probe_passes.fetch_add(1, Ordering::Relaxed) + 1;
                            if passes >= hc.success_threshold {
                                key.enable();
                                log::info!(
                                    "API key {} of cluster {} passed its probe: back in the pool",
                                    key.id,
                                    key.cluster
                                );
                                self.metrics
                                    .api_key_usable
                                    .with_label_values(&[key.cluster.as_str(), key.id.as_str()])
                                    .set(1);
                            }
                        }
                        Err(why) => {
                            key.probe_passes.store(0, Ordering::Relaxed);
                            log::debug!("API key {} probe failed: {why}", key.id);
                        }
                    }
                }
            }
            // Next wake: the earliest probe due of a key that is still disabled, else when a key
            // is disabled.
            let next_due = snap
                .clusters
                .iter()
                .filter_map(|c| Some((c, c.keys.as_ref()?)))
                .filter(|(_, pool)| pool.cfg.health_check.is_some())
                .flat_map(|(c, pool)| {
                    pool.keys
                        .iter()
                        .filter(|k| k.is_disabled())
                        .map(|k| due.get(&(c.cfg.name.clone(), k.id.clone())).copied())
                })
                .map(|d| d.unwrap_or(now))
                .min();
            drop(snap);
            let nap = next_due.map_or(IDLE_NAP, |d| {
                d.saturating_duration_since(Instant::now()).max(MIN_NAP)
            });
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = self.state.keys.disabled() => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }
}
