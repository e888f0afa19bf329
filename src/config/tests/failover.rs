//! The failover keys of a route: `timeouts.first_byte`/`first_token`, `retry.budget` in both
//! forms, `retry.other_cluster`, `retry.max_retry_after`, `retry_on` answer conditions and
//! `hedge`, with their defaults and their errors.

use super::*;

/// A route whose `timeouts`, `retry` and `hedge` are `extra` (YAML lines under the route).
fn route_with(extra: &str) -> String {
    format!(
        "listeners: [{{addr: \"127.0.0.1:1\"}}]\nclusters:\n  c: {{peers: [{{addr: \"127.0.0.1:2\"}}]}}\n  d: {{peers: [{{addr: \"127.0.0.1:3\"}}]}}\nroutes:\n  - name: r\n    split: [{{cluster: c}}, {{cluster: d, weight: 0}}]\n{extra}"
    )
}

fn route(extra: &str) -> RouteConfig {
    parse(&route_with(extra), "t.yaml").unwrap().routes[0].clone()
}

#[test]
fn first_byte_bounds_every_header_wait_and_is_the_first_token_default() {
    let t = route("").timeouts;
    assert_eq!(
        (t.first_byte, t.first_token),
        (None, Duration::from_secs(15))
    );
    // A config that sets only first_byte keeps its meaning for streams too.
    let t = route("    timeouts: { first_byte: 400ms }\n").timeouts;
    assert_eq!(t.first_byte, Some(Duration::from_millis(400)));
    assert_eq!(t.first_token, Duration::from_millis(400));
    let t = route("    timeouts: { first_byte: 60s, first_token: 5s }\n").timeouts;
    assert_eq!(
        (t.first_byte, t.first_token),
        (Some(Duration::from_secs(60)), Duration::from_secs(5))
    );
    let inv = bad(&route_with("    timeouts: { first_token: 0s }\n"));
    assert_eq!(inv.path, "routes[0].timeouts.first_token", "{inv}");
    assert_eq!(inv.line, Some(8));
}

#[test]
fn a_budget_is_a_ratio_or_a_map() {
    let b = route("    retry: { budget: 0.5 }\n").retry.budget;
    assert_eq!(
        (b.ratio, b.window, b.min_per_second),
        (0.5, Duration::from_secs(10), 10)
    );
    let b = route("    retry: { budget: 1 }\n").retry.budget;
    assert_eq!(b.ratio, 1.0);
    let b = route("    retry:\n      budget: { ratio: 0.1, window: 30s, min_per_second: 0 }\n")
        .retry
        .budget;
    assert_eq!(
        (b.ratio, b.window, b.min_per_second),
        (0.1, Duration::from_secs(30), 0)
    );
    for (text, path, says) in [
        (
            "    retry: { budget: 1.5 }\n",
            "routes[0].retry.budget",
            "[0, 1]",
        ),
        (
            "    retry: { budget: { ratio: -1 } }\n",
            "routes[0].retry.budget.ratio",
            "[0, 1]",
        ),
        (
            "    retry: { budget: { window: 100ms } }\n",
            "routes[0].retry.budget.window",
            "1s to 60s",
        ),
        (
            "    retry: { budget: { ratoi: 0.2 } }\n",
            "routes[0].retry.budget.ratoi",
            "unknown field `ratoi`",
        ),
        (
            "    retry: { budget: lots }\n",
            "routes[0].retry.budget",
            "a ratio like 0.2",
        ),
    ] {
        let inv = bad(&route_with(text));
        assert_eq!(inv.path, path, "{text}: {inv}");
        assert!(inv.message.contains(says), "{text}: {inv}");
        assert_eq!(inv.line, Some(8), "{text}: {inv}");
    }
}

#[test]
fn other_cluster_and_max_retry_after() {
    let r = route("    retry: { other_cluster: next, max_retry_after: 5s }\n").retry;
    assert_eq!(
        (r.other_cluster, r.max_retry_after),
        (OtherCluster::Next, Duration::from_secs(5))
    );
    assert_eq!(
        route("    retry: { other_cluster: never }\n")
            .retry
            .other_cluster,
        OtherCluster::Never
    );
    let inv = bad(&route_with("    retry: { other_cluster: sometimes }\n"));
    assert_eq!(inv.path, "routes[0].retry.other_cluster", "{inv}");
    assert!(
        inv.message.contains("`last`") && inv.message.contains("`never`"),
        "{inv}"
    );
    let inv = bad(&route_with("    retry: { max_retry_after: 1h }\n"));
    assert_eq!(inv.path, "routes[0].retry.max_retry_after", "{inv}");
}

#[test]
fn retry_on_takes_answer_conditions() {
    let on = route(
        "    retry:\n      retry_on: [502, { status: 400, body: \"context_length_exceeded\" }, { status: [413, 422], body: \"too (long|large)\" }, { status: 429 }]\n",
    )
    .retry
    .on;
    assert_eq!(
        on.statuses,
        vec![429, 502],
        "a condition without a body is a plain status"
    );
    assert_eq!(on.answers.len(), 2);
    assert!(on.answer_matches(400, br#"{"error":{"code":"context_length_exceeded"}}"#));
    assert!(!on.answer_matches(400, br#"{"error":{"code":"content_policy_violation"}}"#));
    assert!(on.answer_matches(422, b"prompt too long"));
    assert!(
        !on.answer_matches(502, b"too long"),
        "502 is retried by status, not by body"
    );
    assert_eq!(on.answer_statuses(), vec![400, 413, 422]);
    for (entry, path, says) in [
        (
            "{ status: 400, body: \"(\" }",
            "routes[0].retry.retry_on[0].body",
            "bad regex",
        ),
        (
            "{ status: 200, body: \"x\" }",
            "routes[0].retry.retry_on[0].status",
            "not a 4xx or 5xx",
        ),
        (
            "{ status: 400, bdy: \"x\" }",
            "routes[0].retry.retry_on[0].bdy",
            "unknown field `bdy`",
        ),
        (
            "{ status: 502, body: \"x\" }, 5xx",
            "routes[0].retry.retry_on[0].status",
            "also retried",
        ),
    ] {
        let inv = bad(&route_with(&format!(
            "    retry:\n      retry_on: [{entry}]\n"
        )));
        assert_eq!(inv.path, path, "{entry}: {inv}");
        assert!(inv.message.contains(says), "{entry}: {inv}");
    }
}

#[test]
fn a_hedge_is_a_try_within_the_attempts() {
    let h = route("    hedge: {}\n").hedge.unwrap();
    assert_eq!((h.after, h.max), (Duration::from_secs(2), 1));
    let h = route("    retry: { attempts: 4 }\n    hedge: { after: 500ms, max: 3 }\n")
        .hedge
        .unwrap();
    assert_eq!((h.after, h.max), (Duration::from_millis(500), 3));
    let inv = bad(&route_with(
        "    retry: { attempts: 2 }\n    hedge: { max: 2 }\n",
    ));
    assert_eq!(inv.path, "routes[0].hedge.max", "{inv}");
    assert!(inv.message.contains("1 to 1"), "{inv}");
    assert_eq!(inv.line, Some(9));
    let inv = bad(&route_with("    hedge: { after: 0s }\n"));
    assert_eq!(inv.path, "routes[0].hedge.after", "{inv}");
}
