//! A breaker's state and counters as the admin API shows them.

use super::{Breaker, State};
use serde::Serialize;
use std::sync::atomic::Ordering;
use tokio::time::Instant;

/// A breaker's state for the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BreakerSnapshot {
    /// `CLOSED`, `HALF_OPEN` or `OPEN`.
    pub state: &'static str,
    /// Failures recorded since start (all epochs, also while disabled).
    pub failure_count: u64,
    /// Successes recorded since start.
    pub success_count: u64,
    /// Failures in a row while CLOSED; kept while ejected, reset when the breaker closes.
    pub consecutive_failures: u32,
    /// RFC 3339 UTC, to the second.
    pub last_failure_time: Option<String>,
    /// When OPEN: when the ejection ends (RFC 3339 UTC).
    pub opened_until: Option<String>,
    /// When OPEN or HALF_OPEN: the length of the current ejection. When CLOSED: the length the
    /// next trip would get.
    pub open_for_ms: u64,
    /// Trips since start, re-opens included.
    pub trips: u64,
    /// Trips that still double the open time (decays by one per settle period CLOSED).
    pub trip_level: u32,
}

impl Breaker {
    /// The breaker's state and counters for the admin API.
    pub fn snapshot(&self, now: Instant) -> BreakerSnapshot {
        let inner = self.lock();
        let w = self.load();
        let state = self.state(now);
        let (level, _) = inner.decayed(now);
        let (open_for, level) = match state {
            State::Closed => (inner.cfg.open_time(level + 1), level),
            _ => (inner.current_open, inner.level),
        };
        let last = self.last_failure_ms.load(Ordering::Relaxed);
        BreakerSnapshot {
            state: state.as_str(),
            failure_count: self.failures.load(Ordering::Relaxed),
            success_count: self.successes.load(Ordering::Relaxed),
            consecutive_failures: inner.consecutive_failures,
            last_failure_time: (last > 0).then(|| self.wall(last - 1)).flatten(),
            opened_until: (state == State::Open)
                .then(|| self.wall(w.until_ms()))
                .flatten(),
            open_for_ms: u64::try_from(open_for.as_millis()).unwrap_or(u64::MAX),
            trips: self.trips_total(),
            trip_level: level,
        }
    }
}
