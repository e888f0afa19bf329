//! Limiters by cluster or route name, outliving snapshots. Whether a limit is local or shared
//! is decided here, when a snapshot is built: shared when its `scope` is (the default with
//! `shared`) and the config has a shared tier.

use super::local::{LocalBudget, LocalClientLimit};
use super::shared::{SharedBudget, SharedClientLimit};
use super::{AdmissionQueue, ClientLimit, RequestBudget, RetryBudget};
use crate::config::{ClientLimitConfig, QueueConfig, RateLimitConfig, Scope};
use crate::shared::Tier;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// What a limit was built from: its settings (the queue timeout aside) and the tier it uses.
#[derive(PartialEq)]
struct Shape<C> {
    cfg: C,
    /// The shared tier, by address; `None` for a local limit.
    tier: Option<usize>,
}

/// Budgets by cluster, with what they were built from.
type Budgets = HashMap<String, (Shape<RateLimitConfig>, Arc<dyn RequestBudget>)>;
/// Client limits by route, with what they were built from.
type Clients = HashMap<String, (Shape<ClientLimitConfig>, Arc<dyn ClientLimit>)>;

/// The tier a limit of `scope` uses, if any.
fn tier_for(scope: Scope, tier: Option<&Arc<Tier>>) -> Option<&Arc<Tier>> {
    tier.filter(|_| scope == Scope::Shared)
}

fn addr(t: Option<&Arc<Tier>>) -> Option<usize> {
    t.map(|t| Arc::as_ptr(t) as usize)
}

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
    /// The budget of `cluster`, shared through `tier` when its scope says so. The bucket is
    /// kept while its rates, burst and tier are unchanged (the queue timeout is read from the
    /// config in force).
    pub fn budget(
        &self,
        cluster: &str,
        cfg: &RateLimitConfig,
        tier: Option<&Arc<Tier>>,
    ) -> Arc<dyn RequestBudget> {
        let tier = tier_for(cfg.scope, tier);
        let shape = Shape {
            cfg: RateLimitConfig {
                queue_timeout: std::time::Duration::ZERO,
                ..*cfg
            },
            tier: addr(tier),
        };
        let mut map = lock(&self.budgets);
        if let Some((_, b)) = map.get(cluster).filter(|(s, _)| *s == shape) {
            return b.clone();
        }
        let b: Arc<dyn RequestBudget> = match tier {
            Some(t) => Arc::new(SharedBudget::new(t.clone(), cluster, cfg)),
            None => Arc::new(LocalBudget::new(
                cfg.requests_per_minute,
                cfg.burst,
                cfg.tokens_per_minute,
            )),
        };
        map.insert(cluster.to_string(), (shape, b.clone()));
        b
    }

    /// The per-client limit of `route` (shared through `tier` when its scope says so), kept
    /// while its settings and tier are unchanged.
    pub fn client(
        &self,
        route: &str,
        cfg: &ClientLimitConfig,
        tier: Option<&Arc<Tier>>,
    ) -> Arc<dyn ClientLimit> {
        let tier = tier_for(cfg.scope, tier);
        let shape = Shape {
            cfg: cfg.clone(),
            tier: addr(tier),
        };
        let mut map = lock(&self.clients);
        if let Some((_, l)) = map.get(route).filter(|(s, _)| *s == shape) {
            return l.clone();
        }
        let l: Arc<dyn ClientLimit> = match tier {
            Some(t) => Arc::new(SharedClientLimit::new(t.clone(), route, cfg)),
            None => Arc::new(LocalClientLimit::new(
                cfg.requests_per_minute,
                cfg.burst,
                cfg.tokens_per_minute,
            )),
        };
        map.insert(route.to_string(), (shape, l.clone()));
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
            requests_per_minute: Some(60),
            burst: 3,
            tokens_per_minute: None,
            queue_timeout: Duration::ZERO,
            scope: Scope::Shared,
        };
        let b = reg.budget("c", &cfg, None);
        for _ in 0..3 {
            assert!(b.take(0).await.is_ok());
        }
        // No fresh burst, even with another queue timeout.
        let slower = RateLimitConfig {
            queue_timeout: Duration::from_secs(1),
            ..cfg
        };
        let again = reg.budget("c", &slower, None);
        assert!(Arc::ptr_eq(&b, &again));
        assert!(again.take(0).await.is_err());
        // Other settings: a new bucket.
        let more = RateLimitConfig { burst: 4, ..cfg };
        assert!(reg.budget("c", &more, None).take(0).await.is_ok());
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
