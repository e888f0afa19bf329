//! Sharing API-key state with the other instances (`keys::shared`): every 500 ms, and at once
//! when a key here was taken out or brought back, write what changed to the shared tier and read
//! what the other instances wrote. Idle without a shared tier or a shared key pool.

use crate::config::Scope;
use crate::keys::shared;
use crate::metrics::Metrics;
use crate::snapshot::{Current, Registries};
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;

/// How often the other instances' key state is read.
pub const REFRESH: Duration = Duration::from_millis(500);

/// The key-state sync service.
pub struct KeySync {
    pub current: Arc<Current>,
    pub metrics: Arc<Metrics>,
    pub state: Arc<Registries>,
}

#[async_trait]
impl BackgroundService for KeySync {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            self.round().await;
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = self.state.keys.changed() => {}
                _ = tokio::time::sleep(REFRESH) => {}
            }
        }
    }
}

impl KeySync {
    async fn round(&self) {
        let snap = self.current.load();
        let Some(tier) = &snap.shared else { return };
        let pools: Vec<_> = snap
            .clusters
            .iter()
            .filter_map(|c| Some((c.cfg.name.as_str(), c.keys.as_ref()?)))
            .filter(|(_, p)| p.cfg.scope == Scope::Shared)
            .collect();
        if pools.is_empty() {
            return;
        }
        // Errors are counted and logged by the tier; the local state stands meanwhile.
        let Ok(changed) = shared::sync(tier, &pools).await else {
            return;
        };
        for k in changed {
            let usable = k.is_usable(tokio::time::Instant::now());
            log::info!(
                "API key {} of cluster {} {} by another instance",
                k.id,
                k.cluster,
                if usable { "brought back" } else { "taken out" }
            );
            self.metrics
                .api_key_usable
                .with_label_values(&[k.cluster.as_str(), k.id.as_str()])
                .set(i64::from(usable));
        }
    }
}
