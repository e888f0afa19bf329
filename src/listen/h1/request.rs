//! A request head read off the wire: the `RequestHeader` the stages see (built without
//! Pingora's case-preserving copy of the names), how its body is framed, and what it says about
//! its connection; or why it is refused before any stage sees it.

use crate::wire::{self, Framing, FramingError, HeadError};
use bytes::Bytes;
use http::{header, Method, Version};
use pingora::http::RequestHeader;
use std::mem::MaybeUninit;

/// Most header fields in a request head (Pingora's HTTP/1 server takes as many).
pub const MAX_FIELDS: usize = 256;

/// A request refused by the front end: the status, the error code and the message of its JSON
/// answer. The connection is closed after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub message: &'static str,
}

impl Refusal {
    fn bad(message: &'static str) -> Self {
        Refusal {
            status: 400,
            code: "bad_request",
            message,
        }
    }

    /// The head is over its size limit, or has too many fields: 431.
    pub fn too_large() -> Self {
        Refusal {
            status: 431,
            code: "header_too_large",
            message: "request header is too large",
        }
    }

    /// The head did not arrive within `limits.client_header_timeout`: 408.
    pub fn timeout() -> Self {
        Refusal {
            status: 408,
            code: "client_header_timeout",
            message: "the request header did not arrive in time",
        }
    }
}

impl From<HeadError> for Refusal {
    fn from(e: HeadError) -> Self {
        match e {
            HeadError::TooManyFields => Refusal::too_large(),
            e => Refusal::bad(e.message()),
        }
    }
}

impl From<FramingError> for Refusal {
    fn from(e: FramingError) -> Self {
        match e {
            FramingError::UnsupportedCoding => Refusal {
                status: 501,
                code: "not_implemented",
                message: e.message(),
            },
            e => Refusal::bad(e.message()),
        }
    }
}

/// A request head, parsed.
#[derive(Debug)]
pub struct Request {
    pub header: RequestHeader,
    /// How its body is delimited (never `Close`).
    pub framing: Framing,
    /// The request lets its connection carry another one (RFC 9112 §9.3).
    pub persistent: bool,
    /// HTTP/1.0.
    pub http10: bool,
    /// It waits for `100 Continue` before sending its body.
    pub expect_continue: bool,
}

/// Parse `head`, a whole request head (up to and with its empty line, as [`wire::head_end`]
/// found it).
pub fn parse(head: &Bytes) -> Result<Request, Refusal> {
    let mut fields = [const { MaybeUninit::uninit() }; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut []);
    match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut req,
        head,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        Ok(_) => return Err(Refusal::bad("malformed request head")),
        Err(e) => return Err(HeadError::from(e).into()),
    }
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(Refusal::bad("malformed request line"));
    };
    let http10 = minor == 0;
    let method =
        Method::from_bytes(method.as_bytes()).map_err(|_| Refusal::bad("invalid method"))?;
    if method == Method::CONNECT {
        return Err(Refusal {
            status: 405,
            code: "method_not_allowed",
            message: "CONNECT is not supported",
        });
    }
    let mut headers = wire::build_headers(req.headers, head)?;
    let framing = wire::request_framing(&headers, http10)?;
    // Both framings: the coding decides, the length goes (RFC 9112 §6.3: an intermediary
    // removes it), and the connection closes after the answer (§6.1), as Pingora's server and
    // nginx do: a request that may be read two ways ends the connection it came on.
    let ambiguous = headers.contains_key(header::TRANSFER_ENCODING)
        && headers.contains_key(header::CONTENT_LENGTH);
    if ambiguous {
        headers.remove(header::CONTENT_LENGTH);
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => return Err(Refusal::bad("more than one host header")),
        (None, None) if !http10 => return Err(Refusal::bad("HTTP/1.1 request without host")),
        _ => {}
    }
    let persistent = !ambiguous && wire::persistent(&headers, http10);
    let expect_continue = !http10
        && headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.version = if http10 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    parts.headers = headers;
    let mut header = RequestHeader::from(parts);
    header
        .set_raw_path(target.as_bytes())
        .map_err(|_| Refusal::bad("invalid request target"))?;
    // The same checks of Host against an absolute-form target as Pingora's own server.
    pingora::protocols::http::authority::validate_request_authority(&header)
        .map_err(|_| Refusal::bad("host does not match the request target"))?;
    Ok(Request {
        header,
        framing,
        persistent,
        http10,
        expect_continue,
    })
}
