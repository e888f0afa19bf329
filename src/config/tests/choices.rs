//! Keys with a fixed set of values: serde rejects anything else with the key path, the line and
//! the accepted values.

use super::*;

/// The error for `GOOD` with `from` replaced by `to`.
fn bad_replacing(from: &str, to: &str) -> Invalid {
    assert!(GOOD.contains(from), "test case text {from:?} not in GOOD");
    bad(&GOOD.replacen(from, to, 1))
}

#[test]
fn unknown_words_are_refused_with_the_accepted_ones_listed() {
    // (what to replace in GOOD, with what, expected path, expected line, words the message lists)
    let cases: &[(&str, &str, &str, usize, &[&str])] = &[
        (
            "balance: least_inflight",
            "balance: fastest",
            "clusters.primary.balance",
            10,
            &["`fastest`", "expected", "`round_robin`", "`least_inflight`"],
        ),
        (
            "path: /health",
            "kind: udp",
            "clusters.primary.health_check.kind",
            15,
            &["`udp`", "expected", "`http`", "`tcp`"],
        ),
        (
            "retry_on: [connect_failure, 503",
            "retry_on: [resett, 503",
            "routes[0].retry.retry_on[0]",
            28,
            &[
                "`resett`",
                "expected",
                "`connect_failure`",
                "`refused`",
                "`reset`",
                "`timeout`",
                "`5xx`",
                "`gateway_error`",
            ],
        ),
        (
            "503, \"429\"",
            "503, \"600\"",
            "routes[0].retry.retry_on[2]",
            28,
            &["status 600 is not a 4xx or 5xx"],
        ),
        (
            "503, \"429\"",
            "200, \"429\"",
            "routes[0].retry.retry_on[1]",
            28,
            &["status 200 is not a 4xx or 5xx"],
        ),
        (
            "503, \"429\"",
            "true, \"429\"",
            "routes[0].retry.retry_on[1]",
            28,
            &["invalid type", "a retry condition or a 4xx or 5xx status"],
        ),
    ];
    for (from, to, path, line, words) in cases {
        let inv = bad_replacing(from, to);
        assert_eq!(
            (inv.path.as_str(), inv.line),
            (*path, Some(*line)),
            "for {to:?}: {inv}"
        );
        for w in *words {
            assert!(inv.message.contains(w), "for {to:?}: {w:?} not in {inv}");
        }
    }
}

#[test]
fn failure_on_lists_its_words() {
    let breaker = "    breaker: { failure_on: [connect, 6xx] }\n";
    let inv = bad(&GOOD.replacen(
        "    health_check:\n",
        &format!("{breaker}    health_check:\n"),
        1,
    ));
    assert_eq!(
        (inv.path.as_str(), inv.line),
        ("clusters.primary.breaker.failure_on[1]", Some(14)),
        "{inv}"
    );
    for w in ["`6xx`", "`connect`", "`timeout`", "`reset`", "`5xx`"] {
        assert!(inv.message.contains(w), "{w:?} not in {inv}");
    }

    let only_5xx = "    breaker: { failure_on: [5xx, timeout] }\n";
    let c = parse(
        &GOOD.replacen(
            "    health_check:\n",
            &format!("{only_5xx}    health_check:\n"),
            1,
        ),
        "x",
    )
    .unwrap();
    let f = c.clusters[0].breaker.failure_on;
    assert!(f.status_5xx && f.timeout && !f.connect && !f.reset, "{f:?}");
}

#[test]
fn retry_on_takes_names_and_statuses_as_numbers_or_strings() {
    let c = parse(
        &GOOD.replacen(
            "retry_on: [connect_failure, 503, \"429\"]",
            "retry_on: [429, \"429\", gateway_error, reset, \"503\"]",
            1,
        ),
        "x",
    )
    .unwrap();
    let on = &c.routes[0].retry.on;
    assert_eq!(on.statuses, vec![429, 502, 503, 504]);
    assert!(on.reset && !on.connect_failure && !on.refused && !on.timeout);

    let c = parse(&GOOD.replacen("connect_failure, 503", "5xx, 503", 1), "x").unwrap();
    assert_eq!(
        c.routes[0].retry.on.statuses,
        vec![429, 500, 501, 502, 503, 504, 505]
    );
}

#[test]
fn key_cooldown_is_retry_after_or_a_duration() {
    let pool = |cooldown: &str| {
        GOOD.replacen(
            "    health_check:\n",
            &format!(
                "    api_keys:\n      keys: [k1, k2]\n      failover:\n        conditions:\n          - {{ status: [429], cooldown: {cooldown} }}\n    health_check:\n"
            ),
            1,
        )
    };
    let cooldown = |text: &str| {
        let c = parse(text, "x").unwrap();
        c.clusters[0].api_keys.as_ref().unwrap().conditions[0].cooldown
    };
    assert_eq!(cooldown(&pool("retry-after")), KeyCooldown::RetryAfter);
    assert_eq!(
        cooldown(&pool("90s")),
        KeyCooldown::For(Duration::from_secs(90))
    );
    let path = "clusters.primary.api_keys.failover.conditions[0].cooldown";
    for (value, words) in [
        (
            "soon",
            &["\"soon\"", "expected", "\"retry-after\"", "duration"][..],
        ),
        ("30", &["\"30\"", "\"retry-after\""][..]),
        ("0s", &["must be greater than zero"][..]),
    ] {
        let inv = bad(&pool(value));
        assert_eq!(
            (inv.path.as_str(), inv.line),
            (path, Some(18)),
            "{value}: {inv}"
        );
        for w in words {
            assert!(inv.message.contains(w), "{value}: {w:?} not in {inv}");
        }
    }
}
