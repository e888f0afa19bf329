//! The cache key, and what a request or response says about caching.
//!
//! Two requests share an entry only when they would get the same answer from a deterministic
//! model: same route, method, path and query, same body *meaning* and the same values of the
//! route's `vary_headers` (the tenant). The body is keyed by its canonical JSON form (parsed,
//! object keys sorted bytewise, no insignificant whitespace, numbers in one spelling), so key
//! order and whitespace do not split entries, while every field (model, messages, system prompt,
//! tools, `stream`, `max_tokens`, `stop`, `seed`, every sampling parameter) still takes part. A
//! body that is not JSON is keyed by its bytes. The parts are length-prefixed and digested with
//! SHA-256: a 64-bit hash could collide and hand one tenant another's answer.

use http::{HeaderMap, HeaderName, Method};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::io::Write;

/// SHA-256 of everything that identifies an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey(pub [u8; 32]);

/// Bumped when the key layout changes, so that old and new layouts can never meet.
const KEY_VERSION: &[u8] = b"switchyard-cache-key-v1";

/// The request's own `cache-control` wishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestControl {
    Normal,
    /// `no-cache`: skip the lookup, answer from upstream, refresh the entry.
    NoCache,
    /// `no-store`: leave the cache out entirely.
    NoStore,
}

/// Does a `cache-control` header carry `directive` (case-insensitive, arguments ignored)?
fn has_directive(headers: &HeaderMap, directive: &str) -> bool {
    headers
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| {
            let name = d.split('=').next().unwrap_or("").trim();
            name.eq_ignore_ascii_case(directive)
        })
}

/// Read the request's `cache-control`; `no-store` wins over `no-cache`.
pub fn request_control(headers: &HeaderMap) -> RequestControl {
    if has_directive(headers, "no-store") {
        RequestControl::NoStore
    } else if has_directive(headers, "no-cache") {
        RequestControl::NoCache
    } else {
        RequestControl::Normal
    }
}

/// May an upstream answer with these headers be stored (and shared)? Not when the upstream
/// marked it `no-store` or `private`.
pub fn response_storable(headers: &HeaderMap) -> bool {
    !has_directive(headers, "no-store") && !has_directive(headers, "private")
}

/// The body as JSON, if it is JSON.
pub fn parse_json(body: &[u8]) -> Option<Value> {
    if body.is_empty() {
        return None;
    }
    serde_json::from_slice(body).ok()
}

/// Is this a deterministic request: `"temperature": 0`? An absent (or null) temperature counts
/// as the usual default of 1, and a body that is not a JSON object has none.
pub fn deterministic(json: Option<&Value>) -> bool {
    json.and_then(|v| v.get("temperature"))
        .and_then(Value::as_f64)
        .is_some_and(|t| t == 0.0)
}

/// Where the key material goes: the digest on the request path, a buffer in tests.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Sha256 {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

fn put_len_prefixed(out: &mut impl Sink, bytes: &[u8]) {
    out.put(&(bytes.len() as u64).to_le_bytes());
    out.put(bytes);
}

/// The key of a request. `json` is the parsed body when it is JSON (see [`parse_json`]).
pub fn key(
    route: &str,
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    vary: &[HeaderName],
    body: &[u8],
    json: Option<&Value>,
) -> CacheKey {
    let mut h = Sha256::new();
    put_len_prefixed(&mut h, KEY_VERSION);
    put_len_prefixed(&mut h, route.as_bytes());
    put_len_prefixed(&mut h, method.as_str().as_bytes());
    put_len_prefixed(&mut h, path_and_query.as_bytes());
    h.put(&(vary.len() as u64).to_le_bytes());
    for name in vary {
        put_len_prefixed(&mut h, name.as_str().as_bytes());
        let mut values = headers.get_all(name).iter().peekable();
        if values.peek().is_none() {
            // Absent differs from present-but-empty.
            h.put(b"-");
            continue;
        }
        let mut d = Sha256::new();
        for v in values {
            put_len_prefixed(&mut d, v.as_bytes());
        }
        h.put(b"+");
        h.put(&d.finalize());
    }
    // The body goes last, so it needs no length prefix.
    match json {
        Some(v) => {
            h.put(b"J");
            // Written out first and digested in one go: many tiny digest updates cost more.
            let mut text = Vec::with_capacity(body.len());
            canonical(v, &mut text);
            h.put(&text);
        }
        None => {
            h.put(b"B");
            h.put(body);
        }
    }
    CacheKey(h.finalize().into())
}

/// The canonical JSON text of `v` (what [`key`] digests for a JSON body).
pub fn canonical_json(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    canonical(v, &mut out);
    out
}

fn canonical(v: &Value, out: &mut impl Sink) {
    match v {
        Value::Null => out.put(b"null"),
        Value::Bool(true) => out.put(b"true"),
        Value::Bool(false) => out.put(b"false"),
        Value::Number(n) => number(n, out),
        Value::String(s) => string(s, out),
        Value::Array(items) => {
            out.put(b"[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.put(b",");
                }
                canonical(item, out);
            }
            out.put(b"]");
        }
        Value::Object(map) => {
            // Sorted here, whatever order the map keeps (serde_json's `preserve_order` feature
            // may be switched on by any crate in the build).
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.put(b"{");
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.put(b",");
                }
                string(k, out);
                out.put(b":");
                canonical(item, out);
            }
            out.put(b"}");
        }
    }
}

/// One spelling per value: `0`, `0.0` and `-0` are the same temperature; integral floats within
/// the exact range of f64 are written as integers, others in shortest round-trip form.
fn number(n: &serde_json::Number, out: &mut impl Sink) {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    let mut buf = [0u8; 40];
    let mut w = &mut buf[..];
    let written = if let Some(u) = n.as_u64() {
        write!(w, "{u}")
    } else if let Some(i) = n.as_i64() {
        write!(w, "{i}")
    } else if let Some(f) = n.as_f64() {
        if f.fract() == 0.0 && f.abs() < EXACT {
            write!(w, "{}", f as i64)
        } else {
            // Shortest round-trip form (at most 24 characters).
            write!(w, "{f:?}")
        }
    } else {
        write!(w, "{n}")
    };
    match written {
        Ok(()) => {
            let len = 40 - w.len();
            out.put(&buf[..len]);
        }
        Err(_) => out.put(n.to_string().as_bytes()),
    }
}

fn string(s: &str, out: &mut impl Sink) {
    out.put(b"\"");
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => {
                out.put(&bytes[start..i]);
                out.put(format!("\\u{b:04x}").as_bytes());
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.put(&bytes[start..i]);
        out.put(escaped);
        start = i + 1;
    }
    out.put(&bytes[start..]);
    out.put(b"\"");
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use serde_json::json;

    fn key_of(body: &str, headers: &HeaderMap) -> CacheKey {
        let json = parse_json(body.as_bytes());
        key(
            "chat",
            &Method::POST,
            "/v1/chat/completions",
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
                route,
                method,
                path,
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
        let v: Value = serde_json::from_str(
            r#"{"b":"q\"\\\n\u0001é","a":[1.5,-0.0,1e2,12345678901234567890]}"#,
        )
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
}
