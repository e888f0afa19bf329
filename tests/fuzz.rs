//! Property tests over input switchyard takes from outside: the config file, request bodies (the
//! cache key's canonical JSON), upstream SSE streams, and request paths and headers. Each runs a
//! fixed number of cases, so `cargo test` (and CI) runs them bounded, in a few seconds. Seeds
//! for the config live in `tests/corpus/config/`; proptest writes any failing case it finds to
//! `tests/fuzz.proptest-regressions`, which is replayed first on every run: commit it.

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::Value;
use switchyard::cache::key::canonical_json;
use switchyard::proxy::path;
use switchyard::sse::Framer;
use switchyard::usage::{self, Usage};

fn corpus() -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/config");
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .expect("corpus")
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .collect();
    out.sort();
    assert!(!out.is_empty());
    out
}

/// A seed with some bytes replaced, inserted or removed.
fn mutated() -> impl Strategy<Value = String> {
    let seeds = corpus();
    (
        0..seeds.len(),
        prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<u8>()), 1..8),
    )
        .prop_map(move |(i, edits)| {
            let mut b = seeds[i].clone().into_bytes();
            for (at, op, byte) in edits {
                let at = at.index(b.len().max(1)).min(b.len());
                match op {
                    0 if at < b.len() => b[at] = byte,
                    1 => b.insert(at, byte),
                    _ if at < b.len() => {
                        b.remove(at);
                    }
                    _ => {}
                }
            }
            String::from_utf8_lossy(&b).into_owned()
        })
}

/// Values with the units and shapes config keys take, some of them hostile.
fn unit_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,25}(ns|ms|s|m|h|d|y|days|years)",
        "[0-9]{1,20}(B|KiB|MiB|GiB|TB)",
        "-?[0-9]{1,30}",
        "\"[^\"\\\\]{0,20}\"",
        Just("[".to_string()),
        Just("{a: [1, {b: }]}".to_string()),
    ]
}

const KEYS: &[&str] = &[
    "routes[0].timeouts.total",
    "limits.client_body_timeout",
    "limits.max_header_bytes",
    "clusters.c.breaker.open_for",
    "routes[0].cache.ttl",
    "routes[0].max_request_body",
    "clusters.c.peers[0].weight",
];

fn with_value(key: &str, value: &str) -> String {
    let base = "listeners: [ { addr: \"127.0.0.1:8080\" } ]\nclusters:\n  c:\n    peers: [ { addr: \"127.0.0.1:8001\", weight: W } ]\n    breaker: { open_for: O }\nroutes:\n  - name: r\n    split: [ { cluster: c } ]\n    timeouts: { total: T }\n    max_request_body: M\n    cache: { ttl: C }\nlimits: { client_body_timeout: B, max_header_bytes: H }\n";
    let marks = [
        ("routes[0].timeouts.total", "T"),
        ("limits.client_body_timeout", "B"),
        ("limits.max_header_bytes", "H"),
        ("clusters.c.breaker.open_for", "O"),
        ("routes[0].cache.ttl", "C"),
        ("routes[0].max_request_body", "M"),
        ("clusters.c.peers[0].weight", "W"),
    ];
    let defaults = [
        ("T", "300s"),
        ("B", "30s"),
        ("H", "64KiB"),
        ("O", "10s"),
        ("C", "10m"),
        ("M", "4MiB"),
        ("W", "1"),
    ];
    let mut text = base.to_string();
    for (k, m) in marks {
        let v = if k == key {
            value.to_string()
        } else {
            defaults.iter().find(|d| d.0 == m).unwrap().1.to_string()
        };
        text = text.replacen(&format!(": {m}"), &format!(": {v}"), 1);
        text = text.replacen(&format!("{m} }}"), &format!("{v} }}"), 1);
    }
    text
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A count as a server might write it: mostly a `u64`, sometimes what a `u64` is not.
fn count_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => any::<u64>().prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => (-1e6f64..1e6).prop_map(Value::from),
        1 => Just(Value::Null),
        1 => Just(Value::from("12")),
    ]
}

/// Text that looks like a `usage` member, to be put inside strings and keys.
fn usage_lookalike() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(r#""usage":{"prompt_tokens":7,"completion_tokens":8}"#.to_string()),
        Just(r#"\","usage":{"prompt_tokens":9}}"#.to_string()),
        Just("usage".to_string()),
        ".{0,8}".prop_map(|s| format!("{s}\"usage\":{{")),
    ]
}

/// A `usage` object: either count may be missing or not a `u64`, and another member may be there.
fn usage_object() -> impl Strategy<Value = Value> {
    (
        prop::option::of(count_value()),
        prop::option::of(count_value()),
        prop::option::of(json_value()),
    )
        .prop_map(|(p, c, extra)| {
            let mut m = serde_json::Map::new();
            if let Some(x) = extra {
                m.insert("total_tokens".into(), x);
            }
            if let Some(p) = p {
                m.insert("prompt_tokens".into(), p);
            }
            if let Some(c) = c {
                m.insert("completion_tokens".into(), c);
            }
            Value::Object(m)
        })
}

/// Answers shaped like OpenAI's, with a top-level `usage` or not, other members before and after
/// it, `usage` objects nested deeper, and strings and keys that spell one.
fn answer_doc() -> impl Strategy<Value = Value> {
    let member = prop_oneof![
        3 => (".{0,6}", json_value()).prop_map(|(k, v)| (k, v)),
        1 => (usage_lookalike(), json_value()).prop_map(|(k, v)| (k, v)),
        1 => (".{0,6}", usage_lookalike()).prop_map(|(k, v)| (k, Value::String(v))),
        1 => (".{0,6}", usage_object())
            .prop_map(|(k, u)| (k, serde_json::json!([{ "usage": u }]))),
    ];
    (
        prop::collection::vec(member.clone(), 0..5),
        prop::option::of(
            prop_oneof![4 => usage_object(), 1 => Just(Value::Null), 1 => json_value()],
        ),
        prop::collection::vec(member, 0..3),
    )
        .prop_map(|(before, usage, after)| {
            let mut m = serde_json::Map::new();
            for (k, v) in before {
                m.insert(k, v);
            }
            if let Some(u) = usage {
                m.insert("usage".into(), u);
            }
            for (k, v) in after {
                if k != "usage" {
                    m.insert(k, v);
                }
            }
            Value::Object(m)
        })
}

/// What serde reads as the document's top-level `usage` object.
fn serde_usage(doc: &[u8]) -> Option<Usage> {
    let v: Value = serde_json::from_slice(doc).ok()?;
    let u = v.get("usage")?.as_object()?.clone();
    serde_json::from_value(Value::Object(u)).ok()
}

/// Reverse the order of every object's keys (a map that keeps insertion order would then
/// serialise differently; the canonical form must not).
fn reordered(v: &Value) -> Value {
    match v {
        Value::Array(a) => Value::Array(a.iter().map(reordered).collect()),
        Value::Object(m) => {
            let mut items: Vec<_> = m.iter().map(|(k, v)| (k.clone(), reordered(v))).collect();
            items.reverse();
            Value::Object(items.into_iter().collect())
        }
        other => other.clone(),
    }
}

/// SSE streams: events of a few fields with any line endings, comments and stray bytes.
fn sse_text() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        "data: [a-z{}\":, ]{0,20}",
        "event: (error|message|x)",
        ": comment",
        "id: [0-9]{1,3}",
        "data",
        "[a-z]{0,5}",
    ];
    let eol = prop_oneof![Just("\n"), Just("\r\n"), Just("\r")];
    prop::collection::vec((line, eol.clone(), prop::option::of(eol)), 0..20).prop_map(|ls| {
        ls.into_iter()
            .map(|(l, e, blank)| format!("{l}{e}{}", blank.unwrap_or("")))
            .collect()
    })
}

/// Run `text` through a framer in pieces cut at `cuts`; what was forwarded (plus the held tail).
fn framed(text: &[u8], cuts: &[usize]) -> (Vec<u8>, u64, bool) {
    let mut f = Framer::new();
    let mut out = Vec::new();
    let mut at = 0;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (text.len() + 1)).collect();
    points.sort_unstable();
    points.push(text.len());
    for p in points {
        if p < at {
            continue;
        }
        if let Some(b) = f.push(Bytes::copy_from_slice(&text[at..p]), |_| {}) {
            out.extend_from_slice(&b);
        }
        at = p;
    }
    let events = f.events();
    let done = f.done();
    if let Some(rest) = f.finish() {
        out.extend_from_slice(&rest);
    }
    (out, events, done)
}

proptest! {
    // Regressions stay in tests/fuzz.proptest-regressions: by default proptest would look for
    // them beside the test binary's root (tests/main.rs) and stop replaying that file.
    #![proptest_config(ProptestConfig {
        cases: 192,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    /// No config text makes `parse` panic; every error names a place.
    #[test]
    fn config_parsing_never_panics(text in mutated()) {
        if let Err(e) = switchyard::config::parse(&text, "fuzz.yaml") {
            prop_assert!(e.to_string().contains("fuzz.yaml"), "{e}");
        }
    }

    /// Any value for a duration, size or count key is accepted or refused with its key path,
    /// and an accepted deadline never overflows.
    #[test]
    fn config_values_are_bounded(k in 0..KEYS.len(), v in unit_value()) {
        let text = with_value(KEYS[k], &v);
        match switchyard::config::parse(&text, "fuzz.yaml") {
            Ok(c) => {
                let t = &c.routes[0].timeouts;
                let now = tokio::time::Instant::now();
                prop_assert!(now.checked_add(t.total).is_some());
                prop_assert!(t.total <= std::time::Duration::from_secs(365 * 86_400));
            }
            Err(e) => prop_assert!(e.to_string().contains("fuzz.yaml:"), "{e}"),
        }
    }

    /// The canonical form is JSON, the same value, the same text whatever the key order, and a
    /// fixed point.
    #[test]
    fn canonical_json_is_stable(v in json_value()) {
        let a = canonical_json(&v);
        let back: Value = serde_json::from_slice(&a).expect("canonical text is JSON");
        prop_assert_eq!(&canonical_json(&back), &a);
        prop_assert_eq!(&canonical_json(&reordered(&v)), &a);
    }

    /// SSE framing does not depend on where the stream was cut, loses no byte of a stream that
    /// ends normally, and never panics on arbitrary bytes.
    #[test]
    fn sse_framing_is_independent_of_chunking(text in sse_text(), cuts in prop::collection::vec(any::<usize>(), 0..8)) {
        let whole = framed(text.as_bytes(), &[]);
        let cut = framed(text.as_bytes(), &cuts);
        prop_assert_eq!(&whole, &cut);
        prop_assert_eq!(&whole.0[..], text.as_bytes());
    }

    #[test]
    fn sse_framing_takes_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512), cuts in prop::collection::vec(any::<usize>(), 0..8)) {
        let (out, _, _) = framed(&bytes, &cuts);
        prop_assert_eq!(out, bytes);
    }

    /// The `usage` scanner reads what serde reads, from a whole answer (compact or pretty), and
    /// from any tail of one either that or nothing; no bytes make it panic.
    #[test]
    fn usage_scan_agrees_with_serde(doc in answer_doc(), cut in any::<prop::sample::Index>(), junk in prop::collection::vec(any::<u8>(), 0..64)) {
        for text in [serde_json::to_vec(&doc).unwrap(), serde_json::to_vec_pretty(&doc).unwrap()] {
            let want = serde_usage(&text);
            prop_assert_eq!(usage::find(&text), want, "{}", String::from_utf8_lossy(&text));
            let tail = &text[cut.index(text.len())..];
            let got = usage::find(tail);
            prop_assert!(got.is_none() || got == want, "tail {:?}", String::from_utf8_lossy(tail));
        }
        let _ = usage::find(&junk);
    }

    /// A normalised path starts with '/', has no dot segments or empty segments left, and is
    /// a fixed point; nothing panics.
    #[test]
    fn path_normalisation_is_safe(p in "(/|[a-z]|\\.|%2[eEfF]|%5[cC]|%00|\\\\){0,24}") {
        if let Ok(n) = path::normalize(&p) {
            prop_assert!(n.starts_with('/'));
            let segs: Vec<&str> = n[1..].split('/').collect();
            for (i, s) in segs.iter().enumerate() {
                prop_assert!(*s != "." && *s != "..", "{n}");
                prop_assert!(!s.is_empty() || i == segs.len() - 1, "{n}");
            }
            prop_assert_eq!(path::normalize(&n).unwrap(), n.clone());
        }
    }

    /// Hop-by-hop stripping finds every `Connection`-named header present, and nothing else but
    /// the fixed set.
    #[test]
    fn hop_by_hop_headers_are_found(named in prop::collection::vec("[a-z]{1,6}", 0..5), other in prop::collection::vec("[a-z]{1,6}", 0..5)) {
        let mut h = http::HeaderMap::new();
        h.insert("connection", named.join(", ").parse().unwrap_or(http::HeaderValue::from_static("close")));
        for n in named.iter().chain(other.iter()) {
            h.insert(http::HeaderName::from_bytes(n.as_bytes()).unwrap(), "1".parse().unwrap());
        }
        let found = switchyard::hop::present(&h);
        for n in &named {
            prop_assert!(found.iter().any(|f| f.as_str() == n), "{n} not found");
        }
        for f in &found {
            prop_assert!(named.iter().any(|n| n == f.as_str()) || switchyard::hop::is_hop_by_hop(f));
        }
    }
}
