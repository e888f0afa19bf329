//! Cache warm-up: a background service that sends each route's `warm` requests through the
//! normal request path, at start-up and after every reload, so common prompts are answered from
//! the cache before the first user asks.
//!
//! The requests go over loopback HTTP to the first listener, one at a time with a pause between
//! them, after the first round of health checks, so warming never competes with users and sees
//! exactly what a user would (routing, keys, coalescing, storing). The file has one JSON object a
//! line:
//!
//! ```text
//! {"path": "/v1/chat/completions", "method": "POST", "headers": {"authorization": "Bearer k"},
//!  "body": {"model": "m", "temperature": 0, "messages": [{"role": "user", "content": "hi"}]}}
//! ```
//!
//! Only `body` is required: `path` defaults to the route's prefix + `chat/completions`, `method`
//! to POST, `headers` to none (a `content-type: application/json` is added for JSON bodies). A
//! string `body` is sent as it is. Blank lines and lines starting with `#` are skipped; a bad line
//! is logged with its line number and skipped.

use super::health::ProbeRound;
use crate::config::RouteConfig;
use crate::snapshot::{Current, Snapshot};
use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::upstreams::peer::HttpPeer;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{timeout, Instant};

/// Pause between two warm-up requests.
const PAUSE: Duration = Duration::from_millis(50);
/// Longest wait for the listener and the first round of health checks.
const READY_WAIT: Duration = Duration::from_secs(30);
/// How often the service looks for a new config generation.
const POLL: Duration = Duration::from_secs(1);

/// The warm-up service; register it with `background_service`.
pub struct Warmer {
    pub current: Arc<Current>,
    pub probe_round: Arc<ProbeRound>,
}

#[async_trait]
impl BackgroundService for Warmer {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut warmed = 0;
        loop {
            let snap = self.current.load();
            if snap.generation != warmed {
                warmed = snap.generation;
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = warm(&self.probe_round, &snap) => {}
                }
            }
            drop(snap);
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }
}

/// One request of a warm file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    path: Option<String>,
    method: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    body: Value,
}

/// A warm-up request, checked against its route.
#[derive(Debug)]
pub struct WarmRequest {
    pub method: Method,
    pub path: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

/// Parse one line of `route`'s warm file.
pub fn parse_line(text: &str, route: &RouteConfig) -> Result<WarmRequest, String> {
    let line: Line = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let prefix = &route.matcher.path_prefix;
    let path = line.path.unwrap_or_else(|| {
        let sep = if prefix.ends_with('/') { "" } else { "/" };
        format!("{prefix}{sep}chat/completions")
    });
    if !path.starts_with(prefix.as_str()) {
        return Err(format!(
            "path {path:?} is not under the route's prefix {prefix:?}"
        ));
    }
    let method = match line.method {
        Some(m) => Method::from_bytes(m.to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("bad method {m:?}"))?,
        None => Method::POST,
    };
    if route
        .matcher
        .methods
        .as_ref()
        .is_some_and(|ms| !ms.contains(&method))
    {
        return Err(format!("the route does not take {method}"));
    }
    let mut headers = Vec::new();
    for (k, v) in &line.headers {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| format!("bad header {k:?}"))?;
        let value = HeaderValue::from_str(v).map_err(|_| format!("bad value of header {k}"))?;
        headers.push((name, value));
    }
    let has = |h: &HeaderName, hs: &[(HeaderName, HeaderValue)]| hs.iter().any(|(k, _)| k == h);
    if let (Some(host), false) = (&route.matcher.host, has(&http::header::HOST, &headers)) {
        let value = HeaderValue::from_str(host).map_err(|_| "bad route host".to_string())?;
        headers.push((http::header::HOST, value));
    }
    let body = match line.body {
        Value::String(s) => Bytes::from(s),
        v => {
            if !has(&http::header::CONTENT_TYPE, &headers) {
                let json = HeaderValue::from_static("application/json");
                headers.push((http::header::CONTENT_TYPE, json));
            }
            Bytes::from(v.to_string())
        }
    };
    Ok(WarmRequest {
        method,
        path,
        headers,
        body,
    })
}

/// Warm every route of `snap` that has a warm file.
async fn warm(probe_round: &ProbeRound, snap: &Snapshot) {
    let routes: Vec<_> = snap
        .routes
        .iter()
        .filter_map(|r| Some((&r.cfg, r.cfg.cache.as_ref()?.warm.as_ref()?)))
        .collect();
    // Warm-up speaks plain HTTP: use the first listener without TLS.
    let Some(listener) = snap.config.listeners.iter().find(|l| l.tls.is_none()) else {
        if !routes.is_empty() {
            log::warn!("cache warm-up needs a plain-HTTP listener; none is configured");
        }
        return;
    };
    if routes.is_empty() {
        return;
    }
    let addr = loopback(listener.addr);
    wait_ready(probe_round, addr).await;
    let connector = Connector::new(None);
    for (route, file) in routes {
        let text = match tokio::fs::read_to_string(file).await {
            Ok(t) => t,
            Err(e) => {
                log::error!(
                    "cache warm-up of route {}: cannot read {}: {e}",
                    route.name,
                    file.display()
                );
                continue;
            }
        };
        let (mut sent, mut ok, mut bad) = (0, 0, 0);
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let req = match parse_line(line, route) {
                Ok(r) => r,
                Err(e) => {
                    log::warn!("{}:{}: skipped: {e}", file.display(), i + 1);
                    bad += 1;
                    continue;
                }
            };
            sent += 1;
            let limit = route.timeouts.total;
            match timeout(limit, send(&connector, addr, &req)).await {
                Ok(Ok((200, status))) => {
                    ok += 1;
                    log::debug!("{}:{}: warmed ({status})", file.display(), i + 1);
                }
                Ok(Ok((code, _))) => {
                    log::warn!("{}:{}: answered {code}", file.display(), i + 1)
                }
                Ok(Err(e)) => log::warn!("{}:{}: {e}", file.display(), i + 1),
                Err(_) => log::warn!("{}:{}: no answer within {limit:?}", file.display(), i + 1),
            }
            tokio::time::sleep(PAUSE).await;
        }
        log::info!(
            "cache warm-up of route {}: {sent} requests sent, {ok} answered 200, {bad} bad lines skipped",
            route.name
        );
    }
}

/// The listener's address as reached from this host.
fn loopback(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// Wait (bounded) until the listener accepts and the first round of health checks is done, so
/// that warm-up requests do not fall back for want of a probed peer.
async fn wait_ready(probe_round: &ProbeRound, addr: SocketAddr) {
    let until = Instant::now() + READY_WAIT;
    while Instant::now() < until {
        let listening = tokio::net::TcpStream::connect(addr).await.is_ok();
        if listening && probe_round.done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Send one request and read its answer to the end; returns the status and `x-cache-status`.
async fn send(
    connector: &Connector,
    addr: SocketAddr,
    req: &WarmRequest,
) -> pingora::Result<(u16, String)> {
    let peer = HttpPeer::new(addr, false, String::new());
    let (mut s, _) = connector.get_http_session(&peer).await?;
    let mut head = RequestHeader::build(req.method.clone(), req.path.as_bytes(), None)?;
    head.insert_header(http::header::HOST, addr.to_string())?;
    head.insert_header(http::header::USER_AGENT, "switchyard-warm")?;
    for (k, v) in &req.headers {
        head.insert_header(k.clone(), v.clone())?;
    }
    head.insert_header(http::header::CONTENT_LENGTH, req.body.len().to_string())?;
    s.write_request_header(Box::new(head)).await?;
    if !req.body.is_empty() {
        s.write_request_body(req.body.clone(), true).await?;
    }
    s.finish_request_body().await?;
    s.read_response_header().await?;
    let (status, cache) = match s.response_header() {
        Some(h) => (
            h.status.as_u16(),
            h.headers
                .get("x-cache-status")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string(),
        ),
        None => (0, String::new()),
    };
    while s.read_response_body().await?.is_some() {}
    s.shutdown().await;
    Ok((status, cache))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(yaml_extra: &str) -> RouteConfig {
        let text = format!(
            "listeners: [{{addr: \"127.0.0.1:1\"}}]\nclusters: {{c: {{peers: [{{addr: \"127.0.0.1:2\"}}]}}}}\nroutes:\n  - name: r\n    split: [{{cluster: c}}]\n{yaml_extra}"
        );
        crate::config::parse(&text, "t").unwrap().routes.remove(0)
    }

    #[test]
    fn warm_lines_default_and_validate() {
        let r = route("    match: { path_prefix: \"/v1/\", host: api.example.com }\n");
        let w = parse_line(r#"{"body":{"model":"m","temperature":0}}"#, &r).unwrap();
        assert_eq!(
            (w.method.as_str(), w.path.as_str()),
            ("POST", "/v1/chat/completions")
        );
        assert_eq!(&w.body[..], br#"{"model":"m","temperature":0}"#);
        let names: Vec<&str> = w.headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["host", "content-type"]);
        let w = parse_line(
            r#"{"path":"/v1/completions","method":"put","headers":{"Authorization":"Bearer k"},"body":"raw"}"#,
            &r,
        )
        .unwrap();
        assert_eq!(
            (w.method.as_str(), w.path.as_str()),
            ("PUT", "/v1/completions")
        );
        assert_eq!(&w.body[..], b"raw");
        assert_eq!(w.headers[0].0.as_str(), "authorization");

        for bad in [
            "not json",
            r#"{"path":"/v1/x"}"#,
            r#"{"path":"/v2/x","body":{}}"#,
            r#"{"method":"P OST","body":{}}"#,
            r#"{"headers":{"bad header":"x"},"body":{}}"#,
            r#"{"body":{},"extra":1}"#,
        ] {
            assert!(parse_line(bad, &r).is_err(), "{bad} must be rejected");
        }
        let post_only = route("    match: { methods: [POST] }\n");
        assert!(parse_line(r#"{"method":"GET","body":{}}"#, &post_only).is_err());
        let w = parse_line(r#"{"body":{}}"#, &post_only).unwrap();
        assert_eq!(w.path, "/chat/completions");
    }

    #[test]
    fn unspecified_listeners_are_reached_on_loopback() {
        assert_eq!(
            loopback("0.0.0.0:8080".parse().unwrap()),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(
            loopback("[::]:8080".parse().unwrap()),
            "[::1]:8080".parse().unwrap()
        );
        assert_eq!(
            loopback("10.1.2.3:80".parse().unwrap()),
            "10.1.2.3:80".parse().unwrap()
        );
    }
}
