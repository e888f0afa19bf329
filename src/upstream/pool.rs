//! Idle keep-alive connections to one peer.
//!
//! Pingora's connection pool watches every idle connection with a task of its own, spawned on
//! each release, and checks the socket's peer address (a `getpeername` call) on each reuse. At
//! tens of thousands of requests a second that is a measurable share of the proxy's CPU. A
//! peer's pool here is a plain stack behind a mutex, owned by the peer's state (so it survives
//! config reloads): the most recently used connection goes out first, so a few warm connections
//! serve most requests and the rest age out. A connection the peer closed while idle is noticed
//! when it is taken (the event loop has already seen its EOF, so the check costs no syscall);
//! one closed just as it is reused fails its try's first read, which the try retries once on a
//! fresh connection.

use futures_util::FutureExt;
use pingora::protocols::Stream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

/// Idle connections kept per peer, at most (nginx's `keepalive` directive, per upstream block).
const MAX_IDLE: usize = 256;

/// How long an idle connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The idle connections of one peer, most recently released last.
#[derive(Default)]
pub struct IdlePool {
    idle: Mutex<Vec<(Stream, Instant)>>,
    /// The transport (cleartext, or one TLS client) the kept connections were made with.
    transport: AtomicU64,
}

impl std::fmt::Debug for IdlePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdlePool({} idle)", self.len())
    }
}

impl IdlePool {
    /// A connection that is still open and was idle less than [`IDLE_TIMEOUT`].
    pub fn take(&self) -> Option<Stream> {
        loop {
            let (mut stream, since) = self.lock().pop()?;
            if since.elapsed() >= IDLE_TIMEOUT {
                // Every connection below it is older still.
                self.lock().clear();
                return None;
            }
            if still_open(&mut stream) {
                return Some(stream);
            }
            // Closed by the peer: dropped, try the next.
        }
    }

    /// Keep only connections made with `transport` (0 = cleartext, else a TLS client's id)
    /// from now on: when it is not the one bound so far, every idle connection is dropped, so a
    /// cluster whose TLS settings changed never reuses a connection made under the old ones.
    pub fn bind(&self, transport: u64) {
        if self.transport.swap(transport, Ordering::Relaxed) != transport {
            self.lock().clear();
        }
    }

    /// Keep `stream`, made with `transport`, for reuse (its response was read to the end). The
    /// oldest connection goes when [`MAX_IDLE`] are kept, and any idle past [`IDLE_TIMEOUT`]; a
    /// connection of a transport no longer bound is dropped.
    pub fn put(&self, stream: Stream, transport: u64) {
        let now = Instant::now();
        let mut idle = self.lock();
        if self.transport.load(Ordering::Relaxed) != transport {
            return;
        }
        let expired = idle
            .iter()
            .take_while(|(_, since)| now.duration_since(*since) >= IDLE_TIMEOUT)
            .count();
        let over = (idle.len() - expired + 1).saturating_sub(MAX_IDLE);
        idle.drain(..expired + over);
        idle.push((stream, now));
    }

    /// Connections kept now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// No connection is kept now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Stream, Instant)>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An idle connection is usable when reading from it would block: no EOF, no error and no
/// unexpected bytes from the peer.
fn still_open(stream: &mut Stream) -> bool {
    let mut byte = [0u8; 1];
    stream.read(&mut byte).now_or_never().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    async fn pair(listener: &TcpListener) -> (Stream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, server) = tokio::join!(client, listener.accept());
        let stream = pingora::protocols::l4::stream::Stream::from(client.unwrap());
        (Box::new(stream), server.unwrap().0)
    }

    #[tokio::test]
    async fn reuses_the_latest_and_skips_closed_ones() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = IdlePool::default();
        let (a, _a_server) = pair(&listener).await;
        let (b, b_server) = pair(&listener).await;
        let a_fd = a.id();
        pool.put(a, 0);
        pool.put(b, 0);
        assert_eq!(pool.len(), 2);
        // The peer closes `b` while it is idle: the pool must hand out `a` instead.
        drop(b_server);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let got = pool.take().expect("a is still open");
        assert_eq!(got.id(), a_fd);
        assert!(pool.take().is_none());
    }

    #[tokio::test]
    async fn unexpected_bytes_make_a_connection_unusable() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = IdlePool::default();
        let (a, mut a_server) = pair(&listener).await;
        pool.put(a, 0);
        a_server.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(pool.take().is_none());
    }

    #[tokio::test]
    async fn keeps_at_most_max_idle() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = IdlePool::default();
        let mut servers = Vec::new();
        for _ in 0..MAX_IDLE + 3 {
            let (c, s) = pair(&listener).await;
            servers.push(s);
            pool.put(c, 0);
        }
        assert_eq!(pool.len(), MAX_IDLE);
    }

    #[tokio::test]
    async fn another_transport_drops_the_idle_connections() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = IdlePool::default();
        let (a, _a_server) = pair(&listener).await;
        let (b, _b_server) = pair(&listener).await;
        pool.put(a, 0);
        pool.bind(0);
        assert_eq!(pool.len(), 1, "the same transport keeps them");
        pool.bind(7);
        assert!(pool.is_empty());
        // A connection of the old transport coming back late is not kept either.
        pool.put(b, 0);
        assert!(pool.take().is_none());
    }
}
