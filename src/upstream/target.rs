//! Where every try to one peer goes, and how a new connection to it is made.

use super::pool::IdlePool;
use super::tls::TlsClient;
use super::{timeout_at, TryError};
use pingora::connectors::TransportConnector;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::Stream;
use pingora::upstreams::peer::HttpPeer;
use pingora::ErrorType;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::time::Instant;

/// Called when a new connection to a target fails.
pub type ConnectFailed = Box<dyn Fn() + Send + Sync>;

/// Where every try to one peer connects: the peer's address (Pingora makes the TCP connection),
/// its TLS client and server name when the cluster has `tls`, and the peer's idle keep-alive
/// connections. One `Target` per peer and snapshot, shared by all its tries (the per-try
/// timeouts are the request path's own timers, not `HttpPeer` options).
pub struct Target {
    /// The Pingora peer TCP connections are made to (cleartext: TLS is [`Target::tls`]'s).
    pub peer: HttpPeer,
    /// The peer's idle keep-alive connections (owned by its state, so they outlive snapshots).
    pub(super) idle: Arc<IdlePool>,
    /// TLS over the TCP connection, with the name the peer is sent and verified by.
    tls: Option<(Arc<TlsClient>, String)>,
    /// Told of every failed connect (a named peer's address set is then resolved again).
    on_connect_failure: Option<ConnectFailed>,
    /// For logs.
    label: String,
}

impl Target {
    /// An HTTP/1.1 target at `addr`, over TLS with `tls` (a client and the name the peer is
    /// sent and verified by) or in cleartext, reusing `idle`; `label` names it in logs. Idle
    /// connections made another way (before a reload changed the cluster's TLS) are dropped.
    pub fn new(
        addr: SocketAddr,
        tls: Option<(Arc<TlsClient>, String)>,
        idle: Arc<IdlePool>,
        label: &str,
    ) -> Self {
        idle.bind(tls.as_ref().map_or(0, |(c, _)| c.id));
        Target {
            peer: HttpPeer::new(addr, false, String::new()),
            idle,
            tls,
            on_connect_failure: None,
            label: label.to_string(),
        }
    }

    /// The transport idle connections of this target were made with (0 = cleartext).
    pub(super) fn transport(&self) -> u64 {
        self.tls.as_ref().map_or(0, |(c, _)| c.id)
    }

    /// Call `f` whenever a new connection to this target fails.
    pub fn on_connect_failure(mut self, f: ConnectFailed) -> Self {
        self.on_connect_failure = Some(f);
        self
    }

    /// Is this target reached over TLS?
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// A new connection (TCP, then the TLS handshake when configured), ready by `until`. Every
    /// failure is a connect failure: refused, timed out, or any other (a certificate that does
    /// not verify among them, logged with its reason).
    pub async fn connect(
        &self,
        connector: &TransportConnector,
        until: Instant,
    ) -> Result<Stream, TryError> {
        // Boxed: connecting (TCP, maybe TLS) is a large future and a rare one; inline, it
        // would make every try's future, and so every request's, as large.
        let result = timeout_at(until, Box::pin(self.connect_inner(connector))).await;
        let e = match result {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => e,
            Err(()) => TryError::ConnectTimeout,
        };
        if let Some(f) = &self.on_connect_failure {
            f();
        }
        Err(e)
    }

    async fn connect_inner(&self, connector: &TransportConnector) -> Result<Stream, TryError> {
        let tcp = connector.new_stream(&self.peer).await.map_err(|e| {
            log::debug!("connect to {} failed: {e}", self.label);
            classify(&e)
        })?;
        let Some((client, name)) = &self.tls else {
            return Ok(tcp);
        };
        // Pingora hands a cleartext peer's connection out as its L4 stream, boxed.
        let tcp = tcp.into_any().downcast::<L4Stream>().map_err(|_| {
            log::error!("TLS to {}: not a TCP connection", self.label);
            TryError::ConnectFailure
        })?;
        match pingora::protocols::tls::client::handshake(&client.connector, name, *tcp).await {
            Ok(tls) => Ok(Box::new(tls)),
            Err(e) => {
                log::warn!("TLS to {} (as {name:?}) failed: {e}", self.label);
                Err(TryError::ConnectFailure)
            }
        }
    }
}

/// The kind of a failed connect.
fn classify(e: &pingora::Error) -> TryError {
    match e.etype() {
        ErrorType::ConnectRefused => TryError::Refused,
        ErrorType::ConnectTimedout => TryError::ConnectTimeout,
        _ => TryError::ConnectFailure,
    }
}
