//! The upstream request header as one cluster (and one peer's host) wants it: the request's
//! forwarded header ([`Forward`]) with the cluster's `Host`, its path prefix rewrite, and, when
//! the cluster has an API-key pool, the client's credentials removed and the pool's key set.
//!
//! The client's credentials are its own (often its token for switchyard): they never cross into
//! a cluster whose upstream is reached with pooled keys. Removed are `authorization`,
//! `x-api-key`, `api-key` and every header in `api_keys.strip_headers`, whatever header the pool
//! itself uses.
//!
//! A request's header is rewritten once per cluster and host and kept for its further tries (a
//! retry inside the cluster only sets another key); a cluster that rewrites nothing sends the
//! forwarded header as it is.

use super::forward::Forward;
use crate::snapshot::{Cluster, Peer};
use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderValue;
use pingora::Result;
use std::sync::Mutex;

/// Client headers that carry credentials, removed before a pool's key is set.
pub const CREDENTIALS: &[&str] = &["authorization", "x-api-key", "api-key"];

/// The headers of one request rewritten per cluster: (cluster index, host, header on the wire).
#[derive(Default)]
pub struct Rewritten(Mutex<Vec<(usize, Option<HeaderValue>, Bytes)>>);

impl Forward {
    /// The header a try to `peer` of `cluster` (at index `ci`) sends, carrying API key `key` of
    /// the cluster's pool when it has one.
    pub fn for_try(
        &self,
        ci: usize,
        cluster: &Cluster,
        peer: &Peer,
        key: Option<usize>,
    ) -> Result<Bytes> {
        let rw = &cluster.cfg.rewrite;
        let pool = cluster.keys.as_ref();
        let plain = peer.host.is_none()
            && rw.strip_prefix.is_none()
            && rw.add_prefix.is_none()
            && pool.is_none();
        let head = if plain {
            self.wire.clone()
        } else {
            self.rewritten(ci, cluster, peer)?
        };
        match (pool, key) {
            (Some(pool), Some(k)) => {
                let value = pool.keys[k].header_value();
                Ok(with_header(&head, pool.cfg.header.as_str(), value))
            }
            _ => Ok(head),
        }
    }

    /// The cluster's header for `peer`'s host, built on first use.
    fn rewritten(&self, ci: usize, cluster: &Cluster, peer: &Peer) -> Result<Bytes> {
        let mut cache = self.per_cluster.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, _, head)) = cache.iter().find(|(c, h, _)| *c == ci && *h == peer.host) {
            return Ok(head.clone());
        }
        let mut req = self.header.clone();
        if let Some(host) = &peer.host {
            req.insert_header(http::header::HOST, host.clone())?;
        }
        let rw = &cluster.cfg.rewrite;
        if rw.strip_prefix.is_some() || rw.add_prefix.is_some() {
            let path = rewrite_path(
                req.raw_path(),
                rw.strip_prefix.as_deref(),
                rw.add_prefix.as_deref(),
            );
            req.set_raw_path(&path)?;
        }
        if let Some(pool) = &cluster.keys {
            for name in CREDENTIALS {
                while req.remove_header(*name).is_some() {}
            }
            for name in &pool.cfg.strip_headers {
                while req.remove_header(name).is_some() {}
            }
        }
        let head = crate::upstream::wire(&req)?;
        cache.push((ci, peer.host.clone(), head.clone()));
        Ok(head)
    }
}

/// `head` (a whole header on the wire) with one more header line before its end.
fn with_header(head: &[u8], name: &str, value: &HeaderValue) -> Bytes {
    let body = head.strip_suffix(b"\r\n").unwrap_or(head);
    let mut out = BytesMut::with_capacity(body.len() + name.len() + value.len() + 6);
    out.put_slice(body);
    out.put_slice(name.as_bytes());
    out.put_slice(b": ");
    out.put_slice(value.as_bytes());
    out.put_slice(b"\r\n\r\n");
    out.freeze()
}

/// `path` (with its query) without `strip` at its start (only on a segment boundary) and with
/// `add` before it.
pub fn rewrite_path(path: &[u8], strip: Option<&str>, add: Option<&str>) -> Vec<u8> {
    let mut rest = path;
    if let Some(s) = strip {
        if let Some(after) = path.strip_prefix(s.as_bytes()) {
            if after.is_empty() || after[0] == b'/' || after[0] == b'?' {
                rest = after;
            }
        }
    }
    let mut out = Vec::with_capacity(rest.len() + add.map_or(0, str::len) + 1);
    out.extend_from_slice(add.unwrap_or("").as_bytes());
    if !rest.starts_with(b"/") {
        out.push(b'/');
    }
    out.extend_from_slice(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(path: &str, strip: Option<&str>, add: Option<&str>) -> String {
        String::from_utf8(rewrite_path(path.as_bytes(), strip, add)).unwrap()
    }

    #[test]
    fn prefixes_are_stripped_on_a_segment_boundary_and_added() {
        assert_eq!(
            rw("/v1/chat/completions", Some("/v1"), None),
            "/chat/completions"
        );
        assert_eq!(
            rw("/v1/chat?x=1", Some("/v1"), Some("/openai/v1")),
            "/openai/v1/chat?x=1"
        );
        assert_eq!(rw("/v1", Some("/v1"), None), "/");
        assert_eq!(rw("/v1?q", Some("/v1"), None), "/?q");
        assert_eq!(rw("/v1beta/models", Some("/v1"), None), "/v1beta/models");
        assert_eq!(rw("/other", Some("/v1"), Some("/p")), "/p/other");
        assert_eq!(rw("/v1/x", None, Some("/api")), "/api/v1/x");
    }

    #[test]
    fn a_header_line_goes_before_the_end() {
        let head = b"GET / HTTP/1.1\r\nhost: a\r\n\r\n";
        let v = HeaderValue::from_static("k1");
        let out = with_header(head, "x-api-key", &v);
        assert_eq!(
            &out[..],
            b"GET / HTTP/1.1\r\nhost: a\r\nx-api-key: k1\r\n\r\n"
        );
    }
}
