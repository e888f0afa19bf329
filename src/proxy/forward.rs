//! The request header every try sends upstream: the client's, minus hop-by-hop headers (the
//! fixed set, those its `Connection` names, and `expect`, which switchyard answers itself), with
//! the normalised path, `content-length` for the buffered body, `x-request-id`, and the
//! forwarding headers (`x-forwarded-for`, `forwarded`, `x-forwarded-proto`) as the client's
//! [`Identity`] allows; and the first try's `traceparent`.

use super::identity::{forwarded_node, Identity};
use crate::downstream::Downstream;
use bytes::Bytes;
use http::HeaderName;
use pingora::http::RequestHeader;
use pingora::Result;

/// The upstream request, as a header (for tries that add an API key) and on the wire.
pub struct Forward {
    pub header: RequestHeader,
    /// `header` as HTTP/1.1 bytes.
    pub wire: Bytes,
    /// `header` as each cluster wants it (see `rewrite.rs`), built on first use.
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
    /// The upstream request for `client`'s request.
    pub fn new(client: &impl Downstream, o: &Origin<'_>) -> Result<Forward> {
        let mut header = client_facing(client, o)?;
        forwarding(&mut header, client, o)?;
        if let Some(t) = o.traceparent {
            header.insert_header("traceparent", t)?;
        }
        let wire = crate::upstream::wire(&header)?;
        Ok(Forward {
            header,
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
        || name == http::header::CONTENT_LENGTH
        || name == http::header::EXPECT
        || (!trusted
            && matches!(
                name.as_str(),
                "x-forwarded-for" | "forwarded" | "x-forwarded-proto" | "x-real-ip"
            ))
}

/// The client-facing part: the client's end-to-end headers, `Host`, the body's length and the
/// request id.
fn client_facing(client: &impl Downstream, o: &Origin<'_>) -> Result<RequestHeader> {
    let req = client.req_header();
    let mut up = RequestHeader::build(
        req.method.clone(),
        o.path.as_bytes(),
        Some(req.headers.len() + 4),
    )?;
    let named = crate::hop::connection_named(&req.headers);
    for (name, value) in req.headers.iter() {
        if !dropped(name, &named, o.identity.trusted) {
            up.append_header(name.clone(), value.clone())?;
        }
    }
    if up.headers.get(http::header::HOST).is_none() {
        if let Some(auth) = req.uri.authority() {
            up.insert_header(http::header::HOST, auth.as_str())?;
        }
    }
    if o.body_len > 0 || req.method == http::Method::POST || req.method == http::Method::PUT {
        up.insert_header(http::header::CONTENT_LENGTH, o.body_len.to_string())?;
    }
    up.insert_header("x-request-id", o.request_id)?;
    Ok(up)
}

/// `x-forwarded-for`, `forwarded` and `x-forwarded-proto`: set from the TCP peer, or extended
/// when the peer is a trusted proxy (whose own values were kept by [`client_facing`]).
fn forwarding(up: &mut RequestHeader, client: &impl Downstream, o: &Origin<'_>) -> Result<()> {
    let proto = if client.is_tls() { "https" } else { "http" };
    if let Some(peer) = o.identity.peer {
        let join = |name: &str, add: String| {
            let prev: Vec<&str> = up
                .headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            if prev.is_empty() {
                add
            } else {
                format!("{}, {add}", prev.join(", "))
            }
        };
        let xff = join("x-forwarded-for", peer.to_string());
        let fwd = join(
            "forwarded",
            format!("for={};proto={proto}", forwarded_node(peer)),
        );
        up.insert_header("x-forwarded-for", xff)?;
        up.insert_header("forwarded", fwd)?;
    }
    if !o.identity.trusted || up.headers.get("x-forwarded-proto").is_none() {
        up.insert_header("x-forwarded-proto", proto)?;
    }
    Ok(())
}
