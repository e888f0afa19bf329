//! One request on a front-end connection, as the request path sees it: the [`Downstream`]
//! implementation of the lean HTTP/1 server.
//!
//! The request body comes out of the bytes already read (usually the whole of a small body
//! arrived with the head) and then the socket, by its framing. A response head is written into
//! the connection's scratch buffer; with a `Content-Length` it waits for the body and leaves
//! with it in one vectored write (as Pingora's server holds such a head until its body), any
//! other head leaves at once. The body is framed by the response head: a length, chunks, or
//! the close of the connection.

use super::conn::Conn;
use super::request::Request;
use super::response::{self, Reply};
use crate::downstream::Downstream;
use crate::wire::chunked;
use crate::wire::{Body, Framing};
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::{Error, ErrorType, Result};
use std::io::IoSlice;
use std::net::SocketAddr;
use std::time::Duration;

/// The interim answer to `Expect: 100-continue`, sent when the body is first read.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Most bytes read ahead of the body's end in one read (the rest of a large body is read as it
/// is asked for).
const BODY_READ: usize = 64 * 1024;

/// One request and its answer.
pub struct Session<'c> {
    conn: &'c mut Conn,
    req: Request,
    body: Body,
    /// `Some(idle)` while the connection may carry another request.
    keepalive: Option<u64>,
    /// This is the last request the connection may carry (count, shutdown).
    last: bool,
    continue_sent: bool,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    reply: Option<Reply>,
    body_sent: usize,
    body_read: usize,
}

impl<'c> Session<'c> {
    /// `req` on `conn`; `last` when no request may follow it on the connection.
    pub fn new(conn: &'c mut Conn, req: Request, last: bool) -> Self {
        Session {
            conn,
            body: Body::new(req.framing),
            keepalive: req.persistent.then_some(0),
            last,
            continue_sent: false,
            read_timeout: None,
            write_timeout: None,
            reply: None,
            body_sent: 0,
            body_read: 0,
            req,
        }
    }

    /// After the request path is done: send a head still held, and say whether the
    /// connection can carry the next request (the response is complete, the body was read to
    /// its end, and neither side asked to close).
    pub async fn finish(mut self) -> bool {
        let Some(reply) = self.reply.take() else {
            return false;
        };
        if !reply.held() {
            self.reply = Some(reply);
        } else if self.send(reply, None, false).await.is_err() {
            return false;
        }
        self.reply
            .as_ref()
            .is_some_and(|r| r.complete() && !r.close)
            && self.body.is_done()
            && self.keepalive.is_some()
            && !self.last
    }

    /// The idle time allowed before the next request, as the request path set it.
    pub fn keepalive_secs(&self) -> Option<u64> {
        self.keepalive
    }

    fn will_close(&self) -> bool {
        self.keepalive.is_none() || self.last || !self.body.is_done()
    }

    /// Write `reply`'s held head (if any) and `data` framed by it, ending the body if `end`.
    async fn send(&mut self, mut reply: Reply, data: Option<&[u8]>, end: bool) -> Result<()> {
        let head = reply.take_head();
        let data = data.map_or(&[][..], |d| reply.clip(d));
        let mut size = [0u8; 18];
        let mut parts = [
            IoSlice::new(head.as_deref().unwrap_or_default()),
            IoSlice::new(&[]),
            IoSlice::new(data),
            IoSlice::new(&[]),
        ];
        if reply.framing == Framing::Chunked {
            if !data.is_empty() {
                parts[1] = IoSlice::new(chunked::size_line(data.len(), &mut size));
                parts[3] = IoSlice::new(if end { b"\r\n0\r\n\r\n" } else { b"\r\n" });
            } else if end {
                parts[3] = IoSlice::new(chunked::LAST_CHUNK);
            }
        }
        let wrote = self.conn.write(&mut parts, self.write_timeout).await;
        if let Some(mut h) = head {
            // The scratch buffer goes back to the connection for the next head.
            h.clear();
            self.conn.out = h;
        }
        reply.sent(data.len(), end);
        self.reply = Some(reply);
        match wrote {
            Ok(()) => {
                self.body_sent += data.len();
                Ok(())
            }
            Err(e) => {
                if let Some(r) = self.reply.as_mut() {
                    r.close = true;
                }
                Err(Error::because(ErrorType::WriteError, "writing to the client", e).into_down())
            }
        }
    }

    /// Send `100 Continue` if the client waits for it, before the first read of its body.
    async fn continue_if_asked(&mut self) -> Result<()> {
        if self.req.expect_continue && !self.continue_sent && self.reply.is_none() {
            self.continue_sent = true;
            self.conn
                .write(&mut [IoSlice::new(CONTINUE)], self.write_timeout)
                .await
                .map_err(|e| {
                    Error::because(ErrorType::WriteError, "writing 100 Continue", e).into_down()
                })?;
        }
        Ok(())
    }

    /// The next piece of the body already read, if any.
    fn next_piece(&mut self) -> Result<Option<Bytes>> {
        self.body.next_piece(&mut self.conn.buf).or_else(|e| {
            Error::e_explain(ErrorType::InvalidHTTPHeader, e.message()).map_err(|e| e.into_down())
        })
    }
}

impl Downstream for Session<'_> {
    fn req_header(&self) -> &RequestHeader {
        &self.req.header
    }

    fn req_header_mut(&mut self) -> &mut RequestHeader {
        &mut self.req.header
    }

    fn client_addr(&self) -> Option<SocketAddr> {
        self.conn.client
    }

    fn is_tls(&self) -> bool {
        self.conn.tls
    }

    fn is_http2(&self) -> bool {
        false
    }

    fn keepalive(&self) -> Option<u64> {
        self.keepalive
    }

    fn set_keepalive(&mut self, secs: Option<u64>) {
        // The request path may shorten the connection's life, never lengthen what the
        // request itself asked for.
        self.keepalive = match secs {
            None => None,
            Some(s) => self.req.persistent.then_some(s),
        };
    }

    fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.read_timeout = timeout;
    }

    fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.write_timeout = timeout;
    }

    async fn write_continue(&mut self) -> Result<()> {
        self.continue_if_asked().await
    }

    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        loop {
            if self.body.is_done() {
                return Ok(None);
            }
            if let Some(piece) = self.next_piece()? {
                self.body_read += piece.len();
                return Ok(Some(piece));
            }
            if self.body.is_done() {
                return Ok(None);
            }
            self.continue_if_asked().await?;
            let want = match self.body.framing() {
                Framing::Length(_) => usize::try_from(self.body.left())
                    .unwrap_or(BODY_READ)
                    .min(BODY_READ),
                _ => BODY_READ,
            };
            let spare = self.conn.buf.capacity() - self.conn.buf.len();
            if spare < want.min(super::conn::READ_SIZE) {
                self.conn.buf.reserve(want.max(super::conn::READ_SIZE / 4));
            }
            match self.conn.read(self.read_timeout).await {
                Ok(0) => {
                    return Error::e_explain(
                        ErrorType::ConnectionClosed,
                        "the client closed the connection mid-body",
                    )
                    .map_err(|e| e.into_down())
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    return Error::e_explain(ErrorType::ReadTimedout, "reading the request body")
                        .map_err(|e| e.into_down())
                }
                Err(e) => {
                    return Err(
                        Error::because(ErrorType::ReadError, "reading the request body", e)
                            .into_down(),
                    )
                }
            }
        }
    }

    async fn write_header(&mut self, header: Box<ResponseHeader>, end: bool) -> Result<()> {
        if self.reply.is_some() {
            return Ok(());
        }
        let close = self.will_close();
        let reply = response::head(
            &header,
            self.req.http10,
            self.req.header.method == http::Method::HEAD,
            close,
            &mut self.conn.out,
        );
        if end || !reply.holds_for_body() {
            return self.send(reply, None, end).await;
        }
        self.reply = Some(reply);
        Ok(())
    }

    async fn write_body(&mut self, chunk: Option<Bytes>, end: bool) -> Result<()> {
        let Some(reply) = self.reply.take() else {
            return Error::e_explain(ErrorType::InternalError, "response body before its head");
        };
        if reply.complete() {
            self.reply = Some(reply);
            return Ok(());
        }
        self.send(reply, chunk.as_deref(), end).await
    }

    fn response_started(&self) -> bool {
        self.reply.is_some()
    }

    fn body_bytes_sent(&self) -> usize {
        self.body_sent
    }

    fn body_bytes_read(&self) -> usize {
        self.body_read
    }
}
