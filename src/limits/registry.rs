//! Limiters by cluster or route name, outliving snapshots.

use super::local::{LocalBudget, LocalClientLimit};
use super::{AdmissionQueue, ClientLimit, RequestBudget, RetryBudget};
use crate::config::{ClientLimitConfig, QueueConfig, RateLimitConfig};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Budgets by cluster, with the (rate, burst) they were built with.
type Budgets = HashMap<String, ((u32, u32), Arc<dyn RequestBudget>)>;
/// Client limits by route, with the settings they were built with.
type Clients = HashMap<String, (ClientLimitConfig, Arc<dyn ClientLimit>)>;

/// The limiters of every cluster and route, reused across reloads while their settings are
/// equal; [`LimiterRegistry::retain`] forgets those of names no longer configured.
#[derive(Default)]
pub struct LimiterRegistry {
    budgets: Mutex<Budgets>,
    clients: Mutex<Clients>,
    queues: Mutex<HashMap<String, Arc<AdmissionQueue>>>,
    retries: Mutex<HashMap<String, Arc<RetryBudget>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LimiterRegistry {
    /// The budget of `cluster`. The bucket is kept while the rate and burst are unchanged (the
    /// queue timeout is read from the config in force).
    pub fn budget(&self, cluster: &str, cfg: &RateLimitConfig) -> Arc<dyn RequestBudget> {
        let shape = (cfg.requests_per_minute, cfg.burst);
        let mut map = lock(&self.budgets);
        if let Some((_, b)) = map.get(cluster).filter(|(s, _)| *s == shape) {
            return b.clone();
        }
        let b: Arc<dyn RequestBudget> = Arc::new(LocalBudget::new(shape.0, shape.1));
        map.insert(cluster.to_string(), (shape, b.clone()));
        b
    }

    /// The per-client limit of `route`, kept while its settings are unchanged.
    pub fn client(&self, route: &str, cfg: &ClientLimitConfig) -> Arc<dyn ClientLimit> {
        let mut map = lock(&self.clients);
        if let Some((_, l)) = map.get(route).filter(|(c, _)| c == cfg) {
            return l.clone();
        }
        let l: Arc<dyn ClientLimit> =
            Arc::new(LocalClientLimit::new(cfg.requests_per_minute, cfg.burst));
        map.insert(route.to_string(), (cfg.clone(), l.clone()));
        l
    }

    /// The admission queue of `cluster`; `notify` is the cluster's wake-up shared with its peers.
    pub fn queue(
        &self,
        cluster: &str,
        cfg: &QueueConfig,
        notify: Arc<Notify>,
    ) -> Arc<AdmissionQueue> {
        let mut map = lock(&self.queues);
        if let Some(q) = map.get(cluster).filter(|q| q.cfg == *cfg) {
            return q.clone();
        }
        let q = Arc::new(AdmissionQueue::new(*cfg, notify));
        map.insert(cluster.to_string(), q.clone());
        q
    }

    /// The retry budget of `route`: the same one for as long as the route exists and counts
    /// over the same `window` (the other settings are read from the config in force).
    pub fn retry_budget(&self, route: &str, window: Duration) -> Arc<RetryBudget> {
        let mut map = lock(&self.retries);
        if let Some(b) = map.get(route).filter(|b| b.window() == window) {
            return b.clone();
        }
        let b = Arc::new(RetryBudget::new(window));
        map.insert(route.to_string(), b.clone());
        b
    }

    /// Forget the limiters of clusters and routes that are no longer configured.
    pub fn retain(&self, clusters: &HashSet<&str>, routes: &HashSet<&str>) {
        lock(&self.budgets).retain(|k, _| clusters.contains(k.as_str()));
        lock(&self.queues).retain(|k, _| clusters.contains(k.as_str()));
        lock(&self.clients).retain(|k, _| routes.contains(k.as_str()));
        lock(&self.retries).retain(|k, _| routes.contains(k.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reload_with_the_same_settings_keeps_the_bucket() {
        let reg = LimiterRegistry::default();
        let cfg = RateLimitConfig {
            requests_per_minute: 60,
            burst: 3,
            queue_timeout: Duration::ZERO,
        };
        let b = reg.budget("c", &cfg);
        for _ in 0..3 {
            assert!(b.take().await.is_ok());
        }
        // No fresh burst.
        let again = reg.budget("c", &cfg);
        assert!(Arc::ptr_eq(&b, &again));
        assert!(again.take().await.is_err());
        // Other settings: a new bucket.
        let more = RateLimitConfig { burst: 4, ..cfg };
        assert!(reg.budget("c", &more).take().await.is_ok());
    }

    #[test]
    fn retry_budgets_outlive_reloads_and_go_with_their_route() {
        let reg = LimiterRegistry::default();
        let w = Duration::from_secs(10);
        let a = reg.retry_budget("chat", w);
        assert!(Arc::ptr_eq(&a, &reg.retry_budget("chat", w)));
        let other_window = reg.retry_budget("chat", Duration::from_secs(20));
        assert!(!Arc::ptr_eq(&a, &other_window));
        reg.retain(&HashSet::new(), &HashSet::from(["other"]));
        assert!(!Arc::ptr_eq(&other_window, &reg.retry_budget("chat", w)));
    }
}
