//! The end of a request: its access log line and its metrics, built from the request context
//! whichever stage answered. What may appear in the log is fixed by [`Entry`]: no header value,
//! query string or body.

use super::ctx::Ctx;
use crate::access_log::{AccessLog, Entry};
use crate::downstream::Downstream;
use crate::metrics::{code_str, Metrics};
use std::time::{Duration, SystemTime};

/// Log the request if the access log is on.
pub(super) fn log(log: &AccessLog, client: &impl Downstream, ctx: &Ctx) {
    if !log.is_on() {
        return;
    }
    let duration = ctx.start.elapsed();
    let arrived = SystemTime::now()
        .checked_sub(duration)
        .unwrap_or_else(SystemTime::now);
    let snap = ctx.snapshot.as_deref();
    let route = snap
        .zip(ctx.route)
        .map(|(s, r)| s.routes[r].cfg.name.as_str());
    let cluster = snap.zip(ctx.cluster).map(|(s, c)| &s.clusters[c]);
    let peer = cluster.zip(ctx.peer).map(|(c, p)| c.peers[p].name.as_str());
    let req = client.req_header();
    // A local answer (error, fallback) goes out whole at the end: its first byte is its last.
    let ttfb = client
        .response_started()
        .then(|| ms(ctx.ttfb.unwrap_or(duration)));
    log.log(&Entry {
        time: humantime::format_rfc3339_millis(arrived).to_string(),
        request_id: ctx.request_id.as_deref().unwrap_or(""),
        client: client.client_addr(),
        method: req.method.as_str(),
        path: req.uri.path(),
        route,
        cluster: cluster.map(|c| c.cfg.name.as_str()),
        peer,
        status: ctx.status,
        tries: ctx.tries,
        cache: ctx.cache,
        ttfb_ms: ttfb,
        ttft_ms: ctx.measured.ttft.map(ms),
        prompt_tokens: ctx.measured.usage.map(|u| u.prompt_tokens),
        completion_tokens: ctx.measured.usage.map(|u| u.completion_tokens),
        duration_ms: ms(duration),
        bytes_sent: client.body_bytes_sent(),
        bytes_received: client.body_bytes_read(),
        tls: ctx.tls,
        http: if client.is_http2() { "2" } else { "1.1" },
    });
}

/// Count the request in `switchyard_requests_total` and its route's duration histogram, and
/// export its spans when it was sampled (every way through a request ends here once).
pub(super) fn count(metrics: &Metrics, ctx: &Ctx) {
    let Some(snap) = ctx.snapshot.as_ref() else {
        return;
    };
    super::trace::export(ctx, snap);
    let route = ctx.route.map(|r| &snap.routes[r]);
    let counts = route.and_then(|r| r.requests.get(ctx.cluster.unwrap_or(snap.clusters.len())));
    match counts {
        Some(c) => c.inc(ctx.status),
        // No route took the request.
        None => {
            let cluster = ctx
                .cluster
                .map_or("none", |c| snap.clusters[c].cfg.name.as_str());
            let mut code = [0u8; 3];
            let code = code_str(&mut code, ctx.status);
            (metrics.requests)
                .with_label_values(&["none", cluster, code])
                .inc();
        }
    }
    if let Some(r) = route {
        r.duration.observe(ctx.start.elapsed().as_secs_f64());
    }
}

/// Milliseconds, to the microsecond.
fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}
