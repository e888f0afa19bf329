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

#[tokio::test(start_paused = true)]
async fn half_open_admits_at_most_half_open_requests() {
    let b = breaker(&BreakerConfig {
        half_open_requests: 2,
        ..cfg()
    });
    trip(&b);
    wait_open(&b, 10 * S).await;
    let now = Instant::now();
    let first = b.try_acquire(now).expect("first trial");
    let second = b.try_acquire(now).expect("second trial");
    assert!(first.is_trial() && second.is_trial());
    assert!(!b.is_available(now));
    assert!(b.try_acquire(now).is_none());
    // A trial that ends without a verdict frees its slot.
    b.release(first);
    assert!(b.is_available(now));
    let third = b.try_acquire(now).expect("slot freed by release");
    assert!(b.try_acquire(now).is_none());
    assert_eq!(
        b.record(second, Outcome::Success, now, allow),
        Transition::None
    );
    assert_eq!(
        b.record(third, Outcome::Success, now, allow),
        Transition::Closed
    );
}

#[tokio::test(start_paused = true)]
async fn success_threshold_closes_and_resets_counters() {
    let b = breaker(&cfg());
    trip(&b);
    wait_open(&b, 10 * S).await;
    assert_eq!(ok(&b), Transition::None);
    assert_eq!(b.state(Instant::now()), State::HalfOpen);
    assert_eq!(ok(&b), Transition::Closed);
    let now = Instant::now();
    assert_eq!(b.state(now), State::Closed);
    assert!(!b.is_ejected(now));
    let adm = b.try_acquire(now).expect("closed admits");
    assert!(!adm.is_trial());
    b.release(adm);
    // The failures that tripped it are forgotten: it takes three new ones.
    assert_eq!(b.snapshot(now).consecutive_failures, 0);
    assert_eq!(fail(&b), Transition::None);
    assert_eq!(fail(&b), Transition::None);
    assert_eq!(fail(&b), Transition::Opened);
}

#[tokio::test(start_paused = true)]
async fn closing_clears_the_window() {
    // A window longer than the ejection, so only the reset can forget the failures.
    let b = breaker(&BreakerConfig {
        window: 60 * S,
        ..rate_only()
    });
    for _ in 0..9 {
        ok(&b);
    }
    for _ in 0..8 {
        assert_eq!(fail(&b), Transition::None);
    }
    assert_eq!(fail(&b), Transition::Opened); // 9 of 18
    wait_open(&b, 10 * S).await;
    close(&b);
    // Were the old failures kept, this would make 10 of 19.
    assert_eq!(fail(&b), Transition::None);
    assert_eq!(b.state(Instant::now()), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn trial_failure_reopens_for_longer() {
    let b = breaker(&cfg());
    trip(&b);
    wait_open(&b, 10 * S).await;
    // One success is not enough; the next trial fails.
    assert_eq!(ok(&b), Transition::None);
    assert_eq!(fail(&b), Transition::Reopened);
    assert_eq!(b.state(Instant::now()), State::Open);
    assert_eq!(b.trips_total(), 2);
    wait_open(&b, 20 * S).await;
    // The earlier trial success does not carry over into the new HALF_OPEN.
    assert_eq!(ok(&b), Transition::None);
    assert_eq!(ok(&b), Transition::Closed);
}

#[tokio::test(start_paused = true)]
async fn health_pass_half_opens_but_never_closes() {
    let b = breaker(&cfg());
    assert_eq!(b.on_health_pass(Instant::now()), Transition::None);
    assert_eq!(b.state(Instant::now()), State::Closed);
    trip(&b);
    advance(S).await;
    assert_eq!(b.on_health_pass(Instant::now()), Transition::HalfOpened);
    assert_eq!(b.state(Instant::now()), State::HalfOpen);
    assert!(b.is_available(Instant::now()));
    for _ in 0..5 {
        assert_eq!(b.on_health_pass(Instant::now()), Transition::None);
    }
    assert_eq!(b.state(Instant::now()), State::HalfOpen);
    assert!(b.is_ejected(Instant::now()));
    close(&b);
}

#[tokio::test(start_paused = true)]
async fn may_eject_false_keeps_it_closed_and_is_asked_only_at_a_trip() {
    let b = breaker(&cfg());
    let asked = Cell::new(0);
    let refuse = || {
        asked.set(asked.get() + 1);
        false
    };
    for _ in 0..2 {
        let now = Instant::now();
        let adm = b.try_acquire(now).expect("admitted");
        assert_eq!(
            b.record(adm, Outcome::Failure, now, refuse),
            Transition::None
        );
    }
    assert_eq!(asked.get(), 0, "asked before a trip was due");
    let now = Instant::now();
    let adm = b.try_acquire(now).expect("admitted");
    assert_eq!(
        b.record(adm, Outcome::Failure, now, refuse),
        Transition::None
    );
    assert_eq!(asked.get(), 1);
    assert_eq!(b.state(now), State::Closed);
    assert!(b.is_available(now));
    assert_eq!(b.trips_total(), 0);
    // Counters keep going: the next failure trips once the cluster has room.
    assert_eq!(b.snapshot(now).consecutive_failures, 3);
    assert_eq!(fail(&b), Transition::Opened);
}

#[tokio::test(start_paused = true)]
async fn disabled_always_admits_and_never_trips() {
    let b = breaker(&BreakerConfig {
        enabled: false,
        ..cfg()
    });
    for _ in 0..50 {
        assert_eq!(fail(&b), Transition::None);
    }
    let now = Instant::now();
    assert_eq!(b.state(now), State::Closed);
    assert!(b.is_available(now));
    assert_eq!(b.trips_total(), 0);
    assert_eq!(b.snapshot(now).failure_count, 50);
}

#[tokio::test(start_paused = true)]
async fn disabling_by_reload_closes_an_open_breaker() {
    let b = breaker(&cfg());
    trip(&b);
    let off = BreakerConfig {
        enabled: false,
        ..cfg()
    };
    assert_eq!(b.update_config(&off), Transition::Closed);
    assert!(b.is_available(Instant::now()));
    assert_eq!(b.update_config(&cfg()), Transition::None);
    assert_eq!(b.state(Instant::now()), State::Closed);
    assert_eq!(b.snapshot(Instant::now()).trip_level, 0);
}

#[tokio::test(start_paused = true)]
async fn update_config_keeps_state_and_counters() {
    let b = breaker(&BreakerConfig {
        consecutive_failures: 5,
        ..cfg()
    });
    fail(&b);
    fail(&b);
    // Reload lowers the threshold: the two failures already seen count.
    assert_eq!(b.update_config(&cfg()), Transition::None);
    assert_eq!(fail(&b), Transition::Opened);

    // Reload while OPEN: still OPEN until the original end; new settings apply after.
    let shorter = BreakerConfig {
        open_for: S,
        max_open_for: S,
        success_threshold: 1,
        ..cfg()
    };
    assert_eq!(b.update_config(&shorter), Transition::None);
    advance(5 * S).await;
    assert_eq!(b.state(Instant::now()), State::Open);
    advance(5 * S).await;
    assert_eq!(ok(&b), Transition::Closed);
}

#[tokio::test(start_paused = true)]
async fn outcomes_of_requests_admitted_before_a_state_change_are_ignored() {
    let b = breaker(&cfg());
    let now = Instant::now();
    let old = b.try_acquire(now).expect("admitted");
    trip(&b);
    wait_open(&b, 10 * S).await;
    let trial = b.try_acquire(Instant::now()).expect("trial");
    // The long request from before the trip fails now: not a trial, no re-open.
    assert_eq!(
        b.record(old, Outcome::Failure, Instant::now(), allow),
        Transition::None
    );
    assert_eq!(b.state(Instant::now()), State::HalfOpen);
    assert_eq!(b.snapshot(Instant::now()).failure_count, 4);
    assert_eq!(
        b.record(trial, Outcome::Success, Instant::now(), allow),
        Transition::None
    );
}

#[tokio::test(start_paused = true)]
async fn silent_trial_slots_are_reclaimed_after_a_settle_period() {
    let b = breaker(&cfg());
    trip(&b);
    wait_open(&b, 10 * S).await;
    let lost = b.try_acquire(Instant::now()).expect("trial");
    advance(40 * S - MS).await;
    assert!(!b.is_available(Instant::now()));
    assert!(b.try_acquire(Instant::now()).is_none());
    advance(MS).await;
    assert!(b.is_available(Instant::now()));
    let fresh = b.try_acquire(Instant::now()).expect("reclaimed slot");
    // The lost trial's late verdict belongs to an old epoch.
    assert_eq!(
        b.record(lost, Outcome::Failure, Instant::now(), allow),
        Transition::None
    );
    assert_eq!(
        b.record(fresh, Outcome::Success, Instant::now(), allow),
        Transition::None
    );
    assert_eq!(b.state(Instant::now()), State::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn snapshot_reports_counts_and_times() {
    let b = breaker(&cfg());
    let snap = b.snapshot(Instant::now());
    assert_eq!(snap.state, "CLOSED");
    assert_eq!(snap.last_failure_time, None);
    assert_eq!(snap.opened_until, None);
    assert_eq!(snap.open_for_ms, 10_000);

    ok(&b);
    trip(&b);
    let snap = b.snapshot(Instant::now());
    assert_eq!(snap.state, "OPEN");
    assert_eq!((snap.success_count, snap.failure_count), (1, 3));
    assert_eq!((snap.consecutive_failures, snap.trips), (3, 1));
    let failed = snap.last_failure_time.clone().expect("a failure time");
    let until = snap.opened_until.clone().expect("an end time");
    for t in [&failed, &until] {
        assert_eq!(t.len(), "2026-01-28T09:45:22Z".len(), "{t}");
        assert!(t.ends_with('Z'), "{t}");
    }
    let secs = |t: &str| humantime::parse_rfc3339(t).expect("RFC 3339");
    let gap = secs(&until)
        .duration_since(secs(&failed))
        .expect("until after failure");
    assert!((9..=11).contains(&gap.as_secs()), "{gap:?}");

    let json = serde_json::to_value(&snap).expect("serialises");
    assert_eq!(json["state"], "OPEN");
    assert_eq!(json["open_for_ms"], 10_000);

    advance(10 * S).await;
    let snap = b.snapshot(Instant::now());
    assert_eq!(snap.state, "HALF_OPEN");
    assert_eq!(snap.opened_until, None);
}

#[test]
fn word_round_trips() {
    for (state, epoch, until) in [
        (State::Closed, 0, 0),
        (State::HalfOpen, 17, 0),
        (State::Open, Word::EPOCH_MASK as u32, 123_456_789),
        (State::Open, 3, u64::MAX),
    ] {
        let w = Word::new(state, epoch, until);
        assert_eq!(w.state(), state);
        assert_eq!(w.epoch(), epoch);
        assert_eq!(w.until_ms(), until.min(Word::UNTIL_MAX));
    }
    // The epoch wraps without touching the state bits.
    let w = Word::new(State::HalfOpen, Word::EPOCH_MASK as u32 + 1, 5);
    assert_eq!(
        (w.state(), w.epoch(), w.until_ms()),
        (State::HalfOpen, 0, 5)
    );
}
