//! One client connection of the HTTP/1 front end: the stream, the bytes read from it and not
//! yet used (the rest of a body, pipelined requests), the buffer response heads are written
//! into, and reading and writing with timeouts.

use bytes::{Bytes, BytesMut};
use pingora::protocols::Stream;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Least room made in the read buffer before each read, and its first size.
pub const READ_SIZE: usize = 4096;

/// A client connection.
pub struct Conn {
    pub stream: Stream,
    /// Read and not yet used.
    pub buf: BytesMut,
    /// Scratch space for response heads, kept across the connection's requests.
    pub out: BytesMut,
    /// The client's address, looked up once per connection.
    pub client: Option<SocketAddr>,
    pub tls: bool,
}

impl Conn {
    /// A connection on `stream` whose first bytes, already read, are in `buf`.
    pub fn new(stream: Stream, buf: BytesMut) -> Self {
        let tls = stream.get_ssl_digest().is_some();
        let client = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).copied());
        Conn {
            stream,
            buf,
            out: BytesMut::new(),
            client,
            tls,
        }
    }

    /// Read more from the client into `buf`: how many bytes (0 when it closed).
    pub async fn read(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < READ_SIZE / 4 {
            self.buf.reserve(READ_SIZE);
        }
        let read = self.stream.read_buf(&mut self.buf);
        match timeout {
            None => read.await,
            Some(t) => pingora::time::fast_timeout::fast_timeout(t, read)
                .await
                .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())),
        }
    }

    /// Write all of `parts` (one vectored write when the socket takes it all) and flush.
    pub async fn write(
        &mut self,
        parts: &mut [IoSlice<'_>],
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        let write = write_all(&mut self.stream, parts);
        match timeout {
            None => write.await,
            Some(t) => pingora::time::fast_timeout::fast_timeout(t, write)
                .await
                .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())),
        }
    }

    /// Write `bytes` and close the connection (best effort: the client may be gone).
    pub async fn write_and_close(&mut self, bytes: Bytes, timeout: Duration) {
        let _ = self.write(&mut [IoSlice::new(&bytes)], Some(timeout)).await;
        self.close().await;
    }

    /// Close the connection.
    pub async fn close(&mut self) {
        pingora::protocols::Shutdown::shutdown(&mut *self.stream).await;
    }

    /// Give back the read buffer when it holds nothing, so an idle connection keeps no more
    /// than its socket.
    pub fn shrink(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
        if self.out.capacity() > 2 * READ_SIZE {
            self.out = BytesMut::new();
        }
    }
}

async fn write_all(stream: &mut Stream, mut parts: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut parts, 0);
    while !parts.is_empty() {
        let n = stream.write_vectored(parts).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut parts, n);
    }
    stream.flush().await
}
