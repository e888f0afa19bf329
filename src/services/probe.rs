//! One active probe of one peer: an HTTP request (or a TCP connect) whose answer is judged by
//! status and, optionally, body. Shared by the health checks and the API-key probes.

use crate::config::{HealthCheckConfig, HealthCheckKind};
use bytes::BytesMut;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;
use std::net::SocketAddr;
use tokio::time::timeout;

/// Largest body read from a probe answer when `expect_body` is set.
const MAX_PROBE_BODY: usize = 64 * 1024;

/// One probe; `Err` says why it failed.
pub async fn probe(
    connector: &Connector,
    hc: &HealthCheckConfig,
    addr: SocketAddr,
) -> Result<(), String> {
    match timeout(hc.timeout, probe_inner(connector, hc, addr)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {:?}", hc.timeout)),
    }
}

async fn probe_inner(
    connector: &Connector,
    hc: &HealthCheckConfig,
    addr: SocketAddr,
) -> Result<(), String> {
    if hc.kind == HealthCheckKind::Tcp {
        return tokio::net::TcpStream::connect(addr)
            .await
            .map(|_| ())
            .map_err(|e| format!("connect: {e}"));
    }
    let mut peer = HttpPeer::new(addr, false, String::new());
    peer.options.connection_timeout = Some(hc.timeout);
    let (mut s, _) = connector
        .get_http_session(&peer)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut req = RequestHeader::build(hc.method.clone(), hc.path.as_bytes(), None)
        .map_err(|e| e.to_string())?;
    req.insert_header(http::header::HOST, addr.to_string())
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
    s.write_request_header(Box::new(req))
        .await
        .map_err(|e| format!("send: {e}"))?;
    if !body.is_empty() {
        s.write_request_body(body, true)
            .await
            .map_err(|e| format!("send: {e}"))?;
    }
    s.finish_request_body()
        .await
        .map_err(|e| format!("send: {e}"))?;
    s.read_response_header()
        .await
        .map_err(|e| format!("read: {e}"))?;
    let status = s.response_header().map_or(0, |h| h.status.as_u16());
    let result = if !hc.expect_status.contains(&status) {
        Err(format!("status {status}"))
    } else if let Some(re) = &hc.expect_body {
        let mut buf = BytesMut::new();
        while buf.len() < MAX_PROBE_BODY {
            match s.read_response_body().await {
                Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
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
    } else {
        Ok(())
    };
    s.shutdown().await;
    result
}
