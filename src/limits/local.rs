//! Limits kept in this process: GCRA buckets from the `governor` crate for requests, and
//! [`bucket`](super::bucket) buckets (which take settlements) for tokens.

use super::bucket::{Bucket, KeyedBuckets};
use super::{delta, ClientLimit, Counted, Refused, RequestBudget};
use async_trait::async_trait;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

fn quota(rpm: u32, burst: u32) -> Quota {
    let rpm = NonZeroU32::new(rpm).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(rpm).allow_burst(burst)
}

/// A cluster's budget in this process: `rpm` requests steady and `burst` at once, and `tpm`
/// tokens a minute (a minute's worth at once); either may be absent.
pub struct LocalBudget {
    requests: Option<DefaultDirectRateLimiter>,
    tokens: Option<Bucket>,
}

impl LocalBudget {
    pub fn new(rpm: Option<u32>, burst: u32, tpm: Option<u32>) -> Self {
        LocalBudget {
            requests: rpm.map(|r| DefaultDirectRateLimiter::direct(quota(r, burst))),
            tokens: tpm.map(Bucket::per_minute),
        }
    }

    /// Take one request and `tokens` tokens now, or say how long until they fit.
    pub fn take_now(&self, tokens: u64) -> Result<(), Duration> {
        let now = Instant::now();
        if let Some(t) = &self.tokens {
            t.take(tokens, now)?;
        }
        if let Some(r) = &self.requests {
            if let Err(not_until) = r.check() {
                if let Some(t) = &self.tokens {
                    t.adjust(-i64::try_from(tokens.min(t.capacity())).unwrap_or(0), now);
                }
                return Err(not_until.wait_time_from(DefaultClock::default().now()));
            }
        }
        Ok(())
    }

    /// Give back or charge what a take of `reserved` tokens did not match.
    pub fn settle_now(&self, reserved: u64, used: u64) {
        if let Some(t) = &self.tokens {
            t.adjust(delta(reserved.min(t.capacity()), used), Instant::now());
        }
    }
}

#[async_trait]
impl RequestBudget for LocalBudget {
    async fn take(&self, tokens: u64) -> Result<Counted, Refused> {
        self.take_now(tokens)
            .map(|()| Counted::Local)
            .map_err(Refused::Over)
    }

    async fn wait(&self, tokens: u64, limit: Duration) -> Option<Counted> {
        let until = crate::deadline::from_now(limit);
        loop {
            match self.take_now(tokens) {
                Ok(()) => return Some(Counted::Local),
                Err(wait) if crate::deadline::from_now(wait) <= until => {
                    tokio::time::sleep(wait).await
                }
                Err(_) => return None,
            }
        }
    }

    async fn settle(&self, _: Counted, reserved: u64, used: u64) {
        self.settle_now(reserved, used);
    }

    fn counts_tokens(&self) -> bool {
        self.tokens.is_some()
    }
}

/// A per-client limit of this process, keyed by a hash of the client key.
pub struct LocalClientLimit {
    requests: Option<DefaultKeyedRateLimiter<u64>>,
    tokens: Option<KeyedBuckets>,
    checks: AtomicU64,
}

impl LocalClientLimit {
    pub fn new(rpm: Option<u32>, burst: u32, tpm: Option<u32>) -> Self {
        LocalClientLimit {
            requests: rpm.map(|r| DefaultKeyedRateLimiter::keyed(quota(r, burst))),
            tokens: tpm.map(KeyedBuckets::per_minute),
            checks: AtomicU64::new(0),
        }
    }

    /// Count one request of `client`; `Err` holds how long until it may send again.
    pub fn check_now(&self, client: u64) -> Result<(), Duration> {
        let Some(limiter) = &self.requests else {
            return Ok(());
        };
        // Forget idle clients now and then, so the map stays as small as the active set.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            limiter.retain_recent();
        }
        limiter
            .check_key(&client)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Reserve `tokens` for `client`.
    pub fn reserve_now(&self, client: u64, tokens: u64) -> Result<(), Duration> {
        match &self.tokens {
            Some(t) => t.take(client, tokens, Instant::now()),
            None => Ok(()),
        }
    }

    pub fn settle_now(&self, client: u64, reserved: u64, used: u64) {
        if let Some(t) = &self.tokens {
            t.adjust(
                client,
                delta(reserved.min(t.capacity()), used),
                Instant::now(),
            );
        }
    }
}

#[async_trait]
impl ClientLimit for LocalClientLimit {
    async fn check(&self, client: u64) -> Result<Counted, Refused> {
        self.check_now(client)
            .map(|()| Counted::Local)
            .map_err(Refused::Over)
    }

    async fn reserve(&self, client: u64, tokens: u64) -> Result<Counted, Refused> {
        self.reserve_now(client, tokens)
            .map(|()| Counted::Local)
            .map_err(Refused::Over)
    }

    async fn settle(&self, client: u64, _: Counted, reserved: u64, used: u64) {
        self.settle_now(client, reserved, used);
    }

    fn counts_tokens(&self) -> bool {
        self.tokens.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_allows_burst_then_refuses_with_a_wait() {
        let b = LocalBudget::new(Some(60), 3, None);
        assert!((0..3).all(|_| b.take_now(0).is_ok()));
        let wait = b.take_now(0).unwrap_err();
        assert!(
            wait > Duration::from_millis(500) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_budget_refuses_what_does_not_fit_and_takes_settlements() {
        let b = LocalBudget::new(Some(600), 100, Some(1000));
        assert!(b.take_now(600).is_ok());
        assert!(b.take_now(600).is_err(), "the tokens do not fit");
        // The refused take cost no request: 99 more fit by the request count.
        b.settle_now(600, 100);
        assert!(b.take_now(900).is_ok(), "500 were given back");
        assert!(b.take_now(1).is_err());
    }

    #[test]
    fn client_limits_are_per_client() {
        let l = LocalClientLimit::new(Some(60), 2, None);
        assert!(l.check_now(1).is_ok() && l.check_now(1).is_ok());
        assert!(l.check_now(1).is_err());
        assert!(l.check_now(2).is_ok(), "another client is unaffected");
    }
}
