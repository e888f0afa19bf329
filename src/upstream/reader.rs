//! Reading a peer's answer to one try off its connection: the response head (parsed with
//! httparse; the field values share the read buffer), then the body by its framing
//! (`Content-Length`, chunked, or until the close), and whether the connection can carry the
//! next request.
//!
//! Why not Pingora's HTTP/1 client: it keeps a case-preserving copy of every header name and
//! allocates a 64 KiB body buffer per response, which is most of a try's CPU and, with a
//! thousand streams open, most of the process's memory. This reader starts from a 4 KiB buffer
//! that grows only for a large body, and hands out the body as slices of it. Its methods keep
//! the names of Pingora's client they replaced.

use crate::wire::{self, Framing};
use bytes::{Bytes, BytesMut};
use http::{StatusCode, Version};
use pingora::http::ResponseHeader;
use pingora::protocols::Stream;
use pingora::{Error, ErrorType, Result, RetryType};
use std::mem::MaybeUninit;
use tokio::io::AsyncReadExt;

/// The read buffer's first size, and the least room made before each read.
const READ_SIZE: usize = 4096;

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// Most header fields in a response head.
const MAX_FIELDS: usize = 256;

/// Most body bytes handed out at once when several chunks have arrived together.
const MAX_JOINED: usize = 64 * 1024;

/// One response on one upstream connection.
pub struct Response {
    conn: Stream,
    /// Bytes read and not yet handed out.
    buf: BytesMut,
    /// The request was HEAD: whatever the head says, no body follows.
    head_request: bool,
    header: Option<Box<ResponseHeader>>,
    body: wire::Body,
    /// A piece decoded ahead (to learn whether the body ends right after the piece before).
    ahead: Option<Bytes>,
    /// Neither side asked to close and the framing allows another message after this one.
    reusable: bool,
    /// Any byte of a response has been received on this connection.
    received: bool,
}

impl Response {
    /// The response to a request just written on `conn`; `head_request` when it was HEAD.
    pub fn new(conn: Stream, head_request: bool) -> Self {
        Response {
            conn,
            buf: BytesMut::with_capacity(READ_SIZE),
            head_request,
            header: None,
            body: wire::Body::before_head(),
            ahead: None,
            reusable: false,
            received: false,
        }
    }

    /// Read the next response head (a 1xx one included: read again for the final one). The
    /// error of a connection that fails before any byte came is marked `ReusedOnly`, as
    /// Pingora's client marks it: a pooled connection the peer had closed.
    pub async fn read_response(&mut self) -> Result<usize> {
        let mut scanned = 0;
        loop {
            if let Some(end) = wire::head_end(&self.buf, scanned) {
                return self.parse_head(end);
            }
            if self.buf.len() > MAX_HEAD {
                return Error::e_explain(
                    ErrorType::InvalidHTTPHeader,
                    "upstream response head too large",
                );
            }
            scanned = self.buf.len();
            self.fill().await?;
        }
    }

    fn parse_head(&mut self, end: usize) -> Result<usize> {
        let head = self.buf.split_to(end).freeze();
        let mut fields = [const { MaybeUninit::uninit() }; MAX_FIELDS];
        let mut resp = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default()
            .allow_spaces_after_header_name_in_responses(true)
            .parse_response_with_uninit_headers(&mut resp, &head, &mut fields);
        let invalid = |why: &'static str| Error::explain(ErrorType::InvalidHTTPHeader, why);
        match parsed {
            Ok(httparse::Status::Complete(n)) if n == end => {}
            Ok(_) => return Err(invalid("malformed upstream response head")),
            Err(e) => return Err(invalid(wire::HeadError::from(e).message())),
        }
        let status = resp
            .code
            .and_then(|c| StatusCode::from_u16(c).ok())
            .ok_or_else(|| invalid("invalid upstream status"))?;
        let http10 = resp.version == Some(0);
        let headers = wire::build_headers(resp.headers, &head).map_err(|e| invalid(e.message()))?;
        let (mut parts, ()) = http::Response::new(()).into_parts();
        parts.status = status;
        parts.version = if http10 {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        parts.headers = headers;
        let mut header = ResponseHeader::from(parts);
        if let Some(reason) = resp
            .reason
            .filter(|r| Some(*r) != status.canonical_reason())
        {
            header.set_reason_phrase(Some(reason))?;
        }
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(invalid("upstream switched protocols unasked"));
        }
        let (framing, must_close) =
            wire::response_framing(status.as_u16(), &header.headers, self.head_request)
                .map_err(|e| invalid(e.message()))?;
        self.body = wire::Body::new(framing);
        self.reusable = !must_close && wire::persistent(&header.headers, http10);
        self.header = Some(Box::new(header));
        Ok(end)
    }

    /// Read more of the response into the buffer; an error if the connection ends.
    async fn fill(&mut self) -> Result<usize> {
        if self.buf.capacity() - self.buf.len() < READ_SIZE / 4 {
            self.buf.reserve(READ_SIZE);
        }
        let read = self.conn.read_buf(&mut self.buf).await;
        let fresh = !self.received;
        let err = match read {
            Ok(0) => Error::explain(
                ErrorType::ConnectionClosed,
                "upstream closed the connection",
            ),
            Ok(n) => {
                self.received = true;
                return Ok(n);
            }
            Err(e) => Error::because(ErrorType::ReadError, "reading from upstream", e),
        };
        let mut err = err;
        if fresh {
            err.retry = RetryType::ReusedOnly;
        }
        Err(err)
    }

    /// The head read last.
    pub fn resp_header(&self) -> Option<&ResponseHeader> {
        self.header.as_deref()
    }

    /// Take the head read last (the response's own, once the 1xx ones are skipped).
    pub fn take_header(&mut self) -> Option<Box<ResponseHeader>> {
        self.header.take()
    }

    /// Has any byte of an answer arrived on this connection? (A failure before that, right
    /// after the send on a pooled connection, is the peer's close racing the request.)
    pub fn received(&self) -> bool {
        self.received
    }

    /// Can the connection carry another request? See [`Self::reuse`].
    pub fn reusable(&self) -> bool {
        self.body.is_done() && self.reusable && self.buf.is_empty() && self.ahead.is_none()
    }

    /// Has the whole body been read?
    pub fn is_body_done(&self) -> bool {
        self.body.is_done()
    }

    /// The next piece of the body, `None` at its end. Pieces that have already arrived
    /// together are handed out as one, and when the end of the body has arrived with the last
    /// piece, [`Self::is_body_done`] says so as soon as that piece is handed out.
    pub async fn read_body_bytes(&mut self) -> Result<Option<Bytes>> {
        if let Some(piece) = self.ahead.take() {
            return Ok(Some(self.join_ahead(piece)?));
        }
        loop {
            if self.body.is_done() {
                return Ok(None);
            }
            if let Some(piece) = self.next_piece()? {
                return Ok(Some(self.join_ahead(piece)?));
            }
            // The end may have been in the buffer, after the last piece handed out.
            if self.body.is_done() {
                return Ok(None);
            }
            match self.fill().await {
                Ok(_) => {}
                // The body of a close-delimited response ends with the connection.
                Err(e)
                    if self.body.framing() == Framing::Close
                        && e.etype() == &ErrorType::ConnectionClosed =>
                {
                    self.body.closed();
                    return Ok(None);
                }
                Err(mut e) => {
                    e.retry = RetryType::Decided(false);
                    e.etype = ErrorType::ConnectionClosed;
                    return Err(e);
                }
            }
        }
    }

    /// `piece`, joined with the pieces that follow it in the buffer, and the end noticed if it
    /// is there too.
    fn join_ahead(&mut self, piece: Bytes) -> Result<Bytes> {
        let mut joined: Option<BytesMut> = None;
        while !self.body.is_done() {
            let Some(next) = self.next_piece()? else {
                break;
            };
            let len = joined.as_ref().map_or(piece.len(), |j| j.len());
            if len + next.len() > MAX_JOINED {
                self.ahead = Some(next);
                break;
            }
            let j = joined.get_or_insert_with(|| {
                let mut j = BytesMut::with_capacity(piece.len() + next.len());
                j.extend_from_slice(&piece);
                j
            });
            j.extend_from_slice(&next);
        }
        Ok(joined.map_or(piece, BytesMut::freeze))
    }

    /// The next piece of the body already in the buffer, if any; marks the end when reached.
    fn next_piece(&mut self) -> Result<Option<Bytes>> {
        self.body
            .next_piece(&mut self.buf)
            .or_else(|e| Error::e_explain(ErrorType::InvalidHTTPHeader, e.message()))
    }

    /// Close the connection.
    pub async fn shutdown(&mut self) {
        pingora::protocols::Shutdown::shutdown(&mut *self.conn).await;
    }

    /// The connection, if it can carry another request: the response was read to its end,
    /// nothing follows it, and neither side asked to close.
    pub fn reuse(self) -> Option<Stream> {
        self.reusable().then_some(self.conn)
    }
}

#[cfg(test)]
mod tests;
