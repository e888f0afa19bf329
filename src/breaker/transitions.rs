//! The breaker's transitions (trip, half-open, close), its trial slots and its clock: the
//! private machinery behind [`Breaker`]'s public calls. Everything here runs under the
//! breaker's lock, except the lock-free loads.

use super::settings::Settings;
use super::window::Window;
use super::word::Word;
use super::{Admission, Breaker, State, Transition};
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{MutexGuard, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// Bookkeeping that changes together; guarded by `Breaker::inner`.
#[derive(Debug)]
pub(super) struct Inner {
    pub(super) cfg: Settings,
    pub(super) window: Window,
    pub(super) consecutive_failures: u32,
    /// Trips that still double the open time.
    pub(super) level: u32,
    /// Start of the current healthy stretch; only meaningful while CLOSED.
    pub(super) calm_since: Instant,
    pub(super) trial_successes: u32,
    /// Length of the ejection that last opened the breaker.
    pub(super) current_open: Duration,
    /// A trip is being held back by `may_eject`; logged once per streak.
    pub(super) held: bool,
}

impl Breaker {
    pub(super) fn closed_failure(
        &self,
        inner: &mut Inner,
        now: Instant,
        may_eject: impl FnOnce() -> bool,
    ) -> Transition {
        let len = inner.cfg.bucket_len();
        inner.window.add(now, true, len);
        inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
        let reason = if inner.consecutive_failures >= inner.cfg.consecutive_failures {
            TripReason::InARow(inner.consecutive_failures)
        } else {
            let (total, failed) = inner.window.totals(now, inner.cfg.window);
            if total < u64::from(inner.cfg.min_requests)
                || (failed as f64 / total as f64) < inner.cfg.failure_rate
            {
                return Transition::None;
            }
            TripReason::Rate {
                failed,
                total,
                window: inner.cfg.window,
            }
        };
        (inner.level, inner.calm_since) = inner.decayed(now);
        if !may_eject() {
            if !inner.held {
                log::warn!(
                    "breaker {}: would open after {reason}, but the cluster's max_ejected_percent \
                     is reached; staying CLOSED",
                    self.label
                );
                inner.held = true;
            }
            // Failing enough to trip is not a healthy stretch.
            inner.calm_since = now;
            return Transition::None;
        }
        inner.held = false;
        self.open(inner, now, &reason);
        Transition::Opened
    }

    /// Trip (from CLOSED or HALF_OPEN): one more level, a longer open time, a new epoch.
    pub(super) fn open(&self, inner: &mut Inner, now: Instant, reason: &dyn fmt::Display) {
        inner.level = (inner.level + 1).min(inner.cfg.max_level());
        let open_for = inner.cfg.open_time(inner.level);
        inner.current_open = open_for;
        let until = now
            .saturating_duration_since(self.base)
            .saturating_add(open_for);
        let until_ms = u64::try_from(until.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
        self.publish(State::Open, until_ms);
        self.trials.store(0, Ordering::Relaxed);
        let trips = self.trips.fetch_add(1, Ordering::Relaxed) + 1;
        log::warn!(
            "breaker {}: OPEN for {} after {reason} (trip level {}, {trips} trips in total)",
            self.label,
            humantime::format_duration(open_for),
            inner.level
        );
    }

    /// Start a HALF_OPEN epoch with every trial slot free.
    pub(super) fn half_open(&self, inner: &mut Inner, why: &str) {
        self.publish(State::HalfOpen, 0);
        self.trials.store(0, Ordering::Relaxed);
        inner.trial_successes = 0;
        log::info!("breaker {}: HALF_OPEN ({why})", self.label);
    }

    /// Back to CLOSED with fresh counters; the trip level is kept and starts to decay.
    pub(super) fn close(&self, inner: &mut Inner, now: Instant) {
        self.publish(State::Closed, 0);
        self.trials.store(0, Ordering::Relaxed);
        inner.window = Window::default();
        inner.consecutive_failures = 0;
        inner.trial_successes = 0;
        inner.calm_since = now;
        inner.held = false;
    }

    /// Take a trial slot in the current HALF_OPEN epoch. Called under the lock.
    pub(super) fn take_trial(&self, inner: &Inner, now: Instant) -> Admission {
        self.trials.fetch_add(1, Ordering::Relaxed);
        // Every slot taken is at least this old once the latest one is.
        let lost = now
            .checked_add(inner.cfg.settle_period())
            .map_or(u64::MAX, |t| self.ms(t));
        self.trials_lost_ms.store(lost, Ordering::Relaxed);
        Admission {
            trial: true,
            epoch: self.load().epoch(),
        }
    }

    pub(super) fn give_back_trial(&self) {
        let n = self.trials.load(Ordering::Relaxed);
        self.trials.store(n.saturating_sub(1), Ordering::Relaxed);
    }

    /// Store a new state with the next epoch. Called under the lock, which orders writers.
    pub(super) fn publish(&self, state: State, until_ms: u64) {
        let epoch = self.load().epoch().wrapping_add(1);
        self.word
            .store(Word::new(state, epoch, until_ms).0, Ordering::Release);
    }

    pub(super) fn load(&self) -> Word {
        Word(self.word.load(Ordering::Acquire))
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing here panics while holding the lock except a caller's `may_eject`; the
        // bookkeeping is consistent between statements, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Milliseconds since `base`, rounded down.
    pub(super) fn ms(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX)
    }

    /// A time in ms since `base` as RFC 3339 UTC.
    pub(super) fn wall(&self, ms: u64) -> Option<String> {
        let t = self.base_wall.checked_add(Duration::from_millis(ms))?;
        Some(humantime::format_rfc3339_seconds(t).to_string())
    }
}

impl Inner {
    /// The trip level and healthy-stretch start after decay up to `now`. Only valid while CLOSED.
    pub(super) fn decayed(&self, now: Instant) -> (u32, Instant) {
        let period = self.cfg.settle_period();
        let calm = now.saturating_duration_since(self.calm_since);
        if self.level == 0 || period.is_zero() || calm < period {
            return (self.level, self.calm_since);
        }
        let steps = u32::try_from(calm.as_nanos() / period.as_nanos()).unwrap_or(u32::MAX);
        let level = self.level.saturating_sub(steps);
        let since = period
            .checked_mul(steps)
            .and_then(|d| self.calm_since.checked_add(d))
            .unwrap_or(now);
        (level, since)
    }
}

/// Why a breaker tripped, for the log.
pub(super) enum TripReason {
    InARow(u32),
    Rate {
        failed: u64,
        total: u64,
        window: Duration,
    },
}

impl fmt::Display for TripReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TripReason::InARow(n) => write!(f, "{n} failures in a row"),
            TripReason::Rate {
                failed,
                total,
                window,
            } => write!(
                f,
                "{failed} of {total} requests failed in the last {}",
                humantime::format_duration(*window)
            ),
        }
    }
}
