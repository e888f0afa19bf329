//! The upstream request head as one cluster (and one peer's host) wants it: the request's
//! forwarded head ([`Forward`], edited as bytes, line by line) with the cluster's `Host`, its path
//! prefix rewrite, and, when the cluster has an API-key pool, the client's credentials removed
//! and the pool's key set.
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
use http::{HeaderName, HeaderValue};
use pingora::{Error, ErrorType, Result};
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

    /// The cluster's head for `peer`'s host, built on first use from the plain one.
    fn rewritten(&self, ci: usize, cluster: &Cluster, peer: &Peer) -> Result<Bytes> {
        let mut cache = self.per_cluster.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, _, head)) = cache.iter().find(|(c, h, _)| *c == ci && *h == peer.host) {
            return Ok(head.clone());
        }
        let rw = &cluster.cfg.rewrite;
        let e = Edit {
            host: peer.host.as_ref(),
            strip: rw.strip_prefix.as_deref(),
            add: rw.add_prefix.as_deref(),
            credentials: cluster
                .keys
                .as_ref()
                .map(|p| p.cfg.strip_headers.as_slice()),
        };
        let head = edit(&self.wire, &e)?;
        cache.push((ci, peer.host.clone(), head.clone()));
        Ok(head)
    }
}

/// What a cluster changes in the forwarded head.
struct Edit<'a> {
    /// The peer's `Host`.
    host: Option<&'a HeaderValue>,
    /// Path prefixes taken off and put on.
    strip: Option<&'a str>,
    add: Option<&'a str>,
    /// With a key pool: the client's credentials go, [`CREDENTIALS`] and these.
    credentials: Option<&'a [HeaderName]>,
}

/// `head` (as `forward.rs` wrote it) edited by `e`: `Host` where the client's was (else after the
/// other headers), the path rewritten, credentials dropped.
fn edit(head: &[u8], e: &Edit<'_>) -> Result<Bytes> {
    let bad = || {
        Error::e_explain(
            ErrorType::InvalidHTTPHeader,
            "the request line has a byte HTTP/1.1 forbids",
        )
    };
    let Some(end) = memchr::memmem::find(head, b"\r\n") else {
        return bad();
    };
    let request_line = &head[..end];
    let (Some(sp1), Some(sp2)) = (
        memchr::memchr(b' ', request_line),
        memchr::memrchr(b' ', request_line),
    ) else {
        return bad();
    };
    let host = e.host;
    let mut out = BytesMut::with_capacity(head.len() + 128);
    out.put_slice(&request_line[..=sp1]);
    let path = &request_line[sp1 + 1..sp2];
    if e.strip.is_some() || e.add.is_some() {
        let path = rewrite_path(path, e.strip, e.add);
        if path.iter().any(|&b| matches!(b, 0 | b'\n' | b'\r' | b' ')) {
            return bad();
        }
        out.put_slice(&path);
    } else {
        out.put_slice(path);
    }
    out.put_slice(&request_line[sp2..]);
    out.put_slice(b"\r\n");
    let credential = |name: &[u8]| {
        e.credentials.is_some_and(|more| {
            CREDENTIALS
                .iter()
                .any(|c| name.eq_ignore_ascii_case(c.as_bytes()))
                || more
                    .iter()
                    .any(|s| name.eq_ignore_ascii_case(s.as_str().as_bytes()))
        })
    };
    let mut host_written = false;
    let fields = &head[end + 2..];
    for field in fields.split(|&b| b == b'\n') {
        let field = field.strip_suffix(b"\r").unwrap_or(field);
        if field.is_empty() {
            continue;
        }
        let name = &field[..memchr::memchr(b':', field).unwrap_or(field.len())];
        if credential(name) {
            continue;
        }
        if let (true, Some(h)) = (name.eq_ignore_ascii_case(b"host"), host) {
            if !std::mem::replace(&mut host_written, true) {
                host_line(&mut out, h);
            }
            continue;
        }
        out.put_slice(field);
        out.put_slice(b"\r\n");
    }
    if let (false, Some(h)) = (host_written, host) {
        host_line(&mut out, h);
    }
    out.put_slice(b"\r\n");
    Ok(out.freeze())
}

fn host_line(out: &mut BytesMut, host: &HeaderValue) {
    out.put_slice(b"Host: ");
    out.put_slice(host.as_bytes());
    out.put_slice(b"\r\n");
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

    fn edited(head: &str, e: &Edit<'_>) -> String {
        String::from_utf8(edit(head.as_bytes(), e).unwrap().to_vec()).unwrap()
    }

    #[test]
    fn a_cluster_edits_host_path_and_credentials_in_place() {
        let head =
            "POST /v1/chat?x=1 HTTP/1.1\r\nx-a: 1\r\nHost: client\r\nAuthorization: Bearer c\r\n\
                    x-api-key: k\r\nx-team: t\r\nContent-Length: 2\r\n\r\n";
        let host = HeaderValue::from_static("peer.example");
        let more = [HeaderName::from_static("x-team")];
        let e = Edit {
            host: Some(&host),
            strip: Some("/v1"),
            add: Some("/openai"),
            credentials: Some(&more),
        };
        assert_eq!(
            edited(head, &e),
            "POST /openai/chat?x=1 HTTP/1.1\r\nx-a: 1\r\nHost: peer.example\r\nContent-Length: 2\r\n\r\n"
        );
        // No pool: credentials stay; no Host in the head: the peer's goes last.
        let e = Edit {
            host: Some(&host),
            strip: None,
            add: None,
            credentials: None,
        };
        assert_eq!(
            edited("GET / HTTP/1.1\r\nauthorization: b\r\n\r\n", &e),
            "GET / HTTP/1.1\r\nauthorization: b\r\nHost: peer.example\r\n\r\n"
        );
        let e = Edit {
            host: None,
            strip: None,
            add: Some("/a b"),
            credentials: None,
        };
        assert!(
            edit(b"GET / HTTP/1.1\r\n\r\n", &e).is_err(),
            "a space in the path"
        );
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
