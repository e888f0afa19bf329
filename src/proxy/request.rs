//! What the request path reads off the client's request header: its request id, the host it is
//! for, and the hash of its sticky key.

use crate::config::StickyKey;
use crate::downstream::Downstream;
use pingora::http::RequestHeader;
use std::hash::{Hash, Hasher};

/// The host the request is for (lower-case is not enforced; the route match ignores case),
/// without its port: `Host`, else the request target's authority.
pub fn host(req: &RequestHeader) -> Option<&str> {
    req.headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri.host())
        .map(|h| h.rsplit_once(':').map_or(h, |(name, _)| name))
}

/// Hash of the request's sticky key, if it has one.
pub fn sticky_hash(client: &impl Downstream, key: &StickyKey) -> Option<u64> {
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
        StickyKey::ClientIp => client.client_ip()?.hash(&mut h),
    }
    Some(h.finish())
}

/// The client's `x-request-id` when it is sane, else a new random one.
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
    format!("{:032x}", rand::random::<u128>())
}
