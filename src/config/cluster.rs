//! Building a cluster: its peers, its health check and its breaker (how a peer is picked is
//! built by [`super::balance`]). The keys that
//! govern how much reaches its upstream are built by [`super::admission`], how its peers are
//! reached (TLS, `Host`, path) by [`super::upstream`].

use super::check::{
    at_least_one, err, header, method, name, peer_addr, positive, regex, statuses, url_path,
    weight, Result,
};
use super::file::*;
use super::types::*;
use super::{admission, balance, upstream};
use bytes::Bytes;
use std::collections::HashSet;

/// `clusters.NAME`.
pub(super) fn cluster(name_: &str, c: &ClusterFile) -> Result<ClusterConfig> {
    let base = format!("clusters.{name_}");
    name(&base, name_)?;
    let (balance, affinity) = balance::balance(&base, c)?;
    let load_report = balance::load_report(&format!("{base}.load_report"), c.load_report.as_ref())?;
    let peers = peers(&format!("{base}.peers"), &c.peers)?;
    let health_check = match &c.health_check {
        Some(h) => Some(health_check(&format!("{base}.health_check"), h)?),
        None => None,
    };
    let breaker = breaker(&format!("{base}.breaker"), c.breaker.as_ref())?;
    let slow_start = match c.slow_start {
        Some(d) if d.0.is_zero() => None,
        Some(d) => Some(d.0),
        None => None,
    };
    let api_keys = match &c.api_keys {
        Some(k) => Some(admission::api_keys(&format!("{base}.api_keys"), k)?),
        None => None,
    };
    let rate_limit = match &c.rate_limit {
        Some(r) => Some(admission::rate_limit(&format!("{base}.rate_limit"), r)?),
        None => None,
    };
    let queue = admission::queue(&format!("{base}.queue"), c.queue.as_ref())?;
    let dns_refresh = positive(&format!("{base}.dns_refresh"), c.dns_refresh, DNS_REFRESH)?;
    let tls = match &c.tls {
        Some(t) => Some(upstream::tls(&format!("{base}.tls"), t)?),
        None => None,
    };
    let rewrite = upstream::rewrite(&base, c)?;
    Ok(ClusterConfig {
        name: name_.to_string(),
        balance,
        affinity,
        load_report,
        peers,
        health_check,
        breaker,
        slow_start,
        api_keys,
        rate_limit,
        queue,
        dns_refresh,
        tls,
        rewrite,
    })
}

/// One or more peers, each on its own address, not all of them drained.
fn peers(base: &str, list: &[PeerFile]) -> Result<Vec<PeerConfig>> {
    if list.is_empty() {
        return err(base, "a cluster needs at least one peer");
    }
    let mut peers = Vec::new();
    let mut seen = HashSet::new();
    for (i, p) in list.iter().enumerate() {
        let pp = format!("{base}[{i}]");
        let addr = peer_addr(&format!("{pp}.addr"), &p.addr)?;
        if !seen.insert(addr.clone()) {
            return err(format!("{pp}.addr"), format!("duplicate peer {addr}"));
        }
        let weight = weight(&format!("{pp}.weight"), p.weight)?;
        let max_inflight = match p.max_inflight {
            Some(m) => Some(
                at_least_one(&format!("{pp}.max_inflight"), Some(m), m)
                    .map_err(|e| e.hint("leave it out for no limit"))?,
            ),
            None => None,
        };
        peers.push(PeerConfig {
            addr,
            weight,
            max_inflight,
        });
    }
    if peers.iter().all(|p| p.weight == 0) {
        return err(base, "total peer weight is zero");
    }
    Ok(peers)
}

/// `health_check` of a cluster.
fn health_check(base: &str, h: &HealthCheckFile) -> Result<HealthCheckConfig> {
    let d = HealthCheckConfig::default();
    let kind = match h.kind {
        None => d.kind,
        Some(CheckKindFile::Http) => HealthCheckKind::Http,
        Some(CheckKindFile::Tcp) => HealthCheckKind::Tcp,
    };
    let method = match &h.method {
        Some(m) => method(&format!("{base}.method"), m)?,
        None => d.method,
    };
    let path = h.path.clone().unwrap_or(d.path);
    url_path(&format!("{base}.path"), &path)?;
    let mut headers = Vec::new();
    for (k, v) in &h.headers {
        headers.push(header(&format!("{base}.headers.{k}"), k, v)?);
    }
    let expect_status = h.expect_status.clone().unwrap_or(d.expect_status);
    statuses(&format!("{base}.expect_status"), &expect_status)?;
    let expect_body = match &h.expect_body {
        Some(re) => Some(regex(&format!("{base}.expect_body"), re)?),
        None => None,
    };
    let key = |k: &str| format!("{base}.{k}");
    Ok(HealthCheckConfig {
        kind,
        method,
        path,
        headers,
        body: h.body.clone().map(Bytes::from),
        expect_status,
        expect_body,
        interval: positive(&key("interval"), h.interval, d.interval)?,
        timeout: positive(&key("timeout"), h.timeout, d.timeout)?,
        healthy_threshold: at_least_one(
            &key("healthy_threshold"),
            h.healthy_threshold,
            d.healthy_threshold,
        )?,
        unhealthy_threshold: at_least_one(
            &key("unhealthy_threshold"),
            h.unhealthy_threshold,
            d.unhealthy_threshold,
        )?,
    })
}

/// `breaker` of a cluster; on with the defaults when left out.
fn breaker(base: &str, b: Option<&BreakerFile>) -> Result<BreakerConfig> {
    let mut out = BreakerConfig::default();
    let Some(b) = b else { return Ok(out) };
    let key = |k: &str| format!("{base}.{k}");
    out.enabled = b.enabled.unwrap_or(out.enabled);
    out.consecutive_failures = at_least_one(
        &key("consecutive_failures"),
        b.consecutive_failures,
        out.consecutive_failures,
    )?;
    if let Some(r) = b.failure_rate {
        if !(r > 0.0 && r <= 1.0) {
            return err(key("failure_rate"), "must be in (0, 1]");
        }
        out.failure_rate = r;
    }
    out.min_requests = at_least_one(&key("min_requests"), b.min_requests, out.min_requests)?;
    out.window = positive(&key("window"), b.window, out.window)?;
    out.open_for = positive(&key("open_for"), b.open_for, out.open_for)?;
    out.max_open_for = positive(&key("max_open_for"), b.max_open_for, out.max_open_for)?;
    if out.max_open_for < out.open_for {
        return err(key("max_open_for"), "must not be shorter than open_for");
    }
    out.half_open_requests = at_least_one(
        &key("half_open_requests"),
        b.half_open_requests,
        out.half_open_requests,
    )?;
    out.success_threshold = at_least_one(
        &key("success_threshold"),
        b.success_threshold,
        out.success_threshold,
    )?;
    if let Some(p) = b.max_ejected_percent {
        if p > 100 {
            return err(key("max_ejected_percent"), "must be 0-100");
        }
        out.max_ejected_percent = p;
    }
    if let Some(list) = &b.failure_on {
        let mut f = FailureOn::NONE;
        for k in list {
            match k {
                FailureFile::Connect => f.connect = true,
                FailureFile::Timeout => f.timeout = true,
                FailureFile::Reset => f.reset = true,
                FailureFile::Status5xx => f.status_5xx = true,
            }
        }
        out.failure_on = f;
    }
    Ok(out)
}
