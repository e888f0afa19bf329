//! The admin listener: the dashboard, metrics, status, liveness and readiness, reload, cache
//! purge. Bound to loopback by default; it is a separate Pingora service, so it survives graceful
//! upgrades like the proxy. The documents it serves are built in [`status`], the dashboard page
//! in [`dashboard`].

pub mod dashboard;
pub mod status;

use crate::limits::RequestSlots;
use crate::metrics::Metrics;
use crate::reload::Reloader;
use crate::services::health::ProbeRound;
use crate::services::sampler::Samples;
use crate::snapshot::Current;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::time::Instant;

/// The admin application.
pub struct Admin {
    pub current: Arc<Current>,
    pub metrics: Arc<Metrics>,
    pub reloader: Arc<Reloader>,
    pub probe_round: Arc<ProbeRound>,
    /// Requests in flight at the edge, shown in `/status`.
    pub slots: Arc<RequestSlots>,
    /// The dashboard's recent samples (`/dashboard.json`).
    pub samples: Arc<Samples>,
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .header("cache-control", "no-store")
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

fn json_response(status: StatusCode, v: Value) -> Response<Vec<u8>> {
    let mut body = serde_json::to_vec_pretty(&v).unwrap_or_default();
    body.push(b'\n');
    respond(status, "application/json", body)
}

fn not_found() -> Response<Vec<u8>> {
    json_response(
        StatusCode::NOT_FOUND,
        json!({"error": {"message": "no such admin endpoint", "code": "not_found"}}),
    )
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        let query = session.req_header().uri.query().map(str::to_string);
        let _ = session.drain_request_body().await;
        let get = method == http::Method::GET || method == http::Method::HEAD;
        if get && path == "/" {
            // The page holds no data (it fetches the documents below, with the token when
            // `protect_reads` is on), so it is served to anyone who can reach the listener.
            return dashboard::page();
        }
        let probe = matches!(path.as_str(), "/healthz" | "/readyz");
        let protect_reads = self.current.load().config.admin.protect_reads;
        if !get || (protect_reads && !probe) {
            // Every method that can change something needs the token (when one is set), and
            // with `protect_reads` every document but the probes.
            if let Some(denied) = self.unauthorized(session) {
                return denied;
            }
        }
        if !get {
            if let Some(denied) =
                cross_site(session, self.current.load().config.admin.token.is_some())
            {
                return denied;
            }
        }
        match (get, method == http::Method::POST, path.as_str()) {
            (true, _, "/metrics") => {
                self.refresh_gauges();
                respond(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    self.metrics.render(),
                )
            }
            (true, _, p) if p.starts_with("/health/circuit-breaker/") => {
                self.circuit_breaker(&p["/health/circuit-breaker/".len()..])
            }
            (true, _, "/healthz") => json_response(StatusCode::OK, json!({"status": "ok"})),
            (true, _, "/readyz") => self.readyz(),
            (true, _, "/status") => json_response(StatusCode::OK, self.status()),
            (true, _, "/dashboard.json") => json_response(StatusCode::OK, self.samples.json()),
            (_, true, "/reload") => match self.reloader.reload().await {
                Ok(generation) => json_response(
                    StatusCode::OK,
                    json!({"result": "ok", "generation": generation}),
                ),
                Err(e) => json_response(
                    match e {
                        crate::reload::ReloadError::Config(_) => StatusCode::BAD_REQUEST,
                        crate::reload::ReloadError::Tls { .. } => StatusCode::INTERNAL_SERVER_ERROR,
                    },
                    json!({"result": "error", "error": e.to_string(),
                           "generation": self.current.load().generation}),
                ),
            },
            (_, true, "/cache/purge") => self.cache_purge(query.as_deref()),
            _ => not_found(),
        }
    }
}

impl Admin {
    /// When a token is configured, the 401 JSON answer for a request without
    /// `authorization: Bearer <admin.token>`; `None` lets the request through. Every mutating
    /// endpoint must pass this check: `response` applies it to all methods but GET and HEAD.
    pub fn unauthorized(&self, session: &ServerSession) -> Option<Response<Vec<u8>>> {
        let snap = self.current.load();
        let token = snap.config.admin.token.as_ref()?;
        let presented = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| bearer(v.as_bytes()));
        match presented {
            Some(p) if token.matches(p) => None,
            _ => {
                let mut resp = json_response(
                    StatusCode::UNAUTHORIZED,
                    json!({"error": {"message": "this admin endpoint needs authorization: Bearer <admin token>",
                                     "code": "unauthorized"}}),
                );
                resp.headers_mut().insert(
                    http::header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Bearer"),
                );
                Some(resp)
            }
        }
    }

    /// Gauges that change with time alone (an OPEN breaker turning HALF_OPEN) are set at scrape.
    fn refresh_gauges(&self) {
        let snap = self.current.load();
        let now = Instant::now();
        let m = &self.metrics;
        for c in &snap.clusters {
            if let Some(pool) = &c.keys {
                for k in &pool.keys {
                    m.api_key_usable
                        .with_label_values(&[c.cfg.name.as_str(), k.id.as_str()])
                        .set(i64::from(k.is_usable(now)));
                }
            }
            if let Some(q) = &c.queue {
                m.queue_depth
                    .with_label_values(&[c.cfg.name.as_str()])
                    .set(i64::from(q.waiting()));
            }
            for p in &c.peers {
                let labels = [c.cfg.name.as_str(), p.name.as_str()];
                m.breaker_state
                    .with_label_values(&labels)
                    .set(p.state.breaker.state(now).gauge());
                m.peer_healthy
                    .with_label_values(&labels)
                    .set(i64::from(p.state.health() == crate::peer::Health::Healthy));
            }
        }
    }

    /// `GET /health/circuit-breaker/{cluster}` and `.../{cluster}/{addr}`.
    fn circuit_breaker(&self, rest: &str) -> Response<Vec<u8>> {
        let snap = self.current.load();
        let now = Instant::now();
        let (cluster_name, addr) = match rest.split_once('/') {
            Some((c, a)) => (c, Some(a)),
            None => (rest, None),
        };
        let Some(cluster) = snap.clusters.iter().find(|c| c.cfg.name == cluster_name) else {
            return not_found();
        };
        let peers: Vec<Value> = cluster
            .peers
            .iter()
            .filter(|p| addr.is_none_or(|a| a == p.name))
            .map(|p| status::breaker_json(&cluster.cfg.name, p, now))
            .collect();
        match (addr, peers.len()) {
            (Some(_), 1) => {
                json_response(StatusCode::OK, peers.into_iter().next().unwrap_or_default())
            }
            (Some(_), _) => not_found(),
            (None, _) => json_response(
                StatusCode::OK,
                json!({"cluster": cluster.cfg.name, "peers": peers}),
            ),
        }
    }

    /// `POST /cache/purge` (every cached route) or `POST /cache/purge?route=NAME`.
    fn cache_purge(&self, query: Option<&str>) -> Response<Vec<u8>> {
        let route = query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .find_map(|kv| kv.strip_prefix("route="));
        match status::cache_purge(&self.current.load(), route) {
            Some(v) => json_response(StatusCode::OK, v),
            None => json_response(
                StatusCode::NOT_FOUND,
                json!({"error": {"message": "no cached route by that name", "code": "not_found"}}),
            ),
        }
    }

    fn readyz(&self) -> Response<Vec<u8>> {
        let snap = self.current.load();
        let probed = self.probe_round.done();
        let usable = snap.has_usable_route(Instant::now());
        let status = if probed && usable {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        json_response(
            status,
            json!({"ready": status == StatusCode::OK, "first_probe_round_done": probed,
                   "usable_route": usable}),
        )
    }

    fn status(&self) -> Value {
        let snap = self.current.load();
        let mut v = status::status_json(&snap, self.reloader.last_error());
        v["needs_upgrade"] = json!(self.reloader.needs_upgrade());
        v["pid"] = json!(std::process::id());
        v["edge"] = json!({"requests_in_flight": self.slots.in_use()});
        v
    }
}

/// The credentials of an `authorization: Bearer <token>` header value.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
}

/// Without a token, a mutating request from a browser on another site (a form that POSTs to
/// `http://127.0.0.1:9901/reload`, which needs no preflight) is refused with 403: when
/// `Sec-Fetch-Site` says `cross-site` or `same-site`, or when `Origin` names another host than
/// the one the request is for. Clients that are not browsers send neither header. With a token
/// the bearer header is the protection (a browser cannot add it to a cross-site form).
fn cross_site(session: &ServerSession, has_token: bool) -> Option<Response<Vec<u8>>> {
    if has_token {
        return None;
    }
    let h = &session.req_header().headers;
    let fetch_site = h.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    let foreign_fetch = fetch_site.is_some_and(|s| {
        s.eq_ignore_ascii_case("cross-site") || s.eq_ignore_ascii_case("same-site")
    });
    let host = h.get(http::header::HOST).and_then(|v| v.to_str().ok());
    let foreign_origin = h
        .get(http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|o| !same_origin_host(o, host));
    (foreign_fetch || foreign_origin).then(|| {
        json_response(
            StatusCode::FORBIDDEN,
            json!({"error": {"message": "cross-site requests to mutating admin endpoints are refused",
                             "code": "cross_site"}}),
        )
    })
}

/// Does the `Origin` (`scheme://host[:port]`, or `null`) name `host` (the `Host` header)?
fn same_origin_host(origin: &str, host: Option<&str>) -> bool {
    let Some(host) = host else { return false };
    origin
        .split_once("://")
        .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_must_name_the_admin_host() {
        assert!(same_origin_host(
            "http://127.0.0.1:9901",
            Some("127.0.0.1:9901")
        ));
        assert!(!same_origin_host(
            "http://evil.test",
            Some("127.0.0.1:9901")
        ));
        assert!(!same_origin_host("null", Some("127.0.0.1:9901")));
        assert!(!same_origin_host("http://127.0.0.1:9901", None));
    }
}
