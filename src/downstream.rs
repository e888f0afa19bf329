//! The client side of one request, as the request path sees it.
//!
//! Every stage of the request path (`proxy`, `cache`, `respond`) talks to the client through
//! [`Downstream`] rather than Pingora's `Session` directly, so the same stages can serve a request
//! that arrived through another HTTP implementation. The methods are the few the path needs; the
//! implementation for Pingora's proxy [`Session`] below is a thin forwarding layer (static
//! dispatch: the stages are generic over it, so nothing is boxed).

use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use pingora::Result;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// What answers requests: given one client request, answer it whatever happens (an error
/// included) and account for it (access log, metrics). A front end that parses HTTP itself
/// calls this once per request it reads.
pub trait Serve: Send + Sync + 'static {
    /// Answer the request `client` carries.
    fn serve_request<D: Downstream>(&self, client: &mut D) -> impl Future<Output = ()> + Send;
}

/// One client request and the channel its answer goes back on.
pub trait Downstream: Send {
    /// The request header as received (its path normalised once routing begins).
    fn req_header(&self) -> &RequestHeader;
    /// The request header, to normalise its path before routing.
    fn req_header_mut(&mut self) -> &mut RequestHeader;
    /// The client's address (the TCP peer), when the connection has one.
    fn client_addr(&self) -> Option<SocketAddr>;
    /// The client's IP address.
    fn client_ip(&self) -> Option<IpAddr> {
        self.client_addr().map(|a| a.ip())
    }
    /// The client connection is TLS.
    fn is_tls(&self) -> bool;
    /// The client speaks HTTP/2.
    fn is_http2(&self) -> bool;
    /// Keep-alive timeout of the client connection in seconds; `None` when it will be closed.
    fn keepalive(&self) -> Option<u64>;
    /// Set the keep-alive timeout; `None` closes the connection after this request.
    fn set_keepalive(&mut self, secs: Option<u64>);
    /// Bound each read of the request body.
    fn set_read_timeout(&mut self, timeout: Option<Duration>);
    /// Bound each write to the client (the response header and each piece of the body; for
    /// HTTP/2 also each wait for flow-control window): a client that takes no part of a write
    /// for this long is cut off.
    fn set_write_timeout(&mut self, timeout: Option<Duration>);
    /// Answer `Expect: 100-continue`: tell the client to send its body.
    fn write_continue(&mut self) -> impl Future<Output = Result<()>> + Send;
    /// The next piece of the request body; `None` at its end.
    fn read_body(&mut self) -> impl Future<Output = Result<Option<Bytes>>> + Send;
    /// Write the response header; `end` when no body follows.
    fn write_header(
        &mut self,
        header: Box<ResponseHeader>,
        end: bool,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Write a piece of the response body; `end` with the last one (`None` ends it alone).
    fn write_body(
        &mut self,
        chunk: Option<Bytes>,
        end: bool,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Has a response header been written?
    fn response_started(&self) -> bool;
    /// Response body bytes written so far.
    fn body_bytes_sent(&self) -> usize;
    /// Request body bytes read so far.
    fn body_bytes_read(&self) -> usize;
}

/// `fut`, failing with `WriteTimedout` when `limit` passes first.
async fn bounded<T>(
    limit: Option<Duration>,
    fut: impl Future<Output = Result<T>> + Send,
) -> Result<T> {
    match limit {
        None => fut.await,
        Some(t) => match pingora::time::timeout(t, fut).await {
            Ok(r) => r,
            Err(_) => pingora::Error::e_explain(
                pingora::ErrorType::WriteTimedout,
                "writing the response header to the client",
            ),
        },
    }
}

impl Downstream for Session {
    fn req_header(&self) -> &RequestHeader {
        self.as_downstream().req_header()
    }

    fn req_header_mut(&mut self) -> &mut RequestHeader {
        self.as_downstream_mut().req_header_mut()
    }

    fn client_addr(&self) -> Option<SocketAddr> {
        self.as_downstream()
            .client_addr()
            .and_then(|a| a.as_inet())
            .copied()
    }

    fn is_tls(&self) -> bool {
        self.as_downstream()
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .is_some()
    }

    fn is_http2(&self) -> bool {
        self.as_downstream().is_http2()
    }

    fn keepalive(&self) -> Option<u64> {
        self.as_downstream().get_keepalive()
    }

    fn set_keepalive(&mut self, secs: Option<u64>) {
        self.as_downstream_mut().set_keepalive(secs)
    }

    fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.as_downstream_mut().set_read_timeout(timeout)
    }

    fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.as_downstream_mut().set_write_timeout(timeout)
    }

    fn write_continue(&mut self) -> impl Future<Output = Result<()>> + Send {
        let limit = self.as_downstream().get_write_timeout();
        bounded(limit, self.as_downstream_mut().write_continue_response())
    }

    fn read_body(&mut self) -> impl Future<Output = Result<Option<Bytes>>> + Send {
        self.as_downstream_mut().read_request_body()
    }

    fn write_header(
        &mut self,
        header: Box<ResponseHeader>,
        end: bool,
    ) -> impl Future<Output = Result<()>> + Send {
        // Pingora bounds body writes by the write timeout, not the HTTP/1.1 header write: a
        // client that reads nothing could hold it once its socket buffers are full.
        let limit = self.as_downstream().get_write_timeout();
        bounded(limit, self.write_response_header(header, end))
    }

    fn write_body(
        &mut self,
        chunk: Option<Bytes>,
        end: bool,
    ) -> impl Future<Output = Result<()>> + Send {
        self.write_response_body(chunk, end)
    }

    fn response_started(&self) -> bool {
        self.as_downstream().response_written().is_some()
    }

    fn body_bytes_sent(&self) -> usize {
        self.as_downstream().body_bytes_sent()
    }

    fn body_bytes_read(&self) -> usize {
        self.as_downstream().body_bytes_read()
    }
}
