//! The stages of [`Switchyard::serve`], in the order a request meets them. Each either lets the
//! request go on (returning what the next stages need) or answers it and returns `None`.

use super::affinity::Keys;
use super::body::{self, BodyError};
use super::ctx::Ctx;
use super::edge::{self, RequestSlot};
use super::forward::Forward;
use super::meter::Meter;
use super::pick::Picker;
use super::relay::{self, RelayEnd};
use super::resume::{self, Transcript};
use super::spend::{self, Spend};
use super::tries::{Committed, Outcome, Tries};
use super::{answer, path, request, Switchyard};
use crate::body::RequestBody;
use crate::cache::{self, Pass};
use crate::downstream::Downstream;
use crate::limits::Refused;
use crate::respond::{self, JsonError};
use crate::snapshot::{Route, Snapshot};
use pingora::{Error, ErrorType, Result};
use tokio::time::Instant;

/// What the upstream stage works on.
#[derive(Clone, Copy)]
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

    /// The first route that takes the request (its path normalised first: 400 when that path
    /// is ambiguous); 404 when none does.
    pub(super) async fn route<'a>(
        &self,
        client: &mut impl Downstream,
        ctx: &mut Ctx,
        snap: &'a Snapshot,
        rid: &str,
    ) -> Result<Option<&'a Route>> {
        if let Err(why) = normalize_path(client) {
            client.set_keepalive(None);
            let e = JsonError::new(400, "bad_path", why.message());
            return answer::local(client, ctx, &e, rid, &[])
                .await
                .map(|()| None);
        }
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
    /// client is over it (and was answered 429; 503 when a shared limit could not decide).
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
        let key = request::sticky_hash(client, &cfg.key, ctx.identity.client).unwrap_or(0);
        let e = match limiter.check(key).await {
            Ok(_) => return Ok(true),
            Err(Refused::Over(wait)) => {
                let msg = "too many requests from this client; retry later";
                JsonError::new(429, "rate_limited", msg)
                    .retry_after(respond::retry_after_secs(wait))
            }
            Err(Refused::Unavailable) => spend::unavailable(),
        };
        self.metrics
            .rate_limited
            .with_label_values(&["client", route.cfg.name.as_str()])
            .inc();
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
        let limits = &snap.config.limits;
        let t = body::BodyTimeouts {
            idle: limits.client_body_timeout,
            total: limits.client_body_total_timeout,
        };
        let limit = route.cfg.max_request_body;
        let (e, more) = match body::read(client, limit, t).await {
            Ok(b) => return Ok(Some(b)),
            Err(BodyError::Downstream(e)) => return Err(e),
            Err(BodyError::Timeout) => {
                self.metrics
                    .limit_rejected
                    .with_label_values(&["client_body_timeout"])
                    .inc();
                let msg = format!("no request body data for {:?}", t.idle);
                (JsonError::new(408, "client_body_timeout", msg), None)
            }
            Err(BodyError::TotalTimeout) => {
                self.metrics
                    .limit_rejected
                    .with_label_values(&["client_body_total_timeout"])
                    .inc();
                let msg = format!("the request body did not arrive within {:?}", t.total);
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
        let host = match route.cfg.matcher.host {
            Some(_) => None,
            None => request::host(client.req_header()).map(str::to_string),
        };
        let r = cache::Request {
            body,
            request_id: rid,
            deadline,
            idle: route.cfg.timeouts.idle,
            host: host.as_deref(),
        };
        match cache::lookup(c, cfg, client, r).await? {
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
        mut spend: Spend,
    ) -> Result<()> {
        let Upstream {
            snap,
            route,
            body,
            request_id,
            deadline,
        } = up;
        let stream = body.stream();
        let forward = Forward::of(client, ctx, body.len(), request_id)?;
        let ip = ctx.identity.client;
        let sticky = (route.cfg.sticky.as_ref()).and_then(|k| request::sticky_hash(client, k, ip));
        let first = route.cfg.split[match sticky {
            Some(h) => route.split.pick_sticky(h),
            None => route.split.pick(),
        }]
        .cluster;
        let keys = Keys::new(snap, route, sticky, &client.req_header().headers, body);
        route.retry_budget.request();
        let tries = Tries {
            snap,
            route,
            picker: Picker::new(snap, route, first, keys, &self.metrics)
                .with_tokens(spend.estimate),
            forward: &forward,
            body,
            stream,
            deadline,
            connector: &self.connector,
            metrics: &self.metrics,
        };
        let mut c = match tries.run(ctx).await? {
            Outcome::Committed(c) => c,
            Outcome::Failed { last, refusal } => {
                spend.settle(0);
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
        let reservation = c.reservation.take();
        ctx.meter = spend.meter();
        let end = self.relay_committed(client, ctx, up, c, pass).await;
        if spend.on {
            let used = ctx.meter.used();
            if let Some(r) = reservation {
                r.settle(used);
            }
            spend.settle(used);
        }
        match end {
            RelayEnd::Complete | RelayEnd::UpstreamFailedSse | RelayEnd::Broken(_) => Ok(()),
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

    /// Relay the committed try `c`; how it ends goes to the peer's breaker. On a route with
    /// `resume`, a transcript of a continuable stream is kept, and a break is mended.
    async fn relay_committed(
        &self,
        client: &mut impl Downstream,
        ctx: &mut Ctx,
        up: Upstream<'_>,
        c: Committed<'_>,
        pass: Option<&mut Pass<'_>>,
    ) -> RelayEnd {
        let Upstream {
            route,
            body,
            request_id,
            deadline,
            ..
        } = up;
        let stream = body.stream();
        let mut transcript = (route.cfg.resume.is_some() && stream)
            .then(|| body.json().and_then(resume::api_of).map(Transcript::new))
            .flatten();
        let status = c.ready.header.status.as_u16();
        ctx.status = status;
        ctx.ttfb = Some(ctx.start.elapsed());
        let timing = (route.cfg.timeouts.idle, deadline);
        let handles = ctx
            .cluster
            .and_then(|ci| route.llm.get(ci))
            .and_then(Option::as_ref);
        let mut llm = Meter::new(ctx.start, handles);
        let end = {
            // The try's in-flight count and gauge end with its relay, before any continuation.
            let c = c;
            let end = relay::relay(
                client,
                c.ready,
                timing,
                request_id,
                (pass, transcript.as_mut()),
                &mut ctx.meter,
                &mut llm,
            );
            let end = end.await;
            c.ticket.committed(status, end);
            end
        };
        let end = match (end, transcript) {
            // Boxed: resuming is rare and its future is the largest of this stage's, and every
            // relayed stream would carry its size (about 2 KiB) for as long as it lasts.
            (RelayEnd::Broken(b), Some(t)) => Box::pin(self.resume(client, ctx, up, t, b)).await,
            (RelayEnd::Broken(b), None) => {
                relay::end_with_error(client, b, request_id).await;
                RelayEnd::UpstreamFailedSse
            }
            // A break that could not be handed back: a request or stream resume cannot continue.
            (RelayEnd::UpstreamFailedSse, _) if route.cfg.resume.is_some() => {
                self.metrics
                    .stream_resumes
                    .with_label_values(&[route.cfg.name.as_str(), "not_resumable"])
                    .inc();
                end
            }
            (end, _) => end,
        };
        // A resumed stream's duration runs to the end of its last continuation.
        ctx.measured = llm.finish();
        end
    }
}

/// Replace the request's path by its normalised form (`path.rs`), keeping scheme, authority and
/// query.
fn normalize_path(client: &mut impl Downstream) -> std::result::Result<(), path::Ambiguous> {
    let uri = &client.req_header().uri;
    let normal = match path::normalize(uri.path())? {
        std::borrow::Cow::Borrowed(_) => return Ok(()),
        std::borrow::Cow::Owned(p) => p,
    };
    let pq = match uri.query() {
        Some(q) => format!("{normal}?{q}"),
        None => normal,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = pq.parse().ok();
    if let Ok(new) = http::Uri::from_parts(parts) {
        client.req_header_mut().set_uri(new);
    }
    Ok(())
}
