//! The request head every try sends upstream, written straight to its HTTP/1.1 bytes: the
//! request line (method, the normalised path, `HTTP/1.1`), then the client's headers in the order
//! they came, minus hop-by-hop headers (the fixed set, those its `Connection` names, and
//! `expect`, which switchyard answers itself), with `content-length` for the buffered body,
//! `x-request-id`, the forwarding headers (`x-forwarded-for`, `forwarded`, `x-forwarded-proto`)
//! as the client's [`Identity`] allows, and the first try's `traceparent`.
//!
//! This is the request path's hottest allocation site, so the head is written once into one
//! buffer sized up front, with no header map built in between. A header switchyard sets that the
//! client also sent is written where the client's was (its first line), any other line of that
//! name dropped; the ones the client did not send follow its headers, in the order above. Names
//! are written lower-case, but for the few Pingora's serialiser wrote titled (`Host`,
//! `Content-Length`, ...): the bytes a peer sees are the ones it saw before this writer. A value
//! never holds CR, LF or NUL (an `http::HeaderValue` cannot, and what switchyard writes is digits,
//! hex, addresses and tokens), so a line is never folded nor split; a path with such a byte (or
//! a space) is refused.

use super::ctx::Ctx;
use super::identity::{forwarded_node, Identity};
use crate::downstream::Downstream;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use http::Method;
use pingora::{Error, ErrorType, Result};
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr};

/// The upstream request head on the wire.
pub struct Forward {
    /// The head every cluster without a rewrite sends (see `rewrite.rs` for the others).
    pub wire: Bytes,
    /// `wire` as each cluster wants it, built on first use.
    pub(super) per_cluster: super::rewrite::Rewritten,
}

/// What the upstream request is made of besides the client's header.
pub struct Origin<'a> {
    /// The path and query to send (normalised).
    pub path: &'a str,
    /// The buffered body's length.
    pub body_len: usize,
    pub request_id: &'a str,
    pub identity: Identity,
    /// The first try's `traceparent` (replacing the client's).
    pub traceparent: Option<&'a [u8]>,
}

impl Forward {
    /// The upstream request for `client`'s request as it stands (its path normalised), with a
    /// body of `body_len` bytes: the one way the first tries and a resumed stream's
    /// continuations build it.
    pub(super) fn of(
        client: &impl Downstream,
        ctx: &Ctx,
        body_len: usize,
        request_id: &str,
    ) -> Result<Forward> {
        let req = client.req_header();
        let path = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let traceparent = ctx.trace.as_ref().map(|t| t.upstream_value());
        let origin = Origin {
            path,
            body_len,
            request_id,
            identity: ctx.identity,
            traceparent: traceparent.as_ref().map(|v| v.as_bytes()),
        };
        Forward::new(client, &origin)
    }

    /// The upstream request for `client`'s request.
    pub fn new(client: &impl Downstream, o: &Origin<'_>) -> Result<Forward> {
        let req = client.req_header();
        let wire = write_head(
            &req.method,
            &req.headers,
            req.uri.authority(),
            client.is_tls(),
            o,
        )?;
        Ok(Forward {
            wire,
            per_cluster: Default::default(),
        })
    }
}

/// Headers of the client's request that are not passed on: hop-by-hop ones, the body's framing
/// (re-framed for the buffered body) and what switchyard answers or sets itself.
fn dropped(name: &HeaderName, named: &[HeaderName], trusted: bool) -> bool {
    crate::hop::is_hop_by_hop(name)
        || named.contains(name)
        || name == header::CONTENT_LENGTH
        || name == header::EXPECT
        || (!trusted
            && matches!(
                name.as_str(),
                "x-forwarded-for" | "forwarded" | "x-forwarded-proto" | "x-real-ip"
            ))
}

/// Which of the headers switchyard sets the client's request already had (and were written).
#[derive(Default)]
struct Written {
    host: bool,
    request_id: bool,
    xff: bool,
    forwarded: bool,
    proto: bool,
    traceparent: bool,
}

/// The whole upstream head. `authority` is the request target's (an absolute-form or HTTP/2
/// request), used as `Host` when the client sent none.
fn write_head(
    method: &Method,
    headers: &HeaderMap,
    authority: Option<&http::uri::Authority>,
    tls: bool,
    o: &Origin<'_>,
) -> Result<Bytes> {
    let path = o.path.as_bytes();
    if path.iter().any(|&b| matches!(b, 0 | b'\n' | b'\r' | b' ')) {
        return Error::e_explain(
            ErrorType::InvalidHTTPHeader,
            "the request line has a byte HTTP/1.1 forbids",
        );
    }
    let named = crate::hop::connection_named(headers);
    let trusted = o.identity.trusted;
    let proto = if tls { "https" } else { "http" };
    let fields: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    // What switchyard adds: host, length, id, the forwarding trio, traceparent (generously).
    let mut out = Vec::with_capacity(method.as_str().len() + path.len() + fields + 384);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut w = Written::default();
    let mut last: Option<&HeaderName> = None;
    for (name, value) in headers.iter() {
        // A name's values come one after another; what switchyard sets is written at the first.
        let first = last != Some(name);
        last = Some(name);
        if dropped(name, &named, trusted) {
            continue;
        }
        if name == "x-request-id" {
            if first {
                line(&mut out, b"x-request-id", o.request_id.as_bytes());
            }
            w.request_id = true;
        } else if name == "traceparent" && o.traceparent.is_some() {
            if let (true, Some(t)) = (first, o.traceparent) {
                line(&mut out, b"traceparent", t);
            }
            w.traceparent = true;
        } else if (name == "x-forwarded-for" || name == header::FORWARDED)
            && o.identity.peer.is_some()
        {
            if let (true, Some(peer)) = (first, o.identity.peer) {
                forwarding_line(&mut out, name, Some(headers), peer, proto);
            }
            w.xff |= name == "x-forwarded-for";
            w.forwarded |= name == header::FORWARDED;
        } else {
            w.host |= name == header::HOST;
            w.proto |= name == "x-forwarded-proto";
            line(&mut out, wire_name(name).as_bytes(), value.as_bytes());
        }
    }
    if !w.host {
        if let Some(auth) = authority {
            line(&mut out, b"Host", auth.as_str().as_bytes());
        }
    }
    if o.body_len > 0 || method == Method::POST || method == Method::PUT {
        let mut digits = [0u8; 20];
        line(
            &mut out,
            b"Content-Length",
            decimal(o.body_len, &mut digits),
        );
    }
    if !w.request_id {
        line(&mut out, b"x-request-id", o.request_id.as_bytes());
    }
    if let Some(peer) = o.identity.peer {
        // Not sent by the client, or not kept: this hop alone.
        if !w.xff {
            let xff = HeaderName::from_static("x-forwarded-for");
            forwarding_line(&mut out, &xff, None, peer, proto);
        }
        if !w.forwarded {
            forwarding_line(&mut out, &header::FORWARDED, None, peer, proto);
        }
    }
    if !w.proto {
        line(&mut out, b"x-forwarded-proto", proto.as_bytes());
    }
    if let (false, Some(t)) = (w.traceparent, o.traceparent) {
        line(&mut out, b"traceparent", t);
    }
    out.extend_from_slice(b"\r\n");
    Ok(Bytes::from(out))
}

/// One header line.
fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `x-forwarded-for` or `forwarded` (`name`) for TCP peer `peer`: the client's values of it in
/// `kept` (a trusted proxy's, see [`dropped`]) joined, then this hop.
fn forwarding_line(
    out: &mut Vec<u8>,
    name: &HeaderName,
    kept: Option<&HeaderMap>,
    peer: IpAddr,
    proto: &str,
) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    let mut sep = "";
    let prev = kept
        .into_iter()
        .flat_map(|h| h.get_all(name))
        .filter_map(|v| v.to_str().ok());
    for prev in prev {
        out.extend_from_slice(sep.as_bytes());
        out.extend_from_slice(prev.as_bytes());
        sep = ", ";
    }
    out.extend_from_slice(sep.as_bytes());
    match (name == header::FORWARDED, peer) {
        (true, IpAddr::V4(v4)) => {
            out.extend_from_slice(b"for=");
            put_ipv4(out, v4);
            out.extend_from_slice(b";proto=");
            out.extend_from_slice(proto.as_bytes());
        }
        // Writing an address into a `Vec` cannot fail.
        (true, IpAddr::V6(_)) => {
            let _ = write!(out, "for={};proto={proto}", forwarded_node(peer));
        }
        (false, IpAddr::V4(v4)) => put_ipv4(out, v4),
        (false, IpAddr::V6(v6)) => {
            let _ = write!(out, "{v6}");
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// A header's name as it is written: titled for the standard headers Pingora's serialiser titled,
/// lower-case for the rest.
fn wire_name(name: &HeaderName) -> &str {
    match *name {
        header::ACCEPT_RANGES => "Accept-Ranges",
        header::AGE => "Age",
        header::CACHE_CONTROL => "Cache-Control",
        header::CONNECTION => "Connection",
        header::CONTENT_TYPE => "Content-Type",
        header::CONTENT_ENCODING => "Content-Encoding",
        header::CONTENT_LENGTH => "Content-Length",
        header::DATE => "Date",
        header::TRANSFER_ENCODING => "Transfer-Encoding",
        header::HOST => "Host",
        header::SERVER => "Server",
        header::SET_COOKIE => "Set-Cookie",
        _ => name.as_str(),
    }
}

/// An IPv4 address as `Display` writes it, by hand: the formatter cost more than the rest of the
/// head put together.
fn put_ipv4(out: &mut Vec<u8>, ip: Ipv4Addr) {
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        let mut d = [0u8; 20];
        out.extend_from_slice(decimal(usize::from(octet), &mut d));
    }
}

/// `n` in decimal, in `buf`.
fn decimal(mut n: usize, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

#[cfg(test)]
mod tests;
