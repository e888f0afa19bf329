use super::*;
use std::time::Duration;

fn bc() -> BreakerConfig {
    crate::config::parse(
        "listeners: [{addr: \"127.0.0.1:1\"}]\nclusters: {c: {peers: [{addr: \"127.0.0.1:2\"}]}}\nroutes: [{name: r, split: [{cluster: c}]}]\n",
        "t",
    )
    .unwrap()
    .clusters[0]
    .breaker
    .clone()
}

#[test]
fn registry_keeps_state_by_cluster_and_addr() {
    let reg = PeerRegistry::default();
    let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let s1 = reg.get_or_insert(&PeerId::ip("primary", a), true, &bc());
    assert_eq!(s1.health(), Health::Unknown);
    s1.set_health(Health::Unhealthy);
    let s2 = reg.get_or_insert(&PeerId::ip("primary", a), true, &bc());
    assert!(Arc::ptr_eq(&s1, &s2));
    assert_eq!(s2.health(), Health::Unhealthy);
    let other = reg.get_or_insert(&PeerId::ip("secondary", a), false, &bc());
    assert!(!Arc::ptr_eq(&s1, &other));
    assert_eq!(other.health(), Health::Healthy);
    // The same address behind a name is another peer, named by both.
    let named = PeerId {
        name: Some("vllm.svc:8000".into()),
        ..PeerId::ip("primary", a)
    };
    let s3 = reg.get_or_insert(&named, true, &bc());
    assert!(!Arc::ptr_eq(&s1, &s3));
    assert_eq!(s3.name, "vllm.svc:8000@127.0.0.1:1");
    assert_eq!(s3.label, "primary/vllm.svc:8000@127.0.0.1:1");
    reg.retain(&HashSet::from([PeerId::ip("secondary", a)]));
    assert_eq!(reg.len(), 1);
}

#[test]
fn a_reload_that_removes_the_health_check_makes_peers_healthy() {
    let reg = PeerRegistry::default();
    let a = PeerId::ip("c", "127.0.0.1:1".parse().unwrap());
    let s = reg.get_or_insert(&a, true, &bc());
    s.set_health(Health::Unhealthy);
    // Still checked: the probes decide.
    assert_eq!(
        reg.get_or_insert(&a, true, &bc()).health(),
        Health::Unhealthy
    );
    assert_eq!(
        reg.get_or_insert(&a, false, &bc()).health(),
        Health::Healthy
    );
}

#[test]
fn inflight_guard_counts() {
    let reg = PeerRegistry::default();
    let s = reg.get_or_insert(
        &PeerId::ip("c", "127.0.0.1:1".parse().unwrap()),
        false,
        &bc(),
    );
    let g1 = s.start_request();
    let g2 = s.start_request();
    assert_eq!(s.inflight(), 2);
    drop(g1);
    drop(g2);
    assert_eq!(s.inflight(), 0);
}

#[test]
fn reservations_never_exceed_the_cap_under_concurrency() {
    let reg = PeerRegistry::default();
    let s = reg.get_or_insert(
        &PeerId::ip("c", "127.0.0.1:1".parse().unwrap()),
        false,
        &bc(),
    );
    let held = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for _ in 0..200 {
                    if let Some(g) = s.reserve(Some(3)) {
                        held.lock().unwrap().push(g);
                    }
                }
            });
        }
    });
    assert_eq!(held.lock().unwrap().len(), 3);
    assert_eq!(s.inflight(), 3);
    assert!(s.reserve(Some(3)).is_none());
    held.lock().unwrap().pop();
    assert!(s.reserve(Some(3)).is_some());
}

#[tokio::test(start_paused = true)]
async fn slow_start_ramps_from_a_tenth() {
    let reg = PeerRegistry::default();
    let s = reg.get_or_insert(
        &PeerId::ip("c", "127.0.0.1:1".parse().unwrap()),
        true,
        &bc(),
    );
    let ramp = Some(Duration::from_secs(10));
    tokio::time::advance(Duration::from_secs(1)).await;
    s.set_health(Health::Healthy);
    let f0 = s.slow_start_factor(ramp, Instant::now());
    assert!((f0 - 0.1).abs() < 0.02, "{f0}");
    tokio::time::advance(Duration::from_secs(5)).await;
    let f5 = s.slow_start_factor(ramp, Instant::now());
    assert!((f5 - 0.55).abs() < 0.02, "{f5}");
    tokio::time::advance(Duration::from_secs(6)).await;
    assert_eq!(s.slow_start_factor(ramp, Instant::now()), 1.0);
    assert_eq!(s.slow_start_factor(None, Instant::now()), 1.0);
}
