//! One active probe of one peer: an HTTP request (or a connect) whose answer is judged by status
//! and, optionally, body. Shared by the health checks and the API-key probes. A probe connects
//! the way the peer's tries do (its [`Target`]: TLS with the cluster's settings and the peer's
//! server name) and sends the `Host` the peer's tries send.

use crate::config::{HealthCheckConfig, HealthCheckKind};
use crate::snapshot::Peer;
use crate::upstream::Target;
use bytes::{Bytes, BytesMut};
use http::HeaderValue;
use pingora::connectors::TransportConnector;
use pingora::http::RequestHeader;
use pingora::protocols::http::v1::client::HttpSession;
use std::sync::Arc;
use tokio::time::{timeout, Instant};

/// Largest body read from a probe answer when `expect_body` is set.
const MAX_PROBE_BODY: usize = 64 * 1024;

/// What a probe goes to: the peer's target, and the `Host` it is sent.
#[derive(Clone)]
pub struct ProbeTarget {
    pub target: Arc<Target>,
    pub host: HeaderValue,
}

impl ProbeTarget {
    /// Where probes of `peer` go: its target, with its upstream host (else its address).
    pub fn of(peer: &Peer) -> Self {
        let host = peer.host.clone().unwrap_or_else(|| {
            HeaderValue::from_str(&peer.state.addr.to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("localhost"))
        });
        ProbeTarget {
            target: peer.target.clone(),
            host,
        }
    }
}

/// One probe; `Err` says why it failed.
pub async fn probe(
    connector: &TransportConnector,
    hc: &HealthCheckConfig,
    to: &ProbeTarget,
) -> Result<(), String> {
    match timeout(hc.timeout, probe_inner(connector, hc, to)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {:?}", hc.timeout)),
    }
}

async fn probe_inner(
    connector: &TransportConnector,
    hc: &HealthCheckConfig,
    to: &ProbeTarget,
) -> Result<(), String> {
    let stream = to
        .target
        .connect(connector, Instant::now() + hc.timeout)
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    if hc.kind == HealthCheckKind::Tcp {
        return Ok(());
    }
    let mut s = HttpSession::new_with_options(stream, &to.target.peer);
    let result = exchange(&mut s, hc, &to.host).await;
    s.shutdown().await;
    result
}

async fn exchange(
    s: &mut HttpSession,
    hc: &HealthCheckConfig,
    host: &HeaderValue,
) -> Result<(), String> {
    let mut req = RequestHeader::build(hc.method.clone(), hc.path.as_bytes(), None)
        .map_err(|e| e.to_string())?;
    req.insert_header(http::header::HOST, host.clone())
        .map_err(|e| e.to_string())?;
    for (k, v) in &hc.headers {
        req.insert_header(k.clone(), v.clone())
            .map_err(|e| e.to_string())?;
    }
    let body = hc.body.clone().unwrap_or_default();
    if !body.is_empty() {
        req.insert_header(http::header::CONTENT_TYPE, "application/json")
            .map_err(|e| e.to_string())?;
    }
    if !body.is_empty() || hc.method != http::Method::GET {
        req.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())
            .map_err(|e| e.to_string())?;
    }
    send(s, req, &body)
        .await
        .map_err(|e| format!("send: {e}"))?;
    s.read_response().await.map_err(|e| format!("read: {e}"))?;
    let status = s.resp_header().map_or(0, |h| h.status.as_u16());
    if !hc.expect_status.contains(&status) {
        return Err(format!("status {status}"));
    }
    let Some(re) = &hc.expect_body else {
        return Ok(());
    };
    let mut buf = BytesMut::new();
    while buf.len() < MAX_PROBE_BODY {
        match s.read_body_ref().await {
            Ok(Some(chunk)) => buf.extend_from_slice(chunk),
            Ok(None) => break,
            Err(e) => return Err(format!("read body: {e}")),
        }
    }
    let text = String::from_utf8_lossy(&buf);
    if re.is_match(&text) {
        Ok(())
    } else {
        Err(format!("body does not match {:?}", re.as_str()))
    }
}

async fn send(s: &mut HttpSession, req: RequestHeader, body: &Bytes) -> pingora::Result<()> {
    s.write_request_header(Box::new(req)).await?;
    if !body.is_empty() {
        s.write_body(body).await?;
    }
    s.finish_body().await?;
    Ok(())
}
