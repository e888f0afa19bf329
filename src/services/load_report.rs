//! Load reports: a background service that scrapes the Prometheus metrics page of every peer of
//! every cluster with a `load_report`, each on its own interval (with jitter), and stores the
//! queue, running and KV-cache gauges the peer reports ([`crate::peer_load`]) in the peer's
//! state, where `least_inflight`, the bound of `prefix_affinity` and the skipping of full peers
//! read them. A failed scrape leaves the last report to go stale; it is counted in
//! `switchyard_load_report_failures_total` and logged once until a scrape succeeds again.

use super::probe::ProbeTarget;
use crate::config::LoadReportConfig;
use crate::metrics::Metrics;
use crate::peer::{PeerId, PeerState};
use crate::peer_load::{parse, Report};
use crate::snapshot::Current;
use async_trait::async_trait;
use bytes::BytesMut;
use pingora::connectors::TransportConnector;
use pingora::http::RequestHeader;
use pingora::protocols::http::v1::client::HttpSession;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Largest metrics page read (vLLM's, with its histograms, is some hundreds of KiB).
const MAX_PAGE: usize = 8 * 1024 * 1024;

/// The load-report service.
pub struct LoadReporter {
    pub current: Arc<Current>,
    pub metrics: Arc<Metrics>,
}

#[async_trait]
impl BackgroundService for LoadReporter {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let connector = Arc::new(TransportConnector::new(None));
        let mut due: HashMap<PeerId, (Instant, Arc<AtomicBool>)> = HashMap::new();
        let mut scrapes: JoinSet<()> = JoinSet::new();
        loop {
            let snap = self.current.load();
            let now = Instant::now();
            let mut next_wake = now + Duration::from_secs(1);
            let mut configured = HashSet::new();
            for cluster in &snap.clusters {
                let Some(lr) = cluster.cfg.load_report.as_ref() else {
                    continue;
                };
                for peer in &cluster.peers {
                    let key = peer.state.id.clone();
                    configured.insert(key.clone());
                    let (at, failing) = due
                        .entry(key.clone())
                        .or_insert_with(|| (now, Arc::default()))
                        .clone();
                    if at > now {
                        next_wake = next_wake.min(at);
                        continue;
                    }
                    due.insert(key, (now + jittered(lr.interval), failing.clone()));
                    let (lr, state, conn) = (lr.clone(), peer.state.clone(), connector.clone());
                    let metrics = self.metrics.clone();
                    let to = ProbeTarget::of(peer);
                    scrapes.spawn(async move {
                        let got = scrape(&conn, &lr, &to).await;
                        record(&metrics, &state, got, &failing);
                    });
                }
            }
            due.retain(|k, _| configured.contains(k));
            drop(snap);
            tokio::select! {
                _ = shutdown.changed() => {
                    scrapes.abort_all();
                    return;
                }
                _ = tokio::time::sleep_until(next_wake.max(now + Duration::from_millis(20))) => {}
                Some(_) = scrapes.join_next(), if !scrapes.is_empty() => {}
            }
        }
    }
}

/// The interval, moved by up to ±10% so that scrapes of many peers do not move in lockstep.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(0.9 + 0.2 * rand::random::<f64>())
}

/// Store a scrape's report, or count its failure.
fn record(metrics: &Metrics, state: &PeerState, got: Result<Report, String>, failing: &AtomicBool) {
    let labels = [state.cluster.as_str(), state.name.as_str()];
    match got {
        Ok(r) => {
            state.load.store(r, Instant::now());
            let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            metrics
                .peer_waiting
                .with_label_values(&labels)
                .set(gauge(r.waiting));
            metrics
                .peer_running
                .with_label_values(&labels)
                .set(gauge(r.running));
            if let Some(kv) = r.kv_usage {
                metrics.peer_kv_usage.with_label_values(&labels).set(kv);
            }
            if failing.swap(false, Ordering::Relaxed) {
                log::info!("peer {}: load reports again", state.label);
            }
        }
        Err(why) => {
            metrics
                .load_report_failures
                .with_label_values(&labels)
                .inc();
            if !failing.swap(true, Ordering::Relaxed) {
                log::warn!("peer {}: no load report: {why}", state.label);
            }
        }
    }
}

/// One scrape of the peer's metrics page, within the interval.
async fn scrape(
    connector: &TransportConnector,
    lr: &LoadReportConfig,
    to: &ProbeTarget,
) -> Result<Report, String> {
    let deadline = Instant::now() + lr.interval;
    let page = tokio::time::timeout_at(deadline, fetch(connector, lr, to, deadline))
        .await
        .map_err(|_| format!("no answer within {:?}", lr.interval))??;
    parse(&String::from_utf8_lossy(&page))
        .ok_or_else(|| "no vLLM or SGLang queue or KV-cache gauge in the page".to_string())
}

async fn fetch(
    connector: &TransportConnector,
    lr: &LoadReportConfig,
    to: &ProbeTarget,
    deadline: Instant,
) -> Result<BytesMut, String> {
    let stream = to
        .target
        .connect(connector, deadline)
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let mut s = HttpSession::new_with_options(stream, &to.target.peer);
    let result = exchange(&mut s, lr, to).await;
    s.shutdown().await;
    result
}

async fn exchange(
    s: &mut HttpSession,
    lr: &LoadReportConfig,
    to: &ProbeTarget,
) -> Result<BytesMut, String> {
    let mut req = RequestHeader::build(http::Method::GET, lr.path.as_bytes(), None)
        .map_err(|e| e.to_string())?;
    req.insert_header(http::header::HOST, to.host.clone())
        .map_err(|e| e.to_string())?;
    req.insert_header(http::header::ACCEPT, "text/plain")
        .map_err(|e| e.to_string())?;
    s.write_request_header(Box::new(req))
        .await
        .map_err(|e| format!("send: {e}"))?;
    s.finish_body().await.map_err(|e| format!("send: {e}"))?;
    s.read_response().await.map_err(|e| format!("read: {e}"))?;
    let status = s.resp_header().map_or(0, |h| h.status.as_u16());
    if status != 200 {
        return Err(format!("status {status}"));
    }
    let mut buf = BytesMut::new();
    loop {
        match s.read_body_ref().await {
            Ok(Some(chunk)) if buf.len() + chunk.len() <= MAX_PAGE => buf.extend_from_slice(chunk),
            Ok(Some(_)) => return Err(format!("page larger than {MAX_PAGE} bytes")),
            Ok(None) => return Ok(buf),
            Err(e) => return Err(format!("read body: {e}")),
        }
    }
}
