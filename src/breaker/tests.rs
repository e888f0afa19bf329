use super::*;
use crate::config::FailureOn;
use std::cell::Cell;
use std::time::Duration;
use tokio::time::advance;

const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

/// Trips on 3 in a row, or on half of at least 10 requests in 10s; opens for 10s, 20s, 40s (cap);
/// one trial at a time, two successes close. Settle period: max(40s, 10s) = 40s.
fn cfg() -> BreakerConfig {
    BreakerConfig {
        enabled: true,
        consecutive_failures: 3,
        failure_rate: 0.5,
        min_requests: 10,
        window: 10 * S,
        open_for: 10 * S,
        max_open_for: 40 * S,
        half_open_requests: 1,
        success_threshold: 2,
        max_ejected_percent: 50,
        failure_on: FailureOn::ALL,
    }
}

/// Only the failure rate can trip.
fn rate_only() -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: 1000,
        ..cfg()
    }
}

fn breaker(c: &BreakerConfig) -> Breaker {
    Breaker::new("primary/10.0.0.11:8000".into(), c)
}

fn allow() -> bool {
    true
}

/// Send one request and record `o`; panics if it was not admitted.
fn send(b: &Breaker, o: Outcome) -> Transition {
    let now = Instant::now();
    let adm = b.try_acquire(now).expect("request admitted");
    b.record(adm, o, now, allow)
}

fn ok(b: &Breaker) -> Transition {
    send(b, Outcome::Success)
}

fn fail(b: &Breaker) -> Transition {
    send(b, Outcome::Failure)
}

/// Trip a CLOSED breaker with failures in a row.
fn trip(b: &Breaker) {
    let mut last = Transition::None;
    for _ in 0..3 {
        last = fail(b);
    }
    assert_eq!(last, Transition::Opened);
}

/// Wait out the current open time exactly, checking it is not over a millisecond earlier.
async fn wait_open(b: &Breaker, expected: Duration) {
    assert_eq!(
        b.snapshot(Instant::now()).open_for_ms,
        expected.as_millis() as u64
    );
    advance(expected - MS).await;
    assert_eq!(b.state(Instant::now()), State::Open);
    assert!(!b.is_available(Instant::now()));
    assert!(b.try_acquire(Instant::now()).is_none());
    advance(MS).await;
    assert_eq!(b.state(Instant::now()), State::HalfOpen);
    assert!(b.is_available(Instant::now()));
}

/// From OPEN (time over) or HALF_OPEN: two trial successes close the breaker.
fn close(b: &Breaker) {
    assert_eq!(ok(b), Transition::None);
    assert_eq!(ok(b), Transition::Closed);
}

#[test]
fn breaker_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Breaker>();
}

#[test]
fn state_names_and_gauge() {
    assert_eq!(State::Closed.as_str(), "CLOSED");
    assert_eq!(State::HalfOpen.as_str(), "HALF_OPEN");
    assert_eq!(State::Open.as_str(), "OPEN");
    assert_eq!(
        [State::Closed, State::HalfOpen, State::Open].map(State::gauge),
        [0, 1, 2]
    );
}

#[tokio::test(start_paused = true)]
async fn trips_after_consecutive_failures() {
    let b = breaker(&cfg());
    fail(&b);
    fail(&b);
    // A success breaks the run.
    ok(&b);
    assert_eq!(fail(&b), Transition::None);
    assert_eq!(fail(&b), Transition::None);
    assert_eq!(b.state(Instant::now()), State::Closed);
    assert_eq!(fail(&b), Transition::Opened);
    let now = Instant::now();
    assert_eq!(b.state(now), State::Open);
    assert!(b.is_ejected(now));
    assert!(!b.is_available(now));
    assert!(b.try_acquire(now).is_none());
    assert_eq!(b.trips_total(), 1);
}

#[tokio::test(start_paused = true)]
async fn failure_rate_trips_only_from_min_requests() {
    let b = breaker(&rate_only());
    // Half the requests fail, but only 8 were seen: not enough to judge.
    for _ in 0..4 {
        assert_eq!(ok(&b), Transition::None);
        assert_eq!(fail(&b), Transition::None);
    }
    assert_eq!(ok(&b), Transition::None);
    assert_eq!(b.state(Instant::now()), State::Closed);
    // The 10th request, a failure: 5 of 10.
    assert_eq!(fail(&b), Transition::Opened);
    assert_eq!(b.state(Instant::now()), State::Open);
}

#[tokio::test(start_paused = true)]
async fn failure_rate_below_threshold_does_not_trip() {
    let b = breaker(&rate_only());
    for _ in 0..20 {
        ok(&b);
        ok(&b);
        assert_eq!(fail(&b), Transition::None);
    }
    assert_eq!(b.state(Instant::now()), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn window_forgets_failures_after_window() {
    for (wait, trips) in [(10 * S, false), (5 * S, true)] {
        let b = breaker(&rate_only());
        for _ in 0..9 {
            fail(&b);
        }
        advance(wait).await;
        for _ in 0..9 {
            ok(&b);
        }
        // Remembered: 10 of 19 failed. Forgotten: 1 of 10.
        let t = fail(&b);
        assert_eq!(t == Transition::Opened, trips, "after {wait:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn open_time_doubles_per_trip_up_to_the_cap() {
    let b = breaker(&cfg());
    trip(&b);
    for expected in [10, 20, 40, 40] {
        wait_open(&b, expected * S).await;
        let now = Instant::now();
        let trial = b.try_acquire(now).expect("trial admitted");
        assert!(trial.is_trial());
        assert_eq!(
            b.record(trial, Outcome::Failure, now, allow),
            Transition::Reopened
        );
    }
    assert_eq!(b.trips_total(), 5);
}

#[tokio::test(start_paused = true)]
async fn trip_level_decays_after_healthy_periods() {
    let b = breaker(&cfg());
    // Level 2: tripped, then a trial failed.
    trip(&b);
    wait_open(&b, 10 * S).await;
    assert_eq!(fail(&b), Transition::Reopened);
    wait_open(&b, 20 * S).await;
    close(&b);
    assert_eq!(b.snapshot(Instant::now()).trip_level, 2);

    // Not yet a whole settle period: the next trip would still be level 3.
    advance(40 * S - MS).await;
    let snap = b.snapshot(Instant::now());
    assert_eq!((snap.trip_level, snap.open_for_ms), (2, 40_000));
    advance(MS).await;
    let snap = b.snapshot(Instant::now());
    assert_eq!((snap.trip_level, snap.open_for_ms), (1, 20_000));

    // A real trip now gets level 2: 20s.
    trip(&b);
    wait_open(&b, 20 * S).await;
    close(&b);

    // Two settle periods forgive both trips.
    advance(80 * S).await;
    assert_eq!(b.snapshot(Instant::now()).trip_level, 0);
    trip(&b);
    wait_open(&b, 10 * S).await;
}

#[tokio::test(start_paused = true)]
async fn decay_does_not_run_while_ejected() {
    let b = breaker(&cfg());
    trip(&b);
    // Far longer than a settle period, but OPEN then HALF_OPEN, never CLOSED.
    advance(200 * S).await;
    assert_eq!(fail(&b), Transition::Reopened);
    assert_eq!(b.snapshot(Instant::now()).open_for_ms, 20_000);
}

mod trials;
