//! Listening: the client-facing endpoints of the proxy service (cleartext with h2c, or TLS with
//! HTTP/2 by ALPN) and the cap on client connections open at once.
//!
//! Pingora 0.9 has no connection cap of its own (its `ConnectionFilter` only sees an address, is
//! behind a feature, and is never told when a connection ends), so [`ConnLimit`] wraps the proxy
//! application: Pingora calls `process_new` once per accepted connection (after the TLS
//! handshake) and it returns when the connection is done, keep-alive requests and HTTP/2 streams
//! included. A connection over the cap is closed before a byte of HTTP is read, as Envoy's
//! `global_downstream_max_connections` does.

pub mod front;
pub mod h1;
pub mod tls;

pub use crate::certs::TlsError;
use crate::config::Listener;
use crate::metrics::Metrics;
use crate::snapshot::Current;
use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use pingora::services::listening::Service;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
pub use tls::TlsCerts;

/// Add every listener to `service`. TLS listeners get their certificates from `certs` (a
/// resolver each, so they can be reloaded in place) and offer HTTP/2 and HTTP/1.1 by ALPN. An
/// error comes with the index of the listener whose files failed to load.
///
/// With the `lean` HTTP/1 front end, cleartext connections get no L4 buffers: it reads into a
/// buffer of its own and writes whole answers, so Pingora's 64 KiB read buffer per connection
/// would only add a copy (and most of an idle connection's memory).
pub fn add_listeners<A>(
    service: &mut Service<A>,
    listeners: &[Listener],
    certs: &TlsCerts,
    lean: bool,
) -> Result<(), (usize, TlsError)> {
    for (i, l) in listeners.iter().enumerate() {
        let addr = l.addr.to_string();
        match &l.tls {
            None if lean => service
                .add_listener(ListenerConfig::tcp(addr).l4_buffer(L4BufferSettings::unbuffered())),
            None => service.add_tcp(&addr),
            Some(files) => {
                let resolver = certs.add(&files.cert, &files.key).map_err(|e| (i, e))?;
                // The paths are ignored once a resolver is set; they only label the settings.
                let mut settings = TlsSettings::intermediate(
                    &files.cert.to_string_lossy(),
                    &files.key.to_string_lossy(),
                )
                .map_err(|e| (i, TlsError::Settings(e)))?;
                settings.set_cert_resolver(resolver);
                settings.enable_h2();
                service.add_tls_with_settings(&addr, None, settings);
            }
        }
    }
    Ok(())
}

/// A [`ServerApp`] that lets at most `limits.max_connections` client connections (read from the
/// config in force, so a reload changes it) be served at once, and closes the others at once.
pub struct ConnLimit<A> {
    inner: Arc<A>,
    current: Arc<Current>,
    metrics: Arc<Metrics>,
    open: AtomicUsize,
}

impl<A> ConnLimit<A> {
    /// `inner` behind the cap of the config in `current`.
    pub fn new(inner: A, current: Arc<Current>, metrics: Arc<Metrics>) -> Self {
        ConnLimit {
            inner: Arc::new(inner),
            current,
            metrics,
            open: AtomicUsize::new(0),
        }
    }

    /// The wrapped application.
    pub fn inner(&self) -> &A {
        &self.inner
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for ConnLimit<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let max = self.current.load().config.limits.max_connections;
        let metrics = &self.metrics;
        let before = self.open.fetch_add(1, Ordering::AcqRel);
        let mut open = OpenConnection {
            limit: self,
            served: false,
        };
        if before >= max {
            metrics
                .limit_rejected
                .with_label_values(&["max_connections"])
                .inc();
            log::debug!("connection cap of {max} reached: closing a new connection");
            return None; // dropping the stream closes it
        }
        open.served = true;
        metrics.downstream_connections.inc();
        self.inner.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}

/// Counts one connection in `ConnLimit::open` (and, once served, in the gauge) until dropped,
/// also when the task is cancelled.
struct OpenConnection<'a, A> {
    limit: &'a ConnLimit<A>,
    served: bool,
}

impl<A> Drop for OpenConnection<'_, A> {
    fn drop(&mut self) {
        self.limit.open.fetch_sub(1, Ordering::AcqRel);
        if self.served {
            self.limit.metrics.downstream_connections.dec();
        }
    }
}
