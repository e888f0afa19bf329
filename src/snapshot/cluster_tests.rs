//! A cluster's breakers together: `max_ejected_percent` (drained peers aside, peers tripping at
//! once) and slow start after a recovery.

use super::*;
use crate::snapshot::Snapshot;
use std::time::Duration;

/// A snapshot of one cluster `c` with peers of these weights and `breaker` settings.
fn snapshot(weights: &[u32], breaker: &str, extra: &str) -> Snapshot {
    let peers: Vec<String> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| format!("{{addr: \"127.0.0.1:{}\", weight: {w}}}", 10 + i))
        .collect();
    let text = format!(
        "listeners: [{{addr: \"127.0.0.1:1\"}}]\nclusters:\n  c:\n    peers: [{}]\n    breaker: {breaker}\n{extra}routes: [{{name: r, split: [{{cluster: c}}]}}]\n",
        peers.join(", ")
    );
    let config = crate::config::parse(&text, "t").unwrap();
    Snapshot::build(
        config,
        1,
        String::new(),
        &Registries::default(),
        &Metrics::new(),
    )
}

fn fail(c: &Cluster, peer: usize, now: Instant) -> Transition {
    let p = &c.peers[peer];
    let adm = p.state.breaker.try_acquire(now).unwrap();
    c.record(p, adm, Outcome::Failure, now)
}

#[tokio::test(start_paused = true)]
async fn drained_peers_do_not_count_toward_max_ejected_percent() {
    let snap = snapshot(
        &[1, 1, 0, 0],
        "{consecutive_failures: 1, max_ejected_percent: 50}",
        "",
    );
    let c = &snap.clusters[0];
    let now = Instant::now();
    assert_eq!(fail(c, 0, now), Transition::Opened);
    // Half of the two live peers is one: the second stays in.
    assert_eq!(fail(c, 1, now), Transition::None);
    assert!(!c.peers[1].state.breaker.is_ejected(now));
}

#[test]
fn peers_tripping_at_once_never_exceed_max_ejected_percent() {
    for _ in 0..50 {
        let snap = snapshot(
            &[1; 8],
            "{consecutive_failures: 1, max_ejected_percent: 25}",
            "",
        );
        let c = &snap.clusters[0];
        let start = std::sync::Barrier::new(8);
        std::thread::scope(|s| {
            for i in 0..8 {
                let start = &start;
                s.spawn(move || {
                    start.wait();
                    fail(c, i, Instant::now());
                });
            }
        });
        let now = Instant::now();
        let ejected = c
            .peers
            .iter()
            .filter(|p| p.state.breaker.is_ejected(now))
            .count();
        assert_eq!(ejected, 2, "25% of 8 peers");
    }
}

#[tokio::test(start_paused = true)]
async fn a_breaker_recovery_starts_slow_start() {
    let snap = snapshot(
        &[1, 1],
        "{consecutive_failures: 1, open_for: 1s, success_threshold: 1}",
        "    slow_start: 10s\n",
    );
    let c = &snap.clusters[0];
    let ramp = c.cfg.slow_start;
    let p = &c.peers[0];
    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(fail(c, 0, Instant::now()), Transition::Opened);
    tokio::time::advance(Duration::from_secs(2)).await;
    let now = Instant::now();
    let trial = p.state.breaker.try_acquire(now).unwrap();
    assert_eq!(
        c.record(p, trial, Outcome::Success, now),
        Transition::Closed
    );
    let f = p.state.slow_start_factor(ramp, now);
    assert!((f - 0.1).abs() < 0.01, "back at a tenth of its share: {f}");
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(p.state.slow_start_factor(ramp, Instant::now()), 1.0);
}

#[tokio::test(start_paused = true)]
async fn a_clusters_only_peer_is_not_ejected_unless_max_ejected_percent_is_100() {
    // Half of one peer is none: a burst of failures leaves it taking requests.
    for weights in [&[1][..], &[1, 0, 0]] {
        let snap = snapshot(weights, "{consecutive_failures: 1}", "");
        let c = &snap.clusters[0];
        let now = Instant::now();
        for _ in 0..5 {
            assert_eq!(fail(c, 0, now), Transition::None);
        }
        assert!(!c.peers[0].state.breaker.is_ejected(now));
        assert!(c.peers[0].state.breaker.try_acquire(now).is_some());
    }
    // An operator who asks for it gets it.
    let snap = snapshot(
        &[1],
        "{consecutive_failures: 1, max_ejected_percent: 100}",
        "",
    );
    let c = &snap.clusters[0];
    let now = Instant::now();
    assert_eq!(fail(c, 0, now), Transition::Opened);
    assert!(c.peers[0].state.breaker.is_ejected(now));
}
