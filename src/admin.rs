//! The admin listener: metrics, status, liveness and readiness, reload. Bound to loopback by
//! default; it is a separate Pingora service, so it survives graceful upgrades like the proxy.

use crate::app::App;
use crate::snapshot::Snapshot;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::time::Instant;

pub struct Admin {
    pub app: Arc<App>,
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
        let _ = session.drain_request_body().await;
        let get = method == http::Method::GET || method == http::Method::HEAD;
        match (get, method == http::Method::POST, path.as_str()) {
            (true, _, "/metrics") => respond(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                self.app.metrics.render(),
            ),
            (true, _, "/healthz") => json_response(StatusCode::OK, json!({"status": "ok"})),
            (true, _, "/readyz") => self.readyz(),
            (true, _, "/status") => json_response(StatusCode::OK, self.status()),
            (_, true, "/reload") => match self.app.reload().await {
                Ok(generation) => {
                    json_response(StatusCode::OK, json!({"result": "ok", "generation": generation}))
                }
                Err(e) => json_response(
                    StatusCode::BAD_REQUEST,
                    json!({"result": "error", "error": e.to_string(),
                           "generation": self.app.snapshot().generation}),
                ),
            },
            _ => not_found(),
        }
    }
}

impl Admin {
    fn readyz(&self) -> Response<Vec<u8>> {
        let snap = self.app.snapshot();
        let probed = self.app.first_probe_round_done();
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
        let snap = self.app.snapshot();
        status_json(&snap, self.app.last_reload_error())
    }
}

fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The `/status` document.
pub fn status_json(snap: &Snapshot, last_reload_error: Option<String>) -> Value {
    let now = Instant::now();
    let routes: Vec<Value> = snap
        .routes
        .iter()
        .map(|r| {
            let m = &r.cfg.matcher;
            json!({
                "name": r.cfg.name,
                "match": {
                    "path_prefix": m.path_prefix,
                    "host": m.host,
                    "methods": m.methods.as_ref().map(|ms| ms.iter().map(|m| m.as_str()).collect::<Vec<_>>()),
                },
                "split": r.cfg.split.iter().map(|t| json!({
                    "cluster": snap.clusters[t.cluster].cfg.name,
                    "weight": t.weight,
                })).collect::<Vec<_>>(),
                "inflight": r.inflight.get(),
            })
        })
        .collect();
    let clusters: Vec<Value> = snap
        .clusters
        .iter()
        .map(|c| {
            let checked = c.checked();
            json!({
                "name": c.cfg.name,
                "balance": format!("{:?}", c.cfg.balance),
                "health_check": checked,
                "peers": c.peers.iter().map(|p| json!({
                    "addr": p.name,
                    "weight": p.weight,
                    "inflight": p.state.inflight(),
                    "health": p.state.health().as_str(),
                    "usable": p.usable(checked, now),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "generation": snap.generation,
        "loaded_at": rfc3339(snap.loaded_at),
        "config_sha256": snap.digest,
        "last_reload_error": last_reload_error,
        "routes": routes,
        "clusters": clusters,
    })
}
