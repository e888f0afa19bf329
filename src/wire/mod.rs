//! HTTP/1.1 message syntax, shared by the two sides that speak it without Pingora: the
//! client-facing server (`listen::h1`) and the upstream response reader (`upstream`).
//!
//! What lives here is what RFC 9112 says about a message, whichever side reads it: where a head
//! ends, how the body is delimited (§6: `Content-Length`, `Transfer-Encoding`, neither), the
//! chunked coding ([`chunked`]), and the connection options a `Connection` header carries
//! (§9.3). Each side decides what to do about a message it cannot frame; this module only says
//! why.

mod body;
pub mod chunked;
mod head;

#[cfg(test)]
mod tests;

pub use body::Body;
pub use head::{build_headers, head_end, leading_empty_lines, HeadError};

use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::HeaderMap;

/// Why a message's body cannot be framed. A request with one of these gets 400 and its
/// connection is closed (RFC 9112 §6.3); a response is a protocol error of its try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingError {
    /// `Content-Length` is not a decimal number, or its values disagree.
    BadContentLength,
    /// `Transfer-Encoding` whose last coding is not `chunked`, or `chunked` twice.
    BadTransferEncoding,
    /// A transfer coding other than `chunked` (`gzip, chunked`): understood by the syntax but
    /// not implemented, 501 for a request (RFC 9112 §6.1).
    UnsupportedCoding,
    /// `Transfer-Encoding` on an HTTP/1.0 message, which cannot carry one (RFC 9112 §6.1).
    CodingOnHttp10,
}

impl FramingError {
    /// What a person reads in the error answer.
    pub fn message(self) -> &'static str {
        match self {
            FramingError::BadContentLength => "invalid content-length",
            FramingError::BadTransferEncoding => "invalid transfer-encoding",
            FramingError::UnsupportedCoding => "only the chunked transfer coding is supported",
            FramingError::CodingOnHttp10 => "transfer-encoding is not allowed in HTTP/1.0",
        }
    }
}

/// How a message's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: a request without length or coding, a response to HEAD, 1xx, 204, 304.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// The chunked coding.
    Chunked,
    /// Everything until the connection closes (responses only).
    Close,
}

/// The value of `Content-Length`: one decimal number, possibly repeated (in several fields or as
/// a comma-separated list) with the same value, as RFC 9110 §8.6 allows; `Ok(None)` when there
/// is none.
pub fn content_length(headers: &HeaderMap) -> Result<Option<u64>, FramingError> {
    let mut found: Option<u64> = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let n = decimal(trim(part)).ok_or(FramingError::BadContentLength)?;
            if found.is_some_and(|f| f != n) {
                return Err(FramingError::BadContentLength);
            }
            found = Some(n);
        }
    }
    Ok(found)
}

/// A non-empty run of ASCII digits, without sign or overflow.
fn decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(b - b'0')))?
    })
}

/// `s` without optional whitespace (SP, HTAB) at either end.
fn trim(s: &[u8]) -> &[u8] {
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = s.iter().position(|b| !ows(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !ows(b)).map_or(start, |e| e + 1);
    &s[start..end]
}

/// The transfer codings of a message, in order, from every `Transfer-Encoding` field.
fn codings(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(TRANSFER_ENCODING)
        .into_iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(trim)
        .filter(|c| !c.is_empty())
}

/// Is the last transfer coding of these headers `chunked`?
pub fn chunked_last(headers: &HeaderMap) -> bool {
    codings(headers)
        .last()
        .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
}

/// How the body of a request with these headers is delimited: a request is never
/// close-delimited, and one without length or coding has no body (RFC 9112 §6.3). With both
/// `Transfer-Encoding` and `Content-Length`, the coding decides (§6.1; the caller drops the
/// length and closes the connection after the answer).
pub fn request_framing(headers: &HeaderMap, http10: bool) -> Result<Framing, FramingError> {
    if !headers.contains_key(TRANSFER_ENCODING) {
        return Ok(match content_length(headers)? {
            Some(0) | None => Framing::Empty,
            Some(n) => Framing::Length(n),
        });
    }
    if http10 {
        return Err(FramingError::CodingOnHttp10);
    }
    let mut chunked = 0;
    let mut other = false;
    let mut last_chunked = false;
    for c in codings(headers) {
        last_chunked = c.eq_ignore_ascii_case(b"chunked");
        if last_chunked {
            chunked += 1;
        } else {
            other = true;
        }
    }
    match (last_chunked, chunked, other) {
        (true, 1, false) => Ok(Framing::Chunked),
        (true, 1, true) => Err(FramingError::UnsupportedCoding),
        _ => Err(FramingError::BadTransferEncoding),
    }
}

/// How the body of a response with `status` and these headers is delimited, for a request
/// whose method was HEAD or not. The second value says the connection cannot be reused after
/// it (both `Transfer-Encoding` and `Content-Length`, or a body delimited by the close).
pub fn response_framing(
    status: u16,
    headers: &HeaderMap,
    head_request: bool,
) -> Result<(Framing, bool), FramingError> {
    if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok((Framing::Empty, false));
    }
    if headers.contains_key(TRANSFER_ENCODING) {
        let both = headers.contains_key(CONTENT_LENGTH);
        return Ok(match chunked_last(headers) {
            true => (Framing::Chunked, both),
            // A final coding other than chunked: the body ends with the connection.
            false => (Framing::Close, true),
        });
    }
    Ok(match content_length(headers)? {
        Some(n) => (Framing::Length(n), false),
        None => (Framing::Close, true),
    })
}

/// What a message's `Connection` field says about its connection: (`close`, `keep-alive`).
pub fn connection_options(headers: &HeaderMap) -> (bool, bool) {
    let mut close = false;
    let mut keep_alive = false;
    for v in headers.get_all(CONNECTION) {
        for token in v.as_bytes().split(|&b| b == b',').map(trim) {
            close |= token.eq_ignore_ascii_case(b"close");
            keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
        }
    }
    (close, keep_alive)
}

/// Does a message of this version and these headers allow its connection to carry another
/// message (RFC 9112 §9.3)? HTTP/1.1 unless it says `close`; HTTP/1.0 only if it says
/// `keep-alive`.
pub fn persistent(headers: &HeaderMap, http10: bool) -> bool {
    let (close, keep_alive) = connection_options(headers);
    !close && (!http10 || keep_alive)
}
