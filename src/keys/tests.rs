//! Key pools: fingerprints, thresholds and cooldowns, and state that survives reloads.

use super::*;
use crate::config::KeyCondition;

fn cfg(threshold: u32, with_probe: bool) -> ApiKeysConfig {
    ApiKeysConfig {
        header: http::header::AUTHORIZATION,
        bearer: true,
        keys: vec!["sk-one".into(), "sk-two".into()],
        strip_headers: Vec::new(),
        failure_threshold: threshold,
        conditions: Vec::<KeyCondition>::new(),
        default_cooldown: Duration::from_secs(60),
        max_retry_after: Duration::from_secs(3600),
        scope: crate::config::Scope::Local,
        health_check: with_probe.then(|| crate::config::KeyHealthCheck {
            method: http::Method::GET,
            path: "/".into(),
            body: None,
            expect_status: vec![200],
            expect_body: None,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold: 1,
        }),
    }
}

#[test]
fn reasons_follow_the_answer() {
    assert_eq!(reason_for(401, false), "unauthorized");
    assert_eq!(reason_for(402, false), "quota");
    assert_eq!(reason_for(429, false), "rate_limited");
    assert_eq!(reason_for(429, true), "quota");
    // A body condition about something else is not called quota.
    assert_eq!(reason_for(400, false), "other");
}

#[test]
fn fingerprints_hide_the_key() {
    let f = fingerprint("sk-secret-123");
    assert!(f.starts_with("k-") && f.len() == 10);
    assert!(!f.contains("secret"));
    let reg = KeyRegistry::default();
    let pool = reg.pool("c", &cfg(3, true), &mut HashSet::new());
    assert!(!format!("{:?}", pool.keys[0]).contains("sk-one"));
    assert!(pool.keys[0].header_value().is_sensitive());
}

#[tokio::test(start_paused = true)]
async fn threshold_disables_and_retry_after_cools() {
    let c = cfg(2, true);
    let reg = KeyRegistry::default();
    let pool = reg.pool("c", &c, &mut HashSet::new());
    let k = &pool.keys[0];
    let now = Instant::now();
    assert!(!k.on_failure(KeyCooldown::Disable, None, &c, now));
    assert!(k.is_usable(now));
    assert!(k.on_failure(KeyCooldown::Disable, None, &c, now));
    assert!(!k.is_usable(now) && k.is_disabled());
    assert_eq!(pool.pick(now, &[]), Some(1));
    k.enable();
    assert!(k.is_usable(now));

    let k2 = &pool.keys[1];
    assert!(k2.on_failure(
        KeyCooldown::RetryAfter,
        Some(Duration::from_secs(2)),
        &c,
        now
    ));
    assert!(!k2.is_usable(now + Duration::from_millis(1900)));
    assert!(k2.is_usable(now + Duration::from_millis(2000)));
}

#[test]
fn a_reload_strands_nothing() {
    let reg = KeyRegistry::default();
    let with_probe = cfg(1, true);
    let pool = reg.pool("c", &with_probe, &mut HashSet::new());
    pool.keys[0].on_failure(KeyCooldown::Disable, None, &with_probe, Instant::now());
    assert!(pool.keys[0].is_disabled());
    // The probe is removed: the key cools for default_cooldown instead of waiting forever.
    let no_probe = cfg(1, false);
    let again = reg.pool("c", &no_probe, &mut HashSet::new());
    assert!(Arc::ptr_eq(&pool.keys[0], &again.keys[0]));
    assert!(!again.keys[0].is_disabled());
    let now = Instant::now();
    assert!(!again.keys[0].is_usable(now));
    assert!(again.keys[0].is_usable(now + Duration::from_secs(61)));
    // Another header: the key is sent bare now, with a fresh state.
    let mut other = cfg(1, false);
    other.header = http::HeaderName::from_static("x-api-key");
    other.bearer = false;
    let moved = reg.pool("c", &other, &mut HashSet::new());
    assert!(!Arc::ptr_eq(&again.keys[0], &moved.keys[0]));
    assert_eq!(moved.keys[0].header_value().as_bytes(), b"sk-one");
    assert!(moved.keys[0].is_usable(now));
}

#[test]
fn duplicates_are_dropped_and_state_is_by_the_whole_digest() {
    let mut c = cfg(1, false);
    c.keys = vec!["sk-one".into(), "sk-two".into(), "sk-one".into()];
    let reg = KeyRegistry::default();
    let mut keep = HashSet::new();
    let pool = reg.pool("c", &c, &mut keep);
    assert_eq!(pool.keys.len(), 2);
    assert_eq!(keep.len(), 2);
    assert!(keep.contains(&("c".to_string(), digest("sk-one"))));
}

#[test]
fn state_survives_a_new_pool() {
    let c = cfg(1, true);
    let reg = KeyRegistry::default();
    let mut keep = HashSet::new();
    let pool = reg.pool("c", &c, &mut keep);
    pool.keys[0].on_failure(KeyCooldown::Disable, None, &c, Instant::now());
    let again = reg.pool("c", &c, &mut HashSet::new());
    assert!(again.keys[0].is_disabled());
    assert!(Arc::ptr_eq(&pool.keys[0], &again.keys[0]));
}

#[test]
fn a_cooldown_past_the_end_of_time_does_not_overflow() {
    let c = cfg(1, false);
    let pool = KeyRegistry::default().pool("c", &c, &mut HashSet::new());
    let now = Instant::now();
    assert!(pool.keys[0].on_failure(KeyCooldown::For(Duration::MAX), None, &c, now));
    assert!(!pool.keys[0].is_usable(now + Duration::from_secs(86_400)));
    let h = |v: &str| {
        let mut m = http::HeaderMap::new();
        m.insert(http::header::RETRY_AFTER, v.parse().unwrap());
        m
    };
    let capped = crate::retry_after::of(&h("18446744073709551615"), c.max_retry_after);
    assert_eq!(capped, Some(Duration::from_secs(3600)));
}
