//! The breaker's settings as it uses them: validated limits enforced again, and the arithmetic of
//! open times, trip levels and the settle period in one place.

use super::window::BUCKETS;
use crate::config::BreakerConfig;
use std::time::Duration;

/// The breaker settings, with the limits that validation guarantees enforced again so that a
/// hand-built config cannot divide by zero or wedge the breaker.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub(super) consecutive_failures: u32,
    pub(super) failure_rate: f64,
    pub(super) min_requests: u32,
    pub(super) window: Duration,
    pub(super) open_for: Duration,
    pub(super) max_open_for: Duration,
    pub(super) half_open_requests: u32,
    pub(super) success_threshold: u32,
}

impl Settings {
    pub(super) fn from_config(c: &BreakerConfig) -> Self {
        Settings {
            consecutive_failures: c.consecutive_failures.max(1),
            failure_rate: c.failure_rate,
            min_requests: c.min_requests.max(1),
            window: c.window,
            open_for: c.open_for,
            max_open_for: c.max_open_for.max(c.open_for),
            half_open_requests: c.half_open_requests.max(1),
            success_threshold: c.success_threshold.max(1),
        }
    }

    pub(super) fn bucket_len(&self) -> Duration {
        self.window / BUCKETS as u32
    }

    /// How long CLOSED forgives one trip, and how long taken trial slots may stay silent.
    pub(super) fn settle_period(&self) -> Duration {
        self.max_open_for.max(self.window)
    }

    /// The open time of a trip at `level` (1 for the first): doubled per level, capped.
    pub(super) fn open_time(&self, level: u32) -> Duration {
        let doublings = level.saturating_sub(1).min(31);
        self.open_for
            .saturating_mul(1 << doublings)
            .min(self.max_open_for)
    }

    /// The first level whose open time is the cap; levels beyond would only slow the decay.
    pub(super) fn max_level(&self) -> u32 {
        (1..32)
            .find(|&l| self.open_time(l) >= self.max_open_for)
            .unwrap_or(32)
    }
}
