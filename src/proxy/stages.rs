//! The stages of [`Switchyard::serve`], in the order a request meets them. Each either lets the
//! request go on (returning what the next stages need) or answers it and returns `None`.

use super::body::{self, BodyError};
use super::ctx::Ctx;
use super::edge::{self, RequestSlot};
use super::forward::Forward;
use super::pick::Picker;
use super::relay::{self, RelayEnd};
use super::tries::{Outcome, Tries};
use super::{answer, request, Switchyard};
use crate::body::RequestBody;
use crate::cache::{self, Pass};
use crate::downstream::Downstream;
use crate::respond::{self, JsonError};
use crate::snapshot::{Route, Snapshot};
use pingora::{Error, ErrorType, Result};
use tokio::time::Instant;

/// What the upstream stage works on.
pub(super) struct Upstream<'a> {
    pub snap: &'a Snapshot,
    pub route: &'a Route,
    pub body: &'a RequestBody,
    pub request_id: &'a str,
    pub deadline: Instant,
}

impl Switchyard {
    /// Edge admission: a slot among the requests in flight, and a header within its limit.
    pub(super) async fn admit_request<'s>(
        &'s self,
        client: &mut impl Downstream,
        ctx: &mut Ctx,
        snap: &Snapshot,
        rid: &str,
    ) -> Result<Option<RequestSlot<'s>>> {
        let limits = &snap.config.limits;
        match edge::admit_request(client.req_header(), limits, &self.slots) {
            Ok(slot) => Ok(Some(slot)),
            Err(refusal) => {
                self.metrics
                    .limit_rejected
                    .with_label_values(&[refusal.limit()])
                    .inc();
                client.set_keepalive(None);
                let e = refusal.answer(limits);
                answer::local(client, ctx, &e, rid, &[])
                    .await
                    .map(|()| None)
            }
        }
    }

    /// The first route that takes the request; 404 when none does.
    pub(super) async fn route<'a>(
        &self,
        client: &mut impl Downstream,
        ctx: &mut Ctx,
        snap: &'a Snapshot,
        rid: &str,
    ) -> Result<Option<&'a Route>> {
        let req = client.req_header();
        let Some(ri) = snap.match_route(request::host(req), req.uri.path(), &req.method) else {
            client.set_keepalive(None);
            let e = JsonError::new(404, "no_route", "no route matches this request");
            return answer::local(client, ctx, &e, rid, &[])
                .await
                .map(|()| None);
        };
        ctx.route = Some(ri);
        Ok(Some(&snap.routes[ri]))
    }

    /// The route's per-client limit, before any work is spent on the request: `false` when this
    /// client is over it (and was answered 429).
    pub(super) async fn admit_client(
        &self,
        client: &mut impl Downstream,
        ctx: &mut Ctx,
        route: &Route,
        rid: &str,
    ) -> Result<bool> {
        let Some((limiter, cfg)) = route
            .client_limit
            .as_ref()
            .zip(route.cfg.client_limit.as_ref())
        else {
            return Ok(true);
        };
        let key = request::sticky_hash(client, &cfg.key).unwrap_or(0);
        let Err(wait) = limiter.check(key).await else {
            return Ok(true);
        };
        self.metrics
            .rate_limited
            .with_label_values(&["client", route.cfg.name.as_str()])
            .inc();
        let msg = "too many requests from this client; retry later";
        let e =
            JsonError::new(429, "rate_limited", msg).retry_after(respond::retry_after_secs(wait));
        answer::local(client, ctx, &e, rid, &[])
            .await
            .map(|()| false)
    }

    /// The body, read whole (bounded) so that every try can replay it.
    pub(super) async fn read_body(
        &self,
        client: &mut impl Downstream,
        ctx: &mut Ctx,
        snap: &Snapshot,
        route: &Route,
        rid: &str,
    ) -> Result<Option<RequestBody>> {
        let idle = snap.config.limits.client_body_timeout;
        let limit = route.cfg.max_request_body;
        let (e, more) = match body::read(client, limit, idle).await {
            Ok(b) => return Ok(Some(b)),
            Err(BodyError::Downstream(e)) => return Err(e),
            Err(BodyError::Timeout) => {
                self.metrics
                    .limit_rejected
                    .with_label_values(&["client_body_timeout"])
                    .inc();
                let msg = format!("no request body data for {idle:?}");
                (JsonError::new(408, "client_body_timeout", msg), None)
            }
            Err(BodyError::TooLarge) => {
                let msg =
                    format!("request body is larger than this route's limit of {limit} bytes");
                let bypass = (route.cache.as_ref()).map(|_| ("x-cache-status", "BYPASS".into()));
                (JsonError::new(413, "body_too_large", msg), bypass)
            }
        };
        client.set_keepalive(None);
        answer::local(client, ctx, &e, rid, more.as_slice())
            .await
            .map(|()| None)
    }

    /// The cache stage (routes with `cache` only): answer from the store or from an identical
    /// request in flight (`None`), else go on with the pass that records the answer (`Some`, with
    /// no pass on routes without a cache).
    pub(super) async fn cache<'a>(
        &self,
        client: &mut impl Downstream,
        ctx: &mut Ctx,
        route: &'a Route,
        body: &RequestBody,
        rid: &str,
        deadline: Instant,
    ) -> Result<Option<Option<Pass<'a>>>> {
        let (Some(c), Some(cfg)) = (route.cache.as_deref(), route.cfg.cache.as_ref()) else {
            return Ok(Some(None));
        };
        let idle = route.cfg.timeouts.idle;
        match cache::lookup(c, cfg, idle, client, body, rid, deadline).await? {
            cache::Lookup::Answered { status, cache, cut } => {
                ctx.status = status;
                ctx.cache = Some(cache);
                if cut {
                    client.set_keepalive(None);
                }
                Ok(None)
            }
            cache::Lookup::Upstream(pass) => {
                ctx.cache = Some(pass.status());
                Ok(Some(Some(pass)))
            }
        }
    }

    /// Pick the cluster by the split (sticky keys always land on the same side), try peers until
    /// one commits and relay it; when none does, answer the failure.
    pub(super) async fn upstream(
        &self,
        client: &mut impl Downstream,
        ctx: &mut Ctx,
        up: Upstream<'_>,
        pass: Option<&mut Pass<'_>>,
    ) -> Result<()> {
        let Upstream {
            snap,
            route,
            body,
            request_id,
            deadline,
        } = up;
        let stream = body.stream();
        let forward = Forward::new(client, body.len(), request_id)?;
        let sticky = (route.cfg.sticky.as_ref()).and_then(|k| request::sticky_hash(client, k));
        let first = route.cfg.split[match sticky {
            Some(h) => route.split.pick_sticky(h),
            None => route.split.pick(),
        }]
        .cluster;
        route.retry_budget.request();
        let tries = Tries {
            snap,
            route,
            picker: Picker::new(snap, route, first, sticky.unwrap_or(0), &self.metrics),
            forward: &forward,
            body,
            stream,
            deadline,
            connector: &self.connector,
            metrics: &self.metrics,
        };
        let c = match tries.run(ctx).await? {
            Outcome::Committed(c) => c,
            Outcome::Failed { last, refusal } => {
                let f = answer::Failure {
                    route,
                    last,
                    refusal,
                    pass,
                    stream,
                };
                return answer::after_failure(client, ctx, f, request_id, &self.metrics).await;
            }
        };
        // Relay the committed try; how it ends goes to the peer's breaker.
        let status = c.ready.header.status.as_u16();
        ctx.status = status;
        ctx.ttfb = Some(ctx.start.elapsed());
        let idle = route.cfg.timeouts.idle;
        let end = relay::relay(client, c.ready, idle, deadline, request_id, pass).await;
        c.ticket.committed(status, end);
        match end {
            RelayEnd::Complete | RelayEnd::UpstreamFailedSse => Ok(()),
            RelayEnd::ClientGone => {
                client.set_keepalive(None);
                Ok(())
            }
            RelayEnd::UpstreamFailed => Error::e_explain(
                ErrorType::ReadError,
                "upstream failed after the response was committed",
            ),
        }
    }
}
