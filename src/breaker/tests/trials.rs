//! Half-open trials, disabling and reloading, and the breaker's snapshot.

use super::*;

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
