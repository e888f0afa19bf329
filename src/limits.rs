//! How much may reach an upstream, and how much one client may send: request budgets per cluster
//! (GCRA, via the `governor` crate), per-client limits per route, and the admission queue where
//! requests wait, in arrival order, when every peer of a cluster is at its `max_inflight`.
//!
//! Budgets, client limiters and queues live in a [`LimiterRegistry`] outside the config snapshot,
//! reused across reloads while their settings are unchanged: a reload must not hand out a fresh
//! burst.

use crate::config::{ClientLimitConfig, QueueConfig, RateLimitConfig};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

fn quota(rpm: u32, burst: u32) -> Quota {
    let rpm = NonZeroU32::new(rpm).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(rpm).allow_burst(burst)
}

/// A cluster's request budget.
pub struct Budget {
    /// The settings it was built with (only rate and burst matter to the bucket).
    cfg: RateLimitConfig,
    limiter: DefaultDirectRateLimiter,
}

impl Budget {
    /// Take one request's worth now, or say how long until one is free.
    pub fn take(&self) -> Result<(), Duration> {
        self.limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Wait (at most `limit`) for the budget, then take it.
    pub async fn wait(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.limiter.until_ready())
            .await
            .is_ok()
    }
}

/// Per-client limiter of a route, keyed by a hash of the client key.
pub struct ClientLimiter {
    pub cfg: ClientLimitConfig,
    limiter: DefaultKeyedRateLimiter<u64>,
    checks: AtomicU64,
}

impl ClientLimiter {
    /// Count one request of `client`; `Err` holds how long until it may send again.
    pub fn check(&self, client: u64) -> Result<(), Duration> {
        // Forget idle clients now and then, so the map stays as small as the active set.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&client)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// Where requests wait for a peer below its `max_inflight`, in arrival order.
pub struct AdmissionQueue {
    pub cfg: QueueConfig,
    /// Woken (one at a time, first come first served) when a try to the cluster ends.
    pub notify: Arc<Notify>,
    waiting: AtomicU32,
}

impl AdmissionQueue {
    pub fn waiting(&self) -> u32 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Join the queue, unless it is full. The guard leaves it when dropped.
    pub fn join(&self) -> Option<QueueSlot<'_>> {
        let prev = self.waiting.fetch_add(1, Ordering::Relaxed);
        if prev >= self.cfg.max_waiting {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(QueueSlot(self))
    }
}

pub struct QueueSlot<'a>(&'a AdmissionQueue);

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
        // Pass the turn on: the next waiter re-checks for a free peer.
        self.0.notify.notify_one();
    }
}

/// Limiters by cluster or route name, reused across reloads while their settings are equal.
#[derive(Default)]
pub struct LimiterRegistry {
    budgets: Mutex<HashMap<String, Arc<Budget>>>,
    clients: Mutex<HashMap<String, Arc<ClientLimiter>>>,
    queues: Mutex<HashMap<String, Arc<AdmissionQueue>>>,
}

impl LimiterRegistry {
    /// The budget of `cluster`. The bucket is kept while the rate and burst are unchanged (the
    /// queue timeout is read from the config in force).
    pub fn budget(&self, cluster: &str, cfg: &RateLimitConfig) -> Arc<Budget> {
        let mut map = self.budgets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = map.get(cluster).filter(|b| {
            b.cfg.requests_per_minute == cfg.requests_per_minute && b.cfg.burst == cfg.burst
        }) {
            return b.clone();
        }
        let b = Arc::new(Budget {
            cfg: *cfg,
            limiter: DefaultDirectRateLimiter::direct(quota(cfg.requests_per_minute, cfg.burst)),
        });
        map.insert(cluster.to_string(), b.clone());
        b
    }

    pub fn client(&self, route: &str, cfg: &ClientLimitConfig) -> Arc<ClientLimiter> {
        let mut map = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = map.get(route).filter(|l| l.cfg == *cfg) {
            return l.clone();
        }
        let l = Arc::new(ClientLimiter {
            cfg: cfg.clone(),
            limiter: DefaultKeyedRateLimiter::keyed(quota(cfg.requests_per_minute, cfg.burst)),
            checks: AtomicU64::new(0),
        });
        map.insert(route.to_string(), l.clone());
        l
    }

    /// The admission queue of `cluster`; `notify` is the cluster's wake-up shared with its peers.
    pub fn queue(
        &self,
        cluster: &str,
        cfg: &QueueConfig,
        notify: Arc<Notify>,
    ) -> Arc<AdmissionQueue> {
        let mut map = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(q) = map.get(cluster).filter(|q| q.cfg == *cfg) {
            return q.clone();
        }
        let q = Arc::new(AdmissionQueue {
            cfg: *cfg,
            notify,
            waiting: AtomicU32::new(0),
        });
        map.insert(cluster.to_string(), q.clone());
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_allows_burst_then_refuses_with_a_wait() {
        let reg = LimiterRegistry::default();
        let cfg = RateLimitConfig {
            requests_per_minute: 60,
            burst: 3,
            queue_timeout: Duration::ZERO,
        };
        let b = reg.budget("c", &cfg);
        assert!((0..3).all(|_| b.take().is_ok()));
        let wait = b.take().unwrap_err();
        assert!(
            wait > Duration::from_millis(500) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        // A reload with the same settings keeps the bucket (no fresh burst).
        let again = reg.budget("c", &cfg);
        assert!(Arc::ptr_eq(&b, &again));
        assert!(again.take().is_err());
    }

    #[test]
    fn client_limits_are_per_client() {
        let reg = LimiterRegistry::default();
        let cfg = ClientLimitConfig {
            key: crate::config::StickyKey::ClientIp,
            requests_per_minute: 60,
            burst: 2,
        };
        let l = reg.client("r", &cfg);
        assert!(l.check(1).is_ok() && l.check(1).is_ok());
        assert!(l.check(1).is_err());
        assert!(l.check(2).is_ok(), "another client is unaffected");
    }

    #[test]
    fn queue_is_bounded() {
        let reg = LimiterRegistry::default();
        let cfg = QueueConfig {
            max_waiting: 2,
            timeout: Duration::from_secs(1),
        };
        let q = reg.queue("c", &cfg, Arc::new(Notify::new()));
        let a = q.join();
        let b = q.join();
        assert!(a.is_some() && b.is_some());
        assert!(q.join().is_none());
        drop(a);
        assert_eq!(q.waiting(), 1);
    }
}
