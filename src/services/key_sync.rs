//! Sharing API-key state with the other instances (`keys::shared`): when a key here was taken
//! out or brought back, write it to the shared tier at once and tell the others on the key
//! channel; read what the other instances wrote when told so, and every 500 ms in any case (a
//! message sent while this instance was not subscribed is not lost for long). Idle without a
//! shared tier or a shared key pool.

use crate::config::Scope;
use crate::keys::shared;
use crate::metrics::Metrics;
use crate::snapshot::{Current, Registries};
use async_trait::async_trait;
use futures_util::StreamExt;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use redis::aio::PubSubStream;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How often the other instances' key state is read without being told.
pub const REFRESH: Duration = Duration::from_millis(500);

/// How long after a failed subscription the next one is tried.
const RESUBSCRIBE: Duration = Duration::from_secs(2);

/// The key-state sync service.
pub struct KeySync {
    pub current: Arc<Current>,
    pub metrics: Arc<Metrics>,
    pub state: Arc<Registries>,
}

/// The subscription to the key channel, and when it may next be tried.
#[derive(Default)]
struct Told {
    stream: Option<PubSubStream>,
    /// The tier (by address) and channel it is for.
    of: Option<(usize, String)>,
    retry_at: Option<Instant>,
}

impl Told {
    /// Subscribe (again) if the tier in force has shared pools and no subscription is up.
    async fn keep_up(&mut self, sync: &KeySync) {
        let snap = sync.current.load();
        let Some(tier) = snap.shared.as_ref().filter(|_| has_shared_pools(&snap)) else {
            *self = Told::default();
            return;
        };
        let of = (Arc::as_ptr(tier) as usize, shared::channel(tier));
        if self.of.as_ref() != Some(&of) {
            *self = Told::default();
        }
        if self.stream.is_some() || self.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        match tier.subscribe(&of.1).await {
            Ok(s) => {
                self.stream = Some(s);
                self.retry_at = None;
            }
            // The tier counts and logs outages of its calls; the 500 ms rounds go on meanwhile.
            Err(e) => {
                log::debug!("key channel {}: {e}", of.1);
                self.retry_at = Some(crate::deadline::from_now(RESUBSCRIBE));
            }
        }
        self.of = Some(of);
    }

    /// The next message (pending forever without a subscription); a broken one is dropped.
    async fn next(&mut self) {
        let Some(s) = self.stream.as_mut() else {
            return std::future::pending().await;
        };
        if s.next().await.is_none() {
            self.stream = None;
        }
    }
}

fn has_shared_pools(snap: &crate::snapshot::Snapshot) -> bool {
    (snap.clusters.iter()).any(|c| {
        c.keys
            .as_ref()
            .is_some_and(|p| p.cfg.scope == Scope::Shared)
    })
}

#[async_trait]
impl BackgroundService for KeySync {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut told = Told::default();
        loop {
            self.round().await;
            told.keep_up(self).await;
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = self.state.keys.changed() => {}
                _ = told.next() => {}
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
