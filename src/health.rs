//! Active health checks: a background service that probes every peer of every cluster that has
//! a `health_check`, each on its own interval with jitter, in parallel, never on the request
//! path. A peer becomes unhealthy after `unhealthy_threshold` failed probes in a row and healthy
//! again after `healthy_threshold` passes. A peer never probed yet (new at start or added by a
//! reload) takes no traffic until its first probe passes.
//!
//! Pingora's `HealthCheck` services key health by address *and weight* and cannot check a
//! response body, so this service writes into switchyard's own [`PeerState`] instead.

use crate::app::App;
use crate::config::{HealthCheckConfig, HealthCheckKind};
use crate::peer::{Health, PeerState};
use async_trait::async_trait;
use bytes::BytesMut;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::upstreams::peer::HttpPeer;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::{timeout, Instant};

/// Largest body read from a probe answer when `expect_body` is set.
const MAX_PROBE_BODY: usize = 64 * 1024;

pub struct HealthChecker {
    pub app: Arc<App>,
}

type Key = (String, SocketAddr);

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let connector = Arc::new(Connector::new(None));
        let mut due: HashMap<Key, Instant> = HashMap::new();
        let mut probes: JoinSet<()> = JoinSet::new();
        loop {
            let snap = self.app.snapshot();
            let now = Instant::now();
            let mut next_wake = now + Duration::from_secs(1);
            let mut configured = HashSet::new();
            let mut all_probed = true;
            for cluster in &snap.clusters {
                let Some(hc) = cluster.cfg.health_check.as_ref() else {
                    continue;
                };
                for peer in &cluster.peers {
                    let key = (cluster.cfg.name.clone(), peer.state.addr);
                    configured.insert(key.clone());
                    all_probed &= peer.state.health() != Health::Unknown;
                    let at = *due.entry(key.clone()).or_insert(now);
                    if at <= now {
                        due.insert(key, now + jittered(hc.interval));
                        let (hc, state, conn) = (hc.clone(), peer.state.clone(), connector.clone());
                        let app = self.app.clone();
                        probes.spawn(async move {
                            let pass = probe(&conn, &hc, state.addr).await;
                            record(&app, &hc, &state, pass);
                        });
                    } else {
                        next_wake = next_wake.min(at);
                    }
                }
            }
            due.retain(|k, _| configured.contains(k));
            if all_probed {
                self.app.set_first_probe_round_done();
            }
            drop(snap);
            tokio::select! {
                _ = shutdown.changed() => {
                    probes.abort_all();
                    return;
                }
                _ = tokio::time::sleep_until(next_wake.max(now + Duration::from_millis(20))) => {}
                Some(_) = probes.join_next(), if !probes.is_empty() => {}
            }
        }
    }
}

/// The interval, moved by up to ±10% so that probes of many peers do not move in lockstep.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(0.9 + 0.2 * rand::random::<f64>())
}

/// Apply one probe result to the peer's streak and health.
fn record(app: &App, hc: &HealthCheckConfig, state: &PeerState, pass: Result<(), String>) {
    let mut streak = state.probe_streak.lock().unwrap_or_else(|e| e.into_inner());
    let prev = state.health();
    let next = match &pass {
        Ok(()) => {
            streak.passes += 1;
            streak.failures = 0;
            match prev {
                Health::Unknown => Health::Healthy,
                Health::Unhealthy if streak.passes >= hc.healthy_threshold => Health::Healthy,
                h => h,
            }
        }
        Err(_) => {
            streak.failures += 1;
            streak.passes = 0;
            match prev {
                Health::Unknown => Health::Unhealthy,
                Health::Healthy if streak.failures >= hc.unhealthy_threshold => Health::Unhealthy,
                h => h,
            }
        }
    };
    drop(streak);
    if pass.is_ok() {
        // A passing probe lets an ejected peer try trial requests early; only live traffic
        // closes its breaker.
        state.breaker.on_health_pass(Instant::now());
    }
    if next != prev {
        state.set_health(next);
        match &pass {
            Ok(()) => log::info!("peer {} is healthy", state.label),
            Err(why) => log::warn!("peer {} is unhealthy: {why}", state.label),
        }
    }
    app.metrics
        .peer_healthy
        .with_label_values(&[state.cluster.as_str(), state.addr.to_string().as_str()])
        .set(i64::from(next == Health::Healthy));
}

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
