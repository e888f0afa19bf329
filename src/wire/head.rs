//! The head of a message: where it ends in a buffer, and its fields as a `HeaderMap` whose
//! values share the buffer's memory (no copy per field).

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

/// Why a head cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// Not HTTP/1.x: a malformed start line or field (httparse's reason).
    Invalid(&'static str),
    /// More fields than the parser takes.
    TooManyFields,
}

impl HeadError {
    /// What a person reads in the error answer.
    pub fn message(&self) -> &'static str {
        match self {
            HeadError::Invalid(why) => why,
            HeadError::TooManyFields => "too many header fields",
        }
    }
}

impl From<httparse::Error> for HeadError {
    fn from(e: httparse::Error) -> Self {
        match e {
            httparse::Error::TooManyHeaders => HeadError::TooManyFields,
            httparse::Error::HeaderName => HeadError::Invalid("invalid header field name"),
            httparse::Error::HeaderValue => HeadError::Invalid("invalid header field value"),
            httparse::Error::NewLine => HeadError::Invalid("invalid line ending"),
            httparse::Error::Status => HeadError::Invalid("invalid status line"),
            httparse::Error::Token => HeadError::Invalid("invalid method or request target"),
            httparse::Error::Version => HeadError::Invalid("unsupported HTTP version"),
        }
    }
}

/// The end of the head in `buf` (the index just past the empty line that closes it), if the
/// buffer holds one. The search starts at `from` (where the previous search stopped, so a head
/// that arrives a byte at a time is scanned once, not once per byte). A line may end with CRLF
/// or, as RFC 9112 §2.2 lets a recipient accept, a bare LF.
pub fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut at = from.saturating_sub(3).min(buf.len());
    while let Some(i) = memchr::memchr(b'\n', &buf[at..]) {
        let lf = at + i;
        match (buf.get(lf + 1), buf.get(lf + 2)) {
            (Some(b'\n'), _) => return Some(lf + 2),
            (Some(b'\r'), Some(b'\n')) => return Some(lf + 3),
            _ => at = lf + 1,
        }
    }
    None
}

/// How many empty lines (CRLF or LF) `buf` starts with, in bytes: a server ignores those before
/// a request line (RFC 9112 §2.2).
pub fn leading_empty_lines(buf: &[u8]) -> usize {
    let mut n = 0;
    loop {
        match (buf.get(n), buf.get(n + 1)) {
            (Some(b'\n'), _) => n += 1,
            (Some(b'\r'), Some(b'\n')) => n += 2,
            _ => return n,
        }
    }
}

/// The fields httparse found in `head`, as a `HeaderMap`: names parsed once (the standard ones
/// are not allocated), values slices of `head`.
pub fn build_headers(
    fields: &[httparse::Header<'_>],
    head: &Bytes,
) -> Result<HeaderMap, HeadError> {
    let mut map =
        HeaderMap::try_with_capacity(fields.len()).map_err(|_| HeadError::TooManyFields)?;
    for f in fields {
        let name = HeaderName::from_bytes(f.name.as_bytes())
            .map_err(|_| HeadError::Invalid("invalid header field name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice_ref(f.value))
            .map_err(|_| HeadError::Invalid("invalid header field value"))?;
        map.try_append(name, value)
            .map_err(|_| HeadError::TooManyFields)?;
    }
    Ok(map)
}
