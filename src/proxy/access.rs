//! The access log line of a finished request, built from the request context in `logging`.
//! What may appear is fixed by [`Entry`]: no header value, query string or body.

use super::Ctx;
use crate::access_log::{AccessLog, Entry};
use pingora::proxy::Session;
use std::time::{Duration, SystemTime};

/// Log the request if the access log is on.
pub(super) fn log(log: &AccessLog, session: &Session, ctx: &Ctx) {
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
    let req = session.req_header();
    // A local answer (error, fallback) goes out whole at the end: its first byte is its last.
    let ttfb = session
        .response_written()
        .map(|_| ms(ctx.ttfb.unwrap_or(duration)));
    log.log(&Entry {
        time: humantime::format_rfc3339_millis(arrived).to_string(),
        request_id: ctx.request_id.as_deref().unwrap_or(""),
        client: session.client_addr().and_then(|a| a.as_inet()).copied(),
        method: req.method.as_str(),
        path: req.uri.path(),
        route,
        cluster: cluster.map(|c| c.cfg.name.as_str()),
        peer,
        status: ctx.status,
        tries: ctx.tries,
        cache: ctx.cache,
        ttfb_ms: ttfb,
        duration_ms: ms(duration),
        bytes_sent: session.body_bytes_sent(),
        bytes_received: session.body_bytes_read(),
        tls: ctx.tls,
        http: if session.is_http2() { "2" } else { "1.1" },
    });
}

/// Milliseconds, to the microsecond.
fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}
