//! The request path. [`Switchyard::serve`] reads like the README's "What a request goes
//! through": edge admission, route, client limit, body, cache, pick and try (retrying on another
//! peer, under per-try timeouts, inside the total deadline) until one try commits, relay; when
//! none can, a stored answer, the route's fallback or a JSON error. Each stage is a file:
//!
//! | stage | file |
//! |---|---|
//! | who the client is (through `trusted_proxies`) | `identity.rs` |
//! | edge admission (requests in flight, header size) | `edge.rs` |
//! | the path, normalised before routing | `path.rs` |
//! | route, request id, sticky key | `request.rs` |
//! | body (bounded, kept for replay) | `body.rs` |
//! | cache | `crate::cache::lookup` |
//! | the upstream request header | `forward.rs` |
//! | the header per cluster (`Host`, path, credentials, key) | `rewrite.rs` |
//! | where each try goes | `pick.rs` (the key of a hashing balancer: `affinity.rs`) |
//! | token budgets: the estimate, the client's reservation, settling | `spend.rs` |
//! | the tries, their budget, backoff and hedges | `tries.rs`, `running.rs`, `retry.rs` (the retry table) |
//! | breaker feedback | `verdict.rs` |
//! | relay of the committed try | `relay.rs` (what it measures: `meter.rs`) |
//! | continuing a committed stream that broke (`resume`) | `resume/` |
//! | answers written here | `answer.rs` |
//! | access log and request metrics | `access.rs` |
//! | the request's trace: ids propagated, spans exported | `trace.rs` |
//!
//! Why the tries are driven here and not by Pingora's own upstream phase: Pingora writes the
//! response header to the client before the first body chunk and replays at most 64 KiB of
//! request body, so it can neither hold the commit point until a stream's first token nor fail
//! over a 4 MiB prompt. Pingora still does the listening, HTTP/1.1 and h2c parsing, keep-alive
//! and graceful upgrades. The stages talk to the client through [`Downstream`], not Pingora's
//! session type.

mod access;
mod affinity;
mod answer;
mod body;
mod ctx;
pub mod edge;
mod forward;
mod identity;
mod meter;
pub mod path;
mod pick;
mod relay;
mod request;
mod resume;
mod retry;
mod rewrite;
mod running;
mod spend;
mod stages;
mod trace;
mod tries;
mod verdict;

pub use ctx::Ctx;

use crate::access_log::AccessLog;
use crate::downstream::{Downstream, Serve};
use crate::limits::RequestSlots;
use crate::metrics::Metrics;
use crate::respond;
use crate::snapshot::Current;
use async_trait::async_trait;
use pingora::connectors::TransportConnector;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use std::sync::Arc;

/// The request path, as a Pingora proxy application.
pub struct Switchyard {
    current: Arc<Current>,
    metrics: Arc<Metrics>,
    access_log: Arc<AccessLog>,
    /// Opens new connections to peers (idle keep-alive ones are kept per peer).
    connector: TransportConnector,
    /// Requests in flight on every listener, against `limits.max_concurrent_requests`.
    slots: Arc<RequestSlots>,
}

impl Switchyard {
    /// The request path over the snapshot in `current`, counting its requests in `slots`.
    pub fn new(
        current: Arc<Current>,
        metrics: Arc<Metrics>,
        access_log: Arc<AccessLog>,
        slots: Arc<RequestSlots>,
    ) -> Self {
        Switchyard {
            current,
            metrics,
            access_log,
            connector: TransportConnector::new(None),
            slots,
        }
    }

    /// Serve one request, start to end. Every way through answers the client (or finds it gone):
    /// a stage that answers returns `None` and the request is over.
    pub async fn serve(&self, client: &mut impl Downstream, ctx: &mut Ctx) -> Result<()> {
        let snap = self.current.load();
        ctx.snapshot = Some(snap.clone());
        ctx.trace = Some(trace::Trace::start(client.req_header(), &snap));
        let rid = request::request_id(client.req_header());
        ctx.tls = client.is_tls();
        ctx.identity = identity::resolve(
            client.client_ip(),
            &client.req_header().headers,
            &snap.config.trusted_proxies,
        );
        if self.access_log.is_on() {
            ctx.request_id = Some(rid.clone());
        }
        let limits = &snap.config.limits;
        // Lower the keep-alive timeout only: when Pingora has turned keep-alive off (HTTP/1.0
        // without `keep-alive`, or `Content-Length` with `Transfer-Encoding`, its guard against
        // request smuggling), it stays off.
        if client.keepalive().is_some() {
            client.set_keepalive(Some(limits.keepalive_timeout.as_secs()));
        }
        // Until a route says how long a client may stall, the local answers are bounded by the
        // client-side timeout.
        client.set_write_timeout(Some(limits.client_body_timeout));

        let Some(_slot) = self.admit_request(client, ctx, &snap, &rid).await? else {
            return Ok(());
        };
        let Some(route) = self.route(client, ctx, &snap, &rid).await? else {
            return Ok(());
        };
        let _inflight = Gauge::up(&route.inflight);
        // A client that takes no part of a write for the route's `idle` is cut off, and what it
        // held (slots, the upstream connection) is released.
        client.set_write_timeout(Some(route.cfg.timeouts.idle));
        if !self.admit_client(client, ctx, route, &rid).await? {
            return Ok(());
        }
        let Some(body) = self.read_body(client, ctx, &snap, route, &rid).await? else {
            return Ok(());
        };
        let deadline = crate::deadline::after(ctx.start, route.cfg.timeouts.total);
        let Some(mut pass) = self
            .cache(client, ctx, route, &body, &rid, deadline)
            .await?
        else {
            return Ok(());
        };
        let Some(mut spend) = self
            .reserve_tokens(client, ctx, &snap, route, &body, &rid)
            .await?
        else {
            return Ok(());
        };
        // The client's body, or the one that asks the stream for its usage.
        let sent = spend.sent.take();
        let request = stages::Upstream {
            snap: &snap,
            route,
            body: sent.as_ref().unwrap_or(&body),
            request_id: &rid,
            deadline,
        };
        self.upstream(client, ctx, request, pass.as_mut(), spend)
            .await
    }
}

/// A gauge counted up while the guard lives.
struct Gauge<'a>(&'a prometheus::IntGauge);

impl<'a> Gauge<'a> {
    fn up(g: &'a prometheus::IntGauge) -> Self {
        g.inc();
        Gauge(g)
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Switchyard {
    /// The answer to a request whose path ended in an error before a response started (a JSON
    /// error: 400 for a broken request, the error's status, else 502). A response already
    /// started can only be cut short. Either way the connection is not reused. The status
    /// answered (0 if none).
    async fn answer_error(&self, client: &mut impl Downstream, e: &Error, ctx: &mut Ctx) -> u16 {
        client.set_keepalive(None);
        if client.response_started() {
            return 0;
        }
        let code = match e.etype() {
            ErrorType::HTTPStatus(c) => *c,
            _ if e.esource() == &ErrorSource::Downstream => 400,
            _ => 502,
        };
        ctx.status = code;
        let body = respond::error_body("proxy_error", &e.to_string(), "");
        let _ = respond::write_full(client, code, "application/json", body, &[]).await;
        code
    }
}

impl Serve for Switchyard {
    /// Serve, answer an error, then log and count: what Pingora's `request_filter`,
    /// `fail_to_proxy` and `logging` hooks do for its own server.
    async fn serve_request<D: Downstream>(&self, client: &mut D) {
        let mut ctx = Ctx::new();
        if let Err(e) = self.serve(client, &mut ctx).await {
            self.answer_error(client, &e, &mut ctx).await;
        }
        access::log(&self.access_log, client, &ctx);
        access::count(&self.metrics, &ctx);
    }
}

/// The request path as a Pingora proxy application, for the connections Pingora's own server
/// answers (HTTP/2, and HTTP/1 with `server.http1: pingora`). It shares one [`Switchyard`]
/// (its connector and request slots) with the lean front end.
pub struct PingoraApp(pub Arc<Switchyard>);

#[async_trait]
impl ProxyHttp for PingoraApp {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new()
    }

    /// Never reached: `request_filter` answers every request.
    async fn upstream_peer(&self, _s: &mut Session, _c: &mut Ctx) -> Result<Box<HttpPeer>> {
        Error::e_explain(
            ErrorType::InternalError,
            "switchyard drives upstream tries itself",
        )
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        self.0.serve(session, ctx).await.map(|()| true)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let code = self.0.answer_error(session, e, ctx).await;
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        access::log(&self.0.access_log, session, ctx);
        access::count(&self.0.metrics, ctx);
    }
}
