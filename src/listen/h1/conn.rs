//! One client connection of the HTTP/1 front end: the stream, the bytes read from it and not
//! yet used (the rest of a body, pipelined requests), the buffer response heads are written
//! into, and reading and writing with timeouts.
//!
//! A connection with nothing buffered owns no read buffer: its next read goes into a scratch
//! buffer of the thread's and only the bytes that came are copied out, into a buffer of their
//! size. So an idle keep-alive connection, or one whose request is being answered, holds no
//! 4 KiB buffer of its own (nginx frees its header buffer on idle connections for the same
//! reason), and a request read in one go costs no more syscalls than before.

use bytes::{Bytes, BytesMut};
use pingora::protocols::Stream;
use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

/// Least room made in the read buffer before each read, and its first size.
pub const READ_SIZE: usize = 4096;

/// The size of each thread's scratch buffer for reads into an empty connection buffer.
const SCRATCH_SIZE: usize = 16 * 1024;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_SIZE].into_boxed_slice());
}

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
        let read = read_into(&mut self.stream, &mut self.buf);
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

/// One read from `stream` appended to `buf`. An empty `buf` (nothing pending: a connection
/// between requests, or one whose request was taken whole) is read through the thread's scratch
/// buffer; otherwise `buf` gets room of its own and is read into directly.
pub async fn read_into(stream: &mut Stream, buf: &mut BytesMut) -> io::Result<usize> {
    if !buf.is_empty() || buf.capacity() >= READ_SIZE {
        if buf.capacity() - buf.len() < READ_SIZE / 4 {
            buf.reserve(READ_SIZE);
        }
        return tokio::io::AsyncReadExt::read_buf(stream, buf).await;
    }
    poll_fn(|cx| {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let mut rb = ReadBuf::new(&mut scratch[..]);
            match Pin::new(&mut *stream).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    buf.extend_from_slice(rb.filled());
                    Poll::Ready(Ok(rb.filled().len()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
    })
    .await
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
