//! Which HTTP server answers a client connection: the lean HTTP/1 front end ([`super::h1`]) or
//! Pingora's own (for HTTP/2, and for HTTP/1 when `server.http1: pingora`).
//!
//! A TLS connection says which protocol it speaks by ALPN. A cleartext one says it by its
//! first bytes: HTTP/2 with prior knowledge (h2c) starts with the connection preface (RFC 9113
//! §3.4). Pingora peeks for the preface by waiting for its 24 bytes, so a shorter HTTP/1
//! request (`GET / HTTP/1.0` and an empty line are 18) would wait for more that never comes;
//! here the first bytes are read as they arrive and compared as far as they go. A preface is
//! put back in front of the stream for Pingora to read again.

use super::h1;
use crate::downstream::Serve;
use crate::metrics::Metrics;
use crate::snapshot::Current;
use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::ServerApp;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use std::sync::Arc;

/// The HTTP/2 connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Where connections go: Pingora's server `pingora`, and the request path `lean` for the lean
/// HTTP/1 front end (`None`: every connection goes to Pingora).
pub struct Front<P, S> {
    pingora: Arc<P>,
    lean: Option<Arc<S>>,
    current: Arc<Current>,
    metrics: Arc<Metrics>,
}

impl<P, S> Front<P, S> {
    /// Connections to `pingora`, or HTTP/1 ones to `lean` when given.
    pub fn new(
        pingora: P,
        lean: Option<Arc<S>>,
        current: Arc<Current>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Front {
            pingora: Arc::new(pingora),
            lean,
            current,
            metrics,
        }
    }
}

/// What a cleartext connection's first bytes say.
enum Sniffed {
    /// HTTP/2 with prior knowledge (the preface is put back).
    H2(Stream),
    /// HTTP/1, with the bytes read so far.
    H1(Stream, BytesMut),
    /// Closed, failed or silent before saying.
    Gone,
}

/// Read until the first bytes either are the HTTP/2 preface or cannot be.
async fn sniff(mut stream: Stream, current: &Current) -> Sniffed {
    let wait = current.load().config.limits.client_header_timeout;
    let by = tokio::time::Instant::now() + wait;
    // Read through the thread's scratch buffer: a connection that sends nothing holds none.
    let mut buf = BytesMut::new();
    loop {
        let n = buf.len().min(H2_PREFACE.len());
        if buf[..n] != H2_PREFACE[..n] {
            return Sniffed::H1(stream, buf);
        }
        if n == H2_PREFACE.len() {
            if !stream.as_any().is::<L4Stream>() {
                return Sniffed::Gone;
            }
            let Ok(mut l4) = stream.into_any().downcast::<L4Stream>() else {
                return Sniffed::Gone;
            };
            l4.rewind(&buf);
            return Sniffed::H2(l4);
        }
        let left = by.saturating_duration_since(tokio::time::Instant::now());
        let read = h1::conn::read_into(&mut stream, &mut buf);
        match pingora::time::fast_timeout::fast_timeout(left, read).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return Sniffed::Gone,
        }
    }
}

#[async_trait]
impl<P, S> ServerApp for Front<P, S>
where
    P: ServerApp + Send + Sync + 'static,
    S: Serve,
{
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let Some(lean) = &self.lean else {
            return self.pingora.process_new(stream, shutdown).await;
        };
        let (stream, buf) = if stream.get_ssl_digest().is_some() {
            if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
                return self.pingora.process_new(stream, shutdown).await;
            }
            (stream, BytesMut::new())
        } else {
            match sniff(stream, &self.current).await {
                Sniffed::H2(stream) => return self.pingora.process_new(stream, shutdown).await,
                Sniffed::H1(stream, buf) => (stream, buf),
                Sniffed::Gone => return None,
            }
        };
        h1::serve_connection(&**lean, stream, buf, &self.current, &self.metrics, shutdown).await;
        None
    }

    async fn cleanup(&self) {
        self.pingora.cleanup().await
    }
}
