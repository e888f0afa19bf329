//! The client side of one HTTP/1.1 exchange on a plain TCP connection: the request bytes, the
//! response head (httparse), the body (chunked, `content-length` or to the end of the
//! connection) and an SSE scanner that counts token events and notes when `data: [DONE]` arrived.
//!
//! Why by hand: the figures are the proxy's, so the client must cost little per event and must
//! not add buffering of its own between the socket and the clock; and the idle-connection check
//! needs to know that a kept-alive connection is the same socket, which a pooling client hides.

use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest pending SSE event (a token event is a few hundred bytes).
const MAX_EVENT: usize = 256 * 1024;

/// What the request asks of the simulator.
pub struct Ask {
    /// `host:port` for the `host` header.
    pub authority: String,
    pub path: String,
    pub tokens: usize,
    pub token_delay_ms: u64,
    pub ttft_ms: u64,
    pub stream: bool,
}

/// The bytes of one chat request: a fixed prompt, the token count both as `max_tokens` and as
/// the simulator's `x-sim-tokens` knob, so every target is asked for exactly the same answer.
pub fn request(ask: &Ask) -> Vec<u8> {
    let body = format!(
        concat!(
            r#"{{"model":"bench-model","messages":["#,
            r#"{{"role":"system","content":"You are a concise assistant."}},"#,
            r#"{{"role":"user","content":"Summarise the plot of Hamlet in one sentence."}}],"#,
            r#""temperature":0,"max_tokens":{},"stream":{}}}"#
        ),
        ask.tokens, ask.stream
    );
    let accept = if ask.stream {
        "text/event-stream"
    } else {
        "application/json"
    };
    format!(
        "POST {} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\naccept: {accept}\r\n\
         x-sim-tokens: {}\r\nx-sim-token-delay-ms: {}\r\nx-sim-ttft-ms: {}\r\n\
         content-length: {}\r\n\r\n{body}",
        ask.path,
        ask.authority,
        ask.tokens,
        ask.token_delay_ms,
        ask.ttft_ms,
        body.len()
    )
    .into_bytes()
}

/// How the body of a response is delimited.
enum Framing {
    Chunked,
    Length(usize),
    Eof,
}

/// A response head.
pub struct Head {
    pub status: u16,
    framing: Framing,
    /// The server said `connection: close` (or answered HTTP/1.0 without keep-alive).
    pub close: bool,
}

/// One client connection with its read buffer.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed.
    pos: usize,
}

impl Conn {
    pub async fn connect(addr: std::net::SocketAddr) -> Result<Conn, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("nodelay: {e}"))?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(4096),
            pos: 0,
        })
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(|e| format!("write: {e}"))
    }

    /// Reads more bytes into the buffer; `Ok(false)` at the end of the connection.
    async fn fill(&mut self) -> Result<bool, String> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 64 * 1024 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let mut chunk = [0u8; 8192];
        let n = self
            .stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    pub async fn read_head(&mut self) -> Result<Head, String> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(self.pending()) {
                Ok(httparse::Status::Complete(len)) => {
                    let head = head_of(&resp)?;
                    self.pos += len;
                    return Ok(head);
                }
                Ok(httparse::Status::Partial) if self.pending().len() < MAX_HEAD => {}
                Ok(httparse::Status::Partial) => return Err("response head too large".into()),
                Err(e) => return Err(format!("bad response head: {e}")),
            }
            if !self.fill().await? {
                return Err(if self.pending().is_empty() {
                    "closed before a response".into()
                } else {
                    "closed inside the response head".into()
                });
            }
        }
    }

    /// Reads the whole body, handing each decoded piece to `sink` as soon as it arrives.
    pub async fn read_body(&mut self, head: &Head, sink: &mut Sse) -> Result<(), String> {
        match head.framing {
            Framing::Length(mut left) => {
                while left > 0 {
                    if self.pending().is_empty() && !self.fill().await? {
                        return Err("closed inside the body".into());
                    }
                    let n = left.min(self.pending().len());
                    sink.feed(&self.buf[self.pos..self.pos + n]);
                    self.pos += n;
                    left -= n;
                }
                Ok(())
            }
            Framing::Eof => loop {
                sink.feed(self.pending());
                self.pos = self.buf.len();
                if !self.fill().await? {
                    return Ok(());
                }
            },
            Framing::Chunked => self.read_chunked(sink).await,
        }
    }

    async fn read_chunked(&mut self, sink: &mut Sse) -> Result<(), String> {
        loop {
            let size = loop {
                if let Some(end) = find(self.pending(), b"\r\n") {
                    let line = &self.pending()[..end];
                    let digits = line.split(|&b| b == b';').next().unwrap_or(line);
                    let text = std::str::from_utf8(digits).map_err(|_| "bad chunk size")?;
                    let size = usize::from_str_radix(text.trim(), 16)
                        .map_err(|_| format!("bad chunk size {text:?}"))?;
                    self.pos += end + 2;
                    break size;
                }
                if self.pending().len() > 1024 {
                    return Err("chunk size line too long".into());
                }
                if !self.fill().await? {
                    return Err("closed inside the body".into());
                }
            };
            if size == 0 {
                // Trailers, if any, then the empty line.
                loop {
                    if let Some(end) = find(self.pending(), b"\r\n") {
                        self.pos += end + 2;
                        if end == 0 {
                            return Ok(());
                        }
                        continue;
                    }
                    if !self.fill().await? {
                        return Err("closed inside the trailers".into());
                    }
                }
            }
            let mut left = size;
            while left > 0 {
                if self.pending().is_empty() && !self.fill().await? {
                    return Err("closed inside a chunk".into());
                }
                let n = left.min(self.pending().len());
                sink.feed(&self.buf[self.pos..self.pos + n]);
                self.pos += n;
                left -= n;
            }
            while self.pending().len() < 2 {
                if !self.fill().await? {
                    return Err("closed after a chunk".into());
                }
            }
            if &self.pending()[..2] != b"\r\n" {
                return Err("chunk not followed by CRLF".into());
            }
            self.pos += 2;
        }
    }
}

fn head_of(resp: &httparse::Response<'_, '_>) -> Result<Head, String> {
    let status = resp.code.ok_or("no status")?;
    let mut framing = Framing::Eof;
    let mut close = resp.version == Some(0);
    for h in resp.headers.iter() {
        let value = String::from_utf8_lossy(h.value).to_ascii_lowercase();
        if h.name.eq_ignore_ascii_case("transfer-encoding") && value.contains("chunked") {
            framing = Framing::Chunked;
        } else if h.name.eq_ignore_ascii_case("content-length")
            && !matches!(framing, Framing::Chunked)
        {
            let n = value
                .trim()
                .parse()
                .map_err(|_| format!("bad content-length {value:?}"))?;
            framing = Framing::Length(n);
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = value.contains("close");
        }
    }
    if status == 204 || status == 304 {
        framing = Framing::Length(0);
    }
    Ok(Head {
        status,
        framing,
        close,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Counts what a streamed answer carried, event by event.
#[derive(Default)]
pub struct Sse {
    pending: Vec<u8>,
    /// Events with a `content` delta: one per token.
    pub tokens: usize,
    /// Events carrying an `error` object.
    pub errors: usize,
    /// When `data: [DONE]` was read.
    pub done_at: Option<Instant>,
    /// Events after `[DONE]`.
    pub after_done: usize,
    /// An event grew past the limit (the answer is not an event stream).
    pub overflow: bool,
    /// Bytes of body seen (for plain answers).
    pub bytes: usize,
}

impl Sse {
    pub fn feed(&mut self, bytes: &[u8]) {
        self.bytes += bytes.len();
        self.pending.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(end) = find(&self.pending[start..], b"\n\n") {
            let event = start..start + end;
            self.event(event);
            start += end + 2;
        }
        self.pending.drain(..start);
        if self.pending.len() > MAX_EVENT {
            self.overflow = true;
            self.pending.clear();
        }
    }

    fn event(&mut self, range: std::ops::Range<usize>) {
        let event = &self.pending[range];
        for line in event.split(|&b| b == b'\n') {
            let Some(data) = line.strip_prefix(b"data:") else {
                continue;
            };
            let data = data.strip_prefix(b" ").unwrap_or(data);
            let data = data.strip_suffix(b"\r").unwrap_or(data);
            if self.done_at.is_some() {
                self.after_done += 1;
            } else if data == b"[DONE]" {
                self.done_at = Some(Instant::now());
            } else if data.starts_with(b"{\"error\"") {
                self.errors += 1;
            } else if find(data, b"\"content\":").is_some() {
                self.tokens += 1;
            }
        }
    }
}
