//! The retry budget of a route, time-windowed as Finagle's and linkerd's are: over any `window`,
//! retries may add `ratio` of the requests the route saw, plus `min_per_second` always (a reserve
//! of `min_per_second × window`). A burst of failures that all want a retry at the same instant
//! (tries to one hanging peer timing out in the same tick) is covered by the reserve and by the
//! requests of the whole window, not refused because few retries may run at once; a peer that
//! fails everything still cannot make the route send much more than `1 + ratio` times its load.
//!
//! Kept per route name in the registry, so a reload does not reset it. Counting is lock-free:
//! two rings of per-slice counters.

use crate::config::BudgetConfig;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Slices of a window: the window slides by a tenth of itself.
const SLICES: usize = 10;

/// Bits of a slot that hold its slice's count; the rest hold the slice's number.
const COUNT_BITS: u32 = 24;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// A count over the last `SLICES` slices of time.
#[derive(Debug)]
struct Windowed {
    /// Per slice: the slice's number in the high bits, its count (saturating) in the low ones.
    slots: [AtomicU64; SLICES],
}

impl Windowed {
    fn new() -> Self {
        Windowed {
            slots: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn add(&self, slice: u64) {
        let slot = &self.slots[(slice % SLICES as u64) as usize];
        let mut cur = slot.load(Ordering::Relaxed);
        loop {
            let next = if cur >> COUNT_BITS == slice {
                (slice << COUNT_BITS) | ((cur & COUNT_MASK) + 1).min(COUNT_MASK)
            } else {
                (slice << COUNT_BITS) | 1
            };
            match slot.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(seen) => cur = seen,
            }
        }
    }

    /// The count over the window that ends with `slice`.
    fn sum(&self, slice: u64) -> u64 {
        self.slots
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .filter(|v| {
                slice
                    .checked_sub(v >> COUNT_BITS)
                    .is_some_and(|age| age < SLICES as u64)
            })
            .map(|v| v & COUNT_MASK)
            .sum()
    }
}

/// Requests of one route, and retries among them, over a sliding window.
#[derive(Debug)]
pub struct RetryBudget {
    epoch: Instant,
    window: Duration,
    slice_ms: u64,
    requests: Windowed,
    retries: Windowed,
}

impl RetryBudget {
    /// A budget counting over `window` (at least 10ms).
    pub fn new(window: Duration) -> Self {
        let window = window.max(Duration::from_millis(10));
        RetryBudget {
            epoch: Instant::now(),
            window,
            slice_ms: (window.as_millis() as u64 / SLICES as u64).max(1),
            requests: Windowed::new(),
            retries: Windowed::new(),
        }
    }

    /// The window it counts over.
    pub fn window(&self) -> Duration {
        self.window
    }

    fn slice(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64 / self.slice_ms
    }

    /// Count one request of the route (each request once, whatever its tries).
    pub fn request(&self) {
        self.requests.add(self.slice(Instant::now()));
    }

    /// May one more retry start now under `cfg`? If so it is counted.
    pub fn try_retry(&self, cfg: &BudgetConfig) -> bool {
        let slice = self.slice(Instant::now());
        let reserve = f64::from(cfg.min_per_second) * self.window.as_secs_f64();
        let allowed = reserve + cfg.ratio * self.requests.sum(slice) as f64;
        if self.retries.sum(slice) as f64 + 1.0 > allowed {
            return false;
        }
        self.retries.add(slice);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(ratio: f64, min_per_second: u32) -> BudgetConfig {
        BudgetConfig {
            ratio,
            window: Duration::from_secs(10),
            min_per_second,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_share_of_the_requests_in_the_window() {
        let b = RetryBudget::new(Duration::from_secs(10));
        for _ in 0..50 {
            b.request();
        }
        let c = cfg(0.2, 0);
        assert_eq!((0..20).filter(|_| b.try_retry(&c)).count(), 10);
        // The window slides: the requests and retries of 11 s ago no longer count.
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!b.try_retry(&c), "no requests in the window");
        for _ in 0..10 {
            b.request();
        }
        assert_eq!((0..5).filter(|_| b.try_retry(&c)).count(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_covered_by_the_reserve() {
        let b = RetryBudget::new(Duration::from_secs(10));
        for _ in 0..64 {
            b.request();
        }
        // 64 tries timing out at once: 10/s over 10 s is a reserve of 100, plus 20% of 64.
        let c = cfg(0.2, 10);
        assert_eq!((0..200).filter(|_| b.try_retry(&c)).count(), 112);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!b.try_retry(&c), "still spent half a window later");
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(b.try_retry(&c), "the reserve is back a window later");
    }

    #[test]
    fn a_slot_reused_by_a_later_slice_forgets_the_old_count() {
        let w = Windowed::new();
        w.add(3);
        w.add(3);
        w.add(4);
        assert_eq!(w.sum(4), 3);
        w.add(13);
        assert_eq!(
            w.sum(13),
            2,
            "slice 3 fell out of the window; 4 and 13 are in it"
        );
        assert_eq!(w.sum(30), 0);
    }
}
