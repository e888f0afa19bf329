//! The request header every try sends upstream: the client's, minus hop-by-hop headers, with
//! `content-length` for the buffered body, `x-request-id` and `x-forwarded-*`.

use crate::downstream::Downstream;
use bytes::Bytes;
use pingora::http::RequestHeader;
use pingora::Result;

/// Headers that describe one connection, not the message: never forwarded.
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

/// The upstream request, as a header (for tries that add an API key) and on the wire.
pub struct Forward {
    pub header: RequestHeader,
    /// `header` as HTTP/1.1 bytes.
    pub wire: Bytes,
    /// `header` as each cluster wants it (see `rewrite.rs`), built on first use.
    pub(super) per_cluster: super::rewrite::Rewritten,
}

impl Forward {
    /// The upstream request for `client`'s request, whose body is `body_len` bytes.
    pub fn new(client: &impl Downstream, body_len: usize, request_id: &str) -> Result<Forward> {
        let header = upstream_request(client, body_len, request_id)?;
        let wire = crate::upstream::wire(&header)?;
        Ok(Forward {
            header,
            wire,
            per_cluster: Default::default(),
        })
    }
}

fn upstream_request(
    client: &impl Downstream,
    body_len: usize,
    request_id: &str,
) -> Result<RequestHeader> {
    let req = client.req_header();
    let path = req
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    let mut up = RequestHeader::build(
        req.method.clone(),
        path.as_bytes(),
        Some(req.headers.len() + 4),
    )?;
    for (name, value) in req.headers.iter() {
        if HOP_BY_HOP.contains(&name.as_str()) || name == http::header::CONTENT_LENGTH {
            continue;
        }
        up.append_header(name.clone(), value.clone())?;
    }
    if up.headers.get(http::header::HOST).is_none() {
        if let Some(auth) = req.uri.authority() {
            up.insert_header(http::header::HOST, auth.as_str())?;
        }
    }
    if body_len > 0 || req.method == http::Method::POST || req.method == http::Method::PUT {
        up.insert_header(http::header::CONTENT_LENGTH, body_len.to_string())?;
    }
    up.insert_header("x-request-id", request_id)?;
    if let Some(ip) = client.client_ip() {
        let xff = match req
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(prev) => format!("{prev}, {ip}"),
            None => ip.to_string(),
        };
        up.insert_header("x-forwarded-for", xff)?;
    }
    let proto = if client.is_tls() { "https" } else { "http" };
    up.insert_header("x-forwarded-proto", proto)?;
    Ok(up)
}
