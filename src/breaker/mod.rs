//! Per-peer circuit breaker: takes a peer out of rotation when its own traffic says it is failing,
//! and lets it back in through a few trial requests.
//!
//! Active health checks probe every few seconds and only see `/health`; a model server can answer
//! `/health` while every inference fails. The breaker reacts to real traffic within one request.
//!
//! ```text
//!            trip: failures in a row, or failure rate                open time over, or
//!  CLOSED ───────────────────────────────────────────────▶ OPEN ───────────────────────────▶ HALF_OPEN
//!    ▲                                                      ▲        a health check passed       │
//!    │                                                      └─────────── a trial fails ──────────┤
//!    └──────────────────────────── success_threshold trial successes in a row ───────────────────┘
//! ```
//!
//! Each trip doubles the open time (from `open_for`, capped at `max_open_for`); the doubling
//! decays by one step per *settle period* spent CLOSED, where the settle period is
//! `max(max_open_for, window)`: long enough that a peer flapping at the longest ejection keeps its
//! penalty, and that a whole window of fresh evidence has been seen before it is forgiven.
//!
//! Choices the caller should know:
//! - The breaker only trips on a failure. `may_eject` (the cluster's `max_ejected_percent` rule)
//!   is asked at that moment, under this breaker's lock, so `true` is a promise that the breaker
//!   opens now; if it answers `false` the breaker stays CLOSED with its counters intact and asks
//!   again on the next failure.
//! - HALF_OPEN counts as ejected ([`Breaker::is_ejected`]): a trial failure re-opens without
//!   asking `may_eject`, so the cluster's share must already include it.
//! - Every state change starts a new *epoch*. An outcome recorded for an [`Admission`] taken in
//!   an earlier epoch (a long stream that began before the trip) counts only in the lifetime
//!   totals: trials decide HALF_OPEN, and pre-trip requests say nothing about the peer now.
//! - HALF_OPEN trial slots whose requests never report back (a lost [`Admission`], a hung
//!   request) are reclaimed once a settle period passes with all slots taken and no new trial.
//! - Disabling the breaker by reload resets it to a fresh CLOSED; other reloads keep state,
//!   counters and the end of an ejection in progress.
//!
//! Concurrency: picking a peer ([`Breaker::is_available`]) and admitting into CLOSED are a couple
//! of atomic loads, no lock. State, epoch and open deadline share one `AtomicU64`, so readers never see a torn
//! combination. Outcomes and transitions take a small mutex for bookkeeping only; nothing in this
//! module awaits.

use crate::config::BreakerConfig;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;
use tokio::time::Instant;

mod report;
mod settings;
#[cfg(test)]
mod tests;
mod transitions;
mod window;
mod word;

pub use report::BreakerSnapshot;
use settings::Settings;
use transitions::Inner;
use window::Window;
use word::Word;

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Traffic flows; outcomes are counted.
    Closed,
    /// A few trial requests decide whether the peer is back.
    HalfOpen,
    /// The peer is ejected until its open time is over.
    Open,
}

impl State {
    /// The name used in logs and the admin API: `CLOSED`, `HALF_OPEN` or `OPEN`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "CLOSED",
            State::HalfOpen => "HALF_OPEN",
            State::Open => "OPEN",
        }
    }

    /// The value of the breaker-state gauge: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> i64 {
        match self {
            State::Closed => 0,
            State::HalfOpen => 1,
            State::Open => 2,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The verdict on one admitted request, as the caller mapped it (4xx answers are successes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The peer answered (2xx-4xx, or whatever the caller does not count against it).
    Success,
    /// A connect failure, timeout, reset or 5xx, as selected by `failure_on`.
    Failure,
}

/// A state change caused by a call, for metrics and events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// No state change.
    None,
    /// CLOSED → OPEN: the breaker tripped.
    Opened,
    /// OPEN → HALF_OPEN.
    HalfOpened,
    /// HALF_OPEN → CLOSED (or any state → CLOSED when a reload disables the breaker).
    Closed,
    /// HALF_OPEN → OPEN: a trial failed; counts as a further trip.
    Reopened,
}

/// Permission to send one request to the peer. Pass it back to [`Breaker::record`] or
/// [`Breaker::release`]: a trial admission that is simply dropped holds its HALF_OPEN slot until
/// the breaker reclaims it (a settle period later).
#[derive(Debug)]
#[must_use = "pass the admission back to Breaker::record or Breaker::release"]
pub struct Admission {
    trial: bool,
    epoch: u32,
}

impl Admission {
    /// Whether this is a HALF_OPEN trial request.
    pub fn is_trial(&self) -> bool {
        self.trial
    }
}

/// The circuit breaker of one peer. `Send + Sync`; keep it in an `Arc` keyed by the peer's
/// identity so it survives reloads.
#[derive(Debug)]
pub struct Breaker {
    label: String,
    /// Clock origin: the state word stores the open deadline in ms since `base`.
    base: Instant,
    /// Wall-clock time at `base`, to show instants in the snapshot.
    base_wall: SystemTime,
    /// A packed [`Word`].
    word: AtomicU64,
    enabled: AtomicBool,
    /// Copy of `half_open_requests` for the lock-free [`Breaker::is_available`].
    half_open_limit: AtomicU32,
    /// Trial requests in flight in the current HALF_OPEN epoch. Changed under the lock.
    trials: AtomicU32,
    /// When taken trial slots count as lost (ms since `base`).
    trials_lost_ms: AtomicU64,
    successes: AtomicU64,
    failures: AtomicU64,
    trips: AtomicU64,
    /// ms since `base` plus one; 0 for never.
    last_failure_ms: AtomicU64,
    inner: Mutex<Inner>,
}

impl Breaker {
    /// A CLOSED breaker. `label` names the peer in logs, e.g. `"primary/10.0.0.11:8000"`.
    pub fn new(label: String, cfg: &BreakerConfig) -> Self {
        let base = Instant::now();
        let cfg_s = Settings::from_config(cfg);
        Breaker {
            label,
            base,
            base_wall: SystemTime::now(),
            word: AtomicU64::new(Word::new(State::Closed, 0, 0).0),
            enabled: AtomicBool::new(cfg.enabled),
            half_open_limit: AtomicU32::new(cfg_s.half_open_requests),
            trials: AtomicU32::new(0),
            trials_lost_ms: AtomicU64::new(0),
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            trips: AtomicU64::new(0),
            last_failure_ms: AtomicU64::new(0),
            inner: Mutex::new(Inner {
                current_open: cfg_s.open_for,
                cfg: cfg_s,
                window: Window::default(),
                consecutive_failures: 0,
                level: 0,
                calm_since: base,
                trial_successes: 0,
                held: false,
            }),
        }
    }

    /// The label given at construction.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Swap in reloaded settings, keeping state and counters. An ejection in progress keeps its
    /// end time. Disabling resets the breaker to a fresh CLOSED (it then has no opinion) and
    /// returns [`Transition::Closed`] if it was ejected.
    pub fn update_config(&self, cfg: &BreakerConfig) -> Transition {
        let mut inner = self.lock();
        inner.cfg = Settings::from_config(cfg);
        self.half_open_limit
            .store(inner.cfg.half_open_requests, Ordering::Relaxed);
        let was_enabled = self.enabled.swap(cfg.enabled, Ordering::Relaxed);
        if cfg.enabled || !was_enabled {
            return Transition::None;
        }
        let was = self.load().state();
        self.close(&mut inner, Instant::now());
        inner.level = 0;
        if was == State::Closed {
            return Transition::None;
        }
        log::info!(
            "breaker {}: CLOSED (breaker disabled by reload)",
            self.label
        );
        Transition::Closed
    }

    /// Would a request be admitted now? Lock-free and without side effects; for picking a peer.
    pub fn is_available(&self, now: Instant) -> bool {
        if !self.enabled.load(Ordering::Relaxed) {
            return true;
        }
        let w = self.load();
        match w.state() {
            State::Closed => true,
            // A fresh HALF_OPEN epoch starts with every slot free.
            State::Open => self.ms(now) >= w.until_ms(),
            State::HalfOpen => {
                self.trials.load(Ordering::Relaxed) < self.half_open_limit.load(Ordering::Relaxed)
                    || self.ms(now) >= self.trials_lost_ms.load(Ordering::Relaxed)
            }
        }
    }

    /// Admit a request. Moves OPEN → HALF_OPEN once the open time is over, and takes a trial slot
    /// in HALF_OPEN. `None` means the peer must not get this request.
    pub fn try_acquire(&self, now: Instant) -> Option<Admission> {
        let w = self.load();
        if w.state() == State::Closed || !self.enabled.load(Ordering::Relaxed) {
            return Some(Admission {
                trial: false,
                epoch: w.epoch(),
            });
        }
        if !self.is_available(now) {
            return None;
        }
        let mut inner = self.lock();
        let w = self.load();
        match w.state() {
            State::Closed => Some(Admission {
                trial: false,
                epoch: w.epoch(),
            }),
            State::Open if self.ms(now) < w.until_ms() => None,
            State::Open => {
                self.half_open(&mut inner, "open time over");
                Some(self.take_trial(&inner, now))
            }
            State::HalfOpen => {
                if self.trials.load(Ordering::Relaxed) >= inner.cfg.half_open_requests {
                    if self.ms(now) < self.trials_lost_ms.load(Ordering::Relaxed) {
                        return None;
                    }
                    log::warn!(
                        "breaker {}: trial requests gave no verdict in {}; starting new trials",
                        self.label,
                        humantime::format_duration(inner.cfg.settle_period())
                    );
                    self.half_open(&mut inner, "trial slots reclaimed");
                }
                Some(self.take_trial(&inner, now))
            }
        }
    }

    /// Record the verdict on an admitted request. `may_eject` is called only when this failure
    /// would trip a CLOSED breaker; it runs under this breaker's lock, so it may call the
    /// lock-free readers (`state`, `is_ejected`, `is_available`) of any breaker but not `record`,
    /// `snapshot` and the like on this one.
    pub fn record(
        &self,
        adm: Admission,
        outcome: Outcome,
        now: Instant,
        may_eject: impl FnOnce() -> bool,
    ) -> Transition {
        match outcome {
            Outcome::Success => {
                self.successes.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Failure => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                self.last_failure_ms
                    .store(self.ms(now).saturating_add(1), Ordering::Relaxed);
            }
        }
        if !self.enabled.load(Ordering::Relaxed) {
            return Transition::None;
        }
        let mut inner = self.lock();
        let w = self.load();
        if w.epoch() != adm.epoch {
            return Transition::None;
        }
        match (w.state(), outcome) {
            (State::Closed, Outcome::Success) => {
                let len = inner.cfg.bucket_len();
                inner.window.add(now, false, len);
                inner.consecutive_failures = 0;
                inner.held = false;
                Transition::None
            }
            (State::Closed, Outcome::Failure) => self.closed_failure(&mut inner, now, may_eject),
            (State::HalfOpen, outcome) => {
                self.give_back_trial();
                if outcome == Outcome::Failure {
                    self.open(&mut inner, now, &"a trial request failed");
                    return Transition::Reopened;
                }
                inner.trial_successes += 1;
                if inner.trial_successes < inner.cfg.success_threshold {
                    return Transition::None;
                }
                log::info!(
                    "breaker {}: CLOSED after {} successful trial requests",
                    self.label,
                    inner.trial_successes
                );
                self.close(&mut inner, now);
                Transition::Closed
            }
            // No admission is ever handed out in an OPEN epoch.
            (State::Open, _) => Transition::None,
        }
    }

    /// Give back an admission whose request ended without a verdict (the client went away):
    /// frees its trial slot.
    pub fn release(&self, adm: Admission) {
        if !adm.trial {
            return;
        }
        let _inner = self.lock();
        let w = self.load();
        if w.epoch() == adm.epoch && w.state() == State::HalfOpen {
            self.give_back_trial();
        }
    }

    /// An active health check passed: an OPEN breaker goes HALF_OPEN now instead of waiting out
    /// its open time. Never closes a breaker: only trial requests do. (`now` is unused; it is
    /// taken like everywhere else so callers need not special-case this one.)
    pub fn on_health_pass(&self, _now: Instant) -> Transition {
        if !self.enabled.load(Ordering::Relaxed) || self.load().state() != State::Open {
            return Transition::None;
        }
        let mut inner = self.lock();
        if self.load().state() != State::Open {
            return Transition::None;
        }
        self.half_open(&mut inner, "active health check passed");
        Transition::HalfOpened
    }

    /// The state as seen now: an OPEN breaker whose time is over reads HALF_OPEN; a disabled one
    /// reads CLOSED. Lock-free.
    pub fn state(&self, now: Instant) -> State {
        if !self.enabled.load(Ordering::Relaxed) {
            return State::Closed;
        }
        let w = self.load();
        match w.state() {
            State::Open if self.ms(now) >= w.until_ms() => State::HalfOpen,
            s => s,
        }
    }

    /// Whether the peer counts toward its cluster's ejected share: OPEN or HALF_OPEN. Lock-free.
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.state(now) != State::Closed
    }

    /// Trips since start, re-opens included.
    pub fn trips_total(&self) -> u64 {
        self.trips.load(Ordering::Relaxed)
    }
}
