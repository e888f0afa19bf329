//! The sliding window behind the failure-rate trip: counts of the last `window`, kept in a few
//! buckets so that old outcomes fall off in steps without storing each one.

use std::time::Duration;
use tokio::time::Instant;

/// Buckets of the window; each covers a tenth of it.
pub(super) const BUCKETS: usize = 10;

/// Outcomes of the last `window`, in [`BUCKETS`] buckets of a tenth of it each: an outcome is
/// forgotten between 0.9 and 1 window after it was recorded.
#[derive(Debug, Default)]
pub(super) struct Window {
    buckets: [Option<Bucket>; BUCKETS],
    head: usize,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    start: Instant,
    total: u32,
    failed: u32,
}

impl Window {
    /// Count one outcome at `now`, opening a new bucket of length `len` when the newest is over.
    pub(super) fn add(&mut self, now: Instant, failed: bool, len: Duration) {
        let fits = matches!(self.buckets[self.head],
            Some(b) if b.start.checked_add(len).is_some_and(|end| now < end));
        if !fits {
            self.head = (self.head + 1) % BUCKETS;
            self.buckets[self.head] = Some(Bucket {
                start: now,
                total: 0,
                failed: 0,
            });
        }
        if let Some(b) = &mut self.buckets[self.head] {
            b.total = b.total.saturating_add(1);
            b.failed = b.failed.saturating_add(u32::from(failed));
        }
    }

    /// Requests and failures in buckets that started within the last `window`.
    pub(super) fn totals(&self, now: Instant, window: Duration) -> (u64, u64) {
        let cutoff = now.checked_sub(window);
        self.buckets
            .iter()
            .flatten()
            .filter(|b| cutoff.is_none_or(|c| b.start > c))
            .fold((0, 0), |(t, f), b| {
                (t + u64::from(b.total), f + u64::from(b.failed))
            })
    }
}
