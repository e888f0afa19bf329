//! The tries of one request, until one reaches its commit point: each goes where the [`Picker`]
//! says, after a jittered backoff and within the route's retry budget when it is a retry, under
//! its own timeouts, and feeds its peer's breaker. Nothing reaches the client from here; the
//! caller relays the committed try or answers the failure.

use super::ctx::Ctx;
use super::forward::Forward;
use super::pick::{Admitted, Picker, Refusal};
use super::retry;
use super::verdict::Ticket;
use crate::body::RequestBody;
use crate::keys;
use crate::metrics::Metrics;
use crate::peer::InflightGuard;
use crate::snapshot::{Route, Snapshot};
use crate::upstream::{try_once, Ready, TryError, TryRequest};
use pingora::connectors::TransportConnector;
use prometheus::IntGauge;
use tokio::time::Instant;

/// One request's tries.
pub struct Tries<'a> {
    pub snap: &'a Snapshot,
    pub route: &'a Route,
    pub picker: Picker<'a>,
    pub forward: &'a Forward,
    pub body: &'a RequestBody,
    pub stream: bool,
    pub deadline: Instant,
    pub connector: &'a TransportConnector,
    pub metrics: &'a Metrics,
}

/// A try that reached its commit point, with what it holds until its response ends.
pub struct Committed<'a> {
    pub ready: Ready,
    /// The breaker's admission, to be given back with the relay's outcome.
    pub ticket: Ticket<'a>,
    _inflight: InflightGuard,
    _gauge: GaugeGuard<'a>,
}

/// How the tries ended.
// Committed is the common case and is moved once; boxing it would allocate on every request.
#[allow(clippy::large_enum_variant)]
pub enum Outcome<'a> {
    Committed(Committed<'a>),
    /// No try committed: the last failure (with its cluster) and why no further try started.
    Failed {
        last: Option<(usize, TryError)>,
        refusal: Option<Refusal>,
    },
}

/// A peer's in-flight gauge, counted up while the guard lives.
struct GaugeGuard<'a>(&'a IntGauge);

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

impl<'a> Tries<'a> {
    /// Run tries until one commits or none may follow; `ctx` records each try.
    pub async fn run(mut self, ctx: &mut Ctx) -> pingora::Result<Outcome<'a>> {
        let retry_cfg = &self.route.cfg.retry;
        let mut last: Option<(usize, TryError)> = None;
        let mut refusal = None;
        while ctx.tries < retry_cfg.attempts {
            if let Some((_, e)) = last {
                if !retry::policy(e).retried_by(&retry_cfg.on) || Instant::now() >= self.deadline {
                    break;
                }
            }
            let Admitted {
                cluster: ci,
                peer: pi,
                key,
                ticket,
            } = match self.picker.next(self.deadline).await {
                Ok(a) => a,
                Err(r) => {
                    refusal = Some(r);
                    break;
                }
            };
            let (cluster, peer) = self.picker.at(ci, pi);
            if let Some((failed_cluster, e)) = last {
                // A retry: within the route's retry budget (when it needs one), counted, after a
                // jittered pause.
                let policy = retry::policy(e);
                if policy.needs_budget && !self.route.retry_budget.try_retry(&retry_cfg.budget) {
                    break;
                }
                self.metrics
                    .retries
                    .with_label_values(&[
                        self.route.cfg.name.as_str(),
                        self.snap.clusters[failed_cluster].cfg.name.as_str(),
                        policy.reason,
                    ])
                    .inc();
                let pause = retry::backoff(retry_cfg, ctx.tries)
                    .min(self.deadline.saturating_duration_since(Instant::now()));
                tokio::time::sleep(pause).await;
            }
            ctx.tries += 1;
            ctx.cluster = Some(ci);
            ctx.peer = Some(pi);
            let inflight = peer.state.start_request();
            let gauge = GaugeGuard::new(&peer.inflight_gauge);
            // The cluster's header; with an API-key pool, this try carries its own key (and the
            // client's credentials are gone).
            let head = self.forward.for_try(ci, cluster, peer, key)?;
            let capture = match (&cluster.keys, key) {
                (Some(pool), Some(_)) => pool.capture_statuses.as_slice(),
                _ => &[][..],
            };
            let request = TryRequest {
                head: &head,
                body: self.body.bytes(),
                stream: self.stream,
                timeouts: &self.route.cfg.timeouts,
                deadline: self.deadline,
                retry_statuses: &retry_cfg.on.statuses,
                capture_statuses: capture,
            };
            let started = Instant::now();
            match try_once(self.connector, &peer.target, &request).await {
                Ok(ready) => {
                    cluster.latency.observe(ready.ttfb.as_secs_f64());
                    let status = ready.header.status.as_u16();
                    if let (Some(pool), Some(k)) = (&cluster.keys, key) {
                        let body = ready.first.as_deref().unwrap_or_default();
                        let headers = &ready.header.headers;
                        if keys::judge(pool, k, status, headers, body, self.metrics) {
                            // The key's fault, not the peer's: another key may use this peer.
                            drop(ticket);
                            self.picker.key_rejected(ci, pi);
                            ready.abandon().await;
                            last = Some((ci, TryError::KeyRejected(status)));
                            continue;
                        }
                    }
                    self.route.attempts.observe(f64::from(ctx.tries));
                    return Ok(Outcome::Committed(Committed {
                        ready,
                        ticket,
                        _inflight: inflight,
                        _gauge: gauge,
                    }));
                }
                Err(e) => {
                    log::debug!("try {} to {} failed: {e:?}", ctx.tries, peer.state.label);
                    if matches!(e, TryError::Status(_)) {
                        cluster.latency.observe(started.elapsed().as_secs_f64());
                    }
                    ticket.try_failed(e);
                    last = Some((ci, e));
                }
            }
        }
        if ctx.tries > 0 {
            self.route.attempts.observe(f64::from(ctx.tries));
        }
        Ok(Outcome::Failed { last, refusal })
    }
}
