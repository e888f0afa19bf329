//! A try in flight: what it holds until it ends (its breaker admission, its place among the
//! peer's requests in flight, the peer's in-flight gauge) and the future that runs it. The try
//! loop keeps one of these per try it started; dropping one (the loser of a hedge) closes the
//! try's connection, so the model server stops generating, and gives its breaker admission back
//! without a verdict.

use super::pick::Admitted;
use super::verdict::Ticket;
use crate::limits::Reservation;
use crate::peer::InflightGuard;
use crate::upstream::{try_once, Ready, Target, TryError, TryRequest};
use bytes::Bytes;
use pingora::connectors::TransportConnector;
use prometheus::IntGauge;
use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::time::Instant;

/// A try's future: its index among the request's tries, and how it ended.
pub type TryFuture<'a> =
    Pin<Box<dyn Future<Output = (usize, Result<Ready, TryError>)> + Send + 'a>>;

/// One started try.
pub struct Running<'a> {
    pub cluster: usize,
    pub peer: usize,
    /// The API key it carries, if its cluster has a pool.
    pub key: Option<usize>,
    pub ticket: Ticket<'a>,
    /// When it started (a hedge is due `hedge.after` later).
    pub started: Instant,
    /// It is a hedge (counted in `switchyard_hedges_total`).
    pub hedge: bool,
    /// Held while the peer works on it.
    pub work: Work<'a>,
    /// The tokens taken from the cluster's token budget for it. Dropped unsettled (a hedge
    /// that lost), its estimate stays charged: the provider may have generated and billed it.
    pub reservation: Option<Reservation>,
}

/// What a try holds while its peer works on it.
pub struct Work<'a> {
    _inflight: InflightGuard,
    _gauge: GaugeGuard<'a>,
}

impl<'a> Running<'a> {
    /// A try admitted by the picker, starting now.
    pub fn new(a: Admitted<'a>, gauge: &'a IntGauge, hedge: bool) -> Self {
        Running {
            cluster: a.cluster,
            peer: a.peer,
            key: a.key,
            ticket: a.ticket,
            started: Instant::now(),
            hedge,
            work: Work {
                _inflight: a.inflight,
                _gauge: GaugeGuard::new(gauge),
            },
            reservation: a.reservation,
        }
    }
}

/// What a try's future needs, all borrowed from the request except the header.
pub struct Launch<'a> {
    pub connector: &'a TransportConnector,
    pub target: &'a Arc<Target>,
    /// The request header on the wire (the request's own, or one carrying an API key).
    pub head: Bytes,
    pub body: &'a Bytes,
    pub stream: bool,
    pub timeouts: &'a crate::config::Timeouts,
    pub deadline: Instant,
    pub retry_statuses: &'a [u16],
    pub capture_statuses: Cow<'a, [u16]>,
}

impl<'a> Launch<'a> {
    /// The future of try number `id`.
    pub fn run(self, id: usize) -> TryFuture<'a> {
        Box::pin(async move {
            let req = TryRequest {
                head: &self.head,
                body: self.body,
                stream: self.stream,
                timeouts: self.timeouts,
                deadline: self.deadline,
                retry_statuses: self.retry_statuses,
                capture_statuses: &self.capture_statuses,
            };
            (id, try_once(self.connector, self.target, &req).await)
        })
    }
}

/// A peer's in-flight gauge, counted up while the guard lives.
pub struct GaugeGuard<'a>(&'a IntGauge);

impl<'a> GaugeGuard<'a> {
    fn new(g: &'a IntGauge) -> Self {
        g.inc();
        GaugeGuard(g)
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
