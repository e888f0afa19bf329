//! The request path. Read [`Switchyard::request_filter`] top to bottom: match a route, read the
//! body, pick a cluster by the split, then try peers (retrying on another peer, under per-try
//! timeouts, inside the total deadline) until one try commits, and relay it; when none can, the
//! route's fallback or a JSON error answers.
//!
//! Why the tries are driven here and not by Pingora's own upstream phase: Pingora writes the
//! response header to the client before the first body chunk and replays at most 64 KiB of
//! request body, so it can neither hold the commit point until a stream's first token nor fail
//! over a 4 MiB prompt. Pingora still does the listening, HTTP/1.1 and h2c parsing, keep-alive,
//! connection pooling (its `Connector`) and graceful upgrades.

mod access;
mod admit;
mod limits;
pub(crate) mod pool;
mod relay;
mod request;
pub mod respond;
pub mod upstream;
pub use upstream::Ready;
mod verdict;

use crate::app::App;
use crate::cache;
use crate::keys;
use crate::snapshot::{Route, Snapshot};
use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use relay::RelayEnd;
use request::BodyError;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use upstream::TryError;

/// The Pingora proxy application.
pub struct Switchyard {
    pub app: Arc<App>,
}

/// Per-request state, kept for the `logging` hook.
pub struct Ctx {
    start: Instant,
    snapshot: Option<Arc<Snapshot>>,
    route: Option<usize>,
    cluster: Option<usize>,
    tries: u32,
    status: u16,
    /// Index in `cluster.peers` of the last try.
    peer: Option<usize>,
    /// Arrival to the committed upstream response going out.
    ttfb: Option<Duration>,
    /// The client connection is TLS.
    tls: bool,
    /// Kept for the access log, only when it is on.
    request_id: Option<String>,
    /// `x-cache-status` of the answer, on cached routes.
    cache: Option<&'static str>,
}

#[async_trait]
impl ProxyHttp for Switchyard {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            start: Instant::now(),
            snapshot: None,
            route: None,
            cluster: None,
            tries: 0,
            status: 0,
            peer: None,
            ttfb: None,
            tls: false,
            request_id: None,
            cache: None,
        }
    }

    /// Never reached: `request_filter` answers every request.
    async fn upstream_peer(&self, _s: &mut Session, _c: &mut Ctx) -> Result<Box<HttpPeer>> {
        Error::e_explain(
            ErrorType::InternalError,
            "switchyard drives upstream tries itself",
        )
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let snap = self.app.snapshot();
        ctx.snapshot = Some(snap.clone());
        let request_id = request::request_id(session);

        // 0. Edge limits: requests in flight, header size; idle keep-alive (HTTP/1.1).
        let limits = &snap.config.limits;
        ctx.tls = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .is_some();
        if self.app.access_log.is_on() {
            ctx.request_id = Some(request_id.clone());
        }
        session.set_keepalive(Some(limits.keepalive_timeout.as_secs()));
        let _request_slot = match limits::admit(session.req_header(), limits, &self.app) {
            Ok(slot) => slot,
            Err(refusal) => {
                ctx.status = refusal.status();
                self.app
                    .metrics
                    .limit_rejected
                    .with_label_values(&[refusal.limit()])
                    .inc();
                refusal.respond(session, limits, &request_id).await?;
                return Ok(true);
            }
        };

        // 1. Route.
        let req = session.req_header();
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.uri.host())
            .map(|h| h.rsplit_once(':').map_or(h, |(name, _)| name));
        let Some(ri) = snap.match_route(host, req.uri.path(), &req.method) else {
            ctx.status = 404;
            session.set_keepalive(None);
            let msg = "no route matches this request";
            respond::json_error(session, 404, "no_route", msg, &request_id, None, &[]).await?;
            return Ok(true);
        };
        ctx.route = Some(ri);
        let route = &snap.routes[ri];
        route.inflight.inc();
        let _inflight = scopeguard(|| route.inflight.dec());

        // Per-client limit, before any work is spent on the request.
        if let Some(limiter) = &route.client_limit {
            let client = request::sticky_hash(session, &limiter.cfg.key).unwrap_or(0);
            if let Err(wait) = limiter.check(client) {
                ctx.status = 429;
                self.app
                    .metrics
                    .rate_limited
                    .with_label_values(&["client", route.cfg.name.as_str()])
                    .inc();
                let secs = respond::retry_after_secs(wait);
                let msg = "too many requests from this client; retry later";
                respond::json_error(
                    session,
                    429,
                    "rate_limited",
                    msg,
                    &request_id,
                    Some(secs),
                    &[],
                )
                .await?;
                return Ok(true);
            }
        }

        // 2. Body: read whole (bounded), so that every try can replay it.
        let body = match request::read_body(
            session,
            route.cfg.max_request_body,
            limits.client_body_timeout,
        )
        .await
        {
            Ok(b) => b,
            Err(BodyError::TooLarge) => {
                ctx.status = 413;
                session.set_keepalive(None);
                let msg = format!(
                    "request body is larger than this route's limit of {} bytes",
                    route.cfg.max_request_body
                );
                let bypass = route
                    .cache
                    .as_ref()
                    .map(|_| ("x-cache-status", "BYPASS".into()));
                let code = "body_too_large";
                let more = bypass.as_slice();
                respond::json_error(session, 413, code, &msg, &request_id, None, more).await?;
                return Ok(true);
            }
            Err(BodyError::Timeout) => {
                ctx.status = 408;
                session.set_keepalive(None);
                self.app
                    .metrics
                    .limit_rejected
                    .with_label_values(&["client_body_timeout"])
                    .inc();
                let msg = format!("no request body data for {:?}", limits.client_body_timeout);
                respond::json_error(
                    session,
                    408,
                    "client_body_timeout",
                    &msg,
                    &request_id,
                    None,
                    &[],
                )
                .await?;
                return Ok(true);
            }
            Err(BodyError::Downstream(e)) => return Err(e),
        };
        let stream = request::wants_stream(&body);
        let deadline = ctx.start + route.cfg.timeouts.total;

        // 2b. Cache (routes with `cache` only): answer from the store or from an identical
        //     request in flight, else go on carrying a pass that records the answer.
        let mut cache = None;
        if route.cache.is_some() {
            match cache::admit(route, session, &body, &request_id, deadline).await? {
                cache::Admit::Answered { status, cache, cut } => {
                    ctx.status = status;
                    ctx.cache = Some(cache);
                    if cut {
                        session.set_keepalive(None);
                    }
                    return Ok(true);
                }
                cache::Admit::Upstream(pass) => {
                    ctx.cache = Some(pass.status());
                    cache = Some(pass);
                }
            }
        }
        let up_req = request::upstream_request(session, body.len(), &request_id, ctx.tls)?;
        let up_head = upstream::wire(&up_req)?;

        // 3. Cluster by the split; sticky keys always land on the same side.
        let sticky = route
            .cfg
            .sticky
            .as_ref()
            .and_then(|k| request::sticky_hash(session, k));
        let first = route.cfg.split[match sticky {
            Some(h) => route.split.pick_sticky(h),
            None => route.split.pick(),
        }]
        .cluster;

        // 4. Tries until one commits.
        route.active.fetch_add(1, Ordering::Relaxed);
        let _active = scopeguard(|| {
            route.active.fetch_sub(1, Ordering::Relaxed);
        });
        let mut tried: Vec<(usize, usize)> = Vec::with_capacity(route.cfg.retry.attempts as usize);
        let mut last: Option<(usize, TryError)> = None;
        let mut retry_slot = None;
        let mut tried_keys: Vec<(usize, usize)> = Vec::new();
        let mut refusal: Option<admit::Refusal> = None;
        while ctx.tries < route.cfg.retry.attempts {
            if let Some((_, err)) = last {
                if !retryable(route, err) || Instant::now() >= deadline {
                    break;
                }
            }
            let admitted = admit::admit(
                &snap,
                route,
                first,
                &mut tried,
                &tried_keys,
                deadline,
                &self.app.metrics,
            )
            .await;
            let admit::Admitted {
                cluster: ci,
                peer: pi,
                key,
                ticket,
            } = match admitted {
                Ok(a) => a,
                Err(r) => {
                    refusal = Some(r);
                    break;
                }
            };
            let cluster = &snap.clusters[ci];
            let peer = &cluster.peers[pi];
            if let Some((failed_cluster, err)) = last {
                // A retry: within the route's retry budget, counted, after a jittered pause.
                // A refused or unroutable connect never reached a model server, so retrying it
                // adds no load anywhere: it needs no budget (a dead peer must not fail requests
                // just because many were in flight when it died).
                retry_slot = None;
                if !matches!(
                    err,
                    TryError::Refused | TryError::ConnectFailure | TryError::KeyRejected(_)
                ) {
                    let Some(slot) = RetrySlot::take(route) else {
                        break;
                    };
                    retry_slot = Some(slot);
                }
                self.app
                    .metrics
                    .retries
                    .with_label_values(&[
                        route.cfg.name.as_str(),
                        snap.clusters[failed_cluster].cfg.name.as_str(),
                        err.reason(),
                    ])
                    .inc();
                let pause = backoff(route, ctx.tries).min(deadline - Instant::now());
                tokio::time::sleep(pause).await;
            }
            ctx.tries += 1;
            ctx.cluster = Some(ci);
            ctx.peer = tried.last().map(|&(_, pi)| pi); // the peer just picked
            let _peer_inflight = peer.state.start_request();
            peer.inflight_gauge.inc();
            let _gauge = scopeguard(|| peer.inflight_gauge.dec());
            // With an API-key pool, this try carries its own key (replacing the client's).
            let keyed_head;
            let (head, capture) = match (&cluster.keys, key) {
                (Some(pool), Some(k)) => {
                    tried_keys.push((ci, k));
                    let mut r = up_req.clone();
                    r.insert_header(pool.cfg.header.clone(), pool.keys[k].header_value().clone())?;
                    keyed_head = upstream::wire(&r)?;
                    (&keyed_head, pool.capture_statuses.as_slice())
                }
                _ => (&up_head, &[][..]),
            };
            let started = Instant::now();
            let result = upstream::try_once(
                &self.app.connector,
                &peer.target,
                head,
                &body,
                stream,
                &route.cfg.timeouts,
                deadline,
                &route.cfg.retry.on.statuses,
                capture,
            )
            .await;
            match result {
                Ok(ready) => {
                    cluster.latency.observe(ready.ttfb.as_secs_f64());
                    let status = ready.header.status.as_u16();
                    if let (Some(pool), Some(k)) = (&cluster.keys, key) {
                        if keys::judge(pool, k, &ready, &self.app.metrics) {
                            // The key's fault, not the peer's: another key may use this peer.
                            drop(ticket);
                            tried.retain(|t| *t != (ci, pi));
                            ready.abandon().await;
                            last = Some((ci, TryError::KeyRejected(status)));
                            continue;
                        }
                    }
                    ctx.status = status;
                    drop(retry_slot.take());
                    route.attempts.observe(f64::from(ctx.tries));
                    ctx.ttfb = Some(ctx.start.elapsed());
                    let end = relay::relay(
                        session,
                        ready,
                        route.cfg.timeouts.idle,
                        deadline,
                        &request_id,
                        cache.as_mut(),
                    )
                    .await;
                    ticket.committed(status, end);
                    return match end {
                        RelayEnd::Complete | RelayEnd::UpstreamFailedSse => Ok(true),
                        RelayEnd::ClientGone => {
                            session.set_keepalive(None);
                            Ok(true)
                        }
                        RelayEnd::UpstreamFailed => Error::e_explain(
                            ErrorType::ReadError,
                            "upstream failed after the response was committed",
                        ),
                    };
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
        drop(retry_slot);
        if ctx.tries > 0 {
            route.attempts.observe(f64::from(ctx.tries));
        }

        // 5. Nothing could serve: a stored answer (stale-if-error), else fallback, else a JSON
        //    error.
        if let Some(pass) = &mut cache {
            if pass.serve_stored(session, &request_id).await? {
                ctx.status = 200;
                ctx.cache = Some("STALE");
                return Ok(true);
            }
        }
        let more: Vec<_> = cache
            .as_ref()
            .map(|p| p.status_header())
            .into_iter()
            .collect();
        match refusal {
            Some(admit::Refusal::OverBudget { retry_after, .. }) if last.is_none() => {
                ctx.status = 429;
                let secs = respond::retry_after_secs(retry_after);
                let msg = "the upstream's request budget is used up; retry later";
                respond::json_error(
                    session,
                    429,
                    "rate_limited",
                    msg,
                    &request_id,
                    Some(secs),
                    &more,
                )
                .await?;
                return Ok(true);
            }
            Some(admit::Refusal::Busy { .. }) if last.is_none() => {
                ctx.status = 503;
                let msg = "every model server is at capacity; retry shortly";
                respond::json_error(session, 503, "overloaded", msg, &request_id, Some(1), &more)
                    .await?;
                return Ok(true);
            }
            _ => {}
        }
        let (status, code, reason, retry_after) = match last {
            None => (503, "no_healthy_upstream", "no_peer", Some(1)),
            Some((_, TryError::KeyRejected(429))) => {
                (429, "upstream_rate_limited", "api_keys", Some(1))
            }
            Some((_, TryError::KeyRejected(_))) => (502, "upstream_auth_failed", "api_keys", None),
            Some((_, TryError::FirstByteTimeout | TryError::ConnectTimeout)) => {
                (504, "upstream_timeout", "timeout", None)
            }
            Some((_, TryError::Status(s))) => (s, "upstream_error", "upstream_status", Some(1)),
            Some(_) => (502, "upstream_unavailable", "all_tries_failed", Some(1)),
        };
        if let Some(fb) = &route.cfg.fallback {
            ctx.status = fb.status;
            self.app
                .metrics
                .fallbacks
                .with_label_values(&[route.cfg.name.as_str(), reason])
                .inc();
            respond::fallback(session, fb, stream, reason, &request_id, &more).await?;
        } else {
            ctx.status = status;
            let msg = match last {
                None => "no upstream peer is available for this route".to_string(),
                Some((_, e)) => format!(
                    "no upstream could serve the request after {} tries (last: {})",
                    ctx.tries,
                    e.reason()
                ),
            };
            let retry_after = if status == 503 || status == 429 {
                retry_after
            } else {
                None
            };
            respond::json_error(session, status, code, &msg, &request_id, retry_after, &more)
                .await?;
        }
        Ok(true)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        // A response already started can only be cut short; otherwise answer in JSON.
        if session.response_written().is_none() {
            let code = match e.etype() {
                ErrorType::HTTPStatus(c) => *c,
                _ if e.esource() == &ErrorSource::Downstream => 400,
                _ => 502,
            };
            ctx.status = code;
            let body = respond::error_body("proxy_error", &e.to_string(), "");
            let _ = respond::write_full(session, code, "application/json", body, &[]).await;
            return FailToProxy {
                error_code: code,
                can_reuse_downstream: false,
            };
        }
        FailToProxy {
            error_code: 0,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        access::log(&self.app.access_log, session, ctx);
        let Some(snap) = ctx.snapshot.as_ref() else {
            return;
        };
        let route = ctx.route.map(|r| &snap.routes[r]);
        let route_name = route.map_or("none", |r| r.cfg.name.as_str());
        let cluster_name = ctx
            .cluster
            .map_or("none", |c| snap.clusters[c].cfg.name.as_str());
        let mut code_buf = [0u8; 3];
        self.app
            .metrics
            .requests
            .with_label_values(&[
                route_name,
                cluster_name,
                code_str(&mut code_buf, ctx.status),
            ])
            .inc();
        if let Some(r) = route {
            r.duration.observe(ctx.start.elapsed().as_secs_f64());
        }
    }
}

/// The status code as text, without allocating (0 is "000").
fn code_str(buf: &mut [u8; 3], status: u16) -> &str {
    let s = status.min(999);
    buf[0] = b'0' + (s / 100) as u8;
    buf[1] = b'0' + (s / 10 % 10) as u8;
    buf[2] = b'0' + (s % 10) as u8;
    std::str::from_utf8(buf).unwrap_or("000")
}

/// Does the route retry this failure?
fn retryable(route: &Route, e: TryError) -> bool {
    let on = &route.cfg.retry.on;
    match e {
        TryError::Refused => on.refused || on.connect_failure,
        TryError::ConnectFailure => on.connect_failure,
        TryError::ConnectTimeout => on.connect_failure || on.timeout,
        TryError::FirstByteTimeout => on.timeout,
        TryError::Reset | TryError::Protocol => on.reset,
        TryError::Status(s) => on.statuses.contains(&s),
        // Another key can serve it: always worth a try while tries remain.
        TryError::KeyRejected(_) => true,
    }
}

/// Jittered exponential backoff before retry number `n` (1-based): uniform in
/// `[0, min(max, base * 2^(n-1))]`, as Envoy does.
fn backoff(route: &Route, n: u32) -> Duration {
    let r = &route.cfg.retry;
    let cap = r
        .backoff_base
        .saturating_mul(1u32 << n.saturating_sub(1).min(16))
        .min(r.backoff_max);
    cap.mul_f64(rand::random::<f64>())
}

/// A retry in flight, counted against the route's retry budget until dropped.
struct RetrySlot<'a>(&'a Route);

impl<'a> RetrySlot<'a> {
    /// Retries may add at most `budget` of the route's active requests, but at least 3 may
    /// always run at once (Envoy's `min_retry_concurrency`).
    fn take(route: &'a Route) -> Option<Self> {
        let active = route.active.load(Ordering::Relaxed) as f64;
        let allowed = (active * route.cfg.retry.budget).max(3.0) as u64;
        let prev = route.active_retries.fetch_add(1, Ordering::Relaxed);
        if prev >= allowed {
            route.active_retries.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(RetrySlot(route))
    }
}

impl Drop for RetrySlot<'_> {
    fn drop(&mut self) {
        self.0.active_retries.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Run `f` when the guard drops.
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f()
            }
        }
    }
    Guard(Some(f))
}
