//! Unit tests of the cache key: canonical JSON, what the key covers and what it ignores.

use super::*;
use http::HeaderValue;
use serde_json::json;

fn key_of(body: &str, headers: &HeaderMap) -> CacheKey {
    let json = parse_json(body.as_bytes());
    key(
        Target {
            route: "chat",
            method: &Method::POST,
            path_and_query: "/v1/chat/completions",
            host: None,
        },
        headers,
        &[http::header::AUTHORIZATION],
        body.as_bytes(),
        json.as_ref(),
    )
}

const BASE: &str = r#"{"model":"m","temperature":0,"max_tokens":16,"seed":1,"stream":false,"stop":["\n"],"top_p":1,"tools":[{"type":"function","function":{"name":"f"}}],"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hello"}]}"#;

#[test]
fn reordered_keys_and_whitespace_give_the_same_key() {
    let h = HeaderMap::new();
    let spaced = r#"
        { "messages" : [ { "content":"be brief", "role":"system" },
                         {"content" : "hello","role":"user"} ],
          "tools":[{"function":{"name":"f"},"type":"function"}],
          "top_p": 1.0, "stop": ["\n"], "stream": false, "seed": 1,
          "max_tokens": 16, "temperature": 0.0, "model": "m" }
    "#;
    assert_eq!(key_of(BASE, &h), key_of(spaced, &h));
    let a = canonical_json(&serde_json::from_str(BASE).unwrap());
    let b = canonical_json(&serde_json::from_str(spaced).unwrap());
    assert_eq!(String::from_utf8(a).unwrap(), String::from_utf8(b).unwrap());
}

#[test]
fn every_field_changes_the_key() {
    let h = HeaderMap::new();
    let base: Value = serde_json::from_str(BASE).unwrap();
    let k0 = key_of(BASE, &h);
    let changes: &[(&str, Value)] = &[
        ("model", json!("other")),
        ("temperature", json!(0.5)),
        ("max_tokens", json!(17)),
        ("seed", json!(2)),
        ("stream", json!(true)),
        ("stop", json!(["END"])),
        ("top_p", json!(0.9)),
        ("tools", json!([])),
        ("presence_penalty", json!(0.1)),
        (
            "messages",
            json!([{"role":"system","content":"be long"},{"role":"user","content":"hello"}]),
        ),
        ("messages", json!([{"role":"user","content":"hello"}])),
    ];
    for (field, value) in changes {
        let mut v = base.clone();
        v[*field] = value.clone();
        let k = key_of(&v.to_string(), &h);
        assert_ne!(k, k0, "changing {field} to {value} must change the key");
    }
}

#[test]
fn route_method_path_and_vary_headers_take_part() {
    let h = HeaderMap::new();
    let json = parse_json(BASE.as_bytes());
    let k = |route: &str, method: &Method, path: &str, headers: &HeaderMap| {
        let vary = [http::header::AUTHORIZATION];
        key(
            Target {
                route,
                method,
                path_and_query: path,
                host: None,
            },
            headers,
            &vary,
            BASE.as_bytes(),
            json.as_ref(),
        )
    };
    let k0 = k("chat", &Method::POST, "/v1/chat/completions", &h);
    assert_ne!(k0, k("chat2", &Method::POST, "/v1/chat/completions", &h));
    assert_ne!(k0, k("chat", &Method::PUT, "/v1/chat/completions", &h));
    assert_ne!(k0, k("chat", &Method::POST, "/v1/completions", &h));
    assert_ne!(k0, k("chat", &Method::POST, "/v1/chat/completions?x=1", &h));
    let mut alice = HeaderMap::new();
    alice.insert("authorization", HeaderValue::from_static("Bearer alice"));
    let mut bob = HeaderMap::new();
    bob.insert("authorization", HeaderValue::from_static("Bearer bob"));
    let mut empty = HeaderMap::new();
    empty.insert("authorization", HeaderValue::from_static(""));
    let ka = k("chat", &Method::POST, "/v1/chat/completions", &alice);
    assert_ne!(ka, k0);
    assert_ne!(ka, k("chat", &Method::POST, "/v1/chat/completions", &bob));
    assert_ne!(k0, k("chat", &Method::POST, "/v1/chat/completions", &empty));
    assert_eq!(
        ka,
        k(
            "chat",
            &Method::POST,
            "/v1/chat/completions",
            &alice.clone()
        )
    );
    // A header that is not in vary_headers does not split entries.
    let mut other = HeaderMap::new();
    other.insert("x-trace", HeaderValue::from_static("1"));
    assert_eq!(k0, k("chat", &Method::POST, "/v1/chat/completions", &other));
}

#[test]
fn non_json_bodies_are_keyed_by_their_bytes() {
    let h = HeaderMap::new();
    assert_eq!(key_of("hello  world", &h), key_of("hello  world", &h));
    assert_ne!(key_of("hello  world", &h), key_of("hello world", &h));
    // A JSON string and raw bytes that spell the same text are different bodies.
    assert_ne!(key_of("\"a\"", &h), key_of("\"a\" x", &h));
    assert_ne!(key_of("", &h), key_of("{}", &h));
}

#[test]
fn canonical_form_escapes_and_numbers() {
    let v: Value =
        serde_json::from_str(r#"{"b":"q\"\\\n\u0001é","a":[1.5,-0.0,1e2,12345678901234567890]}"#)
            .unwrap();
    assert_eq!(
        String::from_utf8(canonical_json(&v)).unwrap(),
        r#"{"a":[1.5,0,100,12345678901234567890],"b":"q\"\\\n\u0001é"}"#
    );
    // The canonical text is JSON that parses back to the same value.
    let back: Value = serde_json::from_slice(&canonical_json(&v)).unwrap();
    assert_eq!(back["b"], v["b"]);
}

#[test]
fn temperature_rules() {
    let det = |s: &str| deterministic(parse_json(s.as_bytes()).as_ref());
    assert!(det(r#"{"temperature":0}"#));
    assert!(det(r#"{"temperature":0.0}"#));
    assert!(det(r#"{"temperature":-0.0}"#));
    assert!(!det(r#"{"temperature":0.7}"#));
    assert!(!det(r#"{"temperature":null}"#));
    assert!(!det(r#"{"temperature":"0"}"#));
    assert!(!det(r#"{"model":"m"}"#), "absent counts as 1");
    assert!(!det("not json"));
    assert!(!det("[0]"));
}

#[test]
fn cache_control_directives() {
    let mut h = HeaderMap::new();
    assert_eq!(request_control(&h), RequestControl::Normal);
    assert!(response_storable(&h));
    h.insert(
        "cache-control",
        HeaderValue::from_static("max-age=0, No-Cache"),
    );
    assert_eq!(request_control(&h), RequestControl::NoCache);
    assert!(response_storable(&h));
    h.append("cache-control", HeaderValue::from_static("no-store"));
    assert_eq!(request_control(&h), RequestControl::NoStore);
    assert!(!response_storable(&h));
    let mut p = HeaderMap::new();
    p.insert(
        "cache-control",
        HeaderValue::from_static("private, max-age=60"),
    );
    assert!(!response_storable(&p));
    let mut n = HeaderMap::new();
    n.insert("cache-control", HeaderValue::from_static("no-storex"));
    assert!(response_storable(&n));
}

#[test]
fn host_and_accept_encoding_take_part() {
    let json = parse_json(BASE.as_bytes());
    let k = |host: Option<&str>, ae: Option<&str>| {
        let mut h = HeaderMap::new();
        if let Some(v) = ae {
            h.insert("accept-encoding", HeaderValue::from_str(v).unwrap());
        }
        let t = Target {
            route: "chat",
            method: &Method::POST,
            path_and_query: "/v1/chat/completions",
            host,
        };
        key(t, &h, &[], BASE.as_bytes(), json.as_ref())
    };
    assert_ne!(k(Some("a.test"), None), k(Some("b.test"), None));
    assert_eq!(k(Some("A.test"), None), k(Some("a.test"), None));
    assert_ne!(k(None, Some("gzip")), k(None, None));
    assert_eq!(k(None, Some("gzip, BR")), k(None, Some("br;q=0.5,gzip")));
    assert_eq!(k(None, Some("gzip;q=0")), k(None, None));
}

#[test]
fn vary_must_be_covered_by_the_key() {
    let h = |v: &str| {
        let mut m = HeaderMap::new();
        m.insert("vary", HeaderValue::from_str(v).unwrap());
        m
    };
    let keyed = [http::header::AUTHORIZATION];
    assert!(vary_covered(&HeaderMap::new(), &keyed));
    assert!(vary_covered(&h("Accept-Encoding, authorization"), &keyed));
    assert!(!vary_covered(&h("*"), &keyed));
    assert!(!vary_covered(&h("accept-language"), &keyed));
}
