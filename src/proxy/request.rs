//! What the request path reads off the client's request header: its request id, the host it is
//! for, and the hash of its sticky key.

use crate::config::StickyKey;
use crate::downstream::Downstream;
use pingora::http::RequestHeader;
use std::hash::{Hash, Hasher};

/// The host the request is for (lower-case is not enforced; the route match ignores case),
/// without its port. HTTP/2: `:authority`, else `Host` (RFC 9113 §8.3.1); HTTP/1.1: `Host`,
/// else the request target's authority. An IPv6 literal keeps its brackets (`[::1]`).
pub fn host(req: &RequestHeader) -> Option<&str> {
    let header = || {
        req.headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
    };
    let authority = || req.uri.authority().map(|a| a.as_str());
    let raw = if req.version == http::Version::HTTP_2 {
        authority().or_else(header)
    } else {
        header().or_else(authority)
    }?;
    Some(without_port(raw))
}

/// `host[:port]` or `[v6][:port]` without the port.
pub fn without_port(h: &str) -> &str {
    if h.starts_with('[') {
        return h.find(']').map_or(h, |end| &h[..=end]);
    }
    match h.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => h,
    }
}

/// Hash of the request's sticky key, if it has one; `ip` is the client as resolved through
/// trusted proxies.
pub fn sticky_hash(
    client: &impl Downstream,
    key: &StickyKey,
    ip: Option<std::net::IpAddr>,
) -> Option<u64> {
    let mut h = std::hash::DefaultHasher::new();
    let headers = &client.req_header().headers;
    match key {
        StickyKey::Header(name) => headers.get(name)?.as_bytes().hash(&mut h),
        StickyKey::Cookie(name) => {
            let value = headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(|line| {
                    line.split(';').find_map(|kv| {
                        let (k, v) = kv.trim().split_once('=')?;
                        (k == name).then_some(v)
                    })
                })?;
            value.hash(&mut h);
        }
        StickyKey::ClientIp => ip?.hash(&mut h),
    }
    Some(h.finish())
}

/// The client's `x-request-id` when it is sane, else a new random one (32 hex digits).
pub fn request_id(req: &RequestHeader) -> String {
    if let Some(v) = req.headers.get("x-request-id") {
        if let Ok(s) = v.to_str() {
            if !s.is_empty()
                && s.len() <= 128
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
            {
                return s.to_string();
            }
        }
    }
    crate::trace::random_hex_id()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_without_ports_ipv6_included() {
        assert_eq!(without_port("a.test:8080"), "a.test");
        assert_eq!(without_port("a.test"), "a.test");
        assert_eq!(without_port("[::1]:8080"), "[::1]");
        assert_eq!(without_port("[::1]"), "[::1]");
        assert_eq!(without_port("[::1"), "[::1");
        let mut req = RequestHeader::build("GET", b"/x", None).unwrap();
        req.set_uri(http::Uri::from_static("http://a.test/x"));
        req.set_version(http::Version::HTTP_2);
        req.insert_header("host", "b.test").unwrap();
        assert_eq!(host(&req), Some("a.test"), ":authority wins on HTTP/2");
        req.set_version(http::Version::HTTP_11);
        assert_eq!(host(&req), Some("b.test"));
    }
}
