//! A response head on the wire, and how its body is framed, for one request: by the status and
//! the request method (no body for HEAD, 1xx, 204, 304), then `Transfer-Encoding`, then
//! `Content-Length`, else chunked for HTTP/1.1 and the connection's close for HTTP/1.0. The
//! connection headers are switchyard's own: `Connection` (`close` when the connection ends
//! after this response; `keep-alive` to an HTTP/1.0 client that keeps it), never the
//! upstream's, and `Date` (RFC 9110 §6.6.1).

use crate::wire::{self, Framing};
use bytes::{BufMut, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use pingora::http::ResponseHeader;

/// Headers that describe the upstream's connection, not the message: never written.
const HOP: [&str; 3] = ["keep-alive", "proxy-connection", "upgrade"];

/// A response being written: its framing, its head until it is sent, and how much of its body
/// is left.
#[derive(Debug)]
pub struct Reply {
    pub framing: Framing,
    /// The connection closes after this response.
    pub close: bool,
    head: Option<BytesMut>,
    left: u64,
    done: bool,
}

impl Reply {
    /// The head waits for the body (a length-framed body: both leave in one write).
    pub fn holds_for_body(&self) -> bool {
        matches!(self.framing, Framing::Length(n) if n > 0)
    }

    /// Is the head still to be sent?
    pub fn held(&self) -> bool {
        self.head.is_some()
    }

    /// The head, if not yet sent (taken: the caller sends it).
    pub fn take_head(&mut self) -> Option<BytesMut> {
        self.head.take()
    }

    /// The part of `data` the framing lets through: nothing for a body-less response, at most
    /// what is left of a declared length.
    pub fn clip<'d>(&self, data: &'d [u8]) -> &'d [u8] {
        match self.framing {
            Framing::Empty => &[],
            Framing::Length(_) => {
                &data[..data
                    .len()
                    .min(usize::try_from(self.left).unwrap_or(usize::MAX))]
            }
            Framing::Chunked | Framing::Close => data,
        }
    }

    /// `n` body bytes were sent, the last ones if `end`.
    pub fn sent(&mut self, n: usize, end: bool) {
        match self.framing {
            Framing::Empty => self.done = true,
            Framing::Length(_) => {
                self.left -= n as u64;
                if self.left == 0 {
                    self.done = true;
                } else if end {
                    // Cut short: the client can only tell from the connection closing.
                    self.done = true;
                    self.close = true;
                }
            }
            Framing::Chunked | Framing::Close => self.done |= end,
        }
    }

    /// The whole body has been sent.
    pub fn complete(&self) -> bool {
        self.done
    }
}

/// Write `header` as the head of the answer to a request (HTTP/1.0 or not, HEAD or not) into
/// `out`, and say how its body is framed; `close` when the connection ends after it.
pub fn head(
    header: &ResponseHeader,
    http10: bool,
    head_request: bool,
    mut close: bool,
    out: &mut BytesMut,
) -> Reply {
    let status = header.status.as_u16();
    let headers = &header.headers;
    let bodiless_status = (100..200).contains(&status) || status == 204;
    let te = headers.contains_key(TRANSFER_ENCODING);
    let chunked_te = te && wire::chunked_last(headers);
    let framing = if head_request || bodiless_status || status == 304 {
        Framing::Empty
    } else if te {
        if chunked_te && !http10 {
            Framing::Chunked
        } else {
            Framing::Close
        }
    } else {
        match wire::content_length(headers) {
            Ok(Some(n)) => Framing::Length(n),
            _ if http10 => Framing::Close,
            _ => Framing::Chunked,
        }
    };
    close |= framing == Framing::Close;
    let keep_te = match framing {
        Framing::Chunked => te,
        Framing::Close => te && !http10,
        Framing::Empty => te && !bodiless_status,
        Framing::Length(_) => false,
    };
    let keep_cl = match framing {
        Framing::Length(_) => true,
        Framing::Empty => !bodiless_status,
        Framing::Chunked | Framing::Close => false,
    };

    out.clear();
    out.reserve(256);
    out.put_slice(b"HTTP/1.1 ");
    let code = [
        b'0' + (status / 100 % 10) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ];
    out.put_slice(&code);
    out.put_u8(b' ');
    out.put_slice(header.get_reason_phrase().unwrap_or("").as_bytes());
    out.put_slice(b"\r\n");
    for (name, value) in headers {
        let skip = match *name {
            CONNECTION | DATE => true,
            TRANSFER_ENCODING => !keep_te,
            CONTENT_LENGTH => !keep_cl,
            _ => HOP.contains(&name.as_str()),
        };
        if !skip {
            field(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    if framing == Framing::Chunked && !te {
        out.put_slice(b"transfer-encoding: chunked\r\n");
    }
    field(
        out,
        b"date",
        pingora::protocols::http::date::get_cached_date().as_bytes(),
    );
    if close {
        out.put_slice(b"connection: close\r\n");
    } else if http10 {
        out.put_slice(b"connection: keep-alive\r\n");
    }
    out.put_slice(b"\r\n");
    Reply {
        framing,
        close,
        head: Some(std::mem::take(out)),
        left: match framing {
            Framing::Length(n) => n,
            _ => 0,
        },
        done: false,
    }
}

fn field(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.reserve(name.len() + value.len() + 4);
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}
