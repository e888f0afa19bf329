//! `shared`, `scope`, `cache.shared` and `tokens_per_minute`: the defaults, everything local
//! without `shared`, and errors that name the key.

use super::*;

/// `GOOD` with `extra` at the end of the document (after the route) and `route` in its route.
fn with(route: &str, extra: &str) -> String {
    let doc = GOOD.replacen("    fallback:\n", &format!("{route}    fallback:\n"), 1);
    format!("{doc}{extra}")
}

fn invalid(text: &str) -> Invalid {
    match parse(text, "bad.yaml") {
        Err(ConfigError::Invalid(inv)) => inv,
        other => panic!("expected an invalid config, got {other:?}"),
    }
}

#[test]
fn shared_takes_its_defaults_and_makes_everything_shared() {
    let c = parse(
        &with(
            "    client_limit: { key: ip, tokens_per_minute: 1000 }\n    cache: {}\n",
            "shared: { redis: \"redis://127.0.0.1:6379/0\" }\n",
        ),
        "x",
    )
    .unwrap();
    let s = c.shared.as_ref().unwrap();
    assert_eq!(
        (s.prefix.as_str(), s.timeout, s.on_error),
        ("switchyard:", Duration::from_millis(50), OnError::Local)
    );
    let l = c.routes[0].client_limit.as_ref().unwrap();
    assert_eq!(
        (l.requests_per_minute, l.tokens_per_minute, l.scope),
        (None, Some(1000), Scope::Shared)
    );
    assert!(c.routes[0].cache.as_ref().unwrap().shared);
}

#[test]
fn without_shared_everything_is_local() {
    let c = parse(
        &with(
            "    client_limit: { key: ip, requests_per_minute: 60 }\n    cache: {}\n",
            "",
        ),
        "x",
    )
    .unwrap();
    assert!(c.shared.is_none());
    assert_eq!(
        c.routes[0].client_limit.as_ref().unwrap().scope,
        Scope::Local
    );
    assert!(!c.routes[0].cache.as_ref().unwrap().shared);
}

#[test]
fn bad_shared_settings_name_the_key() {
    let shared = |s: &str| with("", &format!("shared: {s}\n"));
    for (text, path) in [
        (shared("{ redis: \"http://h:1\" }"), "shared.redis"),
        (shared("{ redis: \"rediss://h:1\" }"), "shared.redis"),
        (
            shared("{ redis: \"redis://h:1\", timeout: 10s }"),
            "shared.timeout",
        ),
        (
            shared("{ redis: \"redis://h:1\", on_error: retry }"),
            "shared.on_error",
        ),
        (shared("{ redis: \"redis://h:1\", pool: 4 }"), "shared.pool"),
        (
            with("    cache: { shared: true }\n", ""),
            "routes[0].cache.shared",
        ),
        (
            with(
                "    client_limit: { key: ip, requests_per_minute: 6, scope: shared }\n",
                "",
            ),
            "routes[0].client_limit.scope",
        ),
        (
            with("    client_limit: { key: ip }\n", ""),
            "routes[0].client_limit",
        ),
        (
            with(
                "    client_limit: { key: ip, tokens_per_minute: 9, burst: 2 }\n",
                "",
            ),
            "routes[0].client_limit.burst",
        ),
        (
            with("    client_limit: { key: ip, tokens_per_minute: 0 }\n", ""),
            "routes[0].client_limit.tokens_per_minute",
        ),
    ] {
        let inv = invalid(&text);
        assert_eq!(inv.path, path, "{inv:?}");
        assert!(inv.line.is_some(), "{inv:?}");
    }
}
