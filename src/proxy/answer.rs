//! The answers the request path writes itself: a local refusal (edge limits, no route, client
//! limit, body), and the answer when no try committed: a stored answer (stale-if-error), else the
//! route's fallback, else a JSON error shaped by the last failure (`retry::policy`).

use super::ctx::Ctx;
use super::pick::Refusal;
use super::retry::{self, Final};
use crate::cache::Pass;
use crate::downstream::Downstream;
use crate::metrics::Metrics;
use crate::respond::{self, JsonError};
use crate::snapshot::Route;
use crate::upstream::TryError;
use pingora::Result;

/// Write `e` as the answer, and remember its status for the logs.
pub async fn local(
    client: &mut impl Downstream,
    ctx: &mut Ctx,
    e: &JsonError,
    request_id: &str,
    more: &[(&'static str, String)],
) -> Result<()> {
    ctx.status = e.status;
    e.write(client, request_id, more).await
}

/// Why no try committed, and what the request had.
pub struct Failure<'a, 'p> {
    pub route: &'a Route,
    /// The last failure, with the cluster of its try.
    pub last: Option<(usize, TryError)>,
    /// Why no further try started, if that is what ended them.
    pub refusal: Option<Refusal>,
    /// The cache pass, on cached routes.
    pub pass: Option<&'a mut Pass<'p>>,
    /// The request asked for a stream (shapes the fallback).
    pub stream: bool,
}

/// Answer a request none of whose tries committed.
pub async fn after_failure(
    client: &mut impl Downstream,
    ctx: &mut Ctx,
    f: Failure<'_, '_>,
    request_id: &str,
    metrics: &Metrics,
) -> Result<()> {
    let route = f.route;
    let mut more = Vec::new();
    if let Some(pass) = f.pass {
        if pass.serve_stored(client, request_id).await? {
            ctx.status = 200;
            ctx.cache = Some("STALE");
            return Ok(());
        }
        more.push(pass.status_header());
    }
    // Refused before any try: say why.
    match f.refusal {
        Some(Refusal::OverBudget { retry_after, .. }) if f.last.is_none() => {
            let e = JsonError::new(
                429,
                "rate_limited",
                "the upstream's request budget is used up; retry later",
            )
            .retry_after(respond::retry_after_secs(retry_after));
            return local(client, ctx, &e, request_id, &more).await;
        }
        Some(Refusal::Unavailable { .. }) if f.last.is_none() => {
            let e = super::spend::unavailable();
            return local(client, ctx, &e, request_id, &more).await;
        }
        Some(Refusal::Busy { .. }) if f.last.is_none() => {
            let e = JsonError::new(
                503,
                "overloaded",
                "every model server is at capacity; retry shortly",
            )
            .retry_after(1);
            return local(client, ctx, &e, request_id, &more).await;
        }
        _ => {}
    }
    let Final {
        status,
        code,
        reason,
        retry_after,
    } = f
        .last
        .map_or(retry::NO_PEER, |(_, e)| retry::policy(e).answer);
    if let Some(fb) = &route.cfg.fallback {
        ctx.status = fb.status;
        metrics
            .fallbacks
            .with_label_values(&[route.cfg.name.as_str(), reason])
            .inc();
        return respond::fallback(client, fb, f.stream, reason, request_id, &more).await;
    }
    let message = match f.last {
        None => "no upstream peer is available for this route".to_string(),
        Some((_, e)) => format!(
            "no upstream could serve the request after {} tries (last: {})",
            ctx.tries,
            retry::policy(e).reason
        ),
    };
    let mut e = JsonError::new(status, code, message);
    if status == 503 || status == 429 {
        e.retry_after = retry_after;
    }
    local(client, ctx, &e, request_id, &more).await
}
