//! Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection, not the message, so a
//! proxy never passes them on. One list for both directions, plus whatever the message's own
//! `Connection` header names (`Connection: close, x-trace` makes `x-trace` hop-by-hop too).
//! `forward` strips them from the request sent upstream, the relay and the cache from the answer
//! sent to the client (which is then framed for the client's own connection).

use http::{HeaderMap, HeaderName};

/// Headers that are always hop-by-hop.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Is `name` in the fixed hop-by-hop set?
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
}

/// Headers that the `Connection` header(s) of `headers` name (lower-case, valid names only).
pub fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().to_ascii_lowercase().as_bytes()).ok())
        .collect()
}

/// Every hop-by-hop header present in `headers`: the fixed set and the `Connection`-named ones.
pub fn present(headers: &HeaderMap) -> Vec<HeaderName> {
    let mut out: Vec<HeaderName> = headers
        .keys()
        .filter(|k| is_hop_by_hop(k))
        .cloned()
        .collect();
    for n in connection_named(headers) {
        if headers.contains_key(&n) && !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixed_set_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert("connection", "close, X-Trace , bogus name".parse().unwrap());
        h.insert("x-trace", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("content-type", "text/plain".parse().unwrap());
        let mut got: Vec<String> = present(&h).iter().map(|n| n.to_string()).collect();
        got.sort();
        assert_eq!(got, ["connection", "keep-alive", "x-trace"]);
        // `close` names no header present; `bogus name` is not a header name.
        assert_eq!(connection_named(&h).len(), 2);
    }
}
