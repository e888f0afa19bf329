//! The retry budget of a route: retries in flight may be at most a share of the route's requests
//! in the upstream stage, with a floor (Envoy's `retry_budget` with `min_retry_concurrency`).
//! Kept per route name in the registry, so a reload does not reset it.

use std::sync::atomic::{AtomicU64, Ordering};

/// Retries may always run at least this many at once.
const MIN_RETRY_CONCURRENCY: f64 = 3.0;

/// Requests of one route in the upstream stage, and retries among them.
#[derive(Debug, Default)]
pub struct RetryBudget {
    active: AtomicU64,
    active_retries: AtomicU64,
}

impl RetryBudget {
    /// Count a request in the upstream stage until the guard drops.
    pub fn start(&self) -> UpstreamStage<'_> {
        self.active.fetch_add(1, Ordering::Relaxed);
        UpstreamStage(self)
    }

    /// A retry slot, if retries in flight stay within `ratio` of the active requests (at least
    /// [`MIN_RETRY_CONCURRENCY`] at once).
    pub fn take_retry(&self, ratio: f64) -> Option<RetrySlot<'_>> {
        let active = self.active.load(Ordering::Relaxed) as f64;
        let allowed = (active * ratio).max(MIN_RETRY_CONCURRENCY) as u64;
        let prev = self.active_retries.fetch_add(1, Ordering::Relaxed);
        if prev >= allowed {
            self.active_retries.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(RetrySlot(self))
    }
}

/// One request in the upstream stage, counted until dropped.
pub struct UpstreamStage<'a>(&'a RetryBudget);

impl Drop for UpstreamStage<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A retry in flight, counted against the budget until dropped.
pub struct RetrySlot<'a>(&'a RetryBudget);

impl Drop for RetrySlot<'_> {
    fn drop(&mut self) {
        self.0.active_retries.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_least_three_then_a_share_of_the_active() {
        let b = RetryBudget::default();
        let _stage: Vec<_> = (0..5).map(|_| b.start()).collect();
        let slots: Vec<_> = (0..3).filter_map(|_| b.take_retry(0.2)).collect();
        assert_eq!(slots.len(), 3);
        assert!(b.take_retry(0.2).is_none());
        drop(slots);
        let _more: Vec<_> = (0..40).map(|_| b.start()).collect();
        // 45 active at 0.2: 9 retries at once.
        let slots: Vec<_> = (0..20).filter_map(|_| b.take_retry(0.2)).collect();
        assert_eq!(slots.len(), 9);
    }
}
