//! Resuming a committed stream that broke (`routes[].resume`).
//!
//! Past the commit point a failure can no longer be hidden by a retry: the client has tokens. On
//! a route with `resume`, a stream that breaks after some of them (a reset, a stall past `idle`,
//! an error event, an end before the answer finished) is continued instead: the same request,
//! conditioned on the text already sent ([`request`]), goes through the same tries machinery to
//! another peer (never one that broke this request), and its stream is spliced into the
//! response already started, each chunk rewritten by the [`Transcript`] so the client reads one
//! stream ending in `[DONE]`. At most `resume.max` continuations per request; when none can be
//! had, the stream ends with the SSE error event, as it does without `resume`.
//!
//! What this guarantees: the continuation is asked of the same model with the same parameters,
//! conditioned on exactly the text the client has. What it cannot: a sampled continuation is a
//! new sample, not the one the first peer would have produced, and the tokenizer may split the
//! boundary differently (mid-word).

mod request;
mod transcript;

pub use request::api_of;
pub use transcript::Transcript;

use super::affinity::Keys;
use super::ctx::Ctx;
use super::forward::Forward;
use super::pick::Picker;
use super::relay::{self, Break, RelayEnd};
use super::stages::Upstream;
use super::tries::{Outcome, Tries};
use super::{request as req, Switchyard};
use crate::body::RequestBody;
use crate::downstream::Downstream;
use request::Next;
use tokio::time::Instant;

impl Switchyard {
    /// The committed stream of `up` broke (`brk`) after sending what `t` holds: continue it on
    /// other peers, and relay each continuation into the response already started. How the
    /// response finally ended is returned; every break is counted in
    /// `switchyard_stream_resumes_total`.
    pub(super) async fn resume(
        &self,
        client: &mut impl Downstream,
        ctx: &mut Ctx,
        up: Upstream<'_>,
        mut t: Transcript,
        mut brk: Break,
    ) -> RelayEnd {
        let route = up.route;
        let max = route.cfg.resume.map_or(0, |r| r.max);
        let count = |result: &str| {
            self.metrics
                .stream_resumes
                .with_label_values(&[route.cfg.name.as_str(), result])
                .inc()
        };
        let mut broken: Vec<(usize, usize)> = Vec::new();
        let mut started = 0;
        loop {
            if let (Some(c), Some(p)) = (ctx.cluster, ctx.peer) {
                broken.push((c, p));
            }
            log::debug!("stream of {} broke: {brk:?}", up.request_id);
            if t.finished() {
                count("completed");
                return relay::end_with_done(client).await;
            }
            let Some(json) = up.body.json().filter(|_| t.resumable()) else {
                count("not_resumable");
                break;
            };
            if started >= max {
                count("exhausted");
                break;
            }
            let body = match request::continuation(up.body.bytes(), json, &t) {
                Next::Finished => {
                    count("completed");
                    return relay::end_with_done(client).await;
                }
                Next::Body(b) => RequestBody::new(b),
            };
            started += 1;
            match self
                .continuation(client, ctx, up, &body, &broken, &mut t)
                .await
            {
                None => {
                    count("failed");
                    break;
                }
                Some(RelayEnd::Broken(b)) => {
                    count("resumed");
                    brk = b;
                }
                Some(end) => {
                    count("resumed");
                    return end;
                }
            }
        }
        relay::end_with_error(client, brk, up.request_id).await;
        RelayEnd::UpstreamFailedSse
    }

    /// One continuation: tries of `body` (never to a `broken` peer) until one commits a 2xx
    /// event stream, then its relay. `None` when none committed one.
    async fn continuation(
        &self,
        client: &mut impl Downstream,
        ctx: &mut Ctx,
        up: Upstream<'_>,
        body: &RequestBody,
        broken: &[(usize, usize)],
        t: &mut Transcript,
    ) -> Option<RelayEnd> {
        let route = up.route;
        if Instant::now() >= up.deadline {
            return None;
        }
        // A continuation adds load as a retry does: within the route's retry budget.
        if !route.retry_budget.try_retry(&route.cfg.retry.budget) {
            return None;
        }
        let forward = Forward::of(client, ctx, body.len(), up.request_id).ok()?;
        let ip = ctx.identity.client;
        let key = (route.cfg.sticky.as_ref()).and_then(|k| req::sticky_hash(client, k, ip));
        // The cluster of the broken peer first: its peers serve the same model.
        let first = broken.last().map_or(0, |b| b.0);
        // A prefix_affinity cluster keys on the continuation's prompt: the same prefix as the
        // broken try's, so the continuation goes to the next peer in the key's order.
        let keys = Keys::new(up.snap, route, key, &client.req_header().headers, body);
        let mut picker = Picker::new(up.snap, route, first, keys, &self.metrics);
        for &(c, p) in broken {
            picker.avoid(c, p);
        }
        let tries = Tries {
            snap: up.snap,
            route,
            picker,
            forward: &forward,
            body,
            stream: true,
            deadline: up.deadline,
            connector: &self.connector,
            metrics: &self.metrics,
        };
        // The continuation's tries are counted on their own (the route's `attempts` again),
        // then added to the request's.
        let before = std::mem::take(&mut ctx.tries);
        let outcome = tries.run(ctx).await;
        ctx.tries = ctx.tries.saturating_add(before);
        let Ok(Outcome::Committed(c)) = outcome else {
            return None;
        };
        let status = c.ready.header.status.as_u16();
        if !c.ready.header.status.is_success() || c.ready.media != crate::sse::Media::EventStream {
            // An answer that cannot be spliced in: judged by its status, not relayed.
            c.ready.abandon().await;
            c.ticket.committed(status, RelayEnd::Complete);
            return None;
        }
        t.start_continuation();
        let timing = (route.cfg.timeouts.idle, up.deadline);
        let meter = &mut ctx.meter;
        let end = relay::continuation(client, c.ready, timing, up.request_id, t, meter).await;
        c.ticket.committed(status, end);
        Some(end)
    }
}
