//! Limits kept in this process: GCRA buckets from the `governor` crate.

use super::{ClientLimit, RequestBudget};
use async_trait::async_trait;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

fn quota(rpm: u32, burst: u32) -> Quota {
    let rpm = NonZeroU32::new(rpm).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(rpm).allow_burst(burst)
}

/// A request budget of this process: `rpm` steady, `burst` at once.
pub struct LocalBudget {
    limiter: DefaultDirectRateLimiter,
}

impl LocalBudget {
    pub fn new(rpm: u32, burst: u32) -> Self {
        LocalBudget {
            limiter: DefaultDirectRateLimiter::direct(quota(rpm, burst)),
        }
    }

    /// Take one request's worth now, or say how long until one is free.
    pub fn take_now(&self) -> Result<(), Duration> {
        self.limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

#[async_trait]
impl RequestBudget for LocalBudget {
    async fn take(&self) -> Result<(), Duration> {
        self.take_now()
    }

    async fn wait(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.limiter.until_ready())
            .await
            .is_ok()
    }
}

/// A per-client limit of this process, keyed by a hash of the client key.
pub struct LocalClientLimit {
    limiter: DefaultKeyedRateLimiter<u64>,
    checks: AtomicU64,
}

impl LocalClientLimit {
    pub fn new(rpm: u32, burst: u32) -> Self {
        LocalClientLimit {
            limiter: DefaultKeyedRateLimiter::keyed(quota(rpm, burst)),
            checks: AtomicU64::new(0),
        }
    }

    /// Count one request of `client`; `Err` holds how long until it may send again.
    pub fn check_now(&self, client: u64) -> Result<(), Duration> {
        // Forget idle clients now and then, so the map stays as small as the active set.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&client)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

#[async_trait]
impl ClientLimit for LocalClientLimit {
    async fn check(&self, client: u64) -> Result<(), Duration> {
        self.check_now(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_allows_burst_then_refuses_with_a_wait() {
        let b = LocalBudget::new(60, 3);
        assert!((0..3).all(|_| b.take_now().is_ok()));
        let wait = b.take_now().unwrap_err();
        assert!(
            wait > Duration::from_millis(500) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
    }

    #[test]
    fn client_limits_are_per_client() {
        let l = LocalClientLimit::new(60, 2);
        assert!(l.check_now(1).is_ok() && l.check_now(1).is_ok());
        assert!(l.check_now(1).is_err());
        assert!(l.check_now(2).is_ok(), "another client is unaffected");
    }
}
