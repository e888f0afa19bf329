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
const KEY_VERSION: &[u8] = b"switchyard-cache-key-v2";

/// The codings a request accepts, normalised: lower-case, `q=0` dropped, sorted, deduplicated
/// (`gzip, br;q=0.5` and `BR, gzip` are one key; an absent header is the empty string).
pub fn accept_encoding(headers: &HeaderMap) -> String {
    let mut codings: Vec<String> = headers
        .get_all(http::header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|item| {
            let mut parts = item.split(';');
            let coding = parts.next()?.trim().to_ascii_lowercase();
            let refused = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (!coding.is_empty() && !refused).then_some(coding)
        })
        .collect();
    codings.sort_unstable();
    codings.dedup();
    codings.join(",")
}

/// May an answer whose `Vary` is in `headers` be shared, when the key covers `keyed` request
/// headers (the route's `vary_headers`, and `accept-encoding`)? Not with `Vary: *`, nor when it
/// varies on a request header the key does not hold.
pub fn vary_covered(headers: &HeaderMap, keyed: &[HeaderName]) -> bool {
    headers
        .get_all(http::header::VARY)
        .iter()
        .flat_map(|v| v.to_str().map(|s| s.split(',')).into_iter().flatten())
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .all(|t| {
            t != "*"
                && (t.eq_ignore_ascii_case("accept-encoding")
                    || keyed.iter().any(|k| k.as_str().eq_ignore_ascii_case(t)))
        })
}

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

/// What identifies a request besides its headers and body.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub route: &'a str,
    pub method: &'a Method,
    pub path_and_query: &'a str,
    /// The host, when the route does not match on it (else requests for two virtual hosts
    /// could share an entry); `None` when the route's host matcher already fixes it.
    pub host: Option<&'a str>,
}

/// The key of a request. `json` is the parsed body when it is JSON (see [`parse_json`]). Besides
/// the target and the `vary` headers, the key holds the request's `accept-encoding`, normalised
/// (see [`accept_encoding`]): an answer the upstream compressed for one client is never replayed
/// to a client that cannot decode it.
pub fn key(
    t: Target<'_>,
    headers: &HeaderMap,
    vary: &[HeaderName],
    body: &[u8],
    json: Option<&Value>,
) -> CacheKey {
    let mut h = Sha256::new();
    put_len_prefixed(&mut h, KEY_VERSION);
    put_len_prefixed(&mut h, t.route.as_bytes());
    put_len_prefixed(&mut h, t.method.as_str().as_bytes());
    put_len_prefixed(&mut h, t.path_and_query.as_bytes());
    match t.host {
        Some(host) => put_len_prefixed(&mut h, host.to_ascii_lowercase().as_bytes()),
        None => h.put(b"-"),
    }
    put_len_prefixed(&mut h, accept_encoding(headers).as_bytes());
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
mod tests;
